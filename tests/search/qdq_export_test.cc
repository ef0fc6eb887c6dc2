#include "search/qdq_export.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <iostream>
#include <map>
#include <memory>
#include <ostream>
#include <random>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "engine/int4.h"
#include "engine/model.h"
#include "engine/tensor.h"
#include "engine/validate.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "onnx/onnx_pb.h"
#include "search/opset_raise.h"
#include "tests/support/fixtures.h"
#include "tests/support/onnx_builder.h"
#include "tests/support/onnx_mlp.h"
#include "util/file.h"
#include "util/status_macros.h"

namespace mixq::search {
namespace {

using engine::Model;
using engine::Shape;
using engine::Tensor;
using ::mixq::testing::OnnxBuilder;
using ::testing::HasSubstr;

// The outputs of the export and of the fake-quantized float model agree to
// this (the bound; both compute the same float operations).
constexpr float kTolerance = 1e-5f;

// ---------------------------------------------------------------------------
// Quantization of weights and activations by explicit formulas.

// Elements per index of `axis` in a C-order tensor of `shape`, and its dim.
std::pair<int64_t, int64_t> InnerAndChannels(const Shape& shape, int axis) {
  int64_t inner = 1;
  for (size_t d = axis + 1; d < shape.size(); ++d) inner *= shape[d];
  return {inner, shape[axis]};
}

// Channel of element i along `axis` (0 when axis < 0).
std::vector<int64_t> ChannelOf(const Shape& shape, int axis) {
  std::vector<int64_t> channel(engine::NumElements(shape), 0);
  if (axis < 0) return channel;
  const auto [inner, channels] = InnerAndChannels(shape, axis);
  for (size_t i = 0; i < channel.size(); ++i) {
    channel[i] = (static_cast<int64_t>(i) / inner) % channels;
  }
  return channel;
}

// An int8 weight grid of `channels` scales (to fill), zero points 0.
QdqWeight PerChannelGrid(const std::string& name, int64_t channels, int axis) {
  QdqWeight q;
  q.initializer = name;
  q.scale.assign(channels, 0.0f);
  q.zero_point.assign(channels, 0);
  q.axis = axis;
  q.is_signed = true;
  return q;
}

// Symmetric, int8 container: s_c = max|w_c| / (2^(b-1) - 1), z = 0,
// q = clamp(round(w / s_c), ±(2^(b-1) - 1)).
QdqWeight Symmetric(const std::string& name, const Tensor& w, int axis,
                    int bits) {
  const int32_t qmax = (1 << (bits - 1)) - 1;
  const int64_t channels = axis < 0 ? 1 : w.dim(axis);
  const std::vector<int64_t> channel = ChannelOf(w.shape(), axis);
  QdqWeight q = PerChannelGrid(name, channels, axis);
  for (int64_t i = 0; i < w.size(); ++i) {
    q.scale[channel[i]] = std::max(q.scale[channel[i]], std::abs(w.data()[i]));
  }
  for (float& s : q.scale) s = s > 0 ? s / static_cast<float>(qmax) : 1.0f;
  for (int64_t i = 0; i < w.size(); ++i) {
    const float level = std::nearbyint(w.data()[i] / q.scale[channel[i]]);
    q.q.push_back(std::clamp(static_cast<int32_t>(level), -qmax, qmax));
  }
  return q;
}

// Asymmetric per tensor, uint8 container: the range [min(w, 0), max(w, 0)]
// onto 0 .. 2^b - 1.
QdqWeight AsymmetricPerTensor(const std::string& name, const Tensor& w,
                              int bits) {
  const int32_t qmax = (1 << bits) - 1;
  const float lo = std::min(0.0f, w.flat().minCoeff());
  const float hi = std::max(0.0f, w.flat().maxCoeff());
  const float s = (hi - lo) / static_cast<float>(qmax);
  const int32_t z = static_cast<int32_t>(std::nearbyint(-lo / s));
  QdqWeight q{name, {}, {s}, {z}, -1, false};
  for (float v : w.values()) {
    q.q.push_back(
        std::clamp(static_cast<int32_t>(std::nearbyint(v / s)) + z, 0, qmax));
  }
  return q;
}

// Binary: q = ±1 (sign, +1 at 0), s_c = mean |w_c|.
QdqWeight Binary(const std::string& name, const Tensor& w, int axis) {
  const int64_t channels = w.dim(axis);
  const std::vector<int64_t> channel = ChannelOf(w.shape(), axis);
  QdqWeight q = PerChannelGrid(name, channels, axis);
  for (int64_t i = 0; i < w.size(); ++i) {
    q.scale[channel[i]] += std::abs(w.data()[i]) / (w.size() / channels);
    q.q.push_back(w.data()[i] >= 0 ? 1 : -1);
  }
  return q;
}

// What the exported DequantizeLinear computes: (q - z_c) · s_c.
Tensor Dequantize(const QdqWeight& w, const Shape& shape) {
  const std::vector<int64_t> channel = ChannelOf(shape, w.axis);
  Tensor out(shape);
  for (int64_t i = 0; i < out.size(); ++i) {
    const int64_t c = channel[i];
    out.data()[i] =
        (static_cast<float>(w.q[i]) - static_cast<float>(w.zero_point[c])) *
        w.scale[c];
  }
  return out;
}

struct Range {
  float lo = 0;
  float hi = 0;
};

// Activation grids over an observed range: asymmetric over [min(lo, 0),
// max(hi, 0)] (int8: shifted by -128), or symmetric over max |.|.
QdqActivation AsymmetricActivation(const std::string& node, Range r, int bits,
                                   bool is_signed) {
  const int32_t levels = (1 << bits) - 1;
  const float lo = std::min(0.0f, r.lo);
  const float hi = std::max(0.0f, r.hi);
  const float s = hi > lo ? (hi - lo) / static_cast<float>(levels) : 1.0f;
  const int32_t offset = is_signed ? -128 : 0;
  const int32_t z = static_cast<int32_t>(std::nearbyint(-lo / s)) + offset;
  return {node, 0, s, z, offset, offset + levels, is_signed};
}

QdqActivation SymmetricActivation(const std::string& node, Range r, int bits) {
  const int32_t qmax = (1 << (bits - 1)) - 1;
  const float m = std::max(std::abs(r.lo), std::abs(r.hi));
  QdqActivation a;
  a.node_name = node;
  a.scale = m > 0 ? m / static_cast<float>(qmax) : 1.0f;
  a.zero_point = 0;
  a.qmin = -qmax;
  a.qmax = qmax;
  a.is_signed = true;
  return a;
}

// Fake-quantizes the data input of the layers named in `activations` (by
// node): x ↦ s·(clamp(round_half_even(x / s) + z, qmin, qmax) − z).
class FakeQuantHook : public engine::LayerInputHook {
 public:
  FakeQuantHook(const Model& model,
                const std::vector<QdqActivation>& activations) {
    const auto& layers = model.quantizable_layers();
    for (const QdqActivation& a : activations) {
      bool found = false;
      for (size_t l = 0; l < layers.size(); ++l) {
        if (layers[l].node_name == a.node_name && a.input_index == 0) {
          by_layer_[static_cast<int>(l)] = a;
          found = true;
        }
      }
      EXPECT_TRUE(found) << "no quantizable layer reads " << a.node_name;
    }
  }

  absl::StatusOr<bool> Forward(int layer, const Tensor& x,
                               Tensor* out) override {
    const auto it = by_layer_.find(layer);
    if (it == by_layer_.end()) return false;
    const QdqActivation& a = it->second;
    const float z = static_cast<float>(a.zero_point);
    // rint rounds half to even in the default rounding mode.
    out->flat() = (((x.flat() / a.scale).rint() + z)
                       .max(static_cast<float>(a.qmin))
                       .min(static_cast<float>(a.qmax)) -
                   z) *
                  a.scale;
    return true;
  }

  void Backward(int layer, const Tensor& x, Tensor* grad) const override {
    const QdqActivation& a = by_layer_.at(layer);
    const Eigen::ArrayXf q =
        (x.flat() / a.scale).rint() + static_cast<float>(a.zero_point);
    grad->flat() =
        (q >= static_cast<float>(a.qmin) && q <= static_cast<float>(a.qmax))
            .select(grad->flat(), 0.0f);
  }

 private:
  std::map<int, QdqActivation> by_layer_;
};

// Records the range of every layer's input; transforms nothing.
class RangeObserver : public engine::LayerInputHook {
 public:
  absl::StatusOr<bool> Forward(int layer, const Tensor& x, Tensor*) override {
    Range& r = ranges_[layer];
    r.lo = std::min(r.lo, x.flat().minCoeff());
    r.hi = std::max(r.hi, x.flat().maxCoeff());
    return false;
  }
  void Backward(int, const Tensor&, Tensor*) const override {}
  const std::map<int, Range>& ranges() const { return ranges_; }

 private:
  std::map<int, Range> ranges_;
};

std::vector<const Tensor*> Pointers(const std::vector<Tensor>& params) {
  std::vector<const Tensor*> pointers;
  for (const Tensor& p : params) pointers.push_back(&p);
  return pointers;
}

// Input ranges of every quantizable layer of `model` on `input`, each
// shrunk by `shrink` so that some activations saturate (the clamp matters).
std::vector<Range> ObserveRanges(const Model& model, const Tensor& input,
                                 float shrink) {
  RangeObserver observer;
  absl::StatusOr<Tensor> y = model.Forward(
      input, Pointers(model.initial_params()), nullptr, &observer);
  EXPECT_TRUE(y.ok()) << y.status();
  std::vector<Range> ranges(model.quantizable_layers().size());
  for (const auto& [layer, r] : observer.ranges()) {
    ranges[layer] = {r.lo * shrink, r.hi * shrink};
  }
  return ranges;
}

Tensor Gaussian(const Shape& shape, uint64_t seed, float stddev = 1.0f) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, stddev);
  Tensor t(shape);
  for (float& v : t.values()) v = normal(rng);
  return t;
}

// ---------------------------------------------------------------------------
// The reference and the export, run in mixq's engine.

// The ORIGINAL float model with each quantized weight replaced by
// s·(q − z), the float updates applied and the activations fake-quantized.
absl::StatusOr<Tensor> FakeQuantForward(const std::string& onnx_bytes,
                                        const QdqExportSpec& spec,
                                        const Tensor& input) {
  MIXQ_ASSIGN_OR_RETURN(std::unique_ptr<Model> model,
                        Model::FromOnnxBytes(onnx_bytes));
  std::vector<Tensor> params = model->initial_params();
  for (size_t p = 0; p < params.size(); ++p) {
    const std::string& name = model->params()[p].name;
    for (const QdqWeight& w : spec.weights) {
      if (w.initializer == name) params[p] = Dequantize(w, params[p].shape());
    }
    for (const auto& [update, value] : spec.float_updates) {
      if (update == name) params[p] = value;
    }
  }
  FakeQuantHook hook(*model, spec.activations);
  return model->Forward(input, Pointers(params), nullptr, &hook);
}

// The exported model as mixq's engine imports it, with its stored weights.
absl::StatusOr<Tensor> ExportedForward(const std::string& exported,
                                       const Tensor& input) {
  MIXQ_ASSIGN_OR_RETURN(std::unique_ptr<Model> model,
                        Model::FromOnnxBytes(exported));
  return model->Forward(input, Pointers(model->initial_params()), nullptr);
}

float MaxAbsDiff(const Tensor& a, const Tensor& b) {
  EXPECT_EQ(a.shape(), b.shape());
  if (a.shape() != b.shape()) return INFINITY;
  return (a.flat() - b.flat()).abs().maxCoeff();
}

onnx::ModelProto Parse(const std::string& bytes) {
  onnx::ModelProto model;
  EXPECT_TRUE(model.ParseFromString(bytes));
  return model;
}

int64_t DefaultOpset(const onnx::ModelProto& model) {
  for (const auto& opset : model.opset_import()) {
    if (opset.domain().empty() || opset.domain() == "ai.onnx") {
      return opset.version();
    }
  }
  return -1;
}

const onnx::TensorProto* FindInitializer(const onnx::GraphProto& graph,
                                         const std::string& name) {
  for (const auto& t : graph.initializer()) {
    if (t.name() == name) return &t;
  }
  return nullptr;
}

const onnx::NodeProto* Producer(const onnx::GraphProto& graph,
                                const std::string& value) {
  for (const auto& node : graph.node()) {
    for (const auto& output : node.output()) {
      if (output == value) return &node;
    }
  }
  return nullptr;
}

int Consumers(const onnx::GraphProto& graph, const std::string& value) {
  int n = 0;
  for (const auto& node : graph.node()) {
    for (const auto& input : node.input()) n += input == value;
  }
  return n;
}

const onnx::NodeProto* FindNode(const onnx::GraphProto& graph,
                                const std::string& name) {
  for (const auto& node : graph.node()) {
    if (node.name() == name) return &node;
  }
  return nullptr;
}

bool HasAttribute(const onnx::NodeProto& node, const std::string& name) {
  for (const auto& attr : node.attribute()) {
    if (attr.name() == name) return true;
  }
  return false;
}

bool Packs(const QdqExportSpec& spec) {
  return std::any_of(
      spec.weights.begin(), spec.weights.end(),
      [](const QdqWeight& w) { return w.bits <= kMaxPackedWeightBits; });
}

// `w` with its grid stored in the 4-bit container when it has `bits` <= 4.
QdqWeight WithBits(QdqWeight w, int bits) {
  w.bits = bits;
  return w;
}

// The integers stored in `t`: one per byte (int8/uint8) or two per byte
// (INT4/UINT4, low nibble first).
std::vector<int32_t> StoredIntegers(const onnx::TensorProto& t) {
  const std::string& raw = t.raw_data();
  std::vector<int32_t> values;
  switch (t.data_type()) {
    case onnx::TensorProto::INT8:
      for (char c : raw) values.push_back(static_cast<int8_t>(c));
      break;
    case onnx::TensorProto::UINT8:
      for (char c : raw) values.push_back(static_cast<uint8_t>(c));
      break;
    case engine::kOnnxInt4:
    case engine::kOnnxUint4:
      for (size_t i = 0; i < 2 * raw.size(); ++i) {
        values.push_back(engine::UnpackInt4(
            raw, static_cast<int64_t>(i), t.data_type() == engine::kOnnxInt4));
      }
      break;
    default:
      ADD_FAILURE() << t.name() << " has data type " << t.data_type();
  }
  return values;
}

// The exported graph has the QDQ form the header promises for `spec`.
void ExpectQdqForm(const std::string& original_bytes,
                   const std::string& exported_bytes,
                   const QdqExportSpec& spec) {
  const onnx::ModelProto original = Parse(original_bytes);
  const onnx::ModelProto exported = Parse(exported_bytes);
  const onnx::GraphProto& g = exported.graph();
  for (const QdqWeight& w : spec.weights) {
    SCOPED_TRACE(w.initializer);
    EXPECT_EQ(FindInitializer(g, w.initializer), nullptr);
    for (const auto& input : g.input()) EXPECT_NE(input.name(), w.initializer);
    const bool packed = w.bits <= kMaxPackedWeightBits;
    const int type =
        packed ? (w.is_signed ? engine::kOnnxInt4 : engine::kOnnxUint4)
               : (w.is_signed ? onnx::TensorProto::INT8
                              : onnx::TensorProto::UINT8);
    const onnx::TensorProto* q =
        FindInitializer(g, absl::StrCat(w.initializer, "_quantized"));
    ASSERT_NE(q, nullptr);
    EXPECT_EQ(q->data_type(), type);
    const int64_t n = static_cast<int64_t>(w.q.size());
    ASSERT_EQ(static_cast<int64_t>(q->raw_data().size()),
              packed ? engine::Int4Bytes(n) : n);
    const std::vector<int32_t> stored = StoredIntegers(*q);
    for (size_t i = 0; i < w.q.size(); ++i) {
      ASSERT_EQ(stored[i], w.q[i]) << "element " << i;
    }
    // An odd count's pad nibble is written as 0.
    if (packed && n % 2 == 1) {
      EXPECT_EQ(stored.back(), 0);
    }
    const onnx::TensorProto* scale =
        FindInitializer(g, absl::StrCat(w.initializer, "_scale"));
    ASSERT_NE(scale, nullptr);
    EXPECT_EQ(scale->data_type(), onnx::TensorProto::FLOAT);
    EXPECT_EQ(scale->dims_size(), w.axis < 0 ? 0 : 1);
    const onnx::TensorProto* zero_point =
        FindInitializer(g, absl::StrCat(w.initializer, "_zero_point"));
    ASSERT_NE(zero_point, nullptr);
    EXPECT_EQ(zero_point->data_type(), type);
    const std::vector<int32_t> zero_points = StoredIntegers(*zero_point);
    for (size_t c = 0; c < w.zero_point.size(); ++c) {
      EXPECT_EQ(zero_points[c], w.zero_point[c]) << "zero point " << c;
    }
    const onnx::NodeProto* dq = Producer(g, w.initializer);
    ASSERT_NE(dq, nullptr);
    EXPECT_EQ(dq->op_type(), "DequantizeLinear");
    EXPECT_THAT(dq->input(), ::testing::ElementsAre(q->name(), scale->name(),
                                                    zero_point->name()));
    EXPECT_EQ(HasAttribute(*dq, "axis"), w.axis >= 0);
  }
  // Nodes of the original graph read what they read before, except the
  // quantized activation inputs, which read a DequantizeLinear fed by a
  // QuantizeLinear (after a Clip for restricted grids) of the old value,
  // and read by nothing else.
  for (const onnx::NodeProto& old_node : original.graph().node()) {
    SCOPED_TRACE(old_node.name());
    const onnx::NodeProto* node = FindNode(g, old_node.name());
    ASSERT_NE(node, nullptr);
    // The raise to opset 21 appends inputs (the Reduce family's axes).
    if (Packs(spec)) {
      ASSERT_GE(node->input_size(), old_node.input_size());
    } else {
      ASSERT_EQ(node->input_size(), old_node.input_size());
    }
    for (int i = 0; i < old_node.input_size(); ++i) {
      const QdqActivation* a = nullptr;
      for (const QdqActivation& candidate : spec.activations) {
        if (candidate.node_name == old_node.name() &&
            candidate.input_index == i) {
          a = &candidate;
        }
      }
      if (a == nullptr) {
        EXPECT_EQ(node->input(i), old_node.input(i));
        continue;
      }
      EXPECT_EQ(Consumers(g, node->input(i)), 1);
      const onnx::NodeProto* dq = Producer(g, node->input(i));
      ASSERT_NE(dq, nullptr);
      EXPECT_EQ(dq->op_type(), "DequantizeLinear");
      const onnx::NodeProto* quantize = Producer(g, dq->input(0));
      ASSERT_NE(quantize, nullptr);
      EXPECT_EQ(quantize->op_type(), "QuantizeLinear");
      EXPECT_EQ(quantize->input(1), dq->input(1));
      EXPECT_EQ(quantize->input(2), dq->input(2));
      const onnx::TensorProto* zero_point = FindInitializer(g, dq->input(2));
      ASSERT_NE(zero_point, nullptr);
      EXPECT_EQ(zero_point->data_type(), a->is_signed
                                             ? onnx::TensorProto::INT8
                                             : onnx::TensorProto::UINT8);
      const bool restricted = a->is_signed ? (a->qmin > -128 || a->qmax < 127)
                                           : (a->qmin > 0 || a->qmax < 255);
      const onnx::NodeProto* before = Producer(g, quantize->input(0));
      if (restricted) {
        ASSERT_NE(before, nullptr);
        EXPECT_EQ(before->op_type(), "Clip");
        EXPECT_EQ(before->input(0), old_node.input(i));
      } else {
        EXPECT_EQ(quantize->input(0), old_node.input(i));
      }
    }
  }
}

// Exports, checks the file (onnx's checker, or for 4-bit weights at opset 21
// mixq's validator) and its form, and compares the engine's outputs of the
// export with the fake-quantized float model. Returns the export.
std::string ExportAndCompare(const std::string& onnx_bytes,
                             const QdqExportSpec& spec, const Tensor& input) {
  absl::StatusOr<std::string> exported = ExportQdq(onnx_bytes, spec);
  EXPECT_TRUE(exported.ok()) << exported.status();
  if (!exported.ok()) return "";
  if (Packs(spec)) {
    const onnx::ModelProto proto = Parse(*exported);
    EXPECT_EQ(DefaultOpset(proto), kOpset21);
    EXPECT_EQ(proto.ir_version(), kIrVersionOfOpset21);
    EXPECT_TRUE(engine::ValidateModel(proto).ok())
        << engine::ValidateModel(proto);
  } else {
    EXPECT_TRUE(CheckOnnxModel(*exported).ok()) << CheckOnnxModel(*exported);
  }
  ExpectQdqForm(onnx_bytes, *exported, spec);
  absl::StatusOr<Tensor> reference = FakeQuantForward(onnx_bytes, spec, input);
  EXPECT_TRUE(reference.ok()) << reference.status();
  absl::StatusOr<Tensor> actual = ExportedForward(*exported, input);
  EXPECT_TRUE(actual.ok()) << actual.status();
  if (reference.ok() && actual.ok()) {
    const float diff = MaxAbsDiff(*reference, *actual);
    std::cout << "max |export - fake-quantized float model| = " << diff
              << " over " << actual->size() << " outputs\n";
    EXPECT_LE(diff, kTolerance);
    // The comparison can tell: without activation quantization the outputs
    // differ.
    if (!spec.activations.empty()) {
      QdqExportSpec weights_only = spec;
      weights_only.activations.clear();
      absl::StatusOr<Tensor> unquantized =
          FakeQuantForward(onnx_bytes, weights_only, input);
      EXPECT_TRUE(unquantized.ok());
      if (unquantized.ok()) {
        EXPECT_GT(MaxAbsDiff(*unquantized, *actual), 1e-3f);
      }
    }
  }
  return *exported;
}

// The named initializer's value in `model`.
Tensor Param(const Model& model, const std::string& name) {
  for (size_t p = 0; p < model.params().size(); ++p) {
    if (model.params()[p].name == name) return model.initial_params()[p];
  }
  ADD_FAILURE() << "no parameter " << name;
  return Tensor();
}

std::unique_ptr<Model> Import(const std::string& bytes) {
  absl::StatusOr<std::unique_ptr<Model>> model = Model::FromOnnxBytes(bytes);
  EXPECT_TRUE(model.ok()) << model.status();
  return model.ok() ? *std::move(model) : nullptr;
}

// ---------------------------------------------------------------------------
// Models.

// The serialized model with its (single) output typed float, shaped
// `dims` (-1: the batch): OnnxBuilder::Output leaves it untyped, which
// mixq's importer accepts and ONNX's checker does not. Input() writes the
// typed ValueInfoProto; it moves from the inputs to the output.
std::string TypedBytes(OnnxBuilder& b, const Shape& dims) {
  onnx::GraphProto& graph = b.graph();
  b.Input(graph.output(0).name(), dims);
  graph.mutable_output(0)->Swap(graph.mutable_input(graph.input_size() - 1));
  graph.mutable_input()->RemoveLast();
  return b.Bytes();
}

// x [batch, 10] → MatMul mm1 (w1 [10, 6]) → Add b1 → Relu → MatMul mm2
// (w2 [6, 3]) → y.
std::string MatMulMlp(int64_t opset = 13) {
  OnnxBuilder b(opset);
  b.Input("x", {-1, 10}).Output("y");
  b.Initializer("w1", {10, 6}, Gaussian({10, 6}, 1, 0.3f).ToVector());
  b.Initializer("b1", {6}, Gaussian({6}, 2, 0.1f).ToVector());
  b.Initializer("w2", {6, 3}, Gaussian({6, 3}, 3, 0.4f).ToVector());
  b.Node("MatMul", {"x", "w1"}, {"h"}, "mm1");
  b.Node("Add", {"h", "b1"}, {"a"}, "add");
  b.Node("Relu", {"a"}, {"r"}, "relu");
  b.Node("MatMul", {"r", "w2"}, {"y"}, "mm2");
  return TypedBytes(b, {-1, 3});
}

// x [batch, 2, 6, 6] → Conv conv1 (3x3, pad 1) → Relu → Conv conv2 (3x3,
// stride 2, pad 1) → Relu → GlobalAveragePool → Flatten → Gemm fc → y.
std::string ConvNet() {
  OnnxBuilder b(13);
  b.Input("x", {-1, 2, 6, 6}).Output("y");
  b.Initializer("conv1.weight", {4, 2, 3, 3},
                Gaussian({4, 2, 3, 3}, 4, 0.3f).ToVector());
  b.Initializer("conv1.bias", {4}, Gaussian({4}, 5, 0.1f).ToVector());
  b.Initializer("conv2.weight", {3, 4, 3, 3},
                Gaussian({3, 4, 3, 3}, 6, 0.3f).ToVector());
  b.Initializer("conv2.bias", {3}, Gaussian({3}, 7, 0.1f).ToVector());
  b.Initializer("fc.weight", {5, 3}, Gaussian({5, 3}, 8, 0.5f).ToVector());
  b.Initializer("fc.bias", {5}, Gaussian({5}, 9, 0.1f).ToVector());
  testing::SetInts(
      b.Node("Conv", {"x", "conv1.weight", "conv1.bias"}, {"c1"}, "conv1"),
      "pads", {1, 1, 1, 1});
  b.Node("Relu", {"c1"}, {"r1"}, "relu1");
  onnx::NodeProto* conv2 =
      b.Node("Conv", {"r1", "conv2.weight", "conv2.bias"}, {"c2"}, "conv2");
  testing::SetInts(conv2, "pads", {1, 1, 1, 1});
  testing::SetInts(conv2, "strides", {2, 2});
  b.Node("Relu", {"c2"}, {"r2"}, "relu2");
  b.Node("GlobalAveragePool", {"r2"}, {"p"}, "pool");
  b.Node("Flatten", {"p"}, {"f"}, "flatten");
  testing::SetInt(b.Node("Gemm", {"f", "fc.weight", "fc.bias"}, {"y"}, "fc"),
                  "transB", 1);
  return TypedBytes(b, {-1, 5});
}

// ---------------------------------------------------------------------------
// End to end: checker, form, engine outputs.

TEST(QdqExportTest, GemmMlpPerChannelRestrictedAndBinary) {
  const std::string bytes = testing::MakeMlpOnnx({12, 16, 8, 5}, 11);
  const std::unique_ptr<Model> model = Import(bytes);
  ASSERT_NE(model, nullptr);
  const Tensor input = Gaussian({6, 12}, 12);
  const std::vector<Range> r = ObserveRanges(*model, input, 0.7f);
  QdqExportSpec spec;
  spec.weights = {Symmetric("fc0.weight", Param(*model, "fc0.weight"), 0, 8),
                  Symmetric("fc1.weight", Param(*model, "fc1.weight"), 0, 4),
                  Binary("fc2.weight", Param(*model, "fc2.weight"), 0)};
  spec.activations = {SymmetricActivation("/fc0/Gemm", r[0], 8),
                      AsymmetricActivation("/fc1/Gemm", r[1], 4, false),
                      AsymmetricActivation("/fc2/Gemm", r[2], 8, false)};
  spec.float_updates = {{"fc1.bias", Gaussian({8}, 13, 0.2f)}};
  const std::string exported = ExportAndCompare(bytes, spec, input);
  const onnx::ModelProto proto = Parse(exported);
  EXPECT_EQ(DefaultOpset(proto), 13);
  const onnx::TensorProto* bias = FindInitializer(proto.graph(), "fc1.bias");
  ASSERT_NE(bias, nullptr);
  ASSERT_EQ(bias->raw_data().size(), 8 * sizeof(float));
  EXPECT_EQ(std::memcmp(bias->raw_data().data(),
                        spec.float_updates[0].second.data(), 8 * sizeof(float)),
            0);
}

TEST(QdqExportTest, MatMulMlpAsymmetricPerTensorAndLastAxis) {
  const std::string bytes = MatMulMlp();
  const std::unique_ptr<Model> model = Import(bytes);
  ASSERT_NE(model, nullptr);
  const Tensor input = Gaussian({5, 10}, 14);
  const std::vector<Range> r = ObserveRanges(*model, input, 0.8f);
  QdqExportSpec spec;
  // A MatMul weight [in, out] has its output channels on the last axis.
  spec.weights = {AsymmetricPerTensor("w1", Param(*model, "w1"), 8),
                  Symmetric("w2", Param(*model, "w2"), 1, 6)};
  spec.activations = {AsymmetricActivation("mm1", r[0], 8, false),
                      AsymmetricActivation("mm2", r[1], 4, false)};
  spec.float_updates = {{"b1", Gaussian({6}, 15, 0.2f)}};
  ExportAndCompare(bytes, spec, input);
}

TEST(QdqExportTest, ConvNetBinaryFourBitAndSignedAsymmetric) {
  const std::string bytes = ConvNet();
  const std::unique_ptr<Model> model = Import(bytes);
  ASSERT_NE(model, nullptr);
  const Tensor input = Gaussian({3, 2, 6, 6}, 16);
  const std::vector<Range> r = ObserveRanges(*model, input, 0.75f);
  QdqExportSpec spec;
  spec.weights = {
      Binary("conv1.weight", Param(*model, "conv1.weight"), 0),
      Symmetric("conv2.weight", Param(*model, "conv2.weight"), 0, 4),
      AsymmetricPerTensor("fc.weight", Param(*model, "fc.weight"), 8)};
  spec.activations = {AsymmetricActivation("conv1", r[0], 8, true),
                      AsymmetricActivation("conv2", r[1], 4, false),
                      AsymmetricActivation("fc", r[2], 3, true)};
  ExportAndCompare(bytes, spec, input);
}

TEST(QdqExportTest, ResnetFixtureEndToEnd) {
  absl::StatusOr<std::string> bytes =
      ReadFile(testing::FixturePath("resnet_fmnist_folded.onnx"));
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  const std::unique_ptr<Model> model = Import(*bytes);
  ASSERT_NE(model, nullptr);
  const Tensor input =
      testing::ReadFloatNpy(testing::FixturePath("resnet_fmnist_inputs.npy"));
  ASSERT_EQ(input.shape(), (Shape{8, 1, 28, 28}));
  const std::vector<Range> r = ObserveRanges(*model, input, 0.9f);
  QdqExportSpec spec;
  const auto& layers = model->quantizable_layers();
  ASSERT_EQ(layers.size(), 9u);
  for (size_t l = 0; l < layers.size(); ++l) {
    // 8 bits for the first and last layers, 4 in between.
    const int bits = l == 0 || l + 1 == layers.size() ? 8 : 4;
    // The folded Convs' initializers are "onnx::Conv_N"; their layers are
    // named after the node, so the weight is addressed by its initializer.
    const std::string& weight = model->params()[layers[l].weight_param].name;
    spec.weights.push_back(
        Symmetric(weight, Param(*model, weight), layers[l].channel_axis, bits));
    spec.activations.push_back(
        AsymmetricActivation(layers[l].node_name, r[l], bits, false));
  }
  const std::string exported = ExportAndCompare(*bytes, spec, input);
  std::cout << "resnet_fmnist_folded.onnx: " << bytes->size() << " B FP32, "
            << exported.size() << " B QDQ\n";
}

// ---------------------------------------------------------------------------
// Size.

// The export of a 784-256-64-10 MLP with every weight at `bits`, over the
// FP32 file's size.
double WeightDominatedMlpSizeRatio(int bits) {
  const std::string bytes = testing::MakeMlpOnnx({784, 256, 64, 10}, 17);
  const std::unique_ptr<Model> model = Import(bytes);
  EXPECT_NE(model, nullptr);
  if (model == nullptr) return 0;
  QdqExportSpec spec;
  for (const auto& layer : model->quantizable_layers()) {
    spec.weights.push_back(
        WithBits(Symmetric(layer.name, Param(*model, layer.name),
                           layer.channel_axis, bits),
                 bits));
  }
  absl::StatusOr<std::string> exported = ExportQdq(bytes, spec);
  EXPECT_TRUE(exported.ok()) << exported.status();
  if (!exported.ok()) return 0;
  const double ratio =
      static_cast<double>(exported->size()) / static_cast<double>(bytes.size());
  std::cout << "784-256-64-10 MLP: FP32 " << bytes.size() << " B, " << bits
            << "-bit QDQ " << exported->size() << " B, ratio " << ratio << "\n";
  return ratio;
}

TEST(QdqExportTest, WeightDominatedModelShrinksToAQuarter) {
  const double ratio = WeightDominatedMlpSizeRatio(8);
  RecordProperty("size_ratio", absl::StrCat(ratio));
  EXPECT_GT(ratio, 0.25);
  EXPECT_LT(ratio, 0.27);
}

// 4-bit weights are packed two per byte.
TEST(QdqExportTest, WeightDominatedModelAtFourBitsShrinksToAnEighth) {
  const double ratio = WeightDominatedMlpSizeRatio(4);
  RecordProperty("size_ratio", absl::StrCat(ratio));
  EXPECT_GT(ratio, 0.125);
  EXPECT_LT(ratio, 0.14);
}

// ---------------------------------------------------------------------------
// Opsets.

TEST(QdqExportTest, Opset11IsRaisedTo13ForPerChannelWeights) {
  absl::StatusOr<std::string> bytes =
      ReadFile(testing::FixturePath("tiny_mlp_opset11.onnx"));
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  const std::unique_ptr<Model> model = Import(*bytes);
  ASSERT_NE(model, nullptr);
  const Tensor input =
      testing::ReadFloatNpy(testing::FixturePath("tiny_mlp_inputs.npy"));
  const std::vector<Range> r = ObserveRanges(*model, input, 0.8f);
  QdqExportSpec spec;
  const auto& layers = model->quantizable_layers();
  for (size_t l = 0; l < layers.size(); ++l) {
    spec.weights.push_back(Symmetric(layers[l].name,
                                     Param(*model, layers[l].name),
                                     layers[l].channel_axis, 4));
    spec.activations.push_back(
        AsymmetricActivation(layers[l].node_name, r[l], 4, false));
  }
  const std::string exported = ExportAndCompare(*bytes, spec, input);
  EXPECT_EQ(DefaultOpset(Parse(exported)), 13);
}

TEST(QdqExportTest, Opset10KeepsItsOpsetWithPerTensorWeightsAndClipAttributes) {
  const std::string bytes = MatMulMlp(10);
  const std::unique_ptr<Model> model = Import(bytes);
  ASSERT_NE(model, nullptr);
  const Tensor input = Gaussian({4, 10}, 18);
  const std::vector<Range> r = ObserveRanges(*model, input, 0.7f);
  QdqExportSpec spec;
  spec.weights = {Symmetric("w1", Param(*model, "w1"), -1, 4),
                  AsymmetricPerTensor("w2", Param(*model, "w2"), 8)};
  spec.activations = {SymmetricActivation("mm1", r[0], 8),
                      AsymmetricActivation("mm2", r[1], 4, false)};
  const std::string exported = ExportAndCompare(bytes, spec, input);
  const onnx::ModelProto proto = Parse(exported);
  EXPECT_EQ(DefaultOpset(proto), 10);
  int clips = 0;
  for (const auto& node : proto.graph().node()) {
    if (node.op_type() != "Clip") continue;
    ++clips;
    EXPECT_EQ(node.input_size(), 1);  // Clip-6: bounds are attributes
    EXPECT_TRUE(HasAttribute(node, "min"));
    EXPECT_TRUE(HasAttribute(node, "max"));
  }
  EXPECT_EQ(clips, 2);
}

TEST(QdqExportTest, OpsetTheConverterCannotRaiseIsAFailedPrecondition) {
  // Softmax changed at opset 13 and onnx's adapter needs its input's shape,
  // which nothing inferred.
  OnnxBuilder b(11);
  b.Input("x", {-1, 4}).Output("y");
  b.Initializer("w", {3, 4}, Gaussian({3, 4}, 19).ToVector());
  testing::SetInt(b.Node("Gemm", {"x", "w"}, {"h"}, "fc"), "transB", 1);
  b.Node("Softmax", {"h"}, {"y"}, "softmax");
  const std::string bytes = TypedBytes(b, {-1, 3});
  const std::unique_ptr<Model> model = Import(bytes);
  ASSERT_NE(model, nullptr);
  const Tensor w = Param(*model, "w");

  QdqExportSpec per_channel;
  per_channel.weights = {Symmetric("w", w, 0, 8)};
  absl::StatusOr<std::string> refused = ExportQdq(bytes, per_channel);
  std::cout << refused.status() << "\n";
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(refused.status().message()),
              ::testing::AllOf(HasSubstr("opset 11"), HasSubstr("opset 13"),
                               HasSubstr("per tensor")));

  // Per-tensor weights need opset 10 only: the model keeps its opset 11.
  QdqExportSpec per_tensor;
  per_tensor.weights = {Symmetric("w", w, -1, 8)};
  const std::string exported =
      ExportAndCompare(bytes, per_tensor, Gaussian({2, 4}, 20));
  EXPECT_EQ(DefaultOpset(Parse(exported)), 11);
}

// ---------------------------------------------------------------------------
// 4-bit weights: INT4/UINT4 at opset 21.

TEST(QdqExportPackedTest, GemmMlpInt4Uint4AndBinaryWithOddCounts) {
  // fc0.weight [7, 5] and fc1.weight [3, 7]: odd element counts (35, 21).
  const std::string bytes = testing::MakeMlpOnnx({5, 7, 3, 4}, 40);
  const std::unique_ptr<Model> model = Import(bytes);
  ASSERT_NE(model, nullptr);
  const Tensor input = Gaussian({6, 5}, 41);
  const std::vector<Range> r = ObserveRanges(*model, input, 0.7f);
  QdqExportSpec spec;
  spec.weights = {
      WithBits(Symmetric("fc0.weight", Param(*model, "fc0.weight"), 0, 4), 4),
      WithBits(
          AsymmetricPerTensor("fc1.weight", Param(*model, "fc1.weight"), 3), 3),
      WithBits(Binary("fc2.weight", Param(*model, "fc2.weight"), 0), 1)};
  spec.activations = {SymmetricActivation("/fc0/Gemm", r[0], 8),
                      AsymmetricActivation("/fc1/Gemm", r[1], 4, false),
                      AsymmetricActivation("/fc2/Gemm", r[2], 8, true)};
  spec.float_updates = {{"fc1.bias", Gaussian({3}, 42, 0.2f)}};
  const std::string exported = ExportAndCompare(bytes, spec, input);
  // onnx 1.12's checker cannot read it (opset 21, data types 21/22).
  EXPECT_FALSE(CheckOnnxModel(exported).ok());
  // Activation Q/DQ keep their 8-bit containers at opset 21 (checked by
  // ExpectQdqForm).
}

TEST(QdqExportPackedTest, MixedBitsConvNetOnlyPacksTheNarrowWeights) {
  const std::string bytes = ConvNet();
  const std::unique_ptr<Model> model = Import(bytes);
  ASSERT_NE(model, nullptr);
  const Tensor input = Gaussian({3, 2, 6, 6}, 43);
  const std::vector<Range> r = ObserveRanges(*model, input, 0.75f);
  QdqExportSpec spec;
  spec.weights = {
      WithBits(Symmetric("conv1.weight", Param(*model, "conv1.weight"), 0, 8),
               8),
      WithBits(Symmetric("conv2.weight", Param(*model, "conv2.weight"), 0, 2),
               2),
      WithBits(AsymmetricPerTensor("fc.weight", Param(*model, "fc.weight"), 4),
               4)};
  spec.activations = {AsymmetricActivation("conv1", r[0], 8, false),
                      AsymmetricActivation("conv2", r[1], 8, false),
                      AsymmetricActivation("fc", r[2], 8, false)};
  ExportAndCompare(bytes, spec, input);
}

TEST(QdqExportPackedTest, Opset11IsConvertedTo13ThenRaisedTo21) {
  absl::StatusOr<std::string> bytes =
      ReadFile(testing::FixturePath("tiny_mlp_opset11.onnx"));
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  const std::unique_ptr<Model> model = Import(*bytes);
  ASSERT_NE(model, nullptr);
  const Tensor input =
      testing::ReadFloatNpy(testing::FixturePath("tiny_mlp_inputs.npy"));
  QdqExportSpec spec;
  for (const auto& layer : model->quantizable_layers()) {
    // Per tensor: the converter is needed for the raise alone.
    spec.weights.push_back(
        WithBits(Symmetric(layer.name, Param(*model, layer.name), -1, 4), 4));
  }
  ExportAndCompare(*bytes, spec, input);
}

TEST(QdqExportPackedTest, ReduceMeanAxesBecomeAnInput) {
  // x [batch, 4, 3] → ReduceMean(axes [2], keepdims 0) → Gemm fc → y.
  OnnxBuilder b(13);
  b.Input("x", {-1, 4, 3}).Output("y");
  b.Initializer("fc.weight", {5, 4}, Gaussian({5, 4}, 44, 0.5f).ToVector());
  onnx::NodeProto* mean = b.Node("ReduceMean", {"x"}, {"m"}, "mean");
  testing::SetInts(mean, "axes", {2});
  testing::SetInt(mean, "keepdims", 0);
  testing::SetInt(b.Node("Gemm", {"m", "fc.weight"}, {"y"}, "fc"), "transB", 1);
  const std::string bytes = TypedBytes(b, {-1, 5});
  const std::unique_ptr<Model> model = Import(bytes);
  ASSERT_NE(model, nullptr);
  QdqExportSpec spec;
  spec.weights = {
      WithBits(Symmetric("fc.weight", Param(*model, "fc.weight"), 0, 4), 4)};
  const std::string exported =
      ExportAndCompare(bytes, spec, Gaussian({2, 4, 3}, 45));
  const onnx::ModelProto proto = Parse(exported);
  const onnx::NodeProto* reduce = FindNode(proto.graph(), "mean");
  ASSERT_NE(reduce, nullptr);
  EXPECT_FALSE(HasAttribute(*reduce, "axes"));
  ASSERT_EQ(reduce->input_size(), 2);
  const onnx::TensorProto* axes =
      FindInitializer(proto.graph(), reduce->input(1));
  ASSERT_NE(axes, nullptr);
  EXPECT_EQ(axes->data_type(), onnx::TensorProto::INT64);
  ASSERT_EQ(axes->raw_data().size(), sizeof(int64_t));
}

TEST(QdqExportPackedTest, AnOperatorTheRaiseDoesNotKnowIsAFailedPrecondition) {
  // Hardmax (valid at 13) is not in the raise's list.
  OnnxBuilder b(13);
  b.Input("x", {-1, 4}).Output("y");
  b.Initializer("w", {3, 4}, Gaussian({3, 4}, 46).ToVector());
  testing::SetInt(b.Node("Gemm", {"x", "w"}, {"h"}, "fc"), "transB", 1);
  b.Node("Hardmax", {"h"}, {"y"}, "hardmax");
  const std::string bytes = TypedBytes(b, {-1, 3});
  const Tensor w = Gaussian({3, 4}, 46);
  QdqExportSpec spec;
  spec.weights = {WithBits(Symmetric("w", w, 0, 4), 4)};
  const absl::StatusOr<std::string> refused = ExportQdq(bytes, spec);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition)
      << refused.status();
  EXPECT_THAT(std::string(refused.status().message()),
              ::testing::AllOf(HasSubstr("4-bit weights need opset 21"),
                               HasSubstr("operator Hardmax (node 'hardmax')")));
  // In an 8-bit container the model keeps its opset and IR version.
  spec.weights[0].bits = 8;
  const absl::StatusOr<std::string> exported = ExportQdq(bytes, spec);
  ASSERT_TRUE(exported.ok()) << exported.status();
  const onnx::ModelProto proto = Parse(*exported);
  EXPECT_EQ(DefaultOpset(proto), 13);
  EXPECT_EQ(proto.ir_version(), Parse(bytes).ir_version());
}

TEST(QdqExportPackedTest, IrVersion3InputsAreRetyped) {
  onnx::ModelProto proto = Parse(testing::MakeMlpOnnx({6, 5, 3}, 47));
  proto.set_ir_version(3);
  for (const auto& t : proto.graph().initializer()) {
    onnx::ValueInfoProto* input = proto.mutable_graph()->add_input();
    input->set_name(t.name());
    auto* type = input->mutable_type()->mutable_tensor_type();
    type->set_elem_type(onnx::TensorProto::FLOAT);
    for (int64_t d : t.dims()) {
      type->mutable_shape()->add_dim()->set_dim_value(d);
    }
  }
  const std::string bytes = proto.SerializeAsString();
  const std::unique_ptr<Model> model = Import(bytes);
  ASSERT_NE(model, nullptr);
  QdqExportSpec spec;
  spec.weights = {
      WithBits(Symmetric("fc0.weight", Param(*model, "fc0.weight"), 0, 4), 4)};
  const std::string exported =
      ExportAndCompare(bytes, spec, Gaussian({3, 6}, 48));
  const onnx::ModelProto out = Parse(exported);
  for (const auto& input : out.graph().input()) {
    if (input.name() == "fc0.weight_quantized" ||
        input.name() == "fc0.weight_zero_point") {
      EXPECT_EQ(input.type().tensor_type().elem_type(), engine::kOnnxInt4)
          << input.name();
    }
  }
}

// ---------------------------------------------------------------------------
// Graph details.

TEST(QdqExportTest, NewNamesAvoidExistingOnesAndIrVersion3ListsInputs) {
  onnx::ModelProto proto = Parse(testing::MakeMlpOnnx({6, 5, 3}, 21));
  // IR version 3: every initializer is also a graph input.
  proto.set_ir_version(3);
  for (const auto& t : proto.graph().initializer()) {
    onnx::ValueInfoProto* input = proto.mutable_graph()->add_input();
    input->set_name(t.name());
    auto* type = input->mutable_type()->mutable_tensor_type();
    type->set_elem_type(onnx::TensorProto::FLOAT);
    for (int64_t d : t.dims())
      type->mutable_shape()->add_dim()->set_dim_value(d);
  }
  const std::string bytes = proto.SerializeAsString();
  const std::unique_ptr<Model> model = Import(bytes);
  ASSERT_NE(model, nullptr);
  // A value already named like the new scale of fc1.weight's.
  onnx::ModelProto taken = proto;
  onnx::NodeProto* identity = taken.mutable_graph()->add_node();
  identity->set_op_type("Identity");
  identity->set_name("taken");
  identity->add_input("logits");
  identity->add_output("fc1.weight_scale");
  QdqExportSpec spec;
  spec.weights = {Symmetric("fc0.weight", Param(*model, "fc0.weight"), 0, 8),
                  Symmetric("fc1.weight", Param(*model, "fc1.weight"), 0, 8)};
  spec.activations = {AsymmetricActivation("/fc1/Gemm", {0, 2}, 8, false)};
  ExportAndCompare(bytes, spec, Gaussian({3, 6}, 22));

  absl::StatusOr<std::string> exported =
      ExportQdq(taken.SerializeAsString(), spec);
  ASSERT_TRUE(exported.ok()) << exported.status();
  const onnx::ModelProto exported_proto = Parse(*exported);
  const onnx::GraphProto& g = exported_proto.graph();
  const onnx::NodeProto* dq = Producer(g, "fc1.weight");
  ASSERT_NE(dq, nullptr);
  EXPECT_EQ(dq->input(1), "fc1.weight_scale_1");
  const onnx::NodeProto* taken_node = Producer(g, "fc1.weight_scale");
  ASSERT_NE(taken_node, nullptr);
  EXPECT_EQ(taken_node->name(), "taken");
  std::set<std::string> inputs;
  for (const auto& input : g.input()) inputs.insert(input.name());
  for (const auto& t : g.initializer()) {
    EXPECT_TRUE(inputs.contains(t.name())) << t.name();
  }
  EXPECT_FALSE(inputs.contains("fc0.weight"));
}

// ---------------------------------------------------------------------------
// Errors.

struct ErrorCase {
  const char* name;
  void (*mutate)(QdqExportSpec*);
  const char* message;  // a substring of the error
};

void PrintTo(const ErrorCase& c, std::ostream* os) { *os << c.name; }

class QdqExportErrorTest : public ::testing::TestWithParam<ErrorCase> {};

// fc0.weight [3, 4] and fc1.weight [2, 3]; nodes /fc0/Gemm, /fc1/Gemm.
QdqExportSpec ValidSpec() {
  QdqExportSpec spec;
  spec.weights = {Symmetric("fc0.weight", Gaussian({3, 4}, 23), 0, 8),
                  AsymmetricPerTensor("fc1.weight", Gaussian({2, 3}, 24), 8)};
  spec.activations = {{"/fc1/Gemm", 0, 0.1f, 0, 0, 15, false}};
  spec.float_updates = {{"fc0.bias", Tensor({3}, {0.1f, 0.2f, 0.3f})}};
  return spec;
}

TEST_P(QdqExportErrorTest, IsInvalidArgumentNamingTheItem) {
  const std::string bytes = testing::MakeMlpOnnx({4, 3, 2}, 25);
  ASSERT_TRUE(ExportQdq(bytes, ValidSpec()).ok());
  QdqExportSpec spec = ValidSpec();
  GetParam().mutate(&spec);
  const absl::StatusOr<std::string> result = ExportQdq(bytes, spec);
  EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument)
      << result.status();
  EXPECT_THAT(std::string(result.status().message()),
              HasSubstr(GetParam().message));
}

INSTANTIATE_TEST_SUITE_P(
    Spec, QdqExportErrorTest,
    ::testing::Values(
        ErrorCase{"UnknownInitializer",
                  [](QdqExportSpec* s) { s->weights[0].initializer = "nope"; },
                  "weights[0] ('nope'): no initializer"},
        ErrorCase{"ElementCountOfAnotherInitializer",
                  [](QdqExportSpec* s) {
                    s->weights[0].initializer = "fc0.bias";
                    s->float_updates.clear();
                  },
                  "weights[0] ('fc0.bias'): 12 integers for an initializer "
                  "of 3 elements"},
        ErrorCase{"ElementCount",
                  [](QdqExportSpec* s) { s->weights[1].q.pop_back(); },
                  "weights[1] ('fc1.weight'): 5 integers"},
        ErrorCase{"ScaleCountVsAxis",
                  [](QdqExportSpec* s) { s->weights[0].scale.push_back(1); },
                  "weights[0] ('fc0.weight'): 4 scales, but axis 0 has dim 3"},
        ErrorCase{"PerTensorScaleCount",
                  [](QdqExportSpec* s) { s->weights[1].scale.push_back(1); },
                  "2 scales for a per-tensor weight (axis -1), not 1"},
        ErrorCase{"ZeroPointCount",
                  [](QdqExportSpec* s) { s->weights[0].zero_point.pop_back(); },
                  "2 zero points for 3 scales"},
        ErrorCase{"AxisOutOfRange",
                  [](QdqExportSpec* s) { s->weights[0].axis = 2; },
                  "axis 2 is not -1"},
        ErrorCase{"ZeroScale",
                  [](QdqExportSpec* s) { s->weights[0].scale[1] = 0; },
                  "scale[1] = 0 is not positive and finite"},
        ErrorCase{"NanScale",
                  [](QdqExportSpec* s) { s->weights[0].scale[2] = NAN; },
                  "scale[2] = nan is not positive and finite"},
        ErrorCase{"InfiniteScale",
                  [](QdqExportSpec* s) { s->weights[1].scale[0] = INFINITY; },
                  "scale[0] = inf"},
        ErrorCase{"IntegerOutsideInt8",
                  [](QdqExportSpec* s) { s->weights[0].q[5] = 128; },
                  "q[5] = 128 is outside the int8 range [-128, 127]"},
        ErrorCase{"IntegerOutsideUint8",
                  [](QdqExportSpec* s) { s->weights[1].q[0] = -1; },
                  "q[0] = -1 is outside the uint8 range [0, 255]"},
        ErrorCase{"BitsZero", [](QdqExportSpec* s) { s->weights[0].bits = 0; },
                  "weights[0] ('fc0.weight'): bits = 0 is outside 1..8"},
        ErrorCase{"BitsNine", [](QdqExportSpec* s) { s->weights[0].bits = 9; },
                  "bits = 9 is outside 1..8"},
        ErrorCase{"IntegerOutsideInt4",
                  [](QdqExportSpec* s) {
                    s->weights[0].bits = 4;
                    std::fill(s->weights[0].q.begin(), s->weights[0].q.end(),
                              7);
                    s->weights[0].q[5] = 8;
                  },
                  "q[5] = 8 is outside the int4 range [-8, 7]"},
        ErrorCase{"ZeroPointOutsideUint4",
                  [](QdqExportSpec* s) {
                    s->weights[1].bits = 4;
                    std::fill(s->weights[1].q.begin(), s->weights[1].q.end(),
                              0);
                    s->weights[1].zero_point[0] = 16;
                  },
                  "zero_point[0] = 16 is outside the uint4 range [0, 15]"},
        ErrorCase{"WeightZeroPointOutsideContainer",
                  [](QdqExportSpec* s) { s->weights[1].zero_point[0] = 256; },
                  "zero_point[0] = 256 is outside the uint8 range"},
        ErrorCase{"WeightListedTwice",
                  [](QdqExportSpec* s) { s->weights.push_back(s->weights[0]); },
                  "weights[2] ('fc0.weight'): the initializer is listed twice"},
        ErrorCase{"UnknownNode",
                  [](QdqExportSpec* s) { s->activations[0].node_name = "fc9"; },
                  "activations[0] (node 'fc9' input 0): no node"},
        ErrorCase{"InputIndexOutOfRange",
                  [](QdqExportSpec* s) { s->activations[0].input_index = 3; },
                  "node has no input 3"},
        ErrorCase{"ActivationScale",
                  [](QdqExportSpec* s) { s->activations[0].scale = -1; },
                  "scale -1 is not positive and finite"},
        ErrorCase{"QminAboveQmax",
                  [](QdqExportSpec* s) {
                    s->activations[0].qmin = 9;
                    s->activations[0].qmax = 8;
                  },
                  "qmin 9 > qmax 8"},
        ErrorCase{"QmaxOutsideContainer",
                  [](QdqExportSpec* s) { s->activations[0].qmax = 256; },
                  "qmax = 256 is outside the uint8 range"},
        ErrorCase{"SignedQminOutsideContainer",
                  [](QdqExportSpec* s) {
                    s->activations[0].is_signed = true;
                    s->activations[0].qmin = -129;
                  },
                  "qmin = -129 is outside the int8 range"},
        ErrorCase{"ActivationZeroPoint",
                  [](QdqExportSpec* s) { s->activations[0].zero_point = -3; },
                  "zero_point = -3 is outside the uint8 range"},
        ErrorCase{"ActivationListedTwice",
                  [](QdqExportSpec* s) {
                    s->activations.push_back(s->activations[0]);
                  },
                  "activations[1] (node '/fc1/Gemm' input 0): the input is "
                  "listed twice"},
        ErrorCase{
            "UnknownUpdate",
            [](QdqExportSpec* s) { s->float_updates[0].first = "fc7.bias"; },
            "float_updates[0] ('fc7.bias'): no initializer"},
        ErrorCase{"UpdateShape",
                  [](QdqExportSpec* s) {
                    s->float_updates[0].second = Tensor({1, 3});
                  },
                  "value shaped [1, 3] for an initializer shaped [3]"},
        ErrorCase{"UpdateNotFinite",
                  [](QdqExportSpec* s) {
                    s->float_updates[0].second.data()[1] = NAN;
                  },
                  "float_updates[0] ('fc0.bias'): value is not finite"},
        ErrorCase{"UpdateOfAQuantizedWeight",
                  [](QdqExportSpec* s) {
                    s->float_updates[0] = {"fc1.weight", Tensor({2, 3})};
                  },
                  "also a quantized weight"}),
    [](const ::testing::TestParamInfo<ErrorCase>& info) {
      return std::string(info.param.name);
    });

TEST(QdqExportTest, ModelErrors) {
  EXPECT_EQ(ExportQdq("not a model", ValidSpec()).status().code(),
            absl::StatusCode::kInvalidArgument);

  // An operator the checker does not know.
  onnx::ModelProto unknown_op = Parse(testing::MakeMlpOnnx({4, 3, 2}, 26));
  unknown_op.mutable_graph()->mutable_node(1)->set_op_type("NotAnOp");
  absl::StatusOr<std::string> result =
      ExportQdq(unknown_op.SerializeAsString(), ValidSpec());
  EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(result.status().message()),
              ::testing::AllOf(HasSubstr("input model"), HasSubstr("NotAnOp")));

  // External data.
  onnx::ModelProto external = Parse(testing::MakeMlpOnnx({4, 3, 2}, 27));
  onnx::TensorProto* bias = external.mutable_graph()->mutable_initializer(1);
  bias->clear_float_data();
  bias->set_data_location(onnx::TensorProto::EXTERNAL);
  onnx::StringStringEntryProto* location = bias->add_external_data();
  location->set_key("location");
  location->set_value("bias.bin");
  result = ExportQdq(external.SerializeAsString(), ValidSpec());
  EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(result.status().message()),
              HasSubstr("'fc0.bias' uses external data"));

  // A node name two nodes share.
  onnx::ModelProto twins = Parse(testing::MakeMlpOnnx({4, 3, 2}, 28));
  twins.mutable_graph()->mutable_node(0)->set_name("/fc1/Gemm");
  result = ExportQdq(twins.SerializeAsString(), ValidSpec());
  EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(result.status().message()),
              HasSubstr("several nodes have that name"));

  // A non-float initializer.
  OnnxBuilder b(13);
  b.Input("x", {-1, 3}).Output("y");
  b.IntInitializer("shape", {-1, 3});
  b.Node("Reshape", {"x", "shape"}, {"y"}, "reshape");
  QdqExportSpec spec;
  spec.weights = {{"shape", {1, 2}, {1.0f}, {0}, -1, true}};
  result = ExportQdq(TypedBytes(b, {-1, 3}), spec);
  EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(result.status().message()),
              HasSubstr("weights[0] ('shape'): initializer 'shape' has data "
                        "type INT64, not FLOAT"));
}

TEST(QdqExportTest, CheckOnnxModel) {
  const std::string bytes = testing::MakeMlpOnnx({4, 3, 2}, 29);
  EXPECT_TRUE(CheckOnnxModel(bytes).ok());
  EXPECT_EQ(CheckOnnxModel("\x08\x07garbage").code(),
            absl::StatusCode::kInvalidArgument);
  onnx::ModelProto proto = Parse(bytes);
  proto.mutable_graph()->mutable_node(0)->set_op_type("NotAnOp");
  const absl::Status status = CheckOnnxModel(proto.SerializeAsString());
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()), HasSubstr("NotAnOp"));
  // A node reading a value nothing defines.
  proto = Parse(bytes);
  proto.mutable_graph()->mutable_node(0)->set_input(0, "undefined");
  EXPECT_EQ(CheckOnnxModel(proto.SerializeAsString()).code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace mixq::search
