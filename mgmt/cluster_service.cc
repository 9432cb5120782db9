#include "mgmt/cluster_service.h"

#include <openssl/crypto.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <map>
#include <optional>
#include <set>

#include "core/volume_spec.h"
#include "mgmt/api/router.h"
#include "mgmt/cluster_state.h"
#include "mgmt/controller_policy.h"
#include "mgmt/placement.h"

namespace tandem::mgmt {
namespace {

bool same_hash(const std::string& a, const std::string& b) {
  return !a.empty() && a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

std::string bearer_hash(const std::string& bearer) { return sha256_hex(bearer); }

ApiError unauthorized(const std::string& what) { return ApiError{401, "unauthorized", what}; }

bool known_volume_state(const std::string& s) {
  return s == "healthy" || s == "degraded" || s == "read-only" || s == "halted";
}

bool known_copy_state(const std::string& s) {
  return s == db::kCopyInSync || s == db::kCopySyncing || s == db::kCopyOutOfSync ||
         s == db::kCopyOffline;
}

// Checks the node's bearer token; on failure sets *err and returns nullopt.
db::DbResult<std::optional<db::NodeRow>> authenticate(db::Tx& tx, const std::string& node_name,
                                                      const std::string& bearer,
                                                      std::optional<ApiError>* err) {
  auto node = tx.node_by_name(node_name);
  if (!node) return core::fail(node.error());
  if (!*node) {
    *err = ApiError::not_found("node '" + node_name + "' has not joined");
    return std::optional<db::NodeRow>();
  }
  auto hash = tx.node_token_hash((*node)->id);
  if (!hash) return core::fail(hash.error());
  if (!same_hash(*hash, bearer_hash(bearer))) {
    *err = unauthorized("wrong node token");
    return std::optional<db::NodeRow>();
  }
  return std::move(*node);
}

}  // namespace

nlohmann::json copy_reports_json(const std::vector<CopyReport>& reports) {
  nlohmann::json out = nlohmann::json::array();
  for (const auto& r : reports) {
    out.push_back({{"volume_id", r.volume_id},
                   {"number", r.number},
                   {"state", r.state},
                   {"generation", r.generation},
                   {"report_seq", r.report_seq},
                   {"applied_seq", r.applied_seq},
                   {"sync_done_bytes", r.sync_done_bytes},
                   {"sync_total_bytes", r.sync_total_bytes},
                   {"behind_bytes", r.behind_bytes}});
    if (!r.volume_state.empty()) out.back()["volume_state"] = r.volume_state;
  }
  return out;
}

core::Result<std::vector<CopyReport>, ApiError> parse_copy_reports(const nlohmann::json& j,
                                                                   const char* field) {
  auto bad = [&](const std::string& what) {
    return core::fail(ApiError{422, "invalid_value", what, {{"field", field}}});
  };
  if (!j.is_array()) return bad(std::string(field) + " must be a list");
  if (j.size() > kMaxCopyReports) {
    return bad(std::string(field) + " may hold at most " + std::to_string(kMaxCopyReports));
  }
  std::vector<CopyReport> out;
  out.reserve(j.size());
  auto u64 = [](const nlohmann::json& o, const char* k, uint64_t* v) {
    auto it = o.find(k);
    if (it == o.end()) return true;  // counters default to 0
    if (!it->is_number_unsigned()) return false;
    *v = it->get<uint64_t>();
    return *v <= static_cast<uint64_t>(INT64_MAX);  // SQLite stores them signed
  };
  for (const auto& e : j) {
    if (!e.is_object()) return bad("each copy report must be an object");
    CopyReport r;
    auto vid = e.find("volume_id");
    if (vid == e.end() || !vid->is_string() || vid->get_ref<const std::string&>().empty() ||
        vid->get_ref<const std::string&>().size() > 64) {
      return bad("volume_id must be a string of 1-64 bytes");
    }
    r.volume_id = vid->get<std::string>();
    auto num = e.find("number");
    if (num == e.end() || !num->is_number_unsigned() || num->get<uint64_t>() < 1 ||
        num->get<uint64_t>() > UINT32_MAX) {
      return bad("number must be a copy number (1-4294967295)");
    }
    r.number = static_cast<uint32_t>(num->get<uint64_t>());
    auto st = e.find("state");
    if (st == e.end() || !st->is_string() || !known_copy_state(st->get<std::string>())) {
      return bad("state must be in-sync, syncing, out-of-sync or offline");
    }
    r.state = st->get<std::string>();
    if (auto vs = e.find("volume_state"); vs != e.end()) {
      if (!vs->is_string() || !known_volume_state(vs->get<std::string>())) {
        return bad("volume_state must be healthy, degraded, read-only or halted");
      }
      r.volume_state = vs->get<std::string>();
    }
    auto gen = e.find("generation");
    if (gen == e.end() || !gen->is_number_unsigned() || gen->get<uint64_t>() < 1 ||
        gen->get<uint64_t>() > static_cast<uint64_t>(INT64_MAX)) {
      return bad("generation must be the reporting master's generation (a positive integer)");
    }
    r.generation = gen->get<uint64_t>();
    if (!u64(e, "report_seq", &r.report_seq) || !u64(e, "applied_seq", &r.applied_seq) ||
        !u64(e, "sync_done_bytes", &r.sync_done_bytes) ||
        !u64(e, "sync_total_bytes", &r.sync_total_bytes) ||
        !u64(e, "behind_bytes", &r.behind_bytes)) {
      return bad(
          "report_seq, applied_seq, sync_done_bytes, sync_total_bytes and behind_bytes must be "
          "non-negative integers");
    }
    out.push_back(std::move(r));
  }
  return out;
}

db::DbResult<void> refresh_volume_health(db::Tx& tx, const std::string& volume_id,
                                         const std::string& node_name) {
  auto vol = tx.volume_by_id(volume_id);
  if (!vol) return core::fail(vol.error());
  if (!*vol) return {};
  db::VolumeRow v = **vol;
  if (v.state != "healthy" && v.state != "degraded") return {};  // the data plane's call
  auto copies = tx.copies_of(volume_id);
  if (!copies) return core::fail(copies.error());
  bool all_in_sync = true;
  for (const auto& c : *copies) {
    if (c.role != "master" && c.state != db::kCopyInSync) all_in_sync = false;
  }
  std::string want = all_in_sync ? "healthy" : "degraded";
  if (want == v.state) return {};
  v.state = want;
  if (auto u = tx.update_volume(v); !u) return u;
  auto e = tx.append_event({0, 0, v.name, node_name, "volume-" + want,
                            all_in_sync ? "all replicas are in sync" : "a replica is not in sync"});
  if (!e) return core::fail(e.error());
  return {};
}

db::DbResult<CopyReportOutcome> apply_copy_reports(db::Tx& tx, const std::string& node_id,
                                                   const std::vector<CopyReport>& reports) {
  CopyReportOutcome out;
  std::string node_name = node_id;
  auto nodes = tx.list_nodes();
  if (!nodes) return core::fail(nodes.error());
  for (const auto& n : *nodes) {
    if (n.id == node_id) node_name = n.name;
  }
  std::set<std::string> touched;
  for (const auto& r : reports) {
    auto vol = tx.volume_by_id(r.volume_id);
    if (!vol) return core::fail(vol.error());
    const bool not_master =
        *vol && ((*vol)->master_node != node_id || (*vol)->generation != r.generation);
    if (!*vol || not_master || !known_copy_state(r.state)) {
      ++out.ignored;
      if (not_master) ++out.not_master;
      continue;
    }
    auto copies = tx.copies_of(r.volume_id);
    if (!copies) return core::fail(copies.error());
    auto it = std::find_if(copies->begin(), copies->end(),
                           [&](const db::CopyRow& c) { return c.number == r.number; });
    if (it == copies->end()) {
      ++out.ignored;
      continue;
    }
    db::CopyRow c = *it;
    if (r.state == db::kCopyInSync && r.report_seq < c.report_seq) {
      ++out.ignored;  // made before a newer report that may have taken it out of sync
      continue;
    }
    c.report_seq = std::max(c.report_seq, r.report_seq);
    if (c.role == "master" && !r.volume_state.empty() && known_volume_state(r.volume_state)) {
      // The master applies the failure mode: its verdict is the volume's state.
      db::VolumeRow v = **vol;
      if (v.state != r.volume_state && v.state != "offline") {
        std::string was = v.state;
        v.state = r.volume_state;
        if (auto u = tx.update_volume(v); !u) return core::fail(u.error());
        auto e = tx.append_event({0, 0, v.name, node_name, "volume-" + r.volume_state,
                                  "volume is " + r.volume_state + " (was " + was + ")"});
        if (!e) return core::fail(e.error());
      }
    }
    bool state_changed = c.state != r.state;
    c.state = r.state;
    c.rebooted = false;  // its master went on without it, or resynced it
    c.applied_seq = r.applied_seq;
    c.sync_done_bytes = r.sync_done_bytes;
    c.sync_total_bytes = r.sync_total_bytes;
    c.behind_bytes = r.behind_bytes;
    c.updated_ms = 0;  // now
    if (auto u = tx.update_copy(c); !u) return core::fail(u.error());
    ++out.applied;
    if (state_changed) {
      std::string copy_node = c.node_id;
      for (const auto& n : *nodes) {
        if (n.id == c.node_id) copy_node = n.name;
      }
      auto e = tx.append_event(
          {0, 0, (*vol)->name, copy_node, "copy-" + r.state,
           c.role + " copy " + std::to_string(c.number) + " on " + copy_node + " is " + r.state});
      if (!e) return core::fail(e.error());
      touched.insert(r.volume_id);
    }
  }
  for (const auto& id : touched) {
    if (auto h = refresh_volume_health(tx, id, node_name); !h) return core::fail(h.error());
  }
  return out;
}

ClusterService::ClusterService(db::Catalogue& cat, CertificateAuthority* ca,
                               std::string controller_name, std::chrono::milliseconds node_timeout)
    : cat_(cat),
      ca_(ca),
      controller_name_(std::move(controller_name)),
      node_timeout_(node_timeout),
      started_ms_(db::now_ms()) {}

core::Result<JoinGrant, ApiError> ClusterService::join(const JoinRequest& req,
                                                       const std::string& bearer) {
  if (!core::valid_object_name(req.name)) {
    return core::fail(ApiError{
        422, "invalid_value", "node name must match [a-z0-9][a-z0-9-]{0,62}", {{"field", "name"}}});
  }
  if (req.address.empty() || req.api_url.empty() || req.csr_pem.empty()) {
    return core::fail(ApiError::invalid("address, api_url and csr are required"));
  }
  if (!ca_) return core::fail(ApiError{409, "conflict", "this node is not the controller"});
  std::string presented = bearer_hash(bearer);
  std::optional<ApiError> err;
  JoinGrant grant;
  auto r = cat_.transact<void>([&](db::Tx& tx) -> db::DbResult<void> {
    auto want = tx.setting(kJoinTokenSetting);
    if (!want) return core::fail(want.error());
    if (!*want || !same_hash(**want, presented)) {
      err = unauthorized("wrong join token");
      return core::fail(db::DbError{db::DbErrc::kIo, "auth"});
    }
    auto existing = tx.node_by_name(req.name);
    if (!existing) return core::fail(existing.error());
    if (*existing && (*existing)->id != req.node_id) {
      err = ApiError::conflict("node name '" + req.name + "' is taken by another node");
      return core::fail(db::DbError{db::DbErrc::kConflict, "taken"});
    }
    auto cert = ca_->sign(req.csr_pem, req.name, req.address);
    if (!cert) {
      err = ApiError::invalid("certificate request refused: " + cert.error());
      return core::fail(db::DbError{db::DbErrc::kIo, "csr"});
    }
    db::NodeRow n;
    n.id = *existing ? (*existing)->id : core::new_uuid();
    n.name = req.name;
    n.address = req.address;
    n.api_url = req.api_url;
    n.state = "online";
    n.last_heartbeat_ms = db::now_ms();
    n.iscsi_port = req.iscsi_port;
    n.repl_port = req.repl_port;
    if (auto u = tx.upsert_node(n); !u) return u;
    grant.node_id = n.id;
    grant.node_token = random_hex(24);
    grant.certificate_pem = *cert;
    grant.ca_pem = ca_->ca_pem();
    if (auto t = tx.set_node_token_hash(n.id, sha256_hex(grant.node_token)); !t) return t;
    auto e = tx.append_event({0, 0, "", req.name, *existing ? "node-rejoined" : "node-joined",
                              "node " + req.name + " at " + req.address + " joined the cluster"});
    if (!e) return core::fail(e.error());
    return {};
  });
  if (err) return core::fail(*err);
  if (!r) return core::fail(ApiError::internal("catalogue: " + r.error().message));
  spdlog::info("cluster: node {} joined from {}", req.name, req.address);
  if (changed_) changed_();
  return grant;
}

core::Result<nlohmann::json, ApiError> ClusterService::heartbeat(const std::string& node_name,
                                                                 const std::string& bearer,
                                                                 const HeartbeatReport& report) {
  std::optional<ApiError> err;
  std::string admin_hash;
  int64_t revision = 0, revision_before = 0;
  nlohmann::json snapshot;
  auto r = cat_.transact<void>([&](db::Tx& tx) -> db::DbResult<void> {
    auto before = cluster_revision(tx);
    if (!before) return core::fail(before.error());
    revision_before = *before;
    auto node = authenticate(tx, node_name, bearer, &err);
    if (!node) return core::fail(node.error());
    if (!*node) return core::fail(db::DbError{db::DbErrc::kIo, "auth"});
    db::NodeRow n = **node;
    bool was_offline = n.state != "online";
    n.state = "online";
    n.capacity_bytes = report.capacity_bytes;
    n.free_bytes = report.free_bytes;
    n.last_heartbeat_ms = db::now_ms();
    if (auto u = tx.upsert_node(n); !u) return u;
    if (was_offline) {
      auto e = tx.append_event({0, 0, "", n.name, "node-online", "node " + n.name + " is back"});
      if (!e) return core::fail(e.error());
    }
    // Before its copy reports: a rebooted master's reports are not its own any more when its
    // volumes were handed over. Its lease comes with this answer, so it has none now.
    if (auto b = record_boot(tx, n.id, n.name, report.boot_id); !b) return core::fail(b.error());
    for (const auto& ev : report.events) {
      auto e = tx.append_event({0, 0, "", n.name, ev.kind, ev.message});
      if (!e) return core::fail(e.error());
    }
    if (!report.copies.empty()) {
      auto a = mgmt::apply_copy_reports(tx, n.id, report.copies);
      if (!a) return core::fail(a.error());
    }
    auto admin = tx.setting("admin_token_sha256");
    if (!admin) return core::fail(admin.error());
    admin_hash = admin->value_or("");
    auto rev = cluster_revision(tx);
    if (!rev) return core::fail(rev.error());
    revision = *rev;
    if (report.known_revision != revision) {
      auto snap = cluster_snapshot(tx);
      if (!snap) return core::fail(snap.error());
      snapshot = std::move(*snap);
    }
    return {};
  });
  if (err) return core::fail(*err);
  if (!r) return core::fail(ApiError::internal("catalogue: " + r.error().message));
  if (revision != revision_before && changed_) changed_();
  // The admin token's hash lets every node check admin calls it serves itself (/metrics).
  nlohmann::json out{{"node_timeout_ms", node_timeout_.count()},
                     {"admin_token_sha256", admin_hash},
                     {"revision", revision}};
  if (!snapshot.is_null()) out["state"] = std::move(snapshot);
  return out;
}

core::Result<nlohmann::json, ApiError> ClusterService::report_copy_state(
    const std::string& node_name, const std::string& bearer,
    const std::vector<CopyReport>& reports) {
  std::optional<ApiError> err;
  CopyReportOutcome outcome;
  int64_t revision = 0;
  auto r = cat_.transact<void>([&](db::Tx& tx) -> db::DbResult<void> {
    auto node = authenticate(tx, node_name, bearer, &err);
    if (!node) return core::fail(node.error());
    if (!*node) return core::fail(db::DbError{db::DbErrc::kIo, "auth"});
    auto a = mgmt::apply_copy_reports(tx, (*node)->id, reports);
    if (!a) return core::fail(a.error());
    outcome = *a;
    auto rev = cluster_revision(tx);
    if (!rev) return core::fail(rev.error());
    revision = *rev;
    return {};
  });
  if (err) return core::fail(*err);
  if (!r) return core::fail(ApiError::internal("catalogue: " + r.error().message));
  if (outcome.applied > 0 && changed_) changed_();
  if (outcome.not_master > 0) {
    return core::fail(ApiError::conflict(node_name + " is not the master of " +
                                         std::to_string(outcome.not_master) +
                                         " reported volume(s): not recorded"));
  }
  return nlohmann::json{
      {"applied", outcome.applied}, {"ignored", outcome.ignored}, {"revision", revision}};
}

core::Result<CopyReportOutcome, ApiError> ClusterService::apply_copy_reports(
    const std::string& node_id, const std::vector<CopyReport>& reports) {
  auto r = cat_.transact<CopyReportOutcome>(
      [&](db::Tx& tx) { return mgmt::apply_copy_reports(tx, node_id, reports); });
  if (!r) return core::fail(ApiError::internal("catalogue: " + r.error().message));
  return *r;
}

namespace {

// The volume's master moves to copies[winner] at the next generation (frames of the old one
// are refused by every copy once it learns the new one, so a deposed master can never get a
// write acknowledged again). The old master's copy becomes an out-of-sync replica; when its
// node returns, the new master resyncs it (regions it changed alone included).
db::DbResult<void> hand_over(db::Tx& tx, db::VolumeRow v, const std::vector<db::CopyRow>& copies,
                             size_t winner, const std::map<std::string, std::string>& names,
                             const std::string& why) {
  auto name = [&](const std::string& id) {
    auto it = names.find(id);
    return it != names.end() ? it->second : id;
  };
  const std::string from = name(v.master_node);
  // The new master orders its reports from its own node's sequence.
  for (auto c : copies) {
    if (c.number == copies[winner].number) continue;
    if (c.role == "master") {
      c.role = "replica";
      c.state = db::kCopyOutOfSync;
    }
    c.report_seq = 0;
    if (auto u = tx.update_copy(c); !u) return u;
  }
  db::CopyRow w = copies[winner];
  w.report_seq = 0;
  w.role = "master";
  w.state = db::kCopyInSync;
  w.rebooted = false;
  if (auto u = tx.update_copy(w); !u) return u;
  v.generation += 1;
  v.master_node = w.node_id;
  if (auto u = tx.update_volume(v); !u) return u;
  const std::string to = name(w.node_id);
  auto e = tx.append_event({0, 0, v.name, to, "volume-promoted",
                            "master " + from + " " + why + ": copy " + std::to_string(w.number) +
                                " on " + to + " is the new master (generation " +
                                std::to_string(v.generation) + ")"});
  if (!e) return core::fail(e.error());
  if (auto h = refresh_volume_health(tx, v.id, to); !h) return h;
  spdlog::warn("cluster: volume {} promoted copy {} on {} (generation {}): master {} {}", v.name,
               w.number, to, v.generation, from, why);
  return {};
}

struct NodeView {
  std::map<std::string, std::string> names;  // id -> name
  std::set<std::string> online;
};

// `heard_since_ms`: a node last heard before then does not count as online, though the
// liveness check has not expired it yet (it may have died with the master).
db::DbResult<NodeView> node_view(db::Tx& tx, int64_t heard_since_ms = 0) {
  auto nodes = tx.list_nodes();
  if (!nodes) return core::fail(nodes.error());
  NodeView out;
  for (const auto& n : *nodes) {
    out.names[n.id] = n.name;
    if (n.state == "online" && n.last_heartbeat_ms >= heard_since_ms) out.online.insert(n.id);
  }
  return out;
}

// The promotion candidates of a volume's copies; `lost_node` holds the master that cannot
// serve, `rebooted_node` (may be empty) one that just rebooted.
std::vector<PromotionCandidate> candidates_of(const std::vector<db::CopyRow>& copies,
                                              const NodeView& nodes, const std::string& lost_node,
                                              const std::string& rebooted_node) {
  std::vector<PromotionCandidate> out;
  for (const auto& c : copies) {
    const bool rebooted = c.rebooted || c.node_id == rebooted_node;
    PromotionCandidate p{c.number,
                         c.role == "replica",
                         c.state == db::kCopyInSync && !rebooted,
                         nodes.online.count(c.node_id) != 0,
                         c.node_id == lost_node,
                         c.applied_seq};
    p.rebooted = rebooted;
    out.push_back(p);
  }
  return out;
}

// The master's node of `v` rebooted (record_boot): its copy lost what it had not flushed.
db::DbResult<void> master_rebooted(db::Tx& tx, const db::VolumeRow& v, const NodeView& nodes,
                                   const std::string& node_name) {
  auto copies = tx.copies_of(v.id);
  if (!copies) return core::fail(copies.error());
  auto candidates = candidates_of(*copies, nodes, "", v.master_node);
  const MasterChoice choice = choose_master(candidates);
  const bool to_other =
      choice.kind != MasterChoiceKind::kNone && candidates[choice.index].replica &&
      !(choice.kind == MasterChoiceKind::kWait && candidates[choice.index].rebooted);
  if (to_other) {
    for (auto& c : *copies) c.rebooted = c.rebooted || c.node_id == v.master_node;
    return hand_over(tx, v, *copies, choice.index, nodes.names,
                     choice.kind == MasterChoiceKind::kWait
                         ? "rebooted and the only copy holding every acknowledged write is on "
                           "an offline node: the volume waits for it"
                         : "rebooted (writes it had not flushed may be gone)");
  }
  if (copies->size() > 1) {
    auto e = tx.append_event({0, 0, v.name, node_name, "volume-unflushed-writes-lost",
                              "master node " + node_name +
                                  " rebooted and no other copy holds every acknowledged write: it "
                                  "stays master; writes it had not flushed may have been lost"});
    if (!e) return core::fail(e.error());
  }
  return {};
}

}  // namespace

bool valid_boot_id(const std::string& id) {
  return !id.empty() && id.size() <= 64 && std::all_of(id.begin(), id.end(), [](char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '-';
  });
}

db::DbResult<bool> record_boot(db::Tx& tx, const std::string& node_id, const std::string& node_name,
                               const std::string& boot_id) {
  if (boot_id.empty()) return false;
  auto prev = tx.node_boot_id(node_id);
  if (!prev) return core::fail(prev.error());
  if (*prev == boot_id) return false;
  if (auto s = tx.set_node_boot_id(node_id, boot_id); !s) return core::fail(s.error());
  if (prev->empty()) return false;  // the first one heard: nothing to compare with
  auto e = tx.append_event({0, 0, "", node_name, "node-rebooted",
                            "node " + node_name +
                                " rebooted (its boot id changed): writes its copies had not "
                                "flushed may be gone; its copies need a resync"});
  if (!e) return core::fail(e.error());
  spdlog::warn("cluster: node {} rebooted; its copies need a resync", node_name);
  auto nodes = node_view(tx);
  if (!nodes) return core::fail(nodes.error());
  auto mine = tx.copies_on(node_id);
  if (!mine) return core::fail(mine.error());
  for (auto c : *mine) {
    auto vol = tx.volume_by_id(c.volume_id);
    if (!vol) return core::fail(vol.error());
    if (!*vol) continue;
    if ((*vol)->master_node == node_id) {
      if (auto m = master_rebooted(tx, **vol, *nodes, node_name); !m) return core::fail(m.error());
      continue;
    }
    if (c.state != db::kCopyInSync) continue;  // it was not counted on anyway
    c.state = db::kCopyOutOfSync;
    c.rebooted = true;
    // A master heartbeat made before the reboot (its engine had not yet seen the link drop)
    // must not record the copy in sync again: report sequences are wall-clock microseconds
    // on the master's node, and a reboot takes far longer than the clocks' skew.
    c.report_seq = std::max(c.report_seq, static_cast<uint64_t>(db::now_ms()) * 1000);
    if (auto u = tx.update_copy(c); !u) return core::fail(u.error());
    auto ev = tx.append_event({0, 0, (*vol)->name, node_name, "copy-out-of-sync",
                               "replica copy " + std::to_string(c.number) + " on " + node_name +
                                   " is out of sync: its node rebooted"});
    if (!ev) return core::fail(ev.error());
    if (auto h = refresh_volume_health(tx, c.volume_id, node_name); !h)
      return core::fail(h.error());
  }
  return true;
}

// The node `lost` is offline (its lease expired: it stopped acknowledging writes before the
// controller's timeout ran out). Every volume it mastered gets a new master as choose_master
// says: an intact in-sync replica on an online node, with the highest applied sequence. Every
// in-sync copy holds every acknowledged write (the master records a copy out of sync before it
// acknowledges anything without it), so none is lost. A replica whose node rebooted since is
// not in sync (record_boot): while an intact copy (the lost master's own, after a process
// kill) may come back, the volume waits for it, and this is looked at again at every check.
db::DbResult<int> ClusterService::promote_away_from(db::Tx& tx, const db::NodeRow& lost,
                                                    bool newly_lost, int64_t now_ms) {
  auto vols = tx.list_volumes();
  if (!vols) return core::fail(vols.error());
  // A replica's node silent for longer than a lease is not promoted to: it may have died
  // with the master (or restarted and not yet said whether it rebooted). The volume waits a
  // check or two instead.
  auto nodes = node_view(tx, now_ms - lease_ms(node_timeout_.count()));
  if (!nodes) return core::fail(nodes.error());
  int promoted = 0;
  for (const auto& v : *vols) {
    if (v.master_node != lost.id) continue;
    auto copies = tx.copies_of(v.id);
    if (!copies) return core::fail(copies.error());
    auto candidates = candidates_of(*copies, *nodes, lost.id, "");
    const MasterChoice choice = choose_master(candidates);
    if (choice.kind != MasterChoiceKind::kPromote) {
      if (newly_lost && copies->size() > 1) {
        const std::string why = choice.kind == MasterChoiceKind::kWait
                                    ? "; waiting for copy " +
                                          std::to_string(candidates[choice.index].number) +
                                          ", which holds every acknowledged write, to come back"
                                    : "; no copy is known to hold every acknowledged write";
        auto e = tx.append_event({0, 0, v.name, lost.name, "volume-master-lost",
                                  "master node " + lost.name +
                                      " is offline and no in-sync replica is online to take over" +
                                      why});
        if (!e) return core::fail(e.error());
      }
      continue;
    }
    if (auto h = hand_over(tx, v, *copies, choice.index, nodes->names,
                           choice.unflushed_may_be_lost
                               ? "lost and every copy that was in sync rebooted (writes not "
                                 "flushed may have been lost)"
                               : "lost");
        !h) {
      return core::fail(h.error());
    }
    ++promoted;
  }
  return promoted;
}

core::VolumeSettings settings_of(db::Tx& tx, const db::VolumeRow& v) {
  core::Labels class_labels;
  if (!v.class_name.empty()) {
    auto c = tx.class_by_name(v.class_name);
    if (c && *c) class_labels = (*c)->labels;
  }
  auto s = core::resolve_settings(core::merge_labels(class_labels, v.labels));
  return s ? *s : core::VolumeSettings{};
}

// Keeps each volume at its declared replica count (seed: "Replica loss"):
//  - fewer replicas that can serve than declared (a replica's node is offline): a new one is
//    placed on an online node with the most free space that holds no copy of the volume; it
//    syncs while the volume keeps serving;
//  - more than declared (the lost replica's node came back while the new one exists): keep the
//    ones with the least left to copy ("smallest difference") and drop the others. A copy in
//    sync always beats one that is not; a master is never dropped.
db::DbResult<void> ClusterService::restore_replica_counts(db::Tx& tx) {
  auto vols = tx.list_volumes();
  if (!vols) return core::fail(vols.error());
  auto nodes = tx.list_nodes();
  if (!nodes) return core::fail(nodes.error());
  std::map<std::string, const db::NodeRow*> by_id;
  for (const auto& n : *nodes) by_id[n.id] = &n;
  auto online = [&](const std::string& id) {
    auto it = by_id.find(id);
    return it != by_id.end() && it->second->state == "online";
  };
  for (const auto& v : *vols) {
    int want = settings_of(tx, v).replicas;
    auto copies = tx.copies_of(v.id);
    if (!copies) return core::fail(copies.error());
    std::vector<db::CopyRow> replicas;
    std::set<std::string> holders;
    for (const auto& c : *copies) {
      holders.insert(c.node_id);
      if (c.role == "replica") replicas.push_back(c);
    }
    int serving = 0;  // replicas on online nodes
    for (const auto& c : replicas) serving += online(c.node_id);
    if (serving < want && static_cast<int>(replicas.size()) < want + want) {
      auto placed = place_replicas(placement_nodes(*nodes), holders, want - serving);
      for (const auto& node_id : placed) {
        auto number = tx.next_copy_number(v.id);
        if (!number) return core::fail(number.error());
        db::CopyRow c;
        c.id = core::new_uuid();
        c.volume_id = v.id;
        c.node_id = node_id;
        c.role = "replica";
        c.state = db::kCopySyncing;
        c.number = *number;
        if (auto r = tx.insert_copy(c); !r) return r;
        auto e = tx.append_event({0, 0, v.name, by_id[node_id]->name, "copy-added",
                                  "replica copy " + std::to_string(c.number) + " placed on " +
                                      by_id[node_id]->name + " to replace a lost one"});
        if (!e) return core::fail(e.error());
        replicas.push_back(c);
      }
      if (!placed.empty()) {
        if (auto h = refresh_volume_health(tx, v.id, controller_name_); !h) return h;
      }
      continue;
    }
    // Too many that can serve: drop the ones with the most left to copy.
    if (serving > want) {
      std::vector<db::CopyRow> live;
      std::vector<DropCandidate> candidates;
      for (const auto& c : replicas) {
        if (!online(c.node_id)) continue;
        live.push_back(c);
        candidates.push_back({c.number,
                              c.state == db::kCopyInSync    ? CopySyncState::kInSync
                              : c.state == db::kCopySyncing ? CopySyncState::kSyncing
                                                            : CopySyncState::kOther,
                              c.sync_total_bytes, c.sync_done_bytes, c.behind_bytes});
      }
      // Only once the kept ones are decided: never drop an in-sync copy for a syncing one.
      auto drop = replicas_to_drop(candidates, want, v.size_bytes);
      if (drop.empty()) continue;
      for (size_t i : drop) {
        const auto& c = live[i];
        if (auto d = tx.delete_copy(c.id); !d) return d;
        auto e = tx.append_event({0, 0, v.name, by_id[c.node_id]->name, "copy-removed",
                                  "replica copy " + std::to_string(c.number) + " on " +
                                      by_id[c.node_id]->name + " dropped: " + std::to_string(want) +
                                      " replicas declared and the others have "
                                      "less left to copy (smallest difference)"});
        if (!e) return core::fail(e.error());
      }
      if (auto h = refresh_volume_health(tx, v.id, controller_name_); !h) return h;
    }
  }
  return {};
}

int ClusterService::check_liveness(int64_t now_ms) {
  int changed = 0;
  auto r = cat_.transact<void>([&](db::Tx& tx) -> db::DbResult<void> {
    auto nodes = tx.list_nodes();
    if (!nodes) return core::fail(nodes.error());
    for (const auto& n : *nodes) {
      if (n.name == controller_name_ || n.state != "online") continue;
      if (!node_expired(n.last_heartbeat_ms, started_ms_, now_ms, node_timeout_.count())) {
        continue;
      }
      if (auto s = tx.set_node_state(n.id, "offline"); !s) return s;
      auto e = tx.append_event(
          {0, 0, "", n.name, "node-offline",
           "no heartbeat from " + n.name + " for " +
               std::to_string(now_ms - std::max(n.last_heartbeat_ms, started_ms_)) + " ms"});
      if (!e) return core::fail(e.error());
      spdlog::warn("cluster: node {} missed heartbeats; marked offline", n.name);
      ++changed;
      auto p = promote_away_from(tx, n, true, now_ms);
      if (!p) return core::fail(p.error());
    }
    // Volumes left waiting (choose_master) are looked at again: the copy they wait for may be
    // back. Never within a timeout of this controller's start (every node gets one to
    // heartbeat first), so only masters whose lease ran out long ago are replaced.
    if (now_ms - started_ms_ > node_timeout_.count()) {
      for (const auto& n : *nodes) {
        if (n.name == controller_name_ || n.state == "online") continue;
        auto p = promote_away_from(tx, n, false, now_ms);
        if (!p) return core::fail(p.error());
        changed += *p;
      }
    }
    if (auto r = restore_replica_counts(tx); !r) return r;
    return {};
  });
  if (!r) spdlog::error("cluster: liveness check failed: {}", r.error().message);
  if (r && changed > 0 && changed_) changed_();
  return changed;
}

}  // namespace tandem::mgmt
