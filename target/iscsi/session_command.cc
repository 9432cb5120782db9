// Session: SCSI Command intake, unsolicited and solicited (R2T) Data-Out, task execution
// (RFC 7143 §11.3, §11.7, §11.8, §13.10-13.17).
#include <algorithm>
#include <iterator>

#include "target/iscsi/session.h"

namespace tandem::target::iscsi {
namespace {

constexpr size_t kAbortedMemory = 256;  // late Data-Out for these ITTs is dropped quietly

void append_bytes(std::vector<std::byte>& to, const std::vector<uint8_t>& from) {
  const auto* p = reinterpret_cast<const std::byte*>(from.data());
  to.insert(to.end(), p, p + from.size());
}

}  // namespace

uint64_t decode_lun(uint64_t field) {
  const uint8_t method = uint8_t(field >> 62);
  if (method == 0 || method == 1) return (field >> 48) & 0x3fff;
  return field;
}

uint64_t encode_lun(uint64_t lun) {
  if (lun < 256) return lun << 48;                         // peripheral device addressing
  if (lun < 16384) return (uint64_t{0x4000} | lun) << 48;  // flat space addressing
  return lun;
}

bool Session::immediate_data_acceptable(const ScsiCommand& cmd, uint32_t dlen) const {
  // The checks of on_scsi_command() that decide whether immediate data is kept.
  const uint32_t unsolicited_limit = std::min(params_.first_burst_length, cmd.expected_length);
  return cmd.itt != kReservedTag && tasks_.count(cmd.itt) == 0 && cmd.write &&
         params_.immediate_data && dlen <= unsolicited_limit &&
         (cmd.final || (!params_.initial_r2t && dlen < unsolicited_limit)) &&
         cmd.expected_length <= config_.max_data_out;
}

std::span<std::byte> Session::place(const Bhs& bhs, uint32_t length) {
  drop_placement();
  if (closed_ || logged_out_ || type_ != SessionType::kNormal || length == 0) return {};
  RawPdu header;
  header.bhs = bhs;
  if (header.opcode() == Opcode::kScsiCommand) {
    auto pdu = decode(header);
    if (!pdu || !immediate_data_acceptable(std::get<ScsiCommand>(*pdu), length)) return {};
    // The command's whole write buffer, allocated once; on_scsi_command() adopts it.
    pending_buffer_.reserve(std::get<ScsiCommand>(*pdu).expected_length);
    pending_buffer_.resize(length);
    placed_ = Placement{bhs, length};
    return pending_buffer_;
  }
  if (header.opcode() != Opcode::kDataOut || header.total_ahs_bytes() != 0) return {};
  auto pdu = decode(header);
  if (!pdu) return {};
  const DataOut& d = std::get<DataOut>(*pdu);
  auto it = tasks_.find(d.itt);
  if (it == tasks_.end() || it->second.executing) return {};
  Task& t = it->second;
  const uint32_t have = static_cast<uint32_t>(t.data.size());
  if (data_out_error(t, d, have, length)) return {};
  // Validated: [have, have + length) lies inside EDTL (<= max_data_out), so the buffer
  // reserved at EDTL never reallocates under the parser.
  if (t.data.capacity() < t.edtl) t.data.reserve(t.edtl);
  t.data.resize(size_t{have} + length);
  placed_ = Placement{bhs, length, true, d.itt, have};
  return std::span<std::byte>(t.data).subspan(have, length);
}

void Session::drop_placement() {
  if (placed_ && placed_->task_buffer && !placed_->used) {
    // Not accepted after all (or lost to a digest error): forget the bytes it wrote.
    auto it = tasks_.find(placed_->itt);
    if (it != tasks_.end() && !it->second.executing &&
        it->second.data.size() == size_t{placed_->have} + placed_->length) {
      it->second.data.resize(placed_->have);
    }
  }
  placed_.reset();
  std::vector<std::byte>().swap(pending_buffer_);
}

void Session::on_scsi_command(const ScsiCommand& cmd, const RawPdu& raw, uint32_t placed,
                              Actions& out) {
  if (cmd.itt == kReservedTag) return reject(raw.bhs, RejectReason::kInvalidPduField, out);
  if (tasks_.count(cmd.itt) != 0) return reject(raw.bhs, RejectReason::kTaskInProgress, out);
  const uint32_t dlen = placed != 0 ? placed : static_cast<uint32_t>(cmd.data.size());
  const uint32_t unsolicited_limit = std::min(params_.first_burst_length, cmd.expected_length);
  // Immediate data needs W, ImmediateData=Yes, and fits FirstBurstLength and EDTL (§11.3.4,
  // §13.11, §13.14). Unsolicited Data-Out (F=0) needs InitialR2T=No (§13.10).
  if (dlen > 0 && (!cmd.write || !params_.immediate_data)) {
    return reject(raw.bhs, RejectReason::kProtocolError, out);
  }
  if (dlen > unsolicited_limit) return reject(raw.bhs, RejectReason::kProtocolError, out);
  if (!cmd.final && (!cmd.write || params_.initial_r2t || dlen >= unsolicited_limit)) {
    return reject(raw.bhs, RejectReason::kProtocolError, out);
  }
  uint32_t expected_in = cmd.read ? cmd.expected_length : 0;
  // AHS (§11.2.2): 1 = extended CDB (CDBs over 16 bytes: not supported), 2 = bidirectional
  // expected read length.
  for (size_t off = 0; off + 4 <= cmd.ahs.size();) {
    const size_t len = size_t{cmd.ahs[off]} << 8 | cmd.ahs[off + 1];
    const uint8_t type = cmd.ahs[off + 2];
    if (type == 1) return reject(raw.bhs, RejectReason::kCommandNotSupported, out);
    if (type == 2 && len == 5 && off + 8 <= cmd.ahs.size() && cmd.read && cmd.write) {
      expected_in = get_be32(cmd.ahs, off + 4);
    }
    off += 3 + len + pad4(uint32_t(3 + len));
  }
  const uint32_t depth = std::max<uint32_t>(config_.queue_depth, 1);
  if (cmd.immediate && tasks_.size() >= size_t{depth} * 2) {
    return reject(raw.bhs, RejectReason::kImmediateCommandReject, out);
  }
  if (check_cmd_sn(cmd.immediate, cmd.cmd_sn) == Window::kDrop) return;

  if (cmd.write && cmd.expected_length > config_.max_data_out) {
    // Too large to buffer: fail the command; its Data-Out is dropped as for an abort.
    return respond_failed(cmd.itt, out);
  }
  Task t;
  t.itt = cmd.itt;
  t.lun = cmd.lun;
  t.immediate = cmd.immediate;
  t.read = cmd.read;
  t.write = cmd.write;
  t.edtl = cmd.write ? cmd.expected_length : 0;
  t.expected_in = expected_in;
  t.cdb = cmd.cdb;
  if (placed != 0) {
    t.data = std::move(pending_buffer_);  // immediate data already sits in its buffer
    placed_->used = true;
  } else if (dlen > 0) {
    t.data.reserve(t.edtl);
    append_bytes(t.data, cmd.data);
  }
  t.committed = dlen;
  committed_ += dlen;
  t.next_r2t_offset = dlen;
  if (cmd.write && !cmd.final) {
    t.unsolicited_open = true;
    t.unsolicited_limit = unsolicited_limit;
  }
  auto [it, inserted] = tasks_.emplace(cmd.itt, std::move(t));
  maybe_r2t_or_execute(it->second, out);
  pump_r2t_waiters(out);
}

void Session::maybe_r2t_or_execute(Task& t, Actions& out) {
  if (!t.write || t.data.size() == t.edtl) return execute(t, out);
  if (t.unsolicited_open) return;  // wait for the F bit of the unsolicited burst
  // Solicit the rest: each R2T asks for at most MaxBurstLength, with no more than
  // MaxOutstandingR2T outstanding per task (§11.8, §13.13, §13.17).
  while (t.bursts.size() < std::max<uint32_t>(params_.max_outstanding_r2t, 1) &&
         t.next_r2t_offset < t.edtl) {
    Burst b;
    b.offset = t.next_r2t_offset;
    b.length = std::min(t.edtl - b.offset, std::max<uint32_t>(params_.max_burst_length, 512));
    // Bound the bytes a session may make us hold (STYLE habit 7); one R2T is always
    // allowed so that the session keeps moving.
    if (committed_ + b.length > config_.max_buffered_bytes && outstanding_r2ts_ > 0) {
      if (!t.waiting_for_budget) {
        t.waiting_for_budget = true;
        r2t_waiters_.push_back(t.itt);
      }
      return;
    }
    b.ttt = allocate_ttt();
    t.committed += b.length;
    committed_ += b.length;
    ++outstanding_r2ts_;
    R2t r;
    r.lun = t.lun;
    r.itt = t.itt;
    r.ttt = b.ttt;
    r.r2t_sn = t.r2t_sn++;
    r.buffer_offset = b.offset;
    r.desired_length = b.length;
    fill_sns(r, false);  // R2T carries but does not advance StatSN (§11.8.3)
    out.push_back(SendPdu{r});
    t.next_r2t_offset += b.length;
    t.bursts.push_back(b);
  }
}

void Session::release(Task& t) {
  committed_ -= t.committed;
  t.committed = 0;
  outstanding_r2ts_ -= t.bursts.size();
  t.bursts.clear();
}

void Session::pump_r2t_waiters(Actions& out) {
  // FIFO: the oldest waiting write gets budget first.
  while (!r2t_waiters_.empty()) {
    auto it = tasks_.find(r2t_waiters_.front());
    if (it == tasks_.end() || !it->second.waiting_for_budget) {
      r2t_waiters_.pop_front();
      continue;
    }
    Task& t = it->second;
    r2t_waiters_.pop_front();
    t.waiting_for_budget = false;
    maybe_r2t_or_execute(t, out);  // re-queues itself at the back if still short
    if (t.waiting_for_budget) {
      // Budget is exhausted again: keep its place at the head and stop.
      r2t_waiters_.pop_back();
      r2t_waiters_.push_front(t.itt);
      return;
    }
  }
}

void Session::execute(Task& t, Actions& out) {
  release(t);
  auto task = std::make_shared<scsi::ScsiTask>();
  task->cdb = t.cdb;
  task->lun = decode_lun(t.lun);
  task->initiator_port = initiator_port_;
  task->relative_target_port = 1;
  task->data_out = std::move(t.data);
  task->expected_in_length = t.expected_in;
  t.data.clear();
  t.executing = true;
  out.push_back(ExecuteTask{t.itt, std::move(task)});
}

void Session::respond_failed(uint32_t itt, Actions& out) {
  // CHECK CONDITION, ILLEGAL REQUEST / INVALID FIELD IN CDB (fixed-format sense, SPC-4
  // 4.5.3): the transfer is larger than this target accepts. A "Target Failure" response
  // (§11.4.3) would be right too, but some initiators (libiscsi) then read the status byte,
  // which is GOOD, and report a write that never happened as done.
  ScsiResponse r;
  r.itt = itt;
  r.response = 0x00;
  r.status = static_cast<uint8_t>(scsi::Status::kCheckCondition);
  const uint8_t sense[18] = {0x70, 0, 0x05, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x24, 0x00, 0, 0, 0, 0};
  r.data = {0, sizeof sense};
  r.data.insert(r.data.end(), std::begin(sense), std::end(sense));
  fill_sns(r, true);
  out.push_back(SendPdu{std::move(r)});
  aborted_itts_.push_back(itt);
  if (aborted_itts_.size() > kAbortedMemory) aborted_itts_.pop_front();
}

void Session::abort_task(uint32_t itt) {
  auto it = tasks_.find(itt);
  if (it != tasks_.end()) {
    release(it->second);
    tasks_.erase(it);
  }
  aborted_itts_.push_back(itt);
  if (aborted_itts_.size() > kAbortedMemory) aborted_itts_.pop_front();
}

std::optional<RejectReason> Session::data_out_error(const Task& t, const DataOut& d, uint32_t have,
                                                    uint32_t len) const {
  // DataPDUInOrder=Yes and DataSequenceInOrder=Yes are the only values we agree to, so
  // every Data-Out continues exactly where the previous one ended (§13.18, §13.19).
  if (d.ttt == kReservedTag) {
    // Unsolicited burst (§11.7.4): DataSN from 0, total within FirstBurstLength and EDTL.
    if (!t.unsolicited_open) return RejectReason::kProtocolError;
    if (d.data_sn != t.unsolicited_data_sn) return RejectReason::kProtocolError;
    if (d.buffer_offset != have) return RejectReason::kInvalidPduField;
    if (uint64_t{have} + len > t.unsolicited_limit) return RejectReason::kProtocolError;
    return std::nullopt;
  }
  auto b = std::find_if(t.bursts.begin(), t.bursts.end(),
                        [&](const Burst& x) { return x.ttt == d.ttt; });
  if (b == t.bursts.end()) return RejectReason::kInvalidPduField;
  // Solicited burst: DataSN restarts at 0 per R2T; offset and length stay inside it.
  if (d.data_sn != b->next_data_sn) return RejectReason::kProtocolError;
  if (d.buffer_offset != b->offset + b->received || d.buffer_offset != have) {
    return RejectReason::kInvalidPduField;
  }
  if (uint64_t{b->received} + len > b->length) return RejectReason::kProtocolError;
  const bool completes = b->received + len == b->length;
  if (d.final != completes) return RejectReason::kProtocolError;
  return std::nullopt;
}

void Session::on_data_out(const DataOut& d, const RawPdu& raw, uint32_t placed, Actions& out) {
  auto it = tasks_.find(d.itt);
  if (it == tasks_.end() || it->second.executing) {
    // Data for a task aborted or failed a moment ago is expected; anything else is bogus.
    if (std::find(aborted_itts_.begin(), aborted_itts_.end(), d.itt) != aborted_itts_.end()) {
      return;
    }
    return reject(raw.bhs, RejectReason::kInvalidPduField, out);
  }
  Task& t = it->second;
  const bool in_place = placed != 0 && placed_ && placed_->task_buffer && placed_->itt == d.itt;
  const uint32_t len = in_place ? placed : static_cast<uint32_t>(d.data.size());
  const uint32_t have = static_cast<uint32_t>(t.data.size()) - (in_place ? len : 0);
  if (auto why = data_out_error(t, d, have, len)) return reject(raw.bhs, *why, out);
  if (in_place) {
    placed_->used = true;  // already at [have, have + len)
  } else {
    if (t.data.capacity() < t.edtl) t.data.reserve(t.edtl);
    append_bytes(t.data, d.data);
  }
  if (d.ttt == kReservedTag) {
    t.committed += len;
    committed_ += len;
    ++t.unsolicited_data_sn;
    if (d.final) {
      t.unsolicited_open = false;
      t.next_r2t_offset = static_cast<uint32_t>(t.data.size());
      maybe_r2t_or_execute(t, out);
    }
    return;
  }
  auto b = std::find_if(t.bursts.begin(), t.bursts.end(),
                        [&](const Burst& x) { return x.ttt == d.ttt; });
  const bool completes = b->received + len == b->length;
  b->received += len;
  ++b->next_data_sn;
  if (completes) {
    t.bursts.erase(b);
    --outstanding_r2ts_;
    maybe_r2t_or_execute(t, out);
    pump_r2t_waiters(out);
  }
}

}  // namespace tandem::target::iscsi
