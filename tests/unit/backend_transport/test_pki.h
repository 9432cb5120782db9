// Test-only PKI fixtures: a self-deleting temp directory and helpers that mint cluster CAs
// and node credentials through the production code paths. Single-threaded test use only.
#pragma once

#include <filesystem>
#include <string>

#include "backend/transport/tls_identity.h"

namespace tandem::backend::transport::testing {

class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

// Creates a CA in `dir` (aborts the test binary on failure).
ClusterCa make_ca(const std::filesystem::path& dir);

// Key + CSR for node_name/ip, signed by the CA in ca_dir with `validity`.
NodeCredentials make_node(const std::filesystem::path& ca_dir, const std::string& node_name,
                          const std::string& ip = "127.0.0.1", CertValidity validity = {});

// PEM -> DER bytes of the first block, and back (for tampering tests).
std::string pem_to_der(const std::string& pem, std::string* type_out);
std::string der_to_pem(const std::string& der, const std::string& type);

}  // namespace tandem::backend::transport::testing
