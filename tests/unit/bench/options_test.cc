#include "bench/options.h"

#include <gtest/gtest.h>

namespace tandem::bench {
namespace {

constexpr const char* kUrl = "iscsi://127.0.0.2/iqn.2026-11.dev.tandem:v/0";

ParseOutcome Parse(std::vector<std::string> extra) {
  std::vector<std::string> args = {"tandem-bench", "--url", kUrl};
  args.insert(args.end(), extra.begin(), extra.end());
  return ParseOptions(args);
}

TEST(ParseSize, Units) {
  EXPECT_EQ(ParseSize("4096"), 4096u);
  EXPECT_EQ(ParseSize("4k"), 4096u);
  EXPECT_EQ(ParseSize("4K"), 4096u);
  EXPECT_EQ(ParseSize("4KiB"), 4096u);
  EXPECT_EQ(ParseSize("1m"), 1048576u);
  EXPECT_EQ(ParseSize("1MiB"), 1048576u);
  EXPECT_EQ(ParseSize("2g"), 2147483648u);
  EXPECT_EQ(ParseSize("1TiB"), uint64_t{1} << 40);
  EXPECT_EQ(ParseSize("1MB"), 1000000u);
  EXPECT_EQ(ParseSize("1GB"), 1000000000u);
  EXPECT_EQ(ParseSize("0"), 0u);
  EXPECT_FALSE(ParseSize(""));
  EXPECT_FALSE(ParseSize("k"));
  EXPECT_FALSE(ParseSize("4x"));
  EXPECT_FALSE(ParseSize("-4k"));
  EXPECT_FALSE(ParseSize("4 k"));
  EXPECT_FALSE(ParseSize("99999999999999999999"));
  EXPECT_FALSE(ParseSize("20000000TiB"));  // overflows 64 bits
}

TEST(ParseOptions, Defaults) {
  const ParseOutcome r = Parse({});
  ASSERT_TRUE(r.options) << r.message;
  const Options& o = *r.options;
  EXPECT_EQ(o.url, kUrl);
  EXPECT_EQ(o.block_bytes, 4096u);
  EXPECT_EQ(o.queue_depth, 1);
  EXPECT_EQ(o.rw, RwMode::kRandRead);
  EXPECT_EQ(o.seconds, 10.0);
  EXPECT_EQ(o.ops, 0u);
  EXPECT_EQ(o.pattern.kind, PatternSpec::Kind::kRandom);
  EXPECT_FALSE(o.verify);
  EXPECT_EQ(o.range_bytes, 0u);
  EXPECT_TRUE(o.timeline_path.empty());
}

TEST(ParseOptions, EveryOption) {
  const ParseOutcome r = Parse({"--bs",
                                "1m",
                                "--qd",
                                "32",
                                "--rw",
                                "mix",
                                "--mix",
                                "70",
                                "--ops",
                                "1000",
                                "--pattern",
                                "compressible:2",
                                "--verify",
                                "--range",
                                "1GiB",
                                "--warmup",
                                "1.5",
                                "--prefill",
                                "--initiator-name",
                                "iqn.x:y",
                                "--seed",
                                "9",
                                "--timeout",
                                "5",
                                "--timeline",
                                "/tmp/t.txt"});
  ASSERT_TRUE(r.options) << r.message;
  const Options& o = *r.options;
  EXPECT_EQ(o.block_bytes, 1u << 20);
  EXPECT_EQ(o.queue_depth, 32);
  EXPECT_EQ(o.rw, RwMode::kMix);
  EXPECT_EQ(o.read_percent, 70);
  EXPECT_EQ(o.ops, 1000u);
  EXPECT_EQ(o.pattern.kind, PatternSpec::Kind::kCompressible);
  EXPECT_DOUBLE_EQ(o.pattern.ratio, 2.0);
  EXPECT_TRUE(o.verify);
  EXPECT_EQ(o.range_bytes, uint64_t{1} << 30);
  EXPECT_DOUBLE_EQ(o.warmup_seconds, 1.5);
  EXPECT_TRUE(o.prefill);
  EXPECT_EQ(o.initiator_name, "iqn.x:y");
  EXPECT_EQ(o.seed, 9u);
  EXPECT_EQ(o.timeout_seconds, 5);
  EXPECT_EQ(o.timeline_path, "/tmp/t.txt");
}

TEST(ParseOptions, UsageErrorsExitTwo) {
  const std::vector<std::vector<std::string>> bad = {{"--bs", "3000"},
                                                     {"--bs", "0"},
                                                     {"--bs", "lots"},
                                                     {"--qd", "0"},
                                                     {"--qd", "5000"},
                                                     {"--rw", "trim"},
                                                     {"--rw", "mix", "--mix", "101"},
                                                     {"--mix", "50"},  // --mix without --rw mix
                                                     {"--pattern", "zeros"},
                                                     {"--pattern", "compressible:0.5"},
                                                     {"--pattern", "compressible:"},
                                                     {"--seconds", "0"},
                                                     {"--seconds", "1", "--ops", "5"},
                                                     {"--range", "1k"},
                                                     {"--warmup", "-1"},
                                                     {"--unknown"},
                                                     {"--qd", "x"}};
  for (const auto& args : bad) {
    const ParseOutcome r = Parse(args);
    EXPECT_FALSE(r.options) << args[0];
    EXPECT_EQ(r.exit_code, kExitUsage) << args[0];
    EXPECT_FALSE(r.message.empty()) << args[0];
  }
  const ParseOutcome no_url = ParseOptions({"tandem-bench"});
  EXPECT_EQ(no_url.exit_code, kExitUsage);
  const ParseOutcome not_iscsi = ParseOptions({"tandem-bench", "--url", "http://x/y/0"});
  EXPECT_EQ(not_iscsi.exit_code, kExitUsage);
}

TEST(ParseOptions, HelpExitsZeroWithText) {
  const ParseOutcome r = ParseOptions({"tandem-bench", "--help"});
  EXPECT_FALSE(r.options);
  EXPECT_EQ(r.exit_code, kExitOk);
  EXPECT_NE(r.message.find("--qd"), std::string::npos);
}

TEST(CheckAgainstLun, GeometryRules) {
  Options o = *Parse({}).options;
  EXPECT_FALSE(CheckAgainstLun(o, 512, 1 << 30));
  EXPECT_FALSE(CheckAgainstLun(o, 4096, 1 << 30));
  o.block_bytes = 2048;
  EXPECT_TRUE(CheckAgainstLun(o, 4096, 1 << 30));  // not a multiple of the LUN block
  o.block_bytes = 4096;
  o.range_bytes = uint64_t{2} << 30;
  EXPECT_TRUE(CheckAgainstLun(o, 512, 1 << 30));  // beyond capacity
  o.range_bytes = 0;
  EXPECT_TRUE(CheckAgainstLun(o, 512, 2048));  // LUN smaller than one I/O
  o.verify = true;
  o.queue_depth = 32;
  o.range_bytes = 32 * 4096;
  EXPECT_TRUE(CheckAgainstLun(o, 512, 1 << 30));  // verify needs 2 x qd chunks
  o.range_bytes = 64 * 4096;
  EXPECT_FALSE(CheckAgainstLun(o, 512, 1 << 30));
  EXPECT_EQ(ChunkCount(o, 1 << 30), 64u);
  o.range_bytes = 0;
  EXPECT_EQ(ChunkCount(o, 1 << 30), (1u << 30) / 4096);
}

TEST(RedactUrl, HidesPasswordOnly) {
  EXPECT_EQ(RedactUrl("iscsi://user%secret@h/iqn.x/0"), "iscsi://user%***@h/iqn.x/0");
  EXPECT_EQ(RedactUrl("iscsi://user@h/iqn.x/0"), "iscsi://user@h/iqn.x/0");
  EXPECT_EQ(RedactUrl(kUrl), kUrl);
}

}  // namespace
}  // namespace tandem::bench
