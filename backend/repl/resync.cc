#include "backend/repl/resync.h"

#include <algorithm>

namespace tandem::backend::repl {

RegionResult<std::vector<uint64_t>> plan_resync(const RegionMap& master,
                                                std::span<const wire::RegionEntry> summary) {
  std::vector<RegionSeq> entries;
  entries.reserve(summary.size());
  for (const wire::RegionEntry& e : summary) entries.push_back({e.region, e.seq});
  auto remote = RegionMap::from_summary(master.geometry(), entries);
  if (!remote) return core::fail(remote.error());
  return master.diff(*remote);
}

ResyncSession::ResyncSession(std::vector<uint64_t> regions, uint32_t window)
    : regions_(std::move(regions)), window_(std::max<uint32_t>(window, 1)) {}

std::optional<uint64_t> ResyncSession::next() {
  if (next_ >= regions_.size() || in_flight_.size() >= window_) return std::nullopt;
  const uint64_t r = regions_[next_++];
  in_flight_.insert(r);
  return r;
}

bool ResyncSession::ack(uint64_t region) {
  if (in_flight_.erase(region) == 0) return false;
  ++acked_;
  if (!last_acked_ || region > *last_acked_) last_acked_ = region;
  return true;
}

}  // namespace tandem::backend::repl
