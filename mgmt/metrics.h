// Metrics: the Prometheus registry of this node (prometheus-cpp core, served as text by our
// own /metrics route). Request counters and latency histograms are updated by the HTTP
// shell; volume and capacity gauges are refreshed from the catalogue at each scrape.
// Thread-safe (prometheus-cpp metrics are atomic; family creation is locked inside it).
#pragma once

#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "mgmt/cluster_service.h"

namespace prometheus {
class Registry;
template <class T>
class Family;
class Counter;
class Gauge;
class Histogram;
}  // namespace prometheus

namespace tandem::mgmt {

struct VolumeView;

class Metrics {
 public:
  Metrics();
  ~Metrics();

  // route: the route pattern ("/api/v1/volumes/{name}"), never the raw path, to bound
  // label cardinality.
  void observe_request(const std::string& method, const std::string& route, int status,
                       double seconds);
  std::string render(const std::vector<VolumeView>& volumes, uint64_t store_total_bytes,
                     uint64_t store_free_bytes);

  // Replication, sampled at each scrape: bytes sent raw (headers + uncompressed payloads) and
  // on the wire (after lz4, inside TLS), and the copies this node masters.
  struct ReplicationSample {
    uint64_t sent_raw_bytes = 0;
    uint64_t sent_wire_bytes = 0;
    std::vector<CopyReport> copies;
  };
  void set_replication_source(std::function<ReplicationSample()> f);
  // One replicated write's round trip (submission to the last replica's ACK), seconds.
  void observe_replicated_write(double seconds);

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Family<prometheus::Counter>* requests_;
  prometheus::Family<prometheus::Histogram>* latency_;
  prometheus::Family<prometheus::Gauge>* volumes_;
  prometheus::Family<prometheus::Gauge>* capacity_;
  prometheus::Family<prometheus::Gauge>* repl_bytes_;
  prometheus::Family<prometheus::Gauge>* lag_bytes_;
  prometheus::Family<prometheus::Gauge>* lag_seq_;
  prometheus::Histogram* repl_write_;
  prometheus::Counter* inline_backoffs_;
  uint64_t inline_backoffs_seen_ = 0;  // guarded by mu_
  std::mutex mu_;
  std::function<ReplicationSample()> replication_;  // guarded by mu_
};

}  // namespace tandem::mgmt
