// Persistent reservation state (SPC-4 5.9) as a value, its byte-string encoding, and the
// PrStore seam the LogicalUnit saves it through on every change. MemoryPrStore is the
// in-memory implementation (thread-safe); a catalogue-backed store plugs in the same way.
#pragma once

#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace tandem::target::scsi {

// One registered I_T nexus. all_target_ports registrations (ALL_TG_PT) match the initiator
// port through any target port; relative_target_port is then 0.
struct PrRegistration {
  std::string initiator_port;
  uint16_t relative_target_port = 0;
  bool all_target_ports = false;
  uint64_t key = 0;
  friend bool operator==(const PrRegistration&, const PrRegistration&) = default;
};

struct PrState {
  uint32_t generation = 0;  // PRGENERATION (SPC-4 6.15.2)
  bool aptpl = false;       // activate persist through power loss
  std::vector<PrRegistration> registrations;
  bool reserved = false;
  uint8_t type = 0;  // PrType when reserved (scope is always LU_SCOPE)
  // The holder's registration (non all-registrants types): its port and target port.
  std::string holder_port;
  uint16_t holder_rtp = 0;
  friend bool operator==(const PrState&, const PrState&) = default;
};

// A line-oriented text encoding ("tandem-pr 1" header); parse returns nullopt on any error.
std::string serialize_pr_state(const PrState& state);
std::optional<PrState> parse_pr_state(std::string_view bytes);

class PrStore {
 public:
  virtual ~PrStore() = default;
  // The last saved state, or nullopt when nothing was ever saved.
  virtual std::optional<PrState> load() = 0;
  // Called with the whole state after every change, before the command completes, with
  // the LogicalUnit's lock held: it must not call back into the LogicalUnit.
  virtual void save(const PrState& state) = 0;
};

class MemoryPrStore : public PrStore {
 public:
  std::optional<PrState> load() override;
  void save(const PrState& state) override;
  int save_count() const;
  std::optional<std::string> bytes() const;

 private:
  mutable std::mutex mu_;
  std::optional<std::string> bytes_;
  int saves_ = 0;
};

}  // namespace tandem::target::scsi
