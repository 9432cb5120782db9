#include "backend/store/file_volume.h"

#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <mutex>
#include <vector>

namespace tandem::backend {
namespace {

using core::IoResult;
using core::IoStatus;

IoResult from_errno(int err) {
  if (err == ENOSPC || err == EDQUOT) return {IoStatus::kNoSpace};
  return {IoStatus::kMediumError};
}

bool writes_allowed(core::VolumeState s, IoResult* why) {
  switch (s) {
    case core::VolumeState::kHealthy:
    case core::VolumeState::kDegraded:
      return true;
    case core::VolumeState::kReadOnly:
      *why = {IoStatus::kWriteProtected};
      return false;
    default:
      *why = {IoStatus::kNotReady};
      return false;
  }
}

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// A buffered write of whole pages never has to read the page from disk first.
constexpr uint64_t kPageBytes = 4096;

IoResult pread_all(int fd, uint64_t off, std::span<std::byte> out) {
  size_t done = 0;
  while (done < out.size()) {
    ssize_t n = ::pread(fd, out.data() + done, out.size() - done, static_cast<off_t>(off + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return from_errno(errno);
    }
    if (n == 0) {  // beyond EOF of a file being grown: reads as zeros
      std::memset(out.data() + done, 0, out.size() - done);
      break;
    }
    done += static_cast<size_t>(n);
  }
  return {};
}

std::atomic<uint64_t> g_stalls_total{0};

}  // namespace

uint64_t FileVolume::inline_write_stalls_total() {
  return g_stalls_total.load(std::memory_order_relaxed);
}

std::shared_ptr<FileVolume> FileVolume::open(const std::string& path, std::string uuid,
                                             uint32_t block_size, IoPool& pool) {
  int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) return nullptr;
  // No readahead: the initiator's filesystem reads ahead already, and the kernel's own
  // readahead fills the page cache with large folios (up to the request's size), into which
  // every later small write is slow (see kWriteChunk): 9 us against 2 us per 4 KiB write after
  // a 1 MiB read on this VM. A cold 1 MiB read takes about twice as long without it.
  (void)::posix_fadvise(fd, 0, 0, POSIX_FADV_RANDOM);
  std::shared_ptr<FileVolume> v(new FileVolume(fd, std::move(uuid), block_size, pool));
  v->refresh_capacity();
  return v;
}

FileVolume::FileVolume(int fd, std::string uuid, uint32_t block_size, IoPool& pool)
    : fd_(fd), uuid_(std::move(uuid)), block_size_(block_size), pool_(pool) {
  set_inline_write_policy({});
}

void FileVolume::set_inline_write_policy(InlineWritePolicy p) {
  stall_bound_ns_.store(p.stall_bound.count(), std::memory_order_relaxed);
  back_off_ns_.store(p.back_off.count(), std::memory_order_relaxed);
  inline_writes_from_ns_.store(0, std::memory_order_relaxed);
}

FileVolume::~FileVolume() {
  ::fdatasync(fd_);
  ::close(fd_);
}

void FileVolume::refresh_capacity() {
  struct stat st {};
  if (::fstat(fd_, &st) == 0) {
    blocks_.store(static_cast<uint64_t>(st.st_size) / block_size_, std::memory_order_release);
  }
}

bool FileVolume::in_range(uint64_t lba, uint64_t blocks) const {
  uint64_t cap = block_count();
  return lba <= cap && blocks <= cap - lba;
}

IoResult FileVolume::pwrite_all(uint64_t off, std::span<const std::byte> data, bool fua) {
  size_t done = 0;
  while (done < data.size()) {
    const uint64_t at = off + done;
    const size_t len = std::min(data.size() - done, size_t(kWriteChunk - at % kWriteChunk));
    ssize_t n = ::pwrite(fd_, data.data() + done, len, static_cast<off_t>(at));
    if (n < 0) {
      if (errno == EINTR) continue;
      return from_errno(errno);
    }
    done += static_cast<size_t>(n);
  }
  if (fua && ::fdatasync(fd_) != 0) return from_errno(errno);
  return {};
}

void FileVolume::post(JobRange range, std::function<void()> job) {
  const bool tracked = range.blocks != 0;
  if (tracked) {
    std::lock_guard lock(pending_mu_);
    pending_.push_back(range);
    pool_jobs_.fetch_add(1, std::memory_order_acq_rel);
  }
  // Every job holds a shared_ptr to this volume, so `this` outlives the wrapper's body.
  // Forgotten after the job's completion ran: an inline read or write issued from it still
  // finds the job pending and takes the pool (in order).
  pool_.post([this, range, tracked, job = std::move(job)] {
    job();
    if (!tracked) return;
    std::lock_guard lock(pending_mu_);
    auto it = std::find(pending_.begin(), pending_.end(), range);
    *it = pending_.back();
    pending_.pop_back();
    pool_jobs_.fetch_sub(1, std::memory_order_acq_rel);
  });
}

bool FileVolume::conflicts_with_pool(uint64_t lba, uint64_t blocks, bool writes) {
  if (pool_jobs_.load(std::memory_order_acquire) == 0) return false;
  std::lock_guard lock(pending_mu_);
  for (const auto& r : pending_) {
    if ((writes || r.writes) && r.lba < lba + blocks && lba < r.lba + r.blocks) return true;
  }
  return false;
}

bool FileVolume::try_inline_read(uint64_t off, std::span<std::byte> out) {
  if (!core::InlineCompletionScope::active() || out.size() > kInlineReadMax) return false;
  // A write still on the pool to these blocks must be seen: then the pool keeps the order.
  if (conflicts_with_pool(off / block_size_, out.size() / block_size_, false)) return false;
  iovec iov{out.data(), out.size()};
  // RWF_NOWAIT: EAGAIN (or a short count) instead of waiting for the disk, so the calling
  // network thread never blocks; anything but a complete read goes to the pool.
  const ssize_t n = ::preadv2(fd_, &iov, 1, static_cast<off_t>(off), RWF_NOWAIT);
  return n >= 0 && static_cast<size_t>(n) == out.size();
}

void FileVolume::read(uint64_t lba, std::span<std::byte> out, Done done) {
  if (state() == core::VolumeState::kOffline) return done({IoStatus::kNotReady});
  if (out.size() % block_size_ || !in_range(lba, out.size() / block_size_)) {
    return done({IoStatus::kOutOfRange});
  }
  if (try_inline_read(lba * block_size_, out)) return done({});
  post({lba, out.size() / block_size_, false},
       [self = shared_from_this(), lba, out, done = std::move(done)] {
         done(pread_all(self->fd_, lba * self->block_size_, out));
       });
}

std::optional<IoResult> FileVolume::refuse_write(uint64_t lba, size_t bytes) const {
  IoResult why;
  if (!writes_allowed(state(), &why)) return why;
  if (bytes % block_size_ || !in_range(lba, bytes / block_size_)) {
    return IoResult{IoStatus::kOutOfRange};
  }
  return std::nullopt;
}

IoResult FileVolume::write_here(uint64_t lba, std::span<const std::byte> data) {
  const int64_t start = now_ns();
  const IoResult r = pwrite_all(lba * block_size_, data, false);
  const int64_t end = now_ns();
  if (end - start > stall_bound_ns_.load(std::memory_order_relaxed)) {
    // Throttled (balance_dirty_pages) or waiting on the journal: the next writes of this
    // volume take the pool for a while, so this thread's other connections are not held.
    stalls_.fetch_add(1, std::memory_order_relaxed);
    g_stalls_total.fetch_add(1, std::memory_order_relaxed);
    inline_writes_from_ns_.store(end + back_off_ns_.load(std::memory_order_relaxed),
                                 std::memory_order_relaxed);
  }
  return r;
}

std::optional<IoResult> FileVolume::try_inline_write(uint64_t lba, std::span<const std::byte> data,
                                                     bool fua) {
  // FUA is a sync, which does not belong on a network thread; a write of part of a page may
  // have to read the rest of it from disk first.
  const uint64_t off = lba * block_size_;
  if (fua || !core::InlineCompletionScope::active() || data.size() > kInlineWriteMax ||
      off % kPageBytes != 0 || data.size() % kPageBytes != 0) {
    return std::nullopt;
  }
  // The ordering rule of inline reads: a read or write of these blocks still on the pool must
  // not be overtaken. Jobs on other blocks do not hold it up, so writes return to the inline
  // path after a back-off even while a deep queue keeps the pool busy.
  if (conflicts_with_pool(lba, data.size() / block_size_, true)) return std::nullopt;
  if (now_ns() < inline_writes_from_ns_.load(std::memory_order_relaxed)) return std::nullopt;
  // A COMPARE AND WRITE holds the lock exclusively: wait for it on the pool, not here.
  std::shared_lock lock(caw_mu_, std::try_to_lock);
  if (!lock.owns_lock()) return std::nullopt;
  return write_here(lba, data);
}

core::IoResult FileVolume::write_now(uint64_t lba, std::span<const std::byte> data) {
  if (auto refused = refuse_write(lba, data.size())) return *refused;
  std::shared_lock lock(caw_mu_);
  return write_here(lba, data);
}

void FileVolume::write(uint64_t lba, std::span<const std::byte> data, bool fua, Done done) {
  if (auto refused = refuse_write(lba, data.size())) return done(*refused);
  if (auto r = try_inline_write(lba, data, fua)) return done(*r);
  post({lba, data.size() / block_size_, true},
       [self = shared_from_this(), lba, data, fua, done = std::move(done)] {
         std::shared_lock lock(self->caw_mu_);
         done(self->pwrite_all(lba * self->block_size_, data, fua));
       });
}

void FileVolume::flush(Done done) {
  post({}, [self = shared_from_this(), done = std::move(done)] {
    done(::fdatasync(self->fd_) == 0 ? IoResult{} : from_errno(errno));
  });
}

void FileVolume::unmap(uint64_t lba, uint64_t blocks, Done done) {
  IoResult why;
  if (!writes_allowed(state(), &why)) return done(why);
  if (!in_range(lba, blocks)) return done({IoStatus::kOutOfRange});
  if (blocks == 0) return done({});
  post({lba, blocks, true}, [self = shared_from_this(), lba, blocks, done = std::move(done)] {
    std::shared_lock lock(self->caw_mu_);
    // Punching a hole keeps the size and makes the range read back as zeros (LBPRZ).
    int rc = ::fallocate(self->fd_, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                         static_cast<off_t>(lba * self->block_size_),
                         static_cast<off_t>(blocks * self->block_size_));
    if (rc != 0 && errno == EOPNOTSUPP) {
      // Filesystems without hole punching: write zeros instead, same visible result.
      std::vector<std::byte> zeros(std::min<uint64_t>(blocks * self->block_size_, 1 << 20));
      uint64_t off = lba * self->block_size_, left = blocks * self->block_size_;
      while (left > 0) {
        size_t n = static_cast<size_t>(std::min<uint64_t>(left, zeros.size()));
        if (auto r = self->pwrite_all(off, {zeros.data(), n}, false); !r.ok()) return done(r);
        off += n;
        left -= n;
      }
      rc = 0;
    }
    done(rc == 0 ? IoResult{} : from_errno(errno));
  });
}

void FileVolume::compare_and_write(uint64_t lba, std::span<const std::byte> compare,
                                   std::span<const std::byte> data, bool fua, Done done) {
  IoResult why;
  if (!writes_allowed(state(), &why)) return done(why);
  if (compare.size() != data.size() || data.size() % block_size_ ||
      !in_range(lba, data.size() / block_size_)) {
    return done({IoStatus::kOutOfRange});
  }
  post({lba, data.size() / block_size_, true},
       [self = shared_from_this(), lba, compare, data, fua, done = std::move(done)] {
         std::unique_lock lock(self->caw_mu_);
         std::vector<std::byte> current(compare.size());
         uint64_t off = lba * self->block_size_;
         if (auto r = pread_all(self->fd_, off, current); !r.ok()) return done(r);
         for (size_t i = 0; i < current.size(); ++i) {
           if (current[i] != compare[i]) return done({IoStatus::kMiscompare, i});
         }
         done(self->pwrite_all(off, data, fua));
       });
}

void FileVolume::lba_status(uint64_t lba, uint64_t max_blocks, ExtentsDone done) {
  if (!in_range(lba, 1)) return done({IoStatus::kOutOfRange}, {});
  post({}, [self = shared_from_this(), lba, max_blocks, done = std::move(done)] {
    const uint64_t bs = self->block_size_;
    const uint64_t end_lba = std::min(self->block_count(), lba + std::max<uint64_t>(max_blocks, 1));
    std::vector<core::LbaExtent> out;
    uint64_t pos = lba * bs, end = end_lba * bs;
    while (pos < end) {
      off_t data = ::lseek(self->fd_, static_cast<off_t>(pos), SEEK_DATA);
      uint64_t data_at = data < 0 ? end : std::min<uint64_t>(static_cast<uint64_t>(data), end);
      if (data_at / bs > pos / bs) {  // whole blocks of hole from pos to data_at
        uint64_t a = pos / bs, b = data_at / bs;
        out.push_back({a, b - a, false});
        pos = b * bs;
        continue;
      }
      off_t hole = ::lseek(self->fd_, static_cast<off_t>(pos), SEEK_HOLE);
      uint64_t hole_at = hole < 0 ? end : std::min<uint64_t>(static_cast<uint64_t>(hole), end);
      uint64_t a = pos / bs, b = std::max(a + 1, (hole_at + bs - 1) / bs);
      out.push_back({a, b - a, true});
      pos = b * bs;
    }
    done({}, std::move(out));
  });
}

}  // namespace tandem::backend
