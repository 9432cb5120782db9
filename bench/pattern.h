// Write payloads and block stamps for tandem-bench: a pre-built pool of random (incompressible)
// or compressible bytes that writes copy from, and a 32-byte stamp (magic, LBA, generation,
// checksum) at the start of every logical block so that reads can be verified. Pure code.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace tandem::bench {

// Deterministic 64-bit generator (xoshiro256**, seeded through splitmix64): the same seed
// gives the same workload on every machine, so a failing run replays.
class Rng {
 public:
  explicit Rng(uint64_t seed);
  uint64_t next();
  // Uniform-enough value in [0, bound) (multiply-shift; bias < bound / 2^64). bound > 0.
  uint64_t below(uint64_t bound);

 private:
  uint64_t s_[4];
};

struct PatternSpec {
  enum class Kind { kRandom, kCompressible };
  Kind kind = Kind::kRandom;
  double ratio = 1.0;  // target compression ratio for kCompressible (>= 1)

  std::string to_string() const;
};

// "random" or "compressible:R" (R >= 1, e.g. "compressible:2" for 2:1).
std::optional<PatternSpec> ParsePattern(std::string_view text);

// A pool of pattern bytes; fill() copies a window of it at a random segment-aligned offset.
// Compressible data: each kSegmentBytes segment is ceil(kSegmentBytes / ratio) random bytes
// followed by zeros, so any compressor with a window >= one segment sees about ratio:1.
class PatternSource {
 public:
  static constexpr size_t kSegmentBytes = 512;

  // max_fill: the largest fill() request. Pool size is max(4 MiB, 2 * max_fill).
  PatternSource(PatternSpec spec, uint64_t seed, size_t max_fill);
  void fill(std::span<std::byte> out, Rng& rng) const;
  const std::vector<std::byte>& pool() const { return pool_; }

 private:
  std::vector<std::byte> pool_;
};

inline constexpr size_t kStampBytes = 32;
inline constexpr uint64_t kStampMagic = 0x48434e4542444d54ULL;  // "TMDBENCH" little-endian

// Stamps every block_size block of buf (which starts at first_lba) with its LBA and
// generation. With checksum, the stamp also covers the rest of the block's bytes.
// buf.size() must be a multiple of block_size, and block_size >= kStampBytes.
void StampBlocks(std::span<std::byte> buf, uint32_t block_size, uint64_t first_lba,
                 uint64_t generation, bool with_checksum);

struct VerifyFailure {
  uint64_t lba = 0;
  std::string reason;
};

// Checks every block of buf against (its LBA, expected_generation, checksum).
std::optional<VerifyFailure> VerifyBlocks(std::span<const std::byte> buf, uint32_t block_size,
                                          uint64_t first_lba, uint64_t expected_generation);

// 64-bit checksum of a block's payload, seeded with its LBA and generation. Never 0.
uint64_t BlockChecksum(std::span<const std::byte> payload, uint64_t lba, uint64_t generation);

}  // namespace tandem::bench
