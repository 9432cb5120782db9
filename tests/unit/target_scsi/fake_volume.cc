#include "tests/unit/target_scsi/fake_volume.h"

#include <algorithm>
#include <cstring>

namespace tandem::target::scsi::testing {

FakeVolume::FakeVolume(std::string uuid, uint32_t block_size, uint64_t block_count)
    : uuid_(std::move(uuid)),
      block_size_(block_size),
      block_count_(block_count),
      data_(block_size * block_count),
      mapped_(block_count, false) {}

void FakeVolume::set_block_count(uint64_t n) {
  block_count_ = n;
  data_.resize(block_size_ * n);
  mapped_.resize(n, false);
}

void FakeVolume::complete(std::function<void()> fn) {
  if (async_) {
    pending_.push_back(std::move(fn));
  } else {
    fn();
  }
}

size_t FakeVolume::run_pending() {
  size_t n = 0;
  while (!pending_.empty()) {
    auto fn = std::move(pending_.front());
    pending_.pop_front();
    fn();
    ++n;
  }
  return n;
}

std::optional<core::IoStatus> FakeVolume::take_failure() {
  auto f = fail_next_;
  fail_next_.reset();
  return f;
}

void FakeVolume::fill(uint64_t lba, uint64_t blocks, uint8_t value) {
  std::memset(data_.data() + lba * block_size_, value, blocks * block_size_);
  for (uint64_t i = 0; i < blocks; ++i) mapped_[lba + i] = true;
}

void FakeVolume::read(uint64_t lba, std::span<std::byte> out, Done done) {
  ++reads;
  core::IoResult r;
  if (auto f = take_failure()) {
    r.status = *f;
  } else if (out.size() % block_size_ != 0 || lba + out.size() / block_size_ > block_count_) {
    r.status = core::IoStatus::kOutOfRange;
  } else {
    std::memcpy(out.data(), data_.data() + lba * block_size_, out.size());
  }
  complete([done, r] { done(r); });
}

void FakeVolume::write(uint64_t lba, std::span<const std::byte> data, bool fua, Done done) {
  ++writes;
  if (fua) ++fua_writes;
  core::IoResult r;
  if (auto f = take_failure()) {
    r.status = *f;
  } else if (data.size() % block_size_ != 0 || lba + data.size() / block_size_ > block_count_) {
    r.status = core::IoStatus::kOutOfRange;
  } else {
    std::memcpy(data_.data() + lba * block_size_, data.data(), data.size());
    for (uint64_t i = 0; i < data.size() / block_size_; ++i) mapped_[lba + i] = true;
  }
  complete([done, r] { done(r); });
}

void FakeVolume::flush(Done done) {
  ++flushes;
  core::IoResult r;
  if (auto f = take_failure()) r.status = *f;
  complete([done, r] { done(r); });
}

void FakeVolume::unmap(uint64_t lba, uint64_t blocks, Done done) {
  core::IoResult r;
  if (auto f = take_failure()) {
    r.status = *f;
  } else if (lba + blocks > block_count_) {
    r.status = core::IoStatus::kOutOfRange;
  } else {
    unmaps.emplace_back(lba, blocks);
    std::memset(data_.data() + lba * block_size_, 0, blocks * block_size_);
    for (uint64_t i = 0; i < blocks; ++i) mapped_[lba + i] = false;
  }
  complete([done, r] { done(r); });
}

void FakeVolume::compare_and_write(uint64_t lba, std::span<const std::byte> compare,
                                   std::span<const std::byte> data, bool fua, Done done) {
  ++compare_and_writes;
  if (before_compare_and_write) before_compare_and_write();
  core::IoResult r;
  if (auto f = take_failure()) {
    r.status = *f;
  } else if (compare.size() != data.size() || lba + data.size() / block_size_ > block_count_) {
    r.status = core::IoStatus::kOutOfRange;
  } else {
    const std::byte* cur = data_.data() + lba * block_size_;
    auto mis = std::mismatch(compare.begin(), compare.end(), cur);
    if (mis.first != compare.end()) {
      r.status = core::IoStatus::kMiscompare;
      r.miscompare_offset = static_cast<uint64_t>(mis.first - compare.begin());
    } else {
      ++writes;
      if (fua) ++fua_writes;
      std::memcpy(data_.data() + lba * block_size_, data.data(), data.size());
      for (uint64_t i = 0; i < data.size() / block_size_; ++i) mapped_[lba + i] = true;
    }
  }
  complete([done, r] { done(r); });
}

void FakeVolume::lba_status(uint64_t lba, uint64_t max_blocks, ExtentsDone done) {
  core::IoResult r;
  std::vector<core::LbaExtent> ext;
  if (auto f = take_failure()) {
    r.status = *f;
  } else {
    const uint64_t end = std::min(block_count_, lba + max_blocks);
    for (uint64_t i = lba; i < end; ++i) {
      if (!ext.empty() && ext.back().mapped == mapped_[i]) {
        ++ext.back().blocks;
      } else {
        ext.push_back({i, 1, mapped_[i]});
      }
    }
  }
  complete([done, r, ext] { done(r, ext); });
}

}  // namespace tandem::target::scsi::testing
