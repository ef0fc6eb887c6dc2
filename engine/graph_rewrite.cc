#include "engine/graph_rewrite.h"

#include <bit>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "engine/ops.h"
#include "engine/tensor_proto.h"
#include "onnx/onnx_pb.h"

namespace mixq::engine {
namespace {

// raw_data in ONNX is little-endian and is copied as is.
static_assert(std::endian::native == std::endian::little);

constexpr float kDefaultEpsilon = 1e-5f;
constexpr int kBatchNormInputs = 5;  // X, scale, B, input_mean, input_var
// A name marked so in the maps below is defined more than once.
constexpr int kAmbiguous = -1;

bool IsDefaultDomain(const onnx::NodeProto& node) {
  return node.domain().empty() || node.domain() == "ai.onnx";
}

// Every read of a value: node inputs, also inside sub-graphs (which may read
// outer values), and graph outputs.
void CountUses(const onnx::GraphProto& graph,
               absl::flat_hash_map<std::string, int>* uses) {
  for (const onnx::NodeProto& node : graph.node()) {
    for (const std::string& input : node.input()) {
      if (!input.empty()) ++(*uses)[input];
    }
    for (const onnx::AttributeProto& attr : node.attribute()) {
      if (attr.has_g()) CountUses(attr.g(), uses);
      for (const onnx::GraphProto& g : attr.graphs()) CountUses(g, uses);
    }
  }
  for (const onnx::ValueInfoProto& output : graph.output()) {
    ++(*uses)[output.name()];
  }
}

// The values of a float tensor in double, or why they cannot be read.
// ParseTensor checks the data against the declared dims before allocating:
// a [2^31] mean holding three values costs three values, not 16 GB.
absl::StatusOr<std::vector<double>> ReadFloats(const onnx::TensorProto& t) {
  const std::string what = absl::StrCat("initializer '", t.name(), "'");
  if (t.data_type() != onnx::TensorProto::FLOAT) {
    return absl::FailedPreconditionError(
        absl::StrCat(what, " has data type ", t.data_type(), ", not float"));
  }
  absl::StatusOr<ConstValue> value = ParseTensor(t, what);
  if (!value.ok()) {
    return absl::FailedPreconditionError(value.status().message());
  }
  return std::vector<double>(value->floats.begin(), value->floats.end());
}

// Stores `values` as float raw_data of shape `dims`.
void WriteFloats(const std::vector<double>& values, const Shape& dims,
                 onnx::TensorProto* t) {
  t->clear_float_data();
  t->clear_dims();
  for (int64_t d : dims) t->add_dims(d);
  std::string raw(values.size() * sizeof(float), '\0');
  for (size_t i = 0; i < values.size(); ++i) {
    const float v = static_cast<float>(values[i]);
    std::memcpy(raw.data() + i * sizeof(float), &v, sizeof(v));
  }
  t->set_raw_data(std::move(raw));
}

const onnx::AttributeProto* FindAttribute(const onnx::NodeProto& node,
                                          absl::string_view name) {
  for (const onnx::AttributeProto& attr : node.attribute()) {
    if (attr.name() == name) return &attr;
  }
  return nullptr;
}

// A FLOAT attribute or its default; nullopt when it has another type.
std::optional<float> FloatAttribute(const onnx::NodeProto& node,
                                    absl::string_view name,
                                    float default_value) {
  const onnx::AttributeProto* attr = FindAttribute(node, name);
  if (attr == nullptr) return default_value;
  if (attr->type() != onnx::AttributeProto::FLOAT) return std::nullopt;
  return attr->f();
}

// An INT attribute or its default; nullopt when it has another type.
std::optional<int64_t> IntAttribute(const onnx::NodeProto& node,
                                    absl::string_view name,
                                    int64_t default_value) {
  const onnx::AttributeProto* attr = FindAttribute(node, name);
  if (attr == nullptr) return default_value;
  if (attr->type() != onnx::AttributeProto::INT) return std::nullopt;
  return attr->i();
}

// Folds the BatchNormalization nodes of one graph. Reasons for leaving a
// node are FAILED_PRECONDITION statuses, turned into report entries.
class BatchNormFolder {
 public:
  explicit BatchNormFolder(onnx::GraphProto* graph) : graph_(*graph) {
    for (int i = 0; i < graph_.initializer_size(); ++i) {
      Define(graph_.initializer(i).name(), i, &initializer_of_);
    }
    for (int j = 0; j < graph_.node_size(); ++j) {
      for (const std::string& output : graph_.node(j).output()) {
        if (!output.empty()) Define(output, j, &producer_of_);
      }
    }
    CountUses(graph_, &uses_);
    removed_nodes_.assign(graph_.node_size(), false);
    dropped_initializers_.assign(graph_.initializer_size(), false);
  }

  void Run(FoldReport* report) {
    for (int j = 0; j < graph_.node_size(); ++j) {
      const onnx::NodeProto& node = graph_.node(j);
      if (node.op_type() != "BatchNormalization" || !IsDefaultDomain(node)) {
        continue;
      }
      const absl::Status status = TryFold(j);
      if (status.ok()) {
        ++report->folded;
      } else {
        report->unfolded.push_back(
            {node.name().empty() ? absl::StrCat("#", j) : node.name(),
             std::string(status.message())});
      }
    }
    Compact();
  }

 private:
  static void Define(const std::string& name, int index,
                     absl::flat_hash_map<std::string, int>* map) {
    const auto [it, inserted] = map->emplace(name, index);
    if (!inserted) it->second = kAmbiguous;
  }

  static absl::Status Unfoldable(absl::string_view why) {
    return absl::FailedPreconditionError(why);
  }

  int Uses(const std::string& name) const {
    const auto it = uses_.find(name);
    return it == uses_.end() ? 0 : it->second;
  }

  // The index of the initializer `name` if it is one (and only that: not
  // also a node output, not defined twice).
  absl::StatusOr<int> FindInitializer(const std::string& name) const {
    const auto it = initializer_of_.find(name);
    if (it == initializer_of_.end() || it->second == kAmbiguous ||
        producer_of_.contains(name)) {
      return Unfoldable(
          absl::StrCat("'", name, "' is not an initializer (defined once)"));
    }
    return it->second;
  }

  // An initializer that only the node being folded reads (once).
  absl::StatusOr<int> FindOwnedInitializer(const std::string& name) const {
    absl::StatusOr<int> index = FindInitializer(name);
    if (!index.ok()) return index;
    if (Uses(name) != 1) {
      return Unfoldable(absl::StrCat("initializer '", name,
                                     "' is read by other nodes or is a graph "
                                     "output"));
    }
    return index;
  }

  // The per-channel BatchNormalization inputs as doubles, each [channels].
  absl::StatusOr<std::vector<double>> ReadChannelVector(
      const std::string& name, int64_t* channels) const {
    absl::StatusOr<int> index = FindInitializer(name);
    if (!index.ok()) return index.status();
    const onnx::TensorProto& t = graph_.initializer(*index);
    absl::StatusOr<std::vector<double>> values = ReadFloats(t);
    if (!values.ok()) return values.status();
    const int64_t n = static_cast<int64_t>(values->size());
    if (t.dims_size() != 1 || (*channels >= 0 && n != *channels)) {
      return Unfoldable(absl::StrCat("initializer '", name,
                                     "' is not a vector of one value per "
                                     "channel"));
    }
    *channels = n;
    return values;
  }

  absl::Status TryFold(int bn_index) {
    const onnx::NodeProto& bn = graph_.node(bn_index);
    if (bn.input_size() != kBatchNormInputs) {
      return Unfoldable(absl::StrCat("it has ", bn.input_size(),
                                     " inputs, not ", kBatchNormInputs));
    }
    for (const std::string& input : bn.input()) {
      if (input.empty()) return Unfoldable("an input is missing");
    }
    for (int k = 1; k < bn.output_size(); ++k) {
      if (!bn.output(k).empty()) {
        return Unfoldable("it has training-mode outputs");
      }
    }
    if (bn.output_size() < 1 || bn.output(0).empty()) {
      return Unfoldable("it has no output");
    }
    const std::optional<float> epsilon =
        FloatAttribute(bn, "epsilon", kDefaultEpsilon);
    const std::optional<int64_t> training =
        IntAttribute(bn, "training_mode", 0);
    const std::optional<int64_t> is_test = IntAttribute(bn, "is_test", 1);
    const std::optional<int64_t> spatial = IntAttribute(bn, "spatial", 1);
    if (!epsilon || !std::isfinite(*epsilon) || !training || !is_test ||
        !spatial || *training != 0 || *is_test == 0 || *spatial != 1) {
      return Unfoldable(
          "it is not the inference form with per-channel statistics "
          "(epsilon, training_mode, is_test or spatial)");
    }

    const std::string& x = bn.input(0);
    const auto producer = producer_of_.find(x);
    if (producer == producer_of_.end() || producer->second == kAmbiguous ||
        initializer_of_.contains(x)) {
      return Unfoldable(
          absl::StrCat("its input '", x, "' is not the output of one node"));
    }
    const int node_index = producer->second;
    onnx::NodeProto& node = *graph_.mutable_node(node_index);
    const std::string& op = node.op_type();
    if (!IsDefaultDomain(node) || (op != "Conv" && op != "Gemm")) {
      return Unfoldable(absl::StrCat("its input is produced by a ", op,
                                     " node, not a Conv or Gemm"));
    }
    if (node.output_size() != 1 || Uses(x) != 1) {
      return Unfoldable(absl::StrCat("the ", op, " output '", x,
                                     "' has other consumers or is a graph "
                                     "output"));
    }
    if (node.input_size() < 2 || node.input(1).empty()) {
      return Unfoldable(absl::StrCat("the ", op, " node has no weight"));
    }
    absl::StatusOr<int> weight_index = FindOwnedInitializer(node.input(1));
    if (!weight_index.ok()) return weight_index.status();
    const bool has_bias = node.input_size() >= 3 && !node.input(2).empty();
    std::optional<int> bias_index;
    if (has_bias) {
      absl::StatusOr<int> index = FindOwnedInitializer(node.input(2));
      if (!index.ok()) return index.status();
      bias_index = *index;
    }

    int64_t channels = -1;
    std::vector<double> bn_values[kBatchNormInputs - 1];
    for (int k = 1; k < kBatchNormInputs; ++k) {
      absl::StatusOr<std::vector<double>> values =
          ReadChannelVector(bn.input(k), &channels);
      if (!values.ok()) return values.status();
      bn_values[k - 1] = *std::move(values);
    }
    const std::vector<double>& gamma = bn_values[0];
    const std::vector<double>& beta = bn_values[1];
    const std::vector<double>& mean = bn_values[2];
    const std::vector<double>& var = bn_values[3];
    std::vector<double> factor(channels);
    for (int64_t c = 0; c < channels; ++c) {
      factor[c] = gamma[c] / std::sqrt(var[c] + *epsilon);
      if (!std::isfinite(factor[c])) {
        return Unfoldable(absl::StrCat("channel ", c,
                                       " has var + epsilon <= 0 or a "
                                       "non-finite scale"));
      }
    }

    onnx::TensorProto& weight = *graph_.mutable_initializer(*weight_index);
    absl::StatusOr<std::vector<double>> w = ReadFloats(weight);
    if (!w.ok()) return w.status();
    const Shape w_shape(weight.dims().begin(), weight.dims().end());
    std::vector<double> bias(channels, 0.0);
    Shape bias_shape = {channels};
    std::optional<float> gemm_beta;
    bool trans_b = false;
    if (op == "Conv") {
      if (w_shape.size() < 2 || w_shape[0] != channels) {
        return Unfoldable(
            absl::StrCat("the Conv weight ", ShapeToString(w_shape),
                         " does not have ", channels, " output channels"));
      }
    } else {
      const std::optional<int64_t> trans = IntAttribute(node, "transB", 0);
      gemm_beta = FloatAttribute(node, "beta", 1.0f);
      if (!trans || (*trans != 0 && *trans != 1) || !gemm_beta ||
          !FloatAttribute(node, "alpha", 1.0f)) {
        return Unfoldable("the Gemm has malformed transB, alpha or beta");
      }
      trans_b = *trans == 1;
      if (w_shape.size() != 2 || w_shape[trans_b ? 0 : 1] != channels) {
        return Unfoldable(
            absl::StrCat("the Gemm weight ", ShapeToString(w_shape),
                         " does not have ", channels, " output columns"));
      }
    }
    if (bias_index) {
      const onnx::TensorProto& t = graph_.initializer(*bias_index);
      absl::StatusOr<std::vector<double>> b = ReadFloats(t);
      if (!b.ok()) return b.status();
      const Shape shape(t.dims().begin(), t.dims().end());
      // Gemm's C broadcasts to [M, N]: only a value per column (or one for
      // all) folds.
      const bool per_channel = static_cast<int64_t>(b->size()) == channels &&
                               (shape == Shape{channels} ||
                                (op == "Gemm" && shape == Shape{1, channels}));
      const bool single = op == "Gemm" && b->size() == 1 && shape.size() <= 2;
      if (!per_channel && !single) {
        return Unfoldable(absl::StrCat("the ", op, " bias ",
                                       ShapeToString(shape),
                                       " is not one value per output channel"));
      }
      for (int64_t c = 0; c < channels; ++c) {
        bias[c] = (*b)[per_channel ? c : 0];
      }
      if (gemm_beta) {
        for (double& v : bias) v *= *gemm_beta;
      }
    }

    // Everything checked: rewrite.
    if (op == "Conv" || trans_b) {
      const size_t block = channels == 0 ? 0 : w->size() / channels;
      for (size_t i = 0; i < w->size(); ++i) (*w)[i] *= factor[i / block];
    } else {
      for (size_t i = 0; i < w->size(); ++i) (*w)[i] *= factor[i % channels];
    }
    WriteFloats(*w, w_shape, &weight);
    for (int64_t c = 0; c < channels; ++c) {
      bias[c] = (bias[c] - mean[c]) * factor[c] + beta[c];
    }
    if (bias_index) {
      WriteFloats(bias, bias_shape, graph_.mutable_initializer(*bias_index));
    } else {
      onnx::TensorProto* t = graph_.add_initializer();
      t->set_name(UnusedName(absl::StrCat(node.input(1), "_bn_bias")));
      t->set_data_type(onnx::TensorProto::FLOAT);
      WriteFloats(bias, bias_shape, t);
      initializer_of_.emplace(t->name(), graph_.initializer_size() - 1);
      dropped_initializers_.push_back(false);
      ++uses_[t->name()];
      if (node.input_size() < 3) {
        node.add_input(t->name());
      } else {
        node.set_input(2, t->name());
      }
    }
    if (gemm_beta) SetFloatAttribute("beta", 1.0f, &node);

    // The producer takes over the BatchNormalization's output.
    const std::string& y = bn.output(0);
    producer_of_[y] = node_index;
    removed_values_.push_back(x);
    producer_of_.erase(x);
    node.set_output(0, y);
    removed_nodes_[bn_index] = true;
    for (const std::string& input : bn.input()) {
      if (--uses_[input] > 0) continue;
      const auto it = initializer_of_.find(input);
      if (it != initializer_of_.end() && it->second != kAmbiguous) {
        dropped_initializers_[it->second] = true;
        removed_values_.push_back(input);
      }
    }
    return absl::OkStatus();
  }

  // `base`, or `base` with a number appended, that no value uses.
  std::string UnusedName(const std::string& base) const {
    const auto taken = [&](const std::string& name) {
      if (initializer_of_.contains(name) || producer_of_.contains(name) ||
          uses_.contains(name)) {
        return true;
      }
      for (const onnx::ValueInfoProto& input : graph_.input()) {
        if (input.name() == name) return true;
      }
      return false;
    };
    std::string name = base;
    for (int i = 1; taken(name); ++i) name = absl::StrCat(base, "_", i);
    return name;
  }

  static void SetFloatAttribute(absl::string_view name, float value,
                                onnx::NodeProto* node) {
    for (onnx::AttributeProto& attr : *node->mutable_attribute()) {
      if (attr.name() == name) {
        attr.set_f(value);
        return;
      }
    }
    onnx::AttributeProto* attr = node->add_attribute();
    attr->set_name(std::string(name));
    attr->set_type(onnx::AttributeProto::FLOAT);
    attr->set_f(value);
  }

  // Removes the folded nodes, the dropped initializers and what described
  // values that no longer exist (graph inputs listing an initializer,
  // value_info).
  void Compact() {
    absl::flat_hash_map<std::string, bool> gone;
    for (const std::string& name : removed_values_) gone[name] = true;
    const auto keep_if = [](auto* field, auto keep) {
      int out = 0;
      for (int i = 0; i < field->size(); ++i) {
        if (!keep(i)) continue;
        if (out != i) field->SwapElements(out, i);
        ++out;
      }
      field->DeleteSubrange(out, field->size() - out);
    };
    keep_if(graph_.mutable_node(), [&](int i) { return !removed_nodes_[i]; });
    keep_if(graph_.mutable_initializer(),
            [&](int i) { return !dropped_initializers_[i]; });
    keep_if(graph_.mutable_input(),
            [&](int i) { return !gone.contains(graph_.input(i).name()); });
    keep_if(graph_.mutable_value_info(),
            [&](int i) { return !gone.contains(graph_.value_info(i).name()); });
  }

  onnx::GraphProto& graph_;
  absl::flat_hash_map<std::string, int> initializer_of_;
  absl::flat_hash_map<std::string, int> producer_of_;  // node index
  absl::flat_hash_map<std::string, int> uses_;
  std::vector<bool> removed_nodes_;
  std::vector<bool> dropped_initializers_;
  std::vector<std::string> removed_values_;
};

}  // namespace

absl::StatusOr<std::string> FoldBatchNorm(absl::string_view onnx_bytes,
                                          FoldReport* report) {
  if (onnx_bytes.size() > static_cast<size_t>(INT_MAX)) {
    return absl::InvalidArgumentError("not an ONNX model: larger than 2 GiB");
  }
  onnx::ModelProto model;
  if (!model.ParseFromArray(onnx_bytes.data(),
                            static_cast<int>(onnx_bytes.size()))) {
    return absl::InvalidArgumentError(
        "not an ONNX model (protobuf parsing failed)");
  }
  if (!model.has_graph()) {
    return absl::InvalidArgumentError("not an ONNX model: it has no graph");
  }
  FoldReport local;
  FoldReport& out = report != nullptr ? *report : local;
  out = FoldReport();
  BatchNormFolder(model.mutable_graph()).Run(&out);
  std::string bytes;
  if (!model.SerializeToString(&bytes)) {
    return absl::InvalidArgumentError(
        "the folded model cannot be serialized (larger than 2 GiB)");
  }
  return bytes;
}

}  // namespace mixq::engine
