#include "target/scsi/cdb.h"

namespace tandem::target::scsi {

void append_be16(std::vector<uint8_t>& out, uint16_t v) {
  out.push_back(static_cast<uint8_t>(v >> 8));
  out.push_back(static_cast<uint8_t>(v));
}

void append_be32(std::vector<uint8_t>& out, uint32_t v) {
  append_be16(out, static_cast<uint16_t>(v >> 16));
  append_be16(out, static_cast<uint16_t>(v));
}

void append_be64(std::vector<uint8_t>& out, uint64_t v) {
  append_be32(out, static_cast<uint32_t>(v >> 32));
  append_be32(out, static_cast<uint32_t>(v));
}

size_t cdb_length(uint8_t opcode) {
  switch (opcode >> 5) {  // GROUP CODE, SPC-4 table 9
    case 0:
      return 6;
    case 1:
    case 2:
      return 10;
    case 4:
      return 16;
    case 5:
      return 12;
    default:
      return 0;
  }
}

std::optional<uint64_t> cdb_transfer_bytes(const Cdb& cdb, uint32_t block_size) {
  const uint64_t blocks = decode_lba_range(cdb).blocks;
  switch (cdb[0]) {
    case op::kRead6:
    case op::kRead10:
    case op::kRead12:
    case op::kRead16:
    case op::kWrite6:
    case op::kWrite10:
    case op::kWrite12:
    case op::kWrite16:
    case op::kWriteAndVerify10:
    case op::kWriteAndVerify12:
    case op::kWriteAndVerify16:
    case op::kOrWrite16:
      return blocks * block_size;
    case op::kVerify10:
    case op::kVerify12:
    case op::kVerify16:
      switch ((cdb[1] >> 1) & 0x03) {  // BYTCHK (SBC-3 5.29)
        case 1:
          return blocks * block_size;
        case 3:
          return blocks == 0 ? 0 : block_size;
        default:
          return 0;
      }
    case op::kCompareAndWrite:
      return 2 * blocks * block_size;
    case op::kWriteSame10:
      return block_size;
    case op::kWriteSame16:
      return (cdb[1] & 0x01) ? 0 : block_size;  // NDOB
    default:
      return std::nullopt;
  }
}

LbaRange decode_lba_range(const Cdb& cdb) {
  LbaRange r;
  if (cdb[0] == op::kCompareAndWrite) {
    r.lba = get_be64(&cdb[2]);
    r.blocks = cdb[13];
    return r;
  }
  switch (cdb_length(cdb[0])) {
    case 6:
      r.lba = get_be24(&cdb[1]) & 0x1FFFFF;
      r.blocks = cdb[4] == 0 ? 256 : cdb[4];
      break;
    case 10:
      r.lba = get_be32(&cdb[2]);
      r.blocks = get_be16(&cdb[7]);
      break;
    case 12:
      r.lba = get_be32(&cdb[2]);
      r.blocks = get_be32(&cdb[6]);
      break;
    case 16:
      r.lba = get_be64(&cdb[2]);
      r.blocks = get_be32(&cdb[10]);
      break;
    default:
      break;
  }
  return r;
}

}  // namespace tandem::target::scsi
