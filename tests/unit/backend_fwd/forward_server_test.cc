// ForwardServer::handle driven directly (no TLS): seeded random request headers and payload
// sizes onto a real FileVolume; every request must get exactly one well-formed reply.
#include "backend/fwd/forward_server.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "backend/store/file_volume.h"
#include "backend/store/io_pool.h"
#include "tests/unit/backend_fwd/fwd_test_util.h"
#include "tests/unit/backend_transport/test_pki.h"

namespace tandem::backend::fwd {
namespace {

using namespace fwd::testing;

// Seeded random requests straight into ForwardServer::handle: every one gets exactly one
// well-formed reply for its id, with a status the forwarder understands. A failing seed replays.
TEST(ForwardServer, SeededRandomRequestsAlwaysGetOneWellFormedReply) {
  transport::testing::TempDir dir;
  const auto path = (dir.path() / "random.img").string();
  std::ofstream(path).close();
  std::filesystem::resize_file(path, kBlocks * kBs);
  IoPool pool(2);
  auto file = FileVolume::open(path, kUuid, kBs, pool);
  ASSERT_TRUE(file);
  ForwardServer server([&](const std::string& uuid) -> std::shared_ptr<core::BlockVolume> {
    return uuid == kUuid ? file : nullptr;
  });
  auto conn = std::make_shared<FakeConnection>();
  wire::Uuid vol;
  ASSERT_TRUE(wire::parse_uuid(kUuid, vol));
  const uint64_t seed = 20261126;
  std::mt19937_64 rng(seed);
  constexpr size_t kN = 3000;
  for (size_t i = 0; i < kN; ++i) {
    wire::FrameHeader h;
    h.type = wire::FrameType::kIoRequest;
    h.volume = vol;
    if (rng() % 16 == 0) h.volume[rng() % 16] ^= 1;  // some other volume
    h.sequence = i;
    h.status = uint32_t(rng() % 9);  // 0..8: valid ops and junk
    h.flags = rng() % 2 ? wire::kFlagFua : 0;
    const uint64_t pick[] = {0, 1, 2, 7, kBlocks - 1, kBlocks, kBlocks + 1, ~0ull, 1ull << 63,
                             uint64_t(rng() % kBlocks)};
    h.lba = pick[rng() % 10];
    h.count = pick[rng() % 10];
    const size_t sizes[] = {0, 1, kBs - 1, kBs, kBs + 1, 2 * kBs, size_t(h.count % 64) * kBs,
                            2 * size_t(h.count % 64) * kBs};
    std::vector<uint8_t> payload(sizes[rng() % 8], uint8_t(i));
    server.handle(conn, h, std::move(payload));
  }
  std::unique_lock lock(conn->mu);
  ASSERT_TRUE(conn->cv.wait_for(lock, kWait, [&] { return conn->replies.size() >= kN; }))
      << "seed " << seed << ": " << conn->replies.size() << " replies";
  EXPECT_EQ(conn->bad, 0u);
  std::vector<int> seen(kN, 0);
  for (const auto& f : conn->replies) {
    ASSERT_EQ(f.header.type, wire::FrameType::kIoReply);
    ASSERT_LT(f.header.sequence, kN);
    ++seen[f.header.sequence];
    EXPECT_LE(f.header.status, uint32_t(IoStatus::kNoSpace));
  }
  for (size_t i = 0; i < kN; ++i) EXPECT_EQ(seen[i], 1) << "request " << i << ", seed " << seed;
  EXPECT_GT(server.stats().malformed.load(), 0u);
  EXPECT_GT(server.stats().unknown_volume.load(), 0u);
}

}  // namespace
}  // namespace tandem::backend::fwd
