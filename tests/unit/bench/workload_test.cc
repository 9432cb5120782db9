#include "bench/workload.h"

#include <gtest/gtest.h>

#include <map>
#include <set>

namespace tandem::bench {
namespace {

TEST(RwMode, ParseAndName) {
  for (const char* name : {"read", "write", "randread", "randwrite", "mix"}) {
    const auto m = ParseRwMode(name);
    ASSERT_TRUE(m) << name;
    EXPECT_STREQ(to_string(*m), name);
  }
  EXPECT_EQ(ParseRwMode("randrw"), RwMode::kMix);
  EXPECT_FALSE(ParseRwMode("trim"));
  EXPECT_FALSE(IsRandom(RwMode::kRead));
  EXPECT_TRUE(IsRandom(RwMode::kMix));
}

TEST(OpGenerator, SequentialWrapsAround) {
  OpGenerator g(RwMode::kRead, 0, 4, 1, nullptr);
  std::vector<uint64_t> chunks;
  for (int i = 0; i < 10; ++i) {
    const auto op = g.next();
    ASSERT_TRUE(op);
    EXPECT_FALSE(op->is_write);
    chunks.push_back(op->chunk);
    g.complete(*op, true);
  }
  EXPECT_EQ(chunks, (std::vector<uint64_t>{0, 1, 2, 3, 0, 1, 2, 3, 0, 1}));
}

TEST(OpGenerator, RandomCoversRangeAndIsSeeded) {
  OpGenerator a(RwMode::kRandWrite, 0, 100, 9, nullptr), b(RwMode::kRandWrite, 0, 100, 9, nullptr);
  std::set<uint64_t> seen;
  for (int i = 0; i < 5000; ++i) {
    const auto x = a.next();
    const auto y = b.next();
    ASSERT_TRUE(x && y);
    EXPECT_EQ(x->chunk, y->chunk);
    EXPECT_TRUE(x->is_write);
    EXPECT_LT(x->chunk, 100u);
    EXPECT_EQ(x->generation, static_cast<uint64_t>(i + 1));
    seen.insert(x->chunk);
  }
  EXPECT_EQ(seen.size(), 100u);
  EXPECT_EQ(a.writes_issued(), 5000u);
}

TEST(OpGenerator, MixFollowsReadPercent) {
  OpGenerator g(RwMode::kMix, 70, 1000, 3, nullptr);
  int reads = 0;
  for (int i = 0; i < 20'000; ++i) reads += !g.next()->is_write;
  EXPECT_NEAR(reads / 20'000.0, 0.70, 0.02);
  OpGenerator all_reads(RwMode::kMix, 100, 1000, 3, nullptr);
  OpGenerator all_writes(RwMode::kMix, 0, 1000, 3, nullptr);
  for (int i = 0; i < 1000; ++i) {
    EXPECT_FALSE(all_reads.next()->is_write);
    EXPECT_TRUE(all_writes.next()->is_write);
  }
}

TEST(OpGenerator, TrackerNeverHandsOutABusyChunk) {
  ChunkTracker t(8);
  OpGenerator g(RwMode::kMix, 50, 8, 5, &t);
  std::vector<Op> in_flight;
  for (int round = 0; round < 2000; ++round) {
    while (in_flight.size() < 4) {
      const auto op = g.next();
      if (!op) break;
      for (const Op& other : in_flight) ASSERT_NE(other.chunk, op->chunk);
      in_flight.push_back(*op);
    }
    ASSERT_FALSE(in_flight.empty());
    // Complete a pseudo-random one.
    const size_t k = static_cast<size_t>(round) % in_flight.size();
    g.complete(in_flight[k], true);
    in_flight.erase(in_flight.begin() + static_cast<long>(k));
  }
}

TEST(OpGenerator, ReadsExpectTheLastSuccessfulWrite) {
  ChunkTracker t(4);
  OpGenerator w(RwMode::kWrite, 0, 4, 1, &t);
  std::map<uint64_t, uint64_t> last;
  for (int i = 0; i < 4; ++i) {
    const auto op = w.next();
    last[op->chunk] = op->generation;
    w.complete(*op, true);
  }
  // A second generator on the same tracker continues the generation sequence.
  OpGenerator g(RwMode::kMix, 50, 4, 2, &t);
  for (int i = 0; i < 500; ++i) {
    const auto op = g.next();
    ASSERT_TRUE(op);
    if (op->is_write) {
      EXPECT_GT(op->generation, 4u);
      const bool ok = i % 7 != 0;  // some writes fail
      g.complete(*op, ok);
      last[op->chunk] = ok ? op->generation : ChunkTracker::kUnknown;
    } else {
      EXPECT_EQ(op->generation, last[op->chunk]) << "chunk " << op->chunk;
      g.complete(*op, true);
    }
  }
}

TEST(OpGenerator, SequentialSkipsBusyChunksAndReportsWhenAllBusy) {
  ChunkTracker t(2);
  OpGenerator g(RwMode::kWrite, 0, 2, 1, &t);
  const auto a = g.next();
  const auto b = g.next();
  ASSERT_TRUE(a && b);
  EXPECT_NE(a->chunk, b->chunk);
  EXPECT_FALSE(g.next());
  g.complete(*a, true);
  const auto c = g.next();
  ASSERT_TRUE(c);
  EXPECT_EQ(c->chunk, a->chunk);
}

}  // namespace
}  // namespace tandem::bench
