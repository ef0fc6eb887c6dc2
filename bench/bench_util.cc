#include "bench/bench_util.h"

#include <utility>

namespace mixq::bench {

engine::Tensor RandomTensor(engine::Shape shape, std::mt19937* rng) {
  engine::Tensor t(std::move(shape));
  std::normal_distribution<float> normal;
  for (float& v : t.values()) v = normal(*rng);
  return t;
}

void AddFloatValue(
    const std::string& name, const engine::Shape& dims,
    google::protobuf::RepeatedPtrField<onnx::ValueInfoProto>* values) {
  onnx::ValueInfoProto* value = values->Add();
  value->set_name(name);
  onnx::TypeProto::Tensor* type = value->mutable_type()->mutable_tensor_type();
  type->set_elem_type(onnx::TensorProto::FLOAT);
  onnx::TensorShapeProto* shape = type->mutable_shape();
  for (size_t d = 0; d < dims.size(); ++d) {
    if (d == 0) {
      shape->add_dim()->set_dim_param("batch");
    } else {
      shape->add_dim()->set_dim_value(dims[d]);
    }
  }
}

}  // namespace mixq::bench
