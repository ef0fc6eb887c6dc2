#include "tests/fuzz/model_mutator.h"

#include <climits>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "onnx/onnx_pb.h"

namespace mixq::fuzz {
namespace {

using Rng = std::mt19937;

constexpr float kFloatExtremes[] = {0.0f,
                                    -1.0f,
                                    std::numeric_limits<float>::infinity(),
                                    -std::numeric_limits<float>::infinity(),
                                    std::numeric_limits<float>::quiet_NaN(),
                                    3e38f,
                                    -3e38f,
                                    1e38f,
                                    std::numeric_limits<float>::denorm_min(),
                                    std::numeric_limits<float>::max()};
constexpr int64_t kIntExtremes[] = {0,
                                    -1,
                                    1,
                                    2,
                                    3,
                                    int64_t{1} << 31,
                                    (int64_t{1} << 31) - 1,
                                    std::numeric_limits<int64_t>::max(),
                                    std::numeric_limits<int64_t>::min()};
// Operators the engine imports (engine/ops*.cc), a few it does not, and the
// fold-only ones (Shape, ConstantOfShape, Range).
constexpr absl::string_view kOpTypes =
    "Abs Add AveragePool BatchNormalization Cast Clip Concat Conv Div Dropout "
    "Elu Exp Expand Flatten Gather Gemm GlobalAveragePool HardSigmoid "
    "HardSwish Identity LayerNormalization LeakyRelu Log LogSoftmax MatMul Max "
    "MaxPool Mul Pad Pow PRelu QuantizeLinear DequantizeLinear Reciprocal "
    "ReduceMean ReduceSum Relu Reshape Selu Sigmoid Slice Softmax Softplus "
    "Sqrt Squeeze Sub Sum Tanh Transpose Unsqueeze Shape ConstantOfShape Range "
    "Resize Upsample Tile Where";
constexpr int kKinds = 7;
// Scales every float of an initializer: finite weights whose products
// overflow.
constexpr float kOverflowScale = 1e30f;

template <typename T, size_t N>
T Pick(Rng& rng, const T (&values)[N]) {
  return values[std::uniform_int_distribution<size_t>(0, N - 1)(rng)];
}

size_t Index(Rng& rng, size_t n) {
  return std::uniform_int_distribution<size_t>(0, n - 1)(rng);
}

float MutateFloat(Rng& rng, float v) {
  if (rng() % 2 == 0) return Pick(rng, kFloatExtremes);
  return v * std::uniform_real_distribution<float>(-4.0f, 4.0f)(rng);
}

int64_t MutateInt(Rng& rng, int64_t v) {
  if (rng() % 2 == 0) return Pick(rng, kIntExtremes);
  return v + std::uniform_int_distribution<int64_t>(-2, 2)(rng);
}

bool MutateAttribute(Rng& rng, onnx::GraphProto* graph) {
  std::vector<onnx::AttributeProto*> attrs;
  for (onnx::NodeProto& node : *graph->mutable_node()) {
    for (onnx::AttributeProto& attr : *node.mutable_attribute()) {
      attrs.push_back(&attr);
    }
  }
  if (attrs.empty()) return false;
  onnx::AttributeProto& attr = *attrs[Index(rng, attrs.size())];
  switch (attr.type()) {
    case onnx::AttributeProto::FLOAT:
      attr.set_f(MutateFloat(rng, attr.f()));
      return true;
    case onnx::AttributeProto::INT:
      attr.set_i(MutateInt(rng, attr.i()));
      return true;
    case onnx::AttributeProto::FLOATS:
      if (attr.floats_size() == 0) return false;
      {
        const int k = static_cast<int>(Index(rng, attr.floats_size()));
        attr.set_floats(k, MutateFloat(rng, attr.floats(k)));
      }
      return true;
    case onnx::AttributeProto::INTS:
      if (attr.ints_size() == 0) return false;
      {
        const int k = static_cast<int>(Index(rng, attr.ints_size()));
        attr.set_ints(k, MutateInt(rng, attr.ints(k)));
      }
      return true;
    default:
      return false;
  }
}

bool MutateDim(Rng& rng, onnx::GraphProto* graph) {
  std::vector<google::protobuf::RepeatedField<int64_t>*> tensor_dims;
  for (onnx::TensorProto& t : *graph->mutable_initializer()) {
    if (t.dims_size() > 0) tensor_dims.push_back(t.mutable_dims());
  }
  std::vector<onnx::TensorShapeProto*> shapes;
  for (auto* infos : {graph->mutable_input(), graph->mutable_output()}) {
    for (onnx::ValueInfoProto& info : *infos) {
      auto* type = info.mutable_type();
      if (type->has_tensor_type() && type->tensor_type().has_shape() &&
          type->tensor_type().shape().dim_size() > 0) {
        shapes.push_back(type->mutable_tensor_type()->mutable_shape());
      }
    }
  }
  if (tensor_dims.empty() && shapes.empty()) return false;
  const size_t k = Index(rng, tensor_dims.size() + shapes.size());
  if (k < tensor_dims.size()) {
    auto& dims = *tensor_dims[k];
    const int d = static_cast<int>(Index(rng, dims.size()));
    dims.Set(d, MutateInt(rng, dims.Get(d)));
    return true;
  }
  onnx::TensorShapeProto& shape = *shapes[k - tensor_dims.size()];
  auto& dim =
      *shape.mutable_dim(static_cast<int>(Index(rng, shape.dim_size())));
  dim.set_dim_value(MutateInt(rng, dim.has_dim_value() ? dim.dim_value() : 1));
  return true;
}

bool MutateOpType(Rng& rng, onnx::GraphProto* graph) {
  if (graph->node_size() == 0) return false;
  static const std::vector<std::string>* const kOps =
      new std::vector<std::string>(absl::StrSplit(kOpTypes, ' '));
  graph->mutable_node(static_cast<int>(Index(rng, graph->node_size())))
      ->set_op_type((*kOps)[Index(rng, kOps->size())]);
  return true;
}

bool MutateWeight(Rng& rng, onnx::GraphProto* graph) {
  std::vector<onnx::TensorProto*> floats;
  for (onnx::TensorProto& t : *graph->mutable_initializer()) {
    if (t.data_type() == onnx::TensorProto::FLOAT &&
        (t.float_data_size() > 0 || t.raw_data().size() >= sizeof(float))) {
      floats.push_back(&t);
    }
  }
  if (floats.empty()) return false;
  onnx::TensorProto& t = *floats[Index(rng, floats.size())];
  const bool scale_all = rng() % 3 == 0;
  const auto mutate = [&](float v) {
    return scale_all ? v * kOverflowScale : Pick(rng, kFloatExtremes);
  };
  if (t.float_data_size() > 0) {
    if (scale_all) {
      for (int i = 0; i < t.float_data_size(); ++i) {
        t.set_float_data(i, mutate(t.float_data(i)));
      }
    } else {
      const int i = static_cast<int>(Index(rng, t.float_data_size()));
      t.set_float_data(i, mutate(t.float_data(i)));
    }
    return true;
  }
  std::string& raw = *t.mutable_raw_data();
  const size_t n = raw.size() / sizeof(float);
  const size_t first = scale_all ? 0 : Index(rng, n);
  const size_t last = scale_all ? n : first + 1;
  for (size_t i = first; i < last; ++i) {
    float v;
    std::memcpy(&v, raw.data() + i * sizeof(float), sizeof(v));
    v = mutate(v);
    std::memcpy(raw.data() + i * sizeof(float), &v, sizeof(v));
  }
  return true;
}

bool Rewire(Rng& rng, onnx::GraphProto* graph) {
  std::vector<std::string> values;
  for (const onnx::ValueInfoProto& input : graph->input()) {
    values.push_back(input.name());
  }
  for (const onnx::TensorProto& t : graph->initializer()) {
    values.push_back(t.name());
  }
  for (const onnx::NodeProto& node : graph->node()) {
    for (const std::string& output : node.output()) values.push_back(output);
  }
  std::vector<std::pair<onnx::NodeProto*, int>> inputs;
  for (onnx::NodeProto& node : *graph->mutable_node()) {
    for (int i = 0; i < node.input_size(); ++i) inputs.emplace_back(&node, i);
  }
  if (inputs.empty() || values.empty()) return false;
  const auto [node, i] = inputs[Index(rng, inputs.size())];
  node->set_input(i, rng() % 8 == 0 ? "" : values[Index(rng, values.size())]);
  return true;
}

bool RemoveOrDuplicateNode(Rng& rng, onnx::GraphProto* graph) {
  if (graph->node_size() == 0) return false;
  const int j = static_cast<int>(Index(rng, graph->node_size()));
  if (rng() % 2 == 0) {
    graph->mutable_node()->DeleteSubrange(j, 1);
    return true;
  }
  // The copy reads the original's output, so it keeps a unique output name.
  onnx::NodeProto copy = graph->node(j);
  if (copy.output_size() == 0 || copy.input_size() == 0) return false;
  copy.set_input(0, copy.output(0));
  for (int k = 0; k < copy.output_size(); ++k) {
    copy.set_output(k, copy.output(k) + "_dup");
  }
  copy.set_name(copy.name() + "_dup");
  *graph->add_node() = std::move(copy);
  return true;
}

}  // namespace

bool MutateModel(std::string* bytes, uint32_t seed, size_t max_size) {
  onnx::ModelProto model;
  if (bytes->size() > static_cast<size_t>(INT_MAX) ||
      !model.ParseFromArray(bytes->data(), static_cast<int>(bytes->size())) ||
      !model.has_graph()) {
    return false;
  }
  Rng rng(seed);
  onnx::GraphProto* graph = model.mutable_graph();
  // Kinds that do not apply to this graph (no attributes, no initializers)
  // fall through to the next one.
  const int first = static_cast<int>(rng() % kKinds);
  bool mutated = false;
  for (int k = 0; k < kKinds && !mutated; ++k) {
    switch ((first + k) % kKinds) {
      case 0:
      case 1:
        mutated = MutateAttribute(rng, graph);
        break;
      case 2:
        mutated = MutateDim(rng, graph);
        break;
      case 3:
        mutated = MutateOpType(rng, graph);
        break;
      case 4:
        mutated = MutateWeight(rng, graph);
        break;
      case 5:
        mutated = Rewire(rng, graph);
        break;
      default:
        mutated = RemoveOrDuplicateNode(rng, graph);
        break;
    }
  }
  if (!mutated) return false;
  std::string out;
  if (!model.SerializeToString(&out) || out.size() > max_size) return false;
  *bytes = std::move(out);
  return true;
}

}  // namespace mixq::fuzz
