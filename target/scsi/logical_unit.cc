#include "target/scsi/logical_unit.h"

#include <algorithm>

namespace tandem::target::scsi {
namespace {

// Commands that neither report nor clear a pending unit attention (SAM-5 5.14, SPC-4 5.14).
bool ua_exempt(uint8_t opcode) {
  return opcode == op::kInquiry || opcode == op::kReportLuns || opcode == op::kRequestSense;
}

// Commands answered for a LUN other than 0 (SPC-4 6.6.2, 6.33, 6.39).
bool lun_independent(uint8_t opcode) {
  return opcode == op::kInquiry || opcode == op::kReportLuns || opcode == op::kRequestSense;
}

std::vector<std::byte> to_bytes(const std::vector<uint8_t>& v, size_t limit) {
  const size_t n = std::min(v.size(), limit);
  std::vector<std::byte> out(n);
  std::transform(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(n), out.begin(),
                 [](uint8_t b) { return static_cast<std::byte>(b); });
  return out;
}

}  // namespace

void reply(Command& cmd, const std::vector<uint8_t>& data, size_t allocation_length) {
  ScsiResult r;
  r.data_in = to_bytes(data, allocation_length);
  cmd.done(std::move(r));
}

void reply_good(Command& cmd) { cmd.done(ScsiResult{}); }

void reply_sense(Command& cmd, const Sense& sense) { cmd.done(check_condition(sense)); }

void reply_busy(Command& cmd) {
  ScsiResult r;
  r.status = Status::kBusy;
  cmd.done(std::move(r));
}

void reply_conflict(Command& cmd) {
  ScsiResult r;
  r.status = Status::kReservationConflict;
  cmd.done(std::move(r));
}

LogicalUnit::LogicalUnit(std::shared_ptr<core::BlockVolume> volume,
                         std::shared_ptr<PrStore> pr_store)
    : volume_(std::move(volume)), pr_store_(std::move(pr_store)) {
  if (!pr_store_) pr_store_ = std::make_shared<MemoryPrStore>();
  if (auto saved = pr_store_->load()) reservations_ = Reservations(std::move(*saved));
  last_block_count_ = volume_->block_count();
}

DeviceInfo LogicalUnit::device_info(const Command& cmd) const {
  DeviceInfo info;
  info.uuid = volume_->uuid();
  info.block_size = volume_->block_size();
  info.block_count = volume_->block_count();
  info.relative_target_port = cmd.task->relative_target_port;
  return info;
}

bool LogicalUnit::write_cache_enabled() {
  std::lock_guard lock(mu_);
  return mode_.write_cache_enabled();
}

std::optional<Sense> LogicalUnit::check_readable() const {
  if (volume_->state() == core::VolumeState::kOffline) {
    return make_sense(SenseKey::kNotReady, kAscNotReadyOffline);
  }
  return std::nullopt;
}

std::optional<Sense> LogicalUnit::check_writable() const {
  switch (volume_->state()) {
    case core::VolumeState::kHealthy:
    case core::VolumeState::kDegraded:
      // Control mode page SWP (SPC-4 7.5.8): DATA PROTECT / WRITE PROTECTED.
      if (software_write_protect_.load(std::memory_order_acquire)) {
        return make_sense(SenseKey::kDataProtect, kAscWriteProtected);
      }
      return std::nullopt;
    case core::VolumeState::kReadOnly:
      return make_sense(SenseKey::kDataProtect, kAscWriteProtected);
    case core::VolumeState::kHalted:
      return make_sense(SenseKey::kNotReady, kAscNotReadyBecomingReady);
    case core::VolumeState::kOffline:
      return make_sense(SenseKey::kNotReady, kAscNotReadyOffline);
  }
  return make_sense(SenseKey::kNotReady, kAscNotReadyOffline);
}

void LogicalUnit::queue_unit_attention(const std::string& port, Asc asc) {
  auto& q = unit_attentions_[port];
  if (std::find(q.begin(), q.end(), asc) != q.end()) return;
  if (q.size() >= kMaxPendingUnitAttentions) q.pop_front();
  q.push_back(asc);
}

void LogicalUnit::queue_unit_attentions(const PrOutResult& r) {
  for (const auto& [port, asc] : r.unit_attentions) queue_unit_attention(port, asc);
}

void LogicalUnit::execute(std::shared_ptr<ScsiTask> task, Done done) {
  // Every answer goes through here: Data-In never exceeds the expected length, and sense
  // is only sent with CHECK CONDITION.
  // The CDB's own transfer length, for the transport's residual overflow / underflow
  // (RFC 7143 11.4.5); it is a property of the CDB, so it goes with every status.
  const uint32_t limit = task->expected_in_length;
  std::optional<uint32_t> xfer;
  if (auto b = cdb_transfer_bytes(task->cdb, volume_->block_size())) {
    xfer = static_cast<uint32_t>(std::min<uint64_t>(*b, UINT32_MAX));
  }
  Command cmd{task,
              [done = std::move(done), limit, xfer](ScsiResult r) {
                if (r.data_in.size() > limit) r.data_in.resize(limit);
                if (r.status != Status::kCheckCondition) r.sense.clear();
                r.cdb_transfer_length = xfer;
                done(std::move(r));
              },
              Nexus{task->initiator_port, task->relative_target_port}};
  const Cdb& cdb = task->cdb;
  if (task->lun != 0 && !lun_independent(cdb[0])) {
    return reply_sense(cmd, make_sense(SenseKey::kIllegalRequest, kAscLunNotSupported));
  }
  const OpInfo* info = find_op(cdb[0], cdb[1] & 0x1F);
  if (info == nullptr) {
    if (has_service_actions(cdb[0])) return reply_sense(cmd, invalid_field_in_cdb(1, 4));
    return reply_sense(cmd, make_sense(SenseKey::kIllegalRequest, kAscInvalidCommandOperationCode));
  }
  {
    std::unique_lock lock(mu_);
    if (initiators_.size() < kMaxTrackedInitiators) initiators_.insert(task->initiator_port);
    // CAPACITY DATA HAS CHANGED when the volume was resized (SBC-3 4.6).
    const uint64_t blocks = volume_->block_count();
    if (blocks != last_block_count_) {
      last_block_count_ = blocks;
      for (const auto& port : initiators_) queue_unit_attention(port, kAscCapacityDataHasChanged);
    }
    if (!ua_exempt(cdb[0])) {
      auto it = unit_attentions_.find(task->initiator_port);
      if (it != unit_attentions_.end() && !it->second.empty()) {
        Asc asc = it->second.front();
        it->second.pop_front();
        if (it->second.empty()) unit_attentions_.erase(it);
        lock.unlock();
        return reply_sense(cmd, make_sense(SenseKey::kUnitAttention, asc));
      }
    }
    if (reservations_.conflicts(cmd.nexus, info->access)) {
      lock.unlock();
      return reply_conflict(cmd);
    }
  }
  (this->*(info->handler))(cmd);
}

void LogicalUnit::reset(const std::string& initiator_port) {
  // LOGICAL UNIT RESET releases RESERVE(6/10) reservations; PR state survives (SPC-4 5.9.1).
  // Every I_T nexus, the one that asked included, then learns BUS DEVICE RESET FUNCTION
  // OCCURRED (SAM-5 6.3.3). It is the highest-priority unit attention (SPC-4 5.14), so it is
  // reported before anything already pending.
  std::lock_guard lock(mu_);
  reservations_.clear_spc2();
  if (initiators_.size() < kMaxTrackedInitiators) initiators_.insert(initiator_port);
  for (const auto& port : initiators_) {
    auto& q = unit_attentions_[port];
    q.erase(std::remove(q.begin(), q.end(), kAscBusDeviceResetOccurred), q.end());
    if (q.size() >= kMaxPendingUnitAttentions) q.pop_back();
    q.push_front(kAscBusDeviceResetOccurred);
  }
}

void LogicalUnit::nexus_lost(const std::string& initiator_port) {
  std::lock_guard lock(mu_);
  // I_T nexus loss releases a RESERVE(6/10) reservation (SPC-2 5.5.1); PR state stays.
  reservations_.nexus_lost(initiator_port);
  unit_attentions_.erase(initiator_port);
  initiators_.erase(initiator_port);
}

// --- SPC-4 commands without medium access ---------------------------------------------

void LogicalUnit::test_unit_ready(Command& cmd) {
  if (auto s = check_readable()) return reply_sense(cmd, *s);
  reply_good(cmd);
}

void LogicalUnit::request_sense(Command& cmd) {
  // SPC-4 6.29: sense data go in the Data-In buffer with GOOD status; a pending unit
  // attention is reported (and cleared) first. Descriptor format is not supported.
  const Cdb& cdb = cmd.cdb();
  if (cdb[1] & 0x01) return reply_sense(cmd, invalid_field_in_cdb(1, 0));
  Sense s = make_sense(SenseKey::kNoSense, kAscNoAdditionalSense);
  {
    std::lock_guard lock(mu_);
    auto it = unit_attentions_.find(cmd.task->initiator_port);
    if (it != unit_attentions_.end() && !it->second.empty()) {
      s = make_sense(SenseKey::kUnitAttention, it->second.front());
      it->second.pop_front();
      if (it->second.empty()) unit_attentions_.erase(it);
    } else if (cmd.task->lun != 0) {
      s = make_sense(SenseKey::kIllegalRequest, kAscLunNotSupported);
    } else if (auto nr = check_readable()) {
      s = *nr;
    }
  }
  reply(cmd, build_fixed_sense(s), alloc_len_6(cdb));
}

void LogicalUnit::inquiry(Command& cmd) {
  const Cdb& cdb = cmd.cdb();
  auto data = build_inquiry(cdb, device_info(cmd), cmd.task->lun == 0);
  if (!data) return reply_sense(cmd, data.error());
  reply(cmd, *data, get_be16(&cdb[3]));
}

void LogicalUnit::report_luns(Command& cmd) {
  // SPC-4 6.33: one logical unit, LUN 0.
  const Cdb& cdb = cmd.cdb();
  const uint8_t select = cdb[2];
  const uint32_t alloc = get_be32(&cdb[6]);
  // SPC-4 only says the allocation length "should" be at least 16 (SPC-3 required it);
  // a shorter one simply truncates.
  std::vector<uint8_t> d(8, 0);
  switch (select) {
    case 0x00:
    case 0x02:
    case 0x10:
    case 0x12:
      d.resize(16, 0);
      break;  // LUN 0 (all zero bytes)
    case 0x01:
    case 0x11:
      break;  // well known LUNs only: none
    default:
      return reply_sense(cmd, invalid_field_in_cdb(2));
  }
  put_be32(&d[0], static_cast<uint32_t>(d.size() - 8));
  reply(cmd, d, alloc);
}

void LogicalUnit::read_capacity10(Command& cmd) {
  // SBC-3 5.16: with PMI = 0 the LOGICAL BLOCK ADDRESS field must be zero.
  const Cdb& cdb = cmd.cdb();
  if (!(cdb[8] & 0x01) && get_be32(&cdb[2]) != 0) return reply_sense(cmd, invalid_field_in_cdb(2));
  const uint64_t blocks = volume_->block_count();
  const uint64_t last = blocks == 0 ? 0 : blocks - 1;
  std::vector<uint8_t> d(8, 0);
  put_be32(&d[0], last > 0xFFFFFFFFull ? 0xFFFFFFFFu : static_cast<uint32_t>(last));
  put_be32(&d[4], volume_->block_size());
  reply(cmd, d, d.size());
}

void LogicalUnit::read_capacity16(Command& cmd) {
  // SBC-3 5.17: LBPME and LBPRZ advertise thin provisioning with zeroed unmapped blocks.
  const Cdb& cdb = cmd.cdb();
  const uint64_t blocks = volume_->block_count();
  std::vector<uint8_t> d(32, 0);
  put_be64(&d[0], blocks == 0 ? 0 : blocks - 1);
  put_be32(&d[8], volume_->block_size());
  // LOGICAL BLOCKS PER PHYSICAL BLOCK EXPONENT (SBC-3 5.16.2, table 64): 4 KiB physical.
  d[13] = logical_per_physical_exponent(volume_->block_size());
  d[14] = 0x80 | 0x40;  // LBPME, LBPRZ; LOWEST ALIGNED LBA 0
  reply(cmd, d, get_be32(&cdb[10]));
}

void LogicalUnit::mode_sense(Command& cmd) {
  const Cdb& cdb = cmd.cdb();
  const bool ten = cdb[0] == op::kModeSense10;
  // WP reflects a read-only volume and the control page's SWP (SBC-3 6.5.1, SPC-4 7.5.8).
  const bool wp = volume_->state() == core::VolumeState::kReadOnly ||
                  software_write_protect_.load(std::memory_order_acquire);
  const DeviceInfo info = device_info(cmd);
  std::unique_lock lock(mu_);
  auto data = mode_.sense(cdb, info, wp);
  lock.unlock();
  if (!data) return reply_sense(cmd, data.error());
  reply(cmd, *data, ten ? get_be16(&cdb[7]) : cdb[4]);
}

void LogicalUnit::mode_select(Command& cmd) {
  const DeviceInfo info = device_info(cmd);
  std::unique_lock lock(mu_);
  auto changed = mode_.select(cmd.cdb(), cmd.data_out(), info);
  software_write_protect_.store(mode_.software_write_protect(), std::memory_order_release);
  if (changed && *changed) {
    // SPC-4 6.9: other I_T nexuses learn MODE PARAMETERS CHANGED.
    for (const auto& port : initiators_) {
      if (port != cmd.task->initiator_port) queue_unit_attention(port, kAscModeParametersChanged);
    }
  }
  lock.unlock();
  if (!changed) return reply_sense(cmd, changed.error());
  reply_good(cmd);
}

void LogicalUnit::start_stop_unit(Command& cmd) {
  // SBC-3 5.25: a virtual disk has no motor or medium to eject; accept and do nothing.
  reply_good(cmd);
}

void LogicalUnit::prevent_allow(Command& cmd) {
  // SBC-3 5.12: RMB = 0, so the command has no effect.
  reply_good(cmd);
}

// --- Reservations ------------------------------------------------------------------------

void LogicalUnit::reserve(Command& cmd) {
  // SPC-2 7.21 / 7.22; third-party reservations and extents are not supported.
  const Cdb& cdb = cmd.cdb();
  if (cdb[0] == op::kReserve10 && (cdb[1] & 0x13)) return reply_sense(cmd, invalid_field_in_cdb(1));
  std::unique_lock lock(mu_);
  const bool ok = reservations_.reserve_spc2(cmd.nexus);
  lock.unlock();
  if (!ok) return reply_conflict(cmd);
  reply_good(cmd);
}

void LogicalUnit::release(Command& cmd) {
  const Cdb& cdb = cmd.cdb();
  if (cdb[0] == op::kRelease10 && (cdb[1] & 0x13)) return reply_sense(cmd, invalid_field_in_cdb(1));
  std::unique_lock lock(mu_);
  reservations_.release_spc2(cmd.nexus);
  lock.unlock();
  reply_good(cmd);
}

void LogicalUnit::persistent_reserve_in(Command& cmd) {
  const Cdb& cdb = cmd.cdb();
  std::unique_lock lock(mu_);
  auto data = reservations_.persistent_reserve_in(cdb);
  lock.unlock();
  if (!data) return reply_sense(cmd, data.error());
  reply(cmd, *data, get_be16(&cdb[7]));
}

void LogicalUnit::persistent_reserve_out(Command& cmd) {
  std::unique_lock lock(mu_);
  PrOutResult r = reservations_.persistent_reserve_out(cmd.nexus, cmd.cdb(), cmd.data_out());
  if (r.changed) {
    // Saved before the command completes so an acknowledged change survives (SPC-4 5.9.4).
    pr_store_->save(reservations_.state());
    queue_unit_attentions(r);
  }
  lock.unlock();
  if (r.conflict) return reply_conflict(cmd);
  if (r.sense) return reply_sense(cmd, *r.sense);
  reply_good(cmd);
}

}  // namespace tandem::target::scsi
