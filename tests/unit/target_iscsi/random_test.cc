// Seeded random PDU sequences against Session and LoginMachine: no crash, and the
// sequencing invariants hold (MaxCmdSN never decreases, StatSN strictly increases on every
// status-bearing PDU). A failing seed is printed and replays.
#include <gtest/gtest.h>

#include <random>

#include "target/iscsi/login.h"
#include "target/iscsi/session.h"
#include "test_util.h"

namespace tandem::target::iscsi {
namespace {

using testing::Harness;

Pdu random_pdu(std::mt19937& rng) {
  auto small = [&](uint32_t n) { return static_cast<uint32_t>(rng() % n); };
  auto bytes = [&](uint32_t n) {
    std::vector<uint8_t> v(small(n));
    for (auto& b : v) b = uint8_t(rng());
    return v;
  };
  switch (small(9)) {
    case 0: {
      ScsiCommand c;
      c.immediate = small(8) == 0;
      c.itt = small(8);
      c.cmd_sn = small(12);
      c.read = small(2);
      c.write = small(2);
      c.final = small(4) != 0;
      c.expected_length = small(3) == 0 ? small(70000) : small(4096);
      c.data = bytes(c.write ? 5000 : 2);
      if (small(10) == 0) c.ahs = {0, 5, 2, 0, 0, 0, 1, 0};
      return c;
    }
    case 1:
    case 2: {
      DataOut d;
      d.itt = small(8);
      d.ttt = small(3) == 0 ? kReservedTag : small(12);
      d.data_sn = small(3);
      d.buffer_offset = small(3) == 0 ? small(70000) : small(4) * 4096;
      d.final = small(2);
      d.data = bytes(9000);
      return d;
    }
    case 3: {
      TaskMgmtRequest t;
      t.function = uint8_t(1 + small(9));
      t.itt = 100 + small(4);
      t.ref_task_tag = small(8);
      t.cmd_sn = small(12);
      t.ref_cmd_sn = small(12);
      t.immediate = small(2);
      return t;
    }
    case 4: {
      NopOut n;
      n.itt = small(3) == 0 ? kReservedTag : small(8);
      n.ttt = small(3) == 0 ? small(12) : kReservedTag;
      n.cmd_sn = small(12);
      n.immediate = small(2);
      n.data = bytes(100);
      return n;
    }
    case 5: {
      TextRequest t;
      t.itt = small(4);
      t.ttt = small(2) ? kReservedTag : small(12);
      t.cmd_sn = small(12);
      t.cont = small(4) == 0;
      std::string s = small(2) ? std::string("SendTargets=All\0", 16) : "Foo";
      t.data.assign(s.begin(), s.end());
      return t;
    }
    case 6: {
      LogoutRequest l;
      l.reason = uint8_t(small(4));
      l.cid = uint16_t(small(2));
      l.cmd_sn = small(12);
      l.immediate = small(2);
      return l;
    }
    case 7:
      return SnackRequest{};
    default: {
      R2t r;
      return r;
    }
  }
}

TEST(RandomSession, InvariantsHold) {
  for (uint32_t seed = 1; seed <= 300; ++seed) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    std::mt19937 rng(seed);
    SessionParams p;
    p.initial_r2t = rng() & 1;
    p.immediate_data = rng() & 1;
    p.first_burst_length = 4096u << (rng() % 3);
    p.max_burst_length = 8192u << (rng() % 3);
    p.max_outstanding_r2t = 1 + rng() % 3;
    p.initiator_max_recv_data_segment_length = 512u << (rng() % 5);
    SessionConfig cfg;
    cfg.queue_depth = 1 + rng() % 8;
    cfg.max_buffered_bytes = (rng() & 1) ? 16384u : 64u << 20;
    Harness h(p, cfg);
    h.catalog.targets.push_back(TargetEntry{"iqn.2026-01.test:disk", "", {}, {}, {"a:1,1"}});
    uint32_t last_max = h.session.max_cmd_sn();
    uint32_t next_stat = h.session.stat_sn();
    std::vector<uint32_t> executing;
    auto check = [&](const Actions& out) {
      for (const auto& a : out) {
        if (const auto* e = std::get_if<ExecuteTask>(&a)) executing.push_back(e->itt);
        const auto* s = std::get_if<SendPdu>(&a);
        if (!s) continue;
        std::visit(
            [&](const auto& pdu) {
              if constexpr (requires { pdu.max_cmd_sn; }) {
                ASSERT_TRUE(sn_le(last_max, pdu.max_cmd_sn));
                last_max = pdu.max_cmd_sn;
              }
              using T = std::decay_t<decltype(pdu)>;
              if constexpr (requires { pdu.stat_sn; }) {
                bool consumes = std::is_same_v<T, ScsiResponse> || std::is_same_v<T, Reject> ||
                                std::is_same_v<T, TaskMgmtResponse> ||
                                std::is_same_v<T, LogoutResponse> ||
                                std::is_same_v<T, TextResponse>;
                if constexpr (std::is_same_v<T, DataIn>) consumes = pdu.status_present;
                if constexpr (std::is_same_v<T, NopIn>) consumes = pdu.itt != kReservedTag;
                if (consumes) {
                  ASSERT_EQ(pdu.stat_sn, next_stat);
                  ++next_stat;
                }
              }
            },
            s->pdu);
      }
    };
    for (int step = 0; step < 200 && !h.session.logged_out(); ++step) {
      if (!executing.empty() && rng() % 3 == 0) {
        const size_t i = rng() % executing.size();
        const uint32_t itt = executing[i];
        executing.erase(executing.begin() + static_cast<std::ptrdiff_t>(i));
        scsi::ScsiResult r;
        r.data_in.resize(rng() % 20000);
        check(h.complete(itt, std::move(r)));
      } else if (rng() % 20 == 0) {
        Actions out;
        h.session.send_ping(out);
        check(out);
      } else {
        check(h.send(random_pdu(rng)));
      }
      ASSERT_LE(h.session.task_count(), size_t{cfg.queue_depth} * 3);
    }
  }
}

TEST(RandomLogin, NeverCrashesAndEndsCleanly) {
  testing::FakeCatalog catalog;
  TargetEntry t;
  t.name = "iqn.t";
  t.auth.chap = ChapCredentials{"u", "secretsecret"};
  catalog.targets.push_back(t);
  const char* keys[] = {"InitiatorName", "TargetName",   "SessionType",    "AuthMethod",
                        "CHAP_A",        "CHAP_N",       "CHAP_R",         "CHAP_I",
                        "CHAP_C",        "HeaderDigest", "MaxBurstLength", "X-y"};
  const char* values[] = {"iqn.i", "iqn.t", "Normal", "Discovery", "CHAP,None", "None", "5",
                          "u",     "0x00",  "0bAA==", "CRC32C",    "1",         ""};
  for (uint32_t seed = 1; seed <= 500; ++seed) {
    std::mt19937 rng(seed);
    LoginMachine m(LoginConfig{}, catalog, testing::CountingRandom{}, [] { return uint16_t{1}; });
    for (int i = 0; i < 8; ++i) {
      LoginRequest r;
      r.csg = uint8_t(rng() % 4);
      r.nsg = uint8_t(rng() % 4);
      r.transit = rng() & 1;
      r.cont = rng() % 5 == 0;
      r.isid[0] = uint8_t(rng() % 2);
      TextPairs kv;
      for (uint32_t k = rng() % 5; k > 0; --k) {
        std::string key = keys[rng() % std::size(keys)];
        if (find_value(kv, key)) continue;
        kv.push_back({key, values[rng() % std::size(values)]});
      }
      r.data = encode_text(kv);
      auto step = m.on_request(r);
      (void)encode(Pdu{step.response});
      if (step.state != LoginStep::State::kContinue) break;
    }
  }
}

}  // namespace
}  // namespace tandem::target::iscsi
