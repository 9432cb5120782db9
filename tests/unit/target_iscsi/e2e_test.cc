// Bytes in, bytes out: PduParser -> LoginMachine -> Session over a realistic login (as
// open-iscsi sends it), digests switched on after login, a write and a read.
#include <gtest/gtest.h>

#include "target/iscsi/login.h"
#include "target/iscsi/pdu_parser.h"
#include "target/iscsi/session.h"
#include "test_util.h"

namespace tandem::target::iscsi {
namespace {

using testing::actions_of;
using testing::CountingRandom;
using testing::FakeCatalog;
using testing::keys_of;
using testing::pdus_of;
using testing::text_of;
using testing::value_of;

// The target side of one connection, driven only through bytes.
class Connection {
 public:
  explicit Connection(const FakeCatalog& catalog)
      : catalog_(catalog),
        login_(LoginConfig{}, catalog, CountingRandom{}, [] { return uint16_t{3}; }) {}

  // Feeds initiator bytes; returns decoded target PDUs and the actions of the session.
  std::vector<Pdu> feed(const std::vector<uint8_t>& bytes, Actions* actions = nullptr) {
    std::vector<Pdu> sent;
    parser_.feed(bytes);
    while (true) {
      auto next = parser_.next();
      EXPECT_TRUE(next.ok());
      if (!next.ok() || !next->has_value()) break;
      if (!session_) {
        auto req = decode(**next);
        EXPECT_TRUE(req.ok());
        auto step = login_.on_request(std::get<LoginRequest>(*req));
        sent.push_back(step.response);
        if (step.state == LoginStep::State::kComplete) {
          session_.emplace(login_.result(), SessionConfig{}, catalog_);
          parser_.set_limits(session_->parser_limits());
        }
        continue;
      }
      Actions out;
      session_->on_pdu(**next, out);
      for (auto& a : out) {
        if (auto* s = std::get_if<SendPdu>(&a)) {
          // Round-trip the bytes the shell would write, digests included.
          auto wire = encode(s->pdu, session_->digests());
          PduParser check({1u << 24, session_->digests().header, session_->digests().data});
          check.feed(wire);
          auto back = check.next();
          EXPECT_TRUE(back.ok() && back->has_value());
          sent.push_back(*decode(**back));
        }
        if (actions) actions->push_back(a);
      }
    }
    return sent;
  }
  Session& session() { return *session_; }

 private:
  const FakeCatalog& catalog_;
  PduParser parser_;
  LoginMachine login_;
  std::optional<Session> session_;
};

TEST(EndToEnd, LoginWriteRead) {
  FakeCatalog catalog;
  catalog.targets.push_back(TargetEntry{"iqn.2026-01.test:disk", "", {}, {}, {}});
  Connection c(catalog);

  LoginRequest l1;
  l1.csg = 0;
  l1.nsg = 1;
  l1.transit = true;
  l1.isid = {0x00, 0x02, 0x3d, 0x00, 0x00, 0x01};
  l1.itt = 0;
  l1.cmd_sn = 1;
  l1.data = text_of({{"InitiatorName", "iqn.2004-10.com.ubuntu:01:abc"},
                     {"InitiatorAlias", "host"},
                     {"TargetName", "iqn.2026-01.test:disk"},
                     {"SessionType", "Normal"},
                     {"AuthMethod", "None"}});
  auto r1 = c.feed(encode(Pdu{l1}));
  ASSERT_EQ(r1.size(), 1u);
  const auto& lr1 = std::get<LoginResponse>(r1[0]);
  EXPECT_EQ(lr1.status_class, 0);
  EXPECT_TRUE(lr1.transit);

  LoginRequest l2 = l1;
  l2.csg = 1;
  l2.nsg = 3;
  l2.exp_stat_sn = lr1.stat_sn + 1;
  l2.data = text_of({{"HeaderDigest", "CRC32C"},
                     {"DataDigest", "CRC32C"},
                     {"ErrorRecoveryLevel", "0"},
                     {"InitialR2T", "No"},
                     {"ImmediateData", "Yes"},
                     {"MaxBurstLength", "16776192"},
                     {"FirstBurstLength", "262144"},
                     {"MaxConnections", "1"},
                     {"DataPDUInOrder", "Yes"},
                     {"DataSequenceInOrder", "Yes"},
                     {"MaxOutstandingR2T", "1"},
                     {"MaxRecvDataSegmentLength", "262144"},
                     {"DefaultTime2Wait", "2"},
                     {"DefaultTime2Retain", "0"},
                     {"IFMarker", "No"},
                     {"OFMarker", "No"}});
  auto r2 = c.feed(encode(Pdu{l2}));
  ASSERT_EQ(r2.size(), 1u);
  const auto& lr2 = std::get<LoginResponse>(r2[0]);
  EXPECT_EQ(lr2.tsih, 3);
  auto k = keys_of(lr2.data);
  EXPECT_EQ(value_of(k, "DataDigest"), "CRC32C");
  EXPECT_EQ(value_of(k, "DefaultTime2Retain"), "0");

  // A 600 KiB write: 256 KiB immediate (FirstBurst) then R2Ts of 1 MiB max.
  const DigestOptions dig{true, true};
  const uint32_t edtl = 600 * 1024;
  ScsiCommand w;
  w.itt = 1;
  w.cmd_sn = 1;
  w.write = true;
  w.final = true;
  w.expected_length = edtl;
  w.cdb = {0x2a};
  w.data.assign(256 * 1024, 0xa5);
  Actions acts;
  auto out = c.feed(encode(Pdu{w}, dig), &acts);
  ASSERT_EQ(out.size(), 1u);
  const auto& r2t = std::get<R2t>(out[0]);
  EXPECT_EQ(r2t.buffer_offset, 256u * 1024);
  EXPECT_EQ(r2t.desired_length, edtl - 256 * 1024);
  std::vector<uint8_t> bytes;
  for (uint32_t off = 0, sn = 0; off < r2t.desired_length; ++sn) {
    DataOut d;
    d.itt = 1;
    d.ttt = r2t.ttt;
    d.data_sn = sn;
    d.buffer_offset = r2t.buffer_offset + off;
    const uint32_t n = std::min<uint32_t>(262144, r2t.desired_length - off);
    d.data.assign(n, 0x5a);
    off += n;
    d.final = off == r2t.desired_length;
    auto wire = encode(Pdu{d}, dig);
    bytes.insert(bytes.end(), wire.begin(), wire.end());
  }
  // Deliver in awkward 1000-byte pieces.
  for (size_t i = 0; i < bytes.size(); i += 1000) {
    std::vector<uint8_t> piece(bytes.begin() + i, bytes.begin() + std::min(bytes.size(), i + 1000));
    c.feed(piece, &acts);
  }
  auto exec = actions_of<ExecuteTask>(acts);
  ASSERT_EQ(exec.size(), 1u);
  EXPECT_EQ(exec[0].task->data_out.size(), edtl);
  EXPECT_EQ(exec[0].task->data_out[0], std::byte{0xa5});
  EXPECT_EQ(exec[0].task->data_out[edtl - 1], std::byte{0x5a});
  Actions done;
  c.session().on_task_done(1, {}, done);
  auto rsp = pdus_of<ScsiResponse>(done);
  ASSERT_EQ(rsp.size(), 1u);
  EXPECT_EQ(rsp[0].stat_sn, lr2.stat_sn + 1);
  EXPECT_EQ(rsp[0].exp_cmd_sn, 2u);
}

}  // namespace
}  // namespace tandem::target::iscsi
