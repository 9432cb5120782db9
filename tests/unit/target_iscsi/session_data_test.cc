// Write data flow: immediate data, unsolicited Data-Out, R2T, and Data-Out validation
// over InitialR2T x ImmediateData x FirstBurstLength x MaxBurstLength x EDTL.
#include <gtest/gtest.h>

#include <deque>
#include <set>
#include <tuple>

#include "target/iscsi/session.h"
#include "test_util.h"

namespace tandem::target::iscsi {
namespace {

using testing::actions_of;
using testing::Harness;
using testing::data_out;
using testing::pattern;
using testing::pdus_of;
using testing::write_cmd;

// (InitialR2T, ImmediateData, FirstBurstLength, MaxBurstLength, EDTL, MaxOutstandingR2T)
using Combo = std::tuple<bool, bool, uint32_t, uint32_t, uint32_t, uint32_t>;

class WriteFlow : public ::testing::TestWithParam<Combo> {};

TEST_P(WriteFlow, InitiatorSimulationDeliversExactPayload) {
  auto [initial_r2t, immediate, first_burst, max_burst, edtl, max_r2t] = GetParam();
  SessionParams p;
  p.initial_r2t = initial_r2t;
  p.immediate_data = immediate;
  p.max_burst_length = max_burst;
  p.first_burst_length = std::min(first_burst, max_burst);
  p.max_outstanding_r2t = max_r2t;
  p.target_max_recv_data_segment_length = 8192;
  Harness h(p);
  const uint32_t mrdsl = 8192;
  const uint32_t fb = p.first_burst_length;

  const uint32_t imm = immediate ? std::min({fb, edtl, mrdsl}) : 0;
  const uint32_t unsol_total = initial_r2t ? imm : std::min(fb, edtl);
  Actions all;
  auto take = [&](Actions& a) { all.insert(all.end(), a.begin(), a.end()); };
  take(h.send(write_cmd(1, 1, edtl, imm, unsol_total == imm)));
  uint32_t dsn = 0;
  for (uint32_t off = imm; off < unsol_total;) {
    const uint32_t n = std::min(mrdsl, unsol_total - off);
    take(h.send(data_out(1, kReservedTag, dsn++, off, n, off + n == unsol_total)));
    off += n;
  }
  // Answer R2Ts in order; new ones may appear as bursts complete.
  std::deque<R2t> r2ts;
  for (const auto& r : pdus_of<R2t>(all)) r2ts.push_back(r);
  uint32_t expected_r2t_sn = 0;
  uint32_t solicited = 0;
  while (!r2ts.empty()) {
    ASSERT_LE(r2ts.size(), max_r2t);
    R2t r = r2ts.front();
    r2ts.pop_front();
    EXPECT_EQ(r.r2t_sn, expected_r2t_sn++);
    EXPECT_LE(r.desired_length, max_burst);
    EXPECT_EQ(r.buffer_offset, unsol_total + solicited);
    solicited += r.desired_length;
    uint32_t sn = 0;
    for (uint32_t off = 0; off < r.desired_length;) {
      const uint32_t n = std::min(mrdsl, r.desired_length - off);
      Actions& out =
          h.send(data_out(1, r.ttt, sn++, r.buffer_offset + off, n, off + n == r.desired_length));
      EXPECT_TRUE(pdus_of<Reject>(out).empty());
      take(out);
      for (const auto& nr : pdus_of<R2t>(out)) r2ts.push_back(nr);
      off += n;
    }
  }
  EXPECT_EQ(unsol_total + solicited, edtl);
  EXPECT_TRUE(pdus_of<Reject>(all).empty());
  auto exec = actions_of<ExecuteTask>(all);
  ASSERT_EQ(exec.size(), 1u);
  const auto& got = exec[0].task->data_out;
  ASSERT_EQ(got.size(), edtl);
  auto want = pattern(0, edtl);
  EXPECT_TRUE(std::equal(want.begin(), want.end(), reinterpret_cast<const uint8_t*>(got.data())));
  // The response's ExpDataSN counts the R2Ts.
  auto rsp = pdus_of<ScsiResponse>(h.complete(1, {}));
  ASSERT_EQ(rsp.size(), 1u);
  EXPECT_EQ(rsp[0].exp_data_sn, expected_r2t_sn);
}

INSTANTIATE_TEST_SUITE_P(Combos, WriteFlow,
                         ::testing::Combine(::testing::Bool(), ::testing::Bool(),
                                            ::testing::Values(4096u, 65536u),   // FirstBurstLength
                                            ::testing::Values(8192u, 262144u),  // MaxBurstLength
                                            ::testing::Values(512u, 20000u, 300000u),  // EDTL
                                            ::testing::Values(1u, 4u)));  // MaxOutstandingR2T

class DataOutErrors : public ::testing::Test {
 protected:
  DataOutErrors() : h(make_params()) {}
  static SessionParams make_params() {
    SessionParams p;
    p.initial_r2t = false;
    p.immediate_data = true;
    p.first_burst_length = 16384;
    p.max_burst_length = 16384;
    return p;
  }
  uint8_t reject_reason(Actions& out) {
    auto r = pdus_of<Reject>(out);
    return r.empty() ? 0 : r[0].reason;
  }
  Harness h;
};

TEST_F(DataOutErrors, UnsolicitedDataSnGap) {
  h.send(write_cmd(1, 1, 65536, 1024, false));
  EXPECT_EQ(reject_reason(h.send(data_out(1, kReservedTag, 1, 1024, 1024, false))),
            uint8_t(RejectReason::kProtocolError));
}

TEST_F(DataOutErrors, UnsolicitedWrongOffset) {
  h.send(write_cmd(1, 1, 65536, 1024, false));
  EXPECT_EQ(reject_reason(h.send(data_out(1, kReservedTag, 0, 2048, 1024, false))),
            uint8_t(RejectReason::kInvalidPduField));
}

TEST_F(DataOutErrors, UnsolicitedBeyondFirstBurst) {
  h.send(write_cmd(1, 1, 65536, 1024, false));
  EXPECT_EQ(reject_reason(h.send(data_out(1, kReservedTag, 0, 1024, 16384, true))),
            uint8_t(RejectReason::kProtocolError));
}

TEST_F(DataOutErrors, UnsolicitedWhenCommandHadFinalBit) {
  h.send(write_cmd(1, 1, 65536, 1024, true));
  EXPECT_EQ(reject_reason(h.send(data_out(1, kReservedTag, 0, 1024, 1024, true))),
            uint8_t(RejectReason::kProtocolError));
}

TEST_F(DataOutErrors, SolicitedChecks) {
  auto r2t = pdus_of<R2t>(h.send(write_cmd(1, 1, 20000, 1024, true)));
  ASSERT_EQ(r2t.size(), 1u);
  EXPECT_EQ(r2t[0].buffer_offset, 1024u);
  EXPECT_EQ(r2t[0].desired_length, 16384u);
  const uint32_t ttt = r2t[0].ttt;
  // Wrong TTT, wrong DataSN, wrong offset, overrun, early F bit.
  EXPECT_EQ(reject_reason(h.send(data_out(1, ttt + 100, 0, 1024, 100, false))),
            uint8_t(RejectReason::kInvalidPduField));
  EXPECT_EQ(reject_reason(h.send(data_out(1, ttt, 3, 1024, 100, false))),
            uint8_t(RejectReason::kProtocolError));
  EXPECT_EQ(reject_reason(h.send(data_out(1, ttt, 0, 2000, 100, false))),
            uint8_t(RejectReason::kInvalidPduField));
  EXPECT_EQ(reject_reason(h.send(data_out(1, ttt, 0, 1024, 16385, true))),
            uint8_t(RejectReason::kProtocolError));
  EXPECT_EQ(reject_reason(h.send(data_out(1, ttt, 0, 1024, 100, true))),
            uint8_t(RejectReason::kProtocolError));
  // Missing F bit on the last PDU of the burst.
  EXPECT_EQ(reject_reason(h.send(data_out(1, ttt, 0, 1024, 16384, false))),
            uint8_t(RejectReason::kProtocolError));
  // The correct PDU is still accepted afterwards.
  auto& out = h.send(data_out(1, ttt, 0, 1024, 16384, true));
  EXPECT_TRUE(pdus_of<Reject>(out).empty());
  auto next = pdus_of<R2t>(out);
  ASSERT_EQ(next.size(), 1u);
  EXPECT_EQ(next[0].r2t_sn, 1u);
  EXPECT_EQ(next[0].buffer_offset, 17408u);
  EXPECT_EQ(next[0].desired_length, 20000u - 17408u);
}

TEST_F(DataOutErrors, UnknownTaskRejected) {
  EXPECT_EQ(reject_reason(h.send(data_out(42, 7, 0, 0, 10, true))),
            uint8_t(RejectReason::kInvalidPduField));
}

TEST(WriteChecks, ImmediateDataWhenNotNegotiated) {
  SessionParams p;
  p.immediate_data = false;
  Harness h(p);
  auto rej = pdus_of<Reject>(h.send(write_cmd(1, 1, 4096, 512, true)));
  ASSERT_EQ(rej.size(), 1u);
  EXPECT_EQ(rej[0].reason, uint8_t(RejectReason::kProtocolError));
}

TEST(WriteChecks, UnsolicitedWhenInitialR2tYes) {
  SessionParams p;
  p.initial_r2t = true;
  Harness h(p);
  auto rej = pdus_of<Reject>(h.send(write_cmd(1, 1, 65536, 512, false)));
  ASSERT_EQ(rej.size(), 1u);
}

TEST(WriteChecks, ImmediateDataBeyondEdtl) {
  Harness h({});
  auto rej = pdus_of<Reject>(h.send(write_cmd(1, 1, 100, 512, true)));
  ASSERT_EQ(rej.size(), 1u);
}

TEST(WriteChecks, TooLargeForBufferFailsCleanly) {
  SessionConfig cfg;
  cfg.max_data_out = 4096;
  Harness h({}, cfg);
  auto& out = h.send(write_cmd(1, 1, 8192, 0, true));
  auto rsp = pdus_of<ScsiResponse>(out);
  ASSERT_EQ(rsp.size(), 1u);
  // Never a status of GOOD for a write that did not happen: CHECK CONDITION with
  // ILLEGAL REQUEST / INVALID FIELD IN CDB.
  EXPECT_EQ(rsp[0].response, 0);
  EXPECT_EQ(rsp[0].status, 0x02);
  ASSERT_EQ(rsp[0].data.size(), 20u);
  EXPECT_EQ(rsp[0].data[2 + 2], 0x05);
  EXPECT_EQ(rsp[0].data[2 + 12], 0x24);
  EXPECT_TRUE(actions_of<ExecuteTask>(out).empty());
  EXPECT_EQ(h.session.task_count(), 0u);
}

TEST(WriteChecks, ZeroLengthWriteExecutesAtOnce) {
  Harness h({});
  EXPECT_EQ(actions_of<ExecuteTask>(h.send(write_cmd(1, 1, 0, 0, true))).size(), 1u);
}

TEST(WriteChecks, DataDigestErrorOnDataOutEndsTask) {
  SessionParams p;
  p.initial_r2t = true;
  Harness h(p);
  auto r2t = pdus_of<R2t>(h.send(write_cmd(1, 1, 4096, 0, true)));
  ASSERT_EQ(r2t.size(), 1u);
  RawPdu raw = to_raw(Pdu{data_out(1, r2t[0].ttt, 0, 0, 4096, true)});
  Actions out;
  h.session.on_parse_error({PduErrorCode::kDataDigest, "bad", raw.bhs}, out);
  auto rej = pdus_of<Reject>(out);
  ASSERT_EQ(rej.size(), 1u);
  EXPECT_EQ(rej[0].reason, uint8_t(RejectReason::kDataDigestError));
  auto rsp = pdus_of<ScsiResponse>(out);
  ASSERT_EQ(rsp.size(), 1u);
  EXPECT_EQ(rsp[0].status, 0x02);
  EXPECT_EQ(rsp[0].data[2 + 2], 0x0b);   // ABORTED COMMAND
  EXPECT_EQ(rsp[0].data[2 + 12], 0x47);  // CRC error ASC
  // A retransmitted Data-Out for the ended task is dropped quietly.
  EXPECT_TRUE(h.send(data_out(1, r2t[0].ttt, 0, 0, 4096, true)).empty());
}

}  // namespace
}  // namespace tandem::target::iscsi

namespace tandem::target::iscsi {
namespace {

TEST(WriteBudget, R2tsWaitForBufferBudget) {
  SessionParams p;
  p.initial_r2t = true;
  p.immediate_data = false;
  p.max_burst_length = 65536;
  p.max_outstanding_r2t = 4;
  SessionConfig cfg;
  cfg.max_buffered_bytes = 100000;
  testing::Harness h(p, cfg);
  // Task 1 gets one 64 KiB R2T; a second would exceed the budget.
  auto r1 = testing::pdus_of<R2t>(h.send(write_cmd(1, 1, 200000, 0, true)));
  ASSERT_EQ(r1.size(), 1u);
  // Task 2 must wait entirely.
  EXPECT_TRUE(testing::pdus_of<R2t>(h.send(write_cmd(2, 2, 40000, 0, true))).empty());
  // Completing task 1's burst frees budget: task 1 continues first (FIFO of waiters
  // starts with task 1), then task 2 is served when room remains.
  auto& out = h.send(data_out(1, r1[0].ttt, 0, 0, 65536, true));
  auto next = testing::pdus_of<R2t>(out);
  ASSERT_GE(next.size(), 1u);
  EXPECT_EQ(next[0].itt, 1u);
  EXPECT_EQ(next[0].buffer_offset, 65536u);
  // Finish everything; both tasks must eventually execute.
  std::deque<R2t> todo(next.begin(), next.end());
  std::set<uint32_t> executed;
  int guard = 0;
  while (!todo.empty() && ++guard < 100) {
    R2t r = todo.front();
    todo.pop_front();
    auto& o = h.send(data_out(r.itt, r.ttt, 0, r.buffer_offset, r.desired_length, true));
    EXPECT_TRUE(testing::pdus_of<Reject>(o).empty());
    for (const auto& n : testing::pdus_of<R2t>(o)) todo.push_back(n);
    for (const auto& e : testing::actions_of<ExecuteTask>(o)) executed.insert(e.itt);
  }
  EXPECT_EQ(executed, (std::set<uint32_t>{1, 2}));
}

TEST(WriteBudget, AbortReleasesBudget) {
  SessionParams p;
  p.initial_r2t = true;
  p.immediate_data = false;
  p.max_burst_length = 65536;
  SessionConfig cfg;
  cfg.max_buffered_bytes = 70000;
  testing::Harness h(p, cfg);
  ASSERT_EQ(testing::pdus_of<R2t>(h.send(write_cmd(1, 1, 65536, 0, true))).size(), 1u);
  EXPECT_TRUE(testing::pdus_of<R2t>(h.send(write_cmd(2, 2, 65536, 0, true))).empty());
  TaskMgmtRequest t;
  t.function = 1;
  t.itt = 9;
  t.ref_task_tag = 1;
  t.cmd_sn = 3;
  auto& out = h.send(t);
  auto r = testing::pdus_of<R2t>(out);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].itt, 2u);
}

}  // namespace
}  // namespace tandem::target::iscsi
