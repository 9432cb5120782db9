// LinkServer: the replication listener on <bind>:5703. Each accepted connection is verified
// by mutual TLS (cluster CA), must send HELLO first (answered with ours), and then every frame
// goes to the daemon's FrameHandler, which may answer on the same connection. Refused peers
// (bad certificate, failed handshake, too many connections) and connections ended by a protocol
// error are reported through an event callback. Owner: the daemon (one per node).
// Thread-safety: start/close/accessors from any thread. Each connection has its own strand:
// FrameHandler calls for one connection are serialised on it, different connections run
// concurrently; the event callback may run concurrently from several strands.
// The io_context and ssl::context must outlive the server; the handler is shared-owned.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "backend/link/link_types.h"
#include "backend/wire/frame.h"

namespace boost::asio {
class io_context;
namespace ssl {
class context;
}  // namespace ssl
}  // namespace boost::asio

namespace tandem::backend::link {

// One established inbound connection, as the FrameHandler sees it. Thread-safe; keep the
// shared_ptr to reply later (e.g. after the store has written the data).
class InboundConnection {
 public:
  virtual ~InboundConnection() = default;
  // Queues one encoded reply frame (ACK, NACK, REGION_SUMMARY...), written in order on this
  // connection. Over the reply budget the connection is closed (reported as kReplyOverflow:
  // a peer that does not read its acks is broken, and the inbound side must not buffer without
  // bound) and kBackPressure returned. kNotUp once the connection has ended. `frame` is moved
  // from only when kQueued.
  [[nodiscard]] virtual SendStatus reply(std::vector<uint8_t>&& frame) = 0;
  // Ends the connection (e.g. a NACK kBadCrc was sent and the link must be reset).
  virtual void close(std::string reason) = 0;
  virtual uint64_t id() const = 0;                    // unique per server, for logs
  virtual const std::string& peer_name() const = 0;   // verified certificate CN
  virtual const std::string& remote() const = 0;      // "ip:port"
  virtual const wire::Hello& peer_hello() const = 0;  // what the peer announced
  virtual size_t queued_bytes() const = 0;
  // From a FrameHandler call, on the connection's strand: runs `fn` there once every frame of
  // the current socket read has been handed over, before the next read, so that answers made
  // frame by frame go out as one (a cumulative ACK). The default runs it at once.
  virtual void at_read_end(std::function<void()> fn) { fn(); }
};

// Supplied by the daemon; routes frames by header (volume, copy id) to the replica engines.
// All calls for one connection run on that connection's strand; do not block in them.
class FrameHandler {
 public:
  virtual ~FrameHandler() = default;
  // After HELLO was exchanged, before any on_frame of this connection.
  virtual void on_connection_up(const std::shared_ptr<InboundConnection>& conn) {}
  // Every frame but HELLO and link-level heartbeats.
  virtual void on_frame(const std::shared_ptr<InboundConnection>& conn,
                        const wire::FrameHeader& header, std::vector<uint8_t> payload) = 0;
  // Last call for this connection (only if on_connection_up was called).
  virtual void on_connection_down(const std::shared_ptr<InboundConnection>& conn,
                                  const std::string& reason) {}
};

struct ServerEvent {
  enum class Kind {
    kPeerRefused,         // certificate missing / not from the cluster CA / expired
    kHandshakeFailed,     // other TLS failure or handshake timeout
    kTooManyConnections,  // over max_connections: closed at once
    kProtocolError,       // bad frame, CRC, no HELLO first: connection reset
    kReplyOverflow,       // reply budget exceeded: connection closed
  };
  Kind kind = Kind::kPeerRefused;
  std::string remote;     // "ip:port" of the peer
  std::string peer_name;  // certificate CN when known
  std::string reason;
};
const char* to_string(ServerEvent::Kind k);

class LinkServer {
 public:
  struct Options {
    std::string bind_address = "0.0.0.0";
    uint16_t port = 5703;          // 0 = ephemeral (tests): see local_port()
    wire::Hello hello;             // our HELLO (node_id required)
    size_t max_connections = 256;  // established + handshaking
    std::chrono::milliseconds handshake_timeout{10'000};
    size_t reply_budget_bytes = 16u << 20;
    size_t max_gather_bytes = 256u << 10;
    std::chrono::milliseconds write_timeout{10'000};
    std::chrono::milliseconds heartbeat_interval{1'000};
    std::chrono::milliseconds idle_timeout{5'000};  // also bounds the wait for HELLO
    uint32_t max_payload = wire::kMaxPayload;
    std::shared_ptr<LinkMetrics> metrics;  // a private set if null
  };
  using EventCallback = std::function<void(const ServerEvent&)>;

  // Binds and listens (SO_REUSEADDR); accepting starts at once.
  [[nodiscard]] static LinkResult<std::unique_ptr<LinkServer>> start(
      boost::asio::io_context& io, boost::asio::ssl::context& tls, Options options,
      std::shared_ptr<FrameHandler> handler, EventCallback on_event);

  // Closes (see close()); does not wait.
  ~LinkServer();
  LinkServer(const LinkServer&) = delete;
  LinkServer& operator=(const LinkServer&) = delete;

  // Stops accepting and ends every connection (each gets on_connection_down). Idempotent.
  // `done` (optional, first close() only) runs once the listening socket is closed (its port
  // may be bound again) and no connection is left, on a server or connection strand.
  void close(std::function<void()> done = {});
  uint16_t local_port() const;
  size_t connection_count() const;  // established + handshaking
  LinkMetrics& metrics();

  struct Impl;

 private:
  explicit LinkServer(std::shared_ptr<Impl> impl);
  std::shared_ptr<Impl> impl_;
};

}  // namespace tandem::backend::link
