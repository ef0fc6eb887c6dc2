// Fresh names for rewriting an ONNX graph: the QDQ exporter's new values,
// nodes and initializers, and the opset raise's new inputs, must collide with
// nothing the model already names.
//
// Thread-compatible: one table per rewrite.
#ifndef MIXQ_SEARCH_ONNX_NAMES_H_
#define MIXQ_SEARCH_ONNX_NAMES_H_

#include <string>
#include <unordered_set>

#include "absl/strings/string_view.h"

namespace onnx {
class GraphProto;
}  // namespace onnx

namespace mixq::search {

// Hands out names no value, initializer or node of a graph uses yet
// (sub-graphs included, so nothing new shadows or is shadowed), nor any name
// handed out before. Reads the graph once, at construction; names the caller
// adds to the graph other than through Fresh are not seen.
class NameTable {
 public:
  explicit NameTable(const onnx::GraphProto& graph);

  // `base` if unused, else the first unused "<base>_<k>" for k = 1, 2, ...
  std::string Fresh(absl::string_view base);

 private:
  std::unordered_set<std::string> used_;
};

}  // namespace mixq::search

#endif  // MIXQ_SEARCH_ONNX_NAMES_H_
