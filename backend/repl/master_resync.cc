// MasterEngine, part 2: driving delta sync (resync.h) of a copy; and the debug dump.
#include <string>

#include "backend/repl/master_engine.h"

// GCC 12 reports -Wmaybe-uninitialized inside std::variant's move constructor when a small
// alternative is pushed into vector<MasterAction> (a known false positive).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace tandem::backend::repl {
namespace {

ReplError err(ReplErrc code, std::string message) { return ReplError{code, std::move(message)}; }

}  // namespace

ReplResult<void> MasterEngine::start_resync(uint32_t copy) {
  Copy* c = find(copy);
  if (!c) return fail(err(ReplErrc::kUnknownCopy, "no such copy"));
  if (deposed_) return fail(err(ReplErrc::kState, "master was deposed"));
  if (!c->link_up) return fail(err(ReplErrc::kState, "link to the copy is down"));
  if (gating(*c)) return fail(err(ReplErrc::kState, "copy is already in sync"));
  // Every session starts at a sequence no earlier session used (an internal FLUSH, not sent to
  // this copy), so the copy's answers carry it: REGION_SUMMARY chunks of this session have
  // sequence == S, while summaries and progress of an abandoned session on the same link
  // (a NACK or lag drop keeps the link) carry less and are ignored.
  c->state = CopyState::kOutOfSync;
  Request flush;
  flush.kind = OpKind::kFlush;
  if (const uint64_t seq = sequence(flush, OpKind::kFlush)) active_.at(seq).internal = true;
  // The master's map as of S: every write <= S was marked when it was sequenced.
  auto snapshot = RegionMap::from_summary(map_->geometry(), map_->summary());
  if (!snapshot) return fail(err(ReplErrc::kInvalid, snapshot.error().message));
  // A restart of a running sync: frames of the old stream still on the link precede the new
  // SYNC_REQUEST, and the copy rebases on it; their acks no longer match anything here.
  c->epoch++;
  c->queue.clear();
  c->queued_bytes = 0;
  c->inflight_bytes = 0;
  c->unacked_seq.clear();
  c->unacked_region.clear();
  c->acked_above.clear();
  c->summary.clear();
  c->session.reset();
  c->state = CopyState::kSyncing;
  c->phase = SyncPhase::kAwaitSummary;
  c->acked_through = next_seq_ - 1;
  c->sync_start = next_seq_ - 1;
  c->snapshot.emplace(std::move(*snapshot));
  wire::FrameHeader h = header(wire::FrameType::kSyncRequest, copy);
  h.sequence = next_seq_ - 1;
  enqueue(*c, Outgoing{h, nullptr, wire::kHeaderSize});
  pump(*c);
  return {};
}

void MasterEngine::on_summary(Copy& c, const wire::Frame& f) {
  auto entries = wire::decode_region_summary(f.payload);
  if (!entries) {
    out_of_sync(c, "malformed REGION_SUMMARY");
    return;
  }
  if (f.header.sequence < c.sync_start) return;  // an abandoned session's answer
  if (c.phase == SyncPhase::kAwaitSummary) {
    if (f.header.sequence != c.sync_start) return;
    c.summary.insert(c.summary.end(), entries->begin(), entries->end());
    if (!(f.header.flags & wire::kFlagLast)) return;
    auto plan = plan_resync(*c.snapshot, c.summary);
    c.snapshot.reset();
    c.summary.clear();
    if (!plan) {
      out_of_sync(c, "REGION_SUMMARY does not fit the volume");
      return;
    }
    c.session.emplace(std::move(*plan), cfg_.sync_window);
    c.phase = SyncPhase::kStreaming;
    pump_sync(c);
  } else if (c.phase == SyncPhase::kStreaming) {
    // Progress: each entry says "region r now holds the data stamped seq".
    for (const wire::RegionEntry& e : *entries) {
      if (!c.session->ack(e.region)) continue;
      if (auto it = c.unacked_region.find(e.region); it != c.unacked_region.end()) {
        c.inflight_bytes -= it->second;
        c.unacked_region.erase(it);
      }
    }
    pump(c);
    pump_sync(c);
  }
}

void MasterEngine::pump_sync(Copy& c) {
  if (c.phase != SyncPhase::kStreaming) return;
  while (auto r = c.session->next()) {
    Outgoing placeholder;
    placeholder.ready = false;
    placeholder.slot = next_slot_++;
    placeholder.bytes = wire::max_frame_size(map_->blocks_in(*r) * cfg_.block_size);
    enqueue(c, placeholder);
    Tag t;
    t.kind = TagKind::kSyncRead;
    t.copy = c.id;
    t.epoch = c.epoch;
    t.region = *r;
    t.slot = placeholder.slot;
    t.stamp = map_->seq_of(*r);  // every write <= the current position is marked already
    const uint64_t lba = map_->first_lba(*r), blocks = map_->blocks_in(*r);
    t.op = StoreOp{0, StoreKind::kRead, lba, blocks, false, nullptr, t.stamp, true};
    add_local(std::move(t), lba, blocks, false);
  }
  if (!c.session->done()) return;
  c.phase = SyncPhase::kNone;
  c.session.reset();
  c.state = CopyState::kJoining;
  // An internal FLUSH closes the stream: once the copy acks it, everything it holds up to the
  // join point (resync data included) is stable there, so FLUSH / FUA requests that complete
  // after it turns in sync keep their promise on it too.
  Request flush;
  flush.kind = OpKind::kFlush;
  if (const uint64_t seq = sequence(flush, OpKind::kFlush)) active_.at(seq).internal = true;
  c.join_point = next_seq_ - 1;
  wire::FrameHeader h = header(wire::FrameType::kSyncDone, c.id);
  h.sequence = c.join_point;
  enqueue(c, Outgoing{h, nullptr, wire::kHeaderSize});
  pump(c);
  // From now on completions wait for this copy too, including requests already sent to it.
  for (auto& [seq, op] : active_) {
    if (seq > c.acked_through && !c.acked_above.count(seq)) op.waiting.insert(c.id);
  }
  check_join(c);
}

void MasterEngine::check_join(Copy& c) {
  if (c.state != CopyState::kJoining || c.acked_through < c.join_point) return;
  c.state = CopyState::kInSync;
  actions_.push_back(CopyInSync{c.id, c.acked_through});
}

std::string MasterEngine::debug_string() const {
  std::string out = "next_seq=" + std::to_string(next_seq_) +
                    " admission=" + std::to_string(admission_.size()) +
                    " caw=" + std::to_string(caw_.has_value()) +
                    " unconfirmed=" + std::to_string(unconfirmed_.size()) + "\n";
  for (const auto& [id, c] : copies_) {
    out +=
        "copy " + std::to_string(id) + " " + to_string(c.state) +
        " link=" + std::to_string(c.link_up) + " phase=" + std::to_string(int(c.phase)) +
        " queue=" + std::to_string(c.queue.size()) +
        " head_ready=" + std::to_string(c.queue.empty() || c.queue.front().ready) +
        " inflight=" + std::to_string(c.inflight_bytes) +
        " acked=" + std::to_string(c.acked_through) +
        " unacked_seq=" + std::to_string(c.unacked_seq.size()) +
        (c.unacked_seq.empty() ? "" : "@" + std::to_string(c.unacked_seq.begin()->first)) +
        " unacked_region=" + std::to_string(c.unacked_region.size()) + " session=" +
        (c.session ? std::to_string(c.session->acked()) + "/" + std::to_string(c.session->planned())
                   : std::string("-")) +
        "\n";
  }
  for (const auto& [seq, op] : active_) {
    out += "op seq=" + std::to_string(seq) + " local_done=" + std::to_string(op.local_done) +
           " waiting=" + std::to_string(op.waiting.size()) + "\n";
  }
  return out;
}

}  // namespace tandem::backend::repl
