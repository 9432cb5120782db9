// Placement: where a volume's replicas go and which go when the count drops. Pure
// functions over plain values (no catalogue, no clock), so every rule is unit-tested.
// Thread-safe (stateless).
#pragma once

#include <cstdint>
#include <set>
#include <span>
#include <string>
#include <vector>

#include "db/catalogue.h"

namespace tandem::mgmt {

struct PlacementNode {
  std::string id;
  std::string name;
  bool online = true;
  uint64_t free_bytes = 0;
};

// Up to `count` node ids for new replicas: online nodes not in exclude_node_ids, most free
// bytes first, ties broken by name. Fewer than `count` when the cluster has too few.
std::vector<std::string> place_replicas(std::span<const PlacementNode> nodes,
                                        const std::set<std::string>& exclude_node_ids, int count);

// Up to `count` replica copy ids to drop when a volume's replica count goes down: copies
// that are not in-sync or sit on offline (or unknown) nodes first, then those on the node
// with the least free space (ties: higher copy number first). Never the master.
std::vector<std::string> replicas_to_remove(std::span<const db::CopyRow> copies,
                                            std::span<const PlacementNode> nodes, int count);

// The placement view of catalogue nodes.
std::vector<PlacementNode> placement_nodes(const std::vector<db::NodeRow>& nodes);

}  // namespace tandem::mgmt
