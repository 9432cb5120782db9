// run_polling_for_replies: the network threads' loop. It must behave like io_context::run()
// whether or not it polls: run every handler, end when the context is stopped (also while it
// polls) or runs out of work.
#include "backend/replicated/reply_poll.h"

#include <gtest/gtest.h>
#include <sys/types.h>
#include <unistd.h>

#include <atomic>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <fstream>
#include <future>
#include <string>
#include <thread>

namespace tandem::backend::replicated {
namespace {

namespace asio = boost::asio;
using namespace std::chrono_literals;

// Pretends replicated requests are outstanding for the test's lifetime.
struct Awaiting {
  explicit Awaiting(int64_t n) : n(n) { detail::awaiting_copies_add(n); }
  ~Awaiting() { detail::awaiting_copies_add(-n); }
  int64_t n;
};

TEST(ReplyPoll, WithoutAWindowItIsRun) {
  asio::io_context io;
  int ran = 0;
  for (int i = 0; i < 3; ++i) asio::post(io, [&] { ++ran; });
  Awaiting a(1);
  run_polling_for_replies(io, {});  // returns: out of work
  EXPECT_EQ(ran, 3);
}

TEST(ReplyPoll, PollingRunsHandlersFromOtherThreadsAndTimersAndEndsWhenOutOfWork) {
  asio::io_context io;
  Awaiting a(2);
  ASSERT_EQ(requests_awaiting_copies(), 2u);
  std::atomic<int> ran{0};
  auto guard = asio::make_work_guard(io);
  asio::steady_timer timer(io, 20ms);
  timer.async_wait([&](boost::system::error_code ec) {
    if (!ec) ran.fetch_add(10);
  });
  std::thread poster([&] {
    for (int i = 0; i < 100; ++i) asio::post(io, [&] { ran.fetch_add(1); });
    asio::post(io, [&] { guard.reset(); });  // the timer is the last work
  });
  auto f = std::async(std::launch::async, [&] { run_polling_for_replies(io, {10s, 10s}); });
  ASSERT_EQ(f.wait_for(10s), std::future_status::ready) << "did not end when out of work";
  poster.join();
  EXPECT_EQ(ran.load(), 110);
}

TEST(ReplyPoll, StopEndsItWhilePolling) {
  asio::io_context io;
  Awaiting a(1);
  auto guard = asio::make_work_guard(io);
  std::atomic<bool> started{false};
  asio::post(io, [&] { started = true; });
  auto f = std::async(std::launch::async, [&] { run_polling_for_replies(io, {10s, 0us}); });
  while (!started.load()) std::this_thread::yield();
  io.stop();  // the loop is polling (count > 0, window 10 s): it must still notice
  EXPECT_EQ(f.wait_for(5s), std::future_status::ready);
}

// Whether the loop polls or blocks is seen from outside as its thread's state: a thread
// blocked in epoll_wait is sleeping ('S' in /proc), a polling one is running or runnable.
char thread_state(pid_t tid) {
  std::ifstream in("/proc/self/task/" + std::to_string(tid) + "/stat");
  std::string line;
  std::getline(in, line);
  const auto paren = line.rfind(')');
  return paren != std::string::npos && paren + 2 < line.size() ? line[paren + 2] : '?';
}

// Waits (bounded) until the thread's state satisfies `want` in `in_a_row` consecutive reads.
template <typename Want>
bool settles(pid_t tid, Want want, int in_a_row) {
  int seen = 0;
  for (auto end = std::chrono::steady_clock::now() + 10s; std::chrono::steady_clock::now() < end;) {
    seen = want(thread_state(tid)) ? seen + 1 : 0;
    if (seen >= in_a_row) return true;
    std::this_thread::sleep_for(1ms);  // sampling interval, not synchronisation
  }
  return false;
}

// Runs the loop on a thread of its own with `w`; `body(tid)` runs while it does.
template <typename Body>
void with_loop(PollWindows w, Body body) {
  asio::io_context io;
  auto guard = asio::make_work_guard(io);
  std::atomic<pid_t> tid{0};
  asio::post(io, [&] { tid = ::gettid(); });
  auto f = std::async(std::launch::async, [&] { run_polling_for_replies(io, w); });
  while (tid.load() == 0) std::this_thread::yield();
  body(io, tid.load());
  io.stop();
  ASSERT_EQ(f.wait_for(5s), std::future_status::ready);
}

TEST(ReplyPoll, WithoutACopyFrameItSleeps) {
  detail::forget_copy_frames();
  bool slept = false;
  with_loop({0us, 10s}, [&](asio::io_context&, pid_t tid) {
    slept = settles(tid, [](char c) { return c == 'S'; }, 50);
  });
  EXPECT_TRUE(slept) << "polled without a copy frame in the window";
}

TEST(ReplyPoll, AfterACopyFrameItPolls) {
  bool polled = false;
  with_loop({0us, 10s}, [&](asio::io_context& io, pid_t tid) {
    note_copy_frame();  // a frame arrives, then a handler runs: it polls for the 10 s window
    asio::post(io, [] {});
    polled = settles(tid, [](char c) { return c == 'R'; }, 20);
  });
  EXPECT_TRUE(polled) << "slept within the window after a copy frame";
}

TEST(ReplyPoll, CopyWindowEndsTheSpin) {
  bool slept = false;
  note_copy_frame();
  with_loop({0us, 2ms}, [&](asio::io_context&, pid_t tid) {
    // 2 ms after the frame and the last handler it must block again.
    slept = settles(tid, [](char c) { return c == 'S'; }, 50);
  });
  EXPECT_TRUE(slept) << "kept polling after the window";
}

TEST(ReplyPoll, CountNeverReadsBelowZero) {
  detail::awaiting_copies_add(-1);
  EXPECT_EQ(requests_awaiting_copies(), 0u);
  detail::awaiting_copies_add(1);
  EXPECT_EQ(requests_awaiting_copies(), 0u);
}

}  // namespace
}  // namespace tandem::backend::replicated
