// A small synchronous HTTP/1.1 client (Boost.Beast) for tandemctl, node-to-controller calls
// and the integration tests: one request per call, its own connection, a deadline on connect, write and read.
// Not thread-safe per instance; cheap to create.
#pragma once

#include <map>
#include <string>

#include "core/result.h"

namespace tandem::mgmt {

struct ClientResponse {
  int status = 0;
  std::string body;
  std::map<std::string, std::string> headers;
};

class HttpClient {
 public:
  // base: "http://host:port" (a path prefix is not supported). `authorization`, when given,
  // is sent as the raw Authorization header instead of "Bearer <token>" (forwarding).
  static core::Result<HttpClient, std::string> make(const std::string& base, std::string token,
                                                    int timeout_s = 30);
  core::Result<ClientResponse, std::string> request(const std::string& method,
                                                    const std::string& target,
                                                    const std::string& body = "",
                                                    const std::string& content_type =
                                                        "application/json",
                                                    const std::string* authorization = nullptr,
                                                    const std::map<std::string, std::string>*
                                                        extra_headers = nullptr) const;
  const std::string& host() const { return host_; }
  const std::string& port() const { return port_; }

 private:
  HttpClient() = default;
  std::string host_;
  std::string port_;
  std::string token_;
  int timeout_s_ = 30;
};

}  // namespace tandem::mgmt
