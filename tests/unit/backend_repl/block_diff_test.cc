// Which units resync sends (backend/repl/block_diff.h): by hash against the copy's, or the
// non-zero ones for a copy that never wrote the region.
#include "backend/repl/block_diff.h"

#include <gtest/gtest.h>

namespace tandem::backend::repl {
namespace {

TEST(BlockDiff, HashesAreSha256TruncatedPerUnit) {
  // SHA-256("abc") = ba7816bf 8f01cfea 414140de 5dae2223 b00361a3 ...
  const std::vector<uint8_t> abc{'a', 'b', 'c'};
  auto h = hash_units(abc, 4096);
  ASSERT_EQ(h.size(), 1u);
  const wire::BlockHash want{0xba, 0x78, 0x16, 0xbf, 0x8f, 0x01, 0xcf, 0xea,
                             0x41, 0x41, 0x40, 0xde, 0x5d, 0xae, 0x22, 0x23};
  EXPECT_EQ(h[0], want);
  std::vector<uint8_t> region(3 * 512 + 100, 7);
  region[600] = 8;
  auto hs = hash_units(region, 512);
  ASSERT_EQ(hs.size(), 4u);
  EXPECT_EQ(hs[0], hs[2]);  // equal bytes, equal hashes
  EXPECT_NE(hs[0], hs[1]);  // one byte differs
  EXPECT_NE(hs[0], hs[3]);  // the short last unit hashes only its own bytes
}

TEST(BlockDiff, SendsOnlyUnitsThatDiffer) {
  std::vector<uint8_t> copy(8 * 4096, 0x11), master = copy;
  master[4096 * 2 + 17] ^= 1;  // unit 2: one bit
  master[4096 * 7] = 0;        // unit 7
  const auto copy_hashes = hash_units(copy, 4096);
  auto send = units_to_send(master, 4096, &copy_hashes);
  EXPECT_EQ(send, (std::vector<bool>{false, false, true, false, false, false, false, true}));
  send = units_to_send(copy, 4096, &copy_hashes);
  EXPECT_EQ(send, std::vector<bool>(8, false));
}

TEST(BlockDiff, ANeverWrittenCopyGetsOnlyNonZeroUnits) {
  std::vector<uint8_t> master(4 * 4096, 0);
  master[4096 + 4095] = 1;  // the last byte of unit 1
  master[3 * 4096] = 9;
  auto send = units_to_send(master, 4096, nullptr);
  EXPECT_EQ(send, (std::vector<bool>{false, true, false, true}));
}

}  // namespace
}  // namespace tandem::backend::repl
