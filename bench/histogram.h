// LatencyHistogram: a fixed-size log-linear histogram of nanosecond latencies (128 linear
// sub-buckets per power of two, so a reported percentile is within 0.8% of the true value).
// Pure value type, not thread-safe: one per event loop, merge() them to combine.
#pragma once

#include <array>
#include <cstdint>

namespace tandem::bench {

class LatencyHistogram {
 public:
  static constexpr int kSubBits = 7;
  static constexpr uint64_t kSubCount = uint64_t{1} << kSubBits;
  // Values below 2 * kSubCount get a bucket each; above, each power of two has kSubCount.
  static constexpr int kBucketCount = (64 - kSubBits + 1) * static_cast<int>(kSubCount);

  void record(uint64_t nanos);
  void merge(const LatencyHistogram& other);
  void clear() { *this = LatencyHistogram(); }

  uint64_t count() const { return count_; }
  uint64_t min() const { return count_ == 0 ? 0 : min_; }
  uint64_t max() const { return max_; }
  double mean() const { return count_ == 0 ? 0.0 : static_cast<double>(sum_) / count_; }

  // The smallest recorded-bucket value v such that at least `percent` % of the samples are
  // <= v (the bucket's upper bound, clamped to [min, max]). 0 when empty.
  uint64_t percentile(double percent) const;

  // Bucket arithmetic, exposed for tests.
  static int bucket_of(uint64_t nanos);
  static uint64_t bucket_lower(int bucket);
  static uint64_t bucket_upper(int bucket);

 private:
  std::array<uint64_t, kBucketCount> buckets_{};
  uint64_t count_ = 0;
  uint64_t sum_ = 0;
  uint64_t min_ = UINT64_MAX;
  uint64_t max_ = 0;
};

}  // namespace tandem::bench
