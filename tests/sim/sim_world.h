// Deterministic simulation of one replicated volume (STYLE habit 10, FoundationDB sim2-style):
// a MasterEngine and 1-3 ReplicaEngines wired through simulated links (FIFO per link,
// independent delays across links, disconnects that lose frames in flight), simulated disks
// that lose unflushed writes on a crash, a seeded workload and seeded faults. Everything is a
// function of the seed: run_seed(s) twice gives the same run. Single-threaded.
#pragma once

#include <cstdint>
#include <string>

namespace tandem::sim {

struct SimSummary {
  bool ok = true;
  std::string failure;  // first broken invariant
  std::string trace;    // last events before the failure (only when tracing)
  uint64_t ops_completed = 0;
  uint64_t faults = 0;
  uint64_t io_errors = 0;     // injected replica store errors that happened
  uint64_t budget_waits = 0;  // frames held back by the per-copy byte budget
  uint64_t resyncs_completed = 0;
  uint64_t sync_regions_sent = 0;
  uint64_t sync_regions_allowed = 0;  // regions changed while copies were out of sync
  uint64_t volume_regions = 0;
  uint64_t sim_time_us = 0;
  uint64_t events = 0;
  std::string params;
};

// Runs one seed to quiesce and checks every invariant (see sim_world.cc). `trace` keeps a
// log of recent events for the failure report (slower; use when replaying one seed).
SimSummary run_seed(uint64_t seed, bool trace);

}  // namespace tandem::sim
