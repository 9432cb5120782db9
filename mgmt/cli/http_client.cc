#include "mgmt/cli/http_client.h"

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>

namespace tandem::mgmt {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;

core::Result<HttpClient, std::string> HttpClient::make(const std::string& base, std::string token,
                                                       int timeout_s) {
  static constexpr std::string_view kScheme = "http://";
  if (base.compare(0, kScheme.size(), kScheme) != 0) {
    return core::fail(std::string("server URL must start with http://: ") + base);
  }
  std::string rest = base.substr(kScheme.size());
  while (!rest.empty() && rest.back() == '/') rest.pop_back();
  if (rest.empty() || rest.find('/') != std::string::npos) {
    return core::fail(std::string("server URL must be http://host[:port]: ") + base);
  }
  HttpClient c;
  auto colon = rest.rfind(':');
  if (colon == std::string::npos || rest.back() == ']') {
    c.host_ = rest;
    c.port_ = "80";
  } else {
    c.host_ = rest.substr(0, colon);
    c.port_ = rest.substr(colon + 1);
  }
  if (c.host_.size() > 2 && c.host_.front() == '[' && c.host_.back() == ']') {
    c.host_ = c.host_.substr(1, c.host_.size() - 2);
  }
  c.token_ = std::move(token);
  c.timeout_s_ = timeout_s;
  return c;
}

core::Result<ClientResponse, std::string> HttpClient::request(
    const std::string& method, const std::string& target, const std::string& body,
    const std::string& content_type, const std::string* authorization,
    const std::map<std::string, std::string>* extra_headers) const {
  try {
    asio::io_context ioc;
    asio::ip::tcp::resolver resolver(ioc);
    beast::tcp_stream stream(ioc);
    beast::error_code ec;
    auto results = resolver.resolve(host_, port_, ec);
    if (ec) return core::fail("cannot resolve " + host_ + ": " + ec.message());
    stream.expires_after(std::chrono::seconds(timeout_s_));
    stream.connect(results, ec);
    if (ec) return core::fail("cannot connect to " + host_ + ":" + port_ + ": " + ec.message());
    http::request<http::string_body> req{http::string_to_verb(method), target, 11};
    if (req.method() == http::verb::unknown) req.method_string(method);
    req.set(http::field::host, host_);
    req.set(http::field::user_agent, "tandemctl/" TANDEM_VERSION);
    if (extra_headers) {
      for (const auto& [k, v] : *extra_headers) req.set(k, v);
    }
    if (authorization) {
      if (!authorization->empty()) req.set(http::field::authorization, *authorization);
    } else if (!token_.empty()) {
      req.set(http::field::authorization, "Bearer " + token_);
    }
    if (!body.empty()) {
      req.set(http::field::content_type, content_type);
      req.body() = body;
    }
    req.keep_alive(false);
    req.prepare_payload();
    stream.expires_after(std::chrono::seconds(timeout_s_));
    http::write(stream, req, ec);
    if (ec) return core::fail("write failed: " + ec.message());
    beast::flat_buffer buf;
    http::response_parser<http::string_body> parser;
    parser.body_limit(64ull << 20);
    stream.expires_after(std::chrono::seconds(timeout_s_));
    http::read(stream, buf, parser, ec);
    if (ec) return core::fail("read failed: " + ec.message());
    auto& res = parser.get();
    ClientResponse out;
    out.status = static_cast<int>(res.result_int());
    out.body = std::move(res.body());
    for (const auto& f : res) out.headers[std::string(f.name_string())] = std::string(f.value());
    stream.socket().shutdown(asio::ip::tcp::socket::shutdown_both, ec);
    return out;
  } catch (const std::exception& e) {
    return core::fail(std::string("HTTP error: ") + e.what());
  }
}

}  // namespace tandem::mgmt
