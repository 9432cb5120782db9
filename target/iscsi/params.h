// Operational parameter negotiation (RFC 7143 §13): the target's offer, the negotiated
// SessionParams, and a Negotiator that answers the initiator's operational keys one by one.
// Pure; one Negotiator per login, owned by the LoginMachine.
#pragma once

#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <string_view>

#include "core/result.h"
#include "target/iscsi/text.h"

namespace tandem::target::iscsi {

enum class SessionType { kNormal, kDiscovery };

// What this target offers / accepts. Defaults favour throughput (fast defaults).
struct TargetOffer {
  bool allow_header_digest = true;  // CRC32C accepted if the initiator lists it first
  bool allow_data_digest = true;
  bool initial_r2t = false;                            // OR: the result is No only if both say No
  bool immediate_data = true;                          // AND
  uint32_t max_recv_data_segment_length = 256 * 1024;  // declarative, ours
  uint32_t max_burst_length = 1024 * 1024;
  uint32_t first_burst_length = 256 * 1024;
  uint32_t max_outstanding_r2t = 16;
  uint32_t default_time2wait = 2;
  uint32_t default_time2retain = 20;
  uint32_t max_connections = 1;
  uint32_t error_recovery_level = 0;
};

// Negotiated values; fields keep RFC 7143 defaults for keys nobody sent.
struct SessionParams {
  bool header_digest = false;
  bool data_digest = false;
  uint32_t max_connections = 1;
  bool initial_r2t = true;
  bool immediate_data = true;
  uint32_t target_max_recv_data_segment_length = 8192;     // what we accept (parser limit)
  uint32_t initiator_max_recv_data_segment_length = 8192;  // what we may send per PDU
  uint32_t max_burst_length = 262144;
  uint32_t first_burst_length = 65536;
  uint32_t default_time2wait = 2;
  uint32_t default_time2retain = 20;
  uint32_t max_outstanding_r2t = 1;
  bool data_pdu_in_order = true;
  bool data_sequence_in_order = true;
  uint32_t error_recovery_level = 0;
};

struct NegotiationError {
  std::string message;  // login fails with 0x0200 (initiator error)
};

class Negotiator {
 public:
  Negotiator(const TargetOffer& offer, SessionType type);

  // True for keys this class answers (operational keys of §13 and unknown ones).
  // Login-stage keys (InitiatorName, TargetName, SessionType, AuthMethod, CHAP_*) are not.
  static bool is_login_key(std::string_view key);

  // Answers one initiator key into `out` (key=result, NotUnderstood, Irrelevant or Reject),
  // or nothing for declarations that need no answer. Fails on a re-negotiated key (§6.2).
  [[nodiscard]] core::Result<void, NegotiationError> handle(const TextPair& kv, TextPairs& out);

  // Our own declarations (MaxRecvDataSegmentLength), sent once.
  void declare(TextPairs& out);

  // The final values; FirstBurstLength is clipped to MaxBurstLength (§13.14).
  SessionParams result() const;

 private:
  TargetOffer offer_;
  SessionType type_;
  SessionParams params_;
  std::set<std::string, std::less<>> seen_;
  bool declared_ = false;
};

// Value helpers (§5.1): "Yes"/"No", decimal or 0x-hex numbers.
std::optional<bool> parse_bool(std::string_view v);
std::optional<uint64_t> parse_number(std::string_view v);

}  // namespace tandem::target::iscsi
