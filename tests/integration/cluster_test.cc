// Real tandemd processes: a controller and nodes that join it with the join token; volumes
// whose copies the controller places across them.
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <set>
#include <thread>

#include <atomic>
#include <mutex>

#include "db/catalogue.h"
#include "mgmt/daemon/cluster_setup.h"
#include "tests/integration/daemon_fixture.h"

namespace tandem::testkit {
namespace {

using nlohmann::json;

// Reports as a master of generation 1 (every volume here is) makes them: the controller
// refuses reports from any other generation.
std::vector<mgmt::CopyReport> at_generation_1(std::vector<mgmt::CopyReport> reports) {
  for (auto& r : reports) r.generation = 1;
  return reports;
}

class ClusterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("tandem-cluster-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    controller_ = std::make_unique<Daemon>((dir_ / "n1").string(), unique_loopback(), "n1");
    ASSERT_TRUE(controller_->start({"--node-timeout-ms", "1500", "--heartbeat-ms", "200"}))
        << controller_->last_output();
    node_ = std::make_unique<Daemon>((dir_ / "n2").string(), unique_loopback(), "n2");
  }
  void TearDown() override {
    node3_.reset();
    node_.reset();
    controller_.reset();
    if (!HasFailure()) std::filesystem::remove_all(dir_);
  }

  std::string join_token() {
    std::ifstream f(dir_ / "n1" / "join.token");
    std::string t;
    std::getline(f, t);
    return t;
  }
  std::vector<std::string> join_args(const std::string& token) {
    return {"--join", controller_->url(), "--join-token", token, "--heartbeat-ms", "200"};
  }
  // Waits (bounded) until the controller reports node n2 in `state`.
  bool await_node_state(const std::string& state, int timeout_s = 20) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
    while (std::chrono::steady_clock::now() < deadline) {
      auto r = controller_->http("GET", "/api/v1/nodes");
      for (const auto& n : r.body["nodes"]) {
        if (n["name"] == "n2" && n["state"] == state) return true;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));  // polling interval, not sync
    }
    return false;
  }
  Daemon::Reply via_node(const std::string& method, const std::string& target,
                         const std::string& body = "") {
    auto client = mgmt::HttpClient::make(node_->url(), controller_->token(), 30);
    auto r = client->request(method, target, body);
    Daemon::Reply out;
    if (!r) return out;
    out.status = r->status;
    out.raw = r->body;
    out.body = json::parse(r->body, nullptr, false);
    return out;
  }

  std::filesystem::path dir_;
  std::unique_ptr<Daemon> controller_;
  std::unique_ptr<Daemon> node_;
  std::unique_ptr<Daemon> node3_;

  // Starts n2 and n3 and waits until the controller sees both online.
  void start_three() {
    ASSERT_TRUE(node_->start(join_args(join_token()))) << node_->last_output();
    node3_ = std::make_unique<Daemon>((dir_ / "n3").string(), unique_loopback(), "n3");
    ASSERT_TRUE(node3_->start(join_args(join_token()))) << node3_->last_output();
    ASSERT_TRUE(await([&] { return online_count() == 3; }))
        << controller_->http("GET", "/api/v1/nodes").raw;
  }
  int online_count() {
    int n = 0;
    auto reply = controller_->http("GET", "/api/v1/nodes");
    for (const auto& node : reply.body["nodes"]) {
      n += node["state"] == "online";
    }
    return n;
  }
  // Polls `cond` until it holds or the deadline passes.
  template <class F>
  bool await(F cond, int timeout_s = 8) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
    while (std::chrono::steady_clock::now() < deadline) {
      if (cond()) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));  // polling interval
    }
    return cond();
  }
  // The copies of a volume that a node's own catalogue file holds (its mirror of the
  // controller's state), read through a second connection.
  std::vector<db::CopyRow> local_copies(const std::string& data_dir, const std::string& volume) {
    auto cat = db::Catalogue::open(data_dir + "/catalogue.db");
    if (!cat) return {};
    auto r = (*cat)->transact<std::vector<db::CopyRow>>(
        [&](db::Tx& tx) -> db::DbResult<std::vector<db::CopyRow>> {
          auto v = tx.volume_by_name(volume);
          if (!v) return core::fail(v.error());
          if (!*v) return std::vector<db::CopyRow>{};
          return tx.copies_of((*v)->id);
        });
    return r ? *r : std::vector<db::CopyRow>{};
  }
};

TEST_F(ClusterTest, ControllerPrintsAJoinTokenAndHoldsTheCa) {
  std::string t = join_token();
  ASSERT_GE(t.size(), 32u);
  EXPECT_NE(controller_->last_output().find("join token: " + t), std::string::npos);
  EXPECT_TRUE(std::filesystem::exists(dir_ / "n1" / "tls" / "ca" / "ca.key"));
  EXPECT_TRUE(std::filesystem::exists(dir_ / "n1" / "tls" / "node.crt"));
}

TEST_F(ClusterTest, JoinWithTheRightTokenOnly) {
  EXPECT_FALSE(node_->start(join_args("not-the-token"), 20));
  EXPECT_NE(node_->last_output().find("refused"), std::string::npos) << node_->last_output();
  ASSERT_TRUE(node_->start(join_args(join_token()))) << node_->last_output();
  auto nodes = controller_->http("GET", "/api/v1/nodes").body["nodes"];
  ASSERT_EQ(nodes.size(), 2u);
  EXPECT_EQ(nodes[1]["name"], "n2");
  EXPECT_EQ(nodes[1]["address"], node_->address());
  // The joined node's key stayed with it; its certificate came from the controller's CA.
  EXPECT_TRUE(std::filesystem::exists(dir_ / "n2" / "tls" / "node.key"));
  EXPECT_TRUE(std::filesystem::exists(dir_ / "n2" / "tls" / "node.crt"));
  EXPECT_FALSE(std::filesystem::exists(dir_ / "n2" / "admin.token"))
      << "the admin token belongs to the cluster, not each node";
  EXPECT_EQ(node_->last_output().find("admin token:"), std::string::npos);
}

TEST_F(ClusterTest, AnyNodeServesTheApi) {
  ASSERT_TRUE(node_->start(join_args(join_token()))) << node_->last_output();
  auto created = via_node("POST", "/api/v1/volumes", R"({"name":"via-n2","size":"8MiB"})");
  ASSERT_EQ(created.status, 201) << created.raw;
  EXPECT_EQ(controller_->http("GET", "/api/v1/volumes/via-n2").status, 200);
  EXPECT_EQ(via_node("GET", "/api/v1/volumes").body["volumes"].size(), 1u);
  auto unauth = mgmt::HttpClient::make(node_->url(), "", 30)->request("GET", "/api/v1/volumes");
  ASSERT_TRUE(unauth.ok());
  EXPECT_EQ(unauth->status, 401);
  // /metrics is served by the node itself: it checks the cluster's admin token, whose hash
  // it learns from the controller's heartbeat answers (awaited, bounded).
  int metrics_status = 0;
  for (int i = 0; i < 100 && metrics_status != 200; ++i) {
    metrics_status = via_node("GET", "/metrics").status;
    if (metrics_status != 200) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_EQ(metrics_status, 200);
  auto ctl = run_command({TANDEMCTL_PATH, "--server", node_->url(), "--token", controller_->token(),
                          "node", "list"});
  EXPECT_EQ(ctl.exit_code, 0) << ctl.err;
  EXPECT_NE(ctl.out.find("n2"), std::string::npos);
}

TEST_F(ClusterTest, SilentNodeGoesOfflineAndComesBackWithoutTheJoinToken) {
  ASSERT_TRUE(node_->start(join_args(join_token()))) << node_->last_output();
  ASSERT_TRUE(await_node_state("online"));
  node_->kill9();
  ASSERT_TRUE(await_node_state("offline")) << "no heartbeat for longer than the timeout";
  // Restart with only --join: the stored certificate and node token are reused.
  ASSERT_TRUE(node_->start({"--join", controller_->url(), "--heartbeat-ms", "200"}))
      << node_->last_output();
  ASSERT_TRUE(await_node_state("online"));
  auto ev = controller_->http("GET", "/api/v1/events?limit=1000").raw;
  EXPECT_NE(ev.find("node-offline"), std::string::npos);
  EXPECT_NE(ev.find("\"node-online\""), std::string::npos);
}

TEST_F(ClusterTest, ReplicasNeedEnoughNodes) {
  auto r = controller_->http("POST", "/api/v1/volumes", R"({"name":"r","size":"8MiB","replicas":1})");
  EXPECT_EQ(r.status, 409) << r.raw;  // one node: needs 2
  EXPECT_EQ(controller_->http("GET", "/api/v1/volumes/r").status, 404);
  ASSERT_TRUE(node_->start(join_args(join_token()))) << node_->last_output();
  r = controller_->http("POST", "/api/v1/volumes", R"({"name":"r","size":"8MiB","replicas":1})");
  ASSERT_EQ(r.status, 201) << r.raw;
  ASSERT_EQ(r.body["copies"].size(), 2u);
  EXPECT_EQ(r.body["copies"][1]["node"], "n2");
}

TEST_F(ClusterTest, TwoReplicasLandOnThreeDistinctNodesAndMirrorToEachNode) {
  start_three();
  auto r = controller_->http("POST", "/api/v1/volumes",
                             R"({"name":"two","size":"8MiB","replicas":2})");
  ASSERT_EQ(r.status, 201) << r.raw;
  std::set<std::string> nodes;
  std::set<int> numbers;
  for (const auto& c : r.body["copies"]) {
    nodes.insert(c["node"].get<std::string>());
    numbers.insert(c["number"].get<int>());
    EXPECT_EQ(c["state"], "in-sync");
  }
  EXPECT_EQ(nodes, (std::set<std::string>{"n1", "n2", "n3"}));
  EXPECT_EQ(numbers, (std::set<int>{1, 2, 3}));
  EXPECT_EQ(r.body["master"], "n1");
  std::string id = r.body["id"];
  // Every joined node's own catalogue receives the rows within a few heartbeats.
  for (const auto* d : {node_.get(), node3_.get()}) {
    EXPECT_TRUE(await([&] { return local_copies(d->data_dir(), "two").size() == 3; }))
        << d->data_dir();
  }
  // The replica count goes 2 -> 1 at run time; the mirrors follow.
  auto down = controller_->http("PATCH", "/api/v1/volumes/two", R"({"replicas":1})");
  ASSERT_EQ(down.status, 200) << down.raw;
  EXPECT_EQ(down.body["copies"].size(), 2u);
  EXPECT_TRUE(await([&] { return local_copies(node_->data_dir(), "two").size() == 2; }));
  auto ctl = controller_->ctl({"volume", "get", "two"});
  EXPECT_EQ(ctl.exit_code, 0) << ctl.err;
  EXPECT_NE(ctl.out.find("APPLIED-SEQ"), std::string::npos) << ctl.out;
  EXPECT_NE(ctl.out.find("replica"), std::string::npos) << ctl.out;
  ASSERT_EQ(controller_->http("DELETE", "/api/v1/volumes/two").status, 204);
  EXPECT_TRUE(await([&] { return local_copies(node3_->data_dir(), "two").empty(); }));
}

TEST_F(ClusterTest, ReplicaCountGoesUpAndDownAtRunTime) {
  start_three();
  auto r = controller_->http("POST", "/api/v1/volumes", R"({"name":"grow","size":"8MiB"})");
  ASSERT_EQ(r.status, 201) << r.raw;
  EXPECT_EQ(r.body["copies"].size(), 1u);
  auto up = controller_->http("PATCH", "/api/v1/volumes/grow", R"({"replicas":2})");
  ASSERT_EQ(up.status, 200) << up.raw;
  ASSERT_EQ(up.body["copies"].size(), 3u);
  EXPECT_EQ(up.body["copies"][1]["state"], "syncing");
  EXPECT_EQ(up.body["state"], "degraded") << "new replicas are not in sync yet";
  auto down = controller_->http("PATCH", "/api/v1/volumes/grow", R"({"replicas":1})");
  ASSERT_EQ(down.status, 200) << down.raw;
  EXPECT_EQ(down.body["copies"].size(), 2u);
  auto ev = controller_->http("GET", "/api/v1/events?limit=1000").raw;
  EXPECT_NE(ev.find("copy-added"), std::string::npos);
  EXPECT_NE(ev.find("copy-removed"), std::string::npos);
  EXPECT_EQ(controller_->http("PATCH", "/api/v1/volumes/grow", R"({"replicas":3})").status, 409)
      << "3 replicas need 4 nodes";
}

TEST_F(ClusterTest, MasterGoesWhereAskedOrWhereTheCallCameIn) {
  start_three();
  auto r = controller_->http("POST", "/api/v1/volumes",
                             R"({"name":"on3","size":"8MiB","replicas":1,"node":"n3"})");
  ASSERT_EQ(r.status, 201) << r.raw;
  EXPECT_EQ(r.body["master"], "n3");
  EXPECT_EQ(r.body["copies"][0]["node"], "n3");
  EXPECT_NE(r.body["copies"][1]["node"], "n3");
  EXPECT_FALSE(std::filesystem::exists(dir_ / "n1" / "volumes" / (r.body["id"].get<std::string>())))
      << "the controller creates no file for a copy it does not hold";
  auto bad = controller_->http("POST", "/api/v1/volumes",
                               R"({"name":"nowhere","size":"8MiB","node":"n9"})");
  EXPECT_EQ(bad.status, 422);
  EXPECT_EQ(bad.body["error"]["field"], "node");
  // Created through n2's API: the master lands on n2.
  auto via = via_node("POST", "/api/v1/volumes", R"({"name":"via2","size":"8MiB"})");
  ASSERT_EQ(via.status, 201) << via.raw;
  EXPECT_EQ(via.body["master"], "n2");
  // tandemctl --node.
  auto ctl = controller_->ctl({"volume", "create", "ctl3", "--size", "8MiB", "--node", "n3"});
  ASSERT_EQ(ctl.exit_code, 0) << ctl.err;
  EXPECT_EQ(controller_->http("GET", "/api/v1/volumes/ctl3").body["master"], "n3");
}

// A NodeAgent in this process joined as node n4 (no daemon): it mirrors the controller's
// state into its own catalogue, carries its copy reporter's reports on heartbeats, and
// report_copies_now is committed on the controller before it returns true.
TEST_F(ClusterTest, NodeAgentMirrorsStateAndReportsCopies) {
  std::string addr = unique_loopback();
  mgmt::NodeIdentity me{"n4", addr, "http://" + addr + ":8080", 3260, 5703,
                        (dir_ / "n4").string()};
  std::filesystem::create_directories(me.data_dir);
  ASSERT_EQ(mgmt::join_cluster(me, controller_->url(), join_token()), "");
  auto local = db::Catalogue::open(me.data_dir + "/catalogue.db");
  ASSERT_TRUE(local.ok());
  std::atomic<int> applied{0};
  std::mutex mu;
  std::vector<mgmt::CopyReport> reports;  // guarded by mu
  mgmt::NodeAgent agent(me, controller_->url(), std::chrono::milliseconds(100),
                        std::make_shared<mgmt::TokenHash>(), local->get());
  agent.set_state_applied_hook([&] { ++applied; });
  agent.set_copy_reporter([&] {
    std::lock_guard lock(mu);
    return at_generation_1(reports);
  });
  agent.start();
  auto n4_online = [&] {
    auto reply = controller_->http("GET", "/api/v1/nodes");
    for (const auto& n : reply.body["nodes"]) {
      if (n["name"] == "n4" && n["state"] == "online") return true;
    }
    return false;
  };
  ASSERT_TRUE(await(n4_online));
  auto r = controller_->http("POST", "/api/v1/volumes",
                             R"({"name":"ag","size":"8MiB","replicas":1,"node":"n4"})");
  ASSERT_EQ(r.status, 201) << r.raw;
  std::string vid = r.body["id"];
  uint32_t replica = r.body["copies"][1]["number"];
  EXPECT_EQ(r.body["copies"][1]["node"], "n1");
  EXPECT_TRUE(await([&] { return local_copies(me.data_dir, "ag").size() == 2; }));
  EXPECT_GT(applied.load(), 0);

  // Synchronous report: recorded on the controller when it returns.
  ASSERT_TRUE(
      agent.report_copies_now(at_generation_1({{vid, replica, "out-of-sync", 3, 0, 0, 512}}),
                              std::chrono::milliseconds(3000)));
  auto v = controller_->http("GET", "/api/v1/volumes/ag").body;
  EXPECT_EQ(v["state"], "degraded");
  EXPECT_EQ(v["copies"][1]["state"], "out-of-sync");
  EXPECT_EQ(v["copies"][1]["behind_bytes"], 512);
  // Heartbeat reports: the replica catches up.
  {
    std::lock_guard lock(mu);
    reports = {{vid, replica, "syncing", 4, 4096, 8388608, 100},
               {vid, 1, "in-sync", 4}};
  }
  EXPECT_TRUE(await([&] {
    return controller_->http("GET", "/api/v1/volumes/ag").body["copies"][1]["state"] ==
           "syncing";
  }));
  {
    std::lock_guard lock(mu);
    reports = {{vid, replica, "in-sync", 5, 8388608, 8388608, 0}};
  }
  EXPECT_TRUE(await([&] {
    return controller_->http("GET", "/api/v1/volumes/ag").body["state"] == "healthy";
  }));
  // The mirror follows the controller's copy states too.
  EXPECT_TRUE(await([&] {
    auto c = local_copies(me.data_dir, "ag");
    return c.size() == 2 && c[1].state == "in-sync" && c[1].applied_seq == 5;
  }));
  // Reports for a volume n4 is not the master of are refused (409), so a deposed master
  // never takes its out-of-sync report as recorded; nothing changes.
  auto other = controller_->http("POST", "/api/v1/volumes", R"({"name":"mine","size":"8MiB"})");
  ASSERT_EQ(other.status, 201);
  EXPECT_FALSE(agent.report_copies_now({{other.body["id"], 1, "offline"}},
                                       std::chrono::milliseconds(3000)));
  EXPECT_EQ(controller_->http("GET", "/api/v1/volumes/mine").body["copies"][0]["state"],
            "in-sync");
  agent.stop();
}

// More reports than one heartbeat body holds: the agent sends a moving window, so the
// node stays online and the last report still reaches the controller.
TEST_F(ClusterTest, NodeAgentSendsOversizedReportsInWindows) {
  std::string addr = unique_loopback();
  mgmt::NodeIdentity me{"n4", addr, "http://" + addr + ":8080", 3260, 5703,
                        (dir_ / "n4").string()};
  std::filesystem::create_directories(me.data_dir);
  ASSERT_EQ(mgmt::join_cluster(me, controller_->url(), join_token()), "");
  std::mutex mu;
  std::vector<mgmt::CopyReport> reports;  // guarded by mu
  mgmt::NodeAgent agent(me, controller_->url(), std::chrono::milliseconds(100),
                        std::make_shared<mgmt::TokenHash>());
  agent.set_copy_reporter([&] {
    std::lock_guard lock(mu);
    return at_generation_1(reports);
  });
  agent.start();
  auto n4_state = [&](const std::string& want) {
    auto reply = controller_->http("GET", "/api/v1/nodes");
    for (const auto& n : reply.body["nodes"]) {
      if (n["name"] == "n4") return n["state"] == want;
    }
    return false;
  };
  ASSERT_TRUE(await([&] { return n4_state("online"); }));
  auto r = controller_->http("POST", "/api/v1/volumes",
                             R"({"name":"big","size":"8MiB","replicas":1,"node":"n4"})");
  ASSERT_EQ(r.status, 201) << r.raw;
  {
    std::lock_guard lock(mu);
    // Unknown volumes (ignored by the controller) first, the real report last.
    for (int i = 0; i < 12000; ++i) {
      reports.push_back({"00000000-0000-0000-0000-" + std::to_string(100000000000 + i), 2,
                         "out-of-sync", UINT32_MAX, 1ull << 40, 1ull << 40, 1ull << 40});
    }
    reports.push_back({r.body["id"], r.body["copies"][1]["number"], "syncing", 1, 2, 3, 4});
  }
  EXPECT_TRUE(await([&] {
    return controller_->http("GET", "/api/v1/volumes/big").body["copies"][1]["state"] ==
           "syncing";
  }, 15));
  EXPECT_TRUE(n4_state("online"));
  agent.stop();
}

}  // namespace
}  // namespace tandem::testkit
