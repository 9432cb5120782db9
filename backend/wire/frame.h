// Replication frame codec for tcp/5703 (inside TLS 1.3): encodes frames into a caller's
// vector and decodes them incrementally from bytes (feed -> frame / need-more / error).
// Pure: no I/O, no clock, no threads. A FrameDecoder belongs to one connection (one strand);
// everything else here is a free function, safe from any thread.
//
// Wire layout (all integers little-endian), 80-byte header then `wire_len` payload bytes:
//    0 u32 magic "TNDM"   4 u8 version   5 u8 type   6 u16 flags
//    8 u8[16] volume UUID                24 u32 copy id   28 u32 status
//   32 u64 generation    40 u64 sequence  48 u64 lba      56 u64 count
//   64 u32 raw_len (payload length before compression)    68 u32 wire_len (bytes that follow)
//   72 u32 payload CRC32C (over the wire bytes)            76 u32 header CRC32C (bytes 0..75)
// A bad CRC, an unknown type, a length over the limits or any other malformation is a
// WireError: the connection is reset and nothing from the frame is applied.
//
// lba and count are in logical blocks of the volume's block size; payloads in bytes. The
// target should advertise a maximum transfer length <= kMaxPayload (Block Limits VPD) so one
// SCSI write is one WRITE frame; a larger one must be split by the sender, one sequence each.
// volume and copy id address every frame but HELLO (one connection per node pair carries
// many volumes). Per-type use of the other fields (those not listed are ignored; send 0):
//   HELLO          payload = encode_hello(); first frame on a connection, both ways.
//   WRITE          generation, sequence, lba, payload = data; flag FUA.
//   UNMAP          generation, sequence, lba, count = blocks; no payload.
//   WRITE_SAME     generation, sequence, lba, count = blocks, payload = one block; flag UNMAP.
//   FLUSH          generation, sequence; the replica acks once everything <= sequence is stable.
//   ACK            generation, sequence acknowledged, status = core::IoStatus (0 = ok);
//                  count = kAckThrough (only to a peer whose HELLO has kFeatureAckThrough):
//                  every sequence <= sequence that this link carried since the last
//                  SYNC_REQUEST is applied (one ACK for a whole read batch); else count = 0.
//   NACK           generation, sequence, status = NackReason, payload = optional UTF-8 text.
//   SYNC_REQUEST   generation, sequence = the requester's highest applied sequence;
//                  payload = optional encode_region_list() of wanted regions (empty = send me
//                  your REGION_SUMMARY so I can compute the delta).
//   REGION_SUMMARY generation, sequence = sender's applied sequence, count = entries in this
//                  frame, payload = encode_region_summary(); flag LAST on the final chunk.
//   SYNC_DATA      retired (whole-region resync data, replaced by SYNC_DELTA); type 9 is
//                  refused by the decoder and never reused.
//   SYNC_HASH_REQUEST  generation, sequence = S (the session's SYNC_REQUEST sequence), count =
//                  region index, status = hash unit in bytes (sync_delta.h); no payload. The
//                  copy answers SYNC_HASHES.
//   SYNC_HASHES    generation, sequence = S echoed, count = region index, status = hash unit,
//                  payload = encode_block_hashes(): one 16-byte hash per unit of the region.
//   SYNC_DELTA     generation, sequence = region's seq on the master (the stamp), count =
//                  region index, lba = first block of the region, status = hash unit, payload
//                  = encode_sync_delta(): a bitmap of units, then the data of the set ones;
//                  flag LAST (a delta always carries a whole region's difference).
//   SYNC_DONE      generation, sequence = master sequence the copy is now consistent at.
//   HEARTBEAT      generation, sequence = sender's latest sequence.
//   IO_REQUEST     forwarded block I/O (backend/fwd/): a node presenting a volume it does not
//                  master sends each BlockVolume call to the master. volume = the volume,
//                  sequence = request id (unique per forwarder, echoed in the reply),
//                  status = IoOp, lba, count = blocks (LBA_STATUS: the most blocks wanted;
//                  FLUSH: lba = count = 0), flag FUA for WRITE / COMPARE_AND_WRITE.
//                  payload: WRITE = the data (count blocks); COMPARE_AND_WRITE = compare bytes
//                  then data bytes (2 * count blocks); READ, FLUSH, UNMAP, LBA_STATUS = none.
//                  generation = the forwarder's instance id (random, non-zero; 0 = none): with
//                  the request id it names a request re-sent after a drop, so the master can
//                  answer a re-sent COMPARE_AND_WRITE as it did the first. copy id: send 0.
//   IO_REPLY       volume and sequence of the request, status = core::IoStatus, count echoed,
//                  lba = byte offset of the first difference when status is kMiscompare.
//                  payload: READ ok = the data; LBA_STATUS ok = encode_extents(); else none.
//                  The master answers a request it cannot take now (unknown volume, over its
//                  in-flight bounds) kNotReady with flag RETRY, and the forwarder sends it again
//                  later (kNotReady without RETRY is the volume's own final answer); a malformed one (range beyond the volume, payload size
//                  not matching count, unknown IoOp) kOutOfRange or kMediumError.
//                  Semantics that depend on the volume's block size are the master's to check;
//                  the codec checks only framing (type, flags, lengths against the limit).
// COMPARE AND WRITE has no frame type on purpose: the master resolves the compare against its
// own copy while holding the write order, then replicates the outcome as a plain WRITE (or
// nothing on miscompare). Replicas hold identical data at every sequence, so replaying the
// compare there could only disagree after a divergence that resync must repair anyway.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/block_volume.h"
#include "core/result.h"

namespace tandem::backend::wire {

inline constexpr uint32_t kMagic = 0x4D444E54u;  // bytes "TNDM"
inline constexpr uint8_t kVersion = 1;
inline constexpr size_t kHeaderSize = 80;
inline constexpr uint32_t kMaxPayload = 8u << 20;  // raw bytes per frame
// Payloads smaller than this are never worth an lz4 attempt.
inline constexpr size_t kMinCompressSize = 64;

enum class FrameType : uint8_t {
  kHello = 1,
  kWrite = 2,
  kUnmap = 3,
  kWriteSame = 4,
  kFlush = 5,
  kAck = 6,
  kNack = 7,
  kSyncRequest = 8,
  kRetiredSyncData = 9,  // never reused: see SYNC_DATA above
  kSyncDone = 10,
  kRegionSummary = 11,
  kHeartbeat = 12,
  kIoRequest = 13,
  kIoReply = 14,
  kSyncHashRequest = 15,
  kSyncHashes = 16,
  kSyncDelta = 17,
};
inline constexpr uint8_t kMaxFrameType = 17;

const char* to_string(FrameType t);

// Header flags. kFlagCompressed belongs to the codec: encode() sets it, callers never do.
inline constexpr uint16_t kFlagCompressed = 1u << 0;
inline constexpr uint16_t kFlagFua = 1u << 1;    // WRITE, WRITE_SAME, IO_REQUEST: stable first
inline constexpr uint16_t kFlagLast = 1u << 2;   // REGION_SUMMARY, SYNC_DELTA: final chunk
inline constexpr uint16_t kFlagUnmap = 1u << 3;  // WRITE_SAME: may deallocate (SBC-3 UNMAP bit)
inline constexpr uint16_t kFlagRetry = 1u << 4;  // IO_REPLY: not taken now, send it again later
inline constexpr uint16_t kKnownFlags =
    kFlagCompressed | kFlagFua | kFlagLast | kFlagUnmap | kFlagRetry;

// Why a replica refused a frame (NACK status). The engine decides what follows.
enum class NackReason : uint32_t {
  kStaleGeneration = 1,  // frame generation < the copy's generation: sender was deposed
  kUnknownCopy = 2,      // no such volume/copy on this node
  kOutOfOrder = 3,       // sequence is not the next one expected: resync needed
  kBadCrc = 4,           // reported before the link is reset
  kNotReady = 5,         // copy is resyncing or offline
  kBadRequest = 6,       // out of range, bad block count
  kIoError = 7,          // local store failed
};

const char* to_string(NackReason r);

// What an IO_REQUEST asks for (its status field). Values are wire format: never renumber.
enum class IoOp : uint32_t {
  kRead = 1,
  kWrite = 2,
  kFlush = 3,
  kUnmap = 4,
  kCompareAndWrite = 5,
  kLbaStatus = 6,
};
inline constexpr uint32_t kMaxIoOp = 6;
const char* to_string(IoOp op);

using Uuid = std::array<uint8_t, 16>;

// The catalogue's text form "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx" (lower or upper hex).
// False on anything else.
bool parse_uuid(std::string_view text, Uuid& out);
std::string format_uuid(const Uuid& id);

struct FrameHeader {
  FrameType type = FrameType::kHeartbeat;
  uint16_t flags = 0;
  Uuid volume{};
  uint32_t copy_id = 0;
  uint32_t status = 0;
  uint64_t generation = 0;
  uint64_t sequence = 0;
  uint64_t lba = 0;
  uint64_t count = 0;

  bool operator==(const FrameHeader&) const = default;
};

// A decoded frame: the header (flags without kFlagCompressed) and the raw payload.
struct Frame {
  FrameHeader header;
  std::vector<uint8_t> payload;
};

enum class WireErrc {
  kBadMagic,
  kBadVersion,
  kHeaderCrc,
  kBadType,
  kBadFlags,
  kTooLarge,   // a length over the configured limit
  kBadLength,  // lengths inconsistent with each other or with the frame type
  kPayloadCrc,
  kDecompress,  // lz4 data corrupt, or it does not inflate to exactly raw_len
  kBadPayload,  // typed payload (HELLO, summary, region list) malformed
  kFailed,      // decoder already failed: reset the link and make a new decoder
};
using WireError = core::Error<WireErrc>;
template <class T>
using WireResult = core::Result<T, WireError>;

const char* to_string(WireErrc e);

// Appends one frame to `out`. The payload goes lz4-compressed (block format) when `compress`
// is set, it is at least kMinCompressSize and compressing shrinks it; else raw. A payload of
// 64 KiB or more is first probed (lz4 on eight 4 KiB samples spread over it) and goes raw
// without a full attempt unless the samples shrink by at least ~3%. Refuses a
// header/payload the decoder would refuse (so a bug surfaces at the sender). On error `out`
// is left as it was. Returns the bytes appended.
WireResult<size_t> encode(const FrameHeader& header, std::span<const uint8_t> payload,
                          bool compress, std::vector<uint8_t>& out,
                          uint32_t max_payload = kMaxPayload);
// The same for block data as core::BlockVolume hands it over (own name: `{}` stays
// unambiguous for the many payload-less frames).
WireResult<size_t> encode_blocks(const FrameHeader& header, std::span<const std::byte> payload,
                                 bool compress, std::vector<uint8_t>& out,
                                 uint32_t max_payload = kMaxPayload);
// A payload encoded once (lz4 when asked and it shrinks, then its CRC32C) for several frames
// that carry the same bytes (one WRITE per replica): each frame is encode_head()'s header
// followed by `wire`, together byte for byte what encode() makes. The payload is shared, not
// copied, when it goes raw.
struct EncodedPayload {
  std::shared_ptr<const std::vector<uint8_t>> wire;  // the bytes after the header
  uint32_t raw_len = 0;
  uint32_t crc = 0;  // CRC32C of *wire
  bool compressed = false;
};
EncodedPayload encode_payload(std::shared_ptr<const std::vector<uint8_t>> payload, bool compress);
// Replaces `out` with the header of a frame carrying `payload`; refuses what encode() would
// (on error `out` is left as it was). Returns kHeaderSize.
WireResult<size_t> encode_head(const FrameHeader& header, const EncodedPayload& payload,
                               std::vector<uint8_t>& out, uint32_t max_payload = kMaxPayload);
// Upper bound of what encode() appends for a payload of `payload_bytes` (lz4 is used only
// when it shrinks the payload), for accounting in-flight replication bytes.
constexpr size_t max_frame_size(size_t payload_bytes) { return kHeaderSize + payload_bytes; }

// Incremental decoder. Usage:
//   while (!in.empty()) {
//     auto step = dec.feed(in);  if (!step) -> reset the link
//     in = in.subspan(step->consumed);
//     if (step->status == FrameDecoder::Status::kFrame) handle(dec.take());
//   }
// feed() consumes at most up to the end of one frame, so a frame is never lost. Every length
// is checked against `max_payload` before anything is allocated for it. After an error the
// decoder stays failed (kFailed) until reset().
class FrameDecoder {
 public:
  enum class Status { kNeedMore, kFrame };
  struct Step {
    Status status = Status::kNeedMore;
    size_t consumed = 0;
  };

  explicit FrameDecoder(uint32_t max_payload = kMaxPayload) : max_payload_(max_payload) {}

  WireResult<Step> feed(std::span<const uint8_t> in);
  // The frame completed by the last feed(); valid once per kFrame.
  Frame take();
  void reset();
  bool failed() const { return state_ == State::kFailed; }
  // Bytes of the current partial frame held so far (for back-pressure accounting).
  size_t buffered() const { return header_have_ + payload_.size(); }

 private:
  enum class State { kHeader, kPayload, kReady, kFailed };
  WireResult<Step> fail_with(WireErrc code, std::string message, size_t consumed);
  WireResult<void> finish();

  uint32_t max_payload_;
  State state_ = State::kHeader;
  std::array<uint8_t, kHeaderSize> header_buf_{};
  size_t header_have_ = 0;
  FrameHeader header_;
  uint32_t raw_len_ = 0;
  uint32_t wire_len_ = 0;
  uint32_t payload_crc_ = 0;
  bool compressed_ = false;
  std::vector<uint8_t> payload_;  // wire bytes while reading, raw bytes once ready
};

// ---- Typed payloads ----

// HELLO: the sender's identity and capabilities.
inline constexpr uint32_t kFeatureLz4 = 1u << 0;
// The sender, as a master, takes ACKs with count = kAckThrough (cumulative).
inline constexpr uint32_t kFeatureAckThrough = 1u << 1;
inline constexpr uint64_t kAckThrough = 1;
struct Hello {
  std::string node_id;  // 1..255 bytes (the node's UUID)
  std::string address;  // 0..255 bytes, the replication endpoint as the sender sees it
  uint32_t features = kFeatureLz4 | kFeatureAckThrough;
  uint32_t max_payload = kMaxPayload;  // largest raw payload the sender accepts

  bool operator==(const Hello&) const = default;
};
WireResult<std::vector<uint8_t>> encode_hello(const Hello& h);
WireResult<Hello> decode_hello(std::span<const uint8_t> payload);

// REGION_SUMMARY: (region index, last-write sequence) pairs, 16 bytes each.
struct RegionEntry {
  uint64_t region = 0;
  uint64_t seq = 0;
  bool operator==(const RegionEntry&) const = default;
};
inline constexpr size_t kRegionEntrySize = 16;
inline constexpr size_t kMaxSummaryEntriesPerFrame = kMaxPayload / kRegionEntrySize;
std::vector<uint8_t> encode_region_summary(std::span<const RegionEntry> entries);
WireResult<std::vector<RegionEntry>> decode_region_summary(std::span<const uint8_t> payload);

// SYNC_HASHES: one hash of this size per unit (the codec lives in sync_delta.h).
inline constexpr size_t kBlockHashSize = 16;

// SYNC_REQUEST: region indices, 8 bytes each.
std::vector<uint8_t> encode_region_list(std::span<const uint64_t> regions);
WireResult<std::vector<uint64_t>> decode_region_list(std::span<const uint8_t> payload);

// IO_REPLY to LBA_STATUS: extents of 24 bytes each (u64 lba, u64 blocks, u32 flags with bit 0
// = mapped, u32 zero), at most kMaxExtents, each non-empty and not wrapping past 2^64.
inline constexpr size_t kExtentSize = 24;
inline constexpr size_t kMaxExtents = 1024;
WireResult<std::vector<uint8_t>> encode_extents(std::span<const core::LbaExtent> extents);
WireResult<std::vector<core::LbaExtent>> decode_extents(std::span<const uint8_t> payload);

}  // namespace tandem::backend::wire
