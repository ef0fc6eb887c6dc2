// A small search problem shared by the search tests: a 16-32-24-4 MLP on
// teacher labels (128 calibration, 512 fine-tuning samples), options for a
// quick 4-average-bit search, and a runner that records every step.
#ifndef MIXQ_TESTS_SEARCH_SEARCH_FIXTURE_H_
#define MIXQ_TESTS_SEARCH_SEARCH_FIXTURE_H_

#include <atomic>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/model.h"
#include "gtest/gtest.h"
#include "search/progressive.h"
#include "search/qat.h"
#include "tests/support/onnx_mlp.h"

namespace mixq::testing {

class MlpSearchTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto model = engine::Model::FromOnnxBytes(MakeMlpOnnx({16, 32, 24, 4}, 1));
    ASSERT_TRUE(model.ok()) << model.status();
    model_ = *std::move(model);
    const search::LabeledData all = MakeTeacherData(640, 16, 4, 2);
    calib_ = all.Slice(0, 128);
    train_ = all.Slice(128, all.size());
  }

  search::ProgressiveOptions Options(
      search::Strategy strategy = search::Strategy::kProgressive) const {
    search::ProgressiveOptions options;
    options.strategy = strategy;
    options.bit_levels = {8, 6, 4, 2};
    options.budget = {search::Budget::Kind::kAvgBits, 4.0};
    options.candidates = 6;
    options.max_layers = 2;
    options.warmup_steps = 20;
    options.finetune_steps = 10;
    options.final_finetune_steps = 10;
    options.learning_rate = 1e-3;
    options.batch_size = 32;
    options.seed = 5;
    return options;
  }

  // Runs the search, appending every step's report to `steps` (with its
  // checkpoint when `checkpoints`), from `resume_from` or `warm_start` if
  // given.
  absl::StatusOr<search::SearchResult> Run(
      const search::ProgressiveOptions& options,
      std::vector<search::StepReport>* steps,
      const std::atomic<bool>* cancel = nullptr, bool checkpoints = false,
      absl::string_view resume_from = {}, absl::string_view warm_start = {}) {
    search::SearchObserver observer;
    observer.on_step = [steps](const search::StepReport& report) {
      steps->push_back(report);
      return absl::OkStatus();
    };
    observer.cancel = cancel;
    observer.checkpoints = checkpoints;
    return search::RunProgressiveSearch(*model_, calib_, train_, options,
                                        observer, resume_from, warm_start);
  }

  std::unique_ptr<engine::Model> model_;
  search::LabeledData calib_;
  search::LabeledData train_;
};

}  // namespace mixq::testing

#endif  // MIXQ_TESTS_SEARCH_SEARCH_FIXTURE_H_
