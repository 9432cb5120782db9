// Test harness for the SCSI unit tests: a LogicalUnit over a FakeVolume, CDB builders and
// sense-data matchers. Single-threaded; every command completes before run() returns.
#pragma once

#include <gtest/gtest.h>

#include <cstring>
#include <initializer_list>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "target/scsi/cdb.h"
#include "target/scsi/logical_unit.h"
#include "target/scsi/sense.h"
#include "tests/unit/target_scsi/fake_volume.h"

namespace tandem::target::scsi::testing {

inline constexpr char kUuid[] = "6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b";
inline constexpr char kPortA[] = "iqn.2024-01.org.example:a,i,0x23d000000001";
inline constexpr char kPortB[] = "iqn.2024-01.org.example:b,i,0x23d000000002";

inline std::vector<std::byte> bytes_of(std::initializer_list<uint8_t> v) {
  std::vector<std::byte> out;
  for (uint8_t b : v) out.push_back(static_cast<std::byte>(b));
  return out;
}

inline std::vector<std::byte> pattern(size_t n, uint8_t seed) {
  std::vector<std::byte> out(n);
  for (size_t i = 0; i < n; ++i)
    out[i] = static_cast<std::byte>(static_cast<uint8_t>(seed + i * 7));
  return out;
}

inline std::vector<uint8_t> u8(const std::vector<std::byte>& v) {
  std::vector<uint8_t> out(v.size());
  std::memcpy(out.data(), v.data(), v.size());
  return out;
}

// CDB builders.
inline Cdb cdb_of(std::initializer_list<uint8_t> v) {
  Cdb c{};
  size_t i = 0;
  for (uint8_t b : v) c[i++] = b;
  return c;
}
inline Cdb rw10(uint8_t opcode, uint32_t lba, uint16_t blocks, uint8_t flags = 0) {
  Cdb c{};
  c[0] = opcode;
  c[1] = flags;
  put_be32(&c[2], lba);
  put_be16(&c[7], blocks);
  return c;
}
inline Cdb rw12(uint8_t opcode, uint32_t lba, uint32_t blocks, uint8_t flags = 0) {
  Cdb c{};
  c[0] = opcode;
  c[1] = flags;
  put_be32(&c[2], lba);
  put_be32(&c[6], blocks);
  return c;
}
inline Cdb rw16(uint8_t opcode, uint64_t lba, uint32_t blocks, uint8_t flags = 0) {
  Cdb c{};
  c[0] = opcode;
  c[1] = flags;
  put_be64(&c[2], lba);
  put_be32(&c[10], blocks);
  return c;
}
inline Cdb rw6(uint8_t opcode, uint32_t lba, uint8_t blocks) {
  Cdb c{};
  c[0] = opcode;
  c[1] = static_cast<uint8_t>((lba >> 16) & 0x1F);
  c[2] = static_cast<uint8_t>(lba >> 8);
  c[3] = static_cast<uint8_t>(lba);
  c[4] = blocks;
  return c;
}

class ScsiTest : public ::testing::Test {
 public:
  static constexpr uint32_t kBlockSize = 512;
  static constexpr uint64_t kBlocks = 2048;

 protected:
  ScsiTest() { make_lu(); }

  void make_lu(uint64_t blocks = kBlocks) {
    volume_ = std::make_shared<FakeVolume>(kUuid, kBlockSize, blocks);
    store_ = std::make_shared<MemoryPrStore>();
    lu_ = std::make_unique<LogicalUnit>(volume_, store_);
  }

  ScsiResult run(const Cdb& cdb, std::vector<std::byte> data_out = {},
                 uint32_t expected_in = 1u << 24, const std::string& port = kPortA,
                 uint64_t lun = 0, uint16_t rtp = 1) {
    auto task = std::make_shared<ScsiTask>();
    task->cdb = cdb;
    task->lun = lun;
    task->initiator_port = port;
    task->relative_target_port = rtp;
    task->data_out = std::move(data_out);
    task->expected_in_length = expected_in;
    std::optional<ScsiResult> out;
    int calls = 0;
    lu_->execute(task, [&](ScsiResult r) {
      out = std::move(r);
      ++calls;
    });
    volume_->run_pending();
    EXPECT_EQ(calls, 1) << "done must run exactly once";
    return out.value_or(ScsiResult{});
  }

  std::shared_ptr<FakeVolume> volume_;
  std::shared_ptr<MemoryPrStore> store_;
  std::unique_ptr<LogicalUnit> lu_;
};

inline ::testing::AssertionResult HasSense(const ScsiResult& r, SenseKey key, Asc asc) {
  if (r.status != Status::kCheckCondition) {
    return ::testing::AssertionFailure()
           << "status " << static_cast<int>(r.status) << " is not CHECK CONDITION";
  }
  if (r.sense.size() != kFixedSenseLength) {
    return ::testing::AssertionFailure() << "sense length " << r.sense.size();
  }
  if ((r.sense[2] & 0x0F) != static_cast<uint8_t>(key) || r.sense[12] != asc.asc ||
      r.sense[13] != asc.ascq) {
    return ::testing::AssertionFailure()
           << std::hex << "sense key 0x" << int(r.sense[2] & 0x0F) << " asc 0x" << int(r.sense[12])
           << "/0x" << int(r.sense[13]);
  }
  return ::testing::AssertionSuccess();
}

inline ::testing::AssertionResult IsGood(const ScsiResult& r) {
  if (r.status != Status::kGood) {
    auto f = ::testing::AssertionFailure() << "status 0x" << std::hex << static_cast<int>(r.status);
    if (r.sense.size() >= 14)
      f << " sense " << int(r.sense[2]) << " " << int(r.sense[12]) << "/" << int(r.sense[13]);
    return f;
  }
  if (!r.sense.empty()) return ::testing::AssertionFailure() << "sense with GOOD status";
  return ::testing::AssertionSuccess();
}

inline bool IsIllegal(const ScsiResult& r, Asc asc) {
  return HasSense(r, SenseKey::kIllegalRequest, asc);
}

}  // namespace tandem::target::scsi::testing
