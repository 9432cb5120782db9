#include "mgmt/controller_policy.h"

#include <algorithm>
#include <numeric>

namespace tandem::mgmt {

bool node_expired(int64_t last_heartbeat_ms, int64_t watching_since_ms, int64_t now_ms,
                  int64_t timeout_ms) {
  return now_ms - std::max(last_heartbeat_ms, watching_since_ms) > timeout_ms;
}

int64_t lease_ms(int64_t timeout_ms) { return timeout_ms * 2 / 3; }

int64_t lease_until(int64_t sent_at, int64_t timeout_ms) { return sent_at + lease_ms(timeout_ms); }

bool lease_holds(int64_t until, int64_t now) { return until != 0 && now < until; }

std::optional<size_t> pick_new_master(std::span<const PromotionCandidate> copies) {
  std::optional<size_t> best;
  for (size_t i = 0; i < copies.size(); ++i) {
    const PromotionCandidate& c = copies[i];
    if (!c.replica || !c.in_sync || c.rebooted || !c.node_online || c.on_lost_node) continue;
    if (!best || c.applied_seq > copies[*best].applied_seq) best = i;
  }
  return best;
}

MasterChoice choose_master(std::span<const PromotionCandidate> copies) {
  if (auto p = pick_new_master(copies)) return {MasterChoiceKind::kPromote, *p, false};
  // 2. An intact copy that cannot serve yet. Another replica is preferred to the lost
  // master's own copy as the one to wait for: a caller hands mastership to it.
  std::optional<size_t> intact;
  auto rank = [&](size_t i) {
    return std::pair<bool, uint64_t>(copies[i].replica, copies[i].applied_seq);
  };
  for (size_t i = 0; i < copies.size(); ++i) {
    const PromotionCandidate& c = copies[i];
    if (!c.in_sync || c.rebooted) continue;
    if (!intact || rank(i) > rank(*intact)) intact = i;
  }
  if (intact) return {MasterChoiceKind::kWait, *intact, false};
  // 3. Every copy that was in sync rebooted. The master's own copy applied every acknowledged
  // write and completed every FLUSH, and a replica's recorded sequence is never above it, so
  // it is preferred; among replicas, the highest applied sequence.
  std::optional<size_t> best;
  bool all_back = true;
  for (size_t i = 0; i < copies.size(); ++i) {
    const PromotionCandidate& c = copies[i];
    if (!c.rebooted) continue;
    all_back = all_back && c.node_online;
    auto key = [&](size_t k) {
      return std::pair<bool, uint64_t>(!copies[k].replica, copies[k].applied_seq);
    };
    if (!best || key(i) > key(*best)) best = i;
  }
  if (!best) return {MasterChoiceKind::kNone, 0, false};
  const PromotionCandidate& b = copies[*best];
  if (!b.node_online || (b.replica && !all_back)) return {MasterChoiceKind::kWait, *best, false};
  return {MasterChoiceKind::kPromote, *best, true};
}

uint64_t first_sequence(uint64_t generation) { return generation > 1 ? generation << 40 : 0; }

uint64_t left_to_copy(const DropCandidate& c, uint64_t volume_bytes) {
  if (c.state == CopySyncState::kInSync) return 0;
  if (c.state == CopySyncState::kSyncing && c.sync_total_bytes >= c.sync_done_bytes &&
      c.sync_total_bytes > 0) {
    return c.sync_total_bytes - c.sync_done_bytes + c.behind_bytes;
  }
  return volume_bytes + c.behind_bytes + 1;
}

std::vector<size_t> replicas_to_drop(std::span<const DropCandidate> live, int want,
                                     uint64_t volume_bytes) {
  if (want < 0) want = 0;
  if (live.size() <= static_cast<size_t>(want)) return {};
  int in_sync = 0;
  bool unknown = false;
  for (const auto& c : live) {
    in_sync += c.state == CopySyncState::kInSync;
    unknown |= c.state == CopySyncState::kOther;
  }
  if (in_sync < want && unknown) return {};
  std::vector<size_t> order(live.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    uint64_t la = left_to_copy(live[a], volume_bytes), lb = left_to_copy(live[b], volume_bytes);
    return la != lb ? la < lb : live[a].number < live[b].number;
  });
  return std::vector<size_t>(order.begin() + want, order.end());
}

}  // namespace tandem::mgmt
