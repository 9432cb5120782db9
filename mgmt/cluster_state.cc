#include "mgmt/cluster_state.h"

#include <limits>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace tandem::mgmt {
namespace {

using nlohmann::json;
constexpr const char* kRevisionSetting = "cluster_revision";
constexpr size_t kMaxText = 4096;

db::DbError corrupt(const std::string& what) {
  return db::DbError{db::DbErrc::kCorrupt, "cluster snapshot: " + what};
}

// Typed, bounded reads of one snapshot object; the first failure is kept in `error`.
class Reader {
 public:
  Reader(const json& obj, std::string where, std::string* error)
      : obj_(obj), where_(std::move(where)), error_(error) {
    if (!obj_.is_object()) fail("is not an object");
  }
  std::string text(const char* key, bool non_empty = false) {
    const json* v = get(key);
    if (!v) return {};
    if (!v->is_string() || v->get_ref<const std::string&>().size() > kMaxText ||
        (non_empty && v->get_ref<const std::string&>().empty())) {
      fail(std::string(key) + " must be a string of 1-4096 bytes");
      return {};
    }
    return v->get<std::string>();
  }
  uint64_t u64(const char* key, uint64_t max = std::numeric_limits<int64_t>::max()) {
    const json* v = get(key);
    if (!v) return 0;
    if (!v->is_number_unsigned() || v->get<uint64_t>() > max) {
      fail(std::string(key) + " must be an integer in 0.." + std::to_string(max));
      return 0;
    }
    return v->get<uint64_t>();
  }
  int64_t i64(const char* key) {
    const json* v = get(key);
    if (!v) return 0;
    if (!v->is_number_integer()) {
      fail(std::string(key) + " must be an integer");
      return 0;
    }
    return v->get<int64_t>();
  }
  core::Labels labels(const char* key) {
    core::Labels out;
    const json* v = get(key);
    if (!v) return out;
    if (!v->is_object() || v->size() > 256)
      return fail(std::string(key) + " must be an object"), out;
    for (const auto& [k, val] : v->items()) {
      if (!val.is_string() || k.size() > kMaxText ||
          val.get_ref<const std::string&>().size() > kMaxText) {
        fail(std::string(key) + " must hold strings");
        return {};
      }
      out[k] = val.get<std::string>();
    }
    return out;
  }
  std::vector<std::string> strings(const char* key) {
    std::vector<std::string> out;
    const json* v = get(key);
    if (!v) return out;
    if (!v->is_array() || v->size() > 1024) return fail(std::string(key) + " must be a list"), out;
    for (const auto& s : *v) {
      if (!s.is_string() || s.get_ref<const std::string&>().size() > kMaxText) {
        fail(std::string(key) + " must hold strings");
        return {};
      }
      out.push_back(s.get<std::string>());
    }
    return out;
  }

 private:
  const json* get(const char* key) {
    if (!error_->empty()) return nullptr;
    if (!obj_.is_object()) return nullptr;
    auto it = obj_.find(key);
    if (it == obj_.end()) {
      fail(std::string("missing ") + key);
      return nullptr;
    }
    return &*it;
  }
  void fail(const std::string& what) {
    if (error_->empty()) *error_ = where_ + ": " + what;
  }
  const json& obj_;
  std::string where_;
  std::string* error_;
};

struct Parsed {
  int64_t revision = 0;
  std::vector<db::NodeRow> nodes;
  std::vector<db::VolumeRow> volumes;
  std::vector<db::CopyRow> copies;
  std::vector<db::AccessRow> access;
};

const json* array_of(const json& snap, const char* key, size_t max, std::string* err) {
  auto it = snap.find(key);
  if (it == snap.end() || !it->is_array()) {
    *err = std::string(key) + " must be a list";
    return nullptr;
  }
  if (it->size() > max) {
    *err = std::string(key) + " has more than " + std::to_string(max) + " entries";
    return nullptr;
  }
  return &*it;
}

std::optional<Parsed> parse(const json& snap, std::string* err) {
  if (!snap.is_object()) {
    *err = "not an object";
    return std::nullopt;
  }
  Parsed p;
  auto rev = snap.find("revision");
  if (rev == snap.end() || !rev->is_number_integer() || rev->get<int64_t>() < 0) {
    *err = "revision must be a non-negative integer";
    return std::nullopt;
  }
  p.revision = rev->get<int64_t>();
  const json* nodes = array_of(snap, "nodes", kMaxSnapshotNodes, err);
  if (!nodes) return std::nullopt;
  const json* volumes = array_of(snap, "volumes", kMaxSnapshotVolumes, err);
  if (!volumes) return std::nullopt;
  const json* copies = array_of(snap, "copies", kMaxSnapshotCopies, err);
  if (!copies) return std::nullopt;
  const json* access = array_of(snap, "access", kMaxSnapshotVolumes, err);
  if (!access) return std::nullopt;

  std::set<std::string> node_ids, volume_ids, copy_ids;
  for (const auto& j : *nodes) {
    Reader r(j, "nodes[]", err);
    db::NodeRow n;
    n.id = r.text("id", true);
    n.name = r.text("name", true);
    n.address = r.text("address");
    n.api_url = r.text("api_url");
    n.state = r.text("state", true);
    n.iscsi_port = static_cast<uint16_t>(r.u64("iscsi_port", 65535));
    n.repl_port = static_cast<uint16_t>(r.u64("repl_port", 65535));
    n.capacity_bytes = r.u64("capacity_bytes");
    n.free_bytes = r.u64("free_bytes");
    if (!err->empty()) return std::nullopt;
    if (!node_ids.insert(n.id).second) return *err = "duplicate node " + n.id, std::nullopt;
    p.nodes.push_back(std::move(n));
  }
  for (const auto& j : *volumes) {
    Reader r(j, "volumes[]", err);
    db::VolumeRow v;
    v.id = r.text("id", true);
    v.name = r.text("name", true);
    v.size_bytes = r.u64("size_bytes");
    v.block_size = static_cast<uint32_t>(r.u64("block_size", 1u << 20));
    v.class_name = r.text("class_name");
    v.labels = r.labels("labels");
    v.generation = r.u64("generation");
    v.master_node = r.text("master_node");
    v.state = r.text("state", true);
    v.created_ms = r.i64("created_ms");
    v.updated_ms = r.i64("updated_ms");
    if (!err->empty()) return std::nullopt;
    if (!volume_ids.insert(v.id).second) return *err = "duplicate volume " + v.id, std::nullopt;
    p.volumes.push_back(std::move(v));
  }
  for (const auto& j : *copies) {
    Reader r(j, "copies[]", err);
    db::CopyRow c;
    c.id = r.text("id", true);
    c.volume_id = r.text("volume_id", true);
    c.node_id = r.text("node_id", true);
    c.role = r.text("role", true);
    c.state = r.text("state", true);
    c.applied_seq = r.u64("applied_seq");
    c.number = static_cast<uint32_t>(r.u64("number", std::numeric_limits<uint32_t>::max()));
    c.sync_done_bytes = r.u64("sync_done_bytes");
    c.sync_total_bytes = r.u64("sync_total_bytes");
    c.behind_bytes = r.u64("behind_bytes");
    c.updated_ms = r.i64("updated_ms");
    if (!err->empty()) return std::nullopt;
    if (!copy_ids.insert(c.id).second) return *err = "duplicate copy " + c.id, std::nullopt;
    if (!volume_ids.count(c.volume_id) || !node_ids.count(c.node_id)) {
      *err = "copy " + c.id + " names an unknown volume or node";
      return std::nullopt;
    }
    p.copies.push_back(std::move(c));
  }
  for (const auto& j : *access) {
    Reader r(j, "access[]", err);
    db::AccessRow a;
    a.volume_id = r.text("volume_id", true);
    a.initiators = r.strings("initiators");
    a.chap_user = r.text("chap_user");
    a.chap_secret = r.text("chap_secret");
    a.mutual_user = r.text("mutual_user");
    a.mutual_secret = r.text("mutual_secret");
    if (!err->empty()) return std::nullopt;
    if (!volume_ids.count(a.volume_id)) {
      *err = "access row names an unknown volume " + a.volume_id;
      return std::nullopt;
    }
    p.access.push_back(std::move(a));
  }
  return p;
}

template <class T, class F>
db::DbResult<void> each(const std::vector<T>& rows, F f) {
  for (const auto& r : rows) {
    if (auto x = f(r); !x) return x;
  }
  return {};
}

}  // namespace

db::DbResult<int64_t> cluster_revision(db::Tx& tx) { return tx.last_event_seq(); }

db::DbResult<nlohmann::json> cluster_snapshot(db::Tx& tx) {
  auto rev = tx.last_event_seq();
  if (!rev) return core::fail(rev.error());
  auto nodes = tx.list_nodes();
  if (!nodes) return core::fail(nodes.error());
  auto volumes = tx.list_volumes();
  if (!volumes) return core::fail(volumes.error());
  auto copies = tx.list_copies();
  if (!copies) return core::fail(copies.error());
  auto access = tx.list_access();
  if (!access) return core::fail(access.error());
  json jn = json::array(), jv = json::array(), jc = json::array(), ja = json::array();
  for (const auto& n : *nodes) {
    jn.push_back({{"id", n.id},
                  {"name", n.name},
                  {"address", n.address},
                  {"api_url", n.api_url},
                  {"state", n.state},
                  {"iscsi_port", n.iscsi_port},
                  {"repl_port", n.repl_port},
                  {"capacity_bytes", n.capacity_bytes},
                  {"free_bytes", n.free_bytes}});
  }
  for (const auto& v : *volumes) {
    jv.push_back({{"id", v.id},
                  {"name", v.name},
                  {"size_bytes", v.size_bytes},
                  {"block_size", v.block_size},
                  {"class_name", v.class_name},
                  {"labels", v.labels},
                  {"generation", v.generation},
                  {"master_node", v.master_node},
                  {"state", v.state},
                  {"created_ms", v.created_ms},
                  {"updated_ms", v.updated_ms}});
  }
  for (const auto& c : *copies) {
    jc.push_back({{"id", c.id},
                  {"volume_id", c.volume_id},
                  {"node_id", c.node_id},
                  {"role", c.role},
                  {"state", c.state},
                  {"applied_seq", c.applied_seq},
                  {"number", c.number},
                  {"sync_done_bytes", c.sync_done_bytes},
                  {"sync_total_bytes", c.sync_total_bytes},
                  {"behind_bytes", c.behind_bytes},
                  {"updated_ms", c.updated_ms}});
  }
  for (const auto& a : *access) {
    ja.push_back({{"volume_id", a.volume_id},
                  {"initiators", a.initiators},
                  {"chap_user", a.chap_user},
                  {"chap_secret", a.chap_secret},
                  {"mutual_user", a.mutual_user},
                  {"mutual_secret", a.mutual_secret}});
  }
  return json{{"revision", *rev}, {"nodes", jn}, {"volumes", jv}, {"copies", jc}, {"access", ja}};
}

db::DbResult<void> apply_cluster_snapshot(db::Tx& tx, const nlohmann::json& snap) {
  std::string err;
  auto p = parse(snap, &err);
  if (!p) return core::fail(corrupt(err));
  std::set<std::string> node_ids, volume_ids, copy_ids, access_ids;
  for (const auto& n : p->nodes) node_ids.insert(n.id);
  for (const auto& v : p->volumes) volume_ids.insert(v.id);
  for (const auto& c : p->copies) copy_ids.insert(c.id);
  for (const auto& a : p->access) access_ids.insert(a.volume_id);

  // Deletes first, children before parents, so a recreated name or a moved copy does not
  // collide with the row it replaces.
  auto copies = tx.list_copies();
  if (!copies) return core::fail(copies.error());
  for (const auto& c : *copies) {
    if (copy_ids.count(c.id)) continue;
    if (auto d = tx.delete_copy(c.id); !d) return d;
  }
  auto access = tx.list_access();
  if (!access) return core::fail(access.error());
  for (const auto& a : *access) {
    if (access_ids.count(a.volume_id)) continue;
    if (auto d = tx.delete_access(a.volume_id); !d) return d;
  }
  auto volumes = tx.list_volumes();
  if (!volumes) return core::fail(volumes.error());
  for (const auto& v : *volumes) {
    if (volume_ids.count(v.id)) continue;
    if (auto d = tx.delete_volume(v.id); !d) return d;
  }
  auto nodes = tx.list_nodes();
  if (!nodes) return core::fail(nodes.error());
  for (const auto& n : *nodes) {
    if (node_ids.count(n.id)) continue;
    if (auto d = tx.delete_node(n.id); !d) return d;
  }
  // A renamed node or volume could still collide with a kept row's old name: move kept
  // rows whose name another id now holds out of the way first.
  for (const auto& n : p->nodes) {
    auto by_name = tx.node_by_name(n.name);
    if (!by_name) return core::fail(by_name.error());
    if (*by_name && (*by_name)->id != n.id) {
      db::NodeRow moved = **by_name;
      moved.name = "~" + moved.id;
      if (auto u = tx.upsert_node(moved); !u) return u;
    }
  }
  for (const auto& v : p->volumes) {
    auto by_name = tx.volume_by_name(v.name);
    if (!by_name) return core::fail(by_name.error());
    if (*by_name && (*by_name)->id != v.id) {
      db::VolumeRow moved = **by_name;
      moved.name = "~" + moved.id;
      if (auto u = tx.put_volume(moved); !u) return u;
    }
  }
  if (auto r = each(p->nodes, [&](const db::NodeRow& n) { return tx.upsert_node(n); }); !r) {
    return r;
  }
  if (auto r = each(p->volumes, [&](const db::VolumeRow& v) { return tx.put_volume(v); }); !r) {
    return r;
  }
  // Copy numbers are unique per volume: clear moved numbers out of the way before the puts.
  for (const auto& c : p->copies) {
    auto existing = tx.copies_of(c.volume_id);
    if (!existing) return core::fail(existing.error());
    for (auto e : *existing) {
      if (e.id != c.id && (e.number == c.number || e.node_id == c.node_id)) {
        if (auto d = tx.delete_copy(e.id); !d) return d;
      }
    }
  }
  if (auto r = each(p->copies, [&](const db::CopyRow& c) { return tx.put_copy(c); }); !r) {
    return r;
  }
  if (auto r = each(p->access, [&](const db::AccessRow& a) { return tx.set_access(a); }); !r) {
    return r;
  }
  return tx.set_setting(kRevisionSetting, std::to_string(p->revision));
}

db::DbResult<int64_t> applied_revision(db::Tx& tx) {
  auto s = tx.setting(kRevisionSetting);
  if (!s) return core::fail(s.error());
  if (!*s) return int64_t{-1};
  try {
    return static_cast<int64_t>(std::stoll(**s));
  } catch (...) {
    return int64_t{-1};
  }
}

}  // namespace tandem::mgmt
