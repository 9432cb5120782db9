#include "target/iscsi/discovery.h"

#include "target/iscsi/text.h"

namespace tandem::target::iscsi {

std::vector<uint8_t> build_send_targets(std::string_view value, SessionType type,
                                        std::string_view initiator,
                                        std::optional<std::string_view> session_target,
                                        const std::vector<TargetEntry>& targets) {
  std::vector<uint8_t> out;
  auto emit = [&](const TargetEntry& t) {
    if (!initiator_allowed(t, initiator)) return;  // never reveal targets the ACL hides
    append_pair(out, "TargetName", t.name);
    for (const auto& a : t.addresses) append_pair(out, "TargetAddress", a);
  };
  // "All" is for Discovery sessions; in a Normal session the initiator may only ask about
  // the target it is logged in to (§13.3).
  if (value == "All" && type == SessionType::kDiscovery) {
    for (const auto& t : targets) emit(t);
    return out;
  }
  std::string_view want = value;
  if (type == SessionType::kNormal) {
    if (!session_target) return out;
    if (!value.empty() && value != "All" && value != *session_target) return out;
    want = *session_target;
  } else if (value.empty()) {
    return out;
  }
  for (const auto& t : targets) {
    if (t.name == want) emit(t);
  }
  return out;
}

}  // namespace tandem::target::iscsi
