// mixq-quantize, run as users run it: writes a QDQ model that mixq's engine
// (and so mixq-run) runs, a JSON report, and clear errors for bad input.
#include <unistd.h>

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/model.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "search/qdq_export.h"
#include "tests/support/fixtures.h"
#include "tests/support/subprocess.h"
#include "util/file.h"

namespace mixq::search {
namespace {

using ::mixq::testing::FixturePath;
using ::mixq::testing::RunResult;
using ::testing::HasSubstr;

constexpr char kMixqQuantize[] = MIXQ_QUANTIZE_PATH;

class MixqQuantizeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::path(::testing::TempDir()) /
           absl::StrCat(
               "mixq_quantize_test_", getpid(), "_",
               ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    ASSERT_TRUE(std::filesystem::create_directories(dir_));
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string Path(const std::string& name) const {
    return (dir_ / name).string();
  }
  RunResult Run(std::vector<std::string> args) const {
    return ::mixq::testing::RunProgram(kMixqQuantize, args, dir_.string());
  }
  std::vector<std::string> Base() const {
    return {"--model",  FixturePath("resnet_fmnist_bn.onnx"),
            "--inputs", FixturePath("resnet_fmnist_inputs.npy"),
            "--output", Path("q.onnx")};
  }

  std::filesystem::path dir_;
};

TEST_F(MixqQuantizeTest, EightBitsWritesAQuarterSizeModelThatRuns) {
  std::vector<std::string> args = Base();
  args.insert(args.end(), {"--bits", "8", "--report", Path("report.json")});
  const RunResult run = Run(args);
  ASSERT_EQ(run.exit_code, 0) << run.err;
  EXPECT_THAT(run.out, HasSubstr("8 BatchNormalization folded"));
  const std::string written = ReadFile(Path("q.onnx")).value_or("");
  const std::string original =
      ReadFile(FixturePath("resnet_fmnist_bn.onnx")).value_or("x");
  EXPECT_LT(written.size() * 3, original.size());
  EXPECT_TRUE(CheckOnnxModel(written).ok());
  absl::StatusOr<std::unique_ptr<engine::Model>> model =
      engine::Model::FromOnnxBytes(written);
  ASSERT_TRUE(model.ok()) << model.status();
  const engine::Tensor inputs =
      testing::ReadFloatNpy(FixturePath("resnet_fmnist_inputs.npy"));
  const engine::Tensor logits =
      testing::ReadFloatNpy(FixturePath("resnet_fmnist_logits.npy"));
  std::vector<const engine::Tensor*> params;
  for (const auto& p : (*model)->initial_params()) params.push_back(&p);
  absl::StatusOr<engine::Tensor> out =
      (*model)->Forward(inputs, params, nullptr);
  ASSERT_TRUE(out.ok()) << out.status();
  // 8-bit weights and activations: close to PyTorch's FP32 logits, and the
  // same class for every sample.
  ASSERT_EQ(out->shape(), logits.shape());
  const int64_t classes = logits.dim(1);
  for (int64_t i = 0; i < logits.dim(0); ++i) {
    Eigen::Index a = 0, b = 0;
    out->AsMatrix(logits.dim(0), classes).row(i).maxCoeff(&a);
    logits.AsMatrix(logits.dim(0), classes).row(i).maxCoeff(&b);
    EXPECT_EQ(a, b) << "sample " << i;
  }
  const std::string report = ReadFile(Path("report.json")).value_or("");
  EXPECT_THAT(report, HasSubstr("\"avgBits\": 8"));
  EXPECT_THAT(report, HasSubstr("\"zeroPoint\""));
  EXPECT_THAT(report, HasSubstr("\"activationMode\": \"static\""));
}

TEST_F(MixqQuantizeTest, FourBitsPacksTheWeightsAndReportsTheFileSizes) {
  std::vector<std::string> args = Base();
  args.insert(args.end(), {"--bits", "4", "--report", Path("report.json")});
  const RunResult run = Run(args);
  ASSERT_EQ(run.exit_code, 0) << run.err;
  const std::string written = ReadFile(Path("q.onnx")).value_or("");
  const std::string original =
      ReadFile(FixturePath("resnet_fmnist_bn.onnx")).value_or("");
  EXPECT_LE(static_cast<double>(written.size()),
            0.2 * static_cast<double>(original.size()));
  EXPECT_THAT(run.out,
              HasSubstr(absl::StrCat("file ", written.size(), " bytes, ")));
  EXPECT_THAT(run.out, HasSubstr(absl::StrCat("% of the FP32 file's ",
                                              original.size(), " bytes")));
  EXPECT_TRUE(engine::Model::FromOnnxBytes(written).ok());
  const std::string report = ReadFile(Path("report.json")).value_or("");
  EXPECT_THAT(report, HasSubstr(absl::StrCat("\"onnxBytes\": \"",
                                             written.size(), "\"")));
  EXPECT_THAT(report, HasSubstr(absl::StrCat("\"fp32OnnxBytes\": \"",
                                             original.size(), "\"")));
  EXPECT_THAT(report, HasSubstr("\"container\": \"int4\""));   // weights
  EXPECT_THAT(report, HasSubstr("\"container\": \"uint8\""));  // inputs
}

TEST_F(MixqQuantizeTest, PolicyFileSetsPerLayerBits) {
  ASSERT_TRUE(
      WriteFile(Path("p.json"),
                R"({"policies": [{"layers": [{"name": "fc.weight", "bits": 4},
                            {"name": "stem.0.weight", "bits": 8}]}]})")
          .ok());
  std::vector<std::string> args = Base();
  args.insert(args.end(),
              {"--policy", Path("p.json"), "--report", Path("r.json")});
  const RunResult run = Run(args);
  ASSERT_EQ(run.exit_code, 0) << run.err;
  const std::string report = ReadFile(Path("r.json")).value_or("");
  EXPECT_THAT(report, HasSubstr("\"bits\": 4"));
  EXPECT_THAT(report, HasSubstr("\"bits\": 32"));  // unlisted: float
}

TEST_F(MixqQuantizeTest, BadInputIsAClearError) {
  ASSERT_TRUE(WriteFile(Path("p.json"),
                        R"({"layers": [{"name": "fc9.weight", "bits": 4}]})")
                  .ok());
  std::vector<std::string> args = Base();
  args.insert(args.end(), {"--policy", Path("p.json")});
  RunResult run = Run(args);
  EXPECT_EQ(run.exit_code, 1);
  EXPECT_THAT(run.err, HasSubstr("no quantizable layer 'fc9.weight'"));

  run = Run({"--model", Path("missing.onnx"), "--inputs",
             FixturePath("resnet_fmnist_inputs.npy"), "--bits", "8", "--output",
             Path("q.onnx")});
  EXPECT_EQ(run.exit_code, 1);
  EXPECT_THAT(run.err, HasSubstr("missing.onnx"));

  run = Run({"--model", FixturePath("resnet_fmnist_bn.onnx"), "--inputs",
             FixturePath("tiny_mlp_inputs.npy"), "--bits", "8", "--output",
             Path("q.onnx")});
  EXPECT_EQ(run.exit_code, 1);
  EXPECT_THAT(run.err, HasSubstr("tiny_mlp_inputs.npy"));

  args = Base();  // neither --bits nor --policy
  EXPECT_EQ(Run(args).exit_code, 2);
  args.insert(args.end(), {"--bits", "9"});
  EXPECT_EQ(Run(args).exit_code, 2);
}

}  // namespace
}  // namespace mixq::search
