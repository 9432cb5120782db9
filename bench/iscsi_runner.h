// IscsiRunner: one libiscsi session (async API) driven by a poll() loop on this thread. It
// connects and logs in, learns the LUN's geometry (READ CAPACITY 16), then keeps --qd
// READ16/WRITE16 commands in flight until the run ends. Owns the libiscsi context and every
// I/O buffer; not thread-safe. Callbacks run inside iscsi_service() on this thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "bench/options.h"
#include "bench/pattern.h"
#include "bench/report.h"
#include "bench/workload.h"

struct iscsi_context;
struct scsi_task;

namespace tandem::bench {

class IscsiRunner {
 public:
  explicit IscsiRunner(const Options& options);
  ~IscsiRunner();
  IscsiRunner(const IscsiRunner&) = delete;
  IscsiRunner& operator=(const IscsiRunner&) = delete;

  // Login and READ CAPACITY 16. Fills lun even on error (as far as it got).
  [[nodiscard]] std::optional<RunError> connect(LunInfo* lun);
  // Prefill (if asked), warm-up, then the measured window. Call after connect() and after
  // CheckAgainstLun() accepted the options.
  [[nodiscard]] std::optional<RunError> run(RunStats* stats);
  // Writes the --timeline file (if asked): one line per command completed in run(), in
  // completion order. Returns an error message or nullopt.
  [[nodiscard]] std::optional<std::string> write_timeline() const;
  // Ends the run early (e.g. from a SIGINT handler's flag): stop issuing, drain, report.
  static void request_stop();

 private:
  using Clock = std::chrono::steady_clock;
  struct Slot;

  // Issues ops from gen while allowed, until everything in flight has completed.
  std::optional<RunError> drive(OpGenerator& gen, uint64_t max_issue, bool record);
  bool submit(Slot& slot, const Op& op);
  static void on_complete(iscsi_context* ctx, int status, void* command_data, void* private_data);
  void complete(Slot& slot, int status, scsi_task* task);

  Options options_;
  iscsi_context* ctx_ = nullptr;
  bool logged_in_ = false;
  int lun_ = 0;
  uint32_t lun_block_size_ = 0;
  uint64_t capacity_bytes_ = 0;

  std::vector<std::unique_ptr<Slot>> slots_;
  std::vector<Slot*> free_slots_;
  int in_flight_ = 0;
  std::unique_ptr<ChunkTracker> tracker_;
  std::unique_ptr<PatternSource> pattern_;
  Rng rng_;

  // The current drive() call's window; completions are recorded when they started at or
  // after measure_start_ and finished by measure_end_.
  bool record_ = false;
  Clock::time_point measure_start_;
  Clock::time_point measure_end_;
  Clock::time_point last_completion_;
  // --timeline: every completion of run() (not the prefill), bounded by kMaxTimeline.
  struct TimelineEntry {
    Clock::time_point issued;
    Clock::time_point completed;
    bool is_write;
    bool ok;
  };
  std::vector<TimelineEntry> timeline_;
  bool timeline_dropped_ = false;
  OpGenerator* gen_ = nullptr;
  RunStats* stats_ = nullptr;
  std::optional<RunError> error_;
};

}  // namespace tandem::bench
