// ReplicationEndpoint: tcp/5703 on this node: mutual TLS with the cluster CA (a peer without
// a valid cluster certificate is refused, logged and recorded as an event), HELLO exchange,
// frame decoding (backend/link); frames go to the node's handler (the volume host's replica
// copies and forwarded I/O). Runs on the daemon's io_context.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>

namespace boost::asio {
class io_context;
}
namespace tandem::backend::link {
class FrameHandler;
struct LinkMetrics;
}  // namespace tandem::backend::link

namespace tandem::mgmt {

class ReplicationEndpoint {
 public:
  // `record` puts an event in the cluster's log (directly on the controller, through the
  // heartbeat on other nodes); called on connection strands.
  using RecordEvent = std::function<void(const std::string& kind, const std::string& message)>;
  ReplicationEndpoint(boost::asio::io_context& io, RecordEvent record);
  ~ReplicationEndpoint();
  // Loads DATA_DIR/tls credentials and listens; returns an error message or "".
  std::string start(const std::string& tls_dir, const std::string& node_id,
                    const std::string& address, uint16_t port,
                    std::shared_ptr<backend::link::FrameHandler> handler,
                    std::shared_ptr<backend::link::LinkMetrics> metrics,
                    std::chrono::milliseconds heartbeat_interval = std::chrono::seconds(1));
  // Closes the listener and every connection (asynchronously, on the io_context).
  void stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tandem::mgmt
