#include "core/crc32c.h"

#include <array>
#include <cstring>

namespace tandem::core {
namespace crc32c_detail {
namespace {

constexpr uint32_t kPoly = 0x82F63B78u;  // reflected 0x1EDC6F41

using Tables = std::array<std::array<uint32_t, 256>, 8>;

// t[0] is the classic byte table; t[k][i] is the CRC of byte i followed by k zero bytes,
// which lets eight bytes be folded with eight independent lookups (slicing-by-8).
constexpr Tables make_tables() {
  Tables t{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c >> 1) ^ ((c & 1u) ? kPoly : 0u);
    t[0][i] = c;
  }
  for (int s = 1; s < 8; ++s) {
    for (uint32_t i = 0; i < 256; ++i) t[s][i] = (t[s - 1][i] >> 8) ^ t[0][t[s - 1][i] & 0xffu];
  }
  return t;
}

constexpr Tables kTables = make_tables();

inline uint32_t load_le32(const uint8_t* p) {
  return uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24;
}

// ---- moving a CRC register past zero bytes (to combine streams computed side by side) ----
//
// A register is a polynomial over GF(2) of degree < 32, held reflected: bit 31 - i is the
// coefficient of x^i. Running n zero bytes through it multiplies it by x^(8n) mod P, which is
// linear in the register; so it takes four lookups in tables that hold each byte position's
// 256 values already multiplied (zero-extension tables, the method of Mark Adler's crc32c.c).

// a * b mod P, both reflected.
constexpr uint32_t multmod(uint32_t a, uint32_t b) {
  uint32_t product = 0;
  for (uint32_t m = 1u << 31; m != 0; m >>= 1) {
    if (a & m) product ^= b;
    b = (b & 1u) ? (b >> 1) ^ kPoly : b >> 1;  // b *= x
  }
  return product;
}

// x^(8 * bytes) mod P, reflected, by square-and-multiply.
constexpr uint32_t x_pow_8n(uint64_t bytes) {
  uint32_t result = 1u << 31;  // x^0
  uint32_t square = 1u << 23;  // x^8
  for (; bytes != 0; bytes >>= 1) {
    if (bytes & 1u) result = multmod(result, square);
    square = multmod(square, square);
  }
  return result;
}

using ShiftTable = std::array<std::array<uint32_t, 256>, 4>;

// t[k][b]: the register holding b in byte k (zeros elsewhere) after `bytes` zero bytes.
constexpr ShiftTable make_shift_table(uint64_t bytes) {
  ShiftTable t{};
  const uint32_t factor = x_pow_8n(bytes);
  for (int k = 0; k < 4; ++k) {
    for (uint32_t b = 0; b < 256; ++b) t[k][b] = multmod(b << (8 * k), factor);
  }
  return t;
}

inline uint32_t shift(const ShiftTable& t, uint32_t reg) {
  return t[0][reg & 0xffu] ^ t[1][(reg >> 8) & 0xffu] ^ t[2][(reg >> 16) & 0xffu] ^ t[3][reg >> 24];
}

// The hardware loop checks three streams side by side: crc32 has a latency of 3 cycles and a
// throughput of one per cycle, so one stream leaves two thirds of the unit idle. Buffers go
// in strides of three kLongStream runs, what is left in strides of three kShortStream runs,
// the tail in one stream. Each stride costs one combine (8 lookups), under 1% of a short run.
constexpr size_t kLongStream = 8192;
constexpr size_t kShortStream = 256;
constexpr ShiftTable kShiftLong = make_shift_table(kLongStream);
constexpr ShiftTable kShiftShort = make_shift_table(kShortStream);

}  // namespace

uint32_t software(const uint8_t* p, size_t n, uint32_t seed) {
  uint32_t crc = ~seed;
  while (n >= 8) {
    const uint32_t lo = load_le32(p) ^ crc;
    const uint32_t hi = load_le32(p + 4);
    crc = kTables[7][lo & 0xffu] ^ kTables[6][(lo >> 8) & 0xffu] ^ kTables[5][(lo >> 16) & 0xffu] ^
          kTables[4][lo >> 24] ^ kTables[3][hi & 0xffu] ^ kTables[2][(hi >> 8) & 0xffu] ^
          kTables[1][(hi >> 16) & 0xffu] ^ kTables[0][hi >> 24];
    p += 8;
    n -= 8;
  }
  while (n--) crc = kTables[0][(crc ^ *p++) & 0xffu] ^ (crc >> 8);
  return ~crc;
}

uint32_t extend_zeros(uint32_t crc, uint64_t bytes) {
  // The register is ~crc; the zeros multiply it, and the final inversion applies again.
  return ~multmod(~crc, x_pow_8n(bytes));
}

#if defined(__x86_64__)
namespace {

__attribute__((target("sse4.2"))) inline uint64_t load64(const uint8_t* p) {
  uint64_t w;
  std::memcpy(&w, p, 8);  // memcpy keeps it free of alignment and aliasing questions
  return w;
}

// Runs strides of three `len`-byte streams while at least one stride is left; `reg` is the
// register (not inverted). len is a multiple of 8.
__attribute__((target("sse4.2"))) inline uint64_t three_streams(const uint8_t*& p, size_t& n,
                                                                uint64_t reg, size_t len,
                                                                const ShiftTable& past) {
  while (n >= 3 * len) {
    uint64_t c0 = reg, c1 = 0, c2 = 0;
    const uint8_t* end = p + len;
    do {
      c0 = __builtin_ia32_crc32di(c0, load64(p));
      c1 = __builtin_ia32_crc32di(c1, load64(p + len));
      c2 = __builtin_ia32_crc32di(c2, load64(p + 2 * len));
      p += 8;
    } while (p != end);
    // c0 covers the first run; moved past the second it joins c1, which then moves past the
    // third to join c2 (c1 and c2 started from 0, so they hold only their own bytes).
    reg = shift(past, shift(past, uint32_t(c0)) ^ uint32_t(c1)) ^ uint32_t(c2);
    p += 2 * len;
    n -= 3 * len;
  }
  return reg;
}

// One dependency chain over the whole of p[0, n); `reg` is the register (not inverted).
__attribute__((target("sse4.2"))) inline uint32_t one_stream(const uint8_t* p, size_t n,
                                                             uint32_t reg) {
  uint64_t c = reg;
  while (n >= 8) {
    c = __builtin_ia32_crc32di(c, load64(p));
    p += 8;
    n -= 8;
  }
  reg = static_cast<uint32_t>(c);
  while (n--) reg = __builtin_ia32_crc32qi(reg, *p++);
  return reg;
}

}  // namespace

__attribute__((target("sse4.2"))) uint32_t hardware(const uint8_t* p, size_t n, uint32_t seed) {
  uint32_t crc = ~seed;
  while (n > 0 && (reinterpret_cast<uintptr_t>(p) & 7u) != 0) {
    crc = __builtin_ia32_crc32qi(crc, *p++);
    --n;
  }
  uint64_t c = crc;
  c = three_streams(p, n, c, kLongStream, kShiftLong);
  c = three_streams(p, n, c, kShortStream, kShiftShort);
  return ~one_stream(p, n, uint32_t(c));
}

// Single stream, as before the interleaving: kept for the tests and the micro benchmark.
__attribute__((target("sse4.2"))) uint32_t hardware_one_stream(const uint8_t* p, size_t n,
                                                               uint32_t seed) {
  return ~one_stream(p, n, ~seed);
}

bool hardware_available() {
  static const bool has = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("sse4.2") != 0;
  }();
  return has;
}
#else
uint32_t hardware(const uint8_t* p, size_t n, uint32_t seed) { return software(p, n, seed); }
uint32_t hardware_one_stream(const uint8_t* p, size_t n, uint32_t seed) {
  return software(p, n, seed);
}
bool hardware_available() { return false; }
#endif

}  // namespace crc32c_detail

uint32_t crc32c(std::span<const uint8_t> data, uint32_t seed) {
  using Fn = uint32_t (*)(const uint8_t*, size_t, uint32_t);
  static const Fn impl =
      crc32c_detail::hardware_available() ? &crc32c_detail::hardware : &crc32c_detail::software;
  return impl(data.data(), data.size(), seed);
}

uint32_t crc32c(std::span<const std::byte> data, uint32_t seed) {
  return crc32c(
      std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(data.data()), data.size()), seed);
}

}  // namespace tandem::core
