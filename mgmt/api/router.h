// Router: the REST API as a pure function from HttpRequest to HttpResponse (no sockets),
// so every route is testable without a server. Holds references to the node's services;
// they must outlive it. Thread-safe: handle() may run on several threads at once. Most
// routes block (catalogue transactions that fsync, whole-volume reads, calls to other
// nodes): lane() tells the HTTP shell where a request may run, and only kInline ones may
// run on a network thread.
#pragma once

#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/result.h"
#include "mgmt/api/http_types.h"

namespace tandem::db {
class Catalogue;
}

namespace tandem::mgmt {

class VolumeService;
class Metrics;
class ClusterService;

// The admin token's hash, readable by many request threads and replaced rarely (a joined
// node learns the cluster's from the controller's heartbeat answers).
class TokenHash {
 public:
  explicit TokenHash(std::string hash = {}) : hash_(std::move(hash)) {}
  std::string get() const {
    std::lock_guard lock(mu_);
    return hash_;
  }
  void set(std::string hash) {
    std::lock_guard lock(mu_);
    hash_ = std::move(hash);
  }

 private:
  mutable std::mutex mu_;
  std::string hash_;
};

struct ApiContext {
  db::Catalogue* catalogue = nullptr;
  VolumeService* volumes = nullptr;
  Metrics* metrics = nullptr;
  ClusterService* cluster = nullptr;
  std::shared_ptr<TokenHash> admin_token;  // hex SHA-256 of the admin token
  std::string node_name;
  // Set on nodes that are not the controller: every /api/v1 call is passed to the
  // controller (clients may talk to any node) and its answer returned as is.
  std::function<HttpResponse(const HttpRequest&)> forward;
  // This node's copy of a volume as region checksums (JSON of mgmt/verify.h) or an error
  // message; for `volume verify`.
  std::function<core::Result<nlohmann::json, std::string>(const std::string& volume_id)>
      local_checksums;
  // Sends a request to another node's API (its base URL) and returns the answer.
  std::function<HttpResponse(const std::string& api_url, const HttpRequest&)> call_node;
};

// Who may call a route: the admin (bearer admin token), anyone, or the handler checks a
// token of its own (join token, node token).
enum class Auth { kAdmin, kNone, kOwnToken };

// Where a request's handler runs (mgmt/http/server.h):
//  kInline:  no I/O, no lock held for long (health, static documents, auth refusals): on
//            the connection's network thread.
//  kControl: short catalogue transactions (one fsync of the WAL at most), the controller's
//            heartbeats and copy reports: on the control pool.
//  kSlow:    may take seconds or wait on another node (verify, a copy's checksums): on the
//            slow pool, so it never delays kControl work such as other nodes' heartbeats.
//  kForward: passed on to the controller (a node that is not the controller): on a pool of
//            its own, because the controller's verify calls back into this node's slow lane
//            for checksums; sharing one pool, forwarded verifies could fill it and wait on
//            calls that cannot start.
enum class Lane { kInline, kControl, kSlow, kForward };

struct RouteInfo {
  std::string method;
  std::string pattern;  // "/api/v1/volumes/{name}"
  Auth auth = Auth::kAdmin;
  Lane lane = Lane::kControl;
};

class Router {
 public:
  explicit Router(ApiContext ctx) : ctx_(std::move(ctx)) {}
  // Fills *route with the matched pattern (or "unmatched") for metrics.
  HttpResponse handle(const HttpRequest& req, std::string* route) const;
  // The lane handle(req) needs; cheap (no I/O, no locks), for the HTTP shell.
  Lane lane(const HttpRequest& req) const;
  static const std::vector<RouteInfo>& routes();

 private:
  ApiContext ctx_;
};

// Lower-case hex SHA-256 (OpenSSL); tokens are stored and compared as these.
std::string sha256_hex(const std::string& data);
// `bytes` random bytes from OpenSSL's CSPRNG as lower-case hex (tokens). Aborts if the
// system has no randomness.
std::string random_hex(size_t bytes);
// The OpenAPI 3 document served at /api/v1/openapi.json.
const std::string& openapi_document();

}  // namespace tandem::mgmt
