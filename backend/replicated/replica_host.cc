#include "backend/replicated/replica_host.h"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <atomic>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/strand.hpp>
#include <optional>

#include "backend/repl/region_map.h"
#include "backend/repl/replica_engine.h"
#include "backend/replicated/store_ops.h"

namespace tandem::backend::replicated {
namespace {

namespace asio = boost::asio;
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
  Impl(asio::io_context& io, std::shared_ptr<FileVolume> l, Options o)
      : strand(asio::make_strand(io)), local(std::move(l)), opt(std::move(o)) {}

  asio::strand<asio::io_context::executor_type> strand;
  std::shared_ptr<FileVolume> local;
  Options opt;
  std::unique_ptr<repl::FileRegionStore> map_store;
  std::optional<repl::RegionMap> map;
  std::unique_ptr<repl::ReplicaEngine> engine;
  std::shared_ptr<link::InboundConnection> conn;  // the master's current connection
  bool closed = false;
  std::atomic<int> state{0};  // repl::ReplicaState
  std::atomic<uint64_t> applied{0};
};

ReplicaCopy::ReplicaCopy(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
ReplicaCopy::~ReplicaCopy() = default;

const std::string& ReplicaCopy::uuid() const { return impl_->opt.uuid; }
uint32_t ReplicaCopy::copy() const { return impl_->opt.copy; }
uint64_t ReplicaCopy::applied_seq() const { return impl_->applied.load(); }
std::string ReplicaCopy::state() const {
  return repl::to_string(static_cast<repl::ReplicaState>(impl_->state.load()));
}

core::Result<std::shared_ptr<ReplicaCopy>, std::string> ReplicaCopy::open(
    asio::io_context& io, std::shared_ptr<FileVolume> local, Options options) {
  auto impl = std::make_unique<Impl>(io, std::move(local), std::move(options));
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

// Carries out the engine's actions; runs on the copy's strand.
void run(const std::shared_ptr<ReplicaCopy>& self, ReplicaCopy::Impl& s) {
  for (;;) {
    auto actions = s.engine->take_actions();
    if (actions.empty()) break;
    for (auto& a : actions) {
      std::visit(
          Overloaded{
              [&](repl::ReplicaIssueStore& is) {
                const repl::StoreOp op = is.op;
                ReplicaCopy::Impl* impl = &s;
                auto back = [self, impl, tag = op.tag](core::IoResult r, repl::Payload data) {
                  asio::post(impl->strand, [self, impl, tag, r, data = std::move(data)] {
                    if (impl->closed) return;
                    impl->engine->on_store_done(tag, r, data);
                    run(self, *impl);
                  });
                };
                run_store_op(*s.local, op, back);
              },
              [&](repl::ReplicaSendFrame& sf) {
                if (!s.conn) return;
                std::vector<uint8_t> out;
                std::span<const uint8_t> body;
                if (sf.payload) body = {sf.payload->data(), sf.payload->size()};
                if (wire::encode(sf.header, body, false, out)) (void)s.conn->reply(std::move(out));
              },
          },
          a);
    }
  }
  s.state.store(static_cast<int>(s.engine->state()));
  s.applied.store(s.engine->applied_seq());
}

}  // namespace

void ReplicaCopy::on_frame(const std::shared_ptr<link::InboundConnection>& conn,
                           const wire::FrameHeader& header, std::vector<uint8_t> payload) {
  auto self = shared_from_this();
  asio::post(impl_->strand, [self, conn, header, p = std::move(payload)]() mutable {
    Impl& s = *self->impl_;
    if (s.closed) return nack(conn, header, wire::NackReason::kUnknownCopy, "copy closed");
    if (s.conn != conn) {
      if (s.conn) s.engine->on_link_down();  // the master reconnected: a new stream
      s.conn = conn;
    }
    s.engine->on_frame(wire::Frame{header, std::move(p)});
    run(self, s);
  });
}

void ReplicaCopy::on_connection_down(uint64_t connection_id) {
  auto self = shared_from_this();
  asio::post(impl_->strand, [self, connection_id] {
    Impl& s = *self->impl_;
    if (!s.conn || s.conn->id() != connection_id || s.closed) return;
    s.conn.reset();
    s.engine->on_link_down();
    run(self, s);
  });
}

void ReplicaCopy::set_generation(uint64_t generation) {
  auto self = shared_from_this();
  asio::post(impl_->strand, [self, generation] {
    Impl& s = *self->impl_;
    if (s.closed) return;
    (void)s.engine->set_generation(generation);
    run(self, s);
  });
}

void ReplicaCopy::close(std::function<void()> done) {
  auto self = shared_from_this();
  asio::post(impl_->strand, [self, done = std::move(done)]() mutable {
    Impl& s = *self->impl_;
    if (s.closed) {
      if (done) done();
      return;
    }
    s.closed = true;
    s.conn.reset();
    uint64_t applied = s.engine->applied_seq();
    bool consistent = s.engine->consistent();
    s.local->flush([self, applied, consistent, done = std::move(done)](core::IoResult r) mutable {
      Impl& s = *self->impl_;
      asio::post(s.strand, [self, applied, consistent, ok = r.ok(), done = std::move(done)] {
        Impl& s = *self->impl_;
        // Only a consistent copy may record clean regions (replica_engine.h).
        if (ok && consistent) (void)s.map->checkpoint(applied, /*everything=*/true);
        if (done) done();
      });
    });
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
