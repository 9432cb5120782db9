#include "target/scsi/reservations.h"

#include <algorithm>

namespace tandem::target::scsi {
namespace {

// PERSISTENT RESERVE OUT service actions (SPC-4 6.16.2, table 176).
enum PrOutAction : uint8_t {
  kRegister = 0x0,
  kReserve = 0x1,
  kRelease = 0x2,
  kClear = 0x3,
  kPreempt = 0x4,
  kPreemptAndAbort = 0x5,
  kRegisterAndIgnoreExistingKey = 0x6,
};

// PERSISTENT RESERVE IN service actions (SPC-4 6.15.1, table 164).
enum PrInAction : uint8_t {
  kReadKeys = 0x0,
  kReadReservation = 0x1,
  kReportCapabilities = 0x2,
  kReadFullStatus = 0x3,
};

constexpr size_t kPrOutParameterListLength = 24;  // SPC-4 6.16.3 (SPEC_I_PT = 0)

bool valid_type(uint8_t t) {
  switch (static_cast<PrType>(t)) {
    case PrType::kWriteExclusive:
    case PrType::kExclusiveAccess:
    case PrType::kWriteExclusiveRegistrantsOnly:
    case PrType::kExclusiveAccessRegistrantsOnly:
    case PrType::kWriteExclusiveAllRegistrants:
    case PrType::kExclusiveAccessAllRegistrants:
      return true;
  }
  return false;
}

bool matches(const PrRegistration& r, const Nexus& n) {
  return r.initiator_port == n.initiator_port &&
         (r.all_target_ports || r.relative_target_port == n.relative_target_port);
}

// iSCSI TransportID (SPC-4 7.6.4.6): format 01b "name,i,0xISID" when the port name has
// that form, else format 00b with the bare name. NUL terminated, padded to 4 bytes.
std::vector<uint8_t> transport_id(const std::string& port) {
  const bool with_isid = port.find(",i,0x") != std::string::npos;
  std::vector<uint8_t> id = {static_cast<uint8_t>((with_isid ? 0x40 : 0x00) | 0x05), 0, 0, 0};
  for (char c : port) id.push_back(static_cast<uint8_t>(c));
  id.push_back(0);
  while (id.size() % 4) id.push_back(0);
  put_be16(&id[2], static_cast<uint16_t>(id.size() - 4));
  return id;
}

}  // namespace

Reservations::Reservations(PrState initial) : state_(std::move(initial)) {}

PrRegistration* Reservations::find(const Nexus& n) {
  for (auto& r : state_.registrations) {
    if (matches(r, n)) return &r;
  }
  return nullptr;
}

const PrRegistration* Reservations::find(const Nexus& n) const {
  return const_cast<Reservations*>(this)->find(n);
}

bool Reservations::all_registrants_type() const {
  return state_.type == static_cast<uint8_t>(PrType::kWriteExclusiveAllRegistrants) ||
         state_.type == static_cast<uint8_t>(PrType::kExclusiveAccessAllRegistrants);
}

bool Reservations::is_holder(const Nexus& n) const {
  if (!state_.reserved) return false;
  const PrRegistration* r = find(n);
  if (r == nullptr) return false;
  // All-registrants types: every registrant holds the reservation (SPC-4 5.9.10).
  if (all_registrants_type()) return true;
  return r->initiator_port == state_.holder_port && r->relative_target_port == state_.holder_rtp;
}

bool Reservations::conflicts(const Nexus& n, Access access) const {
  // SPC-2 reservation held by another nexus (SPC-2 5.5.1): only a few commands pass.
  if (spc2_holder_ && !(*spc2_holder_ == n)) {
    return !(access == Access::kAlways || access == Access::kRelease);
  }
  if (access == Access::kReserve || access == Access::kRelease) {
    // RESERVE/RELEASE(6/10) while persistent reservations are in use (SPC-4 5.9.3).
    return state_.reserved || !state_.registrations.empty();
  }
  if (!state_.reserved || access == Access::kAlways || access == Access::kPr) return false;
  if (is_holder(n)) return false;
  const bool registered = find(n) != nullptr;
  const bool media = access == Access::kRead || access == Access::kWrite;
  switch (static_cast<PrType>(state_.type)) {
    case PrType::kWriteExclusive:
      return access == Access::kWrite;
    case PrType::kExclusiveAccess:
      return media;
    case PrType::kWriteExclusiveRegistrantsOnly:
    case PrType::kWriteExclusiveAllRegistrants:
      return access == Access::kWrite && !registered;
    case PrType::kExclusiveAccessRegistrantsOnly:
    case PrType::kExclusiveAccessAllRegistrants:
      return media && !registered;
  }
  return false;
}

bool Reservations::reserve_spc2(const Nexus& n) {
  if (spc2_holder_ && !(*spc2_holder_ == n)) return false;
  spc2_holder_ = n;
  return true;
}

void Reservations::release_spc2(const Nexus& n) {
  if (spc2_holder_ && *spc2_holder_ == n) spc2_holder_.reset();
}

void Reservations::nexus_lost(const std::string& initiator_port) {
  if (spc2_holder_ && spc2_holder_->initiator_port == initiator_port) spc2_holder_.reset();
}

std::vector<std::string> Reservations::remove_key(uint64_t key, const Nexus& keep) {
  std::vector<std::string> removed;
  auto& regs = state_.registrations;
  for (auto it = regs.begin(); it != regs.end();) {
    if (it->key == key && !matches(*it, keep)) {
      removed.push_back(it->initiator_port);
      it = regs.erase(it);
    } else {
      ++it;
    }
  }
  return removed;
}

std::vector<std::string> Reservations::remove_all_except(const Nexus& keep) {
  std::vector<std::string> removed;
  auto& regs = state_.registrations;
  for (auto it = regs.begin(); it != regs.end();) {
    if (!matches(*it, keep)) {
      removed.push_back(it->initiator_port);
      it = regs.erase(it);
    } else {
      ++it;
    }
  }
  return removed;
}

void Reservations::release(const Nexus& n, PrOutResult& out) {
  // Releasing a registrants-only or all-registrants reservation tells the other
  // registrants: RESERVATIONS RELEASED (SPC-4 5.9.12.2).
  const auto t = static_cast<PrType>(state_.type);
  if (t != PrType::kWriteExclusive && t != PrType::kExclusiveAccess) {
    for (const auto& r : state_.registrations) {
      if (!matches(r, n))
        out.unit_attentions.emplace_back(r.initiator_port, kAscReservationsReleased);
    }
  }
  state_.reserved = false;
  state_.type = 0;
  state_.holder_port.clear();
  state_.holder_rtp = 0;
}

void Reservations::unregister(const Nexus& n, PrOutResult& out) {
  const bool holder = is_holder(n);
  auto& regs = state_.registrations;
  regs.erase(std::remove_if(regs.begin(), regs.end(),
                            [&](const PrRegistration& r) { return matches(r, n); }),
             regs.end());
  // SPC-4 5.9.11.2: unregistering the holder releases the reservation, except for the
  // all-registrants types where it lasts until the last registrant goes.
  if (holder && (!all_registrants_type() || regs.empty())) release(n, out);
}

core::Result<std::vector<uint8_t>, Sense> Reservations::persistent_reserve_in(
    const Cdb& cdb) const {
  const uint8_t sa = cdb[1] & 0x1F;
  std::vector<uint8_t> d;
  switch (sa) {
    case kReadKeys: {
      append_be32(d, state_.generation);
      append_be32(d, static_cast<uint32_t>(state_.registrations.size() * 8));
      for (const auto& r : state_.registrations) append_be64(d, r.key);
      return d;
    }
    case kReadReservation: {
      append_be32(d, state_.generation);
      append_be32(d, state_.reserved ? 16 : 0);
      if (state_.reserved) {
        uint64_t key = 0;  // all-registrants types report 0 (SPC-4 6.15.3.3)
        if (!all_registrants_type()) {
          for (const auto& r : state_.registrations) {
            if (r.initiator_port == state_.holder_port &&
                r.relative_target_port == state_.holder_rtp) {
              key = r.key;
            }
          }
        }
        append_be64(d, key);
        append_be32(d, 0);
        d.push_back(0);
        d.push_back(state_.type & 0x0F);  // SCOPE = LU_SCOPE
        append_be16(d, 0);
      }
      return d;
    }
    case kReportCapabilities: {
      d.resize(8, 0);
      put_be16(&d[0], 8);
      d[2] = 0x04 | 0x01;                          // ATP_C, PTPL_C (SPC-4 6.15.4)
      d[3] = 0x80 | (state_.aptpl ? 0x01 : 0x00);  // TMV, PTPL_A
      // PERSISTENT RESERVATION TYPE MASK: WR_EX_AR, EX_AC_RO, WR_EX_RO, EX_AC, WR_EX; EX_AC_AR.
      d[4] = 0x80 | 0x40 | 0x20 | 0x08 | 0x02;
      d[5] = 0x01;
      return d;
    }
    case kReadFullStatus: {
      append_be32(d, state_.generation);
      append_be32(d, 0);
      for (const auto& r : state_.registrations) {
        const bool holder = is_holder(Nexus{
            r.initiator_port, r.all_target_ports ? state_.holder_rtp : r.relative_target_port});
        append_be64(d, r.key);
        append_be32(d, 0);
        d.push_back(static_cast<uint8_t>((r.all_target_ports ? 0x02 : 0) | (holder ? 0x01 : 0)));
        d.push_back(holder ? (state_.type & 0x0F) : 0);
        append_be32(d, 0);
        append_be16(d, r.relative_target_port);
        auto tid = transport_id(r.initiator_port);
        append_be32(d, static_cast<uint32_t>(tid.size()));
        d.insert(d.end(), tid.begin(), tid.end());
      }
      put_be32(&d[4], static_cast<uint32_t>(d.size() - 8));
      return d;
    }
    default:
      return core::fail(invalid_field_in_cdb(1, 4));
  }
}

PrOutResult Reservations::persistent_reserve_out(const Nexus& n, const Cdb& cdb,
                                                 std::span<const std::byte> data) {
  PrOutResult out;
  const uint8_t sa = cdb[1] & 0x1F;
  const uint8_t scope = cdb[2] >> 4;
  const uint8_t type = cdb[2] & 0x0F;
  const uint32_t list_len = get_be32(&cdb[5]);
  if (sa > kRegisterAndIgnoreExistingKey) {  // incl. REGISTER AND MOVE: not supported
    out.sense = invalid_field_in_cdb(1, 4);
    return out;
  }
  if (list_len != kPrOutParameterListLength || data.size() < kPrOutParameterListLength) {
    out.sense = parameter_list_length_error();
    return out;
  }
  const uint8_t* p = as_u8(data);
  const uint64_t key = get_be64(p);
  const uint64_t sark = get_be64(p + 8);
  const uint8_t flags = p[20];
  if (flags & 0x08) {  // SPEC_I_PT: SIP_C = 0
    out.sense = invalid_field_in_parameter_list(20, 3);
    return out;
  }
  const bool needs_type =
      sa == kReserve || sa == kRelease || sa == kPreempt || sa == kPreemptAndAbort;
  if (needs_type && scope != 0) {
    out.sense = invalid_field_in_cdb(2, 7);
    return out;
  }
  if (needs_type && !valid_type(type)) {
    out.sense = invalid_field_in_cdb(2, 3);
    return out;
  }
  PrRegistration* reg = find(n);

  if (sa == kRegister || sa == kRegisterAndIgnoreExistingKey) {
    // SPC-4 5.9.7, table 37.
    if (sa == kRegister && (reg ? reg->key != key : key != 0)) {
      out.conflict = true;
      return out;
    }
    if (reg == nullptr) {
      if (sark == 0) return out;  // nothing to do, no generation bump
      if (state_.registrations.size() >= kMaxPrRegistrations) {
        out.sense = make_sense(SenseKey::kIllegalRequest, kAscInsufficientRegistrationResources);
        return out;
      }
      const bool all = flags & 0x04;
      state_.registrations.push_back(
          PrRegistration{n.initiator_port, all ? uint16_t{0} : n.relative_target_port, all, sark});
    } else if (sark == 0) {
      unregister(n, out);
    } else {
      reg->key = sark;
    }
    state_.aptpl = flags & 0x01;
    ++state_.generation;
    out.changed = true;
    return out;
  }

  // Every other service action needs a registered nexus with the right key (5.9.8-5.9.11).
  if (reg == nullptr || reg->key != key) {
    out.conflict = true;
    return out;
  }
  switch (sa) {
    case kReserve:
      if (state_.reserved) {
        // SPC-4 5.9.9: a holder re-reserving with the same type is a no-op.
        if (!(is_holder(n) && state_.type == type)) out.conflict = true;
        return out;
      }
      state_.reserved = true;
      state_.type = type;
      state_.holder_port = reg->initiator_port;
      state_.holder_rtp = reg->relative_target_port;
      out.changed = true;
      return out;
    case kRelease:
      if (!state_.reserved || !is_holder(n)) return out;  // SPC-4 5.9.12.1: GOOD, nothing
      if (state_.type != type) {
        out.sense =
            make_sense(SenseKey::kIllegalRequest, kAscInvalidReleaseOfPersistentReservation);
        return out;
      }
      release(n, out);
      out.changed = true;
      return out;
    case kClear:
      // SPC-4 5.9.12.3: everyone else learns RESERVATIONS PREEMPTED.
      for (const auto& r : state_.registrations) {
        if (!matches(r, n))
          out.unit_attentions.emplace_back(r.initiator_port, kAscReservationsPreempted);
      }
      state_.registrations.clear();
      state_.reserved = false;
      state_.type = 0;
      state_.holder_port.clear();
      state_.holder_rtp = 0;
      ++state_.generation;
      out.changed = true;
      return out;
    default:
      break;
  }

  // PREEMPT / PREEMPT AND ABORT (SPC-4 5.9.11.4); tasks are not aborted here (no task set).
  std::vector<std::string> removed;
  bool take_reservation = false;
  if (!state_.reserved) {
    if (sark == 0) {
      out.sense = invalid_field_in_parameter_list(8);
      return out;
    }
    removed = remove_key(sark, n);
    if (removed.empty()) {
      out.conflict = true;
      return out;
    }
  } else if (all_registrants_type()) {
    if (sark == 0) {
      removed = remove_all_except(n);
      take_reservation = true;
    } else {
      removed = remove_key(sark, n);
      if (removed.empty()) {
        out.conflict = true;
        return out;
      }
    }
  } else {
    uint64_t holder_key = 0;
    for (const auto& r : state_.registrations) {
      if (r.initiator_port == state_.holder_port && r.relative_target_port == state_.holder_rtp) {
        holder_key = r.key;
      }
    }
    if (sark == holder_key) {
      removed = remove_key(sark, n);
      take_reservation = true;
    } else {
      if (sark == 0) {
        out.sense = invalid_field_in_parameter_list(8);
        return out;
      }
      removed = remove_key(sark, n);
      if (removed.empty()) {
        out.conflict = true;
        return out;
      }
    }
  }
  reg = find(n);  // the vector changed
  if (take_reservation && reg != nullptr) {
    state_.reserved = true;
    state_.type = type;
    state_.holder_port = reg->initiator_port;
    state_.holder_rtp = reg->relative_target_port;
  }
  for (auto& port : removed)
    out.unit_attentions.emplace_back(std::move(port), kAscRegistrationsPreempted);
  ++state_.generation;
  out.changed = true;
  return out;
}

}  // namespace tandem::target::scsi
