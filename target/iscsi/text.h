// Text key=value data segments (RFC 7143 §6.1) used by Login and Text PDUs: parsing with
// the RFC length limits, encoding, and an accumulator for text split across PDUs with the
// C bit (§11.10.2). Pure value code, no shared state.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/result.h"

namespace tandem::target::iscsi {

inline constexpr size_t kMaxKeyLength = 63;          // §6.1
inline constexpr size_t kMaxValueLength = 255;       // §6.1 default
inline constexpr size_t kMaxLongValueLength = 8192;  // CHAP_C/CHAP_R binary values (§12.1.3)
inline constexpr size_t kMaxTextTotal = 64 * 1024;   // bound on one negotiation's text

struct TextPair {
  std::string key;
  std::string value;
  bool operator==(const TextPair&) const = default;
};
using TextPairs = std::vector<TextPair>;

enum class TextErrorCode {
  kMissingEquals,
  kEmptyKey,
  kKeyTooLong,
  kBadKeyChar,
  kValueTooLong,
  kDuplicateKey,
  kTooLarge,
};

struct TextError {
  TextErrorCode code;
  std::string message;
};

size_t max_value_length(std::string_view key);

// Parses a complete text ("k=v\0k=v\0"); a missing final NUL is tolerated, empty strings
// between NULs are skipped. Duplicate keys are an error (§6.2: a key is sent once).
[[nodiscard]] core::Result<TextPairs, TextError> parse_text(std::span<const uint8_t> data);

std::vector<uint8_t> encode_text(const TextPairs& pairs);
void append_pair(std::vector<uint8_t>& out, std::string_view key, std::string_view value);

const std::string* find_value(const TextPairs& pairs, std::string_view key);

// Collects the data segments of a C-bit sequence. append() returns false when the total
// would exceed kMaxTextTotal.
class TextAccumulator {
 public:
  [[nodiscard]] bool append(std::span<const uint8_t> part);
  // Takes the collected bytes and resets.
  std::vector<uint8_t> take();
  bool empty() const { return buf_.empty(); }

 private:
  std::vector<uint8_t> buf_;
};

}  // namespace tandem::target::iscsi
