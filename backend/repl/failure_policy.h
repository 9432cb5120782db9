// Failure-mode policy (DESIGN.md "Failure modes", seed "Failure Modes"): one pure function
// from what the replication engine observes to what the volume may serve. No state, no
// clock (the caller measures time below the requirement); safe from any thread.
#pragma once

#include <chrono>

#include "core/block_volume.h"
#include "core/volume_spec.h"

namespace tandem::backend::repl {

enum class VolumeHealth {
  kHealthy,   // every declared replica is in sync
  kDegraded,  // serving reads and writes with fewer in-sync replicas than declared
  kReadOnly,  // hard mode after the grace period: writes refused (DATA PROTECT)
  kHalted,    // soft/threshold after the grace period: writes refused (NOT READY)
};

const char* to_string(VolumeHealth h);
core::VolumeState to_volume_state(VolumeHealth h);

inline constexpr std::chrono::milliseconds kDefaultGrace{90'000};

struct PolicyInput {
  core::FailureMode mode = core::FailureMode::kHard;
  int replicas = 0;   // declared N (0-5); negative is treated as 0
  int threshold = 0;  // T, used by kThreshold only; clamped to [0, N]
  int in_sync = 0;    // replicas currently in sync; clamped to [0, N]
  // How long the in-sync count has been continuously below the mode's requirement. The
  // caller starts this clock when `below_requirement` first turns true and resets it to 0
  // when it turns false again.
  std::chrono::milliseconds below_for{0};
  std::chrono::milliseconds grace = kDefaultGrace;
  // Hard mode only: the volume went read-only earlier (the latch the previous decision
  // returned), and whether the initiator has logged in again since it went read-only.
  bool sticky_read_only = false;
  bool relogged_in = false;
};

struct PolicyDecision {
  VolumeHealth health = VolumeHealth::kHealthy;
  // The in-sync count is below what the mode needs to keep serving writes: the grace clock
  // must run (and the controller should be placing a new replica).
  bool below_requirement = false;
  // New value of the hard-mode read-only latch: store it and pass it back next time.
  bool sticky_read_only = false;
  // While below the requirement and still inside the grace period: how long until the
  // volume stops (arm a timer and evaluate again then). Zero otherwise.
  std::chrono::milliseconds remaining_grace{0};
};

// The policy. Rules (R = replicas required to keep serving writes):
//  - N = 0: never degraded (healthy), whatever the mode.
//  - hard: R = N. Fewer than N in sync is degraded; after `grace` below N the volume goes
//    read-only and latches. The latch releases only when all N are in sync AND the volume
//    has been logged in again (the seed's "remount"); until then it stays read-only.
//  - soft: R = max(1, N-1). N-1 <= in_sync < N is degraded indefinitely; below R it is
//    degraded for `grace`, then halted; it resumes by itself once R are back.
//  - threshold: R = min(T, N). R <= in_sync < N is degraded; below R degraded for `grace`,
//    then halted; resumes by itself. T = 0 never halts.
//  - alwayson: R = 0; degraded whenever fewer than N are in sync, never stops.
// "After grace" means below_for >= grace (a 90 s grace fires at exactly 90 s).
// The latch is honoured in hard mode only: switching a read-only volume to another mode at
// run time (the seed allows mode changes) releases it, as the operator asked for that mode.
PolicyDecision evaluate(const PolicyInput& in);

// R above, for display and for the controller's placement urgency. Pure.
int required_in_sync(core::FailureMode mode, int replicas, int threshold);

}  // namespace tandem::backend::repl
