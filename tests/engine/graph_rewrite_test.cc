// FoldBatchNorm: the BN fixtures fold completely and compute what they
// computed before; small built graphs cover Gemm (transB 0/1, alpha, beta, C
// per column, broadcast or absent) and Conv (with and without bias) against
// the unfolded graph, a folded weight by hand, and the graphs that must stay
// unfolded (shared producer output, BN after a non-Conv, shared weight,
// malformed statistics), each with its reason.
#include "engine/graph_rewrite.h"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <ostream>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/model.h"
#include "engine/tensor.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "onnx/onnx_pb.h"
#include "tests/support/fixtures.h"
#include "tests/support/onnx_builder.h"
#include "util/file.h"

namespace mixq::engine {
namespace {

using ::mixq::testing::FixturePath;
using ::mixq::testing::OnnxBuilder;
using ::mixq::testing::ReadFloatNpy;
using ::mixq::testing::SetFloat;
using ::mixq::testing::SetInt;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::Field;
using ::testing::HasSubstr;
using ::testing::SizeIs;

// Folding changes float rounding only: outputs agree to this, absolutely
// (the built graphs' outputs are O(1)).
constexpr float kFoldTolerance = 1e-5f;
// The folded fixtures against PyTorch's logits, as engine_cnn_models_test
// checks the unfolded ones.
constexpr float kPyTorchTolerance = 1e-4f;

onnx::ModelProto Parse(const std::string& bytes) {
  onnx::ModelProto model;
  EXPECT_TRUE(model.ParseFromString(bytes));
  return model;
}

int CountOps(const std::string& bytes, const std::string& op_type) {
  const onnx::ModelProto model = Parse(bytes);
  int n = 0;
  for (const onnx::NodeProto& node : model.graph().node()) {
    n += node.op_type() == op_type;
  }
  return n;
}

// The first graph output of the model in `bytes` for `input`, with the
// weights stored in the file.
absl::StatusOr<Tensor> RunModel(const std::string& bytes, const Tensor& input) {
  absl::StatusOr<std::unique_ptr<Model>> model = Model::FromOnnxBytes(bytes);
  if (!model.ok()) return model.status();
  std::vector<const Tensor*> params;
  for (const Tensor& p : (*model)->initial_params()) params.push_back(&p);
  return (*model)->Forward(input, params, nullptr);
}

float MaxAbsDifference(const Tensor& a, const Tensor& b) {
  EXPECT_EQ(a.shape(), b.shape());
  if (a.shape() != b.shape()) return INFINITY;
  return (a.flat() - b.flat()).abs().maxCoeff();
}

// Folds `bytes` and checks the folded model gives the same outputs on
// `input` within `tolerance` (absolute); returns the folded bytes.
std::string FoldAndCompare(const std::string& bytes, const Tensor& input,
                           FoldReport* report,
                           float tolerance = kFoldTolerance) {
  absl::StatusOr<std::string> folded = FoldBatchNorm(bytes, report);
  EXPECT_TRUE(folded.ok()) << folded.status();
  if (!folded.ok()) return "";
  const absl::StatusOr<Tensor> before = RunModel(bytes, input);
  const absl::StatusOr<Tensor> after = RunModel(*folded, input);
  EXPECT_TRUE(before.ok()) << before.status();
  EXPECT_TRUE(after.ok()) << after.status();
  if (before.ok() && after.ok()) {
    EXPECT_LE(MaxAbsDifference(*before, *after), tolerance);
  }
  return *folded;
}

// ---------------------------------------------------------- Fixtures ----

struct FixtureCase {
  std::string onnx;
  std::string inputs;
  std::string logits;  // PyTorch's
  int batch_norms;
  // Absolute, on the logits. ResNet's logits reach 8.4 and agree to 2.5e-6.
  // The random 52-layer MobileNet's logits (|max| 1.02) differ by 3.2e-5:
  // float32 rounding amplified through the network, the same size as the
  // unfolded graph's own difference from PyTorch (1.8e-5), so 1e-5 is below
  // its noise floor.
  float tolerance;
};

void PrintTo(const FixtureCase& c, std::ostream* os) { *os << c.onnx; }

class FoldFixtureTest : public ::testing::TestWithParam<FixtureCase> {};

TEST_P(FoldFixtureTest, FoldsEveryBatchNormAndKeepsTheLogits) {
  const FixtureCase& c = GetParam();
  const absl::StatusOr<std::string> bytes = ReadFile(FixturePath(c.onnx));
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  ASSERT_EQ(CountOps(*bytes, "BatchNormalization"), c.batch_norms);
  const Tensor input = ReadFloatNpy(FixturePath(c.inputs));
  ASSERT_FALSE(input.empty());

  FoldReport report;
  const std::string folded =
      FoldAndCompare(*bytes, input, &report, c.tolerance);
  EXPECT_EQ(report.folded, c.batch_norms);
  EXPECT_THAT(report.unfolded, SizeIs(0));
  EXPECT_EQ(CountOps(folded, "BatchNormalization"), 0);
  const absl::StatusOr<Tensor> logits = RunModel(folded, input);
  ASSERT_TRUE(logits.ok()) << logits.status();
  EXPECT_LE(MaxAbsDifference(*logits, ReadFloatNpy(FixturePath(c.logits))),
            kPyTorchTolerance);
  // The statistics are gone; every initializer left is read by a node.
  absl::StatusOr<std::unique_ptr<Model>> before = Model::FromOnnxBytes(*bytes);
  absl::StatusOr<std::unique_ptr<Model>> after = Model::FromOnnxBytes(folded);
  ASSERT_TRUE(before.ok() && after.ok());
  EXPECT_LT((*after)->params().size(), (*before)->params().size());
  EXPECT_EQ(Parse(folded).graph().initializer_size(),
            static_cast<int>((*after)->params().size()));
  // The Conv and Gemm weights stay the quantizable layers.
  EXPECT_EQ((*after)->quantizable_layers().size(),
            (*before)->quantizable_layers().size());
}

INSTANTIATE_TEST_SUITE_P(
    Fixtures, FoldFixtureTest,
    ::testing::Values(FixtureCase{"resnet_fmnist_bn.onnx",
                                  "resnet_fmnist_inputs.npy",
                                  "resnet_fmnist_logits.npy", 8, 1e-5f},
                      FixtureCase{"mobilenet_v2_bn.onnx",
                                  "mobilenet_v2_inputs.npy",
                                  "mobilenet_v2_logits.npy", 52, 5e-5f}));

// ------------------------------------------------------ Built graphs ----

struct BatchNormParams {
  std::vector<float> scale;
  std::vector<float> bias;
  std::vector<float> mean;
  std::vector<float> var;
  float epsilon = 1e-5f;
};

std::vector<float> Random(std::mt19937& rng, size_t n, float lo, float hi) {
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

BatchNormParams RandomBatchNorm(std::mt19937& rng, int64_t channels) {
  const size_t n = static_cast<size_t>(channels);
  return {Random(rng, n, 0.5f, 1.5f), Random(rng, n, -0.5f, 0.5f),
          Random(rng, n, -1.0f, 1.0f), Random(rng, n, 0.2f, 2.0f)};
}

// BatchNormalization `name` from `x` to `y`; its initializers are
// "<name>.scale", ".bias", ".mean", ".var".
void AddBatchNorm(OnnxBuilder& b, const std::string& name, const std::string& x,
                  const std::string& y, const BatchNormParams& p) {
  const int64_t c = static_cast<int64_t>(p.scale.size());
  b.Initializer(name + ".scale", {c}, p.scale)
      .Initializer(name + ".bias", {c}, p.bias)
      .Initializer(name + ".mean", {c}, p.mean)
      .Initializer(name + ".var", {c}, p.var);
  onnx::NodeProto* node = b.Node(
      "BatchNormalization",
      {x, name + ".scale", name + ".bias", name + ".mean", name + ".var"}, {y},
      name);
  SetFloat(node, "epsilon", p.epsilon);
}

Tensor RandomInput(std::mt19937& rng, Shape shape) {
  const std::vector<float> values =
      Random(rng, static_cast<size_t>(NumElements(shape)), -2.0f, 2.0f);
  return Tensor(std::move(shape), values);
}

constexpr int64_t kBatch = 3;
constexpr int64_t kGemmIn = 5;
constexpr int64_t kGemmOut = 4;

struct GemmCase {
  std::string name;
  bool trans_b;
  Shape c_shape;  // empty: no C
  float alpha;
  float beta;
};

void PrintTo(const GemmCase& c, std::ostream* os) { *os << c.name; }

class FoldGemmTest : public ::testing::TestWithParam<GemmCase> {};

TEST_P(FoldGemmTest, MatchesTheUnfoldedGraph) {
  const GemmCase& c = GetParam();
  std::mt19937 rng(7);
  OnnxBuilder b;
  b.Input("x", {-1, kGemmIn}).Output("y");
  const Shape w_shape =
      c.trans_b ? Shape{kGemmOut, kGemmIn} : Shape{kGemmIn, kGemmOut};
  b.Initializer("w", w_shape, Random(rng, kGemmIn * kGemmOut, -1.0f, 1.0f));
  std::vector<std::string> inputs = {"x", "w"};
  if (!c.c_shape.empty()) {
    b.Initializer("c", c.c_shape,
                  Random(rng, NumElements(c.c_shape), -1.0f, 1.0f));
    inputs.push_back("c");
  }
  onnx::NodeProto* gemm = b.Node("Gemm", inputs, {"h"}, "fc");
  SetInt(gemm, "transB", c.trans_b ? 1 : 0);
  SetFloat(gemm, "alpha", c.alpha);
  SetFloat(gemm, "beta", c.beta);
  AddBatchNorm(b, "bn", "h", "y", RandomBatchNorm(rng, kGemmOut));

  FoldReport report;
  const std::string folded =
      FoldAndCompare(b.Bytes(), RandomInput(rng, {kBatch, kGemmIn}), &report);
  EXPECT_EQ(report.folded, 1);
  EXPECT_EQ(CountOps(folded, "BatchNormalization"), 0);
  const onnx::GraphProto graph = Parse(folded).graph();
  ASSERT_EQ(graph.node_size(), 1);
  EXPECT_EQ(graph.node(0).output(0), "y");
  EXPECT_EQ(graph.node(0).input_size(), 3);  // a C was created if absent
  // w and the bias: the BN's initializers are gone.
  EXPECT_EQ(graph.initializer_size(), 2);
}

INSTANTIATE_TEST_SUITE_P(
    Gemm, FoldGemmTest,
    ::testing::Values(
        GemmCase{"TransB0", false, {kGemmOut}, 1.0f, 1.0f},
        GemmCase{"TransB1AlphaBeta", true, {kGemmOut}, 0.7f, 1.3f},
        GemmCase{"TransB0AlphaBeta", false, {1, kGemmOut}, 0.7f, -0.4f},
        GemmCase{"ScalarC", true, {1}, 1.5f, 2.0f},
        GemmCase{"NoC", true, {}, 0.5f, 3.0f}),
    [](const ::testing::TestParamInfo<GemmCase>& info) {
      return info.param.name;
    });

class FoldConvTest : public ::testing::TestWithParam<bool> {};

TEST_P(FoldConvTest, MatchesTheUnfoldedGraph) {
  const bool with_bias = GetParam();
  std::mt19937 rng(11);
  OnnxBuilder b;
  b.Input("x", {-1, 2, 5, 5}).Output("y");
  b.Initializer("w", {3, 2, 3, 3}, Random(rng, 3 * 2 * 3 * 3, -1.0f, 1.0f));
  std::vector<std::string> inputs = {"x", "w"};
  if (with_bias) {
    b.Initializer("b", {3}, Random(rng, 3, -1.0f, 1.0f));
    inputs.push_back("b");
  }
  onnx::NodeProto* conv = b.Node("Conv", inputs, {"h"}, "conv");
  ::mixq::testing::SetInts(conv, "pads", {1, 1, 1, 1});
  AddBatchNorm(b, "bn", "h", "z", RandomBatchNorm(rng, 3));
  b.Node("Relu", {"z"}, {"y"}, "relu");

  FoldReport report;
  const std::string folded =
      FoldAndCompare(b.Bytes(), RandomInput(rng, {kBatch, 2, 5, 5}), &report);
  EXPECT_EQ(report.folded, 1);
  const onnx::GraphProto graph = Parse(folded).graph();
  ASSERT_EQ(graph.node_size(), 2);
  EXPECT_EQ(graph.node(0).op_type(), "Conv");
  EXPECT_THAT(graph.node(0).output(), ElementsAre("z"));
  EXPECT_EQ(graph.node(0).input_size(), 3);
  EXPECT_EQ(graph.initializer_size(), 2);
}

INSTANTIATE_TEST_SUITE_P(Conv, FoldConvTest, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& info) {
                           return info.param ? "WithBias" : "WithoutBias";
                         });

// The float values of initializer `name` of `model`.
std::vector<float> InitializerValues(const onnx::ModelProto& model,
                                     const std::string& name) {
  for (const onnx::TensorProto& t : model.graph().initializer()) {
    if (t.name() != name) continue;
    std::vector<float> values(t.raw_data().size() / sizeof(float));
    std::memcpy(values.data(), t.raw_data().data(), t.raw_data().size());
    return values;
  }
  ADD_FAILURE() << "no initializer " << name;
  return {};
}

TEST(FoldBatchNormTest, FoldsConvWeightsAndBiasByHand) {
  // epsilon 1 and var 3 make sqrt(var + epsilon) = 2: factors 0.5 and 1.
  OnnxBuilder b;
  b.Input("x", {-1, 1, 2, 2}).Output("y");
  b.Initializer("w", {2, 1, 1, 1}, {2.0f, 3.0f});
  b.Node("Conv", {"x", "w"}, {"h"}, "conv");
  AddBatchNorm(b, "bn", "h", "y",
               {{1.0f, 2.0f}, {0.5f, -1.0f}, {1.0f, 0.0f}, {3.0f, 3.0f}, 1.0f});
  FoldReport report;
  const absl::StatusOr<std::string> folded = FoldBatchNorm(b.Bytes(), &report);
  ASSERT_TRUE(folded.ok()) << folded.status();
  const onnx::ModelProto model = Parse(*folded);
  // W' = W * f = {1, 3}; b' = (0 - mean) * f + beta = {0, -1}.
  EXPECT_THAT(InitializerValues(model, "w"), ElementsAre(1.0f, 3.0f));
  ASSERT_EQ(model.graph().node(0).input_size(), 3);
  EXPECT_THAT(InitializerValues(model, model.graph().node(0).input(2)),
              ElementsAre(0.0f, -1.0f));
}

TEST(FoldBatchNormTest, SharedStatisticsAreDroppedAfterTheLastFold) {
  std::mt19937 rng(3);
  OnnxBuilder b;
  b.Input("x", {-1, 2}).Output("y");
  b.Initializer("w1", {2, 2}, Random(rng, 4, -1.0f, 1.0f))
      .Initializer("w2", {2, 2}, Random(rng, 4, -1.0f, 1.0f));
  b.Node("Gemm", {"x", "w1"}, {"h1"}, "fc1");
  AddBatchNorm(b, "bn", "h1", "z1", RandomBatchNorm(rng, 2));
  b.Node("Gemm", {"z1", "w2"}, {"h2"}, "fc2");
  // The second BN reads the first one's initializers.
  b.Node("BatchNormalization",
         {"h2", "bn.scale", "bn.bias", "bn.mean", "bn.var"}, {"y"}, "bn2");
  FoldReport report;
  const std::string folded =
      FoldAndCompare(b.Bytes(), RandomInput(rng, {kBatch, 2}), &report);
  EXPECT_EQ(report.folded, 2);
  // w1, w2 and two created biases.
  EXPECT_EQ(Parse(folded).graph().initializer_size(), 4);
}

// ------------------------------------------------------ Left unfolded ----

// A graph input -> Conv -> BN -> ..., with what the case changes.
struct UnfoldedCase {
  std::string name;
  std::string reason;  // a substring of the report's reason
  void (*build)(OnnxBuilder& b);
};

void PrintTo(const UnfoldedCase& c, std::ostream* os) { *os << c.name; }

void ConvBn(OnnxBuilder& b, const std::string& bn_output) {
  std::mt19937 rng(5);
  b.Input("x", {-1, 2, 3, 3});
  b.Initializer("w", {2, 2, 1, 1}, Random(rng, 4, -1.0f, 1.0f));
  b.Node("Conv", {"x", "w"}, {"h"}, "conv");
  AddBatchNorm(b, "bn", "h", bn_output, RandomBatchNorm(rng, 2));
}

const UnfoldedCase kUnfoldedCases[] = {
    {"ConvFeedsTwoConsumers", "other consumers",
     [](OnnxBuilder& b) {
       ConvBn(b, "z");
       b.Node("Relu", {"h"}, {"r"}, "relu");
       b.Node("Add", {"z", "r"}, {"y"}, "add");
       b.Output("y");
     }},
    {"ConvOutputIsAGraphOutput", "graph output",
     [](OnnxBuilder& b) {
       ConvBn(b, "y");
       b.Output("y").Output("h");
     }},
    {"AfterANonConv", "produced by a Relu node",
     [](OnnxBuilder& b) {
       std::mt19937 rng(5);
       b.Input("x", {-1, 2, 3, 3});
       b.Node("Relu", {"x"}, {"h"}, "relu");
       AddBatchNorm(b, "bn", "h", "y", RandomBatchNorm(rng, 2));
       b.Output("y");
     }},
    {"WeightSharedByTwoConvs", "read by other nodes",
     [](OnnxBuilder& b) {
       ConvBn(b, "z");
       b.Node("Conv", {"z", "w"}, {"y"}, "conv2");
       b.Output("y");
     }},
    {"StatisticsOfTheWrongLength", "one value per channel",
     [](OnnxBuilder& b) {
       ConvBn(b, "y");
       b.Output("y");
       // bn.mean: 3 values for 2 channels (the importer would refuse it too).
       b.graph().mutable_initializer(3)->add_float_data(0.0f);
       b.graph().mutable_initializer(3)->set_dims(0, 3);
     }},
    {"TruncatedRawData", "needs 4 values, has 0 (raw_data of 3 bytes)",
     [](OnnxBuilder& b) {
       ConvBn(b, "y");
       b.Output("y");
       onnx::TensorProto* w = b.graph().mutable_initializer(0);
       w->clear_float_data();
       w->set_raw_data("abc");
     }},
    // Memory bombs: dims that declare 2^31 - 1 values over a few bytes of
    // data. Read before the validator has seen the model, they are refused
    // before anything of the declared size is allocated (it once cost 16 GB
    // of doubles and most of a minute).
    {"StatisticsDeclaringTwoBillionValues",
     "initializer 'bn.mean' of shape [2147483647] needs 2147483647 values, "
     "has 2",
     [](OnnxBuilder& b) {
       ConvBn(b, "y");
       b.Output("y");
       b.graph().mutable_initializer(3)->set_dims(0, 2147483647);
     }},
    {"RawWeightDeclaringTwoBillionValues", "needs 2147483647 values, has 4",
     [](OnnxBuilder& b) {
       ConvBn(b, "y");
       b.Output("y");
       onnx::TensorProto* w = b.graph().mutable_initializer(0);
       w->clear_float_data();
       w->set_raw_data(std::string(16, '\0'));
       w->clear_dims();
       for (int64_t d : {2147483647, 1, 1, 1}) w->add_dims(d);
     }},
    {"StatisticsComputedByANode", "not an initializer",
     [](OnnxBuilder& b) {
       ConvBn(b, "y");
       b.Output("y");
       b.graph().mutable_initializer(1)->set_name("bn.scale.raw");
       b.Node("Abs", {"bn.scale.raw"}, {"bn.scale"}, "abs");
     }},
    {"InfiniteEpsilon", "inference form",
     [](OnnxBuilder& b) {
       ConvBn(b, "y");
       b.Output("y");
       for (onnx::AttributeProto& attr :
            *b.graph().mutable_node(1)->mutable_attribute()) {
         if (attr.name() == "epsilon") {
           attr.set_f(std::numeric_limits<float>::infinity());
         }
       }
     }},
    {"TrainingMode", "inference form",
     [](OnnxBuilder& b) {
       ConvBn(b, "y");
       b.Output("y");
       SetInt(b.graph().mutable_node(1), "training_mode", 1);
     }},
};

class UnfoldedTest : public ::testing::TestWithParam<UnfoldedCase> {};

TEST_P(UnfoldedTest, IsLeftUnchangedWithItsReason) {
  OnnxBuilder b;
  GetParam().build(b);
  FoldReport report;
  const absl::StatusOr<std::string> folded = FoldBatchNorm(b.Bytes(), &report);
  ASSERT_TRUE(folded.ok()) << folded.status();
  EXPECT_EQ(report.folded, 0);
  EXPECT_THAT(report.unfolded,
              ElementsAre(AllOf(Field(&FoldReport::Unfolded::node, "bn"),
                                Field(&FoldReport::Unfolded::reason,
                                      HasSubstr(GetParam().reason)))));
  EXPECT_EQ(Parse(*folded).SerializeAsString(), b.Bytes());
}

INSTANTIATE_TEST_SUITE_P(
    Cases, UnfoldedTest, ::testing::ValuesIn(kUnfoldedCases),
    [](const ::testing::TestParamInfo<UnfoldedCase>& info) {
      return info.param.name;
    });

TEST(FoldBatchNormTest, RejectsWhatIsNotOnnx) {
  FoldReport report;
  for (const std::string& bytes :
       {std::string("not a model \xff\xff"), std::string()}) {
    const absl::StatusOr<std::string> folded = FoldBatchNorm(bytes, &report);
    EXPECT_EQ(folded.status().code(), absl::StatusCode::kInvalidArgument)
        << folded.status();
  }
}

TEST(FoldBatchNormTest, ReportIsOptionalAndOverwritten) {
  OnnxBuilder b;
  ConvBn(b, "y");
  b.Output("y");
  EXPECT_TRUE(FoldBatchNorm(b.Bytes(), nullptr).ok());
  FoldReport report;
  report.folded = 5;
  report.unfolded.push_back({"stale", "stale"});
  ASSERT_TRUE(FoldBatchNorm(b.Bytes(), &report).ok());
  EXPECT_EQ(report.folded, 1);
  EXPECT_THAT(report.unfolded, SizeIs(0));
}

// Seeded byte flips of a BN model: each result is an error or a model, and
// a model that imports before folding imports after it.
TEST(FoldBatchNormTest, SurvivesCorruptedModels) {
  constexpr int kMutants = 300;
  constexpr int kFlipsPerMutant = 4;
  const absl::StatusOr<std::string> bytes =
      ReadFile(FixturePath("resnet_fmnist_bn.onnx"));
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  std::mt19937 rng(1);
  std::uniform_int_distribution<size_t> position(0, bytes->size() - 1);
  std::uniform_int_distribution<int> byte(0, 255);
  int folded_ok = 0;
  for (int m = 0; m < kMutants; ++m) {
    std::string mutant = *bytes;
    for (int k = 0; k < kFlipsPerMutant; ++k) {
      mutant[position(rng)] = static_cast<char>(byte(rng));
    }
    const absl::StatusOr<std::string> folded = FoldBatchNorm(mutant, nullptr);
    if (!folded.ok()) {
      EXPECT_EQ(folded.status().code(), absl::StatusCode::kInvalidArgument);
      continue;
    }
    ++folded_ok;
    if (Model::FromOnnxBytes(mutant).ok()) {
      EXPECT_TRUE(Model::FromOnnxBytes(*folded).ok()) << "mutant " << m;
    }
  }
  EXPECT_GT(folded_ok, 0);
}

}  // namespace
}  // namespace mixq::engine
