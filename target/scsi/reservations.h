// Reservations of one logical unit: SPC-2 RESERVE/RELEASE and SPC-4 persistent reservations
// (PERSISTENT RESERVE IN/OUT, 6.15/6.16, conflict rules 5.9.1). A pure state machine: no I/O;
// the LogicalUnit owns it under its mutex and saves state() to its PrStore when changed.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "core/result.h"
#include "target/scsi/cdb.h"
#include "target/scsi/pr_store.h"
#include "target/scsi/sense.h"

namespace tandem::target::scsi {

// An I_T nexus (SAM-5 4.6): initiator port name and relative target port identifier.
struct Nexus {
  std::string initiator_port;
  uint16_t relative_target_port = 1;
  friend bool operator==(const Nexus&, const Nexus&) = default;
};

// PERSISTENT RESERVATION TYPE codes (SPC-4 6.16.3, table 178).
enum class PrType : uint8_t {
  kWriteExclusive = 0x1,
  kExclusiveAccess = 0x3,
  kWriteExclusiveRegistrantsOnly = 0x5,
  kExclusiveAccessRegistrantsOnly = 0x6,
  kWriteExclusiveAllRegistrants = 0x7,
  kExclusiveAccessAllRegistrants = 0x8,
};

// How a command is treated when another nexus holds a reservation (SPC-4 table 39).
enum class Access : uint8_t {
  kAlways,   // INQUIRY, REPORT LUNS, REQUEST SENSE, ...: never conflicts
  kRead,     // conflicts under exclusive access types
  kWrite,    // conflicts under every type unless allowed as registrant
  kPr,       // PERSISTENT RESERVE IN/OUT: own rules, conflicts only with RESERVE(6)
  kReserve,  // RESERVE(6)/(10)
  kRelease,  // RELEASE(6)/(10)
};

inline constexpr size_t kMaxPrRegistrations = 128;

struct PrOutResult {
  bool conflict = false;       // answer RESERVATION CONFLICT
  std::optional<Sense> sense;  // answer CHECK CONDITION
  bool changed = false;        // state() changed: save it
  // Unit attentions to queue (initiator port, ASC/ASCQ), SPC-4 5.9.11 / 5.9.12.
  std::vector<std::pair<std::string, Asc>> unit_attentions;
};

class Reservations {
 public:
  explicit Reservations(PrState initial = {});

  const PrState& state() const { return state_; }

  // True when `access` from `nexus` must get RESERVATION CONFLICT.
  bool conflicts(const Nexus& nexus, Access access) const;

  core::Result<std::vector<uint8_t>, Sense> persistent_reserve_in(const Cdb& cdb) const;
  PrOutResult persistent_reserve_out(const Nexus& nexus, const Cdb& cdb,
                                     std::span<const std::byte> data);

  // SPC-2 RESERVE: false when another nexus holds it (conflicts() covers PR state).
  bool reserve_spc2(const Nexus& nexus);
  // SPC-2 RELEASE: releases only when `nexus` is the holder; never fails.
  void release_spc2(const Nexus& nexus);
  // LOGICAL UNIT RESET / I_T nexus loss (SPC-4 5.9.1 note: RESERVE(6) does not survive).
  void clear_spc2() { spc2_holder_.reset(); }
  // The transport names only the initiator port: any of its nexuses counts.
  void nexus_lost(const std::string& initiator_port);
  bool spc2_reserved() const { return spc2_holder_.has_value(); }

 private:
  PrRegistration* find(const Nexus& nexus);
  const PrRegistration* find(const Nexus& nexus) const;
  bool is_holder(const Nexus& nexus) const;
  bool all_registrants_type() const;
  // Removes registrations with `key` except the one of `keep`; returns their ports.
  std::vector<std::string> remove_key(uint64_t key, const Nexus& keep);
  std::vector<std::string> remove_all_except(const Nexus& keep);
  void unregister(const Nexus& nexus, PrOutResult& out);
  void release(const Nexus& nexus, PrOutResult& out);

  PrState state_;
  std::optional<Nexus> spc2_holder_;
};

}  // namespace tandem::target::scsi
