#include "backend/replicated/replica_host.h"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <atomic>
#include <optional>
#include <thread>
#include <tuple>
#include <utility>

#include "backend/repl/region_map.h"
#include "backend/repl/replica_engine.h"
#include "backend/replicated/reply_poll.h"
#include "backend/replicated/store_ops.h"

namespace tandem::backend::replicated {
namespace {

namespace repl = backend::repl;

template <class... Ts>
struct Overloaded : Ts... {
  using Ts::operator()...;
};
template <class... Ts>
Overloaded(Ts...) -> Overloaded<Ts...>;

bool is_replica_frame(wire::FrameType t) {
  switch (t) {
    case wire::FrameType::kWrite:
    case wire::FrameType::kUnmap:
    case wire::FrameType::kWriteSame:
    case wire::FrameType::kFlush:
    case wire::FrameType::kSyncRequest:
    case wire::FrameType::kSyncHashRequest:
    case wire::FrameType::kSyncDelta:
    case wire::FrameType::kSyncDone:
      return true;
    default:
      return false;
  }
}

void nack(const std::shared_ptr<link::InboundConnection>& conn, const wire::FrameHeader& h,
          wire::NackReason why, std::string_view text) {
  wire::FrameHeader n = h;
  n.type = wire::FrameType::kNack;
  n.flags = 0;
  n.status = static_cast<uint32_t>(why);
  n.count = 0;
  std::vector<uint8_t> out;
  if (wire::encode(n, {reinterpret_cast<const uint8_t*>(text.data()), text.size()}, false, out)) {
    (void)conn->reply(std::move(out));
  }
}

}  // namespace

struct ReplicaCopy::Impl {
  Impl(std::shared_ptr<FileVolume> l, Options o) : local(std::move(l)), opt(std::move(o)) {}

  // The copy's one owner is whoever holds `mu`: the master's connection strand (frames), a
  // store thread (completions) or a control call. Frames are applied where they are read, so
  // a small write costs no thread hand-off (and only one ACK per read batch goes back).
  std::mutex mu;
  std::atomic<std::thread::id> owner{};  // holder of mu (a completion inside the issuing call)
  std::shared_ptr<FileVolume> local;
  Options opt;
  std::unique_ptr<repl::FileRegionStore> map_store;
  std::optional<repl::RegionMap> map;
  std::unique_ptr<repl::ReplicaEngine> engine;
  std::shared_ptr<link::InboundConnection> conn;  // the master's current connection
  bool closed = false;
  // ACKs the engine emitted and not yet sent (flush_acks), with the header of the first.
  std::vector<uint64_t> acks;
  wire::FrameHeader ack_header;
  uint64_t flush_on = 0;  // connection id whose read end flushes `acks` (0: none scheduled)
  // Store completions that ran inside the issuing call (validation failures), for run().
  std::vector<std::tuple<uint64_t, core::IoResult, repl::Payload>> early;
  std::atomic<int> state{0};  // repl::ReplicaState
  std::atomic<uint64_t> applied{0};
};

namespace {

// Holds the copy's mutex and records the holder (see Impl::owner).
class Owned {
 public:
  explicit Owned(ReplicaCopy::Impl& s) : s_(s), lock_(s.mu) {
    s_.owner.store(std::this_thread::get_id(), std::memory_order_relaxed);
  }
  ~Owned() { s_.owner.store(std::thread::id{}, std::memory_order_relaxed); }

 private:
  ReplicaCopy::Impl& s_;
  std::lock_guard<std::mutex> lock_;
};

}  // namespace

ReplicaCopy::ReplicaCopy(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
ReplicaCopy::~ReplicaCopy() = default;

const std::string& ReplicaCopy::uuid() const { return impl_->opt.uuid; }
uint32_t ReplicaCopy::copy() const { return impl_->opt.copy; }
uint64_t ReplicaCopy::applied_seq() const { return impl_->applied.load(); }
std::string ReplicaCopy::state() const {
  return repl::to_string(static_cast<repl::ReplicaState>(impl_->state.load()));
}

core::Result<std::shared_ptr<ReplicaCopy>, std::string> ReplicaCopy::open(
    std::shared_ptr<FileVolume> local, Options options) {
  auto impl = std::make_unique<Impl>(std::move(local), std::move(options));
  Impl& s = *impl;
  repl::RegionGeometry g;
  g.volume_bytes = s.local->block_count() * s.local->block_size();
  g.block_size = s.local->block_size();
  g.region_shift = repl::kDefaultRegionShift;
  bool existed = ::access(s.opt.map_path.c_str(), F_OK) == 0;
  auto store = repl::FileRegionStore::open(s.opt.map_path);
  if (!store) return core::fail("region map " + s.opt.map_path + ": " + store.error().message);
  s.map_store = std::move(*store);
  bool in_sync = false;
  if (existed) {
    auto m = repl::RegionMap::open(s.map_store.get(), g);
    if (m) {
      s.map.emplace(std::move(*m));
    } else {
      spdlog::warn("volume={} copy {}: region map unusable ({}): full resync", s.opt.uuid,
                   s.opt.copy, m.error().message);
      auto c = repl::RegionMap::create(s.map_store.get(), g, /*all_unknown=*/true);
      if (!c) return core::fail("region map: " + c.error().message);
      s.map.emplace(std::move(*c));
    }
  } else {
    // A copy whose map is new but whose file may hold old data (re-created map) must not
    // claim any region: all unknown unless the copy is brand new and in sync.
    auto c = repl::RegionMap::create(s.map_store.get(), g, !s.opt.fresh_file);
    if (!c) return core::fail("region map: " + c.error().message);
    s.map.emplace(std::move(*c));
    in_sync = s.opt.fresh_file && s.opt.in_sync;
  }
  s.map->set_mark_group(repl::RegionMap::default_mark_group(g));
  repl::ReplicaConfig cfg;
  if (!wire::parse_uuid(s.opt.uuid, cfg.volume)) return core::fail("bad volume id " + s.opt.uuid);
  cfg.copy_id = s.opt.copy;
  cfg.generation = s.opt.generation;
  cfg.block_size = s.local->block_size();
  cfg.block_count = s.local->block_count();
  s.engine = in_sync ? std::make_unique<repl::ReplicaEngine>(cfg, &*s.map, 0)
                     : std::make_unique<repl::ReplicaEngine>(cfg, &*s.map);
  s.state.store(static_cast<int>(s.engine->state()));
  return std::shared_ptr<ReplicaCopy>(new ReplicaCopy(std::move(impl)));
}

namespace {

// Sends the ACKs gathered since the last call: to a master that takes them, one cumulative
// ACK for every sequence up to the engine's applied point, single ACKs for any above it
// (completed out of order). Holding mu; before any other frame, so the order stays the
// engine's.
void flush_acks(ReplicaCopy::Impl& s) {
  if (s.acks.empty()) return;
  if (s.conn) {
    const bool through = (s.conn->peer_hello().features & wire::kFeatureAckThrough) != 0;
    const uint64_t applied = s.engine->applied_seq();
    auto send = [&](uint64_t seq, uint64_t count) {
      wire::FrameHeader h = s.ack_header;
      h.sequence = seq;
      h.count = count;
      std::vector<uint8_t> out;
      if (wire::encode(h, {}, false, out)) (void)s.conn->reply(std::move(out));
    };
    bool covered = false;
    for (uint64_t seq : s.acks) {
      if (through && seq <= applied) {
        covered = true;
      } else {
        send(seq, 0);
      }
    }
    if (covered) send(applied, wire::kAckThrough);
  }
  s.acks.clear();
}

bool acks_through(const wire::FrameHeader& h) {
  return h.type == wire::FrameType::kAck && h.status == 0;
}

// Carries out the engine's actions; holding mu. A write of at most kInlineWriteMax (no FUA)
// is applied right here; others go to the store pool, whose completion takes mu itself.
// defer_acks: the caller flushes ACKs later (at the end of the connection's read).
void run(const std::shared_ptr<ReplicaCopy>& self, ReplicaCopy::Impl& s, bool defer_acks) {
  for (;;) {
    auto actions = s.engine->take_actions();
    if (actions.empty()) break;
    for (auto& a : actions) {
      std::visit(Overloaded{
                     [&](repl::ReplicaIssueStore& is) {
                       const repl::StoreOp& op = is.op;
                       if (runs_inline(op)) {
                         s.engine->on_store_done(op.tag, run_inline(*s.local, op));
                         return;
                       }
                       ReplicaCopy::Impl* impl = &s;
                       run_store_op(
                           *s.local, op,
                           [self, impl, tag = op.tag](core::IoResult r, repl::Payload data) {
                             if (impl->owner.load(std::memory_order_relaxed) ==
                                 std::this_thread::get_id()) {
                               impl->early.emplace_back(tag, r, std::move(data));  // in run()
                               return;
                             }
                             Owned lock(*impl);
                             if (impl->closed) return;
                             impl->engine->on_store_done(tag, r, std::move(data));
                             run(self, *impl, false);
                           });
                       for (auto& [tag, r, data] : std::exchange(s.early, {})) {
                         s.engine->on_store_done(tag, r, std::move(data));
                       }
                     },
                     [&](repl::ReplicaSendFrame& sf) {
                       if (acks_through(sf.header)) {
                         if (s.acks.empty()) s.ack_header = sf.header;
                         s.acks.push_back(sf.header.sequence);
                         return;
                       }
                       flush_acks(s);
                       if (!s.conn) return;
                       std::vector<uint8_t> out;
                       std::span<const uint8_t> body;
                       if (sf.payload) body = {sf.payload->data(), sf.payload->size()};
                       if (wire::encode(sf.header, body, false, out))
                         (void)s.conn->reply(std::move(out));
                     },
                 },
                 a);
    }
  }
  if (!defer_acks) flush_acks(s);
  s.state.store(static_cast<int>(s.engine->state()));
  s.applied.store(s.engine->applied_seq());
}

bool data_frame(wire::FrameType t) {
  return t == wire::FrameType::kWrite || t == wire::FrameType::kUnmap ||
         t == wire::FrameType::kWriteSame || t == wire::FrameType::kFlush;
}

}  // namespace

void ReplicaCopy::on_frame(const std::shared_ptr<link::InboundConnection>& conn,
                           const wire::FrameHeader& header, std::vector<uint8_t> payload) {
  auto self = shared_from_this();
  Impl& s = *impl_;
  note_copy_frame();
  bool schedule = false;
  {
    Owned lock(s);
    if (s.closed) return nack(conn, header, wire::NackReason::kUnknownCopy, "copy closed");
    if (s.conn != conn) {
      flush_acks(s);
      if (s.conn) s.engine->on_link_down();  // the master reconnected: a new stream
      s.conn = conn;
    }
    // ACKs go out before anything that may rebase the stream (their applied point with them).
    if (!data_frame(header.type)) flush_acks(s);
    s.engine->on_frame(wire::Frame{header, std::move(payload)});
    run(self, s, /*defer_acks=*/true);
    if (!s.acks.empty() && s.flush_on != conn->id()) {
      s.flush_on = conn->id();
      schedule = true;
    }
  }
  if (schedule) {
    conn->at_read_end([self] {
      Impl& s = *self->impl_;
      Owned lock(s);
      s.flush_on = 0;
      flush_acks(s);
    });
  }
}

void ReplicaCopy::on_connection_down(uint64_t connection_id) {
  Impl& s = *impl_;
  Owned lock(s);
  if (!s.conn || s.conn->id() != connection_id || s.closed) return;
  s.acks.clear();
  s.conn.reset();
  s.engine->on_link_down();
  run(shared_from_this(), s, false);
}

void ReplicaCopy::set_generation(uint64_t generation) {
  Impl& s = *impl_;
  Owned lock(s);
  if (s.closed) return;
  flush_acks(s);
  (void)s.engine->set_generation(generation);
  run(shared_from_this(), s, false);
}

void ReplicaCopy::close(std::function<void()> done) {
  auto self = shared_from_this();
  Impl& s = *impl_;
  uint64_t applied = 0;
  bool consistent = false;
  {
    Owned lock(s);
    if (s.closed) {
      if (done) done();
      return;
    }
    flush_acks(s);
    s.closed = true;
    s.conn.reset();
    applied = s.engine->applied_seq();
    consistent = s.engine->consistent();
  }
  s.local->flush([self, applied, consistent, done = std::move(done)](core::IoResult r) mutable {
    Impl& s = *self->impl_;
    {
      Owned lock(s);
      // Only a consistent copy may record clean regions (replica_engine.h).
      if (r.ok() && consistent) (void)s.map->checkpoint(applied, /*everything=*/true);
    }
    if (done) done();
  });
}

// ---- ReplicaHost ----

void ReplicaHost::add(std::shared_ptr<ReplicaCopy> copy) {
  wire::Uuid id{};
  if (!wire::parse_uuid(copy->uuid(), id)) return;
  std::lock_guard lock(mu_);
  copies_[{id, copy->copy()}] = std::move(copy);
}

std::shared_ptr<ReplicaCopy> ReplicaHost::remove(const std::string& uuid, uint32_t copy) {
  wire::Uuid id{};
  if (!wire::parse_uuid(uuid, id)) return nullptr;
  std::lock_guard lock(mu_);
  auto it = copies_.find({id, copy});
  if (it == copies_.end()) return nullptr;
  auto c = std::move(it->second);
  copies_.erase(it);
  return c;
}

std::shared_ptr<ReplicaCopy> ReplicaHost::find(const std::string& uuid, uint32_t copy) const {
  wire::Uuid id{};
  if (!wire::parse_uuid(uuid, id)) return nullptr;
  std::lock_guard lock(mu_);
  auto it = copies_.find({id, copy});
  return it == copies_.end() ? nullptr : it->second;
}

std::vector<std::shared_ptr<ReplicaCopy>> ReplicaHost::all() const {
  std::lock_guard lock(mu_);
  std::vector<std::shared_ptr<ReplicaCopy>> out;
  for (const auto& [k, c] : copies_) out.push_back(c);
  return out;
}

void ReplicaHost::set_io_handler(IoHandler h) {
  std::lock_guard lock(mu_);
  io_ = std::move(h);
}

void ReplicaHost::on_frame(const std::shared_ptr<link::InboundConnection>& conn,
                           const wire::FrameHeader& header, std::vector<uint8_t> payload) {
  if (header.type == wire::FrameType::kAck || header.type == wire::FrameType::kNack ||
      header.type == wire::FrameType::kRegionSummary ||
      header.type == wire::FrameType::kSyncHashes) {
    return;  // answers only ever flow to the master's side
  }
  if (!is_replica_frame(header.type)) {
    IoHandler io;
    {
      std::lock_guard lock(mu_);
      io = io_;
    }
    if (io) return io(conn, header, std::move(payload));
    return nack(conn, header, wire::NackReason::kBadRequest, "frame type not served here");
  }
  std::shared_ptr<ReplicaCopy> copy;
  {
    std::lock_guard lock(mu_);
    auto it = copies_.find({header.volume, header.copy_id});
    if (it != copies_.end()) copy = it->second;
  }
  if (!copy) {
    return nack(conn, header, wire::NackReason::kUnknownCopy,
                "this node holds no such copy of the volume");
  }
  copy->on_frame(conn, header, std::move(payload));
}

void ReplicaHost::on_connection_down(const std::shared_ptr<link::InboundConnection>& conn,
                                     const std::string&) {
  for (auto& c : all()) c->on_connection_down(conn->id());
}

}  // namespace tandem::backend::replicated
