// Byte-exact encode/decode of every opcode (RFC 7143 ch. 11), padding and digests.
#include "target/iscsi/pdu.h"

#include <gtest/gtest.h>

#include "core/crc32c.h"

namespace tandem::target::iscsi {
namespace {

// Round trip through wire bytes and check selected BHS bytes against the RFC layout.
template <class T>
T round_trip(const T& in, Bhs* bhs_out = nullptr) {
  RawPdu raw = to_raw(Pdu{in});
  if (bhs_out) *bhs_out = raw.bhs;
  auto back = decode(raw);
  EXPECT_TRUE(back.ok());
  EXPECT_TRUE(std::holds_alternative<T>(*back));
  // Re-encoding the decoded PDU must give identical bytes.
  EXPECT_EQ(serialize(to_raw(*back)), serialize(raw));
  return std::get<T>(*back);
}

TEST(Pdu, NopOutLayout) {
  NopOut p;
  p.immediate = true;
  p.lun = 0x0001000000000000;
  p.itt = 0x11223344;
  p.ttt = kReservedTag;
  p.cmd_sn = 7;
  p.exp_stat_sn = 9;
  p.data = {1, 2, 3};
  Bhs b;
  NopOut q = round_trip(p, &b);
  EXPECT_EQ(b[0], 0x40);
  EXPECT_EQ(b[1], 0x80);
  EXPECT_EQ(b[7], 3);  // DataSegmentLength
  EXPECT_EQ(b[9], 0x01);
  EXPECT_EQ(b[16], 0x11);
  EXPECT_EQ(b[27], 7);
  EXPECT_EQ(b[31], 9);
  EXPECT_EQ(q.data, p.data);
  EXPECT_EQ(q.cmd_sn, 7u);
  auto wire = encode(Pdu{p});
  ASSERT_EQ(wire.size(), 48u + 4u);  // 3 data bytes padded to 4
  EXPECT_EQ(wire[51], 0);
}

TEST(Pdu, ScsiCommandLayout) {
  ScsiCommand c;
  c.final = true;
  c.read = true;
  c.attr = 1;
  c.lun = 0;
  c.itt = 0x14;
  c.expected_length = 0x400;
  c.cmd_sn = 0x14;
  c.exp_stat_sn = 0x18;
  c.cdb = {0x28, 0, 0, 0, 0, 0, 0, 0, 2, 0};
  Bhs b;
  ScsiCommand q = round_trip(c, &b);
  // This is the RFC 3720 B.4 example READ(10) PDU apart from the ATTR bits.
  EXPECT_EQ(b[0], 0x01);
  EXPECT_EQ(b[1], 0xc1);
  EXPECT_EQ(b[22], 0x04);
  EXPECT_EQ(b[32], 0x28);
  EXPECT_EQ(b[40], 0x02);
  EXPECT_TRUE(q.read);
  EXPECT_FALSE(q.write);
  EXPECT_EQ(q.attr, 1);
  EXPECT_EQ(q.cdb, c.cdb);
}

TEST(Pdu, ScsiCommandWithAhs) {
  ScsiCommand c;
  c.write = true;
  c.ahs = {0x00, 0x05, 0x02, 0x00, 0x00, 0x00, 0x10, 0x00};  // bidi read length 4096
  Bhs b;
  ScsiCommand q = round_trip(c, &b);
  EXPECT_EQ(b[4], 2);  // TotalAHSLength in words
  EXPECT_EQ(q.ahs, c.ahs);
}

TEST(Pdu, TaskMgmtRequestLayout) {
  TaskMgmtRequest t;
  t.function = 1;
  t.lun = 0x0002000000000000;
  t.itt = 5;
  t.ref_task_tag = 4;
  t.cmd_sn = 10;
  t.exp_stat_sn = 11;
  t.ref_cmd_sn = 3;
  t.exp_data_sn = 2;
  Bhs b;
  auto q = round_trip(t, &b);
  EXPECT_EQ(b[0], 0x42);
  EXPECT_EQ(b[1], 0x81);
  EXPECT_EQ(b[23], 4);
  EXPECT_EQ(b[35], 3);
  EXPECT_EQ(b[39], 2);
  EXPECT_EQ(q.ref_cmd_sn, 3u);
}

TEST(Pdu, LoginRequestLayout) {
  LoginRequest l;
  l.transit = true;
  l.csg = 1;
  l.nsg = 3;
  l.version_max = 0;
  l.version_min = 0;
  l.isid = {0x80, 0x12, 0x34, 0x56, 0x78, 0x9a};
  l.tsih = 0;
  l.itt = 0x10;
  l.cid = 0x1234;
  l.cmd_sn = 1;
  l.exp_stat_sn = 0;
  l.data = {'a', '=', 'b', 0};
  Bhs b;
  auto q = round_trip(l, &b);
  EXPECT_EQ(b[0], 0x43);
  EXPECT_EQ(b[1], 0x87);
  EXPECT_EQ(b[8], 0x80);
  EXPECT_EQ(b[13], 0x9a);
  EXPECT_EQ(b[20], 0x12);
  EXPECT_EQ(b[21], 0x34);
  EXPECT_EQ(q.isid, l.isid);
  EXPECT_EQ(q.cid, 0x1234);
  EXPECT_TRUE(q.transit);
  EXPECT_EQ(q.csg, 1);
  EXPECT_EQ(q.nsg, 3);
}

TEST(Pdu, TextRequestLayout) {
  TextRequest t;
  t.final = false;
  t.cont = true;
  t.itt = 1;
  t.ttt = 0x55;
  t.data = {'x', '=', 'y', 0};
  Bhs b;
  auto q = round_trip(t, &b);
  EXPECT_EQ(b[0], 0x04);
  EXPECT_EQ(b[1], 0x40);
  EXPECT_EQ(b[23], 0x55);
  EXPECT_TRUE(q.cont);
  EXPECT_FALSE(q.final);
}

TEST(Pdu, DataOutLayout) {
  DataOut d;
  d.final = true;
  d.itt = 9;
  d.ttt = 77;
  d.exp_stat_sn = 4;
  d.data_sn = 2;
  d.buffer_offset = 8192;
  d.data.assign(5, 0xab);
  Bhs b;
  auto q = round_trip(d, &b);
  EXPECT_EQ(b[0], 0x05);
  EXPECT_EQ(b[1], 0x80);
  EXPECT_EQ(b[39], 2);
  EXPECT_EQ(b[42], 0x20);
  EXPECT_EQ(q.buffer_offset, 8192u);
  EXPECT_EQ(q.data.size(), 5u);
}

TEST(Pdu, LogoutRequestLayout) {
  LogoutRequest l;
  l.immediate = true;
  l.reason = 1;
  l.itt = 3;
  l.cid = 7;
  l.cmd_sn = 100;
  Bhs b;
  auto q = round_trip(l, &b);
  EXPECT_EQ(b[0], 0x46);
  EXPECT_EQ(b[1], 0x81);
  EXPECT_EQ(b[21], 7);
  EXPECT_EQ(q.reason, 1);
}

TEST(Pdu, SnackLayout) {
  SnackRequest s;
  s.type = 1;
  s.beg_run = 4;
  s.run_length = 2;
  Bhs b;
  auto q = round_trip(s, &b);
  EXPECT_EQ(b[0], 0x10);
  EXPECT_EQ(b[1], 0x81);
  EXPECT_EQ(b[43], 4);
  EXPECT_EQ(b[47], 2);
  EXPECT_EQ(q.type, 1);
}

TEST(Pdu, NopInLayout) {
  NopIn n;
  n.itt = kReservedTag;
  n.ttt = 0x42;
  n.stat_sn = 1;
  n.exp_cmd_sn = 2;
  n.max_cmd_sn = 3;
  Bhs b;
  auto q = round_trip(n, &b);
  EXPECT_EQ(b[0], 0x20);
  EXPECT_EQ(b[27], 1);
  EXPECT_EQ(b[31], 2);
  EXPECT_EQ(b[35], 3);
  EXPECT_EQ(q.ttt, 0x42u);
}

TEST(Pdu, ScsiResponseLayout) {
  ScsiResponse r;
  r.underflow = true;
  r.bidi_overflow = true;
  r.status = 0x02;
  r.itt = 1;
  r.exp_data_sn = 5;
  r.bidi_residual = 6;
  r.residual = 512;
  r.data = {0, 2, 0x70, 0};
  Bhs b;
  auto q = round_trip(r, &b);
  EXPECT_EQ(b[0], 0x21);
  EXPECT_EQ(b[1], 0x80 | 0x10 | 0x02);
  EXPECT_EQ(b[3], 0x02);
  EXPECT_EQ(b[39], 5);
  EXPECT_EQ(b[43], 6);
  EXPECT_EQ(b[46], 2);
  EXPECT_TRUE(q.underflow);
  EXPECT_TRUE(q.bidi_overflow);
  EXPECT_FALSE(q.overflow);
}

TEST(Pdu, TaskMgmtResponseLayout) {
  TaskMgmtResponse r;
  r.response = 5;
  r.itt = 8;
  Bhs b;
  auto q = round_trip(r, &b);
  EXPECT_EQ(b[0], 0x22);
  EXPECT_EQ(b[2], 5);
  EXPECT_EQ(q.response, 5);
}

TEST(Pdu, LoginResponseLayout) {
  LoginResponse r;
  r.transit = true;
  r.csg = 1;
  r.nsg = 3;
  r.tsih = 0xbeef;
  r.status_class = 2;
  r.status_detail = 1;
  Bhs b;
  auto q = round_trip(r, &b);
  EXPECT_EQ(b[0], 0x23);
  EXPECT_EQ(b[1], 0x87);
  EXPECT_EQ(b[14], 0xbe);
  EXPECT_EQ(b[36], 2);
  EXPECT_EQ(b[37], 1);
  EXPECT_EQ(q.tsih, 0xbeef);
}

TEST(Pdu, TextResponseLayout) {
  TextResponse r;
  r.final = false;
  r.cont = true;
  r.ttt = 3;
  auto q = round_trip(r);
  EXPECT_TRUE(q.cont);
  EXPECT_FALSE(q.final);
}

TEST(Pdu, DataInLayout) {
  DataIn d;
  d.final = true;
  d.status_present = true;
  d.underflow = true;
  d.status = 0;
  d.data_sn = 3;
  d.buffer_offset = 1024;
  d.residual = 100;
  d.data.assign(7, 1);
  Bhs b;
  auto q = round_trip(d, &b);
  EXPECT_EQ(b[0], 0x25);
  EXPECT_EQ(b[1], 0x83);
  EXPECT_EQ(b[39], 3);
  EXPECT_EQ(b[47], 100);
  EXPECT_TRUE(q.status_present);
  EXPECT_EQ(encode(Pdu{d}).size(), 48u + 8u);
}

TEST(Pdu, LogoutResponseLayout) {
  LogoutResponse r;
  r.response = 0;
  r.time2wait = 2;
  r.time2retain = 20;
  Bhs b;
  auto q = round_trip(r, &b);
  EXPECT_EQ(b[0], 0x26);
  EXPECT_EQ(b[41], 2);
  EXPECT_EQ(b[43], 20);
  EXPECT_EQ(q.time2retain, 20);
}

TEST(Pdu, R2tLayout) {
  R2t r;
  r.itt = 1;
  r.ttt = 2;
  r.r2t_sn = 3;
  r.buffer_offset = 4;
  r.desired_length = 5;
  Bhs b;
  auto q = round_trip(r, &b);
  EXPECT_EQ(b[0], 0x31);
  EXPECT_EQ(b[39], 3);
  EXPECT_EQ(b[43], 4);
  EXPECT_EQ(b[47], 5);
  EXPECT_EQ(q.desired_length, 5u);
}

TEST(Pdu, AsyncMessageLayout) {
  AsyncMessage a;
  a.async_event = 1;
  a.parameter1 = 1;
  a.parameter2 = 2;
  a.parameter3 = 3;
  Bhs b;
  auto q = round_trip(a, &b);
  EXPECT_EQ(b[0], 0x32);
  EXPECT_EQ(b[16], 0xff);
  EXPECT_EQ(b[36], 1);
  EXPECT_EQ(b[39], 1);
  EXPECT_EQ(b[43], 3);
  EXPECT_EQ(q.parameter2, 2);
}

TEST(Pdu, RejectLayout) {
  Reject r;
  r.reason = 0x09;
  r.data.assign(48, 0x11);
  Bhs b;
  auto q = round_trip(r, &b);
  EXPECT_EQ(b[0], 0x3f);
  EXPECT_EQ(b[2], 0x09);
  EXPECT_EQ(b[7], 48);
  EXPECT_EQ(q.data.size(), 48u);
}

TEST(Pdu, OpcodeOfMatchesEncoding) {
  const Pdu all[] = {NopOut{},       ScsiCommand{},  TaskMgmtRequest{},  LoginRequest{},
                     TextRequest{},  DataOut{},      LogoutRequest{},    SnackRequest{},
                     NopIn{},        ScsiResponse{}, TaskMgmtResponse{}, LoginResponse{},
                     TextResponse{}, DataIn{},       LogoutResponse{},   R2t{},
                     AsyncMessage{}, Reject{}};
  for (const Pdu& p : all) EXPECT_EQ(opcode_of(p), to_raw(p).opcode());
}

TEST(Pdu, UnknownOpcodeFails) {
  RawPdu r;
  r.bhs[0] = 0x1c;  // vendor-specific / undefined
  auto d = decode(r);
  ASSERT_FALSE(d.ok());
  EXPECT_EQ(d.error().code, PduErrorCode::kUnknownOpcode);
}

TEST(Pdu, AhsOnNonCommandFails) {
  RawPdu r = to_raw(Pdu{NopOut{}});
  r.ahs = {0, 1, 3, 0};
  auto d = decode(r);
  ASSERT_FALSE(d.ok());
  EXPECT_EQ(d.error().code, PduErrorCode::kInvalidField);
}

TEST(Pdu, DigestsAppended) {
  NopOut p;
  p.data = {1, 2, 3, 4, 5};
  auto wire = encode(Pdu{p}, {true, true});
  ASSERT_EQ(wire.size(), 48u + 4u + 8u + 4u);
  const uint32_t hd = core::crc32c(std::span<const uint8_t>(wire).first(48));
  EXPECT_EQ(wire[48], uint8_t(hd));
  EXPECT_EQ(wire[51], uint8_t(hd >> 24));
  const uint32_t dd = core::crc32c(std::span<const uint8_t>(wire).subspan(52, 8));
  EXPECT_EQ(wire[60], uint8_t(dd));
}

TEST(Pdu, NoDataNoDataDigest) {
  auto wire = encode(Pdu{NopOut{}}, {true, true});
  EXPECT_EQ(wire.size(), 52u);
}

TEST(Pdu, SerialNumberArithmetic) {
  EXPECT_TRUE(sn_lt(1, 2));
  EXPECT_TRUE(sn_lt(0xfffffff0u, 5));
  EXPECT_FALSE(sn_lt(5, 0xfffffff0u));
  EXPECT_TRUE(sn_le(3, 3));
}

}  // namespace
}  // namespace tandem::target::iscsi
