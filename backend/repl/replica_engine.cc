#include "backend/repl/replica_engine.h"

#include <algorithm>
#include <string_view>
#include <utility>

#include "backend/repl/block_diff.h"
#include "backend/wire/sync_delta.h"

namespace tandem::backend::repl {
namespace {

using wire::FrameType;
using wire::NackReason;

}  // namespace

const char* to_string(ReplicaState s) {
  switch (s) {
    case ReplicaState::kIdle:
      return "idle";
    case ReplicaState::kSyncing:
      return "syncing";
    case ReplicaState::kStreaming:
      return "streaming";
    case ReplicaState::kFailed:
      return "failed";
  }
  return "unknown";
}

ReplicaEngine::ReplicaEngine(const ReplicaConfig& config, RegionMap* map)
    : cfg_(config), map_(map) {}

ReplicaEngine::ReplicaEngine(const ReplicaConfig& config, RegionMap* map, uint64_t in_sync_at)
    : cfg_(config),
      map_(map),
      state_(ReplicaState::kStreaming),
      expected_(in_sync_at + 1),
      applied_(in_sync_at),
      consistent_at_rest_(true) {}

void ReplicaEngine::become_consistent() {
  state_ = ReplicaState::kStreaming;
  consistent_at_rest_ = true;
  touched_unsynced_.clear();
  synced_.clear();
}

ReplResult<void> ReplicaEngine::set_generation(uint64_t generation) {
  if (generation < cfg_.generation) {
    return core::fail(ReplError{ReplErrc::kInvalid, "generations never go back"});
  }
  if (generation == cfg_.generation) return {};
  cfg_.generation = generation;
  // A new master: its stream starts with its own SYNC_REQUEST.
  held_.clear();
  if (state_ != ReplicaState::kFailed) state_ = ReplicaState::kIdle;
  return {};
}

void ReplicaEngine::on_link_down() {
  held_.clear();
  if (state_ != ReplicaState::kFailed) state_ = ReplicaState::kIdle;
}

std::vector<ReplicaAction> ReplicaEngine::take_actions() {
  std::vector<ReplicaAction> out;
  out.swap(actions_);
  return out;
}

wire::FrameHeader ReplicaEngine::reply(FrameType type) const {
  wire::FrameHeader h;
  h.type = type;
  h.volume = cfg_.volume;
  h.copy_id = cfg_.copy_id;
  h.generation = cfg_.generation;
  return h;
}

void ReplicaEngine::nack(const wire::FrameHeader& in, NackReason reason, const char* text,
                         uint64_t generation) {
  wire::FrameHeader h = reply(FrameType::kNack);
  if (generation != 0) h.generation = generation;
  h.volume = in.volume;
  h.copy_id = in.copy_id;
  h.sequence = in.sequence;
  h.status = uint32_t(reason);
  std::string_view t(text);
  actions_.push_back(ReplicaSendFrame{h, make_payload(std::vector<uint8_t>(t.begin(), t.end()))});
}

void ReplicaEngine::ack(uint64_t seq, uint32_t status) {
  wire::FrameHeader h = reply(FrameType::kAck);
  h.sequence = seq;
  h.status = status;
  actions_.push_back(ReplicaSendFrame{h, nullptr});
}

void ReplicaEngine::fail_store(const wire::FrameHeader& h) {
  state_ = ReplicaState::kFailed;
  held_.clear();
  nack(h, NackReason::kIoError, "local store or region map failed");
}

void ReplicaEngine::on_frame(wire::Frame f) {
  const wire::FrameHeader& h = f.header;
  switch (h.type) {
    case FrameType::kWrite:
    case FrameType::kUnmap:
    case FrameType::kWriteSame:
    case FrameType::kFlush:
    case FrameType::kSyncRequest:
    case FrameType::kSyncHashRequest:
    case FrameType::kSyncDelta:
    case FrameType::kSyncDone:
      break;
    default:
      return;  // HELLO/HEARTBEAT belong to the link; ACK/NACK/summaries are master-bound
  }
  if (h.volume != cfg_.volume || h.copy_id != cfg_.copy_id) {
    nack(h, NackReason::kUnknownCopy, "no such copy here");
    return;
  }
  if (h.generation < cfg_.generation) {
    nack(h, NackReason::kStaleGeneration, "sender was deposed");
    return;
  }
  if (h.generation > cfg_.generation) {
    // Answered in the sender's generation: a NACK in our older one would be ignored by the new
    // master, whose copy would then wait for a REGION_SUMMARY forever. This way the copy drops
    // out of sync there and the resync is retried once the controller announced the generation.
    nack(h, NackReason::kNotReady, "newer generation not announced by the controller",
         h.generation);
    return;
  }
  if (state_ == ReplicaState::kFailed) {
    nack(h, NackReason::kIoError, "copy failed; needs reopening");
    return;
  }
  handle(f);
}

void ReplicaEngine::handle(wire::Frame& f) {
  const wire::FrameHeader& h = f.header;
  switch (h.type) {
    case FrameType::kSyncRequest:
      // Rebase: the stream continues at S+1; everything <= S comes as resync data.
      for (uint64_t r : touched_unsynced_) {
        if (auto a = map_->assign(r, kUnknownSeq, expected_ - 1); !a) {
          fail_store(h);
          return;
        }
      }
      touched_unsynced_.clear();
      synced_.clear();
      delta_left_.clear();
      consistent_at_rest_ = false;
      held_.clear();
      ++stream_;
      expected_ = h.sequence + 1;
      applied_ = h.sequence;
      sync_base_ = h.sequence;
      done_above_.clear();
      done_seen_ = false;
      state_ = ReplicaState::kSyncing;
      send_summary();
      return;
    case FrameType::kSyncHashRequest:
      if (state_ != ReplicaState::kSyncing) {
        nack(h, NackReason::kNotReady, "no resync in progress");
        return;
      }
      // Any moment after the rebase will do (resync.h 3a), so held frames do not matter.
      if (h.sequence == sync_base_) read_for_hashes(h);
      return;  // else an abandoned session's request: its answer would be ignored
    case FrameType::kSyncDelta:
    case FrameType::kSyncDone:
      if (state_ != ReplicaState::kSyncing) {
        nack(h, NackReason::kNotReady, "no resync in progress");
        return;
      }
      if (!held_.empty()) {
        state_ = ReplicaState::kIdle;
        held_.clear();
        nack(h, NackReason::kOutOfOrder, "resync frame overtook held writes");
        return;
      }
      if (h.type == FrameType::kSyncDelta) {
        apply_sync_delta(f);
      } else {
        done_point_ = h.sequence;
        done_seen_ = true;
        if (applied_ >= done_point_) become_consistent();
      }
      return;
    default:
      break;
  }
  // WRITE / UNMAP / WRITE_SAME / FLUSH.
  if (state_ == ReplicaState::kIdle) {
    nack(h, NackReason::kNotReady, "no stream: waiting for SYNC_REQUEST");
    return;
  }
  const uint64_t s = h.sequence;
  if (s < expected_) return;  // a duplicate of something applied: nothing to do
  if (s == expected_) {
    apply(f);
    drain_held();
    return;
  }
  if (s - expected_ <= cfg_.reorder_window && held_.size() < cfg_.reorder_window) {
    held_.emplace(s, std::move(f));
    return;
  }
  state_ = ReplicaState::kIdle;
  held_.clear();
  nack(h, NackReason::kOutOfOrder, "sequence gap beyond the reorder window");
}

void ReplicaEngine::drain_held() {
  while (!held_.empty() && held_.begin()->first == expected_ &&
         (state_ == ReplicaState::kSyncing || state_ == ReplicaState::kStreaming)) {
    wire::Frame f = std::move(held_.begin()->second);
    held_.erase(held_.begin());
    apply(f);
  }
}

void ReplicaEngine::apply(wire::Frame& f) {
  const wire::FrameHeader& h = f.header;
  const uint64_t s = h.sequence;
  const uint32_t bs = cfg_.block_size;
  Pending p;
  p.stream = stream_;
  p.seq = s;
  p.type = h.type;
  bool valid = true;
  switch (h.type) {
    case FrameType::kWrite: {
      const uint64_t blocks = f.payload.size() / bs;
      valid = f.payload.size() % bs == 0 && valid_range(h.lba, blocks);
      p.op = StoreOp{0,
                     StoreKind::kWrite,
                     h.lba,
                     blocks,
                     (h.flags & wire::kFlagFua) != 0,
                     make_payload(std::move(f.payload)),
                     s};
      break;
    }
    case FrameType::kUnmap:
      valid = valid_range(h.lba, h.count);
      p.op = StoreOp{0, StoreKind::kUnmap, h.lba, h.count, false, nullptr, s};
      break;
    case FrameType::kWriteSame: {
      // Expanded here: one block repeated `count` times (SBC-3 WRITE SAME).
      valid = f.payload.size() == bs && valid_range(h.lba, h.count) &&
              h.count <= wire::kMaxPayload / bs;
      if (!valid) break;
      const bool zeros =
          std::all_of(f.payload.begin(), f.payload.end(), [](uint8_t b) { return b == 0; });
      if (zeros && (h.flags & wire::kFlagUnmap)) {
        p.op = StoreOp{0, StoreKind::kUnmap, h.lba, h.count, false, nullptr, s};
      } else {
        std::vector<uint8_t> data;
        data.reserve(h.count * bs);
        for (uint64_t i = 0; i < h.count; ++i) {
          data.insert(data.end(), f.payload.begin(), f.payload.end());
        }
        p.op = StoreOp{0,
                       StoreKind::kWrite,
                       h.lba,
                       h.count,
                       (h.flags & wire::kFlagFua) != 0,
                       make_payload(std::move(data)),
                       s};
      }
      break;
    }
    case FrameType::kFlush:
      p.op = StoreOp{0, StoreKind::kFlush, 0, 0, false, nullptr, s};
      ++expected_;
      add_local(std::move(p), true);
      return;
    default:
      return;
  }
  if (!valid) {
    // Malformed for this volume: the stream cannot continue without this sequence.
    state_ = ReplicaState::kIdle;
    held_.clear();
    nack(h, NackReason::kBadRequest, "block range outside the volume or bad payload");
    return;
  }
  // Write-ahead: the map says "dirty at s" before the data can reach the store.
  if (auto m = map_->mark(p.op.lba, p.op.blocks, s); !m) {
    fail_store(h);
    return;
  }
  if (!consistent_at_rest_) {
    const uint64_t r1 = map_->region_of(p.op.lba + p.op.blocks - 1);
    for (uint64_t r = map_->region_of(p.op.lba); r <= r1; ++r) {
      if (!synced_.count(r)) touched_unsynced_.insert(r);
    }
  }
  ++expected_;
  add_local(std::move(p), false);
}

void ReplicaEngine::read_for_hashes(const wire::FrameHeader& h) {
  const uint64_t region = h.count;
  const uint32_t unit = h.status;
  if (region >= map_->region_count() || !wire::valid_hash_unit(unit) || unit < cfg_.block_size) {
    state_ = ReplicaState::kIdle;
    nack(h, NackReason::kBadRequest, "bad SYNC_HASH_REQUEST");
    return;
  }
  Pending p;
  p.stream = stream_;
  p.type = FrameType::kSyncHashRequest;
  p.region = region;
  p.stamp = h.sequence;
  p.unit = unit;
  const uint64_t lba = map_->first_lba(region), blocks = map_->blocks_in(region);
  p.op = StoreOp{0, StoreKind::kRead, lba, blocks, false, nullptr, 0, true};
  add_local(std::move(p), false);
}

void ReplicaEngine::apply_sync_delta(const wire::Frame& f) {
  const wire::FrameHeader& h = f.header;
  const uint32_t bs = cfg_.block_size;
  const uint64_t region = h.count;
  const uint64_t stamp = h.sequence;
  const uint32_t unit = h.status;
  bool ok = region < map_->region_count() && wire::valid_hash_unit(unit) && unit >= bs &&
            (h.flags & wire::kFlagLast) != 0 && h.lba == map_->first_lba(region);
  std::vector<wire::DeltaRun> runs;
  if (ok) {
    auto decoded = wire::decode_sync_delta(f.payload, map_->blocks_in(region) * bs, unit);
    ok = decoded.ok();
    if (ok) runs = std::move(*decoded);
  }
  // Link order puts every write <= the master's read position before this frame, so a write
  // of this stream (> S) in the region newer than the stamp means the stream is broken. An
  // entry from before the stream (<= S) above the stamp is not: it is a write this master
  // never had (an earlier master's, never acknowledged, from before a promotion), and the
  // master sends the region precisely to overwrite it (the units that differ).
  if (ok && stamp != kUnknownSeq && !map_->unknown(region) && map_->seq_of(region) > stamp &&
      map_->seq_of(region) > sync_base_) {
    ok = false;
  }
  if (!ok) {
    state_ = ReplicaState::kIdle;
    nack(h, NackReason::kBadRequest, "bad SYNC_DELTA");
    return;
  }
  // A flush issued after these writes covers them, and that flush's sequence is >= expected_.
  const uint64_t ticket = expected_ - 1;
  if (auto a = map_->assign(region, stamp, ticket); !a) {
    fail_store(h);
    return;
  }
  synced_.insert(region);
  touched_unsynced_.erase(region);
  if (runs.empty()) {
    region_applied(region, stamp);  // the copy held the master's region already
    return;
  }
  delta_left_[region] = runs.size();
  const uint64_t first = map_->first_lba(region);
  for (const wire::DeltaRun& run : runs) {
    Pending p;
    p.stream = stream_;
    p.type = FrameType::kSyncDelta;
    p.region = region;
    p.stamp = stamp;
    p.last = true;
    auto data = make_payload(std::vector<uint8_t>(f.payload.begin() + run.data,
                                                  f.payload.begin() + run.data + run.bytes));
    p.op = StoreOp{
        0, StoreKind::kWrite, first + run.offset / bs, run.bytes / bs, false, data, stamp, true};
    add_local(std::move(p), false);
  }
}

void ReplicaEngine::region_applied(uint64_t region, uint64_t stamp) {
  const wire::RegionEntry e{region, stamp};
  wire::FrameHeader s = reply(FrameType::kRegionSummary);
  s.sequence = applied_;
  s.count = 1;
  actions_.push_back(
      ReplicaSendFrame{s, make_payload(wire::encode_region_summary(std::span(&e, 1)))});
}

void ReplicaEngine::add_local(Pending p, bool barrier) {
  const uint64_t tag = next_tag_++;
  p.op.tag = tag;
  const uint64_t lba = p.op.lba, blocks = p.op.blocks;
  auto [it, inserted] = pending_.emplace(tag, std::move(p));
  if (order_.add(tag, lba, blocks, barrier)) actions_.push_back(ReplicaIssueStore{it->second.op});
}

void ReplicaEngine::advance(uint64_t seq) {
  if (seq == applied_ + 1) {
    ++applied_;
    while (done_above_.erase(applied_ + 1)) ++applied_;
  } else if (seq > applied_) {
    done_above_.insert(seq);
  }
}

void ReplicaEngine::on_store_done(uint64_t tag, core::IoResult result, Payload data) {
  auto it = pending_.find(tag);
  if (it == pending_.end()) return;
  Pending p = std::move(it->second);
  pending_.erase(it);
  for (uint64_t released : order_.complete(tag)) {
    auto r = pending_.find(released);
    if (r != pending_.end()) actions_.push_back(ReplicaIssueStore{r->second.op});
  }
  wire::FrameHeader h = reply(p.type);
  h.sequence = p.type == FrameType::kSyncDelta ? p.stamp : p.seq;
  if (!result.ok()) {
    // The copy no longer knows what it holds: the master must drop it and resync later.
    if (p.stream == stream_) fail_store(h);
    state_ = ReplicaState::kFailed;
    return;
  }
  if (p.type == FrameType::kFlush && consistent_at_rest_) {
    // Everything issued before the flush (sequences < it, resync data with tickets below it)
    // is stable now. Not while inconsistent: see touched_unsynced_.
    if (auto cp = map_->checkpoint(p.seq - 1); !cp) {
      if (p.stream == stream_) fail_store(h);
      state_ = ReplicaState::kFailed;
      return;
    }
  }
  if (p.stream != stream_ || state_ == ReplicaState::kFailed) return;  // an older stream
  if (p.type == FrameType::kSyncHashRequest) {
    if (state_ != ReplicaState::kSyncing || p.stamp != sync_base_) return;
    if (!data || data->size() != p.op.blocks * cfg_.block_size) {
      fail_store(h);
      return;
    }
    wire::FrameHeader r = reply(FrameType::kSyncHashes);
    r.sequence = p.stamp;
    r.count = p.region;
    r.status = p.unit;
    const auto hashes = hash_units(*data, p.unit);
    actions_.push_back(ReplicaSendFrame{r, make_payload(wire::encode_block_hashes(hashes))});
    return;
  }
  if (p.type == FrameType::kSyncDelta) {
    auto left = delta_left_.find(p.region);
    if (left != delta_left_.end() && --left->second == 0) {
      delta_left_.erase(left);
      region_applied(p.region, p.stamp);
    }
  } else {
    advance(p.seq);
    ack(p.seq, 0);
  }
  if (state_ == ReplicaState::kSyncing && done_seen_ && applied_ >= done_point_) {
    become_consistent();
  }
}

void ReplicaEngine::send_summary() {
  std::vector<wire::RegionEntry> entries;
  for (const RegionSeq& e : map_->summary()) entries.push_back({e.region, e.seq});
  const size_t per = std::max<size_t>(
      1, std::min(cfg_.summary_entries_per_frame, wire::kMaxSummaryEntriesPerFrame));
  size_t done = 0;
  do {
    const size_t n = std::min(per, entries.size() - done);
    wire::FrameHeader h = reply(FrameType::kRegionSummary);
    h.sequence = applied_;
    h.count = n;
    if (done + n == entries.size()) h.flags = wire::kFlagLast;
    auto payload = wire::encode_region_summary(std::span(entries.data() + done, n));
    actions_.push_back(ReplicaSendFrame{h, make_payload(std::move(payload))});
    done += n;
  } while (done < entries.size());
}

}  // namespace tandem::backend::repl
