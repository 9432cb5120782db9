#include "backend/transport/tls_identity.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <memory>
#include <optional>
#include <vector>

namespace tandem::backend::transport {
namespace {

template <auto F>
struct Free {
  template <class T>
  void operator()(T* p) const {
    F(p);
  }
};
using BioPtr = std::unique_ptr<BIO, Free<BIO_free_all>>;
using PkeyPtr = std::unique_ptr<EVP_PKEY, Free<EVP_PKEY_free>>;
using X509Ptr = std::unique_ptr<X509, Free<X509_free>>;
using ReqPtr = std::unique_ptr<X509_REQ, Free<X509_REQ_free>>;
using NamePtr = std::unique_ptr<X509_NAME, Free<X509_NAME_free>>;
using ExtPtr = std::unique_ptr<X509_EXTENSION, Free<X509_EXTENSION_free>>;
using GenNamesPtr = std::unique_ptr<GENERAL_NAMES, Free<GENERAL_NAMES_free>>;
using GenNamePtr = std::unique_ptr<GENERAL_NAME, Free<GENERAL_NAME_free>>;
using BnPtr = std::unique_ptr<BIGNUM, Free<BN_free>>;
using StorePtr = std::unique_ptr<X509_STORE, Free<X509_STORE_free>>;
using StoreCtxPtr = std::unique_ptr<X509_STORE_CTX, Free<X509_STORE_CTX_free>>;
void free_ext_stack(STACK_OF(X509_EXTENSION) * s) {
  sk_X509_EXTENSION_pop_free(s, X509_EXTENSION_free);
}
using ExtStackPtr = std::unique_ptr<STACK_OF(X509_EXTENSION), Free<free_ext_stack>>;
void free_x509_stack(STACK_OF(X509) * s) { sk_X509_pop_free(s, X509_free); }
using X509StackPtr = std::unique_ptr<STACK_OF(X509), Free<free_x509_stack>>;

constexpr size_t kMaxPemBytes = 1u << 20;
constexpr const char* kCurve = "P-256";

core::Unexpected<TlsError> err(TlsErrc code, std::string message) {
  return core::fail(TlsError{code, std::move(message)});
}

// Drains OpenSSL's thread-local error queue into the message, so a failure never leaks
// stale errors into the next call on this thread.
core::Unexpected<TlsError> ossl_err(TlsErrc code, std::string what) {
  unsigned long e;
  bool first = true;
  while ((e = ERR_get_error()) != 0) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    what += first ? ": " : "; ";
    what += buf;
    first = false;
  }
  return err(code, std::move(what));
}

int no_password(char*, int, int, void*) { return 0; }  // never prompt on a terminal

BioPtr mem_bio(std::string_view data) {
  if (data.size() > kMaxPemBytes) return nullptr;
  return BioPtr(BIO_new_mem_buf(data.data(), static_cast<int>(data.size())));
}

std::string bio_to_string(BIO* bio) {
  char* data = nullptr;
  long n = BIO_get_mem_data(bio, &data);
  return n > 0 ? std::string(data, static_cast<size_t>(n)) : std::string();
}

TlsResult<X509Ptr> parse_cert(std::string_view pem) {
  BioPtr bio = mem_bio(pem);
  if (!bio) return err(TlsErrc::kInvalidPem, "certificate PEM too large or out of memory");
  X509Ptr cert(PEM_read_bio_X509(bio.get(), nullptr, no_password, nullptr));
  if (!cert) return ossl_err(TlsErrc::kInvalidPem, "not a PEM certificate");
  return cert;
}

TlsResult<PkeyPtr> parse_key(std::string_view pem) {
  BioPtr bio = mem_bio(pem);
  if (!bio) return err(TlsErrc::kInvalidPem, "key PEM too large or out of memory");
  PkeyPtr key(PEM_read_bio_PrivateKey(bio.get(), nullptr, no_password, nullptr));
  if (!key) return ossl_err(TlsErrc::kInvalidPem, "not an unencrypted PEM private key");
  return key;
}

TlsResult<std::string> cert_to_pem(X509* cert) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_X509(bio.get(), cert) != 1) {
    return ossl_err(TlsErrc::kCrypto, "encoding certificate");
  }
  return bio_to_string(bio.get());
}

TlsResult<std::string> key_to_pem(EVP_PKEY* key) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio ||
      PEM_write_bio_PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr) != 1) {
    return ossl_err(TlsErrc::kCrypto, "encoding private key");
  }
  std::string pem = bio_to_string(bio.get());
  // Scrub the BIO's copy of the key before it is freed.
  char* data = nullptr;
  long n = BIO_get_mem_data(bio.get(), &data);
  if (n > 0) OPENSSL_cleanse(data, static_cast<size_t>(n));
  return pem;
}

TlsResult<PkeyPtr> generate_key() {
  PkeyPtr key(EVP_EC_gen(kCurve));
  if (!key) return ossl_err(TlsErrc::kCrypto, "generating EC P-256 key");
  return key;
}

// Ed25519 signs without a separate digest; everything else we accept uses SHA-256.
const EVP_MD* digest_for(EVP_PKEY* key) {
  return EVP_PKEY_get_base_id(key) == EVP_PKEY_ED25519 ? nullptr : EVP_sha256();
}

std::string hex(const unsigned char* p, size_t n, bool colons, bool upper = true) {
  const char* digits = upper ? "0123456789ABCDEF" : "0123456789abcdef";
  std::string out;
  for (size_t i = 0; i < n; ++i) {
    if (colons && i) out += ':';
    out += digits[p[i] >> 4];
    out += digits[p[i] & 0xF];
  }
  return out;
}

std::optional<std::string> name_cn(const X509_NAME* name) {
  if (name == nullptr) return std::nullopt;
  int idx = X509_NAME_get_index_by_NID(name, NID_commonName, -1);
  if (idx < 0) return std::nullopt;
  // Two CNs make "the" CN ambiguous; treat as none.
  if (X509_NAME_get_index_by_NID(name, NID_commonName, idx) >= 0) return std::nullopt;
  const ASN1_STRING* data = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, idx));
  unsigned char* utf8 = nullptr;
  int len = ASN1_STRING_to_UTF8(&utf8, data);
  if (len < 0) {
    ERR_clear_error();
    return std::nullopt;
  }
  std::string out(reinterpret_cast<char*>(utf8), static_cast<size_t>(len));
  OPENSSL_free(utf8);
  if (out.find('\0') != std::string::npos) return std::nullopt;
  return out;
}

TlsResult<std::string> cert_fingerprint(X509* cert) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (X509_digest(cert, EVP_sha256(), md, &len) != 1) {
    return ossl_err(TlsErrc::kCrypto, "computing certificate fingerprint");
  }
  return hex(md, len, true);
}

TlsResult<NamePtr> cn_name(std::string_view cn) {
  NamePtr name(X509_NAME_new());
  if (!name || X509_NAME_add_entry_by_txt(name.get(), "CN", MBSTRING_UTF8,
                                          reinterpret_cast<const unsigned char*>(cn.data()),
                                          static_cast<int>(cn.size()), -1, 0) != 1) {
    return ossl_err(TlsErrc::kCrypto, "building subject name");
  }
  return name;
}

// Adds an extension given in openssl.cnf syntax ("critical,CA:TRUE,pathlen:0").
TlsResult<void> add_ext(X509* cert, X509* issuer, int nid, const char* value) {
  X509V3_CTX ctx;
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  ExtPtr ext(X509V3_EXT_nconf_nid(nullptr, &ctx, nid, value));
  if (!ext || X509_add_ext(cert, ext.get(), -1) != 1) {
    return ossl_err(TlsErrc::kCrypto, std::string("adding extension ") + OBJ_nid2sn(nid));
  }
  return {};
}

TlsResult<void> set_serial_and_validity(X509* cert, CertValidity validity) {
  if (X509_set_version(cert, X509_VERSION_3) != 1) {
    return ossl_err(TlsErrc::kCrypto, "setting version");
  }
  // RFC 5280 4.1.2.2: positive, at most 20 octets. 159 random bits satisfy both and make
  // serials unguessable without keeping a counter on the controller.
  BnPtr bn(BN_new());
  if (!bn || BN_rand(bn.get(), 159, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY) != 1 ||
      BN_to_ASN1_INTEGER(bn.get(), X509_get_serialNumber(cert)) == nullptr) {
    return ossl_err(TlsErrc::kCrypto, "generating serial number");
  }
  if (X509_gmtime_adj(X509_getm_notBefore(cert), validity.not_before_offset.count()) == nullptr ||
      X509_gmtime_adj(X509_getm_notAfter(cert), validity.not_after_offset.count()) == nullptr) {
    return ossl_err(TlsErrc::kCrypto, "setting validity");
  }
  return {};
}

bool valid_ip(const ASN1_OCTET_STRING* ip) {
  int n = ASN1_STRING_length(ip);
  return n == 4 || n == 16;
}

bool valid_dns(const ASN1_IA5STRING* dns) {
  std::string_view s(reinterpret_cast<const char*>(ASN1_STRING_get0_data(dns)),
                     static_cast<size_t>(ASN1_STRING_length(dns)));
  return is_valid_node_name(s);
}

// Checks the CSR's key is one we are willing to certify.
TlsResult<void> check_key_type(EVP_PKEY* key) {
  switch (EVP_PKEY_get_base_id(key)) {
    case EVP_PKEY_ED25519:
      return {};
    case EVP_PKEY_RSA:
      if (EVP_PKEY_get_bits(key) >= 2048) return {};
      return err(TlsErrc::kBadRequest, "RSA key shorter than 2048 bits");
    case EVP_PKEY_EC: {
      char group[64] = {};
      size_t len = 0;
      if (EVP_PKEY_get_group_name(key, group, sizeof group, &len) == 1) {
        std::string_view g(group, len);
        if (g == "prime256v1" || g == "P-256" || g == "secp384r1" || g == "P-384") return {};
      }
      ERR_clear_error();
      return err(TlsErrc::kBadRequest, "EC key on a curve other than P-256 / P-384");
    }
    default:
      return err(TlsErrc::kBadRequest, "unsupported key type in CSR");
  }
}

// Returns a fresh, validated copy of the CSR's subjectAltName (nullptr if it has none).
TlsResult<GenNamesPtr> checked_sans(X509_REQ* req) {
  ExtStackPtr exts(X509_REQ_get_extensions(req));
  if (!exts) {
    ERR_clear_error();
    return GenNamesPtr();
  }
  int crit = 0;
  GenNamesPtr names(static_cast<GENERAL_NAMES*>(
      X509V3_get_d2i(exts.get(), NID_subject_alt_name, &crit, nullptr)));
  if (!names) {
    ERR_clear_error();
    if (crit == -1) return GenNamesPtr();  // no SAN extension
    return err(TlsErrc::kBadRequest, "CSR subjectAltName is repeated or malformed");
  }
  GenNamesPtr out(sk_GENERAL_NAME_new_null());
  if (!out) return ossl_err(TlsErrc::kCrypto, "allocating SAN list");
  for (int i = 0; i < sk_GENERAL_NAME_num(names.get()); ++i) {
    const GENERAL_NAME* gn = sk_GENERAL_NAME_value(names.get(), i);
    if (gn->type == GEN_DNS) {
      if (!valid_dns(gn->d.dNSName)) {
        return err(TlsErrc::kBadRequest, "CSR has a malformed DNS subjectAltName");
      }
    } else if (gn->type == GEN_IPADD) {
      if (!valid_ip(gn->d.iPAddress)) {
        return err(TlsErrc::kBadRequest, "CSR has a malformed IP subjectAltName");
      }
    } else {
      return err(TlsErrc::kBadRequest, "CSR subjectAltName may hold only DNS and IP entries");
    }
    GenNamePtr copy(GENERAL_NAME_dup(gn));
    if (!copy || !sk_GENERAL_NAME_push(out.get(), copy.get())) {
      return ossl_err(TlsErrc::kCrypto, "copying SAN");
    }
    copy.release();  // now owned by `out`
  }
  if (sk_GENERAL_NAME_num(out.get()) > 16) {
    return err(TlsErrc::kBadRequest, "CSR has more than 16 subjectAltNames");
  }
  return out;
}

struct CheckedCsr {
  ReqPtr req;
  std::string common_name;
  GenNamesPtr sans;  // validated copy; null if the CSR has none
};

// Parses a CSR and applies every check sign_csr makes before it trusts a byte of it.
TlsResult<CheckedCsr> parse_checked_csr(std::string_view csr_pem) {
  BioPtr bio = mem_bio(csr_pem);
  if (!bio) return err(TlsErrc::kInvalidPem, "CSR PEM too large or out of memory");
  ReqPtr req(PEM_read_bio_X509_REQ(bio.get(), nullptr, no_password, nullptr));
  if (!req) return ossl_err(TlsErrc::kInvalidPem, "not a PEM certificate request");
  EVP_PKEY* req_key = X509_REQ_get0_pubkey(req.get());
  if (req_key == nullptr) return ossl_err(TlsErrc::kBadRequest, "CSR has no usable public key");
  // Proof of possession, and proof nothing was altered in transit (RFC 2986 section 3).
  if (X509_REQ_verify(req.get(), req_key) != 1) {
    return ossl_err(TlsErrc::kBadSignature, "CSR signature does not verify");
  }
  if (auto r = check_key_type(req_key); !r) return core::fail(r.error());
  auto cn = name_cn(X509_REQ_get_subject_name(req.get()));
  if (!cn || !is_valid_node_name(*cn)) {
    return err(TlsErrc::kBadRequest, "CSR subject needs exactly one CN that is a valid node name");
  }
  auto sans = checked_sans(req.get());
  if (!sans) return core::fail(sans.error());
  return CheckedCsr{std::move(req), std::move(*cn), std::move(sans).value()};
}

TlsResult<PeerIdentity> identity_of(X509* cert) {
  auto cn = name_cn(X509_get_subject_name(cert));
  if (!cn) return err(TlsErrc::kInvalidPem, "certificate has no single commonName");
  auto fp = cert_fingerprint(cert);
  if (!fp) return core::fail(fp.error());
  return PeerIdentity{*cn, std::move(fp).value()};
}

TlsResult<void> fsync_dir(const std::filesystem::path& dir) {
  int fd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return err(TlsErrc::kIo, "open " + dir.string() + ": " + std::strerror(errno));
  int rc = ::fsync(fd);
  int saved = errno;
  ::close(fd);
  if (rc != 0) return err(TlsErrc::kIo, "fsync " + dir.string() + ": " + std::strerror(saved));
  return {};
}

TlsResult<void> write_atomic(const std::filesystem::path& path, std::string_view data,
                             mode_t mode) {
  unsigned char rnd[8];
  if (RAND_bytes(rnd, sizeof rnd) != 1) return ossl_err(TlsErrc::kCrypto, "RAND_bytes");
  std::filesystem::path tmp = path;
  tmp += ".tmp." + hex(rnd, sizeof rnd, false, false);
  // O_EXCL + explicit mode: the file is born with its final permissions, so a key is never
  // world-readable, not even between open and chmod. fchmod corrects for the umask.
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode);
  if (fd < 0) return err(TlsErrc::kIo, "create " + tmp.string() + ": " + std::strerror(errno));
  auto fail_and_unlink = [&](const char* what) {
    std::string msg = std::string(what) + " " + tmp.string() + ": " + std::strerror(errno);
    ::close(fd);
    ::unlink(tmp.c_str());
    return err(TlsErrc::kIo, std::move(msg));
  };
  if (::fchmod(fd, mode) != 0) return fail_and_unlink("chmod");
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return fail_and_unlink("write");
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0) return fail_and_unlink("fsync");
  if (::close(fd) != 0) {
    std::string msg = "close " + tmp.string() + ": " + std::strerror(errno);
    ::unlink(tmp.c_str());
    return err(TlsErrc::kIo, std::move(msg));
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    std::string msg = "rename to " + path.string() + ": " + std::strerror(errno);
    ::unlink(tmp.c_str());
    return err(TlsErrc::kIo, std::move(msg));
  }
  return fsync_dir(path.parent_path());
}

TlsResult<void> ensure_private_dir(const std::filesystem::path& dir) {
  std::error_code ec;
  if (std::filesystem::exists(dir, ec)) return {};
  std::filesystem::create_directories(dir, ec);
  if (ec) return err(TlsErrc::kIo, "create " + dir.string() + ": " + ec.message());
  std::filesystem::permissions(dir, std::filesystem::perms::owner_all,
                               std::filesystem::perm_options::replace, ec);
  if (ec) return err(TlsErrc::kIo, "chmod " + dir.string() + ": " + ec.message());
  return {};
}

}  // namespace

const char* to_string(TlsErrc e) {
  switch (e) {
    case TlsErrc::kInvalidArgument:
      return "invalid argument";
    case TlsErrc::kIo:
      return "I/O error";
    case TlsErrc::kExists:
      return "already exists";
    case TlsErrc::kCrypto:
      return "crypto failure";
    case TlsErrc::kInvalidPem:
      return "invalid PEM";
    case TlsErrc::kBadSignature:
      return "bad signature";
    case TlsErrc::kBadRequest:
      return "unacceptable certificate request";
    case TlsErrc::kKeyMismatch:
      return "key does not match certificate";
    case TlsErrc::kUntrusted:
      return "certificate not trusted";
    case TlsErrc::kExpired:
      return "certificate expired";
    case TlsErrc::kNotYetValid:
      return "certificate not yet valid";
    case TlsErrc::kTimeout:
      return "timed out";
    case TlsErrc::kConnect:
      return "connect failed";
    case TlsErrc::kHandshake:
      return "TLS handshake failed";
    case TlsErrc::kProtocolVersion:
      return "peer does not support TLS 1.3";
    case TlsErrc::kNoPeerCertificate:
      return "peer without a certificate refused";
    case TlsErrc::kPeerRefused:
      return "peer without a valid certificate refused";
    case TlsErrc::kPeerMismatch:
      return "peer is not the expected node";
  }
  return "unknown";
}

bool is_valid_node_name(std::string_view name) {
  if (name.empty() || name.size() > 253) return false;
  size_t label = 0;
  char prev = '.';
  for (char c : name) {
    if (c == '.') {
      if (label == 0 || prev == '-') return false;
      label = 0;
    } else {
      bool alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
      if (!alnum && c != '-') return false;
      if (c == '-' && label == 0) return false;
      if (++label > 63) return false;
    }
    prev = c;
  }
  return label > 0 && prev != '-';
}

TlsResult<ClusterCa> create_cluster_ca(const std::filesystem::path& dir) {
  if (auto r = ensure_private_dir(dir); !r) return core::fail(r.error());
  const auto key_path = dir / kCaKeyFile;
  std::error_code ec;
  if (std::filesystem::exists(key_path, ec)) {
    return err(TlsErrc::kExists, key_path.string() + " already exists; not replacing a cluster CA");
  }

  auto key = generate_key();
  if (!key) return core::fail(key.error());
  unsigned char rnd[8];
  if (RAND_bytes(rnd, sizeof rnd) != 1) return ossl_err(TlsErrc::kCrypto, "RAND_bytes");
  std::string cn = "Tandem cluster CA " + hex(rnd, sizeof rnd, false, false);
  auto name = cn_name(cn);
  if (!name) return core::fail(name.error());

  X509Ptr cert(X509_new());
  if (!cert) return ossl_err(TlsErrc::kCrypto, "X509_new");
  CertValidity validity{-kClockSkewAllowance, std::chrono::hours(24) * kCaValidityDays};
  if (auto r = set_serial_and_validity(cert.get(), validity); !r) return core::fail(r.error());
  if (X509_set_subject_name(cert.get(), name->get()) != 1 ||
      X509_set_issuer_name(cert.get(), name->get()) != 1 ||
      X509_set_pubkey(cert.get(), key->get()) != 1) {
    return ossl_err(TlsErrc::kCrypto, "filling CA certificate");
  }
  // pathlen:0 — the cluster CA signs node certificates only, never another CA.
  for (auto [nid, value] : {std::pair{NID_basic_constraints, "critical,CA:TRUE,pathlen:0"},
                            std::pair{NID_key_usage, "critical,keyCertSign,cRLSign"},
                            std::pair{NID_subject_key_identifier, "hash"}}) {
    if (auto r = add_ext(cert.get(), cert.get(), nid, value); !r) return core::fail(r.error());
  }
  if (X509_sign(cert.get(), key->get(), digest_for(key->get())) <= 0) {
    return ossl_err(TlsErrc::kCrypto, "self-signing CA certificate");
  }

  auto key_pem = key_to_pem(key->get());
  if (!key_pem) return core::fail(key_pem.error());
  auto cert_pem = cert_to_pem(cert.get());
  if (!cert_pem) return core::fail(cert_pem.error());
  auto fp = cert_fingerprint(cert.get());
  if (!fp) return core::fail(fp.error());

  // Certificate first: a crash in between leaves no key without its certificate, and a
  // retry is not blocked by kExists.
  if (auto r = write_public_pem(dir / kCaCertFile, *cert_pem); !r) return core::fail(r.error());
  auto written = write_private_pem(key_path, *key_pem);
  OPENSSL_cleanse(key_pem->data(), key_pem->size());
  if (!written) return core::fail(written.error());
  return ClusterCa{std::move(cert_pem).value(), std::move(cn), std::move(fp).value()};
}

TlsResult<NodeKeyAndCsr> create_node_key_and_csr(std::string_view node_name,
                                                 std::string_view ip_address) {
  if (!is_valid_node_name(node_name)) {
    return err(TlsErrc::kInvalidArgument, "invalid node name '" + std::string(node_name) + "'");
  }
  std::string ip(ip_address);
  unsigned char ip_bytes[16];
  int ip_len = 0;
  if (::inet_pton(AF_INET, ip.c_str(), ip_bytes) == 1) {
    ip_len = 4;
  } else if (::inet_pton(AF_INET6, ip.c_str(), ip_bytes) == 1) {
    ip_len = 16;
  } else {
    return err(TlsErrc::kInvalidArgument, "invalid IP address '" + ip + "'");
  }

  auto key = generate_key();
  if (!key) return core::fail(key.error());
  auto name = cn_name(node_name);
  if (!name) return core::fail(name.error());
  ReqPtr req(X509_REQ_new());
  if (!req || X509_REQ_set_version(req.get(), X509_REQ_VERSION_1) != 1 ||
      X509_REQ_set_subject_name(req.get(), name->get()) != 1 ||
      X509_REQ_set_pubkey(req.get(), key->get()) != 1) {
    return ossl_err(TlsErrc::kCrypto, "filling CSR");
  }

  GenNamesPtr sans(sk_GENERAL_NAME_new_null());
  GenNamePtr ip_name(GENERAL_NAME_new());
  GenNamePtr dns_name(GENERAL_NAME_new());
  ASN1_OCTET_STRING* ip_str = ASN1_OCTET_STRING_new();
  ASN1_IA5STRING* dns_str = ASN1_IA5STRING_new();
  if (ip_name && ip_str)
    GENERAL_NAME_set0_value(ip_name.get(), GEN_IPADD, ip_str);
  else
    ASN1_OCTET_STRING_free(ip_str);
  if (dns_name && dns_str)
    GENERAL_NAME_set0_value(dns_name.get(), GEN_DNS, dns_str);
  else
    ASN1_IA5STRING_free(dns_str);
  if (!sans || !ip_name || !dns_name || !ip_str || !dns_str ||
      ASN1_OCTET_STRING_set(ip_str, ip_bytes, ip_len) != 1 ||
      ASN1_STRING_set(dns_str, node_name.data(), static_cast<int>(node_name.size())) != 1 ||
      !sk_GENERAL_NAME_push(sans.get(), ip_name.get())) {
    return ossl_err(TlsErrc::kCrypto, "building subjectAltName");
  }
  ip_name.release();
  if (!sk_GENERAL_NAME_push(sans.get(), dns_name.get())) {
    return ossl_err(TlsErrc::kCrypto, "building subjectAltName");
  }
  dns_name.release();

  ExtStackPtr exts(sk_X509_EXTENSION_new_null());
  ExtPtr san_ext(X509V3_EXT_i2d(NID_subject_alt_name, 0, sans.get()));
  if (!exts || !san_ext || !sk_X509_EXTENSION_push(exts.get(), san_ext.get())) {
    return ossl_err(TlsErrc::kCrypto, "encoding subjectAltName");
  }
  san_ext.release();
  if (X509_REQ_add_extensions(req.get(), exts.get()) != 1) {
    return ossl_err(TlsErrc::kCrypto, "adding CSR extensions");
  }
  if (X509_REQ_sign(req.get(), key->get(), digest_for(key->get())) <= 0) {
    return ossl_err(TlsErrc::kCrypto, "signing CSR");
  }

  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_X509_REQ(bio.get(), req.get()) != 1) {
    return ossl_err(TlsErrc::kCrypto, "encoding CSR");
  }
  auto key_pem = key_to_pem(key->get());
  if (!key_pem) return core::fail(key_pem.error());
  return NodeKeyAndCsr{std::move(key_pem).value(), bio_to_string(bio.get())};
}

TlsResult<CsrInfo> inspect_csr(std::string_view csr_pem) {
  auto csr = parse_checked_csr(csr_pem);
  if (!csr) return core::fail(csr.error());
  CsrInfo info;
  info.common_name = csr->common_name;
  for (int i = 0; csr->sans && i < sk_GENERAL_NAME_num(csr->sans.get()); ++i) {
    const GENERAL_NAME* gn = sk_GENERAL_NAME_value(csr->sans.get(), i);
    if (gn->type == GEN_DNS) {
      info.dns_names.emplace_back(
          reinterpret_cast<const char*>(ASN1_STRING_get0_data(gn->d.dNSName)),
          static_cast<size_t>(ASN1_STRING_length(gn->d.dNSName)));
    } else {
      const int len = ASN1_STRING_length(gn->d.iPAddress);
      char text[INET6_ADDRSTRLEN] = {};
      if (::inet_ntop(len == 4 ? AF_INET : AF_INET6, ASN1_STRING_get0_data(gn->d.iPAddress), text,
                      sizeof text) != nullptr) {
        info.ip_addresses.emplace_back(text);
      }
    }
  }
  return info;
}

TlsResult<std::string> sign_csr(const std::filesystem::path& ca_dir, std::string_view csr_pem,
                                int validity_days) {
  if (validity_days < 1 || validity_days > kMaxValidityDays) {
    return err(TlsErrc::kInvalidArgument,
               "validity_days must be in [1, " + std::to_string(kMaxValidityDays) + "]");
  }
  return sign_csr(ca_dir, csr_pem,
                  CertValidity{-kClockSkewAllowance, std::chrono::hours(24) * validity_days});
}

TlsResult<std::string> sign_csr(const std::filesystem::path& ca_dir, std::string_view csr_pem,
                                CertValidity validity) {
  auto ca_cert = read_pem_file(ca_dir / kCaCertFile);
  if (!ca_cert) return core::fail(ca_cert.error());
  auto ca_key = read_pem_file(ca_dir / kCaKeyFile);
  if (!ca_key) return core::fail(ca_key.error());
  auto out = sign_csr_with_ca(*ca_cert, *ca_key, csr_pem, validity);
  OPENSSL_cleanse(ca_key->data(), ca_key->size());
  return out;
}

TlsResult<std::string> sign_csr_with_ca(std::string_view ca_cert_pem, std::string_view ca_key_pem,
                                        std::string_view csr_pem, CertValidity validity) {
  if (validity.not_after_offset <= validity.not_before_offset) {
    return err(TlsErrc::kInvalidArgument, "certificate validity window is empty");
  }
  auto ca_cert = parse_cert(ca_cert_pem);
  if (!ca_cert) return core::fail(ca_cert.error());
  auto ca_key = parse_key(ca_key_pem);
  if (!ca_key) return core::fail(ca_key.error());
  if (X509_check_private_key(ca_cert->get(), ca_key->get()) != 1) {
    return ossl_err(TlsErrc::kKeyMismatch, "CA key does not match CA certificate");
  }
  if (X509_check_ca(ca_cert->get()) == 0) {
    return err(TlsErrc::kInvalidArgument, "the signing certificate is not a CA");
  }

  auto csr = parse_checked_csr(csr_pem);
  if (!csr) return core::fail(csr.error());
  EVP_PKEY* req_key = X509_REQ_get0_pubkey(csr->req.get());
  const std::string& cn = csr->common_name;
  GenNamesPtr& sans = csr->sans;

  // Only the CN is taken from the CSR subject; other RDNs (O, OU, ...) are dropped.
  auto subject = cn_name(cn);
  if (!subject) return core::fail(subject.error());
  X509Ptr cert(X509_new());
  if (!cert) return ossl_err(TlsErrc::kCrypto, "X509_new");
  if (auto r = set_serial_and_validity(cert.get(), validity); !r) return core::fail(r.error());
  if (X509_set_subject_name(cert.get(), subject->get()) != 1 ||
      X509_set_issuer_name(cert.get(), X509_get_subject_name(ca_cert->get())) != 1 ||
      X509_set_pubkey(cert.get(), req_key) != 1) {
    return ossl_err(TlsErrc::kCrypto, "filling node certificate");
  }
  for (auto [nid, value] : {std::pair{NID_basic_constraints, "critical,CA:FALSE"},
                            std::pair{NID_key_usage, "critical,digitalSignature"},
                            std::pair{NID_ext_key_usage, "serverAuth,clientAuth"},
                            std::pair{NID_subject_key_identifier, "hash"},
                            std::pair{NID_authority_key_identifier, "keyid:always"}}) {
    if (auto r = add_ext(cert.get(), ca_cert->get(), nid, value); !r) return core::fail(r.error());
  }
  if (sans && sk_GENERAL_NAME_num(sans.get()) > 0 &&
      X509_add1_ext_i2d(cert.get(), NID_subject_alt_name, sans.get(), 0, X509V3_ADD_DEFAULT) != 1) {
    return ossl_err(TlsErrc::kCrypto, "adding subjectAltName");
  }
  if (X509_sign(cert.get(), ca_key->get(), digest_for(ca_key->get())) <= 0) {
    return ossl_err(TlsErrc::kCrypto, "signing node certificate");
  }
  return cert_to_pem(cert.get());
}

TlsResult<PeerIdentity> verify_peer(std::string_view cert_pem, std::string_view ca_pem) {
  return verify_peer(cert_pem, ca_pem, std::chrono::system_clock::now());
}

TlsResult<PeerIdentity> verify_peer(std::string_view cert_pem, std::string_view ca_pem,
                                    std::chrono::system_clock::time_point at) {
  auto ca = parse_cert(ca_pem);
  if (!ca) return core::fail(ca.error());
  BioPtr bio = mem_bio(cert_pem);
  if (!bio) return err(TlsErrc::kInvalidPem, "certificate PEM too large or out of memory");
  X509Ptr leaf(PEM_read_bio_X509(bio.get(), nullptr, no_password, nullptr));
  if (!leaf) return ossl_err(TlsErrc::kInvalidPem, "not a PEM certificate");
  X509StackPtr chain(sk_X509_new_null());
  if (!chain) return ossl_err(TlsErrc::kCrypto, "allocating chain");
  while (X509* extra = PEM_read_bio_X509(bio.get(), nullptr, no_password, nullptr)) {
    if (!sk_X509_push(chain.get(), extra)) {
      X509_free(extra);
      return ossl_err(TlsErrc::kCrypto, "building chain");
    }
  }
  ERR_clear_error();  // the loop above ends on a "no start line" error

  StorePtr store(X509_STORE_new());
  StoreCtxPtr ctx(X509_STORE_CTX_new());
  if (!store || !ctx || X509_STORE_add_cert(store.get(), ca->get()) != 1 ||
      X509_STORE_CTX_init(ctx.get(), store.get(), leaf.get(), chain.get()) != 1) {
    return ossl_err(TlsErrc::kCrypto, "setting up verification");
  }
  X509_STORE_CTX_set_time(ctx.get(), 0, std::chrono::system_clock::to_time_t(at));
  X509_STORE_CTX_set_purpose(ctx.get(), X509_PURPOSE_SSL_CLIENT);
  X509_STORE_CTX_set_flags(ctx.get(), X509_V_FLAG_X509_STRICT);  // as in the TLS context
  if (X509_verify_cert(ctx.get()) != 1) {
    int e = X509_STORE_CTX_get_error(ctx.get());
    ERR_clear_error();
    std::string why = X509_verify_cert_error_string(e);
    if (e == X509_V_ERR_CERT_HAS_EXPIRED) return err(TlsErrc::kExpired, why);
    if (e == X509_V_ERR_CERT_NOT_YET_VALID) return err(TlsErrc::kNotYetValid, why);
    return err(TlsErrc::kUntrusted, why);
  }
  // Nodes are both TLS clients and servers on 5703; the chain check covered clientAuth.
  if (X509_check_purpose(leaf.get(), X509_PURPOSE_SSL_SERVER, 0) != 1) {
    ERR_clear_error();
    return err(TlsErrc::kUntrusted, "certificate is not valid for TLS server use");
  }
  return identity_of(leaf.get());
}

TlsResult<std::string> fingerprint_sha256(std::string_view cert_pem) {
  auto cert = parse_cert(cert_pem);
  if (!cert) return core::fail(cert.error());
  return cert_fingerprint(cert->get());
}

TlsResult<std::string> subject_cn(std::string_view cert_pem) {
  auto cert = parse_cert(cert_pem);
  if (!cert) return core::fail(cert.error());
  auto cn = name_cn(X509_get_subject_name(cert->get()));
  if (!cn) return err(TlsErrc::kInvalidPem, "certificate has no single commonName");
  return *cn;
}

TlsResult<void> write_private_pem(const std::filesystem::path& path, std::string_view pem) {
  return write_atomic(path, pem, 0600);
}

TlsResult<void> write_public_pem(const std::filesystem::path& path, std::string_view pem) {
  return write_atomic(path, pem, 0644);
}

TlsResult<std::string> read_pem_file(const std::filesystem::path& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return err(TlsErrc::kIo, "open " + path.string() + ": " + std::strerror(errno));
  std::string out;
  char buf[4096];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      std::string msg = "read " + path.string() + ": " + std::strerror(errno);
      ::close(fd);
      return err(TlsErrc::kIo, std::move(msg));
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
    if (out.size() > kMaxPemBytes) {
      ::close(fd);
      return err(TlsErrc::kInvalidPem, path.string() + " is larger than 1 MiB");
    }
  }
  OPENSSL_cleanse(buf, sizeof buf);
  ::close(fd);
  return out;
}

TlsResult<NodeCredentials> load_node_credentials(const std::filesystem::path& dir) {
  NodeCredentials creds;
  for (auto [name, out] :
       {std::pair{kNodeCertFile, &creds.cert_pem}, std::pair{kNodeKeyFile, &creds.key_pem},
        std::pair{kCaCertFile, &creds.ca_pem}}) {
    auto r = read_pem_file(dir / name);
    if (!r) return core::fail(r.error());
    *out = std::move(r).value();
  }
  auto cert = parse_cert(creds.cert_pem);
  if (!cert) return core::fail(cert.error());
  auto key = parse_key(creds.key_pem);
  if (!key) return core::fail(key.error());
  if (X509_check_private_key(cert->get(), key->get()) != 1) {
    return ossl_err(TlsErrc::kKeyMismatch, (dir / kNodeKeyFile).string() + " does not match " +
                                               (dir / kNodeCertFile).string());
  }
  return creds;
}

TlsResult<void> store_node_credentials(const std::filesystem::path& dir,
                                       const NodeCredentials& creds) {
  if (auto r = ensure_private_dir(dir); !r) return r;
  if (auto r = write_private_pem(dir / kNodeKeyFile, creds.key_pem); !r) return r;
  if (auto r = write_public_pem(dir / kCaCertFile, creds.ca_pem); !r) return r;
  return write_public_pem(dir / kNodeCertFile, creds.cert_pem);
}

}  // namespace tandem::backend::transport
