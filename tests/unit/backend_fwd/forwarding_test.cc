// Forwarded block I/O end to end: a real ForwardingVolume (TLS on 127.0.0.1, ephemeral ports)
// talking to a real LinkServer + ForwardServer over a real FileVolume in a temp dir. Covers
// every BlockVolume call, QD 32 with data checks and overlapping-write order, a server closed
// and restarted on the same port mid-stream, retarget to a second master, timeouts, unknown
// volumes and hostile request frames (random ones: forward_server_test.cc). Every wait is bounded (futures / condition variables);
// nothing sleeps to synchronise.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ssl/context.hpp>
#include <condition_variable>
#include <cstring>
#include <filesystem>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

#include "backend/fwd/forward_server.h"
#include "backend/fwd/forwarding_volume.h"
#include "backend/link/link_server.h"
#include "backend/link/peer_link.h"
#include "backend/store/file_volume.h"
#include "backend/store/io_pool.h"
#include "backend/transport/tls_identity.h"
#include "backend/transport/tls_stream.h"
#include "tests/unit/backend_fwd/fwd_test_util.h"
#include "tests/unit/backend_transport/test_pki.h"

namespace tandem::backend::fwd {
namespace {

namespace asio = boost::asio;
namespace ssl = boost::asio::ssl;
using namespace std::chrono_literals;
using core::IoResult;
using core::IoStatus;
using namespace fwd::testing;

// The daemon's dispatcher, reduced to forwarding.
class Dispatch : public link::FrameHandler {
 public:
  explicit Dispatch(std::shared_ptr<ForwardServer> s) : server(std::move(s)) {}
  void on_connection_up(const std::shared_ptr<link::InboundConnection>& conn) override {
    std::lock_guard lock(mu);
    conns.push_back(conn);
  }
  // Drops every connection (the network, not the master, failing).
  void drop_all() {
    std::vector<std::weak_ptr<link::InboundConnection>> all;
    {
      std::lock_guard lock(mu);
      all.swap(conns);
    }
    for (auto& w : all) {
      if (auto c = w.lock()) c->close("test: connection cut");
    }
  }
  std::mutex mu;
  // Weak: a connection owns its handler, so strong references here would be a cycle.
  std::vector<std::weak_ptr<link::InboundConnection>> conns;
  void on_frame(const std::shared_ptr<link::InboundConnection>& conn, const wire::FrameHeader& h,
                std::vector<uint8_t> payload) override {
    if (h.type == wire::FrameType::kIoRequest) server->handle(conn, h, std::move(payload));
  }
  std::shared_ptr<ForwardServer> server;
};

// One master node: a LinkServer + ForwardServer and the volumes it serves.
struct Master {
  std::mutex mu;
  std::condition_variable cv;
  uint64_t lookups = 0;  // every request the ForwardServer looked a volume up for
  std::map<std::string, std::shared_ptr<core::BlockVolume>> volumes;
  std::shared_ptr<ForwardServer> fwd;
  std::shared_ptr<Dispatch> dispatch;
  std::unique_ptr<link::LinkServer> server;

  void put(std::shared_ptr<core::BlockVolume> v) {
    std::lock_guard lock(mu);
    volumes[v->uuid()] = std::move(v);
  }
  bool wait_lookups(uint64_t n) {
    std::unique_lock lock(mu);
    return cv.wait_for(lock, kWait, [&] { return lookups >= n; });
  }
};

class ForwardingTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new transport::testing::TempDir();
    transport::testing::make_ca(dir_->path() / "ca");
    creds_a_ = new transport::NodeCredentials(
        transport::testing::make_node(dir_->path() / "ca", "node-a"));
    creds_b_ = new transport::NodeCredentials(
        transport::testing::make_node(dir_->path() / "ca", "node-b"));
    creds_c_ = new transport::NodeCredentials(
        transport::testing::make_node(dir_->path() / "ca", "node-c"));
  }
  static void TearDownTestSuite() {
    delete creds_a_;
    delete creds_b_;
    delete creds_c_;
    delete dir_;
  }

  void SetUp() override {
    for (int i = 0; i < 2; ++i) {
      threads_.emplace_back([this] { server_io_.run(); });
      threads_.emplace_back([this] { client_io_.run(); });
    }
  }

  void TearDown() override {
    for (auto& v : fwd_volumes_) v->close();
    fwd_volumes_.clear();
    for (auto& m : masters_) stop(*m);
    pool_.reset();  // drains storage jobs whose replies post to server_io_
    // Let the links report closed (they hold their callbacks until then).
    server_guard_.reset();
    client_guard_.reset();
    for (auto& t : threads_) t.join();
    masters_.clear();
  }

  static ssl::context context_for(const transport::NodeCredentials& creds) {
    auto ctx = transport::make_tls_context(creds);
    if (!ctx) std::abort();
    return std::move(ctx).value();
  }

  // A file-backed volume holding `uuid` (created zeroed, or a copy of `copy_from`).
  std::shared_ptr<FileVolume> file_volume(const std::string& name, const std::string& uuid,
                                          const std::string& copy_from = {}) {
    const auto path = (dir_->path() / name).string();
    if (!copy_from.empty()) {
      std::filesystem::copy_file(dir_->path() / copy_from, path,
                                 std::filesystem::copy_options::overwrite_existing);
    } else {
      const int fd = ::open(path.c_str(), O_CREAT | O_TRUNC | O_RDWR, 0600);
      EXPECT_GE(fd, 0);
      EXPECT_EQ(::ftruncate(fd, off_t(kBlocks * kBs)), 0);
      ::close(fd);
    }
    auto v = FileVolume::open(path, uuid, kBs, *pool_);
    EXPECT_TRUE(v);
    return v;
  }

  Master* start_master(ssl::context& ctx, const std::string& node_id, uint16_t port = 0,
                       Master* reuse = nullptr, ForwardServer::Options fo = {}) {
    Master* m = reuse;
    if (!m) {
      masters_.push_back(std::make_unique<Master>());
      m = masters_.back().get();
    }
    m->fwd = std::make_shared<ForwardServer>([m](const std::string& uuid) {
      std::lock_guard lock(m->mu);
      ++m->lookups;
      m->cv.notify_all();
      auto it = m->volumes.find(uuid);
      return it == m->volumes.end() ? nullptr : it->second;
    }, fo);
    m->dispatch = std::make_shared<Dispatch>(m->fwd);
    link::LinkServer::Options o;
    o.bind_address = "127.0.0.1";
    o.port = port;
    o.hello = wire::Hello{node_id, "127.0.0.1"};
    o.handshake_timeout = 2s;
    auto s = link::LinkServer::start(server_io_, ctx, o, m->dispatch, {});
    EXPECT_TRUE(s.ok()) << (s.ok() ? "" : s.error().message);
    if (!s) return nullptr;
    m->server = std::move(s).value();
    return m;
  }

  static void stop(Master& m) {
    if (!m.server) return;
    std::promise<void> done;
    auto f = done.get_future();
    m.server->close([&done] { done.set_value(); });
    EXPECT_EQ(f.wait_for(kWait), std::future_status::ready) << "server did not close";
    m.server.reset();
  }

  std::shared_ptr<ForwardingVolume> forwarder(uint16_t port, const std::string& peer = "node-a",
                                              ForwardingVolume::Options o = {},
                                              const std::string& uuid = kUuid) {
    o.backoff_min = 10ms;
    o.backoff_max = 100ms;
    o.connect_timeout = 2s;
    o.retry_interval = 20ms;
    auto v = ForwardingVolume::create(client_io_, ctx_c_, uuid, kBs, kBlocks,
                                      {peer, "127.0.0.1", port},
                                      wire::Hello{"uuid-node-c", "127.0.0.1"}, o);
    EXPECT_TRUE(v.ok()) << (v.ok() ? "" : v.error().message);
    if (!v) return nullptr;
    fwd_volumes_.push_back(*v);
    return *v;
  }

  static std::vector<std::byte> read_back(core::BlockVolume& v, uint64_t lba, size_t blocks,
                                          IoStatus* status = nullptr) {
    std::vector<std::byte> out(blocks * kBs);
    auto r = io([&](auto d) { v.read(lba, out, d); });
    if (status) *status = r.status;
    EXPECT_TRUE(r.ok() || status) << int(r.status);
    return out;
  }

  static transport::testing::TempDir* dir_;
  static transport::NodeCredentials* creds_a_;
  static transport::NodeCredentials* creds_b_;
  static transport::NodeCredentials* creds_c_;

  // Reset in TearDown: storage jobs still finishing reply on connections of server_io_, so
  // they must be drained before the io_contexts go.
  std::unique_ptr<IoPool> pool_ = std::make_unique<IoPool>(4);
  ssl::context ctx_a_ = context_for(*creds_a_);
  ssl::context ctx_b_ = context_for(*creds_b_);
  ssl::context ctx_c_ = context_for(*creds_c_);
  asio::io_context server_io_;
  asio::io_context client_io_;
  asio::executor_work_guard<asio::io_context::executor_type> server_guard_ =
      asio::make_work_guard(server_io_);
  asio::executor_work_guard<asio::io_context::executor_type> client_guard_ =
      asio::make_work_guard(client_io_);
  std::vector<std::thread> threads_;
  std::vector<std::unique_ptr<Master>> masters_;
  std::vector<std::shared_ptr<ForwardingVolume>> fwd_volumes_;
};

transport::testing::TempDir* ForwardingTest::dir_ = nullptr;
transport::NodeCredentials* ForwardingTest::creds_a_ = nullptr;
transport::NodeCredentials* ForwardingTest::creds_b_ = nullptr;
transport::NodeCredentials* ForwardingTest::creds_c_ = nullptr;

TEST_F(ForwardingTest, CreateRejectsBadArguments) {
  ForwardingVolume::Target t{"node-a", "127.0.0.1", 1};
  wire::Hello hello{"uuid-node-c", ""};
  EXPECT_FALSE(ForwardingVolume::create(client_io_, ctx_c_, "not-a-uuid", kBs, kBlocks, t, hello)
                   .ok());
  EXPECT_FALSE(ForwardingVolume::create(client_io_, ctx_c_, kUuid, 0, kBlocks, t, hello).ok());
  EXPECT_FALSE(ForwardingVolume::create(client_io_, ctx_c_, kUuid, kBs, kBlocks,
                                        {"", "127.0.0.1", 1}, hello)
                   .ok());
  EXPECT_FALSE(ForwardingVolume::create(client_io_, ctx_c_, kUuid, kBs, kBlocks, t,
                                        wire::Hello{"", ""})
                   .ok());
}

TEST_F(ForwardingTest, EveryCallRoundTrips) {
  auto file = file_volume("rt.img", kUuid);
  Master* m = start_master(ctx_a_, "uuid-node-a");
  ASSERT_TRUE(m);
  m->put(file);
  auto v = forwarder(m->server->local_port());
  ASSERT_TRUE(v);
  EXPECT_EQ(v->state(), core::VolumeState::kHealthy);
  EXPECT_EQ(v->uuid(), kUuid);
  EXPECT_EQ(v->block_count(), kBlocks);

  const auto data = pattern(8, 1);
  EXPECT_TRUE(io([&](auto d) { v->write(10, data, false, d); }).ok());
  EXPECT_EQ(read_back(*v, 10, 8), data);
  EXPECT_EQ(read_back(*file, 10, 8), data);  // really on the master's store

  const auto fua = pattern(3, 2);
  EXPECT_TRUE(io([&](auto d) { v->write(100, fua, true, d); }).ok());
  EXPECT_EQ(read_back(*file, 100, 3), fua);
  EXPECT_TRUE(io([&](auto d) { v->flush(d); }).ok());

  // Unmap reads back zeros.
  EXPECT_TRUE(io([&](auto d) { v->unmap(10, 8, d); }).ok());
  EXPECT_EQ(read_back(*v, 10, 8), std::vector<std::byte>(8 * kBs));

  // LBA status: what the master's volume says, carried over the wire.
  Waiter<std::pair<IoResult, std::vector<core::LbaExtent>>> direct, remote;
  file->lba_status(0, kBlocks, [&](IoResult r, std::vector<core::LbaExtent> e) {
    direct.p->set_value({r, e});
  });
  v->lba_status(0, kBlocks, [&](IoResult r, std::vector<core::LbaExtent> e) {
    remote.p->set_value({r, e});
  });
  auto dr = direct.get();
  auto rr = remote.get();
  ASSERT_TRUE(dr && rr);
  ASSERT_TRUE(rr->first.ok());
  ASSERT_EQ(rr->second.size(), dr->second.size());
  ASSERT_FALSE(rr->second.empty());
  for (size_t i = 0; i < rr->second.size(); ++i) {
    EXPECT_EQ(rr->second[i].lba, dr->second[i].lba);
    EXPECT_EQ(rr->second[i].blocks, dr->second[i].blocks);
    EXPECT_EQ(rr->second[i].mapped, dr->second[i].mapped);
  }

  // Checked locally, never sent.
  std::vector<std::byte> one(kBs);
  EXPECT_EQ(io([&](auto d) { v->read(kBlocks, one, d); }).status, IoStatus::kOutOfRange);
  const auto two = pattern(2, 3);  // buffers outlive the call (core contract)
  EXPECT_EQ(io([&](auto d) { v->write(kBlocks - 1, two, false, d); }).status,
            IoStatus::kOutOfRange);
  EXPECT_EQ(io([&](auto d) { v->unmap(kBlocks, 1, d); }).status, IoStatus::kOutOfRange);
  EXPECT_EQ(m->fwd->stats().malformed.load(), 0u);
}

TEST_F(ForwardingTest, CompareAndWriteSucceedsAndReportsMiscompareOffset) {
  auto file = file_volume("caw.img", kUuid);
  Master* m = start_master(ctx_a_, "uuid-node-a");
  ASSERT_TRUE(m);
  m->put(file);
  auto v = forwarder(m->server->local_port());
  const auto old_data = pattern(2, 10);
  const auto new_data = pattern(2, 11);
  ASSERT_TRUE(io([&](auto d) { v->write(50, old_data, false, d); }).ok());
  EXPECT_TRUE(io([&](auto d) { v->compare_and_write(50, old_data, new_data, true, d); }).ok());
  EXPECT_EQ(read_back(*file, 50, 2), new_data);

  auto wrong = new_data;
  wrong[700] ^= std::byte{0x5A};
  auto r = io([&](auto d) { v->compare_and_write(50, wrong, old_data, false, d); });
  EXPECT_EQ(r.status, IoStatus::kMiscompare);
  EXPECT_EQ(r.miscompare_offset, 700u);
  EXPECT_EQ(read_back(*file, 50, 2), new_data);  // untouched
}

TEST_F(ForwardingTest, QueueDepth32WithDataVerifiedAndOverlapOrderKept) {
  auto file = file_volume("qd.img", kUuid);
  Master* m = start_master(ctx_a_, "uuid-node-a");
  ASSERT_TRUE(m);
  m->put(file);
  auto v = forwarder(m->server->local_port());

  // 32 submitters, 8 writes each to their own ranges, all in flight together.
  constexpr int kThreads = 32, kPer = 8, kLen = 4;
  std::vector<std::vector<std::byte>> datas(kThreads * kPer);
  for (size_t i = 0; i < datas.size(); ++i) datas[i] = pattern(kLen, uint32_t(1000 + i));
  std::atomic<int> ok{0}, done{0};
  std::mutex mu;
  std::condition_variable cv;
  std::vector<std::thread> submitters;
  for (int t = 0; t < kThreads; ++t) {
    submitters.emplace_back([&, t] {
      for (int k = 0; k < kPer; ++k) {
        const size_t i = size_t(t * kPer + k);
        v->write(i * kLen, datas[i], k == 0, [&](IoResult r) {
          if (r.ok()) ok.fetch_add(1);
          std::lock_guard lock(mu);
          done.fetch_add(1);
          cv.notify_all();
        });
      }
    });
  }
  for (auto& t : submitters) t.join();
  {
    std::unique_lock lock(mu);
    ASSERT_TRUE(cv.wait_for(lock, kWait, [&] { return done.load() == kThreads * kPer; }));
  }
  EXPECT_EQ(ok.load(), kThreads * kPer);
  const auto all = read_back(*v, 0, kThreads * kPer * kLen);
  for (size_t i = 0; i < datas.size(); ++i) {
    ASSERT_EQ(0, std::memcmp(all.data() + i * kLen * kBs, datas[i].data(), kLen * kBs)) << i;
  }

  // 32 overlapping writes submitted back to back: the last one submitted wins.
  std::vector<std::vector<std::byte>> over(32);
  std::vector<Waiter<IoResult>> waits(32);
  for (size_t i = 0; i < over.size(); ++i) {
    over[i] = pattern(8, uint32_t(5000 + i));
    v->write(2000 + i % 3, over[i], false, waits[i].cb());
  }
  for (auto& w : waits) {
    auto r = w.get();
    ASSERT_TRUE(r && r->ok());
  }
  const auto last = read_back(*file, 2000 + 31 % 3, 8);
  EXPECT_EQ(last, over[31]);
}

TEST_F(ForwardingTest, ServerRestartMidStreamLosesNothing) {
  auto file = file_volume("restart.img", kUuid);
  auto gated = std::make_shared<GatedVolume>(file);
  Master* m = start_master(ctx_a_, "uuid-node-a");
  ASSERT_TRUE(m);
  m->put(gated);
  const uint16_t port = m->server->local_port();
  auto v = forwarder(port);

  const auto first = pattern(1, 1);
  ASSERT_TRUE(io([&](auto d) { v->write(0, first, false, d); }).ok());  // link up
  gated->hold();
  constexpr size_t kN = 16;
  std::vector<std::vector<std::byte>> datas(kN);
  std::vector<Waiter<IoResult>> waits(kN);
  for (size_t i = 0; i < kN; ++i) {
    datas[i] = pattern(4, uint32_t(300 + i));
    v->write(100 + i * 4, datas[i], i % 2 == 0, waits[i].cb());
  }
  ASSERT_TRUE(gated->wait_held(kN));  // all reached the master, none answered
  stop(*m);                           // the master goes away with them in flight
  EXPECT_EQ(v->pending(), kN);
  for (auto& w : waits) EXPECT_FALSE(w.get(0ms).has_value());  // none failed

  // The master comes back on the same port, serving the same store directly.
  m->volumes.clear();
  m->put(file);
  ASSERT_TRUE(start_master(ctx_a_, "uuid-node-a", port, m));
  for (size_t i = 0; i < kN; ++i) {
    auto r = waits[i].get();
    ASSERT_TRUE(r.has_value()) << i;
    EXPECT_TRUE(r->ok()) << i;
  }
  EXPECT_GE(v->resends(), kN);
  gated->release();  // the stale copies land too: same data, same place
  for (size_t i = 0; i < kN; ++i) EXPECT_EQ(read_back(*v, 100 + i * 4, 4), datas[i]) << i;
}

// Overlapping writes submitted back to back while the connection is cut again and again: the
// image ends as if every write had been applied in submission order (seeded; prints the seed).
TEST_F(ForwardingTest, OverlappingWritesKeepOrderAcrossRepeatedDrops) {
  auto file = file_volume("drops.img", kUuid);
  Master* m = start_master(ctx_a_, "uuid-node-a");
  ASSERT_TRUE(m);
  m->put(file);
  auto v = forwarder(m->server->local_port());
  constexpr size_t kN = 300, kSpan = 16;
  const auto warm = pattern(1, 1);
  ASSERT_TRUE(io([&](auto d) { v->write(kSpan, warm, false, d); }).ok());  // link up
  const uint64_t seed = 7;
  std::mt19937 rng(seed);
  std::vector<std::vector<std::byte>> datas(kN);
  std::vector<Waiter<IoResult>> waits(kN);
  std::vector<std::byte> model(kSpan * kBs);
  for (size_t i = 0; i < kN; ++i) {
    const uint64_t lba = rng() % (kSpan - 4);
    const size_t len = 1 + rng() % 4;
    datas[i] = pattern(len, uint32_t(seed * 1000 + i));
    std::memcpy(model.data() + lba * kBs, datas[i].data(), datas[i].size());
    v->write(lba, datas[i], rng() % 8 == 0, waits[i].cb());
    if (i % 50 == 25) m->dispatch->drop_all();
  }
  for (size_t i = 0; i < kN; ++i) {
    auto r = waits[i].get();
    ASSERT_TRUE(r.has_value()) << "write " << i << ", seed " << seed;
    ASSERT_TRUE(r->ok()) << "write " << i << ", seed " << seed;
  }
  EXPECT_EQ(read_back(*file, 0, kSpan), model) << "seed " << seed;
  EXPECT_GT(v->resends(), 0u);  // the drops did catch writes in flight
}

// A master over its in-flight bound refuses some requests (RETRY) and takes others: a refused
// write must not be overtaken by a later overlapping one that the master did take.
TEST_F(ForwardingTest, OverlappingWritesKeepOrderWhenTheMasterRefusesSome) {
  auto file = file_volume("refuse.img", kUuid);
  // The master's volume is held until its two slots are taken and refusals have happened: a
  // file volume completing writes inline would otherwise rarely have two in flight at once.
  auto gated = std::make_shared<GatedVolume>(file);
  ForwardServer::Options fo;
  fo.max_inflight_requests = 2;
  Master* m = start_master(ctx_a_, "uuid-node-a", 0, nullptr, fo);
  ASSERT_TRUE(m);
  m->put(gated);
  ForwardingVolume::Options o;
  o.retry_interval = 1ms;
  auto v = forwarder(m->server->local_port(), "node-a", o);
  constexpr size_t kN = 120, kSpan = 8;
  std::vector<std::vector<std::byte>> datas(kN);
  std::vector<Waiter<IoResult>> waits(kN);
  std::vector<std::byte> model(kSpan * kBs);
  std::mt19937 rng(11);
  gated->hold();
  for (size_t i = 0; i < kN; ++i) {
    // Every other write lands far away (filling the master's two slots); the rest overlap.
    const bool far = i % 2 == 1;
    const uint64_t lba = far ? 1000 + i * 8 : rng() % (kSpan - 2);
    datas[i] = pattern(far ? 8 : 2, uint32_t(9000 + i));
    if (!far) std::memcpy(model.data() + lba * kBs, datas[i].data(), datas[i].size());
    v->write(lba, datas[i], false, waits[i].cb());
  }
  ASSERT_TRUE(gated->wait_held(2));  // both slots taken
  {
    // Refused requests are asked for again every millisecond, each a lookup that wakes us.
    std::unique_lock lock(m->mu);
    ASSERT_TRUE(m->cv.wait_for(lock, kWait, [&] { return m->fwd->stats().busy.load() > 0; }));
  }
  gated->release();
  for (size_t i = 0; i < kN; ++i) {
    auto r = waits[i].get();
    ASSERT_TRUE(r.has_value()) << i;
    ASSERT_TRUE(r->ok()) << i;
  }
  EXPECT_EQ(read_back(*file, 0, kSpan), model);
}

// A COMPARE AND WRITE that ran on the master but whose answer was lost with the connection is
// re-sent: the master answers it as the first time, not with a false miscompare.
TEST_F(ForwardingTest, CompareAndWriteResentAfterDropIsAnsweredFromMemory) {
  auto file = file_volume("caw-drop.img", kUuid);
  auto gated = std::make_shared<GatedVolume>(file);
  Master* m = start_master(ctx_a_, "uuid-node-a");
  ASSERT_TRUE(m);
  m->put(gated);
  auto v = forwarder(m->server->local_port());
  const auto old_data = pattern(1, 20);
  const auto new_data = pattern(1, 21);
  ASSERT_TRUE(io([&](auto d) { v->write(9, old_data, false, d); }).ok());
  gated->hold();
  Waiter<IoResult> w;
  v->compare_and_write(9, old_data, new_data, false, w.cb());
  ASSERT_TRUE(gated->wait_held(1));
  uint64_t looked_up = 0;
  {
    std::lock_guard lock(m->mu);
    looked_up = m->lookups;
  }
  m->dispatch->drop_all();                  // the answer of the held original will be lost
  ASSERT_TRUE(m->wait_lookups(looked_up + 1));  // the twin arrived on a new connection
  gated->release();                         // original compares equal and writes
  auto r = w.get();
  ASSERT_TRUE(r.has_value());
  EXPECT_TRUE(r->ok()) << int(r->status);
  EXPECT_EQ(m->fwd->stats().caw_replayed.load(), 1u);
  EXPECT_EQ(read_back(*file, 9, 1), new_data);
}

// Over the master's in-flight bound a request is answered kNotReady and retried, not lost.
TEST_F(ForwardingTest, BusyMasterRefusesAndTheForwarderRetries) {
  auto file = file_volume("busy.img", kUuid);
  auto gated = std::make_shared<GatedVolume>(file);
  ForwardServer::Options fo;
  fo.max_inflight_requests = 1;
  Master* m = start_master(ctx_a_, "uuid-node-a", 0, nullptr, fo);
  ASSERT_TRUE(m);
  m->put(gated);
  auto v = forwarder(m->server->local_port());
  gated->hold();
  const auto a = pattern(2, 31), b = pattern(2, 32);
  Waiter<IoResult> wa, wb;
  v->write(0, a, false, wa.cb());
  ASSERT_TRUE(gated->wait_held(1));
  uint64_t looked_up = 0;
  {
    std::lock_guard lock(m->mu);
    looked_up = m->lookups;
  }
  v->write(100, b, false, wb.cb());
  ASSERT_TRUE(m->wait_lookups(looked_up + 2));  // refused, then asked again
  EXPECT_GE(m->fwd->stats().busy.load(), 1u);
  gated->release();
  auto ra = wa.get(), rb = wb.get();
  ASSERT_TRUE(ra && rb);
  EXPECT_TRUE(ra->ok());
  EXPECT_TRUE(rb->ok());
  EXPECT_EQ(read_back(*file, 100, 2), b);
}

// Reads whose answers together exceed the master's reply budget (16 MiB) at QD 32: the
// forwarder's in-flight budget counts the data coming back, so the link is never overrun.
TEST_F(ForwardingTest, LargeReadsAtDepthStayWithinTheRepliesBudget) {
  auto file = file_volume("big.img", kUuid);
  Master* m = start_master(ctx_a_, "uuid-node-a");
  ASSERT_TRUE(m);
  m->put(file);
  auto metrics = std::make_shared<link::LinkMetrics>();
  ForwardingVolume::Options o;
  o.metrics = metrics;
  auto v = forwarder(m->server->local_port(), "node-a", o);
  const auto data = pattern(2048, 40);  // 1 MiB
  ASSERT_TRUE(io([&](auto d) { v->write(0, data, false, d); }).ok());
  constexpr size_t kN = 32;
  std::vector<std::vector<std::byte>> outs(kN, std::vector<std::byte>(data.size()));
  std::vector<Waiter<IoResult>> waits(kN);
  for (size_t i = 0; i < kN; ++i) v->read(0, outs[i], waits[i].cb());
  for (size_t i = 0; i < kN; ++i) {
    auto r = waits[i].get();
    ASSERT_TRUE(r.has_value()) << i;
    EXPECT_TRUE(r->ok()) << i;
    EXPECT_EQ(outs[i], data) << i;
  }
  // The master never had to close the connection for unread replies (a reconnect for
  // another reason, e.g. a stall on a loaded machine, is allowed: the data is verified above).
  EXPECT_EQ(m->server->metrics().reply_overflows.load(), 0u);
}

TEST_F(ForwardingTest, RetargetMovesPendingRequestsToTheNewMaster) {
  auto file_a = file_volume("a.img", kUuid);
  Master* a = start_master(ctx_a_, "uuid-node-a");
  ASSERT_TRUE(a);
  auto gated = std::make_shared<GatedVolume>(file_a);
  a->put(gated);
  auto v = forwarder(a->server->local_port());
  const auto base = pattern(16, 77);
  ASSERT_TRUE(io([&](auto d) { v->write(500, base, false, d); }).ok());

  // Node B holds the same data (a replica in sync), and becomes master while A hangs.
  auto file_b = file_volume("b.img", kUuid + "", "a.img");
  Master* b = start_master(ctx_b_, "uuid-node-b");
  ASSERT_TRUE(b);
  b->put(file_b);
  gated->hold();
  const auto w = pattern(4, 78);
  Waiter<IoResult> wr;
  v->write(600, w, true, wr.cb());
  std::vector<std::byte> out(16 * kBs);
  Waiter<IoResult> rd;
  v->read(500, out, rd.cb());
  ASSERT_TRUE(gated->wait_held(2));

  EXPECT_FALSE(v->retarget({"", "127.0.0.1", 1}));  // unusable target: nothing changes
  ASSERT_TRUE(v->retarget({"node-b", "127.0.0.1", b->server->local_port()}));
  auto r1 = wr.get();
  auto r2 = rd.get();
  ASSERT_TRUE(r1 && r2);
  EXPECT_TRUE(r1->ok());
  EXPECT_TRUE(r2->ok());
  EXPECT_EQ(out, base);
  EXPECT_EQ(read_back(*file_b, 600, 4), w);
  gated->release();  // A's late answers go to a closed link and are ignored
  EXPECT_EQ(read_back(*v, 600, 4), w);
}

TEST_F(ForwardingTest, NoMasterTimesOutNotReady) {
  ForwardingVolume::Options o;
  o.request_timeout = 300ms;
  auto v = forwarder(1, "node-a", o);  // nobody listens on port 1
  ASSERT_TRUE(v);
  const auto start = std::chrono::steady_clock::now();
  const auto one = pattern(1, 1);
  auto r = io([&](auto d) { v->write(0, one, false, d); });
  EXPECT_EQ(r.status, IoStatus::kNotReady);
  EXPECT_GE(std::chrono::steady_clock::now() - start, 250ms);
  EXPECT_EQ(v->pending(), 0u);
  v->close();
  EXPECT_EQ(v->state(), core::VolumeState::kOffline);
  EXPECT_EQ(io([&](auto d) { v->flush(d); }).status, IoStatus::kNotReady);
}

// NOT READY from the master's volume itself is an answer, not a reason to retry.
TEST_F(ForwardingTest, HaltedMasterVolumeAnswersNotReadyAtOnce) {
  auto file = file_volume("halted.img", kUuid);
  Master* m = start_master(ctx_a_, "uuid-node-a");
  ASSERT_TRUE(m);
  m->put(std::make_shared<HaltedVolume>(file));
  ForwardingVolume::Options o;
  o.request_timeout = 3s;
  auto v = forwarder(m->server->local_port(), "node-a", o);
  const auto start = std::chrono::steady_clock::now();
  const auto one = pattern(1, 1);
  EXPECT_EQ(io([&](auto d) { v->write(0, one, false, d); }).status,
            IoStatus::kNotReady);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 2s);
  EXPECT_EQ(v->resends(), 0u);
  EXPECT_TRUE(io([&](auto d) { v->flush(d); }).ok());  // the rest of the volume still works
}

TEST_F(ForwardingTest, UnknownVolumeIsRetriedThenNotReady) {
  Master* m = start_master(ctx_a_, "uuid-node-a");
  ASSERT_TRUE(m);
  ForwardingVolume::Options o;
  o.request_timeout = 400ms;
  auto v = forwarder(m->server->local_port(), "node-a", o);
  EXPECT_EQ(io([&](auto d) { v->flush(d); }).status, IoStatus::kNotReady);
  EXPECT_GE(m->fwd->stats().unknown_volume.load(), 3u);  // asked again, not once
  EXPECT_GE(v->resends(), 2u);
  EXPECT_LE(v->resends(), 8u);  // 20, 40, 80, 160, 160 ms apart: spaced, not spinning

  // The volume appears on the master while a request is retrying: it then succeeds.
  o.request_timeout = 5s;
  auto v2 = forwarder(m->server->local_port(), "node-a", o);
  Waiter<IoResult> w;
  const auto data = pattern(2, 9);
  v2->write(7, data, false, w.cb());
  uint64_t seen = 0;
  {
    std::lock_guard lock(m->mu);
    seen = m->lookups;
  }
  ASSERT_TRUE(m->wait_lookups(seen + 2));  // refused at least twice, still retrying
  auto file = file_volume("late.img", kUuid);
  m->put(file);
  auto r = w.get();
  ASSERT_TRUE(r.has_value());
  EXPECT_TRUE(r->ok());
  EXPECT_EQ(read_back(*file, 7, 2), data);
}

// A hostile or buggy forwarder: every malformed request gets an error reply, nothing is
// applied, and the server keeps serving on the same connection.
TEST_F(ForwardingTest, HostileRequestsGetErrorRepliesAndTheServerGoesOn) {
  auto file = file_volume("hostile.img", kUuid);
  Master* m = start_master(ctx_a_, "uuid-node-a");
  ASSERT_TRUE(m);
  m->put(file);

  std::mutex mu;
  std::condition_variable cv;
  std::map<uint64_t, wire::Frame> replies;
  bool up = false, closed = false;
  link::PeerLink::Options o;
  o.peer_name = "node-a";
  o.host = "127.0.0.1";
  o.port = m->server->local_port();
  o.hello = wire::Hello{"uuid-evil", ""};
  o.backoff_min = 10ms;
  o.backoff_max = 100ms;
  auto created = link::PeerLink::create(
      client_io_, ctx_c_, o,
      [&](const wire::FrameHeader& h, std::vector<uint8_t> p) {
        std::lock_guard lock(mu);
        replies[h.sequence] = wire::Frame{h, std::move(p)};
        cv.notify_all();
      },
      [&](const link::PeerLink::StateChange& c) {
        std::lock_guard lock(mu);
        up = c.state == link::PeerLink::State::kUp;
        closed = c.state == link::PeerLink::State::kClosed;
        cv.notify_all();
      });
  ASSERT_TRUE(created.ok());
  auto lk = std::move(created).value();
  {
    std::unique_lock lock(mu);
    ASSERT_TRUE(cv.wait_for(lock, kWait, [&] { return up; }));
  }
  wire::Uuid vol;
  ASSERT_TRUE(wire::parse_uuid(kUuid, vol));
  struct Case {
    uint32_t op;
    uint64_t lba, count;
    size_t payload;
    IoStatus want;
  };
  const std::vector<Case> cases = {
      {0, 0, 1, 0, IoStatus::kMediumError},                      // opcode 0
      {99, 0, 1, 0, IoStatus::kMediumError},                     // unknown opcode
      {1, kBlocks, 1, 0, IoStatus::kOutOfRange},                 // read past the end
      {1, ~0ull, 2, 0, IoStatus::kOutOfRange},                   // lba + count wraps
      {1, 0, 0, 0, IoStatus::kOutOfRange},                       // zero blocks
      {1, 0, 1, kBs, IoStatus::kMediumError},                    // read with a payload
      {2, 0, 2, kBs, IoStatus::kMediumError},                    // write: short payload
      {2, 0, 1, kBs + 1, IoStatus::kMediumError},                // write: odd payload
      {2, 0, 1ull << 40, kBs, IoStatus::kOutOfRange},            // count beyond the volume
      {3, 0, 0, 16, IoStatus::kMediumError},                     // flush with a payload
      {4, kBlocks - 1, 2, 0, IoStatus::kOutOfRange},             // unmap past the end
      {5, 0, 1, kBs, IoStatus::kMediumError},                    // CAW: half the bytes
      {6, kBlocks, 1, 0, IoStatus::kOutOfRange},                 // lba status past the end
      {2, 8, 1, kBs, IoStatus::kOk},                             // a good write still works
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    wire::FrameHeader h;
    h.type = wire::FrameType::kIoRequest;
    h.volume = vol;
    h.sequence = 1000 + i;
    h.status = cases[i].op;
    h.lba = cases[i].lba;
    h.count = cases[i].count;
    std::vector<uint8_t> payload(cases[i].payload, 0xEE);
    std::vector<uint8_t> frame;
    ASSERT_TRUE(wire::encode(h, payload, true, frame).ok());
    ASSERT_EQ(lk->send(std::move(frame)), link::SendStatus::kQueued);
  }
  {
    std::unique_lock lock(mu);
    ASSERT_TRUE(cv.wait_for(lock, kWait, [&] { return replies.size() == cases.size(); }));
  }
  for (size_t i = 0; i < cases.size(); ++i) {
    const auto& f = replies.at(1000 + i);
    EXPECT_EQ(f.header.type, wire::FrameType::kIoReply);
    EXPECT_EQ(f.header.status, uint32_t(cases[i].want)) << "case " << i;
    EXPECT_EQ(f.header.volume, vol);
  }
  EXPECT_EQ(m->fwd->stats().malformed.load(), cases.size() - 1);
  // Nothing but the good write touched the store.
  auto zeros = read_back(*file, 0, 8);
  EXPECT_EQ(zeros, std::vector<std::byte>(8 * kBs));
  EXPECT_EQ(read_back(*file, 8, 1), std::vector<std::byte>(kBs, std::byte{0xEE}));

  // And a real forwarder is served as before.
  auto v = forwarder(m->server->local_port());
  EXPECT_EQ(read_back(*v, 8, 1), std::vector<std::byte>(kBs, std::byte{0xEE}));
  lk->close();
  {
    std::unique_lock lock(mu);
    EXPECT_TRUE(cv.wait_for(lock, kWait, [&] { return closed; }));
  }
}

}  // namespace
}  // namespace tandem::backend::fwd
