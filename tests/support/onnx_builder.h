// Test support: builds ONNX models node by node in memory (no Python, no
// files). Header-only; link onnx_proto and protobuf::libprotobuf.
#ifndef MIXQ_TESTS_SUPPORT_ONNX_BUILDER_H_
#define MIXQ_TESTS_SUPPORT_ONNX_BUILDER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "engine/model.h"
#include "engine/tensor.h"
#include "onnx/onnx_pb.h"

namespace mixq::testing {

// Builds an ONNX ModelProto; dims of -1 in Input() are symbolic ("batch").
class OnnxBuilder {
 public:
  explicit OnnxBuilder(int64_t opset = 13) {
    model_.set_ir_version(8);
    model_.add_opset_import()->set_version(opset);
    model_.mutable_graph()->set_name("test");
  }

  onnx::ModelProto& proto() { return model_; }
  onnx::GraphProto& graph() { return *model_.mutable_graph(); }

  OnnxBuilder& Input(const std::string& name, const engine::Shape& dims,
                     int elem_type = onnx::TensorProto::FLOAT) {
    onnx::ValueInfoProto* info = graph().add_input();
    info->set_name(name);
    auto* type = info->mutable_type()->mutable_tensor_type();
    type->set_elem_type(elem_type);
    for (int64_t d : dims) {
      auto* dim = type->mutable_shape()->add_dim();
      if (d < 0) {
        dim->set_dim_param("batch");
      } else {
        dim->set_dim_value(d);
      }
    }
    return *this;
  }

  OnnxBuilder& Output(const std::string& name) {
    graph().add_output()->set_name(name);
    return *this;
  }

  OnnxBuilder& Initializer(const std::string& name, const engine::Shape& dims,
                           const std::vector<float>& values, bool raw = false) {
    FillFloat(graph().add_initializer(), name, dims, values, raw);
    return *this;
  }

  // A 1-D int64 initializer.
  OnnxBuilder& IntInitializer(const std::string& name,
                              const std::vector<int64_t>& values) {
    FillInt(graph().add_initializer(), name, values);
    return *this;
  }

  // A node named `name`, or "<op_type>_<n>" when empty.
  onnx::NodeProto* Node(const std::string& op_type,
                        const std::vector<std::string>& inputs,
                        const std::vector<std::string>& outputs,
                        const std::string& name = "") {
    onnx::NodeProto* node = graph().add_node();
    node->set_op_type(op_type);
    node->set_name(
        name.empty() ? absl::StrCat(op_type, "_", graph().node_size()) : name);
    for (const auto& input : inputs) node->add_input(input);
    for (const auto& output : outputs) node->add_output(output);
    return node;
  }

  // A Constant node holding a 1-D int64 tensor (or a scalar when `scalar`).
  OnnxBuilder& IntConstant(const std::string& output,
                           const std::vector<int64_t>& values,
                           bool scalar = false) {
    onnx::AttributeProto* attr =
        Node("Constant", {}, {output}, output)->add_attribute();
    attr->set_name("value");
    attr->set_type(onnx::AttributeProto::TENSOR);
    FillInt(attr->mutable_t(), "", values);
    if (scalar) attr->mutable_t()->clear_dims();
    return *this;
  }

  std::string Bytes() const { return model_.SerializeAsString(); }

  absl::StatusOr<std::unique_ptr<engine::Model>> Build() const {
    return engine::Model::FromOnnxBytes(Bytes());
  }

  static void FillFloat(onnx::TensorProto* t, const std::string& name,
                        const engine::Shape& dims,
                        const std::vector<float>& values, bool raw = false) {
    t->set_name(name);
    t->set_data_type(onnx::TensorProto::FLOAT);
    for (int64_t d : dims) t->add_dims(d);
    if (raw) {
      t->set_raw_data(std::string(reinterpret_cast<const char*>(values.data()),
                                  values.size() * sizeof(float)));
    } else {
      for (float v : values) t->add_float_data(v);
    }
  }

  static void FillInt(onnx::TensorProto* t, const std::string& name,
                      const std::vector<int64_t>& values) {
    t->set_name(name);
    t->set_data_type(onnx::TensorProto::INT64);
    t->add_dims(static_cast<int64_t>(values.size()));
    for (int64_t v : values) t->add_int64_data(v);
  }

 private:
  onnx::ModelProto model_;
};

inline void SetInt(onnx::NodeProto* node, const std::string& name,
                   int64_t value) {
  onnx::AttributeProto* attr = node->add_attribute();
  attr->set_name(name);
  attr->set_type(onnx::AttributeProto::INT);
  attr->set_i(value);
}

inline void SetInts(onnx::NodeProto* node, const std::string& name,
                    const std::vector<int64_t>& values) {
  onnx::AttributeProto* attr = node->add_attribute();
  attr->set_name(name);
  attr->set_type(onnx::AttributeProto::INTS);
  for (int64_t v : values) attr->add_ints(v);
}

inline void SetFloat(onnx::NodeProto* node, const std::string& name,
                     float value) {
  onnx::AttributeProto* attr = node->add_attribute();
  attr->set_name(name);
  attr->set_type(onnx::AttributeProto::FLOAT);
  attr->set_f(value);
}

inline void SetString(onnx::NodeProto* node, const std::string& name,
                      const std::string& value) {
  onnx::AttributeProto* attr = node->add_attribute();
  attr->set_name(name);
  attr->set_type(onnx::AttributeProto::STRING);
  attr->set_s(value);
}

// The tensor of a new "value" attribute (Constant, ConstantOfShape).
inline onnx::TensorProto* SetTensor(onnx::NodeProto* node) {
  onnx::AttributeProto* attr = node->add_attribute();
  attr->set_name("value");
  attr->set_type(onnx::AttributeProto::TENSOR);
  return attr->mutable_t();
}

}  // namespace mixq::testing

#endif  // MIXQ_TESTS_SUPPORT_ONNX_BUILDER_H_
