#include "target/iscsi/pdu_parser.h"

#include <algorithm>

#include "core/crc32c.h"

namespace tandem::target::iscsi {
namespace {

uint32_t get_le32(const uint8_t* p) {
  return uint32_t{p[0]} | uint32_t{p[1]} << 8 | uint32_t{p[2]} << 16 | uint32_t{p[3]} << 24;
}

}  // namespace

void PduParser::feed(std::span<const uint8_t> bytes) {
  if (broken_) return;
  // Compact once the consumed prefix dominates, so the buffer stays about one PDU long.
  if (pos_ > 0 && pos_ * 2 >= buf_.size()) {
    buf_.erase(buf_.begin(), buf_.begin() + static_cast<std::ptrdiff_t>(pos_));
    pos_ = 0;
  }
  buf_.insert(buf_.end(), bytes.begin(), bytes.end());
}

size_t PduParser::bytes_wanted() const {
  const size_t have = buf_.size() - pos_;
  if (have < kBhsSize) return kBhsSize - have;
  const uint8_t* h = buf_.data() + pos_;
  const size_t dsl = size_t{h[5]} << 16 | size_t{h[6]} << 8 | h[7];
  size_t total = kBhsSize + size_t{h[4]} * 4 + (limits_.header_digest ? 4 : 0);
  if (dsl > 0) total += dsl + pad4(uint32_t(dsl)) + (limits_.data_digest ? 4 : 0);
  return total > have ? total - have : 0;
}

core::Result<std::optional<RawPdu>, PduError> PduParser::next() {
  if (broken_) return core::fail(*broken_);
  const size_t have = buf_.size() - pos_;
  if (have < kBhsSize) return std::optional<RawPdu>{};
  const uint8_t* h = buf_.data() + pos_;
  RawPdu pdu;
  std::copy(h, h + kBhsSize, pdu.bhs.begin());

  // Check the length fields against our limits before waiting for (or storing) the payload
  // (§7.8; STYLE habit 4). TotalAHSLength is a byte, so AHS is at most 1020 bytes.
  const uint32_t ahs_len = pdu.total_ahs_bytes();
  const uint32_t dsl = pdu.data_segment_length();
  if (dsl > limits_.max_data_segment) {
    broken_ = PduError{PduErrorCode::kDataSegmentTooLong,
                       "DataSegmentLength " + std::to_string(dsl) + " exceeds " +
                           std::to_string(limits_.max_data_segment),
                       pdu.bhs};
    return core::fail(*broken_);
  }
  const size_t hdr_end = kBhsSize + ahs_len + (limits_.header_digest ? 4 : 0);
  const size_t data_words = dsl == 0 ? 0 : dsl + pad4(dsl) + (limits_.data_digest ? 4 : 0);
  if (have < hdr_end + data_words) return std::optional<RawPdu>{};

  if (limits_.header_digest) {
    const uint32_t want = core::crc32c(std::span<const uint8_t>(h, kBhsSize + ahs_len));
    if (get_le32(h + kBhsSize + ahs_len) != want) {
      broken_ = PduError{PduErrorCode::kHeaderDigest, "header digest mismatch", pdu.bhs};
      return core::fail(*broken_);
    }
  }
  pdu.ahs.assign(h + kBhsSize, h + kBhsSize + ahs_len);
  // Each AHS is 2-byte length, type, specific; lengths must tile TotalAHSLength (§11.2.2).
  for (size_t off = 0; off < ahs_len;) {
    if (ahs_len - off < 4) break;
    const size_t len = size_t{pdu.ahs[off]} << 8 | pdu.ahs[off + 1];
    const size_t step = 3 + len + pad4(uint32_t(3 + len));
    if (len == 0 || off + step > ahs_len) {
      broken_ = PduError{PduErrorCode::kBadAhs, "AHS length inconsistent", pdu.bhs};
      return core::fail(*broken_);
    }
    off += step;
  }
  const uint8_t* d = h + hdr_end;
  bool data_ok = true;
  if (dsl > 0 && limits_.data_digest) {
    const uint32_t want = core::crc32c(std::span<const uint8_t>(d, dsl + pad4(dsl)));
    data_ok = get_le32(d + dsl + pad4(dsl)) == want;
  }
  if (data_ok) pdu.data.assign(d, d + dsl);
  pos_ += hdr_end + data_words;
  if (pos_ == buf_.size()) {
    buf_.clear();
    pos_ = 0;
  }
  if (!data_ok) {
    return core::fail(PduError{PduErrorCode::kDataDigest, "data digest mismatch", pdu.bhs});
  }
  return std::optional<RawPdu>{std::move(pdu)};
}

}  // namespace tandem::target::iscsi
