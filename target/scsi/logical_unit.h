// LogicalUnit: SCSI logical unit 0 (SPC-4 / SBC-3) over one core::BlockVolume. A table maps
// each opcode (and service action) to one handler; anything else is ILLEGAL REQUEST /
// INVALID COMMAND OPERATION CODE. Owns mode pages, reservations and unit attentions
// behind one mutex, so execute() may be called from any thread; I/O completes on the
// volume's threads. Completions hold the task and the volume (shared), never `this`.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <vector>

#include "core/block_volume.h"
#include "target/scsi/cdb.h"
#include "target/scsi/inquiry.h"
#include "target/scsi/mode_pages.h"
#include "target/scsi/pr_store.h"
#include "target/scsi/reservations.h"
#include "target/scsi/scsi_device.h"
#include "target/scsi/sense.h"

namespace tandem::target::scsi {

class LogicalUnit;

// One entry of the opcode table (also the source of REPORT SUPPORTED OPERATION CODES).
struct OpInfo {
  uint8_t opcode = 0;
  int16_t service_action = -1;  // -1: the opcode has no service actions
  uint8_t cdb_length = 0;
  Access access = Access::kAlways;
  void (LogicalUnit::*handler)(struct Command&) = nullptr;
  std::array<uint8_t, 16> usage{};  // CDB USAGE DATA (SPC-4 6.35.3), cdb_length bytes used
};

// One command in flight: the task, its (truncating) completion and its nexus.
struct Command {
  std::shared_ptr<ScsiTask> task;
  ScsiDevice::Done done;
  Nexus nexus;
  const Cdb& cdb() const { return task->cdb; }
  std::span<const std::byte> data_out() const { return task->data_out; }
};

inline constexpr size_t kMaxPendingUnitAttentions = 16;  // per initiator port
inline constexpr size_t kMaxTrackedInitiators = 1024;
inline constexpr uint32_t kWriteSameChunkBytes = 1u << 20;  // WRITE SAME buffer size
// ORWRITE attempts before answering BUSY when other writers keep changing the blocks.
inline constexpr int kOrWriteAttempts = 8;

class LogicalUnit : public ScsiDevice {
 public:
  // pr_store may be null (then an in-memory store is used). Loads PR state from it.
  LogicalUnit(std::shared_ptr<core::BlockVolume> volume,
              std::shared_ptr<PrStore> pr_store = nullptr);

  void execute(std::shared_ptr<ScsiTask> task, Done done) override;
  void reset(const std::string& initiator_port) override;
  void nexus_lost(const std::string& initiator_port) override;

  // The opcode table, sorted by opcode then service action.
  static const std::vector<OpInfo>& ops();
  static const OpInfo* find_op(uint8_t opcode, uint8_t service_action);
  static bool has_service_actions(uint8_t opcode);

  // Handlers: each answers through cmd.done exactly once (logical_unit.cc, rw_path.cc,
  // opcode_table.cc).
  void test_unit_ready(Command& cmd);
  void request_sense(Command& cmd);
  void inquiry(Command& cmd);
  void report_luns(Command& cmd);
  void read_capacity10(Command& cmd);
  void read_capacity16(Command& cmd);
  void mode_sense(Command& cmd);
  void mode_select(Command& cmd);
  void start_stop_unit(Command& cmd);
  void prevent_allow(Command& cmd);
  void report_supported_opcodes(Command& cmd);
  void reserve(Command& cmd);
  void release(Command& cmd);
  void persistent_reserve_in(Command& cmd);
  void persistent_reserve_out(Command& cmd);
  void read(Command& cmd);
  void write(Command& cmd);
  void write_and_verify(Command& cmd);
  void verify(Command& cmd);
  void synchronize_cache(Command& cmd);
  void pre_fetch(Command& cmd);
  void unmap(Command& cmd);
  void write_same(Command& cmd);
  void compare_and_write(Command& cmd);
  void or_write(Command& cmd);
  void get_lba_status(Command& cmd);

 private:
  DeviceInfo device_info(const Command& cmd) const;
  bool write_cache_enabled();
  // Volume-state gates (core::VolumeState -> sense), nullopt when the access may go on.
  std::optional<Sense> check_readable() const;
  std::optional<Sense> check_writable() const;
  std::optional<LbaRange> checked_write_range(Command& cmd);  // rw_path.cc
  void write_blocks(Command& cmd, const LbaRange& r, bool fua);
  void queue_unit_attention(const std::string& port, Asc asc);  // mu_ held
  void queue_unit_attentions(const PrOutResult& r);             // mu_ held

  std::shared_ptr<core::BlockVolume> volume_;
  std::shared_ptr<PrStore> pr_store_;

  std::mutex mu_;
  ModePages mode_;
  Reservations reservations_;
  std::map<std::string, std::deque<Asc>> unit_attentions_;
  std::set<std::string> initiators_;  // ports seen, for mode / capacity / reset UAs
  uint64_t last_block_count_ = 0;
  // Mirror of the control page's SWP bit, read by the write gate without taking mu_.
  std::atomic<bool> software_write_protect_{false};
};

// Response helpers shared by the handler files.
void reply(Command& cmd, const std::vector<uint8_t>& data, size_t allocation_length);
void reply_good(Command& cmd);
void reply_sense(Command& cmd, const Sense& sense);
void reply_conflict(Command& cmd);
void reply_busy(Command& cmd);

}  // namespace tandem::target::scsi
