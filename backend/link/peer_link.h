// PeerLink: this node's outbound replication link to one peer node on tcp/5703. It connects
// with mutual TLS (the peer's certificate CN must be the peer's node name), exchanges HELLO,
// then writes frames from a byte-budgeted queue and delivers the frames read back (ACK, NACK,
// SYNC_*...) to a callback. Drops are reported, never hidden: on a drop the queue is cleared
// and the count reported (the engine decides what to resend); it then reconnects with bounded
// exponential backoff. Owner: the daemon / replication engine (one PeerLink per peer node).
// Thread-safety: send / when_writable / close / accessors from any thread; every callback
// runs on the link's own strand. The io_context and ssl::context must outlive the PeerLink and
// the io_context must keep running until close() has reported kClosed.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "backend/link/link_types.h"
#include "backend/wire/frame.h"

namespace boost::asio {
class io_context;
namespace ssl {
class context;
}  // namespace ssl
}  // namespace boost::asio

namespace tandem::backend::link {

inline constexpr uint16_t kReplicationPort = 5703;

class PeerLink {
 public:
  enum class State {
    kConnecting,  // TCP + TLS + HELLO under way
    kUp,          // HELLO exchanged: send() accepts frames
    kDown,        // attempt failed or link dropped; a reconnect follows after a backoff
    kClosed,      // close() finished: the last callback of this link
  };

  struct StateChange {
    State state = State::kConnecting;
    std::string reason;  // kDown / kClosed: why (connect error, idle timeout, bad frame...)
    uint64_t dropped_frames = 0;  // kDown / kClosed: queued frames discarded, not sent again
    uint64_t dropped_bytes = 0;
    uint32_t attempt = 0;    // connection attempts since the link was last up
    wire::Hello peer_hello;  // kUp: what the peer announced (node id, max payload)
  };

  struct Options {
    std::string peer_name;  // the peer's node name = expected certificate CN (required)
    std::string host;       // IP literal preferred (host names go through the resolver)
    uint16_t port = kReplicationPort;
    wire::Hello hello;                     // our HELLO (node_id required)
    size_t send_budget_bytes = 64u << 20;  // queued + in-flight bytes before back-pressure
    size_t max_gather_bytes = 256u << 10;
    std::chrono::milliseconds connect_timeout{10'000};    // TCP + TLS handshake
    std::chrono::milliseconds write_timeout{10'000};      // a write stalled this long = down
    std::chrono::milliseconds heartbeat_interval{1'000};  // HEARTBEAT after this long idle
    std::chrono::milliseconds idle_timeout{5'000};        // nothing read this long = down (also
                                                          // bounds the wait for the peer's HELLO)
    std::chrono::milliseconds backoff_min{50};
    std::chrono::milliseconds backoff_max{2'000};
    uint32_t max_payload = wire::kMaxPayload;  // largest inbound payload accepted
    std::shared_ptr<LinkMetrics> metrics;      // shared counters; a private set if null
  };

  // A decoded inbound frame (never HELLO or a link-level HEARTBEAT: the link consumes those).
  using FrameCallback = std::function<void(const wire::FrameHeader&, std::vector<uint8_t>)>;
  using StateCallback = std::function<void(const StateChange&)>;

  // Validates options and starts connecting at once. Callbacks may be empty.
  [[nodiscard]] static LinkResult<std::unique_ptr<PeerLink>> create(boost::asio::io_context& io,
                                                                    boost::asio::ssl::context& tls,
                                                                    Options options,
                                                                    FrameCallback on_frame,
                                                                    StateCallback on_state);
  // The same, with the link's I/O and every callback on `strand` (which must be a strand of
  // `io`) instead of a strand of its own: an owner that runs on that strand gets its frames
  // without a thread hand-off (the replication master shares its volume's strand this way).
  [[nodiscard]] static LinkResult<std::unique_ptr<PeerLink>> create(
      boost::asio::io_context& io, boost::asio::any_io_executor strand,
      boost::asio::ssl::context& tls, Options options, FrameCallback on_frame,
      StateCallback on_state);

  // Closes (see close()); does not wait. Callbacks may still run on the strand until kClosed.
  ~PeerLink();
  PeerLink(const PeerLink&) = delete;
  PeerLink& operator=(const PeerLink&) = delete;

  // Queues one encoded frame (wire::encode output). kQueued: it will be written in order
  // after every frame queued before it, or reported in dropped_frames if the link drops first.
  // kBackPressure: over budget (one frame larger than the budget is accepted when the queue
  // is empty); use when_writable(). kNotUp: not connected. `frame` is moved from only when
  // kQueued, so on any other answer the caller still holds it (to retry or re-route).
  [[nodiscard]] SendStatus send(std::vector<uint8_t>&& frame);
  // The same for a frame in two parts: `head` from wire::encode_head(), then `body` (the
  // wire::EncodedPayload bytes, shared with other links and never copied or changed).
  [[nodiscard]] SendStatus send(std::vector<uint8_t>&& head,
                                std::shared_ptr<const std::vector<uint8_t>> body);
  // Calls fn(true) on the link's strand once a frame of `bytes` would be accepted, or
  // fn(false) if the link is not up or drops first. One shot; never called inline.
  void when_writable(size_t bytes, std::function<void(bool up)> fn);
  // Stops reconnecting and drops the connection; reports kClosed (with any dropped frames)
  // once, on the strand. Idempotent.
  void close();

  State state() const;
  size_t queued_bytes() const;
  const std::string& peer_name() const;
  LinkMetrics& metrics();

  struct Impl;

 private:
  explicit PeerLink(std::shared_ptr<Impl> impl);
  std::shared_ptr<Impl> impl_;
};

const char* to_string(PeerLink::State s);

}  // namespace tandem::backend::link
