#include "target/iscsi/pdu_wire.h"

#include <algorithm>
#include <span>
#include <utility>

#include "core/crc32c.h"

namespace tandem::target::iscsi {

WirePdu serialize_parts(Pdu&& pdu, DigestOptions digests) {
  std::vector<uint8_t> payload;
  if (auto* d = std::get_if<DataIn>(&pdu)) payload.swap(d->data);
  RawPdu raw = to_raw(pdu);
  if (!payload.empty()) {
    // to_raw() saw an empty segment: the lengths are set again from the real one, exactly as
    // to_raw() does (DataSegmentLength, BHS bytes 5-7).
    const uint32_t dsl = static_cast<uint32_t>(std::min<size_t>(payload.size(), kMaxDataSegmentField));
    raw.bhs[5] = uint8_t(dsl >> 16);
    raw.bhs[6] = uint8_t(dsl >> 8);
    raw.bhs[7] = uint8_t(dsl);
    raw.data = std::move(payload);
  }
  WirePdu w;
  const size_t dlen = raw.data.size();
  w.data = std::move(raw.data);
  raw.data.clear();
  w.head = serialize(raw, {digests.header, false});
  if (dlen > 0) {
    const uint8_t zeros[3] = {0, 0, 0};
    const uint32_t pad = pad4(static_cast<uint32_t>(dlen));
    w.tail.assign(zeros, zeros + pad);
    if (digests.data) {
      // Extend semantics: crc32c(pad, crc32c(data)) == crc32c(data ++ pad).
      const uint32_t crc = core::crc32c(std::span<const uint8_t>(w.tail),
                                        core::crc32c(std::span<const uint8_t>(w.data)));
      for (int i = 0; i < 4; ++i) w.tail.push_back(uint8_t(crc >> (8 * i)));
    }
  }
  return w;
}

}  // namespace tandem::target::iscsi
