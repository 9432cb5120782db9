#include "target/iscsi/text.h"

#include <algorithm>

namespace tandem::target::iscsi {
namespace {

using core::fail;

bool key_char_ok(char c) {
  // key-name characters (§6.1): letters, digits, '.', '-', '+', '@', '_'.
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
         c == '-' || c == '+' || c == '@' || c == '_';
}

}  // namespace

size_t max_value_length(std::string_view key) {
  if (key == "CHAP_C" || key == "CHAP_R") return kMaxLongValueLength;
  return kMaxValueLength;
}

core::Result<TextPairs, TextError> parse_text(std::span<const uint8_t> data) {
  if (data.size() > kMaxTextTotal)
    return fail(TextError{TextErrorCode::kTooLarge, "text too large"});
  TextPairs out;
  size_t i = 0;
  while (i < data.size()) {
    const auto nul = std::find(data.begin() + static_cast<std::ptrdiff_t>(i), data.end(), 0);
    const size_t end = static_cast<size_t>(nul - data.begin());
    std::string_view item(reinterpret_cast<const char*>(data.data()) + i, end - i);
    i = end + 1;
    if (item.empty()) continue;
    const size_t eq = item.find('=');
    if (eq == std::string_view::npos) {
      return fail(TextError{TextErrorCode::kMissingEquals, "no '=' in text item"});
    }
    std::string_view key = item.substr(0, eq);
    std::string_view value = item.substr(eq + 1);
    if (key.empty()) return fail(TextError{TextErrorCode::kEmptyKey, "empty key"});
    if (key.size() > kMaxKeyLength) {
      return fail(TextError{TextErrorCode::kKeyTooLong, "key longer than 63 bytes"});
    }
    if (!std::all_of(key.begin(), key.end(), key_char_ok)) {
      return fail(TextError{TextErrorCode::kBadKeyChar, "bad character in key"});
    }
    if (value.size() > max_value_length(key)) {
      return fail(
          TextError{TextErrorCode::kValueTooLong, "value too long for " + std::string(key)});
    }
    if (find_value(out, key) != nullptr) {
      return fail(TextError{TextErrorCode::kDuplicateKey, "duplicate key " + std::string(key)});
    }
    out.push_back(TextPair{std::string(key), std::string(value)});
  }
  return out;
}

void append_pair(std::vector<uint8_t>& out, std::string_view key, std::string_view value) {
  out.insert(out.end(), key.begin(), key.end());
  out.push_back('=');
  out.insert(out.end(), value.begin(), value.end());
  out.push_back(0);
}

std::vector<uint8_t> encode_text(const TextPairs& pairs) {
  std::vector<uint8_t> out;
  for (const auto& p : pairs) append_pair(out, p.key, p.value);
  return out;
}

const std::string* find_value(const TextPairs& pairs, std::string_view key) {
  for (const auto& p : pairs) {
    if (p.key == key) return &p.value;
  }
  return nullptr;
}

bool TextAccumulator::append(std::span<const uint8_t> part) {
  if (buf_.size() + part.size() > kMaxTextTotal) return false;
  buf_.insert(buf_.end(), part.begin(), part.end());
  return true;
}

std::vector<uint8_t> TextAccumulator::take() {
  std::vector<uint8_t> out;
  out.swap(buf_);
  return out;
}

}  // namespace tandem::target::iscsi
