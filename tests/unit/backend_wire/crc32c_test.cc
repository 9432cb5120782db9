// core::crc32c: RFC 3720 appendix B.4 vectors, the catalogue check value, extend semantics,
// and the SSE4.2 paths (three interleaved streams, and one) against the slicing-by-8 path on
// random buffers at every alignment and length around the stream strides.
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

// The interleaved hardware loop splits buffers of 768 bytes and more into three streams
// (strides of 3 x 256 and 3 x 8192 bytes): lengths around every stride boundary, at every
// alignment and with random seeds, against the slicing-by-8 path and the plain single-stream
// loop.
TEST(Crc32c, InterleavedStreamsEqualSimplePathsAtStrideBoundaries) {
  if (!crc32c_detail::hardware_available()) GTEST_SKIP() << "no SSE4.2 on this CPU";
  std::mt19937_64 rng(7703);
  std::vector<uint8_t> buf(4 * 3 * 8192 + 64);
  for (auto& b : buf) b = uint8_t(rng());
  std::vector<size_t> lengths;
  for (size_t stride : {size_t(3 * 256), size_t(3 * 8192)}) {
    for (size_t k = 1; k <= 3; ++k) {
      for (long d = -9; d <= 9; ++d) lengths.push_back(size_t(long(k * stride) + d));
    }
  }
  lengths.push_back(3 * 8192 + 3 * 256);
  lengths.push_back(buf.size() - 16);
  for (size_t len : lengths) {
    for (size_t off = 0; off < 16; ++off) {
      const uint32_t seed = off % 2 ? uint32_t(rng()) : 0u;
      const uint8_t* p = buf.data() + off;
      const uint32_t want = crc32c_detail::software(p, len, seed);
      ASSERT_EQ(crc32c_detail::hardware(p, len, seed), want) << "len " << len << " off " << off;
      ASSERT_EQ(crc32c_detail::hardware_one_stream(p, len, seed), want)
          << "len " << len << " off " << off;
    }
  }
}

// A 1 MiB write payload, as the replication path checks it, and a bit flip in each stream.
TEST(Crc32c, InterleavedStreamsOnOneMebibyteAndTheirBitFlips) {
  std::mt19937_64 rng(1u << 20);
  std::vector<uint8_t> v(1u << 20);
  for (auto& b : v) b = uint8_t(rng());
  const uint32_t good = of(v);
  EXPECT_EQ(good, crc32c_detail::software(v.data(), v.size(), 0));
  // Offsets in the first, second and third stream of a stride, and in the tail.
  for (size_t at : {size_t(5), size_t(8192 + 3), size_t(2 * 8192 + 4095), v.size() - 1}) {
    v[at] ^= 0x10;
    EXPECT_NE(of(v), good) << at;
    EXPECT_EQ(of(v), crc32c_detail::software(v.data(), v.size(), 0)) << at;
    v[at] ^= 0x10;
  }
}

TEST(Crc32c, ExtendZerosMatchesCheckingZeros) {
  std::vector<uint8_t> zeros(3 * 8192 + 77, 0);
  std::mt19937 rng(99);
  for (size_t n : {size_t(0), size_t(1), size_t(7), size_t(256), size_t(8192), zeros.size()}) {
    const uint32_t crc = uint32_t(rng());
    EXPECT_EQ(crc32c_detail::extend_zeros(crc, n), crc32c_detail::software(zeros.data(), n, crc))
        << n;
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
