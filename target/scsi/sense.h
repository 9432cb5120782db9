// Fixed-format sense data (SPC-4 4.5.3) and the named sense keys / ASC+ASCQ codes the
// command set uses. Value types only; every function here is pure and thread-safe.
// A Sense is what a handler fails with; build_fixed_sense() turns it into wire bytes.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "target/scsi/scsi_device.h"

namespace tandem::target::scsi {

// SPC-4 4.5.6, table 54.
enum class SenseKey : uint8_t {
  kNoSense = 0x0,
  kRecoveredError = 0x1,
  kNotReady = 0x2,
  kMediumError = 0x3,
  kHardwareError = 0x4,
  kIllegalRequest = 0x5,
  kUnitAttention = 0x6,
  kDataProtect = 0x7,
  kAbortedCommand = 0xB,
  kMiscompare = 0xE,
};

struct Asc {
  uint8_t asc = 0;
  uint8_t ascq = 0;
  friend bool operator==(const Asc&, const Asc&) = default;
};

// SPC-4 annex D (ASC/ASCQ assignments).
inline constexpr Asc kAscNoAdditionalSense{0x00, 0x00};
inline constexpr Asc kAscNotReadyBecomingReady{0x04, 0x01};  // volume halted (transient)
inline constexpr Asc kAscNotReadyOffline{0x04, 0x12};        // volume offline
inline constexpr Asc kAscWriteError{0x0C, 0x00};
inline constexpr Asc kAscUnrecoveredReadError{0x11, 0x00};
inline constexpr Asc kAscParameterListLengthError{0x1A, 0x00};
inline constexpr Asc kAscMiscompareDuringVerify{0x1D, 0x00};
inline constexpr Asc kAscInvalidCommandOperationCode{0x20, 0x00};
inline constexpr Asc kAscLbaOutOfRange{0x21, 0x00};
inline constexpr Asc kAscInvalidFieldInCdb{0x24, 0x00};
inline constexpr Asc kAscLunNotSupported{0x25, 0x00};
inline constexpr Asc kAscInvalidFieldInParameterList{0x26, 0x00};
inline constexpr Asc kAscInvalidReleaseOfPersistentReservation{0x26, 0x04};
inline constexpr Asc kAscWriteProtected{0x27, 0x00};
inline constexpr Asc kAscSpaceAllocationFailedWriteProtect{0x27, 0x07};
inline constexpr Asc kAscPowerOnResetOccurred{0x29, 0x00};
inline constexpr Asc kAscBusDeviceResetOccurred{0x29, 0x03};  // after LOGICAL UNIT RESET
inline constexpr Asc kAscModeParametersChanged{0x2A, 0x01};
inline constexpr Asc kAscReservationsPreempted{0x2A, 0x03};
inline constexpr Asc kAscReservationsReleased{0x2A, 0x04};
inline constexpr Asc kAscRegistrationsPreempted{0x2A, 0x05};
inline constexpr Asc kAscCapacityDataHasChanged{0x2A, 0x09};
inline constexpr Asc kAscSavingParametersNotSupported{0x39, 0x00};
inline constexpr Asc kAscInsufficientRegistrationResources{0x55, 0x04};

// Sense-key specific field pointer (SPC-4 4.5.2.4.2): which CDB or parameter byte/bit is bad.
struct FieldPointer {
  bool in_cdb = true;  // C/D bit: the error is in the CDB (else in the parameter list)
  uint16_t byte = 0;
  int8_t bit = -1;  // -1: no bit pointer (BPV = 0)
};

struct Sense {
  SenseKey key = SenseKey::kNoSense;
  Asc asc{};
  std::optional<uint32_t> information;  // sets VALID and the INFORMATION field
  std::optional<FieldPointer> field;
};

Sense make_sense(SenseKey key, Asc asc);
Sense invalid_field_in_cdb(uint16_t byte, int8_t bit = -1);
Sense invalid_field_in_parameter_list(uint16_t byte, int8_t bit = -1);
Sense parameter_list_length_error();

inline constexpr size_t kFixedSenseLength = 18;

// 18 bytes, response code 0x70 (current error), ADDITIONAL SENSE LENGTH 10.
std::vector<uint8_t> build_fixed_sense(const Sense& sense);

// A CHECK CONDITION result carrying `sense`.
ScsiResult check_condition(const Sense& sense);

}  // namespace tandem::target::scsi
