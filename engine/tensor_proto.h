// The checked reader of ONNX TensorProto data: the one place the engine turns
// an initializer, a Constant's value or a tensor attribute into numbers. It
// compares the data the tensor holds with the element count its dims declare
// before it allocates anything of that count, so the memory a tensor costs
// is bounded by its bytes in the file, whatever its dims say (a [2^31] tensor
// holding three floats is refused without a 16 GB allocation).
//
// Internal to the engine's ONNX readers (model import, graph rewrites): ONNX
// types stay out of the engine's public headers.
//
// Thread-safety: pure functions; they may run concurrently.
#ifndef MIXQ_ENGINE_TENSOR_PROTO_H_
#define MIXQ_ENGINE_TENSOR_PROTO_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "engine/tensor.h"
#include "onnx/onnx_pb.h"

namespace mixq::engine {

// A parsed initializer or Constant value: float data, or int64 data (shapes
// for Reshape).
struct ConstValue {
  bool is_int = false;
  // The ONNX element type (TensorProto::DataType) as stored in the file:
  // QuantizeLinear's output type is its zero point's.
  int data_type = onnx::TensorProto::UNDEFINED;
  Shape shape;
  std::vector<float> floats;
  std::vector<int64_t> ints;
};

// True for the element types ParseTensor reads: float, double, the integer
// types, bool, INT4 and UINT4.
bool IsSupportedTensorType(int data_type);

// The values of `tensor`; `what` names it in errors ("initializer 'w'").
// INVALID_ARGUMENT for external or segmented data, an unsupported element
// type, dims whose element count is negative or too large
// (CheckedNumElements), or data of another length than the dims declare
// ("initializer 'w' of shape [3] needs 3 values, has 2"). The length check
// comes before any allocation sized by the declared count.
absl::StatusOr<ConstValue> ParseTensor(const onnx::TensorProto& tensor,
                                       absl::string_view what);

}  // namespace mixq::engine

#endif  // MIXQ_ENGINE_TENSOR_PROTO_H_
