// Vocabulary shared by the replication links on tcp/5703 (PeerLink, LinkServer): the result
// of queueing a frame and the plain atomic counters the daemon reads for /metrics.
// Pure (no Asio). LinkMetrics is written from link strands and read from any thread.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

#include "core/result.h"

namespace tandem::backend::link {

enum class LinkErrc {
  kInvalidArgument,  // options out of range or missing
  kListen,           // binding / listening on the replication endpoint failed
};
using LinkError = core::Error<LinkErrc>;
template <class T>
using LinkResult = core::Result<T, LinkError>;

// What happened to a frame handed to PeerLink::send / InboundConnection::reply.
enum class SendStatus {
  kQueued,        // accepted; it goes out in order, or is reported dropped if the link drops
  kBackPressure,  // the send budget is used up: not queued. Slow, not dead: wait for space.
  kNotUp,         // no established link (connecting, down or closed): not queued
  kInvalid,       // not one well-formed encoded frame (length / magic): not queued
};

const char* to_string(SendStatus s);

// Counters only ever increase. "raw" counts 80-byte headers plus uncompressed payloads,
// "wire" the bytes actually written/read inside TLS, so raw / wire is the lz4 gain. HELLO and
// HEARTBEAT frames are included in frames_* and bytes_*. One instance may be shared by
// several links and a server (the daemon's totals) or kept per link.
struct LinkMetrics {
  std::atomic<uint64_t> frames_sent{0};
  std::atomic<uint64_t> frames_received{0};
  std::atomic<uint64_t> bytes_sent_raw{0};
  std::atomic<uint64_t> bytes_sent_wire{0};
  std::atomic<uint64_t> bytes_received_raw{0};
  std::atomic<uint64_t> bytes_received_wire{0};
  std::atomic<uint64_t> writes{0};  // async_writes issued (frames_sent / writes = gathering)
  std::atomic<uint64_t> heartbeats_sent{0};
  std::atomic<uint64_t> send_refused{0};    // kBackPressure answers
  std::atomic<uint64_t> frames_dropped{0};  // queued frames discarded when a link dropped
  // Outbound links.
  std::atomic<uint64_t> connects{0};    // links that reached "up" (HELLO exchanged)
  std::atomic<uint64_t> reconnects{0};  // of those, the ones after a previous up or failure
  std::atomic<uint64_t> connect_failures{0};
  // Both directions: why sessions ended.
  std::atomic<uint64_t> disconnects{0};
  std::atomic<uint64_t> idle_timeouts{0};
  std::atomic<uint64_t> write_timeouts{0};
  std::atomic<uint64_t> protocol_errors{0};  // bad frame, CRC, missing HELLO
  // Inbound server.
  std::atomic<uint64_t> accepted{0};             // TLS verified and HELLO exchanged
  std::atomic<uint64_t> refused_certificate{0};  // peer certificate failed verification
  std::atomic<uint64_t> refused_handshake{0};    // other TLS failures, timeouts
  std::atomic<uint64_t> refused_limit{0};        // over max_connections
  std::atomic<uint64_t> reply_overflows{0};      // reply budget exceeded: connection closed
};

// Reads the type byte and lengths of an encoded frame (no CRC check: the peer's decoder does
// that). Returns false unless `frame` is exactly one frame: magic, 80-byte header, wire_len.
struct EncodedFrameInfo {
  uint8_t type = 0;
  uint32_t raw_len = 0;
  uint32_t wire_len = 0;
};
// `frame` is a whole encoded frame, or its head when the rest (`body_bytes`) travels apart.
bool inspect_encoded_frame(std::span<const uint8_t> frame, EncodedFrameInfo& out,
                           size_t body_bytes = 0);

}  // namespace tandem::backend::link
