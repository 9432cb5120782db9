// Plain request/response values for the REST routes, so route code is pure (no Beast):
// the HTTP shell (mgmt/http) converts to and from these. Value types; no thread affinity.
#pragma once

#include <map>
#include <string>

namespace tandem::mgmt {

struct HttpRequest {
  std::string method;  // "GET", "POST", ...
  std::string target;  // the raw request target as received ("/a/b?x=1"), for forwarding
  std::string path;    // decoded path without the query, e.g. "/api/v1/volumes/db1"
  std::map<std::string, std::string> query;
  std::string authorization;  // raw Authorization header
  std::string content_type;
  std::string body;
  // X-Tandem-Origin-Node: set by a node that forwards a call to the controller, naming
  // itself (a volume created through it gets its master there unless the body says).
  std::string origin_node;
};

inline constexpr const char* kOriginNodeHeader = "X-Tandem-Origin-Node";

struct HttpResponse {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  std::map<std::string, std::string> headers;
};

// Splits "/a/b?x=1&y=2" into path and query, percent-decoding both. Returns false when the
// target is malformed (bad escape, not starting with '/').
bool split_target(const std::string& target, std::string* path,
                  std::map<std::string, std::string>* query);

}  // namespace tandem::mgmt
