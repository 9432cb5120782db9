#include "bench/report.h"

#include <gtest/gtest.h>

namespace tandem::bench {
namespace {

Options SomeOptions() {
  Options o;
  o.url = "iscsi://u%pw@127.0.0.2/iqn.2026-11.dev.tandem:v/0";
  o.rw = RwMode::kMix;
  o.read_percent = 70;
  o.queue_depth = 32;
  o.seconds = 2;
  o.verify = true;
  return o;
}

TEST(Report, TotalsRatesAndPercentiles) {
  RunStats s;
  s.seconds = 2.0;
  for (int i = 0; i < 300; ++i) {
    s.read.latency.record(100'000);  // 100 us
    s.read.bytes += 4096;
    ++s.read.ops;
  }
  for (int i = 0; i < 100; ++i) {
    s.write.latency.record(200'000);
    s.write.bytes += 4096;
    ++s.write.ops;
  }
  s.blocks_verified = 2400;
  LunInfo lun{"127.0.0.2", "iqn.2026-11.dev.tandem:v", 0, 512, 1 << 30};
  const nlohmann::json j = BuildReport(SomeOptions(), lun, s, std::nullopt);
  EXPECT_TRUE(j["ok"].get<bool>());
  EXPECT_EQ(j["ops"].get<uint64_t>(), 400u);
  EXPECT_DOUBLE_EQ(j["iops"].get<double>(), 200.0);
  EXPECT_DOUBLE_EQ(j["read"]["iops"].get<double>(), 150.0);
  EXPECT_DOUBLE_EQ(j["write"]["iops"].get<double>(), 50.0);
  EXPECT_NEAR(j["mb_per_s"].get<double>(), 400 * 4096 / 2.0 / 1e6, 0.001);
  EXPECT_NEAR(j["read"]["lat_us"]["p50"].get<double>(), 100.0, 1.0);
  EXPECT_NEAR(j["lat_us"]["p99"].get<double>(), 200.0, 2.0);
  EXPECT_EQ(j["url"], "iscsi://u%***@127.0.0.2/iqn.2026-11.dev.tandem:v/0");
  EXPECT_EQ(j["workload"]["rw"], "mix");
  EXPECT_EQ(j["workload"]["read_percent"], 70);
  EXPECT_EQ(j["workload"]["range_bytes"], 1u << 30);
  EXPECT_EQ(j["verify"]["blocks_verified"], 2400);
  EXPECT_FALSE(j.contains("error"));
  EXPECT_EQ(j["lun"]["block_size"], 512);
}

TEST(Report, ErrorCarriesKindAndLba) {
  const nlohmann::json j =
      BuildReport(SomeOptions(), LunInfo{}, RunStats{}, RunError{"verify", "lost write", 1234});
  EXPECT_FALSE(j["ok"].get<bool>());
  EXPECT_EQ(j["error"]["kind"], "verify");
  EXPECT_EQ(j["error"]["lba"], 1234);
  EXPECT_DOUBLE_EQ(j["iops"].get<double>(), 0.0);  // no division by zero seconds
}

}  // namespace
}  // namespace tandem::bench
