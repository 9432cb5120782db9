// The REST routes as pure functions over a real SQLite catalogue and a real file store.
#include "mgmt/api/router.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>

#include "backend/store/file_volume.h"
#include "backend/store/io_pool.h"
#include "db/catalogue.h"
#include "mgmt/cluster_service.h"
#include "mgmt/metrics.h"
#include "mgmt/volume_service.h"

namespace tandem::mgmt {
namespace {

using nlohmann::json;
constexpr const char* kToken = "secret-token";

class RouterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("tandem-router-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    auto c = db::Catalogue::open((dir_ / "catalogue.db").string());
    ASSERT_TRUE(c.ok());
    cat_ = std::move(*c);
    ASSERT_TRUE(cat_->transact<void>([](db::Tx& tx) {
                      return tx.upsert_node({"node-1", "n1", "127.0.0.1", "http://127.0.0.1:8080",
                                             "online"});
                    }).ok());
    volumes_ = std::make_unique<VolumeService>(*cat_, pool_, (dir_ / "volumes").string(),
                                               "node-1", "n1");
    ASSERT_TRUE(volumes_->recover().ok());
    router_ = std::make_unique<Router>(
        ApiContext{cat_.get(), volumes_.get(), &metrics_, nullptr, std::make_shared<TokenHash>(sha256_hex(kToken)), "n1", {}});
  }
  void TearDown() override {
    router_.reset();
    volumes_.reset();
    cat_.reset();
    std::filesystem::remove_all(dir_);
  }

  HttpResponse call(const std::string& method, const std::string& target,
                    const std::string& body = "", const std::string& token = kToken) {
    HttpRequest req;
    req.method = method;
    EXPECT_TRUE(split_target(target, &req.path, &req.query));
    if (!token.empty()) req.authorization = "Bearer " + token;
    req.body = body;
    std::string route;
    return router_->handle(req, &route);
  }
  static json body(const HttpResponse& r) { return json::parse(r.body); }
  static std::string code(const HttpResponse& r) { return body(r)["error"]["code"]; }

  void add_node(const std::string& id, const std::string& name) {
    ASSERT_TRUE(cat_->transact<void>([&](db::Tx& tx) {
                      return tx.upsert_node({id, name, "127.0.0.2", "http://x", "online"});
                    }).ok());
  }

  backend::IoPool pool_{2};
  Metrics metrics_;
  std::filesystem::path dir_;
  std::unique_ptr<db::Catalogue> cat_;
  std::unique_ptr<VolumeService> volumes_;
  std::unique_ptr<Router> router_;
};

TEST_F(RouterTest, HealthzNeedsNoTokenEverythingElseDoes) {
  EXPECT_EQ(call("GET", "/healthz", "", "").status, 200);
  for (const auto& r : Router::routes()) {
    if (r.auth != Auth::kAdmin) continue;
    std::string path = r.pattern;
    if (auto p = path.find("{name}"); p != std::string::npos) path.replace(p, 6, "x");
    auto none = call(r.method, path, "{}", "");
    EXPECT_EQ(none.status, 401) << r.method << " " << r.pattern;
    EXPECT_EQ(code(none), "unauthorized");
    EXPECT_EQ(call(r.method, path, "{}", "wrong").status, 401) << r.method << " " << r.pattern;
  }
  HttpRequest basic;
  basic.method = "GET";
  basic.path = "/api/v1/volumes";
  basic.authorization = std::string("Basic ") + kToken;
  std::string route;
  EXPECT_EQ(router_->handle(basic, &route).status, 401);
}

TEST_F(RouterTest, UnknownRoutesAndMethods) {
  EXPECT_EQ(call("GET", "/api/v1/volumes/a/b/c").status, 404);
  EXPECT_EQ(call("GET", "/api/v1/nope").status, 404);
  EXPECT_EQ(code(call("GET", "/api/v1/nope")), "not_found");
  auto r = call("PUT", "/api/v1/volumes");
  EXPECT_EQ(r.status, 405);
  EXPECT_EQ(r.headers.at("Allow"), "GET, POST");
  EXPECT_EQ(call("GET", "/api/v1/volumes/").status, 404);
  EXPECT_EQ(call("GET", "/api/v1/volumes/a/b").status, 404);
}

TEST_F(RouterTest, VolumeLifecycle) {
  auto created = call("POST", "/api/v1/volumes", R"({"name":"db1","size":"64MiB"})");
  ASSERT_EQ(created.status, 201) << created.body;
  json v = body(created);
  EXPECT_EQ(v["name"], "db1");
  EXPECT_EQ(v["size_bytes"], 64u << 20);
  EXPECT_EQ(v["block_size"], 512);
  EXPECT_EQ(v["iqn"], "iqn.2026-11.dev.tandem:db1");
  EXPECT_EQ(v["replicas"], 0);
  EXPECT_EQ(v["failure_mode"], "hard");
  EXPECT_EQ(v["state"], "healthy");
  EXPECT_EQ(v["copies"].size(), 1u);
  EXPECT_EQ(v["copies"][0]["node"], "n1");
  EXPECT_EQ(created.headers.at("Location"), "/api/v1/volumes/db1");

  // The data file exists, is sparse and has the right size.
  struct stat st {};
  auto file = dir_ / "volumes" / (v["id"].get<std::string>() + ".img");
  ASSERT_EQ(::stat(file.c_str(), &st), 0);
  EXPECT_EQ(st.st_size, 64 << 20);
  EXPECT_EQ(st.st_blocks, 0);

  EXPECT_EQ(call("POST", "/api/v1/volumes", R"({"name":"db1","size":"64MiB"})").status, 409);
  auto list = body(call("GET", "/api/v1/volumes"));
  ASSERT_EQ(list["volumes"].size(), 1u);

  auto grown = call("PATCH", "/api/v1/volumes/db1", R"({"size":"128MiB"})");
  ASSERT_EQ(grown.status, 200) << grown.body;
  EXPECT_EQ(body(grown)["size_bytes"], 128u << 20);
  ASSERT_EQ(::stat(file.c_str(), &st), 0);
  EXPECT_EQ(st.st_size, 128 << 20);
  auto shrink = call("PATCH", "/api/v1/volumes/db1", R"({"size":"64MiB"})");
  EXPECT_EQ(shrink.status, 422);
  EXPECT_NE(body(shrink)["error"]["message"].get<std::string>().find("grow"), std::string::npos);

  auto mode = call("PATCH", "/api/v1/volumes/db1", R"({"failure_mode":"alwayson"})");
  ASSERT_EQ(mode.status, 200) << mode.body;
  EXPECT_EQ(body(mode)["failure_mode"], "alwayson");
  EXPECT_EQ(body(mode)["nodes_for_ha"], 1);
  EXPECT_EQ(body(call("GET", "/api/v1/volumes/db1"))["failure_mode"], "alwayson");

  auto label = call("PATCH", "/api/v1/volumes/db1", R"({"labels":{"team":"db"}})");
  EXPECT_EQ(body(label)["labels"]["team"], "db");
  auto unlabel = call("PATCH", "/api/v1/volumes/db1", R"({"labels":{"team":null}})");
  EXPECT_FALSE(body(unlabel)["labels"].contains("team"));

  EXPECT_EQ(call("DELETE", "/api/v1/volumes/db1").status, 204);
  EXPECT_FALSE(std::filesystem::exists(file));
  EXPECT_EQ(call("GET", "/api/v1/volumes/db1").status, 404);
  EXPECT_EQ(call("DELETE", "/api/v1/volumes/db1").status, 404);

  // Every state change left an event.
  auto ev = body(call("GET", "/api/v1/events?limit=100"));
  std::multiset<std::string> kinds;
  for (const auto& e : ev["events"]) kinds.insert(e["kind"].get<std::string>());
  EXPECT_EQ(kinds.count("volume-created"), 1u);
  EXPECT_EQ(kinds.count("volume-updated"), 4u);
  EXPECT_EQ(kinds.count("volume-deleted"), 1u);
}

TEST_F(RouterTest, DeleteRefusedWhileInUse) {
  ASSERT_EQ(call("POST", "/api/v1/volumes", R"({"name":"busy","size":1048576})").status, 201);
  volumes_->set_in_use_check([](const std::string&) { return true; });
  auto r = call("DELETE", "/api/v1/volumes/busy");
  EXPECT_EQ(r.status, 409);
  volumes_->set_in_use_check([](const std::string&) { return false; });
  EXPECT_EQ(call("DELETE", "/api/v1/volumes/busy").status, 204);
}

TEST_F(RouterTest, MalformedAndInvalidBodies) {
  EXPECT_EQ(call("POST", "/api/v1/volumes", "{not json").status, 400);
  EXPECT_EQ(call("POST", "/api/v1/volumes", "[1,2]").status, 400);
  EXPECT_EQ(call("POST", "/api/v1/volumes", "").status, 400);
  struct Case {
    const char* body;
    const char* field;
  };
  for (Case c : {Case{R"({"size":"1GiB"})", "name"},
                 Case{R"({"name":"Bad_Name","size":"1GiB"})", "name"},
                 Case{R"({"name":"a"})", "size"},
                 Case{R"({"name":"a","size":"lots"})", "size"},
                 Case{R"({"name":"a","size":1000})", "size"},
                 Case{R"({"name":"a","size":"65TiB"})", "size"},
                 Case{R"({"name":"a","size":1049088,"block_size":4096})", "size"},
                 Case{R"({"name":"a","size":"1GiB","block_size":1024})", "block_size"},
                 Case{R"({"name":"a","size":"1GiB","replicas":9})", "tandem/replicas"},
                 Case{R"({"name":"a","size":"1GiB","failure_mode":"never"})",
                      "tandem/failure-mode"},
                 Case{R"({"name":"a","size":"1GiB","labels":{"x":1}})", "labels"},
                 Case{R"({"name":"a","size":"1GiB","class":"nope"})", "class"}}) {
    auto r = call("POST", "/api/v1/volumes", c.body);
    EXPECT_EQ(r.status, 422) << c.body << " -> " << r.body;
    EXPECT_EQ(body(r)["error"]["field"], c.field) << c.body;
  }
  EXPECT_EQ(call("POST", "/api/v1/volumes", R"({"name":5,"size":"1GiB"})").status, 422);
  EXPECT_EQ(call("PATCH", "/api/v1/volumes/x", R"({"name":"y"})").status, 422);
  EXPECT_EQ(call("GET", "/api/v1/events?limit=abc").status, 400);
  EXPECT_EQ(call("GET", "/api/v1/events?limit=0").status, 400);
  EXPECT_TRUE(body(call("GET", "/api/v1/volumes"))["volumes"].empty());
}

TEST_F(RouterTest, TooFewNodesForReplicasIs409WithCounts) {
  auto r = call("POST", "/api/v1/volumes", R"({"name":"r2","size":"1GiB","replicas":2})");
  ASSERT_EQ(r.status, 409);
  json e = body(r)["error"];
  EXPECT_EQ(e["code"], "insufficient_nodes");
  EXPECT_EQ(e["nodes_required"], 3);
  EXPECT_EQ(e["nodes_for_ha"], 4);  // hard: 1 + N + 1
  EXPECT_EQ(e["nodes_available"], 1);
  EXPECT_NE(e["message"].get<std::string>().find("needs 3 nodes"), std::string::npos);
  auto soft = body(call("POST", "/api/v1/volumes",
                        R"({"name":"r2","size":"1GiB","replicas":2,"failure_mode":"soft"})"));
  EXPECT_EQ(soft["error"]["nodes_for_ha"], 3);
  auto th = body(call("POST", "/api/v1/volumes",
                      R"({"name":"r2","size":"1GiB","replicas":2,"failure_mode":"threshold",
                          "failure_threshold":1})"));
  EXPECT_EQ(th["error"]["nodes_for_ha"], 2);
  // No file was left behind by the refusals.
  EXPECT_TRUE(std::filesystem::is_empty(dir_ / "volumes"));

  // With enough nodes the volume is created: the master here (with its file), the replica's
  // row on the other node (that node's data plane creates its file).
  add_node("node-2", "n2");
  auto r1 = call("POST", "/api/v1/volumes", R"({"name":"r1","size":"1GiB","replicas":1})");
  ASSERT_EQ(r1.status, 201) << r1.body;
  json v1 = body(r1);
  ASSERT_EQ(v1["copies"].size(), 2u);
  EXPECT_EQ(v1["copies"][0]["node"], "n1");
  EXPECT_EQ(v1["copies"][0]["role"], "master");
  EXPECT_EQ(v1["copies"][0]["number"], 1);
  EXPECT_EQ(v1["copies"][1]["node"], "n2");
  EXPECT_EQ(v1["copies"][1]["number"], 2);
  EXPECT_EQ(v1["copies"][1]["state"], "in-sync");
  EXPECT_EQ(v1["state"], "healthy");
  ASSERT_EQ(call("POST", "/api/v1/volumes", R"({"name":"r0","size":"1GiB"})").status, 201);
  EXPECT_EQ(body(call("GET", "/api/v1/volumes/r0"))["ha_available"], true);
  EXPECT_EQ(call("PATCH", "/api/v1/volumes/r0", R"({"replicas":2})").status, 409);
  EXPECT_EQ(body(call("GET", "/api/v1/volumes/r0"))["replicas"], 0);
  EXPECT_EQ(body(call("GET", "/api/v1/volumes/r0"))["copies"].size(), 1u);
}

TEST_F(RouterTest, ReplicaCountChangesAtRunTime) {
  add_node("node-2", "n2");
  add_node("node-3", "n3");
  int changes = 0;
  volumes_->set_changed_hook([&] { ++changes; });
  ASSERT_EQ(call("POST", "/api/v1/volumes", R"({"name":"v","size":"1GiB"})").status, 201);
  EXPECT_EQ(changes, 1);
  auto up = call("PATCH", "/api/v1/volumes/v", R"({"replicas":2})");
  ASSERT_EQ(up.status, 200) << up.body;
  EXPECT_EQ(changes, 2);
  json j = body(up);
  ASSERT_EQ(j["copies"].size(), 3u);
  std::set<std::string> nodes;
  for (const auto& c : j["copies"]) nodes.insert(c["node"].get<std::string>());
  EXPECT_EQ(nodes.size(), 3u);
  EXPECT_EQ(j["copies"][1]["state"], "syncing");
  EXPECT_EQ(j["copies"][2]["number"], 3);
  EXPECT_EQ(j["state"], "degraded");
  auto down = call("PATCH", "/api/v1/volumes/v", R"({"replicas":1})");
  ASSERT_EQ(down.status, 200) << down.body;
  j = body(down);
  ASSERT_EQ(j["copies"].size(), 2u);
  EXPECT_EQ(j["copies"][0]["role"], "master");
  auto up2 = body(call("PATCH", "/api/v1/volumes/v", R"({"replicas":2})"));
  ASSERT_EQ(up2["copies"].size(), 3u);
  EXPECT_EQ(up2["copies"][2]["number"], 4) << "a dropped copy's number is not reused";
  auto evs = body(call("GET", "/api/v1/events"))["events"];
  int added = 0, removed = 0;
  for (const auto& e : evs) {
    added += e["kind"] == "copy-added";
    removed += e["kind"] == "copy-removed";
  }
  EXPECT_EQ(added, 3);
  EXPECT_EQ(removed, 1);
  ASSERT_EQ(call("PATCH", "/api/v1/volumes/v", R"({"replicas":0})").status, 200);
  j = body(call("GET", "/api/v1/volumes/v"));
  EXPECT_EQ(j["copies"].size(), 1u);
  EXPECT_EQ(j["state"], "healthy");
  ASSERT_EQ(call("DELETE", "/api/v1/volumes/v").status, 204);
}

TEST_F(RouterTest, MasterNodeFromBodyOrOriginHeader) {
  add_node("node-2", "n2");
  auto r = call("POST", "/api/v1/volumes",
                R"({"name":"a","size":"1GiB","node":"n2","replicas":1})");
  ASSERT_EQ(r.status, 201) << r.body;
  EXPECT_EQ(body(r)["master"], "n2");
  EXPECT_EQ(body(r)["copies"][1]["node"], "n1");
  // Not this node's master: no file here (the replica's file is the data plane's).
  EXPECT_TRUE(std::filesystem::is_empty(dir_ / "volumes"));
  // A restart does not take the volume offline for the replica file it lacks.
  ASSERT_TRUE(volumes_->recover().ok());
  EXPECT_EQ(body(call("GET", "/api/v1/volumes/a"))["state"], "healthy");
  auto unknown = call("POST", "/api/v1/volumes", R"({"name":"b","size":"1GiB","node":"zz"})");
  EXPECT_EQ(unknown.status, 422);
  EXPECT_EQ(body(unknown)["error"]["field"], "node");
  EXPECT_EQ(call("POST", "/api/v1/volumes", R"({"name":"b","size":"1GiB","node":5})").status,
            422);
  ASSERT_TRUE(cat_->transact<void>([](db::Tx& tx) {
                    return tx.set_node_state("node-2", "offline");
                  }).ok());
  auto off = call("POST", "/api/v1/volumes", R"({"name":"b","size":"1GiB","node":"n2"})");
  EXPECT_EQ(off.status, 422);
  ASSERT_TRUE(cat_->transact<void>([](db::Tx& tx) {
                    return tx.set_node_state("node-2", "online");
                  }).ok());
  HttpRequest req;
  req.method = "POST";
  req.path = "/api/v1/volumes";
  req.authorization = std::string("Bearer ") + kToken;
  req.origin_node = "n2";
  req.body = R"({"name":"c","size":"1GiB"})";
  std::string route;
  auto o = router_->handle(req, &route);
  ASSERT_EQ(o.status, 201) << o.body;
  EXPECT_EQ(body(o)["master"], "n2");
  req.body = R"({"name":"d","size":"1GiB","node":"n1"})";
  o = router_->handle(req, &route);
  EXPECT_EQ(body(o)["master"], "n1") << "the body wins over the origin";
  ASSERT_EQ(call("DELETE", "/api/v1/volumes/a").status, 204);
}

TEST_F(RouterTest, ClassDefaultsApplyAndVolumeLabelsOverride) {
  auto c = call("POST", "/api/v1/classes",
                R"({"name":"gold","labels":{"tandem/failure-mode":"soft","tier":"1"}})");
  ASSERT_EQ(c.status, 201) << c.body;
  EXPECT_EQ(call("POST", "/api/v1/classes", R"({"name":"gold"})").status, 409);
  EXPECT_EQ(call("POST", "/api/v1/classes", R"({"name":"Gold"})").status, 422);
  EXPECT_EQ(call("POST", "/api/v1/classes", R"({"name":"x","labels":{"tandem/replicas":"7"}})")
                .status,
            422);
  auto v = call("POST", "/api/v1/volumes",
                R"({"name":"v1","size":"1GiB","class":"gold","labels":{"tier":"2"}})");
  ASSERT_EQ(v.status, 201) << v.body;
  json j = body(v);
  EXPECT_EQ(j["failure_mode"], "soft");
  EXPECT_EQ(j["effective_labels"]["tier"], "2");
  EXPECT_EQ(j["labels"].size(), 1u);
  EXPECT_EQ(body(call("GET", "/api/v1/classes"))["classes"].size(), 1u);
  EXPECT_EQ(body(call("GET", "/api/v1/classes/gold"))["labels"]["tier"], "1");
  EXPECT_EQ(call("DELETE", "/api/v1/classes/gold").status, 409);  // in use
  EXPECT_EQ(call("DELETE", "/api/v1/volumes/v1").status, 204);
  EXPECT_EQ(call("DELETE", "/api/v1/classes/gold").status, 204);
  EXPECT_EQ(call("DELETE", "/api/v1/classes/gold").status, 404);
  EXPECT_EQ(call("GET", "/api/v1/classes/gold").status, 404);
}

TEST_F(RouterTest, ClusterNodesMetrics) {
  ASSERT_EQ(call("POST", "/api/v1/volumes", R"({"name":"m","size":"2MiB"})").status, 201);
  auto c = body(call("GET", "/api/v1/cluster"));
  EXPECT_EQ(c["nodes"], 1);
  EXPECT_EQ(c["volumes"], 1);
  EXPECT_EQ(c["version"], TANDEM_VERSION);
  EXPECT_EQ(c["health"]["status"], "healthy");
  auto n = body(call("GET", "/api/v1/nodes"));
  ASSERT_EQ(n["nodes"].size(), 1u);
  EXPECT_EQ(n["nodes"][0]["name"], "n1");
  EXPECT_EQ(n["nodes"][0]["copies"], 1);
  metrics_.observe_request("GET", "/api/v1/cluster", 200, 0.001);
  auto m = call("GET", "/metrics");
  ASSERT_EQ(m.status, 200);
  EXPECT_NE(m.content_type.find("text/plain"), std::string::npos);
  EXPECT_NE(m.body.find("tandem_volumes{state=\"healthy\"} 1"), std::string::npos) << m.body;
  EXPECT_NE(m.body.find("tandem_capacity_bytes{kind=\"provisioned\"} 2097152"), std::string::npos);
  EXPECT_NE(m.body.find("tandem_http_requests_total{"), std::string::npos);
  EXPECT_NE(m.body.find("tandem_http_request_duration_seconds_bucket"), std::string::npos);
}

// Inline writes slower than the stall bound are counted in /metrics (process-wide, from every
// FileVolume): here a zero bound makes one write on the calling thread a stall.
TEST_F(RouterTest, InlineWriteBackoffsAreCountedInMetrics) {
  auto v = body(call("POST", "/api/v1/volumes", R"({"name":"s","size":"2MiB"})"));
  ASSERT_TRUE(v.contains("id"));
  const uint64_t before = backend::FileVolume::inline_write_stalls_total();
  auto m0 = call("GET", "/metrics");
  EXPECT_NE(m0.body.find("tandem_inline_write_backoffs_total " + std::to_string(before)),
            std::string::npos)
      << m0.body;
  auto file = dir_ / "volumes" / (v["id"].get<std::string>() + ".img");
  auto vol = backend::FileVolume::open(file.string(), v["id"].get<std::string>(), 4096, pool_);
  ASSERT_TRUE(vol);
  vol->set_inline_write_policy({std::chrono::nanoseconds(0), std::chrono::milliseconds(1)});
  std::vector<std::byte> block(4096, std::byte{7});
  ASSERT_TRUE(vol->write_now(0, block).ok());
  EXPECT_EQ(backend::FileVolume::inline_write_stalls_total(), before + 1);
  auto m1 = call("GET", "/metrics");
  EXPECT_NE(m1.body.find("tandem_inline_write_backoffs_total " + std::to_string(before + 1)),
            std::string::npos)
      << m1.body;
}

TEST_F(RouterTest, AccessControlNeverReturnsSecrets) {
  ASSERT_EQ(call("POST", "/api/v1/volumes", R"({"name":"a","size":"8MiB"})").status, 201);
  auto open = body(call("GET", "/api/v1/volumes/a/access"));
  EXPECT_TRUE(open["initiators"].empty());
  EXPECT_EQ(open["chap"]["enabled"], false);
  auto set = call("PUT", "/api/v1/volumes/a/access",
                  R"({"initiators":["iqn.1994-05.com.example:h1"],
                      "chap":{"user":"u","secret":"0123456789ab"},
                      "mutual_chap":{"user":"t","secret":"ba9876543210"}})");
  ASSERT_EQ(set.status, 200) << set.body;
  EXPECT_EQ(set.body.find("0123456789ab"), std::string::npos);
  auto got = call("GET", "/api/v1/volumes/a/access");
  EXPECT_EQ(got.body.find("0123456789ab"), std::string::npos);
  EXPECT_EQ(got.body.find("ba9876543210"), std::string::npos);
  EXPECT_EQ(body(got)["chap"]["user"], "u");
  EXPECT_EQ(body(got)["mutual_chap"]["enabled"], true);
  EXPECT_EQ(body(got)["initiators"][0], "iqn.1994-05.com.example:h1");
  auto events = call("GET", "/api/v1/events?limit=1000");
  EXPECT_EQ(events.body.find("0123456789ab"), std::string::npos);
  EXPECT_NE(events.body.find("volume-access-changed"), std::string::npos);

  for (const char* bad : {R"({"initiators":["not a name"]})", R"({"initiators":"x"})",
                          R"({"chap":{"user":"u","secret":"short"}})",
                          R"({"chap":{"user":"","secret":"0123456789ab"}})",
                          R"({"chap":{"user":"u"}})",
                          R"({"mutual_chap":{"user":"t","secret":"ba9876543210"}})",
                          R"({"chap":{"user":"u","secret":"0123456789ab"},
                              "mutual_chap":{"user":"t","secret":"0123456789ab"}})"}) {
    EXPECT_EQ(call("PUT", "/api/v1/volumes/a/access", bad).status, 422) << bad;
  }
  EXPECT_EQ(call("PUT", "/api/v1/volumes/zz/access", "{}").status, 404);
  // Resetting to open clears everything.
  auto reset = body(call("PUT", "/api/v1/volumes/a/access", "{}"));
  EXPECT_TRUE(reset["initiators"].empty());
  EXPECT_EQ(reset["chap"]["enabled"], false);
}

// A CA that "signs" by wrapping the request, so the route logic is tested on its own
// (the real CA is tested with real certificates in backend_transport).
class FakeCa : public CertificateAuthority {
 public:
  core::Result<std::string, std::string> sign(const std::string& csr, const std::string&,
                                              const std::string&) override {
    if (csr.find("CSR") == std::string::npos) return core::fail(std::string("bad request"));
    return "CERT(" + csr + ")";
  }
  std::string ca_pem() const override { return "CA"; }
};

TEST_F(RouterTest, NodesJoinWithTheJoinTokenAndHeartbeatWithTheirOwn) {
  FakeCa ca;
  ClusterService cluster(*cat_, &ca, "n1", std::chrono::milliseconds(5000));
  router_ = std::make_unique<Router>(ApiContext{cat_.get(), volumes_.get(), &metrics_, &cluster,
                                                std::make_shared<TokenHash>(sha256_hex(kToken)), "n1", {}});
  ASSERT_TRUE(cat_->transact<void>([](db::Tx& tx) {
                      return tx.set_setting(ClusterService::kJoinTokenSetting,
                                            sha256_hex("join-secret"));
                    }).ok());
  std::string req = R"({"name":"n2","address":"127.0.0.2","api_url":"http://127.0.0.2:8080",
                        "repl_port":5703,"iscsi_port":3260,"csr":"CSR-n2"})";
  EXPECT_EQ(call("POST", "/api/v1/cluster/join", req, "").status, 401);
  EXPECT_EQ(call("POST", "/api/v1/cluster/join", req, kToken).status, 401)
      << "the admin token is not the join token";
  auto joined = call("POST", "/api/v1/cluster/join", req, "join-secret");
  ASSERT_EQ(joined.status, 200) << joined.body;
  json grant = body(joined);
  EXPECT_EQ(grant["certificate"], "CERT(CSR-n2)");
  EXPECT_EQ(grant["ca_certificate"], "CA");
  std::string node_token = grant["node_token"];
  EXPECT_GE(node_token.size(), 32u);

  auto nodes = body(call("GET", "/api/v1/nodes"));
  ASSERT_EQ(nodes["nodes"].size(), 2u);
  EXPECT_EQ(nodes["nodes"][1]["name"], "n2");
  EXPECT_EQ(nodes["nodes"][1]["state"], "online");

  // Same name from another node id: refused. The same node may join again.
  EXPECT_EQ(call("POST", "/api/v1/cluster/join", req, "join-secret").status, 409);
  json again = json::parse(req);
  again["node_id"] = grant["node_id"];
  EXPECT_EQ(call("POST", "/api/v1/cluster/join", again.dump(), "join-secret").status, 200);
  json bad_csr = json::parse(req);
  bad_csr["name"] = "n3";
  bad_csr["csr"] = "garbage";
  EXPECT_EQ(call("POST", "/api/v1/cluster/join", bad_csr.dump(), "join-secret").status, 422);

  std::string hb = R"({"capacity_bytes":100,"free_bytes":50})";
  EXPECT_EQ(call("POST", "/api/v1/nodes/n2/heartbeat", hb, node_token).status, 401)
      << "the first grant's token was replaced by the re-join";
  auto regrant = body(call("POST", "/api/v1/cluster/join", again.dump(), "join-secret"));
  std::string token2 = regrant["node_token"];
  EXPECT_EQ(call("POST", "/api/v1/nodes/n2/heartbeat", hb, "wrong").status, 401);
  EXPECT_EQ(call("POST", "/api/v1/nodes/n9/heartbeat", hb, token2).status, 404);
  ASSERT_EQ(call("POST", "/api/v1/nodes/n2/heartbeat", hb, token2).status, 200);
  EXPECT_EQ(body(call("GET", "/api/v1/nodes"))["nodes"][1]["free_bytes"], 50);
  // Events a node saw ride on its heartbeat into the cluster's log, attributed to it.
  auto with_event = call("POST", "/api/v1/nodes/n2/heartbeat",
                         R"({"events":[{"kind":"peer-refused","message":"from 10.9.9.9"}]})",
                         token2);
  ASSERT_EQ(with_event.status, 200) << with_event.body;
  EXPECT_NE(call("GET", "/api/v1/events?limit=1000").body.find("from 10.9.9.9"),
            std::string::npos);
  for (const char* bad : {R"({"events":"x"})", R"({"events":[{"kind":"Bad Kind","message":""}]})",
                          R"({"events":[{"kind":"","message":"m"}]})"}) {
    EXPECT_EQ(call("POST", "/api/v1/nodes/n2/heartbeat", bad, token2).status, 422) << bad;
  }

  // Silence past the timeout: offline, with an event; a heartbeat brings it back.
  EXPECT_EQ(cluster.check_liveness(db::now_ms() + 60000), 1);
  EXPECT_EQ(body(call("GET", "/api/v1/nodes"))["nodes"][1]["state"], "offline");
  EXPECT_EQ(body(call("GET", "/api/v1/nodes"))["nodes"][0]["state"], "online")
      << "the controller's own node is not judged by heartbeats";
  ASSERT_EQ(call("POST", "/api/v1/nodes/n2/heartbeat", hb, token2).status, 200);
  EXPECT_EQ(body(call("GET", "/api/v1/nodes"))["nodes"][1]["state"], "online");
  auto ev = call("GET", "/api/v1/events?limit=1000").body;
  for (const char* kind : {"node-joined", "node-rejoined", "node-offline", "node-online"}) {
    EXPECT_NE(ev.find(kind), std::string::npos) << kind;
  }
  EXPECT_EQ(ev.find(token2), std::string::npos) << "a token leaked into the event log";
}

// A controller that (re)starts after its nodes went unheard for longer than the timeout
// gives each a full timeout from its start before declaring it lost: a controller restart
// must not promote away from masters that are alive and merely could not heartbeat.
TEST_F(RouterTest, RestartedControllerWaitsAFullTimeoutBeforeDeclaringNodesLost) {
  ASSERT_TRUE(cat_->transact<void>([](db::Tx& tx) -> db::DbResult<void> {
                    db::NodeRow n;
                    n.id = "node-2-id";
                    n.name = "n2";
                    n.address = "127.0.0.2";
                    n.api_url = "http://127.0.0.2:8080";
                    n.last_heartbeat_ms = db::now_ms() - 60000;  // before the restart
                    return tx.upsert_node(n);
                  }).ok());
  int64_t started = db::now_ms();
  ClusterService cluster(*cat_, nullptr, "n1", std::chrono::milliseconds(5000));
  EXPECT_EQ(cluster.check_liveness(started + 4000), 0) << "within a timeout of the start";
  EXPECT_EQ(cluster.check_liveness(db::now_ms() + 5100), 1) << "a full timeout unheard";
}

// A master node's copy reports through the heartbeat and the copy-state route; the answer
// carries the cluster state when the node's revision is stale.
TEST_F(RouterTest, CopyReportsAndClusterStateRideOnHeartbeats) {
  FakeCa ca;
  ClusterService cluster(*cat_, &ca, "n1", std::chrono::milliseconds(5000));
  router_ = std::make_unique<Router>(ApiContext{cat_.get(), volumes_.get(), &metrics_, &cluster,
                                                std::make_shared<TokenHash>(sha256_hex(kToken)),
                                                "n1", {}});
  ASSERT_TRUE(cat_->transact<void>([](db::Tx& tx) {
                      return tx.set_setting(ClusterService::kJoinTokenSetting,
                                            sha256_hex("join-secret"));
                    }).ok());
  auto grant = body(call("POST", "/api/v1/cluster/join",
                         R"({"name":"n2","address":"127.0.0.2","api_url":"http://127.0.0.2:8080",
                             "csr":"CSR-n2"})",
                         "join-secret"));
  std::string tok = grant["node_token"];
  add_node("node-3", "n3");
  auto created = call("POST", "/api/v1/volumes",
                      R"({"name":"v","size":"1GiB","replicas":1,"node":"n2"})");
  ASSERT_EQ(created.status, 201) << created.body;
  json vol = body(created);
  std::string vid = vol["id"];
  uint32_t replica_number = vol["copies"][1]["number"];

  // First heartbeat: no revision known, so the whole state comes back.
  auto hb = call("POST", "/api/v1/nodes/n2/heartbeat", R"({"known_revision":-1})", tok);
  ASSERT_EQ(hb.status, 200) << hb.body;
  json ans = body(hb);
  ASSERT_TRUE(ans.contains("state"));
  EXPECT_EQ(ans["state"]["revision"], ans["revision"]);
  EXPECT_EQ(ans["state"]["volumes"][0]["id"], vid);
  int64_t rev = ans["revision"];
  ans = body(call("POST", "/api/v1/nodes/n2/heartbeat",
                  json{{"known_revision", rev}}.dump(), tok));
  EXPECT_FALSE(ans.contains("state")) << "up to date: no snapshot";

  // The master (n2) reports its replica out of sync through the heartbeat.
  json rep = {{"known_revision", rev},
              {"copies",
               {{{"volume_id", vid},
                 {"number", replica_number},
                 {"state", "out-of-sync"},
                 {"applied_seq", 5},
                 {"generation", 1},
                 {"behind_bytes", 4096}}}}};
  ans = body(call("POST", "/api/v1/nodes/n2/heartbeat", rep.dump(), tok));
  EXPECT_TRUE(ans.contains("state")) << "the report changed the state";
  json v = body(call("GET", "/api/v1/volumes/v"));
  EXPECT_EQ(v["state"], "degraded");
  EXPECT_EQ(v["copies"][1]["state"], "out-of-sync");
  EXPECT_EQ(v["copies"][1]["behind_bytes"], 4096);

  // The copy-state route: committed before 200.
  json cs = {{"node", "n2"},
             {"copies",
              {{{"volume_id", vid},
                {"number", replica_number},
                {"state", "in-sync"},
                {"applied_seq", 9},
                {"generation", 1}}}}};
  auto r = call("POST", "/api/v1/cluster/copy-state", cs.dump(), tok);
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(body(r)["applied"], 1);
  EXPECT_EQ(body(call("GET", "/api/v1/volumes/v"))["state"], "healthy");
  // A report made at another generation than the volume's (a deposed master's late one) is
  // refused with 409 and changes nothing.
  json stale = cs;
  stale["copies"][0]["state"] = "out-of-sync";
  stale["copies"][0]["generation"] = 2;
  auto st = call("POST", "/api/v1/cluster/copy-state", stale.dump(), tok);
  EXPECT_EQ(st.status, 409) << st.body;
  EXPECT_EQ(body(call("GET", "/api/v1/volumes/v"))["state"], "healthy");
  stale["copies"][0].erase("generation");
  EXPECT_EQ(call("POST", "/api/v1/cluster/copy-state", stale.dump(), tok).status, 422);
  EXPECT_EQ(call("POST", "/api/v1/cluster/copy-state", cs.dump(), "wrong").status, 401);
  EXPECT_EQ(call("POST", "/api/v1/cluster/copy-state", cs.dump(), kToken).status, 401)
      << "the admin token is not a node token";
  // A node that is not the volume's master (a deposed one, say) is refused, so it never
  // takes its out-of-sync report as recorded; nothing changes.
  auto g4 = body(call("POST", "/api/v1/cluster/join",
                      R"({"name":"n4","address":"127.0.0.4","api_url":"http://127.0.0.4:8080",
                          "csr":"CSR-n4"})",
                      "join-secret"));
  json cs4 = cs;
  cs4["node"] = "n4";
  cs4["copies"][0]["state"] = "out-of-sync";
  auto refused = call("POST", "/api/v1/cluster/copy-state", cs4.dump(), g4["node_token"]);
  EXPECT_EQ(refused.status, 409) << refused.body;
  EXPECT_EQ(body(call("GET", "/api/v1/volumes/v"))["state"], "healthy");
  for (const char* bad :
       {"[]", "{}", R"({"node":"n2"})", R"({"node":"n2","copies":{}})", R"({"node":5,"copies":[]})",
        R"({"node":"n2","copies":[{"volume_id":"x","number":0,"state":"in-sync"}]})",
        R"({"node":"n2","copies":[{"volume_id":"x","number":1,"state":"nope"}]})"}) {
    auto b = call("POST", "/api/v1/cluster/copy-state", bad, tok);
    EXPECT_TRUE(b.status == 400 || b.status == 422) << bad << " -> " << b.status;
  }
  for (const char* bad : {R"({"copies":"x"})", R"({"known_revision":"1"})",
                          R"({"known_revision":-7})", R"({"copies":[{"number":2}]})",
                          R"({"boot_id":""})", R"({"boot_id":5})", R"({"boot_id":"a/b"})"}) {
    EXPECT_EQ(call("POST", "/api/v1/nodes/n2/heartbeat", bad, tok).status, 422) << bad;
  }
  // A boot id rides on heartbeats: a changed one takes the node's replicas out of sync.
  EXPECT_EQ(call("POST", "/api/v1/nodes/n2/heartbeat", R"({"boot_id":"b-1"})", tok).status, 200);
  EXPECT_EQ(call("POST", "/api/v1/nodes/n2/heartbeat", R"({"boot_id":"b-2"})", tok).status, 200);
  EXPECT_EQ(body(call("GET", "/api/v1/volumes/v"))["generation"], 2)
      << "n2 mastered v and rebooted: v went to its intact replica";
}

TEST_F(RouterTest, NonControllerForwardsTheApiButServesHealthLocally) {
  std::vector<std::string> seen;
  ApiContext ctx{cat_.get(), volumes_.get(), &metrics_, nullptr, std::make_shared<TokenHash>(sha256_hex(kToken)), "n2", {}};
  ctx.forward = [&](const HttpRequest& r) {
    seen.push_back(r.method + " " + r.path);
    HttpResponse resp;
    resp.status = 202;
    resp.body = "{}";
    return resp;
  };
  router_ = std::make_unique<Router>(ctx);
  EXPECT_EQ(call("GET", "/api/v1/volumes", "", "").status, 202);
  EXPECT_EQ(call("POST", "/api/v1/volumes", "{}").status, 202);
  EXPECT_EQ(call("GET", "/healthz", "", "").status, 200);
  EXPECT_EQ(call("GET", "/metrics", "", "").status, 401) << "metrics stay local, with auth";
  EXPECT_EQ(seen, (std::vector<std::string>{"GET /api/v1/volumes", "POST /api/v1/volumes"}));
}

// Only requests answered without I/O may run on a network thread; whole-volume reads and
// waits on other nodes go to the slow lane, apart from catalogue work (heartbeats).
TEST_F(RouterTest, LanesKeepBlockingWorkOffTheNetworkThreads) {
  auto lane = [&](const std::string& method, const std::string& target) {
    HttpRequest req;
    req.method = method;
    EXPECT_TRUE(split_target(target, &req.path, &req.query));
    return router_->lane(req);
  };
  EXPECT_EQ(lane("GET", "/healthz"), Lane::kInline);
  EXPECT_EQ(lane("GET", "/"), Lane::kInline) << "console assets";
  EXPECT_EQ(lane("GET", "/api/v1/openapi.json"), Lane::kInline);
  EXPECT_EQ(lane("GET", "/api/v1/nope"), Lane::kInline) << "401/404 need no I/O";
  EXPECT_EQ(lane("PUT", "/healthz"), Lane::kInline) << "405";
  EXPECT_EQ(lane("POST", "/api/v1/volumes/v/verify"), Lane::kSlow);
  EXPECT_EQ(lane("GET", "/api/v1/local/copies/x/checksums"), Lane::kSlow);
  for (const auto& target : {"/api/v1/volumes", "/api/v1/volumes/v", "/metrics",
                             "/api/v1/events", "/api/v1/nodes"}) {
    EXPECT_EQ(lane("GET", target), Lane::kControl) << target;
  }
  EXPECT_EQ(lane("POST", "/api/v1/nodes/n2/heartbeat"), Lane::kControl);
  EXPECT_EQ(lane("POST", "/api/v1/cluster/copy-state"), Lane::kControl);
  // Every route that may block is off the network threads.
  for (const auto& r : Router::routes()) {
    bool cheap = r.pattern == "/healthz" || r.pattern == "/api/v1/openapi.json";
    EXPECT_EQ(r.lane == Lane::kInline, cheap) << r.method << " " << r.pattern;
  }

  // A node that is not the controller passes /api/v1 calls on: a wait on another node, on a
  // pool apart from the slow lane its own checksums (asked by the controller's verify) need.
  ApiContext ctx{cat_.get(), volumes_.get(), &metrics_, nullptr,
                 std::make_shared<TokenHash>(sha256_hex(kToken)), "n2", {}};
  ctx.forward = [](const HttpRequest&) { return HttpResponse{}; };
  router_ = std::make_unique<Router>(ctx);
  EXPECT_EQ(lane("GET", "/api/v1/volumes"), Lane::kForward);
  EXPECT_EQ(lane("POST", "/api/v1/volumes/v/verify"), Lane::kForward);
  EXPECT_EQ(lane("GET", "/api/v1/openapi.json"), Lane::kForward);
  EXPECT_EQ(lane("GET", "/api/v1/local/copies/x/checksums"), Lane::kSlow);
  EXPECT_EQ(lane("GET", "/healthz"), Lane::kInline);
  EXPECT_EQ(lane("GET", "/metrics"), Lane::kControl);
}

// The OpenAPI document lists exactly the routes the router serves.
TEST_F(RouterTest, OpenApiMatchesEveryRoute) {
  auto r = call("GET", "/api/v1/openapi.json");
  ASSERT_EQ(r.status, 200);
  json doc = body(r);
  EXPECT_EQ(doc["openapi"].get<std::string>().substr(0, 2), "3.");
  std::set<std::string> documented, served;
  for (auto& [path, ops] : doc["paths"].items()) {
    for (auto& [method, op] : ops.items()) {
      std::string m = method;
      for (auto& ch : m) ch = static_cast<char>(std::toupper(ch));
      documented.insert(m + " " + path);
      EXPECT_TRUE(op.contains("responses")) << m << " " << path;
    }
  }
  for (const auto& route : Router::routes()) served.insert(route.method + " " + route.pattern);
  EXPECT_EQ(documented, served);
}

}  // namespace
}  // namespace tandem::mgmt
