#include "mgmt/verify.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <set>

#include "core/crc32c.h"

namespace tandem::mgmt {

core::Result<RegionChecksums, std::string> checksum_image(const std::string& path,
                                                          uint64_t volume_bytes,
                                                          uint64_t region_bytes) {
  if (region_bytes == 0 || volume_bytes == 0) return core::fail(std::string("empty geometry"));
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return core::fail("cannot open " + path + ": " + std::strerror(errno));
  RegionChecksums out;
  out.region_bytes = region_bytes;
  out.volume_bytes = volume_bytes;
  std::vector<uint8_t> buf(region_bytes);
  std::vector<uint8_t> zeros(region_bytes, 0);
  const uint32_t zero_crc = core::crc32c(std::span<const uint8_t>(zeros));
  for (uint64_t off = 0; off < volume_bytes; off += region_bytes) {
    uint64_t len = std::min(region_bytes, volume_bytes - off);
    // A region with no data at all (a hole) reads as zeros: skip the read.
    off_t data = ::lseek(fd, static_cast<off_t>(off), SEEK_DATA);
    if ((data < 0 && errno == ENXIO) || (data >= 0 && static_cast<uint64_t>(data) >= off + len)) {
      out.crc.push_back(len == region_bytes
                            ? zero_crc
                            : core::crc32c(std::span<const uint8_t>(zeros.data(), len)));
      continue;
    }
    uint64_t done = 0;
    while (done < len) {
      ssize_t n = ::pread(fd, buf.data() + done, len - done, static_cast<off_t>(off + done));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        int e = errno;
        ::close(fd);
        return core::fail("read " + path + ": " + std::strerror(e));
      }
      if (n == 0) {  // short file: the rest reads as zeros
        std::memset(buf.data() + done, 0, len - done);
        break;
      }
      done += static_cast<uint64_t>(n);
    }
    out.crc.push_back(core::crc32c(std::span<const uint8_t>(buf.data(), len)));
  }
  ::close(fd);
  return out;
}

nlohmann::json to_json(const RegionChecksums& c) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string hex;
  hex.reserve(c.crc.size() * 8);
  for (uint32_t v : c.crc) {
    for (int i = 7; i >= 0; --i) hex.push_back(kHex[(v >> (4 * i)) & 15]);
  }
  return {{"region_bytes", c.region_bytes}, {"volume_bytes", c.volume_bytes}, {"crc", hex}};
}

core::Result<RegionChecksums, std::string> checksums_from_json(const nlohmann::json& j) {
  if (!j.is_object() || !j.contains("region_bytes") || !j["region_bytes"].is_number_unsigned() ||
      !j.contains("volume_bytes") || !j["volume_bytes"].is_number_unsigned() ||
      !j.contains("crc") || !j["crc"].is_string()) {
    return core::fail(std::string("checksums: expected region_bytes, volume_bytes, crc"));
  }
  RegionChecksums c;
  c.region_bytes = j["region_bytes"].get<uint64_t>();
  c.volume_bytes = j["volume_bytes"].get<uint64_t>();
  if (c.region_bytes == 0 || c.volume_bytes == 0) return core::fail(std::string("checksums: zero size"));
  const std::string& hex = j["crc"].get_ref<const std::string&>();
  uint64_t regions = (c.volume_bytes + c.region_bytes - 1) / c.region_bytes;
  if (hex.size() != regions * 8) return core::fail(std::string("checksums: wrong crc length"));
  c.crc.reserve(regions);
  for (uint64_t r = 0; r < regions; ++r) {
    uint32_t v = 0;
    for (int i = 0; i < 8; ++i) {
      char ch = hex[r * 8 + i];
      int d = ch >= '0' && ch <= '9' ? ch - '0' : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : -1;
      if (d < 0) return core::fail(std::string("checksums: bad hex"));
      v = v << 4 | static_cast<uint32_t>(d);
    }
    c.crc.push_back(v);
  }
  return c;
}

VerifyOutcome compare_checksums(const std::map<std::string, RegionChecksums>& copies) {
  VerifyOutcome out;
  if (copies.size() < 2) return out;
  const RegionChecksums& first = copies.begin()->second;
  std::set<uint64_t> diff;
  for (const auto& [name, c] : copies) {
    if (c.region_bytes != first.region_bytes || c.volume_bytes != first.volume_bytes ||
        c.crc.size() != first.crc.size()) {
      out.identical = false;
      out.error = "copy on " + name + " has a different size";
      return out;
    }
    for (size_t r = 0; r < c.crc.size(); ++r) {
      if (c.crc[r] != first.crc[r]) diff.insert(r);
    }
  }
  out.differing_count = diff.size();
  out.identical = diff.empty();
  for (uint64_t r : diff) {
    if (out.differing_regions.size() >= 1000) break;
    out.differing_regions.push_back(r);
  }
  return out;
}

}  // namespace tandem::mgmt
