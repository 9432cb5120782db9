// Completions on a backend thread, and execute() from several threads at once: the
// LogicalUnit's contract with real backends (scsi_device.h threading note).
#include <gtest/gtest.h>

#include <condition_variable>
#include <future>
#include <thread>

#include "tests/unit/target_scsi/scsi_test_util.h"

namespace tandem::target::scsi::testing {
namespace {

// One worker thread running posted callbacks in order.
class Worker {
 public:
  Worker() : thread_([this] { loop(); }) {}
  ~Worker() {
    {
      std::lock_guard lock(mu_);
      stop_ = true;
    }
    cv_.notify_one();
    thread_.join();
  }
  void post(std::function<void()> fn) {
    {
      std::lock_guard lock(mu_);
      queue_.push_back(std::move(fn));
    }
    cv_.notify_one();
  }

 private:
  void loop() {
    std::unique_lock lock(mu_);
    while (true) {
      cv_.wait(lock, [this] { return stop_ || !queue_.empty(); });
      if (queue_.empty()) return;
      auto fn = std::move(queue_.front());
      queue_.pop_front();
      lock.unlock();
      fn();
      lock.lock();
    }
  }
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> queue_;
  bool stop_ = false;
  std::thread thread_;
};

// A FakeVolume whose completions run on the worker thread.
class ThreadedVolume : public core::BlockVolume {
 public:
  ThreadedVolume(uint64_t blocks) : inner_(kUuid, 512, blocks) {}
  const std::string& uuid() const override { return inner_.uuid(); }
  uint32_t block_size() const override { return inner_.block_size(); }
  uint64_t block_count() const override { return inner_.block_count(); }
  core::VolumeState state() const override { return inner_.state(); }
  void read(uint64_t lba, std::span<std::byte> out, Done done) override {
    run([&](Done d) { inner_.read(lba, out, d); }, std::move(done));
  }
  void write(uint64_t lba, std::span<const std::byte> data, bool fua, Done done) override {
    run([&](Done d) { inner_.write(lba, data, fua, d); }, std::move(done));
  }
  void flush(Done done) override {
    run([&](Done d) { inner_.flush(d); }, std::move(done));
  }
  void unmap(uint64_t lba, uint64_t blocks, Done done) override {
    run([&](Done d) { inner_.unmap(lba, blocks, d); }, std::move(done));
  }
  void compare_and_write(uint64_t lba, std::span<const std::byte> c, std::span<const std::byte> w,
                         bool fua, Done done) override {
    run([&](Done d) { inner_.compare_and_write(lba, c, w, fua, d); }, std::move(done));
  }
  void lba_status(uint64_t lba, uint64_t max, ExtentsDone done) override {
    std::vector<core::LbaExtent> ext;
    core::IoResult res;
    {
      std::lock_guard lock(mu_);
      inner_.lba_status(lba, max, [&](core::IoResult r, std::vector<core::LbaExtent> e) {
        res = r;
        ext = std::move(e);
      });
    }
    worker_.post([done, res, ext] { done(res, ext); });
  }
  int writes() {
    std::lock_guard lock(mu_);
    return inner_.writes;
  }

 private:
  template <class F>
  void run(F op, Done done) {
    core::IoResult res;
    {
      std::lock_guard lock(mu_);
      op([&](core::IoResult r) { res = r; });
    }
    worker_.post([done, res] { done(res); });
  }
  std::mutex mu_;
  FakeVolume inner_;
  Worker worker_;
};

ScsiResult exec(LogicalUnit& lu, Cdb cdb, std::vector<std::byte> data = {},
                const std::string& port = kPortA) {
  auto task = std::make_shared<ScsiTask>();
  task->cdb = cdb;
  task->data_out = std::move(data);
  task->expected_in_length = 1u << 24;
  task->initiator_port = port;
  std::promise<ScsiResult> p;
  auto f = p.get_future();
  lu.execute(task, [&p](ScsiResult r) { p.set_value(std::move(r)); });
  return f.get();
}

TEST(Threaded, ChainedWriteSameCompletesOnBackendThread) {
  auto volume = std::make_shared<ThreadedVolume>(6000);
  LogicalUnit lu(volume);
  auto block = pattern(512, 3);
  ASSERT_TRUE(IsGood(exec(lu, rw16(op::kWriteSame16, 0, 5000), block)));
  EXPECT_EQ(volume->writes(), 3);
  auto r = exec(lu, rw16(op::kRead16, 4999, 1));
  EXPECT_EQ(r.data_in, block);
}

TEST(Threaded, ConcurrentInitiators) {
  auto volume = std::make_shared<ThreadedVolume>(4096);
  LogicalUnit lu(volume);
  auto client = [&](const std::string& port, uint64_t key, uint32_t base) {
    Cdb reg = cdb_of({0x5F, 0x06});
    put_be32(&reg[5], 24);
    std::vector<std::byte> p(24);
    for (int i = 0; i < 8; ++i) p[8 + i] = static_cast<std::byte>(key >> (56 - 8 * i));
    EXPECT_TRUE(IsGood(exec(lu, reg, p, port)));
    for (uint32_t i = 0; i < 200; ++i) {
      auto data = pattern(512, static_cast<uint8_t>(i));
      EXPECT_TRUE(IsGood(exec(lu, rw10(op::kWrite10, base + i, 1), data, port)));
      EXPECT_EQ(exec(lu, rw10(op::kRead10, base + i, 1), {}, port).data_in, data);
    }
  };
  std::thread a(client, kPortA, 1, 0);
  std::thread b(client, kPortB, 2, 1000);
  a.join();
  b.join();
  Cdb keys = cdb_of({0x5E, 0x00});
  put_be16(&keys[7], 64);
  auto d = u8(exec(lu, keys).data_in);
  EXPECT_EQ(get_be32(&d[0]), 2u);
  EXPECT_EQ(get_be32(&d[4]), 16u);
}

}  // namespace
}  // namespace tandem::target::scsi::testing
