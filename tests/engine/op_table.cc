#include "tests/engine/op_table.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <optional>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"

namespace mixq::testing {
namespace {

using engine::ConstantInput;
using engine::Shape;
using engine::Tensor;

constexpr char kDefaultDataRoot[] = "/usr/share/libonnx-testdata/data";
constexpr char kDataRootEnv[] = "MIXQ_ONNX_TESTDATA";

// Kernels linear in each input (convolutions, pooling away from ties, data
// movement, BatchNormalization in X, scale and B): a large step costs no
// truncation error and keeps float rounding small.
constexpr GradientTolerance kLinearTolerance = {
    .eps = 1e-2f, .abs = 1e-3, .rel = 1e-2};
// Sigmoid and tanh through a recurrence: a moderate step keeps truncation and
// float rounding (the loss sums a few hundred products) both small.
constexpr GradientTolerance kRecurrentTolerance = {
    .eps = 5e-3f, .abs = 2e-3, .rel = 1e-2};
// Smooth transformer kernels (Erf, Gelu, softmax) on inputs this wide.
constexpr float kTransformerRange = 2.5f;

// BatchNormalization's inputs: X, scale, B, mean, var.
constexpr size_t kBatchNormMean = 3;
constexpr size_t kBatchNormVar = 4;

// A float constant input of `shape` holding 0.5, -1, 1.5, -2, ... (ScatterND's
// updates).
ConstantInput AlternatingFloats(Shape shape) {
  ConstantInput input;
  const int64_t n = engine::NumElements(shape);
  input.shape = std::move(shape);
  for (int64_t i = 0; i < n; ++i) {
    input.floats.push_back((i % 2 == 0 ? 0.5f : -1.0f) * (1 + i / 2));
  }
  return input;
}

// A row of the linear kernels' tables: every input uniform in [-1, 1] (or
// distinct), kLinearTolerance.
struct LinearRow {
  std::string name;
  KernelSpec kernel;
  std::vector<Shape> inputs;
};

void AddLinear(const std::string& prefix, const std::vector<LinearRow>& rows,
               bool distinct, std::vector<GradientCase>* cases) {
  for (const LinearRow& row : rows) {
    GradientCase c{
        absl::StrCat(prefix, row.name), row.kernel, {}, kLinearTolerance};
    for (const Shape& shape : row.inputs) {
      c.inputs.push_back({.shape = shape, .distinct = distinct});
    }
    cases->push_back(std::move(c));
  }
}

// Every broadcasting pattern for each arithmetic operator.
void AddArithmetic(std::vector<GradientCase>* cases) {
  struct Pattern {
    std::string name;
    Shape a, b;
  };
  const std::vector<Pattern> patterns = {
      {"same_shape", {2, 3}, {2, 3}},
      {"channel", {2, 3, 2, 2}, {3, 1, 1}},
      {"channel_first", {3, 1, 1}, {2, 3, 2, 2}},
      {"row", {4, 3}, {3}},
      {"row_first", {3}, {4, 3}},
      {"both_broadcast", {2, 1, 4}, {3, 1}},
      {"scalar", {2, 3}, {}},
      {"scalar_first", {}, {2, 3}},
  };
  for (const std::string op : {"Add", "Sub", "Mul", "Div"}) {
    for (const Pattern& p : patterns) {
      InputSpec b{p.b};
      // Divisors stay away from zero.
      if (op == "Div") b = {p.b, 0.5f, 2.0f};
      cases->push_back({absl::StrCat(op, "_", p.name), {op}, {{p.a}, b}});
    }
  }
}

// Activations, variadic element-wise operators, softmax, normalisation and
// reductions (ops_elementwise.cc).
void AddElementwise(std::vector<GradientCase>* cases) {
  const Shape s = {2, 3, 4};
  const std::vector<float> zero = {0.0f};
  std::vector<GradientCase> rows = {
      {"PRelu_channel", {"PRelu"}, {{{2, 3, 2, 2}, -1, 1, zero}, {{3, 1, 1}}}},
      {"PRelu_scalar_slope", {"PRelu"}, {{s, -1, 1, zero}, {{1}}}},
      {"Sum_three_broadcast", {"Sum"}, {{{2, 3}}, {{3}}, {{2, 1}}}},
      {"Sum_one", {"Sum"}, {{s}}},
      {"Mean_two", {"Mean"}, {{{2, 3}}, {{2, 3}}}},
      // Ranges that keep the competing values of the seeded draw more than a
      // finite-difference step apart.
      {"Max_three_broadcast",
       {"Max"},
       {{{2, 3}}, {{3}, -0.5f, 0.5f}, {{2, 1}}}},
      {"Min_two", {"Min"}, {{{2, 3}}, {{2, 3}}}},
      {"Relu", {"Relu"}, {{s, -1, 1, zero}}},
      {"LeakyRelu",
       {"LeakyRelu", {{"alpha", FloatAttr(0.2f)}}},
       {{s, -1, 1, zero}}},
      {"Sigmoid", {"Sigmoid"}, {{s, -4, 4}}},
      {"Tanh", {"Tanh"}, {{s, -2, 2}}},
      {"HardSigmoid",
       {"HardSigmoid", {{"alpha", FloatAttr(0.5f)}, {"beta", FloatAttr(0.4f)}}},
       {{s, -3, 3, {-0.8f, 1.2f}}}},
      {"HardSwish", {"HardSwish"}, {{s, -5, 5, {-3.0f, 3.0f}}}},
      {"Elu", {"Elu", {{"alpha", FloatAttr(0.7f)}}}, {{s, -2, 2, zero}}},
      {"Softplus", {"Softplus"}, {{s, -4, 4}}},
      {"Neg", {"Neg"}, {{s}}},
      {"Abs", {"Abs"}, {{s, -1, 1, zero}}},
      {"Sqrt", {"Sqrt"}, {{s, 0.5f, 2.0f}}},
      {"Exp", {"Exp"}, {{s}}},
      {"Log", {"Log"}, {{s, 0.5f, 2.0f}}},
      {"Clip_opset6_attributes",
       {"Clip", {{"min", FloatAttr(-0.5f)}, {"max", FloatAttr(0.3f)}}, {}, 6},
       {{s, -1, 1, {-0.5f, 0.3f}}}},
      {"Clip_opset13_inputs",
       {"Clip", {}, {FloatInput(-0.5f), FloatInput(0.3f)}},
       {{s, -1, 1, {-0.5f, 0.3f}}}},
      {"Clip_opset13_max_only",
       {"Clip", {}, {std::nullopt, FloatInput(0.3f)}},
       {{s, -1, 1, {0.3f}}}},
      {"Softmax_last_axis", {"Softmax"}, {{s, -2, 2}}},
      {"Softmax_axis1", {"Softmax", {{"axis", IntAttr(1)}}}, {{s, -2, 2}}},
      {"Softmax_opset11_coerced", {"Softmax", {}, {}, 11}, {{s, -2, 2}}},
      {"Softmax_4d_last_axis", {"Softmax"}, {{{2, 2, 3, 4}, -2, 2}}},
      {"LogSoftmax_last_axis", {"LogSoftmax"}, {{s, -2, 2}}},
      {"LogSoftmax_axis0",
       {"LogSoftmax", {{"axis", IntAttr(0)}}},
       {{s, -2, 2}}},
      {"LogSoftmax_opset11_coerced", {"LogSoftmax", {}, {}, 11}, {{s, -2, 2}}},
      {"ReduceMean_spatial",
       {"ReduceMean", {{"axes", IntsAttr({2, 3})}}},
       {{{2, 3, 2, 3}}}},
      {"ReduceMean_no_keepdims",
       {"ReduceMean", {{"axes", IntsAttr({-1, 0})}, {"keepdims", IntAttr(0)}}},
       {{s}}},
      {"ReduceMean_all", {"ReduceMean"}, {{s}}},
      {"ReduceMean_opset18_input",
       {"ReduceMean", {{"keepdims", IntAttr(0)}}, {IntInput({1})}, 18},
       {{s}}},
      {"ReduceSum_axis1", {"ReduceSum", {}, {IntInput({1})}}, {{s}}},
      {"ReduceSumSquare",
       {"ReduceSumSquare", {{"axes", IntsAttr({0, 2})}}},
       {{s}}},
      {"ReduceMax_spatial",
       {"ReduceMax", {{"axes", IntsAttr({2, 3})}}},
       {{{2, 3, 2, 3}}}},
      {"ReduceMin_axis1", {"ReduceMin", {{"axes", IntsAttr({1})}}}, {{s}}},
      {"ReduceMax_all", {"ReduceMax", {{"keepdims", IntAttr(0)}}}, {{{2, 3}}}},
      {"LayerNorm_last_axis",
       {"LayerNormalization"},
       {{s, -2, 2}, {{4}, 0.5f, 1.5f}, {{4}}}},
      {"LayerNorm_axis1_no_bias",
       {"LayerNormalization",
        {{"axis", IntAttr(1)}, {"epsilon", FloatAttr(0.1f)}}},
       {{s, -2, 2}, {{3, 4}, 0.5f, 1.5f}}},
      {"LayerNorm_broadcast_scale",
       {"LayerNormalization", {{"axis", IntAttr(-2)}}},
       {{s, -2, 2}, {{1, 4}, 0.5f, 1.5f}, {{3, 1}}}},
      {"Reciprocal", {"Reciprocal"}, {{s, 0.5f, 2.0f}}},
      {"Pow_channel_exponent", {"Pow"}, {{{2, 3, 2}, 0.5f, 2.0f}, {{3, 1}}}},
      {"Pow_scalar_base", {"Pow"}, {{{}, 0.5f, 2.0f}, {{2, 3}}}},
      // A perturbed exponent of a negative base is NaN, so bases stay > 0.
      {"Pow_square", {"Pow"}, {{s, 0.5f, 2.0f}, {{1}, 2.0f, 2.0f}}},
      {"Erf", {"Erf"}, {{s, -kTransformerRange, kTransformerRange}}},
      {"Gelu_exact", {"Gelu"}, {{s, -kTransformerRange, kTransformerRange}}},
      // The condition (distinct values, zero among them: both branches
      // taken) gets zeros by contract; x and y the gradient where chosen,
      // summed over y's broadcast axis.
      {"Where_broadcast",
       {"Where"},
       {{.shape = {2, 3}, .distinct = true}, {{2, 3}}, {{1, 3}}},
       {},
       {0}},
      {"Gelu_tanh",
       {"Gelu", {{"approximate", StringAttr("tanh")}}},
       {{s, -kTransformerRange, kTransformerRange}}},
  };
  for (GradientCase& row : rows) cases->push_back(std::move(row));
}

// Gemm with every transposition and bias shape.
void AddGemm(std::vector<GradientCase>* cases) {
  constexpr int64_t m = 3, k = 4, n = 2;
  const std::vector<std::pair<std::string, std::optional<Shape>>> biases = {
      {"none", std::nullopt},  {"vector", Shape{n}},    {"row", Shape{1, n}},
      {"matrix", Shape{m, n}}, {"column", Shape{m, 1}}, {"scalar", Shape{}}};
  std::vector<LinearRow> rows;
  for (int ta : {0, 1}) {
    for (int tb : {0, 1}) {
      for (const auto& [bias_name, bias] : biases) {
        LinearRow row{
            absl::StrCat("tA", ta, "_tB", tb, "_", bias_name),
            {"Gemm",
             {{"transA", IntAttr(ta)},
              {"transB", IntAttr(tb)},
              {"alpha", FloatAttr(0.7f)},
              {"beta", FloatAttr(1.3f)}}},
            {ta ? Shape{k, m} : Shape{m, k}, tb ? Shape{n, k} : Shape{k, n}}};
        if (bias) row.inputs.push_back(*bias);
        rows.push_back(std::move(row));
      }
    }
  }
  AddLinear("Gemm_", rows, false, cases);
}

// MatMul in every batching, the operators defined in ops.cc, and the
// data-movement kernels of ops_shape.cc and ops_transformer.cc. Gather with
// repeated indices and reflect/edge Pad map several outputs to one input, so
// their gradients accumulate.
void AddShapeAndMatMul(std::vector<GradientCase>* cases) {
  // clang-format off
  const std::vector<LinearRow> rows = {
      {"MatMul_2d", {"MatMul"}, {{3, 4}, {4, 5}}},
      {"MatMul_3d_by_2d", {"MatMul"}, {{2, 3, 4}, {4, 5}}},
      {"MatMul_3d_by_3d", {"MatMul"}, {{2, 3, 4}, {2, 4, 5}}},
      {"MatMul_2d_by_3d", {"MatMul"}, {{3, 4}, {2, 4, 5}}},
      // Q·K^T and attention·V at [B, H, T, T].
      {"MatMul_4d_batched", {"MatMul"}, {{2, 3, 4, 5}, {2, 3, 5, 4}}},
      {"Flatten_axis2", {"Flatten", {{"axis", IntAttr(2)}}}, {{2, 3, 4}}},
      {"Reshape_zero_minus_one", {"Reshape", {}, {IntInput({0, -1})}}, {{2, 3, 4}}},
      {"Identity", {"Identity"}, {{2, 3}}},
      {"Dropout", {"Dropout"}, {{2, 3}}},
      {"Cast_float", {"Cast", {{"to", IntAttr(1)}}}, {{2, 3}}},
      {"Concat_axis1_three", {"Concat", {{"axis", IntAttr(1)}}}, {{2, 1, 3}, {2, 2, 3}, {2, 3, 3}}},
      {"Concat_negative_axis", {"Concat", {{"axis", IntAttr(-1)}}}, {{2, 3}, {2, 2}}},
      {"Transpose_default", {"Transpose"}, {{2, 3, 4}}},
      {"Transpose_perm", {"Transpose", {{"perm", IntsAttr({0, 2, 3, 1})}}}, {{2, 3, 4, 2}}},
      {"Transpose_4d_heads", {"Transpose", {{"perm", IntsAttr({0, 2, 1, 3})}}}, {{2, 3, 4, 5}}},
      {"Squeeze", {"Squeeze", {}, {IntInput({1})}}, {{2, 1, 3}}},
      {"Unsqueeze_opset11", {"Unsqueeze", {{"axes", IntsAttr({0, -1})}}, {}, 11}, {{2, 3}}},
      {"Unsqueeze_opset13", {"Unsqueeze", {}, {IntInput({1})}}, {{2, 3}}},
      {"Pad_constant", {"Pad", {}, {IntInput({0, 1, -1, 1, 2, 1}), FloatInput(0.5f)}}, {{2, 3, 4}}},
      {"Pad_reflect", {"Pad", {{"mode", StringAttr("reflect")}}, {IntInput({0, 2, 1, 0, 1, 3})}},
       {{2, 3, 4}}},
      {"Pad_edge", {"Pad", {{"mode", StringAttr("edge")}}, {IntInput({1, 2, 0, 0, 1, 3})}},
       {{2, 3, 4}}},
      {"Pad_opset7_attributes", {"Pad", {{"pads", IntsAttr({1, 0, 0, 2})}}, {}, 7}, {{3, 4}}},
      {"Slice_steps", {"Slice", {}, {IntInput({3, 1}), IntInput({-100, 6}), IntInput({0, -1}),
                                     IntInput({-2, 2})}},
       {{4, 5, 6}}},
      {"Slice_opset9", {"Slice", {{"starts", IntsAttr({1})}, {"ends", IntsAttr({-1})},
                                  {"axes", IntsAttr({1})}}, {}, 9},
       {{4, 5}}},
      {"Gather_repeated_indices", {"Gather", {{"axis", IntAttr(1)}},
                                   {IntInput({2, 0, -1, 2}, Shape{2, 2})}},
       {{4, 3}}},
      {"Gather_axis0_scalar", {"Gather", {}, {IntInput({-2}, Shape{})}}, {{4, 3}}},
      {"Expand", {"Expand", {}, {IntInput({2, 3, 4})}}, {{3, 1}}},
      {"Tile", {"Tile", {}, {IntInput({2, 3, 1})}}, {{2, 1, 3}}},
      {"Tile_ones", {"Tile", {}, {IntInput({1, 1})}}, {{2, 3}}},
      {"Split_middle_part", {"Split", {{"axis", IntAttr(1)}}, {IntInput({1, 3, 2})}, 13, 3, 1},
       {{2, 6, 2}}},
      {"Split_equal_last_part", {"Split", {}, {}, 13, 2, 1}, {{4, 3}}},
      {"DepthToSpace_dcr", {"DepthToSpace", {{"blocksize", IntAttr(2)}}}, {{2, 8, 2, 3}}},
      {"DepthToSpace_crd", {"DepthToSpace", {{"blocksize", IntAttr(2)},
                                             {"mode", StringAttr("CRD")}}},
       {{2, 8, 2, 3}}},
      {"SpaceToDepth", {"SpaceToDepth", {{"blocksize", IntAttr(2)}}}, {{2, 2, 4, 6}}},
      // ScatterND with constant indices and updates: the gradient reaches the
      // data where no update overwrote it (none), all of it (add), scaled by
      // the updates (mul).
      {"ScatterND_rows_none", {"ScatterND", {{"reduction", StringAttr("none")}},
                               {IntInput({2, 0}, Shape{2, 1}), AlternatingFloats({2, 4})}, 16},
       {{3, 4}}},
      {"ScatterND_elements_none", {"ScatterND", {},
                                   {IntInput({0, 1, 1, 2}, Shape{2, 2}),
                                    AlternatingFloats({2, 2})}, 16},
       {{2, 3, 2}}},
      {"ScatterND_rows_add", {"ScatterND", {{"reduction", StringAttr("add")}},
                              {IntInput({1, 1}, Shape{2, 1}), AlternatingFloats({2, 4})}, 16},
       {{3, 4}}},
      {"ScatterND_rows_mul", {"ScatterND", {{"reduction", StringAttr("mul")}},
                              {IntInput({-1, 0, -1}, Shape{3, 1}), AlternatingFloats({3, 4})},
                              16},
       {{3, 4}}},
      // y = (x - zero_point) * scale, per channel on axis 1.
      {"DequantizeLinear_per_channel", {"DequantizeLinear", {{"axis", IntAttr(1)}},
                                        {FloatsInput({0.5f, 2.0f, 0.25f}),
                                         IntInput({3, 1, 0})}},
       {{2, 3, 2}}},
  };
  // clang-format on
  AddLinear("", rows, false, cases);
}

// Convolutions (2-D, 1-D, transposed), pooling and BatchNormalization
// (ops_conv.cc, ops_conv_transpose.cc), and Resize (ops_resize.cc).
void AddConvolutionAndPooling(std::vector<GradientCase>* cases) {
  const std::optional<ConstantInput> kEmpty = std::nullopt;
  // clang-format off
  const std::vector<LinearRow> conv = {
      {"basic_3x3", {"Conv"}, {{2, 3, 5, 5}, {4, 3, 3, 3}, {4}}},
      {"no_bias", {"Conv"}, {{1, 2, 4, 4}, {3, 2, 3, 3}}},
      {"pads", {"Conv", {{"pads", IntsAttr({1, 1, 1, 1})}}}, {{1, 2, 5, 4}, {3, 2, 3, 3}, {3}}},
      {"asymmetric_pads_strides", {"Conv", {{"pads", IntsAttr({1, 0, 2, 1})},
                                            {"strides", IntsAttr({2, 3})}}},
       {{2, 2, 7, 6}, {3, 2, 3, 2}, {3}}},
      {"dilations", {"Conv", {{"dilations", IntsAttr({2, 1})}, {"pads", IntsAttr({2, 1, 2, 1})}}},
       {{1, 2, 7, 7}, {2, 2, 3, 3}, {2}}},
      {"same_upper", {"Conv", {{"auto_pad", StringAttr("SAME_UPPER")},
                               {"strides", IntsAttr({2, 2})}}},
       {{1, 2, 6, 5}, {2, 2, 4, 3}}},
      {"same_lower", {"Conv", {{"auto_pad", StringAttr("SAME_LOWER")},
                               {"strides", IntsAttr({2, 1})}}},
       {{1, 2, 6, 5}, {2, 2, 4, 3}}},
      {"valid", {"Conv", {{"auto_pad", StringAttr("VALID")}, {"strides", IntsAttr({2, 2})}}},
       {{1, 1, 6, 5}, {2, 1, 3, 2}, {2}}},
      {"kernel_shape", {"Conv", {{"kernel_shape", IntsAttr({2, 3})}}},
       {{1, 2, 4, 4}, {2, 2, 2, 3}, {2}}},
      {"group_2", {"Conv", {{"group", IntAttr(2)}, {"pads", IntsAttr({1, 1, 1, 1})}}},
       {{2, 4, 5, 5}, {6, 2, 3, 3}, {6}}},
      {"depthwise", {"Conv", {{"group", IntAttr(3)}, {"pads", IntsAttr({1, 1, 1, 1})}}},
       {{2, 3, 5, 6}, {3, 1, 3, 3}, {3}}},
      {"depthwise_multiplier_2", {"Conv", {{"group", IntAttr(2)},
                                           {"pads", IntsAttr({1, 0, 1, 2})}}},
       {{2, 2, 5, 5}, {4, 1, 3, 3}, {4}}},
      {"depthwise_stride_2", {"Conv", {{"group", IntAttr(3)}, {"pads", IntsAttr({1, 1, 1, 1})},
                                       {"strides", IntsAttr({2, 2})}}},
       {{1, 3, 7, 8}, {3, 1, 3, 3}, {3}}},
      {"depthwise_strides_dilations", {"Conv", {{"group", IntAttr(2)},
                                                {"strides", IntsAttr({3, 2})},
                                                {"dilations", IntsAttr({2, 2})},
                                                {"auto_pad", StringAttr("SAME_UPPER")}}},
       {{1, 2, 9, 9}, {2, 1, 2, 3}}},
      {"depthwise_large_map", {"Conv", {{"group", IntAttr(2)}, {"pads", IntsAttr({1, 2, 0, 1})}}},
       {{1, 2, 9, 10}, {2, 1, 3, 3}, {2}}},
      {"pointwise", {"Conv"}, {{2, 3, 3, 4}, {5, 3, 1, 1}, {5}}},
      {"pointwise_grouped", {"Conv", {{"group", IntAttr(2)}}}, {{2, 4, 2, 3}, {4, 2, 1, 1}}},
      {"pointwise_stride_2", {"Conv", {{"strides", IntsAttr({2, 2})}}},
       {{1, 3, 5, 5}, {2, 3, 1, 1}, {2}}},
      // 24 samples of 1x1 outputs: chunks of 3 samples, 8 partial sums.
      {"chunked_batch", {"Conv"}, {{24, 2, 3, 3}, {3, 2, 3, 3}, {3}}},
      {"chunked_pointwise", {"Conv"}, {{20, 3, 2, 2}, {2, 3, 1, 1}, {2}}},
      {"single_pixel", {"Conv", {{"group", IntAttr(2)}}}, {{3, 4, 1, 1}, {6, 2, 1, 1}, {6}}},
      {"1d", {"Conv", {{"pads", IntsAttr({1, 1})}}}, {{2, 3, 9}, {4, 3, 3}, {4}}},
      {"1d_strided_dilated_grouped", {"Conv", {{"strides", IntsAttr({2})},
                                               {"dilations", IntsAttr({2})},
                                               {"pads", IntsAttr({2, 1})},
                                               {"group", IntAttr(2)}}},
       {{2, 4, 11}, {6, 2, 3}}},
      {"1d_no_attributes", {"Conv"}, {{1, 2, 7}, {3, 2, 2}}},
  };
  const std::vector<LinearRow> conv_transpose = {
      {"strided_padded", {"ConvTranspose", {{"strides", IntsAttr({2, 2})},
                                            {"pads", IntsAttr({1, 0, 1, 1})},
                                            {"output_padding", IntsAttr({1, 0})}}},
       {{2, 3, 4, 5}, {3, 2, 3, 3}, {2}}},
      {"grouped_dilated", {"ConvTranspose", {{"group", IntAttr(2)},
                                             {"dilations", IntsAttr({2, 1})},
                                             {"strides", IntsAttr({1, 3})}}},
       {{2, 4, 3, 3}, {4, 3, 2, 2}}},
      {"1d", {"ConvTranspose", {{"strides", IntsAttr({2})}, {"pads", IntsAttr({1, 1})}}},
       {{2, 3, 6}, {3, 4, 3}, {4}}},
      {"output_shape", {"ConvTranspose", {{"strides", IntsAttr({3, 2})},
                                          {"output_shape", IntsAttr({10, 8})}}},
       {{1, 2, 3, 3}, {2, 2, 3, 3}}},
  };
  const std::vector<LinearRow> pool = {
      {"max_2x2", {"MaxPool", {{"kernel_shape", IntsAttr({2, 2})}}}, {{2, 2, 4, 4}}},
      {"max_3x3_s2_pads", {"MaxPool", {{"kernel_shape", IntsAttr({3, 3})},
                                       {"strides", IntsAttr({2, 2})},
                                       {"pads", IntsAttr({1, 1, 1, 1})}}},
       {{1, 2, 7, 6}}},
      {"max_ceil", {"MaxPool", {{"kernel_shape", IntsAttr({3, 3})}, {"strides", IntsAttr({2, 2})},
                                {"ceil_mode", IntAttr(1)}}},
       {{1, 1, 6, 6}}},
      {"max_dilations", {"MaxPool", {{"kernel_shape", IntsAttr({2, 2})},
                                     {"dilations", IntsAttr({2, 3})}}},
       {{1, 1, 6, 7}}},
      {"max_same_lower", {"MaxPool", {{"kernel_shape", IntsAttr({2, 3})},
                                      {"auto_pad", StringAttr("SAME_LOWER")}}},
       {{1, 2, 5, 5}}},
      {"max_1d", {"MaxPool", {{"kernel_shape", IntsAttr({3})}, {"strides", IntsAttr({2})}}},
       {{2, 2, 9}}},
      {"max_3d", {"MaxPool", {{"kernel_shape", IntsAttr({2, 2, 2})}}}, {{1, 2, 4, 4, 4}}},
      {"avg_2x2", {"AveragePool", {{"kernel_shape", IntsAttr({2, 2})}}}, {{2, 2, 4, 4}}},
      {"avg_pads_exclude", {"AveragePool", {{"kernel_shape", IntsAttr({3, 3})},
                                            {"strides", IntsAttr({2, 2})},
                                            {"pads", IntsAttr({1, 1, 1, 1})}}},
       {{1, 2, 5, 5}}},
      {"avg_pads_include", {"AveragePool", {{"kernel_shape", IntsAttr({3, 3})},
                                            {"pads", IntsAttr({1, 0, 2, 1})},
                                            {"count_include_pad", IntAttr(1)}}},
       {{1, 2, 5, 5}}},
      {"avg_ceil", {"AveragePool", {{"kernel_shape", IntsAttr({3, 3})},
                                    {"strides", IntsAttr({2, 2})}, {"ceil_mode", IntAttr(1)}}},
       {{1, 1, 6, 6}}},
      {"avg_same_upper", {"AveragePool", {{"kernel_shape", IntsAttr({3, 2})},
                                          {"strides", IntsAttr({2, 2})},
                                          {"auto_pad", StringAttr("SAME_UPPER")}}},
       {{1, 1, 5, 6}}},
      {"avg_3d", {"AveragePool", {{"kernel_shape", IntsAttr({2, 2, 3})}}}, {{1, 1, 3, 4, 4}}},
      {"avg_1d", {"AveragePool", {{"kernel_shape", IntsAttr({3})}, {"strides", IntsAttr({2})}}},
       {{2, 3, 9}}},
      {"global_avg", {"GlobalAveragePool"}, {{2, 3, 4, 5}}},
      {"global_avg_1d", {"GlobalAveragePool"}, {{2, 3, 7}}},
      {"global_max", {"GlobalMaxPool"}, {{2, 3, 4, 5}}},
      {"global_max_3d", {"GlobalMaxPool"}, {{1, 2, 2, 3, 2}}},
  };
  const std::vector<LinearRow> resize = {
      {"nearest_asymmetric", {"Resize", {{"mode", StringAttr("nearest")},
                                         {"coordinate_transformation_mode",
                                          StringAttr("asymmetric")},
                                         {"nearest_mode", StringAttr("floor")}},
                              {kEmpty, FloatsInput({1, 1, 2, 2})}},
       {{2, 3, 4, 5}}},
      {"linear_half_pixel", {"Resize", {{"mode", StringAttr("linear")}},
                             {kEmpty, FloatsInput({1, 1, 2, 1.5f})}},
       {{2, 3, 4, 5}}},
      {"linear_align_corners_downsample", {"Resize", {{"mode", StringAttr("linear")},
                                                      {"coordinate_transformation_mode",
                                                       StringAttr("align_corners")}},
                                           {kEmpty, FloatsInput({1, 1, 0.5f, 2})}},
       {{1, 2, 6, 5}}},
      {"linear_sizes_1d", {"Resize", {{"mode", StringAttr("linear")}},
                           {kEmpty, kEmpty, IntInput({2, 3, 11})}},
       {{2, 3, 7}}},
      {"Upsample_opset9_linear", {"Upsample", {{"mode", StringAttr("linear")}},
                                  {FloatsInput({1, 1, 2, 3})}, 9},
       {{1, 2, 3, 4}}},
  };
  // clang-format on
  AddLinear("Conv_", conv, true, cases);
  AddLinear("ConvTranspose_", conv_transpose, false, cases);
  AddLinear("Pool_", pool, true, cases);
  AddLinear("Resize_", resize, false, cases);

  // var stays positive; the gradients of mean and var are zero by contract.
  const auto batch_norm = [&](std::string name, Shape x, int64_t channels,
                              Attributes attributes) {
    const Shape c = {channels};
    cases->push_back({absl::StrCat("BatchNorm_", name),
                      {"BatchNormalization", std::move(attributes)},
                      {{x}, {c}, {c}, {c}, {c, 0.5f, 1.5f}},
                      kLinearTolerance,
                      {kBatchNormMean, kBatchNormVar}});
  };
  const Attributes eps = {{"epsilon", FloatAttr(1e-3f)}};
  batch_norm("rank2", {4, 3}, 3, eps);
  batch_norm("rank3", {2, 3, 5}, 3, {});
  batch_norm("rank4", {2, 3, 4, 5}, 3, eps);
  batch_norm("rank5", {1, 2, 2, 3, 2}, 2, eps);
}

// RNN, LSTM and GRU (ops_rnn.cc): every direction, with and without bias,
// initial states and peepholes, both GRU variants.
void AddRecurrent(std::vector<GradientCase>* cases) {
  const auto direction = [](const char* d) {
    return std::pair{std::string("direction"), StringAttr(d)};
  };
  const auto hidden =
      std::pair{std::string("hidden_size"), IntAttr(kRecurrentHidden)};
  const auto lbr = [](int v) {
    return std::pair{std::string("linear_before_reset"), IntAttr(v)};
  };
  struct Row {
    std::string name;
    KernelSpec kernel;
    std::vector<Shape> inputs;
  };
  const std::vector<Row> rows = {
      {"Rnn_forward", {"RNN", {hidden}}, RecurrentInputs(1, 1, true, 0)},
      {"Rnn_reverse_state",
       {"RNN", {hidden, direction("reverse")}},
       RecurrentInputs(1, 1, false, 1)},
      {"Rnn_bidirectional_bias_state",
       {"RNN", {hidden, direction("bidirectional")}},
       RecurrentInputs(2, 1, true, 1)},
      {"Lstm_forward_no_bias",
       {"LSTM", {hidden}},
       RecurrentInputs(1, 4, false, 0)},
      {"Lstm_forward_bias", {"LSTM", {hidden}}, RecurrentInputs(1, 4, true, 0)},
      {"Lstm_reverse_states",
       {"LSTM", {hidden, direction("reverse")}},
       RecurrentInputs(1, 4, true, 2)},
      {"Lstm_bidirectional_peepholes",
       {"LSTM", {hidden, direction("bidirectional")}},
       RecurrentInputs(2, 4, true, 2, true)},
      {"Lstm_bidirectional_initial_h_only",
       {"LSTM", {hidden, direction("bidirectional")}},
       RecurrentInputs(2, 4, false, 1)},
      {"Gru_forward", {"GRU", {hidden}}, RecurrentInputs(1, 3, true, 0)},
      {"Gru_forward_linear_before_reset",
       {"GRU", {hidden, lbr(1)}},
       RecurrentInputs(1, 3, true, 0)},
      {"Gru_reverse_state",
       {"GRU", {hidden, direction("reverse")}},
       RecurrentInputs(1, 3, true, 1)},
      {"Gru_bidirectional_linear_before_reset_state",
       {"GRU", {hidden, direction("bidirectional"), lbr(1)}},
       RecurrentInputs(2, 3, true, 1)},
      {"Gru_bidirectional_no_bias_state",
       {"GRU", {hidden, direction("bidirectional")}},
       RecurrentInputs(2, 3, false, 1)},
  };
  for (const Row& row : rows) {
    GradientCase c{row.name, row.kernel, {}, kRecurrentTolerance};
    for (const Shape& shape : row.inputs) c.inputs.push_back({shape});
    cases->push_back(std::move(c));
  }
}

}  // namespace

std::vector<Shape> RecurrentInputs(int64_t directions, int64_t gates, bool bias,
                                   int states, bool peepholes, int64_t batch) {
  // An omitted optional input (OpSchema::optional_data_inputs).
  const Shape omitted = {0};
  std::vector<Shape> shapes = {
      {kRecurrentSteps, batch, kRecurrentInput},
      {directions, gates * kRecurrentHidden, kRecurrentInput},
      {directions, gates * kRecurrentHidden, kRecurrentHidden}};
  if (!bias && states == 0 && !peepholes) return shapes;
  shapes.push_back(bias ? Shape{directions, 2 * gates * kRecurrentHidden}
                        : omitted);
  if (states == 0 && !peepholes) return shapes;
  shapes.push_back(omitted);  // sequence_lens
  for (int s = 0; s < states; ++s) {
    shapes.push_back({directions, batch, kRecurrentHidden});
  }
  if (peepholes) shapes.push_back({directions, 3 * kRecurrentHidden});
  return shapes;
}

std::vector<GradientCase> GradientCases() {
  std::vector<GradientCase> cases;
  AddArithmetic(&cases);
  AddElementwise(&cases);
  AddGemm(&cases);
  AddShapeAndMatMul(&cases);
  AddConvolutionAndPooling(&cases);
  AddRecurrent(&cases);
  return cases;
}

std::vector<ForwardCase> ForwardCases() {
  const auto quant_params = [] {
    // scale 2, zero point 10 (uint8 unless output_dtype says otherwise).
    return std::vector<std::optional<ConstantInput>>{FloatsInput({2.0f}),
                                                     IntInput({10}, Shape{})};
  };
  return {
      // 0.5 x (1 + erf(x / sqrt(2))) and its tanh form, from Python's math.
      {"Gelu_exact",
       {"Gelu"},
       {Tensor({5}, {-1.5f, -0.5f, 0.0f, 0.7f, 2.0f})},
       Tensor({5}, {-0.1002108f, -0.1542688f, 0.0f, 0.5306254f, 1.9544997f})},
      {"Gelu_tanh",
       {"Gelu", {{"approximate", StringAttr("tanh")}}},
       {Tensor({5}, {-1.5f, -0.5f, 0.0f, 0.7f, 2.0f})},
       Tensor({5}, {-0.1004284f, -0.1542860f, 0.0f, 0.5305701f, 1.9545977f})},
      // The first of equal maxima unless select_last_index.
      {"ArgMax_axis1_keepdims",
       {"ArgMax", {{"axis", IntAttr(1)}}},
       {Tensor({2, 3}, {1, 5, 3, 7, 2, 7})},
       Tensor({2, 1}, {1, 0})},
      {"ArgMax_select_last",
       {"ArgMax",
        {{"axis", IntAttr(1)},
         {"keepdims", IntAttr(0)},
         {"select_last_index", IntAttr(1)}}},
       {Tensor({2, 3}, {1, 5, 3, 7, 2, 7})},
       Tensor({2}, {1, 2})},
      // An attention mask against 0, then Where(mask, -5, scores).
      {"Equal_mask_against_scalar",
       {"Equal"},
       {Tensor({2, 3}, {1, 1, 0, 1, 0, 0}), Tensor({}, {0.0f})},
       Tensor({2, 3}, {0, 0, 1, 0, 1, 1})},
      {"Where_broadcast",
       {"Where"},
       {Tensor({2, 3}, {0, 0, 1, 0, 1, 1}), Tensor({}, {-5.0f}),
        Tensor({1, 3}, {1, 2, 3})},
       Tensor({2, 3}, {1, 2, -5, 1, -5, -5})},
      {"GlobalAveragePool",
       {"GlobalAveragePool"},
       {Tensor({1, 2, 2, 2}, {1, 2, 3, 4, 5, 6, 7, 8})},
       Tensor({1, 2, 1, 1}, {2.5f, 6.5f})},
      {"GlobalMaxPool",
       {"GlobalMaxPool"},
       {Tensor({1, 2, 2, 2}, {1, 8, 3, 4, 5, 6, 7, 2})},
       Tensor({1, 2, 1, 1}, {8, 7})},
      // round_half_to_even(x / 2) + 10, saturated to uint8: -1.5 -> -2.
      {"QuantizeLinear_uint8",
       {"QuantizeLinear", {}, quant_params()},
       {Tensor({5}, {0.0f, 1.2f, -3.0f, 300.0f, 600.0f})},
       Tensor({5}, {10, 11, 8, 160, 255})},
      {"QuantizeLinear_int8_saturates",
       {"QuantizeLinear", {{"output_dtype", IntAttr(3)}}, quant_params()},
       {Tensor({3}, {-300.0f, 5.0f, 300.0f})},
       Tensor({3}, {-128, 12, 127})},
      // (x - 10) * 2.
      {"DequantizeLinear",
       {"DequantizeLinear", {}, quant_params()},
       {Tensor({4}, {10, 11, 8, 255})},
       Tensor({4}, {0, 2, -4, 490})},
  };
}

std::vector<ConformanceCase> ConformanceCases() {
  return {
      // One case (at least) per operator that has passing ones.
      {"node", "test_abs"},
      {"node", "test_add_bcast"},
      {"node", "test_averagepool_2d_pads"},
      {"node", "test_batchnorm_epsilon"},
      {"node", "test_layer_normalization_2d_axis0_expanded"},  // Cast
      {"node", "test_clip"},
      {"node", "test_concat_2d_axis_0"},
      {"node", "test_basic_conv_with_padding"},
      {"node", "test_conv_with_autopad_same"},
      {"node", "test_div_bcast"},
      {"node", "test_dropout_default"},
      {"node", "test_elu"},
      {"node", "test_erf"},
      {"node", "test_exp"},
      {"node", "test_expand_dim_changed"},
      {"node", "test_flatten_axis1"},
      {"node", "test_gather_0"},
      {"node", "test_gemm_all_attributes"},
      {"node", "test_hardsigmoid"},
      {"node", "test_hardswish"},
      {"node", "test_identity"},
      {"node", "test_layer_normalization_3d_axis1_epsilon"},
      {"node", "test_leakyrelu"},
      {"node", "test_log"},
      {"node", "test_logsoftmax_axis_1"},
      {"node", "test_matmul_4d"},
      {"node", "test_max_example"},
      {"node", "test_maxpool_2d_pads"},
      {"node", "test_mean_example"},
      {"node", "test_min_example"},
      {"node", "test_mul_bcast"},
      {"node", "test_neg"},
      {"node", "test_prelu_broadcast"},
      {"node", "test_constant_pad"},
      {"pytorch-converted", "test_ReflectionPad2d"},
      {"node", "test_pow_bcast_array"},
      {"node", "test_reciprocal"},
      {"node", "test_reduce_max_do_not_keepdims_example"},
      {"node", "test_reduce_mean_do_not_keepdims_example"},
      {"node", "test_reduce_min_do_not_keepdims_example"},
      {"node", "test_reduce_sum_do_not_keepdims_example"},
      {"node", "test_reduce_sum_square_do_not_keepdims_example"},
      {"node", "test_relu"},
      {"node", "test_reshape_negative_dim"},
      {"node", "test_sigmoid"},
      {"node", "test_slice"},
      {"node", "test_softmax_axis_1"},
      {"pytorch-converted", "test_Softplus"},
      {"node", "test_split_equal_parts_2d"},
      {"node", "test_sqrt"},
      {"node", "test_squeeze"},
      {"node", "test_sub_bcast"},
      {"node", "test_sum_example"},
      {"node", "test_tanh"},
      {"node", "test_tile"},
      {"node", "test_transpose_all_permutations_2"},
      {"node", "test_unsqueeze_axis_1"},
      // ScatterND: data is the graph input; indices and updates become
      // initializers.
      {"node", "test_scatternd"},
      {"node", "test_scatternd_add"},
      {"node", "test_scatternd_multiply"},
      // RNN, LSTM and GRU: defaults, biases, peepholes with a full-length
      // sequence_lens, linear_before_reset 0, layout 1 (batchwise).
      {"node", "test_lstm_defaults"},
      {"node", "test_lstm_with_initial_bias"},
      {"node", "test_lstm_with_peepholes"},
      {"node", "test_lstm_batchwise"},
      {"node", "test_gru_defaults"},
      {"node", "test_gru_with_initial_bias"},
      {"node", "test_gru_seq_length"},
      {"node", "test_gru_batchwise"},
      {"node", "test_simple_rnn_defaults"},
      {"node", "test_simple_rnn_with_initial_bias"},
      {"node", "test_simple_rnn_batchwise"},
      {"node", "test_rnn_seq_length"},
      // 1-D convolution and pooling, ConvTranspose, DepthToSpace,
      // SpaceToDepth, Upsample and Resize in the modes torch exports.
      {"pytorch-converted", "test_Conv1d"},
      {"pytorch-converted", "test_Conv1d_dilated"},
      {"pytorch-converted", "test_Conv1d_groups"},
      {"pytorch-converted", "test_Conv1d_pad2size1"},
      {"pytorch-converted", "test_Conv1d_stride"},
      {"pytorch-converted", "test_AvgPool1d_stride"},
      {"pytorch-converted", "test_MaxPool1d_stride_padding_dilation"},
      {"node", "test_averagepool_1d_default"},
      {"node", "test_maxpool_1d_default"},
      {"node", "test_convtranspose"},
      {"node", "test_convtranspose_1d"},
      {"node", "test_convtranspose_autopad_same"},
      {"node", "test_convtranspose_dilations"},
      {"node", "test_convtranspose_kernel_shape"},
      {"node", "test_convtranspose_output_shape"},
      {"node", "test_convtranspose_pad"},
      {"node", "test_convtranspose_pads"},
      {"node", "test_convtranspose_with_kernel"},
      {"pytorch-converted", "test_ConvTranspose2d"},
      {"pytorch-converted", "test_ConvTranspose2d_no_bias"},
      {"pytorch-operator", "test_operator_convtranspose"},
      {"pytorch-converted", "test_PixelShuffle"},
      {"node", "test_depthtospace_crd_mode"},
      {"node", "test_depthtospace_crd_mode_example"},
      {"node", "test_depthtospace_dcr_mode"},
      {"node", "test_depthtospace_example"},
      {"node", "test_spacetodepth"},
      {"node", "test_spacetodepth_example"},
      {"node", "test_upsample_nearest"},
      {"node", "test_resize_downsample_scales_linear"},
      {"node", "test_resize_downsample_scales_linear_align_corners"},
      {"node", "test_resize_downsample_scales_nearest"},
      {"node", "test_resize_downsample_sizes_linear_pytorch_half_pixel"},
      {"node", "test_resize_downsample_sizes_nearest"},
      {"node", "test_resize_downsample_sizes_nearest_tf_half_pixel_for_nn"},
      {"node", "test_resize_upsample_scales_linear"},
      {"node", "test_resize_upsample_scales_linear_align_corners"},
      {"node", "test_resize_upsample_scales_nearest"},
      {"node", "test_resize_upsample_sizes_nearest"},
      {"node", "test_resize_upsample_sizes_nearest_ceil_half_pixel"},
      {"node", "test_resize_upsample_sizes_nearest_floor_align_corners"},
      {"node",
       "test_resize_upsample_sizes_nearest_round_prefer_ceil_asymmetric"},
  };
}

absl::Span<const NoGradient> OpsWithoutGradient() {
  static const NoGradient kOps[] = {
      {"ArgMax",
       "piecewise constant; Model::Backward refuses a gradient through it "
       "(transformer_ops_test.cc)"},
      {"QuantizeLinear",
       "piecewise constant: its backward is the straight-through estimator, "
       "not a derivative (quant_ops_test.cc QdqBackwardTest)"},
      {"Equal",
       "a comparison: its output is piecewise constant in both inputs"},
  };
  return kOps;
}

std::filesystem::path ConformanceDataRoot() {
  const char* root = std::getenv(kDataRootEnv);
  return root != nullptr && *root != '\0' ? root : kDefaultDataRoot;
}

Tensor RandomInput(const InputSpec& spec, std::mt19937* rng) {
  const int64_t n = engine::NumElements(spec.shape);
  if (spec.distinct) {
    std::vector<float> values(n);
    for (int64_t i = 0; i < n; ++i) {
      values[i] =
          -1.0f + 2.0f * static_cast<float>(i) / std::max<int64_t>(n, 1);
    }
    std::shuffle(values.begin(), values.end(), *rng);
    return Tensor(spec.shape, std::move(values));
  }
  std::uniform_real_distribution<float> uniform(spec.lo, spec.hi);
  Tensor t(spec.shape);
  for (float& v : t.values()) {
    v = uniform(*rng);
    for (float kink : spec.kinks) {
      if (std::abs(v - kink) < kKinkMargin) {
        v = kink + (v < kink ? -kKinkMargin : kKinkMargin);
      }
    }
  }
  return t;
}

}  // namespace mixq::testing
