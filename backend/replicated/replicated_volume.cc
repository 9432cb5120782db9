#include "backend/replicated/replicated_volume.h"
#include "backend/replicated/reply_poll.h"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <boost/asio/dispatch.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <cerrno>
#include <cstring>
#include <deque>
#include <map>
#include <optional>

#include "backend/link/peer_link.h"
#include "backend/repl/failure_policy.h"
#include "backend/repl/master_engine.h"
#include "backend/repl/region_map.h"
#include "backend/replicated/store_ops.h"

namespace tandem::backend::replicated {
namespace {

namespace asio = boost::asio;
namespace repl = backend::repl;
using Clock = std::chrono::steady_clock;

template <class... Ts>
struct Overloaded : Ts... {
  using Ts::operator()...;
};
template <class... Ts>
Overloaded(Ts...) -> Overloaded<Ts...>;

constexpr uint64_t kSeqBlock = uint64_t{1} << 20;
constexpr auto kWarmUp = std::chrono::seconds(3);
// Region maps mark a region dirty before writing it and clean it only at a FLUSH that finds
// it untouched since the previous one (region_map.h), so without flushes every region an
// initiator wrote stays dirty and a copy that crashes is resynced all over. Once writes pause
// for this long, the master sends two flushes of its own: every copy's map ends clean, and a
// copy that crashes later gets a delta resync (like the page cache's periodic writeback).
constexpr auto kIdleFlushAfter = std::chrono::seconds(1);
constexpr uint32_t kLz4MissesBeforeSkip = 8;
constexpr uint32_t kLz4Skip = 256;  // at most, for the first links to come up

core::IoResult not_ready() { return core::IoResult{core::IoStatus::kNotReady, 0}; }

}  // namespace

std::vector<std::pair<uint64_t, uint64_t>> allocated_extents(int fd, uint64_t size) {
  std::vector<std::pair<uint64_t, uint64_t>> out;
  off_t pos = 0;
  while (static_cast<uint64_t>(pos) < size) {
    off_t data = ::lseek(fd, pos, SEEK_DATA);
    if (data < 0) {
      if (errno == ENXIO) break;  // no data after pos
      // SEEK_DATA unsupported: treat the whole rest as written (safe: over-sends).
      out.emplace_back(pos, size - pos);
      break;
    }
    off_t hole = ::lseek(fd, data, SEEK_HOLE);
    if (hole < 0) hole = static_cast<off_t>(size);
    uint64_t end = std::min<uint64_t>(hole, size);
    if (static_cast<uint64_t>(data) >= end) break;
    out.emplace_back(data, end - data);
    pos = hole;
  }
  return out;
}

struct ReplicatedVolume::Impl {
  enum class Mode { kSolo, kSwitchingOn, kReplicated, kSwitchingOff };
  struct Pending {
    Done done;
    Clock::time_point start;
    bool is_write = false;
    repl::Payload keep_compare;  // kept alive with the request
  };
  // An encoded frame: `head` (the whole frame when `body` is null), then the payload bytes
  // shared by every copy's frame of one write.
  struct OutFrame {
    std::vector<uint8_t> head;
    repl::Payload body;
    size_t size() const { return head.size() + (body ? body->size() : 0); }
  };
  struct CopyLink {
    ReplicaPeer peer;
    std::unique_ptr<link::PeerLink> link;
    uint64_t epoch = 0;
    bool up = false;
    std::deque<OutFrame> backlog;  // encoded frames refused for back-pressure
    bool waiting_writable = false;
  };

  Impl(asio::io_context& io, asio::ssl::context& tls, std::shared_ptr<FileVolume> l, Options o)
      : io(io),
        tls(tls),
        local(std::move(l)),
        strand(asio::make_strand(io)),
        opt(std::move(o)),
        timer(strand) {}
  ~Impl() {
    if (seq_fd >= 0) ::close(seq_fd);
    detail::awaiting_copies_add(-static_cast<int64_t>(pending.size()));  // never answered
  }

  asio::io_context& io;
  asio::ssl::context& tls;
  std::shared_ptr<FileVolume> local;
  asio::strand<asio::io_context::executor_type> strand;
  Options opt;
  asio::steady_timer timer;

  // Strand state.
  Mode mode = Mode::kSolo;
  std::vector<ReplicaPeer> desired;
  std::unique_ptr<repl::FileRegionStore> map_store;
  std::optional<repl::RegionMap> map;
  std::unique_ptr<repl::MasterEngine> engine;
  bool virgin = false;  // the engine started on a never-written volume at sequence 0
  uint64_t engine_epoch = 0;
  std::map<uint32_t, CopyLink> copies;
  uint64_t next_link_epoch = 1;
  uint64_t next_id = 1;
  std::map<uint64_t, Pending> pending;
  std::deque<std::pair<repl::Request, Pending>> held;  // while switching on
  // While fenced (lease lapsed): requests and completions, oldest first (set_fenced).
  struct Parked {
    std::function<void(Done)> resume;
    Done done;
    Clock::time_point at;
  };
  std::deque<Parked> parked;
  int seq_fd = -1;
  uint64_t reserved = 0;  // every sequence ever used is <= this
  bool closed = false;
  bool ticking = false;
  // Failure-mode policy (failure_policy.h): inputs, the grace clock and the hard-mode latch.
  repl::PolicyInput policy;
  std::optional<Clock::time_point> below_since;
  Clock::time_point resync_free_at{};  // the resync rate limit's next free moment
  int idle_flushes_due = 0;            // flushes left before the maps are clean (tick())
  Clock::time_point last_write_at{};
  // The payload last encoded (lz4 + CRC), reused for the other copies' frames of that write;
  // dropped at the end of each engine turn.
  repl::Payload encoded_src;
  wire::EncodedPayload encoded;
  uint32_t lz4_misses = 0;  // data frames in a row that lz4 did not shrink
  uint32_t lz4_skip = 0;    // data frames left to send without trying lz4
  // Right after the switch to replication, requests wait (bounded) for the links to come up,
  // so a fresh volume's first write does not knock its in-sync replicas out of sync.
  bool warming = false;
  Clock::time_point warm_until{};

  mutable std::mutex status_mu;
  std::vector<CopyStatus> status;  // guarded by status_mu

  // Any thread.
  std::atomic<bool> solo{true};
  std::atomic<uint64_t> direct{0};  // direct (solo) requests in flight
  std::atomic<bool> degraded{false};
  std::atomic<core::VolumeState> health{core::VolumeState::kHealthy};  // the policy's verdict
  std::atomic<bool> closing{false};
  // Who serves the volume here once this master closed (set_successor); under successor_mu.
  mutable std::mutex successor_mu;
  std::shared_ptr<core::BlockVolume> successor;
  std::atomic<uint64_t> last_seq{0};
  std::atomic<bool> compress{true};
  std::atomic<bool> fenced{false};
  ReplicatedStats stats;
};

ReplicatedVolume::ReplicatedVolume(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

ReplicatedVolume::~ReplicatedVolume() = default;

core::Result<std::shared_ptr<ReplicatedVolume>, std::string> ReplicatedVolume::open(
    asio::io_context& io, asio::ssl::context& tls, std::shared_ptr<FileVolume> local,
    Options options) {
  auto impl = std::make_unique<Impl>(io, tls, std::move(local), std::move(options));
  // The reservation file exists once the volume was ever replicated; solo volumes have none.
  impl->seq_fd = ::open(impl->opt.seq_path.c_str(), O_RDWR | O_CLOEXEC);
  if (impl->seq_fd < 0 && errno != ENOENT) {
    return core::fail("cannot open " + impl->opt.seq_path + ": " + std::strerror(errno));
  }
  uint64_t stored = 0;
  ssize_t n = 0;
  if (impl->seq_fd >= 0) n = ::pread(impl->seq_fd, &stored, sizeof stored, 0);
  if (n != 0 && n != static_cast<ssize_t>(sizeof stored)) {
    ::close(impl->seq_fd);
    return core::fail("sequence file " + impl->opt.seq_path + " is torn");
  }
  impl->reserved = n == 0 ? 0 : stored;
  impl->last_seq.store(impl->reserved);
  impl->compress.store(impl->opt.compress);
  auto vol = std::shared_ptr<ReplicatedVolume>(new ReplicatedVolume(std::move(impl)));
  return vol;
}

const std::string& ReplicatedVolume::uuid() const { return impl_->local->uuid(); }
uint32_t ReplicatedVolume::block_size() const { return impl_->local->block_size(); }
uint64_t ReplicatedVolume::block_count() const { return impl_->local->block_count(); }
uint64_t ReplicatedVolume::last_sequence() const { return impl_->last_seq.load(); }
const ReplicatedStats& ReplicatedVolume::stats() const { return impl_->stats; }

core::VolumeState ReplicatedVolume::state() const {
  if (impl_->closing.load(std::memory_order_acquire)) {
    auto next = successor();
    return next ? next->state() : core::VolumeState::kOffline;
  }
  auto s = impl_->local->state();
  if (s != core::VolumeState::kHealthy) return s;
  auto h = impl_->health.load(std::memory_order_relaxed);
  if (h != core::VolumeState::kHealthy) return h;
  return impl_->degraded.load(std::memory_order_relaxed) ? core::VolumeState::kDegraded : s;
}

std::vector<CopyStatus> ReplicatedVolume::copy_status() const {
  std::lock_guard lock(impl_->status_mu);
  return impl_->status;
}

// ---------------------------------------------------------------------------------------
// The strand side. Everything in this block runs on impl_->strand.

namespace {

// The strand-side logic, as a view over the volume's Impl. `self` keeps the volume (and so
// the Impl) alive for the duration of a handler.
struct Strand {
  ReplicatedVolume::Impl& s;
  std::shared_ptr<ReplicatedVolume> self;

  using Impl = ReplicatedVolume::Impl;
  using Mode = Impl::Mode;

  // Persists a new reservation before any sequence above the old one is used.
  bool reserve(uint64_t at_least) {
    uint64_t want = std::max(at_least, s.reserved) + kSeqBlock;
    if (s.seq_fd < 0) {
      s.seq_fd = ::open(s.opt.seq_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
      if (s.seq_fd < 0) {
        spdlog::error("volume={} cannot create {}: {}", s.opt.uuid, s.opt.seq_path,
                      std::strerror(errno));
        return false;
      }
    }
    if (::pwrite(s.seq_fd, &want, sizeof want, 0) != static_cast<ssize_t>(sizeof want) ||
        ::fdatasync(s.seq_fd) != 0) {
      spdlog::error("volume={} cannot persist sequence reservation: {}", s.opt.uuid,
                    std::strerror(errno));
      return false;
    }
    s.reserved = want;
    return true;
  }

  void check_reservation() {
    if (!s.engine) return;
    uint64_t last = s.engine->last_sequence();
    s.last_seq.store(last, std::memory_order_relaxed);
    if (last + kSeqBlock / 2 >= s.reserved) (void)reserve(last);
  }

  bool start_engine() {
    repl::RegionGeometry g;
    g.volume_bytes = s.local->block_count() * s.local->block_size();
    g.block_size = s.local->block_size();
    g.region_shift = repl::kDefaultRegionShift;
    bool existed = ::access(s.opt.map_path.c_str(), F_OK) == 0;
    auto store = repl::FileRegionStore::open(s.opt.map_path);
    if (!store) {
      spdlog::error("volume={} region map {}: {}", s.opt.uuid, s.opt.map_path,
                    store.error().message);
      return false;
    }
    s.map_store = std::move(*store);
    std::optional<repl::RegionMap> map;
    s.virgin = false;
    if (existed) {
      auto m = repl::RegionMap::open(s.map_store.get(), g);
      if (m) {
        map.emplace(std::move(*m));
      } else {
        spdlog::warn("volume={} region map unusable ({}): every region resyncs", s.opt.uuid,
                     m.error().message);
        auto c = repl::RegionMap::create(s.map_store.get(), g, /*all_unknown=*/true);
        if (!c) return false;
        map.emplace(std::move(*c));
      }
    } else {
      // Served without a map until now: every allocated extent may hold data no replica has.
      // Mark those regions at one fresh sequence; never-written regions stay at 0 (not sent).
      auto c = repl::RegionMap::create(s.map_store.get(), g);
      if (!c) {
        spdlog::error("volume={} cannot create region map: {}", s.opt.uuid, c.error().message);
        return false;
      }
      map.emplace(std::move(*c));
      auto extents = data_extents();
      if (extents.empty() && s.reserved == 0 && s.opt.min_sequence == 0) {
        s.virgin = true;
      } else if (!extents.empty()) {
        if (!reserve(std::max(s.reserved, s.opt.min_sequence))) return false;
        uint64_t seq = s.reserved - kSeqBlock + 1;  // above every sequence ever used
        uint64_t bs = s.local->block_size();
        for (auto [off, len] : extents) {
          uint64_t lba = off / bs;
          uint64_t end = (off + len + bs - 1) / bs;
          if (auto r = map->mark(lba, end - lba, seq); !r) {
            spdlog::error("volume={} region map: {}", s.opt.uuid, r.error().message);
            return false;
          }
        }
        // Clean at once: data_extents() made the image stable before reading its extents.
        (void)map->checkpoint(seq, true);
      }
    }
    s.map = std::move(map);
    s.map->set_mark_group(repl::RegionMap::default_mark_group(g));
    repl::MasterConfig cfg;
    (void)wire::parse_uuid(s.opt.uuid, cfg.volume);
    cfg.generation = s.opt.generation;
    cfg.last_sequence = std::max(s.reserved, s.opt.min_sequence);
    cfg.block_size = s.local->block_size();
    cfg.block_count = s.local->block_count();
    if (s.virgin) cfg.last_sequence = 0;
    s.engine = std::make_unique<repl::MasterEngine>(cfg, &*s.map);
    ++s.engine_epoch;
    if (!reserve(cfg.last_sequence)) return false;
    return true;
  }

  std::vector<std::pair<uint64_t, uint64_t>> data_extents() {
    // The image again, read-only, for SEEK_DATA; synced first so the extents found are
    // stable data (the map records them clean).
    uint64_t bytes = s.local->block_count() * s.local->block_size();
    int fd = ::open(s.opt.image_path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return {{0, bytes}};
    (void)::fdatasync(fd);
    auto out = allocated_extents(fd, bytes);
    ::close(fd);
    return out;
  }

  void stop_engine() {
    s.engine.reset();
    s.map.reset();
    s.map_store.reset();
    ++s.engine_epoch;
    ::unlink(s.opt.map_path.c_str());  // no longer maintained: rebuilt from extents next time
  }

  void apply() {
    if (s.closed) return;
    switch (s.mode) {
      case Mode::kSolo:
        if (s.desired.empty()) return;
        s.mode = Mode::kSwitchingOn;
        s.solo.store(false, std::memory_order_seq_cst);
        check_drained();
        return;
      case Mode::kSwitchingOn:
        return;  // check_drained() continues
      case Mode::kSwitchingOff:
        if (s.desired.empty()) return check_idle();
        s.mode = Mode::kReplicated;
        [[fallthrough]];
      case Mode::kReplicated:
        sync_copies();
        if (s.desired.empty()) {
          s.mode = Mode::kSwitchingOff;
          check_idle();
        }
        return;
    }
  }

  void check_drained() {
    if (s.mode != Mode::kSwitchingOn || s.direct.load() != 0) return;
    if (!start_engine()) {
      // Cannot replicate: keep serving solo rather than refuse I/O; retried on the next tick.
      s.mode = Mode::kSolo;
      s.solo.store(true);
      return;
    }
    s.mode = Mode::kReplicated;
    spdlog::info("volume={} replicated path on (sequence {})", s.opt.uuid,
                 s.engine->last_sequence());
    s.warming = true;
    s.warm_until = Clock::now() + kWarmUp;
    sync_copies();
    start_ticking();
    check_warm();
  }

  // Ends the warm-up once every copy's link is up (or the bound passed): held requests go.
  void check_warm() {
    if (!s.warming) return;
    // Only copies that start in sync matter (a fresh volume): the others are not waited for.
    bool waiting = std::any_of(s.copies.begin(), s.copies.end(), [&](const auto& kv) {
      auto p = s.engine ? s.engine->copy_progress(kv.first) : std::nullopt;
      return !kv.second.up && p && p->state == repl::CopyState::kInSync;
    });
    if (waiting && Clock::now() < s.warm_until) return;
    s.warming = false;
    auto held = std::move(s.held);
    s.held.clear();
    for (auto& [req, p] : held) submit(std::move(req), std::move(p));
    run();
  }

  void check_idle() {
    if (s.mode != Mode::kSwitchingOff || !s.engine) return;
    if (s.engine->active_ops() != 0 || s.engine->queued_requests() != 0) return;
    stop_engine();
    s.mode = Mode::kSolo;
    s.degraded.store(false);
    s.solo.store(true, std::memory_order_seq_cst);
    publish();
    spdlog::info("volume={} no replicas: direct path", s.opt.uuid);
  }

  void sync_copies() {
    // Remove copies no longer wanted.
    for (auto it = s.copies.begin(); it != s.copies.end();) {
      bool keep = std::any_of(s.desired.begin(), s.desired.end(),
                              [&](const ReplicaPeer& p) { return p.copy == it->first; });
      if (keep) {
        ++it;
        continue;
      }
      spdlog::info("volume={} copy {} on {} removed", s.opt.uuid, it->first,
                   it->second.peer.node_name);
      (void)s.engine->remove_copy(it->first);
      if (it->second.link) it->second.link->close();
      it = s.copies.erase(it);
    }
    for (const auto& p : s.desired) {
      auto it = s.copies.find(p.copy);
      if (it != s.copies.end()) {
        if (it->second.peer.host == p.host && it->second.peer.port == p.port) continue;
        // Moved: a new link to the new address; the copy resyncs.
        (void)s.engine->remove_copy(p.copy);
        if (it->second.link) it->second.link->close();
        s.copies.erase(it);
      }
      bool in_sync = p.in_sync && s.virgin && s.engine->last_sequence() == 0;
      if (auto r = s.engine->add_copy(p.copy, in_sync, false, p.in_sync); !r) {
        spdlog::error("volume={} add copy {}: {}", s.opt.uuid, p.copy, r.error().message);
        continue;
      }
      Impl::CopyLink& c = s.copies[p.copy];
      c.peer = p;
      c.epoch = s.next_link_epoch++;
      open_link(c);
    }
    run();
  }

  void open_link(Impl::CopyLink& c) {
    link::PeerLink::Options lo;
    lo.peer_name = c.peer.node_name;
    lo.host = c.peer.host;
    lo.port = c.peer.port;
    lo.hello = s.opt.hello;
    lo.metrics = s.opt.link_metrics;
    lo.idle_timeout = s.opt.link_timeout;
    lo.heartbeat_interval = std::max(s.opt.link_timeout / 4, std::chrono::milliseconds(50));
    std::weak_ptr<ReplicatedVolume> weak = self;
    uint32_t copy = c.peer.copy;
    uint64_t epoch = c.epoch;
    Impl* impl = &s;
    // The link runs on the volume's strand: an ACK is handled where it is read, and the
    // frames one engine turn emits are written together (no thread hand-off either way).
    auto link = link::PeerLink::create(
        s.io, s.strand, s.tls, lo,
        [weak, impl, copy, epoch](const wire::FrameHeader& h, std::vector<uint8_t> payload) {
          auto v = weak.lock();
          if (!v) return;
          asio::dispatch(impl->strand, [v, impl, copy, epoch, h, p = std::move(payload)]() mutable {
            Strand st{*impl, v};
            auto it = impl->copies.find(copy);
            if (it == impl->copies.end() || it->second.epoch != epoch || !impl->engine) return;
            impl->engine->on_frame(copy, wire::Frame{h, std::move(p)});
            st.run();
          });
        },
        [weak, impl, copy, epoch](const link::PeerLink::StateChange& ch) {
          auto v = weak.lock();
          if (!v) return;
          asio::post(impl->strand, [v, impl, copy, epoch, ch] {
            Strand st{*impl, v};
            st.on_link_state(copy, epoch, ch);
          });
        });
    if (!link) {
      spdlog::error("volume={} link to {}: {}", s.opt.uuid, c.peer.node_name, link.error().message);
      return;
    }
    c.link = std::move(*link);
  }

  void on_link_state(uint32_t copy, uint64_t epoch, const link::PeerLink::StateChange& ch) {
    auto it = s.copies.find(copy);
    if (s.closed || it == s.copies.end() || it->second.epoch != epoch || !s.engine) return;
    Impl::CopyLink& c = it->second;
    if (ch.state == link::PeerLink::State::kUp) {
      spdlog::info("volume={} link to copy {} on {} up", s.opt.uuid, copy, c.peer.node_name);
      c.up = true;
      c.backlog.clear();
      s.engine->on_link_up(copy);
      // Delta sync at once if the copy is not in sync (the tick retries later otherwise).
      auto p = s.engine->copy_progress(copy);
      if (p && p->state == repl::CopyState::kOutOfSync) (void)s.engine->start_resync(copy);
      check_warm();
    } else if (ch.state == link::PeerLink::State::kDown ||
               ch.state == link::PeerLink::State::kClosed) {
      if (c.up) {
        spdlog::warn("volume={} link to copy {} on {} down: {}", s.opt.uuid, copy, c.peer.node_name,
                     ch.reason);
      }
      c.up = false;
      c.backlog.clear();
      s.engine->on_link_down(copy);
    }
    run();
    publish();
  }

  void send(uint32_t copy, const wire::FrameHeader& h, const repl::Payload& payload) {
    auto it = s.copies.find(copy);
    if (it == s.copies.end() || !it->second.link) return;
    Impl::CopyLink& c = it->second;
    Impl::OutFrame out;
    bool data = h.type == wire::FrameType::kWrite || h.type == wire::FrameType::kSyncDelta ||
                h.type == wire::FrameType::kWriteSame;
    wire::WireResult<size_t> r = 0;
    if (data && payload && !payload->empty()) {
      // Encoded once per payload: every copy's frame shares the bytes (only the header, which
      // names the copy, is per copy).
      const wire::EncodedPayload& ep = encode_payload(payload);
      out.body = ep.wire;
      r = wire::encode_head(h, ep, out.head);
    } else {
      std::span<const uint8_t> body;
      if (payload) body = {payload->data(), payload->size()};
      r = wire::encode(h, body, false, out.head);
    }
    if (!r) {
      spdlog::error("volume={} cannot encode {} frame: {}", s.opt.uuid, wire::to_string(h.type),
                    r.error().message);
      return;
    }
    if (h.type == wire::FrameType::kSyncDelta) {
      refund_resync(h.count, out.body ? out.body->size() : out.head.size() - wire::kHeaderSize);
    }
    if (!c.backlog.empty()) {
      c.backlog.push_back(std::move(out));
      return;
    }
    push(c, std::move(out));
  }

  // The resync rate limit counts what a resync puts on the wire: each resync read reserves
  // its whole region (issue()), and its SYNC_DELTA (after lz4) gives back what it did not use.
  void refund_resync(uint64_t region, uint64_t wire_bytes) {
    if (s.opt.resync_bytes_per_second == 0 || !s.map || region >= s.map->region_count()) return;
    const uint64_t reserved = s.map->blocks_in(region) * s.local->block_size();
    if (wire_bytes >= reserved) return;
    s.resync_free_at -= std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(
        double(reserved - wire_bytes) / double(s.opt.resync_bytes_per_second)));
  }

  const wire::EncodedPayload& encode_payload(const repl::Payload& payload) {
    if (s.encoded_src == payload) return s.encoded;
    // lz4 on data that does not shrink costs CPU and is sent raw anyway: after a run of
    // payloads that did not compress, the next ones skip the attempt (then it tries again).
    bool try_lz4 = s.compress.load(std::memory_order_relaxed);
    if (try_lz4 && s.lz4_skip > 0) {
      --s.lz4_skip;
      try_lz4 = false;
    }
    s.encoded = wire::encode_payload(payload, try_lz4);
    s.encoded_src = payload;
    if (try_lz4 && payload->size() >= wire::kMinCompressSize) {
      s.lz4_misses = s.encoded.compressed ? 0 : s.lz4_misses + 1;
      if (s.lz4_misses >= kLz4MissesBeforeSkip) {
        s.lz4_misses = 0;
        s.lz4_skip = kLz4Skip;
      }
    }
    return s.encoded;
  }

  void push(Impl::CopyLink& c, Impl::OutFrame&& frame) {
    switch (c.link->send(std::move(frame.head), frame.body)) {
      case link::SendStatus::kQueued:
        return;
      case link::SendStatus::kBackPressure:
        c.backlog.push_front(std::move(frame));
        wait_writable(c);
        return;
      case link::SendStatus::kNotUp:
        // The link dropped under us: its kDown report follows and takes the copy out.
        c.backlog.clear();
        return;
      case link::SendStatus::kInvalid:
        spdlog::error("volume={} link refused an encoded frame", s.opt.uuid);
        return;
    }
  }

  void wait_writable(Impl::CopyLink& c) {
    if (c.waiting_writable || c.backlog.empty()) return;
    c.waiting_writable = true;
    std::weak_ptr<ReplicatedVolume> weak = self;
    Impl* impl = &s;
    uint32_t copy = c.peer.copy;
    uint64_t epoch = c.epoch;
    c.link->when_writable(c.backlog.front().size(), [weak, impl, copy, epoch](bool) {
      auto v = weak.lock();
      if (!v) return;
      asio::dispatch(impl->strand, [v, impl, copy, epoch] {
        auto it = impl->copies.find(copy);
        if (it == impl->copies.end() || it->second.epoch != epoch) return;
        Strand st{*impl, v};
        Impl::CopyLink& c = it->second;
        c.waiting_writable = false;
        while (!c.backlog.empty() && !c.waiting_writable) {
          auto frame = std::move(c.backlog.front());
          c.backlog.pop_front();
          st.push(c, std::move(frame));
        }
      });
    });
  }

  void issue(const repl::StoreOp& op) {
    if (runs_inline(op)) {
      // On the strand: its completion's actions are taken by run()'s loop.
      s.engine->on_store_done(op.tag, run_inline(*s.local, op));
      return;
    }
    std::weak_ptr<ReplicatedVolume> weak = self;
    Impl* impl = &s;
    uint64_t tag = op.tag;
    uint64_t epoch = s.engine_epoch;
    auto back = [weak, impl, tag, epoch](core::IoResult r, repl::Payload data) {
      auto v = weak.lock();
      if (!v) return;
      asio::post(impl->strand, [v, impl, tag, epoch, r, data = std::move(data)] {
        if (!impl->engine || impl->engine_epoch != epoch) return;
        impl->engine->on_store_done(tag, r, data);
        Strand{*impl, v}.run();
      });
    };
    // Pacing: a resync read waits until the rate limit allows its bytes (the engine keeps
    // overlapping writes ordered behind it, so only the resync slows down); its delta gives
    // back what it does not send (refund_resync).
    if (op.kind == repl::StoreKind::kRead && op.resync && s.opt.resync_bytes_per_second > 0) {
      auto now = Clock::now();
      auto bytes = op.blocks * s.local->block_size();
      auto start = std::max(now, s.resync_free_at);
      s.resync_free_at =
          start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(
                      double(bytes) / double(s.opt.resync_bytes_per_second)));
      if (start > now) {
        auto timer = std::make_shared<asio::steady_timer>(s.strand, start);
        auto local = s.local;
        timer->async_wait([timer, local, op, back](boost::system::error_code) {
          run_store_op(*local, op, back);
        });
        return;
      }
    }
    run_store_op(*s.local, op, back);
  }

  void run() {
    if (!s.engine || s.closed) return;
    std::vector<repl::StoreOp> local_now;
    for (;;) {
      auto actions = s.engine->take_actions();
      if (actions.empty()) break;
      for (auto& a : actions) {
        std::visit(Overloaded{
                       [&](repl::IssueStore& is) {
                         // A small write is written on the strand (issue()), after this
                         // batch's frames: the replicas' copies then travel while the local
                         // one is written, instead of after it (QD 1 latency). The engine
                         // cannot tell: it is as if that store op had finished a bit later.
                         if (runs_inline(is.op)) {
                           local_now.push_back(std::move(is.op));
                         } else {
                           issue(is.op);
                         }
                       },
                       [&](repl::SendFrame& sf) { send(sf.copy, sf.header, sf.payload); },
                       [&](repl::CompleteOp& c) { complete(c.id, c.result); },
                       [&](repl::CopyOutOfSync& o) { out_of_sync(o); },
                       [&](repl::CopyInSync& i) {
                         spdlog::info("volume={} copy {} in sync at sequence {}", s.opt.uuid,
                                      i.copy, i.sequence);
                         changed();
                       },
                       [&](repl::Deposed& d) {
                         spdlog::error("volume={} deposed: a replica knows generation {}",
                                       s.opt.uuid, d.newer_generation);
                         changed();
                       },
                   },
                   a);
      }
      // In the engine's order; their completions are the next batch's actions.
      for (const auto& op : local_now) issue(op);
      local_now.clear();
    }
    s.encoded_src.reset();  // every copy's frame of this turn is queued
    s.encoded = {};
    check_reservation();
    if (s.mode == Mode::kSwitchingOff) check_idle();
  }

  void out_of_sync(const repl::CopyOutOfSync& o) {
    spdlog::warn("volume={} copy {} out of sync (applied through {}): {}", s.opt.uuid, o.copy,
                 o.acked_through, o.reason);
    if (o.needs_confirm) {
      if (s.opt.on_out_of_sync && s.copies.count(o.copy)) {
        s.opt.on_out_of_sync(o.copy, o.reason);
      } else {
        s.engine->confirm_out_of_sync(o.copy);
      }
    }
    changed();
  }

  void changed() {
    publish();
    if (s.opt.on_change) s.opt.on_change();
  }

  void complete(uint64_t id, core::IoResult r) {
    auto it = s.pending.find(id);
    if (it == s.pending.end()) return;
    Impl::Pending p = std::move(it->second);
    s.pending.erase(it);
    detail::awaiting_copies_add(-1);
    if (s.fenced.load()) {  // never acknowledge without a lease: wait for its renewal
      auto start = p.start;
      bool is_write = p.is_write;
      Impl* sp = &s;
      s.parked.push_back({[self = self, sp, start, is_write, r](ReplicatedVolume::Done d) {
                            auto& o = sp->opt;
                            if (is_write && o.observe_write) {
                              o.observe_write(
                                  std::chrono::duration<double>(Clock::now() - start).count());
                            }
                            d(r);
                          },
                          std::move(p.done), Clock::now()});
      return;
    }
    if (p.is_write && s.opt.observe_write) {
      s.opt.observe_write(std::chrono::duration<double>(Clock::now() - p.start).count());
    }
    p.done(r);
  }

  // Renewed: everything held goes on, in order. Still fenced: what waited longer than
  // lease_hold is answered NOT READY.
  void release_parked() {
    auto now = Clock::now();
    while (!s.parked.empty()) {
      bool fenced = s.fenced.load();
      if (fenced && now - s.parked.front().at < s.opt.lease_hold) break;
      Impl::Parked p = std::move(s.parked.front());
      s.parked.pop_front();
      if (fenced) {
        p.done(not_ready());
      } else {
        p.resume(std::move(p.done));
      }
    }
  }

  void submit(repl::Request req, Impl::Pending p) {
    if (s.closed) return p.done(not_ready());
    if (s.warming) {
      s.held.emplace_back(std::move(req), std::move(p));
      return;
    }
    switch (s.mode) {
      case Mode::kSwitchingOn:
        s.held.emplace_back(std::move(req), std::move(p));
        return;
      case Mode::kSolo:
        // Posted while the volume was switching off: run it directly.
        return direct_request(req, std::move(p));
      case Mode::kReplicated:
      case Mode::kSwitchingOff:
        break;
    }
    if (req.kind == repl::OpKind::kFlush) {
      s.idle_flushes_due = std::max(0, s.idle_flushes_due - 1);
    } else {
      s.idle_flushes_due = 2;
      s.last_write_at = Clock::now();
    }
    req.id = s.next_id++;
    s.pending.emplace(req.id, std::move(p));
    detail::awaiting_copies_add(1);
    s.engine->submit(std::move(req));
    run();
  }

  void direct_request(const repl::Request& req, Impl::Pending p) {
    auto done = std::make_shared<core::BlockVolume::Done>(std::move(p.done));
    auto keep = req;
    auto cb = [done, keep](core::IoResult r) { (*done)(r); };
    switch (req.kind) {
      case repl::OpKind::kWrite:
        s.local->write(req.lba, std::as_bytes(std::span(*req.data)), req.fua, cb);
        break;
      case repl::OpKind::kUnmap:
        s.local->unmap(req.lba, req.blocks, cb);
        break;
      case repl::OpKind::kFlush:
        s.local->flush(cb);
        break;
      case repl::OpKind::kCompareAndWrite:
        s.local->compare_and_write(req.lba, std::as_bytes(std::span(*req.compare)),
                                   std::as_bytes(std::span(*req.data)), req.fua, cb);
        break;
    }
  }

  void tick() {
    if (s.closed) return;
    if (!s.parked.empty()) release_parked();  // expires holds while the lease stays lapsed
    check_warm();
    if (s.idle_flushes_due > 0 && s.mode == Mode::kReplicated && !s.warming && !s.fenced.load() &&
        Clock::now() - s.last_write_at >= kIdleFlushAfter) {
      repl::Request f;
      f.kind = repl::OpKind::kFlush;
      submit(std::move(f), Impl::Pending{[](core::IoResult) {}, Clock::now(), false, nullptr});
    }
    if (s.mode == Mode::kSolo && !s.desired.empty()) apply();  // a failed switch retries
    if (s.engine) {
      for (auto& [id, c] : s.copies) {
        auto p = s.engine->copy_progress(id);
        if (p && p->state == repl::CopyState::kOutOfSync && p->link_up) {
          (void)s.engine->start_resync(id);
        }
      }
      run();
    }
    publish();
  }

  void start_ticking() {
    if (s.ticking) return;
    s.ticking = true;
    arm();
  }

  void arm() {
    s.timer.expires_after(s.opt.tick);
    std::weak_ptr<ReplicatedVolume> weak = self;
    Impl* impl = &s;
    s.timer.async_wait([weak, impl](boost::system::error_code ec) {
      if (ec) return;
      auto v = weak.lock();
      if (!v) return;
      Strand st{*impl, v};
      st.tick();
      if (!impl->closed) st.arm();
    });
  }

  // Applies the failure mode to the in-sync count (solo volumes with no declared replicas are
  // always healthy). A change is logged and reported at once.
  void evaluate_policy() {
    int in_sync = 0;
    for (const auto& [id, c] : s.copies) {
      auto p = s.engine ? s.engine->copy_progress(id) : std::nullopt;
      if (p && p->state == repl::CopyState::kInSync) ++in_sync;
    }
    auto now = Clock::now();
    s.policy.in_sync = in_sync;
    s.policy.below_for =
        s.below_since ? std::chrono::duration_cast<std::chrono::milliseconds>(now - *s.below_since)
                      : std::chrono::milliseconds(0);
    auto d = repl::evaluate(s.policy);
    if (d.below_requirement) {
      if (!s.below_since) s.below_since = now;
    } else {
      s.below_since.reset();
    }
    s.policy.sticky_read_only = d.sticky_read_only;
    if (!d.sticky_read_only) s.policy.relogged_in = false;
    auto state = repl::to_volume_state(d.health);
    if (state == core::VolumeState::kDegraded) state = core::VolumeState::kHealthy;  // below
    auto was = s.health.exchange(state);
    if (was != state) {
      spdlog::warn("volume={} failure mode {}: {} ({} of {} replicas in sync)", s.opt.uuid,
                   core::to_string(s.policy.mode), core::to_string(state), in_sync,
                   s.policy.replicas);
      if (s.opt.on_change) s.opt.on_change();
    }
  }

  void publish() {
    std::vector<CopyStatus> out;
    bool any_behind = false;
    for (const auto& [id, c] : s.copies) {
      CopyStatus cs;
      cs.copy = id;
      cs.node_name = c.peer.node_name;
      cs.link_up = c.up;
      auto p = s.engine ? s.engine->copy_progress(id) : std::nullopt;
      if (p) {
        switch (p->state) {
          case repl::CopyState::kInSync:
            cs.state = "in-sync";
            break;
          case repl::CopyState::kSyncing:
          case repl::CopyState::kJoining:
            cs.state = "syncing";
            break;
          case repl::CopyState::kOutOfSync:
            cs.state = "out-of-sync";
            break;
        }
        cs.applied_seq = p->acked_through;
        // Data bytes of the resync: the total is an upper bound (regions counted whole) until
        // the copy's hashes of every region came in, then exact.
        cs.sync_total_bytes = p->sync_total_bytes;
        cs.sync_done_bytes = p->sync_done_bytes;
        cs.behind_bytes = p->pending_bytes + (cs.sync_total_bytes - cs.sync_done_bytes);
        if (p->state != repl::CopyState::kInSync) any_behind = true;
      } else {
        cs.state = "out-of-sync";
        any_behind = true;
      }
      out.push_back(std::move(cs));
    }
    s.degraded.store(any_behind, std::memory_order_relaxed);
    evaluate_policy();
    std::lock_guard lock(s.status_mu);
    s.status = std::move(out);
  }
};

}  // namespace

// ---------------------------------------------------------------------------------------
// Public calls: any thread.

void ReplicatedVolume::set_peers(std::vector<ReplicaPeer> peers) {
  auto self = shared_from_this();
  asio::post(impl_->strand, [self, peers = std::move(peers)]() mutable {
    Impl& s = *self->impl_;
    if (s.desired == peers && s.mode != Impl::Mode::kSolo) return;
    s.desired = std::move(peers);
    Strand st{s, self};
    st.apply();
    st.start_ticking();
    st.publish();
  });
}

void ReplicatedVolume::set_compression(bool on) { impl_->compress.store(on); }

void ReplicatedVolume::set_policy(core::FailureMode mode, int replicas, int threshold,
                                  std::chrono::milliseconds grace) {
  auto self = shared_from_this();
  asio::post(impl_->strand, [self, mode, replicas, threshold, grace] {
    Impl& s = *self->impl_;
    bool same = s.policy.mode == mode && s.policy.replicas == replicas &&
                s.policy.threshold == threshold && s.policy.grace == grace;
    s.policy.mode = mode;
    s.policy.replicas = replicas;
    s.policy.threshold = threshold;
    s.policy.grace = grace;
    if (!same) Strand{s, self}.evaluate_policy();
  });
}

void ReplicatedVolume::note_login() {
  auto self = shared_from_this();
  asio::post(impl_->strand, [self] {
    Impl& s = *self->impl_;
    // The seed's "remount": a login counts only once the replicas are back in sync.
    if (!s.policy.sticky_read_only || s.below_since) return;
    s.policy.relogged_in = true;
    Strand{s, self}.evaluate_policy();
  });
}

void ReplicatedVolume::set_fenced(bool fenced) {
  // Without replicas nobody else can be promoted: no reason to stop serving.
  if (impl_->solo.load()) fenced = false;
  bool was = impl_->fenced.exchange(fenced);
  if (was != fenced) {
    if (fenced) {
      spdlog::error("volume={} master lease lapsed: I/O held until it is renewed", impl_->opt.uuid);
    } else {
      spdlog::info("volume={} master lease renewed", impl_->opt.uuid);
    }
  }
  if (was && !fenced) {
    auto self = shared_from_this();
    asio::post(impl_->strand, [self] { Strand{*self->impl_, self}.release_parked(); });
  }
}

bool ReplicatedVolume::fenced() const { return impl_->fenced.load(); }

void ReplicatedVolume::hold(std::function<void(Done)> retry, Done done) {
  auto self = shared_from_this();
  asio::post(impl_->strand, [self, retry = std::move(retry), done = std::move(done)]() mutable {
    Impl& s = *self->impl_;
    if (s.closed) return done(not_ready());
    if (!s.fenced.load()) return retry(std::move(done));  // renewed meanwhile
    s.parked.push_back({std::move(retry), std::move(done), Clock::now()});
  });
}

void ReplicatedVolume::refresh_capacity() { impl_->local->refresh_capacity(); }

void ReplicatedVolume::confirm_out_of_sync(uint32_t copy) {
  auto self = shared_from_this();
  asio::post(impl_->strand, [self, copy] {
    Impl& s = *self->impl_;
    if (!s.engine) return;
    s.engine->confirm_out_of_sync(copy);
    Strand{s, self}.run();
  });
}

void ReplicatedVolume::close(std::function<void()> done) {
  impl_->closing.store(true);
  auto self = shared_from_this();
  asio::post(impl_->strand, [self, done = std::move(done)] {
    Impl& s = *self->impl_;
    s.closed = true;
    s.timer.cancel();
    for (auto& [id, c] : s.copies) {
      if (c.link) c.link->close();
    }
    auto pending = std::move(s.pending);
    s.pending.clear();
    detail::awaiting_copies_add(-static_cast<int64_t>(pending.size()));
    for (auto& [id, p] : pending) p.done(not_ready());
    auto held = std::move(s.held);
    s.held.clear();
    for (auto& [req, p] : held) p.done(not_ready());
    auto parked = std::move(s.parked);  // deposed, or shutting down: not acknowledged
    s.parked.clear();
    for (auto& p : parked) p.done(not_ready());
    if (done) done();
  });
}

bool ReplicatedVolume::try_direct(const std::function<void(Done)>& op, Done& done) {
  Impl& s = *impl_;
  if (!s.solo.load(std::memory_order_seq_cst)) return false;
  s.direct.fetch_add(1, std::memory_order_seq_cst);
  if (!s.solo.load(std::memory_order_seq_cst)) {
    direct_done();
    return false;
  }
  auto self = shared_from_this();
  op([self, d = std::move(done)](core::IoResult r) {
    d(r);
    self->direct_done();
  });
  return true;
}

void ReplicatedVolume::direct_done() {
  Impl& s = *impl_;
  if (s.direct.fetch_sub(1, std::memory_order_seq_cst) == 1 && !s.solo.load()) {
    auto self = shared_from_this();
    asio::post(s.strand, [self] { Strand{*self->impl_, self}.check_drained(); });
  }
}

namespace {

void submit_on_strand(const std::shared_ptr<ReplicatedVolume>& self, ReplicatedVolume::Impl& s,
                      repl::Request req, ReplicatedVolume::Done done, bool is_write) {
  ReplicatedVolume::Impl::Pending p{std::move(done), Clock::now(), is_write, nullptr};
  asio::post(s.strand, [self, &s, req = std::move(req), p = std::move(p)]() mutable {
    Strand{s, self}.submit(std::move(req), std::move(p));
  });
}

repl::Payload copy_payload(std::span<const std::byte> data) {
  auto p = reinterpret_cast<const uint8_t*>(data.data());
  return repl::make_payload(std::vector<uint8_t>(p, p + data.size()));
}

}  // namespace

void ReplicatedVolume::set_successor(std::shared_ptr<core::BlockVolume> next) {
  std::lock_guard lock(impl_->successor_mu);
  impl_->successor = std::move(next);
}

std::shared_ptr<core::BlockVolume> ReplicatedVolume::successor() const {
  if (!impl_->closing.load(std::memory_order_acquire)) return nullptr;
  std::lock_guard lock(impl_->successor_mu);
  return impl_->successor;
}

void ReplicatedVolume::read(uint64_t lba, std::span<std::byte> out, Done done) {
  if (auto next = successor()) return next->read(lba, out, std::move(done));
  if (impl_->fenced.load()) {
    auto self = shared_from_this();
    return hold([self, lba, out](Done d) { self->read(lba, out, std::move(d)); }, std::move(done));
  }
  // Reads are served by the master's own copy: every acknowledged write is in it.
  impl_->local->read(lba, out, std::move(done));
}

void ReplicatedVolume::lba_status(uint64_t lba, uint64_t max_blocks, ExtentsDone done) {
  if (auto next = successor()) return next->lba_status(lba, max_blocks, std::move(done));
  impl_->local->lba_status(lba, max_blocks, std::move(done));
}

namespace {

// What the failure mode lets through: a read-only volume answers writes WRITE PROTECTED, a
// halted one NOT READY (the target turns both into sense data).
std::optional<core::IoResult> refused_write(const std::atomic<core::VolumeState>& health) {
  switch (health.load(std::memory_order_relaxed)) {
    case core::VolumeState::kReadOnly:
      return core::IoResult{core::IoStatus::kWriteProtected, 0};
    case core::VolumeState::kHalted:
      return core::IoResult{core::IoStatus::kNotReady, 0};
    default:
      return std::nullopt;
  }
}

}  // namespace

void ReplicatedVolume::write(uint64_t lba, std::span<const std::byte> data, bool fua, Done done) {
  if (auto next = successor()) return next->write(lba, data, fua, std::move(done));
  if (impl_->closing.load()) return done(not_ready());
  if (impl_->fenced.load()) {
    auto self = shared_from_this();
    return hold([self, lba, data, fua](Done d) { self->write(lba, data, fua, std::move(d)); },
                std::move(done));
  }
  if (auto r = refused_write(impl_->health)) return done(*r);
  auto& local = *impl_->local;
  if (try_direct([&](Done d) { local.write(lba, data, fua, std::move(d)); }, done)) {
    impl_->stats.direct_writes.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  impl_->stats.replicated_writes.fetch_add(1, std::memory_order_relaxed);
  repl::Request r;
  r.kind = repl::OpKind::kWrite;
  r.lba = lba;
  r.blocks = data.size() / block_size();
  r.fua = fua;
  r.data = copy_payload(data);
  submit_on_strand(shared_from_this(), *impl_, std::move(r), std::move(done), true);
}

void ReplicatedVolume::flush(Done done) {
  if (auto next = successor()) return next->flush(std::move(done));
  if (impl_->closing.load()) return done(not_ready());
  if (impl_->fenced.load()) {
    auto self = shared_from_this();
    return hold([self](Done d) { self->flush(std::move(d)); }, std::move(done));
  }
  auto& local = *impl_->local;
  if (try_direct([&](Done d) { local.flush(std::move(d)); }, done)) return;
  repl::Request r;
  r.kind = repl::OpKind::kFlush;
  submit_on_strand(shared_from_this(), *impl_, std::move(r), std::move(done), false);
}

void ReplicatedVolume::unmap(uint64_t lba, uint64_t blocks, Done done) {
  if (auto next = successor()) return next->unmap(lba, blocks, std::move(done));
  if (impl_->closing.load()) return done(not_ready());
  if (impl_->fenced.load()) {
    auto self = shared_from_this();
    return hold([self, lba, blocks](Done d) { self->unmap(lba, blocks, std::move(d)); },
                std::move(done));
  }
  if (auto r = refused_write(impl_->health)) return done(*r);
  auto& local = *impl_->local;
  if (try_direct([&](Done d) { local.unmap(lba, blocks, std::move(d)); }, done)) return;
  repl::Request r;
  r.kind = repl::OpKind::kUnmap;
  r.lba = lba;
  r.blocks = blocks;
  submit_on_strand(shared_from_this(), *impl_, std::move(r), std::move(done), true);
}

void ReplicatedVolume::compare_and_write(uint64_t lba, std::span<const std::byte> compare,
                                         std::span<const std::byte> data, bool fua, Done done) {
  if (auto next = successor()) {
    return next->compare_and_write(lba, compare, data, fua, std::move(done));
  }
  if (impl_->closing.load()) return done(not_ready());
  if (impl_->fenced.load()) {
    auto self = shared_from_this();
    return hold([self, lba, compare, data,
                 fua](Done d) { self->compare_and_write(lba, compare, data, fua, std::move(d)); },
                std::move(done));
  }
  if (auto r = refused_write(impl_->health)) return done(*r);
  auto& local = *impl_->local;
  if (try_direct([&](Done d) { local.compare_and_write(lba, compare, data, fua, std::move(d)); },
                 done)) {
    return;
  }
  repl::Request r;
  r.kind = repl::OpKind::kCompareAndWrite;
  r.lba = lba;
  r.blocks = data.size() / block_size();
  r.fua = fua;
  r.data = copy_payload(data);
  r.compare = copy_payload(compare);
  submit_on_strand(shared_from_this(), *impl_, std::move(r), std::move(done), true);
}

}  // namespace tandem::backend::replicated
