// serialize_parts(): head ++ data ++ tail is byte for byte what serialize(to_raw()) gives,
// for every data length modulo 4 and every digest combination; Data-In's segment is moved.
#include "target/iscsi/pdu_wire.h"

#include <gtest/gtest.h>

namespace tandem::target::iscsi {
namespace {

std::vector<uint8_t> joined(const WirePdu& w) {
  std::vector<uint8_t> out = w.head;
  out.insert(out.end(), w.data.begin(), w.data.end());
  out.insert(out.end(), w.tail.begin(), w.tail.end());
  return out;
}

TEST(PduWire, PartsEqualTheContiguousEncoding) {
  for (size_t len : {0u, 1u, 2u, 3u, 4u, 5u, 511u, 8192u, 262143u}) {
    for (int d = 0; d < 4; ++d) {
      const DigestOptions digests{(d & 1) != 0, (d & 2) != 0};
      DataIn in;
      in.itt = 0x01020304;
      in.data_sn = 3;
      in.buffer_offset = 4096;
      in.final = true;
      in.status_present = len % 2 == 0;
      in.data.resize(len);
      for (size_t i = 0; i < len; ++i) in.data[i] = uint8_t(i * 13 + 7);
      const std::vector<uint8_t> expected = serialize(to_raw(Pdu{in}), digests);
      Pdu pdu{in};
      const WirePdu w = serialize_parts(std::move(pdu), digests);
      EXPECT_EQ(joined(w), expected) << "len " << len << " digests " << d;
      EXPECT_EQ(w.size(), expected.size());
      EXPECT_EQ(w.data.size(), len);
      EXPECT_TRUE(std::get<DataIn>(pdu).data.empty()) << "the segment is moved, not copied";
    }
  }
}

TEST(PduWire, OtherPdusKeepTheirDataInTheParts) {
  NopIn nop;
  nop.itt = 9;
  nop.data = {1, 2, 3, 4, 5};
  ScsiResponse resp;
  resp.itt = 10;
  resp.data = {0, 2, 0x70, 0};
  for (const Pdu& p : {Pdu{nop}, Pdu{resp}}) {
    for (int d = 0; d < 4; ++d) {
      const DigestOptions digests{(d & 1) != 0, (d & 2) != 0};
      Pdu copy = p;
      EXPECT_EQ(joined(serialize_parts(std::move(copy), digests)), serialize(to_raw(p), digests));
    }
  }
}

}  // namespace
}  // namespace tandem::target::iscsi
