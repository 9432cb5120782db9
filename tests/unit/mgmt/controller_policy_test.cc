// The controller's failover rules (mgmt/controller_policy.h), input by input.
#include "mgmt/controller_policy.h"

#include <gtest/gtest.h>

#include <vector>

namespace tandem::mgmt {
namespace {

TEST(ControllerPolicy, NodeExpiresAfterTheFullTimeout) {
  EXPECT_FALSE(node_expired(1000, 0, 4000, 3000));
  EXPECT_TRUE(node_expired(1000, 0, 4001, 3000));
}

TEST(ControllerPolicy, RestartedControllerGivesEveryNodeAFullTimeout) {
  // Last heard at 1000; the controller was down and restarted at 60000.
  EXPECT_FALSE(node_expired(1000, 60000, 60001, 3000));
  EXPECT_FALSE(node_expired(1000, 60000, 63000, 3000));
  EXPECT_TRUE(node_expired(1000, 60000, 63001, 3000));
  // A heartbeat after the restart counts from itself.
  EXPECT_FALSE(node_expired(62000, 60000, 65000, 3000));
  EXPECT_TRUE(node_expired(62000, 60000, 65001, 3000));
}

TEST(ControllerPolicy, LeaseLapsesBeforeTheControllerGivesUp) {
  EXPECT_EQ(lease_ms(3000), 2000);
  EXPECT_EQ(lease_until(500, 3000), 2500);
  EXPECT_TRUE(lease_holds(2500, 2499));
  EXPECT_FALSE(lease_holds(2500, 2500));
  EXPECT_FALSE(lease_holds(0, 1)) << "no answered heartbeat: no lease";
  // The controller received the heartbeat no earlier than it was sent, so it declares the
  // node gone no earlier than sent + timeout: a third of the timeout after the lease ended.
  for (int64_t timeout : {3, 300, 3000, 30000}) {
    const int64_t sent = 1000, received = 1000;
    EXPECT_LT(lease_until(sent, timeout), received + timeout);
    EXPECT_FALSE(node_expired(received, 0, lease_until(sent, timeout), timeout));
  }
}

TEST(ControllerPolicy, PromotesTheInSyncReplicaWithTheHighestAppliedSequence) {
  std::vector<PromotionCandidate> c = {
      {1, false, true, false, true, 900},  // the lost master itself
      {2, true, true, true, false, 700},  {3, true, true, true, false, 800},
      {4, true, false, true, false, 950},  // out of sync: never
      {5, true, true, false, false, 990},  // node offline: never
      {6, true, true, true, true, 995},    // on the lost node: never
  };
  auto p = pick_new_master(c);
  ASSERT_TRUE(p);
  EXPECT_EQ(c[*p].number, 3u);
  c[1].applied_seq = 800;  // a tie: the first given
  EXPECT_EQ(c[*pick_new_master(c)].number, 2u);
  c[1].in_sync = c[2].in_sync = false;
  EXPECT_FALSE(pick_new_master(c));
  EXPECT_FALSE(pick_new_master({}));
}

TEST(ControllerPolicy, EachGenerationNumbersAboveTheLast) {
  EXPECT_EQ(first_sequence(1), 0u);
  EXPECT_EQ(first_sequence(2), uint64_t{2} << 40);
  for (uint64_t g = 2; g < 100; ++g) EXPECT_GT(first_sequence(g + 1), first_sequence(g));
}

TEST(ControllerPolicy, LeftToCopy) {
  EXPECT_EQ(left_to_copy({1, CopySyncState::kInSync, 9, 1, 5}, 100), 0u);
  EXPECT_EQ(left_to_copy({1, CopySyncState::kSyncing, 50, 20, 5}, 100), 35u);
  EXPECT_EQ(left_to_copy({1, CopySyncState::kSyncing, 0, 0, 5}, 100), 106u) << "not measured";
  EXPECT_EQ(left_to_copy({1, CopySyncState::kOther, 50, 20, 5}, 100), 106u);
}

TEST(ControllerPolicy, SmallestDifferenceKeepsTheCopiesWithLeastLeft) {
  std::vector<DropCandidate> live = {
      {2, CopySyncState::kSyncing, 100, 10, 0},  // 90 left
      {5, CopySyncState::kSyncing, 100, 80, 0},  // 20 left
  };
  EXPECT_EQ(replicas_to_drop(live, 1, 1000), std::vector<size_t>{0});
  live[0].sync_done_bytes = 80;  // a tie: the lower number stays
  EXPECT_EQ(replicas_to_drop(live, 1, 1000), std::vector<size_t>{1});
  live[1].state = CopySyncState::kInSync;  // in sync always beats syncing
  EXPECT_EQ(replicas_to_drop(live, 1, 1000), std::vector<size_t>{0});
  EXPECT_TRUE(replicas_to_drop(live, 2, 1000).empty()) << "not too many";
}

TEST(ControllerPolicy, SmallestDifferenceWaitsForAnUnmeasuredCopy) {
  std::vector<DropCandidate> live = {
      {2, CopySyncState::kSyncing, 100, 10, 0},
      {5, CopySyncState::kOther, 0, 0, 0},  // returned, its resync not measured yet
  };
  EXPECT_TRUE(replicas_to_drop(live, 1, 1000).empty());
  live[0].state = CopySyncState::kInSync;  // enough in sync: the other goes at once
  EXPECT_EQ(replicas_to_drop(live, 1, 1000), std::vector<size_t>{1});
}

}  // namespace
}  // namespace tandem::mgmt
