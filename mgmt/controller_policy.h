// The controller's failover decisions as pure functions over plain values (no catalogue, no
// clock, no threads): when a node counts as gone, how long a master's lease lasts, which copy
// is promoted, which replicas go when too many can serve, where a new master numbers its
// writes. ClusterService and NodeAgent apply them to the catalogue and the heartbeat loop;
// the seeded simulation (tests/sim/sim_cluster.cc) drives the very same functions, so the
// rules it proves are the ones the daemon runs. Stateless and thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <vector>

namespace tandem::mgmt {

// ---- Liveness and the master lease ----

// A node is gone once it has not been heard from for longer than `timeout_ms`, counting from
// its last heartbeat or from when this controller started watching (its start), whichever is
// later: after a controller restart every node first gets a full timeout to heartbeat again,
// so nobody is declared dead (and promoted away from) for the controller's own absence.
bool node_expired(int64_t last_heartbeat_ms, int64_t watching_since_ms, int64_t now_ms,
                  int64_t timeout_ms);

// How long a node may act as master after sending a heartbeat the controller answered:
// 2/3 of the node timeout. The controller waits the full timeout after the last heartbeat it
// received (sent no earlier than that), so the lease lapses at least timeout/3 before any
// promotion, which covers the fencing poll and clock-rate differences.
int64_t lease_ms(int64_t timeout_ms);
// The lease end for a heartbeat sent at `sent_at` and answered (any clock, same unit).
int64_t lease_until(int64_t sent_at, int64_t timeout_ms);
// Whether the lease holds at `now`. `until` == 0 means no heartbeat was ever answered: no
// lease, so a restarted node does not serve as master before the controller has heard it.
bool lease_holds(int64_t until, int64_t now);

// ---- Promotion ----

struct PromotionCandidate {
  uint32_t number = 0;  // the copy number
  bool replica = true;  // false: the master's own copy (never a candidate)
  bool in_sync = false;
  bool node_online = false;
  bool on_lost_node = false;
  uint64_t applied_seq = 0;
};

// The copy to promote when the master's node is lost: an in-sync replica on an online node
// other than the lost one, with the highest applied sequence (ties: the first given). None:
// no copy can take over without losing acknowledged writes.
std::optional<size_t> pick_new_master(std::span<const PromotionCandidate> copies);

// Generation g's master numbers its writes above g << 40, so no two masters of a volume ever
// use the same sequence (equal sequences mean equal data, region_map.h). Generation 1 starts
// at 0.
uint64_t first_sequence(uint64_t generation);

// ---- Smallest difference ----

enum class CopySyncState : uint8_t { kInSync, kSyncing, kOther };

struct DropCandidate {
  uint32_t number = 0;
  CopySyncState state = CopySyncState::kOther;
  uint64_t sync_total_bytes = 0;
  uint64_t sync_done_bytes = 0;
  uint64_t behind_bytes = 0;
};

// What is left to copy to a replica: nothing in sync, the resync's remainder while syncing,
// more than the whole volume when unknown (out of sync, offline, or not measured yet).
uint64_t left_to_copy(const DropCandidate& c, uint64_t volume_bytes);

// Replicas on online nodes beyond the `want` declared: which to drop (indexes into `live`),
// keeping the ones with the least left to copy (ties: lower number kept). In-sync copies always
// beat the others. When fewer than `want` are in sync and some copy's remainder is not known
// yet, nothing is dropped until the resyncs have measured it (the master reports it).
std::vector<size_t> replicas_to_drop(std::span<const DropCandidate> live, int want,
                                     uint64_t volume_bytes);

}  // namespace tandem::mgmt
