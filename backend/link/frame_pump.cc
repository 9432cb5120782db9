#include "backend/link/frame_pump.h"

#include <array>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_executor.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <cstring>
#include <utility>

namespace tandem::backend::link {

const char* to_string(SendStatus s) {
  switch (s) {
    case SendStatus::kQueued:
      return "queued";
    case SendStatus::kBackPressure:
      return "back-pressure";
    case SendStatus::kNotUp:
      return "not up";
    case SendStatus::kInvalid:
      return "invalid frame";
  }
  return "?";
}

namespace {
uint32_t load32(const uint8_t* p) {
  return uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24;
}
// Header offsets, see backend/wire/frame.h.
constexpr size_t kOffType = 5;
constexpr size_t kOffRawLen = 64;
constexpr size_t kOffWireLen = 68;
}  // namespace

bool inspect_encoded_frame(std::span<const uint8_t> frame, EncodedFrameInfo& out,
                           size_t body_bytes) {
  if (frame.size() < wire::kHeaderSize || load32(frame.data()) != wire::kMagic) return false;
  out.type = frame[kOffType];
  out.raw_len = load32(frame.data() + kOffRawLen);
  out.wire_len = load32(frame.data() + kOffWireLen);
  return frame.size() + body_bytes == wire::kHeaderSize + size_t(out.wire_len);
}

namespace detail {
namespace {

namespace asio = boost::asio;
using boost::system::error_code;
using namespace std::chrono;
constexpr auto kAwait = asio::as_tuple(asio::use_awaitable);

std::string millis(steady_clock::duration d) {
  return std::to_string(duration_cast<milliseconds>(d).count()) + " ms";
}

}  // namespace

FramePump::FramePump(asio::any_io_executor strand, PumpOptions options,
                     std::shared_ptr<LinkMetrics> metrics)
    : strand_(strand),
      options_(options),
      metrics_(std::move(metrics)),
      wake_(strand),
      tick_(strand) {
  // Link-level heartbeat: nil volume, consumed by the receiving link (never delivered).
  wire::FrameHeader h;
  h.type = wire::FrameType::kHeartbeat;
  auto n = wire::encode(h, {}, false, heartbeat_);
  if (!n) std::abort();  // a constant frame the codec refuses is a broken invariant
}

bool FramePump::fits_locked(size_t bytes) const {
  return queued_bytes_ == 0 || queued_bytes_ + bytes <= options_.send_budget_bytes;
}

SendStatus FramePump::push_impl(std::vector<uint8_t>&& frame, Body body, bool forced) {
  EncodedFrameInfo info;
  const size_t body_bytes = body ? body->size() : 0;
  if (!inspect_encoded_frame(frame, info, body_bytes)) return SendStatus::kInvalid;
  const size_t size = frame.size() + body_bytes;
  bool kick = false;
  {
    std::lock_guard lock(mu_);
    if (closed_) return SendStatus::kNotUp;
    if (!forced && !fits_locked(size)) {
      metrics_->send_refused.fetch_add(1, std::memory_order_relaxed);
      return SendStatus::kBackPressure;
    }
    queued_bytes_ += size;
    queue_.push_back(Entry{std::move(frame), std::move(body), forced});
    kick = std::exchange(writer_idle_, false);
  }
  // dispatch: a producer already on the strand (a master sharing its link's strand, a replica
  // answering on its connection's strand) starts the write in place: TLS seals the frame and
  // the socket takes it inside this call, with no hand-off through the scheduler (which wakes
  // the other network thread). Frames queued while that write is in flight go out together in
  // the next one.
  if (kick) asio::dispatch(strand_, [self = shared_from_this()] { self->start_write(); });
  return SendStatus::kQueued;
}

void FramePump::when_writable(size_t bytes, WritableFn fn) {
  std::optional<bool> now;
  {
    std::lock_guard lock(mu_);
    if (closed_) {
      now = false;
    } else if (fits_locked(bytes)) {
      now = true;
    } else {
      waiters_.push_back(Waiter{bytes, std::move(fn)});
    }
  }
  if (now) asio::post(strand_, [fn = std::move(fn), open = *now] { fn(open); });
}

size_t FramePump::queued_bytes() const {
  std::lock_guard lock(mu_);
  return queued_bytes_;
}

void FramePump::stop(std::string reason) {
  asio::post(strand_, [self = shared_from_this(), reason = std::move(reason)]() mutable {
    self->end(std::move(reason));
  });
}

void FramePump::end(std::string reason) {
  if (stopped_) return;
  stopped_ = true;
  end_reason_ = std::move(reason);
  {
    std::lock_guard lock(mu_);
    closed_ = true;  // refuse new frames at once; close_queue() counts what is left
  }
  error_code ec;
  if (stream_ != nullptr) stream_->lowest_layer().close(ec);  // aborts the read and write
  wake_.cancel();
  tick_.cancel();
}

void FramePump::close_queue() {
  std::vector<Waiter> waiters;
  {
    std::lock_guard lock(mu_);
    closed_ = true;
    dropped_ = inflight_;
    for (const auto& e : queue_) {
      if (e.internal) continue;
      ++dropped_.frames;
      dropped_.bytes += e.size();
    }
    queue_.clear();
    queued_bytes_ = 0;
    inflight_ = {};
    waiters.swap(waiters_);
  }
  metrics_->frames_dropped.fetch_add(dropped_.frames, std::memory_order_relaxed);
  for (auto& w : waiters) w.fn(false);
}

asio::awaitable<std::string> FramePump::run(transport::TlsSocket& stream, FrameFn on_frame,
                                            std::function<void()> on_read_end) {
  using namespace asio::experimental::awaitable_operators;
  stream_ = &stream;
  on_frame_ = std::move(on_frame);
  on_read_end_ = std::move(on_read_end);
  last_read_ = last_write_ = Clock::now();
  if (!stopped_) {
    co_await (read_loop() && write_loop() && watchdog());
  } else {
    error_code ec;
    stream.lowest_layer().close(ec);
  }
  close_queue();
  stream_ = nullptr;
  on_frame_ = nullptr;
  on_read_end_ = nullptr;
  metrics_->disconnects.fetch_add(1, std::memory_order_relaxed);
  co_return end_reason_;
}

asio::awaitable<void> FramePump::read_loop() {
  std::vector<uint8_t> buf(64u << 10);
  wire::FrameDecoder decoder(options_.max_payload);
  for (;;) {
    auto [ec, n] = co_await stream_->async_read_some(asio::buffer(buf), kAwait);
    if (stopped_) co_return;
    if (ec) {
      const bool closed = ec == asio::error::eof || ec == asio::ssl::error::stream_truncated;
      end(closed ? "peer closed the connection" : "read failed: " + ec.message());
      co_return;
    }
    last_read_ = Clock::now();
    metrics_->bytes_received_wire.fetch_add(n, std::memory_order_relaxed);
    std::span<const uint8_t> in(buf.data(), n);
    while (!in.empty()) {
      auto step = decoder.feed(in);
      if (!step) {
        metrics_->protocol_errors.fetch_add(1, std::memory_order_relaxed);
        decode_failed_ = true;
        if (on_read_end_) on_read_end_();
        end(std::string("bad frame from peer (") + wire::to_string(step.error().code) +
            "): " + step.error().message);
        co_return;
      }
      in = in.subspan(step->consumed);
      if (step->status != wire::FrameDecoder::Status::kFrame) continue;
      wire::Frame frame = decoder.take();
      metrics_->frames_received.fetch_add(1, std::memory_order_relaxed);
      metrics_->bytes_received_raw.fetch_add(wire::kHeaderSize + frame.payload.size(),
                                             std::memory_order_relaxed);
      if (frame.header.type == wire::FrameType::kHeartbeat && frame.header.volume == wire::Uuid{}) {
        continue;  // link-level heartbeat: its arrival already refreshed last_read_
      }
      if (auto reason = on_frame_(std::move(frame))) {
        if (on_read_end_) on_read_end_();
        end(std::move(*reason));
        co_return;
      }
      if (stopped_) break;
    }
    if (on_read_end_) on_read_end_();
    if (stopped_) co_return;
  }
}

asio::awaitable<void> FramePump::write_loop() {
  // Writes are started by start_write() (here, by push() on an idle writer, and by each write's
  // completion); this loop only keeps run() going until the session ended and the write in
  // flight finished (the stream and the batch must outlive it).
  start_write();
  while (!stopped_ || write_in_flight_) {
    wake_.expires_at(Clock::time_point::max());
    co_await wake_.async_wait(kAwait);  // cancelled by end() and by a write ending after it
  }
}

void FramePump::start_write() {
  if (write_in_flight_ || stopped_ || stream_ == nullptr) return;
  batch_.clear();
  batch_bytes_ = 0;
  {
    std::lock_guard lock(mu_);
    if (closed_) return;
    inflight_ = {};
    while (!queue_.empty() &&
           (batch_.empty() || batch_bytes_ + queue_.front().size() <= options_.max_gather_bytes)) {
      Entry& e = queue_.front();
      batch_bytes_ += e.size();
      if (!e.internal) {
        ++inflight_.frames;
        inflight_.bytes += e.size();
      }
      batch_.push_back(std::move(e));
      queue_.pop_front();
    }
    if (batch_.empty()) {
      writer_idle_ = true;  // the next push() starts the write
      return;
    }
  }
  batch_raw_ = 0;
  for (const auto& f : batch_) {
    EncodedFrameInfo info;
    if (inspect_encoded_frame(f.bytes, info, f.body ? f.body->size() : 0)) {
      batch_raw_ += wire::kHeaderSize + info.raw_len;
    }
  }
  std::array<asio::const_buffer, 2> out;
  if (batch_.size() == 1 && (!batch_.front().body || batch_bytes_ > options_.max_gather_bytes)) {
    // One large frame: head and shared body as they are (the head costs one small record;
    // a small frame is joined below so it stays one record and one syscall).
    out[0] = asio::buffer(batch_.front().bytes);
    if (batch_.front().body) out[1] = asio::buffer(*batch_.front().body);
  } else {
    // The SSL stream writes one buffer per record anyway: join small frames so a burst
    // becomes few records and one syscall.
    joined_.clear();
    joined_.reserve(batch_bytes_);
    for (const auto& f : batch_) {
      joined_.insert(joined_.end(), f.bytes.begin(), f.bytes.end());
      if (f.body) joined_.insert(joined_.end(), f.body->begin(), f.body->end());
    }
    out[0] = asio::buffer(joined_);
  }
  write_in_flight_ = true;
  write_started_ = Clock::now();
  asio::async_write(
      *stream_, out,
      asio::bind_executor(
          strand_, [self = shared_from_this()](error_code ec, size_t) { self->on_written(ec); }));
}

void FramePump::on_written(error_code ec) {
  write_in_flight_ = false;
  if (stopped_) {
    wake_.cancel();  // write_loop() waits for this write before run() ends
    return;
  }
  if (ec) {
    end("write failed: " + ec.message());
    return;
  }
  last_write_ = Clock::now();
  metrics_->writes.fetch_add(1, std::memory_order_relaxed);
  metrics_->frames_sent.fetch_add(batch_.size(), std::memory_order_relaxed);
  metrics_->bytes_sent_wire.fetch_add(batch_bytes_, std::memory_order_relaxed);
  metrics_->bytes_sent_raw.fetch_add(batch_raw_, std::memory_order_relaxed);
  batch_.clear();  // releases shared payloads now, not at the next write

  std::vector<Waiter> ready;
  {
    std::lock_guard lock(mu_);
    queued_bytes_ -= batch_bytes_;
    inflight_ = {};
    for (auto it = waiters_.begin(); it != waiters_.end();) {
      if (fits_locked(it->bytes)) {
        ready.push_back(std::move(*it));
        it = waiters_.erase(it);
      } else {
        ++it;
      }
    }
  }
  for (auto& w : ready) w.fn(true);
  start_write();
}

asio::awaitable<void> FramePump::watchdog() {
  auto period =
      std::min({options_.heartbeat_interval, options_.idle_timeout, options_.write_timeout}) / 4;
  period = std::clamp(period, milliseconds(5), milliseconds(250));
  for (;;) {
    tick_.expires_after(period);
    co_await tick_.async_wait(kAwait);
    if (stopped_) co_return;
    const auto now = Clock::now();
    if (now - last_read_ >= options_.idle_timeout) {
      metrics_->idle_timeouts.fetch_add(1, std::memory_order_relaxed);
      end("peer silent for " + millis(now - last_read_) + " (idle timeout)");
      co_return;
    }
    if (write_in_flight_ && now - write_started_ >= options_.write_timeout) {
      metrics_->write_timeouts.fetch_add(1, std::memory_order_relaxed);
      end("write stalled for " + millis(now - write_started_) + " (write deadline)");
      co_return;
    }
    if (heartbeats_on_ && !write_in_flight_ && now - last_write_ >= options_.heartbeat_interval) {
      bool idle;
      {
        std::lock_guard lock(mu_);
        idle = queue_.empty();
      }
      if (idle && push_forced(std::vector<uint8_t>(heartbeat_)) == SendStatus::kQueued) {
        metrics_->heartbeats_sent.fetch_add(1, std::memory_order_relaxed);
      }
      last_write_ = now;  // one heartbeat per interval, even before it is written
    }
  }
}

}  // namespace detail
}  // namespace tandem::backend::link
