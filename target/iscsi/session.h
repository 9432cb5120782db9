// Session: full-feature phase of one iSCSI session/connection (RFC 7143 §3-4, §11), pure.
// Fed framed PDUs and SCSI completions, it emits Actions (PDUs to send, tasks to execute,
// resets, close); it does no I/O and keeps no clock. One Session per connection
// (MaxConnections=1), owned by that connection's strand; not thread-safe.
//
// Write payloads are received in place: as the parser's DataPlacement, the Session points
// the data segment of an acceptable SCSI Command (immediate data) or Data-Out straight at
// the task's write buffer, which becomes ScsiTask::data_out without a copy. Every check
// that on_pdu() makes (ITT, TTT, DataSN, offset, burst and FirstBurstLength bounds) is
// made before a span is handed out, so data can only land inside the buffer at the offset
// the protocol allows; a PDU then rejected or lost to a data digest error is undone.
#pragma once

#include <array>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <variant>
#include <vector>

#include "target/iscsi/login.h"
#include "target/iscsi/pdu.h"
#include "target/iscsi/pdu_parser.h"
#include "target/iscsi/target_catalog.h"
#include "target/iscsi/text.h"
#include "target/scsi/scsi_device.h"

namespace tandem::target::iscsi {

struct SessionConfig {
  uint32_t queue_depth = 128;                // CmdSN window (MaxCmdSN - ExpCmdSN + 1)
  uint32_t max_data_out = 16 * 1024 * 1024;  // largest write payload we buffer per command
  // Write bytes held or solicited per session (received Data-Out + outstanding R2Ts). New
  // R2Ts wait while it is exceeded, except that one R2T may always be outstanding. (A
  // task's buffer reserves its whole EDTL when its first data arrives, so bursts land in
  // place without reallocation; its pages are only touched as data is received, which is
  // what this counts.)
  uint64_t max_buffered_bytes = 64 * 1024 * 1024;
};

// ---- Actions, executed by the shell in order -------------------------------------------

struct SendPdu {
  Pdu pdu;  // encode with Session::digests()
};
struct ExecuteTask {
  uint32_t itt;
  std::shared_ptr<scsi::ScsiTask> task;  // call ScsiDevice::execute, then on_task_done(itt,..)
};
struct ResetDevice {
  uint64_t lun;
  bool whole_target;  // TARGET WARM/COLD RESET; else LOGICAL UNIT RESET of `lun`
};
struct PingReplied {
  uint32_t ttt;  // the initiator answered our NOP-In with this TTT
};
struct CloseConnection {
  bool logout;  // true after a Logout Response (clean), false on protocol failure
};
using Action = std::variant<SendPdu, ExecuteTask, ResetDevice, PingReplied, CloseConnection>;
using Actions = std::vector<Action>;

// TMF function codes and responses (§11.5.1, §11.6.1).
enum class TmfFunction : uint8_t {
  kAbortTask = 1,
  kAbortTaskSet = 2,
  kClearAca = 3,
  kClearTaskSet = 4,
  kLunReset = 5,
  kTargetWarmReset = 6,
  kTargetColdReset = 7,
  kTaskReassign = 8,
};
enum class TmfResponse : uint8_t {
  kComplete = 0,
  kTaskDoesNotExist = 1,
  kLunDoesNotExist = 2,
  kTaskStillAllegiant = 3,
  kReassignNotSupported = 4,
  kNotSupported = 5,
  kAuthorizationFailed = 6,
  kRejected = 255,
};

// LUN field (8 bytes, SAM-5 §4.7) <-> LUN number for single-level peripheral (00b) and
// flat (01b) addressing; other formats pass through unchanged.
uint64_t decode_lun(uint64_t field);
uint64_t encode_lun(uint64_t lun);

class Session final : public DataPlacement {
 public:
  // `catalog` answers SendTargets; it must outlive the Session.
  Session(const LoginResult& login, SessionConfig config, const TargetCatalog& catalog);

  // One framed PDU from the parser. Malformed or unexpected PDUs produce Reject or Close.
  // A PDU whose data segment the parser stored through place() has an empty raw.data.
  void on_pdu(const RawPdu& raw, Actions& out);
  // DataPlacement: the task buffer span for the data of the PDU whose header is `bhs`, or
  // empty (parser's own buffer) when that data would not be accepted as it stands.
  std::span<std::byte> place(const Bhs& bhs, uint32_t length) override;
  // A parser error: data digest -> Reject (and the affected task ends); anything else
  // closes the connection (§7.8).
  void on_parse_error(const PduError& error, Actions& out);
  // Completion of an ExecuteTask. Ignored for tasks aborted meanwhile (§11.5.1:
  // aborted tasks get no response).
  void on_task_done(uint32_t itt, scsi::ScsiResult result, Actions& out);
  // Target-initiated NOP-In ping (§11.19); returns its TTT. The shell times the reply.
  uint32_t send_ping(Actions& out);
  // Asks the initiator to log out within `wait_seconds` (Async Message event 1, §11.9.1),
  // e.g. before shutdown or when the target's volume is withdrawn. The shell closes the
  // connection itself if no Logout arrives in time.
  void request_logout(uint16_t wait_seconds, Actions& out);
  // The connection is gone: forget every task (executing ones are ignored on completion).
  void connection_lost();

  const SessionParams& params() const { return params_; }
  DigestOptions digests() const { return {params_.header_digest, params_.data_digest}; }
  ParserLimits parser_limits() const {
    return {params_.target_max_recv_data_segment_length, params_.header_digest,
            params_.data_digest};
  }
  const std::string& initiator_port() const { return initiator_port_; }
  uint32_t exp_cmd_sn() const { return exp_cmd_sn_; }
  uint32_t max_cmd_sn() const { return max_cmd_sn_; }
  uint32_t stat_sn() const { return stat_sn_; }
  size_t task_count() const { return tasks_.size(); }
  bool logged_out() const { return logged_out_; }

 private:
  struct Burst {  // one outstanding R2T (§11.8)
    uint32_t ttt;
    uint32_t offset;
    uint32_t length;
    uint32_t received = 0;
    uint32_t next_data_sn = 0;
  };
  struct Task {
    uint32_t itt = 0;
    uint64_t lun = 0;
    bool immediate = false;
    bool read = false;
    bool write = false;
    uint32_t edtl = 0;
    uint32_t expected_in = 0;
    std::array<uint8_t, 16> cdb{};
    std::vector<std::byte> data;    // Data-Out collected so far, in order (capacity EDTL)
    bool unsolicited_open = false;  // F=0 on the command: unsolicited Data-Out follows
    uint32_t unsolicited_limit = 0;
    uint32_t unsolicited_data_sn = 0;
    uint32_t next_r2t_offset = 0;  // first byte not yet covered by data or an R2T
    uint32_t r2t_sn = 0;
    std::vector<Burst> bursts;  // few (MaxOutstandingR2T); empty allocates nothing
    uint64_t committed = 0;     // bytes this task counts against max_buffered_bytes
    bool waiting_for_budget = false;
    bool executing = false;
  };

  // Sequencing (§4.2.2).
  enum class Window { kAccept, kDrop };
  Window check_cmd_sn(bool immediate, uint32_t cmd_sn);
  void mark_received(uint32_t cmd_sn);
  void update_max_cmd_sn();
  uint32_t take_stat_sn() { return stat_sn_++; }
  template <class T>
  void fill_sns(T& pdu, bool consume_stat_sn);

  void reject(const Bhs& header, RejectReason reason, Actions& out);
  void dispatch(const Pdu& pdu, const RawPdu& raw, uint32_t placed, Actions& out);

  // In-place receive (see the top of this file). `placed_` describes the last span handed
  // to the parser; `pending_buffer_` holds immediate data until its command is accepted.
  struct Placement {
    Bhs bhs{};
    uint32_t length = 0;
    bool task_buffer = false;  // Data-Out into tasks_[itt].data at [have, have + length)
    uint32_t itt = 0;
    uint32_t have = 0;
    bool used = false;  // on_pdu() accepted the data
  };
  void drop_placement();
  bool immediate_data_acceptable(const ScsiCommand& cmd, uint32_t dlen) const;
  std::optional<RejectReason> data_out_error(const Task& t, const DataOut& d, uint32_t have,
                                             uint32_t len) const;
  std::optional<Placement> placed_;
  std::vector<std::byte> pending_buffer_;

  // session_command.cc
  // `placed`: bytes of this PDU's data already in the task buffer (0: they are in raw.data).
  void on_scsi_command(const ScsiCommand& cmd, const RawPdu& raw, uint32_t placed, Actions& out);
  void on_data_out(const DataOut& d, const RawPdu& raw, uint32_t placed, Actions& out);
  void maybe_r2t_or_execute(Task& t, Actions& out);
  void execute(Task& t, Actions& out);
  void respond_failed(uint32_t itt, Actions& out);
  void release(Task& t);
  void pump_r2t_waiters(Actions& out);

  // session_response.cc
  void send_data_in(const Task& t, const scsi::ScsiResult& result, Actions& out);
  void send_text_chunk(uint64_t lun, uint32_t itt, Actions& out);

  // session_mgmt.cc
  void on_nop_out(const NopOut& p, const RawPdu& raw, Actions& out);
  void on_tmf(const TaskMgmtRequest& p, Actions& out);
  void on_text(const TextRequest& p, const RawPdu& raw, Actions& out);
  void on_logout(const LogoutRequest& p, Actions& out);
  void abort_task(uint32_t itt);
  void abort_where(bool all_luns, uint64_t lun);

  SessionParams params_;
  SessionConfig config_;
  const TargetCatalog& catalog_;
  SessionType type_;
  std::string initiator_name_;
  std::string initiator_port_;
  std::optional<std::string> target_name_;
  uint16_t cid_;

  uint32_t exp_cmd_sn_;
  uint32_t max_cmd_sn_;
  std::set<uint32_t> received_ahead_;  // CmdSNs received beyond a gap
  uint32_t stat_sn_;
  uint32_t exp_stat_sn_;
  uint32_t next_ttt_ = 1;
  uint64_t committed_ = 0;             // sum of Task::committed
  size_t outstanding_r2ts_ = 0;        // across all tasks
  std::deque<uint32_t> r2t_waiters_;   // ITTs that want R2Ts when budget frees
  std::map<uint32_t, Task> tasks_;     // by ITT
  std::deque<uint32_t> aborted_itts_;  // recent, to drop late Data-Out quietly
  std::set<uint32_t> pings_;           // TTTs of our outstanding NOP-In pings
  // Text Request continuation (§11.10): request text in, long response out.
  TextAccumulator text_in_;
  std::optional<uint32_t> text_ttt_;
  std::vector<uint8_t> text_out_;
  bool logged_out_ = false;
  bool closed_ = false;

  uint32_t allocate_ttt();
};

template <class T>
void Session::fill_sns(T& pdu, bool consume_stat_sn) {
  update_max_cmd_sn();
  pdu.stat_sn = consume_stat_sn ? take_stat_sn() : stat_sn_;
  pdu.exp_cmd_sn = exp_cmd_sn_;
  pdu.max_cmd_sn = max_cmd_sn_;
}

}  // namespace tandem::target::iscsi
