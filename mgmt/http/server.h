// HttpServer: the Boost.Beast shell around the pure Router. One coroutine per connection on
// its own strand; a deadline on every read and write; request bodies capped. stop() closes
// the listener and idle connections, lets in-flight requests finish, and reports when the
// last connection is gone. Reads and writes run on the io_context it is given (the node's
// network threads, shared with iSCSI and replication); a handler that may block runs on the
// pool of its lane (Router::lane), and its answer is written from the connection's strand
// again. The io_context and the pools must outlive the server.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

namespace boost::asio {
class io_context;
class thread_pool;
}  // namespace boost::asio

namespace tandem::mgmt {

class Router;
class Metrics;

struct HttpServerOptions {
  std::string address = "127.0.0.1";
  uint16_t port = 8080;
  uint64_t body_limit = 1 << 20;  // 1 MiB
  int read_timeout_s = 30;
  int write_timeout_s = 30;
};

class HttpServer {
 public:
  // Where handlers of each blocking lane run.
  struct Pools {
    boost::asio::thread_pool* control = nullptr;
    boost::asio::thread_pool* slow = nullptr;
    boost::asio::thread_pool* forward = nullptr;
  };
  HttpServer(boost::asio::io_context& ioc, Pools pools, const Router& router, Metrics& metrics,
             HttpServerOptions opts);
  ~HttpServer();
  // Binds and starts accepting. Returns an error message on failure (port in use, ...).
  std::string start();
  // Graceful stop; `drained` runs (on the io_context) once no connection remains.
  void stop(std::function<void()> drained);

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

}  // namespace tandem::mgmt
