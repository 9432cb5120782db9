// Mode parameters of one logical unit (SPC-4 7.5, SBC-3 6.5): the caching (0x08), control
// (0x0A) and informational exceptions control (0x1C) pages, MODE SENSE(6/10) responses and
// MODE SELECT(6/10) parsing. Not thread-safe: the LogicalUnit owns it under its mutex.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <vector>

#include "core/result.h"
#include "target/scsi/cdb.h"
#include "target/scsi/inquiry.h"
#include "target/scsi/sense.h"

namespace tandem::target::scsi {

inline constexpr uint8_t kCachingPage = 0x08;
inline constexpr uint8_t kControlPage = 0x0A;
inline constexpr uint8_t kInformationalExceptionsPage = 0x1C;
inline constexpr uint8_t kAllPages = 0x3F;

class ModePages {
 public:
  ModePages();

  // Caching page WCE bit: when clear, every write is issued with FUA.
  bool write_cache_enabled() const { return (caching_[2] & 0x04) != 0; }
  // Control page SWP bit (SPC-4 7.5.8): when set, the logical unit refuses medium writes.
  bool software_write_protect() const { return (control_[4] & 0x08) != 0; }

  // The MODE SENSE(6) or (10) response for `cdb` (opcode selects the format), before
  // allocation-length truncation. write_protected sets WP in the device-specific parameter.
  core::Result<std::vector<uint8_t>, Sense> sense(const Cdb& cdb, const DeviceInfo& info,
                                                  bool write_protected) const;

  // Applies a MODE SELECT(6) or (10) parameter list. Returns true when a value changed.
  // Changes only changeable bits; anything else that differs is INVALID FIELD IN PARAMETER
  // LIST (SPC-4 6.9). Nothing is applied unless the whole list is valid.
  core::Result<bool, Sense> select(const Cdb& cdb, std::span<const std::byte> data,
                                   const DeviceInfo& info);

 private:
  // Current values; default and changeable masks are constants in mode_pages.cc.
  std::vector<uint8_t> caching_;
  std::vector<uint8_t> control_;
  std::vector<uint8_t> ie_;
};

}  // namespace tandem::target::scsi
