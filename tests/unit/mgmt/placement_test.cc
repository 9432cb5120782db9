#include "mgmt/placement.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <random>

namespace tandem::mgmt {
namespace {

using Ids = std::vector<std::string>;

db::CopyRow copy(std::string id, std::string node, std::string role, std::string state,
                 uint32_t number) {
  db::CopyRow c;
  c.id = std::move(id);
  c.volume_id = "v";
  c.node_id = std::move(node);
  c.role = std::move(role);
  c.state = std::move(state);
  c.number = number;
  return c;
}

TEST(PlaceReplicas, MostFreeFirstTiesByName) {
  std::vector<PlacementNode> nodes{{"a", "n-a", true, 100},
                                   {"b", "n-b", true, 300},
                                   {"c", "n-c", true, 100},
                                   {"d", "n-d", true, 200}};
  EXPECT_EQ(place_replicas(nodes, {}, 4), (Ids{"b", "d", "a", "c"}));
  EXPECT_EQ(place_replicas(nodes, {}, 2), (Ids{"b", "d"}));
  EXPECT_EQ(place_replicas(nodes, {}, 0), Ids{});
  EXPECT_EQ(place_replicas(nodes, {}, -1), Ids{});
}

TEST(PlaceReplicas, SkipsOfflineAndExcludedAndReturnsFewerWhenShort) {
  std::vector<PlacementNode> nodes{{"a", "n-a", true, 100},
                                   {"b", "n-b", false, 300},
                                   {"c", "n-c", true, 50},
                                   {"d", "n-d", true, 200}};
  EXPECT_EQ(place_replicas(nodes, {"d"}, 5), (Ids{"a", "c"}));
  EXPECT_EQ(place_replicas(nodes, {"a", "c", "d"}, 1), Ids{});
  EXPECT_EQ(place_replicas({}, {}, 3), Ids{});
}

TEST(PlaceReplicas, NodeListedTwiceGetsOneReplica) {
  std::vector<PlacementNode> nodes{{"a", "n-a", true, 100}, {"a", "n-a", true, 100}};
  EXPECT_EQ(place_replicas(nodes, {}, 2), Ids{"a"});
}

// Every subset of online flags and exclusions over a small cluster: the result is always a
// distinct, online, non-excluded prefix of the nodes ordered by (free desc, name).
TEST(PlaceReplicas, ExhaustiveSmallClusters) {
  std::mt19937 rng(7);
  for (int mask = 0; mask < (1 << 5); ++mask) {
    for (int excl = 0; excl < (1 << 5); ++excl) {
      std::vector<PlacementNode> nodes;
      for (int i = 0; i < 5; ++i) {
        nodes.push_back({"id" + std::to_string(i), "n" + std::to_string(i), (mask >> i & 1) != 0,
                         static_cast<uint64_t>(rng() % 3)});
      }
      std::set<std::string> ex;
      for (int i = 0; i < 5; ++i) {
        if (excl >> i & 1) ex.insert("id" + std::to_string(i));
      }
      for (int count = 0; count <= 6; ++count) {
        auto got = place_replicas(nodes, ex, count);
        std::vector<PlacementNode> eligible;
        for (const auto& n : nodes) {
          if (n.online && !ex.count(n.id)) eligible.push_back(n);
        }
        std::sort(eligible.begin(), eligible.end(), [](const auto& a, const auto& b) {
          return a.free_bytes != b.free_bytes ? a.free_bytes > b.free_bytes : a.name < b.name;
        });
        Ids want;
        for (size_t i = 0; i < eligible.size() && static_cast<int>(i) < count; ++i) {
          want.push_back(eligible[i].id);
        }
        ASSERT_EQ(got, want) << "mask " << mask << " excl " << excl << " count " << count;
      }
    }
  }
}

TEST(ReplicasToRemove, NeverTheMaster) {
  std::vector<db::CopyRow> copies{copy("m", "a", "master", "out-of-sync", 1),
                                  copy("r2", "b", "replica", "in-sync", 2)};
  std::vector<PlacementNode> nodes{{"a", "n-a", false, 0}, {"b", "n-b", true, 100}};
  EXPECT_EQ(replicas_to_remove(copies, nodes, 5), Ids{"r2"});
  EXPECT_EQ(replicas_to_remove(copies, nodes, 0), Ids{});
}

TEST(ReplicasToRemove, UnhealthyFirstThenLeastFree) {
  std::vector<db::CopyRow> copies{
      copy("m", "a", "master", "in-sync", 1), copy("r2", "b", "replica", "in-sync", 2),
      copy("r3", "c", "replica", "in-sync", 3), copy("r4", "d", "replica", "syncing", 4),
      copy("r5", "e", "replica", "in-sync", 5)};
  std::vector<PlacementNode> nodes{{"a", "n-a", true, 0},
                                   {"b", "n-b", true, 10},
                                   {"c", "n-c", true, 500},
                                   {"d", "n-d", true, 900},
                                   {"e", "n-e", false, 1000}};
  // r4 (syncing) and r5 (offline node) first, least free first among them; then b (10).
  EXPECT_EQ(replicas_to_remove(copies, nodes, 1), Ids{"r4"});
  EXPECT_EQ(replicas_to_remove(copies, nodes, 2), (Ids{"r4", "r5"}));
  EXPECT_EQ(replicas_to_remove(copies, nodes, 3), (Ids{"r4", "r5", "r2"}));
  EXPECT_EQ(replicas_to_remove(copies, nodes, 4), (Ids{"r4", "r5", "r2", "r3"}));
}

TEST(ReplicasToRemove, CopyOnUnknownNodeCountsAsOffline) {
  std::vector<db::CopyRow> copies{copy("r2", "b", "replica", "in-sync", 2),
                                  copy("r3", "gone", "replica", "in-sync", 3)};
  std::vector<PlacementNode> nodes{{"b", "n-b", true, 0}};
  EXPECT_EQ(replicas_to_remove(copies, nodes, 1), Ids{"r3"});
}

TEST(ReplicasToRemove, EqualFreeDropsTheNewestCopy) {
  std::vector<db::CopyRow> copies{copy("r2", "b", "replica", "in-sync", 2),
                                  copy("r3", "c", "replica", "in-sync", 3)};
  std::vector<PlacementNode> nodes{{"b", "n-b", true, 5}, {"c", "n-c", true, 5}};
  EXPECT_EQ(replicas_to_remove(copies, nodes, 1), Ids{"r3"});
}

}  // namespace
}  // namespace tandem::mgmt
