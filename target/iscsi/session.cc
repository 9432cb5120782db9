// Session core: construction, CmdSN window, dispatch by opcode, Reject, completions.
#include "target/iscsi/session.h"

#include <algorithm>

namespace tandem::target::iscsi {

Session::Session(const LoginResult& login, SessionConfig config, const TargetCatalog& catalog)
    : params_(login.params),
      config_(config),
      catalog_(catalog),
      type_(login.type),
      initiator_name_(login.initiator_name),
      initiator_port_(login.initiator_port()),
      cid_(login.cid),
      exp_cmd_sn_(login.exp_cmd_sn),
      max_cmd_sn_(login.exp_cmd_sn + std::max<uint32_t>(config.queue_depth, 1) - 1),
      stat_sn_(login.next_stat_sn),
      exp_stat_sn_(login.exp_stat_sn) {
  if (login.target) target_name_ = login.target->name;
  // MaxCmdSN never moves backwards (§4.2.2.1): start from what login announced if the
  // session's own queue depth would give less.
  const uint32_t announced_ahead = login.max_cmd_sn - exp_cmd_sn_;
  if (announced_ahead < 0x10000 && sn_lt(max_cmd_sn_, login.max_cmd_sn)) {
    max_cmd_sn_ = login.max_cmd_sn;
  }
}

uint32_t Session::allocate_ttt() {
  // TTTs are opaque to the initiator; never hand out the reserved value (§11.2.1.8).
  uint32_t t = next_ttt_++;
  if (t == kReservedTag) t = next_ttt_++;
  return t;
}

Session::Window Session::check_cmd_sn(bool immediate, uint32_t cmd_sn) {
  // Immediate commands are delivered at once and do not advance ExpCmdSN (§4.2.2.1).
  if (immediate) return Window::kAccept;
  // Outside [ExpCmdSN, MaxCmdSN], or already received: silently ignored (§4.2.2.1).
  if (sn_lt(cmd_sn, exp_cmd_sn_) || sn_lt(max_cmd_sn_, cmd_sn) ||
      received_ahead_.count(cmd_sn) != 0) {
    return Window::kDrop;
  }
  mark_received(cmd_sn);
  return Window::kAccept;
}

void Session::mark_received(uint32_t cmd_sn) {
  if (cmd_sn != exp_cmd_sn_) {
    // With one TCP connection a gap only appears when a command was rejected; we deliver
    // the later command at once and let ExpCmdSN wait for the gap to be plugged (§11.17).
    received_ahead_.insert(cmd_sn);
    return;
  }
  ++exp_cmd_sn_;
  while (!received_ahead_.empty() && received_ahead_.erase(exp_cmd_sn_) == 1) ++exp_cmd_sn_;
}

void Session::update_max_cmd_sn() {
  // Window = queue depth minus tasks still held; MaxCmdSN never moves backwards.
  const uint32_t depth = std::max<uint32_t>(config_.queue_depth, 1);
  const uint32_t held = static_cast<uint32_t>(std::min<size_t>(tasks_.size(), depth));
  const uint32_t candidate = exp_cmd_sn_ + (depth - held) - 1;
  if (sn_lt(max_cmd_sn_, candidate)) max_cmd_sn_ = candidate;
}

void Session::reject(const Bhs& header, RejectReason reason, Actions& out) {
  Reject r;
  r.reason = static_cast<uint8_t>(reason);
  r.data.assign(header.begin(), header.end());  // the rejected header (§11.17.2)
  fill_sns(r, true);
  out.push_back(SendPdu{std::move(r)});
}

void Session::on_pdu(const RawPdu& raw, Actions& out) {
  // The parser delivers the PDU whose header it last asked place() about, so a match means
  // its data is already in the span place() returned.
  if (placed_ && placed_->bhs != raw.bhs) drop_placement();
  const uint32_t placed = placed_ ? placed_->length : 0;
  if (!closed_ && !logged_out_) {
    auto pdu = decode(raw);
    if (!pdu) {
      reject(raw.bhs,
             pdu.error().code == PduErrorCode::kUnknownOpcode ? RejectReason::kCommandNotSupported
                                                              : RejectReason::kInvalidPduField,
             out);
    } else {
      dispatch(*pdu, raw, placed, out);
    }
  }
  drop_placement();
}

void Session::dispatch(const Pdu& pdu, const RawPdu& raw, uint32_t placed, Actions& out) {
  const bool discovery = type_ == SessionType::kDiscovery;
  switch (opcode_of(pdu)) {
    case Opcode::kNopOut:
      return on_nop_out(std::get<NopOut>(pdu), raw, out);
    case Opcode::kTextRequest:
      return on_text(std::get<TextRequest>(pdu), raw, out);
    case Opcode::kLogoutRequest:
      return on_logout(std::get<LogoutRequest>(pdu), out);
    case Opcode::kScsiCommand:
      // A Discovery session carries only Text, NOP and Logout (§6.3).
      if (discovery) return reject(raw.bhs, RejectReason::kProtocolError, out);
      return on_scsi_command(std::get<ScsiCommand>(pdu), raw, placed, out);
    case Opcode::kDataOut:
      if (discovery) return reject(raw.bhs, RejectReason::kProtocolError, out);
      return on_data_out(std::get<DataOut>(pdu), raw, placed, out);
    case Opcode::kTaskMgmtRequest:
      if (discovery) return reject(raw.bhs, RejectReason::kProtocolError, out);
      return on_tmf(std::get<TaskMgmtRequest>(pdu), out);
    case Opcode::kSnackRequest:
      // SNACK is only meaningful at ErrorRecoveryLevel > 0; we run at 0 (§11.16).
      return reject(raw.bhs, RejectReason::kCommandNotSupported, out);
    case Opcode::kLoginRequest:
      return reject(raw.bhs, RejectReason::kProtocolError, out);  // login is over (§6.3)
    default:
      // Target-to-initiator opcodes from an initiator.
      return reject(raw.bhs, RejectReason::kProtocolError, out);
  }
}

void Session::on_parse_error(const PduError& error, Actions& out) {
  drop_placement();  // data that failed its digest is never used (§7.8)
  if (closed_) return;
  if (error.code != PduErrorCode::kDataDigest) {
    // Framing is lost or untrustworthy: only connection recovery is possible (§7.8).
    closed_ = true;
    out.push_back(CloseConnection{false});
    return;
  }
  reject(error.header, RejectReason::kDataDigestError, out);
  // A lost Data-Out cannot be recovered at ERL 0: end its task with a CRC sense so the
  // initiator retries the command (SPC-4: ABORTED COMMAND, PROTOCOL SERVICE CRC ERROR).
  if ((error.header[0] & 0x3f) == static_cast<uint8_t>(Opcode::kDataOut)) {
    const uint32_t itt = get_be32(error.header, 16);
    auto it = tasks_.find(itt);
    if (it == tasks_.end() || it->second.executing) return;
    ScsiResponse r;
    r.itt = itt;
    r.status = static_cast<uint8_t>(scsi::Status::kCheckCondition);
    std::vector<uint8_t> sense(18, 0);
    sense[0] = 0x70;
    sense[2] = 0x0b;  // ABORTED COMMAND
    sense[7] = 10;
    sense[12] = 0x47;
    sense[13] = 0x05;
    r.data = {0, uint8_t(sense.size())};
    r.data.insert(r.data.end(), sense.begin(), sense.end());
    abort_task(itt);
    fill_sns(r, true);
    out.push_back(SendPdu{std::move(r)});
    pump_r2t_waiters(out);
  }
  // A SCSI Command with a bad data digest is not received: its CmdSN stays a gap the
  // initiator must plug (§11.17.1).
}

void Session::on_task_done(uint32_t itt, scsi::ScsiResult result, Actions& out) {
  auto it = tasks_.find(itt);
  if (it == tasks_.end() || !it->second.executing || closed_) return;  // aborted meanwhile
  const Task task = std::move(it->second);
  tasks_.erase(it);
  send_data_in(task, result, out);
}

void Session::connection_lost() {
  drop_placement();
  closed_ = true;
  tasks_.clear();
  pings_.clear();
}

}  // namespace tandem::target::iscsi
