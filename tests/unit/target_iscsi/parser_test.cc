// PduParser: partial feeds, limits checked before allocation, digests, random input.
#include <gtest/gtest.h>

#include <random>

#include "target/iscsi/pdu_parser.h"

namespace tandem::target::iscsi {
namespace {

std::vector<uint8_t> sample_wire(size_t data_len, DigestOptions d = {}) {
  NopOut p;
  p.itt = 1;
  p.data.assign(data_len, 0x5a);
  return encode(Pdu{p}, d);
}

TEST(Parser, NeedMoreOnEmpty) {
  PduParser p;
  auto r = p.next();
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(r->has_value());
  EXPECT_EQ(p.bytes_wanted(), 48u);
}

TEST(Parser, ByteByByte) {
  for (DigestOptions d : {DigestOptions{}, DigestOptions{true, true}}) {
    PduParser p({8192, d.header, d.data});
    auto wire = sample_wire(13, d);
    for (size_t i = 0; i < wire.size(); ++i) {
      p.feed(std::span<const uint8_t>(&wire[i], 1));
      auto r = p.next();
      ASSERT_TRUE(r.ok()) << i;
      if (i + 1 < wire.size()) {
        EXPECT_FALSE(r->has_value()) << i;
        // Before the BHS is complete the hint only covers the BHS.
        EXPECT_EQ(p.bytes_wanted(), i < 47 ? 47 - i : wire.size() - i - 1);
      } else {
        ASSERT_TRUE(r->has_value());
        EXPECT_EQ((*r)->data.size(), 13u);
        EXPECT_EQ((*r)->itt(), 1u);
      }
    }
    EXPECT_EQ(p.buffered(), 0u);
  }
}

TEST(Parser, SeveralPdusInOneFeed) {
  PduParser p;
  auto a = sample_wire(0);
  auto b = sample_wire(5);
  a.insert(a.end(), b.begin(), b.end());
  a.insert(a.end(), b.begin(), b.begin() + 10);
  p.feed(a);
  auto r1 = p.next();
  ASSERT_TRUE(r1.ok() && r1->has_value());
  EXPECT_TRUE((*r1)->data.empty());
  auto r2 = p.next();
  ASSERT_TRUE(r2.ok() && r2->has_value());
  EXPECT_EQ((*r2)->data.size(), 5u);
  auto r3 = p.next();
  ASSERT_TRUE(r3.ok());
  EXPECT_FALSE(r3->has_value());
  EXPECT_EQ(p.buffered(), 10u);
}

TEST(Parser, OversizeRejectedFromHeaderAlone) {
  PduParser p({8192});
  auto wire = sample_wire(8193);
  p.feed(std::span<const uint8_t>(wire).first(48));  // only the BHS has arrived
  auto r = p.next();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, PduErrorCode::kDataSegmentTooLong);
  // Sticky: the stream has lost framing.
  auto again = p.next();
  EXPECT_FALSE(again.ok());
}

TEST(Parser, MaxFieldValueRejected) {
  PduParser p({262144});
  Bhs b{};
  b[5] = b[6] = b[7] = 0xff;
  p.feed(b);
  auto r = p.next();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, PduErrorCode::kDataSegmentTooLong);
}

TEST(Parser, ExactLimitAccepted) {
  PduParser p({8192});
  p.feed(sample_wire(8192));
  auto r = p.next();
  ASSERT_TRUE(r.ok() && r->has_value());
}

TEST(Parser, HeaderDigestErrorIsFatal) {
  PduParser p({8192, true, false});
  auto wire = sample_wire(4, {true, false});
  wire[48] ^= 1;
  p.feed(wire);
  auto r = p.next();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, PduErrorCode::kHeaderDigest);
}

TEST(Parser, DataDigestErrorConsumesPduAndContinues) {
  PduParser p({8192, true, true});
  auto bad = sample_wire(4, {true, true});
  bad[52] ^= 0x80;  // flip a data byte
  auto good = sample_wire(8, {true, true});
  bad.insert(bad.end(), good.begin(), good.end());
  p.feed(bad);
  auto r = p.next();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, PduErrorCode::kDataDigest);
  EXPECT_EQ(r.error().header[0], 0x40);  // the (immediate) NOP-Out header, for the Reject
  auto r2 = p.next();
  ASSERT_TRUE(r2.ok() && r2->has_value());
  EXPECT_EQ((*r2)->data.size(), 8u);
}

TEST(Parser, LimitsSwitchBetweenPdus) {
  // Digests start after login: the second PDU in the same buffer is parsed with digests.
  PduParser p;
  auto a = sample_wire(1);
  auto b = sample_wire(1, {true, true});
  a.insert(a.end(), b.begin(), b.end());
  p.feed(a);
  ASSERT_TRUE(p.next()->has_value());
  p.set_limits({8192, true, true});
  auto r = p.next();
  ASSERT_TRUE(r.ok() && r->has_value());
  EXPECT_EQ(p.buffered(), 0u);
}

TEST(Parser, AhsParsed) {
  ScsiCommand c;
  c.ahs = {0x00, 0x05, 0x02, 0x00, 0x00, 0x00, 0x10, 0x00};
  PduParser p;
  p.feed(encode(Pdu{c}));
  auto r = p.next();
  ASSERT_TRUE(r.ok() && r->has_value());
  EXPECT_EQ((*r)->ahs.size(), 8u);
}

TEST(Parser, InconsistentAhsIsFatal) {
  ScsiCommand c;
  c.ahs = {0x00, 0x09, 0x02, 0x00};  // claims 9 bytes in a 4-byte AHS area
  PduParser p;
  p.feed(encode(Pdu{c}));
  auto r = p.next();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, PduErrorCode::kBadAhs);
}

TEST(Parser, SeededRandomBytesNeverCrash) {
  for (uint32_t seed = 1; seed <= 200; ++seed) {
    std::mt19937 rng(seed);
    PduParser p({static_cast<uint32_t>(512 + rng() % 70000), (rng() & 1) != 0, (rng() & 2) != 0});
    size_t pdus = 0;
    for (int round = 0; round < 50; ++round) {
      std::vector<uint8_t> chunk(rng() % 300);
      for (auto& b : chunk) b = uint8_t(rng());
      if (rng() % 4 == 0 && chunk.size() >= 8) chunk[4] = chunk[5] = chunk[6] = 0;  // small PDUs
      p.feed(chunk);
      while (true) {
        auto r = p.next();
        if (!r.ok()) {
          if (r.error().code != PduErrorCode::kDataDigest) break;
          continue;
        }
        if (!r->has_value()) break;
        ++pdus;
        (void)decode(**r);  // decoding arbitrary headers must not crash either
      }
    }
    SUCCEED() << "seed " << seed << " pdus " << pdus;
  }
}

}  // namespace
}  // namespace tandem::target::iscsi
