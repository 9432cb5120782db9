// CDB decoding helpers: big-endian field access and the LBA/length layouts shared by the
// READ/WRITE/VERIFY/WRITE SAME/... families (SBC-3 5.x). Pure functions, thread-safe.
// Callers pass the 16-byte zero-padded CDB from ScsiTask; nothing here reads past it.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <vector>

namespace tandem::target::scsi {

using Cdb = std::array<uint8_t, 16>;

// SPC-4 / SBC-3 operation codes handled by the logical unit.
namespace op {
inline constexpr uint8_t kTestUnitReady = 0x00;
inline constexpr uint8_t kRequestSense = 0x03;
inline constexpr uint8_t kRead6 = 0x08;
inline constexpr uint8_t kWrite6 = 0x0A;
inline constexpr uint8_t kInquiry = 0x12;
inline constexpr uint8_t kModeSelect6 = 0x15;
inline constexpr uint8_t kReserve6 = 0x16;
inline constexpr uint8_t kRelease6 = 0x17;
inline constexpr uint8_t kModeSense6 = 0x1A;
inline constexpr uint8_t kStartStopUnit = 0x1B;
inline constexpr uint8_t kPreventAllow = 0x1E;
inline constexpr uint8_t kReadCapacity10 = 0x25;
inline constexpr uint8_t kRead10 = 0x28;
inline constexpr uint8_t kWrite10 = 0x2A;
inline constexpr uint8_t kWriteAndVerify10 = 0x2E;
inline constexpr uint8_t kVerify10 = 0x2F;
inline constexpr uint8_t kPreFetch10 = 0x34;
inline constexpr uint8_t kSynchronizeCache10 = 0x35;
inline constexpr uint8_t kWriteSame10 = 0x41;
inline constexpr uint8_t kUnmap = 0x42;
inline constexpr uint8_t kModeSelect10 = 0x55;
inline constexpr uint8_t kReserve10 = 0x56;
inline constexpr uint8_t kRelease10 = 0x57;
inline constexpr uint8_t kModeSense10 = 0x5A;
inline constexpr uint8_t kPersistentReserveIn = 0x5E;
inline constexpr uint8_t kPersistentReserveOut = 0x5F;
inline constexpr uint8_t kRead16 = 0x88;
inline constexpr uint8_t kCompareAndWrite = 0x89;
inline constexpr uint8_t kWrite16 = 0x8A;
inline constexpr uint8_t kOrWrite16 = 0x8B;
inline constexpr uint8_t kWriteAndVerify16 = 0x8E;
inline constexpr uint8_t kVerify16 = 0x8F;
inline constexpr uint8_t kPreFetch16 = 0x90;
inline constexpr uint8_t kSynchronizeCache16 = 0x91;
inline constexpr uint8_t kWriteSame16 = 0x93;
inline constexpr uint8_t kServiceActionIn16 = 0x9E;
inline constexpr uint8_t kReportLuns = 0xA0;
inline constexpr uint8_t kMaintenanceIn = 0xA3;
inline constexpr uint8_t kRead12 = 0xA8;
inline constexpr uint8_t kWrite12 = 0xAA;
inline constexpr uint8_t kWriteAndVerify12 = 0xAE;
inline constexpr uint8_t kVerify12 = 0xAF;

// Service actions.
inline constexpr uint8_t kSaReadCapacity16 = 0x10;          // of 0x9E
inline constexpr uint8_t kSaGetLbaStatus = 0x12;            // of 0x9E
inline constexpr uint8_t kSaReportSupportedOpcodes = 0x0C;  // of 0xA3
}  // namespace op

inline uint16_t get_be16(const uint8_t* p) { return static_cast<uint16_t>(p[0] << 8 | p[1]); }
inline uint32_t get_be24(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) << 16 | static_cast<uint32_t>(p[1]) << 8 | p[2];
}
inline uint32_t get_be32(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) << 24 | static_cast<uint32_t>(p[1]) << 16 |
         static_cast<uint32_t>(p[2]) << 8 | p[3];
}
inline uint64_t get_be64(const uint8_t* p) {
  return static_cast<uint64_t>(get_be32(p)) << 32 | get_be32(p + 4);
}
inline void put_be16(uint8_t* p, uint16_t v) {
  p[0] = static_cast<uint8_t>(v >> 8);
  p[1] = static_cast<uint8_t>(v);
}
inline void put_be32(uint8_t* p, uint32_t v) {
  put_be16(p, static_cast<uint16_t>(v >> 16));
  put_be16(p + 2, static_cast<uint16_t>(v));
}
inline void put_be64(uint8_t* p, uint64_t v) {
  put_be32(p, static_cast<uint32_t>(v >> 32));
  put_be32(p + 4, static_cast<uint32_t>(v));
}

// Appends big-endian values to a growing response buffer.
void append_be16(std::vector<uint8_t>& out, uint16_t v);
void append_be32(std::vector<uint8_t>& out, uint32_t v);
void append_be64(std::vector<uint8_t>& out, uint64_t v);

inline const uint8_t* as_u8(std::span<const std::byte> s) {
  return reinterpret_cast<const uint8_t*>(s.data());
}

// Length of the CDB for an opcode from its group code (SPC-4 4.2.5.1); 0 when the group
// is reserved or vendor specific.
size_t cdb_length(uint8_t opcode);

// The LBA / transfer length of a block command, decoded from the layout its opcode uses:
// 6-byte (21-bit LBA, length 0 means 256: SBC-3 5.15), 10-, 12- and 16-byte. COMPARE AND
// WRITE keeps its NUMBER OF LOGICAL BLOCKS in byte 13 (SBC-3 5.2).
struct LbaRange {
  uint64_t lba = 0;
  uint32_t blocks = 0;
};
LbaRange decode_lba_range(const Cdb& cdb);

// Bytes of block data a medium-access command moves according to its CDB: TRANSFER LENGTH
// x block size for READ/WRITE/WRITE AND VERIFY/ORWRITE and VERIFY with BYTCHK 01b, one block
// for VERIFY with BYTCHK 11b and for WRITE SAME (none with NDOB), twice NUMBER OF LOGICAL
// BLOCKS for COMPARE AND WRITE. nullopt for commands that move no logical blocks. This is
// what ScsiResult::cdb_transfer_length reports to the transport for residuals.
std::optional<uint64_t> cdb_transfer_bytes(const Cdb& cdb, uint32_t block_size);

// True when [lba, lba + blocks) lies within a medium of `capacity` blocks (overflow safe).
inline bool range_ok(uint64_t lba, uint64_t blocks, uint64_t capacity) {
  return lba <= capacity && blocks <= capacity - lba;
}

// ALLOCATION LENGTH of common CDBs; the data-in is truncated to it (SPC-4 4.2.5.6).
inline uint32_t alloc_len_6(const Cdb& cdb) { return cdb[4]; }

}  // namespace tandem::target::scsi
