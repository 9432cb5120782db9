#include "core/volume_spec.h"

#include <array>
#include <cctype>
#include <charconv>
#include <cstdio>
#include <random>

namespace tandem::core {

const char* to_string(FailureMode m) {
  switch (m) {
    case FailureMode::kHard: return "hard";
    case FailureMode::kSoft: return "soft";
    case FailureMode::kThreshold: return "threshold";
    case FailureMode::kAlwaysOn: return "alwayson";
  }
  return "hard";
}

std::optional<FailureMode> parse_failure_mode(std::string_view s) {
  if (s == "hard") return FailureMode::kHard;
  if (s == "soft") return FailureMode::kSoft;
  if (s == "threshold") return FailureMode::kThreshold;
  if (s == "alwayson") return FailureMode::kAlwaysOn;
  return std::nullopt;
}

bool valid_volume_name(std::string_view name) {
  if (name.empty() || name.size() > 63) return false;
  auto ok = [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); };
  if (!ok(name[0])) return false;
  for (char c : name.substr(1)) {
    if (!ok(c) && c != '-') return false;
  }
  return true;
}

namespace {

InvalidValue bad(std::string field, std::string msg) { return {std::move(field), std::move(msg)}; }

std::optional<int> parse_small_int(std::string_view s, int lo, int hi) {
  int v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size() || v < lo || v > hi) return std::nullopt;
  return v;
}

}  // namespace

Result<uint64_t, InvalidValue> parse_size(std::string_view text) {
  if (text.empty()) return fail(bad("size", "size is empty"));
  uint64_t n = 0;
  auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
  if (ec != std::errc() || p == text.data()) {
    return fail(bad("size", "size must start with a whole number: '" + std::string(text) + "'"));
  }
  std::string unit(p, text.data() + text.size());
  for (auto& c : unit) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  struct U {
    const char* name;
    uint64_t mul;
  };
  static constexpr std::array<U, 13> kUnits{{{"", 1},
                                             {"b", 1},
                                             {"kib", 1ull << 10},
                                             {"mib", 1ull << 20},
                                             {"gib", 1ull << 30},
                                             {"tib", 1ull << 40},
                                             {"pib", 1ull << 50},
                                             {"kb", 1000ull},
                                             {"mb", 1000ull * 1000},
                                             {"gb", 1000ull * 1000 * 1000},
                                             {"tb", 1000ull * 1000 * 1000 * 1000},
                                             {"k", 1ull << 10},
                                             {"g", 1ull << 30}}};
  for (const auto& u : kUnits) {
    if (unit == u.name) {
      if (n != 0 && u.mul > UINT64_MAX / n) return fail(bad("size", "size overflows"));
      return n * u.mul;
    }
  }
  return fail(bad("size", "unknown size unit '" + unit + "' (use B, KiB, MiB, GiB, TiB)"));
}

std::string format_size(uint64_t bytes) {
  static constexpr std::array<const char*, 5> kNames{"PiB", "TiB", "GiB", "MiB", "KiB"};
  for (int i = 0; i < 5; ++i) {
    uint64_t mul = 1ull << (10 * (5 - i));
    if (bytes >= mul && bytes % mul == 0) return std::to_string(bytes / mul) + kNames[i];
  }
  return std::to_string(bytes) + "B";
}

Result<void, InvalidValue> validate_block_size(uint32_t block_size) {
  if (block_size != 512 && block_size != 4096) {
    return fail(bad("block_size", "block size must be 512 or 4096"));
  }
  return {};
}

Result<void, InvalidValue> validate_size(uint64_t bytes, uint32_t block_size) {
  if (bytes < kMinVolumeBytes) return fail(bad("size", "size must be at least 1MiB"));
  if (bytes > kMaxVolumeBytes) return fail(bad("size", "size must be at most 64TiB"));
  if (block_size == 0 || bytes % block_size != 0) {
    return fail(bad("size", "size must be a multiple of the block size (" +
                                std::to_string(block_size) + ")"));
  }
  return {};
}

Labels merge_labels(const Labels& class_defaults, const Labels& own) {
  Labels out = class_defaults;
  for (const auto& [k, v] : own) out[k] = v;
  return out;
}

Result<void, InvalidValue> validate_label_keys(const Labels& labels) {
  for (const auto& [k, v] : labels) {
    if (k.empty() || k.size() > 253) return fail(bad("labels", "label key length must be 1-253"));
    for (char c : k) {
      if (!std::isalnum(static_cast<unsigned char>(c)) && c != '/' && c != '-' && c != '_' &&
          c != '.') {
        return fail(bad("labels", "label key '" + k + "' has an invalid character"));
      }
    }
    if (v.size() > 1024) return fail(bad("labels", "label value for '" + k + "' is too long"));
    if (k.rfind("tandem/", 0) == 0 && k != kLabelReplicas && k != kLabelFailureMode &&
        k != kLabelFailureThreshold && k != kLabelCompression && k != kLabelFailureGrace) {
      return fail(bad("labels", "unknown tandem label '" + k + "'"));
    }
  }
  return {};
}

Result<void, InvalidValue> validate_labels(const Labels& labels) {
  if (auto r = validate_label_keys(labels); !r) return r;
  auto s = resolve_settings(labels);
  if (!s) return fail(s.error());
  return {};
}

Result<VolumeSettings, InvalidValue> resolve_settings(const Labels& eff) {
  VolumeSettings s;
  if (auto it = eff.find(std::string(kLabelReplicas)); it != eff.end()) {
    auto v = parse_small_int(it->second, 0, kMaxReplicas);
    if (!v) return fail(bad(std::string(kLabelReplicas), "replicas must be 0-5"));
    s.replicas = *v;
  }
  if (auto it = eff.find(std::string(kLabelFailureMode)); it != eff.end()) {
    auto m = parse_failure_mode(it->second);
    if (!m) {
      return fail(bad(std::string(kLabelFailureMode),
                      "failure mode must be hard, soft, threshold or alwayson"));
    }
    s.failure_mode = *m;
  }
  if (auto it = eff.find(std::string(kLabelFailureThreshold)); it != eff.end()) {
    auto v = parse_small_int(it->second, 0, kMaxReplicas);
    if (!v) return fail(bad(std::string(kLabelFailureThreshold), "threshold must be 0-5"));
    if (s.failure_mode != FailureMode::kThreshold) {
      return fail(bad(std::string(kLabelFailureThreshold),
                      "a threshold is only valid with failure mode 'threshold'"));
    }
    if (*v > s.replicas) {
      return fail(bad(std::string(kLabelFailureThreshold),
                      "threshold cannot exceed the replica count"));
    }
    s.threshold = *v;
  } else if (s.failure_mode == FailureMode::kThreshold) {
    return fail(bad(std::string(kLabelFailureThreshold),
                    "failure mode 'threshold' needs tandem/failure-threshold"));
  }
  if (auto it = eff.find(std::string(kLabelCompression)); it != eff.end()) {
    if (it->second == "true" || it->second == "on") {
      s.compression = true;
    } else if (it->second == "false" || it->second == "off") {
      s.compression = false;
    } else {
      return fail(bad(std::string(kLabelCompression), "compression must be true or false"));
    }
  }
  if (auto it = eff.find(std::string(kLabelFailureGrace)); it != eff.end()) {
    auto v = parse_small_int(it->second, 0, 86400);
    if (!v) return fail(bad(std::string(kLabelFailureGrace), "failure grace must be 0-86400 seconds"));
    s.grace_seconds = *v;
  }
  return s;
}

int nodes_required(const VolumeSettings& s) { return 1 + s.replicas; }

int nodes_for_ha(const VolumeSettings& s) {
  switch (s.failure_mode) {
    case FailureMode::kHard: return 1 + s.replicas + 1;
    case FailureMode::kSoft: return 1 + s.replicas;
    case FailureMode::kThreshold: return 1 + s.threshold;
    case FailureMode::kAlwaysOn: return 1;
  }
  return 1;
}

std::string iqn_for(std::string_view volume_name) {
  return std::string(kIqnPrefix) + std::string(volume_name);
}

std::string new_uuid() {
  std::random_device rd;
  std::array<uint8_t, 16> b{};
  for (size_t i = 0; i < b.size(); i += 4) {
    uint32_t r = rd();
    for (int j = 0; j < 4; ++j) b[i + j] = static_cast<uint8_t>(r >> (8 * j));
  }
  b[6] = static_cast<uint8_t>((b[6] & 0x0f) | 0x40);
  b[8] = static_cast<uint8_t>((b[8] & 0x3f) | 0x80);
  char out[37];
  std::snprintf(out, sizeof out,
                "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1],
                b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14],
                b[15]);
  return out;
}

}  // namespace tandem::core
