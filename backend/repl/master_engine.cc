#include "backend/repl/master_engine.h"

#include <algorithm>
#include <utility>

// GCC 12 reports -Wmaybe-uninitialized inside std::variant's move constructor when a small
// alternative is pushed into vector<MasterAction> (a known false positive).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace tandem::backend::repl {
namespace {

using core::fail;
using core::IoStatus;

ReplError err(ReplErrc code, std::string message) { return ReplError{code, std::move(message)}; }

core::IoResult io(IoStatus s, uint64_t offset = 0) {
  core::IoResult r;
  r.status = s;
  r.miscompare_offset = offset;
  return r;
}

bool is_seq_frame(wire::FrameType t) {
  return t == wire::FrameType::kWrite || t == wire::FrameType::kUnmap ||
         t == wire::FrameType::kFlush;
}

}  // namespace

const char* to_string(CopyState s) {
  switch (s) {
    case CopyState::kOutOfSync:
      return "out-of-sync";
    case CopyState::kSyncing:
      return "syncing";
    case CopyState::kJoining:
      return "joining";
    case CopyState::kInSync:
      return "in-sync";
  }
  return "unknown";
}

MasterEngine::MasterEngine(const MasterConfig& config, RegionMap* map)
    : cfg_(config), map_(map), next_seq_(config.last_sequence + 1) {}

// ---- Control inputs ----

ReplResult<void> MasterEngine::add_copy(uint32_t copy, bool in_sync, bool link_up,
                                        bool recorded_in_sync) {
  if (copies_.count(copy)) return fail(err(ReplErrc::kInvalid, "copy already present"));
  Copy& c = copies_[copy];
  c.id = copy;
  c.link_up = link_up;
  c.acked_through = next_seq_ - 1;
  if (in_sync) {
    // Frames for it queue until its link is up (writes wait for its ACK); a link that fails
    // first takes it out of sync the usual way (reported, confirmed, resynced).
    c.state = CopyState::kInSync;
  } else if (recorded_in_sync) {
    // The catalogue still counts the copy as holding every acknowledged write, so it could be
    // promoted: nothing is acknowledged without it until the controller recorded otherwise.
    unconfirmed_.insert(copy);
    actions_.push_back(
        CopyOutOfSync{copy, "not in sync with this master yet", c.acked_through, true});
  }
  return {};
}

ReplResult<void> MasterEngine::remove_copy(uint32_t copy) {
  if (!copies_.erase(copy)) return fail(err(ReplErrc::kUnknownCopy, "no such copy"));
  for (auto& [seq, op] : active_) op.waiting.erase(copy);
  unconfirmed_.erase(copy);
  try_complete();
  return {};
}

void MasterEngine::on_link_up(uint32_t copy) {
  if (Copy* c = find(copy)) c->link_up = true;
}

void MasterEngine::on_link_down(uint32_t copy) {
  Copy* c = find(copy);
  if (!c) return;
  c->link_up = false;
  if (c->state != CopyState::kOutOfSync) out_of_sync(*c, "link down");
}

void MasterEngine::confirm_out_of_sync(uint32_t copy) {
  if (unconfirmed_.erase(copy)) try_complete();
}

// ---- Requests ----

void MasterEngine::submit(Request request) {
  if (deposed_) {
    finish(request.id, 0, io(IoStatus::kNotReady));
    return;
  }
  admission_.push_back(std::move(request));
  admit();
}

void MasterEngine::admit() {
  while (!deposed_ && !caw_ && !admission_.empty() && active_.size() < cfg_.max_active_ops) {
    Request r = std::move(admission_.front());
    admission_.pop_front();
    start_op(r);
  }
}

bool MasterEngine::valid_range(uint64_t lba, uint64_t blocks) const {
  return blocks > 0 && lba < cfg_.block_count && blocks <= cfg_.block_count - lba;
}

bool MasterEngine::start_op(const Request& r) {
  const uint64_t bytes = r.blocks * cfg_.block_size;
  switch (r.kind) {
    case OpKind::kFlush:
      sequence(r, OpKind::kFlush);
      return true;
    case OpKind::kUnmap:
      if (!valid_range(r.lba, r.blocks)) break;
      sequence(r, OpKind::kUnmap);
      return true;
    case OpKind::kWrite:
      if (!valid_range(r.lba, r.blocks) || !r.data || r.data->size() != bytes) break;
      sequence(r, OpKind::kWrite);
      return true;
    case OpKind::kCompareAndWrite: {
      if (!valid_range(r.lba, r.blocks) || !r.data || r.data->size() != bytes || !r.compare ||
          r.compare->size() != bytes) {
        break;
      }
      // Admission stops until the compare is resolved: the read below follows every write
      // sequenced so far, and nothing is sequenced before this request's own write.
      caw_ = r;
      Tag t;
      t.kind = TagKind::kCawRead;
      t.op = StoreOp{0, StoreKind::kRead, r.lba, r.blocks, false, nullptr, 0};
      add_local(std::move(t), r.lba, r.blocks, false);
      return true;
    }
  }
  finish(r.id, 0, io(IoStatus::kOutOfRange));
  return false;
}

uint64_t MasterEngine::sequence(const Request& r, OpKind kind) {
  const uint64_t seq = next_seq_;
  if (kind != OpKind::kFlush) {
    // Write-ahead: the region map knows before any copy can hold the data. On failure the
    // sequence is not used, so no copy ever sees a gap.
    if (auto m = map_->mark(r.lba, r.blocks, seq); !m) {
      finish(r.id, 0, io(IoStatus::kMediumError));
      return 0;
    }
  }
  ++next_seq_;
  Op op;
  op.id = r.id;
  op.kind = kind;
  op.seq = seq;
  op.lba = kind == OpKind::kFlush ? 0 : r.lba;
  op.blocks = kind == OpKind::kFlush ? 0 : r.blocks;

  wire::FrameHeader h = header(wire::FrameType::kWrite, 0);
  h.sequence = seq;
  Payload payload;
  StoreOp so{0, StoreKind::kWrite, op.lba, op.blocks, r.fua, nullptr, seq};
  if (kind == OpKind::kWrite) {
    h.lba = r.lba;
    if (r.fua) h.flags = wire::kFlagFua;
    payload = r.data;
    so.data = r.data;
  } else if (kind == OpKind::kUnmap) {
    h.type = wire::FrameType::kUnmap;
    h.lba = r.lba;
    h.count = r.blocks;
    so.kind = StoreKind::kUnmap;
    so.fua = false;
  } else {
    h.type = wire::FrameType::kFlush;
    so.kind = StoreKind::kFlush;
    so.fua = false;
  }
  const uint64_t bytes = wire::max_frame_size(payload ? payload->size() : 0);
  for (auto& [id, c] : copies_) {
    if (!streaming(c)) continue;
    h.copy_id = id;
    enqueue(c, Outgoing{h, payload, bytes});
    if (gating(c)) op.waiting.insert(id);
  }
  active_.emplace(seq, std::move(op));
  Tag t;
  t.kind = TagKind::kOp;
  t.seq = seq;
  t.op = so;
  add_local(std::move(t), so.lba, so.blocks, kind == OpKind::kFlush);
  std::vector<uint32_t> lagging;
  for (auto& [id, c] : copies_) {
    if (!streaming(c)) continue;
    pump(c);
    if (!gating(c) && c.queued_bytes > cfg_.max_queued_bytes) lagging.push_back(id);
  }
  for (uint32_t id : lagging) {
    Copy& c = copies_.at(id);
    if (c.state != CopyState::kOutOfSync) out_of_sync(c, "resync cannot keep up with writes");
  }
  return seq;
}

void MasterEngine::add_local(Tag tag, uint64_t lba, uint64_t blocks, bool barrier) {
  const uint64_t id = next_tag_++;
  tag.op.tag = id;
  tags_.emplace(id, std::move(tag));
  if (order_.add(id, lba, blocks, barrier)) issue(id);
}

void MasterEngine::issue(uint64_t tag) {
  auto it = tags_.find(tag);
  if (it != tags_.end()) actions_.push_back(IssueStore{it->second.op});
}

// ---- Local store completions ----

void MasterEngine::on_store_done(uint64_t tag, core::IoResult result, Payload data) {
  auto it = tags_.find(tag);
  if (it == tags_.end()) return;
  Tag t = std::move(it->second);
  tags_.erase(it);
  for (uint64_t released : order_.complete(tag)) issue(released);

  switch (t.kind) {
    case TagKind::kOp: {
      auto op = active_.find(t.seq);
      if (op == active_.end()) break;  // failed already (deposed)
      op->second.local_done = true;
      op->second.local = result;
      if (op->second.kind == OpKind::kFlush && result.ok()) {
        // Every local write sequenced before the flush finished before it was issued.
        if (auto cp = map_->checkpoint(t.seq - 1); !cp)
          op->second.local = io(IoStatus::kMediumError);
      }
      try_complete();
      break;
    }
    case TagKind::kCawRead: {
      if (!caw_) break;
      Request r = std::move(*caw_);
      caw_.reset();
      if (deposed_) break;
      if (!result.ok()) {
        finish(r.id, 0, result);
      } else if (!data || data->size() != r.compare->size()) {
        finish(r.id, 0, io(IoStatus::kMediumError));
      } else {
        auto diff = std::mismatch(data->begin(), data->end(), r.compare->begin());
        if (diff.first != data->end()) {
          finish(r.id, 0, io(IoStatus::kMiscompare, uint64_t(diff.first - data->begin())));
        } else {
          sequence(r, OpKind::kWrite);
        }
      }
      admit();
      break;
    }
    case TagKind::kSyncRead: {
      Copy* c = find(t.copy);
      if (!c || c->epoch != t.epoch) break;  // that stream is gone
      const uint64_t bytes = map_->blocks_in(t.region) * cfg_.block_size;
      if (!result.ok() || !data || data->size() != bytes) {
        out_of_sync(*c, "local read for resync failed");
        break;
      }
      fill_delta(*c, t, data);
      pump(*c);
      break;
    }
  }
}

// ---- Links ----

void MasterEngine::enqueue(Copy& c, Outgoing out) {
  c.queued_bytes += out.bytes;
  c.queue.push_back(std::move(out));
}

void MasterEngine::pump(Copy& c) {
  while (c.link_up && !c.queue.empty() && c.queue.front().ready) {
    Outgoing& o = c.queue.front();
    const bool accounted =
        is_seq_frame(o.header.type) || o.header.type == wire::FrameType::kSyncDelta;
    // Slow is not dead: over budget the frame waits (one frame always fits an idle link).
    if (accounted && c.inflight_bytes > 0 && c.inflight_bytes + o.bytes > cfg_.max_inflight_bytes) {
      ++stats_.frames_queued_for_budget;
      break;
    }
    if (is_seq_frame(o.header.type)) {
      c.unacked_seq[o.header.sequence] = o.bytes;
      c.inflight_bytes += o.bytes;
    } else if (o.header.type == wire::FrameType::kSyncDelta) {
      c.unacked_region[o.header.count] = o.bytes;
      c.inflight_bytes += o.bytes;
      ++stats_.sync_regions_sent;
      stats_.sync_bytes_sent += o.payload ? o.payload->size() : 0;
      stats_.sync_data_bytes += o.data_bytes;
    }
    actions_.push_back(SendFrame{c.id, o.header, std::move(o.payload)});
    c.queued_bytes -= o.bytes;
    c.queue.pop_front();
  }
}

void MasterEngine::on_frame(uint32_t copy, const wire::Frame& f) {
  Copy* c = find(copy);
  if (!c || f.header.volume != cfg_.volume || deposed_) return;
  const wire::FrameHeader& h = f.header;
  switch (h.type) {
    case wire::FrameType::kNack: {
      const auto reason = wire::NackReason(h.status);
      if (reason == wire::NackReason::kStaleGeneration && h.generation > cfg_.generation) {
        depose(h.generation);
        return;
      }
      if (h.generation != cfg_.generation || c->state == CopyState::kOutOfSync) return;
      std::string why = std::string("NACK ") + wire::to_string(reason);
      if (!f.payload.empty()) why += ": " + std::string(f.payload.begin(), f.payload.end());
      out_of_sync(*c, why);
      return;
    }
    case wire::FrameType::kAck:
      if (h.generation == cfg_.generation) on_ack(*c, h);
      return;
    case wire::FrameType::kRegionSummary:
      if (h.generation == cfg_.generation) on_summary(*c, f);
      return;
    case wire::FrameType::kSyncHashes:
      if (h.generation == cfg_.generation) on_hashes(*c, f);
      return;
    default:
      return;  // HEARTBEAT and anything a replica has no business sending
  }
}

void MasterEngine::on_ack(Copy& c, const wire::FrameHeader& h) {
  if (c.state == CopyState::kOutOfSync) return;
  if (h.count == wire::kAckThrough) {
    // Cumulative: the copy applied every sequence <= h.sequence of this link's stream. Frames
    // of an earlier stream were forgotten at out_of_sync / start_resync, and every sequence a
    // new stream carries is above that stream's SYNC_REQUEST, so an older cumulative ACK
    // (at most the old stream's last sequence) never covers one of them.
    if (h.status != 0) {
      out_of_sync(c, "replica store failed");
      return;
    }
    bool any = false;
    while (!c.unacked_seq.empty() && c.unacked_seq.begin()->first <= h.sequence) {
      const auto [seq, bytes] = *c.unacked_seq.begin();
      c.inflight_bytes -= bytes;
      c.unacked_seq.erase(c.unacked_seq.begin());
      acked(c, seq);
      any = true;
    }
    if (!any) return;
  } else {
    auto it = c.unacked_seq.find(h.sequence);
    if (it == c.unacked_seq.end()) return;  // not ours (an older stream) or a duplicate
    c.inflight_bytes -= it->second;
    c.unacked_seq.erase(it);
    if (h.status != 0) {
      out_of_sync(c, "replica store failed");
      return;
    }
    acked(c, h.sequence);
  }
  pump(c);
  check_join(c);
  try_complete();
}

void MasterEngine::acked(Copy& c, uint64_t seq) {
  if (seq == c.acked_through + 1) {
    ++c.acked_through;
    while (c.acked_above.erase(c.acked_through + 1)) ++c.acked_through;
  } else if (seq > c.acked_through) {
    c.acked_above.insert(seq);
  }
  if (auto op = active_.find(seq); op != active_.end()) op->second.waiting.erase(c.id);
}

void MasterEngine::out_of_sync(Copy& c, std::string reason) {
  const bool was_in_sync = c.state == CopyState::kInSync;
  const uint64_t acked = c.acked_through;
  c.state = CopyState::kOutOfSync;
  c.epoch++;
  c.queue.clear();
  c.queued_bytes = 0;
  c.inflight_bytes = 0;
  c.unacked_seq.clear();
  c.unacked_region.clear();
  c.acked_above.clear();
  c.phase = SyncPhase::kNone;
  c.snapshot.reset();
  c.summary.clear();
  c.hashing.clear();
  c.session.reset();
  for (auto& [seq, op] : active_) op.waiting.erase(c.id);
  if (was_in_sync) unconfirmed_.insert(c.id);
  actions_.push_back(CopyOutOfSync{c.id, std::move(reason), acked, was_in_sync});
  try_complete();
}

// ---- Completion ----

void MasterEngine::try_complete() {
  if (!unconfirmed_.empty() || deposed_) return;
  bool completed = false;
  bool earlier_incomplete = false;
  std::vector<std::pair<uint64_t, uint64_t>> busy;  // ranges of earlier incomplete writes
  for (auto it = active_.begin(); it != active_.end();) {
    Op& op = it->second;
    const bool is_flush = op.kind == OpKind::kFlush;
    bool blocked = false;
    if (is_flush) {
      blocked = earlier_incomplete;  // a flush completes after everything before it
    } else {
      for (const auto& [lba, blocks] : busy) {
        if (lba < op.lba + op.blocks && op.lba < lba + blocks) {
          blocked = true;
          break;
        }
      }
    }
    if (op.local_done && op.waiting.empty() && !blocked) {
      if (!op.internal) finish(op.id, op.seq, op.local);
      it = active_.erase(it);
      completed = true;
      continue;
    }
    earlier_incomplete = true;
    if (!is_flush) busy.emplace_back(op.lba, op.blocks);
    ++it;
  }
  if (completed) admit();
}

void MasterEngine::finish(uint64_t id, uint64_t seq, core::IoResult r) {
  actions_.push_back(CompleteOp{id, seq, r});
}

void MasterEngine::depose(uint64_t newer) {
  if (deposed_) return;
  deposed_ = true;
  actions_.push_back(Deposed{newer});
  for (auto& [seq, op] : active_) {
    if (!op.internal) finish(op.id, seq, io(IoStatus::kNotReady));
  }
  active_.clear();
  if (caw_) finish(caw_->id, 0, io(IoStatus::kNotReady));
  caw_.reset();
  for (const Request& r : admission_) finish(r.id, 0, io(IoStatus::kNotReady));
  admission_.clear();
}

// ---- Helpers ----

std::vector<MasterAction> MasterEngine::take_actions() {
  std::vector<MasterAction> out;
  out.swap(actions_);
  return out;
}

std::optional<CopyState> MasterEngine::copy_state(uint32_t copy) const {
  auto it = copies_.find(copy);
  if (it == copies_.end()) return std::nullopt;
  return it->second.state;
}

std::optional<MasterEngine::CopyProgress> MasterEngine::copy_progress(uint32_t copy) const {
  auto it = copies_.find(copy);
  if (it == copies_.end()) return std::nullopt;
  const Copy& c = it->second;
  CopyProgress p;
  p.state = c.state;
  p.link_up = c.link_up;
  p.acked_through = c.acked_through;
  p.pending_bytes = c.queued_bytes + c.inflight_bytes;
  if (c.session) {
    p.sync_planned = c.session->planned();
    p.sync_acked = c.session->acked();
    p.sync_total_bytes = c.session->total_bytes();
    p.sync_done_bytes = c.session->done_bytes();
  }
  return p;
}

std::vector<uint32_t> MasterEngine::gating_copies() const {
  std::vector<uint32_t> out;
  for (const auto& [id, c] : copies_) {
    if (gating(c)) out.push_back(id);
  }
  return out;
}

wire::FrameHeader MasterEngine::header(wire::FrameType type, uint32_t copy) const {
  wire::FrameHeader h;
  h.type = type;
  h.volume = cfg_.volume;
  h.copy_id = copy;
  h.generation = cfg_.generation;
  return h;
}

MasterEngine::Copy* MasterEngine::find(uint32_t copy) {
  auto it = copies_.find(copy);
  return it == copies_.end() ? nullptr : &it->second;
}

}  // namespace tandem::backend::repl
