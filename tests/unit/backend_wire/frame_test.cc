// Frame codec: round trips of every type (lz4 on and off), incompressible data sent raw,
// truncation at every byte, corruption of every header byte and of payloads, hostile lengths,
// lz4 bombs, and a seeded random-bytes loop. The decoder must never crash or over-allocate.
#include "backend/wire/frame.h"

#include <gtest/gtest.h>
#include <lz4.h>

#include <algorithm>
#include <random>
#include <string>
#include <vector>

#include "core/crc32c.h"

namespace tandem::backend::wire {
namespace {

constexpr size_t kOffFlags = 6, kOffRawLen = 64, kOffWireLen = 68, kOffPayloadCrc = 72,
                 kOffHeaderCrc = 76;

void put32(std::vector<uint8_t>& b, size_t off, uint32_t v) {
  for (int i = 0; i < 4; ++i) b[off + i] = uint8_t(v >> (8 * i));
}
uint32_t get32(const std::vector<uint8_t>& b, size_t off) {
  return uint32_t(b[off]) | uint32_t(b[off + 1]) << 8 | uint32_t(b[off + 2]) << 16 |
         uint32_t(b[off + 3]) << 24;
}
// Recompute the checksums after a deliberate edit, so the edit itself is what gets tested.
void reseal(std::vector<uint8_t>& f, bool payload_too = true) {
  if (payload_too) {
    put32(f, kOffPayloadCrc,
          core::crc32c(std::span<const uint8_t>(f.data() + kHeaderSize, f.size() - kHeaderSize)));
  }
  put32(f, kOffHeaderCrc, core::crc32c(std::span<const uint8_t>(f.data(), kOffHeaderCrc)));
}

Uuid test_uuid() {
  Uuid u{};
  for (size_t i = 0; i < u.size(); ++i) u[i] = uint8_t(0xA0 + i);
  return u;
}

FrameHeader header(FrameType t) {
  FrameHeader h;
  h.type = t;
  h.volume = test_uuid();
  h.copy_id = 3;
  h.generation = 0x0102030405060708ull;
  h.sequence = 0xFFFFFFFFFFFFFFF0ull;
  h.lba = 123456789;
  return h;
}

std::vector<uint8_t> compressible(size_t n) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = uint8_t("tandem block data "[i % 18]);
  return v;
}
std::vector<uint8_t> random_bytes(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<uint8_t> v(n);
  for (auto& b : v) b = uint8_t(rng());
  return v;
}

std::vector<uint8_t> encode_ok(const FrameHeader& h, std::span<const uint8_t> payload,
                               bool compress) {
  std::vector<uint8_t> out;
  auto r = encode(h, payload, compress, out);
  EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.error().message);
  if (r.ok()) {
    EXPECT_EQ(*r, out.size());
  }
  return out;
}

// Feeds all of `bytes`; returns the frames, or the first error code.
struct Decoded {
  std::vector<Frame> frames;
  bool failed = false;
  WireErrc code = WireErrc::kFailed;
};
Decoded decode_all(std::span<const uint8_t> bytes, FrameDecoder& dec) {
  Decoded d;
  while (!bytes.empty()) {
    auto step = dec.feed(bytes);
    if (!step) {
      d.failed = true;
      d.code = step.error().code;
      return d;
    }
    EXPECT_LE(step->consumed, bytes.size());
    bytes = bytes.subspan(step->consumed);
    if (step->status == FrameDecoder::Status::kFrame)
      d.frames.push_back(dec.take());
    else
      EXPECT_TRUE(bytes.empty());  // need-more only when everything was consumed
  }
  return d;
}
Decoded decode_all(std::span<const uint8_t> bytes) {
  FrameDecoder dec;
  return decode_all(bytes, dec);
}

struct Case {
  FrameHeader h;
  std::vector<uint8_t> payload;
};

std::vector<Case> every_type() {
  std::vector<Case> c;
  Hello hello{"node-7f3c", "127.0.0.2:5703", kFeatureLz4, kMaxPayload};
  c.push_back({header(FrameType::kHello), *encode_hello(hello)});
  auto w = header(FrameType::kWrite);
  w.flags = kFlagFua;
  c.push_back({w, compressible(4096)});
  auto u = header(FrameType::kUnmap);
  u.count = 2048;
  c.push_back({u, {}});
  auto ws = header(FrameType::kWriteSame);
  ws.count = 99;
  ws.flags = kFlagUnmap | kFlagFua;
  c.push_back({ws, std::vector<uint8_t>(512, 0)});
  c.push_back({header(FrameType::kFlush), {}});
  auto ack = header(FrameType::kAck);
  ack.status = 0;
  c.push_back({ack, {}});
  auto nack = header(FrameType::kNack);
  nack.status = uint32_t(NackReason::kStaleGeneration);
  const std::string why = "generation 7 < 9";
  c.push_back({nack, std::vector<uint8_t>(why.begin(), why.end())});
  const std::vector<uint64_t> wanted = {1, 5, 1u << 30};
  c.push_back({header(FrameType::kSyncRequest), encode_region_list(wanted)});
  auto hr = header(FrameType::kSyncHashRequest);
  hr.count = 42;
  hr.status = 4096;
  c.push_back({hr, {}});
  auto hs = header(FrameType::kSyncHashes);
  hs.count = 42;
  hs.status = 4096;
  c.push_back({hs, random_bytes(256 * kBlockHashSize, 2)});
  auto sd = header(FrameType::kSyncDelta);
  sd.count = 42;
  sd.status = 4096;
  sd.flags = kFlagLast;
  c.push_back({sd, random_bytes((1 << 20) + 32, 1)});
  c.push_back({header(FrameType::kSyncDone), {}});
  std::vector<RegionEntry> entries;
  for (uint64_t i = 0; i < 1000; ++i) entries.push_back({i * 3, 1000 + i});
  auto rs = header(FrameType::kRegionSummary);
  rs.count = entries.size();
  rs.flags = kFlagLast;
  c.push_back({rs, encode_region_summary(entries)});
  c.push_back({header(FrameType::kHeartbeat), {}});
  auto req = header(FrameType::kIoRequest);
  req.status = uint32_t(IoOp::kWrite);
  req.count = 8;
  req.flags = kFlagFua;
  c.push_back({req, compressible(4096)});
  auto rep = header(FrameType::kIoReply);
  rep.status = uint32_t(core::IoStatus::kOk);
  rep.count = 8;
  c.push_back({rep, random_bytes(4096, 9)});
  return c;
}

TEST(Frame, RoundTripEveryTypeWithAndWithoutLz4) {
  for (bool compress : {false, true}) {
    for (const Case& c : every_type()) {
      SCOPED_TRACE(std::string(to_string(c.h.type)) + (compress ? " lz4" : " raw"));
      auto bytes = encode_ok(c.h, c.payload, compress);
      Decoded d = decode_all(bytes);
      ASSERT_FALSE(d.failed) << to_string(d.code);
      ASSERT_EQ(d.frames.size(), 1u);
      EXPECT_EQ(d.frames[0].header, c.h);
      EXPECT_EQ(d.frames[0].payload, c.payload);
    }
  }
}

TEST(Frame, AllTypesHaveNames) {
  for (uint8_t t = 1; t <= kMaxFrameType; ++t) {
    EXPECT_STRNE(to_string(FrameType(t)), "UNKNOWN");
  }
  EXPECT_STREQ(to_string(NackReason::kOutOfOrder), "out of order");
  EXPECT_STREQ(to_string(WireErrc::kPayloadCrc), "payload crc mismatch");
}

TEST(Frame, CompressibleDataIsCompressed) {
  auto data = compressible(64 * 1024);
  auto bytes = encode_ok(header(FrameType::kWrite), data, true);
  EXPECT_LT(bytes.size(), kHeaderSize + data.size() / 4);
  EXPECT_TRUE(bytes[kOffFlags] & kFlagCompressed);
  EXPECT_EQ(get32(bytes, kOffRawLen), data.size());
  auto d = decode_all(bytes);
  ASSERT_EQ(d.frames.size(), 1u);
  EXPECT_EQ(d.frames[0].payload, data);
  EXPECT_EQ(d.frames[0].header.flags & kFlagCompressed, 0);  // codec-internal flag
}

TEST(Frame, IncompressibleDataIsSentRaw) {
  auto data = random_bytes(64 * 1024, 7);
  auto bytes = encode_ok(header(FrameType::kWrite), data, true);
  EXPECT_EQ(bytes.size(), kHeaderSize + data.size());
  EXPECT_FALSE(bytes[kOffFlags] & kFlagCompressed);
  auto d = decode_all(bytes);
  ASSERT_EQ(d.frames.size(), 1u);
  EXPECT_EQ(d.frames[0].payload, data);
}

// Payloads of 64 KiB and more are probed with eight 4 KiB samples before a full lz4 attempt.
TEST(Frame, LargePayloadsAreProbedBeforeCompressing) {
  constexpr size_t kMiB = 1u << 20;
  auto roundtrip = [](const std::vector<uint8_t>& data) {
    auto bytes = encode_ok(header(FrameType::kWrite), data, true);
    auto d = decode_all(bytes);
    EXPECT_EQ(d.frames.size(), 1u);
    if (!d.frames.empty()) {
      EXPECT_EQ(d.frames[0].payload, data);
    }
    return bytes;
  };
  // Incompressible: raw.
  auto random = random_bytes(kMiB, 11);
  EXPECT_FALSE(roundtrip(random)[kOffFlags] & kFlagCompressed);
  // 2:1 as the bench makes it (random and repeated 32-byte runs): compressed, about halved.
  auto half = random_bytes(kMiB, 12);
  for (size_t i = 32; i < half.size(); i += 64) std::fill_n(half.begin() + long(i), 32, 0x5a);
  auto bytes = roundtrip(half);
  EXPECT_TRUE(bytes[kOffFlags] & kFlagCompressed);
  EXPECT_LT(bytes.size(), kHeaderSize + half.size() * 7 / 10);
  // Compressible in its second half only: the samples there make the whole payload compress.
  auto mixed = random_bytes(kMiB, 13);
  auto text = compressible(kMiB / 2);
  std::copy(text.begin(), text.end(), mixed.begin() + long(kMiB / 2));
  bytes = roundtrip(mixed);
  EXPECT_TRUE(bytes[kOffFlags] & kFlagCompressed);
  EXPECT_LT(bytes.size(), kHeaderSize + mixed.size() * 6 / 10);
  // The trade-off: a compressible island no sample touches (64-80 KiB lies between the first
  // two samples of a 1 MiB payload) is sent raw.
  auto island = random_bytes(kMiB, 14);
  std::fill_n(island.begin() + (64 << 10), 16 << 10, 0);
  EXPECT_FALSE(roundtrip(island)[kOffFlags] & kFlagCompressed);
  // Below 64 KiB there is no probe: the same island in a 60 KiB payload is compressed.
  std::vector<uint8_t> small(island.begin() + (40 << 10), island.begin() + (100 << 10));
  EXPECT_TRUE(roundtrip(small)[kOffFlags] & kFlagCompressed);
}

TEST(Frame, ByteSpanOverloadAndSizeBound) {
  std::vector<std::byte> data(4096, std::byte{0x42});
  std::vector<uint8_t> out;
  auto r = encode_blocks(header(FrameType::kWrite), data, true, out);
  ASSERT_TRUE(r.ok());
  EXPECT_LE(*r, max_frame_size(data.size()));
  auto raw = random_bytes(4096, 5);
  std::vector<uint8_t> out2;
  EXPECT_EQ(*encode(header(FrameType::kWrite), raw, true, out2), max_frame_size(raw.size()));
  auto d = decode_all(out);
  ASSERT_EQ(d.frames.size(), 1u);
  EXPECT_EQ(d.frames[0].payload, std::vector<uint8_t>(4096, 0x42));
}

// A payload encoded once and sent in several frames (one per replica) must be, header plus
// shared bytes, exactly what encode() makes for each; the raw payload is shared, not copied.
TEST(Frame, SharedPayloadFramesEqualEncode) {
  for (bool compress : {false, true}) {
    for (const auto& data : {compressible(64 * 1024), random_bytes(4096, 9),
                             std::vector<uint8_t>(kMinCompressSize - 1, 0)}) {
      SCOPED_TRACE(std::to_string(data.size()) + (compress ? " lz4" : " raw"));
      auto shared = std::make_shared<const std::vector<uint8_t>>(data);
      EncodedPayload ep = encode_payload(shared, compress);
      EXPECT_EQ(ep.raw_len, data.size());
      if (!ep.compressed) {
        EXPECT_EQ(ep.wire.get(), shared.get());
      }
      for (uint32_t copy : {1u, 2u, 5u}) {
        FrameHeader h = header(FrameType::kWrite);
        h.copy_id = copy;
        std::vector<uint8_t> head;
        ASSERT_TRUE(encode_head(h, ep, head).ok());
        ASSERT_EQ(head.size(), kHeaderSize);
        std::vector<uint8_t> whole = head;
        whole.insert(whole.end(), ep.wire->begin(), ep.wire->end());
        EXPECT_EQ(whole, encode_ok(h, data, compress));
        auto d = decode_all(whole);
        ASSERT_EQ(d.frames.size(), 1u);
        EXPECT_EQ(d.frames[0].header, h);
        EXPECT_EQ(d.frames[0].payload, data);
      }
    }
  }
  // What encode() refuses, encode_head() refuses, leaving `out` alone.
  auto ep = encode_payload(std::make_shared<const std::vector<uint8_t>>(4096, 1), false);
  std::vector<uint8_t> out = {7};
  EXPECT_FALSE(encode_head(header(FrameType::kUnmap), ep, out).ok());
  EXPECT_FALSE(encode_head(header(FrameType::kWrite), ep, out, 1024).ok());
  ep.raw_len = 4097;  // lengths that disagree
  EXPECT_FALSE(encode_head(header(FrameType::kWrite), ep, out).ok());
  EXPECT_EQ(out, std::vector<uint8_t>{7});
}

TEST(Frame, TinyPayloadIsNotCompressed) {
  std::vector<uint8_t> data(kMinCompressSize - 1, 0);
  auto bytes = encode_ok(header(FrameType::kWrite), data, true);
  EXPECT_FALSE(bytes[kOffFlags] & kFlagCompressed);
}

TEST(Frame, MaxPayloadRoundTripsAndOneMoreIsRefused) {
  auto data = compressible(kMaxPayload);
  auto bytes = encode_ok(header(FrameType::kWrite), data, true);
  auto d = decode_all(bytes);
  ASSERT_EQ(d.frames.size(), 1u);
  EXPECT_EQ(d.frames[0].payload.size(), kMaxPayload);
  data.push_back(0);
  std::vector<uint8_t> out = {1, 2, 3};
  auto r = encode(header(FrameType::kWrite), data, true, out);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, WireErrc::kTooLarge);
  EXPECT_EQ(out.size(), 3u);  // untouched on error
}

TEST(Frame, EncoderAppendsAndRefusesWhatTheDecoderWould) {
  std::vector<uint8_t> out;
  ASSERT_TRUE(encode(header(FrameType::kHeartbeat), {}, false, out).ok());
  const size_t first = out.size();
  ASSERT_TRUE(encode(header(FrameType::kFlush), {}, false, out).ok());
  EXPECT_EQ(out.size(), 2 * first);
  auto d = decode_all(out);
  ASSERT_EQ(d.frames.size(), 2u);
  EXPECT_EQ(d.frames[1].header.type, FrameType::kFlush);

  std::vector<uint8_t> one(1, 0);
  std::vector<uint8_t> sink;
  EXPECT_EQ(encode(header(FrameType::kFlush), one, false, sink).error().code, WireErrc::kBadLength);
  EXPECT_EQ(encode(header(FrameType::kWrite), {}, false, sink).error().code, WireErrc::kBadLength);
  EXPECT_EQ(encode(header(FrameType::kUnmap), {}, false, sink).error().code,
            WireErrc::kBadLength);  // count 0
  auto bad_flags = header(FrameType::kAck);
  bad_flags.flags = kFlagFua;
  EXPECT_EQ(encode(bad_flags, {}, false, sink).error().code, WireErrc::kBadFlags);
  auto bad_type = header(FrameType::kAck);
  bad_type.type = FrameType(0);
  EXPECT_EQ(encode(bad_type, {}, false, sink).error().code, WireErrc::kBadType);
  auto summary = header(FrameType::kRegionSummary);
  summary.count = 2;
  std::vector<uint8_t> one_entry(kRegionEntrySize, 0);
  EXPECT_EQ(encode(summary, one_entry, false, sink).error().code, WireErrc::kBadLength);
  std::vector<uint8_t> odd(12, 0);
  EXPECT_EQ(encode(header(FrameType::kSyncRequest), odd, false, sink).error().code,
            WireErrc::kBadLength);
  EXPECT_EQ(
      encode(header(FrameType::kNack), std::vector<uint8_t>(2000, 'x'), false, sink).error().code,
      WireErrc::kTooLarge);
  EXPECT_TRUE(sink.empty());
  // A caller-set compressed flag is ignored, not trusted.
  auto sneaky = header(FrameType::kHeartbeat);
  sneaky.flags = kFlagCompressed;
  ASSERT_TRUE(encode(sneaky, {}, false, sink).ok());
  EXPECT_FALSE(sink[kOffFlags] & kFlagCompressed);
}

TEST(Frame, TruncatedAtEveryByteNeedsMore) {
  for (bool compress : {false, true}) {
    auto h = header(FrameType::kWrite);
    auto bytes = encode_ok(h, compressible(3000), compress);
    for (size_t cut = 0; cut < bytes.size(); ++cut) {
      FrameDecoder dec;
      auto step = dec.feed(std::span<const uint8_t>(bytes).first(cut));
      ASSERT_TRUE(step.ok()) << cut;
      ASSERT_EQ(step->status, FrameDecoder::Status::kNeedMore) << cut;
      ASSERT_EQ(step->consumed, cut);
      // The rest completes it.
      auto rest = dec.feed(std::span<const uint8_t>(bytes).subspan(cut));
      ASSERT_TRUE(rest.ok()) << cut;
      ASSERT_EQ(rest->status, FrameDecoder::Status::kFrame) << cut;
      ASSERT_EQ(rest->consumed, bytes.size() - cut);
      ASSERT_EQ(dec.take().payload, compressible(3000));
    }
  }
}

TEST(Frame, ByteAtATimeStreamOfManyFrames) {
  std::vector<uint8_t> stream;
  auto cases = every_type();
  for (const Case& c : cases) {
    ASSERT_TRUE(encode(c.h, c.payload, true, stream).ok());
  }
  FrameDecoder dec;
  std::vector<Frame> got;
  std::mt19937_64 rng(99);
  size_t pos = 0;
  while (pos < stream.size()) {
    size_t chunk = std::min<size_t>(stream.size() - pos, 1 + rng() % 5000);
    auto in = std::span<const uint8_t>(stream).subspan(pos, chunk);
    while (!in.empty()) {
      auto step = dec.feed(in);
      ASSERT_TRUE(step.ok());
      in = in.subspan(step->consumed);
      pos += step->consumed;
      if (step->status == FrameDecoder::Status::kFrame) got.push_back(dec.take());
    }
  }
  ASSERT_EQ(got.size(), cases.size());
  for (size_t i = 0; i < cases.size(); ++i) {
    EXPECT_EQ(got[i].header, cases[i].h);
    EXPECT_EQ(got[i].payload, cases[i].payload);
  }
}

TEST(Frame, FeedStopsAtFrameBoundaryAndWaitsForTake) {
  std::vector<uint8_t> stream;
  ASSERT_TRUE(encode(header(FrameType::kHeartbeat), {}, false, stream).ok());
  ASSERT_TRUE(encode(header(FrameType::kFlush), {}, false, stream).ok());
  FrameDecoder dec;
  auto s1 = dec.feed(stream);
  ASSERT_TRUE(s1.ok());
  EXPECT_EQ(s1->consumed, kHeaderSize);
  EXPECT_EQ(s1->status, FrameDecoder::Status::kFrame);
  // Feeding again before take() consumes nothing and reports the pending frame.
  auto again = dec.feed(std::span<const uint8_t>(stream).subspan(kHeaderSize));
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->consumed, 0u);
  EXPECT_EQ(dec.take().header.type, FrameType::kHeartbeat);
  auto s2 = dec.feed(std::span<const uint8_t>(stream).subspan(kHeaderSize));
  ASSERT_TRUE(s2.ok());
  EXPECT_EQ(dec.take().header.type, FrameType::kFlush);
}

TEST(Frame, CorruptingAnyHeaderByteIsAnError) {
  auto good = encode_ok(header(FrameType::kWrite), compressible(1000), true);
  for (size_t i = 0; i < kHeaderSize; ++i) {
    for (uint8_t mask : {0x01, 0x80, 0xff}) {
      auto bad = good;
      bad[i] ^= mask;
      auto d = decode_all(bad);
      ASSERT_TRUE(d.failed) << "byte " << i;
      ASSERT_TRUE(d.frames.empty());
      if (i < 4) {
        EXPECT_EQ(d.code, WireErrc::kBadMagic);
      } else if (i == 4) {
        EXPECT_EQ(d.code, WireErrc::kBadVersion);
      } else {
        EXPECT_EQ(d.code, WireErrc::kHeaderCrc) << "byte " << i;
      }
    }
  }
}

TEST(Frame, CorruptPayloadIsAnErrorAndNothingIsReturned) {
  for (bool compress : {false, true}) {
    auto good = encode_ok(header(FrameType::kWrite), compressible(5000), compress);
    for (size_t i = kHeaderSize; i < good.size(); i += 7) {
      auto bad = good;
      bad[i] ^= 0x10;
      auto d = decode_all(bad);
      ASSERT_TRUE(d.failed);
      EXPECT_EQ(d.code, WireErrc::kPayloadCrc);
      EXPECT_TRUE(d.frames.empty());
    }
  }
}

TEST(Frame, FailedDecoderStaysFailedUntilReset) {
  auto good = encode_ok(header(FrameType::kHeartbeat), {}, false);
  auto bad = good;
  bad[0] = 'X';
  FrameDecoder dec;
  EXPECT_FALSE(dec.feed(bad).ok());
  EXPECT_TRUE(dec.failed());
  auto again = dec.feed(good);
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.error().code, WireErrc::kFailed);
  dec.reset();
  EXPECT_FALSE(dec.failed());
  auto d = decode_all(good, dec);
  EXPECT_FALSE(d.failed);
  EXPECT_EQ(d.frames.size(), 1u);
}

// Hostile lengths are refused from the header alone, before the payload arrives.
TEST(Frame, OversizeLengthsRefusedBeforeAllocation) {
  auto good = encode_ok(header(FrameType::kWrite), compressible(100), false);
  struct Edit {
    uint32_t raw, wire;
    WireErrc want;
  };
  for (Edit e : {Edit{kMaxPayload + 1, kMaxPayload + 1, WireErrc::kTooLarge},
                 Edit{0xFFFFFFFFu, 0xFFFFFFFFu, WireErrc::kTooLarge},
                 Edit{100, 0xFFFFFFFFu, WireErrc::kBadLength}, Edit{100, 101, WireErrc::kBadLength},
                 Edit{100, 99, WireErrc::kBadLength}}) {
    auto bad = good;
    put32(bad, kOffRawLen, e.raw);
    put32(bad, kOffWireLen, e.wire);
    reseal(bad, false);
    FrameDecoder dec;
    auto step = dec.feed(std::span<const uint8_t>(bad).first(kHeaderSize));
    ASSERT_FALSE(step.ok()) << e.raw << "/" << e.wire;
    EXPECT_EQ(step.error().code, e.want);
    EXPECT_EQ(dec.buffered(), 0u);
  }
  // A smaller negotiated limit applies too.
  FrameDecoder small(64);
  auto step = small.feed(good);
  ASSERT_FALSE(step.ok());
  EXPECT_EQ(step.error().code, WireErrc::kTooLarge);
}

TEST(Frame, CompressedLengthRules) {
  auto good = encode_ok(header(FrameType::kWrite), compressible(4096), true);
  ASSERT_TRUE(good[kOffFlags] & kFlagCompressed);
  // Compressed wire length must be strictly smaller than raw.
  auto bad = good;
  put32(bad, kOffRawLen, get32(bad, kOffWireLen));
  reseal(bad);
  EXPECT_EQ(decode_all(bad).code, WireErrc::kBadLength);
  // Raw data claimed as compressed.
  auto raw = encode_ok(header(FrameType::kWrite), random_bytes(200, 3), false);
  raw[kOffFlags] |= kFlagCompressed;
  reseal(raw);
  EXPECT_EQ(decode_all(raw).code, WireErrc::kBadLength);
}

// The raw length lies: lz4 data would inflate further (bomb), or not far enough.
TEST(Frame, DecompressionBombIsRefused) {
  auto data = std::vector<uint8_t>(1 << 20, 0);  // 1 MiB of zeros -> a few KiB of lz4
  auto good = encode_ok(header(FrameType::kWrite), data, true);
  ASSERT_TRUE(good[kOffFlags] & kFlagCompressed);
  const uint32_t wire = get32(good, kOffWireLen);
  for (uint32_t claimed : {uint32_t(wire + 1), uint32_t(wire * 2), uint32_t((1 << 20) - 1),
                           uint32_t((1 << 20) + 1), kMaxPayload}) {
    auto bad = good;
    put32(bad, kOffRawLen, claimed);
    reseal(bad);
    auto d = decode_all(bad);
    ASSERT_TRUE(d.failed) << claimed;
    EXPECT_EQ(d.code, WireErrc::kDecompress) << claimed;
  }
  // Garbage that passes the CRC but is not lz4.
  auto garbage = good;
  for (size_t i = kHeaderSize; i < garbage.size(); ++i) garbage[i] = uint8_t(i * 13);
  reseal(garbage);
  EXPECT_EQ(decode_all(garbage).code, WireErrc::kDecompress);
}

TEST(Frame, TypeRulesEnforcedOnDecode) {
  auto good = encode_ok(header(FrameType::kHeartbeat), {}, false);
  {
    auto bad = good;
    bad[5] = 0;  // type 0
    reseal(bad);
    EXPECT_EQ(decode_all(bad).code, WireErrc::kBadType);
    bad[5] = kMaxFrameType + 1;
    reseal(bad);
    EXPECT_EQ(decode_all(bad).code, WireErrc::kBadType);
    bad[5] = uint8_t(FrameType::kRetiredSyncData);  // retired: never accepted again
    reseal(bad);
    EXPECT_EQ(decode_all(bad).code, WireErrc::kBadType);
  }
  {
    auto bad = good;
    bad[kOffFlags + 1] = 0x80;  // unknown flag
    reseal(bad);
    EXPECT_EQ(decode_all(bad).code, WireErrc::kBadFlags);
  }
  {
    // A heartbeat with a payload.
    std::vector<uint8_t> payload(8, 1);
    auto bad = encode_ok(header(FrameType::kSyncRequest), payload, false);
    bad[5] = uint8_t(FrameType::kHeartbeat);
    reseal(bad);
    EXPECT_EQ(decode_all(bad).code, WireErrc::kBadLength);
  }
  {
    // Summary whose count field disagrees with its payload.
    std::vector<RegionEntry> e = {{1, 2}, {3, 4}};
    auto h = header(FrameType::kRegionSummary);
    h.count = 2;
    auto bad = encode_ok(h, encode_region_summary(e), false);
    bad[56] = 3;
    reseal(bad);
    EXPECT_EQ(decode_all(bad).code, WireErrc::kBadLength);
  }
}

TEST(Frame, HelloPayload) {
  Hello h{"a", "", 0, 4096};
  auto enc = encode_hello(h);
  ASSERT_TRUE(enc.ok());
  auto dec = decode_hello(*enc);
  ASSERT_TRUE(dec.ok());
  EXPECT_EQ(*dec, h);
  EXPECT_FALSE(encode_hello(Hello{"", "x"}).ok());
  EXPECT_FALSE(encode_hello(Hello{std::string(256, 'n'), ""}).ok());
  // Every truncation and an extra byte are refused.
  auto full = *encode_hello(Hello{"node-1", "10.0.0.1:5703"});
  for (size_t cut = 0; cut < full.size(); ++cut) {
    EXPECT_FALSE(decode_hello(std::span<const uint8_t>(full).first(cut)).ok()) << cut;
  }
  auto longer = full;
  longer.push_back(0);
  EXPECT_FALSE(decode_hello(longer).ok());
  auto zero_id = full;
  zero_id[8] = 0;
  zero_id[9] = 0;
  EXPECT_FALSE(decode_hello(zero_id).ok());
}

TEST(Frame, RegionPayloads) {
  std::vector<RegionEntry> e = {{0, 0}, {1, ~0ull}, {~0ull, 5}};
  auto dec = decode_region_summary(encode_region_summary(e));
  ASSERT_TRUE(dec.ok());
  EXPECT_EQ(*dec, e);
  EXPECT_FALSE(decode_region_summary(std::vector<uint8_t>(17)).ok());
  std::vector<uint64_t> regions = {0, 7, ~0ull};
  auto list = decode_region_list(encode_region_list(regions));
  ASSERT_TRUE(list.ok());
  EXPECT_EQ(*list, regions);
  EXPECT_FALSE(decode_region_list(std::vector<uint8_t>(9)).ok());
  EXPECT_TRUE(decode_region_list({}).ok());
}

// Hostile input never crashes: pure random bytes, and valid streams with random damage.
TEST(Frame, SeededRandomBytesNeverCrash) {
  for (uint64_t seed = 1; seed <= 300; ++seed) {
    std::mt19937_64 rng(seed);
    auto junk = random_bytes(1 + rng() % 2000, seed);
    if (seed % 3 == 0) {  // a valid magic and version make the header path run further
      junk.resize(std::max<size_t>(junk.size(), kHeaderSize));
      put32(junk, 0, kMagic);
      junk[4] = kVersion;
      if (seed % 2 == 0) reseal(junk, false);
    }
    FrameDecoder dec;
    auto d = decode_all(junk, dec);
    EXPECT_LE(dec.buffered(), kHeaderSize + junk.size()) << "seed " << seed;
  }
}

TEST(Frame, SeededDamageToValidStreams) {
  std::vector<uint8_t> stream;
  auto cases = every_type();
  for (const Case& c : cases) ASSERT_TRUE(encode(c.h, c.payload, true, stream).ok());
  for (uint64_t seed = 1; seed <= 200; ++seed) {
    std::mt19937_64 rng(seed);
    auto bad = stream;
    const int flips = 1 + int(rng() % 4);
    for (int i = 0; i < flips; ++i) bad[rng() % bad.size()] ^= uint8_t(1 + rng() % 255);
    if (rng() % 2) bad.resize(rng() % bad.size());
    auto d = decode_all(bad);
    // Whatever comes out before the damage is exactly what was sent.
    ASSERT_LE(d.frames.size(), cases.size());
    for (size_t i = 0; i < d.frames.size(); ++i) {
      ASSERT_EQ(d.frames[i].header, cases[i].h) << "seed " << seed;
      ASSERT_EQ(d.frames[i].payload, cases[i].payload) << "seed " << seed;
    }
  }
}

TEST(Frame, UuidTextRoundTrip) {
  Uuid id{};
  ASSERT_TRUE(parse_uuid("0123abcd-4567-89ef-ABCD-0123456789ab", id));
  EXPECT_EQ(id[0], 0x01);
  EXPECT_EQ(id[15], 0xab);
  EXPECT_EQ(format_uuid(id), "0123abcd-4567-89ef-abcd-0123456789ab");
  EXPECT_FALSE(parse_uuid("0123abcd-4567-89ef-abcd-0123456789a", id));
  EXPECT_FALSE(parse_uuid("0123abcd_4567-89ef-abcd-0123456789ab", id));
  EXPECT_FALSE(parse_uuid("0123abcd-4567-89ef-abcd-0123456789ag", id));
}

}  // namespace
}  // namespace tandem::backend::wire

namespace tandem::backend::wire {
namespace {

// IO_REQUEST / IO_REPLY: payload optional, FUA only on requests, lengths bounded like WRITE.
TEST(Frame, IoRequestAndReplyFraming) {
  auto read = header(FrameType::kIoRequest);
  read.status = uint32_t(IoOp::kRead);
  read.count = 16;
  auto d = decode_all(encode_ok(read, {}, true));
  ASSERT_FALSE(d.failed);
  ASSERT_EQ(d.frames.size(), 1u);
  EXPECT_EQ(d.frames[0].header, read);
  EXPECT_TRUE(d.frames[0].payload.empty());

  // The codec does not judge the opcode (the master answers an unknown one with an error).
  auto odd = read;
  odd.status = 999;
  EXPECT_FALSE(decode_all(encode_ok(odd, {}, false)).failed);

  // A reply may not carry FUA; unknown flags are refused on both.
  auto rep = header(FrameType::kIoReply);
  rep.flags = kFlagFua;
  std::vector<uint8_t> out;
  EXPECT_FALSE(encode(rep, {}, false, out).ok());
  auto bad = encode_ok(read, {}, false);
  bad[kOffFlags] = uint8_t(kFlagLast);
  reseal(bad);
  EXPECT_EQ(decode_all(bad).code, WireErrc::kBadFlags);
  auto reply_ok = encode_ok(header(FrameType::kIoReply), {}, false);
  reply_ok[kOffFlags] = uint8_t(kFlagFua);
  reseal(reply_ok);
  EXPECT_EQ(decode_all(reply_ok).code, WireErrc::kBadFlags);

  // RETRY belongs to replies only.
  auto retry = header(FrameType::kIoReply);
  retry.flags = kFlagRetry;
  retry.status = uint32_t(core::IoStatus::kNotReady);
  auto rd = decode_all(encode_ok(retry, {}, false));
  ASSERT_EQ(rd.frames.size(), 1u);
  EXPECT_EQ(rd.frames[0].header.flags, kFlagRetry);
  auto req_retry = read;
  req_retry.flags = kFlagRetry;
  EXPECT_FALSE(encode(req_retry, {}, false, out).ok());

  // Hostile lengths on either type are refused from the header alone.
  for (FrameType t : {FrameType::kIoRequest, FrameType::kIoReply}) {
    auto good = encode_ok(header(t), compressible(100), false);
    for (uint32_t raw : {kMaxPayload + 1, 0xFFFFFFFFu}) {
      auto big = good;
      put32(big, kOffRawLen, raw);
      put32(big, kOffWireLen, raw);
      reseal(big, false);
      FrameDecoder dec;
      auto step = dec.feed(std::span<const uint8_t>(big).first(kHeaderSize));
      ASSERT_FALSE(step.ok());
      EXPECT_EQ(step.error().code, WireErrc::kTooLarge);
      EXPECT_EQ(dec.buffered(), 0u);
    }
    auto lie = good;
    put32(lie, kOffWireLen, 99);
    reseal(lie, false);
    EXPECT_EQ(decode_all(lie).code, WireErrc::kBadLength);
  }
  for (uint32_t op = 1; op <= kMaxIoOp; ++op) EXPECT_STRNE(to_string(IoOp(op)), "UNKNOWN");
  EXPECT_STREQ(to_string(FrameType::kIoRequest), "IO_REQUEST");
  EXPECT_STREQ(to_string(FrameType::kIoReply), "IO_REPLY");
}

TEST(Frame, ExtentPayloads) {
  std::vector<core::LbaExtent> e = {{0, 8, true}, {8, 1000, false}, {~0ull - 5, 5, true}};
  auto enc = encode_extents(e);
  ASSERT_TRUE(enc.ok());
  EXPECT_EQ(enc->size(), e.size() * kExtentSize);
  auto dec = decode_extents(*enc);
  ASSERT_TRUE(dec.ok());
  ASSERT_EQ(dec->size(), e.size());
  for (size_t i = 0; i < e.size(); ++i) {
    EXPECT_EQ((*dec)[i].lba, e[i].lba);
    EXPECT_EQ((*dec)[i].blocks, e[i].blocks);
    EXPECT_EQ((*dec)[i].mapped, e[i].mapped);
  }
  EXPECT_TRUE(decode_extents({}).ok());
  // Encoder refuses what the decoder would.
  EXPECT_FALSE(encode_extents(std::vector<core::LbaExtent>{{0, 0, true}}).ok());
  EXPECT_FALSE(encode_extents(std::vector<core::LbaExtent>{{~0ull, 2, true}}).ok());
  EXPECT_FALSE(encode_extents(std::vector<core::LbaExtent>(kMaxExtents + 1, {0, 1, true})).ok());
  // Hostile payloads.
  auto good = *enc;
  EXPECT_FALSE(decode_extents(std::span<const uint8_t>(good).first(kExtentSize - 1)).ok());
  EXPECT_FALSE(decode_extents(std::vector<uint8_t>((kMaxExtents + 1) * kExtentSize, 0)).ok());
  auto flags = good;
  flags[16] = 2;  // unknown flag bit
  EXPECT_FALSE(decode_extents(flags).ok());
  auto reserved = good;
  reserved[20] = 1;
  EXPECT_FALSE(decode_extents(reserved).ok());
  auto empty = good;
  std::fill(empty.begin() + 8, empty.begin() + 16, 0);  // blocks = 0
  EXPECT_FALSE(decode_extents(empty).ok());
  auto wrap = good;
  std::fill(wrap.begin(), wrap.begin() + 8, 0xFF);  // lba = 2^64-1, blocks = 8
  EXPECT_FALSE(decode_extents(wrap).ok());
  for (uint64_t seed = 0; seed < 200; ++seed) {
    auto junk = random_bytes(seed * 3, seed);
    (void)decode_extents(junk);  // must not crash
  }
}

}  // namespace
}  // namespace tandem::backend::wire
