#include "backend/fwd/forwarding_volume.h"

#include <algorithm>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <cstring>
#include <functional>
#include <map>
#include <mutex>
#include <random>
#include <vector>

namespace tandem::backend::fwd {
namespace {

namespace asio = boost::asio;
using Clock = std::chrono::steady_clock;
using core::IoResult;
using core::IoStatus;
using wire::IoOp;

core::Unexpected<FwdError> invalid(std::string message) {
  return core::fail(FwdError{FwdErrc::kInvalidArgument, std::move(message)});
}

bool overlaps(uint64_t a, uint64_t an, uint64_t b, uint64_t bn) {
  return a < b + bn && b < a + an;
}

// One BlockVolume call between submission and completion. The spans are the caller's
// buffers (alive until the completion ran), so nothing is copied until a frame is encoded.
struct Req {
  IoOp op = IoOp::kRead;
  uint64_t lba = 0;
  uint64_t count = 0;
  bool fua = false;
  std::span<std::byte> out;              // READ
  std::span<const std::byte> data;       // WRITE, COMPARE_AND_WRITE
  std::span<const std::byte> compare;    // COMPARE_AND_WRITE
  core::BlockVolume::Done done;          // all but LBA_STATUS
  core::BlockVolume::ExtentsDone edone;  // LBA_STATUS
  Clock::time_point deadline{};
  Clock::time_point not_before{};  // after a RETRY answer: send again from then
  bool sent = false;               // queued on the current link session, unanswered
  bool ever_sent = false;
  uint32_t retries = 0;  // RETRY answers so far: the wait doubles, up to 8 x retry_interval
  size_t bytes = 0;      // in-flight charge while sent

  bool mutating() const {
    return op == IoOp::kWrite || op == IoOp::kUnmap || op == IoOp::kCompareAndWrite;
  }
};

using Completions = std::vector<std::function<void()>>;

// The completion of `r` with `res` (and, for LBA_STATUS, its extents) as a closure to run
// outside the lock.
std::function<void()> completion(Req&& r, IoResult res, std::vector<core::LbaExtent> ext = {}) {
  if (r.op == IoOp::kLbaStatus) {
    return [fn = std::move(r.edone), res, ext = std::move(ext)]() mutable {
      if (fn) fn(res, std::move(ext));
    };
  }
  return [fn = std::move(r.done), res] {
    if (fn) fn(res);
  };
}

void run(Completions& c) {
  for (auto& f : c) f();
  c.clear();
}

}  // namespace

struct ForwardingVolume::Core : std::enable_shared_from_this<ForwardingVolume::Core> {
  Core(asio::io_context& io, asio::ssl::context& tls, Options opt)
      : io(io), tls(tls), options(std::move(opt)), strand(asio::make_strand(io)), timer(strand) {}

  asio::io_context& io;
  asio::ssl::context& tls;
  const Options options;
  wire::Uuid volume{};
  uint64_t instance = 0;  // random, non-zero: with the request id, names a request anywhere
  wire::Hello hello;
  asio::strand<asio::io_context::executor_type> strand;  // the timer's
  asio::steady_timer timer;                                // strand

  mutable std::mutex mu;
  std::map<uint64_t, Req> pending;  // by request id = submission order = deadline order
  uint64_t next_id = 1;
  std::unique_ptr<link::PeerLink> link;
  uint64_t link_gen = 0;  // callbacks of an older link are ignored
  bool link_up = false;
  bool waiting_writable = false;
  bool closed = false;
  size_t inflight_bytes = 0;
  Clock::time_point armed_at = Clock::time_point::max();
  std::atomic<uint64_t> resends{0};

  link::PeerLink::Options link_options(const Target& t) const;
  [[nodiscard]] bool open_link_locked(const Target& t);
  void submit(Req r);
  void pump_locked(Clock::time_point now, Completions& done);
  bool blocked_locked(std::map<uint64_t, Req>::iterator it) const;
  std::vector<uint8_t> encode_locked(uint64_t id, const Req& r) const;
  void unsend_all_locked();
  void schedule_locked(Clock::time_point now);
  void on_timer();
  void on_frame(uint64_t gen, const wire::FrameHeader& h, std::vector<uint8_t> payload);
  void on_state(uint64_t gen, const link::PeerLink::StateChange& c);
  void post_completions(Completions c) {
    if (c.empty()) return;
    asio::post(io, [c = std::move(c)]() mutable { run(c); });
  }
};

link::PeerLink::Options ForwardingVolume::Core::link_options(const Target& t) const {
  link::PeerLink::Options o;
  o.peer_name = t.peer_name;
  o.host = t.host;
  o.port = t.port;
  o.hello = hello;
  o.send_budget_bytes = std::max(options.max_inflight_bytes, wire::max_frame_size(0));
  o.connect_timeout = options.connect_timeout;
  o.heartbeat_interval = options.heartbeat_interval;
  o.idle_timeout = options.idle_timeout;
  o.backoff_min = options.backoff_min;
  o.backoff_max = options.backoff_max;
  o.metrics = options.metrics;
  return o;
}

bool ForwardingVolume::Core::open_link_locked(const Target& t) {
  // PeerLink::create only spawns its coroutine: no callback runs inside it, so holding mu
  // here is safe, and the new generation is in place before its first callback.
  const uint64_t gen = link_gen + 1;
  std::weak_ptr<Core> weak = weak_from_this();
  auto created = link::PeerLink::create(
      io, tls, link_options(t),
      [weak, gen](const wire::FrameHeader& h, std::vector<uint8_t> p) {
        if (auto self = weak.lock()) self->on_frame(gen, h, std::move(p));
      },
      [weak, gen](const link::PeerLink::StateChange& c) {
        if (auto self = weak.lock()) self->on_state(gen, c);
      });
  if (!created) return false;
  link = std::move(created).value();
  link_gen = gen;
  unsend_all_locked();
  return true;
}

// Forget what the previous session carried: it is sent again on the next one.
void ForwardingVolume::Core::unsend_all_locked() {
  link_up = false;
  waiting_writable = false;
  inflight_bytes = 0;
  for (auto& [id, r] : pending) r.sent = false;
}

void ForwardingVolume::Core::submit(Req r) {
  Completions done;
  {
    std::lock_guard lock(mu);
    if (closed) {
      done.push_back(completion(std::move(r), IoResult{IoStatus::kNotReady}));
    } else {
      const auto now = Clock::now();
      r.deadline = now + options.request_timeout;
      pending.emplace(next_id++, std::move(r));
      pump_locked(now, done);
      schedule_locked(now);
    }
  }
  post_completions(std::move(done));  // never inside the call (core contract)
}

// A mutating request waits while an older mutating request overlapping it is unanswered
// (sent or not): overlapping writes keep submission order across drops and re-sends.
bool ForwardingVolume::Core::blocked_locked(std::map<uint64_t, Req>::iterator it) const {
  const Req& r = it->second;
  if (!r.mutating()) return false;
  for (auto j = pending.begin(); j != it; ++j) {
    if (j->second.mutating() && overlaps(j->second.lba, j->second.count, r.lba, r.count)) {
      return true;
    }
  }
  return false;
}

std::vector<uint8_t> ForwardingVolume::Core::encode_locked(uint64_t id, const Req& r) const {
  wire::FrameHeader h;
  h.type = wire::FrameType::kIoRequest;
  h.volume = volume;
  h.sequence = id;
  h.status = uint32_t(r.op);
  h.lba = r.lba;
  h.count = r.count;
  h.flags = r.fua ? wire::kFlagFua : 0;
  h.generation = instance;
  std::vector<uint8_t> out;
  bool ok = false;
  if (r.op == IoOp::kCompareAndWrite) {
    std::vector<std::byte> both(r.compare.begin(), r.compare.end());
    both.insert(both.end(), r.data.begin(), r.data.end());
    ok = wire::encode_blocks(h, both, true, out).ok();
  } else {
    ok = wire::encode_blocks(h, r.data, true, out).ok();
  }
  if (!ok) out.clear();
  return out;
}

// Sends every request that may go now, in id order, within the in-flight budget.
void ForwardingVolume::Core::pump_locked(Clock::time_point now, Completions& done) {
  if (!link_up || closed || waiting_writable || !link) return;
  for (auto it = pending.begin(); it != pending.end();) {
    Req& r = it->second;
    if (r.sent || r.not_before > now || blocked_locked(it)) {
      ++it;
      continue;
    }
    // Charge what the request costs on the wire both ways (upper bounds, known before any
    // encoding): the master's reply budget must hold every answer we can have outstanding,
    // and a READ's data comes back in its reply.
    const size_t request_payload = r.data.size() + r.compare.size();
    const size_t reply_payload = r.op == IoOp::kRead        ? r.out.size()
                                 : r.op == IoOp::kLbaStatus ? wire::kMaxExtents * wire::kExtentSize
                                                            : 0;
    const size_t cost = wire::max_frame_size(request_payload) + wire::max_frame_size(reply_payload);
    if (inflight_bytes > 0 && inflight_bytes + cost > options.max_inflight_bytes) return;
    auto frame = encode_locked(it->first, r);
    if (frame.empty()) {  // arguments were checked at submission: a bug, fail the request
      done.push_back(completion(std::move(r), IoResult{IoStatus::kMediumError}));
      it = pending.erase(it);
      continue;
    }
    const size_t size = frame.size();
    switch (link->send(std::move(frame))) {
      case link::SendStatus::kQueued:
        r.sent = true;
        r.bytes = cost;
        inflight_bytes += cost;
        if (r.ever_sent) resends.fetch_add(1, std::memory_order_relaxed);
        r.ever_sent = true;
        ++it;
        break;
      case link::SendStatus::kBackPressure: {
        waiting_writable = true;
        std::weak_ptr<Core> weak = weak_from_this();
        link->when_writable(size, [weak, gen = link_gen](bool) {
          auto self = weak.lock();
          if (!self) return;
          Completions c;
          {
            std::lock_guard lock(self->mu);
            if (gen != self->link_gen) return;
            self->waiting_writable = false;
            self->pump_locked(Clock::now(), c);
          }
          run(c);
        });
        return;
      }
      case link::SendStatus::kNotUp:
        return;  // the kDown / kUp callbacks follow and re-send
      case link::SendStatus::kInvalid:
        done.push_back(completion(std::move(r), IoResult{IoStatus::kMediumError}));
        it = pending.erase(it);
        break;
    }
  }
}

// Arms the timer for the oldest deadline (the first pending request: ids are in deadline
// order) or the earliest retry, if that is sooner than what it is armed for.
void ForwardingVolume::Core::schedule_locked(Clock::time_point now) {
  if (pending.empty() || closed) return;
  auto want = pending.begin()->second.deadline;
  for (const auto& [id, r] : pending) {
    if (!r.sent && r.not_before > now) want = std::min(want, r.not_before);
  }
  if (want >= armed_at) return;
  armed_at = want;
  asio::post(strand, [self = shared_from_this(), want] {
    self->timer.expires_at(want);
    self->timer.async_wait([self](boost::system::error_code ec) {
      if (!ec) self->on_timer();
    });
  });
}

void ForwardingVolume::Core::on_timer() {
  Completions done;
  {
    std::lock_guard lock(mu);
    armed_at = Clock::time_point::max();
    const auto now = Clock::now();
    while (!pending.empty() && pending.begin()->second.deadline <= now) {
      Req& r = pending.begin()->second;
      if (r.sent) inflight_bytes -= std::min(inflight_bytes, r.bytes);
      done.push_back(completion(std::move(r), IoResult{IoStatus::kNotReady}));
      pending.erase(pending.begin());
    }
    pump_locked(now, done);
    schedule_locked(now);
  }
  run(done);
}

void ForwardingVolume::Core::on_state(uint64_t gen, const link::PeerLink::StateChange& c) {
  Completions done;
  {
    std::lock_guard lock(mu);
    if (gen != link_gen || closed) return;
    unsend_all_locked();
    if (c.state == link::PeerLink::State::kUp) {
      link_up = true;
      const auto now = Clock::now();
      pump_locked(now, done);
      schedule_locked(now);
    }
  }
  run(done);
}

void ForwardingVolume::Core::on_frame(uint64_t gen, const wire::FrameHeader& h,
                                      std::vector<uint8_t> payload) {
  if (h.type != wire::FrameType::kIoReply || h.volume != volume) return;
  Req r;
  {
    Completions done;
    std::lock_guard lock(mu);
    if (gen != link_gen) return;
    auto it = pending.find(h.sequence);
    if (it == pending.end() || !it->second.sent) return;  // timed out, or not ours
    const auto now = Clock::now();
    it->second.sent = false;
    inflight_bytes -= std::min(inflight_bytes, it->second.bytes);
    if ((h.flags & wire::kFlagRetry) != 0) {
      // The master did not take it (volume not there yet, or busy): ask again until the
      // deadline. A plain kNotReady is the volume's own answer (halted) and completes.
      Req& q = it->second;
      q.not_before = now + options.retry_interval * (1u << std::min<uint32_t>(q.retries, 3));
      ++q.retries;
      pump_locked(now, done);
      schedule_locked(now);
      if (!done.empty()) asio::post(io, [done = std::move(done)]() mutable { run(done); });
      return;
    }
    r = std::move(it->second);
    pending.erase(it);
    pump_locked(now, done);  // budget freed, overlapping successors unblocked
    schedule_locked(now);
    if (!done.empty()) asio::post(io, [done = std::move(done)]() mutable { run(done); });
  }
  IoResult res;
  res.status = h.status <= uint32_t(IoStatus::kNoSpace) ? IoStatus(h.status)
                                                          : IoStatus::kMediumError;
  std::vector<core::LbaExtent> extents;
  if (res.status == IoStatus::kMiscompare) res.miscompare_offset = h.lba;
  if (res.ok() && r.op == IoOp::kRead) {
    if (payload.size() == r.out.size()) {
      std::memcpy(r.out.data(), payload.data(), payload.size());
    } else {
      res.status = IoStatus::kMediumError;  // the master answered something else
    }
  } else if (res.ok() && r.op == IoOp::kLbaStatus) {
    auto decoded = wire::decode_extents(payload);
    if (decoded) {
      extents = std::move(decoded).value();
    } else {
      res.status = IoStatus::kMediumError;
    }
  }
  completion(std::move(r), res, std::move(extents))();
}

// ---- ForwardingVolume ----

FwdResult<std::shared_ptr<ForwardingVolume>> ForwardingVolume::create(
    asio::io_context& io, asio::ssl::context& tls, std::string volume_uuid, uint32_t block_size,
    uint64_t block_count, Target target, wire::Hello hello, Options options) {
  wire::Uuid id;
  if (!wire::parse_uuid(volume_uuid, id)) return invalid("volume uuid: " + volume_uuid);
  if (block_size == 0 || block_size > wire::kMaxPayload / 2 || block_count == 0) {
    return invalid("block size / count out of range");
  }
  if (options.request_timeout.count() <= 0 || options.retry_interval.count() <= 0 ||
      options.max_inflight_bytes == 0) {
    return invalid("request timeout, retry interval and in-flight budget must be positive");
  }
  auto core = std::make_shared<Core>(io, tls, std::move(options));
  core->volume = id;
  std::random_device rd;
  while (core->instance == 0) core->instance = uint64_t(rd()) << 32 | rd();
  core->hello = std::move(hello);
  {
    std::lock_guard lock(core->mu);
    if (!core->open_link_locked(target)) return invalid("link options refused (target, hello)");
  }
  return std::shared_ptr<ForwardingVolume>(
      new ForwardingVolume(std::move(core), std::move(volume_uuid), block_size, block_count));
}

ForwardingVolume::ForwardingVolume(std::shared_ptr<Core> core, std::string uuid,
                                   uint32_t block_size, uint64_t block_count)
    : core_(std::move(core)),
      uuid_(std::move(uuid)),
      block_size_(block_size),
      block_count_(block_count) {}

ForwardingVolume::~ForwardingVolume() { close(); }

core::VolumeState ForwardingVolume::state() const {
  std::lock_guard lock(core_->mu);
  return core_->closed ? core::VolumeState::kOffline : core::VolumeState::kHealthy;
}

void ForwardingVolume::read(uint64_t lba, std::span<std::byte> out, Done done) {
  Req r;
  r.op = IoOp::kRead;
  r.lba = lba;
  r.count = out.size() / block_size_;
  r.out = out;
  r.done = std::move(done);
  IoStatus bad = IoStatus::kOk;
  if (out.empty() || out.size() % block_size_ != 0 || out.size() > wire::kMaxPayload) {
    bad = IoStatus::kMediumError;  // the target never asks for this (max transfer length)
  } else if (r.count > block_count_ || lba > block_count_ - r.count) {
    bad = IoStatus::kOutOfRange;
  }
  if (bad != IoStatus::kOk) {
    core_->post_completions({completion(std::move(r), IoResult{bad})});
    return;
  }
  core_->submit(std::move(r));
}

void ForwardingVolume::write(uint64_t lba, std::span<const std::byte> data, bool fua,
                             Done done) {
  Req r;
  r.op = IoOp::kWrite;
  r.lba = lba;
  r.count = data.size() / block_size_;
  r.fua = fua;
  r.data = data;
  r.done = std::move(done);
  IoStatus bad = IoStatus::kOk;
  if (data.empty() || data.size() % block_size_ != 0 || data.size() > wire::kMaxPayload) {
    bad = IoStatus::kMediumError;
  } else if (r.count > block_count_ || lba > block_count_ - r.count) {
    bad = IoStatus::kOutOfRange;
  }
  if (bad != IoStatus::kOk) {
    core_->post_completions({completion(std::move(r), IoResult{bad})});
    return;
  }
  core_->submit(std::move(r));
}

void ForwardingVolume::flush(Done done) {
  Req r;
  r.op = IoOp::kFlush;
  r.done = std::move(done);
  core_->submit(std::move(r));
}

void ForwardingVolume::unmap(uint64_t lba, uint64_t blocks, Done done) {
  Req r;
  r.op = IoOp::kUnmap;
  r.lba = lba;
  r.count = blocks;
  r.done = std::move(done);
  if (blocks > block_count_ || lba > block_count_ - blocks) {
    core_->post_completions({completion(std::move(r), IoResult{IoStatus::kOutOfRange})});
    return;
  }
  if (blocks == 0) {  // nothing to deallocate
    core_->post_completions({completion(std::move(r), IoResult{})});
    return;
  }
  core_->submit(std::move(r));
}

void ForwardingVolume::compare_and_write(uint64_t lba, std::span<const std::byte> compare,
                                         std::span<const std::byte> data, bool fua, Done done) {
  Req r;
  r.op = IoOp::kCompareAndWrite;
  r.lba = lba;
  r.count = data.size() / block_size_;
  r.fua = fua;
  r.data = data;
  r.compare = compare;
  r.done = std::move(done);
  IoStatus bad = IoStatus::kOk;
  if (data.empty() || compare.size() != data.size() || data.size() % block_size_ != 0 ||
      data.size() > wire::kMaxPayload / 2) {
    bad = IoStatus::kMediumError;
  } else if (r.count > block_count_ || lba > block_count_ - r.count) {
    bad = IoStatus::kOutOfRange;
  }
  if (bad != IoStatus::kOk) {
    core_->post_completions({completion(std::move(r), IoResult{bad})});
    return;
  }
  core_->submit(std::move(r));
}

void ForwardingVolume::lba_status(uint64_t lba, uint64_t max_blocks, ExtentsDone done) {
  Req r;
  r.op = IoOp::kLbaStatus;
  r.lba = lba;
  r.edone = std::move(done);
  if (lba >= block_count_) {
    core_->post_completions({completion(std::move(r), IoResult{IoStatus::kOutOfRange})});
    return;
  }
  r.count = std::min(max_blocks, block_count_ - lba);
  if (r.count == 0) {
    core_->post_completions({completion(std::move(r), IoResult{})});
    return;
  }
  core_->submit(std::move(r));
}

bool ForwardingVolume::retarget(Target target) {
  std::unique_ptr<link::PeerLink> old;
  {
    std::lock_guard lock(core_->mu);
    if (core_->closed) return false;
    old = std::move(core_->link);
    if (!core_->open_link_locked(target)) {
      core_->link = std::move(old);
      return false;
    }
  }
  old.reset();  // closes the previous link; its late callbacks carry an old generation
  return true;
}

void ForwardingVolume::close() {
  Completions done;
  std::unique_ptr<link::PeerLink> old;
  {
    std::lock_guard lock(core_->mu);
    if (core_->closed) return;
    core_->closed = true;
    core_->unsend_all_locked();
    ++core_->link_gen;
    old = std::move(core_->link);
    for (auto& [id, r] : core_->pending) {
      done.push_back(completion(std::move(r), IoResult{IoStatus::kNotReady}));
    }
    core_->pending.clear();
  }
  old.reset();
  asio::post(core_->strand, [core = core_] { core->timer.cancel(); });
  core_->post_completions(std::move(done));
}

size_t ForwardingVolume::pending() const {
  std::lock_guard lock(core_->mu);
  return core_->pending.size();
}

link::PeerLink::State ForwardingVolume::link_state() const {
  std::lock_guard lock(core_->mu);
  return core_->link ? core_->link->state() : link::PeerLink::State::kClosed;
}

uint64_t ForwardingVolume::resends() const {
  return core_->resends.load(std::memory_order_relaxed);
}

}  // namespace tandem::backend::fwd
