// The discrete-event core both simulations run on (sim_world_impl.h, sim_cluster_impl.h): a
// simulated clock in microseconds, a queue of events ordered by (time, insertion), the first
// failure, and a bounded trace of recent events. Test-only, single-threaded.
#pragma once

#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <deque>
#include <functional>
#include <queue>
#include <string>
#include <vector>

namespace tandem::sim {

// std::visit over a set of lambdas.
template <class... Ts>
struct Overloaded : Ts... {
  using Ts::operator()...;
};
template <class... Ts>
Overloaded(Ts...) -> Overloaded<Ts...>;

class SimLoop {
 protected:
  explicit SimLoop(bool trace, size_t trace_lines = 400)
      : trace_(trace), trace_keep_(trace_lines) {}

  void at(uint64_t delay, std::function<void()> fn) {
    events_.push(Event{now_ + delay, order_++, std::move(fn)});
  }
  // Runs the next event; false when none is left.
  bool step() {
    if (events_.empty()) return false;
    Event e = events_.top();
    events_.pop();
    now_ = e.time;
    ++event_count_;
    e.fn();
    return true;
  }
  // Records the first broken invariant (the run stops at the next check of failed_).
  void fail(const std::string& msg) {
    if (!failed_) {
      failed_ = true;
      failure_ = "t=" + std::to_string(now_) + "us: " + msg;
    }
  }
  void log(const char* fmt, ...) __attribute__((format(printf, 2, 3))) {
    if (!trace_) return;
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    std::vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    trace_lines_.push_back(std::to_string(now_) + " " + buf);
    if (trace_lines_.size() > trace_keep_) trace_lines_.pop_front();
  }
  std::string trace_text() const {
    std::string out;
    for (const std::string& l : trace_lines_) out += l + "\n";
    return out;
  }

  bool trace_;
  uint64_t now_ = 0, order_ = 0, event_count_ = 0;
  bool failed_ = false;
  std::string failure_;

 private:
  struct Event {
    uint64_t time, order;
    std::function<void()> fn;
  };
  struct Later {
    bool operator()(const Event& a, const Event& b) const {
      return a.time != b.time ? a.time > b.time : a.order > b.order;
    }
  };
  size_t trace_keep_;
  std::priority_queue<Event, std::vector<Event>, Later> events_;
  std::deque<std::string> trace_lines_;
};

}  // namespace tandem::sim
