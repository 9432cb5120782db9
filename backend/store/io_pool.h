// IoPool: a fixed set of threads that run blocking storage calls (pread, pwrite, fdatasync,
// fallocate) off the network threads (STYLE habit 8). Jobs run in FIFO order per pool, on
// any of its threads. The pool must outlive every job posted to it; the destructor drains
// queued jobs, then joins.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace tandem::backend {

class IoPool {
 public:
  explicit IoPool(size_t threads);
  ~IoPool();
  IoPool(const IoPool&) = delete;
  IoPool& operator=(const IoPool&) = delete;

  void post(std::function<void()> job);

 private:
  void run();

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> jobs_;
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace tandem::backend
