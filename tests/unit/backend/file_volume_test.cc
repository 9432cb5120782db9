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

  // Starts a write inside an InlineCompletionScope. `inline_done`: it completed inside the
  // call, on this thread; otherwise `result` becomes ready when it completes elsewhere.
  struct Started {
    bool inline_done;
    std::future<IoResult> result;
  };
  Started start_in_scope(uint64_t lba, const std::vector<std::byte>& data, bool fua = false) {
    auto done = std::make_shared<std::promise<IoResult>>();
    auto where = std::make_shared<std::atomic<bool>>(false);
    Started s{false, done->get_future()};
    const auto caller = std::this_thread::get_id();
    {
      core::InlineCompletionScope scope;
      vol_->write(lba, data, fua, [done, where, caller](IoResult r) {
        where->store(std::this_thread::get_id() == caller);
        done->set_value(r);
      });
      s.inline_done =
          s.result.wait_for(std::chrono::seconds(0)) == std::future_status::ready && where->load();
    }
    return s;
  }
  // The same, waiting for the completion; true when it was inline.
  bool write_in_scope(uint64_t lba, const std::vector<std::byte>& data, bool fua = false,
                      IoResult* res = nullptr) {
    auto s = start_in_scope(lba, data, fua);
    const IoResult r = s.result.get();
    if (res) *res = r;
    return s.inline_done;
  }
  // A pool job stays counted until just after its completion ran, so a write right after one
  // may still take the pool (in order, as it should): retry, bounded, until one is inline.
  // Afterwards no job of the volume is on the pool.
  bool write_inline_eventually(uint64_t lba, const std::vector<std::byte>& data) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (std::chrono::steady_clock::now() < deadline) {
      IoResult r;
      if (write_in_scope(lba, data, false, &r)) return r.ok();
      std::this_thread::yield();
    }
    return false;
  }
  // Parks every pool thread until the returned promise is set (or destroyed).
  std::promise<void> hold_pool() {
    std::promise<void> release;
    std::shared_future<void> gate = release.get_future().share();
    auto parked = std::make_shared<std::atomic<int>>(0);
    for (int i = 0; i < 2; ++i) {
      pool_.post([parked, gate] {
        ++*parked;
        gate.wait();
      });
    }
    while (parked->load() < 2) std::this_thread::yield();
    return release;
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

// Long writes go to the file in pieces that end on kWriteChunk boundaries: one starting a
// block before a boundary and spanning several chunks lands whole, and nothing around it moves.
TEST_F(FileVolumeTest, LongUnalignedWriteLandsWholeAcrossChunks) {
  const uint64_t per_chunk = FileVolume::kWriteChunk / 512;
  const uint64_t lba = per_chunk - 1;
  const auto before = pattern(4 * per_chunk + 8, 5);
  ASSERT_TRUE(write(lba - 4, before).ok());
  const auto d = pattern(3 * per_chunk + 2, 11);
  ASSERT_TRUE(write(lba, d).ok());
  EXPECT_EQ(read(lba, d.size() / 512), d);
  const auto head = read(lba - 4, 4);
  EXPECT_TRUE(std::equal(head.begin(), head.end(), before.begin()));
  const uint64_t tail_lba = lba + d.size() / 512;
  const auto tail = read(tail_lba, 4);
  EXPECT_TRUE(std::equal(tail.begin(), tail.end(), before.begin() + (tail_lba - lba + 4) * 512));
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
  auto release = hold_pool();  // so the next write waits in the queue
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

// Inside an InlineCompletionScope a small page-aligned write without FUA completes inside the
// call, as a plain pwrite into the page cache; outside it, on a pool thread.
TEST_F(FileVolumeTest, SmallAlignedWriteCompletesInlineOnlyInsideTheScope) {
  const auto data = pattern(8, 0x21);
  ASSERT_TRUE(write_inline_eventually(16, data)) << "an aligned write never completed inline";
  EXPECT_EQ(read(16, 8), data);
  const auto big = pattern(FileVolume::kInlineWriteMax / 512, 0x22);
  ASSERT_TRUE(write_inline_eventually(64, big)) << "kInlineWriteMax itself is inline";
  EXPECT_EQ(read(64, big.size() / 512), big);

  std::promise<std::thread::id> where;
  vol_->write(16, data, false, [&](IoResult) { where.set_value(std::this_thread::get_id()); });
  EXPECT_NE(where.get_future().get(), std::this_thread::get_id());
  EXPECT_EQ(vol_->inline_write_stalls(), 0u);
}

// FUA (a sync), a write that covers part of a page (it may have to read the page first) and
// one over kInlineWriteMax go to the pool even inside the scope. Before each, inline writes
// over the blocks of the case prove that no pool job on them was pending, so "not inline" is
// down to the rule under test.
TEST_F(FileVolumeTest, FuaPartialPageAndLargeWritesTakeThePool) {
  struct Case {
    const char* what;
    uint64_t lba;
    std::vector<std::byte> data;
    bool fua;
  };
  const uint64_t max_blocks = FileVolume::kInlineWriteMax / 512;
  const Case cases[] = {
      {"FUA", 8, pattern(8, 1), true},
      {"misaligned offset", 33, pattern(8, 2), false},
      {"part of a page", 56, pattern(1, 3), false},
      {"over kInlineWriteMax", 128, pattern(max_blocks + 8, 4), false},
  };
  for (const auto& c : cases) {
    const uint64_t first = c.lba / 8 * 8, end = (c.lba + c.data.size() / 512 + 7) / 8 * 8;
    for (uint64_t at = first; at < end; at += max_blocks) {
      ASSERT_TRUE(write_inline_eventually(at, pattern(std::min(max_blocks, end - at), 9)))
          << c.what;
    }
    IoResult r;
    EXPECT_FALSE(write_in_scope(c.lba, c.data, c.fua, &r)) << c.what;
    EXPECT_TRUE(r.ok()) << c.what;
    EXPECT_EQ(read(c.lba, c.data.size() / 512), c.data) << c.what;
  }
}

// While a job on the same blocks waits on the pool (a write, or a read), a write takes the
// pool too, behind it: it never overtakes queued I/O of those blocks.
TEST_F(FileVolumeTest, InlineWriteNeverOvertakesAPendingJob) {
  const auto old_data = pattern(8, 0x01), mid_data = pattern(8, 0x02), new_data = pattern(8, 0x03);
  ASSERT_TRUE(write(64, old_data).ok());

  auto release = hold_pool();
  std::promise<IoResult> first;
  vol_->write(64, mid_data, false, [&](IoResult r) { first.set_value(r); });
  auto second = start_in_scope(64, new_data);
  EXPECT_FALSE(second.inline_done) << "overtook a queued write";
  release.set_value();
  EXPECT_TRUE(first.get_future().get().ok());
  EXPECT_TRUE(second.result.get().ok());
  EXPECT_EQ(read(64, 8), new_data);  // the later write landed last

  ASSERT_TRUE(write_inline_eventually(64, old_data));
  auto release2 = hold_pool();
  std::vector<std::byte> seen(old_data.size());
  std::promise<IoResult> read_done;
  vol_->read(64, seen, [&](IoResult r) { read_done.set_value(r); });
  auto later = start_in_scope(64, new_data);
  EXPECT_FALSE(later.inline_done) << "overtook a queued read";
  release2.set_value();
  EXPECT_TRUE(read_done.get_future().get().ok());
  EXPECT_TRUE(later.result.get().ok());
  EXPECT_EQ(seen, old_data);  // the read submitted first does not see the later write
  EXPECT_EQ(read(64, 8), new_data);
}

// Jobs on the pool for other blocks, and a flush, do not hold an inline write up: a deep queue
// that keeps the pool busy does not keep writes off the inline path. A read of blocks with a
// write on the pool still waits for it.
TEST_F(FileVolumeTest, PoolJobsOnOtherBlocksDoNotStopInlineWrites) {
  const auto data = pattern(8, 0x55), other = pattern(8, 0x66);
  auto release = hold_pool();
  std::promise<IoResult> queued_write, queued_flush;
  vol_->write(64, other, false, [&](IoResult r) { queued_write.set_value(r); });
  vol_->flush([&](IoResult r) { queued_flush.set_value(r); });
  auto w = start_in_scope(128, data);
  EXPECT_TRUE(w.inline_done) << "held up by a job on other blocks";
  std::vector<std::byte> seen(other.size());
  std::promise<IoResult> read_done;
  auto read_result = read_done.get_future();
  {
    core::InlineCompletionScope scope;
    vol_->read(64, seen, [&](IoResult r) { read_done.set_value(r); });
  }
  EXPECT_NE(read_result.wait_for(std::chrono::seconds(0)), std::future_status::ready)
      << "a read overtook a queued write of its blocks";
  release.set_value();
  EXPECT_TRUE(read_result.get().ok());
  EXPECT_EQ(seen, other);
  EXPECT_TRUE(w.result.get().ok());
  EXPECT_TRUE(queued_write.get_future().get().ok());
  EXPECT_TRUE(queued_flush.get_future().get().ok());
  EXPECT_EQ(read(128, 8), data);
  EXPECT_EQ(read(64, 8), other);
}

// An inline write slower than the stall bound (writeback throttling in production; a zero
// bound here) sends the volume's writes to the pool for the back-off, then inline again.
TEST_F(FileVolumeTest, SlowInlineWriteBacksOffToThePool) {
  const auto data = pattern(8, 0x44);
  vol_->set_inline_write_policy({std::chrono::nanoseconds(0), std::chrono::hours(1)});
  const uint64_t total_before = FileVolume::inline_write_stalls_total();
  ASSERT_TRUE(write_inline_eventually(0, data));
  EXPECT_EQ(vol_->inline_write_stalls(), 1u);
  EXPECT_EQ(FileVolume::inline_write_stalls_total(), total_before + 1);  // the /metrics sum
  EXPECT_FALSE(write_in_scope(8, data)) << "inline right after a stall";
  EXPECT_FALSE(write_in_scope(16, data)) << "inline during the back-off";
  EXPECT_EQ(read(8, 16), [&] {
    auto both = data;
    both.insert(both.end(), data.begin(), data.end());
    return both;
  }());

  // A stall in write_now (a replica's write) pauses write() the same way.
  vol_->set_inline_write_policy({std::chrono::hours(1), std::chrono::hours(1)});
  ASSERT_TRUE(write_inline_eventually(0, data));
  vol_->set_inline_write_policy({std::chrono::nanoseconds(0), std::chrono::hours(1)});
  ASSERT_TRUE(vol_->write_now(24, data).ok());
  EXPECT_EQ(vol_->inline_write_stalls(), 2u);
  EXPECT_FALSE(write_in_scope(32, data));

  // The back-off ends: writes are inline again (polled, bounded), not before it has passed.
  // Measured from before the tripping write, which the pause runs from the end of, so the
  // bound holds exactly; 200 ms leaves the check right after it room on a loaded machine.
  const auto back_off = std::chrono::milliseconds(200);
  vol_->set_inline_write_policy({std::chrono::hours(1), back_off});
  ASSERT_TRUE(write_inline_eventually(0, data));
  vol_->set_inline_write_policy({std::chrono::nanoseconds(0), back_off});
  const auto before_stall = std::chrono::steady_clock::now();
  ASSERT_TRUE(write_inline_eventually(0, data));  // trips the pause
  EXPECT_FALSE(write_in_scope(56, data));
  EXPECT_TRUE(write_inline_eventually(56, data));
  EXPECT_GE(std::chrono::steady_clock::now() - before_stall, back_off);
  EXPECT_EQ(read(56, 8), data);
}

}  // namespace
}  // namespace tandem::backend
