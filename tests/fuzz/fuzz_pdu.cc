// libFuzzer target over the iSCSI receive path: PduParser framing (two limit/digest
// configurations; feed() in one piece, and prepare()/commit() in 7-byte reads with the
// Session placing write data in task buffers), PDU decoding, text parsing, the LoginMachine and,
// once a login completes, the full-feature Session with immediate task completions.
// Any crash, sanitizer report or leak is a bug; there are no other assertions.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <vector>

#include "target/iscsi/login.h"
#include "target/iscsi/pdu_parser.h"
#include "target/iscsi/session.h"
#include "target/iscsi/text.h"

namespace {

using namespace tandem::target::iscsi;

class OneTarget : public TargetCatalog {
 public:
  OneTarget() {
    t_.name = "iqn.2026-01.test:disk";
    t_.addresses = {"127.0.0.1:3260,1"};
  }
  std::optional<TargetEntry> find(std::string_view name) const override {
    if (name == t_.name) return t_;
    return std::nullopt;
  }
  std::vector<TargetEntry> list() const override { return {t_}; }

 private:
  TargetEntry t_;
};

void drive(const uint8_t* data, size_t size, ParserLimits limits, size_t chunk, bool in_place) {
  static const OneTarget catalog;
  uint8_t counter = 0;
  LoginMachine login(
      LoginConfig{}, catalog,
      [&counter](std::span<uint8_t> out) {
        for (auto& b : out) b = counter++;
      },
      [] { return uint16_t{1}; });
  std::optional<Session> session;
  PduParser parser(limits);
  for (size_t off = 0; off < size;) {
    if (in_place) {
      // As the shell reads: into whatever span the parser prepares.
      auto into = parser.prepare();
      if (into.empty()) return;
      const size_t n = std::min({into.size(), chunk, size - off});
      std::copy(data + off, data + off + n, into.begin());
      parser.commit(n);
      off += n;
    } else {
      parser.feed({data + off, std::min(chunk, size - off)});
      off += chunk;
    }
    while (true) {
      auto next = parser.next();
      if (!next.ok()) {
        if (session) {
          Actions out;
          session->on_parse_error(next.error(), out);
        }
        if (next.error().code != PduErrorCode::kDataDigest) return;
        continue;
      }
      if (!next->has_value()) break;
      const RawPdu& raw = **next;
      if (!session) {
        auto pdu = decode(raw);
        if (!pdu.ok()) continue;
        (void)parse_text(raw.data);
        auto* req = std::get_if<LoginRequest>(&*pdu);
        if (req == nullptr) continue;
        auto step = login.on_request(*req);
        (void)encode(Pdu{step.response});
        if (step.state == LoginStep::State::kFailed) return;
        if (step.state == LoginStep::State::kComplete) {
          session.emplace(login.result(), SessionConfig{64, 1 << 20}, catalog);
          parser.set_limits(session->parser_limits());
          if (in_place) parser.set_placement(&*session);
        }
        continue;
      }
      Actions out;
      session->on_pdu(raw, out);
      for (size_t i = 0; i < out.size(); ++i) {
        if (auto* e = std::get_if<ExecuteTask>(&out[i])) {
          tandem::target::scsi::ScsiResult r;
          r.data_in.resize(std::min<uint32_t>(e->task->expected_in_length, 1 << 16));
          if (e->itt & 1) {
            r.status = tandem::target::scsi::Status::kCheckCondition;
            r.sense = {0x70, 0, 5, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x24, 0};
          }
          Actions done;
          session->on_task_done(e->itt, std::move(r), done);
          for (auto& a : done) {
            if (auto* s = std::get_if<SendPdu>(&a)) (void)encode(s->pdu, session->digests());
          }
        } else if (auto* s = std::get_if<SendPdu>(&out[i])) {
          (void)encode(s->pdu, session->digests());
        }
      }
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  (void)parse_text({data, size});
  drive(data, size, ParserLimits{}, size == 0 ? 1 : size, false);
  drive(data, size, ParserLimits{262144, true, true}, 7, true);
  return 0;
}
