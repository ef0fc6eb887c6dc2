#include "tests/support/onnx_mlp.h"

#include <cmath>
#include <random>

#include "absl/strings/str_cat.h"
#include "onnx/onnx_pb.h"

namespace mixq::testing {
namespace {

void AddFloatInitializer(onnx::GraphProto* graph, const std::string& name,
                         const std::vector<int64_t>& dims, std::mt19937_64& rng,
                         float stddev) {
  onnx::TensorProto* t = graph->add_initializer();
  t->set_name(name);
  t->set_data_type(onnx::TensorProto::FLOAT);
  int64_t n = 1;
  for (int64_t d : dims) {
    t->add_dims(d);
    n *= d;
  }
  std::normal_distribution<float> normal(0.0f, stddev);
  for (int64_t i = 0; i < n; ++i) t->add_float_data(normal(rng));
}

void SetValueInfo(onnx::ValueInfoProto* info, const std::string& name,
                  int64_t features) {
  info->set_name(name);
  auto* tensor = info->mutable_type()->mutable_tensor_type();
  tensor->set_elem_type(onnx::TensorProto::FLOAT);
  tensor->mutable_shape()->add_dim()->set_dim_param("batch");
  tensor->mutable_shape()->add_dim()->set_dim_value(features);
}

}  // namespace

std::string MakeMlpOnnx(const std::vector<int64_t>& dims, uint64_t seed) {
  std::mt19937_64 rng(seed);
  onnx::ModelProto model;
  model.set_ir_version(8);
  model.add_opset_import()->set_version(13);
  onnx::GraphProto* graph = model.mutable_graph();
  graph->set_name("mlp");
  SetValueInfo(graph->add_input(), "input", dims.front());
  std::string x = "input";
  for (size_t i = 0; i + 1 < dims.size(); ++i) {
    const std::string w = absl::StrCat("fc", i, ".weight");
    const std::string b = absl::StrCat("fc", i, ".bias");
    AddFloatInitializer(graph, w, {dims[i + 1], dims[i]}, rng,
                        1.0f / std::sqrt(static_cast<float>(dims[i])));
    AddFloatInitializer(graph, b, {dims[i + 1]}, rng, 0.1f);
    const bool last = i + 2 == dims.size();
    const std::string y = last ? "logits" : absl::StrCat("gemm", i);
    onnx::NodeProto* gemm = graph->add_node();
    gemm->set_op_type("Gemm");
    gemm->set_name(absl::StrCat("/fc", i, "/Gemm"));
    gemm->add_input(x);
    gemm->add_input(w);
    gemm->add_input(b);
    gemm->add_output(y);
    onnx::AttributeProto* trans_b = gemm->add_attribute();
    trans_b->set_name("transB");
    trans_b->set_type(onnx::AttributeProto::INT);
    trans_b->set_i(1);
    x = y;
    if (!last) {
      onnx::NodeProto* relu = graph->add_node();
      relu->set_op_type("Relu");
      relu->set_name(absl::StrCat("/relu", i));
      relu->add_input(y);
      x = absl::StrCat("relu", i);
      relu->add_output(x);
    }
  }
  SetValueInfo(graph->add_output(), "logits", dims.back());
  return model.SerializeAsString();
}

search::LabeledData MakeTeacherData(int64_t n, int64_t features,
                                    int64_t classes, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  engine::Tensor teacher({features, classes});
  for (float& v : teacher.values()) v = normal(rng);
  search::LabeledData data;
  data.inputs = engine::Tensor({n, features});
  for (float& v : data.inputs.values()) v = normal(rng);
  const engine::MatrixRM scores =
      data.inputs.AsMatrix(n, features) * teacher.AsMatrix(features, classes);
  data.labels.resize(n);
  for (int64_t i = 0; i < n; ++i) {
    Eigen::Index arg = 0;
    scores.row(i).maxCoeff(&arg);
    data.labels[i] = arg;
  }
  return data;
}

}  // namespace mixq::testing
