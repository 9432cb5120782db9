// MasterEngine, part 2: driving delta sync (resync.h) of a copy; and the debug dump.
#include <string>

#include "backend/repl/block_diff.h"
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
  c->hashing.clear();
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
  bool asked = false;
  while (auto p = c.session->next()) {
    if (p->copy_zero) {
      sync_read(c, p->region, true, nullptr);
      continue;
    }
    // The copy's hashes first (resync.h step 3a); the read waits for them.
    wire::FrameHeader h = header(wire::FrameType::kSyncHashRequest, c.id);
    h.sequence = c.sync_start;
    h.count = p->region;
    h.status = hash_unit();
    enqueue(c, Outgoing{h, nullptr, wire::kHeaderSize});
    ++stats_.sync_hash_requests;
    c.hashing.insert(p->region);
    asked = true;
  }
  if (asked) pump(c);
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

void MasterEngine::sync_read(Copy& c, uint64_t region, bool copy_zero,
                             std::shared_ptr<const std::vector<wire::BlockHash>> hashes) {
  // The SYNC_DELTA's place in the link is taken now, at the read's position p (resync.h 3b).
  const uint64_t lba = map_->first_lba(region), blocks = map_->blocks_in(region);
  const uint64_t bytes = blocks * cfg_.block_size;
  Outgoing placeholder;
  placeholder.ready = false;
  placeholder.slot = next_slot_++;
  placeholder.bytes = wire::max_frame_size((wire::units_in(bytes, hash_unit()) + 7) / 8 + bytes);
  enqueue(c, placeholder);
  Tag t;
  t.kind = TagKind::kSyncRead;
  t.copy = c.id;
  t.epoch = c.epoch;
  t.region = region;
  t.slot = placeholder.slot;
  t.stamp = map_->seq_of(region);  // every write <= the current position is marked already
  t.copy_zero = copy_zero;
  t.hashes = std::move(hashes);
  t.op = StoreOp{0, StoreKind::kRead, lba, blocks, false, nullptr, t.stamp, true};
  add_local(std::move(t), lba, blocks, false);
}

void MasterEngine::on_hashes(Copy& c, const wire::Frame& f) {
  const wire::FrameHeader& h = f.header;
  // Another session's answer, or one for a region not waiting for hashes: not ours.
  if (c.phase != SyncPhase::kStreaming || h.sequence != c.sync_start ||
      !c.session->in_flight(h.count) || c.hashing.count(h.count) == 0) {
    return;
  }
  const uint64_t bytes = map_->blocks_in(h.count) * cfg_.block_size;
  auto hashes = wire::decode_block_hashes(f.payload, wire::units_in(bytes, hash_unit()));
  if (!hashes || h.status != hash_unit()) {
    out_of_sync(c, "malformed SYNC_HASHES");
    return;
  }
  stats_.sync_hash_bytes += f.payload.size();
  c.hashing.erase(h.count);
  sync_read(c, h.count, false,
            std::make_shared<const std::vector<wire::BlockHash>>(std::move(*hashes)));
}

void MasterEngine::fill_delta(Copy& c, const Tag& t, const Payload& data) {
  const uint32_t unit = hash_unit();
  const std::vector<bool> send = units_to_send(*data, unit, t.copy_zero ? nullptr : t.hashes.get());
  auto payload = make_payload(wire::encode_sync_delta(*data, unit, send));
  const uint64_t map_bytes = (send.size() + 7) / 8;
  const uint64_t data_bytes = payload->size() - map_bytes;
  c.session->diffed(t.region, data_bytes);
  for (Outgoing& o : c.queue) {
    if (o.ready || o.slot != t.slot) continue;
    o.header = header(wire::FrameType::kSyncDelta, c.id);
    o.header.sequence = t.stamp;
    o.header.count = t.region;
    o.header.lba = map_->first_lba(t.region);
    o.header.status = unit;
    o.header.flags = wire::kFlagLast;
    // The placeholder reserved room for the whole region; the delta is usually far smaller.
    const uint64_t bytes = wire::max_frame_size(payload->size());
    c.queued_bytes = c.queued_bytes - o.bytes + bytes;
    o.bytes = bytes;
    o.payload = std::move(payload);
    o.data_bytes = data_bytes;
    o.ready = true;
    break;
  }
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
