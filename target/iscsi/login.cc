#include "target/iscsi/login.h"

#include <algorithm>
#include <cstdio>

#include "target/iscsi/chap.h"

namespace tandem::target::iscsi {
namespace {

constexpr uint8_t kIscsiVersion = 0x00;  // §11.12.4: the only version defined
constexpr uint8_t kChapMd5 = 5;          // CHAP_A=5 (RFC 1994 / §12.1.3)

std::vector<std::string_view> split_list(std::string_view v) {
  std::vector<std::string_view> out;
  while (true) {
    const size_t comma = v.find(',');
    out.push_back(v.substr(0, comma));
    if (comma == std::string_view::npos) break;
    v.remove_prefix(comma + 1);
  }
  return out;
}

bool is_security_key(std::string_view k) { return k == "AuthMethod" || k.starts_with("CHAP_"); }

std::string isid_hex(const Isid& isid) {
  char buf[13];
  std::snprintf(buf, sizeof(buf), "%02x%02x%02x%02x%02x%02x", isid[0], isid[1], isid[2], isid[3],
                isid[4], isid[5]);
  return buf;
}

}  // namespace

std::string LoginResult::session_key() const {
  // The I_T nexus: (InitiatorName, ISID) towards one target (§4.4.1, §6.3.5).
  return initiator_name + ",i,0x" + isid_hex(isid) + "," + (target ? target->name : "");
}

std::string LoginResult::initiator_port() const {
  return initiator_name + ",i,0x" + isid_hex(isid);
}

LoginMachine::LoginMachine(LoginConfig config, const TargetCatalog& catalog, RandomBytes random,
                           TsihAllocator allocate_tsih)
    : config_(std::move(config)),
      catalog_(catalog),
      random_(std::move(random)),
      allocate_tsih_(std::move(allocate_tsih)),
      stat_sn_(config_.initial_stat_sn) {}

const TargetAuth& LoginMachine::auth() const {
  if (result_.type == SessionType::kDiscovery || !result_.target) return config_.discovery_auth;
  return result_.target->auth;
}

bool LoginMachine::auth_required() const { return auth().chap.has_value(); }

LoginResponse LoginMachine::base_response(const LoginRequest& req) {
  LoginResponse r;
  r.csg = req.csg;
  r.version_max = kIscsiVersion;
  r.version_active = kIscsiVersion;
  r.isid = req.isid;
  r.tsih = 0;
  r.itt = req.itt;
  r.stat_sn = stat_sn_++;
  // Login Requests are immediate: they do not advance CmdSN (§11.12.8).
  r.exp_cmd_sn = req.cmd_sn;
  r.max_cmd_sn = req.cmd_sn + std::max<uint32_t>(config_.queue_depth, 1) - 1;
  return r;
}

LoginStep LoginMachine::fail(const LoginRequest& req, LoginStatus status) {
  failed_ = true;
  LoginStep step;
  step.state = LoginStep::State::kFailed;
  step.response = base_response(req);
  step.response.status_class = uint8_t(static_cast<uint16_t>(status) >> 8);
  step.response.status_detail = uint8_t(static_cast<uint16_t>(status) & 0xff);
  return step;
}

std::optional<LoginStatus> LoginMachine::first_request(const LoginRequest& req,
                                                       const TextPairs& keys, TextPairs& out) {
  result_.isid = req.isid;
  result_.cid = req.cid;
  result_.exp_cmd_sn = req.cmd_sn;
  // A non-zero TSIH adds a connection to an existing session; we run one connection per
  // session (MaxConnections=1), so there is nothing to join (§6.3.1).
  if (req.tsih != 0) return LoginStatus::kSessionDoesNotExist;

  const std::string* name = find_value(keys, "InitiatorName");
  if (name == nullptr || name->empty()) return LoginStatus::kMissingParameter;  // §13.5
  result_.initiator_name = *name;
  if (const std::string* alias = find_value(keys, "InitiatorAlias")) {
    result_.initiator_alias = *alias;
  }
  const std::string* type = find_value(keys, "SessionType");
  if (type == nullptr || *type == "Normal") {
    result_.type = SessionType::kNormal;
  } else if (*type == "Discovery") {
    result_.type = SessionType::kDiscovery;
  } else {
    return LoginStatus::kSessionTypeNotSupported;
  }
  if (result_.type == SessionType::kNormal) {
    const std::string* target = find_value(keys, "TargetName");
    if (target == nullptr || target->empty()) return LoginStatus::kMissingParameter;
    result_.target = catalog_.find(*target);
    if (!result_.target) return LoginStatus::kNotFound;
    if (!initiator_allowed(*result_.target, result_.initiator_name)) {
      return LoginStatus::kAuthorizationFailure;
    }
    // TargetPortalGroupTag goes in the first Login Response of a Normal session (§13.9).
    out.push_back(TextPair{"TargetPortalGroupTag", std::to_string(config_.portal_group_tag)});
    if (!result_.target->alias.empty()) {
      out.push_back(TextPair{"TargetAlias", result_.target->alias});
    }
  }
  negotiator_.emplace(config_.offer, result_.type);
  return std::nullopt;
}

std::optional<LoginStatus> LoginMachine::security_keys(const TextPairs& keys, TextPairs& out) {
  const TargetAuth& a = auth();
  if (const std::string* methods = find_value(keys, "AuthMethod")) {
    if (chap_ != Chap::kIdle || auth_done_) return LoginStatus::kInitiatorError;
    // List negotiation: first method in the initiator's order that we accept (§12).
    std::optional<std::string_view> chosen;
    for (std::string_view m : split_list(*methods)) {
      if ((m == "CHAP" && a.chap) || (m == "None" && !a.chap)) {
        chosen = m;
        break;
      }
    }
    if (!chosen) return LoginStatus::kAuthenticationFailure;
    out.push_back(TextPair{"AuthMethod", std::string(*chosen)});
    if (*chosen == "None") {
      auth_done_ = true;
    } else {
      chap_ = Chap::kWaitAlgorithm;
    }
  }
  if (const std::string* algs = find_value(keys, "CHAP_A")) {
    if (chap_ != Chap::kWaitAlgorithm) return LoginStatus::kInitiatorError;
    bool md5 = false;
    for (std::string_view alg : split_list(*algs)) {
      md5 = md5 || parse_number(alg) == std::optional<uint64_t>(kChapMd5);
    }
    if (!md5) return LoginStatus::kAuthenticationFailure;
    uint8_t id = 0;
    random_(std::span<uint8_t>(&id, 1));
    chap_id_ = id;
    chap_challenge_.assign(std::max<size_t>(config_.chap_challenge_length, 1), 0);
    random_(chap_challenge_);
    out.push_back(TextPair{"CHAP_A", "5"});
    out.push_back(TextPair{"CHAP_I", std::to_string(chap_id_)});
    out.push_back(TextPair{"CHAP_C", encode_hex_value(chap_challenge_)});
    chap_ = Chap::kWaitResponse;
  }
  const std::string* user = find_value(keys, "CHAP_N");
  const std::string* resp = find_value(keys, "CHAP_R");
  if (user || resp) {
    if (chap_ != Chap::kWaitResponse || !user || !resp) return LoginStatus::kInitiatorError;
    const auto got = decode_binary_value(*resp);
    const ChapDigest want = chap_md5_response(chap_id_, a.chap->secret, chap_challenge_);
    if (*user != a.chap->user || !got ||
        !std::equal(got->begin(), got->end(), want.begin(), want.end())) {
      return LoginStatus::kAuthenticationFailure;
    }
    // Mutual CHAP: the initiator challenges us in the same PDU (§12.1.3).
    const std::string* mid = find_value(keys, "CHAP_I");
    const std::string* mchal = find_value(keys, "CHAP_C");
    if (mid || mchal) {
      if (!mid || !mchal || !a.mutual_chap) return LoginStatus::kAuthenticationFailure;
      const auto id = parse_number(*mid);
      const auto challenge = decode_binary_value(*mchal);
      // A reflected challenge would let an attacker use us as an oracle (§12.1.3).
      if (!id || *id > 255 || !challenge || *challenge == chap_challenge_) {
        return LoginStatus::kAuthenticationFailure;
      }
      const ChapDigest r = chap_md5_response(uint8_t(*id), a.mutual_chap->secret, *challenge);
      out.push_back(TextPair{"CHAP_N", a.mutual_chap->user});
      out.push_back(TextPair{"CHAP_R", encode_hex_value(r)});
    }
    chap_ = Chap::kDone;
    auth_done_ = true;
  } else if (find_value(keys, "CHAP_I") || find_value(keys, "CHAP_C")) {
    return LoginStatus::kInitiatorError;
  }
  return std::nullopt;
}

LoginStep LoginMachine::on_request(const LoginRequest& req) {
  if (failed_ || complete_) return fail(req, LoginStatus::kInvalidDuringLogin);
  // Version (§11.12.4): we speak version 0 only.
  if (req.version_min > kIscsiVersion) return fail(req, LoginStatus::kUnsupportedVersion);
  if (req.csg == 2 || req.csg == 3 || (req.transit && (req.nsg == 2 || req.nsg <= req.csg)) ||
      (req.transit && req.cont)) {
    return fail(req, LoginStatus::kInitiatorError);
  }
  if (started_) {
    // ISID, TSIH and CID stay fixed for the whole login (§11.12).
    if (req.isid != result_.isid || req.tsih != 0 || req.cid != result_.cid || req.csg != stage_) {
      return fail(req, LoginStatus::kInitiatorError);
    }
  } else if (req.csg != kStageSecurity && req.csg != kStageOperational) {
    return fail(req, LoginStatus::kInitiatorError);
  }

  // Text split across PDUs (C bit, §11.12.2): acknowledge with an empty response.
  if (!pending_text_.append(req.data)) return fail(req, LoginStatus::kOutOfResources);
  if (req.cont) {
    LoginStep step;
    step.response = base_response(req);
    step.response.nsg = 0;
    if (!started_) {
      result_.isid = req.isid;
      result_.cid = req.cid;
      stage_ = req.csg;
      started_ = true;
    }
    return step;
  }
  const std::vector<uint8_t> text = pending_text_.take();
  auto parsed = parse_text(text);
  if (!parsed) return fail(req, LoginStatus::kInitiatorError);
  const TextPairs& keys = *parsed;

  TextPairs out;
  if (!negotiator_) {
    if (auto st = first_request(req, keys, out)) return fail(req, *st);
    started_ = true;
    stage_ = req.csg;
  } else {
    // Login keys are sent once, in the first request (§13.4, §13.5, §13.21).
    for (const char* k : {"InitiatorName", "TargetName", "SessionType"}) {
      if (find_value(keys, k)) return fail(req, LoginStatus::kInitiatorError);
    }
  }

  if (stage_ == kStageSecurity) {
    if (auto st = security_keys(keys, out)) return fail(req, *st);
    if (!auth_required() && chap_ == Chap::kIdle && find_value(keys, "AuthMethod") == nullptr) {
      auth_done_ = true;  // AuthMethod defaults to None (§12)
    }
    // Asking to leave the security stage without ever starting CHAP cannot succeed.
    if (req.transit && !auth_done_ && chap_ == Chap::kIdle) {
      return fail(req, LoginStatus::kAuthenticationFailure);
    }
  } else {
    // Skipping the security stage is allowed only when no authentication is required.
    if (auth_required() && !auth_done_) return fail(req, LoginStatus::kAuthenticationFailure);
    auth_done_ = true;
  }
  for (const TextPair& kv : keys) {
    if (Negotiator::is_login_key(kv.key) || kv.key == "InitiatorAlias") {
      if (is_security_key(kv.key) && stage_ != kStageSecurity) {
        return fail(req, LoginStatus::kInitiatorError);
      }
      continue;
    }
    if (auto r = negotiator_->handle(kv, out); !r) return fail(req, LoginStatus::kInitiatorError);
  }

  LoginStep step;
  step.response = base_response(req);
  const bool transit = req.transit && auth_done_;
  if (stage_ == kStageOperational || (transit && req.nsg == kStageFullFeature)) {
    negotiator_->declare(out);
  }
  if (transit) {
    step.response.transit = true;
    step.response.nsg = req.nsg;
    if (req.nsg == kStageFullFeature) {
      complete_ = true;
      result_.tsih = allocate_tsih_();
      result_.params = negotiator_->result();
      result_.next_stat_sn = stat_sn_;
      result_.max_cmd_sn = step.response.max_cmd_sn;
      result_.exp_stat_sn = req.exp_stat_sn;
      step.response.tsih = result_.tsih;
      step.state = LoginStep::State::kComplete;
    } else {
      stage_ = req.nsg;
    }
  }
  step.response.data = encode_text(out);
  return step;
}

}  // namespace tandem::target::iscsi
