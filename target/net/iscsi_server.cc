#include "target/net/iscsi_server.h"

#include <openssl/rand.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <boost/asio.hpp>
#include <deque>
#include <map>
#include <mutex>
#include <optional>

#include "core/block_volume.h"
#include "target/iscsi/pdu_parser.h"
#include "target/iscsi/pdu_wire.h"

namespace tandem::target::net {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using boost::system::error_code;

namespace {

void random_bytes(std::span<uint8_t> out) {
  if (RAND_bytes(out.data(), static_cast<int>(out.size())) != 1) std::abort();
}

}  // namespace

struct Connection;

// While a connection calls its device on this thread, where a completion that arrives inside
// that call (on this thread, hence on the connection's strand) is kept. Nests.
class InlineCatch {
 public:
  InlineCatch(const Connection* conn, uint32_t itt, std::optional<scsi::ScsiResult>* into)
      : conn_(conn), itt_(itt), into_(into), outer_(current_) {
    current_ = this;
  }
  ~InlineCatch() { current_ = outer_; }
  InlineCatch(const InlineCatch&) = delete;
  InlineCatch& operator=(const InlineCatch&) = delete;

  // True when r was kept for the caller: this thread is inside conn's execute call of the
  // task itt.
  static bool take(const Connection* conn, uint32_t itt, scsi::ScsiResult& r) {
    InlineCatch* c = current_;
    if (c == nullptr || c->conn_ != conn || c->itt_ != itt || c->into_->has_value()) {
      return false;
    }
    *c->into_ = std::move(r);
    return true;
  }

 private:
  const Connection* conn_;
  uint32_t itt_;
  std::optional<scsi::ScsiResult>* into_;
  InlineCatch* outer_;
  static thread_local InlineCatch* current_;
};

thread_local InlineCatch* InlineCatch::current_ = nullptr;

struct IscsiServer::Impl : std::enable_shared_from_this<IscsiServer::Impl> {
  asio::io_context& ioc;
  TargetDirectory& directory;
  IscsiServerOptions opts;
  tcp::acceptor acceptor;
  std::atomic<uint16_t> next_tsih{1};
  std::atomic<uint64_t> next_conn_id{1};

  mutable std::mutex mu;
  std::map<uint64_t, std::weak_ptr<Connection>> conns;
  std::map<std::string, uint64_t> by_session_key;     // reinstatement (RFC 7143 §6.3.5)
  std::map<std::string, size_t, std::less<>> sessions_per_target;
  bool stopping = false;

  Impl(asio::io_context& c, TargetDirectory& d, IscsiServerOptions o)
      : ioc(c), directory(d), opts(std::move(o)), acceptor(c) {}

  uint16_t allocate_tsih() {
    uint16_t t = next_tsih.fetch_add(1);
    if (t == 0) t = next_tsih.fetch_add(1);
    return t;
  }

  asio::awaitable<void> accept_loop();
  void close_connection(uint64_t id);
};

// One TCP connection = one session (MaxConnections=1). Owned by its coroutines through
// shared_ptr; all members are touched only on `strand`.
struct Connection : std::enable_shared_from_this<Connection> {
  using Strand = asio::strand<asio::io_context::executor_type>;

  std::shared_ptr<IscsiServer::Impl> server;
  uint64_t id;
  Strand strand;
  tcp::socket sock;
  std::string peer;
  iscsi::PduParser parser;
  std::optional<iscsi::LoginMachine> login;
  std::optional<iscsi::Session> session;
  std::shared_ptr<scsi::ScsiDevice> device;
  std::string target_name;
  std::string session_key;
  bool counted = false;

  std::deque<iscsi::WirePdu> outq;
  std::vector<asio::const_buffer> send_bufs;  // write_next's gather list, reused
  size_t out_bytes = 0;
  bool writing = false;
  bool closing = false;       // close once the queue drains
  bool closed = false;
  asio::steady_timer space;   // signalled when outbound bytes fall under the limit
  asio::steady_timer ping_timer;
  std::optional<uint32_t> ping_ttt;
  std::chrono::steady_clock::time_point ping_sent;
  std::chrono::steady_clock::time_point last_rx = std::chrono::steady_clock::now();

  Connection(std::shared_ptr<IscsiServer::Impl> s, uint64_t i, tcp::socket so)
      : server(std::move(s)),
        id(i),
        strand(asio::make_strand(server->ioc)),
        sock(std::move(so)),
        space(strand),
        ping_timer(strand) {
    error_code ec;
    auto ep = sock.remote_endpoint(ec);
    peer = ec ? "?" : ep.address().to_string() + ":" + std::to_string(ep.port());
    sock.set_option(tcp::no_delay(true), ec);
    // write_next() sends synchronously first and must get would_block, never wait.
    sock.non_blocking(true, ec);
  }

  iscsi::DigestOptions digests() const {
    return session ? session->digests() : iscsi::DigestOptions{};
  }

  void send(iscsi::Pdu&& pdu) {
    if (closed) return;
    auto wire = iscsi::serialize_parts(std::move(pdu), digests());
    out_bytes += wire.size();
    outq.push_back(std::move(wire));
    if (writing) return;
    // Sent once this strand's handlers queued now have run: the responses that the other
    // completions (a replica's cumulative ACK ends several writes at once) and the rest of
    // the PDUs of this read produce share one sendmsg. Posting from the strand to itself
    // only queues behind them; no other thread is woken. `writing` covers the wait, so a
    // close waits for these PDUs too.
    writing = true;
    asio::post(strand, [self = shared_from_this()] { self->write_next(); });
  }

  void sent(size_t bytes) {
    out_bytes -= bytes;
    if (out_bytes < server->opts.max_outbound_bytes) space.cancel();
  }

  void write_next() {
    for (;;) {
      if (outq.empty() || closed) {
        writing = false;
        if (closing) shutdown();
        return;
      }
      writing = true;
      // Gather what is queued into one write (bounded), so small PDUs share a syscall. The
      // buffer list is reused and the PDUs stay in outq unless the socket does not take them
      // all: no allocation per response on the usual path.
      size_t count = 0, bytes = 0;
      send_bufs.clear();
      for (auto it = outq.begin(); it != outq.end() && count < 64 && bytes < (1u << 20); ++it) {
        bytes += it->size();
        ++count;
        add_buffers(*it, send_bufs);
      }
      // Send now, on this strand: a response usually fits the socket buffer, and an
      // asynchronous write completes through the scheduler, which costs a thread wake-up per
      // response. Only what the socket did not take (would_block) waits for it asynchronously.
      error_code ec;
      const size_t now = sock.write_some(send_bufs, ec);
      if (ec && ec != asio::error::would_block && ec != asio::error::try_again) {
        sent(bytes);
        shutdown();
        return;
      }
      if (!ec && now == bytes) {
        outq.erase(outq.begin(), outq.begin() + static_cast<std::ptrdiff_t>(count));
        sent(bytes);
        continue;
      }
      // The rest waits for the socket: the PDUs move to a batch that the write owns.
      auto batch = std::make_shared<std::vector<iscsi::WirePdu>>();
      batch->reserve(count);
      std::vector<asio::const_buffer> bufs;
      for (size_t i = 0; i < count; ++i) {
        batch->push_back(std::move(outq.front()));
        outq.pop_front();
        add_buffers(batch->back(), bufs);
      }
      write_rest(std::move(batch), std::move(bufs), ec ? 0 : now, bytes);
      return;
    }
  }

  static void add_buffers(const iscsi::WirePdu& w, std::vector<asio::const_buffer>& bufs) {
    for (const auto* part : {&w.head, &w.data, &w.tail}) {
      if (!part->empty()) bufs.emplace_back(asio::buffer(*part));
    }
  }

  // The part of a batch past its first `done` bytes, asynchronously; then the next batch.
  void write_rest(std::shared_ptr<std::vector<iscsi::WirePdu>> batch,
                  std::vector<asio::const_buffer> bufs, size_t done, size_t bytes) {
    size_t skip = done, first = 0;
    while (skip > 0 && skip >= bufs[first].size()) skip -= bufs[first++].size();
    bufs.erase(bufs.begin(), bufs.begin() + static_cast<std::ptrdiff_t>(first));
    if (skip > 0) bufs.front() += skip;
    asio::async_write(sock, bufs,
                      asio::bind_executor(strand, [self = shared_from_this(), batch, bytes](
                                                      error_code ec, size_t) {
                        self->sent(bytes);
                        if (ec) {
                          self->shutdown();
                          return;
                        }
                        self->write_next();
                      }));
  }

  void shutdown() {
    if (closed) return;
    closed = true;
    error_code ec;
    sock.shutdown(tcp::socket::shutdown_both, ec);
    sock.close(ec);
    ping_timer.cancel();
    space.cancel();
  }

  // Runs the session's actions in order.
  void run(iscsi::Actions& actions) {
    for (auto& a : actions) {
      if (auto* s = std::get_if<iscsi::SendPdu>(&a)) {
        send(std::move(s->pdu));
      } else if (auto* e = std::get_if<iscsi::ExecuteTask>(&a)) {
        execute(e->itt, e->task);
      } else if (auto* r = std::get_if<iscsi::ResetDevice>(&a)) {
        if (device) device->reset(session->initiator_port());
        if (r->whole_target) spdlog::info("iscsi: {} target reset from {}", target_name, peer);
      } else if (auto* p = std::get_if<iscsi::PingReplied>(&a)) {
        if (ping_ttt && *ping_ttt == p->ttt) ping_ttt.reset();
      } else if (auto* c = std::get_if<iscsi::CloseConnection>(&a)) {
        if (!c->logout) spdlog::info("iscsi: closing {} ({}): protocol error", peer, target_name);
        closing = true;
        if (!writing) shutdown();
      }
    }
    actions.clear();
  }

  void execute(uint32_t itt, std::shared_ptr<scsi::ScsiTask> task) {
    if (!device) {
      scsi::ScsiResult r;
      r.status = scsi::Status::kCheckCondition;
      iscsi::Actions out;
      session->on_task_done(itt, std::move(r), out);
      run(out);
      return;
    }
    // A volume may complete inside the call when that cannot block (a read from the page
    // cache; see core::InlineCompletionScope), and the device answers some commands at once
    // (sense data). Such a result is taken here, still on this strand, instead of being
    // posted to it: no hop to a pool thread and back, none to another network thread.
    std::optional<scsi::ScsiResult> at_once;
    {
      core::InlineCompletionScope inline_ok;
      InlineCatch catcher(this, itt, &at_once);
      device->execute(std::move(task), [self = shared_from_this(), itt](scsi::ScsiResult r) {
        if (InlineCatch::take(self.get(), itt, r)) return;
        asio::post(self->strand, [self, itt, r = std::move(r)]() mutable {
          if (self->closed || !self->session) return;
          iscsi::Actions out;
          self->session->on_task_done(itt, std::move(r), out);
          self->run(out);
        });
      });
    }
    if (at_once && !closed && session) {
      iscsi::Actions out;
      session->on_task_done(itt, std::move(*at_once), out);
      run(out);
    }
  }

  // Login phase: only Login Requests are valid (RFC 7143 §6.3); anything else ends it.
  void on_login_pdu(const iscsi::RawPdu& raw) {
    auto pdu = iscsi::decode(raw);
    const auto* req = pdu.ok() ? std::get_if<iscsi::LoginRequest>(&*pdu) : nullptr;
    if (!req) {
      spdlog::info("iscsi: {} sent a non-login PDU during login; closing", peer);
      closing = true;
      if (!writing) shutdown();
      return;
    }
    auto step = login->on_request(*req);
    send(iscsi::Pdu{step.response});
    if (step.state == iscsi::LoginStep::State::kFailed) {
      spdlog::info("iscsi: login from {} refused (status 0x{:04x})", peer,
                   (unsigned(step.response.status_class) << 8) | step.response.status_detail);
      closing = true;
      if (!writing) shutdown();
      return;
    }
    if (step.state == iscsi::LoginStep::State::kComplete) complete_login();
  }

  void complete_login() {
    const auto& res = login->result();
    session.emplace(res, server->opts.session, server->directory);
    parser.set_limits(session->parser_limits());
    parser.set_placement(&*session);
    if (res.type == iscsi::SessionType::kNormal && res.target) {
      target_name = res.target->name;
      device = server->directory.device(target_name);
      session_key = res.session_key();
      uint64_t old_id = 0;
      {
        std::lock_guard lock(server->mu);
        auto it = server->by_session_key.find(session_key);
        if (it != server->by_session_key.end() && it->second != id) old_id = it->second;
        server->by_session_key[session_key] = id;
        ++server->sessions_per_target[target_name];
        counted = true;
      }
      if (old_id) {
        spdlog::info("iscsi: session {} reinstated by {}; closing the old connection",
                     session_key, peer);
        server->close_connection(old_id);
      }
    }
    spdlog::info("iscsi: {} logged in from {} ({}, {} session)", res.initiator_name, peer,
                 target_name.empty() ? "-" : target_name,
                 res.type == iscsi::SessionType::kDiscovery ? "discovery" : "normal");
    start_pings();
  }

  void start_pings() {
    ping_timer.expires_after(server->opts.nop_interval);
    ping_timer.async_wait([self = shared_from_this()](error_code ec) {
      if (ec || self->closed) return;
      auto now = std::chrono::steady_clock::now();
      if (self->ping_ttt) {
        if (now - self->ping_sent > self->server->opts.nop_timeout) {
          spdlog::warn("iscsi: {} did not answer NOP-In for {}s; closing", self->peer,
                       self->server->opts.nop_timeout.count());
          self->shutdown();
          return;
        }
      } else if (now - self->last_rx >= self->server->opts.nop_interval) {
        // Keepalive only for a quiet connection: a busy one proves itself alive, and a
        // ping in the middle of a command stream makes libiscsi (QEMU's initiator) drop the
        // connection over its NOP-Out's CmdSN.
        iscsi::Actions out;
        self->ping_ttt = self->session->send_ping(out);
        self->ping_sent = now;
        self->run(out);
      }
      self->start_pings();
    });
  }

  void unregister() {
    std::lock_guard lock(server->mu);
    server->conns.erase(id);
    auto it = server->by_session_key.find(session_key);
    if (it != server->by_session_key.end() && it->second == id) server->by_session_key.erase(it);
    if (counted) {
      auto t = server->sessions_per_target.find(target_name);
      if (t != server->sessions_per_target.end() && --t->second == 0) {
        server->sessions_per_target.erase(t);
      }
      counted = false;
    }
  }

  asio::awaitable<void> serve() {
    auto self = shared_from_this();
    iscsi::LoginConfig cfg = server->opts.login;
    login.emplace(cfg, server->directory, random_bytes,
                  [srv = server] { return srv->allocate_tsih(); });
    // Login must finish in time; afterwards the NOP-In pings watch the connection.
    asio::steady_timer login_deadline(strand);
    login_deadline.expires_after(server->opts.login_timeout);
    login_deadline.async_wait([self](error_code ec) {
      if (!ec && !self->session) {
        spdlog::info("iscsi: login from {} timed out", self->peer);
        self->shutdown();
      }
    });
    // No read buffer of our own: each read lands where the parser says, i.e. its small
    // staging buffer for headers, or a write payload's final place in its task buffer (see
    // pdu_parser.h for the exact copy rule).
    while (!closed && !closing) {
      if (out_bytes >= server->opts.max_outbound_bytes) {
        // Back-pressure: the initiator is not reading its responses; wait for space.
        space.expires_after(std::chrono::seconds(30));
        co_await space.async_wait(asio::as_tuple(asio::use_awaitable));
        continue;
      }
      const std::span<uint8_t> into = parser.prepare();
      if (into.empty()) break;  // only when the stream is broken; next() reported it
      auto [ec, n] = co_await sock.async_read_some(asio::buffer(into.data(), into.size()),
                                                   asio::as_tuple(asio::use_awaitable));
      if (ec) break;
      last_rx = std::chrono::steady_clock::now();
      parser.commit(n);
      for (;;) {
        auto next = parser.next();
        if (!next) {
          if (session) {
            iscsi::Actions out;
            session->on_parse_error(next.error(), out);
            run(out);
          } else {
            closing = true;
          }
          if (next.error().code != iscsi::PduErrorCode::kDataDigest) closing = true;
          if (closing) break;
          continue;
        }
        if (!*next) break;
        if (session) {
          iscsi::Actions out;
          session->on_pdu(**next, out);
          run(out);
        } else {
          on_login_pdu(**next);
          login_deadline.cancel();
          if (!session) {
            login_deadline.expires_after(server->opts.login_timeout);
            login_deadline.async_wait([self](error_code e) {
              if (!e && !self->session) self->shutdown();
            });
          }
        }
        if (closing || closed) break;
      }
    }
    if (closing && !closed && writing) {
      // Let the last responses (Logout Response, Login reject) go out, bounded.
      space.expires_after(std::chrono::seconds(5));
      while (writing && !closed) {
        auto [e] = co_await space.async_wait(asio::as_tuple(asio::use_awaitable));
        if (!e) break;  // timed out
        space.expires_after(std::chrono::seconds(5));
      }
    }
    shutdown();
    login_deadline.cancel();
    if (session) session->connection_lost();
    if (device && session) device->nexus_lost(session->initiator_port());
    unregister();
    spdlog::debug("iscsi: connection {} from {} closed", id, peer);
  }
};

asio::awaitable<void> IscsiServer::Impl::accept_loop() {
  auto self = shared_from_this();
  for (;;) {
    auto [ec, sock] = co_await acceptor.async_accept(asio::as_tuple(asio::use_awaitable));
    if (ec) {
      if (!acceptor.is_open()) co_return;
      spdlog::warn("iscsi: accept failed: {}", ec.message());
      continue;
    }
    uint64_t cid = next_conn_id.fetch_add(1);
    auto conn = std::make_shared<Connection>(self, cid, std::move(sock));
    {
      std::lock_guard lock(mu);
      if (stopping) continue;
      conns[cid] = conn;
    }
    asio::co_spawn(conn->strand, conn->serve(), asio::detached);
  }
}

void IscsiServer::Impl::close_connection(uint64_t cid) {
  std::shared_ptr<Connection> c;
  {
    std::lock_guard lock(mu);
    auto it = conns.find(cid);
    if (it != conns.end()) c = it->second.lock();
  }
  if (c) asio::post(c->strand, [c] { c->shutdown(); });
}

IscsiServer::IscsiServer(asio::io_context& ioc, TargetDirectory& directory,
                         IscsiServerOptions opts)
    : impl_(std::make_shared<Impl>(ioc, directory, std::move(opts))) {}

IscsiServer::~IscsiServer() = default;

std::string IscsiServer::start() {
  error_code ec;
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

void IscsiServer::stop() {
  auto impl = impl_;
  asio::post(impl->ioc, [impl] {
    error_code ec;
    impl->acceptor.close(ec);
    std::vector<uint64_t> ids;
    {
      std::lock_guard lock(impl->mu);
      impl->stopping = true;
      for (auto& [id, _] : impl->conns) ids.push_back(id);
    }
    for (auto id : ids) impl->close_connection(id);
  });
}

size_t IscsiServer::sessions_for(std::string_view target_name) const {
  std::lock_guard lock(impl_->mu);
  auto it = impl_->sessions_per_target.find(target_name);
  return it == impl_->sessions_per_target.end() ? 0 : it->second;
}

void IscsiServer::drop_target(std::string_view target_name) {
  std::vector<std::shared_ptr<Connection>> victims;
  {
    std::lock_guard lock(impl_->mu);
    for (auto& [id, w] : impl_->conns) {
      if (auto c = w.lock()) victims.push_back(c);
    }
  }
  std::string name(target_name);
  for (auto& c : victims) {
    asio::post(c->strand, [c, name] {
      if (c->target_name == name) c->shutdown();
    });
  }
}

}  // namespace tandem::target::net
