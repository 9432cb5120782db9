#include "bench/pattern.h"

#include <gtest/gtest.h>

#include <cstring>
#include <set>

namespace tandem::bench {
namespace {

// Bytes a trivial run-length view would keep: a crude but monotone proxy for how well a
// block compresses (zeros runs collapse, random bytes do not).
double ZeroFraction(std::span<const std::byte> data) {
  size_t zeros = 0;
  for (std::byte b : data) zeros += b == std::byte{0};
  return static_cast<double>(zeros) / static_cast<double>(data.size());
}

TEST(Rng, DeterministicAndInRange) {
  Rng a(7), b(7), c(8);
  for (int i = 0; i < 100; ++i) {
    const uint64_t x = a.next();
    EXPECT_EQ(x, b.next());
    EXPECT_NE(x, c.next());
  }
  Rng r(1);
  std::set<uint64_t> seen;
  for (int i = 0; i < 10'000; ++i) {
    const uint64_t v = r.below(10);
    ASSERT_LT(v, 10u);
    seen.insert(v);
  }
  EXPECT_EQ(seen.size(), 10u);
}

TEST(ParsePattern, Forms) {
  EXPECT_EQ(ParsePattern("random")->kind, PatternSpec::Kind::kRandom);
  const auto two = ParsePattern("compressible:2");
  ASSERT_TRUE(two);
  EXPECT_EQ(two->kind, PatternSpec::Kind::kCompressible);
  EXPECT_DOUBLE_EQ(two->ratio, 2.0);
  EXPECT_DOUBLE_EQ(ParsePattern("compressible:3.5")->ratio, 3.5);
  EXPECT_EQ(ParsePattern("compressible:2")->to_string(), "compressible:2");
  EXPECT_EQ(ParsePattern("random")->to_string(), "random");
  for (const char* bad : {"", "zero", "compressible", "compressible:", "compressible:0.9",
                          "compressible:x", "compressible:2x", "compressible:nan"}) {
    EXPECT_FALSE(ParsePattern(bad)) << bad;
  }
}

TEST(PatternSource, RandomHasNoZeroRuns) {
  PatternSource src(PatternSpec{}, 1, 1 << 20);
  EXPECT_GE(src.pool().size(), size_t{4} << 20);
  EXPECT_LT(ZeroFraction(src.pool()), 0.01);
}

TEST(PatternSource, CompressibleHasTheAskedShareOfZeros) {
  for (double ratio : {2.0, 4.0}) {
    PatternSource src(PatternSpec{PatternSpec::Kind::kCompressible, ratio}, 1, 4096);
    const double zeros = ZeroFraction(src.pool());
    EXPECT_NEAR(zeros, 1.0 - 1.0 / ratio, 0.01) << ratio;
    // Each segment: random head, zero tail.
    const auto& pool = src.pool();
    const size_t head = static_cast<size_t>(PatternSource::kSegmentBytes / ratio);
    for (size_t i = head; i < PatternSource::kSegmentBytes; ++i) {
      ASSERT_EQ(pool[i], std::byte{0}) << i;
    }
  }
}

TEST(PatternSource, FillTakesDifferentWindows) {
  PatternSource src(PatternSpec{}, 1, 4096);
  Rng rng(3);
  std::vector<std::byte> a(4096), b(4096);
  src.fill(a, rng);
  src.fill(b, rng);
  EXPECT_NE(std::memcmp(a.data(), b.data(), a.size()), 0);
}

TEST(Stamp, RoundTripsAndNamesTheBadBlock) {
  PatternSource src(PatternSpec{}, 1, 8192);
  Rng rng(5);
  std::vector<std::byte> buf(8192);
  src.fill(buf, rng);
  StampBlocks(buf, 512, 1000, 42, /*with_checksum=*/true);
  EXPECT_FALSE(VerifyBlocks(buf, 512, 1000, 42));

  // Wrong generation: a lost (older) write.
  auto f = VerifyBlocks(buf, 512, 1000, 43);
  ASSERT_TRUE(f);
  EXPECT_EQ(f->lba, 1000u);
  EXPECT_NE(f->reason.find("lost write"), std::string::npos) << f->reason;

  // Read from the wrong place: LBA mismatch.
  f = VerifyBlocks(buf, 512, 2000, 42);
  ASSERT_TRUE(f);
  EXPECT_EQ(f->lba, 2000u);

  // One flipped payload byte in the 5th block.
  auto corrupt = buf;
  corrupt[4 * 512 + 300] ^= std::byte{1};
  f = VerifyBlocks(corrupt, 512, 1000, 42);
  ASSERT_TRUE(f);
  EXPECT_EQ(f->lba, 1004u);
  EXPECT_NE(f->reason.find("checksum"), std::string::npos) << f->reason;

  // Zeroed block (e.g. a hole): no stamp.
  auto zeroed = buf;
  std::memset(zeroed.data() + 7 * 512, 0, 512);
  f = VerifyBlocks(zeroed, 512, 1000, 42);
  ASSERT_TRUE(f);
  EXPECT_EQ(f->lba, 1007u);
  EXPECT_NE(f->reason.find("no stamp"), std::string::npos);
}

TEST(Stamp, WorksWith4kBlocks) {
  std::vector<std::byte> buf(16384, std::byte{0x5a});
  StampBlocks(buf, 4096, 7, 1, true);
  EXPECT_FALSE(VerifyBlocks(buf, 4096, 7, 1));
  buf[3 * 4096 + 4000] = std::byte{0};
  const auto f = VerifyBlocks(buf, 4096, 7, 1);
  ASSERT_TRUE(f);
  EXPECT_EQ(f->lba, 10u);
}

TEST(Stamp, ChecksumIsNeverZeroAndDependsOnPlace) {
  std::vector<std::byte> zeros(480);
  EXPECT_NE(BlockChecksum(zeros, 0, 0), 0u);
  EXPECT_NE(BlockChecksum(zeros, 1, 5), BlockChecksum(zeros, 2, 5));
  EXPECT_NE(BlockChecksum(zeros, 1, 5), BlockChecksum(zeros, 1, 6));
}

}  // namespace
}  // namespace tandem::bench
