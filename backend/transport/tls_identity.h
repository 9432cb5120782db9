// Cluster TLS identities for replication (tcp/5703): cluster CA, node keys and CSRs, CSR
// signing on the controller, certificate checks, 0600 atomic key files. Pure OpenSSL 3, no
// Asio. Stateless free functions, safe from any thread; the caller owns all PEM strings.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "core/result.h"

namespace tandem::backend::transport {

enum class TlsErrc {
  kInvalidArgument,    // bad node name, IP address, validity or option
  kIo,                 // file I/O, or binding the listening socket, failed
  kExists,             // refusing to overwrite an existing CA key
  kCrypto,             // OpenSSL failed to generate, sign or encode
  kInvalidPem,         // input is not a parseable certificate / CSR / key
  kBadSignature,       // CSR signature does not match its content (tampered)
  kBadRequest,         // CSR well signed but unacceptable (subject, SANs, key type)
  kKeyMismatch,        // a private key does not belong to its certificate
  kUntrusted,          // certificate not issued by the cluster CA (or otherwise invalid)
  kExpired,            // certificate past notAfter
  kNotYetValid,        // certificate before notBefore
  kTimeout,            // network step exceeded its deadline (tls_stream)
  kConnect,            // resolve / TCP connect failed (tls_stream)
  kHandshake,          // TLS handshake failed for a protocol reason (tls_stream)
  kProtocolVersion,    // peer does not speak TLS 1.3 (tls_stream)
  kNoPeerCertificate,  // peer presented no certificate (tls_stream)
  kPeerRefused,        // peer certificate failed verification against the cluster CA
  kPeerMismatch,       // peer verified but is not the node we meant to reach
};
using TlsError = core::Error<TlsErrc>;
template <class T>
using TlsResult = core::Result<T, TlsError>;

const char* to_string(TlsErrc e);

// File names inside a CA directory (controller) and a node's credential directory.
inline constexpr const char* kCaKeyFile = "ca.key";
inline constexpr const char* kCaCertFile = "ca.crt";
inline constexpr const char* kNodeKeyFile = "node.key";
inline constexpr const char* kNodeCertFile = "node.crt";

inline constexpr int kCaValidityDays = 3650;
inline constexpr int kDefaultNodeValidityDays = 825;
inline constexpr int kMaxValidityDays = 3650;
// notBefore is backdated this much so a node whose clock lags the controller's still
// accepts a freshly signed certificate.
inline constexpr std::chrono::seconds kClockSkewAllowance{300};

// Validity window relative to "now" at signing time. Production code uses
// sign_csr(..., validity_days); tests use this to mint expired / not-yet-valid certificates
// through the same code path.
struct CertValidity {
  std::chrono::seconds not_before_offset{-kClockSkewAllowance};
  std::chrono::seconds not_after_offset{std::chrono::hours(24) * kDefaultNodeValidityDays};
};

struct ClusterCa {
  std::string cert_pem;            // also written to <dir>/ca.crt
  std::string common_name;         // "Tandem cluster CA <16 hex digits>"
  std::string fingerprint_sha256;  // "AB:CD:..." as printed by `openssl x509 -fingerprint`
};

struct NodeKeyAndCsr {
  std::string key_pem;  // PKCS#8 PEM; stays on the node (write it with write_private_pem)
  std::string csr_pem;  // PKCS#10 PEM; sent to the controller for signing
};

// What a node needs to speak mutual TLS: its certificate (chain), its key and the cluster CA.
struct NodeCredentials {
  std::string cert_pem;
  std::string key_pem;
  std::string ca_pem;
};

// What a CSR asks for, once its signature and form have been checked (see sign_csr).
struct CsrInfo {
  std::string common_name;
  std::vector<std::string> dns_names;
  std::vector<std::string> ip_addresses;  // canonical text form
};

struct PeerIdentity {
  std::string common_name;
  std::string fingerprint_sha256;
};

// Node names are DNS host names: 1-253 chars, dot-separated labels of 1-63 [A-Za-z0-9-],
// no label starting or ending with '-'. They become the certificate CN and a DNS SAN.
bool is_valid_node_name(std::string_view name);

// Creates <dir> (0700) if needed, generates an EC P-256 CA key and a self-signed CA certificate
// (CA:TRUE pathlen:0, keyUsage keyCertSign+cRLSign, 10 years) and writes ca.key (0600) and
// ca.crt. Refuses with kExists if <dir>/ca.key already exists.
[[nodiscard]] TlsResult<ClusterCa> create_cluster_ca(const std::filesystem::path& dir);

// Generates a node EC P-256 key and a CSR with CN = node_name and
// SAN = IP:ip_address, DNS:node_name. ip_address is a literal IPv4 or IPv6 address.
[[nodiscard]] TlsResult<NodeKeyAndCsr> create_node_key_and_csr(std::string_view node_name,
                                                               std::string_view ip_address);

// Applies sign_csr's checks without signing and reports the requested identity, so the
// controller can match it against the joining node's claim (name, address) before signing.
[[nodiscard]] TlsResult<CsrInfo> inspect_csr(std::string_view csr_pem);

// Signs a node CSR with the CA in ca_dir (ca.key + ca.crt). The certificate gets only
// CN from the CSR subject, the CSR's DNS/IP SANs (every one must be well-formed, else
// kBadRequest), CA:FALSE, keyUsage digitalSignature, extendedKeyUsage serverAuth+clientAuth.
// Any other extension the CSR asks for is ignored. A CSR whose signature does not verify is
// refused with kBadSignature. validity_days in [1, kMaxValidityDays].
[[nodiscard]] TlsResult<std::string> sign_csr(const std::filesystem::path& ca_dir,
                                              std::string_view csr_pem, int validity_days);
// Same, with an explicit window (test-only expired / future certificates).
[[nodiscard]] TlsResult<std::string> sign_csr(const std::filesystem::path& ca_dir,
                                              std::string_view csr_pem, CertValidity validity);
// Same, with the CA given as PEM (for a controller that keeps it in its catalogue).
[[nodiscard]] TlsResult<std::string> sign_csr_with_ca(std::string_view ca_cert_pem,
                                                      std::string_view ca_key_pem,
                                                      std::string_view csr_pem,
                                                      CertValidity validity);

// Verifies the first certificate in cert_pem (any further ones are untrusted intermediates)
// against ca_pem as the only trust anchor, at the current time, for use as both TLS client
// and server. kExpired / kNotYetValid / kUntrusted / kInvalidPem on failure.
[[nodiscard]] TlsResult<PeerIdentity> verify_peer(std::string_view cert_pem,
                                                  std::string_view ca_pem);
// Same, checked at a given time instead of now.
[[nodiscard]] TlsResult<PeerIdentity> verify_peer(std::string_view cert_pem,
                                                  std::string_view ca_pem,
                                                  std::chrono::system_clock::time_point at);

// SHA-256 of the DER certificate as "AB:CD:..." (95 chars).
[[nodiscard]] TlsResult<std::string> fingerprint_sha256(std::string_view cert_pem);
// The subject's commonName (UTF-8). kInvalidPem if there is none.
[[nodiscard]] TlsResult<std::string> subject_cn(std::string_view cert_pem);

// Writes pem to path atomically: <path>.tmp.<random> created 0600 with O_EXCL, written,
// fsync'd, renamed over path, then the directory fsync'd. The file is never readable by
// others, not even briefly.
[[nodiscard]] TlsResult<void> write_private_pem(const std::filesystem::path& path,
                                                std::string_view pem);
// Same procedure with mode 0644, for certificates.
[[nodiscard]] TlsResult<void> write_public_pem(const std::filesystem::path& path,
                                               std::string_view pem);
// Reads a PEM file (at most 1 MiB).
[[nodiscard]] TlsResult<std::string> read_pem_file(const std::filesystem::path& path);

// Loads node.crt, node.key and ca.crt from dir and checks the key matches the certificate.
[[nodiscard]] TlsResult<NodeCredentials> load_node_credentials(const std::filesystem::path& dir);
// Writes them there (dir created 0700; key 0600, certificates 0644).
[[nodiscard]] TlsResult<void> store_node_credentials(const std::filesystem::path& dir,
                                                     const NodeCredentials& creds);

}  // namespace tandem::backend::transport
