#include "db/catalogue.h"

#include <sqlite3.h>

#include <chrono>
#include <nlohmann/json.hpp>

namespace tandem::db {
namespace {

DbError sql_error(sqlite3* db) {
  int code = sqlite3_extended_errcode(db);
  DbErrc c = DbErrc::kIo;
  if ((code & 0xff) == SQLITE_CONSTRAINT) c = DbErrc::kConflict;
  if ((code & 0xff) == SQLITE_CORRUPT || (code & 0xff) == SQLITE_NOTADB) c = DbErrc::kCorrupt;
  return DbError{c, sqlite3_errmsg(db)};
}

// A prepared statement with positional binding; finalised on scope exit.
class Stmt {
 public:
  Stmt(sqlite3* db, const char* sql) : db_(db) {
    if (sqlite3_prepare_v2(db, sql, -1, &st_, nullptr) != SQLITE_OK) st_ = nullptr;
  }
  ~Stmt() { sqlite3_finalize(st_); }
  bool ok() const { return st_ != nullptr; }
  Stmt& bind(const std::string& s) {
    sqlite3_bind_text(st_, ++idx_, s.data(), static_cast<int>(s.size()), SQLITE_TRANSIENT);
    return *this;
  }
  Stmt& bind(int64_t v) {
    sqlite3_bind_int64(st_, ++idx_, v);
    return *this;
  }
  // SQLITE_ROW, SQLITE_DONE or an error code.
  int step() { return st_ ? sqlite3_step(st_) : SQLITE_ERROR; }
  std::string text(int col) {
    auto p = sqlite3_column_text(st_, col);
    return p ? std::string(reinterpret_cast<const char*>(p),
                           static_cast<size_t>(sqlite3_column_bytes(st_, col)))
             : std::string();
  }
  int64_t i64(int col) { return sqlite3_column_int64(st_, col); }

  // Runs a statement that returns no rows.
  DbResult<void> run() {
    if (step() != SQLITE_DONE) return core::fail(sql_error(db_));
    return {};
  }

 private:
  sqlite3* db_;
  sqlite3_stmt* st_ = nullptr;
  int idx_ = 0;
};

std::string labels_json(const core::Labels& l) { return nlohmann::json(l).dump(); }

core::Labels labels_from(const std::string& s) {
  auto j = nlohmann::json::parse(s, nullptr, false);
  core::Labels out;
  if (!j.is_object()) return out;
  for (auto& [k, v] : j.items()) {
    if (v.is_string()) out[k] = v.get<std::string>();
  }
  return out;
}

// Collects every row of a query through a row reader.
template <class Row, class Read>
DbResult<std::vector<Row>> collect(sqlite3* db, Stmt& st, Read read) {
  std::vector<Row> out;
  for (;;) {
    int rc = st.step();
    if (rc == SQLITE_DONE) return out;
    if (rc != SQLITE_ROW) return core::fail(sql_error(db));
    out.push_back(read(st));
  }
}

template <class Row, class Read>
DbResult<std::optional<Row>> first(sqlite3* db, Stmt& st, Read read) {
  auto rows = collect<Row>(db, st, read);
  if (!rows) return core::fail(rows.error());
  if (rows->empty()) return std::optional<Row>();
  return std::optional<Row>(std::move(rows->front()));
}

constexpr const char* kNodeCols =
    "id, name, address, api_url, state, capacity_bytes, free_bytes, last_heartbeat_ms, "
    "created_ms, iscsi_port, repl_port";
NodeRow read_node(Stmt& s) {
  return NodeRow{s.text(0),
                 s.text(1),
                 s.text(2),
                 s.text(3),
                 s.text(4),
                 static_cast<uint64_t>(s.i64(5)),
                 static_cast<uint64_t>(s.i64(6)),
                 s.i64(7),
                 s.i64(8),
                 static_cast<uint16_t>(s.i64(9)),
                 static_cast<uint16_t>(s.i64(10))};
}

constexpr const char* kVolumeCols =
    "id, name, size_bytes, block_size, class_name, labels, generation, master_node, state, "
    "created_ms, updated_ms";
VolumeRow read_volume(Stmt& s) {
  return VolumeRow{s.text(0),
                   s.text(1),
                   static_cast<uint64_t>(s.i64(2)),
                   static_cast<uint32_t>(s.i64(3)),
                   s.text(4),
                   labels_from(s.text(5)),
                   static_cast<uint64_t>(s.i64(6)),
                   s.text(7),
                   s.text(8),
                   s.i64(9),
                   s.i64(10)};
}

constexpr const char* kCopyCols =
    "id, volume_id, node_id, role, state, applied_seq, number, sync_done_bytes, "
    "sync_total_bytes, behind_bytes, updated_ms, rebooted, report_seq";
CopyRow read_copy(Stmt& s) {
  CopyRow c;
  c.id = s.text(0);
  c.volume_id = s.text(1);
  c.node_id = s.text(2);
  c.role = s.text(3);
  c.state = s.text(4);
  c.applied_seq = static_cast<uint64_t>(s.i64(5));
  c.number = static_cast<uint32_t>(s.i64(6));
  c.sync_done_bytes = static_cast<uint64_t>(s.i64(7));
  c.sync_total_bytes = static_cast<uint64_t>(s.i64(8));
  c.behind_bytes = static_cast<uint64_t>(s.i64(9));
  c.updated_ms = s.i64(10);
  c.rebooted = s.i64(11) != 0;
  c.report_seq = static_cast<uint64_t>(s.i64(12));
  return c;
}

std::string q(const char* head, const char* cols, const char* tail) {
  return std::string(head) + cols + tail;
}

}  // namespace

int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// ---- Nodes ----

DbResult<void> Tx::upsert_node(const NodeRow& n) {
  Stmt s(db_,
         "INSERT INTO nodes(id, name, address, api_url, state, capacity_bytes, free_bytes, "
         "last_heartbeat_ms, created_ms, iscsi_port, repl_port) VALUES(?,?,?,?,?,?,?,?,?,?,?) "
         "ON CONFLICT(id) DO UPDATE SET name=excluded.name, address=excluded.address, "
         "api_url=excluded.api_url, state=excluded.state, capacity_bytes=excluded.capacity_bytes, "
         "free_bytes=excluded.free_bytes, last_heartbeat_ms=excluded.last_heartbeat_ms, "
         "iscsi_port=excluded.iscsi_port, repl_port=excluded.repl_port");
  return s.bind(n.id)
      .bind(n.name)
      .bind(n.address)
      .bind(n.api_url)
      .bind(n.state)
      .bind(static_cast<int64_t>(n.capacity_bytes))
      .bind(static_cast<int64_t>(n.free_bytes))
      .bind(n.last_heartbeat_ms)
      .bind(n.created_ms ? n.created_ms : now_ms())
      .bind(static_cast<int64_t>(n.iscsi_port))
      .bind(static_cast<int64_t>(n.repl_port))
      .run();
}

// One text column of a node's row; kNotFound when there is no such node.
DbResult<std::string> Tx::node_text(const char* sql, const std::string& node_id) {
  Stmt s(db_, sql);
  s.bind(node_id);
  auto r = first<std::string>(db_, s, [](Stmt& st) { return st.text(0); });
  if (!r) return core::fail(r.error());
  if (!*r) return core::fail(DbError{DbErrc::kNotFound, "no such node"});
  return std::move(**r);
}

DbResult<std::string> Tx::node_token_hash(const std::string& node_id) {
  return node_text("SELECT token_sha256 FROM nodes WHERE id = ?", node_id);
}

DbResult<void> Tx::set_node_token_hash(const std::string& node_id, const std::string& hash) {
  Stmt s(db_, "UPDATE nodes SET token_sha256 = ? WHERE id = ?");
  return s.bind(hash).bind(node_id).run();
}

DbResult<std::string> Tx::node_boot_id(const std::string& node_id) {
  return node_text("SELECT boot_id FROM nodes WHERE id = ?", node_id);
}

DbResult<void> Tx::set_node_boot_id(const std::string& node_id, const std::string& boot_id) {
  Stmt s(db_, "UPDATE nodes SET boot_id = ? WHERE id = ?");
  return s.bind(boot_id).bind(node_id).run();
}

DbResult<void> Tx::set_node_state(const std::string& node_id, const std::string& state) {
  Stmt s(db_, "UPDATE nodes SET state = ? WHERE id = ?");
  return s.bind(state).bind(node_id).run();
}

DbResult<void> Tx::delete_node(const std::string& node_id) {
  Stmt s(db_, "DELETE FROM nodes WHERE id = ?");
  return s.bind(node_id).run();
}

DbResult<std::vector<NodeRow>> Tx::list_nodes() {
  auto sql = q("SELECT ", kNodeCols, " FROM nodes ORDER BY name");
  Stmt s(db_, sql.c_str());
  return collect<NodeRow>(db_, s, read_node);
}

DbResult<std::optional<NodeRow>> Tx::node_by_name(const std::string& name) {
  auto sql = q("SELECT ", kNodeCols, " FROM nodes WHERE name = ?");
  Stmt s(db_, sql.c_str());
  s.bind(name);
  return first<NodeRow>(db_, s, read_node);
}

// ---- Volumes ----

DbResult<void> Tx::insert_volume(const VolumeRow& v) {
  Stmt s(db_,
         "INSERT INTO volumes(id, name, size_bytes, block_size, class_name, labels, generation, "
         "master_node, state, created_ms, updated_ms) VALUES(?,?,?,?,?,?,?,?,?,?,?)");
  int64_t now = now_ms();
  return s.bind(v.id)
      .bind(v.name)
      .bind(static_cast<int64_t>(v.size_bytes))
      .bind(static_cast<int64_t>(v.block_size))
      .bind(v.class_name)
      .bind(labels_json(v.labels))
      .bind(static_cast<int64_t>(v.generation))
      .bind(v.master_node)
      .bind(v.state)
      .bind(v.created_ms ? v.created_ms : now)
      .bind(now)
      .run();
}

DbResult<void> Tx::update_volume(const VolumeRow& v) {
  Stmt s(db_,
         "UPDATE volumes SET size_bytes=?, class_name=?, labels=?, generation=?, master_node=?, "
         "state=?, updated_ms=? WHERE id=?");
  auto r = s.bind(static_cast<int64_t>(v.size_bytes))
               .bind(v.class_name)
               .bind(labels_json(v.labels))
               .bind(static_cast<int64_t>(v.generation))
               .bind(v.master_node)
               .bind(v.state)
               .bind(now_ms())
               .bind(v.id)
               .run();
  if (!r) return r;
  if (sqlite3_changes(db_) == 0) return core::fail(DbError{DbErrc::kNotFound, "no such volume"});
  return {};
}

DbResult<void> Tx::put_volume(const VolumeRow& v) {
  Stmt s(db_,
         "INSERT INTO volumes(id, name, size_bytes, block_size, class_name, labels, generation, "
         "master_node, state, created_ms, updated_ms) VALUES(?,?,?,?,?,?,?,?,?,?,?) "
         "ON CONFLICT(id) DO UPDATE SET name=excluded.name, size_bytes=excluded.size_bytes, "
         "block_size=excluded.block_size, class_name=excluded.class_name, "
         "labels=excluded.labels, generation=excluded.generation, "
         "master_node=excluded.master_node, state=excluded.state, "
         "created_ms=excluded.created_ms, updated_ms=excluded.updated_ms");
  return s.bind(v.id)
      .bind(v.name)
      .bind(static_cast<int64_t>(v.size_bytes))
      .bind(static_cast<int64_t>(v.block_size))
      .bind(v.class_name)
      .bind(labels_json(v.labels))
      .bind(static_cast<int64_t>(v.generation))
      .bind(v.master_node)
      .bind(v.state)
      .bind(v.created_ms)
      .bind(v.updated_ms)
      .run();
}

DbResult<void> Tx::delete_volume(const std::string& id) {
  for (const char* sql : {"DELETE FROM copies WHERE volume_id = ?",
                          "DELETE FROM volume_access WHERE volume_id = ?",
                          "DELETE FROM reservations WHERE volume_id = ?"}) {
    Stmt c(db_, sql);
    if (auto r = c.bind(id).run(); !r) return r;
  }
  Stmt s(db_, "DELETE FROM volumes WHERE id = ?");
  return s.bind(id).run();
}

DbResult<std::optional<VolumeRow>> Tx::volume_by_name(const std::string& name) {
  auto sql = q("SELECT ", kVolumeCols, " FROM volumes WHERE name = ?");
  Stmt s(db_, sql.c_str());
  s.bind(name);
  return first<VolumeRow>(db_, s, read_volume);
}

DbResult<std::optional<VolumeRow>> Tx::volume_by_id(const std::string& id) {
  auto sql = q("SELECT ", kVolumeCols, " FROM volumes WHERE id = ?");
  Stmt s(db_, sql.c_str());
  s.bind(id);
  return first<VolumeRow>(db_, s, read_volume);
}

DbResult<std::vector<VolumeRow>> Tx::list_volumes() {
  auto sql = q("SELECT ", kVolumeCols, " FROM volumes ORDER BY name");
  Stmt s(db_, sql.c_str());
  return collect<VolumeRow>(db_, s, read_volume);
}

// ---- Copies ----

DbResult<void> Tx::insert_copy(const CopyRow& c) {
  Stmt s(db_,
         "INSERT INTO copies(id, volume_id, node_id, role, state, applied_seq, number, "
         "sync_done_bytes, sync_total_bytes, behind_bytes, updated_ms, rebooted, report_seq) "
         "VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?)");
  auto r = s.bind(c.id)
               .bind(c.volume_id)
               .bind(c.node_id)
               .bind(c.role)
               .bind(c.state)
               .bind(static_cast<int64_t>(c.applied_seq))
               .bind(static_cast<int64_t>(c.number))
               .bind(static_cast<int64_t>(c.sync_done_bytes))
               .bind(static_cast<int64_t>(c.sync_total_bytes))
               .bind(static_cast<int64_t>(c.behind_bytes))
               .bind(c.updated_ms ? c.updated_ms : now_ms())
               .bind(int64_t{c.rebooted})
               .bind(static_cast<int64_t>(c.report_seq))
               .run();
  if (!r) return r;
  Stmt h(db_, "UPDATE volumes SET copy_number_hwm = MAX(copy_number_hwm, ?) WHERE id = ?");
  return h.bind(static_cast<int64_t>(c.number)).bind(c.volume_id).run();
}

DbResult<void> Tx::put_copy(const CopyRow& c) {
  Stmt s(db_,
         "INSERT INTO copies(id, volume_id, node_id, role, state, applied_seq, number, "
         "sync_done_bytes, sync_total_bytes, behind_bytes, updated_ms, rebooted, report_seq) "
         "VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT(id) DO UPDATE SET "
         "volume_id=excluded.volume_id, node_id=excluded.node_id, role=excluded.role, "
         "state=excluded.state, applied_seq=excluded.applied_seq, number=excluded.number, "
         "sync_done_bytes=excluded.sync_done_bytes, sync_total_bytes=excluded.sync_total_bytes, "
         "behind_bytes=excluded.behind_bytes, updated_ms=excluded.updated_ms, "
         "rebooted=excluded.rebooted, report_seq=excluded.report_seq");
  return s.bind(c.id)
      .bind(c.volume_id)
      .bind(c.node_id)
      .bind(c.role)
      .bind(c.state)
      .bind(static_cast<int64_t>(c.applied_seq))
      .bind(static_cast<int64_t>(c.number))
      .bind(static_cast<int64_t>(c.sync_done_bytes))
      .bind(static_cast<int64_t>(c.sync_total_bytes))
      .bind(static_cast<int64_t>(c.behind_bytes))
      .bind(c.updated_ms)
      .bind(int64_t{c.rebooted})
               .bind(static_cast<int64_t>(c.report_seq))
      .run();
}

DbResult<void> Tx::update_copy(const CopyRow& c) {
  Stmt s(db_,
         "UPDATE copies SET node_id=?, role=?, state=?, applied_seq=?, number=?, "
         "sync_done_bytes=?, sync_total_bytes=?, behind_bytes=?, updated_ms=?, rebooted=?, "
         "report_seq=? WHERE id=?");
  auto r = s.bind(c.node_id)
               .bind(c.role)
               .bind(c.state)
               .bind(static_cast<int64_t>(c.applied_seq))
               .bind(static_cast<int64_t>(c.number))
               .bind(static_cast<int64_t>(c.sync_done_bytes))
               .bind(static_cast<int64_t>(c.sync_total_bytes))
               .bind(static_cast<int64_t>(c.behind_bytes))
               .bind(c.updated_ms ? c.updated_ms : now_ms())
               .bind(int64_t{c.rebooted})
               .bind(static_cast<int64_t>(c.report_seq))
               .bind(c.id)
               .run();
  if (!r) return r;
  if (sqlite3_changes(db_) == 0) return core::fail(DbError{DbErrc::kNotFound, "no such copy"});
  return {};
}

DbResult<void> Tx::delete_copy(const std::string& id) {
  Stmt s(db_, "DELETE FROM copies WHERE id = ?");
  if (auto r = s.bind(id).run(); !r) return r;
  if (sqlite3_changes(db_) == 0) return core::fail(DbError{DbErrc::kNotFound, "no such copy"});
  return {};
}

DbResult<uint32_t> Tx::next_copy_number(const std::string& volume_id) {
  Stmt s(db_,
         "SELECT MAX(COALESCE((SELECT MAX(number) FROM copies WHERE volume_id = ?1), 0), "
         "COALESCE((SELECT copy_number_hwm FROM volumes WHERE id = ?1), 0))");
  s.bind(volume_id);
  if (s.step() != SQLITE_ROW) return core::fail(sql_error(db_));
  return static_cast<uint32_t>(s.i64(0) + 1);
}

DbResult<std::vector<CopyRow>> Tx::copies_of(const std::string& volume_id) {
  auto sql = q("SELECT ", kCopyCols, " FROM copies WHERE volume_id = ? ORDER BY number");
  Stmt s(db_, sql.c_str());
  s.bind(volume_id);
  return collect<CopyRow>(db_, s, read_copy);
}

DbResult<std::vector<CopyRow>> Tx::copies_on(const std::string& node_id) {
  auto sql = q("SELECT ", kCopyCols, " FROM copies WHERE node_id = ? ORDER BY volume_id");
  Stmt s(db_, sql.c_str());
  s.bind(node_id);
  return collect<CopyRow>(db_, s, read_copy);
}

DbResult<std::vector<CopyRow>> Tx::list_copies() {
  auto sql = q("SELECT ", kCopyCols, " FROM copies ORDER BY volume_id, number");
  Stmt s(db_, sql.c_str());
  return collect<CopyRow>(db_, s, read_copy);
}

// ---- Access control and reservations ----

namespace {

AccessRow read_access(Stmt& st) {
  AccessRow a;
  a.volume_id = st.text(0);
  auto j = nlohmann::json::parse(st.text(1), nullptr, false);
  if (j.is_array()) {
    for (auto& v : j) {
      if (v.is_string()) a.initiators.push_back(v.get<std::string>());
    }
  }
  a.chap_user = st.text(2);
  a.chap_secret = st.text(3);
  a.mutual_user = st.text(4);
  a.mutual_secret = st.text(5);
  return a;
}

constexpr const char* kAccessCols =
    "volume_id, initiators, chap_user, chap_secret, mutual_user, mutual_secret";

}  // namespace

DbResult<AccessRow> Tx::access_of(const std::string& volume_id) {
  auto sql = q("SELECT ", kAccessCols, " FROM volume_access WHERE volume_id = ?");
  Stmt s(db_, sql.c_str());
  s.bind(volume_id);
  auto row = first<AccessRow>(db_, s, read_access);
  if (!row) return core::fail(row.error());
  if (!*row) {
    AccessRow open;
    open.volume_id = volume_id;
    return open;
  }
  return std::move(**row);
}

DbResult<std::vector<AccessRow>> Tx::list_access() {
  auto sql = q("SELECT ", kAccessCols, " FROM volume_access ORDER BY volume_id");
  Stmt s(db_, sql.c_str());
  return collect<AccessRow>(db_, s, read_access);
}

DbResult<void> Tx::delete_access(const std::string& volume_id) {
  Stmt s(db_, "DELETE FROM volume_access WHERE volume_id = ?");
  return s.bind(volume_id).run();
}

DbResult<void> Tx::set_access(const AccessRow& a) {
  Stmt s(db_,
         "INSERT INTO volume_access(volume_id, initiators, chap_user, chap_secret, mutual_user, "
         "mutual_secret) VALUES(?,?,?,?,?,?) ON CONFLICT(volume_id) DO UPDATE SET "
         "initiators=excluded.initiators, chap_user=excluded.chap_user, "
         "chap_secret=excluded.chap_secret, mutual_user=excluded.mutual_user, "
         "mutual_secret=excluded.mutual_secret");
  return s.bind(a.volume_id)
      .bind(nlohmann::json(a.initiators).dump())
      .bind(a.chap_user)
      .bind(a.chap_secret)
      .bind(a.mutual_user)
      .bind(a.mutual_secret)
      .run();
}

DbResult<std::optional<std::string>> Tx::reservation_of(const std::string& volume_id) {
  Stmt s(db_, "SELECT state FROM reservations WHERE volume_id = ?");
  s.bind(volume_id);
  return first<std::string>(db_, s, [](Stmt& st) { return st.text(0); });
}

DbResult<void> Tx::set_reservation(const std::string& volume_id, const std::string& state) {
  Stmt s(db_,
         "INSERT INTO reservations(volume_id, state) VALUES(?,?) "
         "ON CONFLICT(volume_id) DO UPDATE SET state=excluded.state");
  return s.bind(volume_id).bind(state).run();
}

// ---- Classes ----

DbResult<void> Tx::insert_class(const ClassRow& c) {
  Stmt s(db_, "INSERT INTO classes(name, labels, created_ms) VALUES(?,?,?)");
  return s.bind(c.name).bind(labels_json(c.labels)).bind(c.created_ms ? c.created_ms : now_ms())
      .run();
}

DbResult<void> Tx::delete_class(const std::string& name) {
  Stmt s(db_, "DELETE FROM classes WHERE name = ?");
  if (auto r = s.bind(name).run(); !r) return r;
  if (sqlite3_changes(db_) == 0) return core::fail(DbError{DbErrc::kNotFound, "no such class"});
  return {};
}

DbResult<std::optional<ClassRow>> Tx::class_by_name(const std::string& name) {
  Stmt s(db_, "SELECT name, labels, created_ms FROM classes WHERE name = ?");
  s.bind(name);
  return first<ClassRow>(db_, s, [](Stmt& st) {
    return ClassRow{st.text(0), labels_from(st.text(1)), st.i64(2)};
  });
}

DbResult<std::vector<ClassRow>> Tx::list_classes() {
  Stmt s(db_, "SELECT name, labels, created_ms FROM classes ORDER BY name");
  return collect<ClassRow>(db_, s, [](Stmt& st) {
    return ClassRow{st.text(0), labels_from(st.text(1)), st.i64(2)};
  });
}

DbResult<int64_t> Tx::volumes_in_class(const std::string& name) {
  Stmt s(db_, "SELECT COUNT(*) FROM volumes WHERE class_name = ?");
  s.bind(name);
  if (s.step() != SQLITE_ROW) return core::fail(sql_error(db_));
  return s.i64(0);
}

// ---- Events ----

DbResult<int64_t> Tx::append_event(EventRow e) {
  Stmt s(db_, "INSERT INTO events(time_ms, volume, node, kind, message) VALUES(?,?,?,?,?)");
  auto r = s.bind(e.time_ms ? e.time_ms : now_ms())
               .bind(e.volume)
               .bind(e.node)
               .bind(e.kind)
               .bind(e.message)
               .run();
  if (!r) return core::fail(r.error());
  return static_cast<int64_t>(sqlite3_last_insert_rowid(db_));
}

DbResult<std::vector<EventRow>> Tx::events(int64_t since_seq, int64_t limit) {
  Stmt s(db_,
         "SELECT seq, time_ms, volume, node, kind, message FROM events WHERE seq > ? "
         "ORDER BY seq LIMIT ?");
  s.bind(since_seq).bind(limit);
  return collect<EventRow>(db_, s, [](Stmt& st) {
    return EventRow{st.i64(0), st.i64(1), st.text(2), st.text(3), st.text(4), st.text(5)};
  });
}

DbResult<int64_t> Tx::last_event_seq() {
  Stmt s(db_, "SELECT COALESCE(MAX(seq), 0) FROM events");
  if (s.step() != SQLITE_ROW) return core::fail(sql_error(db_));
  return s.i64(0);
}

// ---- Settings ----

DbResult<std::optional<std::string>> Tx::setting(const std::string& key) {
  Stmt s(db_, "SELECT value FROM settings WHERE key = ?");
  s.bind(key);
  return first<std::string>(db_, s, [](Stmt& st) { return st.text(0); });
}

DbResult<void> Tx::set_setting(const std::string& key, const std::string& value) {
  Stmt s(db_,
         "INSERT INTO settings(key, value) VALUES(?,?) "
         "ON CONFLICT(key) DO UPDATE SET value=excluded.value");
  return s.bind(key).bind(value).run();
}

// ---- Catalogue ----

DbResult<std::unique_ptr<Catalogue>> Catalogue::open(const std::string& path) {
  sqlite3* db = nullptr;
  int rc = sqlite3_open_v2(path.c_str(), &db,
                           SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                           nullptr);
  if (rc != SQLITE_OK) {
    std::string msg = db ? sqlite3_errmsg(db) : "out of memory";
    sqlite3_close(db);
    return core::fail(DbError{DbErrc::kIo, "cannot open " + path + ": " + msg});
  }
  std::unique_ptr<Catalogue> c(new Catalogue(db));
  sqlite3_busy_timeout(db, 5000);
  // WAL: readers never block the writer; synchronous=FULL: a committed change survives power
  // loss, which the catalogue's few, small writes can afford.
  for (const char* pragma :
       {"PRAGMA journal_mode=WAL", "PRAGMA synchronous=FULL", "PRAGMA foreign_keys=ON"}) {
    if (auto r = c->exec_locked(pragma); !r) {
      return core::fail(DbError{r.error().code, path + ": " + r.error().message});
    }
  }
  if (auto r = c->migrate(); !r) return core::fail(r.error());
  return c;
}

Catalogue::~Catalogue() { sqlite3_close(db_); }

DbResult<void> Catalogue::exec_locked(const char* sql) {
  char* err = nullptr;
  if (sqlite3_exec(db_, sql, nullptr, nullptr, &err) != SQLITE_OK) {
    DbError e = sql_error(db_);
    if (err) e.message = err;
    sqlite3_free(err);
    return core::fail(e);
  }
  return {};
}

DbResult<void> Catalogue::migrate() {
  std::lock_guard lock(mu_);
  return migrate_to(db_, latest_version());
}

int Catalogue::schema_version() {
  std::lock_guard lock(mu_);
  Stmt s(db_, "PRAGMA user_version");
  return s.step() == SQLITE_ROW ? static_cast<int>(s.i64(0)) : -1;
}

void Catalogue::checkpoint() {
  std::lock_guard lock(mu_);
  sqlite3_wal_checkpoint_v2(db_, nullptr, SQLITE_CHECKPOINT_TRUNCATE, nullptr, nullptr);
}

}  // namespace tandem::db
