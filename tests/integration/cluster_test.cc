// Two real tandemd processes: a controller and a node that joins it with the join token.
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include "tests/integration/daemon_fixture.h"

namespace tandem::testkit {
namespace {

using nlohmann::json;

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

TEST_F(ClusterTest, ReplicasNeedEnoughNodesAndAreNotFakedMeanwhile) {
  auto r = controller_->http("POST", "/api/v1/volumes", R"({"name":"r","size":"8MiB","replicas":1})");
  EXPECT_EQ(r.status, 409) << r.raw;  // one node: needs 2
  ASSERT_TRUE(node_->start(join_args(join_token()))) << node_->last_output();
  r = controller_->http("POST", "/api/v1/volumes", R"({"name":"r","size":"8MiB","replicas":1})");
  EXPECT_EQ(r.status, 501) << r.raw;  // enough nodes, replication not built yet
  EXPECT_EQ(controller_->http("GET", "/api/v1/volumes/r").status, 404);
}

}  // namespace
}  // namespace tandem::testkit
