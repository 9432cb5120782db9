// SYNC_HASHES and SYNC_DELTA payloads (backend/wire/sync_delta.h): round trips, coalesced
// runs, and every malformation refused before anything is applied.
#include "backend/wire/sync_delta.h"

#include <gtest/gtest.h>

#include <numeric>

namespace tandem::backend::wire {
namespace {

std::vector<uint8_t> region_bytes(size_t n) {
  std::vector<uint8_t> r(n);
  std::iota(r.begin(), r.end(), uint8_t(1));
  return r;
}

TEST(SyncDelta, UnitsAndValidity) {
  EXPECT_EQ(units_in(1 << 20, 4096), 256u);
  EXPECT_EQ(units_in(4096 + 512, 4096), 2u);  // a short last region: a short last unit
  EXPECT_TRUE(valid_hash_unit(512));
  EXPECT_TRUE(valid_hash_unit(1 << 20));
  EXPECT_FALSE(valid_hash_unit(256));
  EXPECT_FALSE(valid_hash_unit(3072));
  EXPECT_FALSE(valid_hash_unit(2u << 20));
  EXPECT_FALSE(valid_hash_unit(0));
}

TEST(SyncDelta, RoundTripCoalescesNeighbouringUnits) {
  const auto region = region_bytes(16 * 512);
  std::vector<bool> send(16, false);
  send[0] = send[1] = send[2] = true;  // one run of three
  send[7] = true;
  send[15] = true;
  const auto payload = encode_sync_delta(region, 512, send);
  EXPECT_EQ(payload.size(), 2 + 5 * 512u);
  EXPECT_EQ(payload[0], 0x87);
  EXPECT_EQ(payload[1], 0x80);
  auto runs = decode_sync_delta(payload, region.size(), 512);
  ASSERT_TRUE(runs.ok()) << runs.error().message;
  ASSERT_EQ(runs->size(), 3u);
  EXPECT_EQ((*runs)[0], (DeltaRun{0, 3 * 512, 2}));
  EXPECT_EQ((*runs)[1], (DeltaRun{7 * 512, 512, 2 + 3 * 512}));
  EXPECT_EQ((*runs)[2], (DeltaRun{15 * 512, 512, 2 + 4 * 512}));
  for (const DeltaRun& r : *runs) {
    EXPECT_TRUE(std::equal(payload.begin() + r.data, payload.begin() + r.data + r.bytes,
                           region.begin() + r.offset));
  }
}

TEST(SyncDelta, EmptyDeltaAndShortLastUnit) {
  const auto region = region_bytes(4096 + 1024);  // units of 4096: one whole, one of 1024
  auto none = encode_sync_delta(region, 4096, {false, false});
  EXPECT_EQ(none, std::vector<uint8_t>{0});
  auto runs = decode_sync_delta(none, region.size(), 4096);
  ASSERT_TRUE(runs.ok());
  EXPECT_TRUE(runs->empty());
  auto last = encode_sync_delta(region, 4096, {false, true});
  ASSERT_EQ(last.size(), 1 + 1024u);
  runs = decode_sync_delta(last, region.size(), 4096);
  ASSERT_TRUE(runs.ok());
  ASSERT_EQ(runs->size(), 1u);
  EXPECT_EQ((*runs)[0], (DeltaRun{4096, 1024, 1}));
}

TEST(SyncDelta, MalformedPayloadsAreRefused) {
  const auto region = region_bytes(16 * 512);
  std::vector<bool> send(16, false);
  send[3] = true;
  const auto good = encode_sync_delta(region, 512, send);
  ASSERT_TRUE(decode_sync_delta(good, region.size(), 512).ok());
  auto shorter = good;
  shorter.pop_back();  // data a byte short
  EXPECT_EQ(decode_sync_delta(shorter, region.size(), 512).error().code, WireErrc::kBadPayload);
  auto longer = good;
  longer.push_back(0);  // a byte too many
  EXPECT_FALSE(decode_sync_delta(longer, region.size(), 512).ok());
  EXPECT_FALSE(decode_sync_delta(std::vector<uint8_t>{0x08}, region.size(), 512).ok());  // no map
  auto extra_unit = good;
  extra_unit[1] |= 0x01;  // names unit 8, whose bytes are missing
  EXPECT_FALSE(decode_sync_delta(extra_unit, region.size(), 512).ok());
  // 12 units: bits 12..15 of the second bitmap byte lie beyond the region.
  const auto small = region_bytes(12 * 512);
  std::vector<uint8_t> stray{0x00, 0x10};
  EXPECT_FALSE(decode_sync_delta(stray, small.size(), 512).ok());
  EXPECT_FALSE(decode_sync_delta(good, region.size(), 768).ok());  // not a power of two
  EXPECT_FALSE(decode_sync_delta(good, 0, 512).ok());
}

TEST(SyncDelta, HashesRoundTripAndCountIsChecked) {
  std::vector<BlockHash> hashes(3);
  for (size_t i = 0; i < hashes.size(); ++i) hashes[i].fill(uint8_t(i + 1));
  const auto payload = encode_block_hashes(hashes);
  ASSERT_EQ(payload.size(), 3 * kBlockHashSize);
  auto back = decode_block_hashes(payload, 3);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(*back, hashes);
  EXPECT_FALSE(decode_block_hashes(payload, 2).ok());
  EXPECT_FALSE(decode_block_hashes(std::span(payload).first(payload.size() - 1), 3).ok());
}

}  // namespace
}  // namespace tandem::backend::wire
