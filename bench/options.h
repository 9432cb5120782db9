// tandem-bench's command line: the Options value and its parser (CLI11). Pure: parsing
// never touches the network; checks that need the LUN (block size, capacity) happen later.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "bench/pattern.h"
#include "bench/workload.h"

namespace tandem::bench {

inline constexpr int kExitOk = 0;
inline constexpr int kExitIoError = 1;
inline constexpr int kExitUsage = 2;

struct Options {
  std::string url;  // iscsi://[user[%pass]@]host[:port]/iqn/lun
  uint64_t block_bytes = 4096;
  int queue_depth = 1;
  RwMode rw = RwMode::kRandRead;
  int read_percent = 50;  // kMix only
  double seconds = 10.0;  // ignored when ops > 0
  uint64_t ops = 0;
  PatternSpec pattern;
  bool verify = false;
  uint64_t range_bytes = 0;  // 0: the whole LUN
  double warmup_seconds = 0.0;
  bool prefill = false;  // write the whole range once before warm-up
  std::string initiator_name = "iqn.2026-11.dev.tandem:bench";
  uint64_t seed = 1;
  int timeout_seconds = 30;  // per command, then the run fails
  // Where to write one line per command completed after the prefill (issue and completion
  // time on CLOCK_MONOTONIC, the clock of Python's time.monotonic()); empty: none.
  std::string timeline_path;
};

// "4096", "4k", "4K", "4KiB", "1m", "1MiB", "2g", "1TiB" (binary), "1KB"/"1MB"/"1GB" (decimal).
std::optional<uint64_t> ParseSize(std::string_view text);

struct ParseOutcome {
  std::optional<Options> options;  // set when the run should go ahead
  int exit_code = kExitOk;         // otherwise: 0 after --help, kExitUsage on errors
  std::string message;             // help text or the error
};

ParseOutcome ParseOptions(const std::vector<std::string>& args);  // args[0] is the program

// Checks that need the LUN's geometry; returns an error message or nullopt.
std::optional<std::string> CheckAgainstLun(const Options& o, uint32_t block_size,
                                           uint64_t capacity_bytes);

// Chunks of block_bytes the run uses: range (or capacity) / block_bytes.
uint64_t ChunkCount(const Options& o, uint64_t capacity_bytes);

// The URL with any CHAP password removed, for reports.
std::string RedactUrl(std::string_view url);

}  // namespace tandem::bench
