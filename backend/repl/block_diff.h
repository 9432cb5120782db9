// Checksum-compared resync (resync.h): the per-unit strong hashes a copy returns for a region,
// and which units of the master's region the copy needs. Pure functions (OpenSSL SHA-256 for
// the hash, no I/O), safe from any thread.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "backend/wire/sync_delta.h"

namespace tandem::backend::repl {

// SHA-256 of each unit of `region` (the last one may be short), truncated to 128 bits: a
// collision-resistant hash, so equal hashes mean equal data. A CRC would not do: data that
// differs must never be taken for equal.
std::vector<wire::BlockHash> hash_units(std::span<const uint8_t> region, uint32_t unit);

// The units of the master's `region` a copy must be sent. copy_hashes: the copy's hashes of
// the same region (hash_units()); null when the copy's region is known to be all zeros (never
// written): then only the units holding a non-zero byte go. copy_hashes->size() must be
// wire::units_in(region.size(), unit).
std::vector<bool> units_to_send(std::span<const uint8_t> region, uint32_t unit,
                                const std::vector<wire::BlockHash>* copy_hashes);

}  // namespace tandem::backend::repl
