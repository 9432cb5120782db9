// Dispatch, unit attentions and the commands that do not touch the medium.
#include <gtest/gtest.h>

#include "tests/unit/target_scsi/scsi_test_util.h"

namespace tandem::target::scsi::testing {
namespace {

using LuTest = ScsiTest;
constexpr Cdb kTur{};

TEST_F(LuTest, TestUnitReady) {
  EXPECT_TRUE(IsGood(run(kTur)));
  volume_->set_state(core::VolumeState::kHalted);  // reads still served
  EXPECT_TRUE(IsGood(run(kTur)));
  volume_->set_state(core::VolumeState::kReadOnly);
  EXPECT_TRUE(IsGood(run(kTur)));
  volume_->set_state(core::VolumeState::kOffline);
  EXPECT_TRUE(HasSense(run(kTur), SenseKey::kNotReady, kAscNotReadyOffline));
}

TEST_F(LuTest, UnknownOpcodeIsInvalidCommandOperationCode) {
  for (uint8_t opc : {0x01, 0x04, 0x3B, 0x4D, 0x7F, 0xC0, 0xFF}) {
    auto r = run(cdb_of({opc}));
    EXPECT_TRUE(IsIllegal(r, kAscInvalidCommandOperationCode)) << int(opc);
  }
}

TEST_F(LuTest, UnknownServiceActionIsInvalidFieldInCdb) {
  EXPECT_TRUE(IsIllegal(run(cdb_of({0x9E, 0x11})), kAscInvalidFieldInCdb));
  EXPECT_TRUE(IsIllegal(run(cdb_of({0xA3, 0x0A})), kAscInvalidFieldInCdb));
  EXPECT_TRUE(IsIllegal(run(cdb_of({0x5F, 0x07})), kAscInvalidFieldInCdb));  // REGISTER AND MOVE
}

TEST_F(LuTest, OtherLunIsNotSupported) {
  auto r = run(kTur, {}, 1024, kPortA, 1);
  EXPECT_TRUE(IsIllegal(r, kAscLunNotSupported));
  auto rl = run(cdb_of({0xA0, 0, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0}), {}, 1024, kPortA, 1);
  EXPECT_TRUE(IsGood(rl));
}

TEST_F(LuTest, RequestSenseWithNothingPending) {
  auto r = run(cdb_of({0x03, 0, 0, 0, 252, 0}));
  ASSERT_TRUE(IsGood(r));
  EXPECT_EQ(u8(r.data_in),
            (std::vector<uint8_t>{0x70, 0, 0, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}));
  auto short_alloc = run(cdb_of({0x03, 0, 0, 0, 4, 0}));
  EXPECT_EQ(short_alloc.data_in.size(), 4u);
  EXPECT_TRUE(IsIllegal(run(cdb_of({0x03, 0x01, 0, 0, 252, 0})), kAscInvalidFieldInCdb));  // DESC
}

TEST_F(LuTest, RequestSenseReportsNotReady) {
  volume_->set_state(core::VolumeState::kOffline);
  auto r = run(cdb_of({0x03, 0, 0, 0, 18, 0}));
  ASSERT_TRUE(IsGood(r));
  EXPECT_EQ(static_cast<uint8_t>(r.data_in[2]), 0x02);
  EXPECT_EQ(static_cast<uint8_t>(r.data_in[12]), 0x04);
  EXPECT_EQ(static_cast<uint8_t>(r.data_in[13]), 0x12);
}

TEST_F(LuTest, ReportLuns) {
  auto r = run(cdb_of({0xA0, 0, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0}));
  ASSERT_TRUE(IsGood(r));
  EXPECT_EQ(u8(r.data_in), (std::vector<uint8_t>{0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}));
  auto wk = run(cdb_of({0xA0, 0, 0x01, 0, 0, 0, 0, 0, 0x10, 0, 0, 0}));
  EXPECT_EQ(u8(wk.data_in), (std::vector<uint8_t>{0, 0, 0, 0, 0, 0, 0, 0}));
  // A short allocation length truncates (SPC-4 6.33 says "should be at least 16").
  EXPECT_EQ(run(cdb_of({0xA0, 0, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0})).data_in.size(), 4u);
  EXPECT_TRUE(
      IsIllegal(run(cdb_of({0xA0, 0, 0x03, 0, 0, 0, 0, 0, 0x10, 0, 0, 0})), kAscInvalidFieldInCdb));
}

TEST_F(LuTest, ReadCapacity10) {
  auto r = run(cdb_of({0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0}));
  ASSERT_TRUE(IsGood(r));
  EXPECT_EQ(u8(r.data_in), (std::vector<uint8_t>{0, 0, 0x07, 0xFF, 0, 0, 0x02, 0x00}));
  // PMI = 0 requires LBA = 0 (SBC-3 5.16).
  EXPECT_TRUE(IsIllegal(run(cdb_of({0x25, 0, 0, 0, 0, 1, 0, 0, 0, 0})), kAscInvalidFieldInCdb));
  EXPECT_TRUE(IsGood(run(cdb_of({0x25, 0, 0, 0, 0, 1, 0, 0, 1, 0}))));
}

TEST_F(LuTest, ReadCapacity16) {
  auto r = run(cdb_of({0x9E, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0}));
  ASSERT_TRUE(IsGood(r));
  std::vector<uint8_t> want(32, 0);
  want[6] = 0x07;
  want[7] = 0xFF;
  want[10] = 0x02;
  want[13] = 0x00;  // LOGICAL BLOCKS PER PHYSICAL BLOCK EXPONENT: 1:1 (see inquiry.h)
  want[14] = 0xC0;  // LBPME | LBPRZ
  EXPECT_EQ(u8(r.data_in), want);
  auto t = run(cdb_of({0x9E, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 12, 0, 0}));
  EXPECT_EQ(t.data_in.size(), 12u);
}

// Capacity only: a volume too large to back with memory.
class HugeVolume : public core::BlockVolume {
 public:
  const std::string& uuid() const override { return uuid_; }
  uint32_t block_size() const override { return 4096; }
  uint64_t block_count() const override { return 0x123456789ull; }
  core::VolumeState state() const override { return core::VolumeState::kHealthy; }
  void read(uint64_t, std::span<std::byte>, Done done) override { done({}); }
  void write(uint64_t, std::span<const std::byte>, bool, Done done) override { done({}); }
  void flush(Done done) override { done({}); }
  void unmap(uint64_t, uint64_t, Done done) override { done({}); }
  void compare_and_write(uint64_t, std::span<const std::byte>, std::span<const std::byte>, bool,
                         Done done) override {
    done({});
  }
  void lba_status(uint64_t, uint64_t, ExtentsDone done) override { done({}, {}); }

 private:
  std::string uuid_ = kUuid;
};

TEST(LuHuge, ReadCapacityBeyond32Bits) {
  LogicalUnit lu(std::make_shared<HugeVolume>());
  auto exec = [&](Cdb cdb) {
    auto task = std::make_shared<ScsiTask>();
    task->cdb = cdb;
    task->expected_in_length = 4096;
    ScsiResult out;
    lu.execute(task, [&](ScsiResult r) { out = std::move(r); });
    return out;
  };
  auto r10 = exec(cdb_of({0x25}));
  EXPECT_EQ(u8(r10.data_in), (std::vector<uint8_t>{0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0x10, 0x00}));
  auto r16 = exec(cdb_of({0x9E, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0}));
  auto d = u8(r16.data_in);
  EXPECT_EQ(get_be64(&d[0]), 0x123456788ull);
  EXPECT_EQ(get_be32(&d[8]), 4096u);
  // Short block descriptor saturates too.
  auto ms = exec(cdb_of({0x1A, 0, 0x08, 0, 255, 0}));
  auto m = u8(ms.data_in);
  EXPECT_EQ(get_be32(&m[4]), 0xFFFFFFFFu);
}

TEST_F(LuTest, ExpectedInLengthCapsEverything) {
  auto r = run(cdb_of({0x9E, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0}), {}, 8);
  EXPECT_EQ(r.data_in.size(), 8u);
  auto z = run(cdb_of({0x12, 0, 0, 0, 96, 0}), {}, 0);
  EXPECT_TRUE(IsGood(z));
  EXPECT_TRUE(z.data_in.empty());
}

TEST_F(LuTest, StartStopAndPreventAllow) {
  EXPECT_TRUE(IsGood(run(cdb_of({0x1B, 0, 0, 0, 0x01, 0}))));
  EXPECT_TRUE(IsGood(run(cdb_of({0x1B, 0x01, 0, 0, 0x00, 0}))));
  EXPECT_TRUE(IsGood(run(cdb_of({0x1E, 0, 0, 0, 0x01, 0}))));
  EXPECT_TRUE(IsGood(run(cdb_of({0x1E, 0, 0, 0, 0x00, 0}))));
}

TEST_F(LuTest, LogicalUnitResetRaisesUnitAttentionOnEveryNexus) {
  // libiscsi MultipathIO.Reset: a LUN reset through one path is seen on every path.
  EXPECT_TRUE(IsGood(run(kTur, {}, 0, kPortA)));
  EXPECT_TRUE(IsGood(run(kTur, {}, 0, kPortB)));
  volume_->set_block_count(kBlocks + 8);  // an older, lower-priority UA is pending
  EXPECT_TRUE(IsGood(run(cdb_of({0x12, 0, 0, 0, 36, 0}), {}, 255, kPortA)));  // INQUIRY: none
  lu_->reset(kPortA);
  for (const char* port : {kPortA, kPortB}) {
    // INQUIRY neither reports nor clears it (SAM-5 5.14).
    EXPECT_TRUE(IsGood(run(cdb_of({0x12, 0, 0, 0, 36, 0}), {}, 255, port)));
    EXPECT_TRUE(
        HasSense(run(kTur, {}, 0, port), SenseKey::kUnitAttention, kAscBusDeviceResetOccurred));
    EXPECT_TRUE(
        HasSense(run(kTur, {}, 0, port), SenseKey::kUnitAttention, kAscCapacityDataHasChanged));
    EXPECT_TRUE(IsGood(run(kTur, {}, 0, port)));
  }
  // Two resets before anyone looks still give one UA each.
  lu_->reset(kPortA);
  lu_->reset(kPortB);
  EXPECT_TRUE(HasSense(run(kTur), SenseKey::kUnitAttention, kAscBusDeviceResetOccurred));
  EXPECT_TRUE(IsGood(run(kTur)));
}

TEST_F(LuTest, CapacityChangeRaisesUnitAttentionOnce) {
  EXPECT_TRUE(IsGood(run(kTur)));
  EXPECT_TRUE(IsGood(run(kTur, {}, 0, kPortB)));
  volume_->set_block_count(kBlocks * 2);
  // INQUIRY neither reports nor clears it (SAM-5 5.14).
  EXPECT_TRUE(IsGood(run(cdb_of({0x12, 0, 0, 0, 36, 0}))));
  EXPECT_TRUE(HasSense(run(kTur), SenseKey::kUnitAttention, kAscCapacityDataHasChanged));
  EXPECT_TRUE(IsGood(run(kTur)));
  // The other initiator gets it through REQUEST SENSE.
  auto rs = run(cdb_of({0x03, 0, 0, 0, 18, 0}), {}, 18, kPortB);
  ASSERT_TRUE(IsGood(rs));
  EXPECT_EQ(static_cast<uint8_t>(rs.data_in[2]), 0x06);
  EXPECT_EQ(static_cast<uint8_t>(rs.data_in[12]), 0x2A);
  EXPECT_EQ(static_cast<uint8_t>(rs.data_in[13]), 0x09);
  EXPECT_TRUE(IsGood(run(kTur, {}, 0, kPortB)));
}

// --- REPORT SUPPORTED OPERATION CODES ---------------------------------------------------

Cdb rsoc(uint8_t options, uint8_t opcode = 0, uint16_t sa = 0, uint32_t alloc = 65536) {
  Cdb c = cdb_of({0xA3, 0x0C, options, opcode});
  put_be16(&c[4], sa);
  put_be32(&c[6], alloc);
  return c;
}

TEST_F(LuTest, ReportSupportedOpcodesAll) {
  auto r = run(rsoc(0));
  ASSERT_TRUE(IsGood(r));
  auto d = u8(r.data_in);
  ASSERT_GE(d.size(), 4u);
  ASSERT_EQ(get_be32(&d[0]), d.size() - 4);
  ASSERT_EQ((d.size() - 4) % 8, 0u);
  size_t n = (d.size() - 4) / 8;
  EXPECT_EQ(n, LogicalUnit::ops().size());
  bool saw_read10 = false, saw_pr_out_preempt = false;
  for (size_t i = 0; i < n; ++i) {
    const uint8_t* e = &d[4 + 8 * i];
    const bool servactv = e[5] & 0x01;
    EXPECT_NE(LogicalUnit::find_op(e[0], static_cast<uint8_t>(get_be16(&e[2]))), nullptr);
    EXPECT_EQ(get_be16(&e[6]), cdb_length(e[0]));
    if (e[0] == 0x28) saw_read10 = !servactv;
    if (e[0] == 0x5F && get_be16(&e[2]) == 4) saw_pr_out_preempt = servactv;
  }
  EXPECT_TRUE(saw_read10);
  EXPECT_TRUE(saw_pr_out_preempt);
  // With RCTD each descriptor carries a 12-byte timeouts descriptor.
  auto t = u8(run(rsoc(0x80)).data_in);
  EXPECT_EQ((t.size() - 4), n * 20);
  EXPECT_EQ(t[4 + 5] & 0x02, 0x02);  // CTDP
  EXPECT_EQ(get_be16(&t[4 + 8]), 0x0A);
}

TEST_F(LuTest, ReportSupportedOpcodesOne) {
  auto r = u8(run(rsoc(1, 0x88)).data_in);
  ASSERT_EQ(r.size(), 4u + 16u);
  EXPECT_EQ(r[1], 0x03);
  EXPECT_EQ(get_be16(&r[2]), 16);
  EXPECT_EQ(r[4], 0x88);
  EXPECT_EQ(r[5], 0xF8);
  auto unsupported = u8(run(rsoc(1, 0x04)).data_in);
  EXPECT_EQ(unsupported, (std::vector<uint8_t>{0, 0x01, 0, 0}));
  auto sa = u8(run(rsoc(2, 0x9E, 0x10)).data_in);
  ASSERT_EQ(sa.size(), 20u);
  EXPECT_EQ(sa[1], 0x03);
  EXPECT_EQ(sa[4], 0x9E);
  auto sa_missing = u8(run(rsoc(2, 0x9E, 0x11)).data_in);
  EXPECT_EQ(sa_missing[1], 0x01);
  auto with_timeouts = u8(run(rsoc(0x81, 0x28)).data_in);
  EXPECT_EQ(with_timeouts.size(), 4u + 10u + 12u);
  EXPECT_EQ(with_timeouts[1], 0x83);
  // Opcode with service actions asked without one, and the reverse.
  EXPECT_TRUE(IsIllegal(run(rsoc(1, 0x9E)), kAscInvalidFieldInCdb));
  EXPECT_TRUE(IsIllegal(run(rsoc(2, 0x28)), kAscInvalidFieldInCdb));
  EXPECT_TRUE(IsIllegal(run(rsoc(5)), kAscInvalidFieldInCdb));
  EXPECT_EQ(run(rsoc(0, 0, 0, 3)).data_in.size(), 3u);
}

TEST_F(LuTest, EveryTableEntryDispatches) {
  // No table entry answers INVALID COMMAND OPERATION CODE.
  for (const auto& e : LogicalUnit::ops()) {
    Cdb c{};
    c[0] = e.opcode;
    if (e.service_action >= 0) c[1] = static_cast<uint8_t>(e.service_action);
    auto r = run(c, {}, 4096);
    if (r.status == Status::kCheckCondition) {
      EXPECT_FALSE(IsIllegal(r, kAscInvalidCommandOperationCode)) << int(e.opcode);
    }
  }
}

}  // namespace
}  // namespace tandem::target::scsi::testing
