// engine/npy's writer (round trips through DecodeInputs, byte equality with
// np.save) and the mixq-run program, run as a child process on the PyTorch
// fixtures (tests/fixtures/README.md).
#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/dataset.h"
#include "engine/int4.h"
#include "engine/npy.h"
#include "engine/npz.h"
#include "engine/tensor.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "onnx/onnx_pb.h"
#include "tests/support/subprocess.h"
#include "util/file.h"

namespace mixq::engine {
namespace {

using ::testing::HasSubstr;

constexpr char kFixtures[] = MIXQ_SOURCE_DIR "/tests/fixtures/";
constexpr char kMixqRun[] = MIXQ_RUN_PATH;
// Absolute and relative tolerance against PyTorch's float32 logits.
constexpr float kTolerance = 1e-4f;
// .npy format 1.0: magic (6) + version (2) + header length (2).
constexpr size_t kNpyV1Preamble = 10;
constexpr size_t kNpyAlignment = 64;

std::string Fixture(absl::string_view file) {
  return absl::StrCat(kFixtures, file);
}

std::string ReadOrDie(const std::string& path) {
  absl::StatusOr<std::string> bytes = ReadFile(path);
  EXPECT_TRUE(bytes.ok()) << bytes.status();
  return bytes.ok() ? *std::move(bytes) : "";
}

Tensor DecodeOrDie(const std::string& bytes, const std::string& name) {
  absl::StatusOr<Tensor> tensor = DecodeInputs(bytes, name);
  EXPECT_TRUE(tensor.ok()) << tensor.status();
  return tensor.ok() ? *std::move(tensor) : Tensor();
}

Tensor RandomTensor(Shape shape, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  Tensor t(std::move(shape));
  for (float& v : t.values()) v = normal(rng);
  return t;
}

void ExpectClose(const Tensor& actual, const Tensor& expected) {
  ASSERT_EQ(actual.shape(), expected.shape());
  const Eigen::ArrayXf diff = (actual.flat() - expected.flat()).abs();
  const Eigen::ArrayXf bound = kTolerance + kTolerance * expected.flat().abs();
  EXPECT_TRUE((diff <= bound).all())
      << "largest difference " << diff.maxCoeff();
}

// ------------------------------------------------------------------ npy ----

// np.save writes these fixtures; EncodeNpy must write the same bytes.
TEST(NpyTest, EncodeMatchesNumpyBytes) {
  for (const char* file :
       {"tiny_mlp_inputs.npy", "tiny_mlp_logits.npy",
        "mlp_fmnist_ref_inputs.npy", "mlp_fmnist_ref_logits.npy"}) {
    SCOPED_TRACE(file);
    const std::string bytes = ReadOrDie(Fixture(file));
    const Tensor tensor = DecodeOrDie(bytes, file);
    EXPECT_EQ(EncodeNpy(tensor), bytes);
  }
}

class NpyRoundTripTest : public ::testing::TestWithParam<Shape> {};

TEST_P(NpyRoundTripTest, DecodeInputsReadsBackWhatEncodeWrote) {
  const Tensor tensor = RandomTensor(GetParam(), 7);
  const std::string bytes = EncodeNpy(tensor);
  ASSERT_GT(bytes.size(), kNpyV1Preamble);
  EXPECT_EQ(bytes.substr(0, 8), std::string("\x93NUMPY\x01\x00", 8));
  const size_t header_size =
      static_cast<uint8_t>(bytes[8]) | static_cast<uint8_t>(bytes[9]) << 8;
  EXPECT_EQ((kNpyV1Preamble + header_size) % kNpyAlignment, 0u);
  EXPECT_EQ(bytes[kNpyV1Preamble + header_size - 1], '\n');
  EXPECT_EQ(bytes.size(),
            kNpyV1Preamble + header_size + tensor.size() * sizeof(float));

  const Tensor decoded = DecodeOrDie(bytes, "round trip");
  EXPECT_EQ(decoded.shape(), tensor.shape());
  EXPECT_EQ(decoded.ToVector(), tensor.ToVector());
}

INSTANTIATE_TEST_SUITE_P(Shapes, NpyRoundTripTest,
                         ::testing::Values(Shape{1}, Shape{5}, Shape{3, 1},
                                           Shape{2, 3, 4}, Shape{1, 1, 28, 28},
                                           Shape{7, 2, 1, 3, 2},
                                           Shape{1000, 10}));

TEST(NpyTest, HeaderSpellsTheShapeAsNumpyDoes) {
  const auto header = [](const Shape& shape) {
    const std::string bytes = EncodeNpy(Tensor(shape));
    return bytes.substr(kNpyV1Preamble, bytes.find('}') - kNpyV1Preamble + 1);
  };
  EXPECT_EQ(header({}),
            "{'descr': '<f4', 'fortran_order': False, 'shape': (), }");
  EXPECT_EQ(header({3}),
            "{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }");
  EXPECT_EQ(header({2, 0, 5}),
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 0, 5), }");
}

// A header of 64 KiB or more needs format 2.0 (a 4-byte length).
TEST(NpyTest, HugeRankUsesVersion2) {
  const Shape shape(30000, 1);
  const Tensor tensor(shape, {2.5f});
  const std::string bytes = EncodeNpy(tensor);
  EXPECT_EQ(bytes.substr(0, 8), std::string("\x93NUMPY\x02\x00", 8));
  const Tensor decoded = DecodeOrDie(bytes, "rank 30000");
  EXPECT_EQ(decoded.shape(), shape);
  EXPECT_EQ(decoded.ToVector(), std::vector<float>{2.5f});
}

TEST(NpyTest, Int64LabelsRoundTripThroughDecodeLabels) {
  const std::vector<int64_t> labels = {0, 9, 3, 3, 7};
  const std::string bytes = EncodeNpyInt64(labels);
  EXPECT_EQ(bytes.size() % 64, labels.size() * sizeof(int64_t) % 64);
  EXPECT_NE(bytes.find("{'descr': '<i8', 'fortran_order': False, "
                       "'shape': (5,), }"),
            std::string::npos);
  absl::StatusOr<std::vector<int64_t>> decoded =
      DecodeLabels(bytes, "labels.npy");
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(*decoded, labels);
}

// ------------------------------------------------------------- mixq-run ----

using ::mixq::testing::RunResult;

// Runs mixq-run and gives a temporary directory per test.
class MixqRunTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::path(::testing::TempDir()) /
           absl::StrCat(
               "mixq_run_test_", getpid(), "_",
               ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    ASSERT_TRUE(std::filesystem::create_directories(dir_));
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::string Path(absl::string_view name) const {
    return (dir_ / std::string(name)).string();
  }

  // Runs mixq-run with `args`; stdout and stderr go through files.
  RunResult Run(const std::vector<std::string>& args) const {
    return ::mixq::testing::RunProgram(kMixqRun, args, dir_.string());
  }

  // Runs the model on `inputs` and returns the written output.
  Tensor RunOk(const std::string& model, const std::string& inputs,
               std::vector<std::string> extra = {}) const {
    std::vector<std::string> args = {"--model", model,      "--inputs",
                                     inputs,    "--output", Path("out.npy")};
    args.insert(args.end(), extra.begin(), extra.end());
    const RunResult run = Run(args);
    EXPECT_EQ(run.exit_code, 0) << run.err;
    EXPECT_THAT(run.out, HasSubstr("wrote"));
    if (run.exit_code != 0) return Tensor();
    return DecodeOrDie(ReadOrDie(Path("out.npy")), "out.npy");
  }

  std::filesystem::path dir_;
};

TEST_F(MixqRunTest, MatchesPyTorchLogitsAtEveryOpset) {
  const Tensor expected =
      DecodeOrDie(ReadOrDie(Fixture("tiny_mlp_logits.npy")), "logits");
  for (const char* model : {"tiny_mlp_opset11.onnx", "tiny_mlp_opset13.onnx",
                            "tiny_mlp_opset17.onnx"}) {
    SCOPED_TRACE(model);
    ExpectClose(RunOk(Fixture(model), Fixture("tiny_mlp_inputs.npy")),
                expected);
  }
}

// A model with int64 ids and an attention mask: the fixture's .npz keyed by
// input name, or one .npy per input as NAME=FILE (packed by mixq-run); a
// normalisation of the ids is refused naming the flag.
TEST_F(MixqRunTest, SeveralIntegerInputsByNameMatchPyTorch) {
  const Tensor expected =
      DecodeOrDie(ReadOrDie(Fixture("text_bert_logits_b8.npy")), "logits");
  const std::string model = Fixture("text_bert_opset17.onnx");
  const std::string npz = ReadOrDie(Fixture("text_bert_inputs.npz"));
  ExpectClose(RunOk(model, Fixture("text_bert_inputs.npz")), expected);
  std::vector<std::string> named;
  for (const char* key : {"attention_mask", "input_ids"}) {
    absl::StatusOr<std::string> npy = ReadNpzArray(npz, "npz", key, 1 << 20);
    ASSERT_TRUE(npy.ok()) << npy.status();
    ASSERT_TRUE(WriteFile(Path(absl::StrCat(key, ".npy")), *npy).ok());
    named.push_back(absl::StrCat(key, "=", Path(absl::StrCat(key, ".npy"))));
  }
  ExpectClose(RunOk(model, named[0], {"--inputs", named[1]}), expected);
  const RunResult normalized =
      Run({"--model", model, "--inputs", named[0], "--inputs", named[1],
           "--output", Path("out.npy"), "--normalize", "0.5,2"});
  EXPECT_EQ(normalized.exit_code, 1);
  EXPECT_THAT(normalized.err, HasSubstr("leave out --normalize"));
}

// 4 samples in batches of 3 (a partial last batch), 1, and more than N.
TEST_F(MixqRunTest, BatchSizesConcatenateToTheSameOutput) {
  const Tensor expected =
      DecodeOrDie(ReadOrDie(Fixture("tiny_mlp_logits.npy")), "logits");
  for (const char* batch : {"3", "1", "4", "1000"}) {
    SCOPED_TRACE(batch);
    ExpectClose(
        RunOk(Fixture("tiny_mlp_opset13.onnx"), Fixture("tiny_mlp_inputs.npy"),
              {"--batch-size", batch, "--threads", "1"}),
        expected);
  }
}

TEST_F(MixqRunTest, FashionMnistMlpMatchesPyTorch) {
  ExpectClose(
      RunOk(Fixture("mlp_fmnist.onnx"), Fixture("mlp_fmnist_ref_inputs.npy"),
            {"--batch-size", "5"}),
      DecodeOrDie(ReadOrDie(Fixture("mlp_fmnist_ref_logits.npy")), "logits"));
}

// CNNs exported by scripts/make_cnn_models.py (Conv, BatchNormalization,
// pooling, residual Adds, a batch-dependent Reshape), in batches of 3 that
// do not divide N.
TEST_F(MixqRunTest, CnnFixturesMatchPyTorch) {
  struct Case {
    const char* model;
    const char* inputs;
    const char* logits;
  };
  for (const Case& c :
       {Case{"resnet_fmnist_bn.onnx", "resnet_fmnist_inputs.npy",
             "resnet_fmnist_logits.npy"},
        Case{"mobilenet_v2_view_bn.onnx", "mobilenet_v2_inputs.npy",
             "mobilenet_v2_logits.npy"}}) {
    SCOPED_TRACE(c.model);
    if (!std::filesystem::exists(Fixture(c.model))) {
      GTEST_SKIP() << Fixture(c.model) << " is absent";
    }
    ExpectClose(
        RunOk(Fixture(c.model), Fixture(c.inputs), {"--batch-size", "3"}),
        DecodeOrDie(ReadOrDie(Fixture(c.logits)), c.logits));
  }
}

// Inputs [N, 784] feed a [batch, 1, 28, 28] model (same per-sample size).
TEST_F(MixqRunTest, InputsAreReshapedToTheModelInput) {
  Tensor inputs =
      DecodeOrDie(ReadOrDie(Fixture("mlp_fmnist_ref_inputs.npy")), "inputs");
  inputs.Reshape({inputs.dim(0), 784});
  ASSERT_TRUE(WriteFile(Path("flat.npy"), EncodeNpy(inputs)).ok());
  ExpectClose(
      RunOk(Fixture("mlp_fmnist.onnx"), Path("flat.npy")),
      DecodeOrDie(ReadOrDie(Fixture("mlp_fmnist_ref_logits.npy")), "logits"));
}

// A model whose input declares batch 2 runs at any batch, as in the service.
TEST_F(MixqRunTest, FixedBatchModelRunsAtAnyBatch) {
  onnx::ModelProto model;
  ASSERT_TRUE(
      model.ParseFromString(ReadOrDie(Fixture("tiny_mlp_opset13.onnx"))));
  model.mutable_graph()
      ->mutable_input(0)
      ->mutable_type()
      ->mutable_tensor_type()
      ->mutable_shape()
      ->mutable_dim(0)
      ->set_dim_value(2);
  ASSERT_TRUE(WriteFile(Path("fixed.onnx"), model.SerializeAsString()).ok());
  const Tensor expected =
      DecodeOrDie(ReadOrDie(Fixture("tiny_mlp_logits.npy")), "logits");
  for (const char* batch : {"2", "3"}) {
    SCOPED_TRACE(batch);
    ExpectClose(RunOk(Path("fixed.onnx"), Fixture("tiny_mlp_inputs.npy"),
                      {"--batch-size", batch}),
                expected);
  }
}

// --labels scores the logits: the printed accuracy is that of the written
// logits' arg-max, on the --samples range, after --normalize.
TEST_F(MixqRunTest, LabelsPrintTheAccuracyOfTheSamplesRange) {
  const std::string images =
      "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz";
  const std::string labels_file =
      "/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz";
  const RunResult run =
      Run({"--model", Fixture("mlp_fmnist.onnx"), "--inputs", images,
           "--labels", labels_file, "--normalize", "0.2860,0.3530", "--samples",
           "9000:9500", "--output", Path("out.npy")});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  const Tensor logits = DecodeOrDie(ReadOrDie(Path("out.npy")), "out.npy");
  ASSERT_EQ(logits.shape(), (Shape{500, 10}));
  absl::StatusOr<std::vector<int64_t>> labels =
      DecodeLabels(ReadOrDie(labels_file), labels_file);
  ASSERT_TRUE(labels.ok()) << labels.status();
  int64_t correct = 0;
  for (int64_t i = 0; i < 500; ++i) {
    int64_t best = 0;
    for (int64_t c = 1; c < 10; ++c) {
      if (logits.values()[i * 10 + c] > logits.values()[i * 10 + best])
        best = c;
    }
    correct += best == (*labels)[9000 + i];
  }
  EXPECT_GT(correct, 400);  // the MLP is ~88 % accurate
  EXPECT_THAT(
      run.out,
      HasSubstr(absl::StrCat(
          "accuracy ", absl::StrFormat("%.17g", correct / 500.0), " loss ")));
  EXPECT_THAT(run.out, HasSubstr("samples 500"));
  // Without normalisation the same samples score differently: the flag acts.
  const RunResult raw =
      Run({"--model", Fixture("mlp_fmnist.onnx"), "--inputs", images,
           "--labels", labels_file, "--samples", "9000:9500"});
  ASSERT_EQ(raw.exit_code, 0) << raw.err;
  EXPECT_NE(raw.out.substr(raw.out.find("accuracy")),
            run.out.substr(run.out.find("accuracy")));
}

// The tiny MLP with fc1.weight [16, 8] stored as INT4 (opset 21): mixq-run
// gives what the float model with the dequantized weight gives, and refuses
// a packed weight of the wrong length by name.
TEST_F(MixqRunTest, PackedInt4WeightRunsLikeItsFloatTwin) {
  onnx::ModelProto twin;
  ASSERT_TRUE(
      twin.ParseFromString(ReadOrDie(Fixture("tiny_mlp_opset13.onnx"))));
  onnx::ModelProto packed = twin;
  packed.set_ir_version(10);
  packed.mutable_opset_import(0)->set_version(21);
  onnx::GraphProto& graph = *packed.mutable_graph();
  onnx::TensorProto* weight = nullptr;
  for (onnx::TensorProto& t : *graph.mutable_initializer()) {
    if (t.name() == "fc1.weight") weight = &t;
  }
  ASSERT_NE(weight, nullptr);
  ASSERT_EQ(weight->dims_size(), 2);
  const int64_t rows = weight->dims(0);
  const int64_t n = rows * weight->dims(1);
  // q = (i % 16) - 8, one scale per output row, zero point 1.
  std::vector<int32_t> q(n);
  std::vector<float> scales(rows);
  std::vector<float> dequantized(n);
  for (int64_t r = 0; r < rows; ++r) scales[r] = 0.05f + 0.01f * r;
  for (int64_t i = 0; i < n; ++i) {
    q[i] = static_cast<int32_t>(i % 16) - 8;
    dequantized[i] = static_cast<float>(q[i] - 1) * scales[i / (n / rows)];
  }
  weight->set_name("fc1.weight_quantized");
  weight->set_data_type(kOnnxInt4);
  weight->clear_float_data();
  weight->set_raw_data(PackInt4(q));
  onnx::TensorProto* scale = graph.add_initializer();
  scale->set_name("fc1.weight_scale");
  scale->set_data_type(onnx::TensorProto::FLOAT);
  scale->add_dims(rows);
  for (float v : scales) scale->add_float_data(v);
  onnx::TensorProto* zero_point = graph.add_initializer();
  zero_point->set_name("fc1.weight_zero_point");
  zero_point->set_data_type(kOnnxInt4);
  zero_point->add_dims(rows);
  zero_point->set_raw_data(PackInt4(std::vector<int32_t>(rows, 1)));
  onnx::NodeProto* dq = graph.add_node();
  dq->set_op_type("DequantizeLinear");
  dq->set_name("fc1.weight_DequantizeLinear");
  for (const char* input :
       {"fc1.weight_quantized", "fc1.weight_scale", "fc1.weight_zero_point"}) {
    dq->add_input(input);
  }
  dq->add_output("fc1.weight");
  onnx::AttributeProto* axis = dq->add_attribute();
  axis->set_name("axis");
  axis->set_type(onnx::AttributeProto::INT);
  axis->set_i(0);
  ASSERT_TRUE(WriteFile(Path("packed.onnx"), packed.SerializeAsString()).ok());

  for (onnx::TensorProto& t : *twin.mutable_graph()->mutable_initializer()) {
    if (t.name() != "fc1.weight") continue;
    t.clear_raw_data();
    t.clear_float_data();
    for (float v : dequantized) t.add_float_data(v);
  }
  ASSERT_TRUE(WriteFile(Path("twin.onnx"), twin.SerializeAsString()).ok());
  const Tensor expected =
      RunOk(Path("twin.onnx"), Fixture("tiny_mlp_inputs.npy"));
  ExpectClose(RunOk(Path("packed.onnx"), Fixture("tiny_mlp_inputs.npy")),
              expected);

  // One byte per value (the int8 layout) is not INT4's length.
  weight->set_raw_data(std::string(static_cast<size_t>(n), '\0'));
  ASSERT_TRUE(WriteFile(Path("bad.onnx"), packed.SerializeAsString()).ok());
  const RunResult run =
      Run({"--model", Path("bad.onnx"), "--inputs",
           Fixture("tiny_mlp_inputs.npy"), "--output", Path("bad.npy")});
  EXPECT_EQ(run.exit_code, 1);
  EXPECT_THAT(run.err, HasSubstr(absl::StrCat(
                           "initializer 'fc1.weight_quantized' of shape [16, "
                           "8] needs 128 values, two per byte: raw_data of 64 "
                           "bytes, has 128 (INT4)")));
}

struct FailureCase {
  std::string name;
  std::vector<std::string> args;  // "@x" is the fixture x, "%x" a temp file
  int exit_code;
  std::string message;  // part of stderr
};

void PrintTo(const FailureCase& c, std::ostream* os) { *os << c.name; }

class MixqRunFailureTest : public MixqRunTest,
                           public ::testing::WithParamInterface<FailureCase> {};

TEST_P(MixqRunFailureTest, ExitsNonzeroWithAMessage) {
  ASSERT_TRUE(WriteFile(Path("garbage.onnx"), "not a model").ok());
  // The tiny MLP with its Relu replaced by an operator no ONNX opset has.
  onnx::ModelProto model;
  ASSERT_TRUE(
      model.ParseFromString(ReadOrDie(Fixture("tiny_mlp_opset13.onnx"))));
  for (onnx::NodeProto& node : *model.mutable_graph()->mutable_node()) {
    if (node.op_type() == "Relu") node.set_op_type("NoSuchOperator");
  }
  ASSERT_TRUE(
      WriteFile(Path("unsupported.onnx"), model.SerializeAsString()).ok());
  ASSERT_TRUE(WriteFile(Path("garbage.npy"), "\x93NUMPY garbage").ok());
  std::vector<std::string> args;
  for (const std::string& arg : GetParam().args) {
    if (!arg.empty() && arg[0] == '@') {
      args.push_back(Fixture(arg.substr(1)));
    } else if (!arg.empty() && arg[0] == '%') {
      args.push_back(Path(arg.substr(1)));
    } else {
      args.push_back(arg);
    }
  }
  const RunResult run = Run(args);
  EXPECT_EQ(run.exit_code, GetParam().exit_code) << run.err;
  EXPECT_THAT(run.err, HasSubstr(GetParam().message));
  EXPECT_FALSE(std::filesystem::exists(Path("out.npy")));
}

INSTANTIATE_TEST_SUITE_P(
    Cases, MixqRunFailureTest,
    ::testing::Values(
        FailureCase{"UnsupportedOperator",
                    {"--model", "%unsupported.onnx", "--inputs",
                     "@tiny_mlp_inputs.npy", "--output", "%out.npy"},
                    1,
                    "unsupported operator 'NoSuchOperator'"},
        FailureCase{"NotAModel",
                    {"--model", "%garbage.onnx", "--inputs",
                     "@tiny_mlp_inputs.npy", "--output", "%out.npy"},
                    1,
                    "not an ONNX model"},
        FailureCase{"MissingModel",
                    {"--model", "%absent.onnx", "--inputs",
                     "@tiny_mlp_inputs.npy", "--output", "%out.npy"},
                    1,
                    "absent.onnx"},
        FailureCase{"WrongInputShape",
                    {"--model", "@mlp_fmnist.onnx", "--inputs",
                     "@tiny_mlp_inputs.npy", "--output", "%out.npy"},
                    1,
                    "8 values per sample, the model takes 784"},
        FailureCase{"CorruptInputs",
                    {"--model", "@tiny_mlp_opset13.onnx", "--inputs",
                     "%garbage.npy", "--output", "%out.npy"},
                    1,
                    "garbage.npy"},
        FailureCase{"WrongSampleSize",
                    {"--model", "@tiny_mlp_opset13.onnx", "--inputs",
                     "@tiny_mlp_logits.npy", "--output", "%out.npy"},
                    1,
                    "4 values per sample, the model takes 8"},
        FailureCase{"UnwritableOutput",
                    {"--model", "@tiny_mlp_opset13.onnx", "--inputs",
                     "@tiny_mlp_inputs.npy", "--output", "%no/such/dir/y.npy"},
                    1,
                    "no/such/dir/y.npy"},
        FailureCase{"NeitherOutputNorLabels",
                    {"--model", "@tiny_mlp_opset13.onnx", "--inputs",
                     "@tiny_mlp_inputs.npy"},
                    2,
                    "give --output and/or --labels"},
        FailureCase{
            "LabelCountMismatch",
            {"--model", "@mlp_fmnist.onnx", "--inputs",
             "@mlp_fmnist_ref_inputs.npy", "--labels",
             "/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz"},
            1,
            "10000 labels but"},
        FailureCase{"SamplesOutOfRange",
                    {"--model", "@tiny_mlp_opset13.onnx", "--inputs",
                     "@tiny_mlp_inputs.npy", "--output", "%out.npy",
                     "--samples", "3:999999"},
                    1,
                    "--samples: '3:999999' is not a range"},
        FailureCase{
            "SamplesNotARange",
            {"--model", "@tiny_mlp_opset13.onnx", "--inputs",
             "@tiny_mlp_inputs.npy", "--output", "%out.npy", "--samples", "7"},
            1,
            "--samples: expected two values"},
        FailureCase{"NormalizeNotNumbers",
                    {"--model", "@tiny_mlp_opset13.onnx", "--inputs",
                     "@tiny_mlp_inputs.npy", "--output", "%out.npy",
                     "--normalize", "a,b"},
                    1,
                    "--normalize: 'a,b' is not MEAN,STD"},
        FailureCase{"NormalizeZeroStd",
                    {"--model", "@tiny_mlp_opset13.onnx", "--inputs",
                     "@tiny_mlp_inputs.npy", "--output", "%out.npy",
                     "--normalize", "0,0"},
                    1,
                    "std"},
        FailureCase{"ZeroBatchSize",
                    {"--model", "@tiny_mlp_opset13.onnx", "--inputs",
                     "@tiny_mlp_inputs.npy", "--output", "%out.npy",
                     "--batch-size", "0"},
                    2,
                    "--batch-size"},
        FailureCase{"UnknownFlag",
                    {"--model", "@tiny_mlp_opset13.onnx", "--inputs",
                     "@tiny_mlp_inputs.npy", "--output", "%out.npy", "--bogus"},
                    2,
                    "--bogus"}),
    [](const ::testing::TestParamInfo<FailureCase>& info) {
      return info.param.name;
    });

}  // namespace
}  // namespace mixq::engine
