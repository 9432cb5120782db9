#include "backend/store/file_volume.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <future>
#include <thread>

#include "backend/store/file_store.h"

namespace tandem::backend {
namespace {

using core::IoResult;
using core::IoStatus;

class FileVolumeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("tandem-store-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    store_ = std::make_unique<FileStore>(dir_.string());
    ASSERT_TRUE(store_->init().ok());
    ASSERT_TRUE(store_->create("v", 4 << 20).ok());
    vol_ = FileVolume::open(store_->path_of("v"), "uuid-v", 512, pool_);
    ASSERT_TRUE(vol_);
  }
  void TearDown() override {
    vol_.reset();
    std::filesystem::remove_all(dir_);
  }

  IoResult write(uint64_t lba, const std::vector<std::byte>& data, bool fua = false) {
    std::promise<IoResult> p;
    vol_->write(lba, data, fua, [&](IoResult r) { p.set_value(r); });
    return p.get_future().get();
  }
  std::vector<std::byte> read(uint64_t lba, size_t blocks, IoResult* res = nullptr) {
    std::vector<std::byte> out(blocks * 512);
    std::promise<IoResult> p;
    vol_->read(lba, out, [&](IoResult r) { p.set_value(r); });
    IoResult r = p.get_future().get();
    if (res) *res = r;
    return out;
  }
  IoResult unmap(uint64_t lba, uint64_t blocks) {
    std::promise<IoResult> p;
    vol_->unmap(lba, blocks, [&](IoResult r) { p.set_value(r); });
    return p.get_future().get();
  }
  std::vector<core::LbaExtent> status(uint64_t lba, uint64_t max) {
    std::promise<std::vector<core::LbaExtent>> p;
    vol_->lba_status(lba, max, [&](IoResult, std::vector<core::LbaExtent> e) { p.set_value(e); });
    return p.get_future().get();
  }

  static std::vector<std::byte> pattern(size_t blocks, uint8_t seed) {
    std::vector<std::byte> d(blocks * 512);
    for (size_t i = 0; i < d.size(); ++i) d[i] = std::byte(static_cast<uint8_t>(seed + i * 7));
    return d;
  }

  IoPool pool_{2};
  std::filesystem::path dir_;
  std::unique_ptr<FileStore> store_;
  std::shared_ptr<FileVolume> vol_;
};

TEST_F(FileVolumeTest, NewFileIsSparseWithExactSize) {
  struct stat st {};
  ASSERT_EQ(::stat(store_->path_of("v").c_str(), &st), 0);
  EXPECT_EQ(st.st_size, 4 << 20);
  EXPECT_EQ(st.st_blocks, 0);
  EXPECT_EQ(vol_->block_count(), (4u << 20) / 512);
}

TEST_F(FileVolumeTest, WriteThenReadBack) {
  auto d = pattern(8, 3);
  ASSERT_TRUE(write(100, d, true).ok());
  EXPECT_EQ(read(100, 8), d);
  auto zeros = read(0, 8);
  EXPECT_EQ(zeros, std::vector<std::byte>(8 * 512));
}

TEST_F(FileVolumeTest, OutOfRangeIsRefused) {
  uint64_t last = vol_->block_count();
  EXPECT_EQ(write(last, pattern(1, 1)).status, IoStatus::kOutOfRange);
  EXPECT_EQ(write(last - 1, pattern(2, 1)).status, IoStatus::kOutOfRange);
  EXPECT_EQ(write(UINT64_MAX - 1, pattern(2, 1)).status, IoStatus::kOutOfRange);
  EXPECT_TRUE(write(last - 1, pattern(1, 1)).ok());
  IoResult r;
  read(last, 1, &r);
  EXPECT_EQ(r.status, IoStatus::kOutOfRange);
}

TEST_F(FileVolumeTest, UnmapPunchesHolesThatReadAsZeros) {
  ASSERT_TRUE(write(0, pattern(64, 9)).ok());
  ASSERT_TRUE(unmap(8, 16).ok());
  auto back = read(0, 64);
  auto expect = pattern(64, 9);
  std::fill(expect.begin() + 8 * 512, expect.begin() + 24 * 512, std::byte{0});
  EXPECT_EQ(back, expect);
  auto ext = status(0, 64);
  ASSERT_FALSE(ext.empty());
  EXPECT_EQ(ext[0].lba, 0u);
  EXPECT_TRUE(ext[0].mapped);
  bool saw_hole = false;
  for (const auto& e : ext) saw_hole |= !e.mapped && e.lba >= 8 && e.lba + e.blocks <= 24;
  EXPECT_TRUE(saw_hole);
}

TEST_F(FileVolumeTest, LbaStatusOfAFreshVolumeIsOneHole) {
  auto ext = status(0, 1024);
  ASSERT_EQ(ext.size(), 1u);
  EXPECT_FALSE(ext[0].mapped);
  EXPECT_EQ(ext[0].blocks, 1024u);
}

TEST_F(FileVolumeTest, CompareAndWrite) {
  auto a = pattern(1, 1), b = pattern(1, 2);
  ASSERT_TRUE(write(5, a).ok());
  std::promise<IoResult> p1;
  vol_->compare_and_write(5, a, b, false, [&](IoResult r) { p1.set_value(r); });
  EXPECT_TRUE(p1.get_future().get().ok());
  EXPECT_EQ(read(5, 1), b);
  std::promise<IoResult> p2;
  auto c = a;
  vol_->compare_and_write(5, a, c, false, [&](IoResult r) { p2.set_value(r); });
  IoResult r = p2.get_future().get();
  EXPECT_EQ(r.status, IoStatus::kMiscompare);
  EXPECT_EQ(r.miscompare_offset, 0u);  // pattern seeds differ at byte 0
  EXPECT_EQ(read(5, 1), b);
}

TEST_F(FileVolumeTest, ReadOnlyAndHaltedRefuseWrites) {
  vol_->set_state(core::VolumeState::kReadOnly);
  EXPECT_EQ(write(0, pattern(1, 1)).status, IoStatus::kWriteProtected);
  EXPECT_EQ(unmap(0, 1).status, IoStatus::kWriteProtected);
  IoResult r;
  read(0, 1, &r);
  EXPECT_TRUE(r.ok());
  vol_->set_state(core::VolumeState::kHalted);
  EXPECT_EQ(write(0, pattern(1, 1)).status, IoStatus::kNotReady);
}

// write_now: the replicas' small writes, on the calling thread, with write()'s checks.
TEST_F(FileVolumeTest, WriteNowWritesOnTheCallingThreadWithTheSameChecks) {
  auto d = pattern(8, 9);
  ASSERT_TRUE(vol_->write_now(40, d).ok());
  EXPECT_EQ(read(40, 8), d);  // done when it returns: no completion to wait for
  const uint64_t last = vol_->block_count();
  EXPECT_EQ(vol_->write_now(last - 1, pattern(2, 1)).status, IoStatus::kOutOfRange);
  EXPECT_EQ(vol_->write_now(0, std::vector<std::byte>(100)).status, IoStatus::kOutOfRange);
  vol_->set_state(core::VolumeState::kReadOnly);
  EXPECT_EQ(vol_->write_now(0, pattern(1, 1)).status, IoStatus::kWriteProtected);
  vol_->set_state(core::VolumeState::kHalted);
  EXPECT_EQ(vol_->write_now(0, pattern(1, 1)).status, IoStatus::kNotReady);
  EXPECT_EQ(read(40, 8), d);
}

TEST_F(FileVolumeTest, GrowPublishesNewCapacityAndShrinkIsRefused) {
  ASSERT_TRUE(store_->grow("v", 8 << 20).ok());
  vol_->refresh_capacity();
  EXPECT_EQ(vol_->block_count(), (8u << 20) / 512);
  auto shrink = store_->grow("v", 1 << 20);
  ASSERT_FALSE(shrink.ok());
  EXPECT_EQ(shrink.error().code, StoreErrc::kShrink);
  EXPECT_TRUE(store_->remove("v").ok());
  EXPECT_FALSE(store_->exists("v"));
  EXPECT_EQ(store_->create("v", 1 << 20).ok(), true);
  EXPECT_EQ(store_->create("v", 1 << 20).error().code, StoreErrc::kExists);
}

// Inside an InlineCompletionScope, a read the page cache holds completes inside the call
// (on this thread, before read() returns); outside it, always on a pool thread.
TEST_F(FileVolumeTest, CachedReadCompletesInlineOnlyInsideTheScope) {
  const auto data = pattern(8, 0x5a);
  ASSERT_TRUE(write(16, data).ok());
  std::vector<std::byte> out(data.size());
  // The write's pool job stays counted until just after its completion ran, so a read right
  // after it may still take the pool (in order, as it should): retry, bounded, until inline.
  bool inline_seen = false;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (!inline_seen && std::chrono::steady_clock::now() < deadline) {
    auto done = std::make_shared<std::promise<std::thread::id>>();
    auto result = done->get_future();
    {
      core::InlineCompletionScope scope;
      vol_->read(16, out, [done](IoResult r) {
        EXPECT_TRUE(r.ok());
        done->set_value(std::this_thread::get_id());
      });
    }
    const bool ready_on_return =
        result.wait_for(std::chrono::seconds(0)) == std::future_status::ready;
    inline_seen = result.get() == std::this_thread::get_id() && ready_on_return;
    if (!inline_seen) std::this_thread::yield();
  }
  EXPECT_TRUE(inline_seen) << "a cached read never completed inside the call";
  EXPECT_EQ(out, data);

  std::promise<std::thread::id> where;
  vol_->read(16, out, [&](IoResult) { where.set_value(std::this_thread::get_id()); });
  EXPECT_NE(where.get_future().get(), std::this_thread::get_id());
}

// While a job of the volume is still on the pool (here a queued write), a read takes the pool
// too: the inline path never lets a completion overtake one submitted before it.
TEST_F(FileVolumeTest, InlineReadNeverOvertakesAPendingWrite) {
  const auto old_data = pattern(8, 0x01), new_data = pattern(8, 0x77);
  ASSERT_TRUE(write(64, old_data).ok());
  // Hold both pool threads so the next write waits in the queue.
  std::promise<void> release;
  std::shared_future<void> gate = release.get_future().share();
  std::atomic<int> parked{0};
  for (int i = 0; i < 2; ++i) {
    pool_.post([&, gate] {
      ++parked;
      gate.wait();
    });
  }
  while (parked.load() < 2) std::this_thread::yield();
  std::promise<IoResult> wrote;
  vol_->write(64, new_data, false, [&](IoResult r) { wrote.set_value(r); });
  std::vector<std::byte> out(new_data.size());
  std::promise<IoResult> read_done;
  std::atomic<bool> inline_done{false};
  {
    core::InlineCompletionScope scope;
    vol_->read(64, out, [&](IoResult r) {
      inline_done = true;
      read_done.set_value(r);
    });
  }
  EXPECT_FALSE(inline_done);
  release.set_value();
  EXPECT_TRUE(wrote.get_future().get().ok());
  EXPECT_TRUE(read_done.get_future().get().ok());
  EXPECT_EQ(read(64, 8), new_data);
}

// A read larger than kInlineReadMax always goes to the pool (bounded work per network turn).
TEST_F(FileVolumeTest, LargeReadIsNeverInline) {
  const size_t blocks = FileVolume::kInlineReadMax / 512 + 8;
  ASSERT_TRUE(write(0, pattern(blocks, 0x33)).ok());
  std::vector<std::byte> out(blocks * 512);
  std::promise<IoResult> done;
  std::atomic<bool> inline_done{false};
  const auto caller = std::this_thread::get_id();
  {
    core::InlineCompletionScope scope;
    vol_->read(0, out, [&](IoResult r) {
      inline_done = std::this_thread::get_id() == caller;
      done.set_value(r);
    });
  }
  EXPECT_TRUE(done.get_future().get().ok());
  EXPECT_FALSE(inline_done);
  EXPECT_EQ(out, pattern(blocks, 0x33));
}

}  // namespace
}  // namespace tandem::backend
