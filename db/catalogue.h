// Catalogue: the controller's SQLite store of nodes, volumes, copies, storage classes,
// reservations and the event log. One Catalogue owns one sqlite3 connection (WAL mode);
// every access goes through transact(), which serialises callers with a mutex and runs the
// callback inside one transaction (committed if it returns ok, rolled back otherwise).
// Thread-safe; a Tx must not escape its callback.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "core/result.h"
#include "core/volume_spec.h"

struct sqlite3;

namespace tandem::db {

enum class DbErrc { kIo, kNotFound, kConflict, kCorrupt, kTooNew };
using DbError = core::Error<DbErrc>;
template <class T>
using DbResult = core::Result<T, DbError>;

struct NodeRow {
  std::string id;
  std::string name;
  std::string address;  // the node's bind address
  std::string api_url;  // http://address:port
  std::string state = "online";
  uint64_t capacity_bytes = 0;
  uint64_t free_bytes = 0;
  int64_t last_heartbeat_ms = 0;
  int64_t created_ms = 0;
  uint16_t iscsi_port = 3260;
  uint16_t repl_port = 5703;
};

struct VolumeRow {
  std::string id;  // UUID
  std::string name;
  uint64_t size_bytes = 0;
  uint32_t block_size = 512;
  std::string class_name;  // empty: no class
  core::Labels labels;     // the volume's own labels (class defaults apply underneath)
  uint64_t generation = 1;
  std::string master_node;  // node id
  std::string state = "healthy";
  int64_t created_ms = 0;
  int64_t updated_ms = 0;
};

// Copy states.
inline constexpr const char* kCopyInSync = "in-sync";
inline constexpr const char* kCopySyncing = "syncing";
inline constexpr const char* kCopyOutOfSync = "out-of-sync";
inline constexpr const char* kCopyOffline = "offline";

struct CopyRow {
  std::string id;
  std::string volume_id;
  std::string node_id;
  std::string role = "master";  // master | replica
  std::string state = "in-sync";  // in-sync | syncing | out-of-sync | offline
  uint64_t applied_seq = 0;
  // The replication copy id on the wire: unique per volume, never reused inside it (a new
  // copy takes max + 1). The master created with the volume is 1.
  uint32_t number = 1;
  uint64_t sync_done_bytes = 0;
  uint64_t sync_total_bytes = 0;
  uint64_t behind_bytes = 0;
  int64_t updated_ms = 0;  // filled by insert/update when 0
  // In sync when its node rebooted (boot id changed) and no master has reported on it since:
  // it holds every acknowledged write except unflushed ones (mgmt::choose_master).
  bool rebooted = false;
  // The report_seq of the newest master report applied to this row (0: none since the
  // volume's master last changed). mgmt::apply_copy_reports ignores an older "in-sync".
  uint64_t report_seq = 0;
};

// iSCSI access control of one volume. Empty initiators: everyone may log in. Empty user:
// that CHAP direction is off.
struct AccessRow {
  std::string volume_id;
  std::vector<std::string> initiators;
  std::string chap_user;
  std::string chap_secret;
  std::string mutual_user;
  std::string mutual_secret;
};

struct ClassRow {
  std::string name;
  core::Labels labels;
  int64_t created_ms = 0;
};

struct EventRow {
  int64_t seq = 0;
  int64_t time_ms = 0;
  std::string volume;
  std::string node;
  std::string kind;
  std::string message;
};

// Typed queries inside one transaction. Obtained only from Catalogue::transact.
class Tx {
 public:
  // Nodes.
  DbResult<void> upsert_node(const NodeRow& n);
  DbResult<std::vector<NodeRow>> list_nodes();
  DbResult<std::optional<NodeRow>> node_by_name(const std::string& name);
  // The hex SHA-256 of the node's cluster token ("" for the controller's own node).
  DbResult<std::string> node_token_hash(const std::string& node_id);
  DbResult<void> set_node_token_hash(const std::string& node_id, const std::string& hash);
  DbResult<void> set_node_state(const std::string& node_id, const std::string& state);
  // The boot id the node's heartbeats last carried ("" before any). Kept apart from
  // upsert_node, so re-registering a node never forgets it.
  DbResult<std::string> node_boot_id(const std::string& node_id);
  DbResult<void> set_node_boot_id(const std::string& node_id, const std::string& boot_id);
  DbResult<void> delete_node(const std::string& node_id);

  // Volumes.
  DbResult<void> insert_volume(const VolumeRow& v);
  DbResult<void> update_volume(const VolumeRow& v);  // by id
  DbResult<void> delete_volume(const std::string& id);
  DbResult<std::optional<VolumeRow>> volume_by_name(const std::string& name);
  DbResult<std::vector<VolumeRow>> list_volumes();
  DbResult<std::optional<VolumeRow>> volume_by_id(const std::string& id);
  // Inserts or overwrites every column as given (mirroring another catalogue's row).
  DbResult<void> put_volume(const VolumeRow& v);

  // Copies (master and replicas) of volumes.
  DbResult<void> insert_copy(const CopyRow& c);
  DbResult<std::vector<CopyRow>> copies_of(const std::string& volume_id);
  DbResult<std::vector<CopyRow>> copies_on(const std::string& node_id);
  DbResult<std::vector<CopyRow>> list_copies();
  // Inserts or overwrites every column as given (mirroring another catalogue's row).
  DbResult<void> put_copy(const CopyRow& c);
  // Updates node, role, state, number and progress by id (kNotFound when absent).
  DbResult<void> update_copy(const CopyRow& c);
  DbResult<void> delete_copy(const std::string& id);
  // The next copy number of a volume: one above the highest it ever had (insert_copy keeps
  // a high-water mark on the volume, so a deleted copy's number is never reused).
  DbResult<uint32_t> next_copy_number(const std::string& volume_id);

  // Access control (a volume without a row has the defaults: open, no CHAP).
  DbResult<AccessRow> access_of(const std::string& volume_id);
  DbResult<void> set_access(const AccessRow& a);
  DbResult<std::vector<AccessRow>> list_access();  // only volumes with a row
  DbResult<void> delete_access(const std::string& volume_id);

  // Persistent reservation state of a volume, as the SCSI layer serialises it.
  DbResult<std::optional<std::string>> reservation_of(const std::string& volume_id);
  DbResult<void> set_reservation(const std::string& volume_id, const std::string& state);

  // Storage classes.
  DbResult<void> insert_class(const ClassRow& c);
  DbResult<void> delete_class(const std::string& name);
  DbResult<std::optional<ClassRow>> class_by_name(const std::string& name);
  DbResult<std::vector<ClassRow>> list_classes();
  DbResult<int64_t> volumes_in_class(const std::string& name);

  // Events: the audit log of every state change.
  DbResult<int64_t> append_event(EventRow e);  // fills time_ms if 0; returns seq
  DbResult<std::vector<EventRow>> events(int64_t since_seq, int64_t limit);
  DbResult<int64_t> last_event_seq();  // 0 when the log is empty

  // Small key/value settings (admin token hash, cluster id, ...).
  DbResult<std::optional<std::string>> setting(const std::string& key);
  DbResult<void> set_setting(const std::string& key, const std::string& value);

 private:
  friend class Catalogue;
  explicit Tx(sqlite3* db) : db_(db) {}
  DbResult<std::string> node_text(const char* sql, const std::string& node_id);
  sqlite3* db_;
};

class Catalogue {
 public:
  // Opens or creates the file, switches to WAL, applies pending migrations.
  static DbResult<std::unique_ptr<Catalogue>> open(const std::string& path);
  ~Catalogue();
  Catalogue(const Catalogue&) = delete;
  Catalogue& operator=(const Catalogue&) = delete;

  int schema_version();
  static int latest_version();

  template <class T>
  DbResult<T> transact(const std::function<DbResult<T>(Tx&)>& fn) {
    std::lock_guard lock(mu_);
    if (auto b = exec_locked("BEGIN IMMEDIATE"); !b) return core::fail(b.error());
    Tx tx(db_);
    DbResult<T> r = fn(tx);
    if (r) {
      if (auto c = exec_locked("COMMIT"); !c) {
        (void)exec_locked("ROLLBACK");
        return core::fail(c.error());
      }
    } else {
      (void)exec_locked("ROLLBACK");
    }
    return r;
  }

  // Checkpoint the WAL into the main file (clean shutdown).
  void checkpoint();

 private:
  explicit Catalogue(sqlite3* db) : db_(db) {}
  DbResult<void> exec_locked(const char* sql);
  DbResult<void> migrate();

  std::mutex mu_;
  sqlite3* db_;
};

// Migrations, exposed so tests can build a file at any earlier version.
// Applies migrations up to and including `target` on a raw connection.
DbResult<void> migrate_to(sqlite3* db, int target);

int64_t now_ms();

}  // namespace tandem::db
