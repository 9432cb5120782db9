// Task management, NOP ping both ways, Logout, Text/SendTargets, Reject paths.
#include <gtest/gtest.h>

#include "target/iscsi/session.h"
#include "test_util.h"

namespace tandem::target::iscsi {
namespace {

using testing::actions_of;
using testing::Harness;
using testing::pdus_of;

ScsiCommand read_cmd(uint32_t itt, uint32_t cmd_sn, uint64_t lun = 0) {
  ScsiCommand c;
  c.itt = itt;
  c.cmd_sn = cmd_sn;
  c.read = true;
  c.expected_length = 512;
  c.lun = lun;
  return c;
}

TaskMgmtRequest tmf(TmfFunction f, uint32_t itt, uint32_t cmd_sn, uint32_t ref = kReservedTag,
                    uint32_t ref_cmd_sn = 0, uint64_t lun = 0) {
  TaskMgmtRequest t;
  t.immediate = true;
  t.function = static_cast<uint8_t>(f);
  t.itt = itt;
  t.cmd_sn = cmd_sn;
  t.ref_task_tag = ref;
  t.ref_cmd_sn = ref_cmd_sn;
  t.lun = lun;
  return t;
}

uint8_t tmf_response(Actions& out) {
  auto r = pdus_of<TaskMgmtResponse>(out);
  EXPECT_EQ(r.size(), 1u);
  return r.empty() ? 0xee : r[0].response;
}

TEST(Tmf, AbortTaskSuppressesResponse) {
  Harness h({});
  h.send(read_cmd(1, 1));
  EXPECT_EQ(tmf_response(h.send(tmf(TmfFunction::kAbortTask, 50, 2, 1, 1))), 0);
  EXPECT_TRUE(h.complete(1, {}).empty());  // aborted tasks never get a response
  EXPECT_EQ(h.session.task_count(), 0u);
}

TEST(Tmf, AbortUnknownTask) {
  Harness h({});
  h.send(read_cmd(1, 1));
  h.complete(1, {});
  // CmdSN 1 was received and completed: the task does not exist.
  EXPECT_EQ(tmf_response(h.send(tmf(TmfFunction::kAbortTask, 50, 2, 1, 1))), 1);
}

TEST(Tmf, AbortNeverReceivedCommandPlugsGap) {
  Harness h({});
  h.send(read_cmd(2, 2));  // CmdSN 1 went missing
  EXPECT_EQ(h.session.exp_cmd_sn(), 1u);
  EXPECT_EQ(tmf_response(h.send(tmf(TmfFunction::kAbortTask, 50, 3, 1, 1))), 0);
  EXPECT_EQ(h.session.exp_cmd_sn(), 3u);
}

TEST(Tmf, AbortTaskSetByLun) {
  Harness h({});
  h.send(read_cmd(1, 1, encode_lun(0)));
  h.send(read_cmd(2, 2, encode_lun(1)));
  h.send(read_cmd(3, 3, encode_lun(1)));
  EXPECT_EQ(
      tmf_response(h.send(tmf(TmfFunction::kAbortTaskSet, 50, 4, kReservedTag, 0, encode_lun(1)))),
      0);
  EXPECT_EQ(h.session.task_count(), 1u);
  EXPECT_TRUE(h.complete(2, {}).empty());
  EXPECT_EQ(pdus_of<ScsiResponse>(h.complete(1, {})).size(), 1u);
}

TEST(Tmf, ClearTaskSet) {
  Harness h({});
  h.send(read_cmd(1, 1));
  EXPECT_EQ(tmf_response(h.send(tmf(TmfFunction::kClearTaskSet, 50, 2))), 0);
  EXPECT_EQ(h.session.task_count(), 0u);
}

TEST(Tmf, LunResetAsksForDeviceReset) {
  Harness h({});
  h.send(read_cmd(1, 1, encode_lun(2)));
  auto& out = h.send(tmf(TmfFunction::kLunReset, 50, 2, kReservedTag, 0, encode_lun(2)));
  auto resets = actions_of<ResetDevice>(out);
  ASSERT_EQ(resets.size(), 1u);
  EXPECT_EQ(resets[0].lun, 2u);
  EXPECT_FALSE(resets[0].whole_target);
  EXPECT_EQ(tmf_response(out), 0);
  EXPECT_EQ(h.session.task_count(), 0u);
}

TEST(Tmf, TargetResets) {
  Harness h({});
  h.send(read_cmd(1, 1));
  auto& warm = h.send(tmf(TmfFunction::kTargetWarmReset, 50, 2));
  EXPECT_EQ(actions_of<ResetDevice>(warm).size(), 1u);
  EXPECT_TRUE(actions_of<CloseConnection>(warm).empty());
  auto& cold = h.send(tmf(TmfFunction::kTargetColdReset, 51, 2));
  EXPECT_EQ(tmf_response(cold), 0);
  ASSERT_EQ(actions_of<CloseConnection>(cold).size(), 1u);
  EXPECT_FALSE(actions_of<CloseConnection>(cold)[0].logout);
}

TEST(Tmf, UnsupportedFunctions) {
  Harness h({});
  EXPECT_EQ(tmf_response(h.send(tmf(TmfFunction::kClearAca, 50, 1))), 5);
  EXPECT_EQ(tmf_response(h.send(tmf(TmfFunction::kTaskReassign, 51, 1))), 4);
  EXPECT_EQ(tmf_response(h.send(tmf(TmfFunction(0x55), 52, 1))), 255);
}

TEST(Nop, PingIsEchoed) {
  Harness h({});
  NopOut n;
  n.itt = 9;
  n.cmd_sn = 1;
  n.immediate = true;
  n.lun = encode_lun(1);
  n.data = {1, 2, 3, 4, 5};
  auto r = pdus_of<NopIn>(h.send(n));
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].itt, 9u);
  EXPECT_EQ(r[0].ttt, kReservedTag);
  EXPECT_EQ(r[0].data, n.data);
  EXPECT_EQ(r[0].lun, n.lun);
  EXPECT_EQ(r[0].stat_sn, 100u);
  EXPECT_EQ(h.session.stat_sn(), 101u);
}

TEST(Nop, NonImmediatePingConsumesCmdSn) {
  Harness h({});
  NopOut n;
  n.itt = 9;
  n.cmd_sn = 1;
  n.immediate = false;
  EXPECT_EQ(pdus_of<NopIn>(h.send(n)).size(), 1u);
  EXPECT_EQ(h.session.exp_cmd_sn(), 2u);
}

TEST(Nop, TargetPingReplyMatched) {
  Harness h({});
  Actions out;
  const uint32_t ttt = h.session.send_ping(out);
  auto ping = pdus_of<NopIn>(out);
  ASSERT_EQ(ping.size(), 1u);
  EXPECT_EQ(ping[0].itt, kReservedTag);
  EXPECT_EQ(ping[0].ttt, ttt);
  EXPECT_EQ(h.session.stat_sn(), 100u);  // not advanced
  NopOut reply;
  reply.itt = kReservedTag;
  reply.ttt = ttt;
  auto got = actions_of<PingReplied>(h.send(reply));
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].ttt, ttt);
  EXPECT_TRUE(h.send(reply).empty());  // second reply: nothing outstanding
}

TEST(Nop, PingWithTttFromInitiatorRejected) {
  Harness h({});
  NopOut n;
  n.itt = 3;
  n.ttt = 5;
  EXPECT_EQ(pdus_of<Reject>(h.send(n)).size(), 1u);
}

TEST(Logout, CloseSession) {
  SessionParams p;
  p.default_time2wait = 2;
  p.default_time2retain = 0;
  Harness h(p);
  h.send(read_cmd(1, 1));
  LogoutRequest l;
  l.itt = 77;
  l.cmd_sn = 2;
  l.reason = 0;
  auto& out = h.send(l);
  auto rsp = pdus_of<LogoutResponse>(out);
  ASSERT_EQ(rsp.size(), 1u);
  EXPECT_EQ(rsp[0].response, 0);
  EXPECT_EQ(rsp[0].itt, 77u);
  EXPECT_EQ(rsp[0].time2wait, 2);
  auto close = actions_of<CloseConnection>(out);
  ASSERT_EQ(close.size(), 1u);
  EXPECT_TRUE(close[0].logout);
  EXPECT_TRUE(h.session.logged_out());
  EXPECT_TRUE(h.complete(1, {}).empty());
  EXPECT_TRUE(h.send(read_cmd(2, 3)).empty());  // nothing after logout
}

TEST(Logout, WrongCidAndRecovery) {
  Harness h({});
  LogoutRequest l;
  l.immediate = true;
  l.reason = 1;
  l.cid = 5;
  EXPECT_EQ(pdus_of<LogoutResponse>(h.send(l))[0].response, 1);
  l.reason = 2;
  EXPECT_EQ(pdus_of<LogoutResponse>(h.send(l))[0].response, 2);
  EXPECT_FALSE(h.session.logged_out());
  l.reason = 1;
  l.cid = 0;
  EXPECT_EQ(pdus_of<LogoutResponse>(h.send(l))[0].response, 0);
}

TextRequest text_req(uint32_t itt, uint32_t cmd_sn, std::string_view body,
                     uint32_t ttt = kReservedTag) {
  TextRequest t;
  t.itt = itt;
  t.cmd_sn = cmd_sn;
  t.ttt = ttt;
  t.data.assign(body.begin(), body.end());
  return t;
}

TEST(SessionText, SendTargetsInDiscoverySession) {
  Harness h({}, {}, SessionType::kDiscovery);
  h.catalog.targets.push_back(TargetEntry{"iqn.a", "", {}, {}, {"1.2.3.4:3260,1"}});
  h.catalog.targets.push_back(TargetEntry{"iqn.hidden", "", {"iqn.nobody"}, {}, {}});
  auto rsp = pdus_of<TextResponse>(h.send(text_req(1, 1, std::string("SendTargets=All\0", 16))));
  ASSERT_EQ(rsp.size(), 1u);
  EXPECT_TRUE(rsp[0].final);
  EXPECT_EQ(rsp[0].ttt, kReservedTag);
  const std::string body(rsp[0].data.begin(), rsp[0].data.end());
  EXPECT_EQ(body, std::string("TargetName=iqn.a\0TargetAddress=1.2.3.4:3260,1\0", 46));
}

TEST(SessionText, LongResponseContinues) {
  SessionParams p;
  p.initiator_max_recv_data_segment_length = 512;
  Harness h(p, {}, SessionType::kDiscovery);
  for (int i = 0; i < 40; ++i) {
    h.catalog.targets.push_back(TargetEntry{
        "iqn.2026-01.test:target-" + std::to_string(i), "", {}, {}, {"10.0.0.1:3260,1"}});
  }
  std::string collected;
  auto rsp = pdus_of<TextResponse>(h.send(text_req(1, 1, std::string("SendTargets=All\0", 16))));
  uint32_t cmd_sn = 2;
  int rounds = 0;
  while (true) {
    ASSERT_EQ(rsp.size(), 1u);
    EXPECT_LE(rsp[0].data.size(), 512u);
    collected.append(rsp[0].data.begin(), rsp[0].data.end());
    if (rsp[0].final) break;
    EXPECT_TRUE(rsp[0].cont);
    ASSERT_NE(rsp[0].ttt, kReservedTag);
    rsp = pdus_of<TextResponse>(h.send(text_req(1, cmd_sn++, "", rsp[0].ttt)));
    ASSERT_LT(++rounds, 100);
  }
  EXPECT_GT(rounds, 1);
  auto keys = std::count(collected.begin(), collected.end(), '\0');
  EXPECT_EQ(keys, 80);
}

TEST(SessionText, ContinuedRequest) {
  Harness h({}, {}, SessionType::kDiscovery);
  h.catalog.targets.push_back(TargetEntry{"iqn.a", "", {}, {}, {}});
  TextRequest first = text_req(1, 1, "SendTar");
  first.cont = true;
  first.final = false;
  auto ack = pdus_of<TextResponse>(h.send(first));
  ASSERT_EQ(ack.size(), 1u);
  EXPECT_TRUE(ack[0].data.empty());
  EXPECT_NE(ack[0].ttt, kReservedTag);
  auto rsp =
      pdus_of<TextResponse>(h.send(text_req(1, 2, std::string("gets=All\0", 9), ack[0].ttt)));
  ASSERT_EQ(rsp.size(), 1u);
  EXPECT_EQ(std::string(rsp[0].data.begin(), rsp[0].data.end()),
            std::string("TargetName=iqn.a\0", 17));
}

TEST(SessionText, UnknownKeysNotUnderstoodAndBadTttRejected) {
  Harness h({});
  auto rsp = pdus_of<TextResponse>(h.send(text_req(1, 1, std::string("Foo=1\0", 6))));
  ASSERT_EQ(rsp.size(), 1u);
  EXPECT_EQ(std::string(rsp[0].data.begin(), rsp[0].data.end()),
            std::string("Foo=NotUnderstood\0", 18));
  EXPECT_EQ(pdus_of<Reject>(h.send(text_req(2, 2, "", 12345))).size(), 1u);
}

TEST(Rejects, DiscoverySessionRefusesScsi) {
  Harness h({}, {}, SessionType::kDiscovery);
  auto rej = pdus_of<Reject>(h.send(read_cmd(1, 1)));
  ASSERT_EQ(rej.size(), 1u);
  EXPECT_EQ(rej[0].reason, uint8_t(RejectReason::kProtocolError));
}

TEST(Rejects, SnackLoginAndTargetOpcodes) {
  Harness h({});
  EXPECT_EQ(pdus_of<Reject>(h.send(SnackRequest{}))[0].reason,
            uint8_t(RejectReason::kCommandNotSupported));
  EXPECT_EQ(pdus_of<Reject>(h.send(LoginRequest{}))[0].reason,
            uint8_t(RejectReason::kProtocolError));
  EXPECT_EQ(pdus_of<Reject>(h.send(R2t{}))[0].reason, uint8_t(RejectReason::kProtocolError));
}

TEST(Rejects, UnknownOpcode) {
  Harness h({});
  RawPdu raw;
  raw.bhs[0] = 0x1e;
  Actions out;
  h.session.on_pdu(raw, out);
  auto rej = pdus_of<Reject>(out);
  ASSERT_EQ(rej.size(), 1u);
  EXPECT_EQ(rej[0].reason, uint8_t(RejectReason::kCommandNotSupported));
  EXPECT_EQ(rej[0].data[0], 0x1e);
  EXPECT_EQ(rej[0].stat_sn, 100u);
}

TEST(Rejects, FramingErrorsClose) {
  Harness h({});
  Actions out;
  h.session.on_parse_error({PduErrorCode::kHeaderDigest, "x", {}}, out);
  ASSERT_EQ(actions_of<CloseConnection>(out).size(), 1u);
  out.clear();
  EXPECT_TRUE((h.send(read_cmd(1, 1)), h.out.empty()));
}

TEST(Rejects, DataDigestOnCommandLeavesGap) {
  Harness h({});
  Actions out;
  RawPdu raw = to_raw(Pdu{read_cmd(1, 1)});
  h.session.on_parse_error({PduErrorCode::kDataDigest, "x", raw.bhs}, out);
  auto rej = pdus_of<Reject>(out);
  ASSERT_EQ(rej.size(), 1u);
  EXPECT_EQ(rej[0].reason, uint8_t(RejectReason::kDataDigestError));
  EXPECT_EQ(h.session.exp_cmd_sn(), 1u);
}

}  // namespace
}  // namespace tandem::target::iscsi

namespace tandem::target::iscsi {
namespace {

TEST(Async, TargetRequestsLogout) {
  testing::Harness h({});
  Actions out;
  h.session.request_logout(5, out);
  auto msg = testing::pdus_of<AsyncMessage>(out);
  ASSERT_EQ(msg.size(), 1u);
  EXPECT_EQ(msg[0].async_event, 1);
  EXPECT_EQ(msg[0].parameter3, 5);
  EXPECT_EQ(msg[0].stat_sn, 100u);
  EXPECT_EQ(h.session.stat_sn(), 101u);
}

}  // namespace
}  // namespace tandem::target::iscsi
