// MasterEngine: the master side of one replicated volume as a pure state machine. Inputs are
// front-end requests, local-store completions, frames from each replica link, link events and
// controller decisions; outputs are actions the shell carries out, in order (take_actions()).
// No sockets, threads or clocks. One owner: the volume's replication strand calls every
// method; not thread-safe. The RegionMap passed in (the master copy's map) must outlive the
// engine and is only touched from the calls below (mark() may block briefly on its store).
//
// Durability semantics. A request completes kOk only when
//   (a) its local store operation completed (FUA writes: stable; FLUSH: everything before it
//       stable), and
//   (b) every copy waited for (kInSync or kJoining) has ACKed its sequence; a replica ACKs
//       only after its own store completed the operation (FUA / FLUSH: stable). A copy that
//       turned in sync at a later sequence holds the data through resync instead, and the
//       FLUSH that closes every resync made it stable there; and
//   (c) no earlier request overlapping its blocks is still incomplete (a FLUSH also waits for
//       every earlier request; later requests do not wait for a FLUSH), and
//   (d) every copy this engine dropped from kInSync has been confirmed out of sync by the
//       controller (confirm_out_of_sync), so a copy missing an acknowledged write is never
//       promoted on the strength of an old in-sync record.
// So: an acknowledged write is in the master's store and in the store of every replica that
// was in sync when it was acknowledged (in their caches; on stable storage once it was FUA or
// a later FLUSH completed). A copy that NACKs, whose link drops or whose ACK reports an I/O
// error stops being waited for: CopyOutOfSync is emitted before any completion that no
// longer waits for it, and the copy needs start_resync(). A replica NACKing kStaleGeneration
// with a newer generation means this master was deposed: pending and later requests fail
// kNotReady, nothing else is acknowledged.
//
// Ordering. Every write, unmap and flush takes the next sequence number and is sent to every
// streaming copy at once (in parallel with the local write), in sequence order per link.
// Local store operations are issued through OrderedIo, so overlapping writes land in
// sequence order. COMPARE AND WRITE stops admission: the compare reads the range after every
// earlier write to it, and only then is a plain WRITE sequenced (frame.h), so no other write
// can slip between compare and write. Back-pressure: each copy has an in-flight byte budget;
// frames beyond it wait in that copy's queue (never failed); a copy that is not waited for and
// queues more than max_queued_bytes is dropped out of sync (it cannot keep up). Requests
// beyond max_active_ops wait in the admission queue. The engine itself sequences internal
// FLUSHes (no CompleteOp) at the start and the end of each resync (resync.h).
#pragma once

#include <algorithm>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <variant>
#include <vector>

#include "backend/repl/engine_types.h"
#include "backend/repl/ordered_io.h"
#include "backend/repl/region_map.h"
#include "backend/repl/resync.h"
#include "backend/wire/frame.h"
#include "backend/wire/sync_delta.h"
#include "core/block_volume.h"

namespace tandem::backend::repl {

enum class OpKind : uint8_t { kWrite, kUnmap, kFlush, kCompareAndWrite };

// One front-end request. data: kWrite / kCompareAndWrite (blocks * block_size bytes);
// compare: kCompareAndWrite (same size). lba/blocks unused for kFlush.
struct Request {
  uint64_t id = 0;  // the front end's op id, echoed in CompleteOp
  OpKind kind = OpKind::kWrite;
  uint64_t lba = 0;
  uint64_t blocks = 0;
  bool fua = false;
  Payload data;
  Payload compare;
};

enum class CopyState : uint8_t {
  kOutOfSync,  // receives nothing; needs start_resync()
  kSyncing,    // receives new writes and the resync stream; not waited for
  kJoining,    // stream done; waited for; in sync once it acked everything <= join point
  kInSync,     // waited for by every request
};
const char* to_string(CopyState s);

struct MasterConfig {
  wire::Uuid volume{};
  uint64_t generation = 1;
  // Last sequence any copy may have applied (sequences never repeat across masters).
  uint64_t last_sequence = 0;
  uint32_t block_size = 512;
  uint64_t block_count = 0;
  uint64_t max_inflight_bytes = 16u << 20;  // per copy, counted as wire::max_frame_size()
  uint32_t max_active_ops = 256;            // sequenced but not completed
  // Regions in flight per syncing copy (waiting for hashes, being read, or unacked): enough
  // to cover the hash round trip, so a resync streams rather than stops and waits.
  uint32_t sync_window = 8;
  // Resync compares regions in units of this many bytes (wire/sync_delta.h; raised to the
  // block size when smaller).
  uint32_t sync_hash_unit = wire::kDefaultHashUnit;
  // A copy that is not waited for (syncing) and falls this far behind cannot keep up: it is
  // dropped out of sync instead of queueing without bound. Waited-for copies are bounded by
  // max_active_ops instead.
  uint64_t max_queued_bytes = 256u << 20;
};

// ---- Actions (take_actions() returns them in the order they must be carried out) ----
struct IssueStore {  // run on the master's local store; report with on_store_done()
  StoreOp op;
};
struct SendFrame {  // encode and send on the link to `copy` (links are FIFO)
  uint32_t copy = 0;
  wire::FrameHeader header;
  Payload payload;  // may be null
};
struct CompleteOp {  // answer the front end
  uint64_t id = 0;
  uint64_t sequence = 0;  // 0 when none was assigned
  core::IoResult result;
};
struct CopyOutOfSync {  // tell the controller; answer with confirm_out_of_sync() if gating
  uint32_t copy = 0;
  std::string reason;
  uint64_t acked_through = 0;  // every sequence <= this was applied by the copy
  bool needs_confirm = false;  // the copy was kInSync: completions wait for the confirmation
};
struct CopyInSync {  // tell the controller
  uint32_t copy = 0;
  uint64_t sequence = 0;  // the copy holds everything up to here
};
struct Deposed {  // a replica knows a newer generation: stop serving, tell the controller
  uint64_t newer_generation = 0;
};
using MasterAction =
    std::variant<IssueStore, SendFrame, CompleteOp, CopyOutOfSync, CopyInSync, Deposed>;

struct MasterStats {
  uint64_t sync_regions_sent = 0;   // SYNC_DELTA frames
  uint64_t sync_bytes_sent = 0;     // SYNC_DELTA payload bytes (bitmaps and data)
  uint64_t sync_data_bytes = 0;     // of those, block data
  uint64_t sync_hash_requests = 0;  // regions compared by hash (the others were never written
                                    // on the copy)
  uint64_t sync_hash_bytes = 0;     // SYNC_HASHES payload bytes received
  uint64_t frames_queued_for_budget = 0;
};

class MasterEngine {
 public:
  MasterEngine(const MasterConfig& config, RegionMap* map);

  // A copy joins the replica set. in_sync: it holds exactly the master's data now (a fresh
  // volume, or the controller's catalogue says so at start-up), also before its link is up;
  // otherwise it is kOutOfSync.
  // recorded_in_sync: the controller's catalogue counts it in sync (so it could be promoted)
  // although it is added out of sync (a restarted or newly promoted master): CopyOutOfSync
  // {needs_confirm} is emitted and nothing completes until confirm_out_of_sync().
  ReplResult<void> add_copy(uint32_t copy, bool in_sync, bool link_up,
                            bool recorded_in_sync = false);
  // The controller removed the copy: it is no longer waited for (no confirmation needed).
  ReplResult<void> remove_copy(uint32_t copy);
  void on_link_up(uint32_t copy);
  // Frames in flight to and from the copy are lost; the copy drops out of sync.
  void on_link_down(uint32_t copy);
  // Controller: (re)start delta sync of a kOutOfSync (or kSyncing) copy whose link is up.
  ReplResult<void> start_resync(uint32_t copy);
  // Controller recorded the copy as out of sync (answers CopyOutOfSync{needs_confirm}).
  void confirm_out_of_sync(uint32_t copy);

  void submit(Request request);
  // The local store finished StoreOp `tag`. data: the bytes read, for kRead.
  void on_store_done(uint64_t tag, core::IoResult result, Payload data = nullptr);
  // A decoded frame from the link to `copy`.
  void on_frame(uint32_t copy, const wire::Frame& frame);

  std::vector<MasterAction> take_actions();

  uint64_t generation() const { return cfg_.generation; }
  uint64_t last_sequence() const { return next_seq_ - 1; }
  bool deposed() const { return deposed_; }
  std::optional<CopyState> copy_state(uint32_t copy) const;
  // What the API shows of a copy: progress of its stream and of its resync.
  struct CopyProgress {
    CopyState state = CopyState::kOutOfSync;
    bool link_up = false;
    uint64_t acked_through = 0;   // every sequence <= this was applied by the copy
    uint64_t pending_bytes = 0;   // queued + in flight to the copy
    uint64_t sync_planned = 0;    // regions the current resync sends
    uint64_t sync_acked = 0;      // of those, regions the copy applied
    // Data bytes the current resync sends (an upper bound until every region was compared:
    // ResyncSession::total_bytes) and those the copy applied.
    uint64_t sync_total_bytes = 0;
    uint64_t sync_done_bytes = 0;
  };
  std::optional<CopyProgress> copy_progress(uint32_t copy) const;
  // Copies currently waited for (kInSync and kJoining).
  std::vector<uint32_t> gating_copies() const;
  size_t active_ops() const { return active_.size(); }
  size_t queued_requests() const { return admission_.size() + (caw_ ? 1 : 0); }
  const MasterStats& stats() const { return stats_; }
  // One line per copy and per active request, for logs and failure reports.
  std::string debug_string() const;

 private:
  struct Op {
    uint64_t id = 0;
    OpKind kind = OpKind::kWrite;
    uint64_t seq = 0;
    uint64_t lba = 0;
    uint64_t blocks = 0;
    bool local_done = false;
    bool internal = false;  // an engine FLUSH (resync start / end): nobody to answer
    core::IoResult local;
    std::set<uint32_t> waiting;  // copies whose ACK is still needed
  };
  struct Outgoing {
    wire::FrameHeader header;
    Payload payload;
    uint64_t bytes = 0;
    bool ready = true;  // false: a SYNC_DELTA placeholder whose read is in flight
    uint64_t slot = 0;  // placeholder id
    uint64_t data_bytes = 0;  // SYNC_DELTA: block data in the payload
  };
  enum class SyncPhase : uint8_t { kNone, kAwaitSummary, kStreaming };
  struct Copy {
    uint32_t id = 0;
    CopyState state = CopyState::kOutOfSync;
    bool link_up = false;
    uint64_t epoch = 0;  // bumped whenever the copy leaves streaming: stale reads are dropped
    std::deque<Outgoing> queue;
    uint64_t inflight_bytes = 0;
    uint64_t queued_bytes = 0;                    // in `queue`
    std::map<uint64_t, uint64_t> unacked_seq;     // seq -> bytes
    std::map<uint64_t, uint64_t> unacked_region;  // region -> bytes
    uint64_t acked_through = 0;
    std::set<uint64_t> acked_above;
    SyncPhase phase = SyncPhase::kNone;
    uint64_t sync_start = 0;            // S of the current session
    std::optional<RegionMap> snapshot;  // master map as of SYNC_REQUEST
    std::vector<wire::RegionEntry> summary;
    std::optional<ResyncSession> session;
    std::set<uint64_t> hashing;  // regions whose SYNC_HASHES the session waits for
    uint64_t join_point = 0;
  };
  enum class TagKind : uint8_t { kOp, kCawRead, kSyncRead };
  struct Tag {
    TagKind kind = TagKind::kOp;
    uint64_t seq = 0;  // kOp
    uint32_t copy = 0;
    uint64_t epoch = 0;
    uint64_t region = 0;
    uint64_t slot = 0;
    uint64_t stamp = 0;
    bool copy_zero = false;  // kSyncRead: the copy's region is all zeros
    std::shared_ptr<const std::vector<wire::BlockHash>> hashes;  // kSyncRead: the copy's
    StoreOp op;  // held until issuable
  };

  void admit();
  bool start_op(const Request& r);
  bool valid_range(uint64_t lba, uint64_t blocks) const;
  // Assigns the next sequence and sends/issues the request; returns it (0: failed, answered).
  uint64_t sequence(const Request& r, OpKind kind);
  void add_local(Tag tag, uint64_t lba, uint64_t blocks, bool barrier);
  void issue(uint64_t tag);
  void enqueue(Copy& c, Outgoing out);
  void pump(Copy& c);
  void pump_sync(Copy& c);
  void sync_read(Copy& c, uint64_t region, bool copy_zero,
                 std::shared_ptr<const std::vector<wire::BlockHash>> hashes);
  void on_hashes(Copy& c, const wire::Frame& f);
  void fill_delta(Copy& c, const Tag& t, const Payload& data);
  uint32_t hash_unit() const { return std::max(cfg_.sync_hash_unit, cfg_.block_size); }
  void on_ack(Copy& c, const wire::FrameHeader& h);
  void acked(Copy& c, uint64_t seq);  // one sequence the copy applied
  void on_summary(Copy& c, const wire::Frame& f);
  void out_of_sync(Copy& c, std::string reason);
  void check_join(Copy& c);
  void try_complete();
  void depose(uint64_t newer);
  void finish(uint64_t id, uint64_t seq, core::IoResult r);
  wire::FrameHeader header(wire::FrameType type, uint32_t copy) const;
  Copy* find(uint32_t copy);
  static bool streaming(const Copy& c) { return c.state != CopyState::kOutOfSync && c.link_up; }
  static bool gating(const Copy& c) {
    return c.state == CopyState::kInSync || c.state == CopyState::kJoining;
  }

  MasterConfig cfg_;
  RegionMap* map_;
  uint64_t next_seq_;
  uint64_t next_tag_ = 1;
  uint64_t next_slot_ = 1;
  bool deposed_ = false;
  std::map<uint32_t, Copy> copies_;
  std::map<uint64_t, Op> active_;  // by sequence
  std::deque<Request> admission_;
  std::optional<Request> caw_;  // compare in progress: admission stops
  OrderedIo order_;
  std::map<uint64_t, Tag> tags_;
  std::set<uint32_t> unconfirmed_;
  std::vector<MasterAction> actions_;
  MasterStats stats_;
};

}  // namespace tandem::backend::repl
