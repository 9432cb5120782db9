// Focused unit tests of the pure replication engines: one rule per test, driven by hand.
// The randomized, fault-injecting coverage is in sim_replication_test.cc.
#include <gtest/gtest.h>

#include <variant>

#include "backend/repl/master_engine.h"
#include "backend/repl/ordered_io.h"
#include "backend/repl/replica_engine.h"
#include "backend/repl/resync.h"
#include "backend/wire/sync_delta.h"

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"  // GCC 12 false positive on variants
#endif

namespace tandem::backend::repl {
namespace {

constexpr uint32_t kBs = 512;
constexpr uint64_t kBlocks = 64;
const wire::Uuid kVol{1, 2, 3};

template <class T, class V>
std::vector<T> only(const std::vector<V>& actions) {
  std::vector<T> out;
  for (const V& a : actions) {
    if (std::holds_alternative<T>(a)) out.push_back(std::get<T>(a));
  }
  return out;
}

Payload block_data(uint64_t blocks, uint8_t fill) {
  return make_payload(std::vector<uint8_t>(blocks * kBs, fill));
}

RegionGeometry geo() { return RegionGeometry{kBlocks * kBs, kBs, 12}; }

ReplicaConfig replica_config(uint32_t copy) {
  ReplicaConfig c;
  c.volume = kVol;
  c.copy_id = copy;
  c.generation = 5;
  c.block_size = kBs;
  c.block_count = kBlocks;
  return c;
}

struct MasterFixture {
  explicit MasterFixture(uint64_t budget = 1 << 20) {
    MasterConfig c;
    c.volume = kVol;
    c.generation = 5;
    c.block_size = kBs;
    c.block_count = kBlocks;
    c.max_inflight_bytes = budget;
    c.sync_hash_unit = 512;  // 8 units per 4 KiB region
    engine = std::make_unique<MasterEngine>(c, &map);
    EXPECT_TRUE(engine->add_copy(1, true, true).ok());
  }
  Request write(uint64_t id, uint64_t lba, uint64_t blocks, uint8_t fill = 0xAB) {
    Request r;
    r.id = id;
    r.kind = OpKind::kWrite;
    r.lba = lba;
    r.blocks = blocks;
    r.data = block_data(blocks, fill);
    return r;
  }
  wire::Frame ack(uint64_t seq, uint64_t gen = 5) {
    wire::Frame f;
    f.header.type = wire::FrameType::kAck;
    f.header.volume = kVol;
    f.header.copy_id = 1;
    f.header.generation = gen;
    f.header.sequence = seq;
    return f;
  }
  wire::Frame nack(uint64_t seq, wire::NackReason reason, uint64_t gen = 5) {
    wire::Frame f = ack(seq, gen);
    f.header.type = wire::FrameType::kNack;
    f.header.status = uint32_t(reason);
    return f;
  }
  RegionMap map = std::move(*RegionMap::in_memory(geo()));
  std::unique_ptr<MasterEngine> engine;
};

TEST(MasterEngine, WriteCompletesAfterLocalWriteAndEveryInSyncAck) {
  MasterFixture m;
  m.engine->submit(m.write(7, 0, 2));
  auto a = m.engine->take_actions();
  auto sends = only<SendFrame>(a);
  auto stores = only<IssueStore>(a);
  ASSERT_EQ(sends.size(), 1u);
  ASSERT_EQ(stores.size(), 1u);
  EXPECT_EQ(sends[0].header.type, wire::FrameType::kWrite);
  EXPECT_EQ(sends[0].header.sequence, 1u);
  EXPECT_EQ(sends[0].header.generation, 5u);
  EXPECT_EQ(m.map.seq_of(0), 1u);  // marked before the write was handed out
  m.engine->on_store_done(stores[0].op.tag, {});
  EXPECT_TRUE(only<CompleteOp>(m.engine->take_actions()).empty());
  m.engine->on_frame(1, m.ack(1));
  auto done = only<CompleteOp>(m.engine->take_actions());
  ASSERT_EQ(done.size(), 1u);
  EXPECT_EQ(done[0].id, 7u);
  EXPECT_EQ(done[0].sequence, 1u);
  EXPECT_TRUE(done[0].result.ok());
}

TEST(MasterEngine, CumulativeAckCompletesEverySequenceUpToIt) {
  MasterFixture m;
  for (uint64_t i = 1; i <= 3; ++i) m.engine->submit(m.write(10 + i, i * 4, 1));
  for (const auto& st : only<IssueStore>(m.engine->take_actions())) {
    m.engine->on_store_done(st.op.tag, {});
  }
  EXPECT_TRUE(only<CompleteOp>(m.engine->take_actions()).empty());
  wire::Frame through = m.ack(2);
  through.header.count = wire::kAckThrough;
  m.engine->on_frame(1, through);
  auto done = only<CompleteOp>(m.engine->take_actions());
  ASSERT_EQ(done.size(), 2u);
  EXPECT_EQ(done[0].sequence, 1u);
  EXPECT_EQ(done[1].sequence, 2u);
  EXPECT_EQ(m.engine->copy_progress(1)->acked_through, 2u);
  // A single ACK still names one sequence; a repeated cumulative one changes nothing.
  m.engine->on_frame(1, through);
  EXPECT_TRUE(only<CompleteOp>(m.engine->take_actions()).empty());
  m.engine->on_frame(1, m.ack(3));
  done = only<CompleteOp>(m.engine->take_actions());
  ASSERT_EQ(done.size(), 1u);
  EXPECT_EQ(done[0].id, 13u);
  EXPECT_EQ(m.engine->copy_progress(1)->pending_bytes, 0u);
}

TEST(MasterEngine, CumulativeAckOfAnEarlierStreamCoversNothingOfTheNext) {
  MasterFixture m;
  m.engine->submit(m.write(1, 0, 1));
  (void)m.engine->take_actions();
  // The copy drops out and is resynced: its new stream starts above SYNC_REQUEST's sequence.
  m.engine->on_frame(1, m.nack(1, wire::NackReason::kNotReady));
  m.engine->confirm_out_of_sync(1);
  ASSERT_TRUE(m.engine->start_resync(1).ok());
  m.engine->submit(m.write(2, 8, 1));
  auto sends = only<SendFrame>(m.engine->take_actions());
  ASSERT_FALSE(sends.empty());
  const uint64_t sync_at = sends.front().header.sequence;  // SYNC_REQUEST
  EXPECT_EQ(sends.front().header.type, wire::FrameType::kSyncRequest);
  const uint64_t pending = m.engine->copy_progress(1)->pending_bytes;
  ASSERT_GT(pending, 0u);
  // A cumulative ACK the copy sent in its old stream (at most that stream's last sequence).
  wire::Frame old = m.ack(sync_at);
  old.header.count = wire::kAckThrough;
  m.engine->on_frame(1, old);
  EXPECT_EQ(m.engine->copy_progress(1)->pending_bytes, pending);
  wire::Frame now = m.ack(sync_at + 2);
  now.header.count = wire::kAckThrough;
  m.engine->on_frame(1, now);
  EXPECT_LT(m.engine->copy_progress(1)->pending_bytes, pending);
}

TEST(MasterEngine, NackDropsTheCopyAndCompletionWaitsForTheController) {
  MasterFixture m;
  m.engine->submit(m.write(1, 0, 1));
  auto stores = only<IssueStore>(m.engine->take_actions());
  m.engine->on_store_done(stores[0].op.tag, {});
  m.engine->on_frame(1, m.nack(1, wire::NackReason::kIoError));
  auto a = m.engine->take_actions();
  auto oos = only<CopyOutOfSync>(a);
  ASSERT_EQ(oos.size(), 1u);
  EXPECT_TRUE(oos[0].needs_confirm);
  EXPECT_TRUE(only<CompleteOp>(a).empty());
  EXPECT_EQ(m.engine->copy_state(1), CopyState::kOutOfSync);
  m.engine->confirm_out_of_sync(1);
  auto done = only<CompleteOp>(m.engine->take_actions());
  ASSERT_EQ(done.size(), 1u);
  EXPECT_TRUE(done[0].result.ok());
  // The next write no longer goes to the dropped copy.
  m.engine->submit(m.write(2, 8, 1));
  EXPECT_TRUE(only<SendFrame>(m.engine->take_actions()).empty());
}

TEST(MasterEngine, LinkDownStopsWaiting) {
  MasterFixture m;
  m.engine->submit(m.write(1, 0, 1));
  auto stores = only<IssueStore>(m.engine->take_actions());
  m.engine->on_store_done(stores[0].op.tag, {});
  m.engine->on_link_down(1);
  m.engine->confirm_out_of_sync(1);
  EXPECT_EQ(only<CompleteOp>(m.engine->take_actions()).size(), 1u);
}

TEST(MasterEngine, StaleGenerationNackDeposesTheMaster) {
  MasterFixture m;
  m.engine->submit(m.write(1, 0, 1));
  auto stores = only<IssueStore>(m.engine->take_actions());
  m.engine->on_store_done(stores[0].op.tag, {});
  m.engine->on_frame(1, m.nack(1, wire::NackReason::kStaleGeneration, 6));
  auto a = m.engine->take_actions();
  ASSERT_EQ(only<Deposed>(a).size(), 1u);
  auto done = only<CompleteOp>(a);
  ASSERT_EQ(done.size(), 1u);
  EXPECT_EQ(done[0].result.status, core::IoStatus::kNotReady);
  m.engine->submit(m.write(2, 0, 1));
  done = only<CompleteOp>(m.engine->take_actions());
  ASSERT_EQ(done.size(), 1u);
  EXPECT_EQ(done[0].result.status, core::IoStatus::kNotReady);
}

TEST(MasterEngine, ByteBudgetQueuesFramesInsteadOfFailing) {
  MasterFixture m(wire::max_frame_size(kBs));  // one 1-block frame in flight
  for (uint64_t i = 0; i < 3; ++i) m.engine->submit(m.write(i + 1, i * 8, 1));
  auto sends = only<SendFrame>(m.engine->take_actions());
  ASSERT_EQ(sends.size(), 1u);
  EXPECT_EQ(m.engine->stats().frames_queued_for_budget > 0, true);
  m.engine->on_frame(1, m.ack(1));
  sends = only<SendFrame>(m.engine->take_actions());
  ASSERT_EQ(sends.size(), 1u);
  EXPECT_EQ(sends[0].header.sequence, 2u);
}

TEST(MasterEngine, OverlappingWritesReachTheStoreInSequenceOrder) {
  MasterFixture m;
  m.engine->submit(m.write(1, 0, 4));
  m.engine->submit(m.write(2, 2, 4));   // overlaps 1
  m.engine->submit(m.write(3, 32, 1));  // independent
  auto stores = only<IssueStore>(m.engine->take_actions());
  ASSERT_EQ(stores.size(), 2u);
  EXPECT_EQ(stores[0].op.seq, 1u);
  EXPECT_EQ(stores[1].op.seq, 3u);
  m.engine->on_store_done(stores[0].op.tag, {});
  stores = only<IssueStore>(m.engine->take_actions());
  ASSERT_EQ(stores.size(), 1u);
  EXPECT_EQ(stores[0].op.seq, 2u);
}

TEST(MasterEngine, OverlappingWritesCompleteInSequenceOrder) {
  MasterFixture m;
  m.engine->submit(m.write(1, 0, 4));
  m.engine->submit(m.write(2, 0, 4));
  auto stores = only<IssueStore>(m.engine->take_actions());
  m.engine->on_store_done(stores[0].op.tag, {});
  stores = only<IssueStore>(m.engine->take_actions());
  m.engine->on_store_done(stores[0].op.tag, {});
  m.engine->on_frame(1, m.ack(2));  // the later one is fully acknowledged first
  EXPECT_TRUE(only<CompleteOp>(m.engine->take_actions()).empty());
  m.engine->on_frame(1, m.ack(1));
  auto done = only<CompleteOp>(m.engine->take_actions());
  ASSERT_EQ(done.size(), 2u);
  EXPECT_EQ(done[0].id, 1u);
  EXPECT_EQ(done[1].id, 2u);
}

TEST(MasterEngine, FlushWaitsForEarlierWritesAndEveryAck) {
  MasterFixture m;
  m.engine->submit(m.write(1, 0, 1));
  Request f;
  f.id = 2;
  f.kind = OpKind::kFlush;
  m.engine->submit(f);
  auto a = m.engine->take_actions();
  auto stores = only<IssueStore>(a);
  ASSERT_EQ(stores.size(), 1u);  // the flush waits for the write
  ASSERT_EQ(only<SendFrame>(a).size(), 2u);
  EXPECT_EQ(only<SendFrame>(a)[1].header.type, wire::FrameType::kFlush);
  m.engine->on_store_done(stores[0].op.tag, {});
  stores = only<IssueStore>(m.engine->take_actions());
  ASSERT_EQ(stores.size(), 1u);
  EXPECT_EQ(stores[0].op.kind, StoreKind::kFlush);
  m.engine->on_store_done(stores[0].op.tag, {});
  m.engine->on_frame(1, m.ack(2));
  EXPECT_TRUE(only<CompleteOp>(m.engine->take_actions()).empty());  // write 1 unacked
  m.engine->on_frame(1, m.ack(1));
  EXPECT_EQ(only<CompleteOp>(m.engine->take_actions()).size(), 2u);
}

TEST(MasterEngine, CompareAndWriteComparesLocallyThenReplicatesAPlainWrite) {
  MasterFixture m;
  Request r = m.write(1, 4, 1, 0xCD);
  r.kind = OpKind::kCompareAndWrite;
  r.compare = block_data(1, 0);
  m.engine->submit(r);
  m.engine->submit(m.write(2, 4, 1));  // must wait behind the compare
  auto a = m.engine->take_actions();
  auto stores = only<IssueStore>(a);
  ASSERT_EQ(stores.size(), 1u);
  EXPECT_EQ(stores[0].op.kind, StoreKind::kRead);
  EXPECT_TRUE(only<SendFrame>(a).empty());
  m.engine->on_store_done(stores[0].op.tag, {}, block_data(1, 0));
  auto sends = only<SendFrame>(m.engine->take_actions());
  ASSERT_EQ(sends.size(), 2u);
  EXPECT_EQ(sends[0].header.type, wire::FrameType::kWrite);
  EXPECT_EQ(sends[0].header.sequence, 1u);
  EXPECT_EQ((*sends[0].payload)[0], 0xCD);
  EXPECT_EQ(sends[1].header.sequence, 2u);
}

TEST(MasterEngine, CompareAndWriteMiscompareReportsTheOffset) {
  MasterFixture m;
  Request r = m.write(1, 4, 1, 0xCD);
  r.kind = OpKind::kCompareAndWrite;
  r.compare = block_data(1, 0);
  m.engine->submit(r);
  auto stores = only<IssueStore>(m.engine->take_actions());
  std::vector<uint8_t> current(kBs, 0);
  current[100] = 1;
  m.engine->on_store_done(stores[0].op.tag, {}, make_payload(current));
  auto a = m.engine->take_actions();
  auto done = only<CompleteOp>(a);
  ASSERT_EQ(done.size(), 1u);
  EXPECT_EQ(done[0].result.status, core::IoStatus::kMiscompare);
  EXPECT_EQ(done[0].result.miscompare_offset, 100u);
  EXPECT_TRUE(only<SendFrame>(a).empty());
  EXPECT_EQ(m.engine->last_sequence(), 0u);  // no sequence used
}

TEST(MasterEngine, OutOfRangeFailsWithoutASequence) {
  MasterFixture m;
  m.engine->submit(m.write(1, kBlocks - 1, 2));
  auto done = only<CompleteOp>(m.engine->take_actions());
  ASSERT_EQ(done.size(), 1u);
  EXPECT_EQ(done[0].result.status, core::IoStatus::kOutOfRange);
  EXPECT_EQ(m.engine->last_sequence(), 0u);
}
// A new master's SYNC_REQUEST reaching a replica that has not heard of the promotion yet:
// the copy drops out of sync (a later resync is retried) instead of waiting for a
// REGION_SUMMARY that never comes (sim_cluster seed 73).
TEST(MasterEngine, NotReadyNackFromAReplicaBehindOnGenerationsEndsTheSession) {
  MasterFixture m;
  ASSERT_TRUE(m.engine->add_copy(2, false, true).ok());
  ASSERT_TRUE(m.engine->start_resync(2).ok());
  (void)m.engine->take_actions();
  EXPECT_EQ(m.engine->copy_state(2), CopyState::kSyncing);
  ReplicaConfig rc;
  rc.volume = kVol;
  rc.copy_id = 2;
  rc.generation = 4;  // still the old one
  rc.block_size = kBs;
  rc.block_count = kBlocks;
  RegionMap rmap = std::move(*RegionMap::in_memory(geo()));
  ReplicaEngine replica(rc, &rmap);
  wire::Frame req;
  req.header.type = wire::FrameType::kSyncRequest;
  req.header.volume = kVol;
  req.header.copy_id = 2;
  req.header.generation = 5;
  replica.on_frame(req);
  auto sends = only<ReplicaSendFrame>(replica.take_actions());
  ASSERT_EQ(sends.size(), 1u);
  m.engine->on_frame(2, wire::Frame{sends[0].header, {}});
  auto oos = only<CopyOutOfSync>(m.engine->take_actions());
  ASSERT_EQ(oos.size(), 1u);
  EXPECT_FALSE(oos[0].needs_confirm);
  EXPECT_EQ(m.engine->copy_state(2), CopyState::kOutOfSync);
  EXPECT_TRUE(m.engine->start_resync(2).ok());
}

// A restarted or newly promoted master adds every other copy out of sync; one the catalogue
// still counts in sync could be promoted, so nothing is acknowledged without it until the
// controller recorded it out of sync (sim_cluster seed 1154 lost an acknowledged write).
TEST(MasterEngine, CopyRecordedInSyncButAddedOutOfSyncGatesUntilConfirmed) {
  MasterConfig c;
  c.volume = kVol;
  c.generation = 6;
  c.last_sequence = uint64_t{6} << 40;
  c.block_size = kBs;
  c.block_count = kBlocks;
  RegionMap map = std::move(*RegionMap::in_memory(geo()));
  MasterEngine engine(c, &map);
  ASSERT_TRUE(engine.add_copy(1, false, true, /*recorded_in_sync=*/true).ok());
  ASSERT_TRUE(engine.add_copy(2, false, true, /*recorded_in_sync=*/false).ok());
  auto oos = only<CopyOutOfSync>(engine.take_actions());
  ASSERT_EQ(oos.size(), 1u);
  EXPECT_EQ(oos[0].copy, 1u);
  EXPECT_TRUE(oos[0].needs_confirm);
  Request r;
  r.id = 9;
  r.kind = OpKind::kWrite;
  r.blocks = 1;
  r.data = block_data(1, 0x11);
  engine.submit(r);
  auto stores = only<IssueStore>(engine.take_actions());
  ASSERT_EQ(stores.size(), 1u);
  engine.on_store_done(stores[0].op.tag, {});
  EXPECT_TRUE(only<CompleteOp>(engine.take_actions()).empty());
  engine.confirm_out_of_sync(1);
  auto done = only<CompleteOp>(engine.take_actions());
  ASSERT_EQ(done.size(), 1u);
  EXPECT_TRUE(done[0].result.ok());
}

// ---- Replica ----

struct ReplicaFixture {
  ReplicaFixture() {
    ReplicaConfig c = replica_config(2);
    c.reorder_window = 4;
    engine = std::make_unique<ReplicaEngine>(c, &map, 0);
  }
  wire::Frame write(uint64_t seq, uint64_t lba, uint64_t gen = 5) {
    wire::Frame f;
    f.header.type = wire::FrameType::kWrite;
    f.header.volume = kVol;
    f.header.copy_id = 2;
    f.header.generation = gen;
    f.header.sequence = seq;
    f.header.lba = lba;
    f.payload.assign(kBs, uint8_t(seq));
    return f;
  }
  RegionMap map = std::move(*RegionMap::in_memory(geo()));
  std::unique_ptr<ReplicaEngine> engine;
};

TEST(ReplicaEngine, MarksTheMapThenWritesThenAcks) {
  ReplicaFixture r;
  r.engine->on_frame(r.write(1, 9));
  auto stores = only<ReplicaIssueStore>(r.engine->take_actions());
  ASSERT_EQ(stores.size(), 1u);
  EXPECT_EQ(r.map.seq_of(r.map.region_of(9)), 1u);
  EXPECT_EQ(r.engine->applied_seq(), 0u);
  r.engine->on_store_done(stores[0].op.tag, {});
  auto sends = only<ReplicaSendFrame>(r.engine->take_actions());
  ASSERT_EQ(sends.size(), 1u);
  EXPECT_EQ(sends[0].header.type, wire::FrameType::kAck);
  EXPECT_EQ(sends[0].header.sequence, 1u);
  EXPECT_EQ(r.engine->applied_seq(), 1u);
}

TEST(ReplicaEngine, HoldsFramesAheadWithinTheWindowAndAppliesInOrder) {
  ReplicaFixture r;
  r.engine->on_frame(r.write(3, 0));
  r.engine->on_frame(r.write(2, 0));
  EXPECT_TRUE(r.engine->take_actions().empty());
  EXPECT_EQ(r.engine->held_frames(), 2u);
  r.engine->on_frame(r.write(1, 0));
  auto stores = only<ReplicaIssueStore>(r.engine->take_actions());
  ASSERT_EQ(stores.size(), 1u);  // same block: one at a time, in order
  EXPECT_EQ(stores[0].op.seq, 1u);
  r.engine->on_store_done(stores[0].op.tag, {});
  stores = only<ReplicaIssueStore>(r.engine->take_actions());
  ASSERT_EQ(stores.size(), 1u);
  EXPECT_EQ(stores[0].op.seq, 2u);
}

TEST(ReplicaEngine, GapBeyondTheWindowIsNackedOutOfOrder) {
  ReplicaFixture r;
  r.engine->on_frame(r.write(9, 0));
  auto sends = only<ReplicaSendFrame>(r.engine->take_actions());
  ASSERT_EQ(sends.size(), 1u);
  EXPECT_EQ(sends[0].header.type, wire::FrameType::kNack);
  EXPECT_EQ(sends[0].header.status, uint32_t(wire::NackReason::kOutOfOrder));
  EXPECT_EQ(r.engine->state(), ReplicaState::kIdle);
}

TEST(ReplicaEngine, GenerationRules) {
  ReplicaFixture r;
  r.engine->on_frame(r.write(1, 0, 4));
  auto sends = only<ReplicaSendFrame>(r.engine->take_actions());
  ASSERT_EQ(sends.size(), 1u);
  EXPECT_EQ(sends[0].header.status, uint32_t(wire::NackReason::kStaleGeneration));
  EXPECT_EQ(sends[0].header.generation, 5u);
  r.engine->on_frame(r.write(1, 0, 6));
  sends = only<ReplicaSendFrame>(r.engine->take_actions());
  ASSERT_EQ(sends.size(), 1u);
  EXPECT_EQ(sends[0].header.status, uint32_t(wire::NackReason::kNotReady));
  // In the sender's generation, or the new master would ignore it (sim_cluster seed 73).
  EXPECT_EQ(sends[0].header.generation, 6u);
  ASSERT_TRUE(r.engine->set_generation(6).ok());
  EXPECT_FALSE(r.engine->set_generation(5).ok());
  // The new master starts its stream with SYNC_REQUEST.
  wire::Frame req;
  req.header.type = wire::FrameType::kSyncRequest;
  req.header.volume = kVol;
  req.header.copy_id = 2;
  req.header.generation = 6;
  req.header.sequence = 10;
  r.engine->on_frame(req);
  sends = only<ReplicaSendFrame>(r.engine->take_actions());
  ASSERT_EQ(sends.size(), 1u);
  EXPECT_EQ(sends[0].header.type, wire::FrameType::kRegionSummary);
  EXPECT_TRUE(sends[0].header.flags & wire::kFlagLast);
  r.engine->on_frame(r.write(11, 0, 6));
  EXPECT_EQ(only<ReplicaIssueStore>(r.engine->take_actions()).size(), 1u);
}

TEST(ReplicaEngine, FramesForAnotherCopyAreRefused) {
  ReplicaFixture r;
  wire::Frame f = r.write(1, 0);
  f.header.copy_id = 3;
  r.engine->on_frame(f);
  auto sends = only<ReplicaSendFrame>(r.engine->take_actions());
  ASSERT_EQ(sends.size(), 1u);
  EXPECT_EQ(sends[0].header.status, uint32_t(wire::NackReason::kUnknownCopy));
}

TEST(ReplicaEngine, AfterRestartDataFramesWaitForSyncRequest) {
  RegionMap map = std::move(*RegionMap::in_memory(geo()));
  ReplicaEngine e(replica_config(2), &map);
  ReplicaFixture helper;
  e.on_frame(helper.write(1, 0));
  auto sends = only<ReplicaSendFrame>(e.take_actions());
  ASSERT_EQ(sends.size(), 1u);
  EXPECT_EQ(sends[0].header.status, uint32_t(wire::NackReason::kNotReady));
}

// A promotion: the copy holds a write of the old master that the new master never had
// (never acknowledged), stamped above what the new master has for that region. Resync data
// from before the new stream overwrites it; a write of the new stream newer than the resync
// data still means a broken stream.
TEST(ReplicaEngine, ResyncOverwritesAnOldMastersUnacknowledgedWrite) {
  ReplicaFixture r;
  std::vector<ReplicaIssueStore> stores;
  for (uint64_t seq = 1; seq <= 3; ++seq) {  // region 0 (8 blocks) @3, from generation 5
    r.engine->on_frame(r.write(seq, 0));
    stores = only<ReplicaIssueStore>(r.engine->take_actions());
    ASSERT_EQ(stores.size(), 1u);
    r.engine->on_store_done(stores[0].op.tag, {});
    (void)r.engine->take_actions();
  }
  ASSERT_TRUE(r.engine->set_generation(6).ok());
  const uint64_t s = uint64_t{6} << 40;
  wire::Frame req;
  req.header.type = wire::FrameType::kSyncRequest;
  req.header.volume = kVol;
  req.header.copy_id = 2;
  req.header.generation = 6;
  req.header.sequence = s;
  r.engine->on_frame(req);
  (void)r.engine->take_actions();
  auto sync_data = [&](uint64_t region, uint64_t stamp) {
    wire::Frame f;
    f.header.type = wire::FrameType::kSyncDelta;
    f.header.volume = kVol;
    f.header.copy_id = 2;
    f.header.generation = 6;
    f.header.sequence = stamp;
    f.header.count = region;
    f.header.lba = region * 8;
    f.header.status = kBs;
    f.header.flags = wire::kFlagLast;
    const std::vector<uint8_t> data(8 * kBs, uint8_t(0x5A));
    f.payload = wire::encode_sync_delta(data, kBs, std::vector<bool>(8, true));
    return f;
  };
  r.engine->on_frame(sync_data(0, 2));  // the new master has region 0 @2: it never had 3
  auto a = r.engine->take_actions();
  EXPECT_TRUE(only<ReplicaSendFrame>(a).empty());
  stores = only<ReplicaIssueStore>(a);
  ASSERT_EQ(stores.size(), 1u);
  EXPECT_EQ(stores[0].op.lba, 0u);
  EXPECT_EQ(stores[0].op.blocks, 8u);
  EXPECT_EQ(r.map.seq_of(0), 2u);
  r.engine->on_store_done(stores[0].op.tag, {});
  (void)r.engine->take_actions();
  wire::Frame w = r.write(s + 1, 8, 6);  // region 1 @s+1, a write of this stream
  r.engine->on_frame(w);
  stores = only<ReplicaIssueStore>(r.engine->take_actions());
  ASSERT_EQ(stores.size(), 1u);
  r.engine->on_store_done(stores[0].op.tag, {});
  (void)r.engine->take_actions();
  r.engine->on_frame(sync_data(1, 2));
  auto sends = only<ReplicaSendFrame>(r.engine->take_actions());
  ASSERT_EQ(sends.size(), 1u);
  EXPECT_EQ(sends[0].header.type, wire::FrameType::kNack);
  EXPECT_EQ(sends[0].header.status, uint32_t(wire::NackReason::kBadRequest));
}

// ---- Resync planning and OrderedIo ----

TEST(Resync, PlanSendsOnlyRegionsThatDiffer) {
  RegionMap master = std::move(*RegionMap::in_memory(geo()));  // 8 blocks per region
  ASSERT_TRUE(master.mark(0, 1, 3).ok());                      // region 0 @3
  ASSERT_TRUE(master.mark(8, 1, 4).ok());                      // region 1 @4
  ASSERT_TRUE(master.mark(16, 1, 5).ok());                     // region 2 @5
  std::vector<wire::RegionEntry> summary{{0, 3}, {1, 2}, {5, kUnknownSeq}};
  auto plan = plan_resync(master, summary);
  ASSERT_TRUE(plan.ok());
  // Never-written 3, 4, 6, 7 skipped; the copy never wrote region 2 (no hashes needed).
  const uint64_t rb = 8 * kBs;
  EXPECT_EQ(*plan, (std::vector<PlannedRegion>{{1, rb, false}, {2, rb, true}, {5, rb, false}}));
  std::vector<wire::RegionEntry> bad{{99, 1}};
  EXPECT_FALSE(plan_resync(master, bad).ok());
}

TEST(Resync, SessionBoundsInFlightRegions) {
  ResyncSession s({{1, 100, false}, {2, 100, true}, {5, 100, false}}, 2);
  EXPECT_EQ(s.next()->region, 1u);
  EXPECT_EQ(s.next()->region, 2u);
  EXPECT_FALSE(s.next());
  EXPECT_FALSE(s.ack(5));
  EXPECT_TRUE(s.ack(2));
  EXPECT_EQ(s.next()->region, 5u);
  EXPECT_TRUE(s.ack(1));
  EXPECT_FALSE(s.done());
  EXPECT_TRUE(s.ack(5));
  EXPECT_TRUE(s.done());
  EXPECT_EQ(s.last_acked(), 5u);
}

// Progress in bytes: every region counts whole until compared, then what it sends.
TEST(Resync, SessionBytesFallAsRegionsAreCompared) {
  ResyncSession s({{1, 4096, false}, {2, 4096, false}, {3, 1024, true}}, 8);
  EXPECT_EQ(s.total_bytes(), 9216u);
  ASSERT_TRUE(s.next());
  ASSERT_TRUE(s.next());
  s.diffed(1, 512);
  EXPECT_EQ(s.total_bytes(), 512u + 4096 + 1024);
  s.diffed(1, 0);  // a second comparison of the same region changes nothing
  EXPECT_EQ(s.total_bytes(), 512u + 4096 + 1024);
  EXPECT_TRUE(s.ack(1));
  EXPECT_EQ(s.done_bytes(), 512u);
  s.diffed(2, 0);
  EXPECT_TRUE(s.ack(2));
  ASSERT_TRUE(s.next());
  s.diffed(3, 1024);
  EXPECT_TRUE(s.ack(3));
  EXPECT_TRUE(s.done());
  EXPECT_EQ(s.done_bytes(), 1536u);
  EXPECT_EQ(s.total_bytes(), 1536u);
}

// Master and one replica wired directly (stores complete at once, frames delivered in order).
struct Pair {
  // in_sync: both start empty and in sync (else the copy needs a resync first).
  explicit Pair(bool in_sync = false) {
    if (!in_sync) {
      EXPECT_TRUE(m.engine->remove_copy(1).ok());
      EXPECT_TRUE(m.engine->add_copy(1, false, true).ok());
    }
    const ReplicaConfig rc = replica_config(1);
    replica = in_sync ? std::make_unique<ReplicaEngine>(rc, &rmap, 0)
                      : std::make_unique<ReplicaEngine>(rc, &rmap);
  }
  void drop_link() {
    up = false;
    m.engine->on_link_down(1);
    m.engine->confirm_out_of_sync(1);
    replica->on_link_down();
  }
  static Payload run(std::vector<uint8_t>& disk, const StoreOp& op) {
    uint8_t* at = disk.data() + op.lba * kBs;
    if (op.kind == StoreKind::kWrite) std::copy(op.data->begin(), op.data->end(), at);
    if (op.kind == StoreKind::kUnmap) std::fill(at, at + op.blocks * kBs, 0);
    if (op.kind == StoreKind::kRead) return make_payload({at, at + op.blocks * kBs});
    return nullptr;
  }
  void pump() {
    for (bool busy = true; busy;) {
      busy = false;
      for (auto& a : m.engine->take_actions()) {
        busy = true;
        if (auto* is = std::get_if<IssueStore>(&a)) {
          m.engine->on_store_done(is->op.tag, {}, run(master_disk, is->op));
        } else if (auto* sf = std::get_if<SendFrame>(&a)) {
          if (sf->header.type == wire::FrameType::kSyncDelta) {
            regions_sent.push_back(sf->header.count);
          }
          if (sf->header.type == wire::FrameType::kSyncHashRequest) ++hash_requests;
          wire::Frame f{sf->header, sf->payload ? *sf->payload : std::vector<uint8_t>()};
          if (up) replica->on_frame(f);
        } else if (std::holds_alternative<CopyInSync>(a)) {
          ++in_sync;
        } else if (std::holds_alternative<CompleteOp>(a)) {
          ++completed;
        }
      }
      for (auto& a : replica->take_actions()) {
        busy = true;
        if (auto* is = std::get_if<ReplicaIssueStore>(&a)) {
          if (is->op.resync && is->op.kind == StoreKind::kWrite) {
            resync_written += is->op.data->size();
          }
          replica->on_store_done(is->op.tag, {}, run(replica_disk, is->op));
        } else if (auto* sf = std::get_if<ReplicaSendFrame>(&a)) {
          if (up) {
            m.engine->on_frame(
                1, wire::Frame{sf->header, sf->payload ? *sf->payload : std::vector<uint8_t>()});
          }
        }
      }
    }
  }
  void resync() {
    regions_sent.clear();
    hash_requests = 0;
    resync_written = 0;
    ASSERT_TRUE(m.engine->start_resync(1).ok());
  }
  void expect_joined() {
    EXPECT_EQ(m.engine->copy_state(1), CopyState::kInSync);
    EXPECT_TRUE(replica->consistent());
    EXPECT_EQ(replica->applied_seq(), m.engine->last_sequence());
    EXPECT_EQ(replica_disk, master_disk);
    EXPECT_TRUE(m.map.diff(rmap)->empty());
  }

  MasterFixture m;
  std::vector<uint8_t> master_disk = std::vector<uint8_t>(kBlocks * kBs, 0);
  std::vector<uint8_t> replica_disk = std::vector<uint8_t>(kBlocks * kBs, 0);
  RegionMap rmap = std::move(*RegionMap::in_memory(geo()));
  std::unique_ptr<ReplicaEngine> replica;
  bool up = true;
  std::vector<uint64_t> regions_sent;
  uint64_t hash_requests = 0, resync_written = 0;
  int in_sync = 0, completed = 0;
};

// A copy that missed writes to regions 1 and 3, which it never wrote, gets exactly those two
// regions back, without a hash round trip, and only their non-zero blocks.
TEST(Resync, EndToEndSendsOnlyChangedRegionsAndJoins) {
  Pair p;
  p.m.engine->submit(p.m.write(1, 8, 2, 0x11));   // region 1
  p.m.engine->submit(p.m.write(2, 25, 3, 0x22));  // region 3
  p.pump();
  EXPECT_EQ(p.completed, 2);
  p.resync();
  p.m.engine->submit(p.m.write(3, 40, 1, 0x33));  // region 5, during the sync: streamed
  p.pump();
  EXPECT_EQ(p.regions_sent, (std::vector<uint64_t>{1, 3}));
  EXPECT_EQ(p.hash_requests, 0u);
  EXPECT_EQ(p.resync_written, 5u * kBs);  // the written blocks, no zeros
  EXPECT_EQ(p.in_sync, 1);
  p.expect_joined();
  EXPECT_EQ(p.m.engine->stats().sync_data_bytes, 5u * kBs);
}

// Scattered small writes while the copy was away, in regions it holds data in: it returns
// per-unit hashes and gets only the units that differ; a region rewritten with the bytes it
// held already costs no data at all.
TEST(Resync, EndToEndHashesSendOnlyDifferingUnits) {
  Pair p(true);
  for (uint64_t id = 1; id <= 8; ++id) {  // every block written on both
    p.m.engine->submit(p.m.write(id, (id - 1) * 8, 8, uint8_t(id)));
  }
  p.pump();
  ASSERT_EQ(p.completed, 8);
  ASSERT_EQ(p.replica_disk, p.master_disk);
  p.drop_link();
  p.pump();
  p.m.engine->submit(p.m.write(20, 9, 1, 0x77));   // region 1: one unit
  p.m.engine->submit(p.m.write(21, 17, 1, 0x78));  // region 2: units 1 and 7
  p.m.engine->submit(p.m.write(22, 23, 1, 0x79));
  p.m.engine->submit(p.m.write(23, 32, 8, 5));  // region 4: the bytes it held already
  p.pump();
  p.up = true;
  p.m.engine->on_link_up(1);
  p.resync();
  p.pump();
  EXPECT_EQ(p.regions_sent, (std::vector<uint64_t>{1, 2, 4}));
  EXPECT_EQ(p.hash_requests, 3u);
  EXPECT_EQ(p.resync_written, 3u * kBs);
  EXPECT_EQ(p.m.engine->stats().sync_data_bytes, 3u * kBs);
  EXPECT_EQ(p.m.engine->stats().sync_hash_bytes, 3u * 8 * wire::kBlockHashSize);
  EXPECT_EQ(p.in_sync, 1);
  p.expect_joined();
}

// The copy must not be trusted blindly: SYNC_HASHES of the wrong size, for a region not
// asked, or from another session change nothing but the first, which drops the copy.
TEST(Resync, StaleOrMalformedHashesAreRefused) {
  Pair p(true);
  p.m.engine->submit(p.m.write(1, 8, 8, 1));
  p.pump();
  p.drop_link();
  p.m.engine->submit(p.m.write(2, 8, 1, 2));
  p.pump();
  p.m.engine->on_link_up(1);
  p.resync();
  std::vector<SendFrame> sends;
  for (auto& a : p.m.engine->take_actions()) {
    if (auto* sf = std::get_if<SendFrame>(&a)) sends.push_back(*sf);
  }
  ASSERT_EQ(sends.size(), 1u);  // SYNC_REQUEST
  const uint64_t s = sends[0].header.sequence;
  wire::Frame sum;
  sum.header = sends[0].header;
  sum.header.type = wire::FrameType::kRegionSummary;
  const std::vector<wire::RegionEntry> entries{{1, 1}};
  sum.header.count = 1;
  sum.header.flags = wire::kFlagLast;
  sum.payload = wire::encode_region_summary(entries);
  p.m.engine->on_frame(1, sum);
  sends.clear();
  for (auto& a : p.m.engine->take_actions()) {
    if (auto* sf = std::get_if<SendFrame>(&a)) sends.push_back(*sf);
  }
  ASSERT_EQ(sends.size(), 1u);
  EXPECT_EQ(sends[0].header.type, wire::FrameType::kSyncHashRequest);
  EXPECT_EQ(sends[0].header.count, 1u);
  EXPECT_EQ(sends[0].header.status, 512u);
  wire::Frame h;
  h.header = sends[0].header;
  h.header.type = wire::FrameType::kSyncHashes;
  h.payload.assign(8 * wire::kBlockHashSize, 0);
  h.header.sequence = s - 1;  // another session's
  p.m.engine->on_frame(1, h);
  h.header.sequence = s;
  h.header.count = 2;  // not asked
  p.m.engine->on_frame(1, h);
  EXPECT_TRUE(p.m.engine->take_actions().empty());
  EXPECT_EQ(p.m.engine->copy_state(1), CopyState::kSyncing);
  h.header.count = 1;
  h.payload.resize(7 * wire::kBlockHashSize);  // a hash short
  p.m.engine->on_frame(1, h);
  EXPECT_EQ(p.m.engine->copy_state(1), CopyState::kOutOfSync);
}

TEST(OrderedIo, OverlapsWaitBarriersWaitForAll) {
  OrderedIo o;
  EXPECT_TRUE(o.add(1, 0, 4, false));
  EXPECT_FALSE(o.add(2, 3, 2, false));
  EXPECT_TRUE(o.add(3, 10, 1, false));
  EXPECT_FALSE(o.add(4, 0, 0, true));   // flush
  EXPECT_TRUE(o.add(5, 20, 1, false));  // later ops do not wait for the flush
  EXPECT_EQ(o.complete(1), (std::vector<uint64_t>{2}));
  EXPECT_TRUE(o.complete(3).empty());
  EXPECT_TRUE(o.complete(5).empty());
  EXPECT_EQ(o.complete(2), (std::vector<uint64_t>{4}));
}

}  // namespace
}  // namespace tandem::backend::repl
