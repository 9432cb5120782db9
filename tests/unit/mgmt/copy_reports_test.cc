#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>

#include "mgmt/cluster_service.h"

namespace tandem::mgmt {
namespace {

using nlohmann::json;

class CopyReportsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("tandem-reports-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    auto c = db::Catalogue::open((dir_ / "c.db").string());
    ASSERT_TRUE(c.ok());
    cat_ = std::move(*c);
    auto r = cat_->transact<void>([](db::Tx& tx) -> db::DbResult<void> {
      for (const char* n : {"a", "b", "c"}) {
        db::NodeRow row{std::string("id-") + n, n, "127.0.0.1", "http://x", "online"};
        if (auto x = tx.upsert_node(row); !x) return x;
      }
      db::VolumeRow v;
      v.id = "vol-1";
      v.name = "db1";
      v.master_node = "id-a";
      v.labels["tandem/replicas"] = "2";
      if (auto x = tx.insert_volume(v); !x) return x;
      if (auto x = tx.insert_copy({"c1", "vol-1", "id-a", "master", "in-sync", 0, 1}); !x) return x;
      if (auto x = tx.insert_copy({"c2", "vol-1", "id-b", "replica", "in-sync", 0, 2}); !x)
        return x;
      return tx.insert_copy({"c3", "vol-1", "id-c", "replica", "in-sync", 0, 3});
    });
    ASSERT_TRUE(r.ok()) << r.error().message;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  // Reports made at generation 1 (the volume's) unless they name one.
  CopyReportOutcome apply(const std::string& node, std::vector<CopyReport> reps) {
    for (auto& r : reps) r.generation = r.generation ? r.generation : 1;
    auto r = cat_->transact<CopyReportOutcome>(
        [&](db::Tx& tx) { return apply_copy_reports(tx, node, reps); });
    EXPECT_TRUE(r.ok());
    return r.ok() ? *r : CopyReportOutcome{};
  }
  std::string volume_state() {
    auto v = cat_->transact<std::optional<db::VolumeRow>>(
        [](db::Tx& tx) { return tx.volume_by_id("vol-1"); });
    return (*v)->state;
  }
  std::vector<std::string> event_kinds() {
    auto e =
        cat_->transact<std::vector<db::EventRow>>([](db::Tx& tx) { return tx.events(0, 100); });
    std::vector<std::string> out;
    for (const auto& ev : *e) out.push_back(ev.kind);
    return out;
  }
  db::CopyRow copy(uint32_t number) {
    auto c =
        cat_->transact<std::vector<db::CopyRow>>([](db::Tx& tx) { return tx.copies_of("vol-1"); });
    return (*c)[number - 1];
  }

  std::filesystem::path dir_;
  std::unique_ptr<db::Catalogue> cat_;
};

TEST_F(CopyReportsTest, OutOfSyncDegradesAndInSyncHeals) {
  auto o = apply("id-a", {{"vol-1", 2, "out-of-sync", 10, 0, 0, 4096}});
  EXPECT_EQ(o.applied, 1);
  EXPECT_EQ(volume_state(), "degraded");
  EXPECT_EQ(copy(2).state, "out-of-sync");
  EXPECT_EQ(copy(2).applied_seq, 10u);
  EXPECT_EQ(copy(2).behind_bytes, 4096u);
  EXPECT_EQ(event_kinds(), (std::vector<std::string>{"copy-out-of-sync", "volume-degraded"}));

  apply("id-a", {{"vol-1", 2, "syncing", 11, 100, 1000, 900}});
  EXPECT_EQ(volume_state(), "degraded");
  EXPECT_EQ(copy(2).sync_done_bytes, 100u);
  EXPECT_EQ(copy(2).sync_total_bytes, 1000u);
  // Progress without a state change writes no event.
  apply("id-a", {{"vol-1", 2, "syncing", 12, 500, 1000, 500}});
  EXPECT_EQ(event_kinds().size(), 3u);

  apply("id-a", {{"vol-1", 2, "in-sync", 13, 1000, 1000, 0}, {"vol-1", 1, "in-sync", 13}});
  EXPECT_EQ(volume_state(), "healthy");
  EXPECT_EQ(copy(1).applied_seq, 13u);
  EXPECT_EQ(event_kinds().back(), "volume-healthy");
}

TEST_F(CopyReportsTest, OnlyTheMastersNodeIsHeard) {
  auto o = apply("id-b", {{"vol-1", 3, "out-of-sync", 1}});
  EXPECT_EQ(o.applied, 0);
  EXPECT_EQ(o.ignored, 1);
  EXPECT_EQ(o.not_master, 1);  // the copy-state route answers 409: nothing was recorded
  EXPECT_EQ(copy(3).state, "in-sync");
  EXPECT_EQ(volume_state(), "healthy");
  EXPECT_TRUE(event_kinds().empty());
}

TEST_F(CopyReportsTest, UnknownVolumeCopyOrStateIsIgnored) {
  auto o = apply("id-a", {{"nope", 2, "in-sync"}, {"vol-1", 9, "in-sync"}, {"vol-1", 2, "weird"}});
  EXPECT_EQ(o.applied, 0);
  EXPECT_EQ(o.ignored, 3);
  EXPECT_EQ(o.not_master, 0);
}

TEST_F(CopyReportsTest, OtherVolumeStatesBelongToTheDataPlane) {
  auto r = cat_->transact<void>([](db::Tx& tx) -> db::DbResult<void> {
    auto v = tx.volume_by_id("vol-1");
    db::VolumeRow row = **v;
    row.state = "read-only";
    return tx.update_volume(row);
  });
  ASSERT_TRUE(r.ok());
  apply("id-a", {{"vol-1", 2, "out-of-sync"}});
  EXPECT_EQ(volume_state(), "read-only");
}

// A report made by the master at an older generation (its late report, say, after it was
// deposed and then made master again) changes nothing, and counts as not the master's.
TEST_F(CopyReportsTest, ReportsFromAnotherGenerationAreRefused) {
  auto r = cat_->transact<void>([](db::Tx& tx) -> db::DbResult<void> {
    auto v = tx.volume_by_id("vol-1");
    db::VolumeRow row = **v;
    row.generation = 3;
    return tx.update_volume(row);
  });
  ASSERT_TRUE(r.ok());
  CopyReport late{"vol-1", 2, "in-sync", 5};
  late.generation = 2;
  auto o = apply("id-a", {late});
  EXPECT_EQ(o.applied, 0);
  EXPECT_EQ(o.not_master, 1);
  CopyReport future = late;
  future.generation = 4;
  EXPECT_EQ(apply("id-a", {future}).not_master, 1);
  CopyReport now = late;
  now.state = "out-of-sync";
  now.generation = 3;
  late.state = "out-of-sync";
  EXPECT_EQ(apply("id-a", {late}).applied, 0);
  EXPECT_EQ(copy(2).state, "in-sync") << "the stale report changed nothing";
  EXPECT_EQ(apply("id-a", {now}).applied, 1);
  EXPECT_EQ(copy(2).state, "out-of-sync");
}

// A heartbeat made before the master saw a copy drop out of sync can arrive after the
// copy-state report that recorded it (sim_cluster seed 115416): its in-sync is ignored.
TEST_F(CopyReportsTest, AStaleInSyncReportNeverUndoesANewerOutOfSync) {
  CopyReport out{"vol-1", 2, "out-of-sync", 5};
  out.report_seq = 100;
  EXPECT_EQ(apply("id-a", {out}).applied, 1);
  CopyReport stale{"vol-1", 2, "in-sync", 5};
  stale.report_seq = 99;
  auto o = apply("id-a", {stale});
  EXPECT_EQ(o.applied, 0);
  EXPECT_EQ(o.ignored, 1);
  EXPECT_EQ(o.not_master, 0);
  EXPECT_EQ(copy(2).state, "out-of-sync");
  CopyReport older_syncing{"vol-1", 2, "syncing", 5};
  older_syncing.report_seq = 98;  // never harmful: applied (the row keeps the newest sequence)
  EXPECT_EQ(apply("id-a", {older_syncing}).applied, 1);
  EXPECT_EQ(copy(2).report_seq, 100u);
  CopyReport fresh = stale;
  fresh.report_seq = 101;
  EXPECT_EQ(apply("id-a", {fresh}).applied, 1);
  EXPECT_EQ(copy(2).state, "in-sync");
}

// A node's boot id changing (a reboot) takes its replicas out of sync at once, marked
// rebooted; a master report clears the mark; the same boot id again (a process restart) and a
// first boot id change nothing.
TEST_F(CopyReportsTest, ARebootedNodesReplicaGoesOutOfSync) {
  auto boot = [&](const char* node, const char* id) {
    auto r = cat_->transact<bool>([&](db::Tx& tx) { return record_boot(tx, node, node, id); });
    EXPECT_TRUE(r.ok());
    return r.ok() && *r;
  };
  EXPECT_FALSE(boot("id-b", "boot-1")) << "the first boot id heard is no reboot";
  EXPECT_FALSE(boot("id-b", "boot-1")) << "a process restart keeps the boot id";
  EXPECT_FALSE(boot("id-b", "")) << "no boot id: nothing known";
  EXPECT_EQ(copy(2).state, "in-sync");
  EXPECT_TRUE(boot("id-b", "boot-2"));
  EXPECT_EQ(copy(2).state, "out-of-sync");
  EXPECT_TRUE(copy(2).rebooted);
  EXPECT_EQ(volume_state(), "degraded");
  auto kinds = event_kinds();
  EXPECT_EQ(kinds,
            (std::vector<std::string>{"node-rebooted", "copy-out-of-sync", "volume-degraded"}));
  CopyReport before{"vol-1", 2, "in-sync", 5};  // made before the reboot, arriving after
  before.report_seq = static_cast<uint64_t>(db::now_ms() - 5000) * 1000;
  EXPECT_EQ(apply("id-a", {before}).applied, 0);
  EXPECT_EQ(copy(2).state, "out-of-sync");
  apply("id-a", {{"vol-1", 2, "syncing", 5, 0, 100, 100}});
  EXPECT_FALSE(copy(2).rebooted) << "its master went on without it";
}

// The master's node rebooted: its volume goes to an intact in-sync replica; with none, the
// master stays (nothing better exists) with an event.
TEST_F(CopyReportsTest, ARebootedMasterGivesWayToAnIntactReplica) {
  auto boot = [&](const char* id) {
    return cat_->transact<bool>([&](db::Tx& tx) { return record_boot(tx, "id-a", "a", id); });
  };
  ASSERT_TRUE(boot("one").ok());
  ASSERT_TRUE(*boot("two"));
  auto v = cat_->transact<std::optional<db::VolumeRow>>(
      [](db::Tx& tx) { return tx.volume_by_id("vol-1"); });
  EXPECT_EQ((*v)->generation, 2u);
  EXPECT_NE((*v)->master_node, "id-a");
  EXPECT_EQ(copy(1).role, "replica");
  EXPECT_EQ(copy(1).state, "out-of-sync");
  EXPECT_EQ(event_kinds()[1], "volume-promoted");

  // Now every other copy is out of sync: the rebooted master is all there is.
  auto r = cat_->transact<void>([](db::Tx& tx) -> db::DbResult<void> {
    auto copies = tx.copies_of("vol-1");
    if (!copies) return core::fail(copies.error());
    for (auto c : *copies) {
      c.role = c.number == 1 ? "master" : "replica";
      c.state = c.number == 1 ? "in-sync" : "out-of-sync";
      if (auto u = tx.update_copy(c); !u) return u;
    }
    auto vol = tx.volume_by_id("vol-1");
    db::VolumeRow row = **vol;
    row.master_node = "id-a";
    return tx.update_volume(row);
  });
  ASSERT_TRUE(r.ok());
  ASSERT_TRUE(*boot("three"));
  v = cat_->transact<std::optional<db::VolumeRow>>(
      [](db::Tx& tx) { return tx.volume_by_id("vol-1"); });
  EXPECT_EQ((*v)->master_node, "id-a");
  EXPECT_EQ((*v)->generation, 2u);
  EXPECT_EQ(event_kinds().back(), "volume-unflushed-writes-lost");
}

// The liveness check: the master's node (a) goes silent; replica b's node rebooted, so the
// volume waits for an intact copy instead of promoting b, and is looked at again at every
// check: once c (intact) is heard from, c is promoted.
TEST_F(CopyReportsTest, LostMasterIsNeverReplacedByARebootedReplica) {
  const int64_t now = db::now_ms();
  auto heard = [&](const char* id, int64_t at) {
    return cat_->transact<void>([&](db::Tx& tx) -> db::DbResult<void> {
      auto nodes = tx.list_nodes();
      if (!nodes) return core::fail(nodes.error());
      for (auto n : *nodes) {
        if (n.id != id) continue;
        n.last_heartbeat_ms = at;
        n.state = "online";
        return tx.upsert_node(n);
      }
      return {};
    });
  };
  ASSERT_TRUE(
      cat_->transact<bool>([](db::Tx& tx) { return record_boot(tx, "id-b", "b", "1"); }).ok());
  ASSERT_TRUE(*cat_->transact<bool>([](db::Tx& tx) { return record_boot(tx, "id-b", "b", "2"); }));
  ClusterService cluster(*cat_, nullptr, "ctl", std::chrono::milliseconds(3000));
  ASSERT_TRUE(heard("id-a", now - 10000).ok());
  ASSERT_TRUE(heard("id-b", now + 9000).ok());
  ASSERT_TRUE(heard("id-c", now - 10000).ok());  // silent too: it may have died with a
  cluster.check_liveness(now + 10000);
  auto master = [&] {
    auto v = cat_->transact<std::optional<db::VolumeRow>>(
        [](db::Tx& tx) { return tx.volume_by_id("vol-1"); });
    return (*v)->master_node;
  };
  EXPECT_EQ(master(), "id-a") << "b rebooted and c is away: wait";
  EXPECT_EQ(copy(2).state, "out-of-sync");
  ASSERT_TRUE(heard("id-c", now + 9500).ok());
  cluster.check_liveness(now + 10000);
  EXPECT_EQ(master(), "id-c") << "the intact copy is back";
  EXPECT_EQ(copy(3).role, "master");
}

TEST(ParseCopyReports, RoundTripAndHostileInput) {
  std::vector<CopyReport> reps{{"vol-1", 2, "syncing", 1, 2, 3, 4}};
  reps[0].generation = 7;
  auto back = parse_copy_reports(copy_reports_json(reps));
  ASSERT_TRUE(back.ok());
  ASSERT_EQ(back->size(), 1u);
  EXPECT_EQ((*back)[0].volume_id, "vol-1");
  EXPECT_EQ((*back)[0].behind_bytes, 4u);
  EXPECT_EQ((*back)[0].generation, 7u);

  json good = copy_reports_json(reps)[0];
  std::vector<json> bad{json::object(), "x", 5, json::array({1}), json::array({json()})};
  auto with = [&](const char* k, json v) {
    json e = good;
    e[k] = std::move(v);
    return json::array({e});
  };
  bad.push_back(with("volume_id", 5));
  bad.push_back(with("volume_id", ""));
  bad.push_back(with("volume_id", std::string(65, 'v')));
  bad.push_back(with("number", 0));
  bad.push_back(with("number", -1));
  bad.push_back(with("number", 1ull << 33));
  bad.push_back(with("number", "2"));
  bad.push_back(with("state", "bogus"));
  bad.push_back(with("state", 1));
  bad.push_back(with("applied_seq", -1));
  bad.push_back(with("applied_seq", 1.5));
  bad.push_back(with("behind_bytes", "1"));
  bad.push_back(with("sync_done_bytes", UINT64_MAX));
  bad.push_back(with("generation", 0));
  bad.push_back(with("generation", -2));
  bad.push_back(with("generation", "3"));
  bad.push_back(with("generation", UINT64_MAX));
  for (const char* k : {"number", "generation"}) {
    json e = good;
    e.erase(k);
    bad.push_back(json::array({e}));
  }
  bad.push_back(json(std::vector<json>(kMaxCopyReports + 1, good)));
  for (size_t i = 0; i < bad.size(); ++i) {
    auto r = parse_copy_reports(bad[i]);
    ASSERT_FALSE(r.ok()) << "case " << i;
    EXPECT_EQ(r.error().status, 422) << "case " << i;
  }
  EXPECT_TRUE(parse_copy_reports(json(std::vector<json>(kMaxCopyReports, good))).ok());
}

}  // namespace
}  // namespace tandem::mgmt
