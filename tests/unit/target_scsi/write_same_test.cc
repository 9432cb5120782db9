// WRITE SAME with NUMBER OF LOGICAL BLOCKS = 0 (WSNZ = 0: to the end of the medium, within
// MAXIMUM WRITE SAME LENGTH; SBC-3 5.42, 6.6.4) and unmapping ranges that are not aligned
// to the 4 KiB physical block (libiscsi WriteSame10/16.UnmapUnaligned).
#include <gtest/gtest.h>

#include "tests/unit/target_scsi/scsi_test_util.h"

namespace tandem::target::scsi::testing {
namespace {

using WriteSameTest = ScsiTest;
constexpr uint32_t kBs = ScsiTest::kBlockSize;

std::vector<std::byte> filled(size_t n, uint8_t v) {
  return std::vector<std::byte>(n, static_cast<std::byte>(v));
}

TEST_F(WriteSameTest, ZeroBlocksWritesToTheEndOfTheMedium) {
  ASSERT_TRUE(IsGood(run(rw10(op::kWriteSame10, kBlocks - 4, 0), filled(kBs, 0x5C))));
  EXPECT_EQ(run(rw10(op::kRead10, kBlocks - 4, 4)).data_in, filled(4 * kBs, 0x5C));
  EXPECT_EQ(run(rw10(op::kRead10, kBlocks - 5, 1)).data_in, filled(kBs, 0));
  // The last LBA alone.
  ASSERT_TRUE(IsGood(run(rw16(op::kWriteSame16, kBlocks - 1, 0), filled(kBs, 0x77))));
  EXPECT_EQ(run(rw10(op::kRead10, kBlocks - 1, 1)).data_in, filled(kBs, 0x77));
}

TEST_F(WriteSameTest, ZeroBlocksWithUnmapUnmapsToTheEnd) {
  ASSERT_TRUE(IsGood(run(rw16(op::kWriteSame16, 100, 0, 0x08 | 0x01))));  // UNMAP, NDOB
  ASSERT_EQ(volume_->unmaps.size(), 1u);
  EXPECT_EQ(volume_->unmaps[0], (std::pair<uint64_t, uint64_t>{100, kBlocks - 100}));
}

TEST_F(WriteSameTest, ZeroBlocksIsBoundedByMaximumWriteSameLength) {
  const uint64_t max = max_write_same_blocks(kBs);
  make_lu(max + 100);
  // From LBA 0 the rest of the medium is longer than the maximum: refused, nothing written.
  EXPECT_TRUE(IsIllegal(run(rw16(op::kWriteSame16, 0, 0), filled(kBs, 1)), kAscInvalidFieldInCdb));
  EXPECT_TRUE(IsIllegal(run(rw16(op::kWriteSame16, 99, 0), filled(kBs, 1)), kAscInvalidFieldInCdb));
  EXPECT_EQ(volume_->writes, 0);
  // Exactly the maximum, and one less, from the end.
  ASSERT_TRUE(IsGood(run(rw16(op::kWriteSame16, 100, 0), filled(kBs, 2))));
  ASSERT_TRUE(IsGood(run(rw16(op::kWriteSame16, 101, 0), filled(kBs, 3))));
  EXPECT_EQ(run(rw10(op::kRead10, 99, 3)).data_in[0], std::byte{0});
  EXPECT_EQ(run(rw10(op::kRead10, 100, 1)).data_in, filled(kBs, 2));
  EXPECT_EQ(run(rw16(op::kRead16, max + 99, 1)).data_in, filled(kBs, 3));
  // An explicit count over the maximum is refused the same way.
  EXPECT_TRUE(
      IsIllegal(run(rw16(op::kWriteSame16, 0, static_cast<uint32_t>(max + 1)), filled(kBs, 1)),
                kAscInvalidFieldInCdb));
}

TEST_F(WriteSameTest, UnalignedUnmapSucceeds) {
  // Parts of one 4 KiB backend page: unmap LBAs i .. 7 for i = 1..7.
  volume_->fill(0, 8, 0xEE);
  for (uint32_t i = 1; i < 8; ++i) {
    ASSERT_TRUE(IsGood(run(rw16(op::kWriteSame16, i, 8 - i, 0x08 | 0x01)))) << i;  // NDOB
    ASSERT_TRUE(
        IsGood(run(rw10(op::kWriteSame10, i, static_cast<uint16_t>(8 - i), 0x08), filled(kBs, 0))))
        << i;
  }
  EXPECT_EQ(volume_->unmaps.size(), 14u);
  EXPECT_EQ(run(rw10(op::kRead10, 0, 1)).data_in, filled(kBs, 0xEE));
  EXPECT_EQ(run(rw10(op::kRead10, 1, 7)).data_in, filled(7 * kBs, 0));
  // libiscsi WriteSame10.UnmapUnaligned sends a 0xA6 block with UNMAP: still an unmap.
  ASSERT_TRUE(IsGood(run(rw10(op::kWriteSame10, 3, 2, 0x08), filled(kBs, 0xA6))));
  EXPECT_EQ(volume_->unmaps.size(), 15u);
  EXPECT_EQ(run(rw10(op::kRead10, 3, 2)).data_in, filled(2 * kBs, 0));
}

TEST_F(WriteSameTest, ZeroBlocksWithUnmapAndDataUnmapsToTheEnd) {
  // libiscsi WriteSame10.UnmapUntilEnd: 0xFF block, UNMAP, NUMBER OF LOGICAL BLOCKS = 0.
  volume_->fill(kBlocks - 3, 3, 0xFF);
  ASSERT_TRUE(IsGood(run(rw10(op::kWriteSame10, kBlocks - 3, 0, 0x08), filled(kBs, 0xFF))));
  EXPECT_EQ(run(rw10(op::kRead10, kBlocks - 3, 3)).data_in, filled(3 * kBs, 0));
}

TEST_F(WriteSameTest, ReadCapacityReportsOneLogicalBlockPerPhysicalBlock) {
  EXPECT_EQ(logical_per_physical_exponent(512), 0);
  EXPECT_EQ(logical_per_physical_exponent(4096), 0);
  volume_ = std::make_shared<FakeVolume>(kUuid, 4096, 64);
  lu_ = std::make_unique<LogicalUnit>(volume_, store_);
  auto d = u8(run(cdb_of({0x9E, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0})).data_in);
  ASSERT_EQ(d.size(), 32u);
  EXPECT_EQ(get_be32(&d[8]), 4096u);
  EXPECT_EQ(d[13], 0);
}

}  // namespace
}  // namespace tandem::target::scsi::testing
