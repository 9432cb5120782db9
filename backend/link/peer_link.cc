#include "backend/link/peer_link.h"

#include <atomic>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <exception>
#include <mutex>
#include <utility>

#include "backend/link/frame_pump.h"
#include "backend/transport/tls_stream.h"

namespace tandem::backend::link {
namespace {

namespace asio = boost::asio;
using namespace std::chrono;
constexpr auto kAwait = asio::as_tuple(asio::use_awaitable);

void rethrow(std::exception_ptr e) {
  if (e) std::rethrow_exception(e);
}

core::Unexpected<LinkError> invalid(std::string message) {
  return core::fail(LinkError{LinkErrc::kInvalidArgument, std::move(message)});
}

}  // namespace

const char* to_string(PeerLink::State s) {
  switch (s) {
    case PeerLink::State::kConnecting:
      return "connecting";
    case PeerLink::State::kUp:
      return "up";
    case PeerLink::State::kDown:
      return "down";
    case PeerLink::State::kClosed:
      return "closed";
  }
  return "?";
}

struct PeerLink::Impl : std::enable_shared_from_this<PeerLink::Impl> {
  Impl(asio::any_io_executor ex, asio::ssl::context& tls, Options opt, FrameCallback frame_cb,
       StateCallback state_cb)
      : strand(std::move(ex)),
        tls(tls),
        options(std::move(opt)),
        on_frame(std::move(frame_cb)),
        on_state(std::move(state_cb)),
        metrics(options.metrics ? options.metrics : std::make_shared<LinkMetrics>()),
        closer(strand) {}

  asio::awaitable<void> run();
  asio::awaitable<bool> pause(milliseconds delay);  // false when closing
  void report(StateChange change) {
    state.store(change.state);
    if (on_state) on_state(change);
  }
  bool is_closing() {
    std::lock_guard lock(mu);
    return closing;
  }

  asio::any_io_executor strand;
  asio::ssl::context& tls;
  const Options options;
  FrameCallback on_frame;  // strand
  StateCallback on_state;  // strand
  std::shared_ptr<LinkMetrics> metrics;
  std::vector<uint8_t> hello_frame;
  std::atomic<State> state{State::kConnecting};

  std::mutex mu;
  std::shared_ptr<detail::FramePump> pump;  // the current session, if any
  bool up = false;
  bool closing = false;

  asio::steady_timer closer;  // strand: never expires; close() cancels it to interrupt waits
};

asio::awaitable<bool> PeerLink::Impl::pause(milliseconds delay) {
  using namespace asio::experimental::awaitable_operators;
  if (is_closing()) co_return false;
  asio::steady_timer t(strand, delay);
  closer.expires_at(steady_clock::time_point::max());
  co_await (t.async_wait(kAwait) || closer.async_wait(kAwait));
  co_return !is_closing();
}

asio::awaitable<void> PeerLink::Impl::run() {
  using namespace asio::experimental::awaitable_operators;
  auto self = shared_from_this();
  detail::PumpOptions pump_options;
  pump_options.send_budget_bytes = options.send_budget_bytes;
  pump_options.max_gather_bytes = options.max_gather_bytes;
  pump_options.write_timeout = options.write_timeout;
  pump_options.heartbeat_interval = options.heartbeat_interval;
  pump_options.idle_timeout = options.idle_timeout;
  pump_options.max_payload = options.max_payload;

  uint32_t attempt = 0;
  bool tried_before = false;
  milliseconds delay = options.backoff_min;
  detail::FramePump::Dropped last_dropped;
  std::string close_reason = "link closed";

  while (!is_closing()) {
    ++attempt;
    report(StateChange{State::kConnecting, {}, 0, 0, attempt, {}});
    closer.expires_at(steady_clock::time_point::max());
    auto connected =
        co_await (transport::async_connect_tls(strand, options.host, options.port, tls,
                                               options.connect_timeout, options.peer_name) ||
                  closer.async_wait(kAwait));
    if (is_closing() || connected.index() == 1) break;
    auto& result = std::get<0>(connected);
    if (!result) {
      metrics->connect_failures.fetch_add(1, std::memory_order_relaxed);
      tried_before = true;
      report(StateChange{State::kDown, result.error().message, 0, 0, attempt, {}});
      if (!co_await pause(delay)) break;
      delay = std::min(delay * 2, options.backoff_max);
      continue;
    }
    auto conn = std::make_unique<transport::TlsConnection>(std::move(result).value());

    auto pump = std::make_shared<detail::FramePump>(strand, pump_options, metrics);
    (void)pump->push_forced(std::vector<uint8_t>(hello_frame));  // HELLO first, always
    pump->enable_heartbeats();
    {
      std::lock_guard lock(mu);
      if (closing) break;
      this->pump = pump;
    }
    bool got_hello = false;
    std::string reason =
        co_await pump->run(conn->stream, [&](wire::Frame&& f) -> std::optional<std::string> {
          if (!got_hello) {
            if (f.header.type != wire::FrameType::kHello) {
              metrics->protocol_errors.fetch_add(1, std::memory_order_relaxed);
              return std::string("peer sent ") + wire::to_string(f.header.type) + " before HELLO";
            }
            auto hello = wire::decode_hello(f.payload);
            if (!hello) {
              metrics->protocol_errors.fetch_add(1, std::memory_order_relaxed);
              return "bad HELLO from peer: " + hello.error().message;
            }
            got_hello = true;
            {
              std::lock_guard lock(mu);
              up = true;
            }
            metrics->connects.fetch_add(1, std::memory_order_relaxed);
            if (tried_before) metrics->reconnects.fetch_add(1, std::memory_order_relaxed);
            tried_before = true;
            report(StateChange{State::kUp, {}, 0, 0, attempt, std::move(hello).value()});
            attempt = 0;
            delay = options.backoff_min;
            return std::nullopt;
          }
          if (f.header.type == wire::FrameType::kHello) {
            metrics->protocol_errors.fetch_add(1, std::memory_order_relaxed);
            return std::string("peer sent a second HELLO");
          }
          if (on_frame) on_frame(f.header, std::move(f.payload));
          return std::nullopt;
        });
    {
      std::lock_guard lock(mu);
      up = false;
      this->pump.reset();
    }
    conn.reset();
    last_dropped = pump->dropped();
    if (is_closing()) {
      close_reason = reason;
      break;
    }
    if (!got_hello) metrics->connect_failures.fetch_add(1, std::memory_order_relaxed);
    tried_before = true;
    report(StateChange{State::kDown, reason, last_dropped.frames, last_dropped.bytes, attempt, {}});
    last_dropped = {};
    if (!co_await pause(delay)) break;
    if (!got_hello) delay = std::min(delay * 2, options.backoff_max);
  }
  report(StateChange{State::kClosed, close_reason, last_dropped.frames, last_dropped.bytes, 0, {}});
  on_frame = nullptr;  // the last callback: release whatever the callbacks captured
  on_state = nullptr;
}

LinkResult<std::unique_ptr<PeerLink>> PeerLink::create(asio::io_context& io,
                                                       asio::ssl::context& tls, Options options,
                                                       FrameCallback on_frame,
                                                       StateCallback on_state) {
  return create(io, asio::make_strand(io), tls, std::move(options), std::move(on_frame),
                std::move(on_state));
}

LinkResult<std::unique_ptr<PeerLink>> PeerLink::create(asio::io_context& /*io*/,
                                                       asio::any_io_executor strand,
                                                       asio::ssl::context& tls, Options options,
                                                       FrameCallback on_frame,
                                                       StateCallback on_state) {
  if (options.peer_name.empty()) return invalid("peer link needs the peer's node name");
  if (options.host.empty() || options.port == 0) return invalid("peer link needs host and port");
  if (options.send_budget_bytes == 0 || options.max_gather_bytes == 0) {
    return invalid("peer link needs a positive send budget and gather size");
  }
  const milliseconds zero{0};
  if (options.connect_timeout <= zero || options.write_timeout <= zero ||
      options.heartbeat_interval <= zero || options.idle_timeout <= zero ||
      options.backoff_min <= zero || options.backoff_max < options.backoff_min) {
    return invalid("peer link timeouts and backoff must be positive (min <= max)");
  }
  if (options.heartbeat_interval >= options.idle_timeout) {
    return invalid("heartbeat interval must be shorter than the idle timeout");
  }
  std::vector<uint8_t> hello_frame;
  auto payload = wire::encode_hello(options.hello);
  if (!payload) return invalid("our HELLO: " + payload.error().message);
  wire::FrameHeader h;
  h.type = wire::FrameType::kHello;
  if (auto n = wire::encode(h, *payload, false, hello_frame); !n) {
    return invalid("our HELLO: " + n.error().message);
  }
  auto impl = std::make_shared<Impl>(std::move(strand), tls, std::move(options),
                                     std::move(on_frame), std::move(on_state));
  impl->hello_frame = std::move(hello_frame);
  // Started by a post, never inline: co_spawn would otherwise run the first steps (and maybe
  // a state callback) inside create(), on a caller that may hold its own locks.
  asio::post(impl->strand,
             [impl] { asio::co_spawn(impl->strand, impl->run(), rethrow); });
  return std::unique_ptr<PeerLink>(new PeerLink(std::move(impl)));
}

PeerLink::PeerLink(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}

PeerLink::~PeerLink() { close(); }

SendStatus PeerLink::send(std::vector<uint8_t>&& frame) { return send(std::move(frame), nullptr); }

SendStatus PeerLink::send(std::vector<uint8_t>&& head,
                          std::shared_ptr<const std::vector<uint8_t>> body) {
  std::shared_ptr<detail::FramePump> pump;
  {
    std::lock_guard lock(impl_->mu);
    if (impl_->up) pump = impl_->pump;
  }
  if (!pump) return SendStatus::kNotUp;
  return pump->push(std::move(head), std::move(body));
}

void PeerLink::when_writable(size_t bytes, std::function<void(bool up)> fn) {
  std::shared_ptr<detail::FramePump> pump;
  {
    std::lock_guard lock(impl_->mu);
    if (impl_->up) pump = impl_->pump;
  }
  if (!pump) {
    asio::post(impl_->strand, [fn = std::move(fn)] { fn(false); });
    return;
  }
  pump->when_writable(bytes, std::move(fn));
}

void PeerLink::close() {
  std::shared_ptr<detail::FramePump> pump;
  {
    std::lock_guard lock(impl_->mu);
    if (impl_->closing) return;
    impl_->closing = true;
    pump = impl_->pump;
  }
  if (pump) pump->stop("link closed");
  asio::post(impl_->strand, [impl = impl_] { impl->closer.cancel(); });
}

PeerLink::State PeerLink::state() const { return impl_->state.load(); }

size_t PeerLink::queued_bytes() const {
  std::lock_guard lock(impl_->mu);
  return impl_->pump ? impl_->pump->queued_bytes() : 0;
}

const std::string& PeerLink::peer_name() const { return impl_->options.peer_name; }

LinkMetrics& PeerLink::metrics() { return *impl_->metrics; }

}  // namespace tandem::backend::link
