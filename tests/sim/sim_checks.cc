// Simulated world, part 2: the controller, faults, the workload and the invariant checks.
#include <cstdarg>
#include <cstdio>

#include "tests/sim/sim_world_impl.h"

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"  // GCC 12 false positive on variants
#endif

namespace tandem::sim::detail {
// ---- Controller ----

void World::on_out_of_sync(const repl::CopyOutOfSync& o) {
  Replica& r = replicas_[o.copy - 1];
  log("out of sync %u: %s (acked %llu)", o.copy, o.reason.c_str(),
      (unsigned long long)o.acked_through);
  // The controller's record changes when it confirms (a copy that was not in sync needs no
  // confirmation and is not in the record anyway).
  if (!o.needs_confirm) view_.erase(o.copy);
  if (!r.in_outage) {
    r.in_outage = true;
    r.left_at = o.acked_through;
    r.outage_sent = r.outage_sessions = 0;
    r.unknown.clear();
  }
  const uint32_t k = o.copy;
  if (o.needs_confirm) {
    const uint64_t joins = joins_[k];
    at(rng_.range(0, 2000), [this, k, joins] {
      if (joins_[k] == joins) view_.erase(k);  // unless it came back in sync meanwhile
      master_->confirm_out_of_sync(k);
      drain_master();
    });
  }
  at(rng_.range(500, 5000), [this, k] { try_resync(k); });
}

void World::on_in_sync(const repl::CopyInSync& s) {
  Replica& r = replicas_[s.copy - 1];
  log("in sync %u at %llu", s.copy, (unsigned long long)s.sequence);
  view_.insert(s.copy);
  joined_at_[s.copy] = s.sequence;
  ++joins_[s.copy];
  ++summary_.resyncs_completed;
  if (!r.in_outage) return;
  uint64_t changed = 0;
  for (uint64_t g = 0; g < master_map_->region_count(); ++g) {
    if (master_map_->seq_of(g) > r.left_at || r.unknown.count(g)) ++changed;
  }
  summary_.sync_regions_allowed += changed;
  // Each session sends a region at most once and only changed ones (on_sync_data_sent), so
  // an outage costs at most one changed set per (interrupted) session.
  const uint64_t bound = changed * std::max<uint64_t>(1, r.outage_sessions);
  if (r.outage_sent > bound) {  // I6
    fail("replica " + std::to_string(r.id) + " resync sent " + std::to_string(r.outage_sent) +
         " regions, bound " + std::to_string(bound) + " (changed " + std::to_string(changed) + ")");
  }
  r.in_outage = false;
  r.outage_crashes = 0;
}

void World::on_sync_data_sent(Replica& r, uint64_t region) {
  ++summary_.sync_regions_sent;
  ++r.outage_sent;
  if (!r.session_sent.insert(region).second) {
    fail("replica " + std::to_string(r.id) + ": region " + std::to_string(region) +
         " sent twice in one resync session");
  }
  const uint64_t seq = master_map_->seq_of(region);
  const bool lost = r.unknown.count(region) != 0;
  if (!r.in_outage || (!(seq > r.left_at) && !lost) || (seq == 0 && !lost)) {  // I6
    fail("replica " + std::to_string(r.id) + ": resync sent region " + std::to_string(region) +
         " (master seq " + std::to_string(seq) + ") that did not change since " +
         std::to_string(r.left_at));
  }
}

void World::try_resync(uint32_t k) {
  Replica& r = replicas_[k - 1];
  if (master_->copy_state(k) != repl::CopyState::kOutOfSync || !r.alive ||
      r.link != LinkState::kUp) {
    return;
  }
  if (auto s = master_->start_resync(k); !s) {
    fail("start_resync: " + s.error().message);
    return;
  }
  ++r.outage_sessions;
  r.session_sent.clear();
  log("start resync %u at %llu", k, (unsigned long long)master_->last_sequence());
  drain_master();
}

// ---- Faults ----

void World::schedule_fault() {
  if (faults_left_ == 0 || quiescing_) return;
  at(rng_.range(1000, 20000), [this] {
    if (quiescing_ || faults_left_ == 0) return;
    --faults_left_;
    ++summary_.faults;
    const uint32_t k = uint32_t(rng_.range(1, p_.replicas));
    const uint64_t roll = rng_.below(100);
    if (roll < 45) {
      drop_link(k);
    } else if (roll < 85) {
      restart(k);
    } else {
      replicas_[k - 1].fail_next_op = true;
    }
    schedule_fault();
  });
}

void World::drop_link(uint32_t k) {
  Replica& r = replicas_[k - 1];
  if (r.link != LinkState::kUp) return;
  log("link %u down", k);
  r.link = LinkState::kDownUndetected;
  r.link_epoch++;
  at(rng_.range(0, 3000), [this, k] { detect(k); });
}

void World::detect(uint32_t k) {
  Replica& r = replicas_[k - 1];
  r.link = LinkState::kDown;
  master_->on_link_down(k);
  drain_master();
  if (!r.alive) return;
  r.engine->on_link_down();
  drain_replica(r);
  at(rng_.range(1000, 10000), [this, k] { heal(k); });
}

void World::heal(uint32_t k) {
  Replica& r = replicas_[k - 1];
  if (r.link != LinkState::kDown || !r.alive) return;
  log("link %u up", k);
  r.link = LinkState::kUp;
  r.dec_to_replica = wire::FrameDecoder();
  r.dec_to_master = wire::FrameDecoder();
  r.last_to_replica = r.last_to_master = now_;
  master_->on_link_up(k);
  at(rng_.range(200, 3000), [this, k] { try_resync(k); });
}

void World::restart(uint32_t k) {
  Replica& r = replicas_[k - 1];
  if (!r.alive) return;
  log("replica %u crashes", k);
  r.alive = false;
  r.incarnation++;
  r.inflight.clear();
  r.fail_next_op = false;
  r.outage_crashes++;
  drop_link(k);
  at(rng_.range(2000, 15000), [this, k] { revive(k); });
}

void World::revive(uint32_t k) {
  Replica& r = replicas_[k - 1];
  r.disk->crash(rng_);
  r.mstore.crash(rng_);
  r.engine.reset();
  r.map.reset();
  auto m = repl::RegionMap::open(&r.mstore, geo_);
  if (!m) {
    fail("region map did not reopen: " + m.error().message);
    return;
  }
  r.map.emplace(std::move(*m));
  r.map->set_mark_group(p_.mark_group);
  repl::ReplicaConfig rc;
  rc.volume = volume_;
  rc.copy_id = r.id;
  rc.generation = 3;
  rc.block_size = kBlockSize;
  rc.block_count = p_.blocks;
  rc.summary_entries_per_frame = 1 + rng_.below(8);
  r.engine = std::make_unique<repl::ReplicaEngine>(rc, &*r.map);
  r.stream_base.reset();
  r.stream_seqs.clear();
  r.alive = true;
  log("replica %u restarted (%llu unknown regions)", k, (unsigned long long)r.map->dirty_on_disk());
  if (r.link == LinkState::kDown) at(rng_.range(500, 3000), [this, k] { heal(k); });
}

// ---- Workload ----

void World::issue_next() {
  if (issued_ >= p_.ops || failed_) return;
  ++issued_;
  repl::Request req;
  req.id = next_id_++;
  const uint64_t roll = rng_.below(100);
  req.kind = roll < 60   ? repl::OpKind::kWrite
             : roll < 72 ? repl::OpKind::kUnmap
             : roll < 84 ? repl::OpKind::kFlush
             : roll < 94 ? repl::OpKind::kCompareAndWrite
                         : repl::OpKind::kWrite;
  req.fua = req.kind == repl::OpKind::kWrite && rng_.chance(15);
  const uint64_t hot = std::max<uint64_t>(16, p_.blocks / 8);
  req.lba = rng_.chance(50) ? rng_.below(hot) : rng_.below(p_.blocks);
  req.blocks = std::min<uint64_t>(rng_.range(1, 16), p_.blocks - req.lba);
  if (roll >= 94) {
    // The bytes the blocks hold already (as far as the master's cache shows): a region that
    // changed on the master without changing its data, which resync finds equal by hash.
    req.data = repl::make_payload(master_disk_.read(req.lba, req.blocks));
  } else if (req.kind == repl::OpKind::kWrite || req.kind == repl::OpKind::kCompareAndWrite) {
    std::vector<uint8_t> data(req.blocks * kBlockSize);
    for (size_t i = 0; i < data.size(); i += 8) {
      const uint64_t v = rng_.next();
      std::memcpy(data.data() + i, &v, 8);
    }
    req.data = repl::make_payload(std::move(data));
  }
  if (req.kind == repl::OpKind::kCompareAndWrite) {
    std::vector<uint8_t> cmp = master_disk_.read(req.lba, req.blocks);
    if (rng_.chance(20)) cmp[rng_.below(cmp.size())] ^= 0x5A;
    req.compare = repl::make_payload(std::move(cmp));
  }
  Outstanding o{req.kind, req.lba, req.blocks, req.fua, {}};
  if (req.kind == repl::OpKind::kFlush) o.floor = acked_floor_;
  outstanding_[req.id] = std::move(o);
  master_->submit(std::move(req));
  drain_master();
}

// A copy's block may carry an older write's tag with the bytes of write `seq` or a later one:
// resync compares units by hash and leaves equal ones alone (resync.h), so the bytes are what
// must be durable.
bool World::holds_write(const Disk& d, uint64_t b, uint64_t seq) const {
  for (auto w = writes_.lower_bound(seq); w != writes_.end(); ++w) {
    if (b < w->second.lba || b >= w->second.lba + w->second.blocks) continue;
    const uint8_t* bytes = w->second.kind == repl::StoreKind::kUnmap || !w->second.data
                               ? nullptr
                               : w->second.data->data() + (b - w->second.lba) * kBlockSize;
    if (d.stable_holds(b, bytes)) return true;
  }
  return false;
}

void World::on_complete(const repl::CompleteOp& c) {
  auto it = outstanding_.find(c.id);
  if (it == outstanding_.end()) {
    fail("completion for unknown op " + std::to_string(c.id));
    return;
  }
  Outstanding o = std::move(it->second);
  outstanding_.erase(it);
  const uint64_t seq = c.sequence;
  log("complete op %llu seq=%llu status=%d", (unsigned long long)c.id, (unsigned long long)seq,
      int(c.result.status));
  if (!c.result.ok()) {
    if (!(o.kind == repl::OpKind::kCompareAndWrite &&
          c.result.status == core::IoStatus::kMiscompare)) {
      fail("op " + std::to_string(c.id) + " failed with status " +
           std::to_string(int(c.result.status)));
      return;
    }
  } else {
    // I3: local write done, every copy the controller counts as in sync has acked.
    if (seq == 0 || !master_done_seqs_.count(seq)) {
      fail("op seq " + std::to_string(seq) + " acked before its local store op finished");
      return;
    }
    for (uint32_t k : view_) {
      // A copy that turned in sync at or after seq got it by resync, not by an ACK.
      if (seq > joined_at_[k] && !acks_[k].count(seq)) {
        fail("op seq " + std::to_string(seq) + " acked without in-sync replica " +
             std::to_string(k) + "'s ACK");
        return;
      }
    }
    if (o.kind == repl::OpKind::kFlush) {
      auto check = [&](const Disk& d, const std::string& who) {  // I5
        for (uint64_t b = 0; b < p_.blocks; ++b) {
          if (d.stable_seq(b) < o.floor[b] && !holds_write(d, b, o.floor[b])) {
            fail("FLUSH seq " + std::to_string(seq) + " completed but " + who + " block " +
                 std::to_string(b) + " (cur seq " + std::to_string(d.cur_seq(b)) +
                 ", master region seq " +
                 std::to_string(master_map_->seq_of(master_map_->region_of(b))) +
                 ") is stable only at seq " + std::to_string(d.stable_seq(b)) + " < " +
                 std::to_string(o.floor[b]));
            return;
          }
        }
      };
      check(master_disk_, "master");
      for (uint32_t k : view_) check(*replicas_[k - 1].disk, "replica " + std::to_string(k));
    } else {
      for (uint64_t b = o.lba; b < o.lba + o.blocks; ++b) {
        if (master_disk_.cur_seq(b) < seq) {
          fail("acked seq " + std::to_string(seq) + " not on the master");
          return;
        }
        if (o.fua) {
          if (master_disk_.stable_seq(b) < seq) fail("FUA seq not stable on the master");
          for (uint32_t k : view_) {
            const Disk& d = *replicas_[k - 1].disk;
            if (d.stable_seq(b) < seq && !holds_write(d, b, seq)) {
              fail("FUA seq " + std::to_string(seq) + " not stable on replica " +
                   std::to_string(k));
            }
          }
        }
        if (acked_floor_[b] > seq) {
          fail("overlapping writes completed out of sequence order: seq " + std::to_string(seq) +
               " after " + std::to_string(acked_floor_[b]));
          return;
        }
        acked_floor_[b] = seq;
      }
    }
  }
  ++summary_.ops_completed;
  if (c.id == kFinalFlushId) {
    final_done_ = true;
    return;
  }
  ++completed_;
  if (issued_ < p_.ops) at(rng_.range(0, 200), [this] { issue_next(); });
  if (completed_ == p_.ops) {
    quiescing_ = true;
    quiesce_start_ = now_;
    log("quiesce");
  }
}

bool World::all_synced() const {
  for (const Replica& r : replicas_) {
    if (!r.alive || r.link != LinkState::kUp || !view_.count(r.id) ||
        master_->copy_state(r.id) != repl::CopyState::kInSync) {
      return false;
    }
  }
  return master_->active_ops() == 0 && master_->queued_requests() == 0;
}

void World::final_checks() {
  // I8: the master holds exactly the replay of every sequenced write in sequence order.
  Disk model(kBlockSize, p_.blocks);
  for (const auto& [seq, w] : writes_) {
    (void)model.write(w.lba, w.blocks, w.kind == repl::StoreKind::kWrite ? w.data->data() : nullptr,
                      seq, false);
  }
  if (model.image() != master_disk_.image()) {
    fail("master differs from the sequence-order replay of its writes");
    return;
  }
  if (master_disk_.stable_image() != master_disk_.image()) fail("master not stable after flush");
  const uint64_t last = master_->last_sequence();
  for (Replica& r : replicas_) {  // I9 and I2
    const std::string who = "replica " + std::to_string(r.id);
    if (r.disk->image() != master_disk_.image()) {
      for (uint64_t b = 0; b < p_.blocks; ++b) {
        if (r.disk->read(b, 1) != master_disk_.read(b, 1)) {
          fail(who + " differs from the master at block " + std::to_string(b) + " (region " +
               std::to_string(master_map_->region_of(b)) + ", replica seq " +
               std::to_string(r.disk->cur_seq(b)) + ", master seq " +
               std::to_string(master_disk_.cur_seq(b)) + ")");
          return;
        }
      }
    }
    if (r.disk->stable_image() != master_disk_.image()) fail(who + " not stable after flush");
    auto d = master_map_->diff(*r.map);
    if (!d || !d->empty()) {
      fail(who + "'s region map differs from the master's in " + std::to_string(d ? d->size() : 0) +
           " regions");
    }
    if (!r.engine->consistent() || r.engine->applied_seq() != last) {
      fail(who + " not consistent at the master's last sequence " + std::to_string(last) +
           " (applied " + std::to_string(r.engine->applied_seq()) + ")");
    }
    if (!r.stream_base || r.stream_seqs.size() != last - *r.stream_base ||
        (!r.stream_seqs.empty() &&
         (*r.stream_seqs.begin() != *r.stream_base + 1 || *r.stream_seqs.rbegin() != last))) {
      fail(who + " applied its stream with gaps");
    }
  }
}

SimSummary World::run() {
  for (uint32_t i = 0; i < p_.qd; ++i) at(rng_.range(0, 100), [this] { issue_next(); });
  schedule_fault();
  while (!failed_ && !final_done_) {
    if (quiescing_ && !final_issued_ && all_synced()) {
      final_issued_ = true;
      outstanding_[kFinalFlushId] = Outstanding{repl::OpKind::kFlush, 0, 0, false, acked_floor_};
      repl::Request req;
      req.id = kFinalFlushId;
      req.kind = repl::OpKind::kFlush;
      master_->submit(req);
      drain_master();
      continue;
    }
    if (quiescing_ && now_ > quiesce_start_ + kQuiesceLimitUs) {
      fail("resync did not terminate within 10 s of simulated time");  // I7
      break;
    }
    if (!step()) {
      fail(std::string(quiescing_ ? "stuck at quiesce: copies not in sync and nothing scheduled"
                                  : "stuck: requests outstanding and nothing scheduled") +
           "\n" + master_->debug_string());
      break;
    }
  }
  if (!failed_) final_checks();
  summary_.ok = !failed_;
  summary_.failure = failure_;
  summary_.sim_time_us = now_;
  summary_.events = event_count_;
  summary_.sync_regions_sent = master_->stats().sync_regions_sent;
  summary_.budget_waits = master_->stats().frames_queued_for_budget;
  if (trace_) summary_.trace = trace_text();
  return summary_;
}

}  // namespace tandem::sim::detail
