// MODE SENSE(6/10) and MODE SELECT(6/10).
#include <gtest/gtest.h>

#include "tests/unit/target_scsi/scsi_test_util.h"

namespace tandem::target::scsi::testing {
namespace {

using ModeTest = ScsiTest;

Cdb sense6(uint8_t page, uint8_t pc = 0, bool dbd = false, uint8_t subpage = 0,
           uint8_t alloc = 255) {
  return cdb_of({0x1A, static_cast<uint8_t>(dbd ? 0x08 : 0), static_cast<uint8_t>(pc << 6 | page),
                 subpage, alloc, 0});
}
Cdb sense10(uint8_t page, bool llbaa, bool dbd = false) {
  Cdb c = cdb_of({0x5A, static_cast<uint8_t>((llbaa ? 0x10 : 0) | (dbd ? 0x08 : 0)), page});
  put_be16(&c[7], 1024);
  return c;
}

const std::vector<uint8_t> kCachingPage = {0x08, 0x12, 0x04, 0, 0, 0, 0, 0, 0, 0,
                                           0,    0,    0,    0, 0, 0, 0, 0, 0, 0};

TEST_F(ModeTest, Sense6CachingPageWithBlockDescriptor) {
  auto r = run(sense6(0x08));
  ASSERT_TRUE(IsGood(r));
  std::vector<uint8_t> want = {3 + 8 + 20, 0x00, 0x10, 0x08,  // header: DPOFUA
                               0x00,       0x00, 0x08, 0x00, 0x00, 0x00, 0x02, 0x00};  // 2048 x 512
  want.insert(want.end(), kCachingPage.begin(), kCachingPage.end());
  EXPECT_EQ(u8(r.data_in), want);
}

TEST_F(ModeTest, Sense6AllPagesWithoutDescriptor) {
  auto d = u8(run(sense6(0x3F, 0, true)).data_in);
  ASSERT_EQ(d.size(), 4u + 20u + 12u + 12u);
  EXPECT_EQ(d[0], d.size() - 1);
  EXPECT_EQ(d[3], 0);
  EXPECT_EQ(d[4], 0x08);
  EXPECT_EQ(d[24], 0x0A);
  EXPECT_EQ(d[25], 0x0A);
  EXPECT_EQ(d[36], 0x1C);
  EXPECT_EQ(d[38], 0x08);                                 // DEXCPT
  EXPECT_TRUE(IsGood(run(sense6(0x3F, 0, true, 0xFF))));  // all pages and subpages
}

TEST_F(ModeTest, PageControlValues) {
  auto chg = u8(run(sense6(0x08, 1, true)).data_in);
  EXPECT_EQ(chg[4 + 2], 0x04);  // only WCE is changeable
  auto ctl_chg = u8(run(sense6(0x0A, 1, true)).data_in);
  EXPECT_EQ(ctl_chg[4 + 4], 0x08);  // only SWP is changeable in the control page
  EXPECT_EQ(std::count(ctl_chg.begin() + 6, ctl_chg.end(), 0), 9);
  auto def = u8(run(sense6(0x08, 2, true)).data_in);
  EXPECT_EQ(def[4 + 2], 0x04);
  EXPECT_TRUE(
      HasSense(run(sense6(0x08, 3)), SenseKey::kIllegalRequest, kAscSavingParametersNotSupported));
}

TEST_F(ModeTest, InvalidPageOrSubpage) {
  EXPECT_TRUE(IsIllegal(run(sense6(0x19)), kAscInvalidFieldInCdb));
  EXPECT_TRUE(IsIllegal(run(sense6(0x08, 0, false, 0x01)), kAscInvalidFieldInCdb));
}

TEST_F(ModeTest, WriteProtectBit) {
  volume_->set_state(core::VolumeState::kReadOnly);
  EXPECT_EQ(static_cast<uint8_t>(run(sense6(0x08)).data_in[2]), 0x90);
  EXPECT_EQ(static_cast<uint8_t>(run(sense10(0x08, false)).data_in[3]), 0x90);
}

TEST_F(ModeTest, Sense10ShortAndLongDescriptors) {
  auto s = u8(run(sense10(0x0A, false)).data_in);
  ASSERT_EQ(s.size(), 8u + 8u + 12u);
  EXPECT_EQ(get_be16(&s[0]), s.size() - 2);
  EXPECT_EQ(s[4], 0);
  EXPECT_EQ(get_be16(&s[6]), 8);
  auto l = u8(run(sense10(0x0A, true)).data_in);
  ASSERT_EQ(l.size(), 8u + 16u + 12u);
  EXPECT_EQ(l[4], 0x01);  // LONGLBA
  EXPECT_EQ(get_be16(&l[6]), 16);
  EXPECT_EQ(get_be64(&l[8]), kBlocks);
  EXPECT_EQ(get_be32(&l[20]), kBlockSize);
  auto n = u8(run(sense10(0x0A, true, true)).data_in);
  EXPECT_EQ(n.size(), 8u + 12u);
  EXPECT_EQ(n[4], 0);
}

TEST_F(ModeTest, AllocationLengthTruncates) {
  EXPECT_EQ(run(sense6(0x3F, 0, false, 0, 4)).data_in.size(), 4u);
}

std::vector<std::byte> select6_list(std::vector<uint8_t> page, bool with_bd = false,
                                    uint32_t bd_block = 512) {
  std::vector<uint8_t> p = {0, 0, 0, static_cast<uint8_t>(with_bd ? 8 : 0)};
  if (with_bd) {
    append_be32(p, 0);
    append_be32(p, bd_block);
  }
  p.insert(p.end(), page.begin(), page.end());
  std::vector<std::byte> out(p.size());
  std::memcpy(out.data(), p.data(), p.size());
  return out;
}

Cdb select6(uint8_t len, uint8_t flags = 0x10) { return cdb_of({0x15, flags, 0, 0, len, 0}); }

TEST_F(ModeTest, SelectClearsWriteCacheAndWritesBecomeFua) {
  auto page = kCachingPage;
  page[2] = 0x00;
  auto list = select6_list(page, true);
  // Another initiator that has talked to us learns MODE PARAMETERS CHANGED.
  EXPECT_TRUE(IsGood(run(Cdb{}, {}, 0, kPortB)));
  ASSERT_TRUE(IsGood(run(select6(static_cast<uint8_t>(list.size())), list)));
  EXPECT_EQ(static_cast<uint8_t>(run(sense6(0x08, 0, true)).data_in[6]), 0x00);
  ASSERT_TRUE(IsGood(run(rw10(op::kWrite10, 0, 1), pattern(kBlockSize, 0))));
  EXPECT_EQ(volume_->fua_writes, 1);
  EXPECT_TRUE(
      HasSense(run(Cdb{}, {}, 0, kPortB), SenseKey::kUnitAttention, kAscModeParametersChanged));
  EXPECT_TRUE(IsGood(run(Cdb{}, {}, 0, kPortA)));  // not the initiator that changed it
}

TEST_F(ModeTest, Select10) {
  auto page = kCachingPage;
  page[2] = 0x00;
  std::vector<uint8_t> p(8, 0);
  p.insert(p.end(), page.begin(), page.end());
  std::vector<std::byte> list(p.size());
  std::memcpy(list.data(), p.data(), p.size());
  Cdb c = cdb_of({0x55, 0x10});
  put_be16(&c[7], static_cast<uint16_t>(list.size()));
  ASSERT_TRUE(IsGood(run(c, list)));
  auto d = u8(run(sense10(0x08, false, true)).data_in);
  EXPECT_EQ(d[8 + 2], 0x00);
}

// The control page as MODE SENSE reports it, with SWP (byte 4 bit 3) set or clear.
std::vector<uint8_t> control_page(bool swp) {
  return {0x0A, 0x0A, 0x00, 0x10, static_cast<uint8_t>(swp ? 0x08 : 0), 0, 0, 0, 0xFF, 0xFF, 0, 0};
}

TEST_F(ModeTest, SoftwareWriteProtect) {
  EXPECT_TRUE(IsGood(run(Cdb{}, {}, 0, kPortB)));  // B has talked to us: it gets the UA
  auto on = select6_list(control_page(true));
  ASSERT_TRUE(IsGood(run(select6(static_cast<uint8_t>(on.size())), on)));
  // SPC-4 7.5.8: writes fail with DATA PROTECT / WRITE PROTECTED; WP is reported.
  auto d = u8(run(sense6(0x0A, 0, true)).data_in);
  EXPECT_EQ(d[2] & 0x80, 0x80);
  EXPECT_EQ(d[4 + 4], 0x08);
  for (const Cdb& c :
       {rw10(op::kWrite10, 0, 1), rw16(op::kOrWrite16, 0, 1), rw10(op::kWriteSame10, 0, 1)}) {
    EXPECT_TRUE(
        HasSense(run(c, pattern(kBlockSize, 1)), SenseKey::kDataProtect, kAscWriteProtected))
        << int(c[0]);
  }
  EXPECT_EQ(volume_->writes, 0);
  EXPECT_TRUE(IsGood(run(rw10(op::kRead10, 0, 1))));  // reads still work
  EXPECT_TRUE(
      HasSense(run(Cdb{}, {}, 0, kPortB), SenseKey::kUnitAttention, kAscModeParametersChanged));
  auto off = select6_list(control_page(false));
  ASSERT_TRUE(IsGood(run(select6(static_cast<uint8_t>(off.size())), off, 0, kPortB)));
  EXPECT_TRUE(HasSense(run(Cdb{}), SenseKey::kUnitAttention, kAscModeParametersChanged));
  auto cleared = u8(run(sense6(0x0A, 0, true)).data_in);
  ASSERT_GT(cleared.size(), 8u);
  EXPECT_EQ(cleared[2] & 0x80, 0);
  EXPECT_TRUE(IsGood(run(rw10(op::kWrite10, 0, 1), pattern(kBlockSize, 1))));
}

TEST_F(ModeTest, SelectErrors) {
  auto page = kCachingPage;
  auto ok = select6_list(page);
  EXPECT_TRUE(IsGood(run(select6(0), {})));
  EXPECT_TRUE(IsIllegal(run(select6(static_cast<uint8_t>(ok.size()), 0x11), ok),
                        kAscInvalidFieldInCdb));  // SP
  EXPECT_TRUE(IsIllegal(run(select6(static_cast<uint8_t>(ok.size() + 4)), ok),
                        kAscParameterListLengthError));
  EXPECT_TRUE(IsIllegal(run(select6(3), ok), kAscParameterListLengthError));
  auto bad = page;
  bad[12] = 0x01;  // not changeable
  auto bl = select6_list(bad);
  auto r = run(select6(static_cast<uint8_t>(bl.size())), bl);
  ASSERT_TRUE(IsIllegal(r, kAscInvalidFieldInParameterList));
  EXPECT_EQ(get_be16(&r.sense[16]), 4 + 12);
  auto wrong_len = page;
  wrong_len[1] = 0x10;
  auto wl = select6_list(wrong_len);
  EXPECT_TRUE(IsIllegal(run(select6(static_cast<uint8_t>(wl.size())), wl),
                        kAscInvalidFieldInParameterList));
  auto unknown = select6_list({0x19, 0x02, 0, 0});
  EXPECT_TRUE(IsIllegal(run(select6(static_cast<uint8_t>(unknown.size())), unknown),
                        kAscInvalidFieldInParameterList));
  auto block_len = select6_list(page, true, 4096);
  EXPECT_TRUE(IsIllegal(run(select6(static_cast<uint8_t>(block_len.size())), block_len),
                        kAscInvalidFieldInParameterList));
  auto trunc = select6_list(page);
  trunc.resize(trunc.size() - 5);
  EXPECT_TRUE(IsIllegal(run(select6(static_cast<uint8_t>(trunc.size())), trunc),
                        kAscParameterListLengthError));
  // Nothing was applied by the failed selects.
  EXPECT_EQ(static_cast<uint8_t>(run(sense6(0x08, 0, true)).data_in[6]), 0x04);
}

}  // namespace
}  // namespace tandem::target::scsi::testing
