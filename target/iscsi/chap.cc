#include "target/iscsi/chap.h"

#include <openssl/evp.h>

#include <cstdlib>
#include <memory>

namespace tandem::target::iscsi {
namespace {

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

int b64_digit(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}

}  // namespace

ChapDigest chap_md5_response(uint8_t identifier, std::string_view secret,
                             std::span<const uint8_t> challenge) {
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), &EVP_MD_CTX_free);
  ChapDigest out{};
  unsigned int len = 0;
  // MD5 is always present in OpenSSL's default provider; failure is a broken invariant.
  if (!ctx || EVP_DigestInit_ex(ctx.get(), EVP_md5(), nullptr) != 1 ||
      EVP_DigestUpdate(ctx.get(), &identifier, 1) != 1 ||
      EVP_DigestUpdate(ctx.get(), secret.data(), secret.size()) != 1 ||
      EVP_DigestUpdate(ctx.get(), challenge.data(), challenge.size()) != 1 ||
      EVP_DigestFinal_ex(ctx.get(), out.data(), &len) != 1 || len != out.size()) {
    std::abort();
  }
  return out;
}

std::optional<std::vector<uint8_t>> decode_binary_value(std::string_view v) {
  if (v.size() < 3 || v[0] != '0') return std::nullopt;
  const char kind = v[1];
  v.remove_prefix(2);
  std::vector<uint8_t> out;
  if (kind == 'x' || kind == 'X') {
    // An odd digit count means a leading zero nibble was omitted (§5.1).
    size_t i = 0;
    if (v.size() % 2) {
      const int d = hex_digit(v[0]);
      if (d < 0) return std::nullopt;
      out.push_back(uint8_t(d));
      i = 1;
    }
    for (; i < v.size(); i += 2) {
      const int hi = hex_digit(v[i]);
      const int lo = hex_digit(v[i + 1]);
      if (hi < 0 || lo < 0) return std::nullopt;
      out.push_back(uint8_t(hi << 4 | lo));
    }
    return out;
  }
  if (kind == 'b' || kind == 'B') {
    uint32_t acc = 0;
    int bits = 0;
    size_t pad = 0;
    for (char c : v) {
      if (c == '=') {
        ++pad;
        continue;
      }
      if (pad > 0) return std::nullopt;  // data after padding
      const int d = b64_digit(c);
      if (d < 0) return std::nullopt;
      acc = (acc << 6) | uint32_t(d);
      bits += 6;
      if (bits >= 8) {
        bits -= 8;
        out.push_back(uint8_t(acc >> bits));
      }
    }
    if (pad > 2 || out.empty()) return std::nullopt;
    return out;
  }
  return std::nullopt;
}

std::string encode_hex_value(std::span<const uint8_t> bytes) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string s = "0x";
  for (uint8_t b : bytes) {
    s.push_back(kHex[b >> 4]);
    s.push_back(kHex[b & 15]);
  }
  return s;
}

}  // namespace tandem::target::iscsi
