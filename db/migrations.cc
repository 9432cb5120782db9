// Numbered schema migrations (PRAGMA user_version). A migration is appended, never edited:
// files written by any earlier release open and upgrade in order.
#include <sqlite3.h>

#include <array>
#include <string>

#include "db/catalogue.h"

namespace tandem::db {
namespace {

// Index i holds the statements that take the schema from version i to i+1.
constexpr std::array<const char*, 6> kMigrations{
    // 1: the base catalogue.
    R"sql(
CREATE TABLE nodes(
  id TEXT PRIMARY KEY,
  name TEXT NOT NULL UNIQUE,
  address TEXT NOT NULL,
  api_url TEXT NOT NULL,
  state TEXT NOT NULL,
  capacity_bytes INTEGER NOT NULL DEFAULT 0,
  free_bytes INTEGER NOT NULL DEFAULT 0,
  last_heartbeat_ms INTEGER NOT NULL DEFAULT 0,
  created_ms INTEGER NOT NULL);
CREATE TABLE classes(
  name TEXT PRIMARY KEY,
  labels TEXT NOT NULL,
  created_ms INTEGER NOT NULL);
CREATE TABLE volumes(
  id TEXT PRIMARY KEY,
  name TEXT NOT NULL UNIQUE,
  size_bytes INTEGER NOT NULL,
  block_size INTEGER NOT NULL,
  class_name TEXT NOT NULL DEFAULT '',
  labels TEXT NOT NULL,
  generation INTEGER NOT NULL DEFAULT 1,
  master_node TEXT NOT NULL,
  state TEXT NOT NULL,
  created_ms INTEGER NOT NULL,
  updated_ms INTEGER NOT NULL);
CREATE TABLE copies(
  id TEXT PRIMARY KEY,
  volume_id TEXT NOT NULL REFERENCES volumes(id) ON DELETE CASCADE,
  node_id TEXT NOT NULL REFERENCES nodes(id),
  role TEXT NOT NULL,
  state TEXT NOT NULL,
  applied_seq INTEGER NOT NULL DEFAULT 0,
  UNIQUE(volume_id, node_id));
CREATE TABLE events(
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  time_ms INTEGER NOT NULL,
  volume TEXT NOT NULL DEFAULT '',
  node TEXT NOT NULL DEFAULT '',
  kind TEXT NOT NULL,
  message TEXT NOT NULL);
CREATE INDEX events_volume ON events(volume);
)sql",
    // 2: cluster-wide settings (token hash, cluster id), kept apart from the volumes.
    R"sql(
CREATE TABLE settings(
  key TEXT PRIMARY KEY,
  value TEXT NOT NULL);
)sql",
    // 3: iSCSI access control per volume, and persistent reservations (kept here so they
    // survive restarts and, later, a change of master).
    R"sql(
CREATE TABLE volume_access(
  volume_id TEXT PRIMARY KEY REFERENCES volumes(id) ON DELETE CASCADE,
  initiators TEXT NOT NULL DEFAULT '[]',
  chap_user TEXT NOT NULL DEFAULT '',
  chap_secret TEXT NOT NULL DEFAULT '',
  mutual_user TEXT NOT NULL DEFAULT '',
  mutual_secret TEXT NOT NULL DEFAULT '');
CREATE TABLE reservations(
  volume_id TEXT PRIMARY KEY REFERENCES volumes(id) ON DELETE CASCADE,
  state TEXT NOT NULL);
)sql",
    // 4: cluster membership: each joined node's token (hashed) and service ports.
    R"sql(
ALTER TABLE nodes ADD COLUMN token_sha256 TEXT NOT NULL DEFAULT '';
ALTER TABLE nodes ADD COLUMN iscsi_port INTEGER NOT NULL DEFAULT 3260;
ALTER TABLE nodes ADD COLUMN repl_port INTEGER NOT NULL DEFAULT 5703;
)sql",
    // 5: replication copies: the copy number used on the wire (unique per volume, never
    // reused), resync progress, how far behind the master a copy is, and when it last changed.
    // Existing copies are masters of replica-less volumes, so number 1 is right for them.
    // volumes.copy_number_hwm is the highest number ever given, so a deleted copy's number
    // is never handed out again.
    R"sql(
ALTER TABLE copies ADD COLUMN number INTEGER NOT NULL DEFAULT 1;
ALTER TABLE copies ADD COLUMN sync_done_bytes INTEGER NOT NULL DEFAULT 0;
ALTER TABLE copies ADD COLUMN sync_total_bytes INTEGER NOT NULL DEFAULT 0;
ALTER TABLE copies ADD COLUMN behind_bytes INTEGER NOT NULL DEFAULT 0;
ALTER TABLE copies ADD COLUMN updated_ms INTEGER NOT NULL DEFAULT 0;
CREATE UNIQUE INDEX copies_number ON copies(volume_id, number);
ALTER TABLE volumes ADD COLUMN copy_number_hwm INTEGER NOT NULL DEFAULT 1;
)sql",
    // 6: power loss. Each node's boot id as its heartbeats last gave it ('' unknown); per
    // copy whether it was in sync when its node rebooted (so it may lack unflushed writes)
    // with no master report since (mgmt::choose_master), and the sequence of the newest
    // master report applied to it (a stale report never records it in sync again).
    R"sql(
ALTER TABLE nodes ADD COLUMN boot_id TEXT NOT NULL DEFAULT '';
ALTER TABLE copies ADD COLUMN rebooted INTEGER NOT NULL DEFAULT 0;
ALTER TABLE copies ADD COLUMN report_seq INTEGER NOT NULL DEFAULT 0;
)sql",
};

int user_version(sqlite3* db) {
  sqlite3_stmt* st = nullptr;
  int v = -1;
  if (sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, nullptr) == SQLITE_OK &&
      sqlite3_step(st) == SQLITE_ROW) {
    v = sqlite3_column_int(st, 0);
  }
  sqlite3_finalize(st);
  return v;
}

}  // namespace

int Catalogue::latest_version() { return static_cast<int>(kMigrations.size()); }

DbResult<void> migrate_to(sqlite3* db, int target) {
  int v = user_version(db);
  if (v < 0) return core::fail(DbError{DbErrc::kCorrupt, sqlite3_errmsg(db)});
  if (v > Catalogue::latest_version()) {
    return core::fail(DbError{DbErrc::kTooNew, "catalogue schema version " + std::to_string(v) +
                                                   " is newer than this tandemd understands (" +
                                                   std::to_string(Catalogue::latest_version()) +
                                                   ")"});
  }
  for (; v < target; ++v) {
    // Each step and its version bump commit together, so a crash leaves a whole version.
    std::string sql = std::string("BEGIN IMMEDIATE;") + kMigrations[v] +
                      "PRAGMA user_version = " + std::to_string(v + 1) + ";COMMIT;";
    char* err = nullptr;
    if (sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &err) != SQLITE_OK) {
      std::string msg = err ? err : "unknown";
      sqlite3_free(err);
      sqlite3_exec(db, "ROLLBACK", nullptr, nullptr, nullptr);
      return core::fail(
          DbError{DbErrc::kIo, "migration " + std::to_string(v + 1) + " failed: " + msg});
    }
  }
  return {};
}

}  // namespace tandem::db
