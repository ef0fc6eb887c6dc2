#include "server/pareto.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace mixq::server {
namespace {

using ::testing::ElementsAre;

v1::Policy Point(const std::string& id, double size, double bops,
                 double val_accuracy) {
  v1::Policy policy;
  policy.set_policy_id(id);
  policy.set_size_bytes(size);
  policy.set_bops(bops);
  policy.set_val_accuracy(val_accuracy);
  return policy;
}

std::vector<std::string> Ids(const std::vector<v1::Policy>& policies) {
  std::vector<std::string> ids;
  for (const v1::Policy& p : policies) ids.push_back(p.policy_id());
  return ids;
}

TEST(ParetoFrontTest, KeepsExactlyTheNonDominatedBySize) {
  const std::vector<v1::Policy> front = ParetoFront({
      Point("big-good", 400, 40, 0.90), Point("small-bad", 100, 10, 0.60),
      Point("mid", 200, 20, 0.80),
      Point("mid-worse", 250, 25, 0.75),        // mid is smaller and better
      Point("same-size-worse", 200, 20, 0.70),  // mid beats it on accuracy
      Point("cheap-bops", 300, 5, 0.70),  // larger than mid, but fewest BOPs
  });
  EXPECT_THAT(Ids(front),
              ElementsAre("small-bad", "mid", "cheap-bops", "big-good"));
}

TEST(ParetoFrontTest, DropsUnmeasuredAndDuplicatePoints) {
  const std::vector<v1::Policy> front = ParetoFront({
      Point("a", 100, 10, 0.5),
      Point("unmeasured", 50, 5, std::nan("")),
      Point("a-again", 100, 10, 0.5),  // the same point: the first is kept
      Point("b", 80, 10, 0.4),
  });
  EXPECT_THAT(Ids(front), ElementsAre("b", "a"));
  EXPECT_TRUE(ParetoFront({}).empty());
}

// A label-free job's policies have no validation accuracy: the front is
// built on the validation loss (lower is better) instead of being empty.
TEST(ParetoFrontTest, LabelFreePoliciesRankByValidationLoss) {
  const auto label_free = [](const std::string& id, double size,
                             double val_loss) {
    v1::Policy policy = Point(id, size, size, std::nan(""));
    policy.set_val_loss(val_loss);
    return policy;
  };
  const std::vector<v1::Policy> front = ParetoFront({
      label_free("big-close", 400, 0.01),
      label_free("small-far", 100, 0.30),
      label_free("mid", 200, 0.05),
      label_free("mid-farther", 250, 0.08),  // mid is smaller and closer
      label_free("unmeasured", 50, std::nan("")),
  });
  EXPECT_THAT(Ids(front), ElementsAre("small-far", "mid", "big-close"));
}

TEST(ParetoFrontTest, BruteForceAgreesOnRandomPoints) {
  // Every kept point is undominated and every dropped one is dominated.
  std::vector<v1::Policy> points;
  uint64_t state = 12345;
  const auto next = [&state] {
    state = state * 6364136223846793005ULL + 1442695040888963407ULL;
    return static_cast<double>(state >> 40 & 0xff);
  };
  for (int i = 0; i < 60; ++i) {
    points.push_back(Point(std::to_string(i), next(), next(), next() / 255));
  }
  const std::vector<v1::Policy> front = ParetoFront(points);
  const auto dominates = [](const v1::Policy& p, const v1::Policy& q) {
    return p.size_bytes() <= q.size_bytes() && p.bops() <= q.bops() &&
           p.val_accuracy() >= q.val_accuracy() &&
           (p.size_bytes() < q.size_bytes() || p.bops() < q.bops() ||
            p.val_accuracy() > q.val_accuracy());
  };
  std::vector<std::string> expected;
  for (size_t i = 0; i < points.size(); ++i) {
    bool dominated = false;
    for (size_t j = 0; j < points.size(); ++j) {
      dominated = dominated || dominates(points[j], points[i]);
    }
    if (!dominated) expected.push_back(points[i].policy_id());
  }
  std::vector<std::string> got = Ids(front);
  std::sort(got.begin(), got.end());
  std::sort(expected.begin(), expected.end());
  EXPECT_EQ(got, expected);
  EXPECT_FALSE(front.empty());
  for (size_t i = 1; i < front.size(); ++i)
    EXPECT_LE(front[i - 1].size_bytes(), front[i].size_bytes());
}

}  // namespace
}  // namespace mixq::server
