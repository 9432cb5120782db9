// Deterministic simulation of a replicated volume's whole cluster (STYLE habit 10): 2-4 nodes,
// each holding one copy (simulated disk and RegionMap file) and running the real MasterEngine or
// ReplicaEngine as the catalogue says; a simulated controller with a durable catalogue
// (generation, master, per-copy in-sync flag and applied sequence, node liveness) that runs the
// real failover rules (mgmt/controller_policy.h) on heartbeats with seeded delays and loss; the
// master lease and fencing as the node agent and master shell enforce them; a client that
// retries against whichever node the catalogue names. Seeded faults in any order: replica
// death and return, master death and return, every replica dying, a master<->controller
// partition, a controller restart, replication link drops; deaths are process kills (the
// page cache survives) or power losses (unflushed writes are lost). Everything is a function
// of the seed. Single-threaded. Invariants: see sim_cluster_impl.h.
#pragma once

#include <cstdint>
#include <string>

namespace tandem::sim {

struct ClusterSummary {
  bool ok = true;
  std::string failure;  // first broken invariant
  std::string trace;    // recent events (only when tracing)
  std::string params;
  uint64_t writes_acked = 0;
  uint64_t retries = 0;  // client attempts answered NOT READY or timed out
  uint64_t faults = 0;
  uint64_t promotions = 0;
  uint64_t demotions = 0;       // a former master came back as a replica
  uint64_t placements = 0;      // replacement replicas placed on a spare node
  uint64_t drops = 0;           // copies dropped for smallest difference
  uint64_t resyncs = 0;         // copies that turned in sync
  uint64_t fenced_answers = 0;  // completions turned into NOT READY by a lapsed lease
  uint64_t reboots = 0;         // nodes the controller saw come back with a new boot id
  uint64_t generation = 0;      // the catalogue's at the end
  uint64_t sim_time_us = 0;
  uint64_t events = 0;
};

// Runs one seed to quiesce and checks every invariant.
ClusterSummary run_cluster_seed(uint64_t seed, bool trace);

}  // namespace tandem::sim
