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

#if defined(__x86_64__)
__attribute__((target("sse4.2"))) uint32_t hardware(const uint8_t* p, size_t n, uint32_t seed) {
  uint32_t crc = ~seed;
  while (n > 0 && (reinterpret_cast<uintptr_t>(p) & 7u) != 0) {
    crc = __builtin_ia32_crc32qi(crc, *p++);
    --n;
  }
  unsigned long long c = crc;
  while (n >= 8) {
    unsigned long long w;
    std::memcpy(&w, p, 8);  // aligned now; memcpy keeps it free of aliasing questions
    c = __builtin_ia32_crc32di(c, w);
    p += 8;
    n -= 8;
  }
  crc = static_cast<uint32_t>(c);
  while (n--) crc = __builtin_ia32_crc32qi(crc, *p++);
  return ~crc;
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
