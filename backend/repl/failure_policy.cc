#include "backend/repl/failure_policy.h"

#include <algorithm>

namespace tandem::backend::repl {

const char* to_string(VolumeHealth h) {
  switch (h) {
    case VolumeHealth::kHealthy:
      return "healthy";
    case VolumeHealth::kDegraded:
      return "degraded";
    case VolumeHealth::kReadOnly:
      return "read-only";
    case VolumeHealth::kHalted:
      return "halted";
  }
  return "unknown";
}

core::VolumeState to_volume_state(VolumeHealth h) {
  switch (h) {
    case VolumeHealth::kHealthy:
      return core::VolumeState::kHealthy;
    case VolumeHealth::kDegraded:
      return core::VolumeState::kDegraded;
    case VolumeHealth::kReadOnly:
      return core::VolumeState::kReadOnly;
    case VolumeHealth::kHalted:
      return core::VolumeState::kHalted;
  }
  return core::VolumeState::kOffline;
}

int required_in_sync(core::FailureMode mode, int replicas, int threshold) {
  const int n = std::max(0, replicas);
  if (n == 0) return 0;
  switch (mode) {
    case core::FailureMode::kHard:
      return n;
    case core::FailureMode::kSoft:
      return std::max(1, n - 1);
    case core::FailureMode::kThreshold:
      return std::clamp(threshold, 0, n);
    case core::FailureMode::kAlwaysOn:
      return 0;
  }
  return n;
}

PolicyDecision evaluate(const PolicyInput& in) {
  const int n = std::max(0, in.replicas);
  const int in_sync = std::clamp(in.in_sync, 0, n);
  const int required = required_in_sync(in.mode, n, in.threshold);
  const bool all = in_sync >= n;
  const bool below = in_sync < required;
  const bool grace_over = in.below_for >= in.grace;

  PolicyDecision d;
  d.below_requirement = below;
  if (below && !grace_over) d.remaining_grace = in.grace - in.below_for;
  if (in.mode == core::FailureMode::kHard) {
    bool latch = in.sticky_read_only;
    if (latch && all && in.relogged_in) latch = false;  // both stages of the seed's recovery
    if (below && grace_over) latch = true;
    d.sticky_read_only = latch;
    if (latch) {
      d.health = VolumeHealth::kReadOnly;
    } else {
      d.health = all ? VolumeHealth::kHealthy : VolumeHealth::kDegraded;
    }
    return d;
  }
  if (below && grace_over) {
    d.health = VolumeHealth::kHalted;  // soft and threshold; alwayson is never below
  } else {
    d.health = all ? VolumeHealth::kHealthy : VolumeHealth::kDegraded;
  }
  return d;
}

}  // namespace tandem::backend::repl
