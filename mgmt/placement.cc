#include "mgmt/placement.h"

#include <algorithm>
#include <tuple>

namespace tandem::mgmt {

std::vector<std::string> place_replicas(std::span<const PlacementNode> nodes,
                                        const std::set<std::string>& exclude_node_ids, int count) {
  std::vector<const PlacementNode*> candidates;
  for (const auto& n : nodes) {
    if (n.online && !exclude_node_ids.count(n.id)) candidates.push_back(&n);
  }
  std::sort(candidates.begin(), candidates.end(),
            [](const PlacementNode* a, const PlacementNode* b) {
              if (a->free_bytes != b->free_bytes) return a->free_bytes > b->free_bytes;
              return std::tie(a->name, a->id) < std::tie(b->name, b->id);
            });
  std::vector<std::string> out;
  std::set<std::string> taken;  // a node listed twice still gets one replica
  for (const auto* n : candidates) {
    if (static_cast<int>(out.size()) >= count) break;
    if (taken.insert(n->id).second) out.push_back(n->id);
  }
  return out;
}

std::vector<std::string> replicas_to_remove(std::span<const db::CopyRow> copies,
                                            std::span<const PlacementNode> nodes, int count) {
  struct Candidate {
    bool healthy;  // in-sync on an online node: dropped last
    uint64_t free_bytes;
    uint32_t number;
    const db::CopyRow* copy;
  };
  std::vector<Candidate> cands;
  for (const auto& c : copies) {
    if (c.role == "master") continue;
    const PlacementNode* node = nullptr;
    for (const auto& n : nodes) {
      if (n.id == c.node_id) node = &n;
    }
    bool healthy = node && node->online && c.state == db::kCopyInSync;
    cands.push_back({healthy, node ? node->free_bytes : 0, c.number, &c});
  }
  std::sort(cands.begin(), cands.end(), [](const Candidate& a, const Candidate& b) {
    if (a.healthy != b.healthy) return !a.healthy;
    if (a.free_bytes != b.free_bytes) return a.free_bytes < b.free_bytes;
    return a.number > b.number;
  });
  std::vector<std::string> out;
  for (const auto& c : cands) {
    if (static_cast<int>(out.size()) >= count) break;
    out.push_back(c.copy->id);
  }
  return out;
}

std::vector<PlacementNode> placement_nodes(const std::vector<db::NodeRow>& nodes) {
  std::vector<PlacementNode> out;
  out.reserve(nodes.size());
  for (const auto& n : nodes) out.push_back({n.id, n.name, n.state == "online", n.free_bytes});
  return out;
}

}  // namespace tandem::mgmt
