#include "search/onnx_names.h"

#include <string>
#include <unordered_set>

#include "absl/strings/str_cat.h"
#include "onnx/onnx_pb.h"

namespace mixq::search {
namespace {

void CollectNames(const onnx::GraphProto& graph,
                  std::unordered_set<std::string>* names) {
  for (const auto& v : graph.input()) names->insert(v.name());
  for (const auto& v : graph.output()) names->insert(v.name());
  for (const auto& v : graph.value_info()) names->insert(v.name());
  for (const auto& t : graph.initializer()) names->insert(t.name());
  for (const onnx::NodeProto& node : graph.node()) {
    names->insert(node.name());
    for (const std::string& v : node.input()) names->insert(v);
    for (const std::string& v : node.output()) names->insert(v);
    for (const onnx::AttributeProto& attr : node.attribute()) {
      if (attr.has_g()) CollectNames(attr.g(), names);
      for (const onnx::GraphProto& g : attr.graphs()) CollectNames(g, names);
    }
  }
}

}  // namespace

NameTable::NameTable(const onnx::GraphProto& graph) {
  CollectNames(graph, &used_);
}

std::string NameTable::Fresh(absl::string_view base) {
  std::string name(base);
  for (int i = 1; !used_.insert(name).second; ++i) {
    name = absl::StrCat(base, "_", i);
  }
  return name;
}

}  // namespace mixq::search
