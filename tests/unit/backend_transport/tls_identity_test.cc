#include "backend/transport/tls_identity.h"

#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>

#include <memory>
#include <regex>
#include <utility>
#include <vector>

#include "tests/unit/backend_transport/test_pki.h"

namespace tandem::backend::transport {
namespace {

namespace fs = std::filesystem;
using testing::make_ca;
using testing::make_node;
using testing::TempDir;
using namespace std::chrono_literals;

struct X509Free {
  void operator()(X509* x) const { X509_free(x); }
};
using X509Ptr = std::unique_ptr<X509, X509Free>;

X509Ptr parse(const std::string& pem) {
  std::unique_ptr<BIO, decltype(&BIO_free)> bio(
      BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())), &BIO_free);
  return X509Ptr(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
}

mode_t file_mode(const fs::path& p) {
  struct stat st {};
  EXPECT_EQ(::stat(p.c_str(), &st), 0) << p;
  return st.st_mode & 07777;
}

// A CSR built outside the production path, to feed sign_csr what a hostile or sloppy client
// could send: extra subject RDNs, arbitrary extensions, a weak key.
std::string custom_csr(const std::string& cn, const std::string& org,
                       const std::vector<std::pair<int, std::string>>& exts,
                       EVP_PKEY* key = nullptr) {
  std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)> own(key ? nullptr : EVP_EC_gen("P-256"),
                                                          &EVP_PKEY_free);
  if (!key) key = own.get();
  std::unique_ptr<X509_REQ, decltype(&X509_REQ_free)> req(X509_REQ_new(), &X509_REQ_free);
  X509_NAME* name = X509_REQ_get_subject_name(req.get());
  if (!org.empty()) {
    X509_NAME_add_entry_by_txt(name, "O", MBSTRING_UTF8,
                               reinterpret_cast<const unsigned char*>(org.c_str()), -1, -1, 0);
  }
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
                             reinterpret_cast<const unsigned char*>(cn.c_str()), -1, -1, 0);
  X509_REQ_set_pubkey(req.get(), key);
  STACK_OF(X509_EXTENSION)* sk = sk_X509_EXTENSION_new_null();
  X509V3_CTX ctx;
  X509V3_set_ctx(&ctx, nullptr, nullptr, req.get(), nullptr, 0);
  for (const auto& [nid, value] : exts) {
    X509_EXTENSION* e = X509V3_EXT_nconf_nid(nullptr, &ctx, nid, value.c_str());
    EXPECT_NE(e, nullptr) << value;
    if (e) sk_X509_EXTENSION_push(sk, e);
  }
  if (!exts.empty()) X509_REQ_add_extensions(req.get(), sk);
  sk_X509_EXTENSION_pop_free(sk, X509_EXTENSION_free);
  EXPECT_GT(X509_REQ_sign(req.get(), key, EVP_sha256()), 0);
  std::unique_ptr<BIO, decltype(&BIO_free)> bio(BIO_new(BIO_s_mem()), &BIO_free);
  PEM_write_bio_X509_REQ(bio.get(), req.get());
  char* data = nullptr;
  long n = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<size_t>(n));
}

// Replaces the first occurrence of `from` with `to` (same length) inside the DER of a PEM.
std::string tamper(const std::string& pem, const std::string& from, const std::string& to) {
  std::string type;
  std::string der = testing::pem_to_der(pem, &type);
  auto pos = der.find(from);
  EXPECT_NE(pos, std::string::npos);
  if (pos != std::string::npos) der.replace(pos, from.size(), to);
  return testing::der_to_pem(der, type);
}

class TlsIdentityTest : public ::testing::Test {
 protected:
  TempDir tmp_;
  fs::path ca_dir_ = tmp_.path() / "ca";
};

TEST(NodeNameTest, AcceptsHostNamesOnly) {
  for (const char* ok : {"node-a", "n1", "a.b.c", "Node-7.cluster.local", "x"}) {
    EXPECT_TRUE(is_valid_node_name(ok)) << ok;
  }
  for (const char* bad : {"", "-a", "a-", "a..b", ".a", "a.", "a_b", "*.a", "a b", "é", "a\nb"}) {
    EXPECT_FALSE(is_valid_node_name(bad)) << bad;
  }
  EXPECT_TRUE(is_valid_node_name(std::string(63, 'a')));
  EXPECT_FALSE(is_valid_node_name(std::string(64, 'a')));
  EXPECT_FALSE(is_valid_node_name(std::string(1, '\0')));
}

TEST_F(TlsIdentityTest, CreateClusterCaWritesKeyAndCertificate) {
  ClusterCa ca = make_ca(ca_dir_);
  EXPECT_EQ(ca.common_name.rfind("Tandem cluster CA ", 0), 0u) << ca.common_name;
  EXPECT_TRUE(std::regex_match(ca.common_name, std::regex("Tandem cluster CA [0-9a-f]{16}")));
  EXPECT_EQ(file_mode(ca_dir_ / kCaKeyFile), 0600u);
  EXPECT_EQ(file_mode(ca_dir_ / kCaCertFile), 0644u);
  EXPECT_EQ(file_mode(ca_dir_), 0700u);

  auto on_disk = read_pem_file(ca_dir_ / kCaCertFile);
  ASSERT_TRUE(on_disk) << on_disk.error().message;
  EXPECT_EQ(*on_disk, ca.cert_pem);
  auto cn = subject_cn(ca.cert_pem);
  ASSERT_TRUE(cn);
  EXPECT_EQ(*cn, ca.common_name);
  auto fp = fingerprint_sha256(ca.cert_pem);
  ASSERT_TRUE(fp);
  EXPECT_EQ(*fp, ca.fingerprint_sha256);

  X509Ptr cert = parse(ca.cert_pem);
  ASSERT_TRUE(cert);
  EXPECT_EQ(X509_check_ca(cert.get()), 1);
  EXPECT_TRUE(X509_get_key_usage(cert.get()) & KU_KEY_CERT_SIGN);
  EXPECT_EQ(X509_get_pathlen(cert.get()), 0);
  // ~10 years.
  int days = 0, secs = 0;
  ASSERT_EQ(
      ASN1_TIME_diff(&days, &secs, X509_get0_notBefore(cert.get()), X509_get0_notAfter(cert.get())),
      1);
  EXPECT_GE(days, 3650);
  EXPECT_LE(days, 3651);
  // The CA verifies as its own anchor only as a CA, not as a node certificate.
  auto self = verify_peer(ca.cert_pem, ca.cert_pem);
  EXPECT_FALSE(self);
}

TEST_F(TlsIdentityTest, CreateClusterCaRefusesToReplaceAnExistingCa) {
  ClusterCa first = make_ca(ca_dir_);
  auto second = create_cluster_ca(ca_dir_);
  ASSERT_FALSE(second);
  EXPECT_EQ(second.error().code, TlsErrc::kExists);
  EXPECT_EQ(*read_pem_file(ca_dir_ / kCaCertFile), first.cert_pem);
}

TEST_F(TlsIdentityTest, SignedNodeCertificateVerifiesAndCarriesIdentity) {
  ClusterCa ca = make_ca(ca_dir_);
  auto kc = create_node_key_and_csr("node-a", "10.1.2.3");
  ASSERT_TRUE(kc) << kc.error().message;
  EXPECT_NE(kc->key_pem.find("BEGIN PRIVATE KEY"), std::string::npos);
  EXPECT_NE(kc->csr_pem.find("BEGIN CERTIFICATE REQUEST"), std::string::npos);

  auto cert_pem = sign_csr(ca_dir_, kc->csr_pem, 30);
  ASSERT_TRUE(cert_pem) << cert_pem.error().message;
  auto peer = verify_peer(*cert_pem, ca.cert_pem);
  ASSERT_TRUE(peer) << peer.error().message;
  EXPECT_EQ(peer->common_name, "node-a");
  EXPECT_EQ(peer->fingerprint_sha256, *fingerprint_sha256(*cert_pem));
  EXPECT_TRUE(
      std::regex_match(peer->fingerprint_sha256, std::regex("([0-9A-F]{2}:){31}[0-9A-F]{2}")));
  EXPECT_EQ(*subject_cn(*cert_pem), "node-a");

  X509Ptr cert = parse(*cert_pem);
  ASSERT_TRUE(cert);
  EXPECT_EQ(X509_check_ca(cert.get()), 0);
  EXPECT_EQ(X509_check_ip_asc(cert.get(), "10.1.2.3", 0), 1);
  EXPECT_EQ(X509_check_ip_asc(cert.get(), "10.1.2.4", 0), 0);
  EXPECT_EQ(X509_check_host(cert.get(), "node-a", 0, 0, nullptr), 1);
  const uint32_t eku = X509_get_extended_key_usage(cert.get());
  EXPECT_TRUE(eku & XKU_SSL_SERVER);
  EXPECT_TRUE(eku & XKU_SSL_CLIENT);
  EXPECT_EQ(X509_check_issued(parse(ca.cert_pem).get(), cert.get()), X509_V_OK);
  // The key stays on the node: it matches the certificate it never left for.
  auto key_bio = std::unique_ptr<BIO, decltype(&BIO_free)>(
      BIO_new_mem_buf(kc->key_pem.data(), static_cast<int>(kc->key_pem.size())), &BIO_free);
  std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)> key(
      PEM_read_bio_PrivateKey(key_bio.get(), nullptr, nullptr, nullptr), &EVP_PKEY_free);
  EXPECT_EQ(X509_check_private_key(cert.get(), key.get()), 1);
  int days = 0, secs = 0;
  ASSERT_EQ(
      ASN1_TIME_diff(&days, &secs, X509_get0_notBefore(cert.get()), X509_get0_notAfter(cert.get())),
      1);
  EXPECT_EQ(days, 30);  // plus the clock-skew backdating, in seconds
}

TEST_F(TlsIdentityTest, Ipv6AddressBecomesIpSan) {
  make_ca(ca_dir_);
  NodeCredentials n = make_node(ca_dir_, "node-v6", "fd00::7");
  X509Ptr cert = parse(n.cert_pem);
  EXPECT_EQ(X509_check_ip_asc(cert.get(), "fd00::7", 0), 1);
}

TEST_F(TlsIdentityTest, CreateCsrRejectsBadNodeNameOrAddress) {
  for (auto [name, ip] :
       {std::pair{"bad_name", "10.0.0.1"}, std::pair{"", "10.0.0.1"}, std::pair{"-x", "10.0.0.1"},
        std::pair{"node-a", "300.1.1.1"}, std::pair{"node-a", "node-a"},
        std::pair{"node-a", "fe80::1%eth0"}, std::pair{"node-a", ""}}) {
    auto r = create_node_key_and_csr(name, ip);
    ASSERT_FALSE(r) << name << " " << ip;
    EXPECT_EQ(r.error().code, TlsErrc::kInvalidArgument);
  }
}

TEST_F(TlsIdentityTest, CsrTamperedAfterSigningIsRefused) {
  make_ca(ca_dir_);
  auto kc = create_node_key_and_csr("node-a", "10.1.2.3");
  ASSERT_TRUE(kc);
  // Same length, same structure: only the signature can tell.
  for (auto [from, to] : {std::pair{"node-a", "node-b"}}) {
    auto r = sign_csr(ca_dir_, tamper(kc->csr_pem, from, to), 30);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code, TlsErrc::kBadSignature) << r.error().message;
  }
  // The IP SAN (10.1.2.3 = 0a 01 02 03) rewritten to 10.1.2.99.
  auto r = sign_csr(
      ca_dir_,
      tamper(kc->csr_pem, std::string("\x0a\x01\x02\x03", 4), std::string("\x0a\x01\x02\x63", 4)),
      30);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, TlsErrc::kBadSignature);
}

TEST_F(TlsIdentityTest, InspectCsrReportsTheRequestedIdentity) {
  auto kc = create_node_key_and_csr("node-a", "10.1.2.3");
  ASSERT_TRUE(kc);
  auto info = inspect_csr(kc->csr_pem);
  ASSERT_TRUE(info) << info.error().message;
  EXPECT_EQ(info->common_name, "node-a");
  EXPECT_EQ(info->dns_names, std::vector<std::string>{"node-a"});
  EXPECT_EQ(info->ip_addresses, std::vector<std::string>{"10.1.2.3"});
  auto v6 = inspect_csr(create_node_key_and_csr("node-b", "FD00:0::7")->csr_pem);
  ASSERT_TRUE(v6);
  EXPECT_EQ(v6->ip_addresses, std::vector<std::string>{"fd00::7"});
  auto tampered = inspect_csr(tamper(kc->csr_pem, "node-a", "node-b"));
  ASSERT_FALSE(tampered);
  EXPECT_EQ(tampered.error().code, TlsErrc::kBadSignature);
}

TEST_F(TlsIdentityTest, OnlyACaCanSign) {
  make_ca(ca_dir_);
  NodeCredentials node = make_node(ca_dir_, "node-a");
  auto kc = create_node_key_and_csr("node-b", "10.1.2.4");
  ASSERT_TRUE(kc);
  auto r = sign_csr_with_ca(node.cert_pem, node.key_pem, kc->csr_pem, CertValidity{});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, TlsErrc::kInvalidArgument);
}

TEST_F(TlsIdentityTest, GarbageCsrIsInvalidPem) {
  make_ca(ca_dir_);
  for (const char* junk : {"", "hello",
                           "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n"
                           "-----END CERTIFICATE REQUEST-----\n"}) {
    auto r = sign_csr(ca_dir_, junk, 30);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code, TlsErrc::kInvalidPem);
  }
}

TEST_F(TlsIdentityTest, CsrWithMalformedOrForeignSansIsRefused) {
  make_ca(ca_dir_);
  for (const char* san : {"email:ops@example.com", "DNS:*.cluster", "URI:https://x",
                          "DNS:node-a,DNS:bad_name", "IP:10.0.0.1,email:a@b"}) {
    auto r = sign_csr(ca_dir_, custom_csr("node-a", "", {{NID_subject_alt_name, san}}), 30);
    ASSERT_FALSE(r) << san;
    EXPECT_EQ(r.error().code, TlsErrc::kBadRequest) << san << ": " << r.error().message;
  }
}

TEST_F(TlsIdentityTest, CsrSubjectAndExtensionsAreFilteredNotTrusted) {
  ClusterCa ca = make_ca(ca_dir_);
  std::string csr = custom_csr("node-a", "Evil Corp",
                               {{NID_basic_constraints, "critical,CA:TRUE"},
                                {NID_key_usage, "keyCertSign"},
                                {NID_subject_alt_name, "IP:10.0.0.9,DNS:node-a.cluster"}});
  auto pem = sign_csr(ca_dir_, csr, 30);
  ASSERT_TRUE(pem) << pem.error().message;
  X509Ptr cert = parse(*pem);
  EXPECT_EQ(X509_check_ca(cert.get()), 0);
  EXPECT_FALSE(X509_get_key_usage(cert.get()) & KU_KEY_CERT_SIGN);
  X509_NAME* subject = X509_get_subject_name(cert.get());
  EXPECT_EQ(X509_NAME_entry_count(subject), 1);
  EXPECT_LT(X509_NAME_get_index_by_NID(subject, NID_organizationName, -1), 0);
  EXPECT_EQ(X509_check_ip_asc(cert.get(), "10.0.0.9", 0), 1);
  EXPECT_EQ(X509_check_host(cert.get(), "node-a.cluster", 0, 0, nullptr), 1);
  EXPECT_TRUE(verify_peer(*pem, ca.cert_pem));
}

TEST_F(TlsIdentityTest, CsrWithBadSubjectOrWeakKeyIsRefused) {
  make_ca(ca_dir_);
  for (const char* cn : {"bad_name", "*.x", ""}) {
    auto r = sign_csr(ca_dir_, custom_csr(cn, "", {}), 30);
    ASSERT_FALSE(r) << cn;
    EXPECT_EQ(r.error().code, TlsErrc::kBadRequest);
  }
  std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)> weak(EVP_RSA_gen(1024), &EVP_PKEY_free);
  ASSERT_TRUE(weak);
  auto r = sign_csr(ca_dir_, custom_csr("node-a", "", {}, weak.get()), 30);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, TlsErrc::kBadRequest);
}

TEST_F(TlsIdentityTest, CertificateFromAnotherCaIsUntrusted) {
  ClusterCa ours = make_ca(ca_dir_);
  make_ca(tmp_.path() / "other");
  NodeCredentials stranger = make_node(tmp_.path() / "other", "node-a");
  auto r = verify_peer(stranger.cert_pem, ours.cert_pem);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, TlsErrc::kUntrusted) << r.error().message;
}

TEST_F(TlsIdentityTest, TamperedCertificateIsUntrusted) {
  ClusterCa ca = make_ca(ca_dir_);
  NodeCredentials n = make_node(ca_dir_, "node-a");
  auto r = verify_peer(tamper(n.cert_pem, "node-a", "node-b"), ca.cert_pem);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, TlsErrc::kUntrusted) << r.error().message;
}

TEST_F(TlsIdentityTest, ValidityWindowIsEnforced) {
  ClusterCa ca = make_ca(ca_dir_);
  NodeCredentials expired = make_node(ca_dir_, "node-old", "127.0.0.1", {-48h, -24h});
  auto r = verify_peer(expired.cert_pem, ca.cert_pem);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, TlsErrc::kExpired) << r.error().message;

  NodeCredentials future = make_node(ca_dir_, "node-new", "127.0.0.1", {24h, 48h});
  r = verify_peer(future.cert_pem, ca.cert_pem);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, TlsErrc::kNotYetValid) << r.error().message;

  auto fresh = make_node(ca_dir_, "node-a");
  EXPECT_TRUE(verify_peer(fresh.cert_pem, ca.cert_pem));
  r = verify_peer(fresh.cert_pem, ca.cert_pem,
                  std::chrono::system_clock::now() + 24h * (kDefaultNodeValidityDays + 1));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, TlsErrc::kExpired);
}

TEST_F(TlsIdentityTest, SignRejectsBadValidityAndMismatchedCa) {
  make_ca(ca_dir_);
  auto kc = create_node_key_and_csr("node-a", "10.1.2.3");
  ASSERT_TRUE(kc);
  for (int days : {0, -1, kMaxValidityDays + 1}) {
    auto r = sign_csr(ca_dir_, kc->csr_pem, days);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code, TlsErrc::kInvalidArgument);
  }
  auto empty = sign_csr(ca_dir_, kc->csr_pem, CertValidity{1h, 1h});
  ASSERT_FALSE(empty);
  EXPECT_EQ(empty.error().code, TlsErrc::kInvalidArgument);

  make_ca(tmp_.path() / "other");
  auto mixed = sign_csr_with_ca(*read_pem_file(ca_dir_ / kCaCertFile),
                                *read_pem_file(tmp_.path() / "other" / kCaKeyFile), kc->csr_pem,
                                CertValidity{});
  ASSERT_FALSE(mixed);
  EXPECT_EQ(mixed.error().code, TlsErrc::kKeyMismatch);

  auto missing = sign_csr(tmp_.path() / "nowhere", kc->csr_pem, 30);
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code, TlsErrc::kIo);
}

TEST_F(TlsIdentityTest, WritePrivatePemIsAtomicAndOwnerOnly) {
  const fs::path key = tmp_.path() / "node.key";
  {
    // A pre-existing world-readable file is replaced, not reused.
    ASSERT_TRUE(write_public_pem(key, "old"));
    ASSERT_EQ(file_mode(key), 0644u);
  }
  ASSERT_TRUE(write_private_pem(key, "secret"));
  EXPECT_EQ(file_mode(key), 0600u);
  EXPECT_EQ(*read_pem_file(key), "secret");
  size_t entries = 0;
  for (const auto& e : fs::directory_iterator(tmp_.path())) {
    ++entries;
    EXPECT_EQ(e.path().filename(), "node.key") << "leftover " << e.path();
  }
  EXPECT_EQ(entries, 1u);

  auto r = write_private_pem(tmp_.path() / "missing" / "x.key", "secret");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, TlsErrc::kIo);
}

TEST_F(TlsIdentityTest, NodeCredentialsRoundTripAndKeyMismatch) {
  make_ca(ca_dir_);
  NodeCredentials a = make_node(ca_dir_, "node-a");
  NodeCredentials b = make_node(ca_dir_, "node-b");
  const fs::path dir = tmp_.path() / "node-a";
  ASSERT_TRUE(store_node_credentials(dir, a));
  EXPECT_EQ(file_mode(dir / kNodeKeyFile), 0600u);
  EXPECT_EQ(file_mode(dir), 0700u);
  auto loaded = load_node_credentials(dir);
  ASSERT_TRUE(loaded) << loaded.error().message;
  EXPECT_EQ(loaded->cert_pem, a.cert_pem);
  EXPECT_EQ(loaded->key_pem, a.key_pem);
  EXPECT_EQ(loaded->ca_pem, a.ca_pem);

  ASSERT_TRUE(write_private_pem(dir / kNodeKeyFile, b.key_pem));
  auto mismatched = load_node_credentials(dir);
  ASSERT_FALSE(mismatched);
  EXPECT_EQ(mismatched.error().code, TlsErrc::kKeyMismatch);
}

TEST(TlsIdentityHelpersTest, GarbageCertificateInputsAreInvalidPem) {
  EXPECT_EQ(fingerprint_sha256("nope").error().code, TlsErrc::kInvalidPem);
  EXPECT_EQ(subject_cn("").error().code, TlsErrc::kInvalidPem);
  EXPECT_EQ(verify_peer("x", "y").error().code, TlsErrc::kInvalidPem);
  EXPECT_STREQ(to_string(TlsErrc::kPeerRefused), "peer without a valid certificate refused");
}

}  // namespace
}  // namespace tandem::backend::transport
