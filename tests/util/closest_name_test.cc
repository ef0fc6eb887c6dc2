#include "util/closest_name.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace mixq::util {
namespace {

TEST(EditDistanceTest, CountsInsertionsDeletionsSubstitutionsAndSwaps) {
  const struct {
    const char* a;
    const char* b;
    int distance;
  } kCases[] = {
      {"", "", 0},
      {"", "abc", 3},
      {"abc", "", 3},
      {"submit", "submit", 0},
      {"sumbit", "submit", 1},  // a swap
      {"--modle", "--model", 1},
      {"lst", "list", 1},
      {"stauts", "status", 1},
      {"kitten", "sitting", 3},
      {"abc", "xyz", 3},
  };
  for (const auto& c : kCases) {
    EXPECT_EQ(EditDistance(c.a, c.b), c.distance) << c.a << " / " << c.b;
    EXPECT_EQ(EditDistance(c.b, c.a), c.distance) << c.b << " / " << c.a;
  }
}

TEST(ClosestNameTest, SuggestsOnlyNearNames) {
  const std::vector<std::string> commands = {"submit", "status", "list",
                                             "watch", "export"};
  EXPECT_EQ(ClosestName("sumbit", commands), "submit");
  EXPECT_EQ(ClosestName("lst", commands), "list");
  EXPECT_EQ(ClosestName("exprot", commands), "export");
  EXPECT_EQ(ClosestName("frobnicate", commands), std::nullopt);
  EXPECT_EQ(ClosestName("x", commands), std::nullopt);
  EXPECT_EQ(ClosestName("submit", {}), std::nullopt);
}

}  // namespace
}  // namespace mixq::util
