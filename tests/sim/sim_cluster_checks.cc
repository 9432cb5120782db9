// Simulated cluster, part 2: the client (an initiator behind a presenting node that re-routes
// to the current master), the fault schedule, the run loop and the invariant checks.
#include <algorithm>
#include <cstring>

#include "tests/sim/sim_cluster_impl.h"

namespace tandem::sim::cluster {

// ---- Client ----
// Writes never overlap another outstanding write (an initiator's own ordering), so each
// block's writes are ordered by op id, which is also the order they were acknowledged in.
// Every block of a write carries (op id, lba) in its first 16 bytes, so what a block holds
// names the write it came from.

void ClusterWorld::issue_next() {
  // The workload runs for at least p_.ops operations and until every fault was injected.
  if (failed_ || quiescing_) return;
  if (issued_ >= p_.ops && faults_left_ == 0) {
    if (outstanding_.empty()) {
      quiescing_ = true;
      quiesce_start_ = now_;
      log("quiesce");
    }
    return;
  }
  ++issued_;
  const uint64_t id = next_op_++;
  ClientOp op;
  op.flush = rng_.chance(10);
  if (!op.flush) {
    bool placed = false;
    for (int tries = 0; tries < 8 && !placed; ++tries) {
      const uint64_t hot = std::max<uint64_t>(16, p_.blocks / 8);
      op.lba = rng_.chance(50) ? rng_.below(hot) : rng_.below(p_.blocks);
      op.blocks = std::min<uint64_t>(rng_.range(1, 8), p_.blocks - op.lba);
      placed = std::none_of(outstanding_.begin(), outstanding_.end(), [&](uint64_t o) {
        const ClientOp& x = ops_[o];
        return !x.flush && x.lba < op.lba + op.blocks && op.lba < x.lba + x.blocks;
      });
    }
    op.flush = !placed;
  }
  if (op.flush) {
    op.floor = flushable_floor_;
    op.power_losses = power_losses_;
  } else {
    op.fua = rng_.chance(15);
    std::vector<uint8_t> data(op.blocks * kBlockSize);
    for (size_t i = 0; i < data.size(); i += 8) {
      const uint64_t v = rng_.next();
      std::memcpy(data.data() + i, &v, 8);
    }
    for (uint64_t b = 0; b < op.blocks; ++b) {
      const uint64_t lba = op.lba + b;
      std::memcpy(data.data() + b * kBlockSize, &id, 8);
      std::memcpy(data.data() + b * kBlockSize + 8, &lba, 8);
    }
    op.data = repl::make_payload(std::move(data));
  }
  ops_[id] = std::move(op);
  outstanding_.insert(id);
  attempt(id);
}

void ClusterWorld::attempt(uint64_t id) {
  ClientOp& op = ops_[id];
  const uint32_t a = ++op.attempt;
  const uint32_t target = target_;
  at(net_latency(), [this, target, id, a] { node_submit(target, id, a); });
  at(kAttemptTimeoutUs, [this, id, a] {
    ClientOp& op = ops_[id];
    if (op.acked || op.attempt != a) return;
    log("client: op %llu attempt %u timed out", (unsigned long long)id, a);
    reply(id, a, false);
  });
}

// The master shell's front door: a node that is not a (fenced-in) master answers NOT READY.
void ClusterWorld::node_submit(uint32_t target, uint64_t id, uint32_t a) {
  Node& n = node(target);
  if (!n.alive || !n.master || n.fenced || n.master->deposed()) {
    at(net_latency(), [this, id, a] { reply(id, a, false); });
    return;
  }
  const ClientOp& op = ops_[id];
  repl::Request req;
  req.id = next_request_++;
  req.kind = op.flush ? repl::OpKind::kFlush : repl::OpKind::kWrite;
  req.lba = op.lba;
  req.blocks = op.blocks;
  req.fua = op.fua;
  req.data = op.data;
  n.serving[req.id] = Node::Serving{id, a};
  n.master->submit(std::move(req));
  drain_master(n);
}

void ClusterWorld::reply(uint64_t id, uint32_t a, bool ok) {
  ClientOp& op = ops_[id];
  if (op.acked || op.attempt != a) return;
  if (ok) {
    on_acked(id);
    return;
  }
  ++summary_.retries;
  ++op.attempt;  // this attempt is over; its timeout does nothing more
  at(rng_.range(50'000, 300'000), [this, id] {
    target_ = ctl_.master;  // the presenting node learns the current master
    attempt(id);
  });
}

// What a GOOD promises holds from the moment the master sends it (a power loss after that
// but before the client hears it is no excuse).
void ClusterWorld::on_good(uint64_t id) {
  ClientOp& op = ops_[id];
  if (op.good) return;
  op.good = true;
  if (op.flush) {
    if (op.power_losses == power_losses_) {
      for (uint64_t b = 0; b < p_.blocks; ++b) {
        durable_floor_[b] = std::max(durable_floor_[b], op.floor[b]);
      }
    }
  } else {
    for (uint64_t b = op.lba; b < op.lba + op.blocks; ++b) {
      acked_floor_[b] = flushable_floor_[b] = id;
      if (op.fua) durable_floor_[b] = id;
    }
  }
}

void ClusterWorld::on_acked(uint64_t id) {
  ClientOp& op = ops_[id];
  op.acked = true;
  outstanding_.erase(id);
  log("client: op %llu acknowledged (%s lba %llu+%llu)", (unsigned long long)id,
      op.flush ? "flush"
      : op.fua ? "fua write"
               : "write",
      (unsigned long long)op.lba, (unsigned long long)op.blocks);
  if (!op.flush) ++summary_.writes_acked;
  if (op.final) {
    final_done_ = true;
    return;
  }
  ++completed_;
  at(rng_.range(0, 20'000), [this] { issue_next(); });  // the application's think time
}

// ---- Faults ----

void ClusterWorld::schedule_fault() {
  if (faults_left_ == 0) return;
  at(rng_.range(300'000, 4'000'000), [this] {
    if (quiescing_ || faults_left_ == 0) return;
    --faults_left_;
    ++summary_.faults;
    inject_fault();
    schedule_fault();
  });
}

void ClusterWorld::inject_fault() {
  const uint32_t m = ctl_.master;
  std::vector<uint32_t> others;  // the replicas' nodes
  for (const auto& [k, c] : ctl_.copies) {
    if (k != m) others.push_back(k);
  }
  if (others.empty()) return;
  auto down = [&](uint32_t id, uint64_t lo, uint64_t hi) {
    if (!node(id).alive) return;
    crash(id, rng_.chance(p_.power_loss_percent));
    at(rng_.range(lo, hi), [this, id] { revive(id); });
  };
  const uint64_t roll = rng_.below(100);
  if (roll < 20) {  // a replica dies and returns
    down(others[rng_.below(others.size())], 500'000, 8'000'000);
  } else if (roll < 40) {  // the master dies and returns (before or after the timeout)
    down(m, 500'000, 10'000'000);
  } else if (roll < 52) {  // every replica dies
    for (uint32_t k : others) down(k, 500'000, 8'000'000);
  } else if (roll < 70) {  // the master is cut off from the controller, not from its replicas
    Node& n = node(m);
    if (n.cut) return;
    log("partition: node %u <-> controller", m);
    n.cut = true;
    at(rng_.range(500'000, 7'000'000), [this, m] {
      log("partition healed: node %u <-> controller", m);
      node(m).cut = false;
    });
  } else if (roll < 85) {  // the controller restarts: its in-memory state is lost
    if (!ctl_.up) return;
    log("controller down");
    ctl_.up = false;
    ++ctl_.inc;
    at(rng_.range(200'000, 8'000'000), [this] {
      ctl_.up = true;
      ctl_.started = now();
      log("controller restarted");
    });
  } else {  // a replication link drops
    const uint32_t k = others[rng_.below(others.size())];
    Link& l = link(m, k);
    if (l.cut) return;
    l.cut = true;
    link_break(m, k);
    at(rng_.range(300'000, 3'000'000), [this, m, k] {
      link(m, k).cut = false;
      link_try(m, k);
    });
  }
}

// ---- Quiesce and the checks ----

bool ClusterWorld::all_synced() {
  if (!ctl_.up || !outstanding_.empty()) return false;
  for (const Node& n : nodes_) {
    if (!n.alive || n.cut) return false;
  }
  Node& m = node(ctl_.master);
  if (!m.master || m.master->generation() != ctl_.gen || m.fenced) return false;
  if (ctl_.copies.size() != p_.nodes || m.engine_copies.size() + 1 != p_.nodes) return false;
  for (const auto& [k, c] : ctl_.copies) {
    if (k == m.id) continue;
    if (m.master->copy_state(k) != repl::CopyState::kInSync || !ctl_.copies[k].in_sync ||
        !link(m.id, k).up || link(m.id, k).cut) {
      return false;
    }
    if (!node(k).replica || node(k).replica->generation() != ctl_.gen) return false;
  }
  return m.master->active_ops() == 0 && m.master->queued_requests() == 0;
}

void ClusterWorld::final_checks() {
  Node& m = node(ctl_.master);
  const std::vector<uint64_t>& floor = power_lost_ ? durable_floor_ : acked_floor_;
  for (uint64_t b = 0; b < p_.blocks && !failed_; ++b) {  // C4
    const std::vector<uint8_t> got = m.disk->read(b, 1);
    uint64_t id = 0, lba = 0;
    std::memcpy(&id, got.data(), 8);
    std::memcpy(&lba, got.data() + 8, 8);
    const std::string where = "block " + std::to_string(b) + " on master " + std::to_string(m.id) +
                              " holds op " + std::to_string(id) + " but op " +
                              std::to_string(floor[b]) + " was acknowledged";
    if (id == 0) {
      if (got != std::vector<uint8_t>(kBlockSize, 0)) fail(where + " (garbage)");
      if (floor[b] != 0) fail(where + " (zeros)");
      continue;
    }
    auto it = ops_.find(id);
    if (it == ops_.end() || it->second.flush || lba != b || b < it->second.lba ||
        b >= it->second.lba + it->second.blocks) {
      fail(where + " (not a write to this block)");
      continue;
    }
    const uint8_t* want = it->second.data->data() + (b - it->second.lba) * kBlockSize;
    if (!std::equal(got.begin(), got.end(), want)) fail(where + " (torn)");
    if (id < floor[b]) fail(where + " (older)");
  }
  if (m.disk->stable_image() != m.disk->image()) fail("master not stable after the final flush");
  for (Node& n : nodes_) {  // C5
    if (failed_ || n.id == m.id || !ctl_.copies.count(n.id)) continue;
    const std::string who = "node " + std::to_string(n.id);
    if (n.disk->image() != m.disk->image()) {
      for (uint64_t b = 0; b < p_.blocks; ++b) {
        if (n.disk->read(b, 1) != m.disk->read(b, 1)) {
          fail(who + " differs from master " + std::to_string(m.id) + " at block " +
               std::to_string(b));
          break;
        }
      }
    }
    if (n.disk->stable_image() != m.disk->image()) fail(who + " not stable after the flush");
    if (!n.replica->consistent() || n.replica->applied_seq() != m.master->last_sequence()) {
      fail(who + " not consistent at the master's last sequence " +
           std::to_string(m.master->last_sequence()) + " (applied " +
           std::to_string(n.replica->applied_seq()) + ")");
    }
  }
}

ClusterSummary ClusterWorld::run() {
  for (uint32_t id = 1; id <= p_.count(); ++id) {
    at(rng_.range(0, 1000), [this, id] { heartbeat(id); });
    at(rng_.range(0, kFencePollUs), [this, id] { fence_poll(id); });
    at(rng_.range(0, kTickUs), [this, id] { tick(id); });
  }
  at(kHeartbeatUs, [this] { ctl_liveness(); });
  // The client starts once the master holds its first lease.
  for (uint32_t i = 0; i < p_.qd; ++i) at(rng_.range(5000, 10000), [this] { issue_next(); });
  schedule_fault();
  for (;;) {
    if (failed_) break;
    if (final_done_) {
      if (all_synced()) break;
      final_done_ = final_issued_ = false;  // a fault still healing raced the final flush
    }
    if (quiescing_ && !final_issued_ && all_synced()) {
      final_issued_ = true;
      const uint64_t id = next_op_++;
      ClientOp op;
      op.flush = true;
      op.final = true;
      op.floor = flushable_floor_;
      op.power_losses = power_losses_;
      ops_[id] = std::move(op);
      outstanding_.insert(id);
      target_ = ctl_.master;
      attempt(id);
      continue;
    }
    if (quiescing_ && now_ > quiesce_start_ + kQuiesceLimitUs) {
      fail("copies not in sync within 30 s of quiesce (resync did not terminate)");  // C3
      break;
    }
    if (now_ > kRunLimitUs || !step()) {
      fail("stuck: " + std::to_string(outstanding_.size()) + " client ops outstanding");
      break;
    }
  }
  if (!failed_) final_checks();
  summary_.ok = !failed_;
  summary_.failure = failure_;
  summary_.generation = ctl_.gen;
  summary_.sim_time_us = now_;
  summary_.events = event_count_;
  if (trace_) summary_.trace = trace_text();
  return summary_;
}

}  // namespace tandem::sim::cluster

namespace tandem::sim {

ClusterSummary run_cluster_seed(uint64_t seed, bool trace) {
  cluster::ClusterWorld w(seed, trace);
  return w.run();
}

}  // namespace tandem::sim
