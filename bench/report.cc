#include "bench/report.h"

#include <cmath>

namespace tandem::bench {
namespace {

double Round3(double v) { return std::round(v * 1000.0) / 1000.0; }

double Micros(uint64_t nanos) { return Round3(static_cast<double>(nanos) / 1000.0); }

nlohmann::json DirectionJson(const DirectionStats& d, double seconds) {
  const double iops = seconds > 0 ? static_cast<double>(d.ops) / seconds : 0.0;
  const double mbps = seconds > 0 ? static_cast<double>(d.bytes) / seconds / 1e6 : 0.0;
  return {{"ops", d.ops},
          {"bytes", d.bytes},
          {"iops", Round3(iops)},
          {"mb_per_s", Round3(mbps)},
          {"lat_us", LatencyJson(d.latency)}};
}

}  // namespace

nlohmann::json LatencyJson(const LatencyHistogram& h) {
  return {{"min", Micros(h.min())},
          {"mean", Round3(h.mean() / 1000.0)},
          {"p50", Micros(h.percentile(50))},
          {"p99", Micros(h.percentile(99))},
          {"p99_9", Micros(h.percentile(99.9))},
          {"max", Micros(h.max())}};
}

nlohmann::json BuildReport(const Options& o, const LunInfo& lun, const RunStats& stats,
                           const std::optional<RunError>& error) {
  DirectionStats all;
  all.ops = stats.read.ops + stats.write.ops;
  all.bytes = stats.read.bytes + stats.write.bytes;
  all.latency = stats.read.latency;
  all.latency.merge(stats.write.latency);

  nlohmann::json j;
  j["tool"] = "tandem-bench";
  j["ok"] = !error.has_value();
  j["url"] = RedactUrl(o.url);
  j["lun"] = {{"portal", lun.portal},
              {"target", lun.target},
              {"lun", lun.lun},
              {"block_size", lun.block_size},
              {"capacity_bytes", lun.capacity_bytes}};
  nlohmann::json w = {{"rw", to_string(o.rw)},
                      {"bs", o.block_bytes},
                      {"qd", o.queue_depth},
                      {"pattern", o.pattern.to_string()},
                      {"verify", o.verify},
                      {"range_bytes", o.range_bytes == 0 ? lun.capacity_bytes : o.range_bytes},
                      {"warmup_s", o.warmup_seconds},
                      {"prefill", o.prefill},
                      {"seed", o.seed}};
  if (o.rw == RwMode::kMix) w["read_percent"] = o.read_percent;
  if (o.ops > 0) {
    w["ops"] = o.ops;
  } else {
    w["seconds"] = o.seconds;
  }
  j["workload"] = w;
  j["seconds"] = Round3(stats.seconds);
  const nlohmann::json total = DirectionJson(all, stats.seconds);
  j["ops"] = total["ops"];
  j["iops"] = total["iops"];
  j["mb_per_s"] = total["mb_per_s"];
  j["lat_us"] = total["lat_us"];
  j["read"] = DirectionJson(stats.read, stats.seconds);
  j["write"] = DirectionJson(stats.write, stats.seconds);
  if (o.verify) {
    j["verify"] = {{"blocks_verified", stats.blocks_verified},
                   {"blocks_unverified", stats.blocks_unverified}};
  }
  if (o.prefill) {
    j["prefill"] = {{"ops", stats.prefill_ops}, {"seconds", Round3(stats.prefill_seconds)}};
  }
  if (error) {
    nlohmann::json e = {{"kind", error->kind}, {"message", error->message}};
    if (error->lba) e["lba"] = *error->lba;
    j["error"] = e;
  }
  return j;
}

}  // namespace tandem::bench
