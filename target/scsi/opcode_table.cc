// The opcode table (STYLE habit 5) and REPORT SUPPORTED OPERATION CODES (SPC-4 6.35), which
// is generated from it so what we advertise is exactly what we dispatch.
#include <algorithm>

#include "target/scsi/logical_unit.h"

namespace tandem::target::scsi {
namespace {

using U = std::array<uint8_t, 16>;
using L = LogicalUnit;

// CDB USAGE DATA bit masks: a set bit is a CDB bit the device server looks at.
constexpr U kRw10 = {0, 0xF8, 0xFF, 0xFF, 0xFF, 0xFF, 0x00, 0xFF, 0xFF, 0x00};
constexpr U kRw12 = {0, 0xF8, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x00, 0x00};
constexpr U kRw16 = {0,    0xF8, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
                     0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x00, 0x00};
constexpr U kVerify10 = {0, 0xF6, 0xFF, 0xFF, 0xFF, 0xFF, 0x00, 0xFF, 0xFF, 0x00};
constexpr U kVerify12 = {0, 0xF6, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x00, 0x00};
constexpr U kVerify16 = {0,    0xF6, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
                         0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x00, 0x00};
constexpr U kWv10 = {0, 0xF2, 0xFF, 0xFF, 0xFF, 0xFF, 0x00, 0xFF, 0xFF, 0x00};
constexpr U kWv12 = {0, 0xF2, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x00, 0x00};
constexpr U kWv16 = {0,    0xF2, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
                     0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x00, 0x00};
constexpr U kImmed10 = {0, 0x02, 0xFF, 0xFF, 0xFF, 0xFF, 0x00, 0xFF, 0xFF, 0x00};
constexpr U kImmed16 = {0,    0x02, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
                        0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x00, 0x00};
constexpr U kWriteSame16 = {0,    0xF9, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
                            0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x00, 0x00};
constexpr U kCaw = {0,    0xF8, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
                    0xFF, 0xFF, 0x00, 0x00, 0x00, 0xFF, 0x00, 0x00};
constexpr U kSai16 = {0,    0x1F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
                      0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x00, 0x00};
constexpr U kReadCap16 = {0, 0x1F, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0x00, 0x00};
constexpr U kPrIn = {0, 0x1F, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0x00};
constexpr U kPrOut = {0, 0x1F, 0xFF, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0x00};
constexpr U kNone6 = {0, 0, 0, 0, 0, 0};
constexpr U kNone10 = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0};

std::vector<OpInfo> build_table() {
  using A = Access;
  std::vector<OpInfo> t = {
      {op::kTestUnitReady, -1, 6, A::kAlways, &L::test_unit_ready, kNone6},
      {op::kRequestSense, -1, 6, A::kAlways, &L::request_sense, {0, 0x01, 0, 0, 0xFF, 0}},
      {op::kRead6, -1, 6, A::kRead, &L::read, {0, 0x1F, 0xFF, 0xFF, 0xFF, 0}},
      {op::kWrite6, -1, 6, A::kWrite, &L::write, {0, 0x1F, 0xFF, 0xFF, 0xFF, 0}},
      {op::kInquiry, -1, 6, A::kAlways, &L::inquiry, {0, 0x01, 0xFF, 0xFF, 0xFF, 0}},
      {op::kModeSelect6, -1, 6, A::kWrite, &L::mode_select, {0, 0x11, 0, 0, 0xFF, 0}},
      {op::kReserve6, -1, 6, A::kReserve, &L::reserve, kNone6},
      {op::kRelease6, -1, 6, A::kRelease, &L::release, kNone6},
      {op::kModeSense6, -1, 6, A::kRead, &L::mode_sense, {0, 0x08, 0xFF, 0xFF, 0xFF, 0}},
      {op::kStartStopUnit, -1, 6, A::kAlways, &L::start_stop_unit, {0, 0x01, 0, 0x0F, 0xF7, 0}},
      {op::kPreventAllow, -1, 6, A::kAlways, &L::prevent_allow, {0, 0, 0, 0, 0x03, 0}},
      {op::kReadCapacity10,
       -1,
       10,
       A::kAlways,
       &L::read_capacity10,
       {0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0x01, 0}},
      {op::kRead10, -1, 10, A::kRead, &L::read, kRw10},
      {op::kWrite10, -1, 10, A::kWrite, &L::write, kRw10},
      {op::kWriteAndVerify10, -1, 10, A::kWrite, &L::write_and_verify, kWv10},
      {op::kVerify10, -1, 10, A::kRead, &L::verify, kVerify10},
      {op::kPreFetch10, -1, 10, A::kRead, &L::pre_fetch, kImmed10},
      {op::kSynchronizeCache10, -1, 10, A::kWrite, &L::synchronize_cache, kImmed10},
      {op::kWriteSame10, -1, 10, A::kWrite, &L::write_same, kRw10},
      {op::kUnmap, -1, 10, A::kWrite, &L::unmap, {0, 0x01, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0}},
      {op::kModeSelect10,
       -1,
       10,
       A::kWrite,
       &L::mode_select,
       {0, 0x11, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0}},
      {op::kReserve10, -1, 10, A::kReserve, &L::reserve, kNone10},
      {op::kRelease10, -1, 10, A::kRelease, &L::release, kNone10},
      {op::kModeSense10,
       -1,
       10,
       A::kRead,
       &L::mode_sense,
       {0, 0x18, 0xFF, 0xFF, 0, 0, 0, 0xFF, 0xFF, 0}},
      {op::kRead16, -1, 16, A::kRead, &L::read, kRw16},
      {op::kCompareAndWrite, -1, 16, A::kWrite, &L::compare_and_write, kCaw},
      {op::kWrite16, -1, 16, A::kWrite, &L::write, kRw16},
      {op::kOrWrite16, -1, 16, A::kWrite, &L::or_write, kRw16},
      {op::kWriteAndVerify16, -1, 16, A::kWrite, &L::write_and_verify, kWv16},
      {op::kVerify16, -1, 16, A::kRead, &L::verify, kVerify16},
      {op::kPreFetch16, -1, 16, A::kRead, &L::pre_fetch, kImmed16},
      {op::kSynchronizeCache16, -1, 16, A::kWrite, &L::synchronize_cache, kImmed16},
      {op::kWriteSame16, -1, 16, A::kWrite, &L::write_same, kWriteSame16},
      {op::kServiceActionIn16, op::kSaReadCapacity16, 16, A::kAlways, &L::read_capacity16,
       kReadCap16},
      {op::kServiceActionIn16, op::kSaGetLbaStatus, 16, A::kRead, &L::get_lba_status, kSai16},
      {op::kReportLuns,
       -1,
       12,
       A::kAlways,
       &L::report_luns,
       {0, 0, 0xFF, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0}},
      {op::kMaintenanceIn,
       op::kSaReportSupportedOpcodes,
       12,
       A::kAlways,
       &L::report_supported_opcodes,
       {0, 0x1F, 0x87, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0}},
      {op::kRead12, -1, 12, A::kRead, &L::read, kRw12},
      {op::kWrite12, -1, 12, A::kWrite, &L::write, kRw12},
      {op::kWriteAndVerify12, -1, 12, A::kWrite, &L::write_and_verify, kWv12},
      {op::kVerify12, -1, 12, A::kRead, &L::verify, kVerify12},
  };
  // PERSISTENT RESERVE IN/OUT: one entry per supported service action.
  for (int16_t sa = 0; sa <= 3; ++sa) {
    t.push_back({op::kPersistentReserveIn, sa, 10, A::kPr, &L::persistent_reserve_in, kPrIn});
  }
  for (int16_t sa = 0; sa <= 6; ++sa) {
    t.push_back({op::kPersistentReserveOut, sa, 10, A::kPr, &L::persistent_reserve_out, kPrOut});
  }
  for (auto& e : t) e.usage[0] = e.opcode;  // byte 0 of CDB USAGE DATA is the opcode
  std::sort(t.begin(), t.end(), [](const OpInfo& a, const OpInfo& b) {
    return a.opcode != b.opcode ? a.opcode < b.opcode : a.service_action < b.service_action;
  });
  return t;
}

// Command timeouts descriptor (SPC-4 6.35.4): nominal 0 (unknown), recommended 30 s.
void append_timeouts(std::vector<uint8_t>& d) {
  append_be16(d, 0x0A);
  d.push_back(0);
  d.push_back(0);
  append_be32(d, 0);
  append_be32(d, 30);
}

}  // namespace

const std::vector<OpInfo>& LogicalUnit::ops() {
  static const std::vector<OpInfo> table = build_table();
  return table;
}

const OpInfo* LogicalUnit::find_op(uint8_t opcode, uint8_t service_action) {
  const bool sa = has_service_actions(opcode);
  for (const auto& e : ops()) {
    if (e.opcode == opcode && (!sa || e.service_action == service_action)) return &e;
  }
  return nullptr;
}

bool LogicalUnit::has_service_actions(uint8_t opcode) {
  return opcode == op::kPersistentReserveIn || opcode == op::kPersistentReserveOut ||
         opcode == op::kServiceActionIn16 || opcode == op::kMaintenanceIn;
}

void LogicalUnit::report_supported_opcodes(Command& cmd) {
  const Cdb& cdb = cmd.cdb();
  const bool rctd = cdb[2] & 0x80;
  const uint8_t options = cdb[2] & 0x07;
  const uint8_t req_op = cdb[3];
  const uint16_t req_sa = get_be16(&cdb[4]);
  const uint32_t alloc = get_be32(&cdb[6]);
  std::vector<uint8_t> d;
  if (options == 0) {
    // All commands (SPC-4 6.35.2): header + one 8-byte descriptor (+12 with RCTD) each.
    d.resize(4, 0);
    for (const auto& e : ops()) {
      d.push_back(e.opcode);
      d.push_back(0);
      append_be16(d, e.service_action < 0 ? 0 : static_cast<uint16_t>(e.service_action));
      d.push_back(0);
      d.push_back(static_cast<uint8_t>((rctd ? 0x02 : 0) | (e.service_action >= 0 ? 0x01 : 0)));
      append_be16(d, e.cdb_length);
      if (rctd) append_timeouts(d);
    }
    put_be32(&d[0], static_cast<uint32_t>(d.size() - 4));
    return reply(cmd, d, alloc);
  }
  // One command (SPC-4 6.35.3).
  const OpInfo* found = nullptr;
  const bool sa = has_service_actions(req_op);
  switch (options) {
    case 1:
      if (sa) return reply_sense(cmd, invalid_field_in_cdb(2, 2));
      found = find_op(req_op, 0);
      break;
    case 2:
      if (!sa) return reply_sense(cmd, invalid_field_in_cdb(2, 2));
      if (req_sa <= 0x1F) found = find_op(req_op, static_cast<uint8_t>(req_sa));
      break;
    case 3:
      if (!sa || req_sa <= 0x1F) found = find_op(req_op, static_cast<uint8_t>(req_sa & 0x1F));
      break;
    default:
      return reply_sense(cmd, invalid_field_in_cdb(2, 2));
  }
  d.resize(4, 0);
  if (found == nullptr) {
    d[1] = 0x01;  // SUPPORT: not supported
    return reply(cmd, d, alloc);
  }
  d[1] = static_cast<uint8_t>((rctd ? 0x80 : 0) | 0x03);  // CTDP, SUPPORT: supported per standard
  put_be16(&d[2], found->cdb_length);
  d.insert(d.end(), found->usage.begin(), found->usage.begin() + found->cdb_length);
  if (rctd) append_timeouts(d);
  reply(cmd, d, alloc);
}

}  // namespace tandem::target::scsi
