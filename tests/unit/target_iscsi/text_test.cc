// Text key=value parsing and limits (RFC 7143 §6.1).
#include "target/iscsi/text.h"

#include <gtest/gtest.h>

namespace tandem::target::iscsi {
namespace {

std::vector<uint8_t> bytes(std::string_view s) { return {s.begin(), s.end()}; }

TEST(Text, ParsesPairs) {
  auto r = parse_text(bytes(std::string("A=1\0B=x,y\0C=\0", 14)));
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r->size(), 3u);
  EXPECT_EQ((*r)[1].value, "x,y");
  EXPECT_EQ((*r)[2].value, "");
}

TEST(Text, MissingFinalNulTolerated) {
  auto r = parse_text(bytes("Key=value"));
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->at(0).value, "value");
}

TEST(Text, ValueMayContainEquals) {
  auto r = parse_text(bytes(std::string("K=a=b\0", 6)));
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->at(0).value, "a=b");
}

TEST(Text, Errors) {
  EXPECT_EQ(parse_text(bytes(std::string("NoEquals\0", 9))).error().code,
            TextErrorCode::kMissingEquals);
  EXPECT_EQ(parse_text(bytes(std::string("=v\0", 3))).error().code, TextErrorCode::kEmptyKey);
  EXPECT_EQ(parse_text(bytes(std::string("K y=v\0", 6))).error().code, TextErrorCode::kBadKeyChar);
  EXPECT_EQ(parse_text(bytes(std::string("A=1\0A=2\0", 8))).error().code,
            TextErrorCode::kDuplicateKey);
}

TEST(Text, KeyLengthLimit) {
  std::string k63(63, 'K'), k64(64, 'K');
  EXPECT_TRUE(parse_text(bytes(k63 + "=v")).ok());
  EXPECT_EQ(parse_text(bytes(k64 + "=v")).error().code, TextErrorCode::kKeyTooLong);
}

TEST(Text, ValueLengthLimits) {
  EXPECT_TRUE(parse_text(bytes("K=" + std::string(255, 'v'))).ok());
  EXPECT_EQ(parse_text(bytes("K=" + std::string(256, 'v'))).error().code,
            TextErrorCode::kValueTooLong);
  EXPECT_TRUE(parse_text(bytes("CHAP_C=0x" + std::string(1000, 'a'))).ok());
  EXPECT_EQ(parse_text(bytes("CHAP_R=" + std::string(8193, 'a'))).error().code,
            TextErrorCode::kValueTooLong);
}

TEST(Text, EncodeRoundTrip) {
  TextPairs p = {{"InitiatorName", "iqn.x"}, {"SessionType", "Normal"}};
  auto enc = encode_text(p);
  EXPECT_EQ(enc.back(), 0);
  auto r = parse_text(enc);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(*r, p);
}

TEST(Text, AccumulatorBounded) {
  TextAccumulator acc;
  std::vector<uint8_t> big(kMaxTextTotal, 'a');
  EXPECT_TRUE(acc.append(big));
  EXPECT_FALSE(acc.append(std::vector<uint8_t>(1, 'a')));
  EXPECT_EQ(acc.take().size(), kMaxTextTotal);
  EXPECT_TRUE(acc.empty());
}

}  // namespace
}  // namespace tandem::target::iscsi
