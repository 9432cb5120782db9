#include "mgmt/http/server.h"

#include <spdlog/spdlog.h>

#include <boost/asio.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <array>
#include <chrono>
#include <list>
#include <mutex>

#include "mgmt/api/router.h"
#include "mgmt/metrics.h"

namespace tandem::mgmt {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

namespace {

HttpResponse error_body(int status, const std::string& code, const std::string& msg) {
  HttpResponse r;
  r.status = status;
  r.body = "{\"error\":{\"code\":\"" + code + "\",\"message\":\"" + msg + "\"}}";
  return r;
}

http::response<http::string_body> to_beast(const HttpResponse& r, unsigned version,
                                           bool keep_alive) {
  http::response<http::string_body> res{static_cast<http::status>(r.status), version};
  res.set(http::field::server, "tandemd/" TANDEM_VERSION);
  if (!r.content_type.empty()) res.set(http::field::content_type, r.content_type);
  for (const auto& [k, v] : r.headers) res.set(k, v);
  res.keep_alive(keep_alive);
  res.body() = r.body;
  res.prepare_payload();
  return res;
}

}  // namespace

// Shared between the server object and its coroutines, so a connection that outlives
// stop() still finds valid state.
struct HttpServer::Impl : std::enable_shared_from_this<HttpServer::Impl> {
  using Pools = HttpServer::Pools;
  struct Conn {
    uint64_t id = 0;
    beast::tcp_stream* stream = nullptr;
    bool busy = false;  // a request is being handled or answered
  };

  asio::io_context& ioc;
  Pools pools;
  const Router& router;
  Metrics& metrics;
  HttpServerOptions opts;
  tcp::acceptor acceptor;
  std::mutex mu;
  std::list<Conn> conns;
  bool stopping = false;
  uint64_t next_id = 1;
  std::function<void()> drained;

  // Runs on the connection's strand, so the coroutine that owns the stream is suspended:
  // the stream is alive exactly when its entry is still listed.
  void cancel_if_idle(uint64_t id) {
    std::lock_guard lock(mu);
    for (auto& c : conns) {
      if (c.id == id && !c.busy) c.stream->cancel();
    }
  }

  Impl(asio::io_context& c, Pools p, const Router& r, Metrics& m, HttpServerOptions o)
      : ioc(c), pools(p), router(r), metrics(m), opts(std::move(o)), acceptor(c) {}

  asio::thread_pool& pool_of(Lane lane) const {
    switch (lane) {
      case Lane::kSlow:
        return *pools.slow;
      case Lane::kForward:
        return *pools.forward;
      default:
        return *pools.control;
    }
  }

  // Runs the route on the thread its lane asks for; the coroutine resumes on the connection's
  // strand. Never throws: an exception out of a handler (the router catches JSON ones) is a
  // 500, and the connection goes on.
  asio::awaitable<HttpResponse> handle(const HttpRequest& r, std::string* route) {
    try {
      Lane lane = router.lane(r);
      if (lane == Lane::kInline) co_return router.handle(r, route);
      co_return co_await asio::co_spawn(
          pool_of(lane),
          [&]() -> asio::awaitable<HttpResponse> { co_return router.handle(r, route); },
          asio::use_awaitable);
    } catch (const std::exception& e) {
      spdlog::error("http: {} {}: {}", r.method, r.path, e.what());
      co_return error_body(500, "internal", "the request failed on this node");
    }
  }

  asio::awaitable<void> accept_loop() {
    for (;;) {
      auto [ec, sock] = co_await acceptor.async_accept(asio::make_strand(ioc),
                                                       asio::as_tuple(asio::use_awaitable));
      if (ec) {
        if (ec == asio::error::operation_aborted || !acceptor.is_open()) co_return;
        spdlog::warn("http: accept failed: {}", ec.message());
        continue;
      }
      auto exec = sock.get_executor();
      asio::co_spawn(exec, serve(std::move(sock)), asio::detached);
    }
  }

  void finish(std::list<Conn>::iterator it) {
    std::function<void()> done;
    {
      std::lock_guard lock(mu);
      conns.erase(it);
      if (stopping && conns.empty() && drained) done = std::exchange(drained, nullptr);
    }
    if (done) asio::post(ioc, done);
  }

  // After refusing an oversized body, stop sending and discard what the client is still
  // sending (bounded in bytes and time), so it can read our 413 instead of a reset.
  static asio::awaitable<void> drain(beast::tcp_stream& stream) {
    beast::error_code ec;
    stream.socket().shutdown(tcp::socket::shutdown_send, ec);
    std::array<char, 64 * 1024> scratch;
    size_t total = 0;
    stream.expires_after(std::chrono::seconds(5));
    while (total < (64u << 20)) {
      auto [rec, n] = co_await stream.async_read_some(asio::buffer(scratch),
                                                      asio::as_tuple(asio::use_awaitable));
      if (rec) break;
      total += n;
    }
  }

  asio::awaitable<void> serve(tcp::socket sock) {
    auto self = shared_from_this();
    beast::tcp_stream stream(std::move(sock));
    std::list<Conn>::iterator me;
    {
      std::lock_guard lock(mu);
      if (stopping) co_return;
      me = conns.insert(conns.end(), Conn{next_id++, &stream, false});
    }
    beast::flat_buffer buffer;
    for (;;) {
      http::request_parser<http::string_body> parser;
      parser.body_limit(opts.body_limit);
      parser.header_limit(16 * 1024);
      stream.expires_after(std::chrono::seconds(opts.read_timeout_s));
      auto [ec, n] =
          co_await http::async_read(stream, buffer, parser, asio::as_tuple(asio::use_awaitable));
      bool too_big = ec == http::error::body_limit || ec == http::error::header_limit;
      if (ec && !too_big) break;  // closed, timed out, malformed: nothing to answer
      {
        std::lock_guard lock(mu);
        me->busy = true;
      }
      auto start = std::chrono::steady_clock::now();
      HttpResponse resp;
      std::string route = "unmatched";
      std::string method = "?";
      unsigned version = 11;
      bool keep_alive = false;
      if (too_big) {
        resp = error_body(413, "payload_too_large",
                          "request body exceeds " + std::to_string(opts.body_limit) + " bytes");
      } else {
        auto& req = parser.get();
        version = req.version();
        keep_alive = req.keep_alive();
        method = std::string(req.method_string());
        HttpRequest r;
        r.method = method;
        r.authorization = std::string(req[http::field::authorization]);
        r.content_type = std::string(req[http::field::content_type]);
        r.origin_node = std::string(req[kOriginNodeHeader]);
        r.target = std::string(req.target());
        if (!split_target(r.target, &r.path, &r.query)) {
          resp = error_body(400, "bad_request", "malformed request target");
        } else {
          r.body = std::move(req.body());
          resp = co_await handle(r, &route);
        }
      }
      {
        std::lock_guard lock(mu);
        if (stopping) keep_alive = false;
      }
      // Counted before the answer leaves, so a client that saw it also sees it counted.
      double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      metrics.observe_request(method, route, resp.status, secs);
      spdlog::debug("http: {} {} -> {} ({:.1f} ms)", method, route, resp.status, secs * 1000);
      auto res = to_beast(resp, version, keep_alive);
      stream.expires_after(std::chrono::seconds(opts.write_timeout_s));
      auto [wec, wn] = co_await http::async_write(stream, res, asio::as_tuple(asio::use_awaitable));
      {
        std::lock_guard lock(mu);
        me->busy = false;
      }
      if (too_big && !wec) co_await drain(stream);
      if (wec || !keep_alive || too_big) break;
    }
    beast::error_code ignored;
    stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
    stream.close();
    finish(me);
  }
};

HttpServer::HttpServer(asio::io_context& ioc, Pools pools, const Router& router, Metrics& metrics,
                       HttpServerOptions opts)
    : impl_(std::make_shared<Impl>(ioc, pools, router, metrics, std::move(opts))) {}

HttpServer::~HttpServer() = default;

std::string HttpServer::start() {
  beast::error_code ec;
  auto addr = asio::ip::make_address(impl_->opts.address, ec);
  if (ec) return "bad bind address '" + impl_->opts.address + "': " + ec.message();
  tcp::endpoint ep(addr, impl_->opts.port);
  auto& a = impl_->acceptor;
  a.open(ep.protocol(), ec);
  if (!ec) a.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) a.bind(ep, ec);
  if (!ec) a.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    return "cannot listen on " + impl_->opts.address + ":" + std::to_string(impl_->opts.port) +
           ": " + ec.message();
  }
  asio::co_spawn(impl_->ioc, impl_->accept_loop(), asio::detached);
  return {};
}

void HttpServer::stop(std::function<void()> drained) {
  auto impl = impl_;
  asio::post(impl->ioc, [impl, drained = std::move(drained)]() mutable {
    beast::error_code ec;
    impl->acceptor.close(ec);
    std::lock_guard lock(impl->mu);
    impl->stopping = true;
    if (impl->conns.empty()) {
      asio::post(impl->ioc, std::move(drained));
      return;
    }
    impl->drained = std::move(drained);
    // Idle keep-alive connections are closed now; busy ones close after their response.
    for (auto& c : impl->conns) {
      if (!c.busy) {
        asio::post(c.stream->get_executor(), [impl, id = c.id] { impl->cancel_if_idle(id); });
      }
    }
  });
}

}  // namespace tandem::mgmt
