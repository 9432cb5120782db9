#include "core/volume_spec.h"

#include <gtest/gtest.h>

#include <set>

namespace tandem::core {
namespace {

TEST(VolumeName, AcceptsTheDocumentedPattern) {
  EXPECT_TRUE(valid_volume_name("a"));
  EXPECT_TRUE(valid_volume_name("db-1"));
  EXPECT_TRUE(valid_volume_name("0abc"));
  EXPECT_TRUE(valid_volume_name(std::string(63, 'x')));
}

TEST(VolumeName, RejectsEverythingElse) {
  EXPECT_FALSE(valid_volume_name(""));
  EXPECT_FALSE(valid_volume_name("-a"));
  EXPECT_FALSE(valid_volume_name("A"));
  EXPECT_FALSE(valid_volume_name("a_b"));
  EXPECT_FALSE(valid_volume_name("a.b"));
  EXPECT_FALSE(valid_volume_name("a/b"));
  EXPECT_FALSE(valid_volume_name(std::string(64, 'x')));
  EXPECT_FALSE(valid_volume_name(std::string("a\0b", 3)));
}

TEST(ParseSize, BinaryAndDecimalUnits) {
  EXPECT_EQ(*parse_size("512MiB"), 512ull << 20);
  EXPECT_EQ(*parse_size("10GiB"), 10ull << 30);
  EXPECT_EQ(*parse_size("1TiB"), 1ull << 40);
  EXPECT_EQ(*parse_size("4096"), 4096u);
  EXPECT_EQ(*parse_size("4096B"), 4096u);
  EXPECT_EQ(*parse_size("3KiB"), 3072u);
  EXPECT_EQ(*parse_size("1gib"), 1ull << 30);
  EXPECT_EQ(*parse_size("2GB"), 2000000000ull);
}

TEST(ParseSize, RefusesGarbageAndOverflow) {
  for (const char* bad : {"", "GiB", "1.5GiB", "-1", "10XB", "1 GiB", "99999999999999999999",
                          "20000000PiB"}) {
    auto r = parse_size(bad);
    EXPECT_FALSE(r.ok()) << bad;
    if (!r.ok()) {
      EXPECT_EQ(r.error().field, "size");
    }
  }
}

TEST(FormatSize, PicksTheLargestExactUnit) {
  EXPECT_EQ(format_size(1ull << 30), "1GiB");
  EXPECT_EQ(format_size(1536ull << 20), "1536MiB");
  EXPECT_EQ(format_size(512), "512B");
  EXPECT_EQ(format_size(64ull << 40), "64TiB");
}

TEST(ValidateSize, BoundsAndBlockMultiple) {
  EXPECT_TRUE(validate_size(1 << 20, 512).ok());
  EXPECT_TRUE(validate_size(64ull << 40, 4096).ok());
  EXPECT_FALSE(validate_size((1 << 20) - 512, 512).ok());
  EXPECT_FALSE(validate_size((64ull << 40) + 4096, 4096).ok());
  EXPECT_FALSE(validate_size((1 << 20) + 512, 4096).ok());
  EXPECT_TRUE(validate_size((1 << 20) + 512, 512).ok());
  EXPECT_FALSE(validate_block_size(1024).ok());
  EXPECT_TRUE(validate_block_size(4096).ok());
}

TEST(Labels, VolumeLabelsOverrideClassDefaults) {
  Labels cls{{"tandem/replicas", "2"}, {"tandem/failure-mode", "soft"}, {"team", "db"}};
  Labels own{{"tandem/replicas", "1"}, {"env", "prod"}};
  Labels eff = merge_labels(cls, own);
  EXPECT_EQ(eff.at("tandem/replicas"), "1");
  EXPECT_EQ(eff.at("tandem/failure-mode"), "soft");
  EXPECT_EQ(eff.at("team"), "db");
  EXPECT_EQ(eff.at("env"), "prod");
  auto s = resolve_settings(eff);
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->replicas, 1);
  EXPECT_EQ(s->failure_mode, FailureMode::kSoft);
}

TEST(Labels, DefaultsAreZeroReplicasHard) {
  auto s = resolve_settings({});
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->replicas, 0);
  EXPECT_EQ(s->failure_mode, FailureMode::kHard);
  EXPECT_TRUE(s->compression);
}

TEST(Labels, ThresholdOnlyWithThresholdMode) {
  EXPECT_FALSE(resolve_settings({{"tandem/failure-threshold", "1"}}).ok());
  EXPECT_FALSE(resolve_settings({{"tandem/failure-mode", "threshold"}}).ok());
  auto s = resolve_settings({{"tandem/replicas", "3"},
                             {"tandem/failure-mode", "threshold"},
                             {"tandem/failure-threshold", "2"}});
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->threshold, 2);
  EXPECT_FALSE(resolve_settings({{"tandem/replicas", "1"},
                                 {"tandem/failure-mode", "threshold"},
                                 {"tandem/failure-threshold", "2"}})
                   .ok());
}

TEST(Labels, RejectsBadValues) {
  for (Labels bad : std::vector<Labels>{{{"tandem/replicas", "6"}},
                                        {{"tandem/replicas", "-1"}},
                                        {{"tandem/replicas", "two"}},
                                        {{"tandem/replicas", "1x"}},
                                        {{"tandem/failure-mode", "sometimes"}},
                                        {{"tandem/compression", "maybe"}},
                                        {{"tandem/unknown", "1"}},
                                        {{"bad key", "1"}},
                                        {{"", "1"}}}) {
    EXPECT_FALSE(validate_labels(bad).ok()) << bad.begin()->first;
  }
  EXPECT_TRUE(validate_labels({{"app.kubernetes.io/name", "pg"}, {"tandem/replicas", "5"}}).ok());
  // A partial set: keys are fine, the threshold needs its mode from elsewhere (a class).
  Labels partial{{"tandem/failure-threshold", "1"}};
  EXPECT_TRUE(validate_label_keys(partial).ok());
  EXPECT_FALSE(validate_labels(partial).ok());
  EXPECT_FALSE(validate_label_keys({{"tandem/nope", "1"}}).ok());
}

TEST(Nodes, RequiredAndForHighAvailability) {
  VolumeSettings s;
  s.replicas = 2;
  EXPECT_EQ(nodes_required(s), 3);
  s.failure_mode = FailureMode::kHard;
  EXPECT_EQ(nodes_for_ha(s), 4);
  s.failure_mode = FailureMode::kSoft;
  EXPECT_EQ(nodes_for_ha(s), 3);
  s.failure_mode = FailureMode::kThreshold;
  s.threshold = 1;
  EXPECT_EQ(nodes_for_ha(s), 2);
  s.failure_mode = FailureMode::kAlwaysOn;
  EXPECT_EQ(nodes_for_ha(s), 1);
}

TEST(Identity, IqnAndUuid) {
  EXPECT_EQ(iqn_for("db1"), "iqn.2026-11.dev.tandem:db1");
  std::set<std::string> seen;
  for (int i = 0; i < 100; ++i) {
    auto u = new_uuid();
    ASSERT_EQ(u.size(), 36u);
    EXPECT_EQ(u[14], '4');
    EXPECT_TRUE(u[19] == '8' || u[19] == '9' || u[19] == 'a' || u[19] == 'b');
    seen.insert(u);
  }
  EXPECT_EQ(seen.size(), 100u);
}

}  // namespace
}  // namespace tandem::core
