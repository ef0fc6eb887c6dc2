// Text models of torch.onnx.export with integer inputs (tests/fixtures/, made
// by scripts/make_text_models.py): an nn.Embedding bag, a BERT-style encoder
// taking input_ids and attention_mask (int64), and an embedding + GRU, at
// opsets 13 and 17 with a dynamic batch. Each must import, decode its .npz
// keyed by input name into the packed input, match PyTorch at batches 1, 3
// and 8, expose its embedding tables as quantizable layers the layer hooks
// skip, refuse ids beyond the vocabulary, and back-propagate into the tables
// like finite differences.
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
#include "engine/model_inputs.h"
#include "engine/tensor.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/fixtures.h"
#include "tests/support/gradient_check.h"
#include "tests/support/tensor_compare.h"
#include "util/file.h"

namespace mixq::engine {
namespace {

using ::mixq::testing::ExpectClose;
using ::mixq::testing::FixturePath;
using ::mixq::testing::Pointers;
using ::mixq::testing::ReadFloatNpy;

constexpr int64_t kBatches[] = {1, 3, 8};
constexpr int64_t kTokens = 12;
// Finite differences of L = Σ R ⊙ output, on table rows the ids use.
constexpr float kGradEps = 1e-2f;
constexpr double kGradAbsTolerance = 2e-3;
constexpr double kGradRelTolerance = 2e-2;
constexpr int64_t kGradBatch = 2;

struct TextFixture {
  std::string arch;  // file prefix
  int opset;
  std::vector<std::string> inputs;
  int64_t classes;
  // The embedding tables (quantizable Gather layers), in graph order.
  std::vector<std::string> embeddings;
  size_t num_layers;
};

void PrintTo(const TextFixture& f, std::ostream* os) {
  *os << f.arch << "_opset" << f.opset;
}

std::vector<TextFixture> Fixtures() {
  std::vector<TextFixture> fixtures;
  for (int opset : {13, 17}) {
    fixtures.push_back(
        {"embed_bag", opset, {"input_ids"}, 4, {"embed.weight"}, 2});
    // The position table is gathered by a constant Range: not a layer. Per
    // block: q, k, v, out, two feed-forward; then the head.
    fixtures.push_back({"text_bert",
                        opset,
                        {"input_ids", "attention_mask"},
                        3,
                        {"tokens.weight"},
                        1 + 2 * 6 + 1});
    fixtures.push_back(
        {"text_gru", opset, {"input_ids"}, 4, {"embed.weight"}, 4});
    // nn.TransformerEncoder with src_key_padding_mask = ids == 0: the float
    // mask is a batch-shaped ConstantOfShape filled by Where at run time.
    fixtures.push_back(
        {"text_padmask", opset, {"input_ids"}, 3, {"embed.weight"}, 6});
  }
  return fixtures;
}

class TextModelTest : public ::testing::TestWithParam<TextFixture> {
 protected:
  void SetUp() override {
    const TextFixture& f = GetParam();
    absl::StatusOr<std::unique_ptr<Model>> model = Model::FromOnnxFile(
        FixturePath(absl::StrCat(f.arch, "_opset", f.opset, ".onnx")));
    ASSERT_TRUE(model.ok()) << model.status();
    model_ = *std::move(model);
    absl::StatusOr<std::string> bytes =
        ReadFile(FixturePath(absl::StrCat(f.arch, "_inputs.npz")));
    ASSERT_TRUE(bytes.ok()) << bytes.status();
    absl::StatusOr<Tensor> inputs =
        DecodeModelInputs(model_->inputs(), *bytes, "inputs.npz");
    ASSERT_TRUE(inputs.ok()) << inputs.status();
    inputs_ = *std::move(inputs);
    ASSERT_EQ(inputs_.dim(0), 8);
  }

  Tensor Reference(int64_t batch) const {
    return testing::FixtureLogits(GetParam().arch, batch);
  }

  std::unique_ptr<Model> model_;
  Tensor inputs_;
};

TEST_P(TextModelTest, ListsItsIntegerInputsAndPacksThem) {
  const TextFixture& f = GetParam();
  ASSERT_EQ(model_->inputs().size(), f.inputs.size());
  int64_t packed = 0;
  for (size_t i = 0; i < f.inputs.size(); ++i) {
    const GraphInput& input = model_->inputs()[i];
    EXPECT_EQ(input.name, f.inputs[i]);
    EXPECT_EQ(input.type, GraphInput::Type::kInt64);
    EXPECT_EQ(input.shape, (Shape{-1, kTokens}));
    EXPECT_EQ(input.sample_size, kTokens);
    packed += input.sample_size;
  }
  EXPECT_TRUE(model_->has_integer_inputs());
  const Shape expected =
      f.inputs.size() == 1 ? Shape{-1, kTokens} : Shape{-1, packed};
  EXPECT_EQ(model_->input_shape(), expected);
  EXPECT_EQ(inputs_.dim(1), packed);
}

TEST_P(TextModelTest, MatchesPyTorchAtEveryBatch) {
  const std::vector<Tensor>& params = model_->initial_params();
  for (int64_t batch : kBatches) {
    SCOPED_TRACE(absl::StrCat("batch ", batch));
    absl::StatusOr<Tensor> y =
        model_->Forward(inputs_.Slice(0, batch), Pointers(params), nullptr);
    ASSERT_TRUE(y.ok()) << y.status();
    ASSERT_EQ(y->shape(), (Shape{batch, GetParam().classes}));
    ExpectClose(*y, Reference(batch), absl::StrCat("batch ", batch));
  }
}

TEST_P(TextModelTest, EmbeddingTablesAreQuantizableLayersPerRow) {
  const TextFixture& f = GetParam();
  const std::vector<QuantizableLayer>& layers = model_->quantizable_layers();
  EXPECT_EQ(layers.size(), f.num_layers);
  std::vector<std::string> embeddings;
  for (const QuantizableLayer& layer : layers) {
    if (layer.op_type != "Gather") {
      // A recurrent node's R is weight-only: the hidden state is not hooked.
      const bool recurrent_r = absl::EndsWith(layer.name, "/R");
      EXPECT_EQ(layer.quantize_input, !recurrent_r) << layer.name;
      EXPECT_GT(layer.macs, 0) << layer.name;
      continue;
    }
    embeddings.push_back(layer.name);
    EXPECT_EQ(layer.channel_axis, 0) << layer.name;
    EXPECT_EQ(layer.macs, 0) << layer.name;
    EXPECT_FALSE(layer.quantize_input) << layer.name;
    EXPECT_EQ(model_->params()[layer.weight_param].name, layer.name);
  }
  EXPECT_EQ(embeddings, f.embeddings);
}

// A hook that records the layers it is called for and leaves their inputs.
class RecordingHook : public LayerInputHook {
 public:
  absl::StatusOr<bool> Forward(int layer, const Tensor&, Tensor*) override {
    seen_.push_back(layer);
    return false;
  }
  void Backward(int, const Tensor&, Tensor*) const override {}
  const std::vector<int>& seen() const { return seen_; }

 private:
  std::vector<int> seen_;
};

TEST_P(TextModelTest, LayerHooksSkipEmbeddings) {
  RecordingHook hook;
  ASSERT_TRUE(model_
                  ->Forward(inputs_.Slice(0, 2),
                            Pointers(model_->initial_params()), nullptr, &hook)
                  .ok());
  std::vector<int> expected;
  const std::vector<QuantizableLayer>& layers = model_->quantizable_layers();
  for (size_t l = 0; l < layers.size(); ++l) {
    if (layers[l].quantize_input) expected.push_back(static_cast<int>(l));
  }
  EXPECT_THAT(hook.seen(), ::testing::UnorderedElementsAreArray(expected));
}

TEST_P(TextModelTest, IdsBeyondTheVocabularyAreAnErrorNamingTheNode) {
  Tensor x = inputs_.Slice(0, 2);
  x.data()[3] = 1e6f;  // input_ids[0, 3]
  absl::StatusOr<Tensor> y =
      model_->Forward(x, Pointers(model_->initial_params()), nullptr);
  ASSERT_EQ(y.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(y.status().message(), ::testing::HasSubstr("(Gather)"));
  EXPECT_THAT(y.status().message(), ::testing::HasSubstr("index 1e+06"));
  EXPECT_TRUE(IsInputValueError(y.status()));
  // A shape error is the model's or the caller's, not the values'.
  const Tensor wrong({2, 1});
  absl::StatusOr<Tensor> shape_error =
      model_->Forward(wrong, Pointers(model_->initial_params()), nullptr);
  ASSERT_FALSE(shape_error.ok());
  EXPECT_FALSE(IsInputValueError(shape_error.status()));
}

// L = Σ R ⊙ output with R fixed; table elements of rows the first samples
// use (other rows have zero gradient).
TEST_P(TextModelTest, TableGradientsMatchFiniteDifferences) {
  std::vector<Tensor> params = model_->initial_params();
  const Tensor x = inputs_.Slice(0, kGradBatch);
  std::vector<Tensor> grads;
  const std::function<double()> loss =
      testing::ModelLossAndGradients(*model_, x, params, &grads);
  ASSERT_EQ(grads.size(), params.size());
  for (const QuantizableLayer& layer : model_->quantizable_layers()) {
    if (layer.op_type != "Gather") continue;
    Tensor& table = params[layer.weight_param];
    const int64_t width = table.dim(1);
    // The rows of the first two ids of sample 0, and an unused row.
    const int64_t used[] = {static_cast<int64_t>(x.data()[0]),
                            static_cast<int64_t>(x.data()[1])};
    for (int64_t row : used) {
      for (int64_t c : {int64_t{0}, width / 2, width - 1}) {
        float& w = table.data()[row * width + c];
        const testing::CentralValues v =
            testing::EvaluateAround(w, kGradEps, loss);
        const double numeric = (v.plus - v.minus) / (2.0 * kGradEps);
        const double analytic =
            grads[layer.weight_param].data()[row * width + c];
        EXPECT_NEAR(analytic, numeric,
                    kGradAbsTolerance + kGradRelTolerance * std::abs(numeric))
            << layer.name << " row " << row << " column " << c;
      }
    }
    EXPECT_GT(grads[layer.weight_param].flat().abs().maxCoeff(), 0.0f);
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, TextModelTest,
                         ::testing::ValuesIn(Fixtures()), [](const auto& info) {
                           return absl::StrCat(info.param.arch, "_opset",
                                               info.param.opset);
                         });

}  // namespace
}  // namespace mixq::engine
