#include "mgmt/volume_service.h"

#include <spdlog/spdlog.h>

#include <set>
#include <tuple>

#include "mgmt/cluster_service.h"
#include "mgmt/placement.h"

namespace tandem::mgmt {
namespace {

using db::DbResult;
using db::Tx;

ApiError from_db(const db::DbError& e) {
  switch (e.code) {
    case db::DbErrc::kConflict: return ApiError::conflict(e.message);
    case db::DbErrc::kNotFound: return ApiError::not_found(e.message);
    default: return ApiError::internal("catalogue: " + e.message);
  }
}

ApiError from_store(const backend::StoreError& e) {
  if (e.code == backend::StoreErrc::kNoSpace) {
    return ApiError{507, "insufficient_storage", e.message};
  }
  return ApiError::internal("store: " + e.message);
}

ApiError from_invalid(const core::InvalidValue& e) {
  ApiError err = ApiError::invalid(e.message);
  err.details["field"] = e.field;
  return err;
}

// Runs fn in one catalogue transaction and converts its error. The callback returns an
// ApiResult; a failure rolls back.
template <class T, class F>
ApiResult<T> in_tx(db::Catalogue& cat, F fn) {
  std::optional<ApiError> api_err;
  auto r = cat.transact<T>([&](Tx& tx) -> DbResult<T> {
    ApiResult<T> inner = fn(tx);
    if (!inner) {
      api_err = inner.error();
      return core::fail(db::DbError{db::DbErrc::kIo, "rolled back"});
    }
    if constexpr (std::is_void_v<T>) {
      return {};
    } else {
      return std::move(inner).value();
    }
  });
  if (api_err) return core::fail(*api_err);
  if (!r) return core::fail(from_db(r.error()));
  if constexpr (std::is_void_v<T>) {
    return {};
  } else {
    return std::move(r).value();
  }
}

ApiError insufficient_nodes(const core::VolumeSettings& s, int available) {
  int need = core::nodes_required(s);
  ApiError e{409, "insufficient_nodes",
             "volume needs " + std::to_string(need) + " nodes (master + " +
                 std::to_string(s.replicas) + " replicas) but the cluster has " +
                 std::to_string(available) + " online; its failure mode '" +
                 core::to_string(s.failure_mode) + "' needs " +
                 std::to_string(core::nodes_for_ha(s)) + " for high availability"};
  e.details["nodes_required"] = need;
  e.details["nodes_for_ha"] = core::nodes_for_ha(s);
  e.details["nodes_available"] = available;
  return e;
}

}  // namespace

VolumeService::VolumeService(db::Catalogue& cat, backend::IoPool& pool, std::string volumes_dir,
                             std::string node_id, std::string node_name)
    : cat_(cat),
      pool_(pool),
      store_(std::move(volumes_dir)),
      node_id_(std::move(node_id)),
      node_name_(std::move(node_name)) {}

void VolumeService::set_in_use_check(std::function<bool(const std::string&)> f) {
  std::lock_guard lock(mu_);
  in_use_ = std::move(f);
}

void VolumeService::set_deleted_hook(std::function<void(const std::string&)> f) {
  std::lock_guard lock(mu_);
  deleted_ = std::move(f);
}

void VolumeService::set_changed_hook(std::function<void()> f) {
  std::lock_guard lock(mu_);
  changed_ = std::move(f);
}

void VolumeService::notify_changed() {
  std::function<void()> f;
  {
    std::lock_guard lock(mu_);
    f = changed_;
  }
  if (f) f();
}

namespace {

std::string name_of(const std::vector<db::NodeRow>& nodes, const std::string& id) {
  for (const auto& n : nodes) {
    if (n.id == id) return n.name;
  }
  return id;
}

std::string join_names(const std::vector<db::NodeRow>& nodes, const std::vector<std::string>& ids) {
  std::string out;
  for (const auto& id : ids) out += (out.empty() ? "" : ", ") + name_of(nodes, id);
  return out;
}

}  // namespace

ApiResult<void> VolumeService::resize_replicas(Tx& tx, const db::VolumeRow& row,
                                               const core::VolumeSettings& settings, int want) {
  auto nodes = tx.list_nodes();
  if (!nodes) return core::fail(from_db(nodes.error()));
  auto copies = tx.copies_of(row.id);
  if (!copies) return core::fail(from_db(copies.error()));
  int have = 0;
  std::set<std::string> holders;
  for (const auto& c : *copies) {
    holders.insert(c.node_id);
    have += c.role != "master";
  }
  auto pnodes = placement_nodes(*nodes);
  if (want > have) {
    auto placed = place_replicas(pnodes, holders, want - have);
    if (static_cast<int>(placed.size()) < want - have) {
      int online = 0;
      for (const auto& n : *nodes) online += n.state == "online";
      return core::fail(insufficient_nodes(settings, online));
    }
    auto number = tx.next_copy_number(row.id);
    if (!number) return core::fail(from_db(number.error()));
    for (const auto& node : placed) {
      db::CopyRow c;
      c.id = core::new_uuid();
      c.volume_id = row.id;
      c.node_id = node;
      c.role = "replica";
      c.state = db::kCopySyncing;
      c.number = (*number)++;
      c.sync_total_bytes = row.size_bytes;
      if (auto r = tx.insert_copy(c); !r) return core::fail(from_db(r.error()));
      if (auto r = tx.append_event({0, 0, row.name, name_of(*nodes, node), "copy-added",
                                    "replica copy " + std::to_string(c.number) + " added on " +
                                        name_of(*nodes, node) + " (syncing)"});
          !r) {
        return core::fail(from_db(r.error()));
      }
    }
  } else if (want < have) {
    for (const auto& id : replicas_to_remove(*copies, pnodes, have - want)) {
      auto it = std::find_if(copies->begin(), copies->end(),
                             [&](const db::CopyRow& c) { return c.id == id; });
      if (auto r = tx.delete_copy(id); !r) return core::fail(from_db(r.error()));
      if (auto r = tx.append_event({0, 0, row.name, name_of(*nodes, it->node_id), "copy-removed",
                                    "replica copy " + std::to_string(it->number) + " on " +
                                        name_of(*nodes, it->node_id) + " removed (" +
                                        it->state + ")"});
          !r) {
        return core::fail(from_db(r.error()));
      }
    }
  } else {
    return {};
  }
  if (auto h = refresh_volume_health(tx, row.id, node_name_); !h) {
    return core::fail(from_db(h.error()));
  }
  return {};
}

ApiResult<int> VolumeService::online_nodes(Tx& tx) {
  auto nodes = tx.list_nodes();
  if (!nodes) return core::fail(from_db(nodes.error()));
  int n = 0;
  for (const auto& node : *nodes) n += node.state == "online";
  return n;
}

ApiResult<VolumeView> VolumeService::view_of(Tx& tx, db::VolumeRow row) {
  VolumeView v;
  core::Labels class_labels;
  if (!row.class_name.empty()) {
    auto c = tx.class_by_name(row.class_name);
    if (!c) return core::fail(from_db(c.error()));
    if (*c) class_labels = (*c)->labels;
  }
  v.effective = core::merge_labels(class_labels, row.labels);
  auto s = core::resolve_settings(v.effective);
  v.settings = s ? *s : core::VolumeSettings{};
  auto copies = tx.copies_of(row.id);
  if (!copies) return core::fail(from_db(copies.error()));
  v.copies = std::move(*copies);
  v.row = std::move(row);
  return v;
}

ApiResult<void> VolumeService::recover() {
  std::lock_guard lock(mu_);
  if (auto r = store_.init(); !r) return core::fail(from_store(r.error()));
  return in_tx<void>(cat_, [&](Tx& tx) -> ApiResult<void> {
    auto copies = tx.copies_on(node_id_);
    if (!copies) return core::fail(from_db(copies.error()));
    auto vols = tx.list_volumes();
    if (!vols) return core::fail(from_db(vols.error()));
    for (const auto& c : *copies) {
      // Only a master copy is served from here; a replica's file (and its absence) is the
      // replication data plane's business, not a reason to take the volume offline.
      if (c.role != "master") continue;
      auto it = std::find_if(vols->begin(), vols->end(),
                             [&](const db::VolumeRow& v) { return v.id == c.volume_id; });
      if (it == vols->end()) continue;
      auto vol = backend::FileVolume::open(store_.path_of(it->id), it->id, it->block_size, pool_);
      db::VolumeRow row = *it;
      if (!vol) {
        spdlog::error("volume={} id={} image missing at {}: marking offline", row.name, row.id,
                      store_.path_of(row.id));
        if (row.state != "offline") {
          row.state = "offline";
          if (auto r = tx.update_volume(row); !r) return core::fail(from_db(r.error()));
          if (auto r = tx.append_event({0, 0, row.name, node_name_, "volume-offline",
                                        "image file missing at start-up"});
              !r) {
            return core::fail(from_db(r.error()));
          }
        }
        continue;
      }
      if (row.state == "offline") {
        row.state = "healthy";
        if (auto r = tx.update_volume(row); !r) return core::fail(from_db(r.error()));
        if (auto r = tx.append_event(
                {0, 0, row.name, node_name_, "volume-online", "image file found at start-up"});
            !r) {
          return core::fail(from_db(r.error()));
        }
      }
      open_[row.id] = std::move(vol);
      spdlog::info("volume={} id={} recovered ({} bytes)", row.name, row.id, row.size_bytes);
    }
    return {};
  });
}

ApiResult<VolumeView> VolumeService::create(const CreateVolume& spec) {
  if (!core::valid_volume_name(spec.name)) {
    ApiError e = ApiError::invalid("volume name must match [a-z0-9][a-z0-9-]{0,62}");
    e.details["field"] = "name";
    return core::fail(e);
  }
  if (auto r = core::validate_block_size(spec.block_size); !r) {
    return core::fail(from_invalid(r.error()));
  }
  if (auto r = core::validate_size(spec.size_bytes, spec.block_size); !r) {
    return core::fail(from_invalid(r.error()));
  }
  std::unique_lock lock(mu_);
  // Decide under the catalogue, create the file, then commit: a failure on either side
  // leaves neither a row without a file nor a file without a row.
  db::VolumeRow row;
  row.id = core::new_uuid();
  row.name = spec.name;
  row.size_bytes = spec.size_bytes;
  row.block_size = spec.block_size;
  row.class_name = spec.class_name;
  row.labels = spec.labels;
  row.state = "healthy";
  bool file_created = false;
  auto result = in_tx<VolumeView>(cat_, [&](Tx& tx) -> ApiResult<VolumeView> {
    if (auto existing = tx.volume_by_name(spec.name); !existing) {
      return core::fail(from_db(existing.error()));
    } else if (*existing) {
      return core::fail(ApiError::conflict("volume '" + spec.name + "' already exists"));
    }
    core::Labels class_labels;
    if (!spec.class_name.empty()) {
      auto c = tx.class_by_name(spec.class_name);
      if (!c) return core::fail(from_db(c.error()));
      if (!*c) {
        ApiError e = ApiError::invalid("storage class '" + spec.class_name + "' does not exist");
        e.details["field"] = "class";
        return core::fail(e);
      }
      class_labels = (*c)->labels;
    }
    // Own labels may be partial (a threshold whose mode comes from the class): check their
    // keys here; only the merged set must resolve.
    if (auto r = core::validate_label_keys(spec.labels); !r) {
      return core::fail(from_invalid(r.error()));
    }
    auto eff = core::merge_labels(class_labels, spec.labels);
    auto settings = core::resolve_settings(eff);
    if (!settings) return core::fail(from_invalid(settings.error()));
    auto nodes = tx.list_nodes();
    if (!nodes) return core::fail(from_db(nodes.error()));
    std::string master_name =
        !spec.node.empty() ? spec.node : !spec.origin_node.empty() ? spec.origin_node : node_name_;
    auto master = std::find_if(nodes->begin(), nodes->end(),
                               [&](const db::NodeRow& n) { return n.name == master_name; });
    if (master == nodes->end() || master->state != "online") {
      ApiError e = ApiError::invalid(
          "node '" + master_name + "' " +
          (master == nodes->end() ? "is not a member of the cluster" : "is " + master->state));
      e.details["field"] = "node";
      return core::fail(e);
    }
    row.master_node = master->id;
    auto online = online_nodes(tx);
    if (!online) return core::fail(online.error());
    if (*online < core::nodes_required(*settings)) {
      return core::fail(insufficient_nodes(*settings, *online));
    }
    auto placed = place_replicas(placement_nodes(*nodes), {master->id}, settings->replicas);
    if (static_cast<int>(placed.size()) < settings->replicas) {
      return core::fail(insufficient_nodes(*settings, *online));
    }
    // The master node creates its file; here only when that is us.
    if (row.master_node == node_id_) {
      if (auto r = store_.create(row.id, row.size_bytes); !r) {
        return core::fail(from_store(r.error()));
      }
      file_created = true;
    }
    if (auto r = tx.insert_volume(row); !r) return core::fail(from_db(r.error()));
    db::CopyRow m;
    m.id = core::new_uuid();
    m.volume_id = row.id;
    m.node_id = row.master_node;
    m.role = "master";
    m.state = db::kCopyInSync;
    m.number = 1;
    if (auto r = tx.insert_copy(m); !r) return core::fail(from_db(r.error()));
    // A fresh volume is all zeros everywhere, so its replicas start identical: in-sync.
    uint32_t number = 2;
    for (const auto& node : placed) {
      db::CopyRow c = m;
      c.id = core::new_uuid();
      c.node_id = node;
      c.role = "replica";
      c.number = number++;
      if (auto r = tx.insert_copy(c); !r) return core::fail(from_db(r.error()));
    }
    std::string where = "; master on " + master->name;
    if (!placed.empty()) where += ", replicas on " + join_names(*nodes, placed);
    if (auto r = tx.append_event({0, 0, row.name, node_name_, "volume-created",
                                  "created " + core::format_size(row.size_bytes) + " volume (" +
                                      std::to_string(settings->replicas) + " replicas, " +
                                      core::to_string(settings->failure_mode) + ")" + where});
        !r) {
      return core::fail(from_db(r.error()));
    }
    return view_of(tx, row);
  });
  if (!result) {
    if (file_created) (void)store_.remove(row.id);
    return result;
  }
  if (file_created) {
    if (!source_) {
      auto vol = backend::FileVolume::open(store_.path_of(row.id), row.id, row.block_size, pool_);
      if (vol) open_[row.id] = std::move(vol);
    }
  }
  spdlog::info("volume={} id={} created size={} block_size={} master={}", row.name, row.id,
               row.size_bytes, row.block_size, row.master_node);
  lock.unlock();
  notify_changed();
  return result;
}

ApiResult<VolumeView> VolumeService::update(const std::string& name, const UpdateVolume& change) {
  std::unique_lock lock(mu_);
  std::string grown_id;
  bool grow_file = false;
  auto result = in_tx<VolumeView>(cat_, [&](Tx& tx) -> ApiResult<VolumeView> {
    auto found = tx.volume_by_name(name);
    if (!found) return core::fail(from_db(found.error()));
    if (!*found) return core::fail(ApiError::not_found("volume '" + name + "' not found"));
    db::VolumeRow row = **found;
    std::vector<std::string> what;
    if (change.size_bytes && *change.size_bytes != row.size_bytes) {
      if (*change.size_bytes < row.size_bytes) {
        ApiError e = ApiError::invalid("volumes can only grow (current size " +
                                       std::to_string(row.size_bytes) + " bytes)");
        e.details["field"] = "size";
        return core::fail(e);
      }
      if (auto r = core::validate_size(*change.size_bytes, row.block_size); !r) {
        return core::fail(from_invalid(r.error()));
      }
      what.push_back("size " + core::format_size(row.size_bytes) + " -> " +
                     core::format_size(*change.size_bytes));
      row.size_bytes = *change.size_bytes;
      grown_id = row.id;
    }
    auto before = view_of(tx, row);
    if (!before) return core::fail(before.error());
    for (const auto& [k, v] : change.labels) {
      if (v) {
        auto it = row.labels.find(k);
        if (it == row.labels.end() || it->second != *v) what.push_back(k + "=" + *v);
        row.labels[k] = *v;
      } else if (row.labels.erase(k)) {
        what.push_back(k + " removed");
      }
    }
    if (auto r = core::validate_label_keys(row.labels); !r) {
      return core::fail(from_invalid(r.error()));
    }
    auto after = view_of(tx, row);
    if (!after) return core::fail(after.error());
    auto settings = core::resolve_settings(after->effective);
    if (!settings) return core::fail(from_invalid(settings.error()));
    if (settings->replicas > before->settings.replicas) {
      auto online = online_nodes(tx);
      if (!online) return core::fail(online.error());
      if (*online < core::nodes_required(*settings)) {
        return core::fail(insufficient_nodes(*settings, *online));
      }
    }
    if (what.empty()) return after;
    if (!grown_id.empty() && (settings->replicas > 0 || before->settings.replicas > 0)) {
      // The replication engines and region maps are sized at start; resizing them under a
      // live stream is not built yet. Say so instead of growing only some copies.
      ApiError e{501, "not_implemented",
                 "growing a volume with replicas is not supported yet: set tandem/replicas=0, "
                 "grow it, then add the replicas back (they resync)"};
      e.details["field"] = "size";
      return core::fail(e);
    }
    if (!grown_id.empty() && store_.exists(row.id)) {
      // Only a copy held here has a file to grow; other nodes grow theirs.
      if (auto r = store_.grow(row.id, row.size_bytes); !r) {
        return core::fail(from_store(r.error()));
      }
      grow_file = true;
    }
    if (auto r = tx.update_volume(row); !r) return core::fail(from_db(r.error()));
    if (settings->replicas != before->settings.replicas) {
      if (auto r = resize_replicas(tx, row, *settings, settings->replicas); !r) {
        return core::fail(r.error());
      }
      auto state = tx.volume_by_id(row.id);
      if (!state) return core::fail(from_db(state.error()));
      if (*state) row.state = (*state)->state;
      auto copies = tx.copies_of(row.id);
      if (!copies) return core::fail(from_db(copies.error()));
      after->copies = std::move(*copies);
    }
    std::string msg;
    for (const auto& w : what) msg += (msg.empty() ? "" : ", ") + w;
    if (auto r = tx.append_event({0, 0, row.name, node_name_, "volume-updated", msg}); !r) {
      return core::fail(from_db(r.error()));
    }
    after->row = row;
    after->settings = *settings;
    return after;
  });
  if (result && grow_file) {
    if (auto it = open_.find(grown_id); it != open_.end()) it->second->refresh_capacity();
  }
  lock.unlock();
  if (result) notify_changed();
  return result;
}

ApiResult<void> VolumeService::remove(const std::string& name) {
  std::unique_lock lock(mu_);
  std::string id;
  bool held_here = false;
  auto r = in_tx<void>(cat_, [&](Tx& tx) -> ApiResult<void> {
    auto found = tx.volume_by_name(name);
    if (!found) return core::fail(from_db(found.error()));
    if (!*found) return core::fail(ApiError::not_found("volume '" + name + "' not found"));
    id = (*found)->id;
    if (in_use_ && in_use_(name)) {
      return core::fail(
          ApiError::conflict("volume '" + name + "' has initiators logged in; log them out first"));
    }
    auto copies = tx.copies_of(id);
    if (!copies) return core::fail(from_db(copies.error()));
    for (const auto& c : *copies) held_here = held_here || c.node_id == node_id_;
    if (auto d = tx.delete_volume(id); !d) return core::fail(from_db(d.error()));
    if (auto e = tx.append_event({0, 0, name, node_name_, "volume-deleted", "deleted"}); !e) {
      return core::fail(from_db(e.error()));
    }
    return {};
  });
  if (!r) return r;
  open_.erase(id);
  if (deleted_) deleted_(id);
  if (held_here || store_.exists(id)) {
    if (auto s = store_.remove(id); !s) {
      spdlog::error("volume={} id={} row deleted but file removal failed: {}", name, id,
                    s.error().message);
    }
  }
  spdlog::info("volume={} id={} deleted", name, id);
  lock.unlock();
  notify_changed();
  return {};
}

ApiResult<VolumeView> VolumeService::get(const std::string& name) {
  return in_tx<VolumeView>(cat_, [&](Tx& tx) -> ApiResult<VolumeView> {
    auto found = tx.volume_by_name(name);
    if (!found) return core::fail(from_db(found.error()));
    if (!*found) return core::fail(ApiError::not_found("volume '" + name + "' not found"));
    return view_of(tx, **found);
  });
}

namespace {

bool valid_initiator_name(const std::string& n) {
  // RFC 7143 §4.2.7: iqn., eui. or naa. names, at most 223 bytes, no spaces or controls.
  if (n.size() < 5 || n.size() > 223) return false;
  if (n.rfind("iqn.", 0) != 0 && n.rfind("eui.", 0) != 0 && n.rfind("naa.", 0) != 0) return false;
  for (unsigned char c : n) {
    if (c <= 0x20 || c >= 0x7f) return false;
  }
  return true;
}

std::optional<ApiError> check_chap(const std::pair<std::string, std::string>& c,
                                   const char* field) {
  // RFC 7143 §12.1.3 warns against short secrets; 12 bytes (96 bits) is the usual floor.
  if (c.first.empty() || c.first.size() > 255) {
    return ApiError{422, "invalid_value", std::string(field) + " user must be 1-255 bytes",
                    {{"field", field}}};
  }
  if (c.second.size() < 12 || c.second.size() > 255) {
    return ApiError{422, "invalid_value", std::string(field) + " secret must be 12-255 bytes",
                    {{"field", field}}};
  }
  return std::nullopt;
}

}  // namespace

ApiResult<db::AccessRow> VolumeService::access(const std::string& name) {
  return in_tx<db::AccessRow>(cat_, [&](Tx& tx) -> ApiResult<db::AccessRow> {
    auto found = tx.volume_by_name(name);
    if (!found) return core::fail(from_db(found.error()));
    if (!*found) return core::fail(ApiError::not_found("volume '" + name + "' not found"));
    auto a = tx.access_of((*found)->id);
    if (!a) return core::fail(from_db(a.error()));
    return std::move(*a);
  });
}

ApiResult<db::AccessRow> VolumeService::set_access(const std::string& name,
                                                   const AccessChange& change) {
  for (const auto& i : change.initiators) {
    if (!valid_initiator_name(i)) {
      return core::fail(ApiError{422, "invalid_value",
                                 "'" + i + "' is not an iSCSI initiator name (iqn./eui./naa.)",
                                 {{"field", "initiators"}}});
    }
  }
  if (change.chap) {
    if (auto e = check_chap(*change.chap, "chap")) return core::fail(*e);
  }
  if (change.mutual_chap) {
    if (!change.chap) {
      return core::fail(ApiError{422, "invalid_value", "mutual CHAP needs CHAP as well",
                                 {{"field", "mutual_chap"}}});
    }
    if (auto e = check_chap(*change.mutual_chap, "mutual_chap")) return core::fail(*e);
    if (change.mutual_chap->second == change.chap->second) {
      // RFC 7143 §12.1.3: the two directions must not share a secret.
      return core::fail(ApiError{422, "invalid_value",
                                 "mutual CHAP secret must differ from the CHAP secret",
                                 {{"field", "mutual_chap"}}});
    }
  }
  std::unique_lock lock(mu_);
  auto result = in_tx<db::AccessRow>(cat_, [&](Tx& tx) -> ApiResult<db::AccessRow> {
    auto found = tx.volume_by_name(name);
    if (!found) return core::fail(from_db(found.error()));
    if (!*found) return core::fail(ApiError::not_found("volume '" + name + "' not found"));
    db::AccessRow a;
    a.volume_id = (*found)->id;
    a.initiators = change.initiators;
    if (change.chap) std::tie(a.chap_user, a.chap_secret) = *change.chap;
    if (change.mutual_chap) std::tie(a.mutual_user, a.mutual_secret) = *change.mutual_chap;
    if (auto r = tx.set_access(a); !r) return core::fail(from_db(r.error()));
    // The event names what changed, never a secret.
    std::string msg = a.initiators.empty()
                          ? "any initiator"
                          : std::to_string(a.initiators.size()) + " allowed initiator(s)";
    msg += change.chap ? ", CHAP user " + a.chap_user : ", no CHAP";
    if (change.mutual_chap) msg += ", mutual CHAP user " + a.mutual_user;
    if (auto e = tx.append_event({0, 0, name, node_name_, "volume-access-changed", msg}); !e) {
      return core::fail(from_db(e.error()));
    }
    return a;
  });
  lock.unlock();
  if (result) notify_changed();
  return result;
}

ApiResult<std::vector<VolumeView>> VolumeService::list() {
  return in_tx<std::vector<VolumeView>>(cat_, [&](Tx& tx) -> ApiResult<std::vector<VolumeView>> {
    auto rows = tx.list_volumes();
    if (!rows) return core::fail(from_db(rows.error()));
    std::vector<VolumeView> out;
    for (auto& row : *rows) {
      auto v = view_of(tx, std::move(row));
      if (!v) return core::fail(v.error());
      out.push_back(std::move(*v));
    }
    return out;
  });
}

void VolumeService::set_volume_source(
    std::function<std::shared_ptr<core::BlockVolume>(const std::string&)> f) {
  std::lock_guard lock(mu_);
  source_ = std::move(f);
  open_.clear();  // the source serves them now; no second handle on the same files
}

std::shared_ptr<core::BlockVolume> VolumeService::open_volume(const std::string& volume_id) {
  std::function<std::shared_ptr<core::BlockVolume>(const std::string&)> source;
  {
    std::lock_guard lock(mu_);
    source = source_;
  }
  if (source) return source(volume_id);
  std::lock_guard lock(mu_);
  auto it = open_.find(volume_id);
  return it == open_.end() ? nullptr : it->second;
}

void VolumeService::flush_all() {
  std::lock_guard lock(mu_);
  for (auto& [id, vol] : open_) {
    // Synchronous on purpose: called once at shutdown, after the servers stopped.
    std::mutex m;
    std::condition_variable cv;
    bool done = false;
    vol->flush([&](core::IoResult) {
      std::lock_guard l(m);
      done = true;
      cv.notify_one();
    });
    std::unique_lock l(m);
    cv.wait(l, [&] { return done; });
  }
}

}  // namespace tandem::mgmt
