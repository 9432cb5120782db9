// PduParser: frames iSCSI PDUs out of a byte stream (RFC 7143 §11.1). Fed bytes, it yields a
// complete RawPdu, "need more" (nullopt) or a protocol error. No I/O; one parser per
// connection, owned by that connection's strand (not thread-safe).
#pragma once

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

class PduParser {
 public:
  explicit PduParser(ParserLimits limits = {}) : limits_(limits) {}

  // New limits apply from the next PDU not yet returned by next(); the caller switches them
  // right after sending the final Login Response (digests start there, §13.1).
  void set_limits(const ParserLimits& limits) { limits_ = limits; }
  const ParserLimits& limits() const { return limits_; }

  // Appends bytes. Call next() until it returns nullopt after each feed.
  void feed(std::span<const uint8_t> bytes);

  // A complete PDU, nullopt when more bytes are needed, or an error. kDataDigest errors
  // consume the PDU and the stream stays usable; every other error is sticky (framing lost).
  [[nodiscard]] core::Result<std::optional<RawPdu>, PduError> next();

  // Bytes still missing to finish the PDU being parsed (a read-size hint for the shell).
  size_t bytes_wanted() const;
  size_t buffered() const { return buf_.size() - pos_; }

 private:
  ParserLimits limits_;
  std::vector<uint8_t> buf_;
  size_t pos_ = 0;
  std::optional<PduError> broken_;
};

}  // namespace tandem::target::iscsi
