// The real tandemd's iSCSI target driven by libiscsi: logins with digests and CHAP, ACLs,
// data patterns at QD 1 and QD 32, task management, reinstatement, many sessions.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

extern "C" {
#include <iscsi/iscsi.h>
#include <iscsi/scsi-lowlevel.h>
}

#include <filesystem>
#include <numeric>
#include <random>
#include <set>
#include <fstream>
#include <thread>

#include "tests/integration/daemon_fixture.h"

namespace tandem::testkit {
namespace {

using nlohmann::json;
constexpr const char* kInitiator = "iqn.2026-11.dev.tandem:test-initiator";

struct Ctx {
  iscsi_context* c = nullptr;
  ~Ctx() {
    if (c) {
      iscsi_logout_sync(c);
      iscsi_destroy_context(c);
    }
  }
};

class IscsiTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("tandem-iscsi-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    daemon_ = std::make_unique<Daemon>((dir_ / "n1").string(), unique_loopback());
    ASSERT_TRUE(daemon_->start()) << daemon_->last_output();
    ASSERT_EQ(daemon_->http("POST", "/api/v1/volumes", R"({"name":"vol","size":"64MiB"})").status,
              201);
  }
  void TearDown() override {
    daemon_.reset();
    if (!HasFailure()) std::filesystem::remove_all(dir_);
  }

  std::string portal() const {
    return (portal_address_.empty() ? daemon_->address() : portal_address_) + ":3260";
  }
  std::string portal_address_;  // another node's portal (cluster tests); empty: daemon_

  // Logs in; returns nullptr (and the error in *err) on failure.
  std::unique_ptr<Ctx> login(const std::string& volume = "vol",
                             const std::string& initiator = kInitiator,
                             iscsi_header_digest digest = ISCSI_HEADER_DIGEST_NONE,
                             const char* user = nullptr, const char* secret = nullptr,
                             const char* tuser = nullptr, const char* tsecret = nullptr,
                             std::string* err = nullptr) {
    auto ctx = std::make_unique<Ctx>();
    ctx->c = iscsi_create_context(initiator.c_str());
    iscsi_set_targetname(ctx->c, ("iqn.2026-11.dev.tandem:" + volume).c_str());
    iscsi_set_session_type(ctx->c, ISCSI_SESSION_NORMAL);
    iscsi_set_header_digest(ctx->c, digest);
    iscsi_set_noautoreconnect(ctx->c, 1);
    iscsi_set_timeout(ctx->c, 10);
    if (user) iscsi_set_initiator_username_pwd(ctx->c, user, secret);
    if (tuser) iscsi_set_target_username_pwd(ctx->c, tuser, tsecret);
    if (iscsi_full_connect_sync(ctx->c, portal().c_str(), 0) != 0) {
      if (err) *err = iscsi_get_error(ctx->c);
      iscsi_destroy_context(ctx->c);
      ctx->c = nullptr;
      return nullptr;
    }
    return ctx;
  }

  static std::vector<uint8_t> pattern(size_t bytes, uint32_t seed) {
    std::vector<uint8_t> d(bytes);
    std::mt19937 rng(seed);
    for (auto& b : d) b = static_cast<uint8_t>(rng());
    return d;
  }

  // Like a real initiator, retries once after a UNIT ATTENTION (which a reset or a
  // reservation change legitimately raises, SAM-5 5.14).
  static bool write(iscsi_context* c, uint64_t lba, std::vector<uint8_t>& data, bool fua = false) {
    for (int attempt = 0; attempt < 2; ++attempt) {
      scsi_task* t = iscsi_write16_sync(c, 0, lba, data.data(),
                                        static_cast<uint32_t>(data.size()), 512, 0, 0, fua, 0, 0);
      if (!t) return false;
      bool ok = t->status == SCSI_STATUS_GOOD;
      bool ua = t->status == SCSI_STATUS_CHECK_CONDITION &&
                t->sense.key == SCSI_SENSE_UNIT_ATTENTION;
      scsi_free_scsi_task(t);
      if (ok) return true;
      if (!ua) return false;
    }
    return false;
  }
  static std::vector<uint8_t> read(iscsi_context* c, uint64_t lba, size_t bytes) {
    scsi_task* t = iscsi_read16_sync(c, 0, lba, static_cast<uint32_t>(bytes), 512, 0, 0, 0, 0, 0);
    std::vector<uint8_t> out;
    if (t && t->status == SCSI_STATUS_GOOD) out.assign(t->datain.data, t->datain.data + t->datain.size);
    if (t) scsi_free_scsi_task(t);
    return out;
  }

  std::filesystem::path dir_;
  std::unique_ptr<Daemon> daemon_;
};

TEST_F(IscsiTest, DiscoveryListsEveryVolume) {
  ASSERT_EQ(daemon_->http("POST", "/api/v1/volumes", R"({"name":"second","size":"8MiB"})").status,
            201);
  iscsi_context* c = iscsi_create_context(kInitiator);
  iscsi_set_session_type(c, ISCSI_SESSION_DISCOVERY);
  ASSERT_EQ(iscsi_connect_sync(c, portal().c_str()), 0) << iscsi_get_error(c);
  ASSERT_EQ(iscsi_login_sync(c), 0) << iscsi_get_error(c);
  iscsi_discovery_address* addrs = iscsi_discovery_sync(c);
  ASSERT_NE(addrs, nullptr);
  std::set<std::string> names;
  for (auto* a = addrs; a; a = a->next) {
    names.insert(a->target_name);
    ASSERT_NE(a->portals, nullptr);
    EXPECT_EQ(std::string(a->portals->portal), portal() + ",1");
  }
  EXPECT_EQ(names, (std::set<std::string>{"iqn.2026-11.dev.tandem:second",
                                          "iqn.2026-11.dev.tandem:vol"}));
  iscsi_free_discovery_data(c, addrs);
  iscsi_logout_sync(c);
  iscsi_destroy_context(c);
}

TEST_F(IscsiTest, WriteReadPatternsWithAndWithoutDigests) {
  for (auto digest : {ISCSI_HEADER_DIGEST_NONE, ISCSI_HEADER_DIGEST_CRC32C}) {
    auto s = login("vol", kInitiator, digest);
    ASSERT_TRUE(s);
    for (size_t bytes : {512u, 4096u, 65536u, 1u << 20, 4u << 20}) {
      auto data = pattern(bytes, static_cast<uint32_t>(bytes + digest));
      uint64_t lba = (bytes * 3) / 512;
      ASSERT_TRUE(write(s->c, lba, data, bytes == 4096)) << bytes;
      EXPECT_EQ(read(s->c, lba, bytes), data) << bytes << " digest " << digest;
    }
  }
}

TEST_F(IscsiTest, QueueDepth32RandomWritesThenVerify) {
  auto s = login();
  ASSERT_TRUE(s);
  struct Io {
    std::vector<uint8_t> data;
    uint64_t lba = 0;
    bool done = false;
    int status = -1;
  };
  const int kOps = 512;
  std::vector<Io> ios(kOps);
  std::mt19937 rng(7);
  // Distinct 8-block slots so the final content is known whatever the completion order.
  std::vector<uint64_t> slots(16384);
  std::iota(slots.begin(), slots.end(), 0);
  std::shuffle(slots.begin(), slots.end(), rng);
  for (int i = 0; i < kOps; ++i) {
    ios[i].lba = slots[i] * 8;
    ios[i].data = pattern(4096, 1000 + i);
  }
  auto cb = [](iscsi_context*, int status, void* data, void* priv) {
    auto* io = static_cast<Io*>(priv);
    io->status = status;
    io->done = true;
    scsi_free_scsi_task(static_cast<scsi_task*>(data));
  };
  int next = 0, completed = 0, in_flight = 0;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (completed < kOps && std::chrono::steady_clock::now() < deadline) {
    while (in_flight < 32 && next < kOps) {
      Io& io = ios[next++];
      ASSERT_NE(iscsi_write16_task(s->c, 0, io.lba, io.data.data(), 4096, 512, 0, 0, 0, 0, 0, cb,
                                   &io),
                nullptr);
      ++in_flight;
    }
    pollfd p{iscsi_get_fd(s->c), static_cast<short>(iscsi_which_events(s->c)), 0};
    ASSERT_GE(poll(&p, 1, 1000), 0);
    ASSERT_EQ(iscsi_service(s->c, p.revents), 0) << iscsi_get_error(s->c);
    int now_done = 0;
    for (auto& io : ios) now_done += io.done;
    in_flight -= now_done - completed;
    completed = now_done;
  }
  ASSERT_EQ(completed, kOps);
  for (auto& io : ios) {
    ASSERT_EQ(io.status, SCSI_STATUS_GOOD);
    ASSERT_EQ(read(s->c, io.lba, 4096), io.data) << "lba " << io.lba;
  }
}

TEST_F(IscsiTest, UnknownTargetIsRefused) {
  std::string err;
  EXPECT_FALSE(login("nope", kInitiator, ISCSI_HEADER_DIGEST_NONE, nullptr, nullptr, nullptr,
                     nullptr, &err));
}

TEST_F(IscsiTest, InitiatorAclRefusesOthers) {
  auto r = daemon_->http("PUT", "/api/v1/volumes/vol/access",
                         R"({"initiators":["iqn.2026-11.dev.tandem:allowed"]})");
  ASSERT_EQ(r.status, 200) << r.raw;
  EXPECT_FALSE(login("vol", "iqn.2026-11.dev.tandem:someone-else"));
  EXPECT_TRUE(login("vol", "iqn.2026-11.dev.tandem:allowed"));
}

TEST_F(IscsiTest, ChapOneWayAndMutual) {
  auto r = daemon_->http("PUT", "/api/v1/volumes/vol/access",
                         R"({"chap":{"user":"alice","secret":"alice-secret-12"}})");
  ASSERT_EQ(r.status, 200) << r.raw;
  EXPECT_EQ(r.raw.find("alice-secret-12"), std::string::npos) << "a secret was returned";
  EXPECT_FALSE(login()) << "no credentials must be refused";
  EXPECT_FALSE(login("vol", kInitiator, ISCSI_HEADER_DIGEST_NONE, "alice", "wrong-secret-99"));
  auto good = login("vol", kInitiator, ISCSI_HEADER_DIGEST_NONE, "alice", "alice-secret-12");
  ASSERT_TRUE(good);
  auto d = pattern(4096, 1);
  EXPECT_TRUE(write(good->c, 0, d));

  r = daemon_->http("PUT", "/api/v1/volumes/vol/access",
                    R"({"chap":{"user":"alice","secret":"alice-secret-12"},
                        "mutual_chap":{"user":"target","secret":"target-secret-34"}})");
  ASSERT_EQ(r.status, 200) << r.raw;
  EXPECT_TRUE(login("vol", kInitiator, ISCSI_HEADER_DIGEST_NONE, "alice", "alice-secret-12",
                    "target", "target-secret-34"));
  EXPECT_FALSE(login("vol", kInitiator, ISCSI_HEADER_DIGEST_NONE, "alice", "alice-secret-12",
                     "target", "not-the-target-pw"))
      << "the initiator must refuse a target that cannot prove the mutual secret";
  std::string log = daemon_->last_output();
  EXPECT_EQ(log.find("alice-secret-12"), std::string::npos) << "a secret was logged";
}

TEST_F(IscsiTest, DeleteIsRefusedWhileLoggedIn) {
  {
    auto s = login();
    ASSERT_TRUE(s);
    auto r = daemon_->http("DELETE", "/api/v1/volumes/vol");
    EXPECT_EQ(r.status, 409) << r.raw;
  }
  // After logout the session count drops; deletion then succeeds.
  int status = 0;
  for (int i = 0; i < 100 && status != 204; ++i) {
    status = daemon_->http("DELETE", "/api/v1/volumes/vol").status;
    if (status != 204) std::this_thread::yield();
  }
  EXPECT_EQ(status, 204);
}

TEST_F(IscsiTest, LunResetAndAbortTaskSetSucceed) {
  auto s = login();
  ASSERT_TRUE(s);
  EXPECT_EQ(iscsi_task_mgmt_lun_reset_sync(s->c, 0), 0) << iscsi_get_error(s->c);
  EXPECT_EQ(iscsi_task_mgmt_abort_task_set_sync(s->c, 0), 0) << iscsi_get_error(s->c);
  auto d = pattern(8192, 3);
  EXPECT_TRUE(write(s->c, 16, d));
  EXPECT_EQ(read(s->c, 16, 8192), d);
}

TEST_F(IscsiTest, SameIsidReinstatesTheSession) {
  auto first = login();
  ASSERT_TRUE(first);
  auto second = login();  // libiscsi uses the same ISID for the same initiator name
  ASSERT_TRUE(second);
  auto d = pattern(4096, 9);
  EXPECT_TRUE(write(second->c, 0, d));
  EXPECT_EQ(read(second->c, 0, 4096), d);
}

TEST_F(IscsiTest, ManySessionsToOneAndManyTargets) {
  for (int i = 0; i < 4; ++i) {
    ASSERT_EQ(daemon_->http("POST", "/api/v1/volumes",
                            json{{"name", "m" + std::to_string(i)}, {"size", "8MiB"}}.dump())
                  .status,
              201);
  }
  std::vector<std::unique_ptr<Ctx>> sessions;
  for (int i = 0; i < 16; ++i) {
    std::string vol = i < 8 ? "vol" : "m" + std::to_string(i % 4);
    auto s = login(vol, std::string(kInitiator) + "-" + std::to_string(i));
    ASSERT_TRUE(s) << i;
    sessions.push_back(std::move(s));
  }
  for (size_t i = 0; i < sessions.size(); ++i) {
    auto d = pattern(4096, static_cast<uint32_t>(i));
    ASSERT_TRUE(write(sessions[i]->c, i * 8, d));
    EXPECT_EQ(read(sessions[i]->c, i * 8, 4096), d);
  }
}

// Persistent reservations are kept in the catalogue: a registration and a reservation made
// before a restart are there after it.
// A cluster: the controller (daemon_), the volume's master n2 and n3, where the initiators
// log in. A reservation taken through n3 holds across the death of the master: the replica
// promoted in its place serves the writes, and the reservation (kept by the presenting node)
// still admits its holder and refuses everyone else.
TEST_F(IscsiTest, ReservationsThroughAPresentingNodeSurviveAChangeOfMaster) {
  ASSERT_EQ(daemon_->stop(), 0);
  ASSERT_TRUE(daemon_->start({"--node-timeout-ms", "1500", "--heartbeat-ms", "200"}));
  std::string token;
  {
    std::ifstream f(dir_ / "n1" / "join.token");
    std::getline(f, token);
  }
  std::vector<std::string> join{"--join", daemon_->url(), "--join-token", token,
                                "--heartbeat-ms", "200"};
  Daemon n2((dir_ / "n2").string(), unique_loopback(), "n2");
  Daemon n3((dir_ / "n3").string(), unique_loopback(), "n3");
  ASSERT_TRUE(n2.start(join)) << n2.last_output();
  ASSERT_TRUE(n3.start(join)) << n3.last_output();
  auto eventually = [](auto pred) {
    auto end = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (std::chrono::steady_clock::now() < end) {
      if (pred()) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));  // polling, with a deadline
    }
    return false;
  };
  ASSERT_TRUE(eventually([&] {
    return daemon_->http("POST", "/api/v1/volumes",
                         R"({"name":"prv","size":"16MiB","node":"n2",)"
                         R"("labels":{"tandem/replicas":"2"}})")
               .status == 201;
  }));
  portal_address_ = n3.address();
  std::unique_ptr<Ctx> a;
  ASSERT_TRUE(eventually([&] { return (a = login("prv")) != nullptr; }));  // n3 learns of it
  scsi_persistent_reserve_out_basic reg{};
  reg.service_action_reservation_key = 0x5eed;
  scsi_task* t = iscsi_persistent_reserve_out_sync(
      a->c, 0, SCSI_PERSISTENT_RESERVE_REGISTER, SCSI_PERSISTENT_RESERVE_SCOPE_LU, 0, &reg);
  ASSERT_NE(t, nullptr);
  ASSERT_EQ(t->status, SCSI_STATUS_GOOD) << iscsi_get_error(a->c);
  scsi_free_scsi_task(t);
  scsi_persistent_reserve_out_basic res{};
  res.reservation_key = 0x5eed;
  t = iscsi_persistent_reserve_out_sync(a->c, 0, SCSI_PERSISTENT_RESERVE_RESERVE,
                                        SCSI_PERSISTENT_RESERVE_SCOPE_LU,
                                        SCSI_PERSISTENT_RESERVE_TYPE_WRITE_EXCLUSIVE, &res);
  ASSERT_NE(t, nullptr);
  ASSERT_EQ(t->status, SCSI_STATUS_GOOD);
  scsi_free_scsi_task(t);
  auto d = pattern(4096, 21);
  ASSERT_TRUE(write(a->c, 8, d));

  n2.kill9();  // the master dies
  ASSERT_TRUE(eventually([&] {
    auto v = daemon_->http("GET", "/api/v1/volumes/prv");
    return v.status == 200 && v.body.value("master", "") != "n2" &&
           v.body.value("generation", 1) >= 2;
  }));
  // The holder's session stayed up (n3 re-routed its I/O), still holds the reservation and
  // writes through the new master; another initiator is refused.
  t = iscsi_persistent_reserve_in_sync(a->c, 0, SCSI_PERSISTENT_RESERVE_READ_RESERVATION, 256);
  ASSERT_NE(t, nullptr);
  ASSERT_EQ(t->status, SCSI_STATUS_GOOD);
  auto* rr = static_cast<scsi_persistent_reserve_in_read_reservation*>(scsi_datain_unmarshall(t));
  ASSERT_NE(rr, nullptr);
  EXPECT_EQ(rr->reserved, 1);
  EXPECT_EQ(rr->reservation_key, 0x5eedu);
  scsi_free_scsi_task(t);
  auto d2 = pattern(4096, 22);
  EXPECT_TRUE(write(a->c, 16, d2));
  EXPECT_EQ(read(a->c, 8, 4096), d);
  EXPECT_EQ(read(a->c, 16, 4096), d2);
  auto other = login("prv", std::string(kInitiator) + "-other");
  ASSERT_TRUE(other);
  scsi_task* w = iscsi_write16_sync(other->c, 0, 0, d.data(), 4096, 512, 0, 0, 0, 0, 0);
  ASSERT_NE(w, nullptr);
  EXPECT_EQ(w->status, SCSI_STATUS_RESERVATION_CONFLICT);
  scsi_free_scsi_task(w);
}

TEST_F(IscsiTest, PersistentReservationsSurviveARestart) {
  {
    auto s = login();
    ASSERT_TRUE(s);
    scsi_persistent_reserve_out_basic reg{};
    reg.service_action_reservation_key = 0xabcdef;
    reg.aptpl = 1;
    scsi_task* t = iscsi_persistent_reserve_out_sync(
        s->c, 0, SCSI_PERSISTENT_RESERVE_REGISTER, SCSI_PERSISTENT_RESERVE_SCOPE_LU, 0, &reg);
    ASSERT_NE(t, nullptr);
    ASSERT_EQ(t->status, SCSI_STATUS_GOOD) << iscsi_get_error(s->c);
    scsi_free_scsi_task(t);
    scsi_persistent_reserve_out_basic res{};
    res.reservation_key = 0xabcdef;
    t = iscsi_persistent_reserve_out_sync(s->c, 0, SCSI_PERSISTENT_RESERVE_RESERVE,
                                          SCSI_PERSISTENT_RESERVE_SCOPE_LU,
                                          SCSI_PERSISTENT_RESERVE_TYPE_WRITE_EXCLUSIVE, &res);
    ASSERT_NE(t, nullptr);
    ASSERT_EQ(t->status, SCSI_STATUS_GOOD) << iscsi_get_error(s->c);
    scsi_free_scsi_task(t);
  }
  ASSERT_EQ(daemon_->stop(), 0);
  ASSERT_TRUE(daemon_->start()) << daemon_->last_output();
  auto s = login();
  ASSERT_TRUE(s);
  scsi_task* t = iscsi_persistent_reserve_in_sync(s->c, 0, SCSI_PERSISTENT_RESERVE_READ_KEYS, 256);
  ASSERT_NE(t, nullptr);
  ASSERT_EQ(t->status, SCSI_STATUS_GOOD);
  auto* keys = static_cast<scsi_persistent_reserve_in_read_keys*>(scsi_datain_unmarshall(t));
  ASSERT_NE(keys, nullptr);
  ASSERT_EQ(keys->num_keys, 1);
  EXPECT_EQ(keys->keys[0], 0xabcdefu);
  scsi_free_scsi_task(t);
  t = iscsi_persistent_reserve_in_sync(s->c, 0, SCSI_PERSISTENT_RESERVE_READ_RESERVATION, 256);
  ASSERT_NE(t, nullptr);
  ASSERT_EQ(t->status, SCSI_STATUS_GOOD);
  auto* rr = static_cast<scsi_persistent_reserve_in_read_reservation*>(scsi_datain_unmarshall(t));
  ASSERT_NE(rr, nullptr);
  EXPECT_EQ(rr->reserved, 1);
  EXPECT_EQ(rr->reservation_key, 0xabcdefu);
  scsi_free_scsi_task(t);
  // Another initiator (not registered) cannot write through the write-exclusive reservation.
  auto other = login("vol", std::string(kInitiator) + "-other");
  ASSERT_TRUE(other);
  auto d = pattern(4096, 11);
  scsi_task* w = iscsi_write16_sync(other->c, 0, 0, d.data(), 4096, 512, 0, 0, 0, 0, 0);
  ASSERT_NE(w, nullptr);
  EXPECT_EQ(w->status, SCSI_STATUS_RESERVATION_CONFLICT);
  scsi_free_scsi_task(w);
}

TEST_F(IscsiTest, GarbageOnThePortDoesNotDisturbOtherSessions) {
  auto s = login();
  ASSERT_TRUE(s);
  std::mt19937 rng(42);
  for (int round = 0; round < 20; ++round) {
    auto junk = pattern(48 + rng() % 4000, rng());
    if (round % 2) junk[0] = 0x03;  // looks like a Login Request
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(3260);
    ::inet_pton(AF_INET, daemon_->address().c_str(), &sa.sin_addr);
    ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa), 0);
    ::send(fd, junk.data(), junk.size(), MSG_NOSIGNAL);
    ::shutdown(fd, SHUT_WR);
    char buf[512];
    timeval tv{5, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    while (::recv(fd, buf, sizeof buf, 0) > 0) {
    }
    ::close(fd);
  }
  auto d = pattern(4096, 5);
  EXPECT_TRUE(write(s->c, 8, d));
  EXPECT_EQ(read(s->c, 8, 4096), d);
  EXPECT_EQ(daemon_->http("GET", "/healthz", "", false).status, 200);
}

}  // namespace
}  // namespace tandem::testkit
