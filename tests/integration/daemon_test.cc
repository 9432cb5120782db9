// tandemd driven from outside over real HTTP on its own loopback address.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <thread>

#include "tests/integration/daemon_fixture.h"

namespace tandem::testkit {
namespace {

using nlohmann::json;

class DaemonTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("tandem-it-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    address_ = unique_loopback();
    daemon_ = std::make_unique<Daemon>((dir_ / "n1").string(), address_);
    ASSERT_TRUE(daemon_->start()) << daemon_->last_output();
  }
  void TearDown() override {
    daemon_.reset();
    if (!HasFailure()) std::filesystem::remove_all(dir_);
  }

  std::string image_of(const json& volume) {
    return (dir_ / "n1" / "volumes" / (volume["id"].get<std::string>() + ".img")).string();
  }

  // Sends raw bytes on a fresh TCP connection and returns what comes back before close.
  std::string raw_exchange(const std::string& bytes) {
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(8080);
    ::inet_pton(AF_INET, address_.c_str(), &sa.sin_addr);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
      ::close(fd);
      return "<connect failed>";
    }
    timeval tv{5, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    ::shutdown(fd, SHUT_WR);
    std::string out;
    char buf[4096];
    for (ssize_t n; (n = ::recv(fd, buf, sizeof buf, 0)) > 0;) out.append(buf, n);
    ::close(fd);
    return out;
  }

  std::filesystem::path dir_;
  std::string address_;
  std::unique_ptr<Daemon> daemon_;
};

TEST_F(DaemonTest, FirstStartCreatesCatalogueAndPrivateTokenPrintedOnce) {
  auto dd = dir_ / "n1";
  EXPECT_TRUE(std::filesystem::exists(dd / "catalogue.db"));
  struct stat st {};
  ASSERT_EQ(::stat((dd / "admin.token").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600);
  std::string token = daemon_->token();
  ASSERT_GE(token.size(), 32u);
  EXPECT_NE(daemon_->last_output().find("admin token: " + token), std::string::npos);
  ASSERT_EQ(daemon_->stop(), 0);
  ASSERT_TRUE(daemon_->start()) << daemon_->last_output();
  std::string out = daemon_->last_output();
  EXPECT_EQ(out.find("admin token: "), out.rfind("admin token: ")) << "token printed twice";
  EXPECT_EQ(daemon_->token(), token);
  EXPECT_EQ(daemon_->http("GET", "/api/v1/volumes").status, 200);
}

TEST_F(DaemonTest, VolumeLifecycleOverHttp) {
  auto r = daemon_->http("POST", "/api/v1/volumes", R"({"name":"db1","size":"256MiB"})");
  ASSERT_EQ(r.status, 201) << r.raw;
  std::string img = image_of(r.body);
  struct stat st {};
  ASSERT_EQ(::stat(img.c_str(), &st), 0);
  EXPECT_EQ(st.st_size, 256 << 20);
  EXPECT_EQ(st.st_blocks, 0) << "volume file must be sparse";

  auto four_k = daemon_->http("POST", "/api/v1/volumes",
                              R"({"name":"db4k","size":"1GiB","block_size":4096})");
  ASSERT_EQ(four_k.status, 201) << four_k.raw;
  EXPECT_EQ(four_k.body["block_size"], 4096);

  auto list = daemon_->http("GET", "/api/v1/volumes");
  ASSERT_EQ(list.status, 200);
  EXPECT_EQ(list.body["volumes"].size(), 2u);
  auto grown = daemon_->http("PATCH", "/api/v1/volumes/db1", R"({"size":"512MiB"})");
  ASSERT_EQ(grown.status, 200) << grown.raw;
  ASSERT_EQ(::stat(img.c_str(), &st), 0);
  EXPECT_EQ(st.st_size, 512 << 20);
  EXPECT_EQ(daemon_->http("PATCH", "/api/v1/volumes/db1", R"({"size":"1MiB"})").status, 422);
  EXPECT_EQ(daemon_->http("DELETE", "/api/v1/volumes/db1").status, 204);
  EXPECT_FALSE(std::filesystem::exists(img));
  EXPECT_EQ(daemon_->http("GET", "/api/v1/volumes/db1").status, 404);
}

TEST_F(DaemonTest, RestartRecoversEveryVolumeAfterSigtermAndAfterSigkill) {
  for (const char* name : {"a", "b", "c"}) {
    auto r = daemon_->http("POST", "/api/v1/volumes",
                           json{{"name", name}, {"size", "8MiB"}, {"failure_mode", "soft"}}.dump());
    ASSERT_EQ(r.status, 201) << r.raw;
  }
  ASSERT_EQ(daemon_->stop(), 0);
  ASSERT_TRUE(daemon_->start()) << daemon_->last_output();
  auto list = daemon_->http("GET", "/api/v1/volumes");
  ASSERT_EQ(list.body["volumes"].size(), 3u);
  for (const auto& v : list.body["volumes"]) {
    EXPECT_EQ(v["state"], "healthy");
    EXPECT_EQ(v["failure_mode"], "soft");
  }
  ASSERT_EQ(daemon_->http("POST", "/api/v1/volumes", R"({"name":"d","size":"8MiB"})").status,
            201);
  daemon_->kill9();
  ASSERT_TRUE(daemon_->start()) << daemon_->last_output();
  EXPECT_EQ(daemon_->http("GET", "/api/v1/volumes").body["volumes"].size(), 4u);
  auto d = daemon_->http("GET", "/api/v1/volumes/d");
  ASSERT_EQ(d.status, 200);
  EXPECT_TRUE(std::filesystem::exists(image_of(d.body)));
}

TEST_F(DaemonTest, MissingImageFileTurnsVolumeOfflineAtRestart) {
  auto r = daemon_->http("POST", "/api/v1/volumes", R"({"name":"gone","size":"8MiB"})");
  ASSERT_EQ(r.status, 201);
  ASSERT_EQ(daemon_->stop(), 0);
  std::filesystem::remove(image_of(r.body));
  ASSERT_TRUE(daemon_->start()) << daemon_->last_output();
  auto v = daemon_->http("GET", "/api/v1/volumes/gone");
  EXPECT_EQ(v.body["state"], "offline");
  auto c = daemon_->http("GET", "/api/v1/cluster");
  EXPECT_EQ(c.body["health"]["status"], "degraded");
}

TEST_F(DaemonTest, SecondDaemonOnTheSameDataDirRefusesToStart) {
  auto res = run_command({TANDEMD_PATH, "--node-name", "n1", "--bind", unique_loopback(),
                          "--data-dir", (dir_ / "n1").string()},
                         30);
  EXPECT_EQ(res.exit_code, 1);
  EXPECT_NE(res.err.find("in use by another tandemd"), std::string::npos) << res.err;
  EXPECT_EQ(daemon_->http("GET", "/healthz", "", false).status, 200);
}

TEST_F(DaemonTest, BadFlagsAreUsageErrors) {
  auto res = run_command({TANDEMD_PATH, "--no-such-flag"}, 30);
  EXPECT_EQ(res.exit_code, 2);
  res = run_command({TANDEMD_PATH, "--node-name", "Bad Name", "--data-dir",
                     (dir_ / "x").string()},
                    30);
  EXPECT_EQ(res.exit_code, 2);
  res = run_command({TANDEMD_PATH, "--http-port", "99999", "--data-dir", (dir_ / "x").string()},
                    30);
  EXPECT_EQ(res.exit_code, 2);
}

TEST_F(DaemonTest, PortInUseIsAClearStartupError) {
  Daemon other((dir_ / "n2").string(), address_, "n2");
  EXPECT_FALSE(other.start({}, 15));
  EXPECT_NE(other.last_output().find("cannot listen on"), std::string::npos)
      << other.last_output();
}

TEST_F(DaemonTest, AuthIsRequiredEverywhereButHealthz) {
  EXPECT_EQ(daemon_->http("GET", "/healthz", "", false).status, 200);
  for (const char* path : {"/api/v1/volumes", "/api/v1/nodes", "/api/v1/cluster",
                           "/api/v1/events", "/api/v1/classes", "/metrics",
                           "/api/v1/openapi.json", "/api/v1/no-such-route"}) {
    auto r = daemon_->http("GET", path, "", false);
    EXPECT_EQ(r.status, 401) << path;
    EXPECT_EQ(r.body["error"]["code"], "unauthorized") << path;
  }
  auto wrong = mgmt::HttpClient::make(daemon_->url(), "not-the-token");
  ASSERT_TRUE(wrong.ok());
  auto r = wrong->request("POST", "/api/v1/volumes", R"({"name":"x","size":"8MiB"})");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->status, 401);
  EXPECT_EQ(daemon_->http("GET", "/api/v1/volumes/x").status, 404) << "nothing was created";
}

TEST_F(DaemonTest, MalformedOversizedAndUnknownRequestsGetCleanErrors) {
  EXPECT_EQ(daemon_->http("POST", "/api/v1/volumes", "{\"name\": ").status, 400);
  EXPECT_EQ(daemon_->http("POST", "/api/v1/volumes", "\xff\xfe garbage").status, 400);
  EXPECT_EQ(daemon_->http("GET", "/api/v1/frobnicate").status, 404);
  EXPECT_EQ(daemon_->http("DELETE", "/api/v1/cluster").status, 405);
  std::string big = R"({"name":"big","size":"8MiB","labels":{"x":")" +
                    std::string(2 << 20, 'a') + "\"}}";
  auto r = daemon_->http("POST", "/api/v1/volumes", big);
  EXPECT_EQ(r.status, 413);
  EXPECT_EQ(r.body["error"]["code"], "payload_too_large");
  // Garbage that is not HTTP at all: the connection is closed, the daemon carries on.
  static const char kTlsHelloish[] = "\x16\x03\x01\x02\x00garbage\r\n\r\n";
  raw_exchange(std::string(kTlsHelloish, sizeof kTlsHelloish - 1));
  raw_exchange("GET / HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n");
  raw_exchange(std::string(100000, 'A'));
  std::string reply = raw_exchange("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_NE(reply.find("200 OK"), std::string::npos) << reply;
  EXPECT_EQ(daemon_->http("GET", "/api/v1/volumes").body["volumes"].size(), 0u);
}

TEST_F(DaemonTest, TooManyReplicasForTheClusterIs409) {
  auto r = daemon_->http("POST", "/api/v1/volumes",
                         R"({"name":"r3","size":"8MiB","replicas":3})");
  ASSERT_EQ(r.status, 409) << r.raw;
  EXPECT_EQ(r.body["error"]["code"], "insufficient_nodes");
  EXPECT_EQ(r.body["error"]["nodes_required"], 4);
  EXPECT_EQ(r.body["error"]["nodes_for_ha"], 5);
  EXPECT_NE(r.body["error"]["message"].get<std::string>().find("needs 4 nodes"),
            std::string::npos);
  EXPECT_TRUE(std::filesystem::is_empty(dir_ / "n1" / "volumes"));
}

TEST_F(DaemonTest, MetricsAndClusterSummary) {
  ASSERT_EQ(daemon_->http("POST", "/api/v1/volumes", R"({"name":"m","size":"8MiB"})").status,
            201);
  auto m = daemon_->http("GET", "/metrics");
  ASSERT_EQ(m.status, 200);
  EXPECT_NE(m.raw.find("tandem_volumes{state=\"healthy\"} 1"), std::string::npos);
  EXPECT_NE(m.raw.find("tandem_http_requests_total{code=\"201\",method=\"POST\","
                       "route=\"/api/v1/volumes\"} 1"),
            std::string::npos)
      << m.raw;
  auto c = daemon_->http("GET", "/api/v1/cluster");
  EXPECT_EQ(c.body["nodes"], 1);
  EXPECT_EQ(c.body["volumes"], 1);
  auto n = daemon_->http("GET", "/api/v1/nodes");
  ASSERT_EQ(n.body["nodes"].size(), 1u);
  EXPECT_EQ(n.body["nodes"][0]["address"], address_);
  EXPECT_EQ(n.body["nodes"][0]["state"], "online");
  EXPECT_GT(n.body["nodes"][0]["capacity_bytes"].get<uint64_t>(), 0u);
}

// SIGTERM while clients are creating volumes: the daemon exits 0, and after restart every
// volume a client saw acknowledged (201) is there with its file, and no file lacks a row.
TEST_F(DaemonTest, SigtermDuringRequestsLosesNothingAcknowledged) {
  std::atomic<bool> stop{false};
  std::mutex mu;
  std::vector<std::string> created;
  std::vector<std::thread> clients;
  for (int t = 0; t < 4; ++t) {
    clients.emplace_back([&, t] {
      for (int i = 0; i < 200 && !stop; ++i) {
        std::string name = "v" + std::to_string(t) + "-" + std::to_string(i);
        auto client = mgmt::HttpClient::make(daemon_->url(), daemon_->token(), 10);
        auto r = client->request("POST", "/api/v1/volumes",
                                 json{{"name", name}, {"size", "1MiB"}}.dump());
        std::lock_guard lock(mu);
        if (!r.ok()) {
          // Refused at connect: the daemon is gone. Reset before an answer: the request was
          // still in the listen queue when the listener closed; nothing was acknowledged.
          if (r.error().find("connect") != std::string::npos) return;
          continue;
        }
        if (r->status == 201) created.push_back(name);
      }
    });
  }
  // Let some requests land, then stop the daemon in the middle of the stream.
  for (;;) {
    {
      std::lock_guard lock(mu);
      if (created.size() >= 20) break;
    }
    std::this_thread::yield();
  }
  EXPECT_EQ(daemon_->stop(), 0) << daemon_->last_output();
  stop = true;
  for (auto& c : clients) c.join();
  ASSERT_TRUE(daemon_->start()) << daemon_->last_output();
  auto list = daemon_->http("GET", "/api/v1/volumes");
  std::set<std::string> present;
  for (const auto& v : list.body["volumes"]) {
    present.insert(v["name"].get<std::string>());
    EXPECT_TRUE(std::filesystem::exists(image_of(v))) << v["name"];
  }
  for (const auto& name : created) EXPECT_TRUE(present.count(name)) << name << " was lost";
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir_ / "n1" / "volumes"),
                          std::filesystem::directory_iterator{}),
            static_cast<long>(present.size()))
      << "an image file without a catalogue row";
}

}  // namespace
}  // namespace tandem::testkit
