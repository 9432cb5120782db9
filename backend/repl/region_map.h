// RegionMap: per-copy change tracking for delta sync. The volume is cut into regions (a
// power of two, block size .. 1 MiB); each region records the sequence number of the last
// write that changed it. One owner (the copy's replication strand or its I/O thread); not
// thread-safe. The RegionStore passed in must outlive the map. Store I/O is blocking: call
// mark()/assign()/checkpoint() off the network threads.
//
// Persistence, crash-safe without an fsync per write (md's write-intent bitmap, plus seqs):
//  * The file holds a header and one u64 entry per region. An entry is either CLEAN (bit 63
//    clear: the region's exact last-write seq, and its data is stable) or DIRTY (bit 63 set:
//    the region may hold data newer than anything recorded).
//  * mark()/assign() are write-ahead: before they return, every region they touch is DIRTY
//    on stable storage (one pwrite + one fdatasync, and only when a region turns from clean
//    to dirty; a region that is already dirty costs no I/O). The caller issues the data
//    write only after mark() returned ok.
//  * Mark groups (set_mark_group): when a write first dirties a region, every clean region of
//    its aligned group is written DIRTY in the same pwrite and fdatasync, so a writer that
//    scatters small writes over a volume pays one sync per group, not one per region (DRBD's
//    activity log works in 4 MiB extents for the same reason). Extra DIRTY entries only make
//    recovery report more regions unknown (compared at resync, never missed), and checkpoint
//    cleans the untouched ones again, so the argument below is unchanged.
//  * checkpoint(d) runs after the data store's fdatasync: it rewrites as CLEAN the dirty
//    regions whose writes all have tickets <= d (so their data is stable) and that were not
//    touched since the previous checkpoint (hot regions stay dirty, so they never pay the
//    clean->dirty sync again), then syncs. Clean entries are written only with exact values.
//  * Recovery (open): CLEAN entries give their seq; DIRTY ones become kUnknownSeq.
// Argument: take any region r and any crash. If r's last write w reached the data store,
// mark(w) returned first, so a DIRTY entry for r was stable before w was issued. That entry
// can only be replaced by a CLEAN one written by a checkpoint(d) with ticket(r) <= d, i.e.
// after w was stable and with seq(r) exactly w's seq (or the seq of a later write, which in
// turn was preceded by its own stable DIRTY entry). Each 8-byte aligned entry is assumed to
// be written atomically (it lies within one sector). So after recovery r is either unknown
// or holds exactly the seq of its last stable write: regions_changed_since(s) is a superset
// of the truly changed regions for every s, and diff() never misses a region. Over-sending
// (hot regions after a crash) is the price. A torn or missing header fails open() with
// kCorrupt: the caller re-creates the map with all regions unknown (full resync).
//
// Sequence numbers are < 2^63 and must never repeat for different data within a volume's
// history (e.g. a new master continues above every sequence any copy may have applied), so
// equal seqs mean equal region contents.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "core/result.h"

namespace tandem::backend::repl {

enum class RegionErrc { kIo, kCorrupt, kGeometry, kInvalid };
using RegionError = core::Error<RegionErrc>;
template <class T>
using RegionResult = core::Result<T, RegionError>;

// A region whose contents are not known (crash while dirty, or lost map): always resynced.
inline constexpr uint64_t kUnknownSeq = ~uint64_t{0};
inline constexpr uint64_t kMaxSeq = (uint64_t{1} << 63) - 1;
inline constexpr uint32_t kMinRegionShift = 9;   // 512 bytes
inline constexpr uint32_t kMaxRegionShift = 20;  // 1 MiB
inline constexpr uint32_t kDefaultRegionShift = 20;
// Bytes of volume a first write dirties together (see set_mark_group); a crash leaves at most
// this much unknown around each region written since the last checkpoint.
inline constexpr uint64_t kDefaultMarkGroupBytes = uint64_t{64} << 20;

// The byte range seam under the map file, so tests can inject crashes (LevelDB Env-style).
class RegionStore {
 public:
  virtual ~RegionStore() = default;
  // Exactly out.size() bytes at offset; bytes beyond the end of the store read as zeros.
  virtual RegionResult<void> read(uint64_t offset, std::span<uint8_t> out) = 0;
  virtual RegionResult<void> write(uint64_t offset, std::span<const uint8_t> data) = 0;
  // Every write that returned before this call is stable when it returns ok (fdatasync).
  virtual RegionResult<void> sync() = 0;
};

// A RegionStore over one file (pread/pwrite/fdatasync). Owns the descriptor.
class FileRegionStore final : public RegionStore {
 public:
  // Opens, creating the file if missing.
  static RegionResult<std::unique_ptr<FileRegionStore>> open(const std::string& path);
  ~FileRegionStore() override;
  FileRegionStore(const FileRegionStore&) = delete;
  FileRegionStore& operator=(const FileRegionStore&) = delete;

  RegionResult<void> read(uint64_t offset, std::span<uint8_t> out) override;
  RegionResult<void> write(uint64_t offset, std::span<const uint8_t> data) override;
  RegionResult<void> sync() override;

 private:
  FileRegionStore(int fd, std::string path) : fd_(fd), path_(std::move(path)) {}
  int fd_;
  std::string path_;
};

struct RegionGeometry {
  uint64_t volume_bytes = 0;                    // a whole number of blocks, > 0
  uint32_t block_size = 512;                    // power of two, 512..region size
  uint32_t region_shift = kDefaultRegionShift;  // region size = 1 << shift, 9..20

  bool operator==(const RegionGeometry&) const = default;
};

struct RegionSeq {
  uint64_t region = 0;
  uint64_t seq = 0;
  bool operator==(const RegionSeq&) const = default;
};

class RegionMap {
 public:
  // Not persisted (the remote side of a diff, built from a REGION_SUMMARY; or a test).
  static RegionResult<RegionMap> in_memory(const RegionGeometry& g);
  static RegionResult<RegionMap> from_summary(const RegionGeometry& g,
                                              std::span<const RegionSeq> entries);
  // A new map file: every region at seq 0 (never written: a fresh sparse copy reads as
  // zeros), or unknown when `all_unknown` (a copy whose map was lost: full resync).
  static RegionResult<RegionMap> create(RegionStore* store, const RegionGeometry& g,
                                        bool all_unknown = false);
  // After a restart or crash. kCorrupt: header torn/missing; kGeometry: not this volume.
  static RegionResult<RegionMap> open(RegionStore* store, const RegionGeometry& g);

  const RegionGeometry& geometry() const { return geo_; }
  uint64_t region_count() const { return seq_.size(); }
  uint64_t region_bytes() const { return uint64_t{1} << geo_.region_shift; }
  uint64_t region_of(uint64_t lba) const;
  // The blocks region r covers (the last region may be short).
  uint64_t first_lba(uint64_t region) const;
  uint64_t blocks_in(uint64_t region) const;
  // Regions that turn dirty together: a power of two (others are rounded down), 1 = none.
  // Call before the first mark()/assign(); not persisted.
  void set_mark_group(uint64_t regions);
  uint64_t mark_group() const { return group_; }
  // kDefaultMarkGroupBytes worth of regions of g (at least 1).
  static uint64_t default_mark_group(const RegionGeometry& g);
  // kUnknownSeq when unknown; region must be < region_count().
  uint64_t seq_of(uint64_t region) const { return seq_.at(region); }
  bool unknown(uint64_t region) const { return seq_.at(region) == kUnknownSeq; }

  // Write-ahead: records that write `seq` (<= kMaxSeq) changes blocks [lba, lba+blocks).
  // Returns once the touched regions are durably dirty; only then issue the data write.
  // Regions keep the highest seq marked; an unknown region becomes known only when the
  // write covers all of it. On error nothing is recorded: fail the write.
  RegionResult<void> mark(uint64_t lba, uint64_t blocks, uint64_t seq);
  // Resync: region r is about to be overwritten with the master's region at `seq` (or
  // kUnknownSeq while a transfer is in progress). Write-ahead like mark(). `ticket` is a
  // sequence whose durability implies this write's (normally the highest seq issued so far
  // on this copy): checkpoint(d) cleans r only when ticket <= d.
  RegionResult<void> assign(uint64_t region, uint64_t seq, uint64_t ticket);
  // Call after an fdatasync of the data store that covered every write with seq/ticket
  // <= durable. `everything`: also clean regions touched since the last checkpoint (clean
  // shutdown); otherwise hot regions stay dirty. No-op I/O for in-memory maps.
  RegionResult<void> checkpoint(uint64_t durable, bool everything = false);
  // The volume grew (never shrinks). New regions are at seq 0.
  RegionResult<void> grow(uint64_t new_volume_bytes);

  // Regions with seq > s (unknown regions are always included), ascending.
  std::vector<uint64_t> regions_changed_since(uint64_t s) const;
  // Regions a sync from this map (the master) to `remote` must send: seqs differ, or either
  // side is unknown. kGeometry if the maps cover different volumes/region sizes.
  RegionResult<std::vector<uint64_t>> diff(const RegionMap& remote) const;
  // Bytes those regions hold (the "remaining difference" used to pick which of two syncing
  // replicas to keep: the smaller one wins).
  RegionResult<uint64_t> bytes_behind(const RegionMap& remote) const;
  // Non-zero entries (unknown included), ascending: the REGION_SUMMARY payload.
  std::vector<RegionSeq> summary() const;
  // Regions durably dirty right now (for metrics / tests).
  uint64_t dirty_on_disk() const { return dirty_list_.size(); }
  // After any store error the map refuses further changes (kIo): after a failed fdatasync
  // the kernel may have dropped pages, so nothing written since can be trusted. Reopen the
  // map (recovery turns dirty regions unknown) once the store is healthy again.
  bool failed() const { return failed_; }

 private:
  RegionMap(RegionStore* store, const RegionGeometry& g, uint64_t count);
  RegionResult<void> persist_dirty(uint64_t r0, uint64_t r1);
  RegionResult<void> write_entries(uint64_t first, std::span<const uint64_t> values);
  RegionResult<void> write_header();
  RegionResult<void> io(RegionResult<void> r);
  void touch(uint64_t r);

  RegionStore* store_;  // null: in memory only
  RegionGeometry geo_;
  std::vector<uint64_t> seq_;
  std::vector<uint64_t> ticket_;
  std::vector<uint8_t> flags_;          // kDiskDirty | kTouched
  std::vector<uint64_t> dirty_list_;    // regions with kDiskDirty
  std::vector<uint64_t> touched_list_;  // regions with kTouched
  uint64_t group_ = 1;
  bool failed_ = false;
};

}  // namespace tandem::backend::repl
