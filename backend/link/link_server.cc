#include "backend/link/link_server.h"

#include <atomic>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <exception>
#include <map>
#include <mutex>
#include <utility>

#include "backend/link/frame_pump.h"
#include "backend/transport/tls_stream.h"

namespace tandem::backend::link {
namespace {

namespace asio = boost::asio;
using boost::asio::ip::tcp;
using boost::system::error_code;
using namespace std::chrono;
constexpr auto kAwait = asio::as_tuple(asio::use_awaitable);
constexpr auto kBackoffAfterAcceptError = milliseconds(50);

void rethrow(std::exception_ptr e) {
  if (e) std::rethrow_exception(e);
}

core::Unexpected<LinkError> fail(LinkErrc code, std::string message) {
  return core::fail(LinkError{code, std::move(message)});
}

std::string endpoint_string(const tcp::endpoint& ep) {
  std::string host = ep.address().to_string();
  if (ep.address().is_v6()) host = "[" + host + "]";
  return host + ":" + std::to_string(ep.port());
}

}  // namespace
namespace detail {
class InboundConn;
}  // namespace detail

const char* to_string(ServerEvent::Kind k) {
  switch (k) {
    case ServerEvent::Kind::kPeerRefused:
      return "peer without a valid certificate refused";
    case ServerEvent::Kind::kHandshakeFailed:
      return "TLS handshake failed";
    case ServerEvent::Kind::kTooManyConnections:
      return "too many replication connections";
    case ServerEvent::Kind::kProtocolError:
      return "replication protocol error";
    case ServerEvent::Kind::kReplyOverflow:
      return "reply queue overflow";
  }
  return "?";
}

struct LinkServer::Impl : std::enable_shared_from_this<LinkServer::Impl> {
  Impl(asio::io_context& io, asio::ssl::context& tls, Options opt, std::shared_ptr<FrameHandler> h,
       EventCallback ev)
      : io(io),
        strand(asio::make_strand(io)),
        acceptor(strand),
        tls(tls),
        options(std::move(opt)),
        handler(std::move(h)),
        on_event(std::move(ev)),
        metrics(options.metrics ? options.metrics : std::make_shared<LinkMetrics>()) {}

  asio::awaitable<void> accept_loop();
  asio::awaitable<void> serve(tcp::socket socket);
  void event(ServerEvent::Kind kind, std::string remote, std::string peer, std::string reason) {
    if (on_event)
      on_event(ServerEvent{kind, std::move(remote), std::move(peer), std::move(reason)});
  }

  asio::io_context& io;
  asio::any_io_executor strand;
  tcp::acceptor acceptor;  // strand
  asio::ssl::context& tls;
  const Options options;
  std::shared_ptr<FrameHandler> handler;
  EventCallback on_event;
  std::shared_ptr<LinkMetrics> metrics;
  std::vector<uint8_t> hello_frame;
  detail::PumpOptions pump_options;
  uint16_t port = 0;

  // Runs the close() completion once the acceptor is closed and no connection is left.
  void maybe_closed() {
    std::function<void()> fn;
    {
      std::lock_guard lock(mu);
      if (!closed || !acceptor_closed || count.load() != 0 || !on_closed) return;
      fn = std::move(on_closed);
      on_closed = nullptr;
    }
    fn();
  }

  std::atomic<size_t> count{0};  // handshaking + established
  std::atomic<uint64_t> next_id{1};
  std::mutex mu;
  bool closed = false;
  bool acceptor_closed = false;
  std::function<void()> on_closed;
  std::map<uint64_t, std::weak_ptr<detail::InboundConn>> live;  // established connections
};

namespace detail {

class InboundConn final : public InboundConnection {
 public:
  InboundConn(uint64_t id, std::shared_ptr<LinkServer::Impl> server, transport::TlsConnection tls,
              std::string remote)
      : id_(id),
        server_(std::move(server)),
        tls_(std::move(tls)),
        remote_(std::move(remote)),
        pump_(std::make_shared<detail::FramePump>(tls_.stream.get_executor(), server_->pump_options,
                                                  server_->metrics)) {}

  SendStatus reply(std::vector<uint8_t>&& frame) override {
    if (!established_.load()) return SendStatus::kNotUp;
    const SendStatus st = pump_->push(std::move(frame));
    if (st == SendStatus::kBackPressure && !overflowed_.exchange(true)) {
      server_->metrics->reply_overflows.fetch_add(1, std::memory_order_relaxed);
      server_->event(ServerEvent::Kind::kReplyOverflow, remote_, peer_name(),
                     "connection from " + remote_ + " closed: reply queue over " +
                         std::to_string(server_->options.reply_budget_bytes) + " bytes");
      pump_->stop("reply queue overflow");
    }
    return st;
  }
  void close(std::string reason) override { pump_->stop(std::move(reason)); }
  uint64_t id() const override { return id_; }
  const std::string& peer_name() const override { return tls_.peer.common_name; }
  const std::string& remote() const override { return remote_; }
  const wire::Hello& peer_hello() const override { return hello_; }
  size_t queued_bytes() const override { return pump_->queued_bytes(); }
  void at_read_end(std::function<void()> fn) override { read_end_.push_back(std::move(fn)); }
  // On the strand, after each read's frames.
  void run_read_end() {
    while (!read_end_.empty()) {
      auto fns = std::move(read_end_);
      read_end_.clear();
      for (auto& fn : fns) fn();
    }
  }

  transport::TlsConnection& tls() { return tls_; }
  detail::FramePump& pump() { return *pump_; }
  void set_hello(wire::Hello h) { hello_ = std::move(h); }
  void set_established(bool on) { established_.store(on); }

 private:
  const uint64_t id_;
  std::shared_ptr<LinkServer::Impl> server_;
  transport::TlsConnection tls_;
  const std::string remote_;
  std::shared_ptr<detail::FramePump> pump_;
  wire::Hello hello_;  // written once on the strand before established_ is set
  std::atomic<bool> established_{false};
  std::atomic<bool> overflowed_{false};
  std::vector<std::function<void()>> read_end_;  // strand
};

}  // namespace detail

asio::awaitable<void> LinkServer::Impl::accept_loop() {
  auto self = shared_from_this();
  for (;;) {
    // Each connection gets its own strand (STYLE habit 6).
    auto [ec, socket] = co_await acceptor.async_accept(asio::make_strand(io), kAwait);
    if (!acceptor.is_open()) co_return;
    if (ec) {
      // EMFILE and friends: back off briefly rather than spin.
      asio::steady_timer pause(strand, kBackoffAfterAcceptError);
      co_await pause.async_wait(kAwait);
      continue;
    }
    error_code ignored;
    const std::string remote = endpoint_string(socket.remote_endpoint(ignored));
    if (count.load() >= options.max_connections) {
      socket.close(ignored);
      metrics->refused_limit.fetch_add(1, std::memory_order_relaxed);
      event(ServerEvent::Kind::kTooManyConnections, remote, {},
            "connection from " + remote + " closed: " + std::to_string(options.max_connections) +
                " replication connections already open");
      continue;
    }
    count.fetch_add(1);
    auto ex = socket.get_executor();
    asio::co_spawn(ex, serve(std::move(socket)), rethrow);
  }
}

asio::awaitable<void> LinkServer::Impl::serve(tcp::socket socket) {
  auto self = shared_from_this();
  struct Release {
    Impl& impl;
    ~Release() {
      impl.count.fetch_sub(1);
      impl.maybe_closed();
    }
  } release{*this};

  error_code ignored;
  const std::string remote = endpoint_string(socket.remote_endpoint(ignored));
  auto tls_conn =
      co_await transport::async_accept_tls(std::move(socket), tls, options.handshake_timeout);
  if (!tls_conn) {
    const auto code = tls_conn.error().code;
    const bool cert =
        code == transport::TlsErrc::kPeerRefused || code == transport::TlsErrc::kNoPeerCertificate;
    (cert ? metrics->refused_certificate : metrics->refused_handshake)
        .fetch_add(1, std::memory_order_relaxed);
    event(cert ? ServerEvent::Kind::kPeerRefused : ServerEvent::Kind::kHandshakeFailed, remote, {},
          tls_conn.error().message);
    co_return;
  }

  const uint64_t id = next_id.fetch_add(1);
  auto conn = std::make_shared<detail::InboundConn>(id, self, std::move(tls_conn).value(), remote);
  {
    std::lock_guard lock(mu);
    if (closed) co_return;
    live[id] = conn;
  }
  bool got_hello = false;
  bool protocol_error = false;
  const std::string reason = co_await conn->pump().run(
      conn->tls().stream,
      [&](wire::Frame&& f) -> std::optional<std::string> {
        if (!got_hello) {
          if (f.header.type != wire::FrameType::kHello) {
            protocol_error = true;
            return std::string("expected HELLO first, got ") + wire::to_string(f.header.type);
          }
          auto hello = wire::decode_hello(f.payload);
          if (!hello) {
            protocol_error = true;
            return "bad HELLO: " + hello.error().message;
          }
          got_hello = true;
          conn->set_hello(std::move(hello).value());
          (void)conn->pump().push_forced(std::vector<uint8_t>(hello_frame));
          conn->pump().enable_heartbeats();
          conn->set_established(true);
          metrics->accepted.fetch_add(1, std::memory_order_relaxed);
          handler->on_connection_up(conn);
          return std::nullopt;
        }
        if (f.header.type == wire::FrameType::kHello) {
          protocol_error = true;
          return std::string("second HELLO on one connection");
        }
        handler->on_frame(conn, f.header, std::move(f.payload));
        return std::nullopt;
      },
      [&] { conn->run_read_end(); });
  conn->set_established(false);
  {
    std::lock_guard lock(mu);
    live.erase(id);
  }
  if (protocol_error) metrics->protocol_errors.fetch_add(1, std::memory_order_relaxed);
  if (protocol_error || conn->pump().decode_failed()) {
    event(ServerEvent::Kind::kProtocolError, remote, conn->peer_name(),
          "connection from " + remote + " reset: " + reason);
  }
  if (got_hello) handler->on_connection_down(conn, reason);
}

LinkResult<std::unique_ptr<LinkServer>> LinkServer::start(asio::io_context& io,
                                                          asio::ssl::context& tls, Options options,
                                                          std::shared_ptr<FrameHandler> handler,
                                                          EventCallback on_event) {
  if (!handler) return fail(LinkErrc::kInvalidArgument, "link server needs a frame handler");
  const milliseconds zero{0};
  if (options.max_connections == 0 || options.reply_budget_bytes == 0 ||
      options.max_gather_bytes == 0 || options.handshake_timeout <= zero ||
      options.write_timeout <= zero || options.heartbeat_interval <= zero ||
      options.idle_timeout <= options.heartbeat_interval) {
    return fail(LinkErrc::kInvalidArgument,
                "link server limits must be positive, heartbeat shorter than idle timeout");
  }
  error_code ec;
  const auto address = asio::ip::make_address(options.bind_address, ec);
  if (ec) {
    return fail(LinkErrc::kInvalidArgument, "bad bind address '" + options.bind_address + "'");
  }
  auto payload = wire::encode_hello(options.hello);
  if (!payload) return fail(LinkErrc::kInvalidArgument, "our HELLO: " + payload.error().message);
  std::vector<uint8_t> hello_frame;
  wire::FrameHeader h;
  h.type = wire::FrameType::kHello;
  if (auto n = wire::encode(h, *payload, false, hello_frame); !n) {
    return fail(LinkErrc::kInvalidArgument, "our HELLO: " + n.error().message);
  }

  const tcp::endpoint endpoint(address, options.port);
  auto impl =
      std::make_shared<Impl>(io, tls, std::move(options), std::move(handler), std::move(on_event));
  impl->hello_frame = std::move(hello_frame);
  impl->pump_options.send_budget_bytes = impl->options.reply_budget_bytes;
  impl->pump_options.max_gather_bytes = impl->options.max_gather_bytes;
  impl->pump_options.write_timeout = impl->options.write_timeout;
  impl->pump_options.heartbeat_interval = impl->options.heartbeat_interval;
  impl->pump_options.idle_timeout = impl->options.idle_timeout;
  impl->pump_options.max_payload = impl->options.max_payload;

  auto& acc = impl->acceptor;
  acc.open(endpoint.protocol(), ec);
  if (!ec) acc.set_option(tcp::acceptor::reuse_address(true), ec);
  if (!ec) acc.bind(endpoint, ec);
  if (!ec) acc.listen(asio::socket_base::max_listen_connections, ec);
  tcp::endpoint local;
  if (!ec) local = acc.local_endpoint(ec);
  if (ec) {
    return fail(LinkErrc::kListen,
                "listening on " + endpoint_string(endpoint) + ": " + ec.message());
  }
  impl->port = local.port();
  asio::co_spawn(impl->strand, impl->accept_loop(), rethrow);
  return std::unique_ptr<LinkServer>(new LinkServer(std::move(impl)));
}

LinkServer::LinkServer(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}

LinkServer::~LinkServer() { close(); }

void LinkServer::close(std::function<void()> done) {
  std::vector<std::shared_ptr<detail::InboundConn>> conns;
  {
    std::lock_guard lock(impl_->mu);
    if (impl_->closed) return;
    impl_->closed = true;
    impl_->on_closed = std::move(done);
    for (auto& [id, weak] : impl_->live) {
      if (auto c = weak.lock()) conns.push_back(std::move(c));
    }
  }
  asio::post(impl_->strand, [impl = impl_] {
    error_code ec;
    impl->acceptor.close(ec);
    {
      std::lock_guard lock(impl->mu);
      impl->acceptor_closed = true;
    }
    impl->maybe_closed();
  });
  for (auto& c : conns) c->close("server closed");
}

uint16_t LinkServer::local_port() const { return impl_->port; }

size_t LinkServer::connection_count() const { return impl_->count.load(); }

LinkMetrics& LinkServer::metrics() { return *impl_->metrics; }

}  // namespace tandem::backend::link
