#include "mgmt/daemon/replication_endpoint.h"

#include <spdlog/spdlog.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ssl/context.hpp>
#include <optional>

#include "backend/link/link_server.h"
#include "backend/transport/tls_stream.h"
#include "backend/wire/frame.h"

namespace tandem::mgmt {

namespace link = backend::link;
namespace wire = backend::wire;
namespace tls = backend::transport;

namespace {

const char* event_kind(link::ServerEvent::Kind k) {
  switch (k) {
    case link::ServerEvent::Kind::kPeerRefused:
      return "peer-refused";
    case link::ServerEvent::Kind::kHandshakeFailed:
      return "peer-handshake-failed";
    case link::ServerEvent::Kind::kTooManyConnections:
      return "peer-too-many-connections";
    case link::ServerEvent::Kind::kProtocolError:
      return "peer-protocol-error";
    case link::ServerEvent::Kind::kReplyOverflow:
      return "peer-reply-overflow";
  }
  return "peer-error";
}

}  // namespace

struct ReplicationEndpoint::Impl {
  boost::asio::io_context& io;
  RecordEvent record;
  std::optional<boost::asio::ssl::context> ssl;
  std::unique_ptr<link::LinkServer> server;
};

ReplicationEndpoint::ReplicationEndpoint(boost::asio::io_context& io, RecordEvent record)
    : impl_(new Impl{io, std::move(record), std::nullopt, nullptr}) {}

ReplicationEndpoint::~ReplicationEndpoint() = default;

std::string ReplicationEndpoint::start(const std::string& tls_dir, const std::string& node_id,
                                       const std::string& address, uint16_t port,
                                       std::shared_ptr<link::FrameHandler> handler,
                                       std::shared_ptr<link::LinkMetrics> metrics,
                                       std::chrono::milliseconds heartbeat_interval) {
  auto creds = tls::load_node_credentials(tls_dir);
  if (!creds) return "TLS credentials in " + tls_dir + ": " + creds.error().message;
  if (auto v = tls::verify_peer(creds->cert_pem, creds->ca_pem); !v) {
    return "this node's certificate is not valid: " + v.error().message;
  }
  auto ctx = tls::make_tls_context(*creds);
  if (!ctx) return ctx.error().message;
  impl_->ssl.emplace(std::move(*ctx));
  link::LinkServer::Options opts;
  opts.bind_address = address;
  opts.port = port;
  opts.hello.node_id = node_id;
  opts.hello.address = address + ":" + std::to_string(port);
  opts.metrics = std::move(metrics);
  opts.heartbeat_interval = heartbeat_interval;
  Impl* impl = impl_.get();
  auto server = link::LinkServer::start(
      impl_->io, *impl_->ssl, opts, std::move(handler), [impl](const link::ServerEvent& e) {
        spdlog::warn("replication: {} from {} ({}): {}", link::to_string(e.kind), e.remote,
                     e.peer_name.empty() ? "no name" : e.peer_name, e.reason);
        std::string msg = std::string(link::to_string(e.kind)) + ": " + e.remote +
                          (e.peer_name.empty() ? "" : " (CN=" + e.peer_name + ")") + ": " +
                          e.reason;
        impl->record(event_kind(e.kind), msg);
      });
  if (!server) return server.error().message;
  impl_->server = std::move(*server);
  return {};
}

void ReplicationEndpoint::stop() {
  if (impl_->server) impl_->server->close();
}

}  // namespace tandem::mgmt
