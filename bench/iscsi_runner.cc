#include "bench/iscsi_runner.h"

// libiscsi's headers are C and need these first.
#include <iscsi/iscsi.h>
#include <iscsi/scsi-lowlevel.h>
#include <poll.h>
#include <stdint.h>
#include <sys/types.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <sstream>

namespace tandem::bench {
namespace {

std::atomic<bool> g_stop{false};

// --timeline keeps at most this many completions in memory (32 bytes each).
constexpr size_t kMaxTimeline = size_t{4} << 20;

// Poll at least this often: libiscsi's command timeouts only advance inside iscsi_service().
constexpr int kMaxPollMs = 100;

// libiscsi's last error, without the trailing newline some messages carry.
std::string LastError(iscsi_context* ctx) {
  const char* e = iscsi_get_error(ctx);
  std::string s = e == nullptr ? "" : e;
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

std::string DescribeFailure(iscsi_context* ctx, int status, scsi_task* task) {
  std::ostringstream os;
  if (status == SCSI_STATUS_CHECK_CONDITION && task != nullptr) {
    os << "CHECK CONDITION: " << scsi_sense_key_str(task->sense.key) << " / "
       << scsi_sense_ascq_str(task->sense.ascq);
  } else if (status == SCSI_STATUS_TIMEOUT) {
    os << "command timed out";
  } else if (status == SCSI_STATUS_CANCELLED) {
    // libiscsi cancels what is in flight when the connection drops; say why if it knows.
    os << "command cancelled";
    const std::string detail = LastError(ctx);
    if (!detail.empty()) os << " (" << detail << ")";
  } else {
    os << "SCSI status 0x" << std::hex << status << std::dec;
    const std::string detail = LastError(ctx);
    if (!detail.empty()) os << ": " << detail;
  }
  return os.str();
}

}  // namespace

struct IscsiRunner::Slot {
  IscsiRunner* owner = nullptr;
  std::vector<std::byte> buffer;
  scsi_iovec iov{};
  Op op;
  Clock::time_point start;
};

IscsiRunner::IscsiRunner(const Options& options) : options_(options), rng_(options.seed) {}

IscsiRunner::~IscsiRunner() {
  if (ctx_ == nullptr) return;
  if (logged_in_ && in_flight_ == 0) (void)iscsi_logout_sync(ctx_);
  // Destroying cancels anything still in flight; those callbacks see CANCELLED and touch
  // slots_, which is still alive here.
  iscsi_destroy_context(ctx_);
}

void IscsiRunner::request_stop() { g_stop.store(true); }

std::optional<RunError> IscsiRunner::connect(LunInfo* lun) {
  ctx_ = iscsi_create_context(options_.initiator_name.c_str());
  if (ctx_ == nullptr) return RunError{"connect", "cannot create libiscsi context", {}};
  iscsi_url* url = iscsi_parse_full_url(ctx_, options_.url.c_str());
  if (url == nullptr) {
    return RunError{"usage", "bad --url: " + LastError(ctx_), {}};
  }
  lun->portal = url->portal;
  lun->target = url->target;
  lun->lun = lun_ = url->lun;
  iscsi_set_targetname(ctx_, url->target);
  iscsi_set_session_type(ctx_, ISCSI_SESSION_NORMAL);
  iscsi_set_header_digest(ctx_, ISCSI_HEADER_DIGEST_NONE);
  if (url->user[0] != '\0') iscsi_set_initiator_username_pwd(ctx_, url->user, url->passwd);
  // A benchmark should fail loudly, not silently reconnect and keep timing.
  iscsi_set_noautoreconnect(ctx_, 1);
  iscsi_set_timeout(ctx_, options_.timeout_seconds);
  const std::string portal = url->portal;
  iscsi_destroy_url(url);

  if (iscsi_full_connect_sync(ctx_, portal.c_str(), lun_) != 0) {
    return RunError{"connect",
                    "login to " + portal + " failed (is the target listening?): " + LastError(ctx_),
                    {}};
  }
  logged_in_ = true;

  scsi_task* task = iscsi_readcapacity16_sync(ctx_, lun_);
  if (task == nullptr || task->status != SCSI_STATUS_GOOD) {
    std::string why = task == nullptr ? LastError(ctx_) : DescribeFailure(ctx_, task->status, task);
    if (task != nullptr) scsi_free_scsi_task(task);
    return RunError{"connect", "READ CAPACITY 16 failed: " + why, {}};
  }
  auto* rc16 = static_cast<scsi_readcapacity16*>(scsi_datain_unmarshall(task));
  if (rc16 == nullptr) {
    scsi_free_scsi_task(task);
    return RunError{"connect", "cannot decode READ CAPACITY 16 data", {}};
  }
  lun_block_size_ = rc16->block_length;
  capacity_bytes_ = (rc16->returned_lba + 1) * static_cast<uint64_t>(rc16->block_length);
  scsi_free_scsi_task(task);
  lun->block_size = lun_block_size_;
  lun->capacity_bytes = capacity_bytes_;
  return std::nullopt;
}

bool IscsiRunner::submit(Slot& slot, const Op& op) {
  slot.op = op;
  const uint64_t lba = op.chunk * options_.block_bytes / lun_block_size_;
  const auto len = static_cast<uint32_t>(options_.block_bytes);
  scsi_task* task = nullptr;
  if (op.is_write) {
    pattern_->fill(slot.buffer, rng_);
    StampBlocks(slot.buffer, lun_block_size_, lba, op.generation, options_.verify);
    slot.start = Clock::now();
    task = iscsi_write16_iov_task(ctx_, lun_, lba, nullptr, len, static_cast<int>(lun_block_size_),
                                  0, 0, 0, 0, 0, &IscsiRunner::on_complete, &slot, &slot.iov, 1);
  } else {
    slot.start = Clock::now();
    task = iscsi_read16_iov_task(ctx_, lun_, lba, len, static_cast<int>(lun_block_size_), 0, 0, 0,
                                 0, 0, &IscsiRunner::on_complete, &slot, &slot.iov, 1);
  }
  if (task == nullptr) {
    error_ = RunError{"io", std::string("cannot queue command: ") + LastError(ctx_), lba};
    gen_->complete(op, false);
    return false;
  }
  ++in_flight_;
  return true;
}

void IscsiRunner::on_complete(iscsi_context* /*ctx*/, int status, void* command_data,
                              void* private_data) {
  auto* slot = static_cast<Slot*>(private_data);
  slot->owner->complete(*slot, status, static_cast<scsi_task*>(command_data));
}

void IscsiRunner::complete(Slot& slot, int status, scsi_task* task) {
  const Clock::time_point now = Clock::now();
  --in_flight_;
  if (gen_ == nullptr) {
    // Cancelled by iscsi_destroy_context() after the run gave up on it.
    if (task != nullptr) scsi_free_scsi_task(task);
    return;
  }
  free_slots_.push_back(&slot);
  const Op op = slot.op;
  const uint64_t lba = op.chunk * options_.block_bytes / lun_block_size_;
  bool ok = status == SCSI_STATUS_GOOD;
  if (!ok) {
    if (!error_) {
      error_ = RunError{status == SCSI_STATUS_TIMEOUT ? "timeout" : "io",
                        std::string(op.is_write ? "WRITE16" : "READ16") + " at LBA " +
                            std::to_string(lba) + ": " + DescribeFailure(ctx_, status, task),
                        lba};
    }
  } else if (task != nullptr && task->residual_status != SCSI_RESIDUAL_NO_RESIDUAL &&
             task->residual != 0) {
    ok = false;
    if (!error_) {
      error_ = RunError{"io",
                        std::string(op.is_write ? "WRITE16" : "READ16") + " at LBA " +
                            std::to_string(lba) + ": residual of " +
                            std::to_string(task->residual) + " bytes",
                        lba};
    }
  }
  if (task != nullptr) scsi_free_scsi_task(task);

  if (ok && !op.is_write && options_.verify && stats_ != nullptr) {
    const uint64_t blocks = options_.block_bytes / lun_block_size_;
    if (op.generation == ChunkTracker::kUnknown) {
      stats_->blocks_unverified += blocks;
    } else if (auto bad = VerifyBlocks(slot.buffer, lun_block_size_, lba, op.generation)) {
      ok = false;
      if (!error_) error_ = RunError{"verify", bad->reason, bad->lba};
    } else {
      stats_->blocks_verified += blocks;
    }
  }
  gen_->complete(op, ok);

  if (record_ && !options_.timeline_path.empty()) {
    if (timeline_.size() < kMaxTimeline) {
      timeline_.push_back({slot.start, now, op.is_write, ok});
    } else {
      timeline_dropped_ = true;
    }
  }
  if (ok && record_ && slot.start >= measure_start_ && now <= measure_end_) {
    DirectionStats& d = op.is_write ? stats_->write : stats_->read;
    ++d.ops;
    d.bytes += options_.block_bytes;
    d.latency.record(static_cast<uint64_t>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(now - slot.start).count()));
    last_completion_ = now;
  }
}

std::optional<RunError> IscsiRunner::drive(OpGenerator& gen, uint64_t max_issue, bool record) {
  gen_ = &gen;
  record_ = record;
  uint64_t issued = 0;  // ops issued since measure_start_ (all ops when not recording)
  Clock::time_point last_timeout_tick = Clock::now();
  while (true) {
    const Clock::time_point now = Clock::now();
    const bool stop = error_.has_value() || g_stop.load() || now >= measure_end_ ||
                      (max_issue != 0 && issued >= max_issue);
    if (!stop) {
      while (!free_slots_.empty()) {
        std::optional<Op> op = gen.next();
        if (!op) break;
        Slot* slot = free_slots_.back();
        free_slots_.pop_back();
        if (!submit(*slot, *op)) {
          free_slots_.push_back(slot);
          break;
        }
        if (!record || slot->start >= measure_start_) ++issued;
        if (max_issue != 0 && issued >= max_issue) break;
      }
    }
    if (in_flight_ == 0) {
      if (stop || error_) break;
      // Nothing in flight and nothing could be issued: the generator is stuck, which the
      // range checks rule out. Fail rather than spin.
      if (free_slots_.size() == slots_.size()) {
        error_ = RunError{"usage", "no operation could be issued (range too small?)", {}};
        break;
      }
    }
    pollfd pfd{};
    pfd.fd = iscsi_get_fd(ctx_);
    pfd.events = static_cast<short>(iscsi_which_events(ctx_));
    int wait_ms = kMaxPollMs;
    if (!stop && measure_end_ != Clock::time_point::max()) {
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(measure_end_ - now).count() + 1;
      wait_ms = static_cast<int>(std::clamp<int64_t>(left, 0, kMaxPollMs));
    }
    if (pfd.events == 0) {
      // libiscsi asks for nothing while it is (re)connecting; it wants a later retry.
      ::poll(nullptr, 0, wait_ms);
    } else {
      const int n = ::poll(&pfd, 1, wait_ms);
      if (n < 0 && errno != EINTR) {
        error_ = RunError{"io", std::string("poll: ") + std::strerror(errno), {}};
        break;
      }
      if (n > 0 && iscsi_service(ctx_, pfd.revents) < 0) {
        if (!error_) error_ = RunError{"io", std::string("connection: ") + LastError(ctx_), {}};
        break;
      }
    }
    if (Clock::now() - last_timeout_tick >= std::chrono::seconds(1)) {
      // Lets libiscsi expire commands that exceeded --timeout.
      last_timeout_tick = Clock::now();
      if (iscsi_service(ctx_, 0) < 0 && !error_) {
        error_ = RunError{"io", std::string("connection: ") + LastError(ctx_), {}};
        break;
      }
    }
  }
  gen_ = nullptr;
  return error_;
}

std::optional<RunError> IscsiRunner::run(RunStats* stats) {
  stats_ = stats;
  const uint64_t chunks = ChunkCount(options_, capacity_bytes_);
  if (options_.verify) tracker_ = std::make_unique<ChunkTracker>(chunks);
  pattern_ = std::make_unique<PatternSource>(options_.pattern, options_.seed,
                                             static_cast<size_t>(options_.block_bytes));
  for (int i = 0; i < options_.queue_depth; ++i) {
    auto slot = std::make_unique<Slot>();
    slot->owner = this;
    slot->buffer.resize(options_.block_bytes);
    slot->iov.iov_base = slot->buffer.data();
    slot->iov.iov_len = slot->buffer.size();
    free_slots_.push_back(slot.get());
    slots_.push_back(std::move(slot));
  }

  if (options_.prefill) {
    OpGenerator prefill(RwMode::kWrite, 0, chunks, options_.seed, tracker_.get());
    const Clock::time_point t0 = Clock::now();
    measure_start_ = t0;
    measure_end_ = Clock::time_point::max();
    if (auto err = drive(prefill, chunks, /*record=*/false)) return err;
    stats->prefill_ops = chunks;
    stats->prefill_seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  }

  OpGenerator gen(options_.rw, options_.read_percent, chunks, options_.seed + 1, tracker_.get());
  const Clock::time_point t0 = Clock::now();
  measure_start_ = t0 + std::chrono::duration_cast<Clock::duration>(
                            std::chrono::duration<double>(options_.warmup_seconds));
  if (options_.ops > 0) {
    measure_end_ = Clock::time_point::max();
  } else {
    measure_end_ = measure_start_ + std::chrono::duration_cast<Clock::duration>(
                                        std::chrono::duration<double>(options_.seconds));
  }
  last_completion_ = measure_start_;
  auto err = drive(gen, options_.ops, /*record=*/true);
  const Clock::time_point end = options_.ops > 0 || err || g_stop.load()
                                    ? std::min(last_completion_, Clock::now())
                                    : measure_end_;
  stats->seconds = std::max(0.0, std::chrono::duration<double>(end - measure_start_).count());
  return err;
}

std::optional<std::string> IscsiRunner::write_timeline() const {
  if (options_.timeline_path.empty()) return std::nullopt;
  std::FILE* f = std::fopen(options_.timeline_path.c_str(), "w");
  if (f == nullptr) return "--timeline " + options_.timeline_path + ": " + std::strerror(errno);
  // steady_clock is CLOCK_MONOTONIC on Linux, so these seconds compare with other processes'
  // monotonic clocks (a script that records when it killed a server, for instance).
  auto secs = [](Clock::time_point t) {
    return std::chrono::duration<double>(t.time_since_epoch()).count();
  };
  std::fprintf(f, "# CLOCK_MONOTONIC seconds: issued completed r|w ok|fail%s\n",
               timeline_dropped_ ? " (truncated)" : "");
  for (const TimelineEntry& e : timeline_) {
    std::fprintf(f, "%.6f %.6f %c %s\n", secs(e.issued), secs(e.completed), e.is_write ? 'w' : 'r',
                 e.ok ? "ok" : "fail");
  }
  if (std::fclose(f) != 0) return "--timeline " + options_.timeline_path + ": write failed";
  return std::nullopt;
}

}  // namespace tandem::bench
