#include "backend/replicated/reply_poll.h"

#include <atomic>
#include <boost/asio/io_context.hpp>

namespace tandem::backend::replicated {

namespace {
std::atomic<int64_t> g_awaiting{0};
}

uint64_t requests_awaiting_copies() {
  const int64_t n = g_awaiting.load(std::memory_order_relaxed);
  return n > 0 ? static_cast<uint64_t>(n) : 0;
}

void detail::awaiting_copies_add(int64_t delta) {
  g_awaiting.fetch_add(delta, std::memory_order_relaxed);
}

void run_polling_for_replies(boost::asio::io_context& io, std::chrono::microseconds window) {
  using Clock = std::chrono::steady_clock;
  if (window.count() <= 0) {
    io.run();
    return;
  }
  auto last = Clock::now();
  while (!io.stopped()) {
    if (io.poll() > 0) {
      last = Clock::now();
      continue;
    }
    // poll() also returns 0 when io ran out of work or was stopped: the loop's test or
    // run_one() ends it then.
    if (requests_awaiting_copies() > 0 && Clock::now() - last < window) continue;
    if (io.run_one() == 0) break;
    last = Clock::now();
  }
}

}  // namespace tandem::backend::replicated
