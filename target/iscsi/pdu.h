// iSCSI PDU codec (RFC 7143 ch. 11): the 48-byte Basic Header Segment of every opcode as a
// typed struct, AHS, padding and CRC32C digests. Pure value types and functions, no I/O;
// safe to use from any thread. Framing of a byte stream lives in pdu_parser.h.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <variant>
#include <vector>

#include "core/result.h"

namespace tandem::target::iscsi {

inline constexpr size_t kBhsSize = 48;
inline constexpr uint32_t kReservedTag = 0xffffffff;  // "no ITT/TTT" (RFC 7143 §11.2.1.8)
inline constexpr uint32_t kMaxDataSegmentField = 0xffffff;

using Bhs = std::array<uint8_t, kBhsSize>;
using Isid = std::array<uint8_t, 6>;

// RFC 7143 §11.2.1.2.
enum class Opcode : uint8_t {
  kNopOut = 0x00,
  kScsiCommand = 0x01,
  kTaskMgmtRequest = 0x02,
  kLoginRequest = 0x03,
  kTextRequest = 0x04,
  kDataOut = 0x05,
  kLogoutRequest = 0x06,
  kSnackRequest = 0x10,
  kNopIn = 0x20,
  kScsiResponse = 0x21,
  kTaskMgmtResponse = 0x22,
  kLoginResponse = 0x23,
  kTextResponse = 0x24,
  kDataIn = 0x25,
  kLogoutResponse = 0x26,
  kR2t = 0x31,
  kAsyncMessage = 0x32,
  kReject = 0x3f,
};

// Reject reasons (RFC 7143 §11.17.1).
enum class RejectReason : uint8_t {
  kDataDigestError = 0x02,
  kSnackReject = 0x03,
  kProtocolError = 0x04,
  kCommandNotSupported = 0x05,
  kImmediateCommandReject = 0x06,
  kTaskInProgress = 0x07,
  kInvalidDataAck = 0x08,
  kInvalidPduField = 0x09,
  kLongOpReject = 0x0a,
  kWaitingForLogout = 0x0c,
};

enum class PduErrorCode {
  kUnknownOpcode,       // answer with Reject "command not supported"
  kInvalidField,        // answer with Reject "invalid PDU field"
  kDataSegmentTooLong,  // framing lost: close the connection
  kHeaderDigest,        // framing cannot be trusted: close the connection (RFC 7143 §7.8)
  kDataDigest,          // PDU consumed and discarded: answer with Reject (RFC 7143 §7.8)
  kBadAhs,              // TotalAHSLength inconsistent: close the connection
};

// A framed PDU before typing: the BHS, raw AHS bytes (multiple of 4) and the data segment
// without padding or digests.
struct RawPdu {
  Bhs bhs{};
  std::vector<uint8_t> ahs{};
  std::vector<uint8_t> data{};

  Opcode opcode() const { return static_cast<Opcode>(bhs[0] & 0x3f); }
  bool immediate() const { return (bhs[0] & 0x40) != 0; }
  uint32_t itt() const;
  uint32_t data_segment_length() const;
  uint32_t total_ahs_bytes() const { return uint32_t{bhs[4]} * 4; }
};

struct PduError {
  PduErrorCode code;
  std::string message;
  Bhs header{};  // the offending BHS, for the Reject data segment
};

// ---- Initiator -> target -------------------------------------------------------------

struct NopOut {  // §11.18
  bool immediate = true;
  uint64_t lun = 0;
  uint32_t itt = kReservedTag;
  uint32_t ttt = kReservedTag;
  uint32_t cmd_sn = 0;
  uint32_t exp_stat_sn = 0;
  std::vector<uint8_t> data{};
};

struct ScsiCommand {  // §11.3
  bool immediate = false;
  bool final = true;
  bool read = false;
  bool write = false;
  uint8_t attr = 0;
  uint64_t lun = 0;
  uint32_t itt = 0;
  uint32_t expected_length = 0;
  uint32_t cmd_sn = 0;
  uint32_t exp_stat_sn = 0;
  std::array<uint8_t, 16> cdb{};
  std::vector<uint8_t> ahs{};
  std::vector<uint8_t> data{};
};

struct TaskMgmtRequest {  // §11.5
  bool immediate = true;
  uint8_t function = 0;
  uint64_t lun = 0;
  uint32_t itt = 0;
  uint32_t ref_task_tag = kReservedTag;
  uint32_t cmd_sn = 0;
  uint32_t exp_stat_sn = 0;
  uint32_t ref_cmd_sn = 0;
  uint32_t exp_data_sn = 0;
};

struct LoginRequest {  // §11.12
  bool transit = false;
  bool cont = false;
  uint8_t csg = 0;
  uint8_t nsg = 0;
  uint8_t version_max = 0;
  uint8_t version_min = 0;
  Isid isid{};
  uint16_t tsih = 0;
  uint32_t itt = 0;
  uint16_t cid = 0;
  uint32_t cmd_sn = 0;
  uint32_t exp_stat_sn = 0;
  std::vector<uint8_t> data{};
};

struct TextRequest {  // §11.10
  bool immediate = false;
  bool final = true;
  bool cont = false;
  uint64_t lun = 0;
  uint32_t itt = 0;
  uint32_t ttt = kReservedTag;
  uint32_t cmd_sn = 0;
  uint32_t exp_stat_sn = 0;
  std::vector<uint8_t> data{};
};

struct DataOut {  // §11.7
  bool final = false;
  uint64_t lun = 0;
  uint32_t itt = 0;
  uint32_t ttt = kReservedTag;
  uint32_t exp_stat_sn = 0;
  uint32_t data_sn = 0;
  uint32_t buffer_offset = 0;
  std::vector<uint8_t> data{};
};

struct LogoutRequest {  // §11.14
  bool immediate = false;
  uint8_t reason = 0;  // 0 close session, 1 close connection, 2 remove for recovery
  uint32_t itt = 0;
  uint16_t cid = 0;
  uint32_t cmd_sn = 0;
  uint32_t exp_stat_sn = 0;
};

struct SnackRequest {  // §11.16
  uint8_t type = 0;
  uint64_t lun = 0;
  uint32_t itt = kReservedTag;
  uint32_t ttt = kReservedTag;
  uint32_t exp_stat_sn = 0;
  uint32_t beg_run = 0;
  uint32_t run_length = 0;
};

// ---- Target -> initiator -------------------------------------------------------------

struct NopIn {  // §11.19
  uint64_t lun = 0;
  uint32_t itt = kReservedTag;
  uint32_t ttt = kReservedTag;
  uint32_t stat_sn = 0;
  uint32_t exp_cmd_sn = 0;
  uint32_t max_cmd_sn = 0;
  std::vector<uint8_t> data{};
};

struct ScsiResponse {  // §11.4
  bool bidi_overflow = false;
  bool bidi_underflow = false;
  bool overflow = false;
  bool underflow = false;
  uint8_t response = 0;  // 0 command completed at target, 1 target failure
  uint8_t status = 0;
  uint32_t itt = 0;
  uint32_t snack_tag = 0;
  uint32_t stat_sn = 0;
  uint32_t exp_cmd_sn = 0;
  uint32_t max_cmd_sn = 0;
  uint32_t exp_data_sn = 0;
  uint32_t bidi_residual = 0;
  uint32_t residual = 0;
  std::vector<uint8_t> data{};  // 2-byte SenseLength + sense (§11.4.7)
};

struct TaskMgmtResponse {  // §11.6
  uint8_t response = 0;
  uint32_t itt = 0;
  uint32_t stat_sn = 0;
  uint32_t exp_cmd_sn = 0;
  uint32_t max_cmd_sn = 0;
};

struct LoginResponse {  // §11.13
  bool transit = false;
  bool cont = false;
  uint8_t csg = 0;
  uint8_t nsg = 0;
  uint8_t version_max = 0;
  uint8_t version_active = 0;
  Isid isid{};
  uint16_t tsih = 0;
  uint32_t itt = 0;
  uint32_t stat_sn = 0;
  uint32_t exp_cmd_sn = 0;
  uint32_t max_cmd_sn = 0;
  uint8_t status_class = 0;
  uint8_t status_detail = 0;
  std::vector<uint8_t> data{};
};

struct TextResponse {  // §11.11
  bool final = true;
  bool cont = false;
  uint64_t lun = 0;
  uint32_t itt = 0;
  uint32_t ttt = kReservedTag;
  uint32_t stat_sn = 0;
  uint32_t exp_cmd_sn = 0;
  uint32_t max_cmd_sn = 0;
  std::vector<uint8_t> data{};
};

struct DataIn {  // §11.7
  bool final = false;
  bool ack = false;
  bool overflow = false;
  bool underflow = false;
  bool status_present = false;
  uint8_t status = 0;
  uint64_t lun = 0;
  uint32_t itt = 0;
  uint32_t ttt = kReservedTag;
  uint32_t stat_sn = 0;
  uint32_t exp_cmd_sn = 0;
  uint32_t max_cmd_sn = 0;
  uint32_t data_sn = 0;
  uint32_t buffer_offset = 0;
  uint32_t residual = 0;
  std::vector<uint8_t> data{};
};

struct LogoutResponse {  // §11.15
  uint8_t response = 0;
  uint32_t itt = 0;
  uint32_t stat_sn = 0;
  uint32_t exp_cmd_sn = 0;
  uint32_t max_cmd_sn = 0;
  uint16_t time2wait = 0;
  uint16_t time2retain = 0;
};

struct R2t {  // §11.8
  uint64_t lun = 0;
  uint32_t itt = 0;
  uint32_t ttt = 0;
  uint32_t stat_sn = 0;
  uint32_t exp_cmd_sn = 0;
  uint32_t max_cmd_sn = 0;
  uint32_t r2t_sn = 0;
  uint32_t buffer_offset = 0;
  uint32_t desired_length = 0;
};

struct AsyncMessage {  // §11.9
  uint64_t lun = 0;
  uint32_t stat_sn = 0;
  uint32_t exp_cmd_sn = 0;
  uint32_t max_cmd_sn = 0;
  uint8_t async_event = 0;
  uint8_t async_vcode = 0;
  uint16_t parameter1 = 0;
  uint16_t parameter2 = 0;
  uint16_t parameter3 = 0;
  std::vector<uint8_t> data{};
};

struct Reject {  // §11.17
  uint8_t reason = 0;
  uint32_t stat_sn = 0;
  uint32_t exp_cmd_sn = 0;
  uint32_t max_cmd_sn = 0;
  uint32_t data_sn = 0;
  std::vector<uint8_t> data{};  // the rejected PDU's BHS
};

using Pdu =
    std::variant<NopOut, ScsiCommand, TaskMgmtRequest, LoginRequest, TextRequest, DataOut,
                 LogoutRequest, SnackRequest, NopIn, ScsiResponse, TaskMgmtResponse, LoginResponse,
                 TextResponse, DataIn, LogoutResponse, R2t, AsyncMessage, Reject>;

struct DigestOptions {
  bool header = false;
  bool data = false;
};

// Typed <-> raw. decode() fails with kUnknownOpcode for opcodes not in ch. 11 and with
// kInvalidField for values that cannot be represented (e.g. AHS on a non-command PDU).
[[nodiscard]] core::Result<Pdu, PduError> decode(const RawPdu& raw);
RawPdu to_raw(const Pdu& pdu);
Opcode opcode_of(const Pdu& pdu);

// Wire bytes: BHS, AHS, header digest, data, pad to 4, data digest (§11.1).
std::vector<uint8_t> serialize(const RawPdu& raw, DigestOptions digests = {});
inline std::vector<uint8_t> encode(const Pdu& pdu, DigestOptions digests = {}) {
  return serialize(to_raw(pdu), digests);
}

inline constexpr uint32_t pad4(uint32_t n) { return (4 - (n & 3)) & 3; }

// Serial number arithmetic on 32-bit sequence numbers (RFC 1982, RFC 7143 §4.2.2.1).
inline bool sn_lt(uint32_t a, uint32_t b) { return a != b && static_cast<int32_t>(a - b) < 0; }
inline bool sn_le(uint32_t a, uint32_t b) { return a == b || sn_lt(a, b); }

// Big-endian field helpers shared by the codec and tests.
uint32_t get_be32(std::span<const uint8_t> p, size_t off);
void put_be32(std::span<uint8_t> p, size_t off, uint32_t v);

}  // namespace tandem::target::iscsi
