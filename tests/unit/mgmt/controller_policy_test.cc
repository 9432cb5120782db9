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

TEST(ControllerPolicy, ARebootedReplicaIsNeverPickedFirst) {
  // Seed 5700 of sim_cluster: the replica whose node lost power was still recorded in sync.
  std::vector<PromotionCandidate> c = {
      {1, false, true, false, true, 900},       // the lost master
      {2, true, true, true, false, 990, true},  // rebooted: its unflushed writes are gone
      {3, true, true, true, false, 800},
  };
  EXPECT_EQ(c[*pick_new_master(c)].number, 3u) << "the intact one, though it is behind";
  auto m = choose_master(c);
  EXPECT_EQ(m.kind, MasterChoiceKind::kPromote);
  EXPECT_EQ(c[m.index].number, 3u);
  EXPECT_FALSE(m.unflushed_may_be_lost);
  c[2].in_sync = false;
  EXPECT_FALSE(pick_new_master(c));
}

TEST(ControllerPolicy, WaitsForAnIntactCopyRatherThanPromoteARebootedOne) {
  // The master was killed (its page cache, so every acknowledged write, survives); the only
  // online replica rebooted. Promoting it would lose what it had not flushed: wait.
  std::vector<PromotionCandidate> c = {
      {1, false, true, false, true, 900},
      {2, true, false, true, false, 990, true},
  };
  auto m = choose_master(c);
  EXPECT_EQ(m.kind, MasterChoiceKind::kWait);
  EXPECT_EQ(c[m.index].number, 1u);
  // An intact replica on an offline node is waited for too, and preferred to the old master
  // as the copy a caller may hand mastership to.
  c.push_back({3, true, true, false, false, 700});
  m = choose_master(c);
  EXPECT_EQ(m.kind, MasterChoiceKind::kWait);
  EXPECT_EQ(c[m.index].number, 3u);
  // It comes back: promoted.
  c[2].node_online = true;
  m = choose_master(c);
  EXPECT_EQ(m.kind, MasterChoiceKind::kPromote);
  EXPECT_EQ(c[m.index].number, 3u);
}

TEST(ControllerPolicy, WholeClusterPowerLossPromotesOnceEveryCopyIsBack) {
  // Every copy that was in sync rebooted (the master's too); copy 4 was out of sync before.
  std::vector<PromotionCandidate> c = {
      {1, false, false, false, true, 900, true},
      {2, true, false, true, false, 950, true},
      {3, true, false, false, false, 990, true},
      {4, true, false, true, false, 999},
  };
  auto m = choose_master(c);
  EXPECT_EQ(m.kind, MasterChoiceKind::kWait) << "the master's own copy is the best one";
  EXPECT_EQ(c[m.index].number, 1u);
  c[0].node_online = true;
  m = choose_master(c);
  EXPECT_EQ(m.kind, MasterChoiceKind::kPromote);
  EXPECT_EQ(c[m.index].number, 1u) << "kept, though copy 3 is still away";
  EXPECT_TRUE(m.unflushed_may_be_lost);
  // Without the master's copy (it was out of sync): the replicas, once all are back.
  c[0].rebooted = false;
  m = choose_master(c);
  EXPECT_EQ(m.kind, MasterChoiceKind::kWait) << "copy 3 may come back with more";
  EXPECT_EQ(c[m.index].number, 3u);
  c[2].node_online = true;
  m = choose_master(c);
  EXPECT_EQ(m.kind, MasterChoiceKind::kPromote);
  EXPECT_EQ(c[m.index].number, 3u) << "the highest applied sequence, never the out-of-sync 4";
  EXPECT_TRUE(m.unflushed_may_be_lost);
  // Nothing that was ever in sync: no choice.
  std::vector<PromotionCandidate> stale = {{1, false, false, true, true, 1},
                                           {2, true, false, true, false, 5}};
  EXPECT_EQ(choose_master(stale).kind, MasterChoiceKind::kNone);
  EXPECT_EQ(choose_master({}).kind, MasterChoiceKind::kNone);
}

// Over every combination of three copies' flags: a promotion never picks a rebooted copy while
// an intact one exists, and never an out-of-sync one.
TEST(ControllerPolicy, ChooseMasterNeverPrefersARebootedCopyExhaustively) {
  for (uint32_t bits = 0; bits < (1u << 12); ++bits) {
    std::vector<PromotionCandidate> c;
    for (uint32_t i = 0; i < 3; ++i) {
      const uint32_t b = bits >> (i * 4);
      PromotionCandidate p{i + 1, i != 0, (b & 1) != 0, (b & 2) != 0, i == 0, 100 + i};
      p.rebooted = (b & 4) != 0;
      c.push_back(p);
    }
    bool intact = false;
    for (const auto& p : c) intact |= p.in_sync && !p.rebooted;
    auto m = choose_master(c);
    if (m.kind != MasterChoiceKind::kPromote) continue;
    const PromotionCandidate& w = c[m.index];
    EXPECT_TRUE(w.in_sync || w.rebooted) << bits;
    if (intact) {
      EXPECT_TRUE(w.in_sync && !w.rebooted && w.node_online && w.replica) << bits;
      EXPECT_FALSE(m.unflushed_may_be_lost) << bits;
    } else {
      EXPECT_TRUE(w.rebooted && w.node_online && m.unflushed_may_be_lost) << bits;
      if (w.replica) {
        for (const auto& p : c) EXPECT_TRUE(!p.rebooted || p.node_online) << bits;
        EXPECT_FALSE(c[0].rebooted) << bits << ": the master's own copy goes first";
      }
    }
  }
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
