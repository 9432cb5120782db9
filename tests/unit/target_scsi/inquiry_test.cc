// INQUIRY standard data and VPD pages, byte for byte.
#include "target/scsi/inquiry.h"

#include <gtest/gtest.h>

#include "tests/unit/target_scsi/scsi_test_util.h"

namespace tandem::target::scsi::testing {
namespace {

Cdb inquiry_cdb(bool evpd, uint8_t page, uint16_t alloc = 0xFFFF) {
  Cdb c = cdb_of({op::kInquiry, static_cast<uint8_t>(evpd ? 1 : 0), page, 0, 0, 0});
  put_be16(&c[3], alloc);
  return c;
}

using InquiryTest = ScsiTest;

TEST_F(InquiryTest, StandardData) {
  auto r = run(inquiry_cdb(false, 0));
  ASSERT_TRUE(IsGood(r));
  auto d = u8(r.data_in);
  ASSERT_EQ(d.size(), 96u);
  EXPECT_EQ(d[0], 0x00);  // connected direct-access block device
  EXPECT_EQ(d[1], 0x00);
  EXPECT_EQ(d[2], 0x06);  // SPC-4
  EXPECT_EQ(d[3], 0x12);
  EXPECT_EQ(d[4], 91);
  EXPECT_EQ(d[7], 0x02);  // CMDQUE
  EXPECT_EQ(std::string(d.begin() + 8, d.begin() + 16), "TANDEM  ");
  EXPECT_EQ(std::string(d.begin() + 16, d.begin() + 32), "VOLUME          ");
  EXPECT_EQ(std::string(d.begin() + 32, d.begin() + 36), "0001");
  EXPECT_EQ(get_be16(&d[58]), 0x00A0);
  EXPECT_EQ(get_be16(&d[60]), 0x0460);
  EXPECT_EQ(get_be16(&d[62]), 0x04C0);
  EXPECT_EQ(get_be16(&d[64]), 0x0960);
}

TEST_F(InquiryTest, AllocationLengthTruncates) {
  auto r = run(inquiry_cdb(false, 0, 5));
  ASSERT_TRUE(IsGood(r));
  EXPECT_EQ(r.data_in.size(), 5u);
  auto e = run(inquiry_cdb(false, 0), {}, 36);  // expected_in_length also caps it
  EXPECT_EQ(e.data_in.size(), 36u);
}

TEST_F(InquiryTest, InvalidFields) {
  EXPECT_TRUE(IsIllegal(run(inquiry_cdb(false, 0x80)), kAscInvalidFieldInCdb));
  EXPECT_TRUE(IsIllegal(run(inquiry_cdb(true, 0x42)), kAscInvalidFieldInCdb));
  Cdb cmddt = inquiry_cdb(false, 0);
  cmddt[1] = 0x02;
  EXPECT_TRUE(IsIllegal(run(cmddt), kAscInvalidFieldInCdb));
}

TEST_F(InquiryTest, OtherLunHasNoDevice) {
  auto r = run(inquiry_cdb(false, 0), {}, 1u << 16, kPortA, 3);
  ASSERT_TRUE(IsGood(r));
  EXPECT_EQ(static_cast<uint8_t>(r.data_in[0]), 0x7F);
}

TEST_F(InquiryTest, SupportedPages) {
  auto r = run(inquiry_cdb(true, 0x00));
  ASSERT_TRUE(IsGood(r));
  EXPECT_EQ(u8(r.data_in), (std::vector<uint8_t>{0, 0, 0, 6, 0x00, 0x80, 0x83, 0xB0, 0xB1, 0xB2}));
}

TEST_F(InquiryTest, UnitSerialNumber) {
  auto r = run(inquiry_cdb(true, 0x80));
  ASSERT_TRUE(IsGood(r));
  auto d = u8(r.data_in);
  ASSERT_EQ(d.size(), 4u + 32u);
  EXPECT_EQ(d[1], 0x80);
  EXPECT_EQ(get_be16(&d[2]), 32);
  EXPECT_EQ(std::string(d.begin() + 4, d.end()), "6f1c2a3b4d5e4f608a7b9c0d1e2f3a4b");
}

TEST_F(InquiryTest, DeviceIdentificationBytes) {
  auto r = run(inquiry_cdb(true, 0x83));
  ASSERT_TRUE(IsGood(r));
  auto d = u8(r.data_in);
  std::vector<uint8_t> want = {0x00, 0x83, 0x00, 0x00,
                               // NAA: binary, LU, type 3, length 16
                               0x01, 0x03, 0x00, 0x10, 0x60, 0xAD, 0xEA, 0x06, 0xF1, 0xC2, 0xA3,
                               0xB4, 0xD5, 0xEF, 0x60, 0x8A, 0x7B, 0x9C, 0x0D, 0x1E,
                               // T10 vendor id: ASCII, LU, type 1
                               0x02, 0x01, 0x00, 8 + 36};
  for (char c : std::string("TANDEM  ") + kUuid) want.push_back(static_cast<uint8_t>(c));
  // Relative target port: iSCSI, binary, PIV, target port, type 4.
  for (uint8_t b : {0x51, 0x94, 0x00, 0x04, 0x00, 0x00, 0x00, 0x01}) want.push_back(b);
  put_be16(&want[2], static_cast<uint16_t>(want.size() - 4));
  EXPECT_EQ(d, want);
}

TEST_F(InquiryTest, DeviceIdentityIsTheSameOnEveryNode) {
  // Two nodes (two LogicalUnits over the same volume id), different target ports.
  auto other_volume = std::make_shared<FakeVolume>(kUuid, kBlockSize, kBlocks);
  LogicalUnit other(other_volume);
  auto task = std::make_shared<ScsiTask>();
  task->cdb = inquiry_cdb(true, 0x83);
  task->expected_in_length = 4096;
  task->relative_target_port = 7;
  ScsiResult theirs;
  other.execute(task, [&](ScsiResult r) { theirs = std::move(r); });
  auto ours = run(inquiry_cdb(true, 0x83));
  // The LU designators (NAA + T10) match byte for byte; only the port designator differs.
  ASSERT_GT(ours.data_in.size(), 8u + 20u + 48u);
  EXPECT_TRUE(std::equal(ours.data_in.begin() + 4, ours.data_in.begin() + 4 + 20 + 48,
                         theirs.data_in.begin() + 4));
  EXPECT_EQ(naa6_designator(kUuid), naa6_designator(kUuid));
  EXPECT_NE(naa6_designator(kUuid), naa6_designator("00000000-0000-4000-8000-000000000001"));
}

TEST(Naa, NonHexUuidIsHashedDeterministically) {
  auto a = naa6_designator("volume-name-not-a-uuid");
  EXPECT_EQ(a[0] >> 4, 0x6);
  EXPECT_EQ(a, naa6_designator("volume-name-not-a-uuid"));
  EXPECT_NE(a, naa6_designator("volume-name-not-a-uuie"));
}

TEST_F(InquiryTest, BlockLimitsBytes) {
  auto r = run(inquiry_cdb(true, 0xB0));
  ASSERT_TRUE(IsGood(r));
  auto d = u8(r.data_in);
  ASSERT_EQ(d.size(), 64u);
  EXPECT_EQ(get_be16(&d[2]), 0x3C);
  EXPECT_EQ(d[4], 0x00);                     // WSNZ = 0: zero blocks means "to the end"
  EXPECT_EQ(d[5], 255);                      // MAXIMUM COMPARE AND WRITE LENGTH
  EXPECT_EQ(get_be16(&d[6]), 8);             // OPTIMAL TRANSFER LENGTH GRANULARITY
  EXPECT_EQ(get_be32(&d[8]), 16384u);        // MAXIMUM TRANSFER LENGTH (8 MiB)
  EXPECT_EQ(get_be32(&d[12]), 2048u);        // OPTIMAL TRANSFER LENGTH (1 MiB)
  EXPECT_EQ(get_be32(&d[20]), 524288u);      // MAXIMUM UNMAP LBA COUNT (256 MiB, <= 1 Mi)
  EXPECT_EQ(get_be32(&d[24]), 256u);         // MAXIMUM UNMAP BLOCK DESCRIPTOR COUNT
  EXPECT_EQ(get_be32(&d[28]), 8u);           // OPTIMAL UNMAP GRANULARITY
  EXPECT_EQ(get_be32(&d[32]), 0x80000000u);  // UGAVALID
  EXPECT_EQ(get_be64(&d[36]), 16384ull);     // MAXIMUM WRITE SAME LENGTH = MAXIMUM TRANSFER
}

// 4096-byte volumes leave OPTIMAL UNMAP GRANULARITY unreported: QEMU 7.2 asserts on
// large reads from such a LUN when it is reported (see inquiry.cc).
TEST_F(InquiryTest, FourKibVolumesDoNotReportAnUnmapGranularity) {
  volume_ = std::make_shared<FakeVolume>(kUuid, 4096, 64);
  lu_ = std::make_unique<LogicalUnit>(volume_, store_);
  auto d = u8(run(inquiry_cdb(true, 0xB0)).data_in);
  ASSERT_EQ(d.size(), 64u);
  EXPECT_EQ(get_be32(&d[28]), 0u);
  EXPECT_EQ(get_be32(&d[8]), 2048u);  // MAXIMUM TRANSFER LENGTH still 8 MiB
}

TEST_F(InquiryTest, BlockDeviceCharacteristicsBytes) {
  auto d = u8(run(inquiry_cdb(true, 0xB1)).data_in);
  ASSERT_EQ(d.size(), 64u);
  EXPECT_EQ(d[1], 0xB1);
  EXPECT_EQ(get_be16(&d[2]), 0x3C);
  EXPECT_EQ(get_be16(&d[4]), 0x0001);  // non-rotating medium
}

TEST_F(InquiryTest, LogicalBlockProvisioningBytes) {
  auto d = u8(run(inquiry_cdb(true, 0xB2)).data_in);
  EXPECT_EQ(d, (std::vector<uint8_t>{0x00, 0xB2, 0x00, 0x04, 0x00, 0xE4, 0x02, 0x00}));
}

}  // namespace
}  // namespace tandem::target::scsi::testing
