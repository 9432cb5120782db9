// Shared fixtures for the target_iscsi unit tests: an in-memory TargetCatalog, a
// deterministic random source, and helpers to pick PDUs out of Session actions.
#pragma once

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "target/iscsi/login.h"
#include "target/iscsi/session.h"
#include "target/iscsi/text.h"

namespace tandem::target::iscsi::testing {

class FakeCatalog : public TargetCatalog {
 public:
  std::vector<TargetEntry> targets;
  std::optional<TargetEntry> find(std::string_view name) const override {
    for (const auto& t : targets) {
      if (t.name == name) return t;
    }
    return std::nullopt;
  }
  std::vector<TargetEntry> list() const override { return targets; }
};

// Fills with 0x10, 0x11, ... so CHAP identifiers and challenges are predictable.
struct CountingRandom {
  uint8_t next = 0x10;
  void operator()(std::span<uint8_t> out) {
    for (auto& b : out) b = next++;
  }
};

inline std::vector<uint8_t> text_of(const TextPairs& pairs) { return encode_text(pairs); }

inline TextPairs keys_of(const std::vector<uint8_t>& data) {
  auto r = parse_text(data);
  EXPECT_TRUE(r.ok());
  return r.ok() ? *r : TextPairs{};
}

inline std::string value_of(const TextPairs& pairs, std::string_view key) {
  const std::string* v = find_value(pairs, key);
  return v ? *v : std::string("<absent>");
}

template <class T>
std::vector<T> pdus_of(const Actions& actions) {
  std::vector<T> out;
  for (const auto& a : actions) {
    if (const auto* s = std::get_if<SendPdu>(&a)) {
      if (const auto* p = std::get_if<T>(&s->pdu)) out.push_back(*p);
    }
  }
  return out;
}

template <class T>
std::vector<T> actions_of(const Actions& actions) {
  std::vector<T> out;
  for (const auto& a : actions) {
    if (const auto* p = std::get_if<T>(&a)) out.push_back(*p);
  }
  return out;
}

// Write payloads with a recognisable byte at every offset, and the PDUs that carry them.
inline std::vector<uint8_t> pattern(uint32_t off, uint32_t n) {
  std::vector<uint8_t> v(n);
  for (uint32_t i = 0; i < n; ++i) v[i] = uint8_t((off + i) * 7 + 3);
  return v;
}

inline ScsiCommand write_cmd(uint32_t itt, uint32_t cmd_sn, uint32_t edtl, uint32_t imm,
                             bool final) {
  ScsiCommand c;
  c.itt = itt;
  c.cmd_sn = cmd_sn;
  c.write = true;
  c.final = final;
  c.expected_length = edtl;
  c.cdb = {0x2a};
  c.data = pattern(0, imm);
  return c;
}

inline DataOut data_out(uint32_t itt, uint32_t ttt, uint32_t sn, uint32_t off, uint32_t n,
                        bool final) {
  DataOut d;
  d.itt = itt;
  d.ttt = ttt;
  d.data_sn = sn;
  d.buffer_offset = off;
  d.final = final;
  d.data = pattern(off, n);
  return d;
}

inline LoginResult make_login_result(const SessionParams& params,
                                     SessionType type = SessionType::kNormal) {
  LoginResult r;
  r.type = type;
  r.initiator_name = "iqn.2026-01.test:init";
  r.isid = {0x80, 0, 0, 0, 0, 1};
  r.tsih = 1;
  r.cid = 0;
  r.params = params;
  r.exp_cmd_sn = 1;
  r.next_stat_sn = 100;
  if (type == SessionType::kNormal) {
    TargetEntry t;
    t.name = "iqn.2026-01.test:disk";
    r.target = t;
  }
  return r;
}

// A Session plus the actions of the last PDU fed to it.
struct Harness {
  explicit Harness(const SessionParams& params, SessionConfig config = {},
                   SessionType type = SessionType::kNormal)
      : session(make_login_result(params, type), config, catalog) {}

  Actions& send(const Pdu& pdu) {
    out.clear();
    session.on_pdu(to_raw(pdu), out);
    return out;
  }
  Actions& complete(uint32_t itt, scsi::ScsiResult result) {
    out.clear();
    session.on_task_done(itt, std::move(result), out);
    return out;
  }

  FakeCatalog catalog;
  Session session;
  Actions out;
};

}  // namespace tandem::target::iscsi::testing
