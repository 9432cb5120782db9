#include "backend/wire/sync_delta.h"

#include <algorithm>
#include <string>

namespace tandem::backend::wire {
namespace {

WireError bad(std::string message) { return WireError{WireErrc::kBadPayload, std::move(message)}; }

}  // namespace

std::vector<uint8_t> encode_block_hashes(std::span<const BlockHash> hashes) {
  std::vector<uint8_t> out;
  out.reserve(hashes.size() * kBlockHashSize);
  for (const BlockHash& h : hashes) out.insert(out.end(), h.begin(), h.end());
  return out;
}

WireResult<std::vector<BlockHash>> decode_block_hashes(std::span<const uint8_t> payload,
                                                       uint64_t units) {
  if (payload.size() % kBlockHashSize != 0 || payload.size() / kBlockHashSize != units) {
    return core::fail(bad("SYNC_HASHES holds " + std::to_string(payload.size()) +
                          " bytes, expected " + std::to_string(units) + " hashes"));
  }
  std::vector<BlockHash> out(units);
  for (uint64_t i = 0; i < units; ++i) {
    std::copy_n(payload.begin() + i * kBlockHashSize, kBlockHashSize, out[i].begin());
  }
  return out;
}

std::vector<uint8_t> encode_sync_delta(std::span<const uint8_t> region, uint32_t unit,
                                       const std::vector<bool>& send) {
  const uint64_t n = send.size();
  std::vector<uint8_t> out((n + 7) / 8, 0);
  uint64_t data = 0;
  for (uint64_t i = 0; i < n; ++i) {
    if (!send[i]) continue;
    out[i / 8] |= uint8_t(1u << (i % 8));
    data += std::min<uint64_t>(unit, region.size() - i * unit);
  }
  out.reserve(out.size() + data);
  for (uint64_t i = 0; i < n; ++i) {
    if (!send[i]) continue;
    const uint64_t at = i * unit, len = std::min<uint64_t>(unit, region.size() - at);
    out.insert(out.end(), region.begin() + at, region.begin() + at + len);
  }
  return out;
}

WireResult<std::vector<DeltaRun>> decode_sync_delta(std::span<const uint8_t> payload,
                                                    uint64_t region_bytes, uint32_t unit) {
  if (!valid_hash_unit(unit) || region_bytes == 0) return core::fail(bad("bad delta geometry"));
  const uint64_t n = units_in(region_bytes, unit), map_bytes = (n + 7) / 8;
  if (payload.size() < map_bytes) return core::fail(bad("SYNC_DELTA bitmap truncated"));
  if (n % 8 != 0 && (payload[map_bytes - 1] >> (n % 8)) != 0) {
    return core::fail(bad("SYNC_DELTA bitmap names units beyond the region"));
  }
  std::vector<DeltaRun> runs;
  uint64_t data = map_bytes;
  for (uint64_t i = 0; i < n; ++i) {
    if (!(payload[i / 8] & (1u << (i % 8)))) continue;
    const uint64_t at = i * unit, len = std::min<uint64_t>(unit, region_bytes - at);
    if (!runs.empty() && runs.back().offset + runs.back().bytes == at) {
      runs.back().bytes += len;
    } else {
      runs.push_back(DeltaRun{at, len, data});
    }
    data += len;
  }
  if (data != payload.size()) {
    return core::fail(bad("SYNC_DELTA carries " + std::to_string(payload.size() - map_bytes) +
                          " data bytes, its bitmap names " + std::to_string(data - map_bytes)));
  }
  return runs;
}

}  // namespace tandem::backend::wire
