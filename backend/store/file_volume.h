// FileVolume: a BlockVolume backed by one sparse file on this node (a volume with no
// replicas, and later the local copy under a replicated master). Blocking calls run on the
// shared IoPool; callbacks run on pool threads. COMPARE AND WRITE is atomic against every
// other write of this volume (an exclusive range lock over the whole volume; writes take it
// shared). The IoPool must outlive the volume; the volume must outlive its in-flight I/O
// (hold it by shared_ptr: jobs keep a reference). Inside a core::InlineCompletionScope, a
// read of at most kInlineReadMax bytes that the page cache holds entirely completes inside
// the call (preadv2 RWF_NOWAIT), but only while no job of this volume waits in or runs on
// the pool, so completions keep their order.
#pragma once

#include <atomic>
#include <memory>
#include <shared_mutex>
#include <string>

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

  void set_state(core::VolumeState s) { state_.store(s, std::memory_order_release); }
  // After the file was grown (FileStore::grow), publish the new capacity.
  void refresh_capacity();

 private:
  FileVolume(int fd, std::string uuid, uint32_t block_size, IoPool& pool);
  bool in_range(uint64_t lba, uint64_t blocks) const;
  core::IoResult pwrite_all(uint64_t off, std::span<const std::byte> data, bool fua);
  // Runs job on the pool, counted in pool_jobs_ until it has run.
  void post(std::function<void()> job);
  bool try_inline_read(uint64_t off, std::span<std::byte> out);

  int fd_;
  std::string uuid_;
  uint32_t block_size_;
  std::atomic<uint64_t> blocks_{0};
  std::atomic<core::VolumeState> state_{core::VolumeState::kHealthy};
  IoPool& pool_;
  std::shared_mutex caw_mu_;
  std::atomic<uint64_t> pool_jobs_{0};  // posted and not yet finished
};

}  // namespace tandem::backend
