#include "backend/wire/frame.h"

#include <lz4.h>

#include <algorithm>
#include <cstring>

#include "core/crc32c.h"

namespace tandem::backend::wire {
namespace {

using core::fail;

// ---- little-endian helpers ----
void put16(uint8_t* p, uint16_t v) {
  p[0] = uint8_t(v);
  p[1] = uint8_t(v >> 8);
}
void put32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = uint8_t(v >> (8 * i));
}
void put64(uint8_t* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = uint8_t(v >> (8 * i));
}
uint16_t get16(const uint8_t* p) { return uint16_t(p[0] | p[1] << 8); }
uint32_t get32(const uint8_t* p) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = v << 8 | p[i];
  return v;
}
uint64_t get64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = v << 8 | p[i];
  return v;
}

// Header offsets.
constexpr size_t kOffMagic = 0, kOffVersion = 4, kOffType = 5, kOffFlags = 6, kOffVolume = 8,
                 kOffCopy = 24, kOffStatus = 28, kOffGeneration = 32, kOffSequence = 40,
                 kOffLba = 48, kOffCount = 56, kOffRawLen = 64, kOffWireLen = 68,
                 kOffPayloadCrc = 72, kOffHeaderCrc = 76;
static_assert(kOffHeaderCrc + 4 == kHeaderSize);

// What each frame type may carry (validated on both sides, before any allocation).
struct TypeRule {
  bool payload_allowed;
  bool payload_required;
  uint32_t max_payload;  // 0: the codec limit
  uint32_t multiple;     // raw length must be a multiple of this
  uint16_t flags;        // flags allowed besides kFlagCompressed
  bool count_required;   // count > 0
};

constexpr uint32_t kMaxSmallPayload = 1024;

const TypeRule* rule_for(uint8_t type) {
  static const TypeRule kRules[kMaxFrameType + 1] = {
      {},                                                    // 0: invalid
      {true, true, kMaxSmallPayload, 1, 0, false},           // HELLO
      {true, true, 0, 1, kFlagFua, false},                   // WRITE
      {false, false, 0, 1, 0, true},                         // UNMAP
      {true, true, 0, 1, kFlagFua | kFlagUnmap, true},       // WRITE_SAME
      {false, false, 0, 1, 0, false},                        // FLUSH
      {false, false, 0, 1, 0, false},                        // ACK
      {true, false, kMaxSmallPayload, 1, 0, false},          // NACK
      {true, false, 0, 8, 0, false},                         // SYNC_REQUEST
      {},                                                    // 9: retired SYNC_DATA
      {false, false, 0, 1, 0, false},                        // SYNC_DONE
      {true, false, 0, kRegionEntrySize, kFlagLast, false},  // REGION_SUMMARY
      {false, false, 0, 1, 0, false},                        // HEARTBEAT
      {true, false, 0, 1, kFlagFua, false},                  // IO_REQUEST
      {true, false, 0, 1, kFlagRetry, false},                // IO_REPLY
      {false, false, 0, 1, 0, false},                        // SYNC_HASH_REQUEST
      {true, true, 0, kBlockHashSize, 0, false},             // SYNC_HASHES
      {true, true, 0, 1, kFlagLast, false},                  // SYNC_DELTA
  };
  if (type == 0 || type > kMaxFrameType || type == uint8_t(FrameType::kRetiredSyncData)) {
    return nullptr;
  }
  return &kRules[type];
}

WireError err(WireErrc code, std::string message) { return WireError{code, std::move(message)}; }

// Everything that can be judged from the header alone.
WireResult<void> validate(uint8_t type, uint16_t flags, uint64_t count, uint64_t raw_len,
                          uint32_t max_payload) {
  const TypeRule* rule = rule_for(type);
  if (!rule) return fail(err(WireErrc::kBadType, "unknown frame type " + std::to_string(type)));
  if ((flags & ~(rule->flags | kFlagCompressed)) != 0) {
    return fail(err(WireErrc::kBadFlags, "flags not valid for this frame type"));
  }
  const uint64_t limit =
      rule->max_payload ? std::min(rule->max_payload, max_payload) : uint64_t(max_payload);
  if (raw_len > limit || raw_len > uint64_t(LZ4_MAX_INPUT_SIZE)) {
    return fail(err(WireErrc::kTooLarge, "payload of " + std::to_string(raw_len) +
                                             " bytes exceeds " + std::to_string(limit)));
  }
  if (!rule->payload_allowed && raw_len != 0) {
    return fail(err(WireErrc::kBadLength, "frame type carries no payload"));
  }
  if (rule->payload_required && raw_len == 0) {
    return fail(err(WireErrc::kBadLength, "frame type needs a payload"));
  }
  if (raw_len % rule->multiple != 0) {
    return fail(err(WireErrc::kBadLength, "payload length is not a whole number of entries"));
  }
  if (rule->count_required && count == 0) {
    return fail(err(WireErrc::kBadLength, "block count must not be zero"));
  }
  if (type == uint8_t(FrameType::kRegionSummary) && count != raw_len / kRegionEntrySize) {
    return fail(err(WireErrc::kBadLength, "summary count disagrees with its payload"));
  }
  return {};
}

}  // namespace

const char* to_string(FrameType t) {
  switch (t) {
    case FrameType::kHello:
      return "HELLO";
    case FrameType::kWrite:
      return "WRITE";
    case FrameType::kUnmap:
      return "UNMAP";
    case FrameType::kWriteSame:
      return "WRITE_SAME";
    case FrameType::kFlush:
      return "FLUSH";
    case FrameType::kAck:
      return "ACK";
    case FrameType::kNack:
      return "NACK";
    case FrameType::kSyncRequest:
      return "SYNC_REQUEST";
    case FrameType::kRetiredSyncData:
      return "RETIRED_SYNC_DATA";
    case FrameType::kSyncDone:
      return "SYNC_DONE";
    case FrameType::kRegionSummary:
      return "REGION_SUMMARY";
    case FrameType::kHeartbeat:
      return "HEARTBEAT";
    case FrameType::kIoRequest:
      return "IO_REQUEST";
    case FrameType::kIoReply:
      return "IO_REPLY";
    case FrameType::kSyncHashRequest:
      return "SYNC_HASH_REQUEST";
    case FrameType::kSyncHashes:
      return "SYNC_HASHES";
    case FrameType::kSyncDelta:
      return "SYNC_DELTA";
  }
  return "UNKNOWN";
}

const char* to_string(IoOp op) {
  switch (op) {
    case IoOp::kRead:
      return "READ";
    case IoOp::kWrite:
      return "WRITE";
    case IoOp::kFlush:
      return "FLUSH";
    case IoOp::kUnmap:
      return "UNMAP";
    case IoOp::kCompareAndWrite:
      return "COMPARE_AND_WRITE";
    case IoOp::kLbaStatus:
      return "LBA_STATUS";
  }
  return "UNKNOWN";
}

const char* to_string(NackReason r) {
  switch (r) {
    case NackReason::kStaleGeneration:
      return "stale generation";
    case NackReason::kUnknownCopy:
      return "unknown copy";
    case NackReason::kOutOfOrder:
      return "out of order";
    case NackReason::kBadCrc:
      return "bad crc";
    case NackReason::kNotReady:
      return "not ready";
    case NackReason::kBadRequest:
      return "bad request";
    case NackReason::kIoError:
      return "i/o error";
  }
  return "unknown";
}

const char* to_string(WireErrc e) {
  switch (e) {
    case WireErrc::kBadMagic:
      return "bad magic";
    case WireErrc::kBadVersion:
      return "bad version";
    case WireErrc::kHeaderCrc:
      return "header crc mismatch";
    case WireErrc::kBadType:
      return "bad frame type";
    case WireErrc::kBadFlags:
      return "bad flags";
    case WireErrc::kTooLarge:
      return "too large";
    case WireErrc::kBadLength:
      return "bad length";
    case WireErrc::kPayloadCrc:
      return "payload crc mismatch";
    case WireErrc::kDecompress:
      return "decompression failed";
    case WireErrc::kBadPayload:
      return "bad payload";
    case WireErrc::kFailed:
      return "decoder failed";
  }
  return "unknown";
}

// ---- encoder ----

namespace {

// Payloads of at least kProbeFrom bytes are probed before a full lz4 attempt: kProbeSamples
// samples of kProbeSample bytes spread evenly over the payload are compressed (each on its
// own), and unless together they shrink by at least 1/kProbeMinSaving the payload goes raw.
// On 1 MiB of incompressible data the probe takes ~18 us against ~110 us for a full attempt
// (lz4 gives up faster on long incompressible runs than on 4 KiB ones); on compressible data
// it adds ~1% to the attempt. Data that compresses somewhere in the payload shows it in the
// samples (a half-compressible 1 MiB write has half its samples compressible), and what
// shrinks by less than ~3% is hardly worth the replica's decompression anyway. The volume's
// own skip-after-misses (backend/replicated) still applies on top.
constexpr size_t kProbeFrom = 64u << 10;
constexpr size_t kProbeSample = 4u << 10;
constexpr size_t kProbeSamples = 8;
constexpr size_t kProbeMinSaving = 32;
static_assert(kProbeFrom >= kProbeSamples * kProbeSample);

bool probe_says_compressible(std::span<const uint8_t> payload, std::vector<uint8_t>& scratch) {
  const int bound = LZ4_compressBound(int(kProbeSample));
  if (scratch.size() < size_t(bound)) scratch.resize(size_t(bound));
  const size_t step = (payload.size() - kProbeSample) / (kProbeSamples - 1);
  size_t packed = 0;
  for (size_t i = 0; i < kProbeSamples; ++i) {
    const int n =
        LZ4_compress_default(reinterpret_cast<const char*>(payload.data() + i * step),
                             reinterpret_cast<char*>(scratch.data()), int(kProbeSample), bound);
    packed += n > 0 ? size_t(n) : kProbeSample;
  }
  const size_t sampled = kProbeSamples * kProbeSample;
  return packed <= sampled - sampled / kProbeMinSaving;
}

// lz4 into a scratch buffer kept per thread (grown, never zero-filled again): returns the
// compressed bytes, or an empty span when compressing does not shrink `payload` (or the
// probe of a large payload says it would not).
std::span<const uint8_t> try_lz4(std::span<const uint8_t> payload) {
  if (payload.size() < kMinCompressSize) return {};
  thread_local std::vector<uint8_t> scratch;
  if (payload.size() >= kProbeFrom && !probe_says_compressible(payload, scratch)) return {};
  const int bound = LZ4_compressBound(int(payload.size()));
  if (scratch.size() < size_t(bound)) scratch.resize(size_t(bound));
  const int n =
      LZ4_compress_default(reinterpret_cast<const char*>(payload.data()),
                           reinterpret_cast<char*>(scratch.data()), int(payload.size()), bound);
  if (n <= 0 || size_t(n) >= payload.size()) return {};
  return {scratch.data(), size_t(n)};
}

void put_header(uint8_t* p, const FrameHeader& h, uint16_t flags, uint32_t raw_len,
                uint32_t wire_len, uint32_t payload_crc) {
  put32(p + kOffMagic, kMagic);
  p[kOffVersion] = kVersion;
  p[kOffType] = uint8_t(h.type);
  put16(p + kOffFlags, flags);
  std::memcpy(p + kOffVolume, h.volume.data(), h.volume.size());
  put32(p + kOffCopy, h.copy_id);
  put32(p + kOffStatus, h.status);
  put64(p + kOffGeneration, h.generation);
  put64(p + kOffSequence, h.sequence);
  put64(p + kOffLba, h.lba);
  put64(p + kOffCount, h.count);
  put32(p + kOffRawLen, raw_len);
  put32(p + kOffWireLen, wire_len);
  put32(p + kOffPayloadCrc, payload_crc);
  put32(p + kOffHeaderCrc, core::crc32c(std::span<const uint8_t>(p, kOffHeaderCrc)));
}

}  // namespace

WireResult<size_t> encode(const FrameHeader& h, std::span<const uint8_t> payload, bool compress,
                          std::vector<uint8_t>& out, uint32_t max_payload) {
  const uint16_t flags = uint16_t(h.flags & ~kFlagCompressed);
  if (auto v = validate(uint8_t(h.type), flags, h.count, payload.size(), max_payload); !v) {
    return fail(v.error());
  }
  std::span<const uint8_t> body = payload;
  bool compressed = false;
  if (compress) {
    if (auto z = try_lz4(payload); !z.empty()) {
      body = z;
      compressed = true;
    }
  }
  // Header space, then the payload appended (no zero-fill of bytes about to be overwritten).
  const size_t start = out.size();
  out.reserve(start + kHeaderSize + body.size());
  out.resize(start + kHeaderSize);
  out.insert(out.end(), body.begin(), body.end());
  put_header(out.data() + start, h, uint16_t(flags | (compressed ? kFlagCompressed : 0)),
             uint32_t(payload.size()), uint32_t(body.size()), core::crc32c(body));
  return kHeaderSize + body.size();
}

EncodedPayload encode_payload(std::shared_ptr<const std::vector<uint8_t>> payload, bool compress) {
  EncodedPayload out;
  if (!payload) return out;
  out.raw_len = uint32_t(payload->size());
  if (compress) {
    if (auto z = try_lz4(*payload); !z.empty()) {
      out.wire = std::make_shared<const std::vector<uint8_t>>(z.begin(), z.end());
      out.compressed = true;
    }
  }
  if (!out.compressed) out.wire = std::move(payload);
  out.crc = core::crc32c(std::span<const uint8_t>(*out.wire));
  return out;
}

WireResult<size_t> encode_head(const FrameHeader& h, const EncodedPayload& payload,
                               std::vector<uint8_t>& out, uint32_t max_payload) {
  const uint16_t flags = uint16_t(h.flags & ~kFlagCompressed);
  if (auto v = validate(uint8_t(h.type), flags, h.count, payload.raw_len, max_payload); !v) {
    return fail(v.error());
  }
  const size_t wire_len = payload.wire ? payload.wire->size() : 0;
  if (payload.compressed ? (wire_len == 0 || wire_len >= payload.raw_len)
                         : wire_len != payload.raw_len) {
    return fail(err(WireErrc::kBadLength, "encoded payload length inconsistent"));
  }
  out.resize(kHeaderSize);
  put_header(out.data(), h, uint16_t(flags | (payload.compressed ? kFlagCompressed : 0)),
             payload.raw_len, uint32_t(wire_len), payload.crc);
  return kHeaderSize;
}

WireResult<size_t> encode_blocks(const FrameHeader& h, std::span<const std::byte> payload,
                                 bool compress, std::vector<uint8_t>& out, uint32_t max_payload) {
  return encode(
      h, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(payload.data()), payload.size()),
      compress, out, max_payload);
}

// ---- decoder ----

WireResult<FrameDecoder::Step> FrameDecoder::fail_with(WireErrc code, std::string message,
                                                       size_t consumed) {
  state_ = State::kFailed;
  header_have_ = 0;
  payload_.clear();
  payload_.shrink_to_fit();
  (void)consumed;
  return fail(err(code, std::move(message)));
}

void FrameDecoder::reset() {
  state_ = State::kHeader;
  header_have_ = 0;
  header_ = FrameHeader{};
  raw_len_ = wire_len_ = payload_crc_ = 0;
  compressed_ = false;
  payload_.clear();
}

Frame FrameDecoder::take() {
  if (state_ != State::kReady) std::abort();  // no frame: a caller bug
  Frame f{header_, std::move(payload_)};
  payload_ = {};
  header_have_ = 0;
  state_ = State::kHeader;
  return f;
}

WireResult<FrameDecoder::Step> FrameDecoder::feed(std::span<const uint8_t> in) {
  size_t used = 0;
  switch (state_) {
    case State::kFailed:
      return fail(err(WireErrc::kFailed, "decoder failed earlier; reset the link"));
    case State::kReady:
      return Step{Status::kFrame, 0};  // the caller has not taken the last frame yet
    case State::kHeader: {
      const size_t n = std::min(in.size(), kHeaderSize - header_have_);
      std::memcpy(header_buf_.data() + header_have_, in.data(), n);
      header_have_ += n;
      used += n;
      if (header_have_ < kHeaderSize) return Step{Status::kNeedMore, used};
      const uint8_t* p = header_buf_.data();
      if (get32(p + kOffMagic) != kMagic) {
        return fail_with(WireErrc::kBadMagic, "not a Tandem replication frame", used);
      }
      if (p[kOffVersion] != kVersion) {
        return fail_with(WireErrc::kBadVersion,
                         "protocol version " + std::to_string(p[kOffVersion]), used);
      }
      if (core::crc32c(std::span<const uint8_t>(p, kOffHeaderCrc)) != get32(p + kOffHeaderCrc)) {
        return fail_with(WireErrc::kHeaderCrc, "header checksum mismatch", used);
      }
      const uint16_t flags = get16(p + kOffFlags);
      raw_len_ = get32(p + kOffRawLen);
      wire_len_ = get32(p + kOffWireLen);
      payload_crc_ = get32(p + kOffPayloadCrc);
      compressed_ = (flags & kFlagCompressed) != 0;
      header_.type = FrameType(p[kOffType]);
      header_.flags = uint16_t(flags & ~kFlagCompressed);
      std::memcpy(header_.volume.data(), p + kOffVolume, header_.volume.size());
      header_.copy_id = get32(p + kOffCopy);
      header_.status = get32(p + kOffStatus);
      header_.generation = get64(p + kOffGeneration);
      header_.sequence = get64(p + kOffSequence);
      header_.lba = get64(p + kOffLba);
      header_.count = get64(p + kOffCount);
      if (auto v = validate(p[kOffType], flags, header_.count, raw_len_, max_payload_); !v) {
        return fail_with(v.error().code, v.error().message, used);
      }
      // The encoder only compresses when it shrinks, so compressed data is strictly
      // smaller than raw; raw data is exactly raw_len. Both bound wire_len by raw_len,
      // which was checked against the limit above.
      if (compressed_ ? (wire_len_ == 0 || wire_len_ >= raw_len_) : wire_len_ != raw_len_) {
        return fail_with(WireErrc::kBadLength, "wire length inconsistent with raw length", used);
      }
      payload_.clear();
      payload_.reserve(wire_len_);
      state_ = State::kPayload;
      in = in.subspan(n);
      [[fallthrough]];
    }
    case State::kPayload: {
      const size_t n = std::min(in.size(), size_t(wire_len_) - payload_.size());
      payload_.insert(payload_.end(), in.begin(), in.begin() + ptrdiff_t(n));
      used += n;
      if (payload_.size() < wire_len_) return Step{Status::kNeedMore, used};
      if (auto f = finish(); !f) return fail_with(f.error().code, f.error().message, used);
      state_ = State::kReady;
      return Step{Status::kFrame, used};
    }
  }
  return fail_with(WireErrc::kFailed, "unreachable decoder state", used);
}

WireResult<void> FrameDecoder::finish() {
  if (core::crc32c(payload_) != payload_crc_) {
    return fail(err(WireErrc::kPayloadCrc, "payload checksum mismatch"));
  }
  if (compressed_) {
    std::vector<uint8_t> raw(raw_len_);
    const int n =
        LZ4_decompress_safe(reinterpret_cast<const char*>(payload_.data()),
                            reinterpret_cast<char*>(raw.data()), int(wire_len_), int(raw_len_));
    if (n < 0 || uint32_t(n) != raw_len_) {
      return fail(err(WireErrc::kDecompress, "lz4 payload does not inflate to raw length"));
    }
    payload_ = std::move(raw);
  }
  return {};
}

// ---- typed payloads ----

WireResult<std::vector<uint8_t>> encode_hello(const Hello& h) {
  if (h.node_id.empty() || h.node_id.size() > 255 || h.address.size() > 255) {
    return fail(err(WireErrc::kBadPayload, "hello: node id 1-255 bytes, address 0-255"));
  }
  std::vector<uint8_t> out(8 + 2 + h.node_id.size() + 2 + h.address.size());
  uint8_t* p = out.data();
  put32(p, h.features);
  put32(p + 4, h.max_payload);
  put16(p + 8, uint16_t(h.node_id.size()));
  std::memcpy(p + 10, h.node_id.data(), h.node_id.size());
  p += 10 + h.node_id.size();
  put16(p, uint16_t(h.address.size()));
  std::memcpy(p + 2, h.address.data(), h.address.size());
  return out;
}

WireResult<Hello> decode_hello(std::span<const uint8_t> b) {
  auto bad = [] { return fail(err(WireErrc::kBadPayload, "malformed HELLO payload")); };
  if (b.size() < 10) return bad();
  Hello h;
  h.features = get32(b.data());
  h.max_payload = get32(b.data() + 4);
  const size_t id_len = get16(b.data() + 8);
  if (id_len == 0 || id_len > 255 || b.size() < 10 + id_len + 2) return bad();
  h.node_id.assign(reinterpret_cast<const char*>(b.data() + 10), id_len);
  const size_t addr_off = 10 + id_len;
  const size_t addr_len = get16(b.data() + addr_off);
  if (addr_len > 255 || b.size() != addr_off + 2 + addr_len) return bad();
  h.address.assign(reinterpret_cast<const char*>(b.data() + addr_off + 2), addr_len);
  return h;
}

std::vector<uint8_t> encode_region_summary(std::span<const RegionEntry> entries) {
  std::vector<uint8_t> out(entries.size() * kRegionEntrySize);
  for (size_t i = 0; i < entries.size(); ++i) {
    put64(out.data() + i * kRegionEntrySize, entries[i].region);
    put64(out.data() + i * kRegionEntrySize + 8, entries[i].seq);
  }
  return out;
}

WireResult<std::vector<RegionEntry>> decode_region_summary(std::span<const uint8_t> b) {
  if (b.size() % kRegionEntrySize != 0 || b.size() > kMaxPayload) {
    return fail(err(WireErrc::kBadPayload, "summary is not a whole number of entries"));
  }
  std::vector<RegionEntry> out(b.size() / kRegionEntrySize);
  for (size_t i = 0; i < out.size(); ++i) {
    out[i].region = get64(b.data() + i * kRegionEntrySize);
    out[i].seq = get64(b.data() + i * kRegionEntrySize + 8);
  }
  return out;
}

std::vector<uint8_t> encode_region_list(std::span<const uint64_t> regions) {
  std::vector<uint8_t> out(regions.size() * 8);
  for (size_t i = 0; i < regions.size(); ++i) put64(out.data() + i * 8, regions[i]);
  return out;
}

WireResult<std::vector<uint64_t>> decode_region_list(std::span<const uint8_t> b) {
  if (b.size() % 8 != 0 || b.size() > kMaxPayload) {
    return fail(err(WireErrc::kBadPayload, "region list is not a whole number of entries"));
  }
  std::vector<uint64_t> out(b.size() / 8);
  for (size_t i = 0; i < out.size(); ++i) out[i] = get64(b.data() + i * 8);
  return out;
}

WireResult<std::vector<uint8_t>> encode_extents(std::span<const core::LbaExtent> extents) {
  if (extents.size() > kMaxExtents) {
    return fail(err(WireErrc::kBadPayload, "more than kMaxExtents extents"));
  }
  std::vector<uint8_t> out(extents.size() * kExtentSize);
  for (size_t i = 0; i < extents.size(); ++i) {
    const auto& e = extents[i];
    if (e.blocks == 0 || e.lba + e.blocks < e.lba) {
      return fail(err(WireErrc::kBadPayload, "extent empty or wrapping"));
    }
    uint8_t* p = out.data() + i * kExtentSize;
    put64(p, e.lba);
    put64(p + 8, e.blocks);
    put32(p + 16, e.mapped ? 1u : 0u);
    put32(p + 20, 0);
  }
  return out;
}

WireResult<std::vector<core::LbaExtent>> decode_extents(std::span<const uint8_t> b) {
  if (b.size() % kExtentSize != 0 || b.size() / kExtentSize > kMaxExtents) {
    return fail(err(WireErrc::kBadPayload, "extent list size"));
  }
  std::vector<core::LbaExtent> out(b.size() / kExtentSize);
  for (size_t i = 0; i < out.size(); ++i) {
    const uint8_t* p = b.data() + i * kExtentSize;
    const uint32_t flags = get32(p + 16);
    out[i].lba = get64(p);
    out[i].blocks = get64(p + 8);
    out[i].mapped = (flags & 1u) != 0;
    if ((flags & ~1u) != 0 || get32(p + 20) != 0) {
      return fail(err(WireErrc::kBadPayload, "extent flags"));
    }
    if (out[i].blocks == 0 || out[i].lba + out[i].blocks < out[i].lba) {
      return fail(err(WireErrc::kBadPayload, "extent empty or wrapping"));
    }
  }
  return out;
}

bool parse_uuid(std::string_view text, Uuid& out) {
  if (text.size() != 36) return false;
  size_t j = 0;
  for (size_t i = 0; i < 36;) {
    if (i == 8 || i == 13 || i == 18 || i == 23) {
      if (text[i] != '-') return false;
      ++i;
      continue;
    }
    auto nib = [](char c) -> int {
      if (c >= '0' && c <= '9') return c - '0';
      if (c >= 'a' && c <= 'f') return c - 'a' + 10;
      if (c >= 'A' && c <= 'F') return c - 'A' + 10;
      return -1;
    };
    int hi = nib(text[i]), lo = nib(text[i + 1]);
    if (hi < 0 || lo < 0) return false;
    out[j++] = static_cast<uint8_t>(hi << 4 | lo);
    i += 2;
  }
  return j == 16;
}

std::string format_uuid(const Uuid& id) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string s;
  s.reserve(36);
  for (size_t i = 0; i < id.size(); ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10) s.push_back('-');
    s.push_back(kHex[id[i] >> 4]);
    s.push_back(kHex[id[i] & 15]);
  }
  return s;
}

}  // namespace tandem::backend::wire
