// Simulated storage for the replication simulation: a seeded RNG, a block disk with a
// volatile cache (a crash keeps a random subset of unflushed writes, in order) and a
// RegionStore with the same crash behaviour for RegionMap files. Test-only, single-threaded.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "backend/repl/region_map.h"

namespace tandem::sim {

// splitmix64: tiny, fast and identical on every platform (std distributions are not).
class Rng {
 public:
  explicit Rng(uint64_t seed) : s_(seed) {}
  uint64_t next() {
    uint64_t z = (s_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  uint64_t below(uint64_t n) { return n ? next() % n : 0; }
  uint64_t range(uint64_t lo, uint64_t hi) { return lo + below(hi - lo + 1); }  // inclusive
  bool chance(uint32_t percent) { return below(100) < percent; }

 private:
  uint64_t s_;
};

// Every block remembers the sequence of the data it holds (resync data: the region's stamp),
// so the simulation can check ordering and durability, not only bytes.
class Disk {
 public:
  Disk(uint32_t block_size, uint64_t blocks)
      : bs_(block_size),
        cur_(size_t(block_size) * blocks),
        stable_(cur_),
        cur_seq_(blocks, 0),
        stable_seq_(blocks, 0) {}

  // data == nullptr writes zeros (unmap). Returns an error text if a block already held
  // data newer than `seq` (an ordering bug), else empty.
  std::string write(uint64_t lba, uint64_t n, const uint8_t* data, uint64_t seq, bool fua) {
    std::string err;
    for (uint64_t b = lba; b < lba + n; ++b) {
      if (cur_seq_[b] > seq) {
        err = "block " + std::to_string(b) + " held seq " + std::to_string(cur_seq_[b]) +
              ", overwritten by older seq " + std::to_string(seq);
        break;
      }
    }
    Entry e{lba, n, seq,
            data ? std::vector<uint8_t>(data, data + n * bs_) : std::vector<uint8_t>()};
    apply(cur_, cur_seq_, e);
    log_.push_back(std::move(e));
    if (fua) flush();
    return err;
  }
  void flush() {
    for (const Entry& e : log_) apply(stable_, stable_seq_, e);
    log_.clear();
  }
  // Power loss: stable data plus a random subset of the unflushed writes.
  void crash(Rng& rng) {
    for (const Entry& e : log_) {
      if (rng.chance(50)) apply(stable_, stable_seq_, e);
    }
    log_.clear();
    cur_ = stable_;
    cur_seq_ = stable_seq_;
  }
  std::vector<uint8_t> read(uint64_t lba, uint64_t n) const {
    return std::vector<uint8_t>(cur_.begin() + lba * bs_, cur_.begin() + (lba + n) * bs_);
  }
  const std::vector<uint8_t>& image() const { return cur_; }
  const std::vector<uint8_t>& stable_image() const { return stable_; }
  // Block b on stable storage holds `bytes` (nullptr: zeros).
  bool stable_holds(uint64_t b, const uint8_t* bytes) const {
    const auto at = stable_.begin() + b * bs_;
    if (!bytes) return std::all_of(at, at + bs_, [](uint8_t v) { return v == 0; });
    return std::equal(at, at + bs_, bytes);
  }
  uint64_t cur_seq(uint64_t b) const { return cur_seq_[b]; }
  uint64_t stable_seq(uint64_t b) const { return stable_seq_[b]; }
  uint64_t blocks() const { return cur_seq_.size(); }

 private:
  struct Entry {
    uint64_t lba, n, seq;
    std::vector<uint8_t> data;  // empty: zeros
  };
  void apply(std::vector<uint8_t>& img, std::vector<uint64_t>& seqs, const Entry& e) const {
    uint8_t* dst = img.data() + e.lba * bs_;
    if (e.data.empty()) {
      std::memset(dst, 0, e.n * bs_);
    } else {
      std::memcpy(dst, e.data.data(), e.n * bs_);
    }
    std::fill(seqs.begin() + e.lba, seqs.begin() + e.lba + e.n, e.seq);
  }

  uint32_t bs_;
  std::vector<uint8_t> cur_, stable_;
  std::vector<uint64_t> cur_seq_, stable_seq_;
  std::vector<Entry> log_;
};

// A RegionStore in memory: writes are volatile until sync(); crash() keeps stable bytes plus
// a random subset of unsynced writes (each write whole: entries are 8-byte aligned).
class SimRegionStore final : public backend::repl::RegionStore {
 public:
  backend::repl::RegionResult<void> read(uint64_t offset, std::span<uint8_t> out) override {
    for (size_t i = 0; i < out.size(); ++i) {
      out[i] = offset + i < cur_.size() ? cur_[offset + i] : 0;
    }
    return {};
  }
  backend::repl::RegionResult<void> write(uint64_t offset, std::span<const uint8_t> data) override {
    put(cur_, offset, data);
    log_.emplace_back(offset, std::vector<uint8_t>(data.begin(), data.end()));
    return {};
  }
  backend::repl::RegionResult<void> sync() override {
    for (auto& [off, bytes] : log_) put(stable_, off, bytes);
    log_.clear();
    return {};
  }
  void crash(Rng& rng) {
    for (auto& [off, bytes] : log_) {
      if (rng.chance(50)) put(stable_, off, bytes);
    }
    log_.clear();
    cur_ = stable_;
  }

 private:
  static void put(std::vector<uint8_t>& img, uint64_t off, std::span<const uint8_t> data) {
    if (img.size() < off + data.size()) img.resize(off + data.size(), 0);
    std::copy(data.begin(), data.end(), img.begin() + off);
  }
  std::vector<uint8_t> cur_, stable_;
  std::vector<std::pair<uint64_t, std::vector<uint8_t>>> log_;
};

}  // namespace tandem::sim
