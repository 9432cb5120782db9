// tandem-stamp: a writer for cluster tests. Writes blocks stamped (LBA, sequence, writer id,
// CRC) at a queue depth over one libiscsi session, logs every issued, acknowledged, retried
// and failed write, and with --verify reads every block back against that log. Errors are
// handled the way an OS initiator does: NOT READY, UNIT ATTENTION, BUSY and timeouts are
// retried within --retry-seconds; a dropped connection is re-established and its commands
// re-sent, but counted as a reconnect (the session did not survive). Single-threaded: one
// poll loop owns the context, every op and the log.
#include <iscsi/iscsi.h>
#include <iscsi/scsi-lowlevel.h>
#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <deque>
#include <fstream>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "tests/tools/stamp_format.h"

namespace tandem::stamp {
namespace {

using Steady = std::chrono::steady_clock;
volatile std::sig_atomic_t g_stop = 0;

double WallNow() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}
double Since(Steady::time_point t) {
  return std::chrono::duration<double>(Steady::now() - t).count();
}

struct Options {
  std::string url;
  uint64_t blocks = 1024;
  double duration = 10;
  uint64_t writes = 0;  // stop after this many (0: only --duration bounds the run)
  int qd = 8;
  double rate = 0;  // writes per second, 0: as fast as acknowledged
  std::string log;
  bool verify = false;
  uint64_t writer = 0;
  int timeout = 30;
  double retry_seconds = 60;
  std::string initiator = "iqn.2026-11.dev.tandem:stamp";
};

std::string LastError(iscsi_context* ctx) {
  std::string s = ctx ? iscsi_get_error(ctx) : "";
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

// "CHECK CONDITION NOT_READY 0x04/0x01" and the like: what the log records for a failure.
std::string Describe(int status, scsi_task* task) {
  char buf[128];
  if (status == SCSI_STATUS_CHECK_CONDITION && task) {
    std::snprintf(buf, sizeof buf, "CHECK_CONDITION %s asc/ascq=0x%04x",
                  scsi_sense_key_str(task->sense.key), task->sense.ascq);
  } else if (status == SCSI_STATUS_TIMEOUT) {
    std::snprintf(buf, sizeof buf, "TIMEOUT");
  } else if (status == SCSI_STATUS_CANCELLED) {
    std::snprintf(buf, sizeof buf, "CANCELLED");
  } else {
    std::snprintf(buf, sizeof buf, "STATUS 0x%02x", status);
  }
  return buf;
}

// An OS initiator retries these (SBC-3/SPC-4: transient conditions), everything else fails.
bool Retryable(int status, scsi_task* task) {
  if (status == SCSI_STATUS_BUSY || status == SCSI_STATUS_TASK_SET_FULL ||
      status == SCSI_STATUS_TIMEOUT || status == SCSI_STATUS_CANCELLED) {
    return true;
  }
  return status == SCSI_STATUS_CHECK_CONDITION && task &&
         (task->sense.key == SCSI_SENSE_NOT_READY || task->sense.key == SCSI_SENSE_UNIT_ATTENTION);
}

struct Lun {
  uint32_t block_size = 0;
  uint64_t blocks = 0;
};

// Logs in (bounded retries); nullptr and a message on failure.
iscsi_context* Connect(const Options& o, Lun* lun, int* lun_no, std::string* why) {
  iscsi_context* ctx = iscsi_create_context(o.initiator.c_str());
  if (!ctx) {
    *why = "cannot create a libiscsi context";
    return nullptr;
  }
  iscsi_url* url = iscsi_parse_full_url(ctx, o.url.c_str());
  if (!url) {
    *why = "bad --url: " + LastError(ctx);
    iscsi_destroy_context(ctx);
    return nullptr;
  }
  iscsi_set_targetname(ctx, url->target);
  iscsi_set_session_type(ctx, ISCSI_SESSION_NORMAL);
  iscsi_set_header_digest(ctx, ISCSI_HEADER_DIGEST_NONE);
  iscsi_set_noautoreconnect(ctx, 1);  // reconnects are ours to count
  iscsi_set_timeout(ctx, o.timeout);
  std::string portal = url->portal;
  *lun_no = url->lun;
  iscsi_destroy_url(url);
  if (iscsi_full_connect_sync(ctx, portal.c_str(), *lun_no) != 0) {
    *why = "login to " + portal + " failed: " + LastError(ctx);
    iscsi_destroy_context(ctx);
    return nullptr;
  }
  for (int attempt = 0;; ++attempt) {
    scsi_task* t = iscsi_readcapacity16_sync(ctx, *lun_no);
    if (t && t->status == SCSI_STATUS_GOOD) {
      auto* rc = static_cast<scsi_readcapacity16*>(scsi_datain_unmarshall(t));
      if (rc) {
        lun->block_size = rc->block_length;
        lun->blocks = rc->returned_lba + 1;
      }
      scsi_free_scsi_task(t);
      if (lun->block_size >= kHeaderBytes) return ctx;
      *why = "block size too small for a stamp";
      break;
    }
    // The first command after a login may see UNIT ATTENTION (SPC-4 6.x): ask again.
    bool again = t && Retryable(t->status, t) && attempt < 5;
    *why = "READ CAPACITY 16: " + (t ? Describe(t->status, t) : LastError(ctx));
    if (t) scsi_free_scsi_task(t);
    if (!again) break;
  }
  iscsi_destroy_context(ctx);
  return nullptr;
}

class Writer {
 public:
  explicit Writer(const Options& o) : o_(o), rng_(o.writer) {}

  int Run() {
    std::string why;
    start_ = Steady::now();
    ctx_ = Connect(o_, &lun_, &lun_no_, &why);
    if (!ctx_) return Fail(why, 3);
    if (o_.blocks > lun_.blocks) return Fail("--blocks exceeds the LUN", 2);
    log_ = std::fopen(o_.log.c_str(), "w");
    if (!log_) return Fail("cannot open the log " + o_.log, 2);
    std::setvbuf(log_, nullptr, _IOLBF, 1 << 16);  // tests follow the log while it runs
    std::fprintf(log_, "# writer %llu blocks %llu block_size %u\n",
                 static_cast<unsigned long long>(o_.writer),
                 static_cast<unsigned long long>(o_.blocks), lun_.block_size);
    ops_.resize(static_cast<size_t>(o_.qd));
    for (auto& op : ops_) {
      op = std::make_unique<Op>();
      op->owner = this;
      op->buf.resize(lun_.block_size);
    }
    last_ok_ = start_;
    Loop();
    if (ctx_) {
      if (inflight_ == 0) (void)iscsi_logout_sync(ctx_);
      iscsi_destroy_context(ctx_);
    }
    std::fclose(log_);
    nlohmann::json summary{{"writer", o_.writer},          {"block_size", lun_.block_size},
                           {"issued", issued_},            {"acked", acked_},
                           {"failed", failed_},            {"retries", retries_},
                           {"reconnects", reconnects_},    {"max_gap_s", max_gap_},
                           {"max_gap_end", max_gap_end_},  {"elapsed_s", Since(start_)},
                           {"first_failure", first_failure_}};
    std::printf("%s\n", summary.dump().c_str());
    return failed_ > 0 || lost_session_ ? 1 : 0;
  }

 private:
  enum class St { kFree, kInFlight, kWaiting };
  struct Op {
    Writer* owner = nullptr;
    St st = St::kFree;
    uint64_t lba = 0, seq = 0;
    std::vector<std::byte> buf;
    scsi_iovec iov{};
    Steady::time_point first, retry_at;
    int attempts = 0;
  };

  int Fail(const std::string& why, int code) {
    std::fprintf(stderr, "tandem-stamp: %s\n", why.c_str());
    return code;
  }

  void Log(char kind, const Op& op, const std::string& detail = "") {
    std::string line = Format({kind, op.lba, op.seq, WallNow(), detail});
    std::fprintf(log_, "%s\n", line.c_str());
  }

  bool Issuing() const {
    if (g_stop || Since(start_) >= o_.duration || lost_session_) return false;
    if (o_.writes > 0 && issued_ >= o_.writes) return false;
    return o_.rate <= 0 || static_cast<double>(issued_) < o_.rate * Since(start_) + 1;
  }

  void StartNew(Op& op) {
    uint64_t lba = 0;
    for (int i = 0; i < 64; ++i) {  // an LBA with no write in flight: their order is unknown
      lba = std::uniform_int_distribution<uint64_t>(0, o_.blocks - 1)(rng_);
      if (!busy_.count(lba)) break;
    }
    if (busy_.count(lba)) return;
    busy_.insert(lba);
    op.lba = lba;
    op.seq = ++next_seq_;
    op.attempts = 0;
    op.first = Steady::now();
    Write(op.buf, {op.lba, op.seq, o_.writer});
    ++issued_;
    Log('I', op);
    Submit(op);
  }

  void Submit(Op& op) {
    op.iov.iov_base = op.buf.data();
    op.iov.iov_len = op.buf.size();
    ++op.attempts;
    scsi_task* t = iscsi_write16_iov_task(ctx_, lun_no_, op.lba, nullptr, lun_.block_size,
                                          static_cast<int>(lun_.block_size), 0, 0, 0, 0, 0,
                                          &Writer::OnDone, &op, &op.iov, 1);
    if (!t) {  // could not even queue: try again shortly, as for a transient error
      Retry(op, "QUEUE " + LastError(ctx_));
      return;
    }
    op.st = St::kInFlight;
    ++inflight_;
  }

  static void OnDone(iscsi_context*, int status, void* data, void* priv) {
    auto* op = static_cast<Op*>(priv);
    op->owner->Done(*op, status, static_cast<scsi_task*>(data));
  }

  void Done(Op& op, int status, scsi_task* t) {
    --inflight_;
    if (status == SCSI_STATUS_GOOD) {
      double gap = Since(last_ok_);
      if (gap > max_gap_) {
        max_gap_ = gap;
        max_gap_end_ = WallNow();
      }
      last_ok_ = Steady::now();
      ++acked_;
      Log('A', op);
      Free(op);
    } else if (Retryable(status, t)) {
      Retry(op, Describe(status, t));
    } else {
      Finish(op, Describe(status, t));
    }
    if (t) scsi_free_scsi_task(t);
  }

  void Retry(Op& op, const std::string& why) {
    if (Since(op.first) >= o_.retry_seconds) return Finish(op, why + " (retries exhausted)");
    ++retries_;
    Log('R', op, why);
    op.st = St::kWaiting;
    op.retry_at = Steady::now() + std::chrono::milliseconds(std::min(50 * op.attempts, 500));
  }

  void Finish(Op& op, const std::string& why) {
    ++failed_;
    if (first_failure_.empty()) first_failure_ = Format({'F', op.lba, op.seq, WallNow(), why});
    Log('F', op, why);
    Free(op);
  }

  void Free(Op& op) {
    busy_.erase(op.lba);
    op.st = St::kFree;
  }

  // The connection dropped: a new login, then every command it cancelled is sent again.
  void Reconnect() {
    ++reconnects_;
    std::fprintf(log_, "%s\n", Format({'C', 0, 0, WallNow(), LastError(ctx_)}).c_str());
    iscsi_destroy_context(ctx_);  // cancels what was in flight: Done() queues each for a retry
    ctx_ = nullptr;
    auto until = Steady::now() + std::chrono::duration<double>(o_.retry_seconds);
    std::string why;
    Lun lun;
    while (!ctx_ && Steady::now() < until) {
      ctx_ = Connect(o_, &lun, &lun_no_, &why);
      if (!ctx_) ::usleep(200 * 1000);  // nothing to await: the target is not there yet
    }
    if (!ctx_) {
      lost_session_ = true;
      for (auto& op : ops_) {
        if (op->st != St::kFree) Finish(*op, "reconnect failed: " + why);
      }
    }
  }

  void Loop() {
    for (;;) {
      auto now = Steady::now();
      for (auto& op : ops_) {
        if (op->st == St::kWaiting && op->retry_at <= now && ctx_) Submit(*op);
      }
      for (auto& op : ops_) {
        if (op->st == St::kFree && Issuing()) StartNew(*op);
      }
      bool busy = std::any_of(ops_.begin(), ops_.end(),
                              [](const auto& op) { return op->st != St::kFree; });
      if (!busy && !Issuing()) {
        bool rate_wait = !g_stop && Since(start_) < o_.duration && !lost_session_ &&
                         (o_.writes == 0 || issued_ < o_.writes);
        if (!rate_wait) return;
      }
      pollfd pfd{iscsi_get_fd(ctx_), static_cast<short>(iscsi_which_events(ctx_)), 0};
      int n = ::poll(&pfd, pfd.events ? 1 : 0, 20);
      if (n > 0 && iscsi_service(ctx_, pfd.revents) < 0) {
        Reconnect();
      } else if (Steady::now() - last_scan_ >= std::chrono::seconds(1)) {
        last_scan_ = Steady::now();  // lets libiscsi expire commands past --timeout
        if (iscsi_service(ctx_, 0) < 0) Reconnect();
      }
    }
  }

  Options o_;
  std::mt19937_64 rng_;
  iscsi_context* ctx_ = nullptr;
  Lun lun_;
  int lun_no_ = 0;
  std::FILE* log_ = nullptr;
  std::vector<std::unique_ptr<Op>> ops_;
  std::set<uint64_t> busy_;
  uint64_t next_seq_ = 0, issued_ = 0, acked_ = 0, failed_ = 0, retries_ = 0, reconnects_ = 0;
  int inflight_ = 0;
  bool lost_session_ = false;
  Steady::time_point start_, last_ok_, last_scan_;
  double max_gap_ = 0, max_gap_end_ = 0;
  std::string first_failure_;
};

// Reads every block the log covers and checks it against the ledger.
int Verify(const Options& o) {
  std::ifstream in(o.log);
  std::string line;
  unsigned long long writer = 0, blocks = 0;
  unsigned bs = 0;
  if (!std::getline(in, line) ||
      std::sscanf(line.c_str(), "# writer %llu blocks %llu block_size %u", &writer, &blocks,
                  &bs) != 3) {
    std::fprintf(stderr, "tandem-stamp: %s is not a tandem-stamp log\n", o.log.c_str());
    return 2;
  }
  Ledger ledger(writer);
  while (std::getline(in, line)) {
    if (auto l = Parse(line)) ledger.Add(*l);
  }
  Lun lun;
  int lun_no = 0;
  std::string why;
  iscsi_context* ctx = Connect(o, &lun, &lun_no, &why);
  if (!ctx) {
    std::fprintf(stderr, "tandem-stamp: %s\n", why.c_str());
    return 3;
  }
  if (lun.block_size != bs) {
    std::fprintf(stderr, "tandem-stamp: block size %u, the log says %u\n", lun.block_size, bs);
    return 2;
  }
  uint64_t mismatches = 0, checked = 0;
  std::vector<std::string> shown;
  constexpr uint64_t kChunk = 256;
  for (uint64_t lba = 0; lba < blocks; lba += kChunk) {
    uint32_t n = static_cast<uint32_t>(std::min<uint64_t>(kChunk, blocks - lba));
    scsi_task* t = nullptr;
    auto start = Steady::now();
    for (;;) {
      t = iscsi_read16_sync(ctx, lun_no, lba, n * bs, static_cast<int>(bs), 0, 0, 0, 0, 0);
      if (t && t->status == SCSI_STATUS_GOOD) break;
      bool again = t && Retryable(t->status, t) && Since(start) < o.retry_seconds;
      why = t ? Describe(t->status, t) : LastError(ctx);
      if (t) scsi_free_scsi_task(t);
      t = nullptr;
      if (!again) break;
      ::usleep(100 * 1000);
    }
    if (!t) {
      std::fprintf(stderr, "tandem-stamp: READ16 at lba %llu: %s\n",
                   static_cast<unsigned long long>(lba), why.c_str());
      iscsi_destroy_context(ctx);
      return 3;
    }
    if (t->datain.size < static_cast<int>(n * bs)) {
      std::fprintf(stderr, "tandem-stamp: READ16 at lba %llu returned %d of %u bytes\n",
                   static_cast<unsigned long long>(lba), t->datain.size, n * bs);
      scsi_free_scsi_task(t);
      iscsi_destroy_context(ctx);
      return 3;
    }
    for (uint32_t i = 0; i < n; ++i) {
      auto block = std::span(reinterpret_cast<const std::byte*>(t->datain.data) + i * bs, bs);
      std::string bad = ledger.Check(lba + i, block);
      ++checked;
      if (!bad.empty()) {
        ++mismatches;
        if (shown.size() < 20) shown.push_back(bad);
      }
    }
    scsi_free_scsi_task(t);
  }
  (void)iscsi_logout_sync(ctx);
  iscsi_destroy_context(ctx);
  for (const auto& s : shown) std::printf("mismatch %s\n", s.c_str());
  nlohmann::json summary{{"checked", checked},
                         {"acked_lbas", ledger.acked_lbas()},
                         {"mismatches", mismatches}};
  std::printf("%s\n", summary.dump().c_str());
  return mismatches == 0 ? 0 : 1;
}

}  // namespace
}  // namespace tandem::stamp

int main(int argc, char** argv) {
  using namespace tandem::stamp;
  Options o;
  CLI::App app{"tandem-stamp: stamped writes over iSCSI, and their verification"};
  app.add_option("--url", o.url, "iscsi://host[:port]/iqn/lun")->required();
  app.add_option("--blocks", o.blocks, "blocks 0..N-1 are written (LUN blocks)");
  app.add_option("--duration", o.duration, "seconds of writes");
  app.add_option("--writes", o.writes, "stop after this many writes (0: --duration only)");
  app.add_option("--qd", o.qd, "writes in flight")->check(CLI::Range(1, 256));
  app.add_option("--rate", o.rate, "writes per second (0: unlimited)");
  app.add_option("--log", o.log, "the write log (written, or read with --verify)")->required();
  app.add_flag("--verify", o.verify, "read every block back and check it against the log");
  app.add_option("--writer", o.writer, "writer id (default: random)");
  app.add_option("--timeout", o.timeout, "seconds per command before it is retried");
  app.add_option("--retry-seconds", o.retry_seconds, "how long one write is retried");
  app.add_option("--initiator", o.initiator, "initiator IQN");
  CLI11_PARSE(app, argc, argv);
  if (o.blocks == 0) return 2;
  if (o.verify) return Verify(o);
  if (o.writer == 0) o.writer = std::random_device{}() | 1;
  std::signal(SIGINT, [](int) { g_stop = 1; });
  std::signal(SIGTERM, [](int) { g_stop = 1; });
  return Writer(o).Run();
}
