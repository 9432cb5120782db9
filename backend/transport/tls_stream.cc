#include "backend/transport/tls_stream.h"

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <exception>
#include <utility>
#include <vector>

namespace tandem::backend::transport {
namespace {

namespace asio = boost::asio;
namespace ssl = boost::asio::ssl;
using boost::asio::ip::tcp;
using boost::system::error_code;
using namespace boost::asio::experimental::awaitable_operators;

constexpr auto kAwait = asio::as_tuple(asio::use_awaitable);
constexpr auto kBackoffAfterAcceptError = std::chrono::milliseconds(50);

core::Unexpected<TlsError> err(TlsErrc code, std::string message) {
  return core::fail(TlsError{code, std::move(message)});
}

// Exceptions never cross an Asio handler silently: a throw inside one of our coroutines is a
// bug, so it escapes io_context::run() where it is seen.
void rethrow(std::exception_ptr e) {
  if (e) std::rethrow_exception(e);
}

std::string endpoint_string(const tcp::endpoint& ep) {
  const auto addr = ep.address();
  std::string host = addr.to_string();
  if (addr.is_v6()) host = "[" + host + "]";
  return host + ":" + std::to_string(ep.port());
}

// Asio's engine sets SSL_MODE_RELEASE_BUFFERS, so OpenSSL frees its 16.7 KiB record buffers
// whenever they drain and allocates them again for the next record: a malloc/free pair per
// record each way, about 130 per replicated MiB on each node. A replication link is long-lived
// and busy, so it keeps them (two buffers per connection).
void keep_record_buffers(TlsSocket& stream) {
  SSL_clear_mode(stream.native_handle(), SSL_MODE_RELEASE_BUFFERS);
}

std::string to_pem(X509* cert) {
  std::unique_ptr<BIO, decltype(&BIO_free)> bio(BIO_new(BIO_s_mem()), &BIO_free);
  if (!bio || PEM_write_bio_X509(bio.get(), cert) != 1) {
    ERR_clear_error();
    return {};
  }
  char* data = nullptr;
  long n = BIO_get_mem_data(bio.get(), &data);
  return n > 0 ? std::string(data, static_cast<size_t>(n)) : std::string();
}

// What the verify callback saw during one handshake: the peer's leaf CN (even when the
// certificate is then refused, so the refusal can name it) and the first failure.
struct VerifyRecord {
  std::string leaf_cn;
  std::string failure;
};

TlsError classify_failure(const error_code& ec, const VerifyRecord& rec, const std::string& who) {
  std::string peer = who;
  if (!rec.leaf_cn.empty()) peer += " (CN=" + rec.leaf_cn + ")";
  if (!rec.failure.empty()) {
    return {TlsErrc::kPeerRefused, "peer " + peer + " refused: " + rec.failure};
  }
  if (ec.category() == asio::error::get_ssl_category()) {
    const unsigned long code = static_cast<unsigned int>(ec.value());
    switch (ERR_GET_REASON(code)) {
      case SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE:
        return {TlsErrc::kNoPeerCertificate, "peer " + peer + " refused: no certificate"};
      case SSL_R_UNSUPPORTED_PROTOCOL:
      case SSL_R_NO_PROTOCOLS_AVAILABLE:
      case SSL_R_TLSV1_ALERT_PROTOCOL_VERSION:
      case SSL_R_WRONG_VERSION_NUMBER:
        return {TlsErrc::kProtocolVersion,
                "peer " + peer + " refused: not TLS 1.3 (" + ec.message() + ")"};
      case SSL_R_TLSV1_ALERT_UNKNOWN_CA:
      case SSL_R_TLSV1_ALERT_ACCESS_DENIED:
      case SSL_R_SSLV3_ALERT_BAD_CERTIFICATE:
      case SSL_R_SSLV3_ALERT_CERTIFICATE_EXPIRED:
      case SSL_R_SSLV3_ALERT_CERTIFICATE_REVOKED:
      case SSL_R_SSLV3_ALERT_CERTIFICATE_UNKNOWN:
      case SSL_R_SSLV3_ALERT_UNSUPPORTED_CERTIFICATE:
      case SSL_R_TLSV13_ALERT_CERTIFICATE_REQUIRED:
        // The peer's alert says it refused *our* certificate: not a peer fault.
        return {TlsErrc::kHandshake, "peer " + peer + " refused our certificate: " + ec.message()};
      case SSL_R_CERTIFICATE_VERIFY_FAILED:
        return {TlsErrc::kPeerRefused, "peer " + peer + " refused: " + ec.message()};
      default:
        break;
    }
  }
  return {TlsErrc::kHandshake, "TLS handshake with " + peer + " failed: " + ec.message()};
}

// Runs the handshake until `deadline` and returns the verified peer identity. On any failure
// the caller drops the stream (which closes the socket).
asio::awaitable<TlsResult<PeerIdentity>> handshake(TlsSocket& stream,
                                                   ssl::stream_base::handshake_type type,
                                                   asio::steady_timer& deadline,
                                                   const std::string& who) {
  auto rec = std::make_shared<VerifyRecord>();
  error_code ec;
  // Per-stream callback (SSL_set_verify), so concurrent handshakes do not share a record.
  // It only observes: OpenSSL's verdict (preverified) stands.
  stream.set_verify_callback(
      [rec](bool preverified, ssl::verify_context& vc) {
        X509_STORE_CTX* sc = vc.native_handle();
        if (X509_STORE_CTX_get_error_depth(sc) == 0 && rec->leaf_cn.empty()) {
          if (X509* leaf = X509_STORE_CTX_get_current_cert(sc)) {
            if (auto cn = subject_cn(to_pem(leaf))) rec->leaf_cn = *cn;
          }
        }
        if (!preverified && rec->failure.empty()) {
          rec->failure = X509_verify_cert_error_string(X509_STORE_CTX_get_error(sc));
        }
        return preverified;
      },
      ec);
  if (ec) co_return err(TlsErrc::kHandshake, "installing verify callback: " + ec.message());

  auto done = co_await (stream.async_handshake(type, kAwait) || deadline.async_wait(kAwait));
  if (done.index() == 1) {
    std::string peer = who;
    if (!rec->leaf_cn.empty()) peer += " (CN=" + rec->leaf_cn + ")";
    co_return err(TlsErrc::kTimeout, "TLS handshake with " + peer + " timed out");
  }
  if (auto [hs_ec] = std::get<0>(done); hs_ec) {
    co_return core::fail(classify_failure(hs_ec, *rec, who));
  }

  SSL* ssl = stream.native_handle();
  // Belt and braces: the context already enforces all three.
  if (SSL_version(ssl) != TLS1_3_VERSION) {
    co_return err(TlsErrc::kProtocolVersion, "peer " + who + " negotiated a version below 1.3");
  }
  X509* peer_cert = SSL_get0_peer_certificate(ssl);
  if (peer_cert == nullptr) {
    co_return err(TlsErrc::kNoPeerCertificate, "peer " + who + " refused: no certificate");
  }
  if (long v = SSL_get_verify_result(ssl); v != X509_V_OK) {
    co_return err(TlsErrc::kPeerRefused,
                  "peer " + who + " refused: " + X509_verify_cert_error_string(v));
  }
  const std::string pem = to_pem(peer_cert);
  auto cn = subject_cn(pem);
  if (!cn) co_return err(TlsErrc::kPeerRefused, "peer " + who + " refused: certificate has no CN");
  auto fp = fingerprint_sha256(pem);
  if (!fp) co_return core::fail(fp.error());
  co_return PeerIdentity{std::move(cn).value(), std::move(fp).value()};
}

}  // namespace

TlsResult<ssl::context> make_tls_context(const NodeCredentials& creds) {
  ssl::context ctx(ssl::context::tls);
  SSL_CTX* h = ctx.native_handle();
  if (SSL_CTX_set_min_proto_version(h, TLS1_3_VERSION) != 1 ||
      SSL_CTX_set_max_proto_version(h, TLS1_3_VERSION) != 1) {
    ERR_clear_error();
    return err(TlsErrc::kCrypto, "cannot restrict the context to TLS 1.3");
  }
  // No resumption: a resumed session skips certificate verification, and a node whose
  // certificate is replaced or expires must be checked again on every connection.
  SSL_CTX_set_options(h, SSL_OP_NO_TICKET | SSL_OP_NO_COMPRESSION);
  SSL_CTX_set_num_tickets(h, 0);
  SSL_CTX_set_session_cache_mode(h, SSL_SESS_CACHE_OFF);

  error_code ec;
  ctx.use_certificate_chain(asio::buffer(creds.cert_pem), ec);
  if (ec) return err(TlsErrc::kInvalidPem, "node certificate: " + ec.message());
  ctx.use_private_key(asio::buffer(creds.key_pem), ssl::context::pem, ec);
  if (ec && ec.category() == asio::error::get_ssl_category() &&
      ERR_GET_REASON(static_cast<unsigned int>(ec.value())) == X509_R_KEY_VALUES_MISMATCH) {
    return err(TlsErrc::kKeyMismatch, "node private key does not match its certificate");
  }
  if (ec) return err(TlsErrc::kInvalidPem, "node private key: " + ec.message());
  if (SSL_CTX_check_private_key(h) != 1) {
    ERR_clear_error();
    return err(TlsErrc::kKeyMismatch, "node private key does not match its certificate");
  }
  // The cluster CA is the only trust anchor: the system store is never loaded.
  ctx.add_certificate_authority(asio::buffer(creds.ca_pem), ec);
  if (ec) return err(TlsErrc::kInvalidPem, "cluster CA certificate: " + ec.message());
  // OpenSSL fills some per-certificate caches (extensions, key ids) lazily on first use; do
  // it here, single-threaded, instead of in the first concurrent handshakes.
  STACK_OF(X509_OBJECT)* anchors = X509_STORE_get0_objects(SSL_CTX_get_cert_store(h));
  for (int i = 0; i < sk_X509_OBJECT_num(anchors); ++i) {
    if (X509* x = X509_OBJECT_get0_X509(sk_X509_OBJECT_value(anchors, i))) {
      X509_check_purpose(x, -1, 0);
    }
  }
  if (X509* own = SSL_CTX_get0_certificate(h)) X509_check_purpose(own, -1, 0);
  ERR_clear_error();
  ctx.set_verify_mode(ssl::verify_peer | ssl::verify_fail_if_no_peer_cert, ec);
  if (ec) return err(TlsErrc::kCrypto, "setting verify mode: " + ec.message());
  // Leaf + cluster CA: nothing longer is legitimate.
  ctx.set_verify_depth(2, ec);
  if (ec) return err(TlsErrc::kCrypto, "setting verify depth: " + ec.message());
  X509_VERIFY_PARAM_set_flags(SSL_CTX_get0_param(h), X509_V_FLAG_X509_STRICT);
  return ctx;
}

asio::awaitable<TlsResult<TlsConnection>> async_connect_tls(asio::any_io_executor ex,
                                                            std::string host, uint16_t port,
                                                            ssl::context& ctx,
                                                            std::chrono::milliseconds timeout,
                                                            std::string expected_peer_cn) {
  asio::steady_timer deadline(ex);
  deadline.expires_after(timeout);
  std::string who = host + ":" + std::to_string(port);

  std::vector<tcp::endpoint> endpoints;
  error_code ec;
  const auto literal = asio::ip::make_address(host, ec);
  if (!ec) {
    endpoints.emplace_back(literal, port);
  } else {
    // getaddrinfo cannot be interrupted: a hung resolver can outlast the deadline by the
    // resolver's own timeout. Replication peers are normally given as IP literals.
    tcp::resolver resolver(ex);
    auto r = co_await (resolver.async_resolve(host, std::to_string(port), kAwait) ||
                       deadline.async_wait(kAwait));
    if (r.index() == 1) co_return err(TlsErrc::kTimeout, "resolving " + who + " timed out");
    auto& [rec, results] = std::get<0>(r);
    if (rec) co_return err(TlsErrc::kConnect, "resolving " + who + ": " + rec.message());
    for (const auto& entry : results) endpoints.push_back(entry.endpoint());
  }

  TlsSocket stream(ex, ctx);
  keep_record_buffers(stream);
  auto c = co_await (asio::async_connect(stream.lowest_layer(), endpoints, kAwait) ||
                     deadline.async_wait(kAwait));
  if (c.index() == 1) co_return err(TlsErrc::kTimeout, "connecting to " + who + " timed out");
  auto [cec, remote] = std::get<0>(c);
  if (cec) co_return err(TlsErrc::kConnect, "connecting to " + who + ": " + cec.message());
  stream.lowest_layer().set_option(tcp::no_delay(true), ec);  // replication is latency-bound

  auto peer = co_await handshake(stream, ssl::stream_base::client, deadline, who);
  if (!peer) co_return core::fail(peer.error());
  if (!expected_peer_cn.empty() && peer->common_name != expected_peer_cn) {
    co_return err(TlsErrc::kPeerMismatch, "peer " + who + " is '" + peer->common_name +
                                              "', expected '" + expected_peer_cn + "'");
  }
  co_return TlsConnection{std::move(stream), std::move(peer).value(), remote};
}

asio::awaitable<TlsResult<TlsConnection>> async_accept_tls(tcp::socket socket, ssl::context& ctx,
                                                           std::chrono::milliseconds timeout) {
  error_code ec;
  const tcp::endpoint remote = socket.remote_endpoint(ec);
  const std::string who = ec ? std::string("<unknown>") : endpoint_string(remote);
  socket.set_option(tcp::no_delay(true), ec);
  asio::steady_timer deadline(socket.get_executor());
  deadline.expires_after(timeout);
  TlsSocket stream(std::move(socket), ctx);
  keep_record_buffers(stream);
  auto peer = co_await handshake(stream, ssl::stream_base::server, deadline, who);
  if (!peer) co_return core::fail(peer.error());
  co_return TlsConnection{std::move(stream), std::move(peer).value(), remote};
}

struct TlsListener::Private {};

TlsListener::TlsListener(Private, asio::any_io_executor ex, ssl::context& ctx, Options options)
    : ex_(ex), strand_(asio::make_strand(ex)), acceptor_(strand_), ctx_(ctx), options_(options) {}

TlsResult<std::shared_ptr<TlsListener>> TlsListener::listen(asio::any_io_executor ex,
                                                            ssl::context& ctx,
                                                            const tcp::endpoint& endpoint,
                                                            Options options) {
  if (options.max_pending_handshakes == 0 || options.handshake_timeout.count() <= 0) {
    return err(TlsErrc::kInvalidArgument, "listener needs a positive timeout and handshake cap");
  }
  auto self = std::make_shared<TlsListener>(Private{}, ex, ctx, options);
  error_code ec;
  const std::string where = endpoint_string(endpoint);
  self->acceptor_.open(endpoint.protocol(), ec);
  if (!ec) self->acceptor_.set_option(tcp::acceptor::reuse_address(true), ec);
  if (!ec) self->acceptor_.bind(endpoint, ec);
  if (!ec) self->acceptor_.listen(asio::socket_base::max_listen_connections, ec);
  if (!ec) self->local_ = self->acceptor_.local_endpoint(ec);
  if (ec) return err(TlsErrc::kIo, "listening on " + where + ": " + ec.message());
  return self;
}

void TlsListener::start(Handler handler) {
  asio::post(strand_, [self = shared_from_this(), handler = std::move(handler)]() mutable {
    if (self->started_) return;
    self->started_ = true;
    self->handler_ = std::move(handler);
    asio::co_spawn(self->strand_, accept_loop(self), rethrow);
  });
}

void TlsListener::close() {
  asio::post(strand_, [self = shared_from_this()] {
    error_code ec;
    self->acceptor_.close(ec);
  });
}

asio::awaitable<void> TlsListener::accept_loop(std::shared_ptr<TlsListener> self) {
  while (self->acceptor_.is_open()) {
    // Each connection gets its own strand (STYLE habit 6).
    auto [ec, socket] = co_await self->acceptor_.async_accept(asio::make_strand(self->ex_), kAwait);
    if (!self->acceptor_.is_open()) co_return;
    if (ec) {
      // EMFILE and friends: back off briefly rather than spin.
      asio::steady_timer pause(self->strand_, kBackoffAfterAcceptError);
      co_await pause.async_wait(kAwait);
      continue;
    }
    if (self->pending_.load() >= self->options_.max_pending_handshakes) {
      error_code ignored;
      const auto remote = socket.remote_endpoint(ignored);
      socket.close(ignored);
      self->handler_(err(TlsErrc::kHandshake, "connection from " + endpoint_string(remote) +
                                                  " dropped: too many TLS handshakes under way"));
      continue;
    }
    self->pending_.fetch_add(1);
    auto conn_ex = socket.get_executor();
    asio::co_spawn(conn_ex, handshake_one(self, std::move(socket)), rethrow);
  }
}

asio::awaitable<void> TlsListener::handshake_one(std::shared_ptr<TlsListener> self,
                                                 tcp::socket socket) {
  auto result =
      co_await async_accept_tls(std::move(socket), self->ctx_, self->options_.handshake_timeout);
  self->pending_.fetch_sub(1);
  self->handler_(std::move(result));
}

}  // namespace tandem::backend::transport
