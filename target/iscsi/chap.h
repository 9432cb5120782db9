// CHAP for iSCSI login (RFC 7143 §12.1.3, RFC 1994): MD5 response computation and the
// binary-value encodings of CHAP_C/CHAP_R (§5.1: 0x-hex or 0b-base64). Pure functions;
// uses OpenSSL 3's EVP MD5, thread-safe.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace tandem::target::iscsi {

inline constexpr size_t kChapDigestLength = 16;
using ChapDigest = std::array<uint8_t, kChapDigestLength>;

// MD5(identifier || secret || challenge) (RFC 1994 §4.1).
ChapDigest chap_md5_response(uint8_t identifier, std::string_view secret,
                             std::span<const uint8_t> challenge);

// "0x0a1b..." (hex) or "0bCh0=" (base64) -> bytes; nullopt when malformed or empty.
std::optional<std::vector<uint8_t>> decode_binary_value(std::string_view value);
std::string encode_hex_value(std::span<const uint8_t> bytes);  // "0x..." lower-case

}  // namespace tandem::target::iscsi
