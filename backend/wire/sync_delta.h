// Payloads of checksum-compared resync (resync.h): SYNC_HASHES (one strong hash per unit of a
// region) and SYNC_DELTA (which units of a region follow, then their bytes). Pure functions,
// safe from any thread.
//
// A region of R bytes is cut into units of U bytes (U a power of two, kMinHashUnit..
// kMaxHashUnit, at least the volume's block size, so every unit is whole blocks); the last
// unit is short when R is not a multiple of U. n = ceil(R / U) units.
//   SYNC_HASHES payload: n hashes of kBlockHashSize bytes, unit order.
//   SYNC_DELTA payload:  ceil(n / 8) bitmap bytes (bit i, LSB first in byte i / 8: unit i
//                        follows; bits >= n are zero), then the bytes of every set unit in
//                        ascending order. An all-clear bitmap (nothing differs) is valid.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <vector>

#include "backend/wire/frame.h"

namespace tandem::backend::wire {

using BlockHash = std::array<uint8_t, kBlockHashSize>;

inline constexpr uint32_t kMinHashUnit = 512;
inline constexpr uint32_t kMaxHashUnit = 1u << 20;
inline constexpr uint32_t kDefaultHashUnit = 4096;

constexpr bool valid_hash_unit(uint64_t unit) {
  return unit >= kMinHashUnit && unit <= kMaxHashUnit && (unit & (unit - 1)) == 0;
}
constexpr uint64_t units_in(uint64_t region_bytes, uint32_t unit) {
  return (region_bytes + unit - 1) / unit;
}

std::vector<uint8_t> encode_block_hashes(std::span<const BlockHash> hashes);
// kBadPayload unless the payload holds exactly `units` hashes.
WireResult<std::vector<BlockHash>> decode_block_hashes(std::span<const uint8_t> payload,
                                                       uint64_t units);

// `region` is the whole region's data; send[i]: unit i goes. send.size() == units_in().
std::vector<uint8_t> encode_sync_delta(std::span<const uint8_t> region, uint32_t unit,
                                       const std::vector<bool>& send);

// A run of consecutive units carried by a SYNC_DELTA: `bytes` at byte `offset` in the region,
// found at `data` in the payload.
struct DeltaRun {
  uint64_t offset = 0;
  uint64_t bytes = 0;
  uint64_t data = 0;
  bool operator==(const DeltaRun&) const = default;
};
// Checks the payload against the region's size and unit (bitmap length, stray bits, data
// length) and returns its runs, ascending and coalesced. kBadPayload on any mismatch.
WireResult<std::vector<DeltaRun>> decode_sync_delta(std::span<const uint8_t> payload,
                                                    uint64_t region_bytes, uint32_t unit);

}  // namespace tandem::backend::wire
