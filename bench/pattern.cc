#include "bench/pattern.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstring>
#include <sstream>

namespace tandem::bench {
namespace {

uint64_t SplitMix(uint64_t& x) {
  uint64_t z = (x += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

uint64_t Rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

void PutLe64(std::byte* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<std::byte>(v >> (8 * i));
}

uint64_t GetLe64(const std::byte* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= static_cast<uint64_t>(p[i]) << (8 * i);
  return v;
}

}  // namespace

Rng::Rng(uint64_t seed) {
  uint64_t x = seed;
  for (auto& s : s_) s = SplitMix(x);
}

uint64_t Rng::next() {
  const uint64_t result = Rotl(s_[1] * 5, 7) * 9;
  const uint64_t t = s_[1] << 17;
  s_[2] ^= s_[0];
  s_[3] ^= s_[1];
  s_[1] ^= s_[2];
  s_[0] ^= s_[3];
  s_[2] ^= t;
  s_[3] = Rotl(s_[3], 45);
  return result;
}

uint64_t Rng::below(uint64_t bound) {
  return static_cast<uint64_t>((static_cast<unsigned __int128>(next()) * bound) >> 64);
}

std::string PatternSpec::to_string() const {
  if (kind == Kind::kRandom) return "random";
  std::ostringstream os;
  os << "compressible:" << ratio;
  return os.str();
}

std::optional<PatternSpec> ParsePattern(std::string_view text) {
  if (text == "random") return PatternSpec{};
  constexpr std::string_view kPrefix = "compressible:";
  if (!text.starts_with(kPrefix)) return std::nullopt;
  const std::string number(text.substr(kPrefix.size()));
  if (number.empty()) return std::nullopt;
  char* end = nullptr;
  const double ratio = std::strtod(number.c_str(), &end);
  if (end != number.c_str() + number.size() || !std::isfinite(ratio) || ratio < 1.0 ||
      ratio > 512.0) {
    return std::nullopt;
  }
  return PatternSpec{PatternSpec::Kind::kCompressible, ratio};
}

PatternSource::PatternSource(PatternSpec spec, uint64_t seed, size_t max_fill) {
  size_t bytes = std::max<size_t>(size_t{4} << 20, 2 * max_fill);
  bytes = (bytes + kSegmentBytes - 1) / kSegmentBytes * kSegmentBytes;
  pool_.resize(bytes);
  Rng rng(seed ^ 0x5041545445524eULL);
  size_t random_per_segment = kSegmentBytes;
  if (spec.kind == PatternSpec::Kind::kCompressible) {
    random_per_segment =
        static_cast<size_t>(std::ceil(static_cast<double>(kSegmentBytes) / spec.ratio));
  }
  // The pool starts zeroed; each segment gets its random head.
  for (size_t seg = 0; seg < bytes; seg += kSegmentBytes) {
    for (size_t i = 0; i < random_per_segment; i += 8) {
      const uint64_t v = rng.next();
      const size_t n = std::min<size_t>(8, random_per_segment - i);
      for (size_t b = 0; b < n; ++b) pool_[seg + i + b] = static_cast<std::byte>(v >> (8 * b));
    }
  }
}

void PatternSource::fill(std::span<std::byte> out, Rng& rng) const {
  // Callers ask for at most max_fill bytes, which is at most half the pool.
  const size_t segments = (pool_.size() - out.size()) / kSegmentBytes + 1;
  const size_t offset = rng.below(segments) * kSegmentBytes;
  std::memcpy(out.data(), pool_.data() + offset, out.size());
}

uint64_t BlockChecksum(std::span<const std::byte> payload, uint64_t lba, uint64_t generation) {
  uint64_t h = 0x243f6a8885a308d3ULL ^ (lba * 0x9e3779b97f4a7c15ULL) ^ Rotl(generation, 32);
  size_t i = 0;
  for (; i + 8 <= payload.size(); i += 8) {
    uint64_t w;
    std::memcpy(&w, payload.data() + i, 8);
    h = (h ^ w) * 0xff51afd7ed558ccdULL;
    h ^= h >> 29;
  }
  for (; i < payload.size(); ++i) {
    h = (h ^ static_cast<uint64_t>(payload[i])) * 0xc4ceb9fe1a85ec53ULL;
  }
  h ^= h >> 33;
  return h | 1;  // 0 never appears, so a zeroed block never verifies by accident
}

void StampBlocks(std::span<std::byte> buf, uint32_t block_size, uint64_t first_lba,
                 uint64_t generation, bool with_checksum) {
  for (size_t off = 0, lba = first_lba; off + block_size <= buf.size(); off += block_size, ++lba) {
    std::byte* p = buf.data() + off;
    PutLe64(p, kStampMagic);
    PutLe64(p + 8, lba);
    PutLe64(p + 16, generation);
    const uint64_t sum =
        with_checksum
            ? BlockChecksum(std::span<const std::byte>(p + kStampBytes, block_size - kStampBytes),
                            lba, generation)
            : 0;
    PutLe64(p + 24, sum);
  }
}

std::optional<VerifyFailure> VerifyBlocks(std::span<const std::byte> buf, uint32_t block_size,
                                          uint64_t first_lba, uint64_t expected_generation) {
  for (size_t off = 0, lba = first_lba; off + block_size <= buf.size(); off += block_size, ++lba) {
    const std::byte* p = buf.data() + off;
    std::ostringstream why;
    if (GetLe64(p) != kStampMagic) {
      why << "no stamp (magic " << std::hex << GetLe64(p) << ")";
      return VerifyFailure{lba, why.str()};
    }
    if (const uint64_t got = GetLe64(p + 8); got != lba) {
      why << "stamp names LBA " << got << " (misdirected or stale data)";
      return VerifyFailure{lba, why.str()};
    }
    if (const uint64_t got = GetLe64(p + 16); got != expected_generation) {
      why << "generation " << got << ", expected " << expected_generation
          << (got < expected_generation ? " (lost write)" : " (unexpected newer write)");
      return VerifyFailure{lba, why.str()};
    }
    const uint64_t want =
        BlockChecksum(std::span<const std::byte>(p + kStampBytes, block_size - kStampBytes), lba,
                      expected_generation);
    if (const uint64_t got = GetLe64(p + 24); got != want) {
      why << "payload checksum " << std::hex << got << ", computed " << want
          << " (torn or corrupt)";
      return VerifyFailure{lba, why.str()};
    }
  }
  return std::nullopt;
}

}  // namespace tandem::bench
