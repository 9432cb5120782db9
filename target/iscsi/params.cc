#include "target/iscsi/params.h"

#include <algorithm>
#include <charconv>

namespace tandem::target::iscsi {
namespace {

const char* yes_no(bool v) { return v ? "Yes" : "No"; }

struct NumRange {
  uint64_t lo;
  uint64_t hi;
};

// Keys that are Irrelevant in a Discovery session (§13: "Irrelevant when
// SessionType=Discovery").
bool discovery_irrelevant(std::string_view k) {
  return k == "MaxConnections" || k == "InitialR2T" || k == "ImmediateData" ||
         k == "MaxBurstLength" || k == "FirstBurstLength" || k == "MaxOutstandingR2T" ||
         k == "DataPDUInOrder" || k == "DataSequenceInOrder";
}

}  // namespace

std::optional<bool> parse_bool(std::string_view v) {
  if (v == "Yes") return true;
  if (v == "No") return false;
  return std::nullopt;
}

std::optional<uint64_t> parse_number(std::string_view v) {
  int base = 10;
  if (v.size() > 2 && v[0] == '0' && (v[1] == 'x' || v[1] == 'X')) {
    v.remove_prefix(2);
    base = 16;
  }
  if (v.empty() || v.size() > 16) return std::nullopt;
  uint64_t n = 0;
  auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), n, base);
  if (ec != std::errc() || p != v.data() + v.size()) return std::nullopt;
  return n;
}

Negotiator::Negotiator(const TargetOffer& offer, SessionType type) : offer_(offer), type_(type) {
  params_.target_max_recv_data_segment_length = offer.max_recv_data_segment_length;
}

bool Negotiator::is_login_key(std::string_view key) {
  return key == "InitiatorName" || key == "InitiatorAlias" || key == "TargetName" ||
         key == "SessionType" || key == "AuthMethod" || key.starts_with("CHAP_");
}

core::Result<void, NegotiationError> Negotiator::handle(const TextPair& kv, TextPairs& out) {
  const std::string& k = kv.key;
  const std::string& v = kv.value;
  if (!seen_.insert(k).second) {
    return core::fail(NegotiationError{"key negotiated twice: " + k});
  }
  auto answer = [&](std::string value) { out.push_back(TextPair{k, std::move(value)}); };
  auto reject = [&] { answer("Reject"); };

  if (type_ == SessionType::kDiscovery && discovery_irrelevant(k)) {
    answer("Irrelevant");
    return {};
  }
  if (k == "HeaderDigest" || k == "DataDigest") {
    // List negotiation: the first value in the offerer's list we support (§5.2.1, §13.1).
    const bool allow_crc =
        k == "HeaderDigest" ? offer_.allow_header_digest : offer_.allow_data_digest;
    std::string_view rest = v;
    std::optional<bool> chosen;
    bool syntax_ok = !rest.empty();
    while (syntax_ok && !rest.empty() && !chosen) {
      const size_t comma = rest.find(',');
      std::string_view item = rest.substr(0, comma);
      rest = comma == std::string_view::npos ? std::string_view() : rest.substr(comma + 1);
      if (item == "None") {
        chosen = false;
      } else if (item == "CRC32C") {
        if (allow_crc) chosen = true;
      } else if (item.empty()) {
        syntax_ok = false;
      }
    }
    if (!chosen) {
      reject();
      return {};
    }
    (k == "HeaderDigest" ? params_.header_digest : params_.data_digest) = *chosen;
    answer(*chosen ? "CRC32C" : "None");
    return {};
  }

  // Boolean keys: OR / AND result functions (§13.10, §13.11, §13.18, §13.19).
  if (k == "InitialR2T" || k == "ImmediateData" || k == "DataPDUInOrder" ||
      k == "DataSequenceInOrder" || k == "IFMarker" || k == "OFMarker") {
    const auto b = parse_bool(v);
    if (!b) {
      reject();
      return {};
    }
    bool r = false;
    if (k == "InitialR2T") {
      r = params_.initial_r2t = *b || offer_.initial_r2t;
    } else if (k == "ImmediateData") {
      r = params_.immediate_data = *b && offer_.immediate_data;
    } else if (k == "DataPDUInOrder") {
      r = params_.data_pdu_in_order = *b || true;  // we only accept in-order data
    } else if (k == "DataSequenceInOrder") {
      r = params_.data_sequence_in_order = *b || true;
    } else {
      r = false;  // markers (RFC 3720 §A.3): we never use them; AND with No
    }
    answer(yes_no(r));
    return {};
  }
  if (k == "OFMarkInt" || k == "IFMarkInt") {
    answer("Irrelevant");  // markers are off (RFC 7143 §13.25 obsoletes them)
    return {};
  }

  // Numeric keys.
  struct NumKey {
    const char* name;
    NumRange range;
  };
  static constexpr NumKey kNum[] = {
      {"MaxRecvDataSegmentLength", {512, 16777215}},
      {"MaxBurstLength", {512, 16777215}},
      {"FirstBurstLength", {512, 16777215}},
      {"MaxConnections", {1, 65535}},
      {"DefaultTime2Wait", {0, 3600}},
      {"DefaultTime2Retain", {0, 3600}},
      {"MaxOutstandingR2T", {1, 65535}},
      {"ErrorRecoveryLevel", {0, 2}},
  };
  for (const auto& nk : kNum) {
    if (k != nk.name) continue;
    const auto n = parse_number(v);
    if (!n || *n < nk.range.lo || *n > nk.range.hi) {
      reject();
      return {};
    }
    const uint32_t x = static_cast<uint32_t>(*n);
    if (k == "MaxRecvDataSegmentLength") {
      params_.initiator_max_recv_data_segment_length = x;  // declarative (§13.12)
      return {};
    }
    uint32_t r = 0;
    if (k == "MaxBurstLength") r = params_.max_burst_length = std::min(x, offer_.max_burst_length);
    if (k == "FirstBurstLength") {
      r = params_.first_burst_length = std::min(x, offer_.first_burst_length);
    }
    if (k == "MaxConnections") r = params_.max_connections = std::min(x, offer_.max_connections);
    if (k == "DefaultTime2Wait") {
      r = params_.default_time2wait = std::max(x, offer_.default_time2wait);
    }
    if (k == "DefaultTime2Retain") {
      r = params_.default_time2retain = std::min(x, offer_.default_time2retain);
    }
    if (k == "MaxOutstandingR2T") {
      r = params_.max_outstanding_r2t = std::min(x, offer_.max_outstanding_r2t);
    }
    if (k == "ErrorRecoveryLevel") {
      r = params_.error_recovery_level = std::min(x, offer_.error_recovery_level);
    }
    answer(std::to_string(r));
    return {};
  }

  // Keys only a target may send (§13.6, §13.8, §13.9).
  if (k == "TargetAlias" || k == "TargetAddress" || k == "TargetPortalGroupTag") {
    reject();
    return {};
  }
  if (k == "SendTargets") {
    answer("Irrelevant");  // only valid in a Text Request (§13.3)
    return {};
  }
  answer("NotUnderstood");  // unknown and X- keys (§6.2)
  return {};
}

void Negotiator::declare(TextPairs& out) {
  if (declared_) return;
  declared_ = true;
  out.push_back(
      TextPair{"MaxRecvDataSegmentLength", std::to_string(offer_.max_recv_data_segment_length)});
}

SessionParams Negotiator::result() const {
  SessionParams p = params_;
  p.first_burst_length = std::min(p.first_burst_length, p.max_burst_length);
  return p;
}

}  // namespace tandem::target::iscsi
