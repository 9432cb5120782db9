// Mutual TLS 1.3 for replication on tcp/5703: the node's ssl::context, a deadline-bounded
// connect, a server handshake and a listener. The caller owns the context, which must outlive
// every stream/listener made from it; each stream belongs to one strand (its executor).
#pragma once

#include <atomic>
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/asio/strand.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "backend/transport/tls_identity.h"

namespace tandem::backend::transport {

using TlsSocket = boost::asio::ssl::stream<boost::asio::ip::tcp::socket>;

inline constexpr std::chrono::milliseconds kHandshakeTimeout{10'000};

// A handshaken, mutually authenticated connection.
struct TlsConnection {
  TlsSocket stream;
  PeerIdentity peer;                      // CN and fingerprint of the verified peer cert
  boost::asio::ip::tcp::endpoint remote;  // peer address, for logs
};

// One context per node, usable for both accepting and connecting: TLS 1.3 only,
// creds.cert_pem / key_pem as our identity (key checked against cert), creds.ca_pem as the
// only trust anchor (no system CAs), verify_peer | verify_fail_if_no_peer_cert, no session
// resumption (every connection re-verifies the peer certificate), no compression.
// Our own certificate's validity is not judged here: call verify_peer(creds.cert_pem,
// creds.ca_pem) at start-up to warn about an expired or foreign node certificate.
[[nodiscard]] TlsResult<boost::asio::ssl::context> make_tls_context(const NodeCredentials& creds);

// Resolves host (an IP literal skips DNS), connects, and handshakes as TLS client, all
// within `timeout`. If expected_peer_cn is non-empty the server's verified CN must equal it
// (kPeerMismatch otherwise). The stream runs on `ex` (pass a strand for multi-threaded pools).
boost::asio::awaitable<TlsResult<TlsConnection>> async_connect_tls(
    boost::asio::any_io_executor ex, std::string host, uint16_t port,
    boost::asio::ssl::context& ctx, std::chrono::milliseconds timeout = kHandshakeTimeout,
    std::string expected_peer_cn = {});

// Handshakes as TLS server on an accepted socket within `timeout`, on the socket's executor.
// A peer with no certificate (kNoPeerCertificate), one not signed by the cluster CA, expired
// or otherwise invalid (kPeerRefused, message names the peer address and CN when known), or
// not speaking TLS 1.3 (kProtocolVersion) is refused and the socket closed.
boost::asio::awaitable<TlsResult<TlsConnection>> async_accept_tls(
    boost::asio::ip::tcp::socket socket, boost::asio::ssl::context& ctx,
    std::chrono::milliseconds timeout = kHandshakeTimeout);

// Accepts on an endpoint and handshakes each connection on its own strand, bounded by a
// handshake deadline and a cap on concurrent handshakes (excess connections are closed at
// once). Every outcome goes to the handler: a connection, or an error the caller turns into an
// event ("peer without a valid certificate refused"). Owned by a shared_ptr; start/close may
// be called from any thread; the handler runs on the connection's strand and may run
// concurrently for different connections.
class TlsListener : public std::enable_shared_from_this<TlsListener> {
 public:
  struct Options {
    std::chrono::milliseconds handshake_timeout = kHandshakeTimeout;
    size_t max_pending_handshakes = 64;
  };
  using Handler = std::function<void(TlsResult<TlsConnection>)>;

  // Binds and listens (SO_REUSEADDR). Port 0 picks an ephemeral port; see local_endpoint().
  [[nodiscard]] static TlsResult<std::shared_ptr<TlsListener>> listen(
      boost::asio::any_io_executor ex, boost::asio::ssl::context& ctx,
      const boost::asio::ip::tcp::endpoint& endpoint, Options options);
  [[nodiscard]] static TlsResult<std::shared_ptr<TlsListener>> listen(
      boost::asio::any_io_executor ex, boost::asio::ssl::context& ctx,
      const boost::asio::ip::tcp::endpoint& endpoint) {
    return listen(std::move(ex), ctx, endpoint, Options{});
  }

  boost::asio::ip::tcp::endpoint local_endpoint() const { return local_; }
  // Starts the accept loop; call once.
  void start(Handler handler);
  // Stops accepting. Handshakes already under way finish (or time out) and are reported.
  // The accept loop holds a reference to the listener until close() is called.
  void close();

  struct Private;  // construction key: use listen()
  TlsListener(Private, boost::asio::any_io_executor ex, boost::asio::ssl::context& ctx,
              Options options);

 private:
  static boost::asio::awaitable<void> accept_loop(std::shared_ptr<TlsListener> self);
  static boost::asio::awaitable<void> handshake_one(std::shared_ptr<TlsListener> self,
                                                    boost::asio::ip::tcp::socket socket);

  boost::asio::any_io_executor ex_;
  boost::asio::strand<boost::asio::any_io_executor> strand_;
  boost::asio::ip::tcp::acceptor acceptor_;
  boost::asio::ssl::context& ctx_;
  Options options_;
  boost::asio::ip::tcp::endpoint local_;
  Handler handler_;
  std::atomic<size_t> pending_{0};  // handshakes under way, across connection strands
  bool started_ = false;            // on strand_
};

}  // namespace tandem::backend::transport
