// TargetCatalog: the seam through which login and discovery learn which targets exist, who
// may log in to them and with which CHAP secrets. Implemented by the daemon over its
// catalogue and by tests in memory; called on the connection's strand, must not block.
#pragma once

#include <algorithm>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace tandem::target::iscsi {

struct ChapCredentials {
  std::string user;
  std::string secret;
};

struct TargetAuth {
  // Initiator must authenticate with these when set (RFC 7143 §12.1.3).
  std::optional<ChapCredentials> chap;
  // Credentials the target answers with when the initiator asks for mutual CHAP.
  std::optional<ChapCredentials> mutual_chap;
};

struct TargetEntry {
  std::string name;                             // iqn.... (§4.2.7)
  std::string alias;                            // TargetAlias, may be empty
  std::vector<std::string> allowed_initiators;  // empty = every initiator
  TargetAuth auth;
  std::vector<std::string> addresses;  // SendTargets TargetAddress values, "ip:port,tpgt"
};

inline bool initiator_allowed(const TargetEntry& t, std::string_view initiator) {
  return t.allowed_initiators.empty() ||
         std::find(t.allowed_initiators.begin(), t.allowed_initiators.end(), initiator) !=
             t.allowed_initiators.end();
}

class TargetCatalog {
 public:
  virtual ~TargetCatalog() = default;
  virtual std::optional<TargetEntry> find(std::string_view name) const = 0;
  virtual std::vector<TargetEntry> list() const = 0;
};

}  // namespace tandem::target::iscsi
