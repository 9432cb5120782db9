// Session: NOP, task management, Text (SendTargets) and Logout (RFC 7143 §11.5, §11.10,
// §11.14, §11.18).
#include <algorithm>

#include "target/iscsi/discovery.h"
#include "target/iscsi/session.h"

namespace tandem::target::iscsi {
namespace {

constexpr size_t kMaxPings = 16;

}  // namespace

void Session::on_nop_out(const NopOut& p, const RawPdu& raw, Actions& out) {
  if (p.itt == kReservedTag) {
    // Never answered (§11.18.1); with a TTT it answers our own NOP-In ping.
    if (p.ttt != kReservedTag && pings_.erase(p.ttt) == 1) out.push_back(PingReplied{p.ttt});
    return;
  }
  // A ping from the initiator carries TTT 0xffffffff (§11.18.2).
  if (p.ttt != kReservedTag) return reject(raw.bhs, RejectReason::kProtocolError, out);
  if (check_cmd_sn(p.immediate, p.cmd_sn) == Window::kDrop) return;
  NopIn r;
  r.lun = p.lun;
  r.itt = p.itt;
  r.ttt = kReservedTag;
  // Echo the ping data (§11.19.2), bounded by what the initiator accepts in one PDU.
  const size_t n = std::min<size_t>(p.data.size(), params_.initiator_max_recv_data_segment_length);
  r.data.assign(p.data.begin(), p.data.begin() + static_cast<std::ptrdiff_t>(n));
  fill_sns(r, true);
  out.push_back(SendPdu{std::move(r)});
}

uint32_t Session::send_ping(Actions& out) {
  if (pings_.size() >= kMaxPings) pings_.erase(pings_.begin());
  NopIn r;
  r.itt = kReservedTag;
  r.ttt = allocate_ttt();
  fill_sns(r, false);  // an unsolicited NOP-In does not advance StatSN (§11.19.4)
  pings_.insert(r.ttt);
  const uint32_t ttt = r.ttt;
  out.push_back(SendPdu{std::move(r)});
  return ttt;
}

void Session::abort_where(bool all_luns, uint64_t lun) {
  std::vector<uint32_t> victims;
  for (const auto& [itt, t] : tasks_) {
    if (all_luns || t.lun == lun) victims.push_back(itt);
  }
  for (uint32_t itt : victims) abort_task(itt);
}

void Session::on_tmf(const TaskMgmtRequest& p, Actions& out) {
  if (check_cmd_sn(p.immediate, p.cmd_sn) == Window::kDrop) return;
  TmfResponse resp = TmfResponse::kComplete;
  bool close_after = false;
  switch (static_cast<TmfFunction>(p.function)) {
    case TmfFunction::kAbortTask: {
      auto it = tasks_.find(p.ref_task_tag);
      if (it != tasks_.end() && it->second.lun == p.lun) {
        abort_task(p.ref_task_tag);  // aborted tasks never get a response
      } else if (sn_le(exp_cmd_sn_, p.ref_cmd_sn) && sn_lt(p.ref_cmd_sn, p.cmd_sn) &&
                 received_ahead_.count(p.ref_cmd_sn) == 0) {
        // The command never arrived: treat its CmdSN as received and report success
        // (§11.5.1), which also plugs the CmdSN gap.
        mark_received(p.ref_cmd_sn);
      } else {
        resp = TmfResponse::kTaskDoesNotExist;
      }
      break;
    }
    case TmfFunction::kAbortTaskSet:
    case TmfFunction::kClearTaskSet:
      abort_where(false, p.lun);
      break;
    case TmfFunction::kLunReset:
      abort_where(false, p.lun);
      out.push_back(ResetDevice{decode_lun(p.lun), false});
      break;
    case TmfFunction::kTargetWarmReset:
    case TmfFunction::kTargetColdReset:
      abort_where(true, 0);
      out.push_back(ResetDevice{0, true});
      // A cold reset also drops the connections (§11.5.1).
      close_after = p.function == static_cast<uint8_t>(TmfFunction::kTargetColdReset);
      break;
    case TmfFunction::kClearAca:
      resp = TmfResponse::kNotSupported;
      break;
    case TmfFunction::kTaskReassign:
      resp = TmfResponse::kReassignNotSupported;  // needs ErrorRecoveryLevel 2
      break;
    default:
      resp = TmfResponse::kRejected;
      break;
  }
  TaskMgmtResponse r;
  r.response = static_cast<uint8_t>(resp);
  r.itt = p.itt;
  fill_sns(r, true);
  out.push_back(SendPdu{r});
  if (close_after) {
    closed_ = true;
    out.push_back(CloseConnection{false});
    return;
  }
  pump_r2t_waiters(out);  // aborted writes may have freed buffer budget
}

void Session::send_text_chunk(uint64_t lun, uint32_t itt, Actions& out) {
  const size_t max = std::max<uint32_t>(params_.initiator_max_recv_data_segment_length, 512);
  const size_t n = std::min(max, text_out_.size());
  const bool more = text_out_.size() > n;
  TextResponse r;
  r.lun = lun;
  r.itt = itt;
  r.final = !more;
  r.cont = more;
  r.data.assign(text_out_.begin(), text_out_.begin() + static_cast<std::ptrdiff_t>(n));
  text_out_.erase(text_out_.begin(), text_out_.begin() + static_cast<std::ptrdiff_t>(n));
  if (more) {
    // The initiator fetches the rest with empty Text Requests echoing this TTT (§11.11.4).
    text_ttt_ = allocate_ttt();
    r.ttt = *text_ttt_;
  } else {
    text_ttt_.reset();
  }
  fill_sns(r, true);
  out.push_back(SendPdu{std::move(r)});
}

void Session::on_text(const TextRequest& p, const RawPdu& raw, Actions& out) {
  if (p.itt == kReservedTag) return reject(raw.bhs, RejectReason::kInvalidPduField, out);
  if (p.ttt != kReservedTag && (!text_ttt_ || *text_ttt_ != p.ttt)) {
    return reject(raw.bhs, RejectReason::kInvalidPduField, out);
  }
  if (check_cmd_sn(p.immediate, p.cmd_sn) == Window::kDrop) return;
  if (p.ttt == kReservedTag) {
    // A fresh request abandons any exchange in progress (§11.10.4).
    text_ttt_.reset();
    text_out_.clear();
    (void)text_in_.take();
  } else if (!text_out_.empty()) {
    return send_text_chunk(p.lun, p.itt, out);
  }
  if (!text_in_.append(p.data)) {
    (void)text_in_.take();
    return reject(raw.bhs, RejectReason::kProtocolError, out);
  }
  if (p.cont) {
    // More request text follows: answer empty, with a TTT to continue on (§11.10.2).
    TextResponse r;
    r.lun = p.lun;
    r.itt = p.itt;
    r.final = false;
    text_ttt_ = allocate_ttt();
    r.ttt = *text_ttt_;
    fill_sns(r, true);
    out.push_back(SendPdu{std::move(r)});
    return;
  }
  const std::vector<uint8_t> text = text_in_.take();
  auto keys = parse_text(text);
  if (!keys) return reject(raw.bhs, RejectReason::kProtocolError, out);
  text_out_.clear();
  for (const TextPair& kv : *keys) {
    if (kv.key == "SendTargets") {
      auto body = build_send_targets(
          kv.value, type_, initiator_name_,
          target_name_ ? std::optional<std::string_view>(*target_name_) : std::nullopt,
          catalog_.list());
      text_out_.insert(text_out_.end(), body.begin(), body.end());
    } else {
      // Full-feature renegotiation is not offered; unknown keys are NotUnderstood (§6.2).
      append_pair(text_out_, kv.key, "NotUnderstood");
    }
  }
  send_text_chunk(p.lun, p.itt, out);
}

void Session::on_logout(const LogoutRequest& p, Actions& out) {
  if (check_cmd_sn(p.immediate, p.cmd_sn) == Window::kDrop) return;
  LogoutResponse r;
  r.itt = p.itt;
  if (p.reason == 2) {
    r.response = 2;  // connection recovery not supported (ERL < 2, §11.15.1)
  } else if (p.reason == 1 && p.cid != cid_) {
    r.response = 1;  // CID not found
  } else if (p.reason > 2) {
    r.response = 3;  // cleanup failed: unknown reason code
  }
  r.time2wait = uint16_t(std::min<uint32_t>(params_.default_time2wait, 0xffff));
  r.time2retain = uint16_t(std::min<uint32_t>(params_.default_time2retain, 0xffff));
  if (r.response == 0) {
    // Closing ends every task of this connection; none of them is answered.
    std::vector<uint32_t> all;
    for (const auto& [itt, t] : tasks_) all.push_back(itt);
    for (uint32_t itt : all) abort_task(itt);
  }
  fill_sns(r, true);
  out.push_back(SendPdu{r});
  if (r.response == 0) {
    logged_out_ = true;
    out.push_back(CloseConnection{true});
  }
}

void Session::request_logout(uint16_t wait_seconds, Actions& out) {
  if (closed_ || logged_out_) return;
  AsyncMessage m;
  m.async_event = 1;            // target requests Logout (§11.9.1)
  m.parameter3 = wait_seconds;  // time to wait for the Logout (§11.9.1)
  fill_sns(m, true);
  out.push_back(SendPdu{std::move(m)});
}

}  // namespace tandem::target::iscsi
