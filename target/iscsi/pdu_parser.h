// PduParser: frames iSCSI PDUs out of a byte stream (RFC 7143 §11.1) with an explicit receive
// state machine (header -> data segment -> pad/digest), SPDK style. No I/O; one parser per
// connection, owned by that connection's strand (not thread-safe).
//
// Where the bytes go. The shell asks prepare() for the span its next socket read should fill
// and reports the count with commit(n); next() then advances the state machine. Between PDUs,
// in a header and in the pad/digest trailer, prepare() returns a staging buffer of
// kStagingBytes. Once a header is complete (length checked against the limit, header digest
// and AHS verified) the parser asks its DataPlacement where the data segment goes: the
// session answers with a span inside the task's write buffer, or nothing (the parser then
// uses RawPdu::data). The copy rule is exact: payload bytes that arrived in the same staging
// read as their header (so at most kStagingBytes - 48 per PDU) are copied once from the
// staging buffer to the destination; while the staging buffer is drained in the middle of a
// data segment, prepare() returns the rest of the destination itself and those bytes are
// read in place. copied_payload_bytes() counts the staged payload copies.
//
// feed() is the test/fuzz entry: it appends arbitrary bytes to the staging buffer (a copy).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "core/result.h"
#include "target/iscsi/pdu.h"

namespace tandem::target::iscsi {

struct ParserLimits {
  // Our own MaxRecvDataSegmentLength; 8192 is the value in force during login (§13.12).
  uint32_t max_data_segment = 8192;
  bool header_digest = false;
  bool data_digest = false;
};

// Decides where a PDU's data segment is stored. Called from next(), once per PDU with a
// non-empty data segment, after its header passed every check and before any data byte is
// stored; never for a PDU the parser will not deliver except by a data digest error. A
// returned span must have exactly `length` bytes and stay valid until next() returns that
// PDU or its kDataDigest error; anything else (e.g. an empty span) means "use RawPdu::data".
class DataPlacement {
 public:
  virtual std::span<std::byte> place(const Bhs& bhs, uint32_t length) = 0;

 protected:
  ~DataPlacement() = default;
};

class PduParser {
 public:
  static constexpr size_t kStagingBytes = 16 * 1024;

  explicit PduParser(ParserLimits limits = {}) : limits_(limits) {}

  // New limits apply from the next PDU not yet returned by next(); the caller switches them
  // right after sending the final Login Response (digests start there, §13.1).
  void set_limits(const ParserLimits& limits) { limits_ = limits; }
  const ParserLimits& limits() const { return limits_; }
  // Where data segments go from the next header on; nullptr: always RawPdu::data. The
  // placement must outlive the parser or be reset first.
  void set_placement(DataPlacement* placement) { placement_ = placement; }

  // Zero-copy intake: where the next read should go (never empty unless next() has a PDU or
  // error to return, or the stream is broken), then how many bytes landed there. Call next()
  // until it returns nullopt after each commit().
  std::span<uint8_t> prepare();
  void commit(size_t n);

  // Appends bytes (copying them). Call next() until it returns nullopt after each feed.
  void feed(std::span<const uint8_t> bytes);

  // A complete PDU, nullopt when more bytes are needed, or an error. kDataDigest errors
  // consume the PDU and the stream stays usable; every other error is sticky (framing lost).
  // A PDU whose data was placed has an empty RawPdu::data: its bytes are in the placement.
  [[nodiscard]] core::Result<std::optional<RawPdu>, PduError> next();

  // Bytes still missing to finish the PDU being parsed (a read-size hint).
  size_t bytes_wanted() const;
  // Bytes received and not yet returned as part of a PDU.
  size_t buffered() const;
  // Payload bytes copied out of the staging buffer so far (see the rule above).
  uint64_t copied_payload_bytes() const { return copied_payload_; }

 private:
  enum class Phase { kHeader, kData, kTrailer };

  size_t staged() const { return stage_end_ - stage_pos_; }
  void reset_pdu();
  // Header complete: checks and the placement decision. False when the stream is broken.
  bool header_done();

  ParserLimits limits_;
  DataPlacement* placement_ = nullptr;
  Phase phase_ = Phase::kHeader;
  std::optional<PduError> broken_;

  // Staging buffer: [stage_pos_, stage_end_) received, not yet consumed.
  std::vector<uint8_t> stage_;
  size_t stage_pos_ = 0;
  size_t stage_end_ = 0;
  bool prepared_direct_ = false;  // the last prepare() returned the data destination

  // BHS + AHS (TotalAHSLength is a byte: at most 1020) + header digest.
  std::array<uint8_t, kBhsSize + 1020 + 4> hdr_{};
  size_t hdr_got_ = 0;
  size_t hdr_need_ = kBhsSize;
  uint32_t dsl_ = 0;
  RawPdu cur_;
  std::span<uint8_t> dest_;  // the data segment's destination (placement or cur_.data)
  size_t data_got_ = 0;
  std::array<uint8_t, 8> trailer_{};  // pad (0-3) + data digest (4)
  size_t trailer_got_ = 0;
  size_t trailer_need_ = 0;
  uint64_t copied_payload_ = 0;
};

}  // namespace tandem::target::iscsi
