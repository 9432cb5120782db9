// Medium-access commands: happy paths, range and field checks, volume states, backend
// errors, and asynchronous completion.
#include <gtest/gtest.h>

#include "tests/unit/target_scsi/scsi_test_util.h"

namespace tandem::target::scsi::testing {
namespace {

using RwTest = ScsiTest;
constexpr uint32_t kBs = ScsiTest::kBlockSize;

std::vector<std::byte> zeros(size_t n) { return std::vector<std::byte>(n); }

TEST_F(RwTest, Write10Read10RoundTrip) {
  auto data = pattern(4 * kBs, 3);
  ASSERT_TRUE(IsGood(run(rw10(op::kWrite10, 100, 4), data)));
  auto r = run(rw10(op::kRead10, 100, 4));
  ASSERT_TRUE(IsGood(r));
  EXPECT_EQ(r.data_in, data);
  EXPECT_EQ(volume_->fua_writes, 0);
}

TEST_F(RwTest, AllReadWriteSizes) {
  auto d6 = pattern(2 * kBs, 1);
  ASSERT_TRUE(IsGood(run(rw6(op::kWrite6, 0x700, 2), d6)));
  EXPECT_EQ(run(rw6(op::kRead6, 0x700, 2)).data_in, d6);
  auto d12 = pattern(3 * kBs, 2);
  ASSERT_TRUE(IsGood(run(rw12(op::kWrite12, 7, 3), d12)));
  EXPECT_EQ(run(rw12(op::kRead12, 7, 3)).data_in, d12);
  auto d16 = pattern(5 * kBs, 4);
  ASSERT_TRUE(IsGood(run(rw16(op::kWrite16, 2000, 5), d16)));
  EXPECT_EQ(run(rw16(op::kRead16, 2000, 5)).data_in, d16);
}

TEST_F(RwTest, Read6ZeroLengthMeans256Blocks) {
  auto r = run(rw6(op::kRead6, 0, 0));
  ASSERT_TRUE(IsGood(r));
  EXPECT_EQ(r.data_in.size(), 256u * kBs);
  EXPECT_TRUE(IsGood(run(rw6(op::kWrite6, 10, 0), pattern(256 * kBs, 9))));
}

TEST_F(RwTest, Read6Rejects6ByteBeyondEnd) {
  EXPECT_TRUE(IsIllegal(run(rw6(op::kRead6, 2040, 16)), kAscLbaOutOfRange));
}

TEST_F(RwTest, ZeroBlocksIsGoodWithoutIo) {
  EXPECT_TRUE(IsGood(run(rw10(op::kRead10, 0, 0))));
  EXPECT_TRUE(IsGood(run(rw10(op::kWrite10, 0, 0))));
  EXPECT_TRUE(IsGood(run(rw16(op::kRead16, kBlocks, 0))));
  EXPECT_EQ(volume_->reads + volume_->writes, 0);
}

TEST_F(RwTest, FuaHonoured) {
  ASSERT_TRUE(IsGood(run(rw10(op::kWrite10, 0, 1, 0x08), pattern(kBs, 1))));
  ASSERT_TRUE(IsGood(run(rw16(op::kWrite16, 0, 1, 0x08), pattern(kBs, 1))));
  ASSERT_TRUE(IsGood(run(rw12(op::kWrite12, 0, 1, 0x10), pattern(kBs, 1))));  // DPO only
  EXPECT_EQ(volume_->fua_writes, 2);
  EXPECT_EQ(volume_->writes, 3);
}

TEST_F(RwTest, OutOfRange) {
  EXPECT_TRUE(IsIllegal(run(rw10(op::kRead10, kBlocks - 1, 2)), kAscLbaOutOfRange));
  EXPECT_TRUE(IsIllegal(run(rw10(op::kWrite10, kBlocks, 1), pattern(kBs, 0)), kAscLbaOutOfRange));
  EXPECT_TRUE(IsIllegal(run(rw16(op::kRead16, ~0ull, 1)), kAscLbaOutOfRange));
  EXPECT_TRUE(IsIllegal(run(rw16(op::kRead16, 1, ~0u)), kAscLbaOutOfRange));
  EXPECT_TRUE(IsIllegal(run(rw16(op::kRead16, kBlocks + 1, 0)), kAscLbaOutOfRange));
  EXPECT_TRUE(
      IsIllegal(run(rw12(op::kWriteAndVerify12, kBlocks, 1), pattern(kBs, 0)), kAscLbaOutOfRange));
  EXPECT_TRUE(IsIllegal(run(rw10(op::kVerify10, kBlocks, 1)), kAscLbaOutOfRange));
  EXPECT_TRUE(IsIllegal(run(rw10(op::kPreFetch10, kBlocks, 1)), kAscLbaOutOfRange));
  EXPECT_TRUE(IsIllegal(run(rw16(op::kSynchronizeCache16, kBlocks, 1)), kAscLbaOutOfRange));
}

TEST_F(RwTest, ProtectFieldsRejected) {
  auto r = run(rw10(op::kRead10, 0, 1, 0x20));
  ASSERT_TRUE(IsIllegal(r, kAscInvalidFieldInCdb));
  EXPECT_EQ(r.sense[15], 0xC0 | 0x08 | 0x07);  // SKSV, C/D, BPV, bit 7
  EXPECT_EQ(r.sense[17], 1);
  EXPECT_TRUE(
      IsIllegal(run(rw16(op::kWrite16, 0, 1, 0x60), pattern(kBs, 0)), kAscInvalidFieldInCdb));
  EXPECT_TRUE(IsIllegal(run(rw12(op::kVerify12, 0, 1, 0x80)), kAscInvalidFieldInCdb));
}

TEST_F(RwTest, TransferLengthOverBlockLimits) {
  make_lu(20000);
  auto r = run(rw10(op::kRead10, 0, 16385));
  ASSERT_TRUE(IsIllegal(r, kAscInvalidFieldInCdb));
  EXPECT_EQ(r.sense[17], 7);  // points at TRANSFER LENGTH
  EXPECT_TRUE(
      IsIllegal(run(rw16(op::kWrite16, 0, 16385), zeros(16385 * kBs)), kAscInvalidFieldInCdb));
  EXPECT_TRUE(IsGood(run(rw16(op::kRead16, 0, 16384))));
}

TEST_F(RwTest, ShortDataOutWritesOnlyTheWholeBlocksThatArrived) {
  // Expected Data Transfer Length shorter than TRANSFER LENGTH: GOOD, the transport reports
  // the overflow residual; a partial block is never written.
  volume_->fill(0, 4, 0x61);
  auto b = pattern(kBs + 100, 5);
  ASSERT_TRUE(IsGood(run(rw10(op::kWrite10, 0, 2), b)));
  auto r = run(rw10(op::kRead10, 0, 2));
  EXPECT_TRUE(std::equal(b.begin(), b.begin() + kBs, r.data_in.begin()));
  EXPECT_EQ(u8(r.data_in)[kBs], 0x61);
  EXPECT_EQ(volume_->writes, 1);
  ASSERT_TRUE(IsGood(run(rw10(op::kWriteAndVerify10, 2, 2), {})));  // nothing arrived
  ASSERT_TRUE(IsGood(run(rw10(op::kWrite10, 2, 1), pattern(200, 1))));
  EXPECT_EQ(volume_->writes, 1);
  EXPECT_EQ(u8(run(rw10(op::kRead10, 2, 1)).data_in)[0], 0x61);
  // Longer Data-Out than needed: only the described blocks are written.
  auto data = pattern(3 * kBs, 5);
  ASSERT_TRUE(IsGood(run(rw10(op::kWrite10, 0, 2), data)));
  EXPECT_EQ(u8(run(rw10(op::kRead10, 2, 1)).data_in)[0], 0x61);
}

TEST_F(RwTest, ReadOnlyVolumeRefusesEveryWrite) {
  volume_->set_state(core::VolumeState::kReadOnly);
  auto wp = [](const ScsiResult& r) {
    return HasSense(r, SenseKey::kDataProtect, kAscWriteProtected);
  };
  EXPECT_TRUE(wp(run(rw10(op::kWrite10, 0, 1), pattern(kBs, 0))));
  EXPECT_TRUE(wp(run(rw6(op::kWrite6, 0, 1), pattern(kBs, 0))));
  EXPECT_TRUE(wp(run(rw16(op::kWriteAndVerify16, 0, 1), pattern(kBs, 0))));
  EXPECT_TRUE(wp(run(rw10(op::kWriteSame10, 0, 1, 0x08), zeros(kBs))));
  EXPECT_TRUE(wp(run(cdb_of({0x42, 0, 0, 0, 0, 0, 0, 0, 24, 0}), zeros(24))));
  EXPECT_TRUE(wp(run(cdb_of({0x89, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0}), zeros(2 * kBs))));
  EXPECT_EQ(volume_->writes, 0);
  EXPECT_TRUE(volume_->unmaps.empty());
  EXPECT_TRUE(IsGood(run(rw10(op::kRead10, 0, 1))));
}

TEST_F(RwTest, HaltedAndOfflineVolumes) {
  volume_->set_state(core::VolumeState::kHalted);
  EXPECT_TRUE(HasSense(run(rw10(op::kWrite10, 0, 1), pattern(kBs, 0)), SenseKey::kNotReady,
                       kAscNotReadyBecomingReady));
  EXPECT_TRUE(IsGood(run(rw10(op::kRead10, 0, 1))));
  volume_->set_state(core::VolumeState::kOffline);
  EXPECT_TRUE(HasSense(run(rw10(op::kRead10, 0, 1)), SenseKey::kNotReady, kAscNotReadyOffline));
  EXPECT_TRUE(HasSense(run(rw10(op::kWrite10, 0, 1), pattern(kBs, 0)), SenseKey::kNotReady,
                       kAscNotReadyOffline));
  EXPECT_TRUE(
      HasSense(run(rw10(op::kSynchronizeCache10, 0, 0)), SenseKey::kNotReady, kAscNotReadyOffline));
}

TEST_F(RwTest, BackendErrorsMapToSense) {
  volume_->fail_next(core::IoStatus::kMediumError);
  EXPECT_TRUE(
      HasSense(run(rw10(op::kRead10, 0, 1)), SenseKey::kMediumError, kAscUnrecoveredReadError));
  volume_->fail_next(core::IoStatus::kMediumError);
  EXPECT_TRUE(HasSense(run(rw10(op::kWrite10, 0, 1), pattern(kBs, 0)), SenseKey::kMediumError,
                       kAscWriteError));
  volume_->fail_next(core::IoStatus::kNoSpace);
  EXPECT_TRUE(HasSense(run(rw10(op::kWrite10, 0, 1), pattern(kBs, 0)), SenseKey::kDataProtect,
                       kAscSpaceAllocationFailedWriteProtect));
  volume_->fail_next(core::IoStatus::kWriteProtected);
  EXPECT_TRUE(HasSense(run(rw10(op::kWrite10, 0, 1), pattern(kBs, 0)), SenseKey::kDataProtect,
                       kAscWriteProtected));
  volume_->fail_next(core::IoStatus::kNotReady);
  EXPECT_TRUE(
      HasSense(run(rw10(op::kRead10, 0, 1)), SenseKey::kNotReady, kAscNotReadyBecomingReady));
  volume_->fail_next(core::IoStatus::kOutOfRange);
  EXPECT_TRUE(IsIllegal(run(rw10(op::kRead10, 0, 1)), kAscLbaOutOfRange));
  volume_->fail_next(core::IoStatus::kMediumError);
  EXPECT_TRUE(
      HasSense(run(rw10(op::kSynchronizeCache10, 0, 0)), SenseKey::kMediumError, kAscWriteError));
}

TEST_F(RwTest, WriteAndVerifyIsFua) {
  auto data = pattern(2 * kBs, 8);
  ASSERT_TRUE(IsGood(run(rw10(op::kWriteAndVerify10, 4, 2, 0x02), data)));
  ASSERT_TRUE(IsGood(run(rw12(op::kWriteAndVerify12, 6, 2), data)));
  ASSERT_TRUE(IsGood(run(rw16(op::kWriteAndVerify16, 8, 2), data)));
  EXPECT_EQ(volume_->fua_writes, 3);
  EXPECT_EQ(run(rw10(op::kRead10, 8, 2)).data_in, data);
}

TEST_F(RwTest, VerifyByteCheck) {
  auto data = pattern(3 * kBs, 11);
  ASSERT_TRUE(IsGood(run(rw10(op::kWrite10, 50, 3), data)));
  EXPECT_TRUE(IsGood(run(rw10(op::kVerify10, 50, 3))));              // BYTCHK 0
  EXPECT_TRUE(IsGood(run(rw10(op::kVerify10, 50, 3, 0x02), data)));  // BYTCHK 1
  EXPECT_TRUE(IsGood(run(rw16(op::kVerify16, 50, 3, 0x02), data)));
  EXPECT_TRUE(IsGood(run(rw12(op::kVerify12, 50, 3, 0x02), data)));
  auto bad = data;
  bad[kBs + 17] ^= std::byte{0xFF};
  auto r = run(rw10(op::kVerify10, 50, 3, 0x02), bad);
  ASSERT_TRUE(HasSense(r, SenseKey::kMiscompare, kAscMiscompareDuringVerify));
  std::vector<uint8_t> want = {0xF0, 0, 0x0E, 0,    0, 0x02, 0x11, 10, 0,
                               0,    0, 0,    0x1D, 0, 0,    0,    0,  0};
  EXPECT_EQ(r.sense, want);
  EXPECT_TRUE(IsGood(run(rw10(op::kVerify10, 50, 3), bad)));  // BYTCHK 0 ignores data
  EXPECT_TRUE(
      IsIllegal(run(rw10(op::kVerify10, 50, 3, 0x04)), kAscInvalidFieldInCdb));  // BYTCHK 10b
  EXPECT_TRUE(
      IsIllegal(run(rw10(op::kVerify10, 50, 3, 0x02), pattern(kBs, 0)), kAscInvalidFieldInCdb));
}

TEST_F(RwTest, VerifyByteCheckSingleBlockPattern) {
  volume_->fill(10, 4, 0xAB);
  std::vector<std::byte> one(kBs, std::byte{0xAB});
  EXPECT_TRUE(IsGood(run(rw10(op::kVerify10, 10, 4, 0x06), one)));  // BYTCHK 11b
  one[0] = std::byte{0};
  EXPECT_TRUE(HasSense(run(rw10(op::kVerify10, 10, 4, 0x06), one), SenseKey::kMiscompare,
                       kAscMiscompareDuringVerify));
}

TEST_F(RwTest, SynchronizeCacheFlushes) {
  EXPECT_TRUE(IsGood(run(rw10(op::kSynchronizeCache10, 0, 0))));
  EXPECT_TRUE(IsGood(run(rw16(op::kSynchronizeCache16, 10, 20, 0x02))));
  EXPECT_EQ(volume_->flushes, 2);
}

TEST_F(RwTest, PreFetch) {
  EXPECT_TRUE(IsGood(run(rw10(op::kPreFetch10, 0, 16))));
  EXPECT_TRUE(IsGood(run(rw16(op::kPreFetch16, 10, 0, 0x02))));
  EXPECT_TRUE(IsIllegal(run(rw16(op::kPreFetch16, kBlocks - 1, 2)), kAscLbaOutOfRange));
}

// --- UNMAP ------------------------------------------------------------------------------

std::vector<std::byte> unmap_list(const std::vector<std::pair<uint64_t, uint32_t>>& ext) {
  std::vector<uint8_t> p(8, 0);
  for (auto [lba, n] : ext) {
    append_be64(p, lba);
    append_be32(p, n);
    append_be32(p, 0);
  }
  put_be16(&p[0], static_cast<uint16_t>(p.size() - 2));
  put_be16(&p[2], static_cast<uint16_t>(p.size() - 8));
  std::vector<std::byte> out(p.size());
  std::memcpy(out.data(), p.data(), p.size());
  return out;
}

Cdb unmap_cdb(uint16_t len, uint8_t flags = 0) {
  Cdb c = cdb_of({0x42, flags});
  put_be16(&c[7], len);
  return c;
}

TEST_F(RwTest, UnmapDescriptors) {
  volume_->fill(0, 100, 0x55);
  auto list = unmap_list({{10, 5}, {50, 0}, {90, 10}});
  ASSERT_TRUE(IsGood(run(unmap_cdb(static_cast<uint16_t>(list.size())), list)));
  ASSERT_EQ(volume_->unmaps.size(), 2u);
  EXPECT_EQ(volume_->unmaps[0], (std::pair<uint64_t, uint64_t>{10, 5}));
  EXPECT_EQ(volume_->unmaps[1], (std::pair<uint64_t, uint64_t>{90, 10}));
  EXPECT_FALSE(volume_->mapped(12));
  EXPECT_TRUE(volume_->mapped(15));
  EXPECT_EQ(run(rw10(op::kRead10, 10, 1)).data_in, zeros(kBs));
}

TEST_F(RwTest, UnmapLengthChecks) {
  EXPECT_TRUE(IsGood(run(unmap_cdb(0))));
  EXPECT_TRUE(IsGood(run(unmap_cdb(8), unmap_list({}))));
  auto one = unmap_list({{0, 1}});
  EXPECT_TRUE(IsIllegal(run(unmap_cdb(7), one), kAscParameterListLengthError));
  EXPECT_TRUE(IsIllegal(run(unmap_cdb(24), std::vector<std::byte>(one.begin(), one.begin() + 20)),
                        kAscParameterListLengthError));
  auto bad_bd = one;
  bad_bd[3] = std::byte{32};  // descriptor length past the list
  EXPECT_TRUE(IsIllegal(run(unmap_cdb(24), bad_bd), kAscParameterListLengthError));
  auto partial = one;
  partial[3] = std::byte{15};  // incomplete descriptor is ignored
  EXPECT_TRUE(IsGood(run(unmap_cdb(24), partial)));
  EXPECT_TRUE(volume_->unmaps.empty());
  EXPECT_TRUE(IsIllegal(run(unmap_cdb(24, 0x01), one), kAscInvalidFieldInCdb));  // ANCHOR
}

TEST_F(RwTest, UnmapLimits) {
  std::vector<std::pair<uint64_t, uint32_t>> many;
  for (int i = 0; i < 256; ++i) many.emplace_back(i / 2, 0);
  auto l256 = unmap_list(many);
  EXPECT_TRUE(IsGood(run(unmap_cdb(static_cast<uint16_t>(l256.size())), l256)));
  many.emplace_back(0, 0);
  auto l257 = unmap_list(many);
  EXPECT_TRUE(IsIllegal(run(unmap_cdb(static_cast<uint16_t>(l257.size())), l257),
                        kAscInvalidFieldInParameterList));
  auto oob = unmap_list({{0, 1}, {kBlocks - 1, 2}});
  EXPECT_TRUE(IsIllegal(run(unmap_cdb(static_cast<uint16_t>(oob.size())), oob), kAscLbaOutOfRange));
  EXPECT_TRUE(volume_->unmaps.empty());  // validated before anything is unmapped
  auto at_end = unmap_list({{kBlocks, 0}});
  EXPECT_TRUE(IsGood(run(unmap_cdb(24), at_end)));
}

// A large volume with no data: only records unmaps.
class SparseVolume : public FakeVolume {
 public:
  SparseVolume() : FakeVolume(kUuid, kBs, 1) {}
  uint64_t block_count() const override { return 100'000'000; }
  void unmap(uint64_t lba, uint64_t blocks, Done done) override {
    unmaps.emplace_back(lba, blocks);
    done({});
  }
};

TEST(RwLimits, UnmapTotalOverMaximumLbaCount) {
  auto volume = std::make_shared<SparseVolume>();
  LogicalUnit lu(volume);
  auto exec = [&](const std::vector<std::byte>& list) {
    auto task = std::make_shared<ScsiTask>();
    task->cdb = unmap_cdb(static_cast<uint16_t>(list.size()));
    task->data_out = list;
    ScsiResult out;
    lu.execute(task, [&](ScsiResult r) { out = std::move(r); });
    return out;
  };
  const uint32_t max = max_unmap_blocks(kBs);
  EXPECT_TRUE(IsGood(exec(unmap_list({{0, max}}))));
  EXPECT_TRUE(IsIllegal(exec(unmap_list({{0, max}, {max, 1}})), kAscInvalidFieldInParameterList));
  EXPECT_EQ(volume->unmaps.size(), 1u);
}

// --- WRITE SAME ---------------------------------------------------------------------------

TEST_F(RwTest, WriteSameUnmapWithZeros) {
  volume_->fill(0, 64, 0x77);
  ASSERT_TRUE(IsGood(run(rw10(op::kWriteSame10, 8, 16, 0x08), zeros(kBs))));
  ASSERT_EQ(volume_->unmaps.size(), 1u);
  EXPECT_EQ(volume_->unmaps[0], (std::pair<uint64_t, uint64_t>{8, 16}));
  ASSERT_TRUE(IsGood(run(rw16(op::kWriteSame16, 30, 4, 0x09))));  // UNMAP + NDOB, no data
  EXPECT_EQ(volume_->unmaps.size(), 2u);
  EXPECT_EQ(volume_->writes, 0);
}

TEST_F(RwTest, WriteSameUnmapWithDataStillUnmaps) {
  // UNMAP = 1 asks for deallocation; the Data-Out block is not written (libiscsi
  // WriteSame10.UnmapUntilEnd sends 0xFF and expects zeros back, LBPRZ = 1).
  volume_->fill(0, 3, 0x11);
  ASSERT_TRUE(IsGood(run(rw16(op::kWriteSame16, 0, 3, 0x08), pattern(kBs, 1))));
  ASSERT_EQ(volume_->unmaps.size(), 1u);
  EXPECT_EQ(volume_->writes, 0);
  EXPECT_EQ(run(rw10(op::kRead10, 0, 3)).data_in, zeros(3 * kBs));
}

TEST_F(RwTest, WriteSameRepeatsTheBlockInBoundedChunks) {
  make_lu(6000);
  auto block = pattern(kBs, 42);
  ASSERT_TRUE(IsGood(run(rw16(op::kWriteSame16, 100, 5000), block)));
  EXPECT_EQ(volume_->writes, 3);  // 2048 + 2048 + 904 blocks of 1 MiB chunks
  auto r = run(rw16(op::kRead16, 100, 5000));
  for (uint32_t i = 0; i < 5000; i += 997) {
    EXPECT_TRUE(
        std::equal(block.begin(), block.end(), r.data_in.begin() + static_cast<ptrdiff_t>(i) * kBs))
        << i;
  }
  EXPECT_EQ(run(rw16(op::kRead16, 5100, 1)).data_in, zeros(kBs));
}

TEST_F(RwTest, WriteSameNdobWritesZeros) {
  volume_->fill(0, 10, 0x99);
  ASSERT_TRUE(IsGood(run(rw16(op::kWriteSame16, 2, 3, 0x01))));
  EXPECT_TRUE(volume_->unmaps.empty());
  EXPECT_EQ(run(rw10(op::kRead10, 2, 3)).data_in, zeros(3 * kBs));
}

TEST_F(RwTest, WriteSameChecks) {
  EXPECT_TRUE(
      IsIllegal(run(rw10(op::kWriteSame10, kBlocks + 1, 0), zeros(kBs)), kAscLbaOutOfRange));
  EXPECT_TRUE(IsIllegal(run(rw10(op::kWriteSame10, kBlocks, 0), zeros(kBs)), kAscLbaOutOfRange));
  EXPECT_TRUE(IsIllegal(run(rw16(op::kWriteSame16, 1ull << 63, 0), zeros(kBs)), kAscLbaOutOfRange));
  EXPECT_TRUE(IsIllegal(run(rw16(op::kWriteSame16, ~0ull, 0), zeros(kBs)), kAscLbaOutOfRange));
  EXPECT_TRUE(
      IsIllegal(run(rw10(op::kWriteSame10, kBlocks - 1, 2), zeros(kBs)), kAscLbaOutOfRange));
  // Data-Out must be exactly one block (none with NDOB); nothing is written otherwise.
  EXPECT_TRUE(IsIllegal(run(rw10(op::kWriteSame10, 0, 1), zeros(kBs - 1)), kAscInvalidFieldInCdb));
  EXPECT_TRUE(
      IsIllegal(run(rw10(op::kWriteSame10, 0, 1, 0x08), zeros(2 * kBs)), kAscInvalidFieldInCdb));
  EXPECT_TRUE(
      IsIllegal(run(rw16(op::kWriteSame16, 0, 1, 0x01), zeros(kBs)), kAscInvalidFieldInCdb));
  EXPECT_TRUE(IsIllegal(run(rw10(op::kWriteSame10, 0, 1), {}), kAscInvalidFieldInCdb));
  EXPECT_EQ(volume_->writes, 0);
  EXPECT_TRUE(volume_->unmaps.empty());
  EXPECT_TRUE(
      IsIllegal(run(rw10(op::kWriteSame10, 0, 1, 0x20), zeros(kBs)), kAscInvalidFieldInCdb));
  EXPECT_TRUE(
      IsIllegal(run(rw10(op::kWriteSame10, 0, 1, 0x10), zeros(kBs)), kAscInvalidFieldInCdb));
}

TEST_F(RwTest, WriteSameBackendFailureStopsTheChain) {
  make_lu(6000);
  volume_->fail_next(core::IoStatus::kMediumError);
  EXPECT_TRUE(HasSense(run(rw16(op::kWriteSame16, 0, 5000), pattern(kBs, 1)),
                       SenseKey::kMediumError, kAscWriteError));
  EXPECT_EQ(volume_->writes, 1);
}

// --- COMPARE AND WRITE ---------------------------------------------------------------------

Cdb caw(uint64_t lba, uint8_t blocks, uint8_t flags = 0) {
  Cdb c = cdb_of({0x89, flags});
  put_be64(&c[2], lba);
  c[13] = blocks;
  return c;
}

TEST_F(RwTest, CompareAndWrite) {
  auto old_data = pattern(2 * kBs, 1);
  auto new_data = pattern(2 * kBs, 2);
  ASSERT_TRUE(IsGood(run(rw10(op::kWrite10, 20, 2), old_data)));
  std::vector<std::byte> payload = old_data;
  payload.insert(payload.end(), new_data.begin(), new_data.end());
  ASSERT_TRUE(IsGood(run(caw(20, 2, 0x08), payload)));
  EXPECT_EQ(run(rw10(op::kRead10, 20, 2)).data_in, new_data);
  EXPECT_EQ(volume_->fua_writes, 1);
  // Now the compare half no longer matches: offset of the first differing byte.
  auto r = run(caw(20, 2), payload);
  ASSERT_TRUE(HasSense(r, SenseKey::kMiscompare, kAscMiscompareDuringVerify));
  EXPECT_EQ(r.sense[0], 0xF0);  // VALID
  size_t first = 0;
  while (old_data[first] == new_data[first]) ++first;
  EXPECT_EQ(get_be32(&r.sense[3]), first);
  EXPECT_EQ(run(rw10(op::kRead10, 20, 2)).data_in, new_data);
}

TEST_F(RwTest, CompareAndWriteChecks) {
  EXPECT_TRUE(IsGood(run(caw(0, 0))));
  // Data-Out must be exactly 2 x NUMBER OF LOGICAL BLOCKS: 256 blocks wrap the one-byte
  // count to 0, and a count edited after the data were sized must not half-apply.
  EXPECT_TRUE(IsIllegal(run(caw(0, 0), zeros(512 * kBs)), kAscInvalidFieldInCdb));
  EXPECT_TRUE(IsIllegal(run(caw(0, 1), zeros(4 * kBs)), kAscInvalidFieldInCdb));
  EXPECT_TRUE(IsIllegal(run(caw(0, 3), zeros(4 * kBs)), kAscInvalidFieldInCdb));
  EXPECT_EQ(volume_->writes, 0);
  EXPECT_TRUE(IsIllegal(run(caw(kBlocks - 1, 2), zeros(4 * kBs)), kAscLbaOutOfRange));
  EXPECT_TRUE(IsIllegal(run(caw(0, 2), zeros(3 * kBs)), kAscInvalidFieldInCdb));
  EXPECT_TRUE(IsIllegal(run(caw(0, 1, 0x20), zeros(2 * kBs)), kAscInvalidFieldInCdb));
  EXPECT_TRUE(IsGood(run(caw(0, 255), zeros(2 * 255 * kBs))));
}

// --- GET LBA STATUS ------------------------------------------------------------------------

Cdb get_lba_status(uint64_t lba, uint32_t alloc) {
  Cdb c = cdb_of({0x9E, 0x12});
  put_be64(&c[2], lba);
  put_be32(&c[10], alloc);
  return c;
}

TEST_F(RwTest, GetLbaStatus) {
  volume_->fill(0, 10, 1);  // 0..9 mapped, the rest deallocated
  auto r = run(get_lba_status(4, 1024));
  ASSERT_TRUE(IsGood(r));
  auto d = u8(r.data_in);
  ASSERT_EQ(d.size(), 8u + 32u);
  EXPECT_EQ(get_be32(&d[0]), 36u);
  EXPECT_EQ(get_be64(&d[8]), 4u);
  EXPECT_EQ(get_be32(&d[16]), 6u);
  EXPECT_EQ(d[20], 0x00);
  EXPECT_EQ(get_be64(&d[24]), 10u);
  EXPECT_EQ(get_be32(&d[32]), kBlocks - 10);
  EXPECT_EQ(d[36], 0x01);
  auto one = u8(run(get_lba_status(4, 24)).data_in);
  EXPECT_EQ(one.size(), 24u);
  EXPECT_EQ(get_be32(&one[0]), 20u);
  EXPECT_TRUE(IsIllegal(run(get_lba_status(kBlocks, 1024)), kAscLbaOutOfRange));
  volume_->fail_next(core::IoStatus::kMediumError);
  EXPECT_TRUE(
      HasSense(run(get_lba_status(0, 1024)), SenseKey::kMediumError, kAscUnrecoveredReadError));
}

// --- Asynchronous completion ----------------------------------------------------------------

TEST_F(RwTest, AsyncCompletions) {
  make_lu(6000);
  volume_->set_async(true);
  auto block = pattern(kBs, 5);
  ASSERT_TRUE(IsGood(run(rw16(op::kWriteSame16, 0, 5000), block)));  // chain across callbacks
  EXPECT_EQ(volume_->writes, 3);
  auto list = unmap_list({{0, 1}, {10, 1}, {20, 1}});
  ASSERT_TRUE(IsGood(run(unmap_cdb(static_cast<uint16_t>(list.size())), list)));
  EXPECT_EQ(volume_->unmaps.size(), 3u);
  auto r = run(rw10(op::kRead10, 1, 1));
  ASSERT_TRUE(IsGood(r));
  EXPECT_EQ(r.data_in, block);
}

}  // namespace
}  // namespace tandem::target::scsi::testing
