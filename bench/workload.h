// Which I/O comes next: OpGenerator turns (read/write mix, random or sequential, range) into a
// stream of operations on bs-sized chunks; ChunkTracker remembers each chunk's last written
// generation and which chunks are in flight, so --verify never races a read with a write to
// the same chunk. Pure code, single-threaded; the runner owns both and outlives neither.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "bench/pattern.h"

namespace tandem::bench {

enum class RwMode { kRead, kWrite, kRandRead, kRandWrite, kMix };

std::optional<RwMode> ParseRwMode(std::string_view text);
const char* to_string(RwMode mode);
bool IsRandom(RwMode mode);

struct Op {
  bool is_write = false;
  uint64_t chunk = 0;       // byte offset = chunk * chunk_bytes
  uint64_t generation = 0;  // write: the stamp to write; read: the stamp expected
};

class ChunkTracker {
 public:
  // A read of a chunk whose content is unknown (never written in this run, or a write to
  // it failed) is not verified.
  static constexpr uint64_t kUnknown = 0;

  explicit ChunkTracker(uint64_t chunk_count);
  bool busy(uint64_t chunk) const { return busy_[chunk] != 0; }
  void acquire(uint64_t chunk) { busy_[chunk] = 1; }
  void release(uint64_t chunk) { busy_[chunk] = 0; }
  uint64_t generation(uint64_t chunk) const { return generations_[chunk]; }
  void set_generation(uint64_t chunk, uint64_t g) { generations_[chunk] = g; }
  // Generations are unique across every generator sharing this tracker (prefill, then run).
  uint64_t new_generation() { return ++last_generation_; }

 private:
  uint64_t last_generation_ = kUnknown;
  std::vector<uint8_t> busy_;
  std::vector<uint64_t> generations_;
};

class OpGenerator {
 public:
  // read_percent is used by kMix only. tracker may be null (no verify); else it must
  // cover chunk_count chunks and outlive the generator.
  OpGenerator(RwMode mode, int read_percent, uint64_t chunk_count, uint64_t seed,
              ChunkTracker* tracker);

  // The next operation, or nullopt when every chunk it tried is in flight (verify only):
  // retry after a completion.
  std::optional<Op> next();
  // Must be called once per op returned by next(), success or not.
  void complete(const Op& op, bool ok);

  uint64_t writes_issued() const { return write_counter_; }

 private:
  std::optional<uint64_t> pick_chunk();

  RwMode mode_;
  int read_percent_;
  uint64_t chunk_count_;
  Rng rng_;
  ChunkTracker* tracker_;
  uint64_t cursor_ = 0;
  uint64_t write_counter_ = 0;
};

}  // namespace tandem::bench
