#include "bench/psnr.h"

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "engine/tensor.h"
#include "gtest/gtest.h"

namespace mixq::bench {
namespace {

using engine::Tensor;

struct PsnrCase {
  std::string name;
  Tensor restored;
  Tensor clean;
  Normalization normalization;
  double want_db;
};

TEST(MeanPsnrTest, Cases) {
  const Normalization identity{0.0f, 1.0f};
  const std::vector<PsnrCase> cases = {
      {"exact restoration is capped", Tensor({1, 2}, {0.25f, 0.75f}),
       Tensor({1, 2}, {0.25f, 0.75f}), identity, kMaxPsnrDb},
      {"every pixel off by 0.1 is 20 dB",
       Tensor({1, 1, 2, 2}, {0.6f, 0.6f, 0.4f, 0.4f}),
       Tensor({1, 1, 2, 2}, {0.5f, 0.5f, 0.5f, 0.5f}), identity, 20.0},
      {"restored pixels are clamped to [0, 1] first",
       Tensor({1, 2}, {1.5f, -0.5f}), Tensor({1, 2}, {1.0f, 0.0f}), identity,
       kMaxPsnrDb},
      {"the mean over images of each image's PSNR (20 and 40 dB)",
       Tensor({2, 1}, {0.6f, 0.51f}), Tensor({2, 1}, {0.5f, 0.5f}), identity,
       30.0},
      {"values are de-normalised: 0.4 * 0.25 off is 0.1 off",
       Tensor({1, 1}, {0.4f}), Tensor({1, 1}, {0.0f}),
       Normalization{0.5f, 0.25f}, 20.0},
  };
  for (const PsnrCase& c : cases) {
    SCOPED_TRACE(c.name);
    const absl::StatusOr<double> db =
        MeanPsnr(c.restored, c.clean, c.normalization);
    ASSERT_TRUE(db.ok()) << db.status();
    EXPECT_NEAR(*db, c.want_db, 1e-4);
  }
}

TEST(MeanPsnrTest, RefusesWhatItCannotCompare) {
  const Normalization identity{0.0f, 1.0f};
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const struct {
    std::string name;
    Tensor restored;
    Tensor clean;
  } cases[] = {
      {"different shapes", Tensor({1, 2}), Tensor({2, 1})},
      {"no images", Tensor({0, 4}), Tensor({0, 4})},
      {"a NaN restored pixel", Tensor({1, 2}, {nan, 0.0f}), Tensor({1, 2})},
      {"a NaN clean pixel", Tensor({1, 2}), Tensor({1, 2}, {0.0f, nan})},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    EXPECT_EQ(MeanPsnr(c.restored, c.clean, identity).status().code(),
              absl::StatusCode::kInvalidArgument);
  }
}

}  // namespace
}  // namespace mixq::bench
