// RegionMap: geometry, marking, diff and the crash-safety invariant. A FakeStore (LevelDB
// fault_injection style) keeps unsynced writes apart and, at a crash, keeps none, all, a
// random subset or a torn subset of them; the workload is replayed with a crash before every
// store operation in turn, and after each recovery every region must be unknown or hold
// exactly the seq of its last write, so regions_changed_since(s) covers the truth for all s.
#include "backend/repl/region_map.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <random>
#include <set>

namespace tandem::backend::repl {
namespace {

class FakeStore : public RegionStore {
 public:
  FakeStore() = default;
  explicit FakeStore(std::vector<uint8_t> image) : durable_(std::move(image)) {}

  RegionResult<void> read(uint64_t offset, std::span<uint8_t> out) override {
    if (crashed_) return io_error();
    std::vector<uint8_t> view = durable_;
    for (const Pending& p : pending_) apply(view, p.offset, p.data);
    for (size_t i = 0; i < out.size(); ++i) {
      out[i] = offset + i < view.size() ? view[offset + i] : 0;
    }
    return {};
  }
  RegionResult<void> write(uint64_t offset, std::span<const uint8_t> data) override {
    if (step()) return io_error();
    ++writes_;
    pending_.push_back({offset, std::vector<uint8_t>(data.begin(), data.end())});
    return {};
  }
  RegionResult<void> sync() override {
    if (step()) return io_error();
    ++syncs_;
    for (const Pending& p : pending_) apply(durable_, p.offset, p.data);
    pending_.clear();
    return {};
  }

  // The store operation (write or sync) with this index and all later ones fail.
  void crash_at(int64_t op) { crash_at_ = op; }
  bool crashed() const { return crashed_; }
  int64_t ops() const { return ops_; }
  int64_t syncs() const { return syncs_; }
  int64_t writes() const { return writes_; }
  void fail_next() { crash_at_ = ops_; }

  enum class Survive { kNone, kAll, kSubset, kTorn };
  // What a disk could hold after power loss now.
  std::vector<uint8_t> after_crash(Survive mode, uint64_t seed) const {
    std::vector<uint8_t> image = durable_;
    std::mt19937_64 rng(seed);
    for (const Pending& p : pending_) {
      switch (mode) {
        case Survive::kNone:
          break;
        case Survive::kAll:
          apply(image, p.offset, p.data);
          break;
        case Survive::kSubset:
          if (rng() % 2) apply(image, p.offset, p.data);
          break;
        case Survive::kTorn:  // 8-byte aligned pieces survive independently
          for (size_t i = 0; i < p.data.size(); i += 8) {
            if (rng() % 2) {
              const size_t n = std::min<size_t>(8, p.data.size() - i);
              apply(image, p.offset + i, std::span<const uint8_t>(p.data).subspan(i, n));
            }
          }
          break;
      }
    }
    return image;
  }

 private:
  struct Pending {
    uint64_t offset;
    std::vector<uint8_t> data;
  };
  static void apply(std::vector<uint8_t>& img, uint64_t off, std::span<const uint8_t> d) {
    if (img.size() < off + d.size()) img.resize(off + d.size(), 0);
    std::memcpy(img.data() + off, d.data(), d.size());
  }
  static RegionResult<void> io_error() {
    return core::fail(RegionError{RegionErrc::kIo, "injected crash"});
  }
  bool step() {
    if (crashed_) return true;
    if (ops_ == crash_at_) {
      crashed_ = true;
      return true;
    }
    ++ops_;
    return false;
  }

  std::vector<uint8_t> durable_;
  std::vector<Pending> pending_;
  int64_t crash_at_ = -1, ops_ = 0, syncs_ = 0, writes_ = 0;
  bool crashed_ = false;
};

// 64 regions of 4 KiB (8 blocks of 512), the last one short by 2 blocks.
RegionGeometry small_geometry() { return RegionGeometry{64 * 4096 - 1024, 512, 12}; }

// ---- geometry and the in-memory API ----

TEST(RegionMap, Geometry) {
  auto m = RegionMap::in_memory(small_geometry());
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->region_count(), 64u);
  EXPECT_EQ(m->region_bytes(), 4096u);
  EXPECT_EQ(m->region_of(0), 0u);
  EXPECT_EQ(m->region_of(7), 0u);
  EXPECT_EQ(m->region_of(8), 1u);
  EXPECT_EQ(m->first_lba(3), 24u);
  EXPECT_EQ(m->blocks_in(0), 8u);
  EXPECT_EQ(m->blocks_in(63), 6u);
  EXPECT_EQ(m->blocks_in(64), 0u);
  auto big = RegionMap::in_memory(RegionGeometry{10ull << 30, 4096, kDefaultRegionShift});
  ASSERT_TRUE(big.ok());
  EXPECT_EQ(big->region_count(), 10240u);
  EXPECT_EQ(big->region_of(256), 1u);
}

TEST(RegionMap, InvalidGeometryRefused) {
  for (RegionGeometry g : {RegionGeometry{0, 512, 20}, RegionGeometry{1000, 512, 20},
                           RegionGeometry{1 << 20, 500, 20}, RegionGeometry{1 << 20, 512, 21},
                           RegionGeometry{1 << 20, 512, 8}, RegionGeometry{1 << 20, 8192, 12}}) {
    auto m = RegionMap::in_memory(g);
    ASSERT_FALSE(m.ok()) << g.volume_bytes << " " << g.block_size << " " << g.region_shift;
    EXPECT_EQ(m.error().code, RegionErrc::kInvalid);
  }
}

TEST(RegionMap, MarkAndChangedSince) {
  auto m = RegionMap::in_memory(small_geometry());
  ASSERT_TRUE(m.ok());
  ASSERT_TRUE(m->mark(0, 1, 5).ok());    // region 0
  ASSERT_TRUE(m->mark(7, 2, 6).ok());    // regions 0 and 1
  ASSERT_TRUE(m->mark(40, 16, 9).ok());  // regions 5, 6
  ASSERT_TRUE(m->mark(8, 1, 3).ok());    // older seq does not lower region 1
  EXPECT_EQ(m->seq_of(0), 6u);
  EXPECT_EQ(m->seq_of(1), 6u);
  EXPECT_EQ(m->seq_of(5), 9u);
  EXPECT_EQ(m->seq_of(6), 9u);
  EXPECT_EQ(m->seq_of(7), 0u);
  EXPECT_EQ(m->regions_changed_since(0), (std::vector<uint64_t>{0, 1, 5, 6}));
  EXPECT_EQ(m->regions_changed_since(6), (std::vector<uint64_t>{5, 6}));
  EXPECT_TRUE(m->regions_changed_since(9).empty());
  EXPECT_EQ(m->summary(), (std::vector<RegionSeq>{{0, 6}, {1, 6}, {5, 9}, {6, 9}}));
}

TEST(RegionMap, MarkValidatesRange) {
  auto m = RegionMap::in_memory(small_geometry());
  ASSERT_TRUE(m.ok());
  const uint64_t blocks = small_geometry().volume_bytes / 512;
  EXPECT_TRUE(m->mark(blocks - 1, 1, 1).ok());
  EXPECT_EQ(m->mark(blocks, 1, 1).error().code, RegionErrc::kInvalid);
  EXPECT_EQ(m->mark(blocks - 1, 2, 1).error().code, RegionErrc::kInvalid);
  EXPECT_EQ(m->mark(0, 0, 1).error().code, RegionErrc::kInvalid);
  EXPECT_EQ(m->mark(~0ull, 2, 1).error().code, RegionErrc::kInvalid);
  EXPECT_EQ(m->mark(0, 1, kMaxSeq + 1).error().code, RegionErrc::kInvalid);
  EXPECT_EQ(m->assign(64, 1, 1).error().code, RegionErrc::kInvalid);
}

TEST(RegionMap, DiffAndBytesBehind) {
  auto master = RegionMap::in_memory(small_geometry());
  auto replica = RegionMap::in_memory(small_geometry());
  ASSERT_TRUE(master.ok() && replica.ok());
  for (uint64_t seq = 1; seq <= 10; ++seq) {
    ASSERT_TRUE(master->mark(seq * 8, 1, seq).ok());  // region seq
    if (seq <= 6) {
      ASSERT_TRUE(replica->mark(seq * 8, 1, seq).ok());
    }
  }
  ASSERT_TRUE(master->mark(63 * 8, 6, 11).ok());  // short last region
  auto d = master->diff(*replica);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(*d, (std::vector<uint64_t>{7, 8, 9, 10, 63}));
  EXPECT_EQ(*master->bytes_behind(*replica), 4 * 4096u + 6 * 512u);
  // A replica ahead of the master (a deposed master's unacknowledged write) differs too.
  ASSERT_TRUE(replica->mark(20 * 8, 1, 12).ok());
  EXPECT_EQ(master->diff(*replica)->size(), 6u);
  auto self = master->diff(*master);
  EXPECT_TRUE(self->empty());
  auto other = RegionMap::in_memory(RegionGeometry{64 * 4096, 512, 12});
  EXPECT_EQ(master->diff(*other).error().code, RegionErrc::kGeometry);
}

TEST(RegionMap, UnknownRegionsAlwaysDiffer) {
  auto a = RegionMap::in_memory(small_geometry());
  auto b = RegionMap::in_memory(small_geometry());
  ASSERT_TRUE(a.ok() && b.ok());
  ASSERT_TRUE(a->assign(3, kUnknownSeq, 0).ok());
  ASSERT_TRUE(b->assign(3, kUnknownSeq, 0).ok());
  EXPECT_EQ(*a->diff(*b), (std::vector<uint64_t>{3}));
  EXPECT_EQ(a->regions_changed_since(kMaxSeq), (std::vector<uint64_t>{3}));
  // A partial write leaves it unknown; one over the whole region makes it known.
  ASSERT_TRUE(a->mark(24, 7, 20).ok());
  EXPECT_TRUE(a->unknown(3));
  ASSERT_TRUE(a->mark(23, 10, 21).ok());
  EXPECT_EQ(a->seq_of(3), 21u);
  ASSERT_TRUE(b->assign(3, 21, 21).ok());
  EXPECT_EQ(*a->diff(*b), (std::vector<uint64_t>{2, 4}));  // the write also touched 2 and 4
}

TEST(RegionMap, SummaryRoundTrip) {
  auto a = RegionMap::in_memory(small_geometry());
  ASSERT_TRUE(a.ok());
  ASSERT_TRUE(a->mark(100, 30, 77).ok());
  ASSERT_TRUE(a->assign(60, kUnknownSeq, 0).ok());
  auto b = RegionMap::from_summary(small_geometry(), a->summary());
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->summary(), a->summary());
  auto d = a->diff(*b);
  EXPECT_EQ(*d, (std::vector<uint64_t>{60}));  // only the unknown one
  std::vector<RegionSeq> hostile = {{64, 1}};
  EXPECT_FALSE(RegionMap::from_summary(small_geometry(), hostile).ok());
  hostile = {{1, kMaxSeq + 1}};
  EXPECT_FALSE(RegionMap::from_summary(small_geometry(), hostile).ok());
}

TEST(RegionMap, GrowAddsCleanRegions) {
  FakeStore store;
  auto m = RegionMap::create(&store, small_geometry());
  ASSERT_TRUE(m.ok());
  ASSERT_TRUE(m->mark(0, 1, 1).ok());
  EXPECT_EQ(m->grow(1024).error().code, RegionErrc::kInvalid);
  RegionGeometry g = small_geometry();
  g.volume_bytes = 100 * 4096;
  ASSERT_TRUE(m->grow(g.volume_bytes).ok());
  EXPECT_EQ(m->region_count(), 100u);
  EXPECT_EQ(m->seq_of(99), 0u);
  EXPECT_EQ(m->blocks_in(63), 8u);
  ASSERT_TRUE(m->checkpoint(1, true).ok());
  auto re = RegionMap::open(&store, g);
  ASSERT_TRUE(re.ok());
  EXPECT_EQ(re->seq_of(0), 1u);
  EXPECT_EQ(re->region_count(), 100u);
}

// ---- persistence behaviour ----

TEST(RegionMap, MarkIsWriteAheadAndAlreadyDirtyRegionsCostNoSync) {
  FakeStore store;
  auto m = RegionMap::create(&store, small_geometry());
  ASSERT_TRUE(m.ok());
  const int64_t base = store.syncs();
  ASSERT_TRUE(m->mark(0, 16, 1).ok());  // regions 0, 1 turn dirty: one sync
  EXPECT_EQ(store.syncs(), base + 1);
  EXPECT_EQ(m->dirty_on_disk(), 2u);
  for (uint64_t s = 2; s < 100; ++s) ASSERT_TRUE(m->mark(s % 16, 1, s).ok());
  EXPECT_EQ(store.syncs(), base + 1);  // hot regions: no more I/O
  // A crash right now: both regions come back unknown.
  auto img = store.after_crash(FakeStore::Survive::kNone, 1);
  FakeStore again(img);
  auto re = RegionMap::open(&again, small_geometry());
  ASSERT_TRUE(re.ok());
  EXPECT_TRUE(re->unknown(0));
  EXPECT_TRUE(re->unknown(1));
  EXPECT_EQ(re->seq_of(2), 0u);
}

TEST(RegionMap, CheckpointLeavesHotRegionsAndUndurableWritesDirty) {
  FakeStore store;
  auto m = RegionMap::create(&store, small_geometry());
  ASSERT_TRUE(m.ok());
  ASSERT_TRUE(m->mark(0, 1, 10).ok());
  ASSERT_TRUE(m->checkpoint(10).ok());  // touched since the last checkpoint: stays dirty
  EXPECT_EQ(m->dirty_on_disk(), 1u);
  ASSERT_TRUE(m->checkpoint(9).ok());  // idle now, but seq 10 is not durable yet
  EXPECT_EQ(m->dirty_on_disk(), 1u);
  ASSERT_TRUE(m->checkpoint(10).ok());
  EXPECT_EQ(m->dirty_on_disk(), 0u);
  auto re = RegionMap::open(&store, small_geometry());
  ASSERT_TRUE(re.ok());
  EXPECT_EQ(re->seq_of(0), 10u);
  // `everything` cleans hot regions too (clean shutdown).
  ASSERT_TRUE(m->mark(8, 1, 11).ok());
  ASSERT_TRUE(m->checkpoint(11, true).ok());
  EXPECT_EQ(m->dirty_on_disk(), 0u);
  // Unknown regions are never cleaned: they stay dirty until known.
  ASSERT_TRUE(m->assign(5, kUnknownSeq, 11).ok());
  ASSERT_TRUE(m->checkpoint(11, true).ok());
  EXPECT_EQ(m->dirty_on_disk(), 1u);
  ASSERT_TRUE(m->assign(5, 4, 12).ok());
  ASSERT_TRUE(m->checkpoint(11, true).ok());  // its ticket is 12
  EXPECT_EQ(m->dirty_on_disk(), 1u);
  ASSERT_TRUE(m->checkpoint(12, true).ok());
  EXPECT_EQ(m->dirty_on_disk(), 0u);
  auto re2 = RegionMap::open(&store, small_geometry());
  ASSERT_TRUE(re2.ok());
  EXPECT_EQ(re2->seq_of(5), 4u);
  EXPECT_EQ(re2->seq_of(1), 11u);
}

TEST(RegionMap, MarkGroupTurnsItsCleanRegionsDirtyInTheSameSync) {
  FakeStore store;
  auto m = RegionMap::create(&store, small_geometry());  // 64 regions of 4 KiB
  ASSERT_TRUE(m.ok());
  m->set_mark_group(6);  // not a power of two: 4
  EXPECT_EQ(m->mark_group(), 4u);
  const int64_t base = store.syncs();
  ASSERT_TRUE(m->mark(8, 1, 1).ok());  // region 1: regions 0..3 turn dirty, one sync
  EXPECT_EQ(store.syncs(), base + 1);
  EXPECT_EQ(m->dirty_on_disk(), 4u);
  ASSERT_TRUE(m->mark(3 * 8, 1, 2).ok());  // region 3, same group: no I/O
  EXPECT_EQ(store.syncs(), base + 1);
  ASSERT_TRUE(m->mark(7 * 8, 16, 3).ok());  // regions 7..8 span groups 1 and 2: one sync
  EXPECT_EQ(store.syncs(), base + 2);
  EXPECT_EQ(m->dirty_on_disk(), 12u);
  ASSERT_TRUE(m->mark(63 * 8, 1, 4).ok());  // the last group
  EXPECT_EQ(m->dirty_on_disk(), 16u);
  // Only the regions written carry new seqs; the group's others keep theirs.
  EXPECT_EQ(m->seq_of(0), 0u);
  EXPECT_EQ(m->seq_of(1), 1u);
  EXPECT_EQ(m->seq_of(8), 3u);
  // A crash now: the whole groups come back unknown (resynced), the rest clean.
  {
    FakeStore after(store.after_crash(FakeStore::Survive::kNone, 1));
    auto re = RegionMap::open(&after, small_geometry());
    ASSERT_TRUE(re.ok());
    for (uint64_t r : {0u, 2u, 4u, 11u, 60u, 63u}) EXPECT_TRUE(re->unknown(r)) << r;
    EXPECT_EQ(re->seq_of(12), 0u);
  }
  // The group's untouched regions are cleaned by the next checkpoint; the written ones are
  // hot and stay dirty until a checkpoint finds them idle.
  ASSERT_TRUE(m->checkpoint(4).ok());
  EXPECT_EQ(m->dirty_on_disk(), 5u);  // regions 1, 3, 7, 8, 63
  ASSERT_TRUE(m->checkpoint(4).ok());
  EXPECT_EQ(m->dirty_on_disk(), 0u);
  auto re = RegionMap::open(&store, small_geometry());
  ASSERT_TRUE(re.ok());
  EXPECT_EQ(re->seq_of(1), 1u);
  EXPECT_EQ(re->seq_of(3), 2u);
  EXPECT_EQ(re->seq_of(0), 0u);
  EXPECT_EQ(RegionMap::default_mark_group({uint64_t{1} << 30, 512, 20}), 64u);
  EXPECT_EQ(RegionMap::default_mark_group({uint64_t{1} << 30, 512, 12}), 16384u);
}

TEST(RegionMap, CreateAllUnknown) {
  FakeStore store;
  auto m = RegionMap::create(&store, small_geometry(), true);
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->regions_changed_since(kMaxSeq).size(), 64u);
  auto re = RegionMap::open(&store, small_geometry());
  ASSERT_TRUE(re.ok());
  EXPECT_EQ(re->regions_changed_since(kMaxSeq).size(), 64u);
  auto fresh = RegionMap::in_memory(small_geometry());
  EXPECT_EQ(re->diff(*fresh)->size(), 64u);
}

TEST(RegionMap, OpenRefusesMissingTornOrForeignHeader) {
  FakeStore empty;
  EXPECT_EQ(RegionMap::open(&empty, small_geometry()).error().code, RegionErrc::kCorrupt);
  FakeStore store;
  ASSERT_TRUE(RegionMap::create(&store, small_geometry()).ok());
  RegionGeometry other = small_geometry();
  other.region_shift = 13;
  EXPECT_EQ(RegionMap::open(&store, other).error().code, RegionErrc::kGeometry);
  auto img = store.after_crash(FakeStore::Survive::kNone, 0);
  for (size_t i = 0; i < 44; ++i) {
    auto bad = img;
    bad[i] ^= 0x04;
    FakeStore s(bad);
    auto r = RegionMap::open(&s, small_geometry());
    ASSERT_FALSE(r.ok()) << i;
    EXPECT_EQ(r.error().code, RegionErrc::kCorrupt) << i;
  }
}

TEST(RegionMap, CrashDuringCreateIsCorruptOrComplete) {
  for (int64_t k = 0; k < 8; ++k) {
    FakeStore store;
    store.crash_at(k);
    auto m = RegionMap::create(&store, small_geometry());
    for (auto mode : {FakeStore::Survive::kNone, FakeStore::Survive::kAll}) {
      FakeStore after(store.after_crash(mode, 0));
      auto re = RegionMap::open(&after, small_geometry());
      if (re.ok()) {
        EXPECT_TRUE(re->regions_changed_since(0).empty());
      } else {
        EXPECT_EQ(re.error().code, RegionErrc::kCorrupt);
        EXPECT_FALSE(m.ok());
      }
    }
  }
}

TEST(RegionMap, StoreErrorFailsTheMapUntilReopened) {
  FakeStore store;
  auto m = RegionMap::create(&store, small_geometry());
  ASSERT_TRUE(m.ok());
  store.fail_next();
  auto r = m->mark(0, 1, 1);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, RegionErrc::kIo);
  EXPECT_TRUE(m->failed());
  EXPECT_EQ(m->seq_of(0), 0u);  // nothing recorded
  EXPECT_FALSE(m->checkpoint(0).ok());
  EXPECT_FALSE(m->assign(0, 1, 1).ok());
}

// ---- the crash-safety invariant, at every crash point ----

struct Model {
  std::vector<uint64_t> truth;  // seq of the last write issued per region (0: never)
  uint64_t seq = 0;
  uint64_t durable = 0;  // highest `durable` claimed to checkpoint()
};

// Runs a seeded workload until it ends or the store crashes. Returns false on a crash.
bool run_workload(RegionMap& map, FakeStore& store, Model& model, uint64_t seed, int ops) {
  std::mt19937_64 rng(seed);
  const uint64_t blocks = map.geometry().volume_bytes / map.geometry().block_size;
  for (int i = 0; i < ops; ++i) {
    const int pick = int(rng() % 100);
    if (pick < 60) {
      const uint64_t lba = rng() % blocks;
      const uint64_t n = 1 + rng() % std::min<uint64_t>(20, blocks - lba);
      const uint64_t seq = model.seq + 1;
      if (!map.mark(lba, n, seq).ok()) return false;
      model.seq = seq;
      for (uint64_t r = map.region_of(lba); r <= map.region_of(lba + n - 1); ++r) {
        model.truth[r] = std::max(model.truth[r], seq);
      }
    } else if (pick < 70) {
      const uint64_t r = rng() % map.region_count();
      const uint64_t seq = model.seq ? rng() % (model.seq + 1) : 0;
      if (!map.assign(r, seq, model.seq).ok()) return false;
      model.truth[r] = seq;
    } else if (pick < 92) {
      // Durability only ever advances; the data store is assumed synced through it.
      const uint64_t d = model.durable + rng() % (model.seq - model.durable + 1);
      model.durable = d;
      if (!map.checkpoint(d).ok()) return false;
    } else {
      model.durable = model.seq;
      if (!map.checkpoint(model.seq, true).ok()) return false;
    }
    if (store.crashed()) return false;
  }
  return true;
}

void check_recovered(const RegionMap& rec, const Model& model, const std::string& where) {
  for (uint64_t r = 0; r < rec.region_count(); ++r) {
    const uint64_t got = rec.seq_of(r);
    if (got == kUnknownSeq) continue;
    ASSERT_EQ(got, model.truth[r]) << where << " region " << r;
    if (got != 0) {
      ASSERT_LE(got, model.durable) << where << " region " << r << " cleaned before durable";
    }
  }
  // The property as stated: changed_since(s) after recovery contains the true set.
  for (uint64_t s = 0; s <= model.seq; ++s) {
    const auto got = rec.regions_changed_since(s);
    const std::set<uint64_t> have(got.begin(), got.end());
    for (uint64_t r = 0; r < rec.region_count(); ++r) {
      if (model.truth[r] > s) {
        ASSERT_TRUE(have.count(r)) << where << " s=" << s << " r=" << r;
      }
    }
  }
}

TEST(RegionMap, CrashAtEveryStoreOperation) {
  const int kOps = 70;
  int crash_points = 0;
  for (uint64_t seed = 1; seed <= 8; ++seed) {
    const uint64_t group = seed <= 4 ? 1 : uint64_t{1} << (seed - 4);  // 1 and 2..16
    // Count the store operations the workload performs uncrashed.
    int64_t total = 0;
    {
      FakeStore store;
      auto map = RegionMap::create(&store, small_geometry());
      ASSERT_TRUE(map.ok());
      map->set_mark_group(group);
      const int64_t base = store.ops();
      Model model{std::vector<uint64_t>(map->region_count(), 0)};
      ASSERT_TRUE(run_workload(*map, store, model, seed, kOps));
      total = store.ops() - base;
    }
    for (int64_t k = 0; k <= total; ++k) {
      FakeStore store;
      auto map = RegionMap::create(&store, small_geometry());
      ASSERT_TRUE(map.ok());
      map->set_mark_group(group);
      store.crash_at(store.ops() + k);
      Model model{std::vector<uint64_t>(map->region_count(), 0)};
      run_workload(*map, store, model, seed, kOps);
      ++crash_points;
      for (auto mode : {FakeStore::Survive::kNone, FakeStore::Survive::kAll,
                        FakeStore::Survive::kSubset, FakeStore::Survive::kTorn}) {
        for (uint64_t sub = 0; sub < (mode >= FakeStore::Survive::kSubset ? 3u : 1u); ++sub) {
          FakeStore after(store.after_crash(mode, seed * 1000 + uint64_t(k) * 7 + sub));
          auto rec = RegionMap::open(&after, small_geometry());
          ASSERT_TRUE(rec.ok()) << rec.error().message;
          const std::string where = "seed " + std::to_string(seed) + " group " +
                                    std::to_string(group) + " crash before op " +
                                    std::to_string(k) + " mode " + std::to_string(int(mode)) +
                                    " sub " + std::to_string(sub);
          check_recovered(*rec, model, where);
          if (HasFatalFailure()) return;
        }
      }
    }
  }
  EXPECT_GT(crash_points, 100);
}

// Recover, keep going, crash again: the invariant survives repeated crashes.
TEST(RegionMap, RepeatedCrashes) {
  FakeStore first;
  auto map = RegionMap::create(&first, small_geometry());
  ASSERT_TRUE(map.ok());
  Model model{std::vector<uint64_t>(map->region_count(), 0)};
  std::vector<uint8_t> image;
  FakeStore* store = &first;
  std::vector<std::unique_ptr<FakeStore>> stores;
  std::mt19937_64 rng(4242);
  for (int round = 0; round < 40; ++round) {
    store->crash_at(store->ops() + int64_t(rng() % 40));
    run_workload(*map, *store, model, 100 + uint64_t(round), 50);
    image = store->after_crash(FakeStore::Survive(rng() % 4), rng());
    stores.push_back(std::make_unique<FakeStore>(image));
    store = stores.back().get();
    auto rec = RegionMap::open(store, small_geometry());
    ASSERT_TRUE(rec.ok());
    check_recovered(*rec, model, "round " + std::to_string(round));
    if (HasFatalFailure()) return;
    // Unknown regions stay unknown in the model's eyes until rewritten: the model's truth
    // is still what it was, which the recovered map covers.
    map = std::move(rec);
  }
}

// ---- FileRegionStore over a real file ----

class FileRegionStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = std::filesystem::temp_directory_path() /
            ("tandem-regions-" + std::to_string(::getpid()) + "-" +
             ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove(path_);
  }
  void TearDown() override { std::filesystem::remove(path_); }
  std::filesystem::path path_;
};

TEST_F(FileRegionStoreTest, PersistsAcrossReopen) {
  const RegionGeometry g{8ull << 20, 4096, kDefaultRegionShift};
  {
    auto store = FileRegionStore::open(path_.string());
    ASSERT_TRUE(store.ok());
    auto m = RegionMap::create(store->get(), g);
    ASSERT_TRUE(m.ok());
    ASSERT_TRUE(m->mark(0, 1, 1).ok());      // region 0
    ASSERT_TRUE(m->mark(256, 512, 2).ok());  // regions 1, 2
    ASSERT_TRUE(m->checkpoint(2, true).ok());
    ASSERT_TRUE(m->mark(1792, 1, 3).ok());  // region 7 stays dirty: "crash" now
  }
  EXPECT_EQ(std::filesystem::file_size(path_), 4096u + 8 * 8);
  auto store = FileRegionStore::open(path_.string());
  ASSERT_TRUE(store.ok());
  auto m = RegionMap::open(store->get(), g);
  ASSERT_TRUE(m.ok()) << m.error().message;
  EXPECT_EQ(m->seq_of(0), 1u);
  EXPECT_EQ(m->seq_of(1), 2u);
  EXPECT_EQ(m->seq_of(2), 2u);
  EXPECT_EQ(m->seq_of(3), 0u);
  EXPECT_TRUE(m->unknown(7));
  EXPECT_EQ(m->regions_changed_since(1), (std::vector<uint64_t>{1, 2, 7}));
  RegionGeometry other = g;
  other.volume_bytes = 16ull << 20;
  EXPECT_EQ(RegionMap::open(store->get(), other).error().code, RegionErrc::kGeometry);
}

TEST_F(FileRegionStoreTest, ReadPastEndIsZeros) {
  auto store = FileRegionStore::open(path_.string());
  ASSERT_TRUE(store.ok());
  const std::vector<uint8_t> data = {1, 2, 3};
  ASSERT_TRUE((*store)->write(10, data).ok());
  ASSERT_TRUE((*store)->sync().ok());
  std::vector<uint8_t> out(8, 0xee);
  ASSERT_TRUE((*store)->read(8, out).ok());
  EXPECT_EQ(out, (std::vector<uint8_t>{0, 0, 1, 2, 3, 0, 0, 0}));
  EXPECT_EQ(RegionMap::open(store->get(), small_geometry()).error().code, RegionErrc::kCorrupt);
}

TEST_F(FileRegionStoreTest, OpenFailsForBadPath) {
  auto store = FileRegionStore::open("/nonexistent-dir-tandem/x/map");
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.error().code, RegionErrc::kIo);
}

}  // namespace
}  // namespace tandem::backend::repl
