// SPC-2 RESERVE/RELEASE and SPC-4 persistent reservations across several I_T nexuses.
#include <gtest/gtest.h>

#include "tests/unit/target_scsi/scsi_test_util.h"

namespace tandem::target::scsi::testing {
namespace {

constexpr char kPortC[] = "iqn.2024-01.org.example:c,i,0x23d000000003";
constexpr uint8_t kRegister = 0, kReserve = 1, kRelease = 2, kClear = 3, kPreempt = 4,
                  kPreemptAbort = 5, kRegisterIgnore = 6;
constexpr uint8_t kWe = 1, kEa = 3, kWeRo = 5, kEaRo = 6, kWeAr = 7, kEaAr = 8;

class PrTest : public ScsiTest {
 protected:
  ScsiResult pr_out(const std::string& port, uint8_t sa, uint64_t key, uint64_t sark,
                    uint8_t type = 0, uint8_t flags = 0, uint32_t list_len = 24, uint16_t rtp = 1) {
    Cdb c = cdb_of({0x5F, sa, type});
    put_be32(&c[5], list_len);
    std::vector<uint8_t> p(24, 0);
    put_be64(&p[0], key);
    put_be64(&p[8], sark);
    p[20] = flags;
    std::vector<std::byte> data(p.size());
    std::memcpy(data.data(), p.data(), p.size());
    return run(c, data, 0, port, 0, rtp);
  }
  std::vector<uint8_t> pr_in(uint8_t sa, const std::string& port = kPortA) {
    Cdb c = cdb_of({0x5E, sa});
    put_be16(&c[7], 4096);
    auto r = run(c, {}, 4096, port);
    EXPECT_TRUE(IsGood(r));
    return u8(r.data_in);
  }
  std::vector<uint64_t> keys(uint32_t* generation = nullptr, const std::string& port = kPortA) {
    auto d = pr_in(0, port);
    if (generation) *generation = get_be32(&d[0]);
    std::vector<uint64_t> out;
    for (size_t i = 8; i + 8 <= d.size(); i += 8) out.push_back(get_be64(&d[i]));
    return out;
  }
  ScsiResult read_as(const std::string& port) {
    return run(rw10(op::kRead10, 0, 1), {}, 1u << 16, port);
  }
  ScsiResult write_as(const std::string& port) {
    return run(rw10(op::kWrite10, 0, 1), pattern(kBlockSize, 1), 0, port);
  }
  static bool conflict(const ScsiResult& r) {
    return r.status == Status::kReservationConflict && r.sense.empty();
  }
};

// --- SPC-2 -------------------------------------------------------------------------------

TEST_F(PrTest, Reserve6BlocksOtherInitiators) {
  ASSERT_TRUE(IsGood(run(cdb_of({0x16}), {}, 0, kPortA)));
  EXPECT_TRUE(IsGood(run(cdb_of({0x16}), {}, 0, kPortA)));  // holder may reserve again
  EXPECT_TRUE(conflict(run(cdb_of({0x16}), {}, 0, kPortB)));
  EXPECT_TRUE(conflict(read_as(kPortB)));
  EXPECT_TRUE(conflict(write_as(kPortB)));
  EXPECT_TRUE(conflict(run(cdb_of({0x1A, 0, 0x3F, 0, 255, 0}), {}, 255, kPortB)));  // MODE SENSE
  EXPECT_TRUE(IsGood(run(cdb_of({0x12, 0, 0, 0, 36, 0}), {}, 36, kPortB)));  // INQUIRY passes
  EXPECT_TRUE(IsGood(run(cdb_of({0x17}), {}, 0, kPortB)));  // RELEASE by non-holder: no-op
  EXPECT_TRUE(conflict(read_as(kPortB)));
  EXPECT_TRUE(IsGood(read_as(kPortA)));
  EXPECT_TRUE(IsGood(write_as(kPortA)));
  ASSERT_TRUE(IsGood(run(cdb_of({0x17}), {}, 0, kPortA)));
  EXPECT_TRUE(IsGood(read_as(kPortB)));
}

TEST_F(PrTest, Reserve10AndPrConflicts) {
  ASSERT_TRUE(IsGood(run(cdb_of({0x56, 0, 0, 0, 0, 0, 0, 0, 0, 0}), {}, 0, kPortA)));
  EXPECT_TRUE(conflict(pr_out(kPortB, kRegister, 0, 1)));  // PR OUT while RESERVE(10) is held
  EXPECT_TRUE(
      IsIllegal(run(cdb_of({0x56, 0x10}), {}, 0, kPortA), kAscInvalidFieldInCdb));  // 3RDPTY
  ASSERT_TRUE(IsGood(run(cdb_of({0x57, 0, 0, 0, 0, 0, 0, 0, 0, 0}), {}, 0, kPortA)));
  ASSERT_TRUE(IsGood(pr_out(kPortB, kRegister, 0, 1)));
  // Once PR is in use, RESERVE(6) conflicts (SPC-4 5.9.3).
  EXPECT_TRUE(conflict(run(cdb_of({0x16}), {}, 0, kPortA)));
}

TEST_F(PrTest, ResetAndNexusLossReleaseReserve6) {
  ASSERT_TRUE(IsGood(run(cdb_of({0x16}), {}, 0, kPortA)));
  lu_->reset(kPortB);
  EXPECT_TRUE(HasSense(read_as(kPortB), SenseKey::kUnitAttention, kAscBusDeviceResetOccurred));
  EXPECT_TRUE(IsGood(read_as(kPortB)));
  EXPECT_TRUE(HasSense(read_as(kPortA), SenseKey::kUnitAttention, kAscBusDeviceResetOccurred));
  ASSERT_TRUE(IsGood(run(cdb_of({0x16}), {}, 0, kPortA)));
  lu_->nexus_lost(kPortB);
  EXPECT_TRUE(conflict(read_as(kPortB)));
  lu_->nexus_lost(kPortA);
  EXPECT_TRUE(IsGood(read_as(kPortB)));
}

// --- PERSISTENT RESERVE OUT: registration ---------------------------------------------------

TEST_F(PrTest, RegisterAndReadKeys) {
  uint32_t gen = 99;
  EXPECT_TRUE(keys(&gen).empty());
  EXPECT_EQ(gen, 0u);
  ASSERT_TRUE(IsGood(pr_out(kPortA, kRegister, 0, 0xAAAA)));
  ASSERT_TRUE(IsGood(pr_out(kPortB, kRegisterIgnore, 0x1234, 0xBBBB)));
  EXPECT_EQ(keys(&gen), (std::vector<uint64_t>{0xAAAA, 0xBBBB}));
  EXPECT_EQ(gen, 2u);
  // Wrong current key: conflict, nothing changes (SPC-4 5.9.7).
  EXPECT_TRUE(conflict(pr_out(kPortA, kRegister, 0x1, 0xCCCC)));
  EXPECT_TRUE(conflict(pr_out(kPortC, kRegister, 0x1, 0xCCCC)));
  // Change key, then unregister.
  ASSERT_TRUE(IsGood(pr_out(kPortA, kRegister, 0xAAAA, 0xA2)));
  ASSERT_TRUE(IsGood(pr_out(kPortB, kRegister, 0xBBBB, 0)));
  EXPECT_EQ(keys(&gen), (std::vector<uint64_t>{0xA2}));
  EXPECT_EQ(gen, 4u);
  // Unregistered nexus registering key 0: GOOD, no generation bump.
  ASSERT_TRUE(IsGood(pr_out(kPortC, kRegister, 0, 0)));
  keys(&gen);
  EXPECT_EQ(gen, 4u);
}

TEST_F(PrTest, RegistrationIsPerTargetPortUnlessAllTgPt) {
  ASSERT_TRUE(IsGood(pr_out(kPortA, kRegister, 0, 5, 0, 0, 24, 1)));
  ASSERT_TRUE(IsGood(pr_out(kPortA, kRegister, 0, 6, 0, 0, 24, 2)));  // other target port
  EXPECT_EQ(keys().size(), 2u);
  ASSERT_TRUE(IsGood(pr_out(kPortB, kRegister, 0, 7, 0, 0x04, 24, 1)));  // ALL_TG_PT
  ASSERT_TRUE(IsGood(pr_out(kPortB, kRegister, 7, 8, 0, 0, 24, 3)));     // same registration
  EXPECT_EQ(keys().size(), 3u);
}

TEST_F(PrTest, ParameterListChecks) {
  EXPECT_TRUE(IsIllegal(pr_out(kPortA, kRegister, 0, 1, 0, 0, 23), kAscParameterListLengthError));
  EXPECT_TRUE(IsIllegal(pr_out(kPortA, kRegister, 0, 1, 0, 0, 28), kAscParameterListLengthError));
  EXPECT_TRUE(IsIllegal(pr_out(kPortA, kRegister, 0, 1, 0, 0x08),
                        kAscInvalidFieldInParameterList));  // SPEC_I_PT
  Cdb c = cdb_of({0x5F, 0});
  put_be32(&c[5], 24);
  EXPECT_TRUE(IsIllegal(run(c, pattern(10, 0)), kAscParameterListLengthError));  // short Data-Out
  ASSERT_TRUE(IsGood(pr_out(kPortA, kRegister, 0, 1)));
  EXPECT_TRUE(IsIllegal(pr_out(kPortA, kReserve, 1, 0, 0x02), kAscInvalidFieldInCdb));  // bad type
  EXPECT_TRUE(IsIllegal(pr_out(kPortA, kReserve, 1, 0, 0x11), kAscInvalidFieldInCdb));  // scope
  EXPECT_EQ(keys().size(), 1u);
}

// --- Reservations and conflicts (SPC-4 table 39) ------------------------------------------

TEST_F(PrTest, WriteExclusive) {
  ASSERT_TRUE(IsGood(pr_out(kPortA, kRegister, 0, 1)));
  ASSERT_TRUE(IsGood(pr_out(kPortB, kRegister, 0, 2)));
  ASSERT_TRUE(IsGood(pr_out(kPortA, kReserve, 1, 0, kWe)));
  EXPECT_TRUE(IsGood(pr_out(kPortA, kReserve, 1, 0, kWe)));    // same holder, same type
  EXPECT_TRUE(conflict(pr_out(kPortA, kReserve, 1, 0, kEa)));  // different type
  EXPECT_TRUE(conflict(pr_out(kPortB, kReserve, 2, 0, kWe)));  // not the holder
  EXPECT_TRUE(IsGood(write_as(kPortA)));
  EXPECT_TRUE(IsGood(read_as(kPortB)));
  EXPECT_TRUE(conflict(write_as(kPortB)));
  EXPECT_TRUE(conflict(write_as(kPortC)));
  EXPECT_TRUE(IsGood(read_as(kPortC)));
  EXPECT_TRUE(IsGood(run(Cdb{}, {}, 0, kPortC)));  // TEST UNIT READY is allowed
  EXPECT_TRUE(conflict(run(rw10(op::kSynchronizeCache10, 0, 0), {}, 0, kPortB)));
  auto rr = pr_in(1, kPortC);
  EXPECT_EQ(get_be32(&rr[4]), 16u);
  EXPECT_EQ(get_be64(&rr[8]), 1u);
  EXPECT_EQ(rr[21], kWe);
}

TEST_F(PrTest, ExclusiveAccess) {
  ASSERT_TRUE(IsGood(pr_out(kPortA, kRegister, 0, 1)));
  ASSERT_TRUE(IsGood(pr_out(kPortB, kRegister, 0, 2)));
  ASSERT_TRUE(IsGood(pr_out(kPortA, kReserve, 1, 0, kEa)));
  EXPECT_TRUE(conflict(read_as(kPortB)));
  EXPECT_TRUE(conflict(run(cdb_of({0x1A, 0, 0x08, 0, 255, 0}), {}, 255, kPortB)));  // MODE SENSE
  EXPECT_TRUE(IsGood(run(cdb_of({0x25}), {}, 8, kPortB)));  // READ CAPACITY allowed
  EXPECT_TRUE(IsGood(read_as(kPortA)));
}

TEST_F(PrTest, RegistrantsOnlyTypes) {
  ASSERT_TRUE(IsGood(pr_out(kPortA, kRegister, 0, 1)));
  ASSERT_TRUE(IsGood(pr_out(kPortB, kRegister, 0, 2)));
  ASSERT_TRUE(IsGood(pr_out(kPortA, kReserve, 1, 0, kWeRo)));
  EXPECT_TRUE(IsGood(write_as(kPortB)));
  EXPECT_TRUE(conflict(write_as(kPortC)));
  EXPECT_TRUE(IsGood(read_as(kPortC)));
  ASSERT_TRUE(IsGood(pr_out(kPortA, kRelease, 1, 0, kWeRo)));
  // Releasing a registrants-only reservation: other registrants get RESERVATIONS RELEASED.
  EXPECT_TRUE(
      HasSense(run(Cdb{}, {}, 0, kPortB), SenseKey::kUnitAttention, kAscReservationsReleased));
  ASSERT_TRUE(IsGood(pr_out(kPortA, kReserve, 1, 0, kEaRo)));
  EXPECT_TRUE(IsGood(read_as(kPortB)));
  EXPECT_TRUE(conflict(read_as(kPortC)));
}

TEST_F(PrTest, AllRegistrantsTypes) {
  ASSERT_TRUE(IsGood(pr_out(kPortA, kRegister, 0, 1)));
  ASSERT_TRUE(IsGood(pr_out(kPortB, kRegister, 0, 2)));
  ASSERT_TRUE(IsGood(pr_out(kPortA, kReserve, 1, 0, kEaAr)));
  EXPECT_TRUE(IsGood(pr_out(kPortB, kReserve, 2, 0, kEaAr)));  // every registrant is a holder
  EXPECT_TRUE(IsGood(write_as(kPortB)));
  EXPECT_TRUE(conflict(read_as(kPortC)));
  auto rr = pr_in(1);
  EXPECT_EQ(get_be64(&rr[8]), 0u);  // reservation key 0 for all-registrants types
  EXPECT_EQ(rr[21], kEaAr);
  // The reservation lasts until the last registrant leaves (SPC-4 5.9.11.2).
  ASSERT_TRUE(IsGood(pr_out(kPortA, kRegister, 1, 0)));
  EXPECT_EQ(get_be32(&pr_in(1)[4]), 16u);
  ASSERT_TRUE(IsGood(pr_out(kPortB, kRegister, 2, 0)));
  EXPECT_EQ(get_be32(&pr_in(1)[4]), 0u);
  EXPECT_TRUE(IsGood(read_as(kPortC)));
}

TEST_F(PrTest, WeArLetsRegistrantsWrite) {
  ASSERT_TRUE(IsGood(pr_out(kPortA, kRegister, 0, 1)));
  ASSERT_TRUE(IsGood(pr_out(kPortB, kRegister, 0, 2)));
  ASSERT_TRUE(IsGood(pr_out(kPortB, kReserve, 2, 0, kWeAr)));
  EXPECT_TRUE(IsGood(write_as(kPortA)));
  EXPECT_TRUE(conflict(write_as(kPortC)));
  EXPECT_TRUE(IsGood(read_as(kPortC)));
}

TEST_F(PrTest, ReleaseRules) {
  ASSERT_TRUE(IsGood(pr_out(kPortA, kRegister, 0, 1)));
  ASSERT_TRUE(IsGood(pr_out(kPortB, kRegister, 0, 2)));
  EXPECT_TRUE(IsGood(pr_out(kPortA, kRelease, 1, 0, kWe)));  // nothing reserved: GOOD
  ASSERT_TRUE(IsGood(pr_out(kPortA, kReserve, 1, 0, kWe)));
  EXPECT_TRUE(IsGood(pr_out(kPortB, kRelease, 2, 0, kWe)));  // not the holder: GOOD, no effect
  EXPECT_TRUE(conflict(write_as(kPortB)));
  EXPECT_TRUE(conflict(pr_out(kPortB, kRelease, 9, 0, kWe)));  // wrong key
  EXPECT_TRUE(HasSense(pr_out(kPortA, kRelease, 1, 0, kEa), SenseKey::kIllegalRequest,
                       kAscInvalidReleaseOfPersistentReservation));
  ASSERT_TRUE(IsGood(pr_out(kPortA, kRelease, 1, 0, kWe)));
  EXPECT_TRUE(IsGood(write_as(kPortB)));
}

TEST_F(PrTest, UnregisteringTheHolderReleases) {
  ASSERT_TRUE(IsGood(pr_out(kPortA, kRegister, 0, 1)));
  ASSERT_TRUE(IsGood(pr_out(kPortA, kReserve, 1, 0, kEa)));
  EXPECT_TRUE(conflict(read_as(kPortB)));
  ASSERT_TRUE(IsGood(pr_out(kPortA, kRegister, 1, 0)));
  EXPECT_TRUE(IsGood(read_as(kPortB)));
}

TEST_F(PrTest, ClearRemovesEverything) {
  ASSERT_TRUE(IsGood(pr_out(kPortA, kRegister, 0, 1)));
  ASSERT_TRUE(IsGood(pr_out(kPortB, kRegister, 0, 2)));
  ASSERT_TRUE(IsGood(pr_out(kPortA, kReserve, 1, 0, kWe)));
  EXPECT_TRUE(conflict(pr_out(kPortC, kClear, 0, 0)));
  uint32_t gen = 0;
  keys(&gen);
  ASSERT_TRUE(IsGood(pr_out(kPortB, kClear, 2, 0)));
  EXPECT_TRUE(HasSense(write_as(kPortA), SenseKey::kUnitAttention, kAscReservationsPreempted));
  EXPECT_TRUE(IsGood(write_as(kPortA)));
  uint32_t after = 0;
  EXPECT_TRUE(keys(&after).empty());
  EXPECT_EQ(after, gen + 1);
}

TEST_F(PrTest, PreemptTakesTheReservation) {
  ASSERT_TRUE(IsGood(pr_out(kPortA, kRegister, 0, 1)));
  ASSERT_TRUE(IsGood(pr_out(kPortB, kRegister, 0, 2)));
  ASSERT_TRUE(IsGood(pr_out(kPortA, kReserve, 1, 0, kWe)));
  ASSERT_TRUE(IsGood(pr_out(kPortB, kPreempt, 2, 1, kEa)));
  EXPECT_EQ(keys(nullptr, kPortB), (std::vector<uint64_t>{2}));
  auto rr = pr_in(1, kPortB);
  EXPECT_EQ(get_be64(&rr[8]), 2u);
  EXPECT_EQ(rr[21], kEa);
  // A first hears REGISTRATIONS PREEMPTED, then is shut out.
  EXPECT_TRUE(HasSense(read_as(kPortA), SenseKey::kUnitAttention, kAscRegistrationsPreempted));
  EXPECT_TRUE(conflict(read_as(kPortA)));
  EXPECT_TRUE(IsGood(read_as(kPortB)));
}

TEST_F(PrTest, PreemptWithoutReservationRemovesRegistrations) {
  // The libiscsi PREEMPT test: no reservation, B preempts A's key.
  ASSERT_TRUE(IsGood(pr_out(kPortA, kRegisterIgnore, 0, 0x11)));
  ASSERT_TRUE(IsGood(pr_out(kPortB, kRegisterIgnore, 0, 0x22)));
  uint32_t gen = 0;
  keys(&gen);
  ASSERT_TRUE(IsGood(pr_out(kPortB, kPreempt, 0x22, 0x11, kEa)));
  uint32_t after = 0;
  EXPECT_EQ(keys(&after, kPortB), (std::vector<uint64_t>{0x22}));
  EXPECT_EQ(after, gen + 1);
  EXPECT_EQ(get_be32(&pr_in(1, kPortB)[4]), 0u);  // still no reservation
  EXPECT_TRUE(HasSense(run(Cdb{}), SenseKey::kUnitAttention, kAscRegistrationsPreempted));
  EXPECT_TRUE(IsIllegal(pr_out(kPortB, kPreempt, 0x22, 0, kEa), kAscInvalidFieldInParameterList));
  EXPECT_TRUE(conflict(pr_out(kPortB, kPreempt, 0x22, 0x99, kEa)));  // nobody has that key
}

TEST_F(PrTest, PreemptAllRegistrantsWithZeroKey) {
  ASSERT_TRUE(IsGood(pr_out(kPortA, kRegister, 0, 1)));
  ASSERT_TRUE(IsGood(pr_out(kPortB, kRegister, 0, 2)));
  ASSERT_TRUE(IsGood(pr_out(kPortC, kRegister, 0, 3)));
  ASSERT_TRUE(IsGood(pr_out(kPortA, kReserve, 1, 0, kWeAr)));
  ASSERT_TRUE(IsGood(pr_out(kPortC, kPreemptAbort, 3, 0, kEa)));
  EXPECT_EQ(keys(nullptr, kPortC), (std::vector<uint64_t>{3}));
  auto rr = pr_in(1, kPortC);
  EXPECT_EQ(get_be64(&rr[8]), 3u);
  EXPECT_EQ(rr[21], kEa);
}

TEST_F(PrTest, PreemptNonHolderKeyKeepsReservation) {
  ASSERT_TRUE(IsGood(pr_out(kPortA, kRegister, 0, 1)));
  ASSERT_TRUE(IsGood(pr_out(kPortB, kRegister, 0, 2)));
  ASSERT_TRUE(IsGood(pr_out(kPortC, kRegister, 0, 3)));
  ASSERT_TRUE(IsGood(pr_out(kPortA, kReserve, 1, 0, kWe)));
  ASSERT_TRUE(IsGood(pr_out(kPortB, kPreempt, 2, 3, kWe)));
  EXPECT_EQ(keys(), (std::vector<uint64_t>{1, 2}));
  EXPECT_EQ(get_be64(&pr_in(1)[8]), 1u);  // A still holds it
  EXPECT_TRUE(IsIllegal(pr_out(kPortB, kPreempt, 2, 0, kWe), kAscInvalidFieldInParameterList));
}

// --- PERSISTENT RESERVE IN -------------------------------------------------------------------

TEST_F(PrTest, ReportCapabilities) {
  EXPECT_EQ(pr_in(2), (std::vector<uint8_t>{0x00, 0x08, 0x05, 0x80, 0xEA, 0x01, 0x00, 0x00}));
  ASSERT_TRUE(IsGood(pr_out(kPortA, kRegister, 0, 1, 0, 0x01)));  // APTPL
  EXPECT_EQ(pr_in(2)[3], 0x81);
}

TEST_F(PrTest, ReadFullStatus) {
  ASSERT_TRUE(IsGood(pr_out(kPortA, kRegister, 0, 0x1111)));
  ASSERT_TRUE(IsGood(pr_out(kPortB, kRegister, 0, 0x2222, 0, 0x04)));
  ASSERT_TRUE(IsGood(pr_out(kPortA, kReserve, 0x1111, 0, kWeRo)));
  auto d = pr_in(3);
  EXPECT_EQ(get_be32(&d[0]), 2u);
  EXPECT_EQ(get_be32(&d[4]), d.size() - 8);
  size_t off = 8;
  // A: holder, type WE-RO, relative target port 1, TransportID format 01b.
  EXPECT_EQ(get_be64(&d[off]), 0x1111u);
  EXPECT_EQ(d[off + 12], 0x01);
  EXPECT_EQ(d[off + 13], kWeRo);
  EXPECT_EQ(get_be16(&d[off + 18]), 1);
  uint32_t len = get_be32(&d[off + 20]);
  EXPECT_EQ(len % 4, 0u);
  EXPECT_EQ(d[off + 24], 0x45);
  std::string name(reinterpret_cast<const char*>(&d[off + 28]));
  EXPECT_EQ(name, kPortA);
  EXPECT_EQ(get_be16(&d[off + 26]), len - 4);
  off += 24 + len;
  // B: ALL_TG_PT registration, not a holder.
  EXPECT_EQ(get_be64(&d[off]), 0x2222u);
  EXPECT_EQ(d[off + 12], 0x02);
  EXPECT_EQ(d[off + 13], 0);
  off += 24 + get_be32(&d[off + 20]);
  EXPECT_EQ(off, d.size());
}

TEST_F(PrTest, InvalidPrInServiceAction) {
  Cdb c = cdb_of({0x5E, 0x04});
  put_be16(&c[7], 100);
  EXPECT_TRUE(IsIllegal(run(c), kAscInvalidFieldInCdb));
  Cdb t = cdb_of({0x5E, 0x00});
  put_be16(&t[7], 4);
  EXPECT_EQ(run(t).data_in.size(), 4u);
}

// --- Persistence ------------------------------------------------------------------------------

TEST_F(PrTest, StateIsSavedAndReloaded) {
  ASSERT_TRUE(IsGood(pr_out(kPortA, kRegister, 0, 1)));
  ASSERT_TRUE(IsGood(pr_out(kPortB, kRegister, 0, 2)));
  ASSERT_TRUE(IsGood(pr_out(kPortA, kReserve, 1, 0, kEa)));
  EXPECT_EQ(store_->save_count(), 3);
  EXPECT_TRUE(conflict(pr_out(kPortC, kRegister, 5, 6)));
  EXPECT_EQ(store_->save_count(), 3);  // failures save nothing
  // A new LogicalUnit (another node, or after restart) over the same store.
  lu_ = std::make_unique<LogicalUnit>(volume_, store_);
  uint32_t gen = 0;
  EXPECT_EQ(keys(&gen), (std::vector<uint64_t>{1, 2}));
  EXPECT_EQ(gen, 2u);
  EXPECT_TRUE(conflict(read_as(kPortB)));
  EXPECT_TRUE(IsGood(read_as(kPortA)));
}

}  // namespace
}  // namespace tandem::target::scsi::testing
