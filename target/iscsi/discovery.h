// SendTargets (RFC 7143 §13.3, Appendix C): builds the Text Response payload listing
// targets and their addresses, filtered by the initiator's ACL. Pure function over a list
// the caller supplies.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>
#include <vector>

#include "target/iscsi/params.h"
#include "target/iscsi/target_catalog.h"

namespace tandem::target::iscsi {

// `value` is the SendTargets value: "All" (Discovery sessions only), a target name, or
// empty (the session's own target in a Normal session). Each target yields
// TargetName=<iqn> followed by one TargetAddress=<ip:port,tpgt> per address.
std::vector<uint8_t> build_send_targets(std::string_view value, SessionType type,
                                        std::string_view initiator,
                                        std::optional<std::string_view> session_target,
                                        const std::vector<TargetEntry>& targets);

}  // namespace tandem::target::iscsi
