// INQUIRY: standard data (SPC-4 6.6.2) and the VPD pages (SPC-4 7.8, SBC-3 6.6) built from
// a volume's identity and geometry. Pure functions over a DeviceInfo snapshot; thread-safe.
// Identity derives only from the volume UUID so every node presents the same device.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "core/result.h"
#include "target/scsi/cdb.h"
#include "target/scsi/sense.h"

namespace tandem::target::scsi {

// What the pages describe; a snapshot taken per command.
struct DeviceInfo {
  std::string uuid;
  uint32_t block_size = 512;
  uint64_t block_count = 0;
  uint16_t relative_target_port = 1;
};

inline constexpr char kVendorId[] = "TANDEM";   // T10 VENDOR IDENTIFICATION, 8 bytes padded
inline constexpr char kProductId[] = "VOLUME";  // PRODUCT IDENTIFICATION, 16 bytes padded
inline constexpr char kProductRevision[] = "0001";
// IEEE company id used in the NAA 6 designator. A CID-style value (X bit set, locally
// administered); replace with a registered OUI if Tandem ever gets one.
inline constexpr uint32_t kNaaCompanyId = 0x0ADEA0;

// Block limits advertised in VPD 0xB0 and enforced by the command handlers.
inline constexpr uint32_t kMaxTransferBytes = 8u << 20;  // per READ/WRITE/VERIFY/ORWRITE
inline constexpr uint32_t kOptimalTransferBytes = 1u << 20;
inline constexpr uint8_t kMaxCompareAndWriteBlocks = 255;  // backend is atomic
inline constexpr uint32_t kMaxUnmapDescriptors = 256;
// Per UNMAP command: 512 Ki blocks of 512 bytes, under the 1 Mi blocks initiators (and
// libiscsi's BlockLimits check) treat as a sane explicit limit.
inline constexpr uint64_t kMaxUnmapBytes = 256ull << 20;
// Per WRITE SAME command. Kept equal to the maximum transfer length so that an initiator
// reading back what one WRITE SAME wrote needs a single READ (libiscsi WriteSame16.Unmap
// does exactly that); NUMBER OF LOGICAL BLOCKS = 0 ("to the end") is bounded by it too.
inline constexpr uint64_t kMaxWriteSameBytes = kMaxTransferBytes;
inline constexpr uint32_t kOptimalUnmapGranularityBytes = 4096;
// READ CAPACITY(16) reports one logical block per physical block (SBC-3 5.16.2). Backends
// do store 4 KiB pages, but reporting 8:1 for 512-byte volumes makes libiscsi's
// GetLBAStatus.UnmapSingle fail (it expects the first descriptor of a request at LBA i+1 to
// start at i+8, against SBC-3 5.8), while 1:1 only skips its unaligned-unmap variants, which
// need a physical block larger than the logical one. Unmapping part of a 4 KiB page is still
// correct: the store zeroes the partial range.
inline constexpr uint32_t kPhysicalBlockBytes = 0;  // 0: equal to the logical block

uint32_t max_transfer_blocks(uint32_t block_size);
uint32_t max_unmap_blocks(uint32_t block_size);
uint64_t max_write_same_blocks(uint32_t block_size);
// LOGICAL BLOCKS PER PHYSICAL BLOCK EXPONENT: 0 (see kPhysicalBlockBytes).
uint8_t logical_per_physical_exponent(uint32_t block_size);

// The 16-byte NAA IEEE Registered Extended designator (SPC-4 7.8.6.6.4) for a UUID.
std::array<uint8_t, 16> naa6_designator(const std::string& uuid);
// The unit serial number (VPD 0x80): the UUID's hex digits, or the UUID itself.
std::string unit_serial(const std::string& uuid);

// The whole INQUIRY response (before allocation-length truncation) for `cdb`, or the
// sense to fail with. lun_present=false yields peripheral qualifier 011b (SPC-4 6.6.2).
core::Result<std::vector<uint8_t>, Sense> build_inquiry(const Cdb& cdb, const DeviceInfo& info,
                                                        bool lun_present);

std::vector<uint8_t> standard_inquiry(bool lun_present);
// A VPD page, or INVALID FIELD IN CDB for an unsupported page code.
core::Result<std::vector<uint8_t>, Sense> vpd_page(uint8_t page, const DeviceInfo& info);

}  // namespace tandem::target::scsi
