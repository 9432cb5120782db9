// Metrics: the Prometheus registry of this node (prometheus-cpp core, served as text by our
// own /metrics route). Request counters and latency histograms are updated by the HTTP
// shell; volume and capacity gauges are refreshed from the catalogue at each scrape.
// Thread-safe (prometheus-cpp metrics are atomic; family creation is locked inside it).
#pragma once

#include <memory>
#include <string>
#include <vector>

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

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Family<prometheus::Counter>* requests_;
  prometheus::Family<prometheus::Histogram>* latency_;
  prometheus::Family<prometheus::Gauge>* volumes_;
  prometheus::Family<prometheus::Gauge>* capacity_;
};

}  // namespace tandem::mgmt
