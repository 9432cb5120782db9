#include "mgmt/api/http_types.h"

#include <gtest/gtest.h>

namespace tandem::mgmt {
namespace {

TEST(SplitTarget, PathAndDecodedQuery) {
  std::string path;
  std::map<std::string, std::string> q;
  ASSERT_TRUE(split_target("/api/v1/events?since=5&limit=10&x=a%20b+c", &path, &q));
  EXPECT_EQ(path, "/api/v1/events");
  EXPECT_EQ(q.at("since"), "5");
  EXPECT_EQ(q.at("limit"), "10");
  EXPECT_EQ(q.at("x"), "a b c");
}

TEST(SplitTarget, RefusesMalformedTargets) {
  std::string path;
  std::map<std::string, std::string> q;
  EXPECT_FALSE(split_target("", &path, &q));
  EXPECT_FALSE(split_target("api", &path, &q));
  EXPECT_FALSE(split_target("/a%zz", &path, &q));
  EXPECT_FALSE(split_target("/a%2", &path, &q));
  EXPECT_FALSE(split_target("/a?b=%", &path, &q));
  EXPECT_TRUE(split_target("/a%2Fb", &path, &q));
  EXPECT_EQ(path, "/a/b");
}

}  // namespace
}  // namespace tandem::mgmt
