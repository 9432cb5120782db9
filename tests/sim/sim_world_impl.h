// The simulated world (internal to tests/sim): the World class shared by sim_world.cc
// (engines, links, stores) and sim_checks.cc (controller, faults, workload, invariants).
// Invariants checked (a failure stops the run and names the seed):
//  continuously
//   I1 a store never holds two overlapping operations at once, and no block is ever
//      overwritten by data with an older sequence (writes apply in sequence order);
//   I2 a replica applies each sequence of its stream once, with no gaps (checked at the end);
//   I3 a request completes kOk only after the master's local write finished and every copy
//      the controller's record counts as in sync has delivered its ACK (the record drops a
//      copy only when the controller confirms); the data is then on the master; requests on
//      overlapping blocks complete in sequence order;
//   I4 an ACK leaves a replica only when the write's data is in its store;
//   I5 FUA writes and FLUSH are stable (survive a crash) on the master and every in-sync copy;
//   I6 resync sends only regions that changed while the copy was out of sync (or that its
//      map lost in a crash), never a region twice in one session, so per outage no more than
//      changed * sessions regions;
//  at quiesce (faults stop, links heal, copies resync, one final flush)
//   I7 resync terminates: every copy is in sync within 10 simulated seconds;
//   I8 the master equals a replay of all sequenced writes in sequence order;
//   I9 every copy is byte-identical to the master, in cache and on stable storage, its
//      RegionMap agrees with the master's (a new resync would send nothing), and it has
//      applied the master's last sequence.
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
#include <variant>
#include <vector>

#include "backend/repl/master_engine.h"
#include "backend/repl/replica_engine.h"
#include "backend/wire/frame.h"
#include "tests/sim/sim_disk.h"
#include "tests/sim/sim_loop.h"
#include "tests/sim/sim_world.h"

namespace tandem::sim::detail {

namespace repl = backend::repl;
namespace wire = backend::wire;

inline constexpr uint32_t kBlockSize = 512;
inline constexpr uint64_t kFinalFlushId = uint64_t{1} << 40;
inline constexpr uint64_t kQuiesceLimitUs = 10'000'000;

struct Params {
  uint32_t replicas;
  uint64_t blocks;
  uint32_t region_shift;
  uint32_t qd;
  uint32_t ops;
  uint32_t faults;
  uint64_t budget;
  uint32_t max_active;
  uint32_t window;
  uint64_t max_queued;
  uint32_t hash_unit;  // resync compares units of this size: 1..8 per region
  uint32_t mark_group = 1;  // regions a map dirties together (drawn apart from rng)

  explicit Params(Rng& rng) {
    replicas = uint32_t(rng.range(1, 3));
    blocks = uint64_t{128} << rng.below(3);
    region_shift = uint32_t(rng.range(12, 13));
    qd = uint32_t(rng.range(1, 16));
    ops = uint32_t(rng.range(200, 1200));
    faults = uint32_t(rng.below(12));
    budget = rng.chance(50) ? rng.range(4 << 10, 24 << 10) : 1 << 20;
    max_active = rng.chance(30) ? uint32_t(rng.range(2, 8)) : 256;
    window = uint32_t(rng.range(1, 4));
    max_queued = rng.chance(25) ? rng.range(16 << 10, 96 << 10) : 256 << 20;
    hash_unit = 512u << rng.below(4);
  }
  std::string str() const {
    char b[256];
    std::snprintf(b, sizeof b,
                  "replicas=%u blocks=%llu region=%u qd=%u ops=%u faults=%u budget=%llu "
                  "max_active=%u window=%u max_queued=%llu hash_unit=%u mark_group=%u",
                  replicas, (unsigned long long)blocks, 1u << region_shift, qd, ops, faults,
                  (unsigned long long)budget, max_active, window, (unsigned long long)max_queued,
                  hash_unit, mark_group);
    return b;
  }
};

struct WriteInfo {
  repl::StoreKind kind;
  uint64_t lba, blocks;
  repl::Payload data;
};

class World : public SimLoop {
 public:
  World(uint64_t seed, bool trace);
  SimSummary run();

 private:
  enum class LinkState { kUp, kDownUndetected, kDown };
  struct Replica {
    uint32_t id = 0;
    std::unique_ptr<Disk> disk;
    SimRegionStore mstore;
    std::optional<repl::RegionMap> map;
    std::unique_ptr<repl::ReplicaEngine> engine;
    bool alive = true;
    bool fail_next_op = false;  // fault: the next store operation fails with EIO
    uint64_t incarnation = 0;
    std::map<uint64_t, repl::StoreOp> inflight;
    LinkState link = LinkState::kUp;
    uint64_t link_epoch = 0;
    uint64_t last_to_replica = 0, last_to_master = 0;
    wire::FrameDecoder dec_to_replica, dec_to_master;
    std::optional<uint64_t> stream_base;  // I2
    std::set<uint64_t> stream_seqs;
    bool in_outage = false;  // I6
    uint64_t left_at = 0;
    std::set<uint64_t> unknown;
    uint64_t outage_sent = 0, outage_sessions = 0, outage_crashes = 0;
    std::set<uint64_t> session_sent;
  };
  struct Outstanding {
    repl::OpKind kind;
    uint64_t lba = 0, blocks = 0;
    bool fua = false;
    std::vector<uint64_t> floor;  // FLUSH: acked seq per block at submission
  };
  uint64_t store_latency() { return rng_.chance(5) ? rng_.range(1000, 3000) : rng_.range(20, 400); }
  uint64_t net_latency() { return rng_.chance(5) ? rng_.range(800, 2000) : rng_.range(30, 300); }

  void drain_master();
  void drain_replica(Replica& r);
  void master_store_done(uint64_t tag);
  void replica_store_done(uint32_t k, uint64_t incarnation, uint64_t tag);
  bool check_store_issue(const std::map<uint64_t, repl::StoreOp>& inflight, const repl::StoreOp& op,
                         const char* who);
  void exec(Disk& disk, const repl::StoreOp& op, const std::string& who, repl::Payload* read);
  void send(Replica& r, const wire::FrameHeader& h, const repl::Payload& p, bool to_replica);
  std::vector<wire::Frame> decode(wire::FrameDecoder& dec, const std::vector<uint8_t>& bytes);

  void on_complete(const repl::CompleteOp& c);
  void on_out_of_sync(const repl::CopyOutOfSync& o);
  void on_in_sync(const repl::CopyInSync& s);
  void on_sync_data_sent(Replica& r, uint64_t region);
  void try_resync(uint32_t k);

  void schedule_fault();
  void drop_link(uint32_t k);
  void detect(uint32_t k);
  void heal(uint32_t k);
  void restart(uint32_t k);
  void revive(uint32_t k);

  void issue_next();
  bool all_synced() const;
  void final_checks();

  uint64_t seed_;
  Rng rng_;
  Params p_;
  SimSummary summary_;

  repl::RegionGeometry geo_;
  wire::Uuid volume_{};
  Disk master_disk_;
  std::optional<repl::RegionMap> master_map_;
  std::unique_ptr<repl::MasterEngine> master_;
  std::map<uint64_t, repl::StoreOp> master_inflight_;
  std::set<uint64_t> master_done_seqs_;
  std::map<uint64_t, WriteInfo> writes_;  // every sequenced write/unmap, by sequence
  // Disk d holds on stable storage block b as write `seq` or a later one left it.
  bool holds_write(const Disk& d, uint64_t b, uint64_t seq) const;
  std::vector<Replica> replicas_;
  std::set<uint32_t> view_;  // the controller's (durable) in-sync record
  std::map<uint32_t, std::set<uint64_t>> acks_;
  std::map<uint32_t, uint64_t> joined_at_;  // CopyInSync sequence per copy
  std::map<uint32_t, uint64_t> joins_;      // CopyInSync count per copy

  std::map<uint64_t, Outstanding> outstanding_;
  std::vector<uint64_t> acked_floor_;
  uint64_t next_id_ = 1, issued_ = 0, completed_ = 0;
  uint32_t faults_left_ = 0;
  bool quiescing_ = false, final_issued_ = false, final_done_ = false;
  uint64_t quiesce_start_ = 0;
};

}  // namespace tandem::sim::detail
