// tandem-bench: an iSCSI load generator on libiscsi's asynchronous API. Prints one JSON
// object on stdout (see bench/README.md); exit 0 ok, 1 I/O or verify error, 2 usage.
#include <csignal>
#include <iostream>
#include <string>
#include <vector>

#include "bench/iscsi_runner.h"
#include "bench/options.h"
#include "bench/report.h"

namespace {

extern "C" void OnSignal(int) { tandem::bench::IscsiRunner::request_stop(); }

}  // namespace

int main(int argc, char** argv) {
  using namespace tandem::bench;
  std::vector<std::string> args(argv, argv + argc);
  ParseOutcome parsed = ParseOptions(args);
  if (!parsed.options) {
    if (parsed.exit_code == kExitOk) {
      std::cout << parsed.message;
    } else {
      std::cerr << "tandem-bench: " << parsed.message << "\nRun with --help for more.\n";
    }
    return parsed.exit_code;
  }
  const Options& o = *parsed.options;
  std::signal(SIGPIPE, SIG_IGN);
  std::signal(SIGINT, OnSignal);
  std::signal(SIGTERM, OnSignal);

  LunInfo lun;
  RunStats stats;
  std::optional<RunError> error;
  {
    IscsiRunner runner(o);
    error = runner.connect(&lun);
    if (!error) {
      if (auto bad = CheckAgainstLun(o, lun.block_size, lun.capacity_bytes)) {
        error = RunError{"usage", *bad, {}};
      } else {
        error = runner.run(&stats);
      }
      if (auto bad = runner.write_timeline(); bad && !error) error = RunError{"io", *bad, {}};
    }
  }
  std::cout << BuildReport(o, lun, stats, error).dump() << std::endl;
  if (!error) return kExitOk;
  std::cerr << "tandem-bench: " << error->kind << " error";
  if (error->lba) std::cerr << " at LBA " << *error->lba;
  std::cerr << ": " << error->message << "\n";
  return error->kind == "usage" ? kExitUsage : kExitIoError;
}
