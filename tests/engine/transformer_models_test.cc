// Transformer exports of torch.onnx.export (tests/fixtures/, made by
// scripts/make_transformer_models.py): nn.TransformerEncoder, a tiny ViT with
// exact and tanh GELU and a BERT-style block, each at opsets 13 and 17 with a
// dynamic batch; torchvision's Swin (shifted windows: a ScatterND-built mask,
// Mod on shapes) and ConvNeXt (scripts/make_swin_models.py) likewise.
// Each must import, match PyTorch at batches 1, 3 and 8, expose its weight
// matrices as quantizable layers, run a quantized forward through the layer
// hooks as the search does, and back-propagate like finite differences.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "engine/model.h"
#include "engine/tensor.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/fixtures.h"
#include "tests/support/gradient_check.h"
#include "tests/support/tensor_compare.h"

namespace mixq::engine {
namespace {

using ::mixq::testing::Pointers;

using ::mixq::testing::FixturePath;
using ::mixq::testing::ReadFloatNpy;

constexpr float kAbsTolerance = 1e-4f;
constexpr float kRelTolerance = 1e-4f;
constexpr int64_t kBatches[] = {1, 3, 8};
// The quantized forward: 8-bit weights (per output channel) and activations
// (per tensor) move the outputs by a few percent of their range at most.
constexpr int kBits = 8;
constexpr float kQuantizedTolerance = 0.1f;
// Finite differences of L = Σ R ⊙ output through the whole graph.
constexpr float kGradEps = 1e-3f;
constexpr double kGradAbsTolerance = 2e-3;
constexpr double kGradRelTolerance = 2e-2;
constexpr int64_t kGradBatch = 2;
constexpr int64_t kGradElements = 3;  // checked per parameter
// Spreads the checked elements over a parameter (a prime).
constexpr int64_t kElementStride = 7919;

struct TransformerFixture {
  std::string arch;  // file prefix
  int opset;
  Shape output;  // per sample
  size_t num_layers;
  // What the layers are, in graph order.
  std::vector<std::string> layer_ops;
};

void PrintTo(const TransformerFixture& f, std::ostream* os) {
  *os << f.arch << "_opset" << f.opset;
}

// Per encoder layer: the attention's in-projection (MatMul on a transposed
// initializer), its out-projection (Gemm), then the two feed-forward MatMuls.
const std::vector<std::string> kEncoderLayers = {
    "MatMul", "Gemm", "MatMul", "MatMul", "MatMul", "Gemm", "MatMul", "MatMul"};
// The patch Conv, the blocks as above, the head Gemm.
const std::vector<std::string> kVitLayers = {
    "Conv",   "MatMul", "Gemm",   "MatMul", "MatMul",
    "MatMul", "Gemm",   "MatMul", "MatMul", "Gemm"};

// q/k/v in one MatMul, the attention output, the feed-forward pair, the head.
const std::vector<std::string> kBertLayers = {"MatMul", "MatMul", "MatMul",
                                              "MatMul", "Gemm"};

// The patch Conv; per block q/k/v, the projection and the MLP pair; the
// head.
const std::vector<std::string> kSwinLayers = {
    "Conv",   "MatMul", "MatMul", "MatMul", "MatMul",
    "MatMul", "MatMul", "MatMul", "MatMul", "Gemm"};
// The stem Conv; per stage the depthwise Conv and the pointwise MatMul pair,
// the downsampling Conv between the stages; the head.
const std::vector<std::string> kConvNextLayers = {"Conv",   "Conv",   "MatMul",
                                                  "MatMul", "Conv",   "Conv",
                                                  "MatMul", "MatMul", "Gemm"};

std::vector<TransformerFixture> Fixtures() {
  std::vector<TransformerFixture> fixtures;
  for (int opset : {13, 17}) {
    fixtures.push_back({"encoder", opset, {6, 32}, 8, kEncoderLayers});
    fixtures.push_back({"vit", opset, {10}, 10, kVitLayers});
    fixtures.push_back({"vit_tanh", opset, {10}, 10, kVitLayers});
    fixtures.push_back({"bert", opset, {5}, 5, kBertLayers});
    fixtures.push_back({"swin", opset, {10}, 10, kSwinLayers});
    fixtures.push_back({"convnext", opset, {10}, 9, kConvNextLayers});
  }
  return fixtures;
}

// Rounds `count` values to a `bits`-bit symmetric grid over their largest
// magnitude.
void FakeQuantize(float* values, int64_t count, int bits) {
  const float levels = static_cast<float>((1 << (bits - 1)) - 1);
  float max_abs = 0;
  for (int64_t i = 0; i < count; ++i) {
    max_abs = std::max(max_abs, std::abs(values[i]));
  }
  if (max_abs == 0) return;
  const float scale = max_abs / levels;
  for (int64_t i = 0; i < count; ++i) {
    values[i] = std::round(values[i] / scale) * scale;
  }
}

// Per-tensor 8-bit fake quantization of every layer input, with the
// straight-through gradient; counts the layers it saw.
class FakeQuantHook : public LayerInputHook {
 public:
  absl::StatusOr<bool> Forward(int layer, const Tensor& x,
                               Tensor* out) override {
    seen_.push_back(layer);
    out->flat() = x.flat();
    FakeQuantize(out->data(), out->size(), kBits);
    return true;
  }
  void Backward(int, const Tensor&, Tensor*) const override {}
  const std::vector<int>& seen() const { return seen_; }

 private:
  std::vector<int> seen_;
};

class TransformerModelTest
    : public ::testing::TestWithParam<TransformerFixture> {
 protected:
  void SetUp() override {
    const TransformerFixture& f = GetParam();
    absl::StatusOr<std::unique_ptr<Model>> model = Model::FromOnnxFile(
        FixturePath(absl::StrCat(f.arch, "_opset", f.opset, ".onnx")));
    ASSERT_TRUE(model.ok()) << model.status();
    model_ = *std::move(model);
    inputs_ = ReadFloatNpy(FixturePath(absl::StrCat(f.arch, "_inputs.npy")));
    ASSERT_EQ(inputs_.dim(0), 8);
  }

  Tensor Reference(int64_t batch) const {
    return testing::FixtureLogits(GetParam().arch, batch);
  }

  std::unique_ptr<Model> model_;
  Tensor inputs_;
};

TEST_P(TransformerModelTest, MatchesPyTorchAtEveryBatch) {
  const std::vector<Tensor>& params = model_->initial_params();
  for (int64_t batch : kBatches) {
    SCOPED_TRACE(absl::StrCat("batch ", batch));
    absl::StatusOr<Tensor> y =
        model_->Forward(inputs_.Slice(0, batch), Pointers(params), nullptr);
    ASSERT_TRUE(y.ok()) << y.status();
    const Tensor expected = Reference(batch);
    Shape shape = {batch};
    shape.insert(shape.end(), GetParam().output.begin(),
                 GetParam().output.end());
    ASSERT_EQ(y->shape(), shape);
    ASSERT_EQ(expected.shape(), shape);
    for (int64_t i = 0; i < y->size(); ++i) {
      const float e = expected.data()[i];
      EXPECT_NEAR(y->data()[i], e, kAbsTolerance + kRelTolerance * std::abs(e))
          << "element " << i;
    }
  }
}

TEST_P(TransformerModelTest, WeightMatricesAreQuantizableLayers) {
  const TransformerFixture& f = GetParam();
  const std::vector<QuantizableLayer>& layers = model_->quantizable_layers();
  ASSERT_EQ(layers.size(), f.num_layers);
  for (size_t i = 0; i < layers.size(); ++i) {
    const QuantizableLayer& layer = layers[i];
    const ParamInfo& param = model_->params()[layer.weight_param];
    EXPECT_EQ(layer.op_type, f.layer_ops[i]) << layer.name;
    // MatMul weights are [in, out]: the output channels are the last axis.
    const int expected_axis = layer.op_type == "MatMul"
                                  ? static_cast<int>(param.shape.size()) - 1
                                  : 0;
    EXPECT_EQ(layer.channel_axis, expected_axis) << layer.name;
    EXPECT_GT(layer.macs, 0) << layer.name;
    // The exporter's "onnx::MatMul_N" initializers are named by their node.
    if (absl::StartsWith(param.name, "onnx::")) {
      EXPECT_EQ(layer.name, layer.node_name);
      EXPECT_THAT(layer.name, ::testing::StartsWith("/"));
    } else {
      EXPECT_EQ(layer.name, param.name);
    }
  }
}

TEST_P(TransformerModelTest, QuantizedForwardRunsThroughTheLayerHooks) {
  std::vector<Tensor> params = model_->initial_params();
  const std::vector<QuantizableLayer>& layers = model_->quantizable_layers();
  for (const QuantizableLayer& layer : layers) {
    Tensor& w = params[layer.weight_param];
    const Shape& shape = w.shape();
    const int64_t channels = shape[layer.channel_axis];
    int64_t inner = 1;
    for (size_t d = layer.channel_axis + 1; d < shape.size(); ++d) {
      inner *= shape[d];
    }
    const int64_t outer = w.size() / (channels * inner);
    // Per output channel c: the weights (o, c, i) for every outer o and
    // inner i.
    for (int64_t c = 0; c < channels; ++c) {
      std::vector<float> values;
      for (int64_t o = 0; o < outer; ++o) {
        for (int64_t i = 0; i < inner; ++i) {
          values.push_back(w.data()[(o * channels + c) * inner + i]);
        }
      }
      FakeQuantize(values.data(), static_cast<int64_t>(values.size()), kBits);
      int64_t k = 0;
      for (int64_t o = 0; o < outer; ++o) {
        for (int64_t i = 0; i < inner; ++i) {
          w.data()[(o * channels + c) * inner + i] = values[k++];
        }
      }
    }
  }
  const Tensor x = inputs_.Slice(0, 3);
  FakeQuantHook hook;
  ForwardTrace trace;
  absl::StatusOr<Tensor> quantized =
      model_->Forward(x, Pointers(params), &trace, &hook);
  ASSERT_TRUE(quantized.ok()) << quantized.status();
  std::vector<int> all(layers.size());
  for (size_t l = 0; l < all.size(); ++l) all[l] = static_cast<int>(l);
  EXPECT_THAT(hook.seen(), ::testing::ElementsAreArray(all));
  const Tensor expected = Reference(3);
  const float range = expected.flat().abs().maxCoeff();
  EXPECT_TRUE(quantized->flat().isFinite().all());
  EXPECT_LT((quantized->flat() - expected.flat()).abs().maxCoeff(),
            kQuantizedTolerance * range);
  EXPECT_GT((quantized->flat() - expected.flat()).abs().maxCoeff(), 0.0f)
      << "quantization must change the output";
  // And back: every layer weight gets a finite, non-zero gradient.
  std::vector<Tensor> grads;
  Tensor upstream(quantized->shape());
  upstream.flat().setConstant(1.0f);
  ASSERT_TRUE(
      model_->Backward(trace, Pointers(params), upstream, &grads, &hook).ok());
  for (const QuantizableLayer& layer : layers) {
    const Tensor& g = grads[layer.weight_param];
    EXPECT_TRUE(g.flat().isFinite().all()) << layer.name;
    EXPECT_GT(g.flat().abs().maxCoeff(), 0.0f) << layer.name;
  }
}

// L = Σ R ⊙ output with R fixed; a few elements of every parameter.
TEST_P(TransformerModelTest, GradientsMatchFiniteDifferences) {
  std::vector<Tensor> params = model_->initial_params();
  const Tensor x = inputs_.Slice(0, kGradBatch);
  std::vector<Tensor> grads;
  const std::function<double()> loss =
      testing::ModelLossAndGradients(*model_, x, params, &grads);
  ASSERT_EQ(grads.size(), params.size());
  for (size_t p = 0; p < params.size(); ++p) {
    const int64_t n = params[p].size();
    for (int64_t k = 0; k < kGradElements; ++k) {
      const int64_t j = (k * kElementStride) % n;
      const auto [plus, minus] =
          testing::EvaluateAround(params[p].data()[j], kGradEps, loss);
      const double numeric = (plus - minus) / (2.0 * kGradEps);
      EXPECT_NEAR(grads[p].data()[j], numeric,
                  kGradAbsTolerance + kGradRelTolerance * std::abs(numeric))
          << model_->params()[p].name << " element " << j;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Exports, TransformerModelTest,
                         ::testing::ValuesIn(Fixtures()), [](const auto& info) {
                           return absl::StrCat(info.param.arch, "_opset",
                                               info.param.opset);
                         });

}  // namespace
}  // namespace mixq::engine
