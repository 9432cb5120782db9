#include "mgmt/metrics.h"

#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>

#include <map>

#include "backend/store/file_volume.h"
#include "mgmt/volume_service.h"

namespace tandem::mgmt {

Metrics::Metrics() : registry_(std::make_shared<prometheus::Registry>()) {
  requests_ = &prometheus::BuildCounter()
                   .Name("tandem_http_requests_total")
                   .Help("HTTP requests served, by method, route and status code")
                   .Register(*registry_);
  latency_ = &prometheus::BuildHistogram()
                  .Name("tandem_http_request_duration_seconds")
                  .Help("HTTP request handling time, by route")
                  .Register(*registry_);
  volumes_ = &prometheus::BuildGauge()
                  .Name("tandem_volumes")
                  .Help("Volumes in the catalogue, by state")
                  .Register(*registry_);
  capacity_ = &prometheus::BuildGauge()
                   .Name("tandem_capacity_bytes")
                   .Help("Capacity: provisioned volume bytes and this node's store size/free")
                   .Register(*registry_);
  repl_bytes_ = &prometheus::BuildGauge()
                     .Name("tandem_replication_sent_bytes")
                     .Help("Replication bytes sent by this node: raw (uncompressed) and wire "
                           "(after lz4); raw/wire is the compression gain")
                     .Register(*registry_);
  lag_bytes_ = &prometheus::BuildGauge()
                    .Name("tandem_replica_lag_bytes")
                    .Help("Bytes a replica is behind its master (queued, in flight, resync left)")
                    .Register(*registry_);
  lag_seq_ = &prometheus::BuildGauge()
                  .Name("tandem_replica_lag_sequences")
                  .Help("Writes the master sequenced that a replica has not acknowledged")
                  .Register(*registry_);
  static const prometheus::Histogram::BucketBoundaries kWriteBuckets{
      0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1};
  repl_write_ = &prometheus::BuildHistogram()
                     .Name("tandem_replicated_write_seconds")
                     .Help("Round trip of replicated writes: local write and every in-sync "
                           "replica's acknowledgement")
                     .Register(*registry_)
                     .Add({}, kWriteBuckets);
  inline_backoffs_ = &prometheus::BuildCounter()
                          .Name("tandem_inline_write_backoffs_total")
                          .Help("Small writes done on a network thread that took longer than "
                                "the stall bound (writeback throttling, a journal wait); each "
                                "sends its volume's writes to the I/O pool for the back-off")
                          .Register(*registry_)
                          .Add({});
}

void Metrics::set_replication_source(std::function<ReplicationSample()> f) {
  std::lock_guard lock(mu_);
  replication_ = std::move(f);
}

void Metrics::observe_replicated_write(double seconds) { repl_write_->Observe(seconds); }

Metrics::~Metrics() = default;

void Metrics::observe_request(const std::string& method, const std::string& route, int status,
                              double seconds) {
  requests_->Add({{"method", method}, {"route", route}, {"code", std::to_string(status)}})
      .Increment();
  static const prometheus::Histogram::BucketBoundaries kBuckets{
      0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5};
  latency_->Add({{"route", route}}, kBuckets).Observe(seconds);
}

std::string Metrics::render(const std::vector<VolumeView>& volumes, uint64_t store_total_bytes,
                            uint64_t store_free_bytes) {
  std::map<std::string, double> by_state{
      {"healthy", 0}, {"degraded", 0}, {"read-only", 0}, {"halted", 0}, {"offline", 0}};
  double provisioned = 0;
  for (const auto& v : volumes) {
    by_state[v.row.state] += 1;
    provisioned += static_cast<double>(v.row.size_bytes);
  }
  for (const auto& [state, n] : by_state) volumes_->Add({{"state", state}}).Set(n);
  capacity_->Add({{"kind", "provisioned"}}).Set(provisioned);
  capacity_->Add({{"kind", "store_total"}}).Set(static_cast<double>(store_total_bytes));
  capacity_->Add({{"kind", "store_free"}}).Set(static_cast<double>(store_free_bytes));
  std::function<ReplicationSample()> source;
  {
    std::lock_guard lock(mu_);
    source = replication_;
    const uint64_t stalls = backend::FileVolume::inline_write_stalls_total();
    if (stalls > inline_backoffs_seen_) {
      inline_backoffs_->Increment(static_cast<double>(stalls - inline_backoffs_seen_));
      inline_backoffs_seen_ = stalls;
    }
  }
  if (source) {
    ReplicationSample r = source();
    repl_bytes_->Add({{"kind", "raw"}}).Set(static_cast<double>(r.sent_raw_bytes));
    repl_bytes_->Add({{"kind", "wire"}}).Set(static_cast<double>(r.sent_wire_bytes));
    std::map<std::string, uint64_t> head;  // the master's last sequence per volume
    for (const auto& c : r.copies) head[c.volume_id] = std::max(head[c.volume_id], c.applied_seq);
    for (const auto& c : r.copies) {
      std::map<std::string, std::string> labels{{"volume_id", c.volume_id},
                                                {"copy", std::to_string(c.number)}};
      lag_bytes_->Add(labels).Set(static_cast<double>(c.behind_bytes));
      lag_seq_->Add(labels).Set(static_cast<double>(head[c.volume_id] - c.applied_seq));
    }
  }
  return prometheus::TextSerializer().Serialize(registry_->Collect());
}

}  // namespace tandem::mgmt
