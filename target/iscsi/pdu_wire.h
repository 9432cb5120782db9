// PDU wire bytes in three parts (RFC 7143 §11.1), so a transport can hand a large data
// segment to the socket from where it lies instead of copying it into one buffer: a Data-In
// of 256 KiB is otherwise copied twice more (into the RawPdu, then into the wire vector).
// Pure: no I/O. The concatenation head ++ data ++ tail equals serialize(to_raw(pdu), digests).
#pragma once

#include <cstdint>
#include <vector>

#include "target/iscsi/pdu.h"

namespace tandem::target::iscsi {

struct WirePdu {
  std::vector<uint8_t> head;  // BHS, AHS, header digest
  std::vector<uint8_t> data;  // the data segment, moved out of the PDU
  std::vector<uint8_t> tail;  // pad to 4 bytes, data digest
  size_t size() const { return head.size() + data.size() + tail.size(); }
};

// Consumes pdu's data segment (Data-In's is moved, not copied; other PDUs are small).
WirePdu serialize_parts(Pdu&& pdu, DigestOptions digests = {});

}  // namespace tandem::target::iscsi
