// ReplicaEngine: the replica side of one copy (volume uuid, copy id) as a pure state machine.
// Fed decoded frames from the master's link and local-store completions; emits local-store
// operations and frames back to the master (take_actions(), in order). One owner: the copy's
// replication strand; not thread-safe. The RegionMap (this copy's, persisted) must outlive the
// engine; mark()/assign() run inside on_frame() and may block briefly on the map's store.
//
// Rules: frames for another volume or copy are NACKed kUnknownCopy; an older generation is
// NACKed kStaleGeneration (a deposed master can never get a write acknowledged); a newer one
// is NACKed kNotReady until the controller calls set_generation(). WRITE / UNMAP / FLUSH are
// applied strictly in sequence order with no gaps: a frame ahead of the next expected
// sequence is held if within `reorder_window`, else NACKed kOutOfOrder. Before a write is
// handed to the store its regions are marked in the RegionMap (write-ahead); the ACK goes
// out when the store completed it (FUA: stable). FLUSH is ACKed once every write <= its
// sequence is complete and a store flush after them completed; the map is then checkpointed
// (only while consistent: see touched_unsynced_ below).
// Resync (resync.h): SYNC_REQUEST{S} rebases the stream at S+1 and is answered with the map's
// REGION_SUMMARY{sequence = S}; SYNC_HASH_REQUEST{S, r} reads region r (ordered after the
// writes received before it) and answers SYNC_HASHES with a hash per unit; SYNC_DELTA
// overwrites the units of r it carries in link order (assign() first) and is acknowledged
// with REGION_SUMMARY{(region, stamp)} once they are written; SYNC_DONE{D} makes the copy
// consistent once everything <= D is applied. SYNC_DELTA / SYNC_DONE must not overtake held
// frames (one FIFO link never reorders; a copy holding frames NACKs them kOutOfOrder).
#pragma once

#include <cstdint>
#include <map>
#include <set>
#include <variant>
#include <vector>

#include "backend/repl/engine_types.h"
#include "backend/repl/ordered_io.h"
#include "backend/repl/region_map.h"
#include "backend/wire/frame.h"

namespace tandem::backend::repl {

struct ReplicaConfig {
  wire::Uuid volume{};
  uint32_t copy_id = 0;
  uint64_t generation = 1;
  uint32_t block_size = 512;
  uint64_t block_count = 0;
  uint32_t reorder_window = 64;  // frames held ahead of the next expected sequence
  size_t summary_entries_per_frame = wire::kMaxSummaryEntriesPerFrame;
};

enum class ReplicaState : uint8_t {
  kIdle,       // no stream: NACKs data frames kNotReady until SYNC_REQUEST (after a restart)
  kSyncing,    // stream rebased, resync in progress: not consistent yet
  kStreaming,  // consistent with the master up to applied_seq()
  kFailed,     // the local store or map failed: NACKs kIoError; reopen the copy
};
const char* to_string(ReplicaState s);

struct ReplicaIssueStore {
  StoreOp op;
};
struct ReplicaSendFrame {  // to the master, on the same link
  wire::FrameHeader header;
  Payload payload;  // may be null
};
using ReplicaAction = std::variant<ReplicaIssueStore, ReplicaSendFrame>;

class ReplicaEngine {
 public:
  // A copy starts kIdle (after a restart: wait for the master's SYNC_REQUEST). A copy that is
  // known to be identical to the master at `in_sync_at` (a new volume: 0) starts kStreaming.
  ReplicaEngine(const ReplicaConfig& config, RegionMap* map);
  ReplicaEngine(const ReplicaConfig& config, RegionMap* map, uint64_t in_sync_at);

  // Takes the frame by value: a write's payload moves on to the store, not copied.
  void on_frame(wire::Frame frame);
  // StoreOp `tag` finished. data: the bytes read, for kRead (a region to hash for resync).
  void on_store_done(uint64_t tag, core::IoResult result, Payload data = nullptr);
  // The link dropped: held frames are discarded; the stream needs a new SYNC_REQUEST.
  void on_link_down();
  // The controller announces a new generation (a new master). Older ones are refused.
  ReplResult<void> set_generation(uint64_t generation);

  std::vector<ReplicaAction> take_actions();

  ReplicaState state() const { return state_; }
  uint64_t generation() const { return cfg_.generation; }
  // Every sequence <= this (in the current stream) was applied and its store write finished.
  uint64_t applied_seq() const { return applied_; }
  bool consistent() const { return state_ == ReplicaState::kStreaming; }
  size_t held_frames() const { return held_.size(); }

 private:
  struct Pending {
    uint64_t stream = 0;  // the stream (SYNC_REQUEST epoch) it belongs to
    uint64_t seq = 0;     // 0: resync data
    wire::FrameType type = wire::FrameType::kWrite;
    uint64_t region = 0;  // resync data and hash reads
    uint64_t stamp = 0;   // SYNC_DELTA: the region's stamp; hash read: the session's S
    uint32_t unit = 0;    // hash read: the unit to hash by
    bool last = false;
    StoreOp op;
  };

  void handle(wire::Frame& f);
  void apply(wire::Frame& f);
  void apply_sync_delta(const wire::Frame& f);
  void read_for_hashes(const wire::FrameHeader& h);
  void region_applied(uint64_t region, uint64_t stamp);
  void drain_held();
  void add_local(Pending p, bool barrier);
  void advance(uint64_t seq);
  // generation: the one the NACK carries (0: this copy's own).
  void nack(const wire::FrameHeader& h, wire::NackReason reason, const char* text,
            uint64_t generation = 0);
  void ack(uint64_t seq, uint32_t status);
  void send_summary();
  void fail_store(const wire::FrameHeader& h);
  void become_consistent();
  wire::FrameHeader reply(wire::FrameType type) const;
  bool valid_range(uint64_t lba, uint64_t blocks) const {
    return blocks > 0 && lba < cfg_.block_count && blocks <= cfg_.block_count - lba;
  }

  ReplicaConfig cfg_;
  RegionMap* map_;
  ReplicaState state_ = ReplicaState::kIdle;
  uint64_t stream_ = 0;
  uint64_t expected_ = 1;  // next sequence to apply
  // The current stream's SYNC_REQUEST sequence S: map entries <= S predate the stream.
  uint64_t sync_base_ = 0;
  uint64_t applied_ = 0;
  std::set<uint64_t> done_above_;  // finished sequences > applied_
  uint64_t done_point_ = 0;        // SYNC_DONE's sequence
  bool done_seen_ = false;
  // Until the copy is consistent again, a write to a region that resync has not yet sent
  // would make the map claim the region is current (its seq becomes the write's) while the
  // older parts of the region are still stale. Such regions are remembered here and turned
  // unknown before the next REGION_SUMMARY; and no checkpoint runs while inconsistent, so
  // after a crash they are dirty, i.e. unknown, too. Either way they are sent again.
  bool consistent_at_rest_ = false;
  std::set<uint64_t> touched_unsynced_;
  std::set<uint64_t> synced_;
  std::map<uint64_t, size_t> delta_left_;  // region -> SYNC_DELTA writes not yet complete
  std::map<uint64_t, wire::Frame> held_;
  std::map<uint64_t, Pending> pending_;  // by tag
  uint64_t next_tag_ = 1;
  OrderedIo order_;
  std::vector<ReplicaAction> actions_;
};

}  // namespace tandem::backend::repl
