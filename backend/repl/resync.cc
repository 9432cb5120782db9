#include "backend/repl/resync.h"

#include <algorithm>

namespace tandem::backend::repl {

RegionResult<std::vector<PlannedRegion>> plan_resync(const RegionMap& master,
                                                     std::span<const wire::RegionEntry> summary) {
  std::vector<RegionSeq> entries;
  entries.reserve(summary.size());
  for (const wire::RegionEntry& e : summary) entries.push_back({e.region, e.seq});
  auto remote = RegionMap::from_summary(master.geometry(), entries);
  if (!remote) return core::fail(remote.error());
  auto regions = master.diff(*remote);
  if (!regions) return core::fail(regions.error());
  std::vector<PlannedRegion> out;
  out.reserve(regions->size());
  const uint64_t block = master.geometry().block_size;
  for (uint64_t r : *regions) {
    out.push_back({r, master.blocks_in(r) * block, remote->seq_of(r) == 0});
  }
  return out;
}

ResyncSession::ResyncSession(std::vector<PlannedRegion> regions, uint32_t window)
    : regions_(std::move(regions)), window_(std::max<uint32_t>(window, 1)) {
  for (const PlannedRegion& p : regions_) total_bytes_ += p.bytes;
}

std::optional<PlannedRegion> ResyncSession::next() {
  if (next_ >= regions_.size() || in_flight_.size() >= window_) return std::nullopt;
  const PlannedRegion& p = regions_[next_++];
  in_flight_[p.region] = InFlight{p.bytes, false};
  return p;
}

void ResyncSession::diffed(uint64_t region, uint64_t send_bytes) {
  auto it = in_flight_.find(region);
  if (it == in_flight_.end() || it->second.diffed) return;
  total_bytes_ = total_bytes_ - it->second.bytes + send_bytes;
  it->second = InFlight{send_bytes, true};
}

bool ResyncSession::ack(uint64_t region) {
  auto it = in_flight_.find(region);
  if (it == in_flight_.end()) return false;
  done_bytes_ += it->second.bytes;
  in_flight_.erase(it);
  ++acked_;
  if (!last_acked_ || region > *last_acked_) last_acked_ = region;
  return true;
}

}  // namespace tandem::backend::repl
