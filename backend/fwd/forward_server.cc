#include "backend/fwd/forward_server.h"

#include <algorithm>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <span>
#include <tuple>

namespace tandem::backend::fwd {
namespace {

using core::IoResult;
using core::IoStatus;
using wire::IoOp;

bool overlaps(uint64_t a, uint64_t an, uint64_t b, uint64_t bn) {
  return a < b + bn && b < a + an;
}

std::span<const std::byte> as_bytes(std::span<const uint8_t> b) {
  return {reinterpret_cast<const std::byte*>(b.data()), b.size()};
}

bool is_mutating(IoOp op) {
  return op == IoOp::kWrite || op == IoOp::kUnmap || op == IoOp::kCompareAndWrite;
}

}  // namespace

// One request from arrival to reply: owns the request payload and the read buffer.
struct Op {
  std::shared_ptr<link::InboundConnection> conn;
  std::shared_ptr<core::BlockVolume> vol;
  wire::FrameHeader req;
  std::vector<uint8_t> payload;
  std::vector<std::byte> buf;  // READ data
  std::string uuid;
  uint64_t token = 0;  // gate admission, mutating ops only
  size_t cost = 0;     // charged against the in-flight bounds until the reply
};

struct ForwardServer::Shared : std::enable_shared_from_this<ForwardServer::Shared> {
  Shared(Lookup l, Options o) : lookup(std::move(l)), options(o) {}

  Lookup lookup;
  const Options options;
  Stats stats;

  // Per volume: the mutating requests running, and those waiting for an overlapping one.
  struct Running {
    uint64_t token, lba, count;
  };
  struct Gate {
    std::vector<Running> running;
    std::deque<std::shared_ptr<Op>> waiting;
  };
  std::mutex mu;
  std::map<std::string, Gate> gates;
  uint64_t next_token = 1;
  size_t inflight_requests = 0;
  size_t inflight_bytes = 0;
  // COMPARE AND WRITE outcomes by (volume, forwarder instance, request id), oldest first out.
  using CawKey = std::tuple<wire::Uuid, uint64_t, uint64_t>;
  std::map<CawKey, IoResult> caw_done;
  std::deque<CawKey> caw_order;

  static CawKey caw_key(const Op& op) {
    return {op.req.volume, op.req.generation, op.req.sequence};
  }
  void remember_caw(const Op& op, IoResult res) {
    if (op.req.generation == 0 || options.caw_memory == 0) return;  // no instance id: no replay
    std::lock_guard lock(mu);
    if (caw_done.emplace(caw_key(op), res).second) caw_order.push_back(caw_key(op));
    while (caw_order.size() > options.caw_memory) {
      caw_done.erase(caw_order.front());
      caw_order.pop_front();
    }
  }
  std::optional<IoResult> replayed_caw(const Op& op) {
    if (op.req.generation == 0) return std::nullopt;
    std::lock_guard lock(mu);
    auto it = caw_done.find(caw_key(op));
    if (it == caw_done.end()) return std::nullopt;
    return it->second;
  }

  void reply(const std::shared_ptr<Op>& op, IoResult res, std::span<const uint8_t> data = {});
  void reply(const std::shared_ptr<link::InboundConnection>& conn, const wire::FrameHeader& req,
             IoResult res, std::span<const uint8_t> data = {}, uint16_t flags = 0);
  // kNotReady + RETRY: this request was not taken now; the forwarder sends it again later.
  void refuse(const std::shared_ptr<link::InboundConnection>& conn, const wire::FrameHeader& req) {
    reply(conn, req, IoResult{IoStatus::kNotReady}, {}, wire::kFlagRetry);
  }
  void admit(std::shared_ptr<Op> op);
  void release(const std::shared_ptr<Op>& op);
  void start(std::shared_ptr<Op> op);
};

void ForwardServer::Shared::reply(const std::shared_ptr<link::InboundConnection>& conn,
                                  const wire::FrameHeader& req, IoResult res,
                                  std::span<const uint8_t> data, uint16_t flags) {
  wire::FrameHeader h;
  h.type = wire::FrameType::kIoReply;
  h.flags = flags;
  h.volume = req.volume;
  h.sequence = req.sequence;
  h.status = uint32_t(res.status);
  h.count = req.count;
  h.lba = res.status == IoStatus::kMiscompare ? res.miscompare_offset : 0;
  std::vector<uint8_t> out;
  if (!wire::encode(h, data, true, out).ok()) {
    // Only a payload over the limit can fail here, and requests are checked against it.
    h.status = uint32_t(IoStatus::kMediumError);
    out.clear();
    (void)wire::encode(h, {}, false, out);
  }
  if (conn->reply(std::move(out)) != link::SendStatus::kQueued) {
    stats.replies_lost.fetch_add(1, std::memory_order_relaxed);
  }
}

void ForwardServer::Shared::reply(const std::shared_ptr<Op>& op, IoResult res,
                                  std::span<const uint8_t> data) {
  reply(op->conn, op->req, res, data);
  std::lock_guard lock(mu);
  inflight_requests -= 1;
  inflight_bytes -= op->cost;
}

// Starts `op` now unless it overlaps a running or an earlier waiting mutating request.
void ForwardServer::Shared::admit(std::shared_ptr<Op> op) {
  {
    std::lock_guard lock(mu);
    Gate& g = gates[op->uuid];
    const bool clash =
        std::any_of(g.running.begin(), g.running.end(),
                    [&](const Running& r) { return overlaps(r.lba, r.count, op->req.lba,
                                                            op->req.count); }) ||
        std::any_of(g.waiting.begin(), g.waiting.end(), [&](const std::shared_ptr<Op>& w) {
          return overlaps(w->req.lba, w->req.count, op->req.lba, op->req.count);
        });
    if (clash) {
      stats.deferred.fetch_add(1, std::memory_order_relaxed);
      g.waiting.push_back(std::move(op));
      return;
    }
    op->token = next_token++;
    g.running.push_back(Running{op->token, op->req.lba, op->req.count});
  }
  start(std::move(op));
}

// `op` finished: start the waiting requests it (and nothing older) was holding back.
void ForwardServer::Shared::release(const std::shared_ptr<Op>& op) {
  std::vector<std::shared_ptr<Op>> ready;
  {
    std::lock_guard lock(mu);
    auto git = gates.find(op->uuid);
    if (git == gates.end()) return;
    Gate& g = git->second;
    std::erase_if(g.running, [&](const Running& r) { return r.token == op->token; });
    std::vector<std::shared_ptr<Op>> still;
    for (auto& w : g.waiting) {
      auto hit = [&](uint64_t lba, uint64_t count) {
        return overlaps(lba, count, w->req.lba, w->req.count);
      };
      const bool clash =
          std::any_of(g.running.begin(), g.running.end(),
                      [&](const Running& r) { return hit(r.lba, r.count); }) ||
          std::any_of(still.begin(), still.end(),
                      [&](const std::shared_ptr<Op>& s) { return hit(s->req.lba, s->req.count); });
      if (clash) {
        still.push_back(std::move(w));
      } else {
        w->token = next_token++;
        g.running.push_back(Running{w->token, w->req.lba, w->req.count});
        ready.push_back(std::move(w));
      }
    }
    g.waiting.assign(std::make_move_iterator(still.begin()), std::make_move_iterator(still.end()));
    if (g.running.empty() && g.waiting.empty()) gates.erase(git);
  }
  for (auto& r : ready) start(std::move(r));
}

// Runs an admitted, validated request on its volume.
void ForwardServer::Shared::start(std::shared_ptr<Op> op) {
  auto self = shared_from_this();
  const bool fua = (op->req.flags & wire::kFlagFua) != 0;
  const uint64_t bs = op->vol->block_size();
  auto finish = [self, op](IoResult res) {
    self->release(op);
    self->reply(op, res);
  };
  switch (IoOp(op->req.status)) {
    case IoOp::kRead: {
      op->buf.resize(op->req.count * bs);
      op->vol->read(op->req.lba, op->buf, [self, op](IoResult res) {
        std::span<const uint8_t> data;
        if (res.ok()) data = {reinterpret_cast<const uint8_t*>(op->buf.data()), op->buf.size()};
        self->reply(op, res, data);
      });
      return;
    }
    case IoOp::kWrite:
      op->vol->write(op->req.lba, as_bytes(op->payload), fua, finish);
      return;
    case IoOp::kFlush:
      op->vol->flush([self, op](IoResult res) { self->reply(op, res); });
      return;
    case IoOp::kUnmap:
      op->vol->unmap(op->req.lba, op->req.count, finish);
      return;
    case IoOp::kCompareAndWrite: {
      // A twin re-sent after a drop waited in the gate for the original; answer as it did.
      if (auto done = replayed_caw(*op)) {
        stats.caw_replayed.fetch_add(1, std::memory_order_relaxed);
        return finish(*done);
      }
      auto all = as_bytes(op->payload);
      const size_t half = all.size() / 2;
      op->vol->compare_and_write(op->req.lba, all.first(half), all.subspan(half), fua,
                                 [self, op](IoResult res) {
                                   self->remember_caw(*op, res);
                                   self->release(op);
                                   self->reply(op, res);
                                 });
      return;
    }
    case IoOp::kLbaStatus:
      op->vol->lba_status(op->req.lba, op->req.count,
                          [self, op](IoResult res, std::vector<core::LbaExtent> ext) {
                            if (!res.ok()) return self->reply(op, res);
                            // GET LBA STATUS may return fewer descriptors (SBC-3 5.8).
                            if (ext.size() > wire::kMaxExtents) ext.resize(wire::kMaxExtents);
                            auto enc = wire::encode_extents(ext);
                            if (!enc) return self->reply(op, IoResult{IoStatus::kMediumError});
                            self->reply(op, res, *enc);
                          });
      return;
  }
  self->reply(op, IoResult{IoStatus::kMediumError});  // unreachable: validated
}

ForwardServer::ForwardServer(Lookup lookup, Options options)
    : shared_(std::make_shared<Shared>(std::move(lookup), options)) {}

ForwardServer::~ForwardServer() = default;

const ForwardServer::Stats& ForwardServer::stats() const { return shared_->stats; }

void ForwardServer::handle(const std::shared_ptr<link::InboundConnection>& conn,
                           const wire::FrameHeader& h, std::vector<uint8_t> payload) {
  if (h.type != wire::FrameType::kIoRequest || !conn) return;
  Shared& s = *shared_;
  s.stats.requests.fetch_add(1, std::memory_order_relaxed);
  const std::string uuid = wire::format_uuid(h.volume);
  std::shared_ptr<core::BlockVolume> vol = s.lookup ? s.lookup(uuid) : nullptr;
  if (!vol) {
    s.stats.unknown_volume.fetch_add(1, std::memory_order_relaxed);
    return s.refuse(conn, h);
  }
  auto malformed = [&](IoStatus st) {
    s.stats.malformed.fetch_add(1, std::memory_order_relaxed);
    s.reply(conn, h, IoResult{st});
  };
  const uint64_t bs = vol->block_size();
  const uint64_t n = vol->block_count();
  if (bs == 0) return malformed(IoStatus::kMediumError);
  const uint64_t max_blocks = wire::kMaxPayload / bs;  // bounds every size computed below
  const bool in_range = h.count > 0 && h.count <= n && h.lba <= n - h.count;
  if (h.status == 0 || h.status > wire::kMaxIoOp) return malformed(IoStatus::kMediumError);
  const IoOp op = IoOp(h.status);
  switch (op) {
    case IoOp::kRead:
      if (!in_range) return malformed(IoStatus::kOutOfRange);
      if (!payload.empty() || h.count > max_blocks) return malformed(IoStatus::kMediumError);
      break;
    case IoOp::kWrite:
      if (!in_range) return malformed(IoStatus::kOutOfRange);
      if (h.count > max_blocks || payload.size() != h.count * bs) {
        return malformed(IoStatus::kMediumError);
      }
      break;
    case IoOp::kCompareAndWrite:
      if (!in_range) return malformed(IoStatus::kOutOfRange);
      if (h.count > max_blocks || payload.size() != 2 * h.count * bs) {
        return malformed(IoStatus::kMediumError);
      }
      break;
    case IoOp::kUnmap:
      if (!in_range) return malformed(IoStatus::kOutOfRange);
      if (!payload.empty()) return malformed(IoStatus::kMediumError);
      break;
    case IoOp::kFlush:
      if (!payload.empty()) return malformed(IoStatus::kMediumError);
      break;
    case IoOp::kLbaStatus:
      if (h.count == 0 || h.lba >= n) return malformed(IoStatus::kOutOfRange);
      if (!payload.empty()) return malformed(IoStatus::kMediumError);
      break;
  }
  auto o = std::make_shared<Op>();
  o->cost = payload.size() + (op == IoOp::kRead ? size_t(h.count * bs) : 0);
  {
    std::lock_guard lock(s.mu);
    if (s.inflight_requests >= s.options.max_inflight_requests ||
        (s.inflight_bytes > 0 && s.inflight_bytes + o->cost > s.options.max_inflight_bytes)) {
      s.stats.busy.fetch_add(1, std::memory_order_relaxed);
      return s.refuse(conn, h);
    }
    s.inflight_requests += 1;
    s.inflight_bytes += o->cost;
  }
  o->conn = conn;
  o->vol = std::move(vol);
  o->req = h;
  o->payload = std::move(payload);
  o->uuid = uuid;
  if (op == IoOp::kLbaStatus) o->req.count = std::min(h.count, n - h.lba);
  if (is_mutating(op)) {
    s.admit(std::move(o));
  } else {
    s.start(std::move(o));
  }
}

}  // namespace tandem::backend::fwd
