// Volume verification: per-region CRC32C checksums of one copy's image, and the comparison
// of several copies' checksums. Pure functions over files (blocking reads): call them off the
// network threads. A region that is a hole on disk checksums as zeros, so sparse and written
// zeros compare equal (they read the same to an initiator).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/result.h"

namespace tandem::mgmt {

inline constexpr uint64_t kVerifyRegionBytes = uint64_t{1} << 20;

struct RegionChecksums {
  uint64_t region_bytes = kVerifyRegionBytes;
  uint64_t volume_bytes = 0;
  std::vector<uint32_t> crc;  // one per region (the last may be short)
};

// Checksums of the first `volume_bytes` of the image at `path`.
core::Result<RegionChecksums, std::string> checksum_image(const std::string& path,
                                                          uint64_t volume_bytes,
                                                          uint64_t region_bytes = kVerifyRegionBytes);

// {"region_bytes", "volume_bytes", "crc": "hex..."} (8 hex digits per region) and back;
// parsing checks every length.
nlohmann::json to_json(const RegionChecksums& c);
core::Result<RegionChecksums, std::string> checksums_from_json(const nlohmann::json& j);

struct VerifyOutcome {
  bool identical = true;
  std::vector<uint64_t> differing_regions;  // ascending, at most 1000 listed
  uint64_t differing_count = 0;
  std::string error;  // copies of different geometry
};
// Compares every copy against the first (by key order).
VerifyOutcome compare_checksums(const std::map<std::string, RegionChecksums>& copies);

}  // namespace tandem::mgmt
