// tcp/5703 of a real tandemd: mutual TLS with the cluster CA. A peer with a certificate
// from the cluster's CA gets through the HELLO exchange (and, with no replica copies on the
// node yet, a NACK for a frame addressed to one); a peer whose certificate comes from
// another CA is refused, and the refusal is an event in the cluster's log.
#include <gtest/gtest.h>
#include <unistd.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ssl/context.hpp>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <algorithm>
#include <thread>

#include "backend/link/peer_link.h"
#include "backend/transport/tls_stream.h"
#include "tests/integration/daemon_fixture.h"

namespace tandem::testkit {
namespace {

namespace link = backend::link;
namespace tls = backend::transport;
namespace wire = backend::wire;

class ReplicationPortTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("tandem-repl-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    daemon_ = std::make_unique<Daemon>((dir_ / "n1").string(), unique_loopback(), "n1");
    ASSERT_TRUE(daemon_->start()) << daemon_->last_output();
  }
  void TearDown() override {
    daemon_.reset();
    if (!HasFailure()) std::filesystem::remove_all(dir_);
  }

  // Credentials for a would-be peer "intruder" at 127.0.0.1, signed by the CA in ca_dir.
  tls::NodeCredentials credentials(const std::filesystem::path& ca_dir) {
    auto kc = tls::create_node_key_and_csr("peer", "127.0.0.1");
    EXPECT_TRUE(kc.ok());
    auto cert = tls::sign_csr(ca_dir, kc->csr_pem, 1);
    EXPECT_TRUE(cert.ok());
    auto ca = tls::read_pem_file(ca_dir / "ca.crt");
    return {*cert, kc->key_pem, *ca};
  }

  struct Observed {
    std::mutex mu;
    std::condition_variable cv;
    std::vector<link::PeerLink::State> states;
    std::string last_reason;
    std::vector<wire::FrameHeader> frames;
  };

  // Runs a PeerLink to the daemon's 5703 with `creds` until `until(observed)` holds or 20 s
  // pass; sends `frame` once the link is up.
  void run_link(const tls::NodeCredentials& creds, Observed& seen,
                const std::function<bool(Observed&)>& until, const std::string& host,
                const std::string& peer_name = "n1") {
    boost::asio::io_context io;
    auto ctx = tls::make_tls_context(creds);
    ASSERT_TRUE(ctx.ok());
    link::PeerLink::Options opts;
    opts.peer_name = peer_name;
    opts.host = host;
    opts.hello.node_id = "peer";
    opts.backoff_min = std::chrono::milliseconds(200);
    std::unique_ptr<link::PeerLink> peer;
    auto created = link::PeerLink::create(
        io, *ctx, opts,
        [&](const wire::FrameHeader& h, std::vector<uint8_t>) {
          std::lock_guard l(seen.mu);
          seen.frames.push_back(h);
          seen.cv.notify_all();
        },
        [&](const link::PeerLink::StateChange& c) {
          std::lock_guard l(seen.mu);
          seen.states.push_back(c.state);
          seen.last_reason = c.reason;
          if (c.state == link::PeerLink::State::kUp) {
            wire::FrameHeader w;
            w.type = wire::FrameType::kWrite;
            w.volume[0] = 0x42;
            w.copy_id = 7;
            w.generation = 1;
            w.sequence = 1;
            w.count = 1;
            std::vector<uint8_t> block(512, 0xab), out;
            ASSERT_TRUE(wire::encode(w, block, false, out).ok());
            EXPECT_EQ(peer->send(std::move(out)), link::SendStatus::kQueued);
          }
          seen.cv.notify_all();
        });
    ASSERT_TRUE(created.ok());
    peer = std::move(*created);
    std::thread t([&] { io.run(); });
    {
      std::unique_lock l(seen.mu);
      seen.cv.wait_for(l, std::chrono::seconds(20), [&] { return until(seen); });
    }
    peer->close();
    io.stop();
    t.join();
  }

  std::filesystem::path dir_;
  std::unique_ptr<Daemon> daemon_;
};

TEST_F(ReplicationPortTest, ClusterCertificateGetsThroughAndUnknownCopiesAreRefused) {
  Observed seen;
  run_link(
      credentials(dir_ / "n1" / "tls" / "ca"), seen,
      [](Observed& o) { return !o.frames.empty(); }, daemon_->address());
  ASSERT_FALSE(seen.frames.empty()) << "last link state reason: " << seen.last_reason;
  EXPECT_EQ(seen.frames[0].type, wire::FrameType::kNack);
  EXPECT_EQ(seen.frames[0].status, static_cast<uint32_t>(wire::NackReason::kUnknownCopy));
  EXPECT_EQ(seen.frames[0].copy_id, 7u);
}

// The intruder trusts the cluster's CA (so it gets as far as presenting its own
// certificate) but its certificate comes from another CA: the node refuses it and records a
// "peer-refused" event with the address and reason.
TEST_F(ReplicationPortTest, CertificateFromAnotherCaIsRefusedWithAnEvent) {
  auto other_ca = dir_ / "other-ca";
  ASSERT_TRUE(tls::create_cluster_ca(other_ca).ok());
  tls::NodeCredentials intruder = credentials(other_ca);
  auto cluster_ca = tls::read_pem_file(dir_ / "n1" / "tls" / "ca" / "ca.crt");
  ASSERT_TRUE(cluster_ca.ok());
  intruder.ca_pem = *cluster_ca;
  Observed seen;
  auto refused_event = [&] {
    return daemon_->http("GET", "/api/v1/events?limit=1000").raw.find("peer-refused") !=
           std::string::npos;
  };
  bool recorded = false;
  run_link(
      intruder, seen,
      [&](Observed&) {
        // Checked each time the link changes state (each failed attempt), bounded.
        recorded = recorded || refused_event();
        return recorded;
      },
      daemon_->address());
  EXPECT_TRUE(seen.frames.empty());
  EXPECT_EQ(std::count(seen.states.begin(), seen.states.end(), link::PeerLink::State::kUp), 0);
  EXPECT_TRUE(recorded || refused_event()) << daemon_->last_output();
}

// A joined node's refusals reach the cluster's log too: they ride on its heartbeats.
TEST_F(ReplicationPortTest, RefusalOnAJoinedNodeReachesTheClusterLog) {
  std::string join_token;
  {
    std::ifstream f(dir_ / "n1" / "join.token");
    std::getline(f, join_token);
  }
  Daemon n2((dir_ / "n2").string(), unique_loopback(), "n2");
  ASSERT_TRUE(n2.start({"--join", daemon_->url(), "--join-token", join_token, "--heartbeat-ms",
                        "100"}))
      << n2.last_output();
  auto other_ca = dir_ / "other-ca";
  ASSERT_TRUE(tls::create_cluster_ca(other_ca).ok());
  tls::NodeCredentials intruder = credentials(other_ca);
  intruder.ca_pem = *tls::read_pem_file(dir_ / "n1" / "tls" / "ca" / "ca.crt");
  Observed seen;
  bool recorded = false;
  auto n2_refusal_logged = [&] {
    auto ev = daemon_->http("GET", "/api/v1/events?limit=1000");
    for (const auto& e : ev.body["events"]) {
      if (e["kind"] == "peer-refused" && e["node"] == "n2") return true;
    }
    return false;
  };
  run_link(
      intruder, seen,
      [&](Observed&) {
        recorded = recorded || n2_refusal_logged();
        return recorded;
      },
      n2.address(), "n2");
  for (int i = 0; i < 100 && !recorded; ++i) {
    recorded = n2_refusal_logged();
    if (!recorded) std::this_thread::sleep_for(std::chrono::milliseconds(50));  // poll interval
  }
  EXPECT_TRUE(recorded) << n2.last_output();
}

}  // namespace
}  // namespace tandem::testkit
