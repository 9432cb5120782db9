// crc32c-bench: GB/s of core::crc32c's paths (slicing-by-8, one SSE4.2 stream, three
// interleaved streams) on a buffer of each size given (default 4 KiB, 64 KiB, 1 MiB), warm in
// cache. A micro benchmark run by hand; nothing asserts its timings.
//   crc32c-bench [bytes...]
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include "core/crc32c.h"

namespace {

using Fn = uint32_t (*)(const uint8_t*, size_t, uint32_t);

// Best of five runs of ~0.2 s each, in GB/s (10^9 bytes per second).
double gbps(Fn fn, const std::vector<uint8_t>& buf, uint32_t& sink) {
  double best = 0;
  for (int run = 0; run < 5; ++run) {
    size_t bytes = 0;
    const auto start = std::chrono::steady_clock::now();
    std::chrono::duration<double> took{};
    do {
      for (int i = 0; i < 16; ++i) sink ^= fn(buf.data(), buf.size(), sink);
      bytes += 16 * buf.size();
      took = std::chrono::steady_clock::now() - start;
    } while (took.count() < 0.2);
    best = std::max(best, double(bytes) / took.count() / 1e9);
  }
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  namespace d = tandem::core::crc32c_detail;
  std::vector<size_t> sizes;
  for (int i = 1; i < argc; ++i) sizes.push_back(std::strtoull(argv[i], nullptr, 10));
  if (sizes.empty()) sizes = {4096, 65536, 1u << 20};
  std::mt19937_64 rng(1);
  uint32_t sink = 0;
  std::printf("%10s %12s %12s %12s\n", "bytes", "software", "sse4.2 x1", "sse4.2 x3");
  for (size_t size : sizes) {
    std::vector<uint8_t> buf(size);
    for (auto& b : buf) b = uint8_t(rng());
    std::printf("%10zu %10.2f/s", size, gbps(&d::software, buf, sink));
    if (d::hardware_available()) {
      std::printf(" %10.2f/s %10.2f/s", gbps(&d::hardware_one_stream, buf, sink),
                  gbps(&d::hardware, buf, sink));
    }
    std::printf("   (GB/s)\n");
  }
  return sink == 0x12345678u ? 1 : 0;  // keeps the checks from being optimised away
}
