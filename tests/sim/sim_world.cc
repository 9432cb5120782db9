// Simulated world, part 1: the engines wired to simulated stores and links.
#include <cstdarg>
#include <cstdio>

#include "tests/sim/sim_world_impl.h"

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"  // GCC 12 false positive on variants
#endif

namespace tandem::sim::detail {
World::World(uint64_t seed, bool trace)
    : SimLoop(trace),
      seed_(seed),
      rng_(seed * 0x2545F4914F6CDD1Dull + 1),
      p_(rng_),
      master_disk_(kBlockSize, p_.blocks),
      acked_floor_(p_.blocks, 0) {
  // Drawn apart from rng_ so that older seeds keep their scenario.
  p_.mark_group = 1u << Rng(seed ^ 0x6D61726Bull).below(4);
  geo_ = repl::RegionGeometry{p_.blocks * kBlockSize, kBlockSize, p_.region_shift};
  for (size_t i = 0; i < volume_.size(); ++i)
    volume_[i] = uint8_t(seed >> (i % 8) * 8) ^ uint8_t(i);
  master_map_.emplace(std::move(*repl::RegionMap::in_memory(geo_)));
  repl::MasterConfig mc;
  mc.volume = volume_;
  mc.generation = 3;
  mc.last_sequence = 0;
  mc.block_size = kBlockSize;
  mc.block_count = p_.blocks;
  mc.max_inflight_bytes = p_.budget;
  mc.max_active_ops = p_.max_active;
  mc.sync_window = p_.window;
  mc.sync_hash_unit = p_.hash_unit;
  mc.max_queued_bytes = p_.max_queued;
  master_ = std::make_unique<repl::MasterEngine>(mc, &*master_map_);
  replicas_.resize(p_.replicas);
  for (uint32_t k = 0; k < p_.replicas; ++k) {
    Replica& r = replicas_[k];
    r.id = k + 1;
    r.disk = std::make_unique<Disk>(kBlockSize, p_.blocks);
    r.map.emplace(std::move(*repl::RegionMap::create(&r.mstore, geo_)));
    r.map->set_mark_group(p_.mark_group);
    repl::ReplicaConfig rc;
    rc.volume = volume_;
    rc.copy_id = r.id;
    rc.generation = 3;
    rc.block_size = kBlockSize;
    rc.block_count = p_.blocks;
    rc.summary_entries_per_frame = 1 + rng_.below(8);
    r.engine = std::make_unique<repl::ReplicaEngine>(rc, &*r.map, 0);
    r.stream_base = 0;
    if (!master_->add_copy(r.id, true, true)) fail("add_copy");
    view_.insert(r.id);
  }
  faults_left_ = p_.faults;
  summary_.params = p_.str();
  summary_.volume_regions = master_map_->region_count();
}

// ---- Master side ----

void World::drain_master() {
  for (;;) {
    auto actions = master_->take_actions();
    if (actions.empty() || failed_) return;
    for (auto& a : actions) {
      std::visit(
          Overloaded{
              [&](repl::IssueStore& is) {
                const repl::StoreOp& op = is.op;
                if (!check_store_issue(master_inflight_, op, "master")) return;
                if ((op.kind == repl::StoreKind::kWrite || op.kind == repl::StoreKind::kUnmap)) {
                  writes_[op.seq] = WriteInfo{op.kind, op.lba, op.blocks, op.data};
                }
                master_inflight_[op.tag] = op;
                const uint64_t tag = op.tag;
                at(store_latency(), [this, tag] { master_store_done(tag); });
              },
              [&](repl::SendFrame& sf) {
                Replica& r = replicas_.at(sf.copy - 1);
                log("M->%u %s seq=%llu lba=%llu count=%llu", sf.copy,
                    wire::to_string(sf.header.type), (unsigned long long)sf.header.sequence,
                    (unsigned long long)sf.header.lba, (unsigned long long)sf.header.count);
                if (sf.header.type == wire::FrameType::kSyncDelta)
                  on_sync_data_sent(r, sf.header.count);
                send(r, sf.header, sf.payload, true);
              },
              [&](repl::CompleteOp& c) { on_complete(c); },
              [&](repl::CopyOutOfSync& o) { on_out_of_sync(o); },
              [&](repl::CopyInSync& s) { on_in_sync(s); },
              [&](repl::Deposed&) { fail("master deposed in a single-master simulation"); },
          },
          a);
      if (failed_) return;
    }
  }
}

bool World::check_store_issue(const std::map<uint64_t, repl::StoreOp>& inflight,
                              const repl::StoreOp& op, const char* who) {
  if (op.kind == repl::StoreKind::kFlush) return true;
  for (const auto& [tag, o] : inflight) {
    if (o.kind == repl::StoreKind::kFlush) continue;
    if (o.lba < op.lba + op.blocks && op.lba < o.lba + o.blocks) {
      fail(std::string(who) + ": store got overlapping operations (seq " + std::to_string(o.seq) +
           " and " + std::to_string(op.seq) + ")");  // I1
      return false;
    }
  }
  return true;
}

void World::exec(Disk& disk, const repl::StoreOp& op, const std::string& who, repl::Payload* read) {
  std::string err;
  switch (op.kind) {
    case repl::StoreKind::kWrite:
      err = disk.write(op.lba, op.blocks, op.data->data(), op.seq, op.fua);
      break;
    case repl::StoreKind::kUnmap:
      err = disk.write(op.lba, op.blocks, nullptr, op.seq, false);
      break;
    case repl::StoreKind::kFlush:
      disk.flush();
      break;
    case repl::StoreKind::kRead:
      *read = repl::make_payload(disk.read(op.lba, op.blocks));
      break;
  }
  if (!err.empty()) fail(who + ": " + err);  // I1
}

void World::master_store_done(uint64_t tag) {
  auto it = master_inflight_.find(tag);
  if (it == master_inflight_.end()) return;
  repl::StoreOp op = it->second;
  master_inflight_.erase(it);
  repl::Payload data;
  exec(master_disk_, op, "master", &data);
  if (op.kind != repl::StoreKind::kRead) master_done_seqs_.insert(op.seq);
  master_->on_store_done(tag, core::IoResult{}, data);
  drain_master();
}

// ---- Links ----

void World::send(Replica& r, const wire::FrameHeader& h, const repl::Payload& p, bool to_replica) {
  if (r.link != LinkState::kUp) return;  // lost
  std::vector<uint8_t> bytes;
  std::span<const uint8_t> payload;
  if (p) payload = std::span<const uint8_t>(*p);
  auto enc = wire::encode(h, payload, rng_.chance(10), bytes);
  if (!enc) {
    fail(std::string("encode ") + wire::to_string(h.type) + ": " + enc.error().message);
    return;
  }
  uint64_t& last = to_replica ? r.last_to_replica : r.last_to_master;
  const uint64_t t = std::max(now_ + net_latency(), last);  // FIFO within one link
  last = t;
  const uint64_t epoch = r.link_epoch;
  const uint32_t k = r.id;
  at(t - now_, [this, k, epoch, to_replica, bytes = std::move(bytes)] {
    Replica& r = replicas_[k - 1];
    if (r.link_epoch != epoch || r.link != LinkState::kUp) return;
    auto frames = decode(to_replica ? r.dec_to_replica : r.dec_to_master, bytes);
    for (wire::Frame& f : frames) {
      if (failed_) return;
      if (to_replica) {
        if (!r.alive) return;
        if (f.header.type == wire::FrameType::kSyncRequest) {
          r.stream_base = f.header.sequence;
          r.stream_seqs.clear();
        }
        r.engine->on_frame(f);
        drain_replica(r);
      } else {
        log("%u->M %s seq=%llu status=%u", k, wire::to_string(f.header.type),
            (unsigned long long)f.header.sequence, f.header.status);
        if (f.header.type == wire::FrameType::kAck && f.header.status == 0) {
          acks_[k].insert(f.header.sequence);
        }
        if (f.header.type == wire::FrameType::kRegionSummary) {
          auto entries = wire::decode_region_summary(f.payload);
          if (entries) {
            std::string list;
            for (const auto& e : *entries) {
              if (e.seq == repl::kUnknownSeq) r.unknown.insert(e.region);
              if (trace_) {
                list += " " + std::to_string(e.region) + ":" +
                        (e.seq == repl::kUnknownSeq ? std::string("?") : std::to_string(e.seq));
              }
            }
            log("  summary%s%s", list.c_str(), (f.header.flags & wire::kFlagLast) ? " LAST" : "");
          }
        }
        master_->on_frame(k, f);
        drain_master();
      }
    }
  });
}

std::vector<wire::Frame> World::decode(wire::FrameDecoder& dec, const std::vector<uint8_t>& bytes) {
  std::vector<wire::Frame> out;
  std::span<const uint8_t> in(bytes);
  while (!in.empty()) {
    auto step = dec.feed(in);
    if (!step) {
      fail("decode: " + step.error().message);
      return {};
    }
    in = in.subspan(step->consumed);
    if (step->status == wire::FrameDecoder::Status::kFrame) out.push_back(dec.take());
  }
  return out;
}

// ---- Replica side ----

void World::drain_replica(Replica& r) {
  for (;;) {
    auto actions = r.engine->take_actions();
    if (actions.empty() || failed_) return;
    for (auto& a : actions) {
      std::visit(
          Overloaded{
              [&](repl::ReplicaIssueStore& is) {
                const repl::StoreOp& op = is.op;
                if (!check_store_issue(r.inflight, op, "replica")) return;
                if (!op.resync && r.stream_base && op.seq > *r.stream_base &&
                    !r.stream_seqs.insert(op.seq).second) {
                  fail("replica " + std::to_string(r.id) + " applied seq " +
                       std::to_string(op.seq) + " twice");  // I2
                }
                r.inflight[op.tag] = op;
                const uint64_t tag = op.tag, inc = r.incarnation;
                const uint32_t k = r.id;
                at(store_latency(), [this, k, inc, tag] { replica_store_done(k, inc, tag); });
              },
              [&](repl::ReplicaSendFrame& sf) {
                if (sf.header.type == wire::FrameType::kAck && sf.header.status == 0) {
                  auto w = writes_.find(sf.header.sequence);  // I4
                  if (w != writes_.end()) {
                    for (uint64_t b = w->second.lba; b < w->second.lba + w->second.blocks; ++b) {
                      if (r.disk->cur_seq(b) < sf.header.sequence) {
                        fail("replica " + std::to_string(r.id) + " acked seq " +
                             std::to_string(sf.header.sequence) + " before its data was stored");
                        return;
                      }
                    }
                  }
                }
                send(r, sf.header, sf.payload, false);
              },
          },
          a);
      if (failed_) return;
    }
  }
}

void World::replica_store_done(uint32_t k, uint64_t incarnation, uint64_t tag) {
  Replica& r = replicas_[k - 1];
  if (r.incarnation != incarnation || !r.alive) return;  // crashed meanwhile
  auto it = r.inflight.find(tag);
  if (it == r.inflight.end()) return;
  repl::StoreOp op = it->second;
  r.inflight.erase(it);
  core::IoResult result;
  repl::Payload data;
  if (r.fail_next_op && op.kind != repl::StoreKind::kFlush) {
    // An I/O error: the write may or may not have reached the cache.
    r.fail_next_op = false;
    result.status = core::IoStatus::kMediumError;
    ++summary_.io_errors;
    if (rng_.chance(50)) exec(*r.disk, op, "replica " + std::to_string(k), &data);
    log("replica %u store error at seq %llu", k, (unsigned long long)op.seq);
  } else {
    exec(*r.disk, op, "replica " + std::to_string(k), &data);
  }
  r.engine->on_store_done(tag, result, data);
  drain_replica(r);
  if (r.engine->state() == repl::ReplicaState::kFailed && r.alive) {
    restart(k);  // the node reopens a failed copy: same as a restart (and loses its cache)
  }
}

}  // namespace tandem::sim::detail

namespace tandem::sim {

SimSummary run_seed(uint64_t seed, bool trace) {
  detail::World w(seed, trace);
  return w.run();
}

}  // namespace tandem::sim
