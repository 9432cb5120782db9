// ScsiResult::cdb_transfer_length: the CDB's own transfer length, which the transport
// compares with the Expected Data Transfer Length for residuals (RFC 7143 11.4.5).
#include <gtest/gtest.h>

#include "tests/unit/target_scsi/scsi_test_util.h"

namespace tandem::target::scsi::testing {
namespace {

using ResidualTest = ScsiTest;
constexpr uint32_t kBs = ScsiTest::kBlockSize;

TEST(CdbTransferBytes, PerOpcode) {
  EXPECT_EQ(cdb_transfer_bytes(rw10(op::kRead10, 0, 3), 512), 1536u);
  EXPECT_EQ(cdb_transfer_bytes(rw6(op::kRead6, 0, 0), 512), 256u * 512);  // 0 means 256
  EXPECT_EQ(cdb_transfer_bytes(rw16(op::kWrite16, 0, 2), 4096), 8192u);
  EXPECT_EQ(cdb_transfer_bytes(rw12(op::kWriteAndVerify12, 0, 1), 512), 512u);
  EXPECT_EQ(cdb_transfer_bytes(rw16(op::kOrWrite16, 0, 4), 512), 2048u);
  EXPECT_EQ(cdb_transfer_bytes(rw10(op::kVerify10, 0, 4), 512), 0u);           // BYTCHK 00b
  EXPECT_EQ(cdb_transfer_bytes(rw10(op::kVerify10, 0, 4, 0x02), 512), 2048u);  // 01b
  EXPECT_EQ(cdb_transfer_bytes(rw10(op::kVerify10, 0, 4, 0x06), 512), 512u);   // 11b
  Cdb caw = cdb_of({op::kCompareAndWrite});
  caw[13] = 2;
  EXPECT_EQ(cdb_transfer_bytes(caw, 512), 2048u);
  EXPECT_EQ(cdb_transfer_bytes(rw10(op::kWriteSame10, 0, 100), 512), 512u);
  EXPECT_EQ(cdb_transfer_bytes(rw16(op::kWriteSame16, 0, 100, 0x01), 512), 0u);  // NDOB
  EXPECT_EQ(cdb_transfer_bytes(cdb_of({op::kInquiry, 0, 0, 0, 36}), 512), std::nullopt);
  EXPECT_EQ(cdb_transfer_bytes(cdb_of({op::kUnmap}), 512), std::nullopt);
}

TEST_F(ResidualTest, ReportedWithEveryAnswer) {
  // libiscsi Read10Invalid: READ of one block with Expected Data Transfer Length 0 and 200.
  auto r = run(rw10(op::kRead10, 0, 1), {}, 0);
  ASSERT_TRUE(IsGood(r));
  EXPECT_TRUE(r.data_in.empty());
  EXPECT_EQ(r.cdb_transfer_length, kBs);
  r = run(rw10(op::kRead10, 0, 2), {}, 200);
  EXPECT_EQ(r.data_in.size(), 200u);
  EXPECT_EQ(r.cdb_transfer_length, 2 * kBs);
  // Also with CHECK CONDITION, and for writes.
  EXPECT_EQ(run(rw10(op::kRead10, kBlocks, 1)).cdb_transfer_length, kBs);
  EXPECT_EQ(run(rw10(op::kWrite10, 0, 1), pattern(2 * kBs, 1)).cdb_transfer_length, kBs);
  // Commands without logical-block data leave it to the transport.
  EXPECT_EQ(run(cdb_of({op::kInquiry, 0, 0, 0, 36}), {}, 36).cdb_transfer_length, std::nullopt);
  EXPECT_EQ(run(Cdb{}).cdb_transfer_length, std::nullopt);
}

}  // namespace
}  // namespace tandem::target::scsi::testing
