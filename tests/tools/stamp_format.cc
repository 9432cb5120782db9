#include "tests/tools/stamp_format.h"

#include <algorithm>
#include <array>
#include <cstdio>
#include <cstring>
#include <sstream>

namespace tandem::stamp {
namespace {

constexpr size_t kCrcOffset = 32;

std::array<uint32_t, 256> MakeTable() {
  std::array<uint32_t, 256> t{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82f63b78u : c >> 1;  // Castagnoli
    t[i] = c;
  }
  return t;
}

void Put64(std::byte* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<std::byte>(v >> (8 * i));
}
uint64_t Get64(const std::byte* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= static_cast<uint64_t>(p[i]) << (8 * i);
  return v;
}

uint32_t BlockCrc(std::span<const std::byte> block) {
  static const std::array<std::byte, 4> kZero{};
  uint32_t c = Crc32c(block.first(kCrcOffset));
  c = Crc32c(kZero, c);
  return Crc32c(block.subspan(kCrcOffset + 4), c);
}

}  // namespace

uint32_t Crc32c(std::span<const std::byte> data, uint32_t crc) {
  static const auto table = MakeTable();
  crc = ~crc;
  for (std::byte b : data) crc = table[(crc ^ static_cast<uint8_t>(b)) & 0xff] ^ (crc >> 8);
  return ~crc;
}

void Write(std::span<std::byte> block, const Stamp& s) {
  Put64(block.data(), kMagic);
  Put64(block.data() + 8, s.lba);
  Put64(block.data() + 16, s.seq);
  Put64(block.data() + 24, s.writer);
  // xorshift64 seeded from the stamp: cheap, and different for every (lba, seq, writer).
  uint64_t x = (s.lba * 0x9e3779b97f4a7c15ull) ^ (s.seq + 0x632be59bd9b4e019ull) ^ s.writer;
  if (x == 0) x = 1;
  for (size_t i = kHeaderBytes; i + 8 <= block.size(); i += 8) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    Put64(block.data() + i, x);
  }
  std::memset(block.data() + kCrcOffset, 0, kHeaderBytes - kCrcOffset);
  uint32_t crc = BlockCrc(block);
  for (int i = 0; i < 4; ++i) block[kCrcOffset + i] = static_cast<std::byte>(crc >> (8 * i));
}

Decoded Read(std::span<const std::byte> block, Stamp* out) {
  if (block.size() < kHeaderBytes) return Decoded::kForeign;
  if (std::all_of(block.begin(), block.end(), [](std::byte b) { return b == std::byte{0}; })) {
    return Decoded::kZero;
  }
  if (Get64(block.data()) != kMagic) return Decoded::kForeign;
  out->lba = Get64(block.data() + 8);
  out->seq = Get64(block.data() + 16);
  out->writer = Get64(block.data() + 24);
  uint32_t stored = 0;
  for (int i = 0; i < 4; ++i) {
    stored |= static_cast<uint32_t>(block[kCrcOffset + i]) << (8 * i);
  }
  return stored == BlockCrc(block) ? Decoded::kStamp : Decoded::kCorrupt;
}

std::string Format(const LogLine& l) {
  char buf[96];
  std::snprintf(buf, sizeof buf, "%c %llu %llu %.3f", l.kind,
                static_cast<unsigned long long>(l.lba), static_cast<unsigned long long>(l.seq),
                l.time);
  std::string s = buf;
  if (!l.detail.empty()) s += " " + l.detail;
  return s;
}

std::optional<LogLine> Parse(std::string_view line) {
  std::istringstream in{std::string(line)};
  LogLine l;
  std::string kind;
  if (!(in >> kind >> l.lba >> l.seq >> l.time) || kind.size() != 1) return std::nullopt;
  l.kind = kind[0];
  if (std::string("IAFRC").find(l.kind) == std::string::npos) return std::nullopt;
  std::getline(in >> std::ws, l.detail);
  return l;
}

void Ledger::Add(const LogLine& l) {
  if (l.kind == 'I') issued_[l.lba].insert(l.seq);
  if (l.kind == 'A') {
    auto [it, fresh] = acked_.emplace(l.lba, l.seq);
    if (!fresh) it->second = std::max(it->second, l.seq);
  }
}

std::string Ledger::Check(uint64_t lba, std::span<const std::byte> block) const {
  auto acked = acked_.find(lba);
  auto issued = issued_.find(lba);
  uint64_t want = acked == acked_.end() ? 0 : acked->second;
  auto later_issued = [&](uint64_t seq) {
    return issued != issued_.end() && issued->second.count(seq) && seq > want;
  };
  std::string where = "lba " + std::to_string(lba) + ": ";
  std::string wanted = acked == acked_.end()
                           ? "never acknowledged"
                           : "latest acknowledged seq " + std::to_string(want);
  Stamp s;
  switch (Read(block, &s)) {
    case Decoded::kZero:
      if (acked == acked_.end()) return "";
      return where + "reads zeros, " + wanted;
    case Decoded::kForeign:
      if (acked == acked_.end() && issued == issued_.end()) return "";  // not ours to judge
      return where + "holds no stamp, " + wanted;
    case Decoded::kCorrupt:
      return where + "stamp CRC mismatch (seq " + std::to_string(s.seq) + "), " + wanted;
    case Decoded::kStamp:
      break;
  }
  if (s.writer != writer_) {
    if (acked == acked_.end() && issued == issued_.end()) return "";  // another run's block
    return where + "stamp of writer " + std::to_string(s.writer) + ", " + wanted;
  }
  if (s.lba != lba) {
    return where + "holds the stamp of lba " + std::to_string(s.lba) + " seq " +
           std::to_string(s.seq) + " (misdirected write), " + wanted;
  }
  if (acked != acked_.end() && s.seq == want) return "";
  if (later_issued(s.seq)) return "";
  return where + "holds seq " + std::to_string(s.seq) + ", " + wanted;
}

}  // namespace tandem::stamp
