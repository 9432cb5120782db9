#include "mgmt/cluster_service.h"

#include <openssl/crypto.h>
#include <spdlog/spdlog.h>

#include <optional>

#include "core/volume_spec.h"
#include "mgmt/api/router.h"

namespace tandem::mgmt {
namespace {

bool same_hash(const std::string& a, const std::string& b) {
  return !a.empty() && a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

std::string bearer_hash(const std::string& bearer) { return sha256_hex(bearer); }

ApiError unauthorized(const std::string& what) {
  return ApiError{401, "unauthorized", what};
}

}  // namespace

ClusterService::ClusterService(db::Catalogue& cat, CertificateAuthority* ca,
                               std::string controller_name, std::chrono::milliseconds node_timeout)
    : cat_(cat),
      ca_(ca),
      controller_name_(std::move(controller_name)),
      node_timeout_(node_timeout) {}

core::Result<JoinGrant, ApiError> ClusterService::join(const JoinRequest& req,
                                                       const std::string& bearer) {
  if (!core::valid_object_name(req.name)) {
    return core::fail(ApiError{422, "invalid_value", "node name must match [a-z0-9][a-z0-9-]{0,62}",
                               {{"field", "name"}}});
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
  return grant;
}

core::Result<nlohmann::json, ApiError> ClusterService::heartbeat(const std::string& node_name,
                                                                 const std::string& bearer,
                                                                 const HeartbeatReport& report) {
  std::optional<ApiError> err;
  std::string admin_hash;
  auto r = cat_.transact<void>([&](db::Tx& tx) -> db::DbResult<void> {
    auto node = tx.node_by_name(node_name);
    if (!node) return core::fail(node.error());
    if (!*node) {
      err = ApiError::not_found("node '" + node_name + "' has not joined");
      return core::fail(db::DbError{db::DbErrc::kNotFound, ""});
    }
    auto hash = tx.node_token_hash((*node)->id);
    if (!hash) return core::fail(hash.error());
    if (!same_hash(*hash, bearer_hash(bearer))) {
      err = unauthorized("wrong node token");
      return core::fail(db::DbError{db::DbErrc::kIo, "auth"});
    }
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
    for (const auto& ev : report.events) {
      auto e = tx.append_event({0, 0, "", n.name, ev.kind, ev.message});
      if (!e) return core::fail(e.error());
    }
    auto admin = tx.setting("admin_token_sha256");
    if (!admin) return core::fail(admin.error());
    admin_hash = admin->value_or("");
    return {};
  });
  if (err) return core::fail(*err);
  if (!r) return core::fail(ApiError::internal("catalogue: " + r.error().message));
  // The admin token's hash lets every node check admin calls it serves itself (/metrics).
  return nlohmann::json{{"node_timeout_ms", node_timeout_.count()},
                        {"admin_token_sha256", admin_hash}};
}

int ClusterService::check_liveness(int64_t now_ms) {
  int changed = 0;
  auto r = cat_.transact<void>([&](db::Tx& tx) -> db::DbResult<void> {
    auto nodes = tx.list_nodes();
    if (!nodes) return core::fail(nodes.error());
    for (const auto& n : *nodes) {
      if (n.name == controller_name_ || n.state != "online") continue;
      if (now_ms - n.last_heartbeat_ms <= node_timeout_.count()) continue;
      if (auto s = tx.set_node_state(n.id, "offline"); !s) return s;
      auto e = tx.append_event({0, 0, "", n.name, "node-offline",
                                "no heartbeat from " + n.name + " for " +
                                    std::to_string(now_ms - n.last_heartbeat_ms) + " ms"});
      if (!e) return core::fail(e.error());
      spdlog::warn("cluster: node {} missed heartbeats; marked offline", n.name);
      ++changed;
    }
    return {};
  });
  if (!r) spdlog::error("cluster: liveness check failed: {}", r.error().message);
  return changed;
}

}  // namespace tandem::mgmt
