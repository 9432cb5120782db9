#include "tests/tools/stamp_format.h"

#include <gtest/gtest.h>

#include <cstring>
#include <vector>

namespace tandem::stamp {
namespace {

std::vector<std::byte> Block(uint64_t lba, uint64_t seq, uint64_t writer = 7) {
  std::vector<std::byte> b(4096, std::byte{0x55});
  Write(b, {lba, seq, writer});
  return b;
}

LogLine L(char kind, uint64_t lba, uint64_t seq) { return {kind, lba, seq, 1.0, ""}; }

TEST(Crc32c, KnownVector) {
  const char* s = "123456789";  // RFC 3720 B.4's check value for CRC-32C
  EXPECT_EQ(Crc32c(std::as_bytes(std::span(s, 9))), 0xe3069283u);
}

TEST(Stamp, RoundTrips) {
  auto b = Block(42, 9);
  Stamp s;
  ASSERT_EQ(Read(b, &s), Decoded::kStamp);
  EXPECT_EQ(s.lba, 42u);
  EXPECT_EQ(s.seq, 9u);
  EXPECT_EQ(s.writer, 7u);
}

TEST(Stamp, TwoWritesOfOneLbaDiffer) { EXPECT_NE(Block(1, 1), Block(1, 2)); }

TEST(Stamp, AnyFlippedByteIsCorrupt) {
  for (size_t at : {size_t{9}, size_t{33}, size_t{37}, size_t{100}, size_t{4095}}) {
    auto b = Block(3, 4);
    b[at] ^= std::byte{1};
    Stamp s;
    EXPECT_NE(Read(b, &s), Decoded::kStamp) << "byte " << at;
  }
}

TEST(Stamp, ZerosAndForeignBytes) {
  std::vector<std::byte> zero(512);
  Stamp s;
  EXPECT_EQ(Read(zero, &s), Decoded::kZero);
  std::vector<std::byte> other(512, std::byte{0x6b});
  EXPECT_EQ(Read(other, &s), Decoded::kForeign);
}

TEST(LogLine, FormatsAndParses) {
  auto l = Parse(Format({'F', 12, 34, 1700000000.25, "CHECK_CONDITION NOT_READY"}));
  ASSERT_TRUE(l);
  EXPECT_EQ(l->kind, 'F');
  EXPECT_EQ(l->lba, 12u);
  EXPECT_EQ(l->seq, 34u);
  EXPECT_DOUBLE_EQ(l->time, 1700000000.25);
  EXPECT_EQ(l->detail, "CHECK_CONDITION NOT_READY");
  EXPECT_FALSE(Parse("# writer 1 blocks 2 block_size 512"));
  EXPECT_FALSE(Parse("X 1 2 3"));
  EXPECT_FALSE(Parse("A 1"));
}

TEST(Ledger, LatestAcknowledgedPasses) {
  Ledger led(7);
  for (auto l : {L('I', 5, 1), L('A', 5, 1), L('I', 5, 3), L('A', 5, 3)}) led.Add(l);
  EXPECT_EQ(led.Check(5, Block(5, 3)), "");
  EXPECT_NE(led.Check(5, Block(5, 1)), "");  // an older acknowledged write: the latest was lost
}

TEST(Ledger, IssuedButUnacknowledgedLaterWriteMayHaveLanded) {
  Ledger led(7);
  for (auto l : {L('I', 5, 1), L('A', 5, 1), L('I', 5, 8), L('F', 5, 8)}) led.Add(l);
  EXPECT_EQ(led.Check(5, Block(5, 8)), "");
  EXPECT_EQ(led.Check(5, Block(5, 1)), "");
  EXPECT_NE(led.Check(5, Block(5, 2)), "");  // never issued for this LBA
}

TEST(Ledger, MissingOrMisplacedDataIsReportedExactly) {
  Ledger led(7);
  for (auto l : {L('I', 5, 1), L('A', 5, 1)}) led.Add(l);
  std::vector<std::byte> zero(4096);
  EXPECT_EQ(led.Check(5, zero), "lba 5: reads zeros, latest acknowledged seq 1");
  EXPECT_NE(led.Check(5, Block(6, 1)).find("misdirected"), std::string::npos);
  EXPECT_NE(led.Check(5, Block(5, 1, 99)).find("writer 99"), std::string::npos);
  auto torn = Block(5, 1);
  std::memset(torn.data() + 2048, 0, 2048);
  EXPECT_NE(led.Check(5, torn).find("CRC"), std::string::npos);
}

TEST(Ledger, BlocksNeverWrittenMayHoldAnything) {
  Ledger led(7);
  std::vector<std::byte> zero(4096);
  EXPECT_EQ(led.Check(9, zero), "");
  EXPECT_EQ(led.Check(9, Block(9, 1, 99)), "");  // an earlier run's stamp
  led.Add(L('I', 9, 4));                          // issued, outcome unknown
  EXPECT_EQ(led.Check(9, zero), "");
  EXPECT_EQ(led.Check(9, Block(9, 4)), "");
}

}  // namespace
}  // namespace tandem::stamp
