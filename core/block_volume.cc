#include "core/block_volume.h"

namespace tandem::core {

thread_local int InlineCompletionScope::depth_ = 0;

const char* to_string(VolumeState s) {
  switch (s) {
    case VolumeState::kHealthy: return "healthy";
    case VolumeState::kDegraded: return "degraded";
    case VolumeState::kReadOnly: return "read-only";
    case VolumeState::kHalted: return "halted";
    case VolumeState::kOffline: return "offline";
  }
  return "unknown";
}

}  // namespace tandem::core
