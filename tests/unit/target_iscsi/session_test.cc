// Session sequencing: CmdSN window, StatSN, reads and Data-In, SCSI Response with sense.
#include "target/iscsi/session.h"

#include <gtest/gtest.h>

#include <tuple>
#include <vector>

#include "test_util.h"

namespace tandem::target::iscsi {
namespace {

using testing::actions_of;
using testing::Harness;
using testing::pdus_of;

ScsiCommand read_cmd(uint32_t itt, uint32_t cmd_sn, uint32_t len) {
  ScsiCommand c;
  c.itt = itt;
  c.cmd_sn = cmd_sn;
  c.read = true;
  c.final = true;
  c.expected_length = len;
  c.cdb = {0x28};
  return c;
}

scsi::ScsiResult data_result(size_t n) {
  scsi::ScsiResult r;
  r.data_in.resize(n);
  for (size_t i = 0; i < n; ++i) r.data_in[i] = std::byte(i & 0xff);
  return r;
}

TEST(Session, ReadGoesToExecuteWithNexus) {
  Harness h({});
  auto& out = h.send(read_cmd(1, 1, 512));
  auto exec = actions_of<ExecuteTask>(out);
  ASSERT_EQ(exec.size(), 1u);
  EXPECT_EQ(exec[0].itt, 1u);
  EXPECT_EQ(exec[0].task->expected_in_length, 512u);
  EXPECT_EQ(exec[0].task->cdb[0], 0x28);
  EXPECT_EQ(exec[0].task->initiator_port, "iqn.2026-01.test:init,i,0x800000000001");
  EXPECT_TRUE(exec[0].task->data_out.empty());
  EXPECT_EQ(h.session.exp_cmd_sn(), 2u);
}

TEST(Session, LunDecodedForDevice) {
  Harness h({});
  ScsiCommand c = read_cmd(1, 1, 0);
  c.lun = encode_lun(3);
  auto exec = actions_of<ExecuteTask>(h.send(c));
  ASSERT_EQ(exec.size(), 1u);
  EXPECT_EQ(exec[0].task->lun, 3u);
  EXPECT_EQ(c.lun, 0x0003000000000000ull);
  EXPECT_EQ(decode_lun(encode_lun(300)), 300u);
}

TEST(Session, ReadPhaseCollapsedStatus) {
  Harness h({});
  h.send(read_cmd(1, 1, 4096));
  auto& out = h.complete(1, data_result(4096));
  auto din = pdus_of<DataIn>(out);
  ASSERT_EQ(din.size(), 1u);  // 8192-byte initiator MRDSL default
  EXPECT_TRUE(din[0].final);
  EXPECT_TRUE(din[0].status_present);
  EXPECT_EQ(din[0].stat_sn, 100u);
  EXPECT_FALSE(din[0].underflow);
  EXPECT_TRUE(pdus_of<ScsiResponse>(out).empty());
  EXPECT_EQ(h.session.stat_sn(), 101u);
}

TEST(Session, DataInSplitByInitiatorMrdslAndBurst) {
  SessionParams p;
  p.initiator_max_recv_data_segment_length = 4096;
  p.max_burst_length = 10000;
  Harness h(p);
  h.send(read_cmd(1, 1, 20000));
  auto din = pdus_of<DataIn>(h.complete(1, data_result(20000)));
  // Bursts of 10000: 4096+4096+1808 | 4096+4096+1808.
  ASSERT_EQ(din.size(), 6u);
  uint32_t offset = 0;
  for (size_t i = 0; i < din.size(); ++i) {
    EXPECT_EQ(din[i].data_sn, i);
    EXPECT_EQ(din[i].buffer_offset, offset);
    EXPECT_LE(din[i].data.size(), 4096u);
    EXPECT_EQ(uint8_t(din[i].data[0]), uint8_t(offset & 0xff));
    offset += uint32_t(din[i].data.size());
    EXPECT_EQ(din[i].final, i == 2 || i == 5) << i;
    EXPECT_EQ(din[i].status_present, i == 5);
  }
  EXPECT_EQ(offset, 20000u);
}

TEST(Session, ReadUnderflowResidual) {
  Harness h({});
  h.send(read_cmd(1, 1, 4096));
  auto din = pdus_of<DataIn>(h.complete(1, data_result(1000)));
  ASSERT_EQ(din.size(), 1u);
  EXPECT_TRUE(din[0].underflow);
  EXPECT_EQ(din[0].residual, 3096u);
  EXPECT_EQ(din[0].data.size(), 1000u);
}

TEST(Session, ReadNoDataUnderflowInResponse) {
  Harness h({});
  h.send(read_cmd(1, 1, 4096));
  auto& out = h.complete(1, data_result(0));
  auto rsp = pdus_of<ScsiResponse>(out);
  ASSERT_EQ(rsp.size(), 1u);
  EXPECT_TRUE(rsp[0].underflow);
  EXPECT_EQ(rsp[0].residual, 4096u);
  EXPECT_TRUE(pdus_of<DataIn>(out).empty());
}

// RFC 7143 11.4.5: residuals compare the expected length with the CDB's own transfer
// length when the device reports one.
TEST(Session, ReadOverflowAgainstTheCdbLength) {
  Harness h({});
  h.send(read_cmd(1, 1, 512));
  scsi::ScsiResult r = data_result(512);
  r.cdb_transfer_length = 1024;  // the CDB asked for two blocks
  auto din = pdus_of<DataIn>(h.complete(1, r));
  ASSERT_EQ(din.size(), 1u);
  EXPECT_TRUE(din[0].overflow);
  EXPECT_FALSE(din[0].underflow);
  EXPECT_EQ(din[0].residual, 512u);
  EXPECT_EQ(din[0].data.size(), 512u);
}

TEST(Session, ReadWithNoExpectedLengthOverflowsByTheWholeCdbLength) {
  Harness h({});
  h.send(read_cmd(1, 1, 0));
  scsi::ScsiResult r;
  r.cdb_transfer_length = 512;
  auto rsp = pdus_of<ScsiResponse>(h.complete(1, r));
  ASSERT_EQ(rsp.size(), 1u);
  EXPECT_TRUE(rsp[0].overflow);
  EXPECT_EQ(rsp[0].residual, 512u);
}

TEST(Session, WriteResidualsAgainstTheCdbLength) {
  SessionParams p;
  p.immediate_data = true;
  p.initial_r2t = false;
  p.first_burst_length = 65536;
  p.target_max_recv_data_segment_length = 65536;
  for (auto [edtl, cdb_len, over, under, residual] :
       std::vector<std::tuple<uint32_t, uint32_t, bool, bool, uint32_t>>{
           {1024, 512, false, true, 512},   // expected more than the CDB moves
           {512, 1024, true, false, 512},   // the CDB asks for more than expected
           {512, 512, false, false, 0}}) {
    Harness h(p);
    ScsiCommand c;
    c.itt = 1;
    c.cmd_sn = 1;
    c.write = true;
    c.final = true;
    c.expected_length = edtl;
    c.cdb = {0x2a};
    c.data.assign(edtl, 0xab);
    auto exec = actions_of<ExecuteTask>(h.send(c));
    ASSERT_EQ(exec.size(), 1u);
    scsi::ScsiResult r;
    r.cdb_transfer_length = cdb_len;
    auto rsp = pdus_of<ScsiResponse>(h.complete(1, r));
    ASSERT_EQ(rsp.size(), 1u);
    EXPECT_EQ(rsp[0].overflow, over) << edtl << "/" << cdb_len;
    EXPECT_EQ(rsp[0].underflow, under) << edtl << "/" << cdb_len;
    EXPECT_EQ(rsp[0].residual, residual) << edtl << "/" << cdb_len;
  }
}

TEST(Session, CheckConditionCarriesSense) {
  Harness h({});
  h.send(read_cmd(1, 1, 512));
  scsi::ScsiResult r;
  r.status = scsi::Status::kCheckCondition;
  r.sense = {0x70, 0, 0x05, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x20, 0};
  auto& out = h.complete(1, r);
  auto rsp = pdus_of<ScsiResponse>(out);
  ASSERT_EQ(rsp.size(), 1u);
  EXPECT_EQ(rsp[0].status, 0x02);
  ASSERT_EQ(rsp[0].data.size(), 2u + 14u);
  EXPECT_EQ(rsp[0].data[0], 0);
  EXPECT_EQ(rsp[0].data[1], 14);
  EXPECT_EQ(rsp[0].data[2], 0x70);
  EXPECT_EQ(rsp[0].data[14], 0x20);
  EXPECT_EQ(rsp[0].residual, 512u);
}

TEST(Session, CommandsOutsideWindowDropped) {
  SessionConfig cfg;
  cfg.queue_depth = 4;
  Harness h({}, cfg);
  EXPECT_EQ(h.session.max_cmd_sn(), 4u);
  EXPECT_TRUE(h.send(read_cmd(1, 0, 0)).empty());  // below ExpCmdSN: old, dropped
  EXPECT_TRUE(h.send(read_cmd(2, 5, 0)).empty());  // beyond MaxCmdSN
  EXPECT_EQ(actions_of<ExecuteTask>(h.send(read_cmd(3, 1, 0))).size(), 1u);
  EXPECT_TRUE(h.send(read_cmd(4, 1, 0)).empty());  // duplicate CmdSN
  EXPECT_EQ(h.session.exp_cmd_sn(), 2u);
}

TEST(Session, WindowShrinksWhileTasksHeldAndReopens) {
  SessionConfig cfg;
  cfg.queue_depth = 2;
  Harness h({}, cfg);
  h.send(read_cmd(1, 1, 0));
  h.send(read_cmd(2, 2, 0));
  EXPECT_TRUE(h.send(read_cmd(3, 3, 0)).empty());  // MaxCmdSN is still 2
  auto& out = h.complete(1, data_result(0));
  auto rsp = pdus_of<ScsiResponse>(out);
  ASSERT_EQ(rsp.size(), 1u);
  EXPECT_EQ(rsp[0].exp_cmd_sn, 3u);
  EXPECT_EQ(rsp[0].max_cmd_sn, 3u);  // one slot freed
  EXPECT_EQ(actions_of<ExecuteTask>(h.send(read_cmd(3, 3, 0))).size(), 1u);
}

TEST(Session, ImmediateCommandDoesNotAdvanceCmdSn) {
  Harness h({});
  ScsiCommand c = read_cmd(1, 1, 0);
  c.immediate = true;
  EXPECT_EQ(actions_of<ExecuteTask>(h.send(c)).size(), 1u);
  EXPECT_EQ(h.session.exp_cmd_sn(), 1u);
}

TEST(Session, GapAheadDeliveredAndPlugged) {
  Harness h({});
  EXPECT_EQ(actions_of<ExecuteTask>(h.send(read_cmd(2, 2, 0))).size(), 1u);
  EXPECT_EQ(h.session.exp_cmd_sn(), 1u);
  h.send(read_cmd(1, 1, 0));
  EXPECT_EQ(h.session.exp_cmd_sn(), 3u);
}

TEST(Session, StatSnIncrementsPerResponse) {
  Harness h({});
  h.send(read_cmd(1, 1, 0));
  h.send(read_cmd(2, 2, 0));
  auto a = pdus_of<ScsiResponse>(h.complete(2, {}));
  auto b = pdus_of<ScsiResponse>(h.complete(1, {}));
  ASSERT_EQ(a.size(), 1u);
  ASSERT_EQ(b.size(), 1u);
  EXPECT_EQ(a[0].stat_sn, 100u);
  EXPECT_EQ(b[0].stat_sn, 101u);
  EXPECT_EQ(a[0].itt, 2u);
}

TEST(Session, DuplicateIttRejected) {
  Harness h({});
  h.send(read_cmd(1, 1, 0));
  auto rej = pdus_of<Reject>(h.send(read_cmd(1, 2, 0)));
  ASSERT_EQ(rej.size(), 1u);
  EXPECT_EQ(rej[0].reason, uint8_t(RejectReason::kTaskInProgress));
  EXPECT_EQ(rej[0].data.size(), 48u);
}

TEST(Session, UnknownTaskCompletionIgnored) {
  Harness h({});
  EXPECT_TRUE(h.complete(99, {}).empty());
}

TEST(Session, ExtendedCdbNotSupported) {
  Harness h({});
  ScsiCommand c = read_cmd(1, 1, 0);
  c.ahs = {0x00, 0x01, 0x01, 0x00};
  auto rej = pdus_of<Reject>(h.send(c));
  ASSERT_EQ(rej.size(), 1u);
  EXPECT_EQ(rej[0].reason, uint8_t(RejectReason::kCommandNotSupported));
  EXPECT_EQ(h.session.exp_cmd_sn(), 1u);  // rejected command is not received
}

TEST(Session, ParserLimitsFollowNegotiation) {
  SessionParams p;
  p.header_digest = true;
  p.target_max_recv_data_segment_length = 262144;
  Harness h(p);
  EXPECT_TRUE(h.session.parser_limits().header_digest);
  EXPECT_FALSE(h.session.parser_limits().data_digest);
  EXPECT_EQ(h.session.parser_limits().max_data_segment, 262144u);
  EXPECT_TRUE(h.session.digests().header);
}

}  // namespace
}  // namespace tandem::target::iscsi
