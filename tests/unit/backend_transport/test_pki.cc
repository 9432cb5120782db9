#include "tests/unit/backend_transport/test_pki.h"

#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/pem.h>
#include <stdlib.h>

#include <cstdio>
#include <cstdlib>
#include <memory>

namespace tandem::backend::transport::testing {
namespace {

[[noreturn]] void die(const std::string& what, const TlsError& e) {
  std::fprintf(stderr, "test PKI: %s: %s: %s\n", what.c_str(), to_string(e.code),
               e.message.c_str());
  std::abort();
}

using BioPtr = std::unique_ptr<BIO, decltype(&BIO_free)>;

}  // namespace

TempDir::TempDir() {
  std::string tmpl = (std::filesystem::temp_directory_path() / "tandem-tls-XXXXXX").string();
  if (::mkdtemp(tmpl.data()) == nullptr) std::abort();
  path_ = tmpl;
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

ClusterCa make_ca(const std::filesystem::path& dir) {
  auto ca = create_cluster_ca(dir);
  if (!ca) die("create_cluster_ca", ca.error());
  return std::move(ca).value();
}

NodeCredentials make_node(const std::filesystem::path& ca_dir, const std::string& node_name,
                          const std::string& ip, CertValidity validity) {
  auto kc = create_node_key_and_csr(node_name, ip);
  if (!kc) die("create_node_key_and_csr", kc.error());
  auto cert = sign_csr(ca_dir, kc->csr_pem, validity);
  if (!cert) die("sign_csr", cert.error());
  auto ca = read_pem_file(ca_dir / kCaCertFile);
  if (!ca) die("read ca.crt", ca.error());
  return NodeCredentials{std::move(cert).value(), kc->key_pem, std::move(ca).value()};
}

std::string pem_to_der(const std::string& pem, std::string* type_out) {
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())), &BIO_free);
  char* name = nullptr;
  char* header = nullptr;
  unsigned char* data = nullptr;
  long len = 0;
  if (!bio || PEM_read_bio(bio.get(), &name, &header, &data, &len) != 1) std::abort();
  std::string der(reinterpret_cast<char*>(data), static_cast<size_t>(len));
  if (type_out) *type_out = name;
  OPENSSL_free(name);
  OPENSSL_free(header);
  OPENSSL_free(data);
  return der;
}

std::string der_to_pem(const std::string& der, const std::string& type) {
  BioPtr bio(BIO_new(BIO_s_mem()), &BIO_free);
  if (!bio ||
      PEM_write_bio(bio.get(), type.c_str(), "", reinterpret_cast<const unsigned char*>(der.data()),
                    static_cast<long>(der.size())) <= 0) {
    std::abort();
  }
  char* data = nullptr;
  long n = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<size_t>(n));
}

}  // namespace tandem::backend::transport::testing
