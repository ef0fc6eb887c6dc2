// Conv, pooling and BatchNormalization kernels: the fast paths (pointwise,
// depthwise, im2col with batch chunking) against a direct reference
// convolution, hand-computed cases, the ONNX conformance data and the errors
// for unsupported attributes. Their gradients are in the operator-test table
// (op_table.cc).
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <memory>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/model.h"
#include "engine/ops.h"
#include "engine/tensor.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "onnx/onnx_pb.h"
#include "tests/support/kernel_testing.h"
#include "util/file.h"

namespace mixq::engine {
namespace {

using ::mixq::testing::Attributes;
using ::mixq::testing::FloatAttr;
using ::mixq::testing::IntAttr;
using ::mixq::testing::IntsAttr;
using ::mixq::testing::MakeKernel;
using ::mixq::testing::StringAttr;
using ::mixq::testing::UniformValues;
using ::testing::HasSubstr;

std::vector<const Shape*> ShapePointers(const std::vector<Tensor>& tensors) {
  std::vector<const Shape*> shapes;
  for (const Tensor& t : tensors) shapes.push_back(&t.shape());
  return shapes;
}
std::vector<const Tensor*> Pointers(const std::vector<Tensor>& tensors) {
  std::vector<const Tensor*> pointers;
  for (const Tensor& t : tensors) pointers.push_back(&t);
  return pointers;
}

// ------------------------------------------- Against a direct reference ----

// A direct convolution in double precision: Y and the adjoints for dY.
struct ConvSpec {
  int64_t n, c, h, w, m, kh, kw, group;
  int64_t sh, sw, dh, dw, pt, pl, pb, pr;
};

struct Reference {
  std::vector<double> y, dx, dw, db;
};

Reference DirectConv(const ConvSpec& s, const Tensor& x, const Tensor& w,
                     const Tensor& b, const Tensor& dy) {
  const int64_t oh = (s.h + s.pt + s.pb - s.dh * (s.kh - 1) - 1) / s.sh + 1;
  const int64_t ow = (s.w + s.pl + s.pr - s.dw * (s.kw - 1) - 1) / s.sw + 1;
  const int64_t cg = s.c / s.group, mg = s.m / s.group;
  Reference r;
  r.y.assign(s.n * s.m * oh * ow, 0);
  r.dx.assign(x.size(), 0);
  r.dw.assign(w.size(), 0);
  r.db.assign(s.m, 0);
  for (int64_t n = 0; n < s.n; ++n) {
    for (int64_t m = 0; m < s.m; ++m) {
      const int64_t g = m / mg;
      for (int64_t y = 0; y < oh; ++y) {
        for (int64_t xo = 0; xo < ow; ++xo) {
          const int64_t o = ((n * s.m + m) * oh + y) * ow + xo;
          double acc = b.data()[m];
          const double up = dy.data()[o];
          r.db[m] += up;
          for (int64_t ci = 0; ci < cg; ++ci) {
            const int64_t c = g * cg + ci;
            for (int64_t i = 0; i < s.kh; ++i) {
              const int64_t iy = y * s.sh + i * s.dh - s.pt;
              if (iy < 0 || iy >= s.h) continue;
              for (int64_t j = 0; j < s.kw; ++j) {
                const int64_t ix = xo * s.sw + j * s.dw - s.pl;
                if (ix < 0 || ix >= s.w) continue;
                const int64_t xi = ((n * s.c + c) * s.h + iy) * s.w + ix;
                const int64_t wi = ((m * cg + ci) * s.kh + i) * s.kw + j;
                acc += double{x.data()[xi]} * w.data()[wi];
                r.dx[xi] += up * w.data()[wi];
                r.dw[wi] += up * x.data()[xi];
              }
            }
          }
          r.y[o] = acc;
        }
      }
    }
  }
  return r;
}

void ExpectNear(const Tensor& actual, const std::vector<double>& expected,
                double tolerance, const std::string& what) {
  ASSERT_EQ(actual.size(), static_cast<int64_t>(expected.size())) << what;
  int failures = 0;
  for (size_t i = 0; i < expected.size() && failures < 5; ++i) {
    if (std::abs(actual.data()[i] - expected[i]) >
        tolerance * std::max(1.0, std::abs(expected[i]))) {
      ADD_FAILURE() << what << " element " << i << ": " << actual.data()[i]
                    << " vs " << expected[i];
      ++failures;
    }
  }
}

// A Conv kernel for `s` run forward and backward on random inputs and
// upstream gradient drawn from `rng`, and checked against DirectConv.
struct CheckedConv {
  std::unique_ptr<Kernel> kernel;
  std::vector<Tensor> inputs;  // X, W, B
  Tensor dy;
  Tensor y;
  std::vector<Tensor> grads;  // per input
};

void RunAgainstDirectConv(const ConvSpec& s, std::mt19937* rng,
                          CheckedConv* run) {
  absl::StatusOr<std::unique_ptr<Kernel>> kernel =
      MakeKernel("Conv", {{"group", IntAttr(s.group)},
                          {"strides", IntsAttr({s.sh, s.sw})},
                          {"dilations", IntsAttr({s.dh, s.dw})},
                          {"pads", IntsAttr({s.pt, s.pl, s.pb, s.pr})}});
  ASSERT_TRUE(kernel.ok()) << kernel.status();
  run->kernel = *std::move(kernel);
  run->inputs.clear();
  for (const Shape& shape :
       {Shape{s.n, s.c, s.h, s.w}, Shape{s.m, s.c / s.group, s.kh, s.kw},
        Shape{s.m}}) {
    run->inputs.emplace_back(shape, UniformValues(NumElements(shape), rng));
  }
  const std::vector<Tensor>& inputs = run->inputs;
  absl::StatusOr<Shape> out_shape =
      run->kernel->OutputShape(ShapePointers(inputs));
  ASSERT_TRUE(out_shape.ok()) << out_shape.status();
  run->dy = Tensor(*out_shape, UniformValues(NumElements(*out_shape), rng));
  const Reference ref = DirectConv(s, inputs[0], inputs[1], inputs[2], run->dy);

  run->y = Tensor(*out_shape);
  run->kernel->Forward(Pointers(inputs), &run->y);
  ExpectNear(run->y, ref.y, 1e-4, "Y");
  run->grads.clear();
  for (const Tensor& t : inputs) run->grads.emplace_back(t.shape());
  std::vector<Tensor*> grad_pointers;
  for (Tensor& g : run->grads) grad_pointers.push_back(&g);
  run->kernel->Backward(Pointers(inputs), run->dy, grad_pointers);
  ExpectNear(run->grads[0], ref.dx, 1e-4, "dX");
  ExpectNear(run->grads[1], ref.dw, 1e-4, "dW");
  ExpectNear(run->grads[2], ref.db, 1e-4, "dB");
}

class ConvReferenceTest : public ::testing::TestWithParam<ConvSpec> {};

TEST_P(ConvReferenceTest, ForwardAndBackwardMatchDirectConvolution) {
  std::mt19937 rng(11);
  CheckedConv run;
  ASSERT_NO_FATAL_FAILURE(RunAgainstDirectConv(GetParam(), &rng, &run));
  const Kernel* kernel = run.kernel.get();
  const std::vector<Tensor>& inputs = run.inputs;
  const Tensor& dy = run.dy;
  const Tensor& y = run.y;
  const std::vector<Tensor>& grads = run.grads;
  const Shape out_shape = y.shape();

  // The same bits on one thread as on several.
  const int threads = omp_get_max_threads();
  omp_set_num_threads(1);
  Tensor y1(out_shape);
  kernel->Forward(Pointers(inputs), &y1);
  std::vector<Tensor> grads1;
  for (const Tensor& t : inputs) grads1.emplace_back(t.shape());
  std::vector<Tensor*> grad_pointers1;
  for (Tensor& g : grads1) grad_pointers1.push_back(&g);
  kernel->Backward(Pointers(inputs), dy, grad_pointers1);
  omp_set_num_threads(threads);
  EXPECT_EQ(y1.values(), y.values());
  for (size_t i = 0; i < grads.size(); ++i) {
    EXPECT_EQ(grads1[i].values(), grads[i].values()) << "input " << i;
  }
}

// n, c, h, w, m, kh, kw, group, strides, dilations, pads (t, l, b, r).
INSTANTIATE_TEST_SUITE_P(
    Shapes, ConvReferenceTest,
    ::testing::Values(
        ConvSpec{5, 3, 9, 9, 8, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1},
        ConvSpec{37, 4, 4, 4, 6, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1},
        ConvSpec{33, 6, 2, 2, 8, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0},
        ConvSpec{3, 8, 7, 7, 16, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0},
        ConvSpec{17, 8, 6, 6, 4, 1, 1, 2, 2, 2, 1, 1, 0, 0, 0, 0},
        ConvSpec{4, 6, 8, 7, 6, 3, 3, 6, 1, 1, 1, 1, 1, 1, 1, 1},
        ConvSpec{20, 16, 6, 6, 16, 3, 3, 16, 2, 2, 1, 1, 1, 1, 1, 1},
        ConvSpec{3, 4, 9, 8, 8, 5, 3, 4, 2, 1, 2, 1, 2, 0, 1, 3},
        ConvSpec{9, 6, 10, 9, 4, 3, 2, 2, 3, 2, 1, 2, 0, 1, 2, 0},
        ConvSpec{2, 1, 12, 12, 5, 5, 5, 1, 2, 2, 1, 1, 2, 2, 2, 2},
        // 3x3, stride 1, >= 4 channels: Winograd F(2x2, 3x3) (any pads up
        // to 2, odd maps); dX on the flipped weights, dW by its adjoint.
        ConvSpec{6, 16, 14, 14, 16, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1},
        ConvSpec{4, 8, 9, 7, 12, 3, 3, 1, 1, 1, 1, 1, 0, 2, 1, 0},
        ConvSpec{3, 5, 3, 2, 4, 3, 3, 1, 1, 1, 1, 1, 2, 2, 2, 2},
        // 1x1 maps: one GEMM over the batch.
        ConvSpec{13, 12, 1, 1, 20, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0},
        ConvSpec{5, 8, 1, 1, 6, 1, 1, 2, 1, 1, 1, 1, 0, 0, 0, 0},
        // More than 1024 channels x taps: im2col and GEMM.
        ConvSpec{3, 130, 6, 5, 5, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1},
        ConvSpec{11, 260, 3, 3, 4, 2, 2, 2, 2, 1, 1, 1, 0, 1, 1, 0},
        // Depthwise on maps of more than 64 pixels (per-plane kernel).
        ConvSpec{2, 4, 12, 12, 4, 3, 3, 4, 1, 1, 1, 1, 1, 1, 1, 1},
        ConvSpec{3, 6, 20, 18, 12, 3, 3, 6, 2, 2, 1, 1, 1, 1, 1, 1},
        ConvSpec{2, 3, 17, 16, 3, 3, 2, 3, 1, 2, 2, 3, 2, 0, 1, 3}));

// One sample with enough work that the direct kernel splits it between
// threads (a 7x7 stride-2 stem; a 3x3 stride-2 stage): right, and the same
// bits on one thread. (Only the forward pass: the weight gradient of a
// single sample is one GEMM left to Eigen's threads, which may round
// differently; see ops_conv.cc.)
TEST(ConvReferenceTest, OneSampleSplitBetweenThreadsIsRightAndThreadFree) {
  const ConvSpec specs[] = {
      {1, 3, 64, 64, 64, 7, 7, 1, 2, 2, 1, 1, 3, 3, 3, 3},
      {1, 64, 30, 30, 128, 3, 3, 1, 2, 2, 1, 1, 1, 1, 1, 1}};
  for (const ConvSpec& spec : specs) {
    std::mt19937 rng(11);
    CheckedConv run;
    ASSERT_NO_FATAL_FAILURE(RunAgainstDirectConv(spec, &rng, &run));
    const int threads = omp_get_max_threads();
    omp_set_num_threads(1);
    Tensor y1(run.y.shape());
    run.kernel->Forward(Pointers(run.inputs), &y1);
    omp_set_num_threads(threads);
    EXPECT_EQ(y1.values(), run.y.values()) << "c " << spec.c;
  }
}

// Hundreds of tiny random geometries one after another: every path
// (Winograd, pointwise, depthwise, im2col) at maps of 1 to 6 pixels a side
// with asymmetric pads as SAME_LOWER/SAME_UPPER produce them, so that a
// kernel reusing scratch sized for the previous call, or reading past a
// padded border, shows as wrong values here (and as a report under
// AddressSanitizer). A fuzzed pair of chained SAME_LOWER Convs on tiny
// shapes once overflowed the heap.
TEST(ConvSweepTest, TinyRandomGeometriesMatchDirectConvolution) {
  constexpr int kConfigs = 400;
  std::mt19937 rng(2026);
  const auto pick = [&rng](int64_t lo, int64_t hi) {
    return std::uniform_int_distribution<int64_t>(lo, hi)(rng);
  };
  constexpr int64_t kChannels[] = {1, 2, 4, 8, 16};
  int tested = 0;
  for (int i = 0; i < kConfigs; ++i) {
    ConvSpec s;
    s.n = pick(1, 3);
    s.c = kChannels[pick(0, 4)];
    s.group = pick(0, 2) == 0 ? s.c : 1;  // depthwise a third of the time
    s.m = s.group * pick(1, 3);
    s.h = pick(1, 6);
    s.w = pick(1, 6);
    s.kh = pick(1, 4);
    s.kw = pick(1, 4);
    s.sh = pick(1, 3);
    s.sw = pick(1, 3);
    s.dh = pick(1, 2);
    s.dw = pick(1, 2);
    s.pt = pick(0, 3);
    s.pl = pick(0, 3);
    s.pb = pick(0, 3);
    s.pr = pick(0, 3);
    if (i % 4 == 0) {  // the Winograd F(2x2, 3x3) path's geometry
      s.c = kChannels[pick(2, 4)];
      s.group = 1;
      s.kh = s.kw = 3;
      s.sh = s.sw = s.dh = s.dw = 1;
    }
    if (s.h + s.pt + s.pb < s.dh * (s.kh - 1) + 1 ||
        s.w + s.pl + s.pr < s.dw * (s.kw - 1) + 1) {
      continue;  // no output pixel
    }
    ++tested;
    SCOPED_TRACE(absl::StrCat(
        "config ", i, ": n", s.n, " c", s.c, " ", s.h, "x", s.w, " m", s.m,
        " k", s.kh, "x", s.kw, " g", s.group, " s", s.sh, ",", s.sw, " d", s.dh,
        ",", s.dw, " pads ", s.pt, ",", s.pl, ",", s.pb, ",", s.pr));
    CheckedConv run;
    ASSERT_NO_FATAL_FAILURE(RunAgainstDirectConv(s, &rng, &run));
    if (HasFailure()) return;
  }
  EXPECT_GT(tested, kConfigs / 2);
}

// --------------------------------------------------------- By hand ----

Tensor RunForward(const std::string& op, const Attributes& attrs,
                  const std::vector<Tensor>& inputs) {
  absl::StatusOr<std::unique_ptr<Kernel>> kernel = MakeKernel(op, attrs);
  EXPECT_TRUE(kernel.ok()) << kernel.status();
  if (!kernel.ok()) return Tensor();
  absl::StatusOr<Shape> shape = (*kernel)->OutputShape(ShapePointers(inputs));
  EXPECT_TRUE(shape.ok()) << shape.status();
  if (!shape.ok()) return Tensor();
  Tensor out(*shape);
  (*kernel)->Forward(Pointers(inputs), &out);
  return out;
}

TEST(ConvByHandTest, SumsTheWindowTimesTheKernel) {
  // 3x3 input 1..9, 2x2 kernel [1 0; 0 -1], bias 10, one pad on the right and
  // bottom: y(i, j) = x(i, j) - x(i + 1, j + 1) + 10.
  const Tensor x({1, 1, 3, 3}, {1, 2, 3, 4, 5, 6, 7, 8, 9});
  const Tensor w({1, 1, 2, 2}, {1, 0, 0, -1});
  const Tensor b({1}, {10});
  const Tensor y =
      RunForward("Conv", {{"pads", IntsAttr({0, 0, 1, 1})}}, {x, w, b});
  EXPECT_EQ(y.shape(), (Shape{1, 1, 3, 3}));
  EXPECT_THAT(y.ToVector(),
              ::testing::ElementsAre(6, 6, 13, 6, 6, 16, 17, 18, 19));
}

TEST(ConvByHandTest, DepthwiseKeepsChannelsApart) {
  const Tensor x({1, 2, 2, 2}, {1, 2, 3, 4, 10, 20, 30, 40});
  const Tensor w({2, 1, 1, 1}, {2, -1});
  const Tensor y = RunForward("Conv", {{"group", IntAttr(2)}}, {x, w});
  EXPECT_THAT(y.ToVector(),
              ::testing::ElementsAre(2, 4, 6, 8, -10, -20, -30, -40));
}

TEST(PoolByHandTest, MaxAndAverageWithPadding) {
  const Tensor x({1, 1, 2, 3}, {1, 5, 2, 4, 3, 6});
  const Attributes attrs = {{"kernel_shape", IntsAttr({2, 2})},
                            {"pads", IntsAttr({0, 0, 0, 1})}};
  EXPECT_THAT(RunForward("MaxPool", attrs, {x}).ToVector(),
              ::testing::ElementsAre(5, 6, 6));
  EXPECT_THAT(RunForward("AveragePool", attrs, {x}).ToVector(),
              ::testing::ElementsAre(13 / 4.0f, 16 / 4.0f, 8 / 2.0f));
  Attributes include = attrs;
  include.push_back({"count_include_pad", IntAttr(1)});
  EXPECT_THAT(RunForward("AveragePool", include, {x}).ToVector(),
              ::testing::ElementsAre(13 / 4.0f, 16 / 4.0f, 8 / 4.0f));
}

TEST(PoolByHandTest, MaxPoolGradientGoesToTheFirstMaximum) {
  absl::StatusOr<std::unique_ptr<Kernel>> kernel =
      MakeKernel("MaxPool", {{"kernel_shape", IntsAttr({2, 2})}});
  ASSERT_TRUE(kernel.ok());
  const Tensor x({1, 1, 2, 2}, {3, 7, 7, 1});
  const Tensor dy({1, 1, 1, 1}, {2});
  Tensor dx({1, 1, 2, 2});
  const std::vector<Tensor> inputs = {x};
  std::vector<Tensor*> grads = {&dx};
  (*kernel)->Backward(Pointers(inputs), dy, grads);
  EXPECT_THAT(dx.ToVector(), ::testing::ElementsAre(0, 2, 0, 0));
}

TEST(BatchNormByHandTest, NormalizesPerChannel) {
  const Tensor x({1, 2, 2}, {1, 3, 5, 9});
  const Tensor scale({2}, {2, 1});
  const Tensor bias({2}, {1, 0});
  const Tensor mean({2}, {2, 7});
  const Tensor var({2}, {4, 16});
  const Tensor y = RunForward("BatchNormalization", {{"epsilon", FloatAttr(0)}},
                              {x, scale, bias, mean, var});
  EXPECT_THAT(y.ToVector(), ::testing::ElementsAre(0, 2, -0.5f, 0.5f));
}

// --------------------------------------------------- Errors ----

absl::Status CreateStatus(const std::string& op, const Attributes& attrs) {
  return MakeKernel(op, attrs).status();
}

absl::Status ShapeStatus(const std::string& op, const Attributes& attrs,
                         const std::vector<Shape>& shapes) {
  absl::StatusOr<std::unique_ptr<Kernel>> kernel = MakeKernel(op, attrs);
  if (!kernel.ok()) return kernel.status();
  std::vector<const Shape*> pointers;
  for (const Shape& s : shapes) pointers.push_back(&s);
  return (*kernel)->OutputShape(pointers).status();
}

void ExpectInvalid(const absl::Status& status, const std::string& substring) {
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_THAT(std::string(status.message()), HasSubstr(substring));
}

TEST(ConvErrorsTest, RejectsWhatItDoesNotSupport) {
  ExpectInvalid(ShapeStatus("Conv", {}, {{1, 2, 5}, {3, 2, 3, 3}}),
                "Conv: only 1-D and 2-D convolution are supported");
  ExpectInvalid(ShapeStatus("Conv", {}, {{1, 2, 5, 5, 5}, {3, 2, 3, 3, 3}}),
                "Conv: only 1-D and 2-D convolution are supported");
  ExpectInvalid(CreateStatus("Conv", {{"strides", IntsAttr({1, 1, 1})}}),
                "Conv: only 1-D and 2-D convolution are supported");
  // 1-D attributes on a 2-D input.
  ExpectInvalid(ShapeStatus("Conv", {{"strides", IntsAttr({1})}},
                            {{1, 2, 5, 5}, {4, 2, 3, 3}}),
                "expected rank 3");
  ExpectInvalid(CreateStatus("Conv", {{"auto_pad", StringAttr("SAME")}}),
                "auto_pad");
  ExpectInvalid(CreateStatus("Conv", {{"pads", IntsAttr({1, -1, 0, 0})}}),
                "pads");
  ExpectInvalid(CreateStatus("Conv", {{"strides", IntsAttr({0, 1})}}),
                "strides");
  ExpectInvalid(CreateStatus("Conv", {{"group", IntAttr(0)}}), "group");
  ExpectInvalid(CreateStatus("Conv", {{"pads", IntsAttr({1, 1, 1, 1, 1, 1})}}),
                "Conv: only 1-D and 2-D convolution are supported");
  ExpectInvalid(CreateStatus("Conv", {{"pads", IntsAttr({1, 1, 1})}}), "pads");
  ExpectInvalid(ShapeStatus("Conv", {{"group", IntAttr(2)}},
                            {{1, 4, 5, 5}, {4, 4, 3, 3}}),
                "group 2");
  ExpectInvalid(ShapeStatus("Conv", {{"kernel_shape", IntsAttr({3, 2})}},
                            {{1, 2, 5, 5}, {4, 2, 3, 3}}),
                "kernel_shape");
  ExpectInvalid(ShapeStatus("Conv", {}, {{1, 2, 5, 5}, {4, 2, 3, 3}, {3}}),
                "B [3]");
  ExpectInvalid(ShapeStatus("Conv", {}, {{1, 2, 2, 2}, {4, 2, 3, 3}}),
                "exceeds the padded input");
}

TEST(PoolErrorsTest, RejectsWhatItDoesNotSupport) {
  ExpectInvalid(CreateStatus("MaxPool", {}), "kernel_shape is required");
  ExpectInvalid(CreateStatus("MaxPool", {{"kernel_shape", IntsAttr({2, 2})},
                                         {"storage_order", IntAttr(1)}}),
                "storage_order");
  ExpectInvalid(
      CreateStatus("AveragePool", {{"kernel_shape", IntsAttr({2, 2})},
                                   {"count_include_pad", IntAttr(2)}}),
      "count_include_pad");
  ExpectInvalid(CreateStatus("MaxPool", {{"kernel_shape", IntsAttr({2, 2})},
                                         {"pads", IntsAttr({1, 1, 1})}}),
                "pads");
  ExpectInvalid(
      CreateStatus("MaxPool", {{"kernel_shape", IntsAttr({2, 2, 2, 2})}}),
      "4-D pooling is not supported");
  ExpectInvalid(
      ShapeStatus("MaxPool", {{"kernel_shape", IntsAttr({2, 2})}}, {{1, 2, 5}}),
      "rank 4");
  ExpectInvalid(ShapeStatus("GlobalAveragePool", {}, {{3}}), "[N, C, ...]");
  ExpectInvalid(ShapeStatus("MaxPool",
                            {{"kernel_shape", IntsAttr({2, 2})},
                             {"pads", IntsAttr({2, 0, 0, 0})}},
                            {{1, 1, 4, 4}}),
                "must be smaller than the window extent");
  ExpectInvalid(ShapeStatus("AveragePool",
                            {{"kernel_shape", IntsAttr({1, 1})},
                             {"pads", IntsAttr({1, 1, 1, 1})}},
                            {{1, 1, 0, 4}}),
                "spatial dim 0 is empty");
}

TEST(BatchNormErrorsTest, RejectsTrainingModeAndBadShapes) {
  ExpectInvalid(
      CreateStatus("BatchNormalization", {{"training_mode", IntAttr(1)}}),
      "training_mode");
  ExpectInvalid(CreateStatus("BatchNormalization", {{"spatial", IntAttr(0)}}),
                "spatial");
  ExpectInvalid(
      ShapeStatus("BatchNormalization", {}, {{2, 3, 4}, {3}, {3}, {2}, {3}}),
      "input_mean [2]");
  ExpectInvalid(
      ShapeStatus("BatchNormalization", {}, {{3}, {3}, {3}, {3}, {3}}),
      "[N, C, ...]");
}

// ---------------------------------------------- ONNX conformance data ----

constexpr char kConformanceDir[] = "/usr/share/libonnx-testdata/data/";
constexpr int64_t kMinTestOpset = 7;

absl::StatusOr<onnx::TensorProto> ReadTensorProto(const std::string& path) {
  absl::StatusOr<std::string> bytes = ReadFile(path);
  if (!bytes.ok()) return bytes.status();
  onnx::TensorProto tensor;
  if (!tensor.ParseFromString(*bytes)) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": bad TensorProto"));
  }
  return tensor;
}

Tensor ToTensor(const onnx::TensorProto& proto) {
  const Shape shape(proto.dims().begin(), proto.dims().end());
  std::vector<float> values(NumElements(shape));
  if (proto.has_raw_data()) {
    EXPECT_EQ(proto.raw_data().size(), values.size() * sizeof(float));
    std::memcpy(
        values.data(), proto.raw_data().data(),
        std::min(proto.raw_data().size(), values.size() * sizeof(float)));
  } else {
    EXPECT_EQ(static_cast<size_t>(proto.float_data_size()), values.size());
    std::copy_n(proto.float_data().begin(),
                std::min<size_t>(proto.float_data_size(), values.size()),
                values.begin());
  }
  return Tensor(shape, std::move(values));
}

// The conformance model with every graph input but the first turned into an
// initializer holding the data set's value, as in an exported model.
absl::StatusOr<std::unique_ptr<Model>> LoadConformanceModel(
    const std::string& dir) {
  absl::StatusOr<std::string> bytes = ReadFile(dir + "model.onnx");
  if (!bytes.ok()) return bytes.status();
  onnx::ModelProto proto;
  if (!proto.ParseFromString(*bytes)) {
    return absl::InvalidArgumentError("bad model.onnx");
  }
  // The global pooling cases declare opset 1 and the pytorch-converted ones
  // opset 6, older than the importer accepts; these operators' semantics are
  // unchanged since.
  for (onnx::OperatorSetIdProto& opset : *proto.mutable_opset_import()) {
    if (opset.domain().empty()) {
      opset.set_version(std::max<int64_t>(opset.version(), kMinTestOpset));
    }
  }
  onnx::GraphProto& graph = *proto.mutable_graph();
  std::vector<std::string> initialized;
  for (const onnx::TensorProto& t : graph.initializer()) {
    initialized.push_back(t.name());
  }
  // Data files number the graph inputs that are not initializers.
  int data_index = 1;
  for (int i = 1; i < graph.input_size(); ++i) {
    if (std::find(initialized.begin(), initialized.end(),
                  graph.input(i).name()) != initialized.end()) {
      continue;
    }
    absl::StatusOr<onnx::TensorProto> operand = ReadTensorProto(
        absl::StrCat(dir, "test_data_set_0/input_", data_index++, ".pb"));
    if (!operand.ok()) return operand.status();
    operand->set_name(graph.input(i).name());
    *graph.add_initializer() = *std::move(operand);
  }
  graph.mutable_input()->DeleteSubrange(1, graph.input_size() - 1);
  return Model::FromOnnxBytes(proto.SerializeAsString());
}

class ConvConformanceTest : public ::testing::TestWithParam<std::string> {};

TEST_P(ConvConformanceTest, MatchesReferenceOutput) {
  const std::string dir = absl::StrCat(kConformanceDir, GetParam(), "/");
  if (!std::filesystem::exists(dir)) GTEST_SKIP() << "libonnx-testdata absent";
  absl::StatusOr<std::unique_ptr<Model>> model = LoadConformanceModel(dir);
  ASSERT_TRUE(model.ok()) << model.status();
  absl::StatusOr<onnx::TensorProto> input =
      ReadTensorProto(dir + "test_data_set_0/input_0.pb");
  absl::StatusOr<onnx::TensorProto> output =
      ReadTensorProto(dir + "test_data_set_0/output_0.pb");
  ASSERT_TRUE(input.ok() && output.ok());
  std::vector<const Tensor*> params;
  for (const Tensor& t : (*model)->initial_params()) params.push_back(&t);
  absl::StatusOr<Tensor> y =
      (*model)->Forward(ToTensor(*input), params, nullptr);
  ASSERT_TRUE(y.ok()) << y.status();
  const Tensor expected = ToTensor(*output);
  ASSERT_EQ(y->shape(), expected.shape());
  for (int64_t i = 0; i < expected.size(); ++i) {
    const float e = expected.data()[i];
    EXPECT_NEAR(y->data()[i], e, 1e-4f * std::max(1.0f, std::abs(e)))
        << "element " << i;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Node, ConvConformanceTest,
    ::testing::Values(
        "node/test_basic_conv_with_padding",
        "node/test_basic_conv_without_padding",
        "node/test_conv_with_autopad_same",
        "node/test_conv_with_strides_and_asymmetric_padding",
        "node/test_conv_with_strides_no_padding",
        "node/test_conv_with_strides_padding", "node/test_maxpool_1d_default",
        "node/test_maxpool_2d_ceil", "node/test_maxpool_2d_default",
        "node/test_maxpool_2d_dilations", "node/test_maxpool_2d_pads",
        "node/test_maxpool_2d_precomputed_pads",
        "node/test_maxpool_2d_precomputed_same_upper",
        "node/test_maxpool_2d_precomputed_strides",
        "node/test_maxpool_2d_same_lower", "node/test_maxpool_2d_same_upper",
        "node/test_maxpool_2d_strides", "node/test_maxpool_3d_default",
        "node/test_averagepool_1d_default", "node/test_averagepool_2d_ceil",
        "node/test_averagepool_2d_default", "node/test_averagepool_2d_pads",
        "node/test_averagepool_2d_pads_count_include_pad",
        "node/test_averagepool_2d_precomputed_pads",
        "node/test_averagepool_2d_precomputed_pads_count_include_pad",
        "node/test_averagepool_2d_precomputed_same_upper",
        "node/test_averagepool_2d_precomputed_strides",
        "node/test_averagepool_2d_same_lower",
        "node/test_averagepool_2d_same_upper",
        "node/test_averagepool_2d_strides", "node/test_averagepool_3d_default",
        "node/test_globalaveragepool",
        "node/test_globalaveragepool_precomputed", "node/test_globalmaxpool",
        "node/test_globalmaxpool_precomputed", "node/test_batchnorm_epsilon",
        "node/test_batchnorm_example"));

INSTANTIATE_TEST_SUITE_P(
    PyTorchConverted, ConvConformanceTest,
    ::testing::Values(
        "pytorch-converted/test_AvgPool2d",
        "pytorch-converted/test_AvgPool2d_stride",
        "pytorch-converted/test_AvgPool1d",
        "pytorch-converted/test_AvgPool3d_stride",
        "pytorch-converted/test_BatchNorm1d_3d_input_eval",
        "pytorch-converted/test_BatchNorm2d_eval",
        "pytorch-converted/test_BatchNorm2d_momentum_eval",
        "pytorch-converted/test_BatchNorm3d_eval",
        "pytorch-converted/test_Conv2d",
        "pytorch-converted/test_Conv2d_depthwise",
        "pytorch-converted/test_Conv2d_depthwise_padded",
        "pytorch-converted/test_Conv2d_depthwise_strided",
        "pytorch-converted/test_Conv2d_depthwise_with_multiplier",
        "pytorch-converted/test_Conv2d_dilated",
        "pytorch-converted/test_Conv2d_groups",
        "pytorch-converted/test_Conv2d_groups_thnn",
        "pytorch-converted/test_Conv2d_no_bias",
        "pytorch-converted/test_Conv2d_padding",
        "pytorch-converted/test_Conv2d_strided",
        "pytorch-converted/test_MaxPool1d",
        "pytorch-converted/test_MaxPool1d_stride_padding_dilation",
        "pytorch-converted/test_MaxPool2d",
        "pytorch-converted/test_MaxPool2d_stride_padding_dilation",
        "pytorch-converted/test_MaxPool3d_stride_padding",
        "pytorch-operator/test_operator_conv",
        "pytorch-operator/test_operator_maxpool"));

// Cases whose attributes or outputs are unsupported: an INVALID_ARGUMENT that
// says why, never a wrong answer.
class ConvConformanceRejectTest
    : public ::testing::TestWithParam<std::pair<std::string, std::string>> {};

TEST_P(ConvConformanceRejectTest, IsInvalidArgument) {
  const std::string dir = absl::StrCat(kConformanceDir, GetParam().first, "/");
  if (!std::filesystem::exists(dir)) GTEST_SKIP() << "libonnx-testdata absent";
  absl::StatusOr<std::unique_ptr<Model>> model = LoadConformanceModel(dir);
  ExpectInvalid(model.status(), GetParam().second);
}

INSTANTIATE_TEST_SUITE_P(
    Node, ConvConformanceRejectTest,
    ::testing::Values(
        std::pair<std::string, std::string>{
            "node/test_batchnorm_epsilon_training_mode", "BatchNormalization"},
        std::pair<std::string, std::string>{
            "node/test_batchnorm_example_training_mode", "BatchNormalization"},
        std::pair<std::string, std::string>{
            "node/test_maxpool_with_argmax_2d_precomputed_pads", "MaxPool"},
        std::pair<std::string, std::string>{
            "node/test_maxpool_with_argmax_2d_precomputed_strides",
            "MaxPool"}));

}  // namespace
}  // namespace mixq::engine
