#include "mgmt/api/router.h"

#include <thread>

#include "mgmt/verify.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include <algorithm>
#include <charconv>
#include <functional>
#include <nlohmann/json.hpp>

#include "db/catalogue.h"
#include "mgmt/api/json_views.h"
#include "mgmt/cluster_service.h"
#include "mgmt/metrics.h"
#include "mgmt/volume_service.h"
#include "webui/assets.h"

namespace tandem::mgmt {
namespace {

using nlohmann::json;
using Params = std::vector<std::string>;  // values of {placeholders}, in order

HttpResponse json_response(int status, const json& body) {
  HttpResponse r;
  r.status = status;
  r.body = body.dump();
  return r;
}

HttpResponse error_response(const ApiError& e) {
  json body{{"error", {{"code", e.code}, {"message", e.message}}}};
  for (auto& [k, v] : e.details.items()) body["error"][k] = v;
  return json_response(e.status, body);
}

// Parses a JSON object body; a non-object or malformed body is a 400.
core::Result<json, ApiError> parse_object(const HttpRequest& req) {
  json j = json::parse(req.body, nullptr, false);
  if (j.is_discarded()) return core::fail(ApiError::bad_request("request body is not valid JSON"));
  if (!j.is_object()) return core::fail(ApiError::bad_request("request body must be a JSON object"));
  return j;
}

// Reads a size given as bytes (number) or text ("10GiB").
core::Result<uint64_t, ApiError> size_field(const json& v) {
  if (v.is_number_unsigned()) return v.get<uint64_t>();
  if (v.is_string()) {
    auto s = core::parse_size(v.get<std::string>());
    if (!s) return core::fail(ApiError{422, "invalid_value", s.error().message, {{"field", "size"}}});
    return *s;
  }
  return core::fail(
      ApiError{422, "invalid_value", "size must be a byte count or text like \"10GiB\"",
               {{"field", "size"}}});
}

// Settings given as first-class fields become labels (the volume's own).
core::Result<std::map<std::string, std::optional<std::string>>, ApiError> label_changes(
    const json& body, bool allow_null) {
  std::map<std::string, std::optional<std::string>> out;
  if (body.contains("labels")) {
    const json& l = body["labels"];
    if (!l.is_object()) {
      return core::fail(ApiError{422, "invalid_value", "labels must be an object of strings",
                                 {{"field", "labels"}}});
    }
    for (auto& [k, v] : l.items()) {
      if (v.is_string()) {
        out[k] = v.get<std::string>();
      } else if (v.is_null() && allow_null) {
        out[k] = std::nullopt;
      } else {
        return core::fail(ApiError{422, "invalid_value", "label '" + k + "' must be a string",
                                   {{"field", "labels"}}});
      }
    }
  }
  auto as_text = [](const json& v) -> std::optional<std::string> {
    if (v.is_number_integer()) return std::to_string(v.get<int64_t>());
    if (v.is_string()) return v.get<std::string>();
    return std::nullopt;
  };
  struct Field {
    const char* name;
    std::string_view label;
  };
  for (Field f : {Field{"replicas", core::kLabelReplicas},
                  Field{"failure_mode", core::kLabelFailureMode},
                  Field{"failure_threshold", core::kLabelFailureThreshold}}) {
    if (!body.contains(f.name)) continue;
    auto t = as_text(body[f.name]);
    if (!t) {
      return core::fail(ApiError{422, "invalid_value", std::string(f.name) + " has the wrong type",
                                 {{"field", f.name}}});
    }
    out[std::string(f.label)] = *t;
  }
  return out;
}

int64_t query_int(const HttpRequest& req, const std::string& key, int64_t dflt, bool* ok) {
  auto it = req.query.find(key);
  if (it == req.query.end() || it->second.empty()) return dflt;
  int64_t v = 0;
  auto [p, ec] = std::from_chars(it->second.data(), it->second.data() + it->second.size(), v);
  if (ec != std::errc() || p != it->second.data() + it->second.size() || v < 0) *ok = false;
  return v;
}

bool match(const std::string& pattern, const std::string& path, Params* params) {
  params->clear();
  size_t pi = 0, si = 0;
  while (pi < pattern.size() && si < path.size()) {
    if (pattern[pi] == '{') {
      size_t close = pattern.find('}', pi);
      size_t seg_end = path.find('/', si);
      if (seg_end == std::string::npos) seg_end = path.size();
      if (seg_end == si) return false;
      params->push_back(path.substr(si, seg_end - si));
      pi = close + 1;
      si = seg_end;
      continue;
    }
    if (pattern[pi] != path[si]) return false;
    ++pi;
    ++si;
  }
  return pi == pattern.size() && si == path.size();
}

bool token_ok(const ApiContext& ctx, const std::string& authorization) {
  static constexpr std::string_view kBearer = "Bearer ";
  if (authorization.size() <= kBearer.size() ||
      authorization.compare(0, kBearer.size(), kBearer) != 0) {
    return false;
  }
  std::string h = sha256_hex(authorization.substr(kBearer.size()));
  std::string want = ctx.admin_token ? ctx.admin_token->get() : std::string();
  return !want.empty() && h.size() == want.size() &&
         CRYPTO_memcmp(h.data(), want.data(), h.size()) == 0;
}

template <class T>
HttpResponse or_error(const ApiResult<T>& r, int status, const std::function<json(const T&)>& f) {
  if (!r) return error_response(r.error());
  return json_response(status, f(r.value()));
}

using Handler = std::function<HttpResponse(const ApiContext&, const HttpRequest&, const Params&)>;

struct Route {
  RouteInfo info;
  Handler handler;
};

db::DbResult<std::vector<db::NodeRow>> nodes_of(const ApiContext& ctx) {
  return ctx.catalogue->transact<std::vector<db::NodeRow>>(
      [](db::Tx& tx) { return tx.list_nodes(); });
}

HttpResponse db_failure(const db::DbError& e) {
  return error_response(ApiError::internal("catalogue: " + e.message));
}

// ---- Handlers ----

HttpResponse get_healthz(const ApiContext& ctx, const HttpRequest&, const Params&) {
  return json_response(200, {{"status", "ok"}, {"node", ctx.node_name}});
}

HttpResponse get_metrics(const ApiContext& ctx, const HttpRequest&, const Params&) {
  auto vols = ctx.volumes->list();
  if (!vols) return error_response(vols.error());
  uint64_t total = 0, free = 0;
  if (auto t = ctx.volumes->store().total_bytes(); t) total = *t;
  if (auto f = ctx.volumes->store().free_bytes(); f) free = *f;
  HttpResponse r;
  r.content_type = "text/plain; version=0.0.4";
  r.body = ctx.metrics->render(*vols, total, free);
  return r;
}

HttpResponse get_openapi(const ApiContext&, const HttpRequest&, const Params&) {
  HttpResponse r;
  r.body = openapi_document();
  return r;
}

HttpResponse get_cluster(const ApiContext& ctx, const HttpRequest&, const Params&) {
  auto nodes = nodes_of(ctx);
  if (!nodes) return db_failure(nodes.error());
  auto vols = ctx.volumes->list();
  if (!vols) return error_response(vols.error());
  return json_response(200, cluster_json(ctx.node_name, *nodes, *vols));
}

HttpResponse get_nodes(const ApiContext& ctx, const HttpRequest&, const Params&) {
  auto r = ctx.catalogue->transact<json>([](db::Tx& tx) -> db::DbResult<json> {
    auto nodes = tx.list_nodes();
    if (!nodes) return core::fail(nodes.error());
    json out = json::array();
    for (const auto& n : *nodes) {
      auto copies = tx.copies_on(n.id);
      if (!copies) return core::fail(copies.error());
      out.push_back(node_json(n, copies->size()));
    }
    return json{{"nodes", out}};
  });
  if (!r) return db_failure(r.error());
  return json_response(200, *r);
}

HttpResponse list_volumes(const ApiContext& ctx, const HttpRequest&, const Params&) {
  auto r = ctx.volumes->list();
  if (!r) return error_response(r.error());
  auto nodes = nodes_of(ctx);
  if (!nodes) return db_failure(nodes.error());
  json out = json::array();
  for (const auto& v : *r) out.push_back(volume_json(v, *nodes));
  return json_response(200, {{"volumes", out}});
}

HttpResponse create_volume(const ApiContext& ctx, const HttpRequest& req, const Params&) {
  auto body = parse_object(req);
  if (!body) return error_response(body.error());
  CreateVolume spec;
  const json& b = *body;
  if (!b.contains("name") || !b["name"].is_string()) {
    return error_response(ApiError{422, "invalid_value", "name is required", {{"field", "name"}}});
  }
  spec.name = b["name"].get<std::string>();
  if (!b.contains("size")) {
    return error_response(ApiError{422, "invalid_value", "size is required", {{"field", "size"}}});
  }
  auto size = size_field(b["size"]);
  if (!size) return error_response(size.error());
  spec.size_bytes = *size;
  if (b.contains("block_size")) {
    if (!b["block_size"].is_number_unsigned() || b["block_size"].get<uint64_t>() > 1u << 20) {
      return error_response(ApiError{422, "invalid_value", "block_size must be 512 or 4096",
                                     {{"field", "block_size"}}});
    }
    spec.block_size = b["block_size"].get<uint32_t>();
  }
  if (b.contains("class")) {
    if (!b["class"].is_string()) {
      return error_response(
          ApiError{422, "invalid_value", "class must be a string", {{"field", "class"}}});
    }
    spec.class_name = b["class"].get<std::string>();
  }
  if (b.contains("node")) {
    if (!b["node"].is_string() || !core::valid_object_name(b["node"].get<std::string>())) {
      return error_response(
          ApiError{422, "invalid_value", "node must be a node name", {{"field", "node"}}});
    }
    spec.node = b["node"].get<std::string>();
  }
  // Set by the node that forwarded the call; ignored when it is not a node name.
  if (core::valid_object_name(req.origin_node)) spec.origin_node = req.origin_node;
  auto changes = label_changes(b, false);
  if (!changes) return error_response(changes.error());
  for (auto& [k, v] : *changes) spec.labels[k] = *v;
  auto r = ctx.volumes->create(spec);
  if (!r) return error_response(r.error());
  auto nodes = nodes_of(ctx);
  if (!nodes) return db_failure(nodes.error());
  auto resp = json_response(201, volume_json(*r, *nodes));
  resp.headers["Location"] = "/api/v1/volumes/" + spec.name;
  return resp;
}

HttpResponse get_volume(const ApiContext& ctx, const HttpRequest&, const Params& p) {
  auto r = ctx.volumes->get(p[0]);
  if (!r) return error_response(r.error());
  auto nodes = nodes_of(ctx);
  if (!nodes) return db_failure(nodes.error());
  return json_response(200, volume_json(*r, *nodes));
}

HttpResponse patch_volume(const ApiContext& ctx, const HttpRequest& req, const Params& p) {
  auto body = parse_object(req);
  if (!body) return error_response(body.error());
  UpdateVolume change;
  for (auto& [k, v] : body->items()) {
    if (k != "size" && k != "labels" && k != "replicas" && k != "failure_mode" &&
        k != "failure_threshold") {
      return error_response(
          ApiError{422, "invalid_value", "field '" + k + "' cannot be changed", {{"field", k}}});
    }
  }
  if (body->contains("size")) {
    auto size = size_field((*body)["size"]);
    if (!size) return error_response(size.error());
    change.size_bytes = *size;
  }
  auto changes = label_changes(*body, true);
  if (!changes) return error_response(changes.error());
  change.labels = std::move(*changes);
  auto r = ctx.volumes->update(p[0], change);
  if (!r) return error_response(r.error());
  auto nodes = nodes_of(ctx);
  if (!nodes) return db_failure(nodes.error());
  return json_response(200, volume_json(*r, *nodes));
}

HttpResponse delete_volume(const ApiContext& ctx, const HttpRequest&, const Params& p) {
  auto r = ctx.volumes->remove(p[0]);
  if (!r) return error_response(r.error());
  HttpResponse resp;
  resp.status = 204;
  resp.content_type.clear();
  return resp;
}

HttpResponse get_access(const ApiContext& ctx, const HttpRequest&, const Params& p) {
  auto r = ctx.volumes->access(p[0]);
  if (!r) return error_response(r.error());
  return json_response(200, access_json(*r));
}

// Reads {"user": "...", "secret": "..."} or null (off).
core::Result<std::optional<std::pair<std::string, std::string>>, ApiError> chap_field(
    const json& body, const char* field) {
  if (!body.contains(field) || body[field].is_null()) {
    return std::optional<std::pair<std::string, std::string>>();
  }
  const json& c = body[field];
  if (!c.is_object() || !c.contains("user") || !c["user"].is_string() || !c.contains("secret") ||
      !c["secret"].is_string()) {
    return core::fail(ApiError{422, "invalid_value",
                               std::string(field) + " must be {\"user\": ..., \"secret\": ...}",
                               {{"field", field}}});
  }
  return std::optional<std::pair<std::string, std::string>>(
      std::make_pair(c["user"].get<std::string>(), c["secret"].get<std::string>()));
}

HttpResponse put_access(const ApiContext& ctx, const HttpRequest& req, const Params& p) {
  auto body = parse_object(req);
  if (!body) return error_response(body.error());
  AccessChange change;
  if (body->contains("initiators")) {
    const json& list = (*body)["initiators"];
    if (!list.is_array()) {
      return error_response(ApiError{422, "invalid_value", "initiators must be a list of names",
                                     {{"field", "initiators"}}});
    }
    for (const auto& i : list) {
      if (!i.is_string()) {
        return error_response(ApiError{422, "invalid_value", "initiators must be strings",
                                       {{"field", "initiators"}}});
      }
      change.initiators.push_back(i.get<std::string>());
    }
  }
  auto chap = chap_field(*body, "chap");
  if (!chap) return error_response(chap.error());
  change.chap = *chap;
  auto mutual = chap_field(*body, "mutual_chap");
  if (!mutual) return error_response(mutual.error());
  change.mutual_chap = *mutual;
  auto r = ctx.volumes->set_access(p[0], change);
  if (!r) return error_response(r.error());
  return json_response(200, access_json(*r));
}

HttpResponse list_classes(const ApiContext& ctx, const HttpRequest&, const Params&) {
  auto r = ctx.catalogue->transact<std::vector<db::ClassRow>>(
      [](db::Tx& tx) { return tx.list_classes(); });
  if (!r) return db_failure(r.error());
  json out = json::array();
  for (const auto& c : *r) out.push_back(class_json(c));
  return json_response(200, {{"classes", out}});
}

HttpResponse get_class(const ApiContext& ctx, const HttpRequest&, const Params& p) {
  auto r = ctx.catalogue->transact<std::optional<db::ClassRow>>(
      [&](db::Tx& tx) { return tx.class_by_name(p[0]); });
  if (!r) return db_failure(r.error());
  if (!*r) return error_response(ApiError::not_found("class '" + p[0] + "' not found"));
  return json_response(200, class_json(**r));
}

HttpResponse create_class(const ApiContext& ctx, const HttpRequest& req, const Params&) {
  auto body = parse_object(req);
  if (!body) return error_response(body.error());
  const json& b = *body;
  if (!b.contains("name") || !b["name"].is_string() ||
      !core::valid_object_name(b["name"].get<std::string>())) {
    return error_response(ApiError{422, "invalid_value",
                                   "class name must match [a-z0-9][a-z0-9-]{0,62}",
                                   {{"field", "name"}}});
  }
  db::ClassRow c;
  c.name = b["name"].get<std::string>();
  auto changes = label_changes(b, false);
  if (!changes) return error_response(changes.error());
  for (auto& [k, v] : *changes) c.labels[k] = *v;
  if (auto v = core::validate_labels(c.labels); !v) {
    return error_response(ApiError{422, "invalid_value", v.error().message,
                                   {{"field", v.error().field}}});
  }
  std::optional<ApiError> err;
  auto r = ctx.catalogue->transact<void>([&](db::Tx& tx) -> db::DbResult<void> {
    auto existing = tx.class_by_name(c.name);
    if (!existing) return core::fail(existing.error());
    if (*existing) {
      err = ApiError::conflict("class '" + c.name + "' already exists");
      return core::fail(db::DbError{db::DbErrc::kConflict, ""});
    }
    if (auto i = tx.insert_class(c); !i) return i;
    std::string msg = "created with labels " + json(c.labels).dump();
    if (auto e = tx.append_event({0, 0, "", ctx.node_name, "class-created", msg}); !e) {
      return core::fail(e.error());
    }
    return {};
  });
  if (err) return error_response(*err);
  if (!r) return db_failure(r.error());
  return json_response(201, class_json(c));
}

HttpResponse delete_class(const ApiContext& ctx, const HttpRequest&, const Params& p) {
  std::optional<ApiError> err;
  auto r = ctx.catalogue->transact<void>([&](db::Tx& tx) -> db::DbResult<void> {
    auto used = tx.volumes_in_class(p[0]);
    if (!used) return core::fail(used.error());
    if (*used > 0) {
      err = ApiError::conflict("class '" + p[0] + "' is used by " + std::to_string(*used) +
                               " volume(s)");
      return core::fail(db::DbError{db::DbErrc::kConflict, ""});
    }
    if (auto d = tx.delete_class(p[0]); !d) {
      if (d.error().code == db::DbErrc::kNotFound) {
        err = ApiError::not_found("class '" + p[0] + "' not found");
      }
      return d;
    }
    if (auto e = tx.append_event({0, 0, "", ctx.node_name, "class-deleted", p[0]}); !e) {
      return core::fail(e.error());
    }
    return {};
  });
  if (err) return error_response(*err);
  if (!r) return db_failure(r.error());
  HttpResponse resp;
  resp.status = 204;
  resp.content_type.clear();
  return resp;
}

HttpResponse get_events(const ApiContext& ctx, const HttpRequest& req, const Params&) {
  bool ok = true;
  int64_t since = query_int(req, "since", 0, &ok);
  int64_t limit = query_int(req, "limit", 100, &ok);
  if (!ok || limit < 1 || limit > 1000) {
    return error_response(
        ApiError::bad_request("since must be a sequence number and limit 1-1000"));
  }
  auto r = ctx.catalogue->transact<std::vector<db::EventRow>>(
      [&](db::Tx& tx) { return tx.events(since, limit); });
  if (!r) return db_failure(r.error());
  json out = json::array();
  int64_t next = since;
  for (const auto& e : *r) {
    out.push_back(event_json(e));
    next = e.seq;
  }
  return json_response(200, {{"events", out}, {"next", next}});
}

std::string bearer_of(const HttpRequest& req) {
  static constexpr std::string_view kBearer = "Bearer ";
  if (req.authorization.compare(0, kBearer.size(), kBearer) != 0) return {};
  return req.authorization.substr(kBearer.size());
}

HttpResponse post_join(const ApiContext& ctx, const HttpRequest& req, const Params&) {
  if (!ctx.cluster) return error_response(ApiError::conflict("this node is not the controller"));
  auto body = parse_object(req);
  if (!body) return error_response(body.error());
  const json& b = *body;
  JoinRequest j;
  j.name = b.value("name", "");
  j.address = b.value("address", "");
  j.api_url = b.value("api_url", "");
  j.iscsi_port = b.value("iscsi_port", uint16_t{3260});
  j.repl_port = b.value("repl_port", uint16_t{5703});
  j.csr_pem = b.value("csr", "");
  j.node_id = b.value("node_id", "");
  auto r = ctx.cluster->join(j, bearer_of(req));
  if (!r) return error_response(r.error());
  return json_response(200, {{"node_id", r->node_id},
                             {"certificate", r->certificate_pem},
                             {"ca_certificate", r->ca_pem},
                             {"node_token", r->node_token}});
}

HttpResponse post_heartbeat(const ApiContext& ctx, const HttpRequest& req, const Params& p) {
  if (!ctx.cluster) return error_response(ApiError::conflict("this node is not the controller"));
  auto body = parse_object(req);
  if (!body) return error_response(body.error());
  HeartbeatReport rep;
  rep.capacity_bytes = body->value("capacity_bytes", uint64_t{0});
  rep.free_bytes = body->value("free_bytes", uint64_t{0});
  if (body->contains("events")) {
    const json& evs = (*body)["events"];
    if (!evs.is_array() || evs.size() > kMaxReportedEvents) {
      return error_response(ApiError{422, "invalid_value", "events must be a list of at most 100",
                                     {{"field", "events"}}});
    }
    for (const auto& e : evs) {
      std::string kind = e.is_object() ? e.value("kind", "") : "";
      std::string message = e.is_object() ? e.value("message", "") : "";
      bool kind_ok = !kind.empty() && kind.size() <= 40 &&
                     std::all_of(kind.begin(), kind.end(),
                                 [](char c) { return (c >= 'a' && c <= 'z') || c == '-'; });
      if (!kind_ok || message.size() > 1000) {
        return error_response(
            ApiError{422, "invalid_value", "bad reported event", {{"field", "events"}}});
      }
      rep.events.push_back({kind, message});
    }
  }
  if (body->contains("copies")) {
    auto copies = parse_copy_reports((*body)["copies"]);
    if (!copies) return error_response(copies.error());
    rep.copies = std::move(*copies);
  }
  if (body->contains("known_revision")) {
    const json& k = (*body)["known_revision"];
    if (!k.is_number_integer() || k.get<int64_t>() < -1) {
      return error_response(ApiError{422, "invalid_value", "known_revision must be an integer",
                                     {{"field", "known_revision"}}});
    }
    rep.known_revision = k.get<int64_t>();
  }
  if (body->contains("boot_id")) {
    const json& b = (*body)["boot_id"];
    if (!b.is_string() || !valid_boot_id(b.get<std::string>())) {
      return error_response(ApiError{422,
                                     "invalid_value",
                                     "boot_id must be 1-64 characters of [0-9A-Za-z-]",
                                     {{"field", "boot_id"}}});
    }
    rep.boot_id = b.get<std::string>();
  }
  auto r = ctx.cluster->heartbeat(p[0], bearer_of(req), rep);
  if (!r) return error_response(r.error());
  return json_response(200, *r);
}

// This node's own copy of a volume, as region checksums (never forwarded: the controller's
// verify asks each node holding a copy).
HttpResponse get_local_checksums(const ApiContext& ctx, const HttpRequest&, const Params& p) {
  if (!ctx.local_checksums) {
    return error_response(ApiError{501, "not_implemented", "no volume host on this node"});
  }
  auto r = ctx.local_checksums(p[0]);
  if (!r) return error_response(ApiError::not_found(r.error()));
  return json_response(200, *r);
}

// Compares the region checksums of every in-sync copy. Copies are read one after another
// while the volume keeps serving, so a region written in between can differ for a moment:
// differing regions are checked again (up to 5 rounds) before they are reported.
HttpResponse post_verify(const ApiContext& ctx, const HttpRequest& req, const Params& p) {
  auto v = ctx.volumes->get(p[0]);
  if (!v) return error_response(v.error());
  auto nodes = nodes_of(ctx);
  if (!nodes) return db_failure(nodes.error());
  std::map<std::string, const db::NodeRow*> by_id;
  for (const auto& n : *nodes) by_id[n.id] = &n;
  json copies = json::array();
  std::vector<std::pair<std::string, const db::NodeRow*>> targets;  // (label, node)
  for (const auto& c : v->copies) {
    auto n = by_id.find(c.node_id);
    std::string node = n == by_id.end() ? c.node_id : n->second->name;
    bool in_sync = c.state == db::kCopyInSync;
    copies.push_back({{"number", c.number}, {"node", node}, {"role", c.role},
                      {"state", c.state}, {"compared", in_sync && n != by_id.end()}});
    if (in_sync && n != by_id.end()) {
      targets.emplace_back(std::to_string(c.number) + "@" + node, n->second);
    }
  }
  auto fetch = [&](const db::NodeRow* n) -> core::Result<RegionChecksums, std::string> {
    core::Result<json, std::string> j = core::fail(std::string("unreachable"));
    if (n->name == ctx.node_name) {
      if (!ctx.local_checksums) return core::fail(std::string("no volume host"));
      j = ctx.local_checksums(v->row.id);
    } else {
      if (!ctx.call_node) return core::fail(std::string("cannot reach other nodes"));
      HttpRequest r;
      r.method = "GET";
      r.target = "/api/v1/local/copies/" + v->row.id + "/checksums";
      r.path = r.target;
      r.authorization = req.authorization;
      auto resp = ctx.call_node(n->api_url, r);
      if (resp.status != 200) {
        return core::fail("node " + n->name + " answered " + std::to_string(resp.status));
      }
      json body = json::parse(resp.body, nullptr, false);
      if (body.is_discarded()) return core::fail("node " + n->name + " sent bad JSON");
      j = body;
    }
    if (!j) return core::fail(j.error());
    return checksums_from_json(*j);
  };
  VerifyOutcome outcome;
  std::map<std::string, RegionChecksums> sums;
  int rounds = 0;
  std::string error;
  for (; rounds < 5; ++rounds) {
    sums.clear();
    for (const auto& [label, node] : targets) {
      auto c = fetch(node);
      if (!c) {
        error = label + ": " + c.error();
        break;
      }
      sums[label] = std::move(*c);
    }
    if (!error.empty()) break;
    outcome = compare_checksums(sums);
    if (outcome.identical || !outcome.error.empty()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));  // let in-flight writes land
  }
  if (!error.empty()) {
    return error_response(ApiError{502, "copy_unreachable", "cannot read a copy: " + error});
  }
  json out{{"volume", v->row.name},
           {"copies", copies},
           {"compared", targets.size()},
           {"identical", outcome.identical},
           {"region_bytes", kVerifyRegionBytes},
           {"regions", sums.empty() ? 0 : sums.begin()->second.crc.size()},
           {"differing_count", outcome.differing_count},
           {"differing_regions", outcome.differing_regions},
           {"rounds", rounds + 1}};
  if (!outcome.error.empty()) out["error"] = outcome.error;
  return json_response(200, out);
}

// A master's copy reports, committed before the answer: a master that must record an
// out-of-sync copy before acknowledging more writes waits for this 200.
HttpResponse post_copy_state(const ApiContext& ctx, const HttpRequest& req, const Params&) {
  if (!ctx.cluster) return error_response(ApiError::conflict("this node is not the controller"));
  auto body = parse_object(req);
  if (!body) return error_response(body.error());
  const json& b = *body;
  if (!b.contains("node") || !b["node"].is_string() ||
      !core::valid_object_name(b["node"].get<std::string>())) {
    return error_response(
        ApiError{422, "invalid_value", "node must be a node name", {{"field", "node"}}});
  }
  if (!b.contains("copies")) {
    return error_response(
        ApiError{422, "invalid_value", "copies is required", {{"field", "copies"}}});
  }
  auto copies = parse_copy_reports(b["copies"]);
  if (!copies) return error_response(copies.error());
  auto r = ctx.cluster->report_copy_state(b["node"].get<std::string>(), bearer_of(req), *copies);
  if (!r) return error_response(r.error());
  return json_response(200, *r);
}

const std::vector<Route>& table() {
  static const std::vector<Route> kRoutes{
      {{"GET", "/healthz", Auth::kNone, Lane::kInline}, get_healthz},
      {{"POST", "/api/v1/cluster/join", Auth::kOwnToken}, post_join},
      {{"POST", "/api/v1/nodes/{name}/heartbeat", Auth::kOwnToken}, post_heartbeat},
      {{"POST", "/api/v1/cluster/copy-state", Auth::kOwnToken}, post_copy_state},
      {{"GET", "/metrics"}, get_metrics},
      {{"GET", "/api/v1/openapi.json", Auth::kAdmin, Lane::kInline}, get_openapi},
      {{"GET", "/api/v1/cluster"}, get_cluster},
      {{"GET", "/api/v1/nodes"}, get_nodes},
      {{"GET", "/api/v1/volumes"}, list_volumes},
      {{"POST", "/api/v1/volumes"}, create_volume},
      {{"GET", "/api/v1/volumes/{name}"}, get_volume},
      {{"PATCH", "/api/v1/volumes/{name}"}, patch_volume},
      {{"DELETE", "/api/v1/volumes/{name}"}, delete_volume},
      {{"POST", "/api/v1/volumes/{name}/verify", Auth::kAdmin, Lane::kSlow}, post_verify},
      {{"GET", "/api/v1/local/copies/{id}/checksums", Auth::kAdmin, Lane::kSlow},
       get_local_checksums},
      {{"GET", "/api/v1/volumes/{name}/access"}, get_access},
      {{"PUT", "/api/v1/volumes/{name}/access"}, put_access},
      {{"GET", "/api/v1/classes"}, list_classes},
      {{"POST", "/api/v1/classes"}, create_class},
      {{"GET", "/api/v1/classes/{name}"}, get_class},
      {{"DELETE", "/api/v1/classes/{name}"}, delete_class},
      {{"GET", "/api/v1/events"}, get_events},
  };
  return kRoutes;
}

// The console's static files: public (they hold no data; every API call they make carries
// the token), served by every node.
bool console_path(const HttpRequest& req) {
  return req.method == "GET" &&
         (req.path == "/" || req.path == "/index.html" || req.path.rfind("/ui/", 0) == 0);
}

std::optional<HttpResponse> console_asset(const HttpRequest& req) {
  if (!console_path(req)) return std::nullopt;
  std::string name = req.path.rfind("/ui/", 0) == 0 ? req.path.substr(4) : "index.html";
  const auto& all = webui::assets();
  auto it = all.find(name);
  if (it == all.end()) return std::nullopt;
  HttpResponse r;
  r.content_type = it->second.content_type;
  r.body = it->second.body;
  r.headers["Cache-Control"] = "no-cache";
  r.headers["X-Content-Type-Options"] = "nosniff";
  r.headers["Content-Security-Policy"] = "default-src 'self'";
  return r;
}

// On a node that is not the controller, /api/v1 calls (but this node's own /local ones) are
// passed on to the controller.
bool forwarded(const ApiContext& ctx, const HttpRequest& req) {
  return ctx.forward && req.path.rfind("/api/v1/", 0) == 0 &&
         req.path.rfind("/api/v1/local/", 0) != 0;
}

// The route for the request's path and method (its {placeholders} in *params), or nullptr
// with the methods the path does allow in *allowed.
const Route* find_route(const HttpRequest& req, Params* params, std::string* allowed) {
  for (const auto& r : table()) {
    if (!match(r.info.pattern, req.path, params)) continue;
    if (r.info.method == req.method) return &r;
    *allowed += (allowed->empty() ? "" : ", ") + r.info.method;
  }
  return nullptr;
}

}  // namespace

const std::vector<RouteInfo>& Router::routes() {
  static const std::vector<RouteInfo> kInfo = [] {
    std::vector<RouteInfo> out;
    for (const auto& r : table()) out.push_back(r.info);
    return out;
  }();
  return kInfo;
}

HttpResponse Router::handle(const HttpRequest& req, std::string* route) const {
  *route = "unmatched";
  if (auto asset = console_asset(req)) {
    *route = "console";
    return *asset;
  }
  if (forwarded(ctx_, req)) {
    *route = "forwarded";
    return ctx_.forward(req);
  }
  Params params;
  std::string allowed;
  const Route* found = find_route(req, &params, &allowed);
  bool admin_route = !found || found->info.auth == Auth::kAdmin;
  if (admin_route && !token_ok(ctx_, req.authorization)) {
    auto resp = error_response(
        {401, "unauthorized", "missing or wrong bearer token (Authorization: Bearer <token>)"});
    resp.headers["WWW-Authenticate"] = "Bearer";
    return resp;
  }
  if (!found) {
    if (!allowed.empty()) {
      auto resp = error_response({405, "method_not_allowed",
                                  req.method + " is not allowed on " + req.path});
      resp.headers["Allow"] = allowed;
      return resp;
    }
    return error_response(ApiError::not_found("no route for " + req.method + " " + req.path));
  }
  *route = found->info.pattern;
  try {
    return found->handler(ctx_, req, params);
  } catch (const json::exception& e) {
    // The JSON boundary is the one place exceptions are expected (type mismatches).
    return error_response(ApiError::bad_request(std::string("bad JSON value: ") + e.what()));
  }
}

Lane Router::lane(const HttpRequest& req) const {
  if (console_path(req)) return Lane::kInline;
  if (forwarded(ctx_, req)) return Lane::kForward;
  Params params;
  std::string allowed;
  const Route* found = find_route(req, &params, &allowed);
  // Unmatched requests get 401/404/405, answered without I/O.
  return found ? found->info.lane : Lane::kInline;
}

std::string random_hex(size_t bytes) {
  std::vector<unsigned char> b(bytes);
  if (RAND_bytes(b.data(), static_cast<int>(b.size())) != 1) std::abort();
  static const char* kHex = "0123456789abcdef";
  std::string out;
  for (auto c : b) {
    out.push_back(kHex[c >> 4]);
    out.push_back(kHex[c & 15]);
  }
  return out;
}

std::string sha256_hex(const std::string& data) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(data.data(), data.size(), md, &len, EVP_sha256(), nullptr);
  static const char* kHex = "0123456789abcdef";
  std::string out;
  for (unsigned int i = 0; i < len; ++i) {
    out.push_back(kHex[md[i] >> 4]);
    out.push_back(kHex[md[i] & 15]);
  }
  return out;
}

}  // namespace tandem::mgmt
