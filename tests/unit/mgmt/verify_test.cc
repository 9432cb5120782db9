// Region checksums of real sparse files, their JSON form, and the comparison of copies.
#include "mgmt/verify.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <vector>

namespace tandem::mgmt {
namespace {

class VerifyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("tandem-verify-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::string image(const std::string& name, uint64_t size,
                    const std::vector<std::pair<uint64_t, uint8_t>>& writes) {
    std::string path = (dir_ / name).string();
    int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC, 0600);
    EXPECT_GE(fd, 0);
    EXPECT_EQ(::ftruncate(fd, static_cast<off_t>(size)), 0);
    for (auto [off, byte] : writes) {
      std::vector<uint8_t> b(4096, byte);
      EXPECT_EQ(::pwrite(fd, b.data(), b.size(), static_cast<off_t>(off)), 4096);
    }
    ::close(fd);
    return path;
  }

  std::filesystem::path dir_;
};

TEST_F(VerifyTest, HolesAndWrittenZerosCompareEqual) {
  auto a = image("a", 4u << 20, {});
  auto b = image("b", 4u << 20, {{1u << 20, 0}, {3u << 20, 0}});
  auto ca = checksum_image(a, 4u << 20);
  auto cb = checksum_image(b, 4u << 20);
  ASSERT_TRUE(ca.ok() && cb.ok());
  EXPECT_EQ(ca->crc.size(), 4u);
  EXPECT_TRUE(compare_checksums({{"a", *ca}, {"b", *cb}}).identical);
}

TEST_F(VerifyTest, ADifferingRegionIsNamed) {
  auto a = image("a", (5u << 20) + 4096, {{0, 1}, {2u << 20, 7}, {5u << 20, 9}});
  auto b = image("b", (5u << 20) + 4096, {{0, 1}, {2u << 20, 8}, {5u << 20, 9}});
  auto c = image("c", (5u << 20) + 4096, {{0, 1}, {2u << 20, 7}, {5u << 20, 3}});
  uint64_t size = (5u << 20) + 4096;
  auto ca = checksum_image(a, size), cb = checksum_image(b, size), cc = checksum_image(c, size);
  ASSERT_TRUE(ca.ok() && cb.ok() && cc.ok());
  EXPECT_EQ(ca->crc.size(), 6u);  // the last region is short
  auto v = compare_checksums({{"a", *ca}, {"b", *cb}, {"c", *cc}});
  EXPECT_FALSE(v.identical);
  EXPECT_EQ(v.differing_count, 2u);
  EXPECT_EQ(v.differing_regions, (std::vector<uint64_t>{2, 5}));
}

TEST_F(VerifyTest, JsonRoundTripAndHostileInput) {
  auto a = image("a", 3u << 20, {{4096, 5}});
  auto ca = checksum_image(a, 3u << 20);
  ASSERT_TRUE(ca.ok());
  auto back = checksums_from_json(to_json(*ca));
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->crc, ca->crc);
  auto j = to_json(*ca);
  j["crc"] = std::string(j["crc"]).substr(1);
  EXPECT_FALSE(checksums_from_json(j).ok());
  j = to_json(*ca);
  j["crc"] = std::string(24, 'z');
  EXPECT_FALSE(checksums_from_json(j).ok());
  EXPECT_FALSE(checksums_from_json(nlohmann::json::array()).ok());
  EXPECT_FALSE(checksums_from_json({{"region_bytes", 0}, {"volume_bytes", 1}, {"crc", ""}}).ok());
  EXPECT_FALSE(checksum_image((dir_ / "missing").string(), 1u << 20).ok());
}

TEST_F(VerifyTest, DifferentSizesAreReported) {
  auto a = image("a", 2u << 20, {});
  auto b = image("b", 3u << 20, {});
  auto v = compare_checksums({{"a", *checksum_image(a, 2u << 20)},
                              {"b", *checksum_image(b, 3u << 20)}});
  EXPECT_FALSE(v.identical);
  EXPECT_FALSE(v.error.empty());
}

}  // namespace
}  // namespace tandem::mgmt
