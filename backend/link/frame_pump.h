// Internal to backend/link (not for other folders): the frame pump of one TLS connection —
// a byte-budgeted send queue drained by gathered writes, a FrameDecoder read loop, and a
// watchdog for heartbeats, the read idle timeout and stalled writes. Shared by PeerLink and
// LinkServer. Owned by a shared_ptr; push / when_writable / stop / queued_bytes from any thread
// (mutex); run() and every callback on the connection's strand (the constructor's executor).
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "backend/link/link_types.h"
#include "backend/transport/tls_stream.h"
#include "backend/wire/frame.h"

namespace tandem::backend::link::detail {

struct PumpOptions {
  size_t send_budget_bytes = 64u << 20;
  size_t max_gather_bytes = 256u << 10;  // frames below this are joined into one write
  std::chrono::milliseconds write_timeout{10'000};
  std::chrono::milliseconds heartbeat_interval{1'000};
  std::chrono::milliseconds idle_timeout{5'000};
  uint32_t max_payload = wire::kMaxPayload;
};

class FramePump : public std::enable_shared_from_this<FramePump> {
 public:
  // Returns a reason to end the session, or nullopt to read on.
  using FrameFn = std::function<std::optional<std::string>(wire::Frame&&)>;
  using WritableFn = std::function<void(bool open)>;
  struct Dropped {
    uint64_t frames = 0;
    uint64_t bytes = 0;
  };

  FramePump(boost::asio::any_io_executor strand, PumpOptions options,
            std::shared_ptr<LinkMetrics> metrics);

  // Any thread. push() honours the budget: a frame is refused (kBackPressure) when queued
  // bytes (including the write in flight) plus its size exceed the budget, unless nothing is
  // queued (so one frame larger than the budget still goes). push_forced() skips the budget
  // (HELLO, heartbeats). kNotUp once the session has ended.
  // `frame` is moved from only when kQueued.
  // A frame may come in two parts: its head in `frame` and the rest in a shared `body` (one
  // payload sent on several links without a copy, see wire::EncodedPayload).
  using Body = std::shared_ptr<const std::vector<uint8_t>>;
  SendStatus push(std::vector<uint8_t>&& frame, Body body = nullptr) {
    return push_impl(std::move(frame), std::move(body), false);
  }
  SendStatus push_forced(std::vector<uint8_t>&& frame) {
    return push_impl(std::move(frame), nullptr, true);
  }
  // Any thread. Calls fn(true) on the strand once `bytes` more would be accepted, or
  // fn(false) when the session ends first. One shot.
  void when_writable(size_t bytes, WritableFn fn);
  size_t queued_bytes() const;
  // On the strand: start sending link-level heartbeats when idle. Called once our HELLO is
  // queued, so that HELLO is always the first frame we send (backend/wire/frame.h).
  void enable_heartbeats() { heartbeats_on_ = true; }
  // Any thread: ends the session with `reason` (first reason wins).
  void stop(std::string reason);

  // On the strand: pumps `stream` until the session ends, then closes the queue (pending
  // frames are dropped, see dropped()) and returns why it ended. Call once; `stream` must
  // outlive the returned awaitable.
  // `on_read_end` (optional) runs after the frames of each socket read were handed over.
  boost::asio::awaitable<std::string> run(transport::TlsSocket& stream, FrameFn on_frame,
                                          std::function<void()> on_read_end = {});
  // After run(): caller frames (and bytes) queued or being written when the session ended
  // (HELLO and heartbeats from push_forced are not counted).
  Dropped dropped() const { return dropped_; }
  // After run(): whether the session ended on a frame the decoder refused.
  bool decode_failed() const { return decode_failed_; }

 private:
  SendStatus push_impl(std::vector<uint8_t>&& frame, Body body, bool forced);
  bool fits_locked(size_t bytes) const;
  void end(std::string reason);  // strand
  void close_queue();            // strand
  boost::asio::awaitable<void> read_loop();
  boost::asio::awaitable<void> write_loop();
  void start_write();  // strand: writes the queue's head batch unless a write is in flight
  void on_written(boost::system::error_code ec);  // strand
  boost::asio::awaitable<void> watchdog();

  using Clock = std::chrono::steady_clock;
  struct Waiter {
    size_t bytes;
    WritableFn fn;
  };

  boost::asio::any_io_executor strand_;
  PumpOptions options_;
  std::shared_ptr<LinkMetrics> metrics_;
  std::vector<uint8_t> heartbeat_;

  // Guarded by mu_ (touched by producers on any thread).
  mutable std::mutex mu_;
  struct Entry {
    std::vector<uint8_t> bytes;  // the frame, or its head when `body` is set
    Body body;
    bool internal;  // pushed with push_forced: not the caller's, never reported dropped
    size_t size() const { return bytes.size() + (body ? body->size() : 0); }
  };
  std::deque<Entry> queue_;
  size_t queued_bytes_ = 0;  // queue_ plus the batch being written
  Dropped inflight_;         // caller frames in the batch being written
  bool writer_idle_ = false;
  bool closed_ = false;
  std::vector<Waiter> waiters_;

  // On the strand.
  boost::asio::steady_timer wake_;  // write_loop() waits on it for the session's end
  boost::asio::steady_timer tick_;  // watchdog period
  transport::TlsSocket* stream_ = nullptr;
  FrameFn on_frame_;
  std::function<void()> on_read_end_;
  bool stopped_ = false;
  std::string end_reason_;
  Clock::time_point last_read_{};
  Clock::time_point last_write_{};
  Clock::time_point write_started_{};
  bool write_in_flight_ = false;
  std::vector<Entry> batch_;     // the frames of the write in flight
  std::vector<uint8_t> joined_;  // their bytes when joined into one buffer
  size_t batch_bytes_ = 0;
  uint64_t batch_raw_ = 0;
  bool heartbeats_on_ = false;
  Dropped dropped_;
  bool decode_failed_ = false;
};

}  // namespace tandem::backend::link::detail
