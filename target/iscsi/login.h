// LoginMachine: the login phase of one connection (RFC 7143 §6.3, §11.12-13, §12, §13):
// stage transitions, session type, target lookup and ACL, AuthMethod/CHAP (one-way and
// mutual) and operational negotiation. Fed decoded Login Requests, returns Login Responses;
// no I/O. Owned by the connection's strand; the catalog and callbacks must outlive it.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "target/iscsi/params.h"
#include "target/iscsi/pdu.h"
#include "target/iscsi/target_catalog.h"
#include "target/iscsi/text.h"

namespace tandem::target::iscsi {

// Status-Class << 8 | Status-Detail (§11.13.5).
enum class LoginStatus : uint16_t {
  kSuccess = 0x0000,
  kTargetMovedTemporarily = 0x0101,
  kTargetMovedPermanently = 0x0102,
  kInitiatorError = 0x0200,
  kAuthenticationFailure = 0x0201,
  kAuthorizationFailure = 0x0202,
  kNotFound = 0x0203,
  kTargetRemoved = 0x0204,
  kUnsupportedVersion = 0x0205,
  kTooManyConnections = 0x0206,
  kMissingParameter = 0x0207,
  kCantIncludeInSession = 0x0208,
  kSessionTypeNotSupported = 0x0209,
  kSessionDoesNotExist = 0x020a,
  kInvalidDuringLogin = 0x020b,
  kTargetError = 0x0300,
  kServiceUnavailable = 0x0301,
  kOutOfResources = 0x0302,
};

inline constexpr uint8_t kStageSecurity = 0;
inline constexpr uint8_t kStageOperational = 1;
inline constexpr uint8_t kStageFullFeature = 3;

struct LoginConfig {
  TargetOffer offer;
  TargetAuth discovery_auth;          // CHAP for Discovery sessions; none by default
  uint16_t portal_group_tag = 1;      // TargetPortalGroupTag (§13.9)
  uint32_t queue_depth = 128;         // CmdSN window advertised through MaxCmdSN
  uint32_t initial_stat_sn = 1;       // StatSN of the first Login Response
  size_t chap_challenge_length = 16;  // bytes of CHAP_C
};

// Fills the span with unpredictable bytes (CHAP identifier and challenge).
using RandomBytes = std::function<void(std::span<uint8_t>)>;
// A fresh non-zero TSIH for a new session (§11.12.6).
using TsihAllocator = std::function<uint16_t()>;

struct LoginResult {
  SessionType type = SessionType::kNormal;
  std::string initiator_name;
  std::string initiator_alias;
  std::optional<TargetEntry> target;  // set for Normal sessions
  Isid isid{};
  uint16_t tsih = 0;
  uint16_t cid = 0;
  SessionParams params;
  uint32_t exp_cmd_sn = 0;    // the CmdSN the first full-feature command will carry
  uint32_t max_cmd_sn = 0;    // MaxCmdSN announced in the final Login Response
  uint32_t next_stat_sn = 0;  // StatSN for the first full-feature response
  uint32_t exp_stat_sn = 0;

  // Session identity for reinstatement (§6.3.5): initiator name + ISID. A new login with
  // the same key and TSIH 0 replaces the old session; the shell closes the old one.
  std::string session_key() const;
  // SCSI initiator port name "<iqn>,i,0x<isid>" (RFC 7143 §10.1.1, SPC-4 TransportID).
  std::string initiator_port() const;
};

struct LoginStep {
  enum class State { kContinue, kComplete, kFailed };
  State state = State::kContinue;
  LoginResponse response;
};

class LoginMachine {
 public:
  LoginMachine(LoginConfig config, const TargetCatalog& catalog, RandomBytes random,
               TsihAllocator allocate_tsih);

  // Handles one Login Request. On kComplete send the response, then switch the parser to
  // result().params (digests, our MaxRecvDataSegmentLength) and build a Session. On kFailed
  // send the response and close the connection (§6.3: a login reject ends it).
  LoginStep on_request(const LoginRequest& req);

  const LoginResult& result() const { return result_; }
  bool done() const { return complete_; }

 private:
  enum class Chap { kIdle, kWaitAlgorithm, kWaitResponse, kDone };

  LoginStep fail(const LoginRequest& req, LoginStatus status);
  std::optional<LoginStatus> first_request(const LoginRequest& req, const TextPairs& keys,
                                           TextPairs& out);
  std::optional<LoginStatus> security_keys(const TextPairs& keys, TextPairs& out);
  const TargetAuth& auth() const;
  bool auth_required() const;
  LoginResponse base_response(const LoginRequest& req);

  LoginConfig config_;
  const TargetCatalog& catalog_;
  RandomBytes random_;
  TsihAllocator allocate_tsih_;

  bool started_ = false;
  bool complete_ = false;
  bool failed_ = false;
  uint8_t stage_ = kStageSecurity;
  uint32_t stat_sn_;
  bool auth_done_ = false;
  bool tpgt_declared_ = false;
  Chap chap_ = Chap::kIdle;
  uint8_t chap_id_ = 0;
  std::vector<uint8_t> chap_challenge_;
  TextAccumulator pending_text_;
  std::optional<Negotiator> negotiator_;
  LoginResult result_;
};

}  // namespace tandem::target::iscsi
