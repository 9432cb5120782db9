// Randomised CDBs and Data-Out against the LogicalUnit: it must answer every command
// exactly once, never overrun Data-In, and always return well-formed sense. Seeded, bounded;
// a failure prints the seed and iteration so it replays.
#include <gtest/gtest.h>

#include <random>

#include "tests/unit/target_scsi/scsi_test_util.h"

namespace tandem::target::scsi::testing {
namespace {

bool valid_status(Status s) {
  switch (s) {
    case Status::kGood:
    case Status::kCheckCondition:
    case Status::kConditionMet:
    case Status::kReservationConflict:
      return true;
    default:
      return false;
  }
}

void fuzz(uint32_t seed, int iterations) {
  std::mt19937_64 rng(seed);
  auto volume = std::make_shared<FakeVolume>(kUuid, 512, 4096);
  auto lu = std::make_unique<LogicalUnit>(volume);
  const auto& ops = LogicalUnit::ops();
  const std::string ports[] = {kPortA, kPortB, "x", ""};
  for (int it = 0; it < iterations; ++it) {
    SCOPED_TRACE("seed " + std::to_string(seed) + " iteration " + std::to_string(it));
    auto task = std::make_shared<ScsiTask>();
    for (auto& b : task->cdb) b = static_cast<uint8_t>(rng());
    const int mode = static_cast<int>(rng() % 10);
    if (mode < 7) {
      // Mostly supported opcodes, so handlers (not just the default) get exercised.
      const auto& e = ops[rng() % ops.size()];
      task->cdb[0] = e.opcode;
      if (e.service_action >= 0)
        task->cdb[1] = static_cast<uint8_t>((task->cdb[1] & 0xE0) | e.service_action);
      if (rng() % 2) {
        // Small LBAs and lengths so the command gets past the range checks.
        switch (cdb_length(e.opcode)) {
          case 10:
            task->cdb[2] = task->cdb[3] = task->cdb[4] = 0;
            task->cdb[7] = 0;
            break;
          case 12:
            task->cdb[2] = task->cdb[3] = task->cdb[4] = 0;
            task->cdb[6] = task->cdb[7] = task->cdb[8] = 0;
            break;
          case 16:
            for (int i = 2; i < 9; ++i) task->cdb[i] = 0;
            task->cdb[10] = task->cdb[11] = task->cdb[12] = 0;
            break;
          default:
            break;
        }
      }
    }
    if (mode == 9) volume->set_state(static_cast<core::VolumeState>(rng() % 5));
    size_t out_len = 0;
    switch (rng() % 4) {
      case 0:
        out_len = 0;
        break;
      case 1:
        out_len = rng() % 64;
        break;
      case 2:
        out_len = rng() % 4096;
        break;
      default:
        out_len = (rng() % 600) * 512 + (rng() % 3);
        break;
    }
    task->data_out.resize(out_len);
    for (auto& b : task->data_out) b = static_cast<std::byte>(rng());
    task->expected_in_length =
        static_cast<uint32_t>(rng() % 3 == 0 ? rng() % 64 : rng() % (1u << 20));
    task->initiator_port = ports[rng() % 4];
    task->relative_target_port = static_cast<uint16_t>(rng() % 3);
    task->lun = rng() % 8 == 0 ? 1 : 0;
    volume->set_async(rng() % 4 == 0);

    int calls = 0;
    ScsiResult result;
    lu->execute(task, [&](ScsiResult r) {
      ++calls;
      result = std::move(r);
    });
    volume->run_pending();
    ASSERT_EQ(calls, 1);
    ASSERT_TRUE(valid_status(result.status));
    ASSERT_LE(result.data_in.size(), task->expected_in_length);
    if (result.status == Status::kCheckCondition) {
      ASSERT_EQ(result.sense.size(), kFixedSenseLength);
      ASSERT_EQ(result.sense[0] & 0x7F, 0x70);
      ASSERT_EQ(result.sense[7], 10);
    } else {
      ASSERT_TRUE(result.sense.empty());
    }
    if (rng() % 500 == 0) lu->reset(task->initiator_port);
    if (rng() % 500 == 0) lu->nexus_lost(task->initiator_port);
  }
  volume->set_state(core::VolumeState::kHealthy);
}

TEST(FuzzCdb, NeverCrashesAndAlwaysAnswers) {
  for (uint32_t seed : {1u, 2u, 3u, 0xC0FFEEu}) fuzz(seed, 3000);
}

}  // namespace
}  // namespace tandem::target::scsi::testing
