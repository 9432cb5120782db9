// ScsiDevice: the seam between the iSCSI transport (target/iscsi, target/net) and the SCSI
// command set (target/scsi). The transport collects a command's whole Data-Out payload,
// then calls execute(); the device answers with status, sense and Data-In bytes.
//
// Threading: execute() may be called from any thread; `done` runs on a backend thread (or
// inline for commands that need no I/O). The transport posts it back to its own strand.
// A ScsiTask and its buffers stay alive until `done` has run.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace tandem::target::scsi {

// SAM-5 status codes.
enum class Status : uint8_t {
  kGood = 0x00,
  kCheckCondition = 0x02,
  kConditionMet = 0x04,
  kBusy = 0x08,
  kReservationConflict = 0x18,
  kTaskSetFull = 0x28,
  kTaskAborted = 0x40,
};

struct ScsiTask {
  std::array<uint8_t, 16> cdb{};  // zero-padded beyond the CDB's own length
  uint64_t lun = 0;
  // I_T nexus identity, for reservations (SPC-4 5.9): initiator port name is
  // "<initiator iqn>,i,0x<ISID hex>", relative target port id starts at 1.
  std::string initiator_port;
  uint16_t relative_target_port = 1;
  // Whole Data-Out payload (WRITE, UNMAP parameter list, MODE SELECT, PR OUT, ...). The
  // iSCSI transport reads the payload from the socket straight into this buffer, which the
  // device hands on as a span: no copy between the socket and the store.
  std::vector<std::byte> data_out;
  // ExpectedDataTransferLength for Data-In; the device never returns more than this.
  uint32_t expected_in_length = 0;
};

struct ScsiResult {
  Status status = Status::kGood;
  std::vector<uint8_t> sense;        // fixed-format sense data when kCheckCondition
  std::vector<std::byte> data_in;    // Data-In bytes (may be shorter than expected)
  // Bytes the CDB itself asks to move in the command's data direction (READ/WRITE transfer
  // length x block size), when it has one. The transport reports residual overflow or
  // underflow against it (RFC 7143 11.4.5); unset for commands without a data phase.
  std::optional<uint32_t> cdb_transfer_length;
};

class ScsiDevice {
 public:
  using Done = std::function<void(ScsiResult)>;
  virtual ~ScsiDevice() = default;
  virtual void execute(std::shared_ptr<ScsiTask> task, Done done) = 0;
  // LOGICAL UNIT RESET / TARGET RESET from this nexus (SAM-5 6.3): releases RESERVE(6/10)
  // reservations and raises a BUS DEVICE RESET FUNCTION OCCURRED unit attention on every
  // I_T nexus; PR state survives.
  virtual void reset(const std::string& initiator_port) = 0;
  // The nexus logged out or its connection died.
  virtual void nexus_lost(const std::string& initiator_port) = 0;
};

}  // namespace tandem::target::scsi
