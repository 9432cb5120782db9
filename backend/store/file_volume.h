// FileVolume: a BlockVolume backed by one sparse file on this node (a volume with no
// replicas, and later the local copy under a replicated master). Blocking calls run on the
// shared IoPool; callbacks run on pool threads. COMPARE AND WRITE is atomic against every
// other write of this volume (an exclusive range lock over the whole volume; writes take it
// shared). The IoPool must outlive the volume; the volume must outlive its in-flight I/O
// (hold it by shared_ptr: jobs keep a reference). Inside a core::InlineCompletionScope, a
// read of at most kInlineReadMax bytes that the page cache holds entirely completes inside
// the call (preadv2 RWF_NOWAIT), and so does a page-aligned write of at most kInlineWriteMax
// without FUA (a plain pwrite into the page cache), but only while no job of this volume waits
// in or runs on the pool on overlapping blocks, so I/O to the same blocks keeps its order. An
// inline write that takes longer than InlineWritePolicy::stall_bound (writeback throttling) sends
// this volume's writes to the pool for InlineWritePolicy::back_off, so a throttled file cannot hold
// a network thread long.
#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <vector>

#include "backend/store/io_pool.h"
#include "core/block_volume.h"

namespace tandem::backend {

class FileVolume : public core::BlockVolume, public std::enable_shared_from_this<FileVolume> {
 public:
  // Opens an existing image file. Returns nullptr (and errno set) when it cannot.
  static std::shared_ptr<FileVolume> open(const std::string& path, std::string uuid,
                                          uint32_t block_size, IoPool& pool);
  ~FileVolume() override;

  const std::string& uuid() const override { return uuid_; }
  uint32_t block_size() const override { return block_size_; }
  uint64_t block_count() const override { return blocks_.load(std::memory_order_acquire); }
  core::VolumeState state() const override { return state_.load(std::memory_order_acquire); }

  void read(uint64_t lba, std::span<std::byte> out, Done done) override;
  void write(uint64_t lba, std::span<const std::byte> data, bool fua, Done done) override;
  void flush(Done done) override;
  void unmap(uint64_t lba, uint64_t blocks, Done done) override;
  void compare_and_write(uint64_t lba, std::span<const std::byte> compare,
                         std::span<const std::byte> data, bool fua, Done done) override;
  void lba_status(uint64_t lba, uint64_t max_blocks, ExtentsDone done) override;

  static constexpr size_t kInlineReadMax = 128 * 1024;  // bounds a network thread's turn

  // Writes on the calling thread, no pool hop: a replica applies a small write where its
  // frame was read, since a page-cache copy of a few KiB costs less than two thread hand-offs.
  // Same checks as write(); no FUA (a sync does not belong on a network thread). The caller
  // orders it against its own pool I/O (the replica engine never overlaps two writes).
  [[nodiscard]] core::IoResult write_now(uint64_t lba, std::span<const std::byte> data);
  static constexpr size_t kInlineWriteMax = 64 * 1024;  // bounds a network thread's turn
  // Longest single pwrite, ending on a multiple of itself in the file. The kernel sizes the
  // page-cache folios a write creates by that write's length (ext4, 6.x), and a later 4 KiB
  // write into a 1 MiB folio walks all of its 256 buffer heads: 16-21 us against 3 us for a
  // 64 KiB folio on this VM. Small random writes after large ones are the common case.
  static constexpr size_t kWriteChunk = 64 * 1024;

  // When write() may complete inline (see the header comment). A page-cache copy of 64 KiB
  // takes tens of microseconds; writeback throttling (balance_dirty_pages) sleeps for tens to
  // 200 ms at a time. The bound sits between them, above the few-ms spikes a loaded machine
  // shows anyway (a preempted thread, a journal commit): on the 2-core bench box under load,
  // a 1 ms bound tripped about once a second and kept writes off the inline path over half of
  // the time. After 1 s writeback has usually caught up.
  struct InlineWritePolicy {
    std::chrono::nanoseconds stall_bound = std::chrono::milliseconds(10);
    std::chrono::nanoseconds back_off = std::chrono::seconds(1);
  };
  void set_inline_write_policy(InlineWritePolicy p);
  // Inline writes (write() or write_now()) that exceeded the stall bound, since open.
  uint64_t inline_write_stalls() const { return stalls_.load(std::memory_order_relaxed); }
  // The same, summed over every FileVolume of this process (for /metrics).
  static uint64_t inline_write_stalls_total();

  void set_state(core::VolumeState s) { state_.store(s, std::memory_order_release); }
  // After the file was grown (FileStore::grow), publish the new capacity.
  void refresh_capacity();

 private:
  FileVolume(int fd, std::string uuid, uint32_t block_size, IoPool& pool);
  bool in_range(uint64_t lba, uint64_t blocks) const;
  core::IoResult pwrite_all(uint64_t off, std::span<const std::byte> data, bool fua);
  // The blocks a pool job reads or changes; none for a flush or a status query, which no
  // read or write can overtake in a way that matters.
  struct JobRange {
    uint64_t lba = 0;
    uint64_t blocks = 0;
    bool writes = false;
    bool operator==(const JobRange&) const = default;
  };
  // Runs job on the pool; its range stays in pending_ until the job (and so its completion)
  // has run.
  void post(JobRange range, std::function<void()> job);
  // Whether an inline read (writes = false) or write of these blocks could overtake, or be
  // overtaken by, a job on the pool: one that overlaps them, where either side writes.
  bool conflicts_with_pool(uint64_t lba, uint64_t blocks, bool writes);
  bool try_inline_read(uint64_t off, std::span<std::byte> out);
  // Refusal of a write by state or range; nullopt when it may go ahead.
  std::optional<core::IoResult> refuse_write(uint64_t lba, size_t bytes) const;
  // The pwrite on the calling thread, timed against the stall bound; caw_mu_ held shared.
  core::IoResult write_here(uint64_t lba, std::span<const std::byte> data);
  std::optional<core::IoResult> try_inline_write(uint64_t lba, std::span<const std::byte> data,
                                                 bool fua);

  int fd_;
  std::string uuid_;
  uint32_t block_size_;
  std::atomic<uint64_t> blocks_{0};
  std::atomic<core::VolumeState> state_{core::VolumeState::kHealthy};
  IoPool& pool_;
  std::shared_mutex caw_mu_;
  std::atomic<uint64_t> pool_jobs_{0};  // entries in pending_ (none: no need to lock)
  std::mutex pending_mu_;
  std::vector<JobRange> pending_;  // at most the jobs in flight: a linear scan
  std::atomic<int64_t> stall_bound_ns_;
  std::atomic<int64_t> back_off_ns_;
  std::atomic<int64_t> inline_writes_from_ns_{0};  // steady_clock; paused until then
  std::atomic<uint64_t> stalls_{0};
};

}  // namespace tandem::backend
