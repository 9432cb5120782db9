#include "mgmt/daemon/cluster_setup.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>

#include "backend/store/file_store.h"
#include "backend/transport/tls_identity.h"
#include "mgmt/api/router.h"
#include "mgmt/cli/http_client.h"
#include "mgmt/cluster_state.h"
#include "mgmt/controller_policy.h"

namespace tandem::mgmt {

namespace fs = std::filesystem;
namespace tls = backend::transport;
using nlohmann::json;

namespace {

std::string read_line(const fs::path& p) {
  std::ifstream f(p);
  std::string s;
  std::getline(f, s);
  return s;
}

}  // namespace

core::Result<std::string, std::string> FileCa::sign(const std::string& csr_pem,
                                                    const std::string& node_name,
                                                    const std::string& address) {
  // The certificate must say who the joining node claims to be, nothing else.
  auto info = tls::inspect_csr(csr_pem);
  if (!info) return core::fail(info.error().message);
  if (info->common_name != node_name) {
    return core::fail("the request names '" + info->common_name + "', not '" + node_name + "'");
  }
  if (std::find(info->ip_addresses.begin(), info->ip_addresses.end(), address) ==
      info->ip_addresses.end()) {
    return core::fail("the request does not carry the node's address " + address);
  }
  auto r = tls::sign_csr(dir_, csr_pem, tls::kDefaultNodeValidityDays);
  if (!r) return core::fail(r.error().message);
  return *r;
}

std::string FileCa::ca_pem() const {
  auto r = tls::read_pem_file(fs::path(dir_) / tls::kCaCertFile);
  return r ? *r : std::string();
}

std::string bootstrap_controller(db::Catalogue& cat, const NodeIdentity& me) {
  fs::path tls_dir = fs::path(me.data_dir) / "tls";
  fs::path ca_dir = tls_dir / "ca";
  if (!fs::exists(ca_dir / tls::kCaKeyFile)) {
    auto ca = tls::create_cluster_ca(ca_dir);
    if (!ca) return "cannot create the cluster CA: " + ca.error().message;
    spdlog::info("cluster CA created: {} ({})", ca->common_name, ca->fingerprint_sha256);
  }
  if (!fs::exists(tls_dir / tls::kNodeCertFile)) {
    auto kc = tls::create_node_key_and_csr(me.name, me.address);
    if (!kc) return "cannot create this node's key: " + kc.error().message;
    auto cert = tls::sign_csr(ca_dir, kc->csr_pem, tls::kDefaultNodeValidityDays);
    if (!cert) return "cannot sign this node's certificate: " + cert.error().message;
    auto ca_pem = tls::read_pem_file(ca_dir / tls::kCaCertFile);
    if (!ca_pem) return ca_pem.error().message;
    if (auto s = tls::store_node_credentials(tls_dir, {*cert, kc->key_pem, *ca_pem}); !s) {
      return "cannot store this node's credentials: " + s.error().message;
    }
  }
  fs::path token_path = fs::path(me.data_dir) / "join.token";
  std::string token = read_line(token_path);
  bool fresh = token.empty();
  if (fresh) {
    token = random_hex(24);
    if (auto w = tls::write_private_pem(token_path, token + "\n"); !w) {
      return "cannot write " + token_path.string() + ": " + w.error().message;
    }
  }
  auto r = cat.transact<void>([&](db::Tx& tx) {
    return tx.set_setting(ClusterService::kJoinTokenSetting, sha256_hex(token));
  });
  if (!r) return "catalogue: " + r.error().message;
  if (fresh) {
    std::cout << "join token: " << token << "  (saved in " << token_path.string()
              << "; other nodes start with --join " << me.api_url << " --join-token <it>)"
              << std::endl;
  }
  return {};
}

std::string join_cluster(const NodeIdentity& me, const std::string& controller_url,
                         const std::string& join_token) {
  fs::path dir(me.data_dir);
  fs::path tls_dir = dir / "tls";
  if (fs::exists(tls_dir / tls::kNodeCertFile) && fs::exists(dir / "node.token")) {
    if (auto c = tls::load_node_credentials(tls_dir); !c) {
      return "stored TLS credentials are unusable: " + c.error().message;
    }
    return {};  // joined before; heartbeats resume with the stored token
  }
  if (join_token.empty()) return "--join needs --join-token on the first start";
  auto kc = tls::create_node_key_and_csr(me.name, me.address);
  if (!kc) return "cannot create this node's key: " + kc.error().message;
  auto client = HttpClient::make(controller_url, join_token, 30);
  if (!client) return client.error();
  json req{{"name", me.name},
           {"address", me.address},
           {"api_url", me.api_url},
           {"iscsi_port", me.iscsi_port},
           {"repl_port", me.repl_port},
           {"csr", kc->csr_pem},
           {"node_id", read_line(dir / "node.id")}};
  auto res = client->request("POST", "/api/v1/cluster/join", req.dump());
  if (!res) return "cannot reach the controller at " + controller_url + ": " + res.error();
  json body = json::parse(res->body, nullptr, false);
  if (res->status != 200 || !body.is_object()) {
    std::string msg = body.is_object() && body.contains("error")
                          ? body["error"].value("message", res->body)
                          : res->body;
    return "the controller refused to join us (HTTP " + std::to_string(res->status) + "): " + msg;
  }
  tls::NodeCredentials creds{body.value("certificate", ""), kc->key_pem,
                             body.value("ca_certificate", "")};
  if (auto v = tls::verify_peer(creds.cert_pem, creds.ca_pem); !v) {
    return "the controller sent a certificate we cannot verify: " + v.error().message;
  }
  if (auto s = tls::store_node_credentials(tls_dir, creds); !s) return s.error().message;
  if (auto w = tls::write_private_pem(dir / "node.id", body.value("node_id", "") + "\n"); !w) {
    return w.error().message;
  }
  if (auto w = tls::write_private_pem(dir / "node.token", body.value("node_token", "") + "\n");
      !w) {
    return w.error().message;
  }
  spdlog::info("joined the cluster at {} as {}", controller_url, me.name);
  return {};
}

HttpResponse forward_to(const std::string& controller_url, const HttpRequest& req,
                        const std::string& origin_node) {
  HttpResponse out;
  auto client = HttpClient::make(controller_url, "", 30);
  if (!client) {
    out.status = 502;
    out.body = json{{"error", {{"code", "bad_gateway"}, {"message", client.error()}}}}.dump();
    return out;
  }
  std::map<std::string, std::string> headers;
  if (!origin_node.empty()) headers[kOriginNodeHeader] = origin_node;
  auto r = client->request(req.method, req.target, req.body,
                           req.content_type.empty() ? "application/json" : req.content_type,
                           &req.authorization, &headers);
  if (!r) {
    out.status = 502;
    out.body = json{{"error",
                     {{"code", "bad_gateway"},
                      {"message",
                       "the controller at " + controller_url + " is unreachable: " + r.error()}}}}
                   .dump();
    return out;
  }
  out.status = r->status;
  out.body = std::move(r->body);
  if (auto it = r->headers.find("Content-Type"); it != r->headers.end()) {
    out.content_type = it->second;
  }
  for (const char* h : {"Location", "Allow", "WWW-Authenticate"}) {
    if (auto it = r->headers.find(h); it != r->headers.end()) out.headers[h] = it->second;
  }
  return out;
}

NodeAgent::NodeAgent(NodeIdentity me, std::string controller_url,
                     std::chrono::milliseconds interval, std::shared_ptr<TokenHash> admin_token,
                     db::Catalogue* local)
    : me_(std::move(me)),
      controller_url_(std::move(controller_url)),
      interval_(interval),
      admin_token_(std::move(admin_token)),
      local_(local) {
  token_ = read_line(fs::path(me_.data_dir) / "node.token");
}

NodeAgent::~NodeAgent() { stop(); }

void NodeAgent::start() {
  thread_ = std::thread([this] { run(); });
}

void NodeAgent::stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void NodeAgent::report_event(std::string kind, std::string message) {
  std::lock_guard lock(mu_);
  if (message.size() > 1000) message.resize(1000);
  pending_.push_back({std::move(kind), std::move(message)});
  while (pending_.size() > kMaxReportedEvents) pending_.pop_front();
}

bool NodeAgent::lease_valid() const {
  int64_t now = std::chrono::duration_cast<std::chrono::nanoseconds>(
                    std::chrono::steady_clock::now().time_since_epoch())
                    .count();
  return lease_holds(lease_until_ns_.load(), now);
}

void NodeAgent::set_copy_reporter(std::function<std::vector<CopyReport>()> f) {
  std::lock_guard lock(mu_);
  copy_reporter_ = std::move(f);
}

void NodeAgent::set_state_applied_hook(std::function<void()> f) {
  std::lock_guard lock(mu_);
  state_applied_ = std::move(f);
}

bool NodeAgent::report_copies_now(const std::vector<CopyReport>& reports,
                                  std::chrono::milliseconds timeout) {
  if (reports.size() > kMaxCopyReports) return false;
  // Its own client and connection: safe beside the heartbeat thread.
  int secs = static_cast<int>(std::max<int64_t>(
      1, std::chrono::duration_cast<std::chrono::seconds>(timeout + std::chrono::milliseconds(999))
             .count()));
  auto client = HttpClient::make(controller_url_, token_, secs);
  if (!client) return false;
  json body{{"node", me_.name}, {"copies", copy_reports_json(reports)}};
  auto r = client->request("POST", "/api/v1/cluster/copy-state", body.dump());
  if (!r || r->status != 200) {
    spdlog::warn("copy-state report to {} failed: {}", controller_url_,
                 !r ? r.error() : std::to_string(r->status) + " " + r->body);
    return false;
  }
  return true;
}

bool NodeAgent::apply_state(const json& snapshot) {
  if (!local_) return true;
  auto r = local_->transact<void>([&](db::Tx& tx) { return apply_cluster_snapshot(tx, snapshot); });
  if (!r) {
    spdlog::error("cluster state from {} not applied: {}", controller_url_, r.error().message);
    return false;
  }
  known_revision_ = snapshot.value("revision", int64_t{-1});
  spdlog::debug("cluster state revision {} applied", known_revision_);
  std::function<void()> hook;
  {
    std::lock_guard lock(mu_);
    hook = state_applied_;
  }
  if (hook) hook();
  return true;
}

json NodeAgent::bounded_reports(const std::vector<CopyReport>& all) {
  // The controller refuses bodies over 1 MiB and lists over kMaxCopyReports: a node that
  // masters more copies than fit sends a window per heartbeat, moving on each time, so
  // every copy is reported within a few heartbeats and the heartbeat itself never fails.
  constexpr size_t kBudget = 768 * 1024;
  json out = json::array();
  size_t bytes = 0;
  size_t start = report_cursor_ % all.size();
  size_t n = 0;
  for (; n < all.size() && n < kMaxCopyReports; ++n) {
    json one = copy_reports_json({all[(start + n) % all.size()]})[0];
    size_t len = one.dump().size() + 1;
    if (bytes + len > kBudget) break;
    bytes += len;
    out.push_back(std::move(one));
  }
  report_cursor_ = n == all.size() ? 0 : start + n;
  return out;
}

void NodeAgent::run() {
  backend::FileStore store(me_.data_dir + "/volumes");
  for (;;) {
    json report{{"capacity_bytes", store.total_bytes().ok() ? *store.total_bytes() : 0},
                {"free_bytes", store.free_bytes().ok() ? *store.free_bytes() : 0},
                {"known_revision", known_revision_}};
    if (!me_.boot_id.empty()) report["boot_id"] = me_.boot_id;
    std::function<std::vector<CopyReport>()> reporter;
    {
      std::lock_guard lock(mu_);
      reporter = copy_reporter_;
    }
    if (reporter) {
      auto copies = reporter();
      if (!copies.empty()) report["copies"] = bounded_reports(copies);
    }
    size_t sent_events = 0;
    {
      std::lock_guard lock(mu_);
      json evs = json::array();
      for (const auto& e : pending_) evs.push_back({{"kind", e.kind}, {"message", e.message}});
      sent_events = pending_.size();
      report["events"] = std::move(evs);
    }
    auto sent_at = std::chrono::steady_clock::now();
    auto client = HttpClient::make(controller_url_, token_, 5);
    bool ok = false;
    std::string why;
    if (client) {
      auto r = client->request("POST", "/api/v1/nodes/" + me_.name + "/heartbeat", report.dump());
      ok = r && r->status == 200;
      why = !r ? r.error() : r->body;
      if (ok) {
        std::lock_guard lock(mu_);
        // Only what this heartbeat carried; newer ones wait for the next.
        pending_.erase(pending_.begin(), pending_.begin() + static_cast<std::ptrdiff_t>(std::min(
                                                                sent_events, pending_.size())));
      }
      if (ok) {
        auto j = json::parse(r->body, nullptr, false);
        if (j.is_object() && !j.value("admin_token_sha256", "").empty()) {
          admin_token_->set(j.value("admin_token_sha256", ""));
        }
        // The state first: its hook fences the masters it no longer names
        // (VolumeHost::fence_superseded), so renewing the lease after it never lets a
        // deposed master acknowledge in the moment before it is closed (found by sim_cluster).
        bool state_ok = true;
        if (j.is_object() && j.contains("state") && local_) {
          state_ok = apply_state(j["state"]);
        } else if (j.is_object() && !local_ && j.contains("revision") &&
                   j["revision"].is_number_integer()) {
          known_revision_ = j["revision"].get<int64_t>();  // no mirror: just stop the resends
        }
        // The lease last: the state this answer carried (it may depose one of our masters)
        // is in the local catalogue before the volume host sees the renewal.
        if (state_ok && j.is_object() && j.contains("node_timeout_ms") &&
            j["node_timeout_ms"].is_number_integer() && j["node_timeout_ms"].get<int64_t>() > 0) {
          auto sent_ns =
              std::chrono::duration_cast<std::chrono::nanoseconds>(sent_at.time_since_epoch())
                  .count();
          lease_until_ns_.store(
              lease_until(sent_ns, j["node_timeout_ms"].get<int64_t>() * 1'000'000));
        }
      }
    }
    if (ok != reachable_) {
      if (ok) {
        spdlog::info("controller {} reachable again", controller_url_);
      } else {
        spdlog::warn("heartbeat to {} failed: {}", controller_url_, why);
      }
      reachable_ = ok;
    }
    std::unique_lock lock(mu_);
    if (cv_.wait_for(lock, interval_, [this] { return stopping_; })) return;
  }
}

}  // namespace tandem::mgmt
