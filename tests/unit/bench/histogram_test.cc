#include "bench/histogram.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <initializer_list>
#include <random>

namespace tandem::bench {
namespace {

TEST(LatencyHistogram, EmptyReportsZeros) {
  LatencyHistogram h;
  EXPECT_EQ(h.count(), 0u);
  EXPECT_EQ(h.min(), 0u);
  EXPECT_EQ(h.max(), 0u);
  EXPECT_EQ(h.percentile(50), 0u);
  EXPECT_EQ(h.mean(), 0.0);
}

TEST(LatencyHistogram, BucketsAreContiguousAndCoverEveryValue) {
  for (int b = 1; b < LatencyHistogram::kBucketCount; ++b) {
    ASSERT_EQ(LatencyHistogram::bucket_lower(b), LatencyHistogram::bucket_upper(b - 1) + 1)
        << "bucket " << b;
  }
  EXPECT_EQ(LatencyHistogram::bucket_lower(0), 0u);
  EXPECT_EQ(LatencyHistogram::bucket_upper(LatencyHistogram::kBucketCount - 1), UINT64_MAX);
  for (uint64_t v :
       std::initializer_list<uint64_t>{0, 1, 255, 256, 257, 1000, 123456789, UINT64_MAX}) {
    const int b = LatencyHistogram::bucket_of(v);
    ASSERT_GE(b, 0);
    ASSERT_LT(b, LatencyHistogram::kBucketCount);
    EXPECT_LE(LatencyHistogram::bucket_lower(b), v);
    EXPECT_GE(LatencyHistogram::bucket_upper(b), v);
  }
}

TEST(LatencyHistogram, RelativeErrorBelowOnePercent) {
  for (uint64_t v = 300; v < (uint64_t{1} << 40); v = v * 3 + 7) {
    const int b = LatencyHistogram::bucket_of(v);
    const double width = static_cast<double>(LatencyHistogram::bucket_upper(b) -
                                             LatencyHistogram::bucket_lower(b) + 1);
    EXPECT_LT(width / static_cast<double>(v), 0.008) << v;
  }
}

TEST(LatencyHistogram, SmallValuesAreExact) {
  LatencyHistogram h;
  for (uint64_t v = 1; v <= 100; ++v) h.record(v);
  EXPECT_EQ(h.count(), 100u);
  EXPECT_EQ(h.min(), 1u);
  EXPECT_EQ(h.max(), 100u);
  EXPECT_EQ(h.percentile(50), 50u);
  EXPECT_EQ(h.percentile(99), 99u);
  EXPECT_EQ(h.percentile(99.9), 100u);
  EXPECT_EQ(h.percentile(100), 100u);
  EXPECT_EQ(h.percentile(0), 1u);
  EXPECT_DOUBLE_EQ(h.mean(), 50.5);
}

TEST(LatencyHistogram, PercentilesOfALongTail) {
  // 990 fast ops at 100 us, 9 at 5 ms, 1 at 80 ms: p50 fast, p99 fast, p99.9 the slow group.
  LatencyHistogram h;
  for (int i = 0; i < 990; ++i) h.record(100'000);
  for (int i = 0; i < 9; ++i) h.record(5'000'000);
  h.record(80'000'000);
  auto near = [](uint64_t got, uint64_t want) {
    return got >= want && static_cast<double>(got) <= static_cast<double>(want) * 1.008;
  };
  EXPECT_TRUE(near(h.percentile(50), 100'000)) << h.percentile(50);
  EXPECT_TRUE(near(h.percentile(99), 100'000)) << h.percentile(99);
  EXPECT_TRUE(near(h.percentile(99.9), 5'000'000)) << h.percentile(99.9);
  EXPECT_EQ(h.percentile(100), 80'000'000u);
}

TEST(LatencyHistogram, MatchesExactPercentilesOnRandomData) {
  std::mt19937_64 rng(42);
  std::lognormal_distribution<double> dist(11.0, 1.0);  // around 60 us, long tail
  std::vector<uint64_t> values;
  LatencyHistogram h;
  for (int i = 0; i < 100'000; ++i) {
    const auto v = static_cast<uint64_t>(dist(rng));
    values.push_back(v);
    h.record(v);
  }
  std::sort(values.begin(), values.end());
  for (double p : {50.0, 90.0, 99.0, 99.9}) {
    const auto rank = static_cast<size_t>(std::ceil(p / 100.0 * values.size()));
    const uint64_t exact = values[rank - 1];
    const uint64_t got = h.percentile(p);
    EXPECT_GE(got, exact) << p;
    EXPECT_LE(static_cast<double>(got), static_cast<double>(exact) * 1.008) << p;
  }
}

TEST(LatencyHistogram, MergeEqualsRecordingEverything) {
  LatencyHistogram a, b, all;
  for (uint64_t v = 1; v < 5000; v += 3) {
    (v % 2 ? a : b).record(v * 100);
    all.record(v * 100);
  }
  a.merge(b);
  EXPECT_EQ(a.count(), all.count());
  EXPECT_EQ(a.min(), all.min());
  EXPECT_EQ(a.max(), all.max());
  EXPECT_DOUBLE_EQ(a.mean(), all.mean());
  for (double p : {1.0, 50.0, 99.0, 99.9}) EXPECT_EQ(a.percentile(p), all.percentile(p));
}

}  // namespace
}  // namespace tandem::bench
