#include "backend/repl/region_map.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>

#include "core/crc32c.h"

namespace tandem::backend::repl {
namespace {

using core::fail;

constexpr uint64_t kHeaderBytes = 4096;             // entries start on their own page
constexpr uint64_t kMagic = 0x50414D524D444E54ull;  // "TNDMRMAP"
constexpr uint32_t kFormatVersion = 1;
constexpr size_t kHeaderCrcOffset = 40;
constexpr uint64_t kDirtyBit = uint64_t{1} << 63;
constexpr uint8_t kDiskDirty = 1;
constexpr uint8_t kTouched = 2;
constexpr size_t kChunkEntries = 8192;  // 64 KiB per store call when streaming entries

RegionError err(RegionErrc code, std::string message) {
  return RegionError{code, std::move(message)};
}

void put32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = uint8_t(v >> (8 * i));
}
void put64(uint8_t* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = uint8_t(v >> (8 * i));
}
uint32_t get32(const uint8_t* p) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = v << 8 | p[i];
  return v;
}
uint64_t get64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = v << 8 | p[i];
  return v;
}

bool is_pow2(uint64_t v) { return v != 0 && (v & (v - 1)) == 0; }

RegionResult<uint64_t> region_count_for(const RegionGeometry& g) {
  if (g.region_shift < kMinRegionShift || g.region_shift > kMaxRegionShift) {
    return fail(err(RegionErrc::kInvalid, "region size must be 512 B .. 1 MiB"));
  }
  if (!is_pow2(g.block_size) || g.block_size < 512 ||
      g.block_size > (uint64_t{1} << g.region_shift)) {
    return fail(err(RegionErrc::kInvalid, "block size must be a power of two <= region"));
  }
  if (g.volume_bytes == 0 || g.volume_bytes % g.block_size != 0 ||
      g.volume_bytes > (uint64_t{1} << 62)) {
    return fail(err(RegionErrc::kInvalid, "volume size must be a whole number of blocks"));
  }
  const uint64_t rb = uint64_t{1} << g.region_shift;
  return (g.volume_bytes + rb - 1) / rb;
}

uint64_t entry_offset(uint64_t region) { return kHeaderBytes + region * 8; }

}  // namespace

// ---- FileRegionStore ----

RegionResult<std::unique_ptr<FileRegionStore>> FileRegionStore::open(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return fail(err(RegionErrc::kIo, path + ": " + std::strerror(errno)));
  return std::unique_ptr<FileRegionStore>(new FileRegionStore(fd, path));
}

FileRegionStore::~FileRegionStore() { ::close(fd_); }

RegionResult<void> FileRegionStore::read(uint64_t offset, std::span<uint8_t> out) {
  size_t done = 0;
  while (done < out.size()) {
    const ssize_t n = ::pread(fd_, out.data() + done, out.size() - done, off_t(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return fail(err(RegionErrc::kIo, path_ + ": read: " + std::strerror(errno)));
    if (n == 0) {  // past the end: zeros
      std::memset(out.data() + done, 0, out.size() - done);
      break;
    }
    done += size_t(n);
  }
  return {};
}

RegionResult<void> FileRegionStore::write(uint64_t offset, std::span<const uint8_t> data) {
  size_t done = 0;
  while (done < data.size()) {
    const ssize_t n = ::pwrite(fd_, data.data() + done, data.size() - done, off_t(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return fail(err(RegionErrc::kIo, path_ + ": write: " + std::strerror(errno)));
    done += size_t(n);
  }
  return {};
}

RegionResult<void> FileRegionStore::sync() {
  if (::fdatasync(fd_) != 0) {
    return fail(err(RegionErrc::kIo, path_ + ": fdatasync: " + std::strerror(errno)));
  }
  return {};
}

// ---- RegionMap ----

RegionMap::RegionMap(RegionStore* store, const RegionGeometry& g, uint64_t count)
    : store_(store), geo_(g), seq_(count, 0), ticket_(count, 0), flags_(count, 0) {}

RegionResult<RegionMap> RegionMap::in_memory(const RegionGeometry& g) {
  auto count = region_count_for(g);
  if (!count) return fail(count.error());
  return RegionMap(nullptr, g, *count);
}

RegionResult<RegionMap> RegionMap::from_summary(const RegionGeometry& g,
                                                std::span<const RegionSeq> entries) {
  auto map = in_memory(g);
  if (!map) return map;
  for (const RegionSeq& e : entries) {
    if (e.region >= map->region_count() || (e.seq > kMaxSeq && e.seq != kUnknownSeq)) {
      return fail(err(RegionErrc::kInvalid, "summary entry out of range"));
    }
    map->seq_[e.region] = e.seq;
  }
  return map;
}

RegionResult<void> RegionMap::write_header() {
  uint8_t h[64] = {};
  put64(h, kMagic);
  put32(h + 8, kFormatVersion);
  put32(h + 12, geo_.region_shift);
  put32(h + 16, geo_.block_size);
  put64(h + 24, geo_.volume_bytes);
  put64(h + 32, region_count());
  put32(h + kHeaderCrcOffset, core::crc32c(std::span<const uint8_t>(h, kHeaderCrcOffset)));
  return store_->write(0, h);
}

RegionResult<void> RegionMap::write_entries(uint64_t first, std::span<const uint64_t> values) {
  std::vector<uint8_t> buf(std::min(values.size(), kChunkEntries) * 8);
  for (size_t done = 0; done < values.size();) {
    const size_t n = std::min(values.size() - done, kChunkEntries);
    for (size_t i = 0; i < n; ++i) put64(buf.data() + i * 8, values[done + i]);
    auto w = store_->write(entry_offset(first + done), std::span<const uint8_t>(buf.data(), n * 8));
    if (!w) return w;
    done += n;
  }
  return {};
}

RegionResult<RegionMap> RegionMap::create(RegionStore* store, const RegionGeometry& g,
                                          bool all_unknown) {
  auto count = region_count_for(g);
  if (!count) return fail(count.error());
  RegionMap map(store, g, *count);
  // Entries first, header last: a crash in between leaves no valid header (kCorrupt).
  std::vector<uint64_t> values(*count, all_unknown ? kDirtyBit : 0);
  if (auto w = map.write_entries(0, values); !w) return fail(w.error());
  if (auto s = store->sync(); !s) return fail(s.error());
  if (auto w = map.write_header(); !w) return fail(w.error());
  if (auto s = store->sync(); !s) return fail(s.error());
  if (all_unknown) {
    for (uint64_t r = 0; r < *count; ++r) {
      map.seq_[r] = kUnknownSeq;
      map.flags_[r] = kDiskDirty;
      map.dirty_list_.push_back(r);
    }
  }
  return map;
}

RegionResult<RegionMap> RegionMap::open(RegionStore* store, const RegionGeometry& g) {
  auto count = region_count_for(g);
  if (!count) return fail(count.error());
  uint8_t h[64];
  if (auto r = store->read(0, h); !r) return fail(r.error());
  if (get64(h) != kMagic || get32(h + 8) != kFormatVersion ||
      core::crc32c(std::span<const uint8_t>(h, kHeaderCrcOffset)) != get32(h + kHeaderCrcOffset)) {
    return fail(err(RegionErrc::kCorrupt, "region map header missing or torn"));
  }
  RegionGeometry on_disk{get64(h + 24), get32(h + 16), get32(h + 12)};
  if (!(on_disk == g) || get64(h + 32) != *count) {
    return fail(err(RegionErrc::kGeometry, "region map describes another geometry"));
  }
  RegionMap map(store, g, *count);
  std::vector<uint8_t> buf(std::min<uint64_t>(*count, kChunkEntries) * 8);
  for (uint64_t done = 0; done < *count;) {
    const size_t n = size_t(std::min<uint64_t>(*count - done, kChunkEntries));
    if (auto r = store->read(entry_offset(done), std::span<uint8_t>(buf.data(), n * 8)); !r) {
      return fail(r.error());
    }
    for (size_t i = 0; i < n; ++i) {
      const uint64_t v = get64(buf.data() + i * 8);
      const uint64_t r = done + i;
      if (v & kDirtyBit) {
        map.seq_[r] = kUnknownSeq;
        map.flags_[r] = kDiskDirty;
        map.dirty_list_.push_back(r);
      } else {
        map.seq_[r] = v;
      }
    }
    done += n;
  }
  return map;
}

uint64_t RegionMap::region_of(uint64_t lba) const {
  return (lba * geo_.block_size) >> geo_.region_shift;
}

uint64_t RegionMap::first_lba(uint64_t region) const {
  return (region << geo_.region_shift) / geo_.block_size;
}

uint64_t RegionMap::blocks_in(uint64_t region) const {
  const uint64_t start = region << geo_.region_shift;
  if (start >= geo_.volume_bytes) return 0;
  return std::min(region_bytes(), geo_.volume_bytes - start) / geo_.block_size;
}

RegionResult<void> RegionMap::io(RegionResult<void> r) {
  if (!r) failed_ = true;
  return r;
}

void RegionMap::touch(uint64_t r) {
  if (!(flags_[r] & kTouched)) {
    flags_[r] |= kTouched;
    touched_list_.push_back(r);
  }
}

void RegionMap::set_mark_group(uint64_t regions) {
  group_ = std::bit_floor(std::max<uint64_t>(regions, 1));
}

uint64_t RegionMap::default_mark_group(const RegionGeometry& g) {
  return std::max<uint64_t>(kDefaultMarkGroupBytes >> g.region_shift, 1);
}

RegionResult<void> RegionMap::persist_dirty(uint64_t r0, uint64_t r1) {
  if (!store_) return {};
  bool all_dirty = true;
  for (uint64_t r = r0; r <= r1 && all_dirty; ++r) all_dirty = (flags_[r] & kDiskDirty) != 0;
  if (all_dirty) return {};
  // A sync is due anyway: the clean regions of the touched groups ride along.
  r0 &= ~(group_ - 1);
  r1 = std::min<uint64_t>(r1 | (group_ - 1), region_count() - 1);
  bool wrote = false;
  std::vector<uint64_t> run;
  uint64_t run_start = 0;
  auto flush_run = [&]() -> RegionResult<void> {
    if (run.empty()) return {};
    auto w = io(write_entries(run_start, run));
    run.clear();
    wrote = true;
    return w;
  };
  for (uint64_t r = r0; r <= r1; ++r) {
    if (flags_[r] & kDiskDirty) {
      if (auto f = flush_run(); !f) return f;
      continue;
    }
    if (run.empty()) run_start = r;
    run.push_back(kDirtyBit | (seq_[r] & kMaxSeq));
  }
  if (auto f = flush_run(); !f) return f;
  if (!wrote) return {};
  if (auto s = io(store_->sync()); !s) return s;
  // Only now are they durably dirty; on any failure above nothing was flagged, so the next
  // attempt writes them again.
  for (uint64_t r = r0; r <= r1; ++r) {
    if (!(flags_[r] & kDiskDirty)) {
      flags_[r] |= kDiskDirty;
      dirty_list_.push_back(r);
    }
  }
  return {};
}

RegionResult<void> RegionMap::mark(uint64_t lba, uint64_t blocks, uint64_t seq) {
  if (failed_) return fail(err(RegionErrc::kIo, "region map failed earlier; reopen it"));
  const uint64_t volume_blocks = geo_.volume_bytes / geo_.block_size;
  if (blocks == 0 || lba >= volume_blocks || blocks > volume_blocks - lba) {
    return fail(err(RegionErrc::kInvalid, "block range outside the volume"));
  }
  if (seq > kMaxSeq) return fail(err(RegionErrc::kInvalid, "sequence out of range"));
  const uint64_t r0 = region_of(lba);
  const uint64_t r1 = region_of(lba + blocks - 1);
  if (auto p = persist_dirty(r0, r1); !p) return p;
  for (uint64_t r = r0; r <= r1; ++r) {
    if (seq_[r] == kUnknownSeq) {
      // Only a write over the whole region makes its contents known again.
      const uint64_t start = first_lba(r), end = start + blocks_in(r);
      if (lba <= start && lba + blocks >= end) seq_[r] = seq;
    } else {
      seq_[r] = std::max(seq_[r], seq);
    }
    ticket_[r] = std::max(ticket_[r], seq);
    touch(r);
  }
  return {};
}

RegionResult<void> RegionMap::assign(uint64_t region, uint64_t seq, uint64_t ticket) {
  if (failed_) return fail(err(RegionErrc::kIo, "region map failed earlier; reopen it"));
  if (region >= region_count()) return fail(err(RegionErrc::kInvalid, "no such region"));
  if (seq > kMaxSeq && seq != kUnknownSeq) {
    return fail(err(RegionErrc::kInvalid, "sequence out of range"));
  }
  if (auto p = persist_dirty(region, region); !p) return p;
  seq_[region] = seq;
  ticket_[region] = std::max(ticket_[region], ticket);
  touch(region);
  return {};
}

RegionResult<void> RegionMap::checkpoint(uint64_t durable, bool everything) {
  if (failed_) return fail(err(RegionErrc::kIo, "region map failed earlier; reopen it"));
  RegionResult<void> result;
  if (store_) {
    std::vector<uint64_t> clean;
    for (uint64_t r : dirty_list_) {
      if (seq_[r] == kUnknownSeq || ticket_[r] > durable) continue;
      if ((flags_[r] & kTouched) && !everything) continue;  // hot: leave it dirty
      clean.push_back(r);
    }
    std::sort(clean.begin(), clean.end());
    std::vector<uint64_t> values;
    bool ok = true;
    for (size_t i = 0; i < clean.size() && ok;) {
      size_t j = i;
      values.clear();
      while (j < clean.size() && clean[j] == clean[i] + (j - i)) values.push_back(seq_[clean[j++]]);
      if (auto w = io(write_entries(clean[i], values)); !w) {
        result = w;
        ok = false;
        break;
      }
      // Safe before the sync: until a later mark() makes it dirty again, the entry on disk
      // is either the old DIRTY one or the exact CLEAN one; mark() re-dirties with a sync.
      for (size_t k = i; k < j; ++k) flags_[clean[k]] &= uint8_t(~kDiskDirty);
      i = j;
    }
    std::erase_if(dirty_list_, [&](uint64_t r) { return !(flags_[r] & kDiskDirty); });
    if (ok && !clean.empty()) {
      if (auto s = io(store_->sync()); !s) result = s;
    }
  }
  for (uint64_t r : touched_list_) flags_[r] &= uint8_t(~kTouched);
  touched_list_.clear();
  return result;
}

RegionResult<void> RegionMap::grow(uint64_t new_volume_bytes) {
  RegionGeometry g = geo_;
  g.volume_bytes = new_volume_bytes;
  auto count = region_count_for(g);
  if (!count) return fail(count.error());
  if (new_volume_bytes < geo_.volume_bytes) {
    return fail(err(RegionErrc::kInvalid, "volumes never shrink"));
  }
  if (failed_) return fail(err(RegionErrc::kIo, "region map failed earlier; reopen it"));
  const uint64_t old = region_count();
  if (store_) {
    std::vector<uint64_t> zeros(*count - old, 0);
    if (auto w = io(write_entries(old, zeros)); !w) return w;
    if (auto s = io(store_->sync()); !s) return s;
  }
  seq_.resize(*count, 0);
  ticket_.resize(*count, 0);
  flags_.resize(*count, 0);
  geo_ = g;
  if (store_) {
    if (auto w = io(write_header()); !w) return w;
    if (auto s = io(store_->sync()); !s) return s;
  }
  return {};
}

std::vector<uint64_t> RegionMap::regions_changed_since(uint64_t s) const {
  std::vector<uint64_t> out;
  for (uint64_t r = 0; r < seq_.size(); ++r) {
    if (seq_[r] > s) out.push_back(r);
  }
  return out;
}

RegionResult<std::vector<uint64_t>> RegionMap::diff(const RegionMap& remote) const {
  if (remote.geo_.region_shift != geo_.region_shift || remote.geo_.block_size != geo_.block_size ||
      remote.geo_.volume_bytes != geo_.volume_bytes) {
    return fail(err(RegionErrc::kGeometry, "maps of different geometry"));
  }
  std::vector<uint64_t> out;
  for (uint64_t r = 0; r < seq_.size(); ++r) {
    const uint64_t a = seq_[r], b = remote.seq_[r];
    if (a != b || a == kUnknownSeq) out.push_back(r);
  }
  return out;
}

RegionResult<uint64_t> RegionMap::bytes_behind(const RegionMap& remote) const {
  auto regions = diff(remote);
  if (!regions) return fail(regions.error());
  uint64_t bytes = 0;
  for (uint64_t r : *regions) bytes += blocks_in(r) * geo_.block_size;
  return bytes;
}

std::vector<RegionSeq> RegionMap::summary() const {
  std::vector<RegionSeq> out;
  for (uint64_t r = 0; r < seq_.size(); ++r) {
    if (seq_[r] != 0) out.push_back({r, seq_[r]});
  }
  return out;
}

}  // namespace tandem::backend::repl
