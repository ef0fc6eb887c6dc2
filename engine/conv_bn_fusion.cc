#include "engine/conv_bn_fusion.h"

#include <memory>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/ops.h"

namespace mixq::engine {

void FuseConvBatchNorms(Model::Impl* impl) {
  Model::Impl& m = *impl;
  m.fused_at.assign(m.nodes.size(), -1);
  std::vector<int> readers(m.num_slots(), 0);
  for (const Model::Impl::Node& node : m.nodes) {
    for (int s : node.inputs) ++readers[s];
  }
  for (size_t n = 0; n + 1 < m.nodes.size(); ++n) {
    const Model::Impl::Node& conv = m.nodes[n];
    const Model::Impl::Node& bn = m.nodes[n + 1];
    if (conv.op_type != "Conv" || bn.op_type != "BatchNormalization" ||
        bn.inputs[0] != conv.output || readers[conv.output] != 1 ||
        conv.output == m.output_slot) {
      continue;
    }
    std::unique_ptr<Kernel> kernel = FuseConvBatchNorm(
        *conv.kernel, *bn.kernel, /*conv_bias=*/conv.inputs.size() == 3);
    if (kernel == nullptr) continue;
    Model::Impl::Node node;
    node.name = conv.name;
    node.label = absl::StrCat(conv.label, "' + '", bn.label);
    node.op_type = "Conv+BatchNormalization";
    node.kernel = std::move(kernel);
    node.inputs = conv.inputs;
    node.inputs.insert(node.inputs.end(), bn.inputs.begin() + 1,
                       bn.inputs.end());
    node.output = bn.output;
    node.layer = conv.layer;
    node.site = conv.site;
    m.fused_at[n] = static_cast<int>(m.fused.size());
    m.fused.push_back(std::move(node));
    ++n;
  }
}

}  // namespace mixq::engine
