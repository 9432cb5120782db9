// In-place receive: PduParser::prepare()/commit() with a DataPlacement, and the Session
// pointing write payloads at the task buffer. Counts copies: a large data segment is read
// into the buffer that becomes ScsiTask::data_out, apart from the bytes that arrived in the
// same staging read as its header.
#include <gtest/gtest.h>

#include <cstring>
#include <random>

#include "target/iscsi/pdu_parser.h"
#include "target/iscsi/session.h"
#include "test_util.h"

namespace tandem::target::iscsi {
namespace {

using testing::actions_of;
using testing::Harness;
using testing::pdus_of;

std::vector<uint8_t> pattern(uint32_t off, uint32_t n) {
  std::vector<uint8_t> v(n);
  for (uint32_t i = 0; i < n; ++i) v[i] = uint8_t((off + i) * 13 + 1);
  return v;
}

// A socket that hands out at most `max_read` bytes per read, as the shell would see it.
struct Wire {
  std::vector<uint8_t> bytes;
  size_t pos = 0;
  size_t max_read = 1 << 30;
  // Spans prepare() returned, for checking where reads went.
  std::vector<std::span<uint8_t>> reads;

  void append(const std::vector<uint8_t>& b) { bytes.insert(bytes.end(), b.begin(), b.end()); }
  bool empty() const { return pos == bytes.size(); }
  // One read through prepare()/commit().
  void read_into(PduParser& p) {
    auto into = p.prepare();
    ASSERT_FALSE(into.empty());
    const size_t n = std::min({into.size(), bytes.size() - pos, max_read});
    std::memcpy(into.data(), bytes.data() + pos, n);
    pos += n;
    reads.push_back(into.first(n));
    p.commit(n);
  }
};

bool inside(std::span<const uint8_t> s, const std::byte* base, size_t len) {
  const auto* b = reinterpret_cast<const uint8_t*>(base);
  return s.data() >= b && s.data() + s.size() <= b + len;
}

class RecordingPlacement : public DataPlacement {
 public:
  std::vector<std::byte> buffer;
  int calls = 0;
  bool decline = false;
  std::span<std::byte> place(const Bhs&, uint32_t length) override {
    ++calls;
    if (decline) return {};
    buffer.assign(length, std::byte{0});
    return buffer;
  }
};

TEST(ParserPrepare, SameResultsAsFeedForAnyReadSize) {
  for (DigestOptions d : {DigestOptions{}, DigestOptions{true, true}}) {
    for (size_t max_read : {1u, 7u, 48u, 1000u, 100000u}) {
      Wire w;
      w.max_read = max_read;
      std::vector<size_t> lens = {0, 5, 4096, 3, 70000, 1};
      for (size_t i = 0; i < lens.size(); ++i) {
        NopOut n;
        n.itt = uint32_t(i);
        n.data = pattern(uint32_t(i), uint32_t(lens[i]));
        w.append(encode(Pdu{n}, d));
      }
      PduParser p({1u << 20, d.header, d.data});
      size_t got = 0;
      while (!w.empty()) {
        w.read_into(p);
        for (;;) {
          auto r = p.next();
          ASSERT_TRUE(r.ok());
          if (!r->has_value()) break;
          EXPECT_EQ((*r)->itt(), got);
          EXPECT_EQ((*r)->data, pattern(uint32_t(got), uint32_t(lens[got])));
          ++got;
        }
      }
      EXPECT_EQ(got, lens.size());
      EXPECT_EQ(p.buffered(), 0u);
    }
  }
}

TEST(ParserPrepare, LargeSegmentIsReadInPlace) {
  // A 1 MiB data segment arriving in 64 KiB reads: the first staging read holds the header
  // and the start of the payload (copied once); every later read goes into the destination.
  RecordingPlacement sink;
  PduParser p({1u << 20, true, true});
  p.set_placement(&sink);
  DataOut d;
  d.itt = 7;
  d.data = pattern(0, 1 << 20);
  Wire w;
  w.max_read = 64 * 1024;
  w.append(encode(Pdu{d}, {true, true}));
  std::optional<RawPdu> pdu;
  while (!w.empty()) {
    w.read_into(p);
    auto r = p.next();
    ASSERT_TRUE(r.ok());
    if (r->has_value()) pdu = std::move(**r);
  }
  ASSERT_TRUE(pdu.has_value());
  EXPECT_EQ(sink.calls, 1);
  EXPECT_TRUE(pdu->data.empty());  // the bytes are in the placement
  ASSERT_EQ(sink.buffer.size(), size_t{1} << 20);
  EXPECT_EQ(std::memcmp(sink.buffer.data(), d.data.data(), d.data.size()), 0);
  // Copied: only what shared the header's staging read.
  EXPECT_LE(p.copied_payload_bytes(), PduParser::kStagingBytes - kBhsSize - 4);
  size_t in_place = 0;
  for (const auto& r : w.reads) {
    if (inside(r, sink.buffer.data(), sink.buffer.size())) in_place += r.size();
  }
  EXPECT_EQ(in_place + p.copied_payload_bytes(), size_t{1} << 20);
}

TEST(ParserPrepare, DataDigestErrorOnPlacedDataKeepsStream) {
  RecordingPlacement sink;
  PduParser p({65536, true, true});
  p.set_placement(&sink);
  DataOut d;
  d.itt = 1;
  d.data = pattern(0, 40000);
  auto bad = encode(Pdu{d}, {true, true});
  bad[52 + 30000] ^= 1;
  NopOut n;
  n.itt = 2;
  Wire w;
  w.max_read = 4096;
  w.append(bad);
  w.append(encode(Pdu{n}, {true, true}));
  int digest_errors = 0;
  int pdus = 0;
  while (!w.empty()) {
    w.read_into(p);
    for (;;) {
      auto r = p.next();
      if (!r.ok()) {
        EXPECT_EQ(r.error().code, PduErrorCode::kDataDigest);
        EXPECT_EQ(get_be32(r.error().header, 16), 1u);
        ++digest_errors;
        continue;
      }
      if (!r->has_value()) break;
      EXPECT_EQ((*r)->itt(), 2u);
      ++pdus;
    }
  }
  EXPECT_EQ(digest_errors, 1);
  EXPECT_EQ(pdus, 1);
}

TEST(ParserPrepare, DeclinedPlacementUsesPrivateBuffer) {
  RecordingPlacement sink;
  sink.decline = true;
  PduParser p({8192});
  p.set_placement(&sink);
  NopOut n;
  n.data = pattern(0, 100);
  p.feed(encode(Pdu{n}));
  auto r = p.next();
  ASSERT_TRUE(r.ok() && r->has_value());
  EXPECT_EQ((*r)->data, n.data);
  EXPECT_EQ(sink.calls, 1);
}

TEST(ParserPrepare, OversizeNeverReachesPlacement) {
  RecordingPlacement sink;
  PduParser p({8192});
  p.set_placement(&sink);
  DataOut d;
  d.data.assign(8193, 1);
  Wire w;
  w.append(encode(Pdu{d}));
  w.read_into(p);
  auto r = p.next();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, PduErrorCode::kDataSegmentTooLong);
  EXPECT_EQ(sink.calls, 0);
  EXPECT_TRUE(p.prepare().empty());  // broken: the shell stops reading
}

// ---- Session as the placement --------------------------------------------------------

struct Target {
  explicit Target(const SessionParams& params, SessionConfig config = {})
      : h(params, config), parser(h.session.parser_limits()) {
    parser.set_placement(&h.session);
  }
  // Reads everything on the wire; returns the session's actions.
  Actions pump() {
    Actions all;
    while (!wire.empty()) {
      wire.read_into(parser);
      for (;;) {
        auto r = parser.next();
        Actions out;
        if (!r.ok()) {
          h.session.on_parse_error(r.error(), out);
        } else if (!r->has_value()) {
          break;
        } else {
          h.session.on_pdu(**r, out);
        }
        all.insert(all.end(), out.begin(), out.end());
      }
    }
    return all;
  }
  Harness h;
  PduParser parser;
  Wire wire;
};

SessionParams big_params(bool digests) {
  SessionParams p;
  p.initial_r2t = false;
  p.immediate_data = true;
  p.first_burst_length = 256 * 1024;
  p.max_burst_length = 1 << 20;
  p.max_outstanding_r2t = 1;
  p.target_max_recv_data_segment_length = 1 << 20;
  p.header_digest = digests;
  p.data_digest = digests;
  return p;
}

ScsiCommand write_cmd(uint32_t itt, uint32_t cmd_sn, uint32_t edtl, uint32_t imm, bool final) {
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

DataOut data_out(uint32_t itt, uint32_t ttt, uint32_t sn, uint32_t off, uint32_t n, bool final) {
  DataOut d;
  d.itt = itt;
  d.ttt = ttt;
  d.data_sn = sn;
  d.buffer_offset = off;
  d.final = final;
  d.data = pattern(off, n);
  return d;
}

TEST(InPlace, ImmediateUnsolicitedAndSolicitedLandInTaskBuffer) {
  for (bool digests : {false, true}) {
    const DigestOptions dig{digests, digests};
    Target t(big_params(digests));
    t.wire.max_read = 64 * 1024;
    const uint32_t edtl = 3 << 20;
    // 128 KiB immediate, 128 KiB unsolicited Data-Out, then R2Ts of 1 MiB answered with
    // 1 MiB Data-Outs.
    t.wire.append(encode(Pdu{write_cmd(1, 1, edtl, 128 * 1024, false)}, dig));
    t.wire.append(encode(Pdu{data_out(1, kReservedTag, 0, 128 * 1024, 128 * 1024, true)}, dig));
    Actions all = t.pump();
    auto r2t = pdus_of<R2t>(all);
    std::vector<ExecuteTask> exec;
    while (!r2t.empty()) {
      R2t r = r2t.front();
      t.wire.append(
          encode(Pdu{data_out(1, r.ttt, 0, r.buffer_offset, r.desired_length, true)}, dig));
      Actions out = t.pump();
      EXPECT_TRUE(pdus_of<Reject>(out).empty());
      r2t = pdus_of<R2t>(out);
      for (auto& e : actions_of<ExecuteTask>(out)) exec.push_back(e);
    }
    ASSERT_EQ(exec.size(), 1u);
    const auto& buf = exec[0].task->data_out;
    ASSERT_EQ(buf.size(), edtl);
    auto want = pattern(0, edtl);
    EXPECT_EQ(std::memcmp(buf.data(), want.data(), edtl), 0);
    // Every payload byte was either read straight into the buffer that is now data_out, or
    // copied once out of a staging read that also carried its header (5 PDUs).
    size_t in_place = 0;
    for (const auto& r : t.wire.reads) {
      if (inside(r, buf.data(), buf.size())) in_place += r.size();
    }
    EXPECT_EQ(in_place + t.parser.copied_payload_bytes(), edtl);
    EXPECT_LE(t.parser.copied_payload_bytes(), 5 * PduParser::kStagingBytes);
    EXPECT_GE(in_place, edtl - 5 * PduParser::kStagingBytes);
  }
}

TEST(InPlace, HostileOffsetNeverPlaced) {
  Target t(big_params(false));
  t.wire.append(encode(Pdu{write_cmd(1, 1, 65536, 0, false)}));
  EXPECT_TRUE(pdus_of<Reject>(t.pump()).empty());
  // Offset beyond what was received, then beyond EDTL: both rejected, nothing placed.
  t.wire.append(encode(Pdu{data_out(1, kReservedTag, 0, 4096, 4096, false)}));
  t.wire.append(encode(Pdu{data_out(1, kReservedTag, 0, 0, 300000, true)}));
  t.wire.append(encode(Pdu{data_out(9, kReservedTag, 0, 0, 4096, true)}));  // unknown ITT
  auto out = t.pump();
  EXPECT_EQ(pdus_of<Reject>(out).size(), 3u);
  // The task still takes its correct data afterwards.
  t.wire.append(encode(Pdu{data_out(1, kReservedTag, 0, 0, 65536, true)}));
  auto exec = actions_of<ExecuteTask>(t.pump());
  ASSERT_EQ(exec.size(), 1u);
  auto want = pattern(0, 65536);
  EXPECT_EQ(std::memcmp(exec[0].task->data_out.data(), want.data(), want.size()), 0);
}

TEST(InPlace, DigestErrorOnPlacedDataOutEndsTaskUnexecuted) {
  Target t(big_params(true));
  const DigestOptions dig{true, true};
  t.wire.append(encode(Pdu{write_cmd(1, 1, 65536, 0, false)}, dig));
  auto bad = encode(Pdu{data_out(1, kReservedTag, 0, 0, 65536, true)}, dig);
  bad[52 + 40000] ^= 0x10;
  t.wire.append(bad);
  auto out = t.pump();
  EXPECT_TRUE(actions_of<ExecuteTask>(out).empty());
  auto rej = pdus_of<Reject>(out);
  ASSERT_EQ(rej.size(), 1u);
  EXPECT_EQ(rej[0].reason, uint8_t(RejectReason::kDataDigestError));
  auto rsp = pdus_of<ScsiResponse>(out);
  ASSERT_EQ(rsp.size(), 1u);
  EXPECT_EQ(rsp[0].status, 0x02);
  EXPECT_EQ(t.h.session.task_count(), 0u);
}

TEST(InPlace, DigestErrorOnImmediateDataDropsCommand) {
  Target t(big_params(true));
  const DigestOptions dig{true, true};
  auto bad = encode(Pdu{write_cmd(1, 1, 4096, 4096, true)}, dig);
  bad[52 + 100] ^= 0x01;
  t.wire.append(bad);
  auto out = t.pump();
  EXPECT_TRUE(actions_of<ExecuteTask>(out).empty());
  EXPECT_EQ(pdus_of<Reject>(out).size(), 1u);
  EXPECT_EQ(t.h.session.task_count(), 0u);
  // The retry (same CmdSN: the bad one left a gap) goes through.
  t.wire.append(encode(Pdu{write_cmd(1, 1, 4096, 4096, true)}, dig));
  EXPECT_EQ(actions_of<ExecuteTask>(t.pump()).size(), 1u);
}

TEST(InPlace, SeededRandomStreamsNeverCrash) {
  // Valid-looking headers with hostile fields and random read sizes; the session's checks
  // decide what is placed. Only crashes and sanitizer reports count.
  for (uint32_t seed = 1; seed <= 100; ++seed) {
    std::mt19937 rng(seed);
    Target t(big_params(false));
    t.wire.max_read = 1 + rng() % 5000;
    for (int i = 0; i < 30; ++i) {
      const uint32_t itt = rng() % 4;
      if (rng() % 3 == 0) {
        t.wire.append(encode(
            Pdu{write_cmd(itt, uint32_t(i + 1), rng() % 200000, rng() % 9000, (rng() & 1) != 0)}));
      } else {
        t.wire.append(encode(Pdu{data_out(itt, rng() % 3 == 0 ? kReservedTag : rng() % 4, rng() % 3,
                                          rng() % 70000, rng() % 9000, (rng() & 1) != 0)}));
      }
    }
    t.pump();
    SUCCEED() << "seed " << seed;
  }
}

}  // namespace
}  // namespace tandem::target::iscsi
