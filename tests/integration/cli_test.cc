// tandemctl against a real tandemd: verbs, human and JSON output, exit codes, token sources.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "tests/integration/daemon_fixture.h"

namespace tandem::testkit {
namespace {

using nlohmann::json;

class CliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("tandem-cli-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    daemon_ = std::make_unique<Daemon>((dir_ / "n1").string(), unique_loopback());
    ASSERT_TRUE(daemon_->start()) << daemon_->last_output();
  }
  void TearDown() override {
    daemon_.reset();
    if (!HasFailure()) std::filesystem::remove_all(dir_);
  }
  std::filesystem::path dir_;
  std::unique_ptr<Daemon> daemon_;
};

TEST_F(CliTest, VolumeVerbsEndToEnd) {
  auto c = daemon_->ctl({"volume", "create", "pg", "--size", "512MiB", "--failure-mode", "soft",
                         "--label", "team=db", "--label", "env=prod"});
  ASSERT_EQ(c.exit_code, 0) << c.err;
  EXPECT_NE(c.out.find("iqn.2026-11.dev.tandem:pg"), std::string::npos);

  auto list = daemon_->ctl({"volume", "list"});
  ASSERT_EQ(list.exit_code, 0);
  EXPECT_NE(list.out.find("NAME"), std::string::npos);
  EXPECT_NE(list.out.find("pg"), std::string::npos);
  EXPECT_NE(list.out.find("512MiB"), std::string::npos);
  EXPECT_NE(list.out.find("soft"), std::string::npos);

  auto get = daemon_->ctl({"--json", "volume", "get", "pg"});
  ASSERT_EQ(get.exit_code, 0);
  json v = json::parse(get.out);
  EXPECT_EQ(v["size_bytes"], 512u << 20);
  EXPECT_EQ(v["labels"]["team"], "db");
  EXPECT_EQ(v["failure_mode"], "soft");

  auto upd = daemon_->ctl({"volume", "update", "pg", "--size", "1GiB", "--failure-mode",
                           "alwayson", "--label", "team-"});
  ASSERT_EQ(upd.exit_code, 0) << upd.err;
  EXPECT_NE(upd.out.find("alwayson"), std::string::npos);
  v = json::parse(daemon_->ctl({"--json", "volume", "get", "pg"}).out);
  EXPECT_EQ(v["size_bytes"], 1u << 30);
  EXPECT_FALSE(v["labels"].contains("team"));
  EXPECT_EQ(v["labels"]["env"], "prod");

  auto del = daemon_->ctl({"volume", "delete", "pg"});
  ASSERT_EQ(del.exit_code, 0);
  EXPECT_EQ(daemon_->ctl({"volume", "get", "pg"}).exit_code, 1);
}

TEST_F(CliTest, VolumeGetShowsCopiesAndCreateTakesANode) {
  auto c = daemon_->ctl({"volume", "create", "on1", "--size", "8MiB", "--node", "n1"});
  ASSERT_EQ(c.exit_code, 0) << c.err;
  auto get = daemon_->ctl({"volume", "get", "on1"});
  ASSERT_EQ(get.exit_code, 0) << get.err;
  for (const char* col : {"NODE", "ROLE", "STATE", "APPLIED-SEQ", "BEHIND", "PROGRESS"}) {
    EXPECT_NE(get.out.find(col), std::string::npos) << col << "\n" << get.out;
  }
  EXPECT_NE(get.out.find("master"), std::string::npos) << get.out;
  json v = json::parse(daemon_->ctl({"--json", "volume", "get", "on1"}).out);
  ASSERT_EQ(v["copies"].size(), 1u);
  EXPECT_EQ(v["copies"][0]["number"], 1);
  EXPECT_EQ(v["copies"][0]["node"], "n1");
  EXPECT_EQ(v["copies"][0]["behind_bytes"], 0);
  auto nowhere = daemon_->ctl({"volume", "create", "x", "--size", "8MiB", "--node", "n9"});
  EXPECT_EQ(nowhere.exit_code, 1);
  EXPECT_NE(nowhere.err.find("n9"), std::string::npos) << nowhere.err;
  auto nodes = daemon_->ctl({"node", "list"});
  ASSERT_EQ(nodes.exit_code, 0);
  EXPECT_NE(nodes.out.find("COPIES"), std::string::npos);
}

TEST_F(CliTest, ServerErrorsExitOneWithTheMessage) {
  auto r = daemon_->ctl({"volume", "create", "big", "--size", "1GiB", "--replicas", "2"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("needs 3 nodes"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("4 for high availability"), std::string::npos) << r.err;
  r = daemon_->ctl({"volume", "get", "nope"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("not found"), std::string::npos);
  ASSERT_EQ(daemon_->ctl({"volume", "create", "x", "--size", "8MiB"}).exit_code, 0);
  r = daemon_->ctl({"volume", "update", "x", "--size", "4MiB"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("grow"), std::string::npos);
  // Unreachable server is an error from the server side too.
  auto down = run_command({TANDEMCTL_PATH, "--server", "http://127.0.0.1:1", "--token", "t",
                           "volume", "list"});
  EXPECT_EQ(down.exit_code, 1);
  EXPECT_NE(down.err.find("cannot connect"), std::string::npos) << down.err;
}

TEST_F(CliTest, UsageErrorsExitTwo) {
  EXPECT_EQ(daemon_->ctl({}).exit_code, 2);
  EXPECT_EQ(daemon_->ctl({"volume"}).exit_code, 2);
  EXPECT_EQ(daemon_->ctl({"volume", "create", "x"}).exit_code, 2);  // --size missing
  EXPECT_EQ(daemon_->ctl({"volume", "create", "x", "--size", "lots"}).exit_code, 2);
  EXPECT_EQ(daemon_->ctl({"volume", "create", "x", "--size", "1GiB", "--label", "novalue"})
                .exit_code,
            2);
  EXPECT_EQ(daemon_->ctl({"volume", "update", "x"}).exit_code, 2);
  EXPECT_EQ(daemon_->ctl({"frobnicate"}).exit_code, 2);
  EXPECT_EQ(run_command({TANDEMCTL_PATH, "--server", "ftp://x", "volume", "list"}).exit_code, 2);
  EXPECT_EQ(daemon_->http("GET", "/api/v1/volumes").body["volumes"].size(), 0u);
}

TEST_F(CliTest, TokenFromFlagEnvironmentOrFile) {
  std::string url = daemon_->url();
  auto none = run_command({TANDEMCTL_PATH, "--server", url, "volume", "list"});
  EXPECT_EQ(none.exit_code, 1);
  EXPECT_NE(none.err.find("401"), std::string::npos);
  auto env = run_command({TANDEMCTL_PATH, "--server", url, "volume", "list"}, 30,
                         {"TANDEM_TOKEN=" + daemon_->token()});
  EXPECT_EQ(env.exit_code, 0) << env.err;
  auto file = run_command({TANDEMCTL_PATH, "--server", url, "--token-file",
                           daemon_->data_dir() + "/admin.token", "volume", "list"});
  EXPECT_EQ(file.exit_code, 0) << file.err;
  auto missing = run_command({TANDEMCTL_PATH, "--server", url, "--token-file",
                              "/nonexistent/token", "volume", "list"});
  EXPECT_EQ(missing.exit_code, 2);
}

TEST_F(CliTest, ClassesEventsNodesCluster) {
  ASSERT_EQ(daemon_->ctl({"class", "create", "fast", "--failure-mode", "soft", "--label",
                          "tier=1"})
                .exit_code,
            0);
  auto cl = daemon_->ctl({"class", "list"});
  EXPECT_NE(cl.out.find("fast"), std::string::npos);
  EXPECT_NE(cl.out.find("tandem/failure-mode=soft"), std::string::npos);
  ASSERT_EQ(daemon_->ctl({"volume", "create", "v", "--size", "8MiB", "--class", "fast"}).exit_code,
            0);
  json v = json::parse(daemon_->ctl({"--json", "volume", "get", "v"}).out);
  EXPECT_EQ(v["failure_mode"], "soft");
  EXPECT_EQ(v["effective_labels"]["tier"], "1");
  EXPECT_EQ(daemon_->ctl({"class", "delete", "fast"}).exit_code, 1);  // in use
  ASSERT_EQ(daemon_->ctl({"volume", "delete", "v"}).exit_code, 0);
  EXPECT_EQ(daemon_->ctl({"class", "delete", "fast"}).exit_code, 0);

  auto ev = daemon_->ctl({"events"});
  ASSERT_EQ(ev.exit_code, 0);
  for (const char* kind : {"class-created", "volume-created", "volume-deleted", "class-deleted",
                           "node-online"}) {
    EXPECT_NE(ev.out.find(kind), std::string::npos) << kind;
  }
  json evj = json::parse(daemon_->ctl({"--json", "events", "--since", "2", "--limit", "2"}).out);
  ASSERT_EQ(evj["events"].size(), 2u);
  EXPECT_EQ(evj["events"][0]["seq"], 3);

  auto nodes = daemon_->ctl({"node", "list"});
  EXPECT_NE(nodes.out.find("n1"), std::string::npos);
  EXPECT_NE(nodes.out.find("online"), std::string::npos);
  auto cluster = daemon_->ctl({"cluster"});
  EXPECT_NE(cluster.out.find("1 online of 1"), std::string::npos) << cluster.out;
  EXPECT_NE(cluster.out.find(TANDEM_VERSION), std::string::npos);
}

TEST_F(CliTest, CertificatesForTheClusterCaAndNodes) {
  auto ca_dir = (dir_ / "ca").string();
  auto ca = run_command({TANDEMCTL_PATH, "cert", "ca", "--dir", ca_dir});
  ASSERT_EQ(ca.exit_code, 0) << ca.err;
  EXPECT_NE(ca.out.find("fingerprint"), std::string::npos);
  EXPECT_EQ(run_command({TANDEMCTL_PATH, "cert", "ca", "--dir", ca_dir}).exit_code, 1)
      << "an existing CA is never replaced";
  auto out = (dir_ / "n7").string();
  auto node = run_command({TANDEMCTL_PATH, "cert", "node", "--ca-dir", ca_dir, "--name", "n7",
                           "--address", "127.0.0.7", "--out", out});
  ASSERT_EQ(node.exit_code, 0) << node.err;
  struct stat st {};
  ASSERT_EQ(::stat((dir_ / "n7" / "node.key").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600);
  auto show = run_command({TANDEMCTL_PATH, "cert", "show", out + "/node.crt", "--ca",
                           ca_dir + "/ca.crt"});
  EXPECT_EQ(show.exit_code, 0) << show.err;
  EXPECT_NE(show.out.find("subject CN  n7"), std::string::npos);
  EXPECT_NE(show.out.find("verified    yes"), std::string::npos);
  // Against another CA the same certificate does not verify.
  ASSERT_EQ(run_command({TANDEMCTL_PATH, "cert", "ca", "--dir", (dir_ / "ca2").string()}).exit_code,
            0);
  auto other = run_command({TANDEMCTL_PATH, "cert", "show", out + "/node.crt", "--ca",
                            (dir_ / "ca2" / "ca.crt").string()});
  EXPECT_EQ(other.exit_code, 1);
  EXPECT_NE(other.out.find("verified    NO"), std::string::npos);
  EXPECT_EQ(run_command({TANDEMCTL_PATH, "cert", "node", "--ca-dir", ca_dir, "--name", "bad name",
                         "--address", "127.0.0.7", "--out", out + "x"})
                .exit_code,
            2);
}

}  // namespace
}  // namespace tandem::testkit
