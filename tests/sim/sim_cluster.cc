// Simulated cluster, part 1: nodes running the real engines, replication links, heartbeats,
// the master lease, and the controller applying the real failover rules.
#include <algorithm>
#include <cstdarg>
#include <cstdio>

#include "tests/sim/sim_cluster_impl.h"

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"  // GCC 12 false positive on variants
#endif

namespace tandem::sim::cluster {
ClusterWorld::ClusterWorld(uint64_t seed, bool trace)
    : SimLoop(trace, 600), seed_(seed), rng_(seed * 0x9E3779B97F4A7C15ull + 7), p_(rng_) {
  // Drawn apart from rng_ so that seeds without a spare run as they did before spares existed.
  p_.spares = Rng(seed ^ 0x5EED5EEDull).chance(50) ? 1 : 0;
  p_.mark_group = 1u << Rng(seed ^ 0x6D61726Bull).below(4);
  geo_ = repl::RegionGeometry{p_.blocks * kBlockSize, kBlockSize, p_.region_shift};
  for (size_t i = 0; i < volume_.size(); ++i)
    volume_[i] = uint8_t(seed >> (i % 8) * 8) ^ uint8_t(i);
  acked_floor_.assign(p_.blocks, 0);
  durable_floor_.assign(p_.blocks, 0);
  flushable_floor_.assign(p_.blocks, 0);
  nodes_.resize(p_.count());
  for (uint32_t id = 1; id <= p_.count(); ++id) {
    Node& n = node(id);
    n.id = id;
    fresh_copy(n);
    for (uint32_t k = 1; k <= p_.nodes; ++k) n.in_sync.insert(k), n.copies.insert(k);
    if (id <= p_.nodes) ctl_.copies[id] = CopyRec{};
    ctl_.nodes[id] = NodeRec{};
  }
  // A fresh volume: every copy is identical (all zeros) and in sync at sequence 0.
  Node& m = node(1);
  repl::MasterConfig mc;
  mc.volume = volume_;
  mc.generation = 1;
  mc.block_size = kBlockSize;
  mc.sync_hash_unit = p_.hash_unit;
  mc.block_count = p_.blocks;
  m.master = std::make_unique<repl::MasterEngine>(mc, &*m.map);
  for (uint32_t k = 2; k <= p_.nodes; ++k) {
    Node& r = node(k);
    r.replica = std::make_unique<repl::ReplicaEngine>(replica_config(r), &*r.map, 0);
    r.stream_owner = 1;
    link(1, k).up = true;
    if (!m.master->add_copy(k, true, true)) fail("add_copy");
    m.engine_copies.insert(k);
  }
  faults_left_ = p_.faults;
  summary_.params = p_.str();
}

// ---- Roles (what the volume host does when the catalogue changes) ----

repl::ReplicaConfig ClusterWorld::replica_config(const Node& n) {
  repl::ReplicaConfig rc;
  rc.volume = volume_;
  rc.copy_id = n.id;
  rc.generation = n.gen;
  rc.block_size = kBlockSize;
  rc.block_count = p_.blocks;
  rc.summary_entries_per_frame = 1 + rng_.below(8);
  return rc;
}

// The engine goes: store operations already handed to the store still land (the shell
// waits for them before reopening the copy); requests it held are answered NOT READY.
void ClusterWorld::drop_engine(Node& n) {
  for (auto& [tag, op] : n.inflight) exec(n, op, nullptr);
  n.inflight.clear();
  if (n.master) {
    n.reserved = std::max(n.reserved, n.master->last_sequence());
    for (uint32_t k = 1; k <= p_.count(); ++k) {
      if (k != n.id) link_break(n.id, k);
    }
    for (auto& [req, s] : n.serving) {
      const uint64_t op = s.op;
      const uint32_t a = s.attempt;
      at(net_latency(), [this, op, a] { reply(op, a, false); });
    }
    n.serving.clear();
    n.unconfirmed.clear();
  }
  n.master.reset();
  n.replica.reset();
  n.engine_copies.clear();
  n.stream_owner = 0;
  ++n.epoch;
}

// The copy was dropped from the catalogue: its files are deleted.
void ClusterWorld::wipe(Node& n) {
  drop_engine(n);
  fresh_copy(n);
  n.reserved = 0;
  log("node %u: copy removed, files deleted", n.id);
}

// Empty files: zeros and a map with every region at sequence 0.
void ClusterWorld::fresh_copy(Node& n) {
  n.disk = std::make_unique<Disk>(kBlockSize, p_.blocks);
  n.mstore = std::make_unique<SimRegionStore>();
  auto m = repl::RegionMap::create(n.mstore.get(), geo_);
  if (!m) {
    fail("map create: " + m.error().message);
    return;
  }
  n.map.emplace(std::move(*m));
  n.map->set_mark_group(p_.mark_group);
}

// ReplicatedVolume::set_peers: the engine's copies follow the catalogue's.
void ClusterWorld::sync_copy_set(Node& n) {
  for (auto it = n.engine_copies.begin(); it != n.engine_copies.end();) {
    const uint32_t k = *it;
    if (n.copies.count(k)) {
      ++it;
      continue;
    }
    (void)n.master->remove_copy(k);
    link_break(n.id, k);
    n.unconfirmed.erase(k);
    it = n.engine_copies.erase(it);
    log("node %u: copy %u removed", n.id, k);
  }
  for (uint32_t k : n.copies) {
    if (k == n.id || n.engine_copies.count(k)) continue;
    Link& l = link(n.id, k);
    if (!l.up && link_possible(n.id, k)) {
      l.up = true;
      l.to_replica = wire::FrameDecoder();
      l.to_master = wire::FrameDecoder();
      l.last_mk = l.last_km = now_;
    }
    if (!n.master->add_copy(k, false, l.up, n.in_sync.count(k) != 0)) fail("add_copy");
    n.engine_copies.insert(k);
    log("node %u: copy %u added", n.id, k);
  }
  drain_master(n);
}

void ClusterWorld::become_master(Node& n) {
  drop_engine(n);
  repl::MasterConfig mc;
  mc.volume = volume_;
  mc.generation = n.gen;
  mc.last_sequence = std::max(n.reserved, mgmt::first_sequence(n.gen));
  mc.block_size = kBlockSize;
  mc.sync_hash_unit = p_.hash_unit;
  mc.block_count = p_.blocks;
  n.master = std::make_unique<repl::MasterEngine>(mc, &*n.map);
  for (uint32_t k : n.copies) {
    if (k == n.id) continue;
    Link& l = link(n.id, k);
    l.up = link_possible(n.id, k);
    if (l.up) {
      l.to_replica = wire::FrameDecoder();
      l.to_master = wire::FrameDecoder();
      l.last_mk = l.last_km = now_;
    }
    // Not a fresh volume: every other copy is resynced from this one (ReplicatedVolume).
    if (!n.master->add_copy(k, false, l.up, n.in_sync.count(k) != 0)) fail("add_copy");
    n.engine_copies.insert(k);
  }
  n.fenced = !mgmt::lease_holds(n.lease_until, now()) || superseded(n);
  log("node %u is master at generation %llu from sequence %llu", n.id, (unsigned long long)n.gen,
      (unsigned long long)mc.last_sequence);
  drain_master(n);
}

void ClusterWorld::become_replica(Node& n) {
  if (n.master) ++summary_.demotions;
  drop_engine(n);
  n.replica = std::make_unique<repl::ReplicaEngine>(replica_config(n), &*n.map);
  log("node %u is a replica at generation %llu", n.id, (unsigned long long)n.gen);
}

// The node's role from its mirror of the catalogue.
void ClusterWorld::reconcile(Node& n) {
  if (!n.alive || failed_) return;
  if (n.master_id == n.id) {
    if (!n.master || n.master->generation() != n.gen) {
      become_master(n);
    } else {
      sync_copy_set(n);
    }
  } else if (!n.copies.count(n.id)) {
    if (n.master || n.replica) wipe(n);
  } else if (n.master || !n.replica) {
    become_replica(n);
  } else if (n.replica->generation() < n.gen) {
    (void)n.replica->set_generation(n.gen);
    drain_replica(n, n.stream_owner);
  }
}

// ---- Engines and stores ----

void ClusterWorld::exec(Node& n, const repl::StoreOp& op, repl::Payload* read) {
  std::string err;
  switch (op.kind) {
    case repl::StoreKind::kWrite:
      err = n.disk->write(op.lba, op.blocks, op.data->data(), 0, op.fua);
      break;
    case repl::StoreKind::kUnmap:
      err = n.disk->write(op.lba, op.blocks, nullptr, 0, false);
      break;
    case repl::StoreKind::kFlush:
      n.disk->flush();
      break;
    case repl::StoreKind::kRead:
      if (read) *read = repl::make_payload(n.disk->read(op.lba, op.blocks));
      break;
  }
  if (!err.empty()) fail("node " + std::to_string(n.id) + ": " + err);
}

void ClusterWorld::store_done(uint32_t id, uint64_t inc, uint64_t epoch, uint64_t tag) {
  Node& n = node(id);
  if (!n.alive || n.inc != inc || n.epoch != epoch) return;
  auto it = n.inflight.find(tag);
  if (it == n.inflight.end()) return;
  repl::StoreOp op = it->second;
  n.inflight.erase(it);
  repl::Payload data;
  exec(n, op, &data);
  if (n.master) {
    n.master->on_store_done(tag, core::IoResult{}, data);
    drain_master(n);
  } else if (n.replica) {
    n.replica->on_store_done(tag, core::IoResult{}, data);
    drain_replica(n, n.stream_owner);
  }
}

void ClusterWorld::drain_master(Node& n) {
  while (n.master && !failed_) {
    auto actions = n.master->take_actions();
    if (actions.empty()) return;
    for (auto& a : actions) {
      std::visit(Overloaded{
                     [&](repl::IssueStore& is) {
                       n.inflight[is.op.tag] = is.op;
                       at(store_latency(), [this, id = n.id, inc = n.inc, ep = n.epoch,
                                            tag = is.op.tag] { store_done(id, inc, ep, tag); });
                     },
                     [&](repl::SendFrame& sf) { send(n.id, sf.copy, sf.header, sf.payload, true); },
                     [&](repl::CompleteOp& c) { complete(n, c); },
                     [&](repl::CopyOutOfSync& o) {
                       log("node %u: copy %u out of sync (%s)", n.id, o.copy, o.reason.c_str());
                       if (o.needs_confirm) {
                         n.unconfirmed.insert(o.copy);
                         report_out_of_sync(n, o.copy);
                       }
                     },
                     [&](repl::CopyInSync& s) {
                       log("node %u: copy %u in sync at %llu", n.id, s.copy,
                           (unsigned long long)s.sequence);
                       ++summary_.resyncs;
                     },
                     [&](repl::Deposed& d) {
                       log("node %u deposed (generation %llu known)", n.id,
                           (unsigned long long)d.newer_generation);
                     },
                 },
                 a);
      if (failed_ || !n.master) return;
    }
  }
}

void ClusterWorld::drain_replica(Node& n, uint32_t to) {
  while (n.replica && !failed_) {
    auto actions = n.replica->take_actions();
    if (actions.empty()) return;
    for (auto& a : actions) {
      std::visit(Overloaded{
                     [&](repl::ReplicaIssueStore& is) {
                       n.inflight[is.op.tag] = is.op;
                       at(store_latency(), [this, id = n.id, inc = n.inc, ep = n.epoch,
                                            tag = is.op.tag] { store_done(id, inc, ep, tag); });
                     },
                     [&](repl::ReplicaSendFrame& sf) {
                       if (to != 0) send(to, n.id, sf.header, sf.payload, false);
                     },
                 },
                 a);
      if (failed_) return;
    }
  }
}

// The master shell answers the client: never GOOD while fenced (C1).
void ClusterWorld::complete(Node& n, const repl::CompleteOp& c) {
  auto it = n.serving.find(c.id);
  if (it == n.serving.end()) return;
  const Node::Serving s = it->second;
  n.serving.erase(it);
  bool ok = c.result.ok();
  if (ok && n.fenced) {
    ok = false;
    ++summary_.fenced_answers;
  }
  if (ok) {
    const uint64_t g = n.master->generation();
    if (ctl_.gen != g || ctl_.master != n.id) {
      fail("split brain: node " + std::to_string(n.id) + " acknowledged op " +
           std::to_string(s.op) + " at generation " + std::to_string(g) +
           " while the catalogue has node " + std::to_string(ctl_.master) + " at generation " +
           std::to_string(ctl_.gen));  // C1
      return;
    }
    if (now() > n.lease_until + kFencePollUs) {
      fail("node " + std::to_string(n.id) + " acknowledged op " + std::to_string(s.op) +
           " after its lease ended at " + std::to_string(n.lease_until));  // C1
      return;
    }
  }
  if (ok) on_good(s.op);
  log("node %u answers op %llu attempt %u %s", n.id, (unsigned long long)s.op, s.attempt,
      ok ? "GOOD" : "NOT READY");
  at(net_latency(), [this, op = s.op, a = s.attempt, ok] { reply(op, a, ok); });
}

// ---- Replication links ----

bool ClusterWorld::link_possible(uint32_t m, uint32_t k) {
  return node(m).alive && node(k).alive && !link(m, k).cut;
}

void ClusterWorld::link_break(uint32_t m, uint32_t k) {
  Link& l = link(m, k);
  if (!l.up) return;
  l.up = false;
  ++l.epoch;
  log("link %u-%u down", m, k);
  at(rng_.range(0, 300'000), [this, m, k, ep = node(m).epoch, kep = node(k).epoch] {
    Node& mn = node(m);
    if (mn.alive && mn.master && mn.epoch == ep) {
      mn.master->on_link_down(k);
      drain_master(mn);
    }
    Node& kn = node(k);
    if (kn.alive && kn.replica && kn.epoch == kep && kn.stream_owner == m) {
      kn.replica->on_link_down();
      kn.stream_owner = 0;
      drain_replica(kn, 0);
    }
  });
  at(rng_.range(500'000, 2'000'000), [this, m, k] { link_try(m, k); });
}

void ClusterWorld::link_try(uint32_t m, uint32_t k) {
  Link& l = link(m, k);
  Node& mn = node(m);
  if (l.up || !mn.master || !link_possible(m, k)) {
    if (!l.up && mn.master) at(rng_.range(500'000, 2'000'000), [this, m, k] { link_try(m, k); });
    return;
  }
  l.up = true;
  l.to_replica = wire::FrameDecoder();
  l.to_master = wire::FrameDecoder();
  l.last_mk = l.last_km = now_;
  log("link %u-%u up", m, k);
  mn.master->on_link_up(k);
}

void ClusterWorld::send(uint32_t m, uint32_t k, const wire::FrameHeader& h, const repl::Payload& p,
                        bool to_replica) {
  Link& l = link(m, k);
  if (!l.up) return;
  std::vector<uint8_t> bytes;
  std::span<const uint8_t> payload;
  if (p) payload = std::span<const uint8_t>(*p);
  if (auto enc = wire::encode(h, payload, rng_.chance(10), bytes); !enc) {
    fail(std::string("encode ") + wire::to_string(h.type) + ": " + enc.error().message);
    return;
  }
  uint64_t& last = to_replica ? l.last_mk : l.last_km;
  const uint64_t t = std::max(now_ + net_latency(), last);
  last = t;
  at(t - now_, [this, m, k, ep = l.epoch, to_replica, bytes = std::move(bytes)] {
    Link& l = link(m, k);
    if (l.epoch != ep || !l.up) return;
    wire::FrameDecoder& dec = to_replica ? l.to_replica : l.to_master;
    std::vector<wire::Frame> frames;
    std::span<const uint8_t> in(bytes);
    while (!in.empty()) {
      auto step = dec.feed(in);
      if (!step) {
        fail("decode: " + step.error().message);
        return;
      }
      in = in.subspan(step->consumed);
      if (step->status == wire::FrameDecoder::Status::kFrame) frames.push_back(dec.take());
    }
    for (const wire::Frame& f : frames) {
      if (failed_) return;
      if (to_replica) {
        Node& kn = node(k);
        if (!kn.alive) return;
        if (!kn.replica) {  // ReplicaHost: no such copy here (yet); the NACK echoes the header
          wire::FrameHeader n = f.header;
          n.type = wire::FrameType::kNack;
          n.flags = 0;
          n.status = uint32_t(wire::NackReason::kUnknownCopy);
          n.count = 0;
          send(m, k, n, nullptr, false);
          continue;
        }
        // ReplicaCopy: frames on another connection start a new stream; every answer goes on
        // the connection that sent the latest frame.
        if (kn.stream_owner != m) {
          if (kn.stream_owner != 0) kn.replica->on_link_down();
          kn.stream_owner = m;
        }
        kn.replica->on_frame(f);
        drain_replica(kn, m);
      } else {
        Node& mn = node(m);
        if (!mn.alive || !mn.master) return;
        mn.master->on_frame(k, f);
        drain_master(mn);
      }
    }
  });
}

// ---- Heartbeats, the lease, the shell's tick ----

void ClusterWorld::heartbeat(uint32_t id) {
  at(kHeartbeatUs - 50'000 + rng_.below(100'000), [this, id] { heartbeat(id); });
  Node& n = node(id);
  if (!n.alive) return;
  std::vector<CopyReport> reports;
  if (n.master) {
    const uint64_t region = n.map->region_bytes();
    const uint64_t seq = next_report_seq(n);
    for (uint32_t k : n.engine_copies) {
      auto pr = n.master->copy_progress(k);
      if (!pr) continue;
      CopyReport r{k, pr->state == repl::CopyState::kInSync, pr->acked_through};
      r.generation = n.master->generation();
      r.seq = seq;
      r.state = pr->state == repl::CopyState::kInSync      ? mgmt::CopySyncState::kInSync
                : pr->state == repl::CopyState::kOutOfSync ? mgmt::CopySyncState::kOther
                                                           : mgmt::CopySyncState::kSyncing;
      r.sync_total = pr->sync_planned * region;
      r.sync_done = pr->sync_acked * region;
      reports.push_back(r);
    }
  }
  if (n.cut || !ctl_.up || rng_.chance(p_.ctl_loss_percent)) return;
  at(ctl_latency(), [this, id, inc = n.inc, boot = n.boot, sent = now(), cinc = ctl_.inc, reports] {
    if (!ctl_.up || ctl_.inc != cinc || node(id).cut) return;
    ctl_heartbeat(id, inc, boot, sent, reports);
  });
}

void ClusterWorld::fence_poll(uint32_t id) {
  at(kFencePollUs, [this, id] { fence_poll(id); });
  Node& n = node(id);
  if (n.alive) n.fenced = !mgmt::lease_holds(n.lease_until, now()) || superseded(n);
}

void ClusterWorld::tick(uint32_t id) {
  at(kTickUs, [this, id] { tick(id); });
  Node& n = node(id);
  if (!n.alive || !n.master) return;
  for (uint32_t k : n.engine_copies) {
    if (!link(id, k).up) continue;
    if (n.master->copy_state(k) == repl::CopyState::kOutOfSync) {
      if (auto s = n.master->start_resync(k); s) log("node %u: resync copy %u", id, k);
    }
  }
  for (uint32_t k : n.unconfirmed) report_out_of_sync(n, k);  // until the controller answers
  drain_master(n);
}

// POST /cluster/copy-state: recorded before the master acknowledges anything without the copy.
void ClusterWorld::report_out_of_sync(Node& n, uint32_t copy) {
  if (n.cut || !ctl_.up || rng_.chance(p_.ctl_loss_percent)) return;
  at(ctl_latency(), [this, id = n.id, inc = n.inc, ep = n.epoch, copy, cinc = ctl_.inc,
                     gen = n.master->generation(), seq = next_report_seq(n)] {
    if (!ctl_.up || ctl_.inc != cinc || node(id).cut) return;
    // report_copy_state: only the catalogue's master at the catalogue's generation is
    // listened to; anyone else gets 409 and confirms nothing (the tick retries until the
    // node learns it was deposed and closes the engine).
    if (ctl_.master != id || ctl_.gen != gen) return;
    if (ctl_.copies.count(copy)) {
      CopyRec& c = ctl_.copies[copy];
      c.in_sync = false;
      c.rebooted = false;
      c.report_seq = std::max(c.report_seq, seq);
    }
    at(ctl_latency(), [this, id, inc, ep, copy] {
      Node& n = node(id);
      if (!n.alive || n.inc != inc || n.epoch != ep || n.cut || !n.master) return;
      if (n.unconfirmed.erase(copy)) {
        n.master->confirm_out_of_sync(copy);
        drain_master(n);
      }
    });
  });
}

// ---- The controller ----

void ClusterWorld::ctl_heartbeat(uint32_t id, uint64_t inc, uint64_t boot, int64_t sent_at,
                                 const std::vector<CopyReport>& reports) {
  NodeRec& nr = ctl_.nodes[id];
  nr.last_hb = now();
  if (!nr.online) log("controller: node %u online again", id);
  nr.online = true;
  if (nr.boot != boot) {  // ClusterService::heartbeat: record_boot in the same transaction
    nr.boot = boot;
    ctl_node_rebooted(id);
  }
  // apply_copy_reports: a deposed master's view is stale, and so is one made at an earlier
  // generation by a node that masters the volume again.
  if (ctl_.master == id) {
    for (const CopyReport& r : reports) {
      if (r.generation != ctl_.gen) continue;
      auto it = ctl_.copies.find(r.copy);
      if (it == ctl_.copies.end()) continue;
      // A heartbeat made before the copy dropped out of sync, arriving after the copy-state
      // report that recorded it (found by seed 115416): its in-sync is stale.
      if (r.in_sync && r.seq < it->second.report_seq) continue;
      it->second.report_seq = std::max(it->second.report_seq, r.seq);
      it->second.in_sync = r.in_sync;
      it->second.rebooted = false;  // the master goes on (or went on) without it
      it->second.applied = r.applied;
      it->second.state = r.state;
      it->second.sync_total = r.sync_total;
      it->second.sync_done = r.sync_done;
    }
  }
  const uint64_t gen = ctl_.gen;
  const uint32_t master = ctl_.master;
  std::set<uint32_t> in_sync, copies;
  for (const auto& [k, c] : ctl_.copies) {
    copies.insert(k);
    if (c.in_sync) in_sync.insert(k);
  }
  if (rng_.chance(p_.ctl_loss_percent)) return;
  at(ctl_latency(), [this, id, inc, sent_at, gen, master, in_sync, copies] {
    Node& n = node(id);
    if (!n.alive || n.inc != inc || n.cut) return;
    // NodeAgent: the snapshot is mirrored and a master it no longer names is fenced at once
    // (VolumeHost::fence_superseded) before the lease is renewed; the volume host reconciles
    // (closes and reopens copies in their new roles) a moment later.
    if (gen >= n.gen) {
      n.gen = gen;
      n.master_id = master;
      n.in_sync = in_sync;
      n.copies = copies;
      if (superseded(n)) n.fenced = true;
    }
    n.lease_until = mgmt::lease_until(sent_at, kTimeoutUs);
    at(rng_.range(0, 50'000), [this, id, inc] {
      Node& n = node(id);
      if (n.alive && n.inc == inc) reconcile(n);
    });
  });
}

void ClusterWorld::ctl_liveness() {
  at(kHeartbeatUs, [this] { ctl_liveness(); });
  if (!ctl_.up) return;
  for (auto& [id, nr] : ctl_.nodes) {
    if (!nr.online || !mgmt::node_expired(nr.last_hb, ctl_.started, now(), kTimeoutUs)) continue;
    nr.online = false;
    log("controller: node %u offline", id);
  }
  // A volume whose master's node is offline is looked at again on every check: it may be
  // waiting for a copy that holds every acknowledged write to come back (choose_master). Not
  // within a timeout of the controller's start: nodes first get a full timeout to heartbeat.
  if (!ctl_.nodes[ctl_.master].online && now() - ctl_.started > kTimeoutUs) {
    promote_away_from(ctl_.master);
  }
  restore_replica_count();
}

// ClusterService::record_boot: the node's boot id changed (power loss): its copy lost what it
// had not flushed. A replica that was in sync is recorded out of sync (and rebooted); a
// master whose copy rebooted gives way to an intact copy (choose_master), even one on an
// offline node (the volume then waits for it), and is kept only when none exists.
void ClusterWorld::ctl_node_rebooted(uint32_t id) {
  auto it = ctl_.copies.find(id);
  if (it == ctl_.copies.end()) return;
  CopyRec& c = it->second;
  log("controller: node %u rebooted; its copy needs a resync", id);
  ++summary_.reboots;
  if (id != ctl_.master) {
    if (c.in_sync) {
      c.in_sync = false;
      c.rebooted = true;
      // record_boot: a master heartbeat made before the reboot cannot undo this.
      c.report_seq = std::max(c.report_seq, uint64_t(now_) * 16);
    }
    return;
  }
  c.in_sync = false;
  c.rebooted = true;
  auto candidates = promotion_candidates(0);
  const mgmt::MasterChoice choice = mgmt::choose_master(candidates);
  const uint32_t pick = candidates[choice.index].number;
  if (choice.kind == mgmt::MasterChoiceKind::kNone || pick == id ||
      (choice.kind == mgmt::MasterChoiceKind::kWait && ctl_.copies[pick].rebooted)) {
    c.in_sync = true;
    c.rebooted = false;
    log("controller: master %u kept after its reboot (unflushed writes may be lost)", id);
    return;
  }
  promote(pick, choice.kind == mgmt::MasterChoiceKind::kWait ? "waited for (its node is away)"
                                                             : "intact");
}

std::vector<mgmt::PromotionCandidate> ClusterWorld::promotion_candidates(uint32_t lost) {
  // ClusterService::promote_away_from: a node silent for longer than a lease is not
  // promoted to (it may have died with the master); record_boot looks at the online flag only.
  std::vector<mgmt::PromotionCandidate> candidates;
  for (const auto& [k, c] : ctl_.copies) {
    const NodeRec& nr = ctl_.nodes[k];
    const bool online =
        nr.online && (lost == 0 || now() - nr.last_hb <= mgmt::lease_ms(kTimeoutUs));
    mgmt::PromotionCandidate pc{k, k != ctl_.master, c.in_sync, online, k == lost, c.applied};
    pc.rebooted = c.rebooted;
    candidates.push_back(pc);
  }
  return candidates;
}

// ClusterService::restore_replica_counts: a lost replica is replaced on a node without a
// copy; when it returns and too many can serve, the ones with the most left to copy go
// (smallest difference, mgmt::replicas_to_drop).
void ClusterWorld::restore_replica_count() {
  const int want = int(p_.replicas());
  std::vector<uint32_t> live;
  int total = 0;
  for (const auto& [k, c] : ctl_.copies) {
    if (k == ctl_.master) continue;
    ++total;
    if (ctl_.nodes[k].online) live.push_back(k);
  }
  int serving = int(live.size());
  if (serving < want && total < want + want) {
    for (uint32_t id = 1; id <= p_.count() && serving < want; ++id) {
      if (ctl_.copies.count(id) || !ctl_.nodes[id].online) continue;
      CopyRec c;
      c.in_sync = false;
      c.state = mgmt::CopySyncState::kSyncing;
      ctl_.copies[id] = c;
      ++serving;
      ++summary_.placements;
      log("controller: replica placed on node %u", id);
    }
    return;
  }
  if (serving <= want) return;
  std::vector<mgmt::DropCandidate> candidates;
  for (uint32_t k : live) {
    const CopyRec& c = ctl_.copies[k];
    candidates.push_back({k, c.state, c.sync_total, c.sync_done, 0});
  }
  for (size_t i : mgmt::replicas_to_drop(candidates, want, p_.blocks * kBlockSize)) {
    log("controller: copy %u dropped (smallest difference)", live[i]);
    ctl_.copies.erase(live[i]);
    ++summary_.drops;
  }
}

void ClusterWorld::promote_away_from(uint32_t lost) {
  auto candidates = promotion_candidates(lost);
  const mgmt::MasterChoice choice = mgmt::choose_master(candidates);
  if (choice.kind != mgmt::MasterChoiceKind::kPromote) {
    log("controller: master %u lost; %s", lost,
        choice.kind == mgmt::MasterChoiceKind::kWait ? "waiting for an intact copy"
                                                     : "no copy holds every acknowledged write");
    return;
  }
  // C2: the lost master stopped acknowledging before anyone else can.
  if (now() - ctl_.started <= kTimeoutUs) {
    fail("controller promoted within a node timeout of its own start");
    return;
  }
  promote(candidates[choice.index].number, choice.unflushed_may_be_lost
                                               ? "every copy rebooted: unflushed writes may be lost"
                                               : "in sync");
}

void ClusterWorld::promote(uint32_t winner, const char* why) {
  const uint32_t lost = ctl_.master;
  Node& old = node(lost);
  if (old.alive && mgmt::lease_holds(old.lease_until, now())) {  // C2
    fail("controller promoted away from node " + std::to_string(lost) +
         " whose lease still holds until " + std::to_string(old.lease_until));
    return;
  }
  const uint64_t before = ctl_.gen;
  ctl_.gen += 1;
  if (ctl_.gen <= before) fail("generation did not increase");  // C2
  ctl_.copies[lost].in_sync = false;
  for (auto& [k, c] : ctl_.copies) c.report_seq = 0;  // the new master numbers its own
  ctl_.copies[winner].in_sync = true;
  ctl_.copies[winner].rebooted = false;
  ctl_.master = winner;
  ++summary_.promotions;
  log("controller: node %u promoted at generation %llu (applied %llu; %s)", winner,
      (unsigned long long)ctl_.gen, (unsigned long long)ctl_.copies[winner].applied, why);
}

// ---- Crashes ----

void ClusterWorld::crash(uint32_t id, bool power_loss) {
  Node& n = node(id);
  if (!n.alive) return;
  log("node %u dies (%s)", id, power_loss ? "power loss" : "process killed");
  // Store operations handed to the kernel may or may not have happened (none overlap).
  for (auto& [tag, op] : n.inflight) {
    if (rng_.chance(50)) exec(n, op, nullptr);
  }
  n.inflight.clear();
  if (n.master) n.reserved = std::max(n.reserved, n.master->last_sequence());
  n.serving.clear();  // the client's attempts time out
  n.unconfirmed.clear();
  n.master.reset();
  n.replica.reset();
  n.map.reset();
  n.alive = false;
  ++n.inc;
  ++n.epoch;
  n.lease_until = 0;
  n.fenced = true;
  n.stream_owner = 0;
  if (power_loss) {
    ++n.boot;
    power_lost_ = true;
    ++power_losses_;
    flushable_floor_ = durable_floor_;  // unflushed acknowledged writes may be gone
    n.disk->crash(rng_);
    n.mstore->crash(rng_);
  }
  for (uint32_t k = 1; k <= p_.count(); ++k) {
    if (k == id) continue;
    link_break(id, k);
    link_break(k, id);
  }
}

void ClusterWorld::revive(uint32_t id) {
  Node& n = node(id);
  if (n.alive) return;
  auto m = repl::RegionMap::open(n.mstore.get(), geo_);
  if (!m) {
    fail("region map did not reopen: " + m.error().message);
    return;
  }
  n.map.emplace(std::move(*m));
  n.map->set_mark_group(p_.mark_group);
  n.alive = true;
  log("node %u restarts (%llu unknown regions)", id, (unsigned long long)n.map->dirty_on_disk());
  reconcile(n);  // from its local mirror of the catalogue
  for (uint32_t k = 1; k <= p_.count(); ++k) {
    if (k == id) continue;
    if (node(k).master) at(rng_.range(100'000, 1'000'000), [this, k, id] { link_try(k, id); });
  }
}

}  // namespace tandem::sim::cluster
