// ORWRITE(16) (SBC-3 5.10): OR semantics, checks, and atomicity against a writer that
// lands between the read and the store (played by FakeVolume::before_compare_and_write).
#include <gtest/gtest.h>

#include "tests/unit/target_scsi/scsi_test_util.h"

namespace tandem::target::scsi::testing {
namespace {

using OrWriteTest = ScsiTest;
constexpr uint32_t kBs = ScsiTest::kBlockSize;

std::vector<std::byte> filled(size_t n, uint8_t v) {
  return std::vector<std::byte>(n, static_cast<std::byte>(v));
}

Cdb orwrite(uint64_t lba, uint32_t blocks, uint8_t flags = 0) {
  return rw16(op::kOrWrite16, lba, blocks, flags);
}

TEST_F(OrWriteTest, OrsDataIntoTheMedium) {
  volume_->fill(10, 3, 0x0F);
  ASSERT_TRUE(IsGood(run(orwrite(10, 3), filled(3 * kBs, 0xA0))));
  EXPECT_EQ(run(rw10(op::kRead10, 10, 3)).data_in, filled(3 * kBs, 0xAF));
  // libiscsi OrWrite.Verify: zeros | 0xa5 = 0xa5, then | 0x5a = 0xff.
  ASSERT_TRUE(IsGood(run(rw10(op::kWrite10, 0, 2), filled(2 * kBs, 0))));
  ASSERT_TRUE(IsGood(run(orwrite(0, 2), filled(2 * kBs, 0xA5))));
  EXPECT_EQ(run(rw10(op::kRead10, 0, 2)).data_in, filled(2 * kBs, 0xA5));
  ASSERT_TRUE(IsGood(run(orwrite(0, 2), filled(2 * kBs, 0x5A))));
  EXPECT_EQ(run(rw10(op::kRead10, 0, 2)).data_in, filled(2 * kBs, 0xFF));
  // Neighbours untouched; the last block of the medium is reachable.
  EXPECT_EQ(run(rw10(op::kRead10, 13, 1)).data_in, filled(kBs, 0));
  EXPECT_TRUE(IsGood(run(orwrite(kBlocks - 1, 1), filled(kBs, 1))));
}

TEST_F(OrWriteTest, Checks) {
  EXPECT_TRUE(IsGood(run(orwrite(0, 0))));  // zero blocks: no I/O
  EXPECT_EQ(volume_->reads, 0);
  EXPECT_TRUE(IsIllegal(run(orwrite(kBlocks, 1), filled(kBs, 1)), kAscLbaOutOfRange));
  EXPECT_TRUE(IsIllegal(run(orwrite(kBlocks - 1, 2), filled(2 * kBs, 1)), kAscLbaOutOfRange));
  EXPECT_TRUE(IsIllegal(run(orwrite(~0ull, 1), filled(kBs, 1)), kAscLbaOutOfRange));
  for (uint8_t p = 1; p < 8; ++p) {  // ORPROTECT: no protection information
    EXPECT_TRUE(IsIllegal(run(orwrite(0, 1, static_cast<uint8_t>(p << 5)), filled(kBs, 1)),
                          kAscInvalidFieldInCdb));
  }
  EXPECT_TRUE(IsIllegal(run(orwrite(0, 2), filled(kBs, 1)), kAscInvalidFieldInCdb));  // short
  EXPECT_EQ(volume_->writes, 0);
  volume_->set_state(core::VolumeState::kReadOnly);
  EXPECT_TRUE(
      HasSense(run(orwrite(0, 1), filled(kBs, 1)), SenseKey::kDataProtect, kAscWriteProtected));
  volume_->set_state(core::VolumeState::kHalted);
  EXPECT_TRUE(
      HasSense(run(orwrite(0, 1), filled(kBs, 1)), SenseKey::kNotReady, kAscNotReadyBecomingReady));
  EXPECT_EQ(volume_->writes, 0);
}

TEST_F(OrWriteTest, TransferLengthOverBlockLimits) {
  const uint32_t max = max_transfer_blocks(kBs);
  make_lu(max + 10);
  EXPECT_TRUE(IsIllegal(run(orwrite(0, max + 1), filled((max + 1) * size_t{kBs}, 1)),
                        kAscInvalidFieldInCdb));
  EXPECT_EQ(volume_->reads, 0);
  EXPECT_TRUE(IsGood(run(orwrite(0, max), filled(max * size_t{kBs}, 1))));
}

TEST_F(OrWriteTest, DpoFuaAccepted) {
  ASSERT_TRUE(IsGood(run(orwrite(0, 1, 0x10), filled(kBs, 1))));  // DPO
  EXPECT_EQ(volume_->fua_writes, 0);
  ASSERT_TRUE(IsGood(run(orwrite(0, 1, 0x18), filled(kBs, 2))));  // DPO + FUA
  EXPECT_EQ(volume_->fua_writes, 1);
  // REPORT SUPPORTED OPERATION CODES lists it with DPO and FUA in CDB USAGE DATA.
  Cdb c = cdb_of({0xA3, 0x0C, 0x01, op::kOrWrite16});
  put_be32(&c[6], 64);
  auto d = u8(run(c).data_in);
  ASSERT_EQ(d.size(), 4u + 16u);
  EXPECT_EQ(d[1] & 0x07, 0x03);
  EXPECT_EQ(d[4], op::kOrWrite16);
  EXPECT_EQ(d[5] & 0x18, 0x18);
}

TEST_F(OrWriteTest, BackendErrorsMapToSense) {
  volume_->fail_next(core::IoStatus::kMediumError);  // the read
  EXPECT_TRUE(HasSense(run(orwrite(0, 1), filled(kBs, 1)), SenseKey::kMediumError,
                       kAscUnrecoveredReadError));
  volume_->before_compare_and_write = [this] { volume_->fail_next(core::IoStatus::kNoSpace); };
  EXPECT_TRUE(HasSense(run(orwrite(0, 1), filled(kBs, 1)), SenseKey::kDataProtect,
                       kAscSpaceAllocationFailedWriteProtect));
  EXPECT_EQ(volume_->writes, 0);
}

TEST_F(OrWriteTest, RacingWriterIsNotLost) {
  // Another writer stores 0x0F0F... between our read and our store, once: the store's
  // compare fails, ORWRITE reads again and ORs into the other writer's data.
  volume_->fill(5, 1, 0x00);
  bool raced = false;
  volume_->before_compare_and_write = [&] {
    if (raced) return;
    raced = true;
    volume_->fill(5, 1, 0x0F);
  };
  ASSERT_TRUE(IsGood(run(orwrite(5, 1), filled(kBs, 0x30))));
  EXPECT_EQ(volume_->compare_and_writes, 2);
  EXPECT_EQ(run(rw10(op::kRead10, 5, 1)).data_in, filled(kBs, 0x3F));
}

TEST_F(OrWriteTest, BusyWhenTheBlocksNeverSettle) {
  uint8_t v = 0;
  volume_->before_compare_and_write = [&] { volume_->fill(7, 1, ++v); };
  auto r = run(orwrite(7, 1), filled(kBs, 0x80));
  EXPECT_EQ(r.status, Status::kBusy);
  EXPECT_TRUE(r.sense.empty());
  EXPECT_EQ(volume_->compare_and_writes, kOrWriteAttempts);
  EXPECT_EQ(volume_->writes, 0);  // nothing of ours was stored
}

TEST_F(OrWriteTest, AsyncCompletions) {
  volume_->set_async(true);
  volume_->fill(0, 4, 0x01);
  ASSERT_TRUE(IsGood(run(orwrite(0, 4), filled(4 * kBs, 0x02))));
  volume_->set_async(false);
  EXPECT_EQ(run(rw10(op::kRead10, 0, 4)).data_in, filled(4 * kBs, 0x03));
}

}  // namespace
}  // namespace tandem::target::scsi::testing
