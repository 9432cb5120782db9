#include "mgmt/api/json_views.h"

#include <ctime>

namespace tandem::mgmt {

using nlohmann::json;

std::string iso_time(int64_t ms) {
  if (ms <= 0) return "";
  std::time_t t = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[40];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  char out[48];
  std::snprintf(out, sizeof out, "%s.%03dZ", buf, static_cast<int>(ms % 1000));
  return out;
}

namespace {

std::string node_name_of(const std::vector<db::NodeRow>& nodes, const std::string& id) {
  for (const auto& n : nodes) {
    if (n.id == id) return n.name;
  }
  return id;
}

int online_count(const std::vector<db::NodeRow>& nodes) {
  int n = 0;
  for (const auto& node : nodes) n += node.state == "online";
  return n;
}

}  // namespace

json volume_json(const VolumeView& v, const std::vector<db::NodeRow>& nodes) {
  json copies = json::array();
  for (const auto& c : v.copies) {
    copies.push_back({{"id", c.id},
                      {"number", c.number},
                      {"node", node_name_of(nodes, c.node_id)},
                      {"node_id", c.node_id},
                      {"role", c.role},
                      {"state", c.state},
                      {"applied_seq", c.applied_seq},
                      {"sync_done_bytes", c.sync_done_bytes},
                      {"sync_total_bytes", c.sync_total_bytes},
                      {"behind_bytes", c.behind_bytes},
                      {"updated_at", iso_time(c.updated_ms)}});
  }
  const auto& s = v.settings;
  int ha = core::nodes_for_ha(s);
  return {{"id", v.row.id},
          {"name", v.row.name},
          {"iqn", core::iqn_for(v.row.name)},
          {"size_bytes", v.row.size_bytes},
          {"size", core::format_size(v.row.size_bytes)},
          {"block_size", v.row.block_size},
          {"class", v.row.class_name},
          {"labels", v.row.labels},
          {"effective_labels", v.effective},
          {"replicas", s.replicas},
          {"failure_mode", core::to_string(s.failure_mode)},
          {"failure_threshold", s.threshold},
          {"compression", s.compression},
          {"state", v.row.state},
          {"generation", v.row.generation},
          {"master", node_name_of(nodes, v.row.master_node)},
          {"copies", copies},
          {"nodes_required", core::nodes_required(s)},
          {"nodes_for_ha", ha},
          {"ha_available", online_count(nodes) >= ha},
          {"created_at", iso_time(v.row.created_ms)},
          {"updated_at", iso_time(v.row.updated_ms)}};
}

json access_json(const db::AccessRow& a) {
  // Secrets are write-only: never returned.
  return {{"initiators", a.initiators},
          {"chap", {{"enabled", !a.chap_user.empty()}, {"user", a.chap_user}}},
          {"mutual_chap", {{"enabled", !a.mutual_user.empty()}, {"user", a.mutual_user}}}};
}

json node_json(const db::NodeRow& n, size_t copies) {
  return {{"id", n.id},
          {"name", n.name},
          {"address", n.address},
          {"api_url", n.api_url},
          {"state", n.state},
          {"capacity_bytes", n.capacity_bytes},
          {"free_bytes", n.free_bytes},
          {"copies", copies},
          {"last_heartbeat", iso_time(n.last_heartbeat_ms)}};
}

json class_json(const db::ClassRow& c) {
  return {{"name", c.name}, {"labels", c.labels}, {"created_at", iso_time(c.created_ms)}};
}

json event_json(const db::EventRow& e) {
  return {{"seq", e.seq},         {"time", iso_time(e.time_ms)}, {"volume", e.volume},
          {"node", e.node},       {"kind", e.kind},              {"message", e.message}};
}

json cluster_json(const std::string& this_node, const std::vector<db::NodeRow>& nodes,
                  const std::vector<VolumeView>& volumes) {
  json by_state = json::object();
  for (const char* s : {"healthy", "degraded", "read-only", "halted", "offline"}) by_state[s] = 0;
  uint64_t provisioned = 0;
  for (const auto& v : volumes) {
    by_state[v.row.state] = by_state.value(v.row.state, 0) + 1;
    provisioned += v.row.size_bytes;
  }
  int online = online_count(nodes);
  bool healthy = online == static_cast<int>(nodes.size()) && by_state["degraded"] == 0 &&
                 by_state["read-only"] == 0 && by_state["halted"] == 0 &&
                 by_state["offline"] == 0;
  return {{"version", TANDEM_VERSION},
          {"node", this_node},
          {"controller", this_node},
          {"nodes", nodes.size()},
          {"nodes_online", online},
          {"volumes", volumes.size()},
          {"provisioned_bytes", provisioned},
          {"health", {{"status", healthy ? "healthy" : "degraded"}, {"volumes", by_state}}}};
}

}  // namespace tandem::mgmt
