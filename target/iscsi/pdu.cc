#include "target/iscsi/pdu.h"

#include <algorithm>

#include "core/crc32c.h"

namespace tandem::target::iscsi {
namespace {

using core::fail;

uint16_t get16(const Bhs& b, size_t o) { return uint16_t(b[o] << 8 | b[o + 1]); }
uint32_t get32(const Bhs& b, size_t o) { return get_be32(b, o); }
uint64_t get64(const Bhs& b, size_t o) { return uint64_t{get32(b, o)} << 32 | get32(b, o + 4); }
void put16(Bhs& b, size_t o, uint16_t v) {
  b[o] = uint8_t(v >> 8);
  b[o + 1] = uint8_t(v);
}
void put32(Bhs& b, size_t o, uint32_t v) { put_be32(b, o, v); }
void put64(Bhs& b, size_t o, uint64_t v) {
  put32(b, o, uint32_t(v >> 32));
  put32(b, o + 4, uint32_t(v));
}
uint8_t bit(bool v, uint8_t mask) { return v ? mask : 0; }

// Fields common to the header of every PDU (§11.2.1): opcode/I bit and the ITT.
RawPdu start(Opcode op, bool immediate, uint32_t itt) {
  RawPdu r;
  r.bhs[0] = uint8_t(static_cast<uint8_t>(op) | bit(immediate, 0x40));
  put32(r.bhs, 16, itt);
  return r;
}
// StatSN / ExpCmdSN / MaxCmdSN at 24/28/32 in most target PDUs.
void put_sns(RawPdu& r, uint32_t stat, uint32_t exp, uint32_t max) {
  put32(r.bhs, 24, stat);
  put32(r.bhs, 28, exp);
  put32(r.bhs, 32, max);
}

struct Encoder {
  RawPdu operator()(const NopOut& p) {
    RawPdu r = start(Opcode::kNopOut, p.immediate, p.itt);
    r.bhs[1] = 0x80;
    put64(r.bhs, 8, p.lun);
    put32(r.bhs, 20, p.ttt);
    put32(r.bhs, 24, p.cmd_sn);
    put32(r.bhs, 28, p.exp_stat_sn);
    r.data = p.data;
    return r;
  }
  RawPdu operator()(const ScsiCommand& p) {
    RawPdu r = start(Opcode::kScsiCommand, p.immediate, p.itt);
    r.bhs[1] = uint8_t(bit(p.final, 0x80) | bit(p.read, 0x40) | bit(p.write, 0x20) | (p.attr & 7));
    put64(r.bhs, 8, p.lun);
    put32(r.bhs, 20, p.expected_length);
    put32(r.bhs, 24, p.cmd_sn);
    put32(r.bhs, 28, p.exp_stat_sn);
    std::copy(p.cdb.begin(), p.cdb.end(), r.bhs.begin() + 32);
    r.ahs = p.ahs;
    r.data = p.data;
    return r;
  }
  RawPdu operator()(const TaskMgmtRequest& p) {
    RawPdu r = start(Opcode::kTaskMgmtRequest, p.immediate, p.itt);
    r.bhs[1] = uint8_t(0x80 | (p.function & 0x7f));
    put64(r.bhs, 8, p.lun);
    put32(r.bhs, 20, p.ref_task_tag);
    put32(r.bhs, 24, p.cmd_sn);
    put32(r.bhs, 28, p.exp_stat_sn);
    put32(r.bhs, 32, p.ref_cmd_sn);
    put32(r.bhs, 36, p.exp_data_sn);
    return r;
  }
  RawPdu operator()(const LoginRequest& p) {
    RawPdu r = start(Opcode::kLoginRequest, true, p.itt);
    r.bhs[1] = uint8_t(bit(p.transit, 0x80) | bit(p.cont, 0x40) | (p.csg & 3) << 2 | (p.nsg & 3));
    r.bhs[2] = p.version_max;
    r.bhs[3] = p.version_min;
    std::copy(p.isid.begin(), p.isid.end(), r.bhs.begin() + 8);
    put16(r.bhs, 14, p.tsih);
    put16(r.bhs, 20, p.cid);
    put32(r.bhs, 24, p.cmd_sn);
    put32(r.bhs, 28, p.exp_stat_sn);
    r.data = p.data;
    return r;
  }
  RawPdu operator()(const TextRequest& p) {
    RawPdu r = start(Opcode::kTextRequest, p.immediate, p.itt);
    r.bhs[1] = uint8_t(bit(p.final, 0x80) | bit(p.cont, 0x40));
    put64(r.bhs, 8, p.lun);
    put32(r.bhs, 20, p.ttt);
    put32(r.bhs, 24, p.cmd_sn);
    put32(r.bhs, 28, p.exp_stat_sn);
    r.data = p.data;
    return r;
  }
  RawPdu operator()(const DataOut& p) {
    RawPdu r = start(Opcode::kDataOut, false, p.itt);
    r.bhs[1] = bit(p.final, 0x80);
    put64(r.bhs, 8, p.lun);
    put32(r.bhs, 20, p.ttt);
    put32(r.bhs, 28, p.exp_stat_sn);
    put32(r.bhs, 36, p.data_sn);
    put32(r.bhs, 40, p.buffer_offset);
    r.data = p.data;
    return r;
  }
  RawPdu operator()(const LogoutRequest& p) {
    RawPdu r = start(Opcode::kLogoutRequest, p.immediate, p.itt);
    r.bhs[1] = uint8_t(0x80 | (p.reason & 0x7f));
    put16(r.bhs, 20, p.cid);
    put32(r.bhs, 24, p.cmd_sn);
    put32(r.bhs, 28, p.exp_stat_sn);
    return r;
  }
  RawPdu operator()(const SnackRequest& p) {
    RawPdu r = start(Opcode::kSnackRequest, false, p.itt);
    r.bhs[1] = uint8_t(0x80 | (p.type & 0x0f));
    put64(r.bhs, 8, p.lun);
    put32(r.bhs, 20, p.ttt);
    put32(r.bhs, 28, p.exp_stat_sn);
    put32(r.bhs, 40, p.beg_run);
    put32(r.bhs, 44, p.run_length);
    return r;
  }
  RawPdu operator()(const NopIn& p) {
    RawPdu r = start(Opcode::kNopIn, false, p.itt);
    r.bhs[1] = 0x80;
    put64(r.bhs, 8, p.lun);
    put32(r.bhs, 20, p.ttt);
    put_sns(r, p.stat_sn, p.exp_cmd_sn, p.max_cmd_sn);
    r.data = p.data;
    return r;
  }
  RawPdu operator()(const ScsiResponse& p) {
    RawPdu r = start(Opcode::kScsiResponse, false, p.itt);
    r.bhs[1] = uint8_t(0x80 | bit(p.bidi_overflow, 0x10) | bit(p.bidi_underflow, 0x08) |
                       bit(p.overflow, 0x04) | bit(p.underflow, 0x02));
    r.bhs[2] = p.response;
    r.bhs[3] = p.status;
    put32(r.bhs, 20, p.snack_tag);
    put_sns(r, p.stat_sn, p.exp_cmd_sn, p.max_cmd_sn);
    put32(r.bhs, 36, p.exp_data_sn);
    put32(r.bhs, 40, p.bidi_residual);
    put32(r.bhs, 44, p.residual);
    r.data = p.data;
    return r;
  }
  RawPdu operator()(const TaskMgmtResponse& p) {
    RawPdu r = start(Opcode::kTaskMgmtResponse, false, p.itt);
    r.bhs[1] = 0x80;
    r.bhs[2] = p.response;
    put_sns(r, p.stat_sn, p.exp_cmd_sn, p.max_cmd_sn);
    return r;
  }
  RawPdu operator()(const LoginResponse& p) {
    RawPdu r = start(Opcode::kLoginResponse, false, p.itt);
    r.bhs[1] = uint8_t(bit(p.transit, 0x80) | bit(p.cont, 0x40) | (p.csg & 3) << 2 | (p.nsg & 3));
    r.bhs[2] = p.version_max;
    r.bhs[3] = p.version_active;
    std::copy(p.isid.begin(), p.isid.end(), r.bhs.begin() + 8);
    put16(r.bhs, 14, p.tsih);
    put_sns(r, p.stat_sn, p.exp_cmd_sn, p.max_cmd_sn);
    r.bhs[36] = p.status_class;
    r.bhs[37] = p.status_detail;
    r.data = p.data;
    return r;
  }
  RawPdu operator()(const TextResponse& p) {
    RawPdu r = start(Opcode::kTextResponse, false, p.itt);
    r.bhs[1] = uint8_t(bit(p.final, 0x80) | bit(p.cont, 0x40));
    put64(r.bhs, 8, p.lun);
    put32(r.bhs, 20, p.ttt);
    put_sns(r, p.stat_sn, p.exp_cmd_sn, p.max_cmd_sn);
    r.data = p.data;
    return r;
  }
  RawPdu operator()(const DataIn& p) {
    RawPdu r = start(Opcode::kDataIn, false, p.itt);
    r.bhs[1] = uint8_t(bit(p.final, 0x80) | bit(p.ack, 0x40) | bit(p.overflow, 0x04) |
                       bit(p.underflow, 0x02) | bit(p.status_present, 0x01));
    r.bhs[3] = p.status_present ? p.status : 0;
    put64(r.bhs, 8, p.lun);
    put32(r.bhs, 20, p.ttt);
    put_sns(r, p.stat_sn, p.exp_cmd_sn, p.max_cmd_sn);
    put32(r.bhs, 36, p.data_sn);
    put32(r.bhs, 40, p.buffer_offset);
    put32(r.bhs, 44, p.residual);
    r.data = p.data;
    return r;
  }
  RawPdu operator()(const LogoutResponse& p) {
    RawPdu r = start(Opcode::kLogoutResponse, false, p.itt);
    r.bhs[1] = 0x80;
    r.bhs[2] = p.response;
    put_sns(r, p.stat_sn, p.exp_cmd_sn, p.max_cmd_sn);
    put16(r.bhs, 40, p.time2wait);
    put16(r.bhs, 42, p.time2retain);
    return r;
  }
  RawPdu operator()(const R2t& p) {
    RawPdu r = start(Opcode::kR2t, false, p.itt);
    r.bhs[1] = 0x80;
    put64(r.bhs, 8, p.lun);
    put32(r.bhs, 20, p.ttt);
    put_sns(r, p.stat_sn, p.exp_cmd_sn, p.max_cmd_sn);
    put32(r.bhs, 36, p.r2t_sn);
    put32(r.bhs, 40, p.buffer_offset);
    put32(r.bhs, 44, p.desired_length);
    return r;
  }
  RawPdu operator()(const AsyncMessage& p) {
    RawPdu r = start(Opcode::kAsyncMessage, false, kReservedTag);
    r.bhs[1] = 0x80;
    put64(r.bhs, 8, p.lun);
    put_sns(r, p.stat_sn, p.exp_cmd_sn, p.max_cmd_sn);
    r.bhs[36] = p.async_event;
    r.bhs[37] = p.async_vcode;
    put16(r.bhs, 38, p.parameter1);
    put16(r.bhs, 40, p.parameter2);
    put16(r.bhs, 42, p.parameter3);
    r.data = p.data;
    return r;
  }
  RawPdu operator()(const Reject& p) {
    RawPdu r = start(Opcode::kReject, false, kReservedTag);
    r.bhs[1] = 0x80;
    r.bhs[2] = p.reason;
    put_sns(r, p.stat_sn, p.exp_cmd_sn, p.max_cmd_sn);
    put32(r.bhs, 36, p.data_sn);
    r.data = p.data;
    return r;
  }
};

void get_sns(const Bhs& b, uint32_t& stat, uint32_t& exp, uint32_t& max) {
  stat = get32(b, 24);
  exp = get32(b, 28);
  max = get32(b, 32);
}

core::Result<Pdu, PduError> decode_bhs(const RawPdu& r) {
  const Bhs& b = r.bhs;
  const bool imm = r.immediate();
  const uint32_t itt = get32(b, 16);
  const uint8_t f1 = b[1];
  // Only SCSI Command carries AHS (§11.2.2); anything else is malformed.
  if (!r.ahs.empty() && r.opcode() != Opcode::kScsiCommand) {
    return fail(PduError{PduErrorCode::kInvalidField, "AHS on a PDU that takes none", b});
  }
  switch (r.opcode()) {
    case Opcode::kNopOut:
      return Pdu{NopOut{imm, get64(b, 8), itt, get32(b, 20), get32(b, 24), get32(b, 28), r.data}};
    case Opcode::kScsiCommand: {
      ScsiCommand p{imm,
                    (f1 & 0x80) != 0,
                    (f1 & 0x40) != 0,
                    (f1 & 0x20) != 0,
                    uint8_t(f1 & 7),
                    get64(b, 8),
                    itt,
                    get32(b, 20),
                    get32(b, 24),
                    get32(b, 28),
                    {},
                    r.ahs,
                    r.data};
      std::copy(b.begin() + 32, b.end(), p.cdb.begin());
      return Pdu{std::move(p)};
    }
    case Opcode::kTaskMgmtRequest:
      return Pdu{TaskMgmtRequest{imm, uint8_t(f1 & 0x7f), get64(b, 8), itt, get32(b, 20),
                                 get32(b, 24), get32(b, 28), get32(b, 32), get32(b, 36)}};
    case Opcode::kLoginRequest: {
      LoginRequest p;
      p.transit = f1 & 0x80;
      p.cont = f1 & 0x40;
      p.csg = (f1 >> 2) & 3;
      p.nsg = f1 & 3;
      p.version_max = b[2];
      p.version_min = b[3];
      std::copy(b.begin() + 8, b.begin() + 14, p.isid.begin());
      p.tsih = get16(b, 14);
      p.itt = itt;
      p.cid = get16(b, 20);
      p.cmd_sn = get32(b, 24);
      p.exp_stat_sn = get32(b, 28);
      p.data = r.data;
      return Pdu{std::move(p)};
    }
    case Opcode::kTextRequest:
      return Pdu{TextRequest{imm, (f1 & 0x80) != 0, (f1 & 0x40) != 0, get64(b, 8), itt,
                             get32(b, 20), get32(b, 24), get32(b, 28), r.data}};
    case Opcode::kDataOut:
      return Pdu{DataOut{(f1 & 0x80) != 0, get64(b, 8), itt, get32(b, 20), get32(b, 28),
                         get32(b, 36), get32(b, 40), r.data}};
    case Opcode::kLogoutRequest:
      return Pdu{
          LogoutRequest{imm, uint8_t(f1 & 0x7f), itt, get16(b, 20), get32(b, 24), get32(b, 28)}};
    case Opcode::kSnackRequest:
      return Pdu{SnackRequest{uint8_t(f1 & 0x0f), get64(b, 8), itt, get32(b, 20), get32(b, 28),
                              get32(b, 40), get32(b, 44)}};
    case Opcode::kNopIn: {
      NopIn p{get64(b, 8), itt, get32(b, 20), 0, 0, 0, r.data};
      get_sns(b, p.stat_sn, p.exp_cmd_sn, p.max_cmd_sn);
      return Pdu{std::move(p)};
    }
    case Opcode::kScsiResponse: {
      ScsiResponse p{
          (f1 & 0x10) != 0, (f1 & 0x08) != 0, (f1 & 0x04) != 0, (f1 & 0x02) != 0, b[2], b[3], itt,
          get32(b, 20)};
      get_sns(b, p.stat_sn, p.exp_cmd_sn, p.max_cmd_sn);
      p.exp_data_sn = get32(b, 36);
      p.bidi_residual = get32(b, 40);
      p.residual = get32(b, 44);
      p.data = r.data;
      return Pdu{std::move(p)};
    }
    case Opcode::kTaskMgmtResponse: {
      TaskMgmtResponse p{b[2], itt};
      get_sns(b, p.stat_sn, p.exp_cmd_sn, p.max_cmd_sn);
      return Pdu{p};
    }
    case Opcode::kLoginResponse: {
      LoginResponse p;
      p.transit = f1 & 0x80;
      p.cont = f1 & 0x40;
      p.csg = (f1 >> 2) & 3;
      p.nsg = f1 & 3;
      p.version_max = b[2];
      p.version_active = b[3];
      std::copy(b.begin() + 8, b.begin() + 14, p.isid.begin());
      p.tsih = get16(b, 14);
      p.itt = itt;
      get_sns(b, p.stat_sn, p.exp_cmd_sn, p.max_cmd_sn);
      p.status_class = b[36];
      p.status_detail = b[37];
      p.data = r.data;
      return Pdu{std::move(p)};
    }
    case Opcode::kTextResponse: {
      TextResponse p{(f1 & 0x80) != 0, (f1 & 0x40) != 0, get64(b, 8), itt, get32(b, 20)};
      get_sns(b, p.stat_sn, p.exp_cmd_sn, p.max_cmd_sn);
      p.data = r.data;
      return Pdu{std::move(p)};
    }
    case Opcode::kDataIn: {
      DataIn p{(f1 & 0x80) != 0, (f1 & 0x40) != 0,
               (f1 & 0x04) != 0, (f1 & 0x02) != 0,
               (f1 & 0x01) != 0, b[3],
               get64(b, 8),      itt,
               get32(b, 20)};
      get_sns(b, p.stat_sn, p.exp_cmd_sn, p.max_cmd_sn);
      p.data_sn = get32(b, 36);
      p.buffer_offset = get32(b, 40);
      p.residual = get32(b, 44);
      p.data = r.data;
      return Pdu{std::move(p)};
    }
    case Opcode::kLogoutResponse: {
      LogoutResponse p{b[2], itt};
      get_sns(b, p.stat_sn, p.exp_cmd_sn, p.max_cmd_sn);
      p.time2wait = get16(b, 40);
      p.time2retain = get16(b, 42);
      return Pdu{p};
    }
    case Opcode::kR2t: {
      R2t p{get64(b, 8), itt, get32(b, 20)};
      get_sns(b, p.stat_sn, p.exp_cmd_sn, p.max_cmd_sn);
      p.r2t_sn = get32(b, 36);
      p.buffer_offset = get32(b, 40);
      p.desired_length = get32(b, 44);
      return Pdu{p};
    }
    case Opcode::kAsyncMessage: {
      AsyncMessage p{get64(b, 8)};
      get_sns(b, p.stat_sn, p.exp_cmd_sn, p.max_cmd_sn);
      p.async_event = b[36];
      p.async_vcode = b[37];
      p.parameter1 = get16(b, 38);
      p.parameter2 = get16(b, 40);
      p.parameter3 = get16(b, 42);
      p.data = r.data;
      return Pdu{std::move(p)};
    }
    case Opcode::kReject: {
      Reject p{b[2]};
      get_sns(b, p.stat_sn, p.exp_cmd_sn, p.max_cmd_sn);
      p.data_sn = get32(b, 36);
      p.data = r.data;
      return Pdu{std::move(p)};
    }
  }
  return fail(PduError{PduErrorCode::kUnknownOpcode, "unknown opcode", b});
}

void append_le32(std::vector<uint8_t>& out, uint32_t v) {
  // The digest is sent least significant byte first (RFC 3720 B.4 vectors).
  for (int i = 0; i < 4; ++i) out.push_back(uint8_t(v >> (8 * i)));
}

}  // namespace

uint32_t get_be32(std::span<const uint8_t> p, size_t off) {
  return uint32_t{p[off]} << 24 | uint32_t{p[off + 1]} << 16 | uint32_t{p[off + 2]} << 8 |
         uint32_t{p[off + 3]};
}

void put_be32(std::span<uint8_t> p, size_t off, uint32_t v) {
  p[off] = uint8_t(v >> 24);
  p[off + 1] = uint8_t(v >> 16);
  p[off + 2] = uint8_t(v >> 8);
  p[off + 3] = uint8_t(v);
}

uint32_t RawPdu::itt() const { return get_be32(bhs, 16); }
uint32_t RawPdu::data_segment_length() const {
  return uint32_t{bhs[5]} << 16 | uint32_t{bhs[6]} << 8 | bhs[7];
}

core::Result<Pdu, PduError> decode(const RawPdu& raw) { return decode_bhs(raw); }

RawPdu to_raw(const Pdu& pdu) {
  RawPdu r = std::visit(Encoder{}, pdu);
  // Length fields always derive from the payloads, so they cannot disagree.
  r.bhs[4] = uint8_t(r.ahs.size() / 4);
  const uint32_t dsl = uint32_t(std::min<size_t>(r.data.size(), kMaxDataSegmentField));
  r.bhs[5] = uint8_t(dsl >> 16);
  r.bhs[6] = uint8_t(dsl >> 8);
  r.bhs[7] = uint8_t(dsl);
  return r;
}

Opcode opcode_of(const Pdu& pdu) {
  // Indexed by the variant's alternative order in pdu.h.
  static constexpr Opcode kByIndex[] = {
      Opcode::kNopOut,        Opcode::kScsiCommand,      Opcode::kTaskMgmtRequest,
      Opcode::kLoginRequest,  Opcode::kTextRequest,      Opcode::kDataOut,
      Opcode::kLogoutRequest, Opcode::kSnackRequest,     Opcode::kNopIn,
      Opcode::kScsiResponse,  Opcode::kTaskMgmtResponse, Opcode::kLoginResponse,
      Opcode::kTextResponse,  Opcode::kDataIn,           Opcode::kLogoutResponse,
      Opcode::kR2t,           Opcode::kAsyncMessage,     Opcode::kReject};
  static_assert(std::size(kByIndex) == std::variant_size_v<Pdu>);
  return kByIndex[pdu.index()];
}

std::vector<uint8_t> serialize(const RawPdu& raw, DigestOptions digests) {
  std::vector<uint8_t> out;
  const size_t dlen = raw.data.size();
  out.reserve(kBhsSize + raw.ahs.size() + 8 + dlen + 3);
  out.insert(out.end(), raw.bhs.begin(), raw.bhs.end());
  out.insert(out.end(), raw.ahs.begin(), raw.ahs.end());
  if (digests.header) append_le32(out, core::crc32c(out));
  if (dlen > 0) {
    const size_t start = out.size();
    out.insert(out.end(), raw.data.begin(), raw.data.end());
    out.insert(out.end(), pad4(uint32_t(dlen)), 0);
    if (digests.data) {
      append_le32(out, core::crc32c(std::span<const uint8_t>(out).subspan(start)));
    }
  }
  return out;
}

}  // namespace tandem::target::iscsi
