#include "bench/histogram.h"

#include <algorithm>
#include <bit>
#include <cmath>

namespace tandem::bench {

int LatencyHistogram::bucket_of(uint64_t nanos) {
  if (nanos < 2 * kSubCount) return static_cast<int>(nanos);
  const int msb = 63 - std::countl_zero(nanos);
  const int shift = msb - kSubBits;
  const uint64_t sub = (nanos >> shift) - kSubCount;  // 0 .. kSubCount-1
  return (shift + 1) * static_cast<int>(kSubCount) + static_cast<int>(sub);
}

uint64_t LatencyHistogram::bucket_lower(int bucket) {
  const uint64_t b = static_cast<uint64_t>(bucket);
  if (b < 2 * kSubCount) return b;
  const int shift = static_cast<int>(b / kSubCount) - 1;
  const uint64_t sub = b % kSubCount + kSubCount;
  return sub << shift;
}

uint64_t LatencyHistogram::bucket_upper(int bucket) {
  const uint64_t b = static_cast<uint64_t>(bucket);
  if (b < 2 * kSubCount) return b;
  const int shift = static_cast<int>(b / kSubCount) - 1;
  const uint64_t sub = b % kSubCount + kSubCount;
  // The last bucket's upper bound is UINT64_MAX; (sub + 1) << 56 would overflow there.
  if (shift == 63 - kSubBits && sub == 2 * kSubCount - 1) return UINT64_MAX;
  return ((sub + 1) << shift) - 1;
}

void LatencyHistogram::record(uint64_t nanos) {
  ++buckets_[bucket_of(nanos)];
  ++count_;
  sum_ += nanos;
  min_ = std::min(min_, nanos);
  max_ = std::max(max_, nanos);
}

void LatencyHistogram::merge(const LatencyHistogram& other) {
  for (int i = 0; i < kBucketCount; ++i) buckets_[i] += other.buckets_[i];
  count_ += other.count_;
  sum_ += other.sum_;
  min_ = std::min(min_, other.min_);
  max_ = std::max(max_, other.max_);
}

uint64_t LatencyHistogram::percentile(double percent) const {
  if (count_ == 0) return 0;
  percent = std::clamp(percent, 0.0, 100.0);
  // Nearest-rank definition: rank = ceil(p/100 * n), at least 1. The epsilon keeps
  // 99.9% of 1000 at rank 999 although 0.999 * 1000 is 999.0000000000001 in binary.
  const double exact_rank = percent / 100.0 * static_cast<double>(count_);
  uint64_t rank = static_cast<uint64_t>(std::ceil(exact_rank - 1e-9 * exact_rank));
  rank = std::clamp<uint64_t>(rank, 1, count_);
  uint64_t seen = 0;
  for (int i = 0; i < kBucketCount; ++i) {
    seen += buckets_[i];
    if (seen >= rank) return std::clamp(bucket_upper(i), min_, max_);
  }
  return max_;
}

}  // namespace tandem::bench
