// Router: the REST API as a pure function from HttpRequest to HttpResponse (no sockets),
// so every route is testable without a server. Holds references to the node's services;
// they must outlive it. Thread-safe: handle() may run on several HTTP threads at once.
#pragma once

#include <string>
#include <vector>

#include "mgmt/api/http_types.h"

namespace tandem::db {
class Catalogue;
}

namespace tandem::mgmt {

class VolumeService;
class Metrics;

struct ApiContext {
  db::Catalogue* catalogue = nullptr;
  VolumeService* volumes = nullptr;
  Metrics* metrics = nullptr;
  std::string token_sha256;  // hex SHA-256 of the admin token
  std::string node_name;
};

struct RouteInfo {
  std::string method;
  std::string pattern;  // "/api/v1/volumes/{name}"
  bool needs_auth = true;
};

class Router {
 public:
  explicit Router(ApiContext ctx) : ctx_(std::move(ctx)) {}
  // Fills *route with the matched pattern (or "unmatched") for metrics.
  HttpResponse handle(const HttpRequest& req, std::string* route) const;
  static const std::vector<RouteInfo>& routes();

 private:
  ApiContext ctx_;
};

// Lower-case hex SHA-256 (OpenSSL); used for the admin token.
std::string sha256_hex(const std::string& data);
// The OpenAPI 3 document served at /api/v1/openapi.json.
const std::string& openapi_document();

}  // namespace tandem::mgmt
