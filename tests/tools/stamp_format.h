// The pure half of tandem-stamp: the stamp each written block carries, the write log's line
// format, and the ledger that decides whether a block read back holds what the writer was
// told was stored. No I/O, no clocks: unit-tested in tests/unit/tools.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <string_view>

namespace tandem::stamp {

// Bytes at the start of each block: magic, LBA, sequence, writer id, CRC-32C of the whole
// block with the CRC field zeroed. The rest of the block is a pattern derived from the stamp,
// so two writes of one LBA never carry the same bytes.
inline constexpr size_t kHeaderBytes = 40;
inline constexpr uint64_t kMagic = 0x504d415453444e54ull;  // "TNDSTAMP" little-endian

struct Stamp {
  uint64_t lba = 0;
  uint64_t seq = 0;
  uint64_t writer = 0;
};

uint32_t Crc32c(std::span<const std::byte> data, uint32_t crc = 0);

// Fills `block` (at least kHeaderBytes) with the stamp and its pattern.
void Write(std::span<std::byte> block, const Stamp& s);

enum class Decoded { kStamp, kZero, kForeign, kCorrupt };
// What a block holds: a valid stamp (in *out), all zeros (never written), bytes that are no
// stamp at all, or a stamp whose CRC does not match (torn or corrupted).
Decoded Read(std::span<const std::byte> block, Stamp* out);

// One line of the write log. Kinds: 'I' issued, 'A' acknowledged, 'F' failed for good,
// 'R' a retried error (NOT READY, UNIT ATTENTION, BUSY, timeout), 'C' a reconnect.
// Text: "<kind> <lba> <seq> <unix time> [<detail>]", one per line.
struct LogLine {
  char kind = 'I';
  uint64_t lba = 0;
  uint64_t seq = 0;
  double time = 0;
  std::string detail;
};
std::string Format(const LogLine& l);
std::optional<LogLine> Parse(std::string_view line);

// What the writer knows per LBA: the latest acknowledged sequence and every sequence issued
// after it. A block passes when it holds its latest acknowledged stamp or one issued later
// (a write whose outcome the writer never learnt may or may not have landed).
class Ledger {
 public:
  explicit Ledger(uint64_t writer) : writer_(writer) {}
  void Add(const LogLine& l);
  // Empty when the block is acceptable, else why not (LBA, what was found, what was wanted).
  std::string Check(uint64_t lba, std::span<const std::byte> block) const;
  uint64_t acked_lbas() const { return acked_.size(); }

 private:
  uint64_t writer_;
  std::map<uint64_t, uint64_t> acked_;             // lba -> highest acknowledged seq
  std::map<uint64_t, std::set<uint64_t>> issued_;  // lba -> every issued seq
};

}  // namespace tandem::stamp
