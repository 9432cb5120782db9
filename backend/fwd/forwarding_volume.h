// ForwardingVolume: a core::BlockVolume for a volume this node presents but does not master.
// Every call becomes one IO_REQUEST frame (backend/wire/frame.h) on a PeerLink to the master's
// ForwardServer; the completion runs when the IO_REPLY arrives. A dropped link fails nothing:
// requests in flight are sent again, in submission order, once a link is up, and retarget()
// moves them all to a new master, so a failover stays invisible to the initiator. Only
// request_timeout (or close()) completes a request without an answer: kNotReady.
//
// Ordering (why re-sending is safe): a write sent twice puts the same data at the same LBA.
// The BlockVolume contract keeps overlapping writes in submission order, so a mutating request
// (write, unmap, compare-and-write) is not sent while an older overlapping mutating request is
// unanswered, and re-sends go out in request-id (= submission) order. The master's
// ForwardServer in turn starts an overlapping mutating request only after the ones that
// arrived before it finished, on whichever connection they came, so a stale copy from a
// dropped connection lands before its re-sent twin and before anything newer.
// An answer flagged RETRY (the master has no such volume yet, or is over its in-flight
// bounds) is sent again after retry_interval, doubling up to 8 x retry_interval, until the
// deadline; every other answer, kNotReady
// from a halted volume included, completes the request.
//
// Owner: whoever presents the volume (the daemon), by shared_ptr. Thread-safety: every
// method from any thread. Completions run on the link's strand or an io_context thread, never
// inside the call. Callers keep buffers alive until their completion ran (core contract).
// The io_context and ssl::context must outlive the volume, and the io_context must keep running
// until the volume is destroyed and its link reported closed (callbacks hold internal state,
// not the volume). Destroying the volume (or close()) completes whatever is pending with
// kNotReady.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "backend/link/peer_link.h"
#include "backend/wire/frame.h"
#include "core/block_volume.h"
#include "core/result.h"

namespace tandem::backend::fwd {

enum class FwdErrc {
  kInvalidArgument,  // bad uuid, block size, options, or the link refused its options
};
using FwdError = core::Error<FwdErrc>;
template <class T>
using FwdResult = core::Result<T, FwdError>;

class ForwardingVolume final : public core::BlockVolume {
 public:
  // Where the master's replication endpoint is.
  struct Target {
    std::string peer_name;  // the master node's name = its certificate CN
    std::string host;
    uint16_t port = link::kReplicationPort;
  };

  struct Options {
    std::chrono::milliseconds request_timeout{30'000};  // then the request fails kNotReady
    // Bytes of requests sent and not yet answered, counting each request frame plus the
    // largest reply it can get (a READ's data); further requests wait (one request larger than
    // this still goes when nothing else is in flight). Also the link's send budget. Keep it
    // <= the master's LinkServer reply_budget_bytes (16 MiB by default), which closes a
    // connection whose unread replies exceed it, minus one batch of replies (up to a frame of
    // wire::kMaxPayload): a batch we have already read still counts there until the master's
    // write of it completes, and with cached reads answered at once the next replies can
    // arrive before that.
    size_t max_inflight_bytes = 8u << 20;
    std::chrono::milliseconds retry_interval{100};  // first wait after an answer flagged RETRY
    // Link tuning (PeerLink::Options).
    std::chrono::milliseconds connect_timeout{10'000};
    std::chrono::milliseconds heartbeat_interval{1'000};
    std::chrono::milliseconds idle_timeout{5'000};
    std::chrono::milliseconds backoff_min{50};
    std::chrono::milliseconds backoff_max{2'000};
    std::shared_ptr<link::LinkMetrics> metrics;  // private set if null
  };

  // Checks the arguments and starts connecting at once. `hello` is our node's HELLO.
  [[nodiscard]] static FwdResult<std::shared_ptr<ForwardingVolume>> create(
      boost::asio::io_context& io, boost::asio::ssl::context& tls, std::string volume_uuid,
      uint32_t block_size, uint64_t block_count, Target target, wire::Hello hello,
      Options options);
  [[nodiscard]] static FwdResult<std::shared_ptr<ForwardingVolume>> create(
      boost::asio::io_context& io, boost::asio::ssl::context& tls, std::string volume_uuid,
      uint32_t block_size, uint64_t block_count, Target target, wire::Hello hello) {
    return create(io, tls, std::move(volume_uuid), block_size, block_count, std::move(target),
                  std::move(hello), Options{});
  }

  ~ForwardingVolume() override;
  ForwardingVolume(const ForwardingVolume&) = delete;
  ForwardingVolume& operator=(const ForwardingVolume&) = delete;

  const std::string& uuid() const override { return uuid_; }
  uint32_t block_size() const override { return block_size_; }
  uint64_t block_count() const override { return block_count_; }
  // kHealthy until close(); then kOffline. A down link is not a state: requests wait for it.
  core::VolumeState state() const override;

  void read(uint64_t lba, std::span<std::byte> out, Done done) override;
  void write(uint64_t lba, std::span<const std::byte> data, bool fua, Done done) override;
  void flush(Done done) override;
  void unmap(uint64_t lba, uint64_t blocks, Done done) override;
  void compare_and_write(uint64_t lba, std::span<const std::byte> compare,
                         std::span<const std::byte> data, bool fua, Done done) override;
  void lba_status(uint64_t lba, uint64_t max_blocks, ExtentsDone done) override;

  // Closes the link to the current master and opens one to `target`; everything pending is
  // sent there (in order) once that link is up. Answers still arriving from the old link are
  // ignored. False (nothing changed) when the target is unusable or the volume is closed.
  [[nodiscard]] bool retarget(Target target);
  // Completes everything pending with kNotReady, refuses new calls (kNotReady), closes the
  // link. Idempotent.
  void close();

  // For tests and metrics.
  size_t pending() const;           // submitted, not yet completed
  link::PeerLink::State link_state() const;
  uint64_t resends() const;  // requests sent again after a drop, a retarget or a RETRY answer

  struct Core;

 private:
  ForwardingVolume(std::shared_ptr<Core> core, std::string uuid, uint32_t block_size,
                   uint64_t block_count);

  std::shared_ptr<Core> core_;
  const std::string uuid_;
  const uint32_t block_size_;
  const uint64_t block_count_;
};

}  // namespace tandem::backend::fwd
