#include "target/scsi/pr_store.h"

#include <charconv>
#include <sstream>

namespace tandem::target::scsi {
namespace {

constexpr std::string_view kHeader = "tandem-pr 1";

// Splits a line into whitespace separated tokens; the last token keeps the rest of the
// line so initiator port names survive intact.
std::vector<std::string_view> tokens(std::string_view line, size_t max_tokens) {
  std::vector<std::string_view> out;
  size_t i = 0;
  while (i < line.size() && out.size() + 1 < max_tokens) {
    size_t j = line.find(' ', i);
    if (j == std::string_view::npos) break;
    out.push_back(line.substr(i, j - i));
    i = j + 1;
  }
  out.push_back(line.substr(i));
  return out;
}

template <class T>
bool parse_num(std::string_view s, T& v) {
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  return ec == std::errc() && p == s.data() + s.size();
}

}  // namespace

std::string serialize_pr_state(const PrState& s) {
  std::ostringstream o;
  o << kHeader << "\n";
  o << "gen " << s.generation << "\n";
  o << "aptpl " << (s.aptpl ? 1 : 0) << "\n";
  if (s.reserved) {
    o << "res " << static_cast<int>(s.type) << " " << s.holder_rtp << " " << s.holder_port << "\n";
  }
  for (const auto& r : s.registrations) {
    o << "reg " << r.key << " " << r.relative_target_port << " " << (r.all_target_ports ? 1 : 0)
      << " " << r.initiator_port << "\n";
  }
  return o.str();
}

std::optional<PrState> parse_pr_state(std::string_view bytes) {
  PrState s;
  size_t pos = 0;
  bool first = true;
  while (pos < bytes.size()) {
    size_t nl = bytes.find('\n', pos);
    if (nl == std::string_view::npos) return std::nullopt;
    std::string_view line = bytes.substr(pos, nl - pos);
    pos = nl + 1;
    if (first) {
      if (line != kHeader) return std::nullopt;
      first = false;
      continue;
    }
    auto t = tokens(line, 5);
    if (t[0] == "gen" && t.size() == 2) {
      if (!parse_num(t[1], s.generation)) return std::nullopt;
    } else if (t[0] == "aptpl" && t.size() == 2) {
      s.aptpl = t[1] == "1";
    } else if (t[0] == "res") {
      auto r = tokens(line, 4);
      unsigned type = 0;
      if (r.size() != 4 || !parse_num(r[1], type) || !parse_num(r[2], s.holder_rtp))
        return std::nullopt;
      s.reserved = true;
      s.type = static_cast<uint8_t>(type);
      s.holder_port = std::string(r[3]);
    } else if (t[0] == "reg" && t.size() == 5) {
      PrRegistration r;
      if (!parse_num(t[1], r.key) || !parse_num(t[2], r.relative_target_port)) return std::nullopt;
      r.all_target_ports = t[3] == "1";
      r.initiator_port = std::string(t[4]);
      s.registrations.push_back(std::move(r));
    } else {
      return std::nullopt;
    }
  }
  if (first) return std::nullopt;
  return s;
}

std::optional<PrState> MemoryPrStore::load() {
  std::lock_guard lock(mu_);
  if (!bytes_) return std::nullopt;
  return parse_pr_state(*bytes_);
}

void MemoryPrStore::save(const PrState& state) {
  std::lock_guard lock(mu_);
  bytes_ = serialize_pr_state(state);
  ++saves_;
}

int MemoryPrStore::save_count() const {
  std::lock_guard lock(mu_);
  return saves_;
}

std::optional<std::string> MemoryPrStore::bytes() const {
  std::lock_guard lock(mu_);
  return bytes_;
}

}  // namespace tandem::target::scsi
