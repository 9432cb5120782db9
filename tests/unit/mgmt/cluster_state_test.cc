#include "mgmt/cluster_state.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>

namespace tandem::mgmt {
namespace {

using nlohmann::json;

class ClusterStateTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("tandem-state-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    controller_ = open("controller.db");
    node_ = open("node.db");
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::unique_ptr<db::Catalogue> open(const std::string& name) {
    auto c = db::Catalogue::open((dir_ / name).string());
    EXPECT_TRUE(c.ok());
    return c.ok() ? std::move(*c) : nullptr;
  }

  // Two nodes, one volume with a master and a replica and CHAP access.
  void fill_controller() {
    auto r = controller_->transact<void>([](db::Tx& tx) -> db::DbResult<void> {
      db::NodeRow a{"id-a", "a", "127.0.0.1", "http://127.0.0.1:8080", "online", 100, 50};
      db::NodeRow b{"id-b", "b", "127.0.0.2", "http://127.0.0.2:8080", "offline", 200, 80};
      b.repl_port = 5704;
      if (auto x = tx.upsert_node(a); !x) return x;
      if (auto x = tx.upsert_node(b); !x) return x;
      db::VolumeRow v;
      v.id = "vol-1";
      v.name = "db1";
      v.size_bytes = 1 << 20;
      v.labels = {{"tandem/replicas", "1"}};
      v.master_node = "id-a";
      v.generation = 3;
      if (auto x = tx.insert_volume(v); !x) return x;
      db::CopyRow m{"c-1", "vol-1", "id-a", "master", "in-sync", 9, 1};
      db::CopyRow r{"c-2", "vol-1", "id-b", "replica", "syncing", 4, 2, 10, 20, 30};
      if (auto x = tx.insert_copy(m); !x) return x;
      if (auto x = tx.insert_copy(r); !x) return x;
      db::AccessRow acc{"vol-1", {"iqn.2000-01.x:y"}, "u", "secret-secret", "m", "mutual-secret"};
      if (auto x = tx.set_access(acc); !x) return x;
      return tx.append_event({0, 0, "db1", "a", "volume-created", "x"}).ok()
                 ? db::DbResult<void>{}
                 : core::fail(db::DbError{db::DbErrc::kIo, "event"});
    });
    ASSERT_TRUE(r.ok()) << r.error().message;
  }

  json snapshot(db::Catalogue& c) {
    auto s = c.transact<json>([](db::Tx& tx) { return cluster_snapshot(tx); });
    EXPECT_TRUE(s.ok());
    return s.ok() ? *s : json();
  }

  db::DbResult<void> apply(const json& snap) {
    return node_->transact<void>([&](db::Tx& tx) { return apply_cluster_snapshot(tx, snap); });
  }

  std::filesystem::path dir_;
  std::unique_ptr<db::Catalogue> controller_;
  std::unique_ptr<db::Catalogue> node_;
};

TEST_F(ClusterStateTest, SnapshotHasEveryRowAndTheRevision) {
  fill_controller();
  json s = snapshot(*controller_);
  EXPECT_GT(s["revision"].get<int64_t>(), 0);
  ASSERT_EQ(s["nodes"].size(), 2u);
  ASSERT_EQ(s["volumes"].size(), 1u);
  ASSERT_EQ(s["copies"].size(), 2u);
  ASSERT_EQ(s["access"].size(), 1u);
  EXPECT_EQ(s["nodes"][1]["repl_port"], 5704);
  EXPECT_EQ(s["volumes"][0]["generation"], 3);
  EXPECT_EQ(s["copies"][1]["number"], 2);
  EXPECT_EQ(s["copies"][1]["behind_bytes"], 30);
  EXPECT_EQ(s["access"][0]["chap_secret"], "secret-secret");
}

TEST_F(ClusterStateTest, RoundTripMirrorsTheControllerAndKeepsLocalEvents) {
  fill_controller();
  auto local = node_->transact<void>([](db::Tx& tx) -> db::DbResult<void> {
    // Rows the controller no longer has, and local-only data that must stay.
    if (auto x = tx.upsert_node({"id-gone", "gone", "127.0.0.9", "http://x", "online"}); !x) {
      return x;
    }
    db::VolumeRow v;
    v.id = "vol-old";
    v.name = "old";
    v.master_node = "id-gone";
    if (auto x = tx.insert_volume(v); !x) return x;
    if (auto x = tx.insert_copy({"c-old", "vol-old", "id-gone", "master", "in-sync", 0}); !x) {
      return x;
    }
    if (auto x = tx.set_setting("mine", "1"); !x) return x;
    auto e = tx.append_event({0, 0, "", "b", "local", "kept"});
    if (!e) return core::fail(e.error());
    return {};
  });
  ASSERT_TRUE(local.ok()) << local.error().message;
  json s = snapshot(*controller_);
  auto r = apply(s);
  ASSERT_TRUE(r.ok()) << r.error().message;
  json mirrored = snapshot(*node_);
  // The local catalogue's revision is its own event log; compare the rows.
  for (const char* k : {"nodes", "volumes", "copies", "access"}) {
    EXPECT_EQ(mirrored[k], s[k]) << k;
  }
  auto check = node_->transact<int64_t>([](db::Tx& tx) -> db::DbResult<int64_t> {
    auto mine = tx.setting("mine");
    EXPECT_TRUE(mine.ok() && mine->has_value());
    auto evs = tx.events(0, 10);
    EXPECT_TRUE(evs.ok() && evs->size() == 1u);
    return applied_revision(tx);
  });
  ASSERT_TRUE(check.ok());
  EXPECT_EQ(*check, s["revision"].get<int64_t>());

  // A second apply after the controller dropped the replica and renamed nothing: the row goes.
  ASSERT_TRUE(controller_->transact<void>([](db::Tx& tx) { return tx.delete_copy("c-2"); }).ok());
  json s2 = snapshot(*controller_);
  ASSERT_TRUE(apply(s2).ok());
  EXPECT_EQ(snapshot(*node_)["copies"], s2["copies"]);
}

TEST_F(ClusterStateTest, RecreatedVolumeNameAndMovedCopyApply) {
  fill_controller();
  ASSERT_TRUE(apply(snapshot(*controller_)).ok());
  // The controller deletes db1 and creates a new db1 (new id) with the master on b.
  auto r = controller_->transact<void>([](db::Tx& tx) -> db::DbResult<void> {
    if (auto x = tx.delete_volume("vol-1"); !x) return x;
    db::VolumeRow v;
    v.id = "vol-2";
    v.name = "db1";
    v.master_node = "id-b";
    if (auto x = tx.insert_volume(v); !x) return x;
    return tx.insert_copy({"c-9", "vol-2", "id-b", "master", "in-sync", 0});
  });
  ASSERT_TRUE(r.ok());
  json s = snapshot(*controller_);
  auto a = apply(s);
  ASSERT_TRUE(a.ok()) << a.error().message;
  EXPECT_EQ(snapshot(*node_)["volumes"], s["volumes"]);
  EXPECT_EQ(snapshot(*node_)["access"], json::array());
}

TEST_F(ClusterStateTest, HostileSnapshotsAreRefusedAndApplyNothing) {
  fill_controller();
  json good = snapshot(*controller_);
  ASSERT_TRUE(apply(good).ok());
  json before = snapshot(*node_);

  std::vector<json> bad;
  bad.push_back(json());
  bad.push_back(json::array());
  bad.push_back("text");
  {
    json j = good;
    j.erase("revision");
    bad.push_back(j);
  }
  {
    json j = good;
    j["revision"] = -5;
    bad.push_back(j);
  }
  {
    json j = good;
    j["revision"] = "7";
    bad.push_back(j);
  }
  for (const char* k : {"nodes", "volumes", "copies", "access"}) {
    json j = good;
    j[k] = json::object();
    bad.push_back(j);
    json m = good;
    m.erase(k);
    bad.push_back(m);
    json e = good;
    e[k].push_back(42);
    bad.push_back(e);
  }
  {
    json j = good;
    j["nodes"] = json::array();  // the copies now name unknown nodes
    bad.push_back(j);
  }
  {
    json j = good;
    j["volumes"][0]["size_bytes"] = -1;
    bad.push_back(j);
  }
  {
    json j = good;
    j["volumes"][0]["labels"] = {{"a", 1}};
    bad.push_back(j);
  }
  {
    json j = good;
    j["nodes"][0]["iscsi_port"] = 70000;
    bad.push_back(j);
  }
  {
    json j = good;
    j["nodes"][0]["name"] = std::string(5000, 'x');
    bad.push_back(j);
  }
  {
    json j = good;
    j["copies"][0]["number"] = 1ull << 40;
    bad.push_back(j);
  }
  {
    json j = good;
    j["copies"].push_back(j["copies"][0]);  // duplicate id
    bad.push_back(j);
  }
  {
    json j = good;
    j["copies"][1]["number"] = 1;  // two copies with number 1: the database refuses
    bad.push_back(j);
  }
  {
    json j = good;
    j["access"][0]["initiators"] = "iqn.x";
    bad.push_back(j);
  }
  {
    json j = good;
    j["access"][0]["volume_id"] = "nope";
    bad.push_back(j);
  }
  {
    json j = good;
    j["nodes"] = json::array();
    for (size_t i = 0; i <= kMaxSnapshotNodes; ++i) j["nodes"].push_back(good["nodes"][0]);
    bad.push_back(j);
  }
  for (size_t i = 0; i < bad.size(); ++i) {
    auto r = apply(bad[i]);
    EXPECT_FALSE(r.ok()) << "case " << i << ": " << bad[i].dump().substr(0, 200);
    EXPECT_EQ(snapshot(*node_)["copies"], before["copies"]) << "case " << i;
    EXPECT_EQ(snapshot(*node_)["nodes"], before["nodes"]) << "case " << i;
  }
}

}  // namespace
}  // namespace tandem::mgmt
