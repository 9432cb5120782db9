// ClusterService: membership, run by the controller over its catalogue. Nodes join with
// the cluster's join token and a certificate signing request (their key never leaves
// them) and get back a certificate from the cluster CA and a node token; they then
// heartbeat with that token; a node silent for longer than the timeout is marked offline.
// Thread-safe (all state is in the catalogue). The catalogue and CA must outlive it.
#pragma once

#include <chrono>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/result.h"
#include "db/catalogue.h"
#include "mgmt/api_error.h"

namespace tandem::mgmt {

// Signs node certificates (the controller holds the cluster CA).
class CertificateAuthority {
 public:
  virtual ~CertificateAuthority() = default;
  // Signs a node's request only when it names that node (CN) and its address (IP SAN).
  virtual core::Result<std::string, std::string> sign(const std::string& csr_pem,
                                                      const std::string& node_name,
                                                      const std::string& address) = 0;
  virtual std::string ca_pem() const = 0;
};

struct JoinRequest {
  std::string name;
  std::string address;
  std::string api_url;
  uint16_t iscsi_port = 3260;
  uint16_t repl_port = 5703;
  std::string csr_pem;
  std::string node_id;  // set when a known node re-joins
};

struct JoinGrant {
  std::string node_id;
  std::string certificate_pem;
  std::string ca_pem;
  std::string node_token;
};

// Events a node saw itself (e.g. a refused replication peer), carried by its heartbeat to
// the cluster's log. Bounded by the router: at most kMaxReportedEvents, short texts.
struct ReportedEvent {
  std::string kind;     // [a-z-]{1,40}
  std::string message;  // at most 1000 bytes
};
inline constexpr size_t kMaxReportedEvents = 100;

struct HeartbeatReport {
  uint64_t capacity_bytes = 0;
  uint64_t free_bytes = 0;
  std::vector<ReportedEvent> events;
};

class ClusterService {
 public:
  ClusterService(db::Catalogue& cat, CertificateAuthority* ca, std::string controller_name,
                 std::chrono::milliseconds node_timeout);

  // Join token handling: created (hashed in the catalogue) at the controller's first start.
  static constexpr const char* kJoinTokenSetting = "join_token_sha256";
  core::Result<JoinGrant, ApiError> join(const JoinRequest& req, const std::string& bearer);
  core::Result<nlohmann::json, ApiError> heartbeat(const std::string& node_name,
                                                  const std::string& bearer,
                                                  const HeartbeatReport& report);
  // Marks nodes whose last heartbeat is older than the timeout offline (with an event);
  // the controller's own node is kept alive by its own loop. Returns how many changed.
  int check_liveness(int64_t now_ms);

 private:
  db::Catalogue& cat_;
  CertificateAuthority* ca_;
  std::string controller_name_;
  std::chrono::milliseconds node_timeout_;
};

}  // namespace tandem::mgmt
