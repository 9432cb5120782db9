// ReplicatedVolume (master shell) and ReplicaHost/ReplicaCopy (replica shell) over real TLS
// links on 127.0.0.1, real sparse files and persisted region maps. Two replica "nodes" are two
// LinkServers with their own certificates. Waits are bounded polls of observable state.
#include <gtest/gtest.h>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ssl/context.hpp>
#include <chrono>
#include <fstream>
#include <future>
#include <random>
#include <thread>

#include "backend/link/link_server.h"
#include "backend/replicated/replica_host.h"
#include "backend/replicated/replicated_volume.h"
#include "backend/replicated/reply_poll.h"
#include "backend/store/file_store.h"
#include "backend/store/io_pool.h"
#include "backend/transport/tls_stream.h"
#include "core/volume_spec.h"
#include "tests/unit/backend_transport/test_pki.h"

namespace tandem::backend::replicated {
namespace {

namespace asio = boost::asio;
namespace ssl = boost::asio::ssl;
namespace tt = transport::testing;
using namespace std::chrono_literals;

constexpr uint64_t kVolumeBytes = 64u << 20;
constexpr uint32_t kBlock = 4096;

ssl::context context_for(const transport::NodeCredentials& creds) {
  auto ctx = transport::make_tls_context(creds);
  if (!ctx) std::abort();
  return std::move(ctx).value();
}

template <class P>
bool eventually(P pred, std::chrono::milliseconds bound = 15s) {
  auto end = std::chrono::steady_clock::now() + bound;
  while (std::chrono::steady_clock::now() < end) {
    if (pred()) return true;
    std::this_thread::sleep_for(5ms);  // polling an observable condition with a deadline
  }
  return pred();
}

std::string file_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

core::IoResult wait_io(std::function<void(core::BlockVolume::Done)> op) {
  std::promise<core::IoResult> p;
  auto f = p.get_future();
  op([&p](core::IoResult r) { p.set_value(r); });
  if (f.wait_for(15s) != std::future_status::ready) return {core::IoStatus::kNotReady, 0};
  return f.get();
}

// One replica node: a LinkServer with its own identity and a ReplicaHost.
struct ReplicaNode {
  std::string name;
  std::filesystem::path dir;
  std::unique_ptr<ssl::context> ctx;
  std::shared_ptr<ReplicaHost> host = std::make_shared<ReplicaHost>();
  std::unique_ptr<link::LinkServer> server;
  std::unique_ptr<FileStore> store;
  uint16_t port = 0;
};

class ReplicatedTest : public ::testing::Test {
 protected:
  void SetUp() override {
    tt::make_ca(tmp_.path() / "ca");
    master_creds_ = tt::make_node(tmp_.path() / "ca", "master");
    master_ctx_ = std::make_unique<ssl::context>(context_for(master_creds_));
    for (int i = 0; i < 4; ++i) threads_.emplace_back([this] { io_.run(); });
    master_store_ = std::make_unique<FileStore>((tmp_.path() / "master").string());
    ASSERT_TRUE(master_store_->init());
    id_ = core::new_uuid();
    ASSERT_TRUE(master_store_->create(id_, kVolumeBytes));
  }

  void TearDown() override {
    if (master_) {
      std::promise<void> p;
      master_->close([&p] { p.set_value(); });
      p.get_future().wait_for(5s);
      master_.reset();
    }
    for (auto& n : nodes_) {
      if (n->server) n->server->close();
    }
    guard_.reset();
    io_.stop();
    for (auto& t : threads_) t.join();
  }

  ReplicaNode& add_node(const std::string& name) {
    auto n = std::make_unique<ReplicaNode>();
    n->name = name;
    n->dir = tmp_.path() / name;
    auto creds = tt::make_node(tmp_.path() / "ca", name);
    n->ctx = std::make_unique<ssl::context>(context_for(creds));
    n->store = std::make_unique<FileStore>(n->dir.string());
    EXPECT_TRUE(n->store->init());
    EXPECT_TRUE(restart_server(*n));
    n->port = n->server->local_port();
    nodes_.push_back(std::move(n));
    return *nodes_.back();
  }

  // (Re)starts a replica node's listener, on its old port once it had one.
  bool restart_server(ReplicaNode& n) {
    link::LinkServer::Options o;
    o.bind_address = "127.0.0.1";
    o.port = n.port;
    o.hello = wire::Hello{"id-" + n.name, "127.0.0.1"};
    auto s = link::LinkServer::start(io_, *n.ctx, o, n.host, {});
    if (!s) return false;
    n.server = std::move(s).value();
    return true;
  }

  // The replica node "goes away": its copy closes, its listener stops.
  void lose_copy(ReplicaNode& n, const std::shared_ptr<ReplicaCopy>& copy, uint32_t number) {
    copy->close();
    n.host->remove(id_, number);
    n.server->close();
  }

  std::shared_ptr<ReplicaCopy> open_copy(ReplicaNode& n, uint32_t copy, bool in_sync) {
    bool fresh = !n.store->exists(id_);
    if (fresh) EXPECT_TRUE(n.store->create(id_, kVolumeBytes));
    auto vol = FileVolume::open(n.store->path_of(id_), id_, kBlock, pool_);
    EXPECT_TRUE(vol);
    ReplicaCopy::Options o;
    o.uuid = id_;
    o.copy = copy;
    o.map_path = (n.dir / (id_ + ".map")).string();
    o.fresh_file = fresh;
    o.in_sync = in_sync;
    auto c = ReplicaCopy::open(vol, o);
    EXPECT_TRUE(c.ok()) << (c.ok() ? "" : c.error());
    n.host->add(*c);
    return *c;
  }

  void open_master(uint64_t resync_bytes_per_second = 0, std::chrono::milliseconds lease_hold = 20s,
                   uint32_t features = wire::Hello{}.features) {
    auto vol = FileVolume::open(master_store_->path_of(id_), id_, kBlock, pool_);
    ASSERT_TRUE(vol);
    ReplicatedVolume::Options o;
    o.uuid = id_;
    o.image_path = master_store_->path_of(id_);
    o.map_path = (tmp_.path() / "master" / (id_ + ".map")).string();
    o.seq_path = (tmp_.path() / "master" / (id_ + ".seq")).string();
    o.hello = wire::Hello{"id-master", "127.0.0.1", features};
    o.link_metrics = metrics_;
    o.resync_bytes_per_second = resync_bytes_per_second;
    o.lease_hold = lease_hold;
    o.on_out_of_sync = [this](uint32_t copy, const std::string&) {
      out_of_sync_reports_.fetch_add(1);
      // The control plane records it (here: at once) and confirms off the strand.
      std::thread([w = weak_master_, copy] {
        if (auto m = w.lock()) m->confirm_out_of_sync(copy);
      }).detach();
    };
    auto m = ReplicatedVolume::open(io_, *master_ctx_, vol, o);
    ASSERT_TRUE(m.ok()) << m.error();
    master_ = *m;
    weak_master_ = master_;
  }

  // The start most tests share: `n` holds a fresh copy 2 of the volume, the master (opened
  // with open_master's arguments) replicates to it, and the copy is in sync. Null if not.
  std::shared_ptr<ReplicaCopy> replicate_to(ReplicaNode& n, uint64_t resync_bytes_per_second = 0,
                                            std::chrono::milliseconds lease_hold = 20s,
                                            uint32_t features = wire::Hello{}.features) {
    auto copy = open_copy(n, 2, true);
    open_master(resync_bytes_per_second, lease_hold, features);
    if (!copy || !master_) return nullptr;
    master_->set_peers({peer(n, 2, true)});
    if (!eventually([&] { return all_in_sync(1); })) {
      ADD_FAILURE() << "the copy did not come in sync";
      return nullptr;
    }
    return copy;
  }

  ReplicaPeer peer(const ReplicaNode& n, uint32_t copy, bool in_sync) {
    return ReplicaPeer{copy, n.name, "127.0.0.1", n.port, in_sync};
  }

  bool all_in_sync(size_t copies) {
    auto st = master_->copy_status();
    if (st.size() != copies) return false;
    for (const auto& c : st) {
      if (c.state != "in-sync") return false;
    }
    return true;
  }

  // Random 4K writes (some 64K), QD `qd`, all awaited; a flush at the end.
  void write_load(int count, uint32_t seed, int qd = 16) {
    std::mt19937_64 rng(seed);
    std::vector<std::vector<std::byte>> bufs(count);
    std::atomic<int> done{0}, failed{0};
    std::mutex mu;
    std::condition_variable cv;
    int inflight = 0;
    for (int i = 0; i < count; ++i) {
      uint64_t blocks = rng() % 8 == 0 ? 16 : 1;
      uint64_t lba = rng() % (kVolumeBytes / kBlock - blocks);
      bufs[i].resize(blocks * kBlock);
      for (auto& b : bufs[i]) b = std::byte(rng());
      {
        std::unique_lock l(mu);
        cv.wait(l, [&] { return inflight < qd; });
        ++inflight;
      }
      master_->write(lba, bufs[i], i % 7 == 0, [&](core::IoResult r) {
        if (!r.ok()) failed.fetch_add(1);
        std::lock_guard l(mu);
        --inflight;
        done.fetch_add(1);
        cv.notify_all();
      });
    }
    std::unique_lock l(mu);
    ASSERT_TRUE(cv.wait_for(l, 30s, [&] { return done.load() == count; }));
    l.unlock();
    EXPECT_EQ(failed.load(), 0);
    EXPECT_TRUE(wait_io([&](auto d) { master_->flush(d); }).ok());
  }

  // `count` 4 KiB writes (no FUA) submitted at once, then a flush; returns the requests sent
  // (writes and the flush) once all completed.
  int burst(int count, uint32_t seed) {
    std::mt19937_64 rng(seed);
    std::vector<std::vector<std::byte>> bufs(count, std::vector<std::byte>(kBlock));
    for (auto& b : bufs) {
      for (auto& x : b) x = std::byte(rng());
    }
    std::promise<void> all;
    std::atomic<int> left{count}, failed{0};
    for (int i = 0; i < count; ++i) {
      const uint64_t lba = rng() % (kVolumeBytes / kBlock);
      master_->write(lba, bufs[i], false, [&](core::IoResult r) {
        if (!r.ok()) failed.fetch_add(1);
        if (left.fetch_sub(1) == 1) all.set_value();
      });
    }
    EXPECT_EQ(all.get_future().wait_for(30s), std::future_status::ready);
    EXPECT_EQ(failed.load(), 0);
    EXPECT_TRUE(wait_io([&](auto d) { master_->flush(d); }).ok());
    return count + 1;
  }

  void expect_identical(ReplicaNode& n) {
    EXPECT_TRUE(file_bytes(master_store_->path_of(id_)) == file_bytes(n.store->path_of(id_)))
        << "copy on " << n.name << " differs from the master";
  }

  tt::TempDir tmp_;
  asio::io_context io_;
  asio::executor_work_guard<asio::io_context::executor_type> guard_{io_.get_executor()};
  std::vector<std::thread> threads_;
  IoPool pool_{4};
  transport::NodeCredentials master_creds_;
  std::unique_ptr<ssl::context> master_ctx_;
  std::unique_ptr<FileStore> master_store_;
  std::string id_;
  std::vector<std::unique_ptr<ReplicaNode>> nodes_;
  std::shared_ptr<ReplicatedVolume> master_;
  std::weak_ptr<ReplicatedVolume> weak_master_;
  std::shared_ptr<link::LinkMetrics> metrics_ = std::make_shared<link::LinkMetrics>();
  std::atomic<int> out_of_sync_reports_{0};
};

TEST_F(ReplicatedTest, FreshVolumeWritesReachEveryReplica) {
  auto& a = add_node("rep-a");
  auto& b = add_node("rep-b");
  auto ca = open_copy(a, 2, true);
  auto cb = open_copy(b, 3, true);
  open_master();
  master_->set_peers({peer(a, 2, true), peer(b, 3, true)});
  ASSERT_TRUE(eventually([&] { return all_in_sync(2); }));
  write_load(400, 1);
  EXPECT_GT(master_->stats().replicated_writes.load(), 0u);
  EXPECT_EQ(master_->stats().direct_writes.load(), 0u);
  expect_identical(a);
  expect_identical(b);
  // The replicas acknowledged every sequence the master assigned.
  EXPECT_TRUE(eventually([&] {
    for (const auto& c : master_->copy_status()) {
      if (c.applied_seq != master_->last_sequence()) return false;
    }
    return true;
  }));
  // A fresh volume's copies start in sync, before their links are up (the warm-up holds
  // writes for them): none ever drops out, so nothing is reported.
  EXPECT_EQ(out_of_sync_reports_.load(), 0);
  EXPECT_GT(metrics_->bytes_sent_raw.load(), 400u * kBlock);
}

// What the network threads poll on (reply_poll.h): the count of requests awaiting copies
// covers replicated writes from their hand-over to the engine until their answer, and comes
// back to zero (a count left behind would have every idle network thread poll for its whole
// window before each sleep); and the copy's side notes the frames it receives.
TEST_F(ReplicatedTest, PollSignalsFollowTheWrites) {
  auto& a = add_node("rep-a");
  auto ca = replicate_to(a);
  ASSERT_TRUE(ca);
  ASSERT_EQ(requests_awaiting_copies(), 0u);
  detail::forget_copy_frames();
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> seen{0};
  std::thread sampler([&] {
    while (!stop.load()) seen.store(std::max(seen.load(), requests_awaiting_copies()));
  });
  write_load(300, 7);
  stop.store(true);
  sampler.join();
  EXPECT_GT(seen.load(), 0u);
  EXPECT_LE(seen.load(), 17u);  // QD 16 and the flush
  EXPECT_TRUE(eventually([&] { return requests_awaiting_copies() == 0; }));
  EXPECT_TRUE(detail::copy_frame_noted());
}

// Small writes are applied where the replica reads them and the ACKs of one read go back as
// one cumulative ACK, so a burst costs far fewer frames back than writes; a master that does
// not announce kFeatureAckThrough gets one ACK per sequence. Both end with identical copies.
TEST_F(ReplicatedTest, ReplicaAcksABurstWithOneCumulativeAckPerRead) {
  auto& a = add_node("rep-a");
  auto ca = replicate_to(a);
  ASSERT_TRUE(ca);
  const uint64_t before = metrics_->frames_received.load();
  const int writes = burst(256, 11);
  const uint64_t answers = metrics_->frames_received.load() - before;
  RecordProperty("answer_frames", std::to_string(answers));
  // The master writes a burst as joined frames, so each replica read holds many of them.
  EXPECT_LT(answers, uint64_t(writes) / 2) << "ACKs were not coalesced";
  expect_identical(a);
  EXPECT_TRUE(eventually([&] { return ca->applied_seq() == master_->last_sequence(); }));
  EXPECT_EQ(out_of_sync_reports_.load(), 0);
}

TEST_F(ReplicatedTest, MasterWithoutCumulativeAcksGetsOneAckPerWrite) {
  auto& a = add_node("rep-a");
  auto ca = replicate_to(a, 0, 20s, wire::kFeatureLz4);
  ASSERT_TRUE(ca);
  const uint64_t before = metrics_->frames_received.load();
  const int writes = burst(256, 12);
  EXPECT_GE(metrics_->frames_received.load() - before, uint64_t(writes));
  expect_identical(a);
  EXPECT_EQ(out_of_sync_reports_.load(), 0);
}

TEST_F(ReplicatedTest, ReplicaAddedLaterGetsOnlyWrittenRegions) {
  open_master();
  // Solo: writes go straight to the file, no map.
  std::vector<std::byte> data(64 * 1024, std::byte{0x5a});
  ASSERT_TRUE(wait_io([&](auto d) { master_->write(0, data, false, d); }).ok());
  ASSERT_TRUE(wait_io([&](auto d) { master_->write(3000, data, false, d); }).ok());
  EXPECT_EQ(master_->stats().direct_writes.load(), 2u);
  auto& a = add_node("rep-a");
  auto ca = open_copy(a, 2, false);
  master_->set_peers({peer(a, 2, false)});
  ASSERT_TRUE(eventually([&] { return all_in_sync(1); }));
  expect_identical(a);
  // Two 1 MiB regions hold 64 KiB of data each; the new copy never wrote them, so only their
  // non-zero blocks cross the link (no zeros, no hash round trip), nothing else of the volume.
  EXPECT_LT(metrics_->bytes_sent_raw.load(), 2 * data.size() + (64u << 10));
  EXPECT_GE(metrics_->bytes_sent_raw.load(), 2 * data.size());
}

// A replica image that exists without a region map (a reused file) may hold anything: its
// regions are unknown, so they are compared by hash, never taken for zeros. Old bytes where the
// master has data and where it has none are both overwritten; equal 4 KiB blocks are not sent.
TEST_F(ReplicatedTest, ReusedImageWithoutMapIsComparedNotAssumedZero) {
  open_master();
  std::vector<std::byte> data(64 * 1024, std::byte{0x5a});
  ASSERT_TRUE(wait_io([&](auto d) { master_->write(0, data, false, d); }).ok());
  auto& a = add_node("rep-a");
  ASSERT_TRUE(a.store->create(id_, kVolumeBytes));
  {
    std::fstream f(a.store->path_of(id_), std::ios::in | std::ios::out | std::ios::binary);
    const std::string junk(8192, 'J');
    for (uint64_t at : {uint64_t{4096}, uint64_t{5} << 20}) {  // region 0 and unwritten 5
      f.seekp(std::streamoff(at));
      f.write(junk.data(), std::streamsize(junk.size()));
    }
    ASSERT_TRUE(f.good());
  }
  auto ca = open_copy(a, 2, false);
  master_->set_peers({peer(a, 2, false)});
  ASSERT_TRUE(eventually([&] { return all_in_sync(1); }));
  expect_identical(a);
  // 64 KiB of data and zeros over the junk in region 5, not whole regions (1 MiB each).
  EXPECT_LT(metrics_->bytes_sent_raw.load(), 1u << 20);
}

TEST_F(ReplicatedTest, WritesDuringResyncAndReplicaRestart) {
  open_master();
  write_load(200, 2);  // solo
  auto& a = add_node("rep-a");
  auto ca = open_copy(a, 2, false);
  master_->set_peers({peer(a, 2, false)});
  write_load(300, 3);  // while the copy syncs
  ASSERT_TRUE(eventually([&] { return all_in_sync(1); }));
  write_load(100, 4);
  expect_identical(a);

  // The replica "restarts": its copy object goes, the map stays; the master drops it.
  {
    std::promise<void> closed;
    ca->close([&closed] { closed.set_value(); });
    ASSERT_EQ(closed.get_future().wait_for(10s), std::future_status::ready);
  }
  a.host->remove(id_, 2);
  a.server->close();
  ASSERT_TRUE(eventually([&] { return !all_in_sync(1); }));
  uint64_t sent_before = metrics_->bytes_sent_raw.load();
  write_load(20, 5);  // degraded: acknowledged without the copy (after the confirm)
  EXPECT_GE(out_of_sync_reports_.load(), 1);
  ASSERT_TRUE(restart_server(a));
  ca = open_copy(a, 2, false);
  ASSERT_TRUE(eventually([&] { return all_in_sync(1); }));
  expect_identical(a);
  // Delta: the copy hashes the regions the 20 writes touched and gets only the 4 KiB blocks
  // they changed (at most 20 x 64 KiB), not their whole 1 MiB regions.
  EXPECT_LT(metrics_->bytes_sent_raw.load() - sent_before, 2u << 20);
}

TEST_F(ReplicatedTest, RemovingTheLastReplicaReturnsToTheDirectPath) {
  auto& a = add_node("rep-a");
  auto ca = replicate_to(a);
  ASSERT_TRUE(ca);
  write_load(50, 6);
  master_->set_peers({});
  ASSERT_TRUE(eventually([&] { return master_->copy_status().empty(); }));
  uint64_t direct = master_->stats().direct_writes.load();
  ASSERT_TRUE(eventually([&] {
    std::vector<std::byte> d(kBlock, std::byte{1});
    (void)wait_io([&](auto cb) { master_->write(1, d, false, cb); });
    return master_->stats().direct_writes.load() > direct;
  }));
  // Back to one replica: the map was dropped with solo mode and is rebuilt from extents.
  master_->set_peers({peer(a, 2, false)});
  ASSERT_TRUE(eventually([&] { return all_in_sync(1); }));
  write_load(50, 7);
  expect_identical(a);
}

TEST_F(ReplicatedTest, UnknownCopyIsRefusedAndReported) {
  auto& a = add_node("rep-a");  // holds no copy of the volume
  open_master();
  master_->set_peers({peer(a, 2, true)});
  // The first write finds the copy missing (NACK kUnknownCopy): the master reports it out of
  // sync and still completes the write once that is confirmed.
  std::vector<std::byte> d(kBlock, std::byte{7});
  EXPECT_TRUE(wait_io([&](auto cb) { master_->write(5, d, false, cb); }).ok());
  ASSERT_TRUE(eventually([&] {
    auto st = master_->copy_status();
    return st.size() == 1 && st[0].state != "in-sync";
  }));
  EXPECT_EQ(master_->state(), core::VolumeState::kDegraded);
}

// A lapsed lease (the controller unreachable, e.g. restarting) holds I/O rather than failing
// it: nothing is acknowledged while fenced, everything held goes on once the lease is renewed,
// and what waits longer than the hold is answered NOT READY (which an initiator retries).
TEST_F(ReplicatedTest, LapsedLeaseHoldsIoUntilRenewedAndAnswersNotReadyAfterTheHold) {
  auto& a = add_node("rep-a");
  auto ca = replicate_to(a, 0, 600ms);
  ASSERT_TRUE(ca);
  std::vector<std::byte> d(kBlock, std::byte{3});
  EXPECT_TRUE(wait_io([&](auto cb) { master_->write(0, d, false, cb); }).ok());

  master_->set_fenced(true);
  auto w = std::make_shared<std::promise<core::IoResult>>();
  auto r = std::make_shared<std::promise<core::IoResult>>();
  auto wf = w->get_future();
  auto rf = r->get_future();
  std::vector<std::byte> d2(kBlock, std::byte{9});
  std::vector<std::byte> out(kBlock);
  master_->write(1, d2, false, [w](core::IoResult x) { w->set_value(x); });
  master_->read(0, out, [r](core::IoResult x) { r->set_value(x); });
  EXPECT_EQ(wf.wait_for(300ms), std::future_status::timeout) << "acknowledged while fenced";
  EXPECT_EQ(rf.wait_for(0ms), std::future_status::timeout) << "read answered while fenced";
  master_->set_fenced(false);
  ASSERT_EQ(wf.wait_for(15s), std::future_status::ready);
  ASSERT_EQ(rf.wait_for(15s), std::future_status::ready);
  EXPECT_TRUE(wf.get().ok());
  EXPECT_TRUE(rf.get().ok());
  EXPECT_EQ(out, d);

  master_->set_fenced(true);
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(wait_io([&](auto cb) { master_->write(2, d, false, cb); }).status,
            core::IoStatus::kNotReady);
  EXPECT_GE(std::chrono::steady_clock::now() - t0, 600ms) << "answered before the hold ran out";
  master_->set_fenced(false);
  EXPECT_TRUE(wait_io([&](auto cb) { master_->write(2, d, false, cb); }).ok());
  std::vector<std::byte> back(kBlock);
  EXPECT_TRUE(wait_io([&](auto cb) { master_->read(1, back, cb); }).ok());
  EXPECT_EQ(back, d2);
}

// Regions a map marked dirty are cleaned only by flushes that find them untouched since the
// previous one: an initiator that flushed once (or never) would leave them dirty, and a copy
// that then crashed would be resynced in full. Once writes pause, the master flushes on its
// own until every copy's map file is clean.
TEST_F(ReplicatedTest, IdleMasterFlushesUntilTheCopiesMapsAreClean) {
  auto& a = add_node("rep-a");
  auto ca = replicate_to(a);
  ASSERT_TRUE(ca);
  write_load(200, 11);
  auto dirty_entries = [&] {
    std::string map = file_bytes((a.dir / (id_ + ".map")).string());
    int dirty = 0;
    for (size_t off = 4096; off + 8 <= map.size(); off += 8) {
      dirty += (static_cast<uint8_t>(map[off + 7]) & 0x80) != 0;  // bit 63, little-endian
    }
    return map.size() > 4096 ? dirty : -1;
  };
  EXPECT_TRUE(eventually([&] { return dirty_entries() == 0; })) << dirty_entries();
  expect_identical(a);
}

// Counts what it is handed; every request succeeds. Stands for the forwarder that replaces a
// deposed master on its node.
class CountingVolume : public core::BlockVolume {
 public:
  const std::string& uuid() const override { return uuid_; }
  uint32_t block_size() const override { return kBlock; }
  uint64_t block_count() const override { return kVolumeBytes / kBlock; }
  core::VolumeState state() const override { return core::VolumeState::kDegraded; }
  void read(uint64_t, std::span<std::byte>, Done done) override { ++reads, done({}); }
  void write(uint64_t, std::span<const std::byte>, bool, Done done) override { ++writes, done({}); }
  void flush(Done done) override { done({}); }
  void unmap(uint64_t, uint64_t, Done done) override { done({}); }
  void compare_and_write(uint64_t, std::span<const std::byte>, std::span<const std::byte>, bool,
                         Done done) override {
    done({});
  }
  void lba_status(uint64_t, uint64_t, ExtentsDone done) override { done({}, {}); }
  std::atomic<int> reads{0}, writes{0};

 private:
  std::string uuid_ = "counting";
};

// A deposed master closes; sessions that logged in while it was master keep their handle.
// Until the node's forwarder is there they get NOT READY (an initiator retries), then it
// serves them: their I/O reaches the new master instead of failing for good.
TEST_F(ReplicatedTest, ClosedMasterHandsRequestsToItsSuccessor) {
  open_master();
  std::vector<std::byte> d(kBlock, std::byte{9});
  EXPECT_TRUE(wait_io([&](auto cb) { master_->write(0, d, false, cb); }).ok());
  std::promise<void> closed;
  master_->close([&closed] { closed.set_value(); });
  ASSERT_EQ(closed.get_future().wait_for(5s), std::future_status::ready);
  EXPECT_EQ(wait_io([&](auto cb) { master_->write(0, d, false, cb); }).status,
            core::IoStatus::kNotReady);
  EXPECT_EQ(master_->state(), core::VolumeState::kOffline);
  auto next = std::make_shared<CountingVolume>();
  master_->set_successor(next);
  EXPECT_TRUE(wait_io([&](auto cb) { master_->write(0, d, false, cb); }).ok());
  std::vector<std::byte> out(kBlock);
  EXPECT_TRUE(wait_io([&](auto cb) { master_->read(0, out, cb); }).ok());
  EXPECT_EQ(next->writes.load(), 1);
  EXPECT_EQ(next->reads.load(), 1);
  EXPECT_EQ(master_->state(), core::VolumeState::kDegraded);
}

TEST_F(ReplicatedTest, HardModeTurnsReadOnlyAfterGraceAndNeedsALoginAfterResync) {
  auto& a = add_node("rep-a");
  auto ca = open_copy(a, 2, true);
  open_master();
  master_->set_policy(core::FailureMode::kHard, 1, 0, std::chrono::milliseconds(300));
  master_->set_peers({peer(a, 2, true)});
  ASSERT_TRUE(eventually([&] { return all_in_sync(1); }));
  EXPECT_EQ(master_->state(), core::VolumeState::kHealthy);
  std::vector<std::byte> d(kBlock, std::byte{4});
  ASSERT_TRUE(wait_io([&](auto cb) { master_->write(0, d, false, cb); }).ok());
  // The replica goes: degraded at once, read-only once the grace has run out.
  lose_copy(a, ca, 2);
  ASSERT_TRUE(eventually([&] { return master_->state() == core::VolumeState::kDegraded; }));
  ASSERT_TRUE(eventually([&] { return master_->state() == core::VolumeState::kReadOnly; }));
  EXPECT_EQ(wait_io([&](auto cb) { master_->write(0, d, false, cb); }).status,
            core::IoStatus::kWriteProtected);
  master_->note_login();  // a login while still out of sync does not count
  // The replica returns and syncs: still read-only until an initiator logs in again.
  ASSERT_TRUE(restart_server(a));
  ca = open_copy(a, 2, false);
  ASSERT_TRUE(eventually([&] { return all_in_sync(1); }));
  EXPECT_EQ(master_->state(), core::VolumeState::kReadOnly);
  master_->note_login();
  ASSERT_TRUE(eventually([&] { return master_->state() == core::VolumeState::kHealthy; }));
  EXPECT_TRUE(wait_io([&](auto cb) { master_->write(0, d, false, cb); }).ok());
}

TEST_F(ReplicatedTest, Lz4PausesOnIncompressibleDataAndComesBack) {
  auto& a = add_node("rep-a");
  auto ca = replicate_to(a);
  ASSERT_TRUE(ca);
  std::mt19937_64 rng(9);
  std::vector<std::byte> noise(kBlock);
  for (int i = 0; i < 20; ++i) {  // incompressible: lz4 stops trying for a while
    for (auto& b : noise) b = std::byte(rng());
    ASSERT_TRUE(wait_io([&](auto cb) { master_->write(i, noise, false, cb); }).ok());
  }
  uint64_t raw0 = metrics_->bytes_sent_raw.load(), wire0 = metrics_->bytes_sent_wire.load();
  std::vector<std::byte> text(kBlock, std::byte{'a'});
  for (int i = 0; i < 600; ++i) {  // compressible again: after the pause it compresses
    ASSERT_TRUE(wait_io([&](auto cb) { master_->write(100 + i, text, false, cb); }).ok());
  }
  uint64_t raw = metrics_->bytes_sent_raw.load() - raw0;
  uint64_t wire = metrics_->bytes_sent_wire.load() - wire0;
  // At most the 256 skipped frames go raw; the other ~344 shrink to almost nothing.
  EXPECT_LT(wire, raw * 6 / 10) << "raw " << raw << " wire " << wire;
  EXPECT_GT(wire, raw / 4) << "the pause did not happen";
  expect_identical(a);
}

TEST_F(ReplicatedTest, ResyncIsPacedByTheRateLimit) {
  open_master(4u << 20);  // 4 MiB/s
  // 8 regions of 1 MiB, every byte written and incompressible: what the rate limit counts is
  // what goes on the wire (the delta after lz4), so the copy must need all of it.
  std::mt19937_64 rng(77);
  std::vector<std::byte> data(1u << 20);
  for (uint64_t r = 0; r < 8; ++r) {
    for (auto& b : data) b = std::byte(rng());
    ASSERT_TRUE(wait_io([&](auto cb) { master_->write(r * 256, data, false, cb); }).ok());
  }
  auto& a = add_node("rep-a");
  auto ca = open_copy(a, 2, false);
  auto start = std::chrono::steady_clock::now();
  master_->set_peers({peer(a, 2, false)});
  ASSERT_TRUE(eventually([&] { return all_in_sync(1); }, std::chrono::seconds(30)));
  // 8 MiB at 4 MiB/s: the first read goes at once, the other 7 MiB wait at least 1.75 s. A
  // lower bound only (a loaded machine is slower, never faster).
  EXPECT_GE(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(1700));
  // Application writes go on meanwhile, and the copy ends identical.
  write_load(50, 11);
  expect_identical(a);
}

TEST_F(ReplicatedTest, SoftModeHaltsAfterGraceAndResumesByItself) {
  auto& a = add_node("rep-a");
  auto ca = open_copy(a, 2, true);
  open_master();
  master_->set_policy(core::FailureMode::kSoft, 1, 0, std::chrono::milliseconds(300));
  master_->set_peers({peer(a, 2, true)});
  ASSERT_TRUE(eventually([&] { return all_in_sync(1); }));
  std::vector<std::byte> d(kBlock, std::byte{5});
  ASSERT_TRUE(wait_io([&](auto cb) { master_->write(0, d, false, cb); }).ok());
  lose_copy(a, ca, 2);
  // Soft with one replica needs max(1, N-1) = 1 in sync: halted (NOT READY) after the grace.
  ASSERT_TRUE(eventually([&] { return master_->state() == core::VolumeState::kHalted; }));
  EXPECT_EQ(wait_io([&](auto cb) { master_->write(0, d, false, cb); }).status,
            core::IoStatus::kNotReady);
  std::vector<std::byte> out(kBlock);
  EXPECT_TRUE(wait_io([&](auto cb) { master_->read(0, out, cb); }).ok());  // reads go on
  // The replica returns: writes resume by themselves, no login needed.
  ASSERT_TRUE(restart_server(a));
  ca = open_copy(a, 2, false);
  ASSERT_TRUE(eventually([&] { return master_->state() == core::VolumeState::kHealthy; }));
  EXPECT_TRUE(wait_io([&](auto cb) { master_->write(0, d, false, cb); }).ok());
}

TEST_F(ReplicatedTest, AlwaysOnNeverStopsAndModeChangesApplyAtRunTime) {
  auto& a = add_node("rep-a");
  auto ca = open_copy(a, 2, true);
  open_master();
  master_->set_policy(core::FailureMode::kHard, 1, 0, std::chrono::milliseconds(200));
  master_->set_peers({peer(a, 2, true)});
  ASSERT_TRUE(eventually([&] { return all_in_sync(1); }));
  lose_copy(a, ca, 2);
  ASSERT_TRUE(eventually([&] { return master_->state() == core::VolumeState::kReadOnly; }));
  // The operator switches the volume to alwayson: it serves writes again, degraded.
  master_->set_policy(core::FailureMode::kAlwaysOn, 1, 0, std::chrono::milliseconds(200));
  ASSERT_TRUE(eventually([&] { return master_->state() == core::VolumeState::kDegraded; }));
  std::vector<std::byte> d(kBlock, std::byte{6});
  EXPECT_TRUE(wait_io([&](auto cb) { master_->write(0, d, false, cb); }).ok());
}

}  // namespace
}  // namespace tandem::backend::replicated
