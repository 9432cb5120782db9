// core::crc32c: RFC 3720 appendix B.4 vectors, the catalogue check value, extend semantics,
// and the SSE4.2 path against the slicing-by-8 path on random buffers at every alignment.
#include "core/crc32c.h"

#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

namespace tandem::core {
namespace {

uint32_t of(const std::vector<uint8_t>& v) { return crc32c(v); }

TEST(Crc32c, CheckValue) {
  const std::string s = "123456789";
  EXPECT_EQ(crc32c(std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(s.data()), s.size())),
            0xE3069283u);
}

TEST(Crc32c, EmptyIsSeed) {
  EXPECT_EQ(crc32c(std::span<const uint8_t>()), 0u);
  EXPECT_EQ(crc32c(std::span<const uint8_t>(), 0x12345678u), 0x12345678u);
}

// RFC 3720 B.4: the CRC is sent little-endian, so "aa 36 91 8a" is 0x8a9136aa.
TEST(Crc32c, Rfc3720ThirtyTwoZeros) { EXPECT_EQ(of(std::vector<uint8_t>(32, 0)), 0x8A9136AAu); }

TEST(Crc32c, Rfc3720ThirtyTwoOnes) { EXPECT_EQ(of(std::vector<uint8_t>(32, 0xff)), 0x62A8AB43u); }

TEST(Crc32c, Rfc3720Incrementing) {
  std::vector<uint8_t> v(32);
  for (int i = 0; i < 32; ++i) v[i] = uint8_t(i);
  EXPECT_EQ(of(v), 0x46DD794Eu);
}

TEST(Crc32c, Rfc3720Decrementing) {
  std::vector<uint8_t> v(32);
  for (int i = 0; i < 32; ++i) v[i] = uint8_t(31 - i);
  EXPECT_EQ(of(v), 0x113FDB5Cu);
}

TEST(Crc32c, Rfc3720ScsiReadPdu) {
  const std::vector<uint8_t> pdu = {0x01, 0xc0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
                                    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x14, 0x00, 0x00, 0x00,
                                    0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00, 0x14, 0x00, 0x00,
                                    0x00, 0x18, 0x28, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
                                    0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00};
  EXPECT_EQ(of(pdu), 0xD9963A56u);
}

TEST(Crc32c, BothPathsMatchVectors) {
  std::vector<uint8_t> zeros(32, 0);
  EXPECT_EQ(crc32c_detail::software(zeros.data(), zeros.size(), 0), 0x8A9136AAu);
  if (crc32c_detail::hardware_available()) {
    EXPECT_EQ(crc32c_detail::hardware(zeros.data(), zeros.size(), 0), 0x8A9136AAu);
  }
}

TEST(Crc32c, ByteSpanOverload) {
  std::vector<std::byte> v(32, std::byte{0xff});
  EXPECT_EQ(crc32c(std::span<const std::byte>(v)), 0x62A8AB43u);
}

TEST(Crc32c, ExtendAtEverySplit) {
  std::vector<uint8_t> v(200);
  for (size_t i = 0; i < v.size(); ++i) v[i] = uint8_t(i * 131 + 7);
  const uint32_t whole = of(v);
  std::span<const uint8_t> s(v);
  for (size_t cut = 0; cut <= v.size(); ++cut) {
    ASSERT_EQ(crc32c(s.subspan(cut), crc32c(s.first(cut))), whole) << cut;
  }
}

TEST(Crc32c, HardwareEqualsSoftwareOnRandomBuffers) {
  if (!crc32c_detail::hardware_available()) GTEST_SKIP() << "no SSE4.2 on this CPU";
  std::mt19937_64 rng(20261126);
  std::vector<uint8_t> buf(70'000);
  for (auto& b : buf) b = uint8_t(rng());
  for (int iter = 0; iter < 2000; ++iter) {
    const size_t off = rng() % 16;  // every alignment
    const size_t len = (iter < 300) ? size_t(iter) : size_t(rng() % (buf.size() - 16));
    const uint32_t seed = (iter % 3 == 0) ? 0u : uint32_t(rng());
    ASSERT_EQ(crc32c_detail::hardware(buf.data() + off, len, seed),
              crc32c_detail::software(buf.data() + off, len, seed))
        << "iter " << iter << " off " << off << " len " << len;
  }
}

TEST(Crc32c, DetectsSingleBitFlips) {
  std::vector<uint8_t> v(512, 0x5a);
  const uint32_t good = of(v);
  for (size_t bit = 0; bit < v.size() * 8; bit += 7) {
    v[bit / 8] ^= uint8_t(1u << (bit % 8));
    ASSERT_NE(of(v), good) << bit;
    v[bit / 8] ^= uint8_t(1u << (bit % 8));
  }
}

}  // namespace
}  // namespace tandem::core
