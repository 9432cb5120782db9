// PeerLink and LinkServer over real TLS 1.3 on 127.0.0.1 (ephemeral ports, certificates minted
// in a temp dir). Server and clients run on separate io_contexts with two threads each. Nothing
// sleeps to synchronise: every wait is a bounded wait on a condition variable or a future.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <condition_variable>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "backend/link/link_server.h"
#include "backend/link/peer_link.h"
#include "backend/transport/tls_stream.h"
#include "tests/unit/backend_transport/test_pki.h"

namespace tandem::backend::link {
namespace {

namespace asio = boost::asio;
namespace ssl = boost::asio::ssl;
using boost::asio::ip::tcp;
using namespace std::chrono_literals;
using State = PeerLink::State;

constexpr auto kWait = 5s;  // bound on every wait for something that must happen
constexpr auto kAwait = asio::as_tuple(asio::use_awaitable);
constexpr wire::Uuid kVolume{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};

void rethrow(std::exception_ptr e) {
  if (e) std::rethrow_exception(e);
}

// State under a mutex with bounded waits.
class Monitor {
 public:
  template <class F>
  void update(F&& f) {
    {
      std::lock_guard lock(mu_);
      f();
    }
    cv_.notify_all();
  }
  template <class P>
  bool wait(P&& pred, std::chrono::milliseconds bound = kWait) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, bound, pred);
  }
  template <class F>
  auto read(F&& f) {
    std::lock_guard lock(mu_);
    return f();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
};

std::vector<uint8_t> encode_frame(const wire::FrameHeader& h, std::span<const uint8_t> payload,
                                  bool compress = true) {
  std::vector<uint8_t> out;
  auto n = wire::encode(h, payload, compress, out);
  EXPECT_TRUE(n.ok()) << (n.ok() ? "" : n.error().message);
  return out;
}

wire::FrameHeader write_header(uint64_t seq) {
  wire::FrameHeader h;
  h.type = wire::FrameType::kWrite;
  h.volume = kVolume;
  h.copy_id = 2;
  h.generation = 1;
  h.sequence = seq;
  h.lba = seq * 8;
  return h;
}

std::vector<uint8_t> write_frame(uint64_t seq, std::span<const uint8_t> payload) {
  return encode_frame(write_header(seq), payload);
}

std::vector<uint8_t> hello_frame(const std::string& node_id) {
  auto payload = wire::encode_hello(wire::Hello{node_id, "127.0.0.1:5703"});
  EXPECT_TRUE(payload.ok());
  wire::FrameHeader h;
  h.type = wire::FrameType::kHello;
  return encode_frame(h, *payload, false);
}

std::vector<uint8_t> random_bytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> v(n);
  for (auto& b : v) b = uint8_t(rng());
  return v;
}

std::vector<uint8_t> compressible_bytes(size_t n) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = uint8_t((i / 512) & 0x7);
  return v;
}

// What an outbound link reported. Shared with the callbacks, which run until kClosed.
struct LinkLog {
  Monitor m;
  std::vector<PeerLink::StateChange> states;
  std::vector<wire::Frame> frames;

  size_t count(State s) {
    size_t n = 0;
    for (const auto& c : states) n += c.state == s;
    return n;
  }
  bool wait_state(State s, size_t n = 1, std::chrono::milliseconds bound = kWait) {
    return m.wait([&] { return count(s) >= n; }, bound);
  }
  bool wait_frames(size_t n) {
    return m.wait([&] { return frames.size() >= n; });
  }
  std::optional<PeerLink::StateChange> last(State s) {
    return m.read([&]() -> std::optional<PeerLink::StateChange> {
      for (auto it = states.rbegin(); it != states.rend(); ++it) {
        if (it->state == s) return *it;
      }
      return std::nullopt;
    });
  }
};

// The daemon's dispatcher, for tests: records frames, ACKs every WRITE, and can hold its
// connection's strand (which stops reading) until the gate opens.
class TestHandler : public FrameHandler {
 public:
  void on_connection_up(const std::shared_ptr<InboundConnection>& conn) override {
    m.update([&] {
      ++ups;
      peer_names.push_back(conn->peer_name());
    });
  }
  void on_frame(const std::shared_ptr<InboundConnection>& conn, const wire::FrameHeader& h,
                std::vector<uint8_t> payload) override {
    {
      std::unique_lock lock(gate_mu_);
      if (gate_closed_) {
        blocked = true;
        m.update([] {});
        gate_cv_.wait_for(lock, 10s, [&] { return !gate_closed_; });
      }
    }
    // Recorded before the ACK goes: a reply is written at once (on this strand), so the peer
    // may see it before this handler returns.
    m.update([&] { frames.push_back(wire::Frame{h, std::move(payload)}); });
    if (h.type == wire::FrameType::kWrite) {
      wire::FrameHeader ack;
      ack.type = wire::FrameType::kAck;
      ack.volume = h.volume;
      ack.copy_id = h.copy_id;
      ack.generation = h.generation;
      ack.sequence = h.sequence;
      auto out = encode_frame(ack, {});
      if (conn->reply(std::move(out)) != SendStatus::kQueued) {
        m.update([&] { ++reply_failures; });
      }
    }
  }
  void on_connection_down(const std::shared_ptr<InboundConnection>&,
                          const std::string& reason) override {
    m.update([&] { down_reasons.push_back(reason); });
  }

  void close_gate() {
    std::lock_guard lock(gate_mu_);
    gate_closed_ = true;
  }
  void open_gate() {
    {
      std::lock_guard lock(gate_mu_);
      gate_closed_ = false;
    }
    gate_cv_.notify_all();
  }

  Monitor m;
  size_t ups = 0;
  size_t reply_failures = 0;
  std::vector<std::string> peer_names;
  std::vector<wire::Frame> frames;
  std::vector<std::string> down_reasons;
  std::atomic<bool> blocked{false};

 private:
  std::mutex gate_mu_;
  std::condition_variable gate_cv_;
  bool gate_closed_ = false;
};

struct EventLog {
  Monitor m;
  std::vector<ServerEvent> events;
  size_t count(ServerEvent::Kind k) {
    size_t n = 0;
    for (const auto& e : events) n += e.kind == k;
    return n;
  }
  bool wait_kind(ServerEvent::Kind k, size_t n = 1) {
    return m.wait([&] { return count(k) >= n; });
  }
};

class LinkTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new transport::testing::TempDir();
    transport::testing::make_ca(dir_->path() / "ca");
    transport::testing::make_ca(dir_->path() / "foreign-ca");
    server_creds_ = new transport::NodeCredentials(
        transport::testing::make_node(dir_->path() / "ca", "node-a"));
    client_creds_ = new transport::NodeCredentials(
        transport::testing::make_node(dir_->path() / "ca", "node-b"));
    // Signed by another CA, but trusting ours: the server must be the one refusing it.
    auto foreign = transport::testing::make_node(dir_->path() / "foreign-ca", "node-x");
    foreign.ca_pem = server_creds_->ca_pem;
    foreign_creds_ = new transport::NodeCredentials(foreign);
  }
  static void TearDownTestSuite() {
    delete foreign_creds_;
    delete client_creds_;
    delete server_creds_;
    delete dir_;
  }

  void SetUp() override {
    for (int i = 0; i < 2; ++i) {
      threads_.emplace_back([this] { server_io_.run(); });
      threads_.emplace_back([this] { client_io_.run(); });
    }
  }

  void TearDown() override {
    for (auto& [link, log] : links_) close_link(*link, *log);
    links_.clear();
    for (auto& s : servers_) close_server(*s);
    servers_.clear();
    server_guard_.reset();
    client_guard_.reset();
    server_io_.stop();
    client_io_.stop();
    for (auto& t : threads_) t.join();
  }

  static ssl::context context_for(const transport::NodeCredentials& creds) {
    auto ctx = transport::make_tls_context(creds);
    if (!ctx) {
      ADD_FAILURE() << ctx.error().message;
      std::abort();
    }
    return std::move(ctx).value();
  }

  LinkServer* start_server(std::shared_ptr<FrameHandler> handler, std::shared_ptr<EventLog> log,
                           uint16_t port = 0,
                           std::function<void(LinkServer::Options&)> tweak = {}) {
    LinkServer::Options o;
    o.bind_address = "127.0.0.1";
    o.port = port;
    o.hello = wire::Hello{"uuid-node-a", "127.0.0.1:5703"};
    o.handshake_timeout = 2s;
    if (tweak) tweak(o);
    auto s = LinkServer::start(
        server_io_, server_ctx_, o, std::move(handler),
        [log](const ServerEvent& e) { log->m.update([&] { log->events.push_back(e); }); });
    if (!s) {
      ADD_FAILURE() << s.error().message;
      return nullptr;
    }
    servers_.push_back(std::move(s).value());
    return servers_.back().get();
  }

  void close_server(LinkServer& server) {
    std::promise<void> done;
    auto f = done.get_future();
    server.close([&done] { done.set_value(); });
    EXPECT_EQ(f.wait_for(kWait), std::future_status::ready) << "server did not close";
  }

  // Closes and forgets a server (its port may be bound again once this returns).
  void stop_server(LinkServer* server) {
    for (auto it = servers_.begin(); it != servers_.end(); ++it) {
      if (it->get() == server) {
        close_server(*server);
        servers_.erase(it);
        return;
      }
    }
  }

  // A server with a TestHandler and one link to it, up.
  struct Pair {
    std::shared_ptr<TestHandler> handler = std::make_shared<TestHandler>();
    LinkServer* server = nullptr;
    std::shared_ptr<LinkLog> log = std::make_shared<LinkLog>();
    PeerLink* link = nullptr;
  };
  Pair connected_pair() {
    Pair p;
    p.server = start_server(p.handler, std::make_shared<EventLog>());
    if (p.server == nullptr) return p;
    p.link = make_link(p.server->local_port(), p.log);
    if (!p.log->wait_state(State::kUp)) p.link = nullptr;
    return p;
  }

  PeerLink* make_link(uint16_t port, std::shared_ptr<LinkLog> log, ssl::context* ctx = nullptr,
                      std::function<void(PeerLink::Options&)> tweak = {}) {
    PeerLink::Options o;
    o.peer_name = "node-a";
    o.host = "127.0.0.1";
    o.port = port;
    o.hello = wire::Hello{"uuid-node-b", "127.0.0.1:5703"};
    o.connect_timeout = 2s;
    o.backoff_min = 10ms;
    o.backoff_max = 100ms;
    o.metrics = std::make_shared<LinkMetrics>();
    if (tweak) tweak(o);
    auto link = PeerLink::create(
        client_io_, ctx ? *ctx : client_ctx_, o,
        [log](const wire::FrameHeader& h, std::vector<uint8_t> p) {
          log->m.update([&] { log->frames.push_back(wire::Frame{h, std::move(p)}); });
        },
        [log](const PeerLink::StateChange& c) {
          log->m.update([&] { log->states.push_back(c); });
        });
    if (!link) {
      ADD_FAILURE() << link.error().message;
      return nullptr;
    }
    links_.emplace_back(std::move(link).value(), log);
    return links_.back().first.get();
  }

  static void close_link(PeerLink& link, LinkLog& log) {
    link.close();
    EXPECT_TRUE(log.wait_state(State::kClosed)) << "link did not report kClosed";
  }

  // Sends, waiting for space under back-pressure (bounded).
  static SendStatus send_waiting(PeerLink& link, std::vector<uint8_t> frame) {
    for (;;) {
      const size_t size = frame.size();
      const SendStatus st = link.send(std::move(frame));
      if (st != SendStatus::kBackPressure) return st;
      auto up = std::make_shared<std::promise<bool>>();
      auto f = up->get_future();
      link.when_writable(size, [up](bool ok) { up->set_value(ok); });
      if (f.wait_for(kWait) != std::future_status::ready || !f.get()) return st;
    }
  }

  static transport::testing::TempDir* dir_;
  static transport::NodeCredentials* server_creds_;
  static transport::NodeCredentials* client_creds_;
  static transport::NodeCredentials* foreign_creds_;

  ssl::context server_ctx_ = context_for(*server_creds_);
  ssl::context client_ctx_ = context_for(*client_creds_);
  asio::io_context server_io_;
  asio::io_context client_io_;
  asio::executor_work_guard<asio::io_context::executor_type> server_guard_ =
      asio::make_work_guard(server_io_);
  asio::executor_work_guard<asio::io_context::executor_type> client_guard_ =
      asio::make_work_guard(client_io_);
  std::vector<std::thread> threads_;
  std::vector<std::unique_ptr<LinkServer>> servers_;
  std::vector<std::pair<std::unique_ptr<PeerLink>, std::shared_ptr<LinkLog>>> links_;
};

transport::testing::TempDir* LinkTest::dir_ = nullptr;
transport::NodeCredentials* LinkTest::server_creds_ = nullptr;
transport::NodeCredentials* LinkTest::client_creds_ = nullptr;
transport::NodeCredentials* LinkTest::foreign_creds_ = nullptr;

TEST_F(LinkTest, CreateRejectsBadOptionsAndSendNeedsAnUpLink) {
  auto log = std::make_shared<LinkLog>();
  PeerLink::Options o;
  o.host = "127.0.0.1";
  o.hello = wire::Hello{"uuid-node-b", ""};
  EXPECT_FALSE(PeerLink::create(client_io_, client_ctx_, o, {}, {}).ok());  // no peer name
  o.peer_name = "node-a";
  o.heartbeat_interval = 5s;
  o.idle_timeout = 1s;
  EXPECT_FALSE(PeerLink::create(client_io_, client_ctx_, o, {}, {}).ok());  // heartbeat >= idle

  // Nobody listens on port 1: the link stays down, send refuses without taking the frame.
  PeerLink* link = make_link(1, log);
  ASSERT_NE(link, nullptr);
  ASSERT_TRUE(log->wait_state(State::kDown));
  auto frame = write_frame(1, compressible_bytes(512));
  const auto before = frame;
  EXPECT_EQ(link->send(std::move(frame)), SendStatus::kNotUp);
  EXPECT_EQ(frame, before);  // not moved from
  EXPECT_GE(link->metrics().connect_failures.load(), 1u);
  EXPECT_EQ(log->m.read([&] { return log->count(State::kUp); }), 0u);
}

TEST_F(LinkTest, WriteFramesRoundTripWithAcks) {
  auto handler = std::make_shared<TestHandler>();
  auto events = std::make_shared<EventLog>();
  LinkServer* server = start_server(handler, events);
  ASSERT_NE(server, nullptr);
  auto log = std::make_shared<LinkLog>();
  PeerLink* link = make_link(server->local_port(), log);
  ASSERT_TRUE(log->wait_state(State::kUp));
  auto up = log->last(State::kUp);
  ASSERT_TRUE(up.has_value());
  EXPECT_EQ(up->peer_hello.node_id, "uuid-node-a");
  EXPECT_EQ(link->state(), State::kUp);

  const auto squeezable = compressible_bytes(256 << 10);
  const auto noise = random_bytes(256 << 10, 7);
  auto bad = std::vector<uint8_t>(10, 0);
  EXPECT_EQ(link->send(std::move(bad)), SendStatus::kInvalid);
  ASSERT_EQ(link->send(write_frame(1, squeezable)), SendStatus::kQueued);
  ASSERT_EQ(link->send(write_frame(2, noise)), SendStatus::kQueued);

  ASSERT_TRUE(handler->m.wait([&] { return handler->frames.size() >= 2; }));
  handler->m.read([&] {
    EXPECT_EQ(handler->peer_names, std::vector<std::string>{"node-b"});
    EXPECT_EQ(handler->frames[0].header.sequence, 1u);
    EXPECT_EQ(handler->frames[0].payload, squeezable);
    EXPECT_EQ(handler->frames[1].header.sequence, 2u);
    EXPECT_EQ(handler->frames[1].payload, noise);
    EXPECT_EQ(handler->frames[1].header.volume, kVolume);
    return 0;
  });
  ASSERT_TRUE(log->wait_frames(2));
  log->m.read([&] {
    EXPECT_EQ(log->frames[0].header.type, wire::FrameType::kAck);
    EXPECT_EQ(log->frames[0].header.sequence, 1u);
    EXPECT_EQ(log->frames[1].header.sequence, 2u);
    return 0;
  });

  const LinkMetrics& m = link->metrics();
  EXPECT_GE(m.frames_sent.load(), 3u);      // HELLO + 2 WRITEs (+ heartbeats)
  EXPECT_GE(m.frames_received.load(), 3u);  // HELLO + 2 ACKs
  // The compressible payload shrank on the wire; the random one did not grow.
  EXPECT_GT(m.bytes_sent_raw.load(), m.bytes_sent_wire.load() + (200u << 10));
  EXPECT_GE(m.bytes_sent_wire.load(), noise.size());
  EXPECT_EQ(m.connects.load(), 1u);
  EXPECT_EQ(m.reconnects.load(), 0u);
  EXPECT_GT(server->metrics().bytes_received_raw.load(),
            server->metrics().bytes_received_wire.load());
  EXPECT_EQ(server->metrics().accepted.load(), 1u);
}

// Frames sent as a head plus a shared body (one payload, several links) arrive whole and in
// order, alone (a large body) or gathered with others (small ones); a head whose lengths do not
// match its body is refused.
TEST_F(LinkTest, TwoPartFramesShareTheirBody) {
  Pair p = connected_pair();
  ASSERT_NE(p.link, nullptr);
  PeerLink* link = p.link;
  auto& handler = p.handler;
  auto& log = p.log;

  auto big = std::make_shared<const std::vector<uint8_t>>(random_bytes(1 << 20, 3));
  auto small = std::make_shared<const std::vector<uint8_t>>(compressible_bytes(4096));
  auto head_for = [](uint64_t seq, const std::shared_ptr<const std::vector<uint8_t>>& body,
                     bool compress, wire::EncodedPayload& ep) {
    ep = wire::encode_payload(body, compress);
    std::vector<uint8_t> head;
    EXPECT_TRUE(wire::encode_head(write_header(seq), ep, head).ok());
    return head;
  };
  wire::EncodedPayload ep_big, ep_small;
  auto head1 = head_for(1, big, false, ep_big);
  EXPECT_EQ(link->send(std::vector<uint8_t>(head1), small), SendStatus::kInvalid);
  ASSERT_EQ(link->send(std::move(head1), ep_big.wire), SendStatus::kQueued);
  for (uint64_t seq = 2; seq <= 20; ++seq) {
    auto head = head_for(seq, small, seq % 2 == 0, ep_small);
    ASSERT_EQ(link->send(std::move(head), ep_small.wire), SendStatus::kQueued) << seq;
  }
  ASSERT_EQ(link->send(write_frame(21, *small)), SendStatus::kQueued);
  ASSERT_TRUE(handler->m.wait([&] { return handler->frames.size() >= 21; }));
  handler->m.read([&] {
    for (uint64_t i = 0; i < 21; ++i) {
      EXPECT_EQ(handler->frames[i].header.sequence, i + 1);
      EXPECT_EQ(handler->frames[i].payload, i == 0 ? *big : *small) << i;
    }
    return 0;
  });
  EXPECT_EQ(ep_big.wire.get(), big.get());  // raw: the caller's buffer itself went out
  EXPECT_EQ(log->m.read([&] { return log->count(State::kDown); }), 0u);
}

TEST_F(LinkTest, OrderPreservedForTenThousandFrames) {
  auto handler = std::make_shared<TestHandler>();
  auto events = std::make_shared<EventLog>();
  LinkServer* server = start_server(handler, events);
  ASSERT_NE(server, nullptr);
  auto log = std::make_shared<LinkLog>();
  // A small budget, so the sender also exercises back-pressure waits.
  PeerLink* link = make_link(server->local_port(), log, nullptr,
                             [](PeerLink::Options& o) { o.send_budget_bytes = 128 << 10; });
  ASSERT_TRUE(log->wait_state(State::kUp));

  constexpr uint64_t kFrames = 10'000;
  for (uint64_t seq = 1; seq <= kFrames; ++seq) {
    auto payload = (seq % 2) ? random_bytes(512, uint32_t(seq)) : compressible_bytes(4096);
    ASSERT_EQ(send_waiting(*link, write_frame(seq, payload)), SendStatus::kQueued) << seq;
  }
  ASSERT_TRUE(log->m.wait([&] { return log->frames.size() >= kFrames; }, 15s));
  handler->m.read([&] {
    EXPECT_EQ(handler->frames.size(), kFrames);
    for (uint64_t i = 0; i < handler->frames.size(); ++i) {
      if (handler->frames[i].header.sequence != i + 1) {
        ADD_FAILURE() << "frame " << i << " has sequence " << handler->frames[i].header.sequence;
        break;
      }
    }
    return 0;
  });
  log->m.read([&] {
    for (uint64_t i = 0; i < kFrames; ++i) {
      if (log->frames[i].header.sequence != i + 1) {
        ADD_FAILURE() << "ack " << i << " has sequence " << log->frames[i].header.sequence;
        break;
      }
    }
    return 0;
  });
  const LinkMetrics& m = link->metrics();
  EXPECT_LT(m.writes.load(), m.frames_sent.load());  // writes gathered several frames
  EXPECT_EQ(log->m.read([&] { return log->count(State::kDown); }), 0u);
}

// at_read_end: a handler that defers work until the frames of one socket read are handed over
// (as the replica does with its ACKs) sees it run once per read, after that read's frames,
// before the next read's, so one read's answers can go back as one.
class ReadEndHandler : public FrameHandler {
 public:
  void on_frame(const std::shared_ptr<InboundConnection>& conn, const wire::FrameHeader&,
                std::vector<uint8_t>) override {
    ++frames_;  // on the connection's strand, as at_read_end's callback
    if (scheduled_) return;
    scheduled_ = true;
    conn->at_read_end([this] {
      scheduled_ = false;
      const uint64_t n = frames_;
      m.update([&] {
        if (!frames_at_ends.empty() && n <= frames_at_ends.back()) ++out_of_order;
        frames_at_ends.push_back(n);
      });
    });
  }
  Monitor m;
  std::vector<uint64_t> frames_at_ends;  // frames handed over when each read ended
  int out_of_order = 0;

 private:
  uint64_t frames_ = 0;
  bool scheduled_ = false;
};

TEST_F(LinkTest, ReadEndRunsOncePerReadAfterItsFrames) {
  auto handler = std::make_shared<ReadEndHandler>();
  auto events = std::make_shared<EventLog>();
  LinkServer* server = start_server(handler, events);
  ASSERT_NE(server, nullptr);
  auto log = std::make_shared<LinkLog>();
  PeerLink* link = make_link(server->local_port(), log);
  ASSERT_TRUE(log->wait_state(State::kUp));
  constexpr uint64_t kFrames = 2'000;
  for (uint64_t seq = 1; seq <= kFrames; ++seq) {
    ASSERT_EQ(send_waiting(*link, write_frame(seq, random_bytes(512, uint32_t(seq)))),
              SendStatus::kQueued);
  }
  ASSERT_TRUE(handler->m.wait([&] {
    return !handler->frames_at_ends.empty() && handler->frames_at_ends.back() == kFrames;
  }));
  handler->m.read([&] {
    EXPECT_EQ(handler->out_of_order, 0);
    // The sender joins queued frames into one write, so reads carry several frames each.
    EXPECT_LT(handler->frames_at_ends.size(), kFrames);
    return 0;
  });
}

TEST_F(LinkTest, BackPressureRefusesThenResumes) {
  auto handler = std::make_shared<TestHandler>();
  auto events = std::make_shared<EventLog>();
  LinkServer* server = start_server(handler, events);
  ASSERT_NE(server, nullptr);
  auto log = std::make_shared<LinkLog>();
  PeerLink* link = make_link(server->local_port(), log, nullptr,
                             [](PeerLink::Options& o) { o.send_budget_bytes = 256 << 10; });
  ASSERT_TRUE(log->wait_state(State::kUp));

  // The replica stops reading (its handler holds the connection strand): socket buffers fill,
  // then the send budget. Space freed while the kernel still absorbs bytes is used at once;
  // once a wait for space stays pending, the link is stuck on the silent reader.
  handler->close_gate();
  const auto payload = random_bytes(64 << 10, 3);
  uint64_t seq = 0;
  uint64_t refusals = 0;
  std::future<bool> got_space;
  while (seq < 4000) {
    const SendStatus st = link->send(write_frame(seq + 1, payload));
    if (st == SendStatus::kQueued) {
      ++seq;
      continue;
    }
    ASSERT_EQ(st, SendStatus::kBackPressure);
    ++refusals;
    EXPECT_LE(link->queued_bytes(), 256u << 10);
    auto space = std::make_shared<std::promise<bool>>();
    got_space = space->get_future();
    link->when_writable(64 << 10, [space](bool up) { space->set_value(up); });
    if (got_space.wait_for(300ms) == std::future_status::timeout) break;  // stuck: full
    ASSERT_TRUE(got_space.get());
  }
  ASSERT_TRUE(got_space.valid()) << "the budget was never hit";
  const uint64_t accepted = seq;
  EXPECT_GE(link->metrics().send_refused.load(), refusals);
  EXPECT_EQ(link->state(), State::kUp);  // slow is not dead

  handler->open_gate();
  ASSERT_EQ(got_space.wait_for(kWait), std::future_status::ready);
  EXPECT_TRUE(got_space.get());
  ++seq;
  ASSERT_EQ(send_waiting(*link, write_frame(seq, payload)), SendStatus::kQueued);

  ASSERT_TRUE(handler->m.wait([&] { return handler->frames.size() >= accepted + 1; }));
  handler->m.read([&] {
    for (uint64_t i = 0; i < handler->frames.size(); ++i) {
      EXPECT_EQ(handler->frames[i].header.sequence, i + 1);
    }
    return 0;
  });
  ASSERT_TRUE(log->wait_frames(accepted + 1));
  EXPECT_EQ(log->m.read([&] { return log->count(State::kDown); }), 0u);
}

TEST_F(LinkTest, CloseReportsDroppedFramesAndWakesWaiters) {
  auto handler = std::make_shared<TestHandler>();
  auto events = std::make_shared<EventLog>();
  LinkServer* server = start_server(handler, events);
  ASSERT_NE(server, nullptr);
  auto log = std::make_shared<LinkLog>();
  PeerLink* link = make_link(server->local_port(), log, nullptr,
                             [](PeerLink::Options& o) { o.send_budget_bytes = 128 << 10; });
  ASSERT_TRUE(log->wait_state(State::kUp));
  handler->close_gate();
  const auto payload = random_bytes(32 << 10, 4);
  uint64_t seq = 0;
  while (link->send(write_frame(++seq, payload)) == SendStatus::kQueued && seq < 8000) {
  }
  ASSERT_GT(link->queued_bytes(), 0u);
  auto space = std::make_shared<std::promise<bool>>();
  auto woke = space->get_future();
  link->when_writable(1 << 20, [space](bool up) { space->set_value(up); });

  link->close();
  ASSERT_TRUE(log->wait_state(State::kClosed));
  auto closed = log->last(State::kClosed);
  ASSERT_TRUE(closed.has_value());
  EXPECT_GE(closed->dropped_frames, 1u);  // never silently resent: reported to the engine
  EXPECT_GT(closed->dropped_bytes, 0u);
  ASSERT_EQ(woke.wait_for(kWait), std::future_status::ready);
  EXPECT_FALSE(woke.get());
  EXPECT_EQ(link->send(write_frame(seq, payload)), SendStatus::kNotUp);
  EXPECT_GE(link->metrics().frames_dropped.load(), closed->dropped_frames);
  handler->open_gate();
}

TEST_F(LinkTest, StalledWriteDropsLinkReportsDroppedFramesAndReconnects) {
  auto handler = std::make_shared<TestHandler>();
  auto events = std::make_shared<EventLog>();
  LinkServer* server = start_server(handler, events);
  ASSERT_NE(server, nullptr);
  auto log = std::make_shared<LinkLog>();
  PeerLink* link = make_link(server->local_port(), log, nullptr, [](PeerLink::Options& o) {
    o.send_budget_bytes = 256 << 10;
    o.write_timeout = 300ms;
  });
  ASSERT_TRUE(log->wait_state(State::kUp));

  // The replica stops reading; the sender keeps offering frames until a write stalls past its
  // deadline and the link is declared down.
  handler->close_gate();
  const auto payload = random_bytes(64 << 10, 5);
  uint64_t seq = 0;
  bool down = false;
  while (!down && seq < 4000) {
    const SendStatus st = link->send(write_frame(seq + 1, payload));
    if (st == SendStatus::kQueued) {
      ++seq;
    } else {
      ASSERT_NE(st, SendStatus::kInvalid);
      down = log->wait_state(State::kDown, 1, 100ms);
    }
  }
  ASSERT_TRUE(down);
  auto change = log->last(State::kDown);
  ASSERT_TRUE(change.has_value());
  EXPECT_NE(change->reason.find("write stalled"), std::string::npos) << change->reason;
  EXPECT_GE(change->dropped_frames, 1u);  // cleared and reported, not kept for a resend
  EXPECT_GE(link->metrics().write_timeouts.load(), 1u);
  handler->open_gate();

  // It reconnects; only what is sent after that goes out on the new connection.
  ASSERT_TRUE(log->wait_state(State::kUp, 2));
  const uint64_t fresh = 100'000;
  ASSERT_EQ(send_waiting(*link, write_frame(fresh, payload)), SendStatus::kQueued);
  ASSERT_TRUE(handler->m.wait([&] {
    for (const auto& f : handler->frames) {
      if (f.header.sequence == fresh) return true;
    }
    return false;
  }));
  handler->m.read([&] {
    std::vector<uint64_t> seqs;
    for (const auto& f : handler->frames) seqs.push_back(f.header.sequence);
    std::sort(seqs.begin(), seqs.end());
    EXPECT_EQ(std::adjacent_find(seqs.begin(), seqs.end()), seqs.end()) << "a frame was resent";
    EXPECT_LE(seqs.size(), seq - change->dropped_frames + 1);
    return 0;
  });
}

TEST_F(LinkTest, PeerRestartReportsDownThenUpAgain) {
  auto handler = std::make_shared<TestHandler>();
  auto events = std::make_shared<EventLog>();
  LinkServer* server = start_server(handler, events);
  ASSERT_NE(server, nullptr);
  const uint16_t port = server->local_port();
  auto log = std::make_shared<LinkLog>();
  PeerLink* link = make_link(port, log);
  ASSERT_TRUE(log->wait_state(State::kUp));
  ASSERT_EQ(link->send(write_frame(1, compressible_bytes(4096))), SendStatus::kQueued);
  ASSERT_TRUE(log->wait_frames(1));

  stop_server(server);  // the peer goes away
  ASSERT_TRUE(log->wait_state(State::kDown));
  auto down = log->last(State::kDown);
  ASSERT_TRUE(down.has_value());
  EXPECT_FALSE(down->reason.empty());
  EXPECT_EQ(link->send(write_frame(2, compressible_bytes(4096))), SendStatus::kNotUp);

  auto handler2 = std::make_shared<TestHandler>();
  ASSERT_NE(start_server(handler2, events, port), nullptr);  // the peer comes back
  ASSERT_TRUE(log->wait_state(State::kUp, 2));
  ASSERT_EQ(link->send(write_frame(2, compressible_bytes(4096))), SendStatus::kQueued);
  ASSERT_TRUE(log->wait_frames(2));
  EXPECT_TRUE(handler2->m.wait([&] { return handler2->frames.size() == 1; }));
  EXPECT_EQ(link->metrics().connects.load(), 2u);
  EXPECT_GE(link->metrics().reconnects.load(), 1u);
  EXPECT_GE(link->metrics().disconnects.load(), 1u);
}

TEST_F(LinkTest, ForeignCertificateRefusedWithReason) {
  auto handler = std::make_shared<TestHandler>();
  auto events = std::make_shared<EventLog>();
  LinkServer* server = start_server(handler, events);
  ASSERT_NE(server, nullptr);
  ssl::context foreign = context_for(*foreign_creds_);
  auto log = std::make_shared<LinkLog>();
  make_link(server->local_port(), log, &foreign);

  ASSERT_TRUE(events->wait_kind(ServerEvent::Kind::kPeerRefused));
  auto e = events->m.read([&] { return events->events.front(); });
  EXPECT_EQ(e.kind, ServerEvent::Kind::kPeerRefused);
  EXPECT_EQ(e.remote.rfind("127.0.0.1:", 0), 0u) << e.remote;
  EXPECT_NE(e.reason.find("refused"), std::string::npos) << e.reason;
  EXPECT_NE(e.reason.find("node-x"), std::string::npos) << e.reason;
  EXPECT_STREQ(to_string(e.kind), "peer without a valid certificate refused");
  ASSERT_TRUE(log->wait_state(State::kDown));
  EXPECT_EQ(log->m.read([&] { return log->count(State::kUp); }), 0u);
  EXPECT_GE(server->metrics().refused_certificate.load(), 1u);
  EXPECT_EQ(handler->m.read([&] { return handler->ups; }), 0u);
}

// A raw TLS client that writes `bytes` and reports how its connection ended.
asio::awaitable<void> raw_client(uint16_t port, ssl::context& ctx, std::vector<uint8_t> bytes,
                                 std::shared_ptr<std::promise<std::string>> done) {
  auto ex = co_await asio::this_coro::executor;
  auto conn = co_await transport::async_connect_tls(ex, "127.0.0.1", port, ctx, 2s, "node-a");
  if (!conn) {
    done->set_value("connect failed: " + conn.error().message);
    co_return;
  }
  auto [wec, n] = co_await asio::async_write(conn->stream, asio::buffer(bytes), kAwait);
  (void)n;
  std::vector<uint8_t> buf(4096);
  for (;;) {
    auto [ec, got] = co_await conn->stream.async_read_some(asio::buffer(buf), kAwait);
    (void)got;
    if (ec) {
      done->set_value("closed: " + ec.message());
      co_return;
    }
  }
}

TEST_F(LinkTest, GarbageAndBadCrcResetOnlyThatConnection) {
  auto handler = std::make_shared<TestHandler>();
  auto events = std::make_shared<EventLog>();
  LinkServer* server = start_server(handler, events);
  ASSERT_NE(server, nullptr);
  const uint16_t port = server->local_port();
  auto log = std::make_shared<LinkLog>();
  PeerLink* link = make_link(port, log);
  ASSERT_TRUE(log->wait_state(State::kUp));

  // Client 1: a proper HELLO, then a WRITE whose payload CRC does not match.
  std::vector<uint8_t> bad_crc = hello_frame("uuid-bad-crc");
  auto write = write_frame(7, random_bytes(1024, 9));
  write.back() ^= 0xFF;
  bad_crc.insert(bad_crc.end(), write.begin(), write.end());
  // Client 2: no HELLO, just noise.
  std::vector<uint8_t> noise = random_bytes(300, 11);

  auto done1 = std::make_shared<std::promise<std::string>>();
  auto done2 = std::make_shared<std::promise<std::string>>();
  auto f1 = done1->get_future();
  auto f2 = done2->get_future();
  asio::co_spawn(asio::make_strand(client_io_), raw_client(port, client_ctx_, bad_crc, done1),
                 rethrow);
  asio::co_spawn(asio::make_strand(client_io_), raw_client(port, client_ctx_, noise, done2),
                 rethrow);
  ASSERT_EQ(f1.wait_for(kWait), std::future_status::ready);
  ASSERT_EQ(f2.wait_for(kWait), std::future_status::ready);
  EXPECT_EQ(f1.get().rfind("closed:", 0), 0u);
  EXPECT_EQ(f2.get().rfind("closed:", 0), 0u);
  ASSERT_TRUE(events->wait_kind(ServerEvent::Kind::kProtocolError, 2));
  events->m.read([&] {
    bool saw_crc = false;
    for (const auto& e : events->events) {
      if (e.kind != ServerEvent::Kind::kProtocolError) continue;
      EXPECT_EQ(e.peer_name, "node-b");
      saw_crc |=
          e.reason.find("CRC") != std::string::npos || e.reason.find("crc") != std::string::npos;
    }
    EXPECT_TRUE(saw_crc);
    return 0;
  });
  // The corrupt WRITE was never handed to the handler, and the good link carries on.
  ASSERT_EQ(link->send(write_frame(1, compressible_bytes(4096))), SendStatus::kQueued);
  ASSERT_TRUE(log->wait_frames(1));
  handler->m.read([&] {
    EXPECT_EQ(handler->frames.size(), 1u);
    EXPECT_EQ(handler->ups, 2u);  // the good link and the bad-CRC client (HELLO was fine)
    return 0;
  });
  EXPECT_EQ(link->state(), State::kUp);
  EXPECT_GE(server->metrics().protocol_errors.load(), 2u);
}

TEST_F(LinkTest, TooManyConnectionsRefusedAtOnce) {
  auto handler = std::make_shared<TestHandler>();
  auto events = std::make_shared<EventLog>();
  LinkServer* server =
      start_server(handler, events, 0, [](LinkServer::Options& o) { o.max_connections = 1; });
  ASSERT_NE(server, nullptr);
  auto log1 = std::make_shared<LinkLog>();
  make_link(server->local_port(), log1);
  ASSERT_TRUE(log1->wait_state(State::kUp));
  auto log2 = std::make_shared<LinkLog>();
  make_link(server->local_port(), log2);
  ASSERT_TRUE(events->wait_kind(ServerEvent::Kind::kTooManyConnections));
  ASSERT_TRUE(log2->wait_state(State::kDown));
  EXPECT_EQ(log2->m.read([&] { return log2->count(State::kUp); }), 0u);
  EXPECT_EQ(server->connection_count(), 1u);
}

// A TLS peer that answers HELLO and then never writes again (but keeps reading).
asio::awaitable<void> silent_server(std::shared_ptr<tcp::acceptor> acceptor, ssl::context& ctx,
                                    std::vector<uint8_t> hello,
                                    std::shared_ptr<std::atomic<size_t>> bytes_read) {
  auto [aec, socket] = co_await acceptor->async_accept(kAwait);
  if (aec) co_return;
  auto conn = co_await transport::async_accept_tls(std::move(socket), ctx, 2s);
  if (!conn) co_return;
  auto [wec, n] = co_await asio::async_write(conn->stream, asio::buffer(hello), kAwait);
  (void)n;
  if (wec) co_return;
  std::vector<uint8_t> buf(4096);
  for (;;) {
    auto [ec, got] = co_await conn->stream.async_read_some(asio::buffer(buf), kAwait);
    if (ec) co_return;
    bytes_read->fetch_add(got);
  }
}

TEST_F(LinkTest, HeartbeatsKeepAnIdleLinkUpAndASilentPeerIsDetected) {
  auto short_timeouts = [](PeerLink::Options& o) {
    o.heartbeat_interval = 40ms;
    o.idle_timeout = 250ms;
  };
  // A live but idle peer: heartbeats both ways keep the link up well past the idle timeout.
  auto handler = std::make_shared<TestHandler>();
  auto events = std::make_shared<EventLog>();
  LinkServer* server = start_server(handler, events, 0, [](LinkServer::Options& o) {
    o.heartbeat_interval = 40ms;
    o.idle_timeout = 250ms;
  });
  ASSERT_NE(server, nullptr);
  auto live_log = std::make_shared<LinkLog>();
  PeerLink* live = make_link(server->local_port(), live_log, nullptr, short_timeouts);
  ASSERT_TRUE(live_log->wait_state(State::kUp));
  // Bounded wait for something that must NOT happen: 4x the idle timeout.
  EXPECT_FALSE(live_log->wait_state(State::kDown, 1, 1000ms));
  EXPECT_GE(live->metrics().heartbeats_sent.load(), 5u);
  EXPECT_GE(server->metrics().heartbeats_sent.load(), 5u);

  // A silent peer: it answered HELLO and then says nothing.
  auto acceptor = std::make_shared<tcp::acceptor>(
      server_io_, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  const uint16_t port = acceptor->local_endpoint().port();
  auto bytes_read = std::make_shared<std::atomic<size_t>>(0);
  asio::co_spawn(acceptor->get_executor(),
                 silent_server(acceptor, server_ctx_, hello_frame("uuid-silent"), bytes_read),
                 rethrow);
  auto log = std::make_shared<LinkLog>();
  PeerLink* link = make_link(port, log, nullptr, short_timeouts);
  ASSERT_TRUE(log->wait_state(State::kUp));
  ASSERT_TRUE(log->wait_state(State::kDown));
  auto down = log->last(State::kDown);
  ASSERT_TRUE(down.has_value());
  EXPECT_NE(down->reason.find("idle timeout"), std::string::npos) << down->reason;
  EXPECT_GE(link->metrics().idle_timeouts.load(), 1u);
  EXPECT_GE(link->metrics().heartbeats_sent.load(), 1u);
  EXPECT_GT(bytes_read->load(), wire::kHeaderSize);  // our HELLO and heartbeats got there
  asio::post(acceptor->get_executor(), [acceptor] {
    boost::system::error_code ec;
    acceptor->close(ec);
  });
}

}  // namespace
}  // namespace tandem::backend::link
