// ForwardServer: the master's end of forwarded block I/O (backend/fwd/forwarding_volume.h).
// The daemon's link::FrameHandler passes it every IO_REQUEST frame; it checks the request
// against the looked-up volume, runs it there, keeps the buffers alive until the volume
// completes, and answers IO_REPLY on the same connection. Unknown volume: kNotReady with flag
// RETRY (the forwarder sends it again until its deadline). Malformed request (range beyond the volume: kOutOfRange; payload size
// not matching count, unknown opcode: kMediumError): answered, never fatal, nothing applied.
//
// Bounds: requests accepted and not yet answered are limited in number and bytes (request
// payloads plus read buffers); over either limit a request is answered kNotReady + RETRY at
// once and the forwarder sends it again later (slow, not dead). A COMPARE AND WRITE is not idempotent, so
// its outcome is remembered (bounded, by forwarder instance and request id) and a re-sent
// twin gets that answer instead of a false miscompare.
//
// Ordering: a mutating request (write, unmap, compare-and-write) overlapping one still running
// on the same volume starts only when every earlier overlapping one has finished, whatever
// connection it came on. So a request re-sent after a link drop never races its stale twin,
// and the forwarder's submission order of overlapping writes is kept across reconnects.
//
// Owner: the daemon, one per node (shared by all connections). Thread-safety: handle() from
// any thread (connection strands), stats from any. handle() never blocks: the volume's calls
// return at once. In-flight work keeps what it needs (connection, volume, buffers, the gate)
// alive by shared_ptr, so the server may be destroyed with requests still running; but their
// completions reply through the connection's io_context, so the daemon drains the storage
// pool (IoPool) before destroying that io_context.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "backend/link/link_server.h"
#include "backend/wire/frame.h"
#include "core/block_volume.h"

namespace tandem::backend::fwd {

class ForwardServer {
 public:
  // Returns the volume this node masters under that uuid (text form), or nullptr.
  using Lookup = std::function<std::shared_ptr<core::BlockVolume>(const std::string& uuid)>;

  struct Stats {
    std::atomic<uint64_t> requests{0};
    std::atomic<uint64_t> unknown_volume{0};  // answered kNotReady + RETRY
    std::atomic<uint64_t> malformed{0};       // answered kOutOfRange / kMediumError unrun
    std::atomic<uint64_t> deferred{0};        // waited for an overlapping earlier request
    std::atomic<uint64_t> replies_lost{0};    // the connection refused the reply (ended)
    std::atomic<uint64_t> busy{0};            // over a bound: answered kNotReady + RETRY
    std::atomic<uint64_t> caw_replayed{0};    // re-sent COMPARE AND WRITE answered from memory
  };

  struct Options {
    size_t max_inflight_requests = 4096;
    size_t max_inflight_bytes = 256u << 20;
    size_t caw_memory = 4096;  // COMPARE AND WRITE outcomes remembered for re-sent twins
  };

  explicit ForwardServer(Lookup lookup) : ForwardServer(std::move(lookup), Options{}) {}
  ForwardServer(Lookup lookup, Options options);
  ~ForwardServer();
  ForwardServer(const ForwardServer&) = delete;
  ForwardServer& operator=(const ForwardServer&) = delete;

  // One IO_REQUEST frame (other types are ignored). Replies later, on `conn`.
  void handle(const std::shared_ptr<link::InboundConnection>& conn,
              const wire::FrameHeader& header, std::vector<uint8_t> payload);

  const Stats& stats() const;

  struct Shared;

 private:
  std::shared_ptr<Shared> shared_;
};

}  // namespace tandem::backend::fwd
