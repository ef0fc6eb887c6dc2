// Test support: reads the checked-in fixtures (tests/fixtures/) and the
// Fashion-MNIST test split the dataset-fashion-mnist package installs.
// Header-only; needs GoogleTest and MIXQ_SOURCE_DIR, as every test target
// (mixq_add_test) has.
#ifndef MIXQ_TESTS_SUPPORT_FIXTURES_H_
#define MIXQ_TESTS_SUPPORT_FIXTURES_H_

#include <cstdint>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "engine/dataset.h"
#include "engine/tensor.h"
#include "gtest/gtest.h"
#include "util/file.h"
#include "util/status_macros.h"

#ifndef MIXQ_SOURCE_DIR
#error "tests/support/fixtures.h needs MIXQ_SOURCE_DIR (see mixq_add_test)"
#endif

namespace mixq::testing {

// The path of `file` in tests/fixtures/.
inline std::string FixturePath(absl::string_view file) {
  return absl::StrCat(MIXQ_SOURCE_DIR "/tests/fixtures/", file);
}

// Reads a float32 .npy file; a test failure and an empty tensor when it
// cannot be read or decoded.
inline engine::Tensor ReadFloatNpy(const std::string& path) {
  absl::StatusOr<std::string> bytes = ReadFile(path);
  EXPECT_TRUE(bytes.ok()) << bytes.status();
  if (!bytes.ok()) return engine::Tensor();
  absl::StatusOr<engine::Tensor> tensor = engine::DecodeInputs(*bytes, path);
  EXPECT_TRUE(tensor.ok()) << tensor.status();
  return tensor.ok() ? *std::move(tensor) : engine::Tensor();
}

// PyTorch's reference outputs for fixture `arch` at batch `batch`
// (<arch>_logits_b<batch>.npy, as the fixture scripts write them).
inline engine::Tensor FixtureLogits(absl::string_view arch, int64_t batch) {
  return ReadFloatNpy(
      FixturePath(absl::StrCat(arch, "_logits_b", batch, ".npy")));
}

inline constexpr char kFashionMnistDir[] = "/usr/share/datasets/fashion-mnist/";

inline std::string FashionMnistImagesPath() {
  return absl::StrCat(kFashionMnistDir, "t10k-images-idx3-ubyte.gz");
}

inline std::string FashionMnistLabelsPath() {
  return absl::StrCat(kFashionMnistDir, "t10k-labels-idx1-ubyte.gz");
}

// Whether dataset-fashion-mnist is installed; tests skip when it is not.
inline bool FashionMnistInstalled() {
  return std::filesystem::exists(FashionMnistImagesPath());
}

struct FashionMnistTestSplit {
  engine::Tensor images;  // [10000, 28, 28] in [0, 1]
  std::vector<int64_t> labels;
};

// Reads and decodes the installed test split (DecodeInputs, DecodeLabels);
// their errors, or ReadFile's, otherwise.
inline absl::StatusOr<FashionMnistTestSplit> ReadFashionMnistTestSplit() {
  const std::string images_path = FashionMnistImagesPath();
  const std::string labels_path = FashionMnistLabelsPath();
  MIXQ_ASSIGN_OR_RETURN(const std::string image_bytes, ReadFile(images_path));
  MIXQ_ASSIGN_OR_RETURN(const std::string label_bytes, ReadFile(labels_path));
  FashionMnistTestSplit split;
  MIXQ_ASSIGN_OR_RETURN(split.images,
                        engine::DecodeInputs(image_bytes, images_path));
  MIXQ_ASSIGN_OR_RETURN(split.labels,
                        engine::DecodeLabels(label_bytes, labels_path));
  return split;
}

}  // namespace mixq::testing

#endif  // MIXQ_TESTS_SUPPORT_FIXTURES_H_
