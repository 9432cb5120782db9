#include "bench/options.h"

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cctype>
#include <charconv>
#include <sstream>

namespace tandem::bench {
namespace {

// Verify keeps 9 bytes per chunk in memory; 64 Mi chunks is ~600 MB, which is plenty.
constexpr uint64_t kMaxVerifyChunks = uint64_t{64} << 20;

std::string Lower(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

}  // namespace

std::optional<uint64_t> ParseSize(std::string_view text) {
  uint64_t value = 0;
  const char* begin = text.data();
  const char* end = text.data() + text.size();
  auto [ptr, ec] = std::from_chars(begin, end, value);
  if (ec != std::errc() || ptr == begin) return std::nullopt;
  const std::string unit = Lower(std::string_view(ptr, end - ptr));
  uint64_t mult = 1;
  if (unit.empty() || unit == "b") {
    mult = 1;
  } else if (unit == "k" || unit == "kib") {
    mult = uint64_t{1} << 10;
  } else if (unit == "m" || unit == "mib") {
    mult = uint64_t{1} << 20;
  } else if (unit == "g" || unit == "gib") {
    mult = uint64_t{1} << 30;
  } else if (unit == "t" || unit == "tib") {
    mult = uint64_t{1} << 40;
  } else if (unit == "kb") {
    mult = 1000;
  } else if (unit == "mb") {
    mult = 1000 * 1000;
  } else if (unit == "gb") {
    mult = 1000 * 1000 * 1000;
  } else if (unit == "tb") {
    mult = uint64_t{1000} * 1000 * 1000 * 1000;
  } else {
    return std::nullopt;
  }
  if (value != 0 && mult > UINT64_MAX / value) return std::nullopt;
  return value * mult;
}

ParseOutcome ParseOptions(const std::vector<std::string>& args) {
  Options o;
  std::string bs = "4k", rw = "randread", pattern = "random", range = "0";
  CLI::App app{"tandem-bench: iSCSI load generator (libiscsi); prints one JSON object"};
  app.name(args.empty() ? "tandem-bench" : args[0]);
  app.add_option("--url", o.url, "iscsi://host[:port]/target-iqn/lun")->required();
  app.add_option("--bs", bs, "I/O size (4k, 64k, 1m, ...)")->capture_default_str();
  app.add_option("--qd", o.queue_depth, "commands in flight (1-1024)")->capture_default_str();
  app.add_option("--rw", rw, "read|write (sequential), randread|randwrite|mix (random)")
      ->capture_default_str();
  app.add_option("--mix", o.read_percent, "read percentage for --rw mix (0-100)")
      ->capture_default_str();
  auto* secs = app.add_option("--seconds", o.seconds, "measured duration")->capture_default_str();
  auto* ops = app.add_option("--ops", o.ops, "measured operation count instead of a duration");
  secs->excludes(ops);
  app.add_option("--pattern", pattern, "write data: random | compressible:R (R:1, e.g. 2)")
      ->capture_default_str();
  app.add_flag("--verify", o.verify,
               "stamp writes with LBA + generation and check every block read");
  app.add_option("--range", range, "bytes of the LUN to use from LBA 0 (0: all)")
      ->capture_default_str();
  app.add_option("--warmup", o.warmup_seconds, "seconds run before measuring")
      ->capture_default_str();
  app.add_flag("--prefill", o.prefill, "write the whole range once (sequentially) first");
  app.add_option("--initiator-name", o.initiator_name, "our iSCSI initiator name")
      ->capture_default_str();
  app.add_option("--seed", o.seed, "workload seed (same seed, same offsets)")
      ->capture_default_str();
  app.add_option("--timeout", o.timeout_seconds, "seconds before a command counts as failed")
      ->capture_default_str();
  app.add_option("--timeline", o.timeline_path,
                 "write each completed command (monotonic issue/complete seconds) to this file");

  std::vector<std::string> rest(args.size() > 1 ? args.begin() + 1 : args.end(), args.end());
  std::reverse(rest.begin(), rest.end());  // CLI11 takes the vector reversed
  ParseOutcome out;
  try {
    app.parse(rest);
  } catch (const CLI::CallForHelp&) {
    out.exit_code = kExitOk;
    out.message = app.help();
    return out;
  } catch (const CLI::ParseError& e) {
    out.exit_code = kExitUsage;
    out.message = e.what();
    return out;
  }

  auto fail = [&](std::string msg) {
    out.exit_code = kExitUsage;
    out.message = std::move(msg);
    return out;
  };
  const auto bs_value = ParseSize(bs);
  if (!bs_value || *bs_value == 0 || *bs_value % 512 != 0 || *bs_value > (uint64_t{64} << 20)) {
    return fail("--bs: a multiple of 512 bytes up to 64 MiB, got '" + bs + "'");
  }
  o.block_bytes = *bs_value;
  const auto mode = ParseRwMode(rw);
  if (!mode) return fail("--rw: read, write, randread, randwrite or mix, got '" + rw + "'");
  o.rw = *mode;
  const auto spec = ParsePattern(pattern);
  if (!spec) return fail("--pattern: random or compressible:R with R >= 1, got '" + pattern + "'");
  o.pattern = *spec;
  const auto range_value = ParseSize(range);
  if (!range_value) return fail("--range: a size, got '" + range + "'");
  o.range_bytes = *range_value;
  if (o.range_bytes != 0 && o.range_bytes < o.block_bytes) {
    return fail("--range must be at least --bs");
  }
  if (o.queue_depth < 1 || o.queue_depth > 1024) return fail("--qd: 1 to 1024");
  if (o.read_percent < 0 || o.read_percent > 100) return fail("--mix: 0 to 100");
  if (!(o.seconds > 0) && o.ops == 0) return fail("--seconds must be > 0");
  if (!(o.warmup_seconds >= 0)) return fail("--warmup must be >= 0");
  if (o.timeout_seconds < 0) return fail("--timeout must be >= 0");
  if (o.rw != RwMode::kMix && app.count("--mix") > 0) return fail("--mix needs --rw mix");
  if (o.url.rfind("iscsi://", 0) != 0) return fail("--url must start with iscsi://");
  out.options = o;
  return out;
}

uint64_t ChunkCount(const Options& o, uint64_t capacity_bytes) {
  const uint64_t range = o.range_bytes == 0 ? capacity_bytes : o.range_bytes;
  return range / o.block_bytes;
}

std::optional<std::string> CheckAgainstLun(const Options& o, uint32_t block_size,
                                           uint64_t capacity_bytes) {
  std::ostringstream err;
  if (block_size < kStampBytes || o.block_bytes % block_size != 0) {
    err << "--bs " << o.block_bytes << " is not a multiple of the LUN's block size " << block_size;
    return err.str();
  }
  if (o.range_bytes > capacity_bytes) {
    err << "--range " << o.range_bytes << " exceeds the LUN's capacity " << capacity_bytes;
    return err.str();
  }
  const uint64_t chunks = ChunkCount(o, capacity_bytes);
  if (chunks == 0) {
    err << "the LUN (" << capacity_bytes << " bytes) is smaller than --bs";
    return err.str();
  }
  if (o.verify && chunks < 2 * static_cast<uint64_t>(o.queue_depth)) {
    err << "--verify needs a range of at least 2 x --qd chunks of --bs (have " << chunks << ")";
    return err.str();
  }
  if (o.verify && chunks > kMaxVerifyChunks) {
    err << "--verify tracks every chunk in memory: use --range to stay under " << kMaxVerifyChunks
        << " chunks (have " << chunks << ")";
    return err.str();
  }
  return std::nullopt;
}

std::string RedactUrl(std::string_view url) {
  const size_t scheme = url.find("://");
  const size_t at = url.find('@');
  if (scheme == std::string_view::npos || at == std::string_view::npos) return std::string(url);
  const size_t start = scheme + 3;
  const std::string_view creds = url.substr(start, at - start);
  const size_t pct = creds.find('%');
  if (pct == std::string_view::npos) return std::string(url);
  return std::string(url.substr(0, start + pct)) + "%***" + std::string(url.substr(at));
}

}  // namespace tandem::bench
