#include "search/quantize.h"

#include <climits>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "engine/graph_rewrite.h"
#include "engine/validate.h"
#include "onnx/onnx_pb.h"
#include "search/qdq_export.h"
#include "util/status_macros.h"

namespace mixq::search {
namespace {

// Names every unnamed node "<op_type>_<index>" (made unique).
std::string NameNodes(absl::string_view onnx_bytes, bool* ok) {
  onnx::ModelProto proto;
  *ok = onnx_bytes.size() <= static_cast<size_t>(INT_MAX) &&
        proto.ParseFromArray(onnx_bytes.data(),
                             static_cast<int>(onnx_bytes.size()));
  if (!*ok) return "";
  onnx::GraphProto* graph = proto.mutable_graph();
  absl::flat_hash_set<std::string> used;
  for (const onnx::NodeProto& node : graph->node()) {
    if (!node.name().empty()) used.insert(node.name());
  }
  for (int i = 0; i < graph->node_size(); ++i) {
    onnx::NodeProto* node = graph->mutable_node(i);
    if (!node->name().empty()) continue;
    std::string name = absl::StrCat(node->op_type(), "_", i);
    for (int k = 1; used.contains(name); ++k) {
      name = absl::StrCat(node->op_type(), "_", i, "_", k);
    }
    used.insert(name);
    node->set_name(name);
  }
  return proto.SerializeAsString();
}

// ValidateModel on serialized bytes.
absl::Status ValidateOnnx(absl::string_view onnx_bytes) {
  onnx::ModelProto proto;
  if (onnx_bytes.size() > static_cast<size_t>(INT_MAX) ||
      !proto.ParseFromArray(onnx_bytes.data(),
                            static_cast<int>(onnx_bytes.size()))) {
    return absl::InvalidArgumentError(
        "not an ONNX model (protobuf parsing failed)");
  }
  return engine::ValidateModel(proto);
}

QdqWeight ToQdqWeight(const std::string& name, const engine::Tensor& w,
                      const QuantParams& params) {
  QdqWeight out;
  out.initializer = name;
  QuantizeToIntegers(w, params, &out.q);
  out.scale = params.scale;
  out.zero_point = params.zero_point;
  out.axis = params.axis;
  out.is_signed = params.is_signed();
  out.bits = params.bits;
  return out;
}

}  // namespace

absl::StatusOr<PreparedModel> PrepareModel(absl::string_view onnx_bytes) {
  // Validated before folding: folding reads initializers and attributes
  // (a BatchNormalization's infinite epsilon would fold into finite weights
  // and escape a validation of the folded model).
  MIXQ_RETURN_IF_ERROR(ValidateOnnx(onnx_bytes));
  engine::FoldReport report;
  MIXQ_ASSIGN_OR_RETURN(std::string folded,
                        engine::FoldBatchNorm(onnx_bytes, &report));
  PreparedModel prepared;
  bool ok = false;
  prepared.onnx = NameNodes(folded, &ok);
  if (!ok) {
    return absl::InvalidArgumentError(
        "not an ONNX model (protobuf parsing failed)");
  }
  prepared.folded_batch_norms = report.folded;
  for (const engine::FoldReport::Unfolded& left : report.unfolded) {
    prepared.unfolded_batch_norms.push_back(
        absl::StrCat(left.node, ": ", left.reason));
  }
  return prepared;
}

absl::StatusOr<QuantizedModel> ExportQuantized(absl::string_view prepared_onnx,
                                               const engine::Model& model,
                                               const QatSession& session,
                                               const Policy& policy) {
  const auto& layers = model.quantizable_layers();
  if (policy.size() != layers.size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the policy has ", policy.size(), " entries; the model has ",
        layers.size(), " quantizable layers"));
  }
  const ActivationOptions& act = session.quant_options().activations;
  const bool static_activations = act.enabled() && !act.dynamic;
  const CostModel cost = CostModel::ForModel(model);

  QuantizedModel result;
  QdqExportSpec spec;
  std::vector<bool> is_quantized_weight(model.params().size(), false);
  for (size_t l = 0; l < layers.size(); ++l) {
    const engine::QuantizableLayer& info = layers[l];
    QuantizedLayer layer;
    layer.name = info.name;
    layer.node_name = info.node_name;
    layer.op_type = info.op_type;
    layer.bits = policy[l];
    layer.num_weights = info.num_weights;
    layer.macs = info.macs;
    layer.size_bytes = cost.LayerBytes(static_cast<int>(l), policy[l]);
    if (policy[l] < kFloatBits) {
      const engine::Tensor& w = session.weights()[info.weight_param];
      layer.weight = session.WeightParams(static_cast<int>(l), policy[l]);
      spec.weights.push_back(
          ToQdqWeight(model.params()[info.weight_param].name, w, layer.weight));
      is_quantized_weight[info.weight_param] = true;
      // An embedding's input 0 is its table and its other input the ids:
      // neither is an activation to quantize.
      if (static_activations && info.quantize_input) {
        const QuantParams* params =
            session.activations().params(static_cast<int>(l));
        if (params == nullptr) {
          return absl::FailedPreconditionError(absl::StrCat(
              "layer '", info.name,
              "' has no activation range: calibrate before exporting"));
        }
        layer.activation_quantized = true;
        layer.activation = *params;
        // A tied weight's layer quantizes the input of every node reading it
        // with its one grid, as the engine's hook did.
        for (const std::string& node_name : info.node_names) {
          QdqActivation a;
          a.node_name = node_name;
          a.input_index = 0;
          a.scale = params->scale[0];
          a.zero_point = params->zero_point[0];
          a.qmin = params->qmin;
          a.qmax = params->qmax;
          a.is_signed = params->is_signed();
          spec.activations.push_back(std::move(a));
        }
      }
    }
    result.layers.push_back(std::move(layer));
  }
  for (size_t p = 0; p < model.params().size(); ++p) {
    if (is_quantized_weight[p]) continue;
    spec.float_updates.emplace_back(model.params()[p].name,
                                    session.weights()[p]);
  }
  MIXQ_ASSIGN_OR_RETURN(result.onnx, ExportQdq(prepared_onnx, spec));

  result.activation_bits =
      static_activations || act.dynamic ? act.bits : kFloatBits;
  const PolicyCost figures = cost.Cost(policy, result.activation_bits);
  result.avg_bits = figures.avg_bits;
  result.size_bytes = figures.size_bytes;
  result.fp32_size_bytes = cost.Fp32SizeBytes();
  result.bops = static_cast<double>(figures.bops);
  return result;
}

}  // namespace mixq::search
