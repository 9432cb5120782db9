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
  bool replica = true;  // false: the master's own copy
  bool in_sync = false;
  bool node_online = false;
  bool on_lost_node = false;
  uint64_t applied_seq = 0;
  // The copy was in sync when its node rebooted (its boot id changed: power loss, kernel
  // crash) and has not been resynced since. It holds every acknowledged write except those
  // its node had not yet flushed to stable storage, which the reboot may have lost. Such a
  // copy is never in sync (the controller records it out of sync with the reboot).
  bool rebooted = false;
};

// The copy to promote when the master's node is lost: an in-sync replica on an online node
// other than the lost one, not rebooted, with the highest applied sequence (ties: the first
// given). None: no copy can take over without losing acknowledged writes.
std::optional<size_t> pick_new_master(std::span<const PromotionCandidate> copies);

// What the controller does about a volume whose master's copy cannot serve (its node is
// lost, or it rebooted): the full rule, pick_new_master first.
enum class MasterChoiceKind : uint8_t {
  kPromote,  // copies[index] becomes (or, when it is the master's own copy, stays) master
  kWait,     // a copy that holds every acknowledged write may come back: wait for it
  kNone,     // no copy is known to hold the acknowledged writes: the operator must decide
};
struct MasterChoice {
  MasterChoiceKind kind = MasterChoiceKind::kNone;
  size_t index = 0;  // kPromote: the copy; kWait: the intact copy to wait for (see below)
  // kPromote: every candidate had rebooted, so writes acknowledged but not yet flushed
  // (FUA / SYNCHRONIZE CACHE) may be gone, as on a disk with a volatile write cache that
  // lost power (the target advertises WCE = 1). Worth an event.
  bool unflushed_may_be_lost = false;
};

// The rule, in order:
//  1. pick_new_master: an intact (in sync, not rebooted) replica on an online node other than
//     the lost one. Nothing acknowledged is lost.
//  2. Otherwise, when any intact copy exists that cannot serve now (its node offline, or it
//     is the lost master's own copy, e.g. a process kill), wait: it may come back with every
//     acknowledged write, and a rebooted copy chosen now would lose the writes it had not
//     flushed, for good (the intact copy would be resynced from it). `index` names the intact
//     copy with the highest applied sequence (the lost master's own copy only when it is the
//     only one): a caller whose master is online but rebooted may hand mastership to it, so
//     that the volume waits for it instead of serving from the rebooted copy.
//  3. Otherwise, when some copies rebooted (every copy that was in sync lost power, e.g. the
//     whole cluster), the best of them: the master's own copy (it applied every acknowledged
//     write and completed every FLUSH; a replica's recorded sequence is never above its own),
//     else the replica with the highest applied sequence, once every rebooted copy is on an
//     online node again (none can still turn out better). It is promoted (the master's own
//     copy: kept) with unflushed_may_be_lost; until it is online, wait. Out-of-sync copies
//     never count: they may lack acknowledged writes that were flushed.
//  4. Otherwise none.
// `copies` holds every copy of the volume, the master's own among them (replica = false; its
// in_sync says whether it is intact: it holds every acknowledged write unless it rebooted).
MasterChoice choose_master(std::span<const PromotionCandidate> copies);

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
