// The JSON report tandem-bench prints: what ran (options, LUN), what was measured (per
// direction ops, IOPS, MB/s, latency percentiles) and how it ended. Pure; one object per run.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "bench/histogram.h"
#include "bench/options.h"

namespace tandem::bench {

struct DirectionStats {
  uint64_t ops = 0;
  uint64_t bytes = 0;
  LatencyHistogram latency;
};

struct RunStats {
  double seconds = 0.0;  // measured window, warm-up excluded
  DirectionStats read;
  DirectionStats write;
  uint64_t blocks_verified = 0;
  uint64_t blocks_unverified = 0;  // read before this run wrote them: content unknown
  uint64_t prefill_ops = 0;
  double prefill_seconds = 0.0;
};

struct LunInfo {
  std::string portal;
  std::string target;
  int lun = 0;
  uint32_t block_size = 0;
  uint64_t capacity_bytes = 0;
};

struct RunError {
  std::string kind;  // "connect", "io", "verify", "usage", "timeout"
  std::string message;
  std::optional<uint64_t> lba;
};

// Latency summary in microseconds: min, mean, p50, p99, p99.9, max.
nlohmann::json LatencyJson(const LatencyHistogram& h);

nlohmann::json BuildReport(const Options& o, const LunInfo& lun, const RunStats& stats,
                           const std::optional<RunError>& error);

}  // namespace tandem::bench
