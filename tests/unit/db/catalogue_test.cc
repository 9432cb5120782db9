#include "db/catalogue.h"

#include <gtest/gtest.h>
#include <sqlite3.h>

#include <unistd.h>

#include <filesystem>
#include <fstream>

namespace tandem::db {
namespace {

class CatalogueTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("tandem-db-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    path_ = (dir_ / "catalogue.db").string();
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::unique_ptr<Catalogue> open() {
    auto c = Catalogue::open(path_);
    EXPECT_TRUE(c.ok()) << (c.ok() ? "" : c.error().message);
    return c.ok() ? std::move(*c) : nullptr;
  }

  // A file at an earlier schema `version` holding node n1 ('n-id'), volume db1 ('v-id') and
  // the copies `copies_sql` inserts.
  void old_file(int version, const char* copies_sql) {
    sqlite3* raw = nullptr;
    ASSERT_EQ(sqlite3_open(path_.c_str(), &raw), SQLITE_OK);
    ASSERT_TRUE(migrate_to(raw, version).ok());
    const std::string sql =
        std::string(
            "INSERT INTO nodes(id,name,address,api_url,state,created_ms) "
            "VALUES('n-id','n1','127.0.0.1','http://127.0.0.1:8080','online',1);"
            "INSERT INTO volumes(id,name,size_bytes,block_size,labels,master_node,"
            "state,created_ms,updated_ms) VALUES('v-id','db1',1048576,512,"
            "'{}','n-id','healthy',1,1);") +
        copies_sql;
    ASSERT_EQ(sqlite3_exec(raw, sql.c_str(), nullptr, nullptr, nullptr), SQLITE_OK);
    sqlite3_close(raw);
  }

  std::filesystem::path dir_;
  std::string path_;
};

int raw_version(const std::string& path) {
  sqlite3* db = nullptr;
  sqlite3_open(path.c_str(), &db);
  sqlite3_stmt* st = nullptr;
  sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, nullptr);
  sqlite3_step(st);
  int v = sqlite3_column_int(st, 0);
  sqlite3_finalize(st);
  sqlite3_close(db);
  return v;
}

TEST_F(CatalogueTest, EmptyFileMigratesToLatestInWalMode) {
  auto c = open();
  ASSERT_TRUE(c);
  EXPECT_EQ(c->schema_version(), Catalogue::latest_version());
  c.reset();
  EXPECT_EQ(raw_version(path_), Catalogue::latest_version());
  sqlite3* db = nullptr;
  sqlite3_open(path_.c_str(), &db);
  sqlite3_stmt* st = nullptr;
  sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &st, nullptr);
  ASSERT_EQ(sqlite3_step(st), SQLITE_ROW);
  EXPECT_STREQ(reinterpret_cast<const char*>(sqlite3_column_text(st, 0)), "wal");
  sqlite3_finalize(st);
  sqlite3_close(db);
}

// A file written at every earlier schema version, holding data, opens and upgrades with its
// data intact.
TEST_F(CatalogueTest, EveryEarlierVersionUpgradesKeepingData) {
  for (int v = 1; v < Catalogue::latest_version(); ++v) {
    std::filesystem::remove(path_);
    sqlite3* raw = nullptr;
    ASSERT_EQ(sqlite3_open(path_.c_str(), &raw), SQLITE_OK);
    ASSERT_TRUE(migrate_to(raw, v).ok());
    ASSERT_EQ(sqlite3_exec(raw,
                           "INSERT INTO nodes(id,name,address,api_url,state,created_ms) "
                           "VALUES('n-id','n1','127.0.0.1','http://127.0.0.1:8080','online',1);"
                           "INSERT INTO volumes(id,name,size_bytes,block_size,labels,master_node,"
                           "state,created_ms,updated_ms) VALUES('v-id','db1',1048576,512,"
                           "'{\"tandem/replicas\":\"0\"}','n-id','healthy',1,1);",
                           nullptr, nullptr, nullptr),
              SQLITE_OK);
    sqlite3_close(raw);
    ASSERT_EQ(raw_version(path_), v);
    auto c = open();
    ASSERT_TRUE(c);
    EXPECT_EQ(c->schema_version(), Catalogue::latest_version()) << "from version " << v;
    auto vol = c->transact<std::optional<VolumeRow>>(
        [](Tx& tx) { return tx.volume_by_name("db1"); });
    ASSERT_TRUE(vol.ok());
    ASSERT_TRUE(vol->has_value());
    EXPECT_EQ((*vol)->size_bytes, 1048576u);
    EXPECT_EQ((*vol)->labels.at("tandem/replicas"), "0");
  }
}

// Migration 5: a version-4 file's copies become copy number 1 with zero progress, and new
// copy numbers continue above the highest ever given, even after the highest is deleted.
TEST_F(CatalogueTest, Version4CopiesUpgradeToNumberedCopies) {
  old_file(4,
           "INSERT INTO copies(id,volume_id,node_id,role,state,applied_seq) "
           "VALUES('c-id','v-id','n-id','master','in-sync',7);");
  auto c = open();
  ASSERT_TRUE(c);
  ASSERT_EQ(c->schema_version(), Catalogue::latest_version());
  auto copies = c->transact<std::vector<CopyRow>>([](Tx& tx) { return tx.copies_of("v-id"); });
  ASSERT_TRUE(copies.ok());
  ASSERT_EQ(copies->size(), 1u);
  EXPECT_EQ(copies->front().number, 1u);
  EXPECT_EQ(copies->front().applied_seq, 7u);
  EXPECT_EQ(copies->front().sync_done_bytes, 0u);
  EXPECT_EQ(copies->front().behind_bytes, 0u);

  auto r = c->transact<void>([](Tx& tx) -> DbResult<void> {
    if (auto n = tx.upsert_node({"n2", "n2", "127.0.0.2", "http://y", "online"}); !n) return n;
    if (auto n = tx.upsert_node({"n3", "n3", "127.0.0.3", "http://z", "online"}); !n) return n;
    auto next = tx.next_copy_number("v-id");
    if (!next) return core::fail(next.error());
    EXPECT_EQ(*next, 2u);
    CopyRow r2{"c2", "v-id", "n2", "replica", "syncing", 0, *next};
    if (auto i = tx.insert_copy(r2); !i) return i;
    auto n3 = tx.next_copy_number("v-id");
    EXPECT_EQ(*n3, 3u);
    CopyRow r3{"c3", "v-id", "n3", "replica", "syncing", 0, *n3};
    if (auto i = tx.insert_copy(r3); !i) return i;
    if (auto d = tx.delete_copy("c3"); !d) return d;
    EXPECT_EQ(*tx.next_copy_number("v-id"), 4u) << "a deleted copy's number is not reused";
    r2.state = kCopyInSync;
    r2.sync_done_bytes = r2.sync_total_bytes = 1048576;
    r2.behind_bytes = 5;
    if (auto u = tx.update_copy(r2); !u) return u;
    EXPECT_EQ(tx.delete_copy("nope").error().code, DbErrc::kNotFound);
    CopyRow ghost{"ghost", "v-id", "n3", "replica", "in-sync", 0, 9};
    EXPECT_EQ(tx.update_copy(ghost).error().code, DbErrc::kNotFound);
    CopyRow dup{"c4", "v-id", "n3", "replica", "in-sync", 0, 2};
    EXPECT_EQ(tx.insert_copy(dup).error().code, DbErrc::kConflict) << "numbers are unique";
    return {};
  });
  ASSERT_TRUE(r.ok()) << r.error().message;
  auto all = c->transact<std::vector<CopyRow>>([](Tx& tx) { return tx.list_copies(); });
  ASSERT_TRUE(all.ok());
  ASSERT_EQ(all->size(), 2u);
  EXPECT_EQ((*all)[1].number, 2u);
  EXPECT_EQ((*all)[1].state, "in-sync");
  EXPECT_EQ((*all)[1].sync_total_bytes, 1048576u);
  EXPECT_EQ((*all)[1].behind_bytes, 5u);
  EXPECT_GT((*all)[1].updated_ms, 0);
}

// Migration 6: a version-5 file's nodes have no boot id yet and its copies are not rebooted;
// the boot id survives a node's re-registration and the flag round-trips.
TEST_F(CatalogueTest, Version5UpgradesToBootIdsAndRebootedCopies) {
  old_file(5,
           "INSERT INTO copies(id,volume_id,node_id,role,state,applied_seq,number) "
           "VALUES('c-id','v-id','n-id','master','in-sync',7,1);");
  auto c = open();
  ASSERT_TRUE(c);
  ASSERT_EQ(c->schema_version(), 6);
  auto r = c->transact<void>([](Tx& tx) -> DbResult<void> {
    EXPECT_EQ(*tx.node_boot_id("n-id"), "");
    EXPECT_EQ(tx.node_boot_id("nope").error().code, DbErrc::kNotFound);
    if (auto b = tx.set_node_boot_id("n-id", "boot-a"); !b) return b;
    if (auto n = tx.upsert_node({"n-id", "n1", "127.0.0.1", "http://x", "online"}); !n) return n;
    EXPECT_EQ(*tx.node_boot_id("n-id"), "boot-a") << "re-registering keeps the boot id";
    auto copies = tx.copies_of("v-id");
    EXPECT_FALSE(copies->front().rebooted);
    CopyRow row = copies->front();
    row.rebooted = true;
    row.report_seq = 1ull << 52;
    if (auto u = tx.update_copy(row); !u) return u;
    EXPECT_TRUE(tx.copies_of("v-id")->front().rebooted);
    EXPECT_EQ(tx.copies_of("v-id")->front().report_seq, 1ull << 52);
    row.rebooted = false;
    if (auto p = tx.put_copy(row); !p) return p;
    EXPECT_FALSE(tx.copies_on("n-id")->front().rebooted);
    return {};
  });
  ASSERT_TRUE(r.ok()) << r.error().message;
}

TEST_F(CatalogueTest, RefusesAFileFromTheFuture) {
  sqlite3* raw = nullptr;
  sqlite3_open(path_.c_str(), &raw);
  sqlite3_exec(raw, "PRAGMA user_version = 999", nullptr, nullptr, nullptr);
  sqlite3_close(raw);
  auto c = Catalogue::open(path_);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.error().code, DbErrc::kTooNew);
}

TEST_F(CatalogueTest, RefusesAFileThatIsNotADatabase) {
  {
    std::ofstream f(path_);
    f << std::string(4096, 'x');
  }
  auto c = Catalogue::open(path_);
  EXPECT_FALSE(c.ok());
}

TEST_F(CatalogueTest, VolumeLifecycleAndUniqueNames) {
  auto c = open();
  ASSERT_TRUE(c);
  auto r = c->transact<void>([](Tx& tx) -> DbResult<void> {
    if (auto n = tx.upsert_node({"n-id", "n1", "127.0.0.1", "http://x", "online"}); !n) return n;
    VolumeRow v;
    v.id = "v1";
    v.name = "db1";
    v.size_bytes = 1 << 20;
    v.labels = {{"a", "b"}};
    v.master_node = "n-id";
    if (auto i = tx.insert_volume(v); !i) return i;
    return tx.insert_copy({"c1", "v1", "n-id", "master", "in-sync", 0});
  });
  ASSERT_TRUE(r.ok()) << r.error().message;
  auto dup = c->transact<void>([](Tx& tx) {
    VolumeRow v;
    v.id = "v2";
    v.name = "db1";
    v.master_node = "n-id";
    return tx.insert_volume(v);
  });
  ASSERT_FALSE(dup.ok());
  EXPECT_EQ(dup.error().code, DbErrc::kConflict);

  auto copies = c->transact<std::vector<CopyRow>>([](Tx& tx) { return tx.copies_of("v1"); });
  ASSERT_TRUE(copies.ok());
  ASSERT_EQ(copies->size(), 1u);
  EXPECT_EQ(copies->front().role, "master");

  auto del = c->transact<void>([](Tx& tx) { return tx.delete_volume("v1"); });
  ASSERT_TRUE(del.ok());
  auto gone = c->transact<std::optional<VolumeRow>>([](Tx& tx) { return tx.volume_by_name("db1"); });
  ASSERT_TRUE(gone.ok());
  EXPECT_FALSE(gone->has_value());
}

TEST_F(CatalogueTest, FailedTransactionRollsBackEverything) {
  auto c = open();
  ASSERT_TRUE(c);
  auto r = c->transact<void>([](Tx& tx) -> DbResult<void> {
    if (auto e = tx.append_event({0, 0, "v", "n", "kind", "first"}); !e) return core::fail(e.error());
    return core::fail(DbError{DbErrc::kIo, "injected"});
  });
  ASSERT_FALSE(r.ok());
  auto ev = c->transact<std::vector<EventRow>>([](Tx& tx) { return tx.events(0, 100); });
  ASSERT_TRUE(ev.ok());
  EXPECT_TRUE(ev->empty());
}

TEST_F(CatalogueTest, EventsPageBySequence) {
  auto c = open();
  ASSERT_TRUE(c);
  for (int i = 0; i < 5; ++i) {
    auto r = c->transact<int64_t>([&](Tx& tx) {
      return tx.append_event({0, 0, "db1", "n1", "k", "event " + std::to_string(i)});
    });
    ASSERT_TRUE(r.ok());
  }
  auto page = c->transact<std::vector<EventRow>>([](Tx& tx) { return tx.events(2, 2); });
  ASSERT_TRUE(page.ok());
  ASSERT_EQ(page->size(), 2u);
  EXPECT_EQ((*page)[0].seq, 3);
  EXPECT_EQ((*page)[0].message, "event 2");
  EXPECT_GT((*page)[0].time_ms, 0);
}

TEST_F(CatalogueTest, ClassesAndSettingsSurviveReopen) {
  {
    auto c = open();
    ASSERT_TRUE(c);
    ASSERT_TRUE(c->transact<void>([](Tx& tx) -> DbResult<void> {
                   if (auto i = tx.insert_class({"fast", {{"tandem/replicas", "2"}}}); !i) return i;
                   return tx.set_setting("k", "v");
                 }).ok());
  }
  auto c = open();
  ASSERT_TRUE(c);
  auto cls = c->transact<std::optional<ClassRow>>([](Tx& tx) { return tx.class_by_name("fast"); });
  ASSERT_TRUE(cls.ok() && cls->has_value());
  EXPECT_EQ((*cls)->labels.at("tandem/replicas"), "2");
  auto s = c->transact<std::optional<std::string>>([](Tx& tx) { return tx.setting("k"); });
  ASSERT_TRUE(s.ok() && s->has_value());
  EXPECT_EQ(**s, "v");
  auto missing = c->transact<void>([](Tx& tx) { return tx.delete_class("nope"); });
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().code, DbErrc::kNotFound);
}

}  // namespace
}  // namespace tandem::db
