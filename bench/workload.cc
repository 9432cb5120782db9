#include "bench/workload.h"

namespace tandem::bench {

std::optional<RwMode> ParseRwMode(std::string_view text) {
  if (text == "read") return RwMode::kRead;
  if (text == "write") return RwMode::kWrite;
  if (text == "randread") return RwMode::kRandRead;
  if (text == "randwrite") return RwMode::kRandWrite;
  if (text == "mix" || text == "randrw") return RwMode::kMix;
  return std::nullopt;
}

const char* to_string(RwMode mode) {
  switch (mode) {
    case RwMode::kRead:
      return "read";
    case RwMode::kWrite:
      return "write";
    case RwMode::kRandRead:
      return "randread";
    case RwMode::kRandWrite:
      return "randwrite";
    case RwMode::kMix:
      return "mix";
  }
  return "?";
}

bool IsRandom(RwMode mode) { return mode != RwMode::kRead && mode != RwMode::kWrite; }

ChunkTracker::ChunkTracker(uint64_t chunk_count)
    : busy_(chunk_count, 0), generations_(chunk_count, kUnknown) {}

OpGenerator::OpGenerator(RwMode mode, int read_percent, uint64_t chunk_count, uint64_t seed,
                         ChunkTracker* tracker)
    : mode_(mode),
      read_percent_(read_percent),
      chunk_count_(chunk_count),
      rng_(seed),
      tracker_(tracker) {}

std::optional<uint64_t> OpGenerator::pick_chunk() {
  if (!IsRandom(mode_)) {
    // Sequential: skip over chunks still in flight (only possible when the range wraps
    // around within one queue depth).
    for (uint64_t tries = 0; tries < chunk_count_; ++tries) {
      const uint64_t c = cursor_;
      cursor_ = cursor_ + 1 == chunk_count_ ? 0 : cursor_ + 1;
      if (tracker_ == nullptr || !tracker_->busy(c)) return c;
    }
    return std::nullopt;
  }
  // Random: a few draws, then give up until something completes. The caller keeps the
  // range much larger than the queue depth, so this is rare.
  for (int tries = 0; tries < 16; ++tries) {
    const uint64_t c = rng_.below(chunk_count_);
    if (tracker_ == nullptr || !tracker_->busy(c)) return c;
  }
  return std::nullopt;
}

std::optional<Op> OpGenerator::next() {
  bool is_write = false;
  switch (mode_) {
    case RwMode::kRead:
    case RwMode::kRandRead:
      is_write = false;
      break;
    case RwMode::kWrite:
    case RwMode::kRandWrite:
      is_write = true;
      break;
    case RwMode::kMix:
      is_write = static_cast<int>(rng_.below(100)) >= read_percent_;
      break;
  }
  const std::optional<uint64_t> chunk = pick_chunk();
  if (!chunk) return std::nullopt;
  Op op{is_write, *chunk, 0};
  if (is_write) {
    ++write_counter_;
    op.generation = tracker_ != nullptr ? tracker_->new_generation() : write_counter_;
  } else if (tracker_ != nullptr) {
    op.generation = tracker_->generation(*chunk);
  }
  if (tracker_ != nullptr) tracker_->acquire(*chunk);
  return op;
}

void OpGenerator::complete(const Op& op, bool ok) {
  if (tracker_ == nullptr) return;
  if (op.is_write) {
    // A failed write leaves the chunk in an unknown state: old, new or torn.
    tracker_->set_generation(op.chunk, ok ? op.generation : ChunkTracker::kUnknown);
  }
  tracker_->release(op.chunk);
}

}  // namespace tandem::bench
