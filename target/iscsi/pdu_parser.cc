#include "target/iscsi/pdu_parser.h"

#include <algorithm>
#include <cstring>

#include "core/crc32c.h"

namespace tandem::target::iscsi {
namespace {

uint32_t get_le32(const uint8_t* p) {
  return uint32_t{p[0]} | uint32_t{p[1]} << 8 | uint32_t{p[2]} << 16 | uint32_t{p[3]} << 24;
}

}  // namespace

std::span<uint8_t> PduParser::prepare() {
  prepared_direct_ = false;
  if (broken_) return {};
  if (phase_ == Phase::kData && staged() == 0 && data_got_ < dest_.size()) {
    // Mid-segment with nothing staged: read straight into the destination.
    prepared_direct_ = true;
    return dest_.subspan(data_got_);
  }
  if (stage_pos_ == stage_end_) stage_pos_ = stage_end_ = 0;
  if (stage_.size() < kStagingBytes) stage_.resize(kStagingBytes);
  return std::span<uint8_t>(stage_).subspan(stage_end_);
}

void PduParser::commit(size_t n) {
  if (prepared_direct_) {
    data_got_ += std::min(n, dest_.size() - data_got_);
  } else {
    stage_end_ += std::min(n, stage_.size() - stage_end_);
  }
  prepared_direct_ = false;
}

void PduParser::feed(std::span<const uint8_t> bytes) {
  if (broken_) return;
  if (stage_pos_ == stage_end_) stage_pos_ = stage_end_ = 0;
  if (stage_.size() < stage_end_ + bytes.size()) stage_.resize(stage_end_ + bytes.size());
  std::copy(bytes.begin(), bytes.end(), stage_.begin() + static_cast<std::ptrdiff_t>(stage_end_));
  stage_end_ += bytes.size();
  prepared_direct_ = false;
}

void PduParser::reset_pdu() {
  phase_ = Phase::kHeader;
  hdr_got_ = 0;
  hdr_need_ = kBhsSize;
  dsl_ = 0;
  cur_ = RawPdu{};
  dest_ = {};
  data_got_ = 0;
  trailer_got_ = 0;
  trailer_need_ = 0;
}

size_t PduParser::bytes_wanted() const {
  size_t total = kBhsSize;
  if (hdr_got_ >= kBhsSize) {
    total = hdr_need_;
    if (dsl_ > 0) total += dsl_ + pad4(dsl_) + (limits_.data_digest ? 4 : 0);
  }
  const size_t have = hdr_got_ + data_got_ + trailer_got_ + staged();
  return total > have ? total - have : 0;
}

size_t PduParser::buffered() const { return hdr_got_ + data_got_ + trailer_got_ + staged(); }

bool PduParser::header_done() {
  std::copy(hdr_.begin(), hdr_.begin() + kBhsSize, cur_.bhs.begin());
  const uint32_t ahs_len = cur_.total_ahs_bytes();
  if (limits_.header_digest) {
    const uint32_t want = core::crc32c(std::span<const uint8_t>(hdr_.data(), kBhsSize + ahs_len));
    if (get_le32(hdr_.data() + kBhsSize + ahs_len) != want) {
      broken_ = PduError{PduErrorCode::kHeaderDigest, "header digest mismatch", cur_.bhs};
      return false;
    }
  }
  cur_.ahs.assign(hdr_.begin() + kBhsSize, hdr_.begin() + kBhsSize + ahs_len);
  // Each AHS is 2-byte length, type, specific; lengths must tile TotalAHSLength (§11.2.2).
  for (size_t off = 0; off < ahs_len;) {
    if (ahs_len - off < 4) break;
    const size_t len = size_t{cur_.ahs[off]} << 8 | cur_.ahs[off + 1];
    const size_t step = 3 + len + pad4(uint32_t(3 + len));
    if (len == 0 || off + step > ahs_len) {
      broken_ = PduError{PduErrorCode::kBadAhs, "AHS length inconsistent", cur_.bhs};
      return false;
    }
    off += step;
  }
  phase_ = Phase::kData;
  data_got_ = 0;
  if (dsl_ == 0) return true;
  std::span<std::byte> placed;
  if (placement_ != nullptr) placed = placement_->place(cur_.bhs, dsl_);
  if (placed.size() == dsl_) {
    dest_ = std::span<uint8_t>(reinterpret_cast<uint8_t*>(placed.data()), placed.size());
  } else {
    cur_.data.resize(dsl_);  // a private buffer: Login/Text/NOP data, or data to discard
    dest_ = cur_.data;
  }
  return true;
}

core::Result<std::optional<RawPdu>, PduError> PduParser::next() {
  if (broken_) return core::fail(*broken_);
  for (;;) {
    switch (phase_) {
      case Phase::kHeader: {
        const size_t take = std::min(hdr_need_ - hdr_got_, staged());
        if (take > 0) std::memcpy(hdr_.data() + hdr_got_, stage_.data() + stage_pos_, take);
        hdr_got_ += take;
        stage_pos_ += take;
        if (hdr_got_ < hdr_need_) return std::optional<RawPdu>{};
        if (hdr_need_ == kBhsSize) {
          // Check the length fields against our limits before waiting for (or storing) the
          // payload (§7.8; STYLE habit 4). TotalAHSLength is a byte: AHS is at most 1020.
          dsl_ = uint32_t{hdr_[5]} << 16 | uint32_t{hdr_[6]} << 8 | hdr_[7];
          if (dsl_ > limits_.max_data_segment) {
            Bhs bhs;
            std::copy(hdr_.begin(), hdr_.begin() + kBhsSize, bhs.begin());
            broken_ = PduError{PduErrorCode::kDataSegmentTooLong,
                               "DataSegmentLength " + std::to_string(dsl_) + " exceeds " +
                                   std::to_string(limits_.max_data_segment),
                               bhs};
            return core::fail(*broken_);
          }
          hdr_need_ = kBhsSize + size_t{hdr_[4]} * 4 + (limits_.header_digest ? 4 : 0);
          if (hdr_need_ > kBhsSize) continue;
        }
        if (!header_done()) return core::fail(*broken_);
        break;
      }
      case Phase::kData: {
        const size_t take = std::min(dest_.size() - data_got_, staged());
        if (take > 0) {
          std::memcpy(dest_.data() + data_got_, stage_.data() + stage_pos_, take);
          data_got_ += take;
          stage_pos_ += take;
          copied_payload_ += take;
        }
        if (data_got_ < dest_.size()) return std::optional<RawPdu>{};
        phase_ = Phase::kTrailer;
        trailer_got_ = 0;
        trailer_need_ = dsl_ == 0 ? 0 : pad4(dsl_) + (limits_.data_digest ? 4 : 0);
        break;
      }
      case Phase::kTrailer: {
        const size_t take = std::min(trailer_need_ - trailer_got_, staged());
        if (take > 0) {
          std::memcpy(trailer_.data() + trailer_got_, stage_.data() + stage_pos_, take);
        }
        trailer_got_ += take;
        stage_pos_ += take;
        if (trailer_got_ < trailer_need_) return std::optional<RawPdu>{};
        bool data_ok = true;
        if (dsl_ > 0 && limits_.data_digest) {
          // The digest covers the data and its padding (§11.1), as they sit in the
          // destination and the trailer.
          const uint32_t pad = pad4(dsl_);
          uint32_t crc = core::crc32c(std::span<const uint8_t>(dest_.data(), dest_.size()));
          crc = core::crc32c(std::span<const uint8_t>(trailer_.data(), pad), crc);
          data_ok = get_le32(trailer_.data() + pad) == crc;
        }
        RawPdu pdu = std::move(cur_);
        reset_pdu();
        if (stage_pos_ == stage_end_) stage_pos_ = stage_end_ = 0;
        if (!data_ok) {
          return core::fail(PduError{PduErrorCode::kDataDigest, "data digest mismatch", pdu.bhs});
        }
        return std::optional<RawPdu>{std::move(pdu)};
      }
    }
  }
}

}  // namespace tandem::target::iscsi
