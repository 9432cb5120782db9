// CDB field decoding, fixed-format sense bytes and PR state encoding.
#include <gtest/gtest.h>

#include "target/scsi/cdb.h"
#include "target/scsi/pr_store.h"
#include "target/scsi/sense.h"
#include "tests/unit/target_scsi/scsi_test_util.h"

namespace tandem::target::scsi {
namespace {

using testing::cdb_of;

TEST(Cdb, BigEndianHelpers) {
  uint8_t b[8] = {};
  put_be64(b, 0x0102030405060708ull);
  EXPECT_EQ(get_be64(b), 0x0102030405060708ull);
  EXPECT_EQ(get_be32(b), 0x01020304u);
  EXPECT_EQ(get_be24(b), 0x010203u);
  EXPECT_EQ(get_be16(b + 6), 0x0708u);
  std::vector<uint8_t> v;
  append_be16(v, 0xABCD);
  append_be32(v, 0x11223344);
  EXPECT_EQ(v, (std::vector<uint8_t>{0xAB, 0xCD, 0x11, 0x22, 0x33, 0x44}));
}

TEST(Cdb, LengthFromGroupCode) {
  EXPECT_EQ(cdb_length(0x00), 6u);
  EXPECT_EQ(cdb_length(0x28), 10u);
  EXPECT_EQ(cdb_length(0x5E), 10u);
  EXPECT_EQ(cdb_length(0x88), 16u);
  EXPECT_EQ(cdb_length(0xA8), 12u);
  EXPECT_EQ(cdb_length(0x60), 0u);
  EXPECT_EQ(cdb_length(0xC0), 0u);
}

TEST(Cdb, DecodeLbaRangeLayouts) {
  auto r6 = decode_lba_range(cdb_of({0x08, 0xFF, 0x12, 0x34, 0x00}));
  EXPECT_EQ(r6.lba, 0x1F1234u);  // 21 bits
  EXPECT_EQ(r6.blocks, 256u);    // 0 means 256 (SBC-3 5.15)
  auto r10 = decode_lba_range(cdb_of({0x28, 0, 0x01, 0x02, 0x03, 0x04, 0, 0x00, 0x10, 0}));
  EXPECT_EQ(r10.lba, 0x01020304u);
  EXPECT_EQ(r10.blocks, 16u);
  auto r12 = decode_lba_range(cdb_of({0xA8, 0, 0, 0, 0, 9, 0, 1, 0, 0, 0, 0}));
  EXPECT_EQ(r12.lba, 9u);
  EXPECT_EQ(r12.blocks, 0x10000u);
  auto r16 = decode_lba_range(cdb_of({0x88, 0, 1, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0}));
  EXPECT_EQ(r16.lba, 0x0100000000000002ull);
  EXPECT_EQ(r16.blocks, 3u);
  auto caw = decode_lba_range(cdb_of({0x89, 0, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0, 2, 0, 0}));
  EXPECT_EQ(caw.lba, 5u);
  EXPECT_EQ(caw.blocks, 2u);
}

TEST(Cdb, RangeOkIsOverflowSafe) {
  EXPECT_TRUE(range_ok(0, 10, 10));
  EXPECT_TRUE(range_ok(10, 0, 10));
  EXPECT_FALSE(range_ok(11, 0, 10));
  EXPECT_FALSE(range_ok(9, 2, 10));
  EXPECT_FALSE(range_ok(~0ull, 2, 10));
  EXPECT_FALSE(range_ok(2, ~0u, 10));
}

TEST(Sense, FixedFormatBytes) {
  auto b = build_fixed_sense(make_sense(SenseKey::kIllegalRequest, kAscLbaOutOfRange));
  EXPECT_EQ(
      b, (std::vector<uint8_t>{0x70, 0, 0x05, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x21, 0x00, 0, 0, 0, 0}));
}

TEST(Sense, InformationAndFieldPointer) {
  Sense s = make_sense(SenseKey::kMiscompare, kAscMiscompareDuringVerify);
  s.information = 0x01020304;
  EXPECT_EQ(build_fixed_sense(s), (std::vector<uint8_t>{0xF0, 0, 0x0E, 1, 2, 3, 4, 10, 0, 0, 0, 0,
                                                        0x1D, 0x00, 0, 0, 0, 0}));
  auto f = build_fixed_sense(invalid_field_in_cdb(1, 7));
  EXPECT_EQ(f[15], 0x80 | 0x40 | 0x08 | 0x07);
  EXPECT_EQ(f[16], 0);
  EXPECT_EQ(f[17], 1);
  auto p = build_fixed_sense(invalid_field_in_parameter_list(0x123));
  EXPECT_EQ(p[12], 0x26);
  EXPECT_EQ(p[15], 0x80);  // C/D = 0 (parameter list), BPV = 0
  EXPECT_EQ(p[16], 0x01);
  EXPECT_EQ(p[17], 0x23);
}

TEST(Sense, CheckConditionResult) {
  auto r = check_condition(parameter_list_length_error());
  EXPECT_EQ(r.status, Status::kCheckCondition);
  ASSERT_EQ(r.sense.size(), kFixedSenseLength);
  EXPECT_EQ(r.sense[12], 0x1A);
}

TEST(PrStateCodec, RoundTrip) {
  PrState s;
  s.generation = 42;
  s.aptpl = true;
  s.registrations.push_back({"iqn.a,i,0x1", 1, false, 0x1122334455667788ull});
  s.registrations.push_back({"iqn.b with space,i,0x2", 0, true, 7});
  s.reserved = true;
  s.type = 5;
  s.holder_port = "iqn.a,i,0x1";
  s.holder_rtp = 1;
  auto bytes = serialize_pr_state(s);
  auto back = parse_pr_state(bytes);
  ASSERT_TRUE(back.has_value());
  EXPECT_EQ(*back, s);
  auto empty = parse_pr_state(serialize_pr_state(PrState{}));
  ASSERT_TRUE(empty.has_value());
  EXPECT_EQ(*empty, PrState{});
}

TEST(PrStateCodec, RejectsGarbage) {
  EXPECT_FALSE(parse_pr_state("").has_value());
  EXPECT_FALSE(parse_pr_state("hello\n").has_value());
  EXPECT_FALSE(parse_pr_state("tandem-pr 1\ngen x\n").has_value());
  EXPECT_FALSE(parse_pr_state("tandem-pr 1\nreg 1 2\n").has_value());
  EXPECT_FALSE(parse_pr_state("tandem-pr 1\ngen 1").has_value());  // no final newline
}

TEST(PrStateCodec, MemoryStore) {
  MemoryPrStore store;
  EXPECT_FALSE(store.load().has_value());
  PrState s;
  s.generation = 3;
  store.save(s);
  EXPECT_EQ(store.save_count(), 1);
  ASSERT_TRUE(store.load().has_value());
  EXPECT_EQ(store.load()->generation, 3u);
}

}  // namespace
}  // namespace tandem::target::scsi
