// Failure-mode policy: hand-written cases from the seed text, then every combination of
// mode x N x T x in-sync x time x latch flags against an independently written oracle.
#include "backend/repl/failure_policy.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace tandem::backend::repl {
namespace {

using core::FailureMode;
using std::chrono::milliseconds;
using H = VolumeHealth;

constexpr milliseconds kGrace{90'000};

PolicyDecision run(FailureMode m, int n, int t, int in_sync, milliseconds below,
                   bool sticky = false, bool relogin = false) {
  PolicyInput in;
  in.mode = m;
  in.replicas = n;
  in.threshold = t;
  in.in_sync = in_sync;
  in.below_for = below;
  in.grace = kGrace;
  in.sticky_read_only = sticky;
  in.relogged_in = relogin;
  return evaluate(in);
}

H health(FailureMode m, int n, int t, int in_sync, milliseconds below, bool sticky = false,
         bool relogin = false) {
  return run(m, n, t, in_sync, below, sticky, relogin).health;
}

// ---- Hand-written cases, one per sentence of the seed / DESIGN.md table. ----

TEST(FailurePolicy, NoReplicasIsNeverDegraded) {
  for (FailureMode m :
       {FailureMode::kHard, FailureMode::kSoft, FailureMode::kThreshold, FailureMode::kAlwaysOn}) {
    EXPECT_EQ(health(m, 0, 0, 0, milliseconds{0}), H::kHealthy);
    EXPECT_EQ(health(m, 0, 0, 0, kGrace * 10), H::kHealthy);
    EXPECT_FALSE(run(m, 0, 0, 0, kGrace * 10).below_requirement);
  }
}

TEST(FailurePolicy, HardAllInSyncIsHealthy) {
  EXPECT_EQ(health(FailureMode::kHard, 2, 0, 2, milliseconds{0}), H::kHealthy);
}

TEST(FailurePolicy, HardLostReplicaIsDegradedDuringGrace) {
  // "If a replica fails StorageOS will attempt creation of a new replica for 90 seconds."
  auto d = run(FailureMode::kHard, 1, 0, 0, milliseconds{89'999});
  EXPECT_EQ(d.health, H::kDegraded);
  EXPECT_TRUE(d.below_requirement);
  EXPECT_FALSE(d.sticky_read_only);
  EXPECT_EQ(d.remaining_grace, milliseconds{1});
}

TEST(FailurePolicy, HardGoesReadOnlyAfterGraceAndLatches) {
  // "After 90s ... StorageOS will therefore set the volume to be read-only."
  auto d = run(FailureMode::kHard, 1, 0, 0, kGrace);
  EXPECT_EQ(d.health, H::kReadOnly);
  EXPECT_TRUE(d.sticky_read_only);
  // Two replicas, one lost: hard still requires all of them.
  EXPECT_EQ(health(FailureMode::kHard, 2, 0, 1, kGrace), H::kReadOnly);
}

TEST(FailurePolicy, HardReadOnlyNeedsReplicasAndRelogin) {
  // "there are two stages to making it read-write again. Firstly, sufficient replicas ...
  //  Secondly, the volume must be remounted".
  EXPECT_EQ(health(FailureMode::kHard, 1, 0, 1, milliseconds{0}, true, false), H::kReadOnly);
  EXPECT_EQ(health(FailureMode::kHard, 1, 0, 0, milliseconds{0}, true, true), H::kReadOnly);
  auto d = run(FailureMode::kHard, 1, 0, 1, milliseconds{0}, true, true);
  EXPECT_EQ(d.health, H::kHealthy);
  EXPECT_FALSE(d.sticky_read_only);
  // A re-login while replicas are still missing does not release the latch.
  EXPECT_TRUE(run(FailureMode::kHard, 2, 0, 1, milliseconds{0}, true, true).sticky_read_only);
}

TEST(FailurePolicy, SoftTwoReplicasLosingOneKeepsServing) {
  // "if a volume with 2 replicas loses 1 replica, then I/O would continue to be served since
  //  1 replica remaining >= max(1, 1)".
  auto d = run(FailureMode::kSoft, 2, 0, 1, kGrace * 100);
  EXPECT_EQ(d.health, H::kDegraded);
  EXPECT_FALSE(d.below_requirement);
}

TEST(FailurePolicy, SoftOneReplicaLosingOneHaltsAfterGrace) {
  // "If a volume with 1 replica loses 1 replica, then I/O would halt after 90 seconds since
  //  0 replicas remaining < max(1, 0)."
  EXPECT_EQ(health(FailureMode::kSoft, 1, 0, 0, kGrace - milliseconds{1}), H::kDegraded);
  EXPECT_EQ(health(FailureMode::kSoft, 1, 0, 0, kGrace), H::kHalted);
  EXPECT_FALSE(run(FailureMode::kSoft, 1, 0, 0, kGrace).sticky_read_only);
  // Resumes by itself: no re-login needed.
  EXPECT_EQ(health(FailureMode::kSoft, 1, 0, 1, milliseconds{0}), H::kHealthy);
}

TEST(FailurePolicy, SoftThreeReplicasNeedTwo) {
  EXPECT_EQ(health(FailureMode::kSoft, 3, 0, 2, kGrace * 2), H::kDegraded);
  EXPECT_EQ(health(FailureMode::kSoft, 3, 0, 1, kGrace), H::kHalted);
}

TEST(FailurePolicy, ThresholdExamplesFromSeed) {
  // "for a volume with 2 replicas, setting the threshold to 1 would allow a single replica to
  //  be offline, whereas setting threshold to 0 would allow 2 replicas to be offline."
  EXPECT_EQ(health(FailureMode::kThreshold, 2, 1, 1, kGrace * 5), H::kDegraded);
  EXPECT_EQ(health(FailureMode::kThreshold, 2, 1, 0, kGrace), H::kHalted);
  EXPECT_EQ(health(FailureMode::kThreshold, 2, 0, 0, kGrace * 5), H::kDegraded);
  EXPECT_EQ(health(FailureMode::kThreshold, 2, 2, 1, kGrace), H::kHalted);
  EXPECT_EQ(health(FailureMode::kThreshold, 2, 1, 1, milliseconds{0}), H::kDegraded);
  EXPECT_EQ(health(FailureMode::kThreshold, 2, 1, 2, milliseconds{0}), H::kHealthy);
}

TEST(FailurePolicy, AlwaysOnNeverStops) {
  EXPECT_EQ(health(FailureMode::kAlwaysOn, 5, 0, 0, kGrace * 1000), H::kDegraded);
  EXPECT_EQ(health(FailureMode::kAlwaysOn, 5, 0, 5, milliseconds{0}), H::kHealthy);
  EXPECT_FALSE(run(FailureMode::kAlwaysOn, 5, 0, 0, kGrace).below_requirement);
}

TEST(FailurePolicy, OutOfRangeInputsAreClamped) {
  // More in-sync copies than declared (a returning replica racing a new one) is healthy.
  EXPECT_EQ(health(FailureMode::kHard, 1, 0, 2, milliseconds{0}), H::kHealthy);
  EXPECT_EQ(health(FailureMode::kHard, 1, 0, -1, milliseconds{0}), H::kDegraded);
  EXPECT_EQ(health(FailureMode::kThreshold, 1, 7, 1, kGrace), H::kHealthy);
  EXPECT_EQ(health(FailureMode::kThreshold, 1, -3, 0, kGrace), H::kDegraded);
  EXPECT_EQ(health(FailureMode::kSoft, -2, 0, 0, kGrace), H::kHealthy);
}

TEST(FailurePolicy, ModeChangeReleasesLatch) {
  EXPECT_EQ(health(FailureMode::kAlwaysOn, 1, 0, 0, kGrace, true, false), H::kDegraded);
  EXPECT_EQ(health(FailureMode::kSoft, 2, 0, 1, kGrace, true, false), H::kDegraded);
}

TEST(FailurePolicy, RequiredInSync) {
  EXPECT_EQ(required_in_sync(FailureMode::kHard, 3, 0), 3);
  EXPECT_EQ(required_in_sync(FailureMode::kSoft, 1, 0), 1);
  EXPECT_EQ(required_in_sync(FailureMode::kSoft, 3, 0), 2);
  EXPECT_EQ(required_in_sync(FailureMode::kSoft, 0, 0), 0);
  EXPECT_EQ(required_in_sync(FailureMode::kThreshold, 4, 2), 2);
  EXPECT_EQ(required_in_sync(FailureMode::kAlwaysOn, 4, 0), 0);
}

TEST(FailurePolicy, Strings) {
  EXPECT_STREQ(to_string(H::kHealthy), "healthy");
  EXPECT_STREQ(to_string(H::kReadOnly), "read-only");
  EXPECT_EQ(to_volume_state(H::kHalted), core::VolumeState::kHalted);
  EXPECT_EQ(to_volume_state(H::kReadOnly), core::VolumeState::kReadOnly);
  EXPECT_EQ(to_volume_state(H::kDegraded), core::VolumeState::kDegraded);
  EXPECT_EQ(to_volume_state(H::kHealthy), core::VolumeState::kHealthy);
}

// ---- Exhaustive check against an oracle written from the table, case by case. ----

struct Oracle {
  H health;
  bool below;
  bool latch;
};

Oracle oracle(FailureMode m, int n, int t, int s, bool grace_over, bool sticky, bool relogin) {
  if (m == FailureMode::kHard) {
    // Requirement: every declared replica.
    bool below = s < n;
    bool latch = sticky;
    if (sticky && s == n && relogin) latch = false;
    if (below && grace_over) latch = true;
    if (latch) return {H::kReadOnly, below, true};
    if (n == 0) return {H::kHealthy, false, false};
    return {s == n ? H::kHealthy : H::kDegraded, below, false};
  }
  if (n == 0) return {H::kHealthy, false, false};
  if (m == FailureMode::kAlwaysOn) return {s == n ? H::kHealthy : H::kDegraded, false, false};
  int need = 0;
  if (m == FailureMode::kSoft) need = (n - 1 > 1) ? n - 1 : 1;
  if (m == FailureMode::kThreshold) need = t;
  bool below = s < need;
  if (below) return {grace_over ? H::kHalted : H::kDegraded, true, false};
  return {s == n ? H::kHealthy : H::kDegraded, false, false};
}

TEST(FailurePolicy, ExhaustiveAgainstOracle) {
  const std::vector<milliseconds> grace_values = {milliseconds{0}, milliseconds{1},
                                                  milliseconds{90'000}};
  int checked = 0;
  for (FailureMode m :
       {FailureMode::kHard, FailureMode::kSoft, FailureMode::kThreshold, FailureMode::kAlwaysOn}) {
    for (int n = 0; n <= 5; ++n) {
      for (int t = 0; t <= n; ++t) {
        if (m != FailureMode::kThreshold && t != 0) continue;  // T only matters there
        for (int s = 0; s <= n; ++s) {
          for (milliseconds grace : grace_values) {
            std::vector<milliseconds> times = {milliseconds{0}, grace, grace + milliseconds{1},
                                               grace * 3 + milliseconds{7}};
            if (grace > milliseconds{0}) times.push_back(grace - milliseconds{1});
            for (milliseconds below : times) {
              for (int flags = 0; flags < 4; ++flags) {
                const bool sticky = flags & 1, relogin = flags & 2;
                PolicyInput in;
                in.mode = m;
                in.replicas = n;
                in.threshold = t;
                in.in_sync = s;
                in.below_for = below;
                in.grace = grace;
                in.sticky_read_only = sticky;
                in.relogged_in = relogin;
                const PolicyDecision d = evaluate(in);
                const Oracle o = oracle(m, n, t, s, below >= grace, sticky, relogin);
                const std::string where =
                    std::string(core::to_string(m)) + " N=" + std::to_string(n) +
                    " T=" + std::to_string(t) + " in_sync=" + std::to_string(s) +
                    " below=" + std::to_string(below.count()) +
                    "ms grace=" + std::to_string(grace.count()) +
                    "ms sticky=" + std::to_string(sticky) + " relogin=" + std::to_string(relogin);
                ASSERT_EQ(d.health, o.health) << where;
                ASSERT_EQ(d.below_requirement, o.below) << where;
                ASSERT_EQ(d.sticky_read_only, o.latch) << where;
                if (o.below && below < grace) {
                  ASSERT_EQ(d.remaining_grace, grace - below) << where;
                } else {
                  ASSERT_EQ(d.remaining_grace, milliseconds{0}) << where;
                }
                // Cross-cutting invariants.
                if (m != FailureMode::kHard) {
                  ASSERT_FALSE(d.sticky_read_only) << where;
                }
                if (d.health == H::kReadOnly) {
                  ASSERT_EQ(m, FailureMode::kHard) << where;
                }
                if (d.health == H::kHalted) {
                  ASSERT_TRUE(m == FailureMode::kSoft || m == FailureMode::kThreshold) << where;
                }
                if (n == 0 && !sticky) {
                  ASSERT_EQ(d.health, H::kHealthy) << where;
                }
                if (below < grace && !sticky) {
                  ASSERT_TRUE(d.health == H::kHealthy || d.health == H::kDegraded) << where;
                }
                ++checked;
              }
            }
          }
        }
      }
    }
  }
  EXPECT_GT(checked, 5000);
}

// Walk a volume through time the way the engine would: the latch and the clock are fed back.
TEST(FailurePolicy, HardTimelineWithFeedback) {
  PolicyInput in;
  in.mode = FailureMode::kHard;
  in.replicas = 2;
  in.in_sync = 2;
  in.grace = kGrace;
  auto step = [&](int in_sync, milliseconds below, bool relogin) {
    in.in_sync = in_sync;
    in.below_for = below;
    in.relogged_in = relogin;
    PolicyDecision d = evaluate(in);
    in.sticky_read_only = d.sticky_read_only;
    return d.health;
  };
  EXPECT_EQ(step(2, milliseconds{0}, false), H::kHealthy);
  EXPECT_EQ(step(1, milliseconds{0}, false), H::kDegraded);
  EXPECT_EQ(step(1, milliseconds{60'000}, false), H::kDegraded);
  EXPECT_EQ(step(1, milliseconds{90'000}, false), H::kReadOnly);
  EXPECT_EQ(step(2, milliseconds{0}, false), H::kReadOnly);  // replicas back, no re-login
  EXPECT_EQ(step(2, milliseconds{0}, false), H::kReadOnly);
  EXPECT_EQ(step(2, milliseconds{0}, true), H::kHealthy);
  EXPECT_EQ(step(2, milliseconds{0}, false), H::kHealthy);
}

}  // namespace
}  // namespace tandem::backend::repl
