// FakeVolume: an in-memory core::BlockVolume for the SCSI unit tests. Completes inline by
// default, or queues completions (set_async) for run_pending(). Records unmaps, FUA writes
// and flushes, and can fail the next I/O with a chosen IoStatus. Single-threaded use only.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "core/block_volume.h"

namespace tandem::target::scsi::testing {

class FakeVolume : public core::BlockVolume {
 public:
  FakeVolume(std::string uuid, uint32_t block_size, uint64_t block_count);

  const std::string& uuid() const override { return uuid_; }
  uint32_t block_size() const override { return block_size_; }
  uint64_t block_count() const override { return block_count_; }
  core::VolumeState state() const override { return state_; }

  void read(uint64_t lba, std::span<std::byte> out, Done done) override;
  void write(uint64_t lba, std::span<const std::byte> data, bool fua, Done done) override;
  void flush(Done done) override;
  void unmap(uint64_t lba, uint64_t blocks, Done done) override;
  void compare_and_write(uint64_t lba, std::span<const std::byte> compare,
                         std::span<const std::byte> data, bool fua, Done done) override;
  void lba_status(uint64_t lba, uint64_t max_blocks, ExtentsDone done) override;

  void set_state(core::VolumeState s) { state_ = s; }
  void set_block_count(uint64_t n);
  void fail_next(core::IoStatus s) { fail_next_ = s; }
  void set_async(bool a) { async_ = a; }
  // Runs queued completions (async mode) until none is left; returns how many ran.
  size_t run_pending();

  std::vector<std::byte>& bytes() { return data_; }
  bool mapped(uint64_t lba) const { return mapped_.at(lba); }
  void fill(uint64_t lba, uint64_t blocks, uint8_t value);

  int writes = 0;
  int fua_writes = 0;
  int flushes = 0;
  int reads = 0;
  int compare_and_writes = 0;
  std::vector<std::pair<uint64_t, uint64_t>> unmaps;
  // Runs at the start of every compare_and_write: lets a test play another writer that
  // lands between a command's read and its atomic store.
  std::function<void()> before_compare_and_write;

 private:
  void complete(std::function<void()> fn);
  std::optional<core::IoStatus> take_failure();

  std::string uuid_;
  uint32_t block_size_;
  uint64_t block_count_;
  core::VolumeState state_ = core::VolumeState::kHealthy;
  std::vector<std::byte> data_;
  std::vector<bool> mapped_;
  std::optional<core::IoStatus> fail_next_;
  bool async_ = false;
  std::deque<std::function<void()>> pending_;
};

}  // namespace tandem::target::scsi::testing
