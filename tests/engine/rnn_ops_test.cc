// The RNN, LSTM and GRU kernels (engine/ops_rnn.cc): splitting the batch
// between threads, the packed layout (Y, Y_h, Y_c), and the attributes and
// shapes they refuse. Their gradients are in the operator-test table
// (op_table.cc). Conformance with
// ONNX's reference outputs is in conformance_test.cc, the import of torch
// exports in rnn_models_test.cc.
#include <algorithm>
#include <functional>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/ops.h"
#include "engine/tensor.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/engine/op_table.h"
#include "tests/support/kernel_testing.h"

namespace mixq::engine {
namespace {

using ::mixq::testing::Attributes;
using ::mixq::testing::IntAttr;
using ::mixq::testing::MakeKernel;
using ::mixq::testing::StringAttr;
using ::mixq::testing::UniformValues;
using ::testing::HasSubstr;

constexpr int64_t kSteps = testing::kRecurrentSteps;
constexpr int64_t kInput = testing::kRecurrentInput;
constexpr int64_t kHidden = testing::kRecurrentHidden;
constexpr int64_t kBatch = 2;
// Enough rows for the recurrence to split the batch between threads.
constexpr int64_t kLargeBatch = 19;

struct RecurrentCase {
  std::string name;
  std::string op_type;
  Attributes attributes;
  std::vector<Shape> inputs;  // X, W, R, then B, sequence_lens, states, P
};

// Batch `n` alone of a tensor whose axis `axis` is the batch.
Tensor Sample(const Tensor& t, int axis, int64_t n) {
  const int64_t outer =
      std::accumulate(t.shape().begin(), t.shape().begin() + axis, int64_t{1},
                      std::multiplies<>());
  const int64_t inner =
      std::accumulate(t.shape().begin() + axis + 1, t.shape().end(), int64_t{1},
                      std::multiplies<>());
  Shape shape = t.shape();
  shape[axis] = 1;
  Tensor out(shape);
  for (int64_t o = 0; o < outer; ++o) {
    std::copy_n(t.data() + (o * t.dim(axis) + n) * inner, inner,
                out.data() + o * inner);
  }
  return out;
}

// The batch splits between threads (when there are several) inside the
// kernels: every sample's output and gradients are those it gets alone, and
// the weight gradients their sum.
TEST(RecurrentKernelTest, SplittingTheBatchChangesNothing) {
  constexpr float kTolerance = 1e-5f;
  const auto hidden = std::pair{std::string("hidden_size"), IntAttr(kHidden)};
  const auto bidirectional =
      std::pair{std::string("direction"), StringAttr("bidirectional")};
  const std::vector<RecurrentCase> cases = {
      {"Rnn",
       "RNN",
       {hidden},
       testing::RecurrentInputs(1, 1, true, 1, false, kLargeBatch)},
      {"Lstm",
       "LSTM",
       {hidden, bidirectional},
       testing::RecurrentInputs(2, 4, true, 2, true, kLargeBatch)},
      {"Gru_linear_before_reset",
       "GRU",
       {hidden, bidirectional, {"linear_before_reset", IntAttr(1)}},
       testing::RecurrentInputs(2, 3, true, 1, false, kLargeBatch)},
      {"Gru",
       "GRU",
       {hidden, {"direction", StringAttr("reverse")}},
       testing::RecurrentInputs(1, 3, true, 1, false, kLargeBatch)},
  };
  // Inputs with a batch axis: X (axis 1) and the initial states (axis 1).
  const auto batch_axis = [](size_t i) {
    return i == 0 || i == 5 || i == 6 ? 1 : -1;
  };
  for (const RecurrentCase& c : cases) {
    absl::StatusOr<std::unique_ptr<Kernel>> kernel =
        MakeKernel(c.op_type, c.attributes);
    ASSERT_TRUE(kernel.ok()) << kernel.status();
    std::mt19937 rng(13);
    std::vector<Tensor> inputs;
    for (const Shape& shape : c.inputs) {
      inputs.emplace_back(shape, UniformValues(NumElements(shape), &rng));
    }
    // Runs the kernel forward and back with upstream gradient `upstream`.
    const auto run = [&](const std::vector<Tensor>& in, const Tensor& upstream,
                         Tensor* out, std::vector<Tensor>* grads) {
      std::vector<const Tensor*> pointers;
      std::vector<const Shape*> shapes;
      for (const Tensor& t : in) {
        pointers.push_back(&t);
        shapes.push_back(&t.shape());
      }
      *out = Tensor(*(*kernel)->OutputShape(shapes));
      (*kernel)->Forward(pointers, out);
      grads->clear();
      for (const Tensor& t : in) grads->emplace_back(t.shape());
      std::vector<Tensor*> grad_pointers;
      for (Tensor& g : *grads) grad_pointers.push_back(&g);
      (*kernel)->Backward(pointers, upstream, grad_pointers);
    };
    std::vector<const Shape*> shapes;
    for (const Tensor& t : inputs) shapes.push_back(&t.shape());
    const Shape out_shape = *(*kernel)->OutputShape(shapes);
    const Tensor upstream(out_shape,
                          UniformValues(NumElements(out_shape), &rng));
    Tensor out;
    std::vector<Tensor> grads;
    run(inputs, upstream, &out, &grads);

    std::vector<Tensor> weight_sums;
    for (const Tensor& t : inputs) weight_sums.emplace_back(t.shape());
    for (int64_t n = 0; n < kLargeBatch; ++n) {
      std::vector<Tensor> sample = inputs;
      for (size_t i = 0; i < sample.size(); ++i) {
        if (batch_axis(i) >= 0) sample[i] = Sample(inputs[i], batch_axis(i), n);
      }
      Tensor sample_out;
      std::vector<Tensor> sample_grads;
      run(sample, Sample(upstream, 2, n), &sample_out, &sample_grads);
      const std::string what = absl::StrCat(c.name, " sample ", n);
      EXPECT_TRUE(
          sample_out.flat().isApprox(Sample(out, 2, n).flat(), kTolerance))
          << what;
      for (size_t i = 0; i < sample.size(); ++i) {
        if (sample[i].size() == 0) continue;
        if (batch_axis(i) >= 0) {
          EXPECT_TRUE(sample_grads[i].flat().isApprox(
              Sample(grads[i], batch_axis(i), n).flat(), kTolerance))
              << what << " input " << i;
        } else {
          weight_sums[i].flat() += sample_grads[i].flat();
        }
      }
    }
    for (size_t i = 0; i < inputs.size(); ++i) {
      if (batch_axis(i) >= 0 || inputs[i].size() == 0) continue;
      EXPECT_TRUE(weight_sums[i].flat().isApprox(grads[i].flat(), kTolerance))
          << c.name << " input " << i;
    }
  }
}

// The packed output is [T + 2, D, B, H] (LSTM) or [T + 1, D, B, H] (GRU):
// Y, then Y_h, then Y_c. With one step, Y_h is Y's only step.
TEST(RecurrentKernelTest, PacksYThenFinalStates) {
  for (const auto& [op, gates, states] :
       {std::tuple{"LSTM", 4, 2}, std::tuple{"GRU", 3, 1},
        std::tuple{"RNN", 1, 1}}) {
    absl::StatusOr<std::unique_ptr<Kernel>> kernel =
        MakeKernel(op, {{"hidden_size", IntAttr(kHidden)},
                        {"direction", StringAttr("bidirectional")}});
    ASSERT_TRUE(kernel.ok()) << kernel.status();
    std::mt19937 rng(3);
    std::vector<Tensor> inputs;
    for (const Shape& shape : testing::RecurrentInputs(2, gates, true, 0)) {
      inputs.emplace_back(shape, UniformValues(NumElements(shape), &rng));
    }
    inputs[0] =
        Tensor({1, kBatch, kInput}, UniformValues(kBatch * kInput, &rng));
    std::vector<const Shape*> shapes;
    std::vector<const Tensor*> pointers;
    for (const Tensor& t : inputs) {
      shapes.push_back(&t.shape());
      pointers.push_back(&t);
    }
    absl::StatusOr<Shape> shape = (*kernel)->OutputShape(shapes);
    ASSERT_TRUE(shape.ok()) << shape.status();
    EXPECT_EQ(*shape, (Shape{1 + states, 2, kBatch, kHidden})) << op;
    Tensor out(*shape);
    (*kernel)->Forward(pointers, &out);
    const int64_t step = 2 * kBatch * kHidden;
    for (int64_t k = 0; k < step; ++k) {
      EXPECT_EQ(out.data()[k], out.data()[step + k]) << op << " at " << k;
    }
  }
}

TEST(RecurrentKernelTest, RefusesWhatItDoesNotCompute) {
  const auto hidden = std::pair{std::string("hidden_size"), IntAttr(kHidden)};
  EXPECT_THAT(
      MakeKernel("LSTM", {hidden, {"clip", IntAttr(3)}}).status().message(),
      HasSubstr("'clip' is not supported"));
  EXPECT_THAT(
      MakeKernel("GRU", {hidden, {"layout", IntAttr(1)}}).status().message(),
      HasSubstr("layout 1"));
  EXPECT_THAT(MakeKernel("LSTM", {hidden, {"input_forget", IntAttr(1)}})
                  .status()
                  .message(),
              HasSubstr("input_forget"));
  EXPECT_THAT(MakeKernel("GRU", {hidden, {"direction", StringAttr("up")}})
                  .status()
                  .message(),
              HasSubstr("unknown direction 'up'"));
  EXPECT_THAT(MakeKernel("GRU", {}).status().message(),
              HasSubstr("hidden_size 0"));

  absl::StatusOr<std::unique_ptr<Kernel>> kernel = MakeKernel("GRU", {hidden});
  ASSERT_TRUE(kernel.ok());
  const Shape x = {kSteps, kBatch, kInput};
  const Shape w = {1, 3 * kHidden, kInput};
  const Shape wrong_r = {1, 3 * kHidden, kHidden + 1};
  const Shape* shapes[] = {&x, &w, &wrong_r};
  EXPECT_THAT((*kernel)->OutputShape(shapes).status().message(),
              HasSubstr("R has shape [1, 9, 4]; expected [1, 9, 3]"));
}

// The importer passes a constant full-length sequence_lens as an attribute;
// another sequence length is refused.
TEST(RecurrentKernelTest, ChecksTheSequenceLength) {
  absl::StatusOr<std::unique_ptr<Kernel>> kernel = MakeKernel(
      "LSTM", {{"hidden_size", IntAttr(kHidden)},
               {std::string(kSequenceLengthAttribute), IntAttr(kSteps + 1)}});
  ASSERT_TRUE(kernel.ok()) << kernel.status();
  const std::vector<Shape> inputs = testing::RecurrentInputs(1, 4, false, 0);
  const Shape* shapes[] = {&inputs[0], &inputs[1], &inputs[2]};
  EXPECT_THAT((*kernel)->OutputShape(shapes).status().message(),
              HasSubstr("only full-length sequences"));
}

}  // namespace
}  // namespace mixq::engine
