// The simulated cluster (internal to tests/sim): the ClusterWorld class shared by
// sim_cluster.cc (nodes, engines, links, controller) and sim_cluster_checks.cc (client,
// faults, invariants). Times are simulated microseconds.
// Invariants (a failure stops the run and names the seed):
//  continuously
//   C1 no split brain: a node answers GOOD to the client only while it is the catalogue's
//      master at the catalogue's generation, and no later than one fencing poll after its lease
//      ran out;
//   C2 the controller promotes only a node's copy whose lease has lapsed, and never within a
//      full node timeout of its own start; the generation strictly increases, in the catalogue
//      and in every node's mirror of it;
//  at quiesce (faults stop, nodes return, partitions heal, a final FLUSH through the master)
//   C3 resync terminates: within 30 simulated seconds every copy is in sync, in the master's
//      engine and in the catalogue;
//   C4 every acknowledged write is on the master: each block holds exactly the data of a write
//      to it at least as new as the last one acknowledged (after a power loss: the last one
//      made durable by FUA or a completed FLUSH), never anything else;
//   C5 every copy is byte-identical to the master, in cache and on stable storage, and its
//      engine is consistent at the master's last sequence.
#pragma once

#include <cstdarg>
#include <cstdio>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <queue>
#include <set>
#include <string>
#include <vector>

#include "backend/repl/master_engine.h"
#include "backend/repl/replica_engine.h"
#include "backend/wire/frame.h"
#include "mgmt/controller_policy.h"
#include "tests/sim/sim_cluster.h"
#include "tests/sim/sim_disk.h"
#include "tests/sim/sim_loop.h"

namespace tandem::sim::cluster {

namespace repl = backend::repl;
namespace wire = backend::wire;

inline constexpr uint32_t kBlockSize = 512;
inline constexpr int64_t kTimeoutUs = 3'000'000;         // the controller's node timeout
inline constexpr int64_t kHeartbeatUs = 500'000;         // heartbeats and liveness checks
inline constexpr int64_t kFencePollUs = 100'000;         // the volume host's lease poll
inline constexpr int64_t kTickUs = 250'000;              // the master shell's tick (resync starts)
inline constexpr int64_t kAttemptTimeoutUs = 2'000'000;  // the client gives up on an attempt
inline constexpr uint64_t kQuiesceLimitUs = 30'000'000;
inline constexpr uint64_t kRunLimitUs = 900'000'000;

struct Params {
  uint32_t nodes;   // 1 master + replicas at the start
  uint32_t spares;  // nodes without a copy, where a lost replica's replacement is placed
  uint64_t blocks;
  uint32_t region_shift;
  uint32_t qd;
  uint32_t ops;
  uint32_t faults;
  uint32_t power_loss_percent;
  uint32_t ctl_loss_percent;  // heartbeat and report messages lost
  uint32_t hash_unit;         // resync compares units of this size: 1..8 per region
  uint32_t mark_group = 1;  // regions a map dirties together (drawn apart from rng)
  explicit Params(Rng& rng) {
    nodes = uint32_t(rng.range(2, 4));
    blocks = uint64_t{64} << rng.below(3);
    region_shift = uint32_t(rng.range(12, 13));
    qd = uint32_t(rng.range(1, 8));
    ops = uint32_t(rng.range(150, 600));
    faults = uint32_t(rng.range(2, 8));
    power_loss_percent = rng.chance(50) ? 0 : 30;
    ctl_loss_percent = uint32_t(rng.range(0, 5));
    hash_unit = 512u << rng.below(4);
  }
  uint32_t count() const { return nodes + spares; }
  uint32_t replicas() const { return nodes - 1; }
  std::string str() const {
    char b[200];
    std::snprintf(b, sizeof b,
                  "nodes=%u spares=%u blocks=%llu region=%u qd=%u ops=%u faults=%u "
                  "power_loss=%u%% ctl_loss=%u%% hash_unit=%u mark_group=%u",
                  nodes, spares, (unsigned long long)blocks, 1u << region_shift, qd, ops, faults,
                  power_loss_percent, ctl_loss_percent, hash_unit, mark_group);
    return b;
  }
};

// One node: its copy of the volume and the engine the catalogue (as it last heard) gives it.
struct Node {
  uint32_t id = 0;  // also its copy number
  bool alive = true;
  uint64_t inc = 0;         // incarnation: bumped by a crash
  uint64_t boot = 1;        // the node's boot id: changed by a power loss, not by a process kill
  uint64_t report_seq = 0;  // VolumeHost::next_report_seq: increases across restarts too
  std::unique_ptr<Disk> disk;
  std::unique_ptr<SimRegionStore> mstore;
  std::optional<repl::RegionMap> map;
  std::unique_ptr<repl::MasterEngine> master;
  std::unique_ptr<repl::ReplicaEngine> replica;
  std::set<uint32_t> engine_copies;  // master: the copies its engine has
  uint64_t epoch = 0;  // bumped whenever the engine is replaced: stale completions dropped
  std::map<uint64_t, repl::StoreOp> inflight;
  // Durable: the node's local mirror of the catalogue, and its sequence reservation.
  uint64_t gen = 1;
  uint32_t master_id = 1;
  std::set<uint32_t> copies;  // the nodes holding a copy (copy number == node id)
  std::set<uint32_t> in_sync;
  uint64_t reserved = 0;
  // Volatile.
  int64_t lease_until = 0;
  bool fenced = true;
  bool cut = false;           // partitioned from the controller
  uint32_t stream_owner = 0;  // replica: the master node whose stream it follows
  std::set<uint32_t> unconfirmed;
  struct Serving {
    uint64_t op = 0;
    uint32_t attempt = 0;
  };
  std::map<uint64_t, Serving> serving;  // engine request id -> client attempt
};

struct Link {  // between the master engine on node m and the copy on node k
  bool up = false;
  bool cut = false;
  uint64_t epoch = 0;
  uint64_t last_mk = 0, last_km = 0;  // FIFO per direction
  wire::FrameDecoder to_replica, to_master;
};

struct CopyRec {
  bool in_sync = true;
  bool rebooted = false;    // in sync when its node rebooted, no master report since
  uint64_t report_seq = 0;  // the newest master report applied (0 after a promotion)
  uint64_t applied = 0;
  mgmt::CopySyncState state = mgmt::CopySyncState::kInSync;  // as the master last reported
  uint64_t sync_total = 0, sync_done = 0;                    // bytes of the running resync
};
struct NodeRec {
  bool online = true;
  int64_t last_hb = 0;
  uint64_t boot = 1;  // the boot id of its last heartbeat
};
struct Controller {
  bool up = true;
  uint64_t inc = 0;
  int64_t started = 0;  // in-memory: when it (re)started
  // The catalogue (durable).
  uint64_t gen = 1;
  uint32_t master = 1;
  std::map<uint32_t, CopyRec> copies;
  std::map<uint32_t, NodeRec> nodes;
};

struct CopyReport {
  uint32_t copy = 0;
  bool in_sync = false;
  uint64_t applied = 0;
  mgmt::CopySyncState state = mgmt::CopySyncState::kOther;
  uint64_t sync_total = 0, sync_done = 0;
  uint64_t generation = 0;  // the reporting master's
  uint64_t seq = 0;         // when it was made (next_report_seq)
};

struct ClientOp {
  bool flush = false;
  bool fua = false;
  bool final = false;
  uint64_t lba = 0, blocks = 0;
  repl::Payload data;
  std::vector<uint64_t> floor;  // FLUSH: flushable writer per block at submission
  uint64_t power_losses = 0;    // FLUSH: power losses before submission
  uint32_t attempt = 0;
  bool good = false;   // a master answered GOOD
  bool acked = false;  // the client heard it
};

class ClusterWorld : public SimLoop {
 public:
  ClusterWorld(uint64_t seed, bool trace);
  ClusterSummary run();

 private:
  uint64_t store_latency() { return rng_.chance(5) ? rng_.range(1000, 3000) : rng_.range(20, 400); }
  uint64_t net_latency() { return rng_.chance(5) ? rng_.range(800, 2000) : rng_.range(30, 300); }
  uint64_t ctl_latency() {
    return rng_.chance(10) ? rng_.range(5000, 80000) : rng_.range(200, 3000);
  }
  Node& node(uint32_t id) { return nodes_[id - 1]; }
  Link& link(uint32_t m, uint32_t k) { return links_[m * 8 + k]; }
  int64_t now() const { return int64_t(now_); }
  // A master the node's catalogue mirror no longer names (another node or generation).
  static bool superseded(const Node& n) {
    return n.master && (n.master_id != n.id || n.master->generation() != n.gen);
  }

  // sim_cluster.cc: nodes, engines, links, controller.
  repl::ReplicaConfig replica_config(const Node& n);
  void become_master(Node& n);
  void become_replica(Node& n);
  void sync_copy_set(Node& n);
  void wipe(Node& n);
  void fresh_copy(Node& n);
  void drop_engine(Node& n);
  void reconcile(Node& n);
  void drain_master(Node& n);
  void drain_replica(Node& n, uint32_t to);
  void store_done(uint32_t id, uint64_t inc, uint64_t epoch, uint64_t tag);
  void exec(Node& n, const repl::StoreOp& op, repl::Payload* read);
  void complete(Node& n, const repl::CompleteOp& c);
  void link_break(uint32_t m, uint32_t k);
  void link_try(uint32_t m, uint32_t k);
  bool link_possible(uint32_t m, uint32_t k);
  void send(uint32_t m, uint32_t k, const wire::FrameHeader& h, const repl::Payload& p,
            bool to_replica);
  void heartbeat(uint32_t id);
  void fence_poll(uint32_t id);
  void tick(uint32_t id);
  void report_out_of_sync(Node& n, uint32_t copy);
  uint64_t next_report_seq(Node& n) {
    return n.report_seq = std::max(n.report_seq + 1, uint64_t(now_) * 16);
  }
  void ctl_heartbeat(uint32_t id, uint64_t inc, uint64_t boot, int64_t sent_at,
                     const std::vector<CopyReport>& reports);
  void ctl_node_rebooted(uint32_t id);
  std::vector<mgmt::PromotionCandidate> promotion_candidates(uint32_t lost);
  void ctl_liveness();
  void promote_away_from(uint32_t lost);
  void promote(uint32_t winner, const char* why);
  void restore_replica_count();
  void crash(uint32_t id, bool power_loss);
  void revive(uint32_t id);

  // sim_cluster_checks.cc: client, faults, invariants.
  void issue_next();
  void attempt(uint64_t id);
  void node_submit(uint32_t target, uint64_t id, uint32_t attempt);
  void reply(uint64_t id, uint32_t attempt, bool ok);
  void on_good(uint64_t id);
  void on_acked(uint64_t id);
  void schedule_fault();
  void inject_fault();
  bool all_synced();
  void final_checks();

  uint64_t seed_;
  Rng rng_;
  Params p_;
  ClusterSummary summary_;

  repl::RegionGeometry geo_;
  wire::Uuid volume_{};
  std::vector<Node> nodes_;
  std::map<uint32_t, Link> links_;
  Controller ctl_;
  uint64_t next_request_ = 1;

  // Client.
  std::map<uint64_t, ClientOp> ops_;  // by id; ids are issue order
  std::set<uint64_t> outstanding_;
  // Per block, an op id: the last write acknowledged; the last one made durable (FUA, or a
  // FLUSH that completed with no power loss since it was submitted); the last one acknowledged
  // since the latest power loss or made durable (what a FLUSH submitted now makes durable).
  std::vector<uint64_t> acked_floor_, durable_floor_, flushable_floor_;
  uint64_t power_losses_ = 0;
  uint64_t next_op_ = 1, issued_ = 0, completed_ = 0;
  uint32_t target_ = 1;  // the node the client sends to (it learns the master on failures)
  uint32_t faults_left_ = 0;
  bool power_lost_ = false;
  bool quiescing_ = false, final_issued_ = false, final_done_ = false;
  uint64_t quiesce_start_ = 0;
};

}  // namespace tandem::sim::cluster
