// Volume vocabulary shared by the catalogue, the API and the CLI: name and size validation,
// size parsing, labels (StorageOS-style settings) and how many nodes a volume needs.
// Pure functions, no I/O; safe from any thread.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>

#include "core/result.h"

namespace tandem::core {

using Labels = std::map<std::string, std::string>;

inline constexpr std::string_view kLabelReplicas = "tandem/replicas";
inline constexpr std::string_view kLabelFailureMode = "tandem/failure-mode";
inline constexpr std::string_view kLabelFailureThreshold = "tandem/failure-threshold";
inline constexpr std::string_view kLabelCompression = "tandem/compression";
inline constexpr std::string_view kLabelFailureGrace = "tandem/failure-grace";  // seconds
inline constexpr std::string_view kIqnPrefix = "iqn.2026-11.dev.tandem:";

inline constexpr uint64_t kMinVolumeBytes = 1ull << 20;   // 1 MiB
inline constexpr uint64_t kMaxVolumeBytes = 64ull << 40;  // 64 TiB
inline constexpr int kMaxReplicas = 5;

enum class FailureMode { kHard, kSoft, kThreshold, kAlwaysOn };

const char* to_string(FailureMode m);
std::optional<FailureMode> parse_failure_mode(std::string_view s);

// Why a value was refused; maps to HTTP 422 / CLI exit 2.
struct InvalidValue {
  std::string field;
  std::string message;
};

// Settings a volume's labels resolve to.
struct VolumeSettings {
  int replicas = 0;
  FailureMode failure_mode = FailureMode::kHard;
  int threshold = 0;  // only meaningful with kThreshold
  bool compression = true;
  int grace_seconds = -1;  // tandem/failure-grace; -1: the cluster's --failure-grace
};

// `[a-z0-9][a-z0-9-]{0,62}`.
bool valid_volume_name(std::string_view name);
// Names of nodes and classes follow the same rule.
inline bool valid_object_name(std::string_view name) { return valid_volume_name(name); }

// "512MiB", "10GiB", "1TiB", "4096", "1.5GiB" is refused (whole bytes only). Also KiB, PiB,
// and decimal units KB/MB/GB/TB (powers of 1000).
Result<uint64_t, InvalidValue> parse_size(std::string_view text);
// Human form: the largest binary unit that divides the size exactly, else bytes.
std::string format_size(uint64_t bytes);

Result<void, InvalidValue> validate_size(uint64_t bytes, uint32_t block_size);
Result<void, InvalidValue> validate_block_size(uint32_t block_size);

// A volume's own labels override its class's defaults. Label keys must be
// `[prefix/]name` of printable characters; tandem/* keys must have valid values.
Labels merge_labels(const Labels& class_defaults, const Labels& own);
Result<VolumeSettings, InvalidValue> resolve_settings(const Labels& effective);
// Key syntax, value length and known tandem/* keys only: a partial set (a volume's own
// labels over a class) is fine here; resolve_settings judges the merged set.
Result<void, InvalidValue> validate_label_keys(const Labels& labels);
// validate_label_keys, and the set must resolve on its own (a class, or a complete set).
Result<void, InvalidValue> validate_labels(const Labels& labels);

// Nodes needed to place the volume at all: master + N replicas.
int nodes_required(const VolumeSettings& s);
// Nodes needed for high availability under its failure mode (seed: hard 1+N+1, soft 1+N,
// threshold 1+T, alwayson 1).
int nodes_for_ha(const VolumeSettings& s);

std::string iqn_for(std::string_view volume_name);

// Random RFC 4122 version-4 UUID, lowercase with dashes.
std::string new_uuid();

}  // namespace tandem::core
