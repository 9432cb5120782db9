// run_polling_for_replies: the network threads' loop. It must behave like io_context::run()
// whether or not it polls: run every handler, end when the context is stopped (also while it
// polls) or runs out of work.
#include "backend/replicated/reply_poll.h"

#include <gtest/gtest.h>

#include <atomic>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <future>
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
  run_polling_for_replies(io, 0us);  // returns: out of work
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
  auto f = std::async(std::launch::async, [&] { run_polling_for_replies(io, 10s); });
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
  auto f = std::async(std::launch::async, [&] { run_polling_for_replies(io, 10s); });
  while (!started.load()) std::this_thread::yield();
  io.stop();  // the loop is polling (count > 0, window 10 s): it must still notice
  EXPECT_EQ(f.wait_for(5s), std::future_status::ready);
}

TEST(ReplyPoll, CountNeverReadsBelowZero) {
  detail::awaiting_copies_add(-1);
  EXPECT_EQ(requests_awaiting_copies(), 0u);
  detail::awaiting_copies_add(1);
  EXPECT_EQ(requests_awaiting_copies(), 0u);
}

}  // namespace
}  // namespace tandem::backend::replicated
