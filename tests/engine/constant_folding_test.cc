// The import-time interpreter (engine/constant_folding.h) through the
// importer: the shape sub-graphs exporters emit are folded, with the batch
// size flowing through them symbolically (a multiple of the batch in a
// Reshape, Expand or Tile shape), and what it cannot represent is refused by
// node name.
#include <cstdint>
#include <memory>
#include <numeric>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/model.h"
#include "engine/ops.h"
#include "engine/tensor.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "onnx/onnx_pb.h"
#include "tests/support/kernel_testing.h"
#include "tests/support/model_testing.h"
#include "tests/support/onnx_builder.h"

namespace mixq::engine {
namespace {

using ::mixq::testing::BuildOrDie;
using ::mixq::testing::ExpectInvalid;
using ::mixq::testing::Iota;
using ::mixq::testing::OnnxBuilder;
using ::mixq::testing::RunModel;
using ::mixq::testing::SetInt;
using ::mixq::testing::SetInts;
using ::mixq::testing::SetTensor;
using ::testing::ElementsAre;

// `features`] holding the input's values in order (a flatten).
void ExpectFlattensAtAnyBatch(const Model& model, int64_t features) {
  for (int64_t batch : {1, 5}) {
    Shape shape = model.input_shape();
    shape[0] = batch;
    const Tensor x = Iota(shape);
    absl::StatusOr<Tensor> y = RunModel(model, x);
    ASSERT_TRUE(y.ok()) << y.status();
    EXPECT_THAT(y->shape(), ElementsAre(batch, features)) << "batch " << batch;
    EXPECT_EQ(y->values(), x.values()) << "batch " << batch;
  }
}

// x.view(x.size(0), -1) as torch.onnx.export writes it with dynamic axes:
// Shape -> Gather(0) -> Unsqueeze -> Concat([b], [-1]) -> Reshape.
OnnxBuilder ViewFlattenGraph(int64_t opset, bool batch_symbolic = true) {
  OnnxBuilder b(opset);
  b.Input("x", {batch_symbolic ? -1 : 1, 2, 3}).Output("y");
  b.Node("Shape", {"x"}, {"shape"}, "shape");
  b.IntConstant("zero", {0}, /*scalar=*/true);
  b.Node("Gather", {"shape", "zero"}, {"batch"}, "gather");
  if (opset < 13) {
    SetInts(b.Node("Unsqueeze", {"batch"}, {"batch1"}, "unsqueeze"), "axes",
            {0});
  } else {
    b.IntConstant("axes", {0});
    b.Node("Unsqueeze", {"batch", "axes"}, {"batch1"}, "unsqueeze");
  }
  b.IntConstant("minus_one", {-1});
  SetInt(b.Node("Concat", {"batch1", "minus_one"}, {"target"}, "concat"),
         "axis", 0);
  b.Node("Reshape", {"x", "target"}, {"y"}, "reshape");
  return b;
}

TEST(BatchFoldingTest, ViewFlattenRunsAtAnyBatch) {
  for (int64_t opset : {11, 13, 17}) {
    SCOPED_TRACE(absl::StrCat("opset ", opset));
    std::unique_ptr<Model> model = BuildOrDie(ViewFlattenGraph(opset));
    ASSERT_NE(model, nullptr);
    EXPECT_THAT(model->output_shape(), ElementsAre(1, 6));
    ExpectFlattensAtAnyBatch(*model, 6);
  }
}

// Without dynamic axes the exporter writes the example's batch as a literal
// (input declared [1, 2, 3], Reshape to [1, -1]); mixq still runs any batch.
TEST(BatchFoldingTest, LiteralExampleBatchInReshapeIsTheBatch) {
  OnnxBuilder b;
  b.Input("x", {1, 2, 3}).Output("y");
  b.IntInitializer("target", {1, -1});
  b.Node("Reshape", {"x", "target"}, {"y"});
  std::unique_ptr<Model> model = BuildOrDie(b);
  ASSERT_NE(model, nullptr);
  ExpectFlattensAtAnyBatch(*model, 6);
  // The folded variant of ViewFlattenGraph with a fixed input.
  model = BuildOrDie(ViewFlattenGraph(13, /*batch_symbolic=*/false));
  ASSERT_NE(model, nullptr);
  ExpectFlattensAtAnyBatch(*model, 6);
}

// Shape(start, end) (opset 15), Slice of a shape, products of the
// non-batch dims and a Cast: x.view(x.size(0), x.size(1) * x.size(2)).
TEST(BatchFoldingTest, SliceMulCastOfShapes) {
  OnnxBuilder b(15);
  b.Input("x", {-1, 2, 3}).Output("y");
  onnx::NodeProto* head = b.Node("Shape", {"x"}, {"head"});
  SetInt(head, "end", 1);
  b.Node("Shape", {"x"}, {"shape"});
  b.IntInitializer("one", {1});
  b.IntInitializer("two", {2});
  b.IntInitializer("three", {3});
  b.Node("Slice", {"shape", "one", "two"}, {"c"});
  b.Node("Slice", {"shape", "two", "three"}, {"w"});
  b.Node("Mul", {"c", "w"}, {"cw"});
  SetInt(b.Node("Cast", {"cw"}, {"cw64"}), "to", onnx::TensorProto::INT64);
  SetInt(b.Node("Concat", {"head", "cw64"}, {"target"}), "axis", 0);
  b.Node("Reshape", {"x", "target"}, {"y"});
  std::unique_ptr<Model> model = BuildOrDie(b);
  ASSERT_NE(model, nullptr);
  ExpectFlattensAtAnyBatch(*model, 6);
}

// torch's opset 9+ export of `x.reshape(b, -1)` through Where(Equal(t, 0),
// ...), and Range/ConstantOfShape on constants.
TEST(BatchFoldingTest, WhereEqualRangeConstantOfShape) {
  OnnxBuilder b(13);
  b.Input("x", {-1, 2, 3}).Output("y");
  b.Node("Shape", {"x"}, {"shape"});
  b.IntConstant("zero", {0}, true);
  b.Node("Gather", {"shape", "zero"}, {"batch"});
  b.IntConstant("axes", {0});
  b.Node("Unsqueeze", {"batch", "axes"}, {"batch1"});
  b.IntConstant("minus_one", {-1});
  SetInt(b.Node("Concat", {"batch1", "minus_one"}, {"t"}), "axis", 0);
  b.IntConstant("zeros", {0, 0});
  b.Node("Equal", {"t", "zeros"}, {"is_zero"});
  b.IntConstant("ones", {1, 1});
  b.Node("Where", {"is_zero", "ones", "t"}, {"target"});
  b.Node("Reshape", {"x", "target"}, {"flat"});
  // + Cast(Range(0, 6, 1)) + ConstantOfShape([6]) of 0.5: 0.5, 1.5, ...
  b.IntConstant("r0", {0}, true);
  b.IntConstant("r6", {6}, true);
  b.IntConstant("r1", {1}, true);
  b.Node("Range", {"r0", "r6", "r1"}, {"range"});
  SetInt(b.Node("Cast", {"range"}, {"range_f"}), "to",
         onnx::TensorProto::FLOAT);
  b.IntConstant("six", {6});
  onnx::TensorProto* half =
      SetTensor(b.Node("ConstantOfShape", {"six"}, {"halves"}));
  OnnxBuilder::FillFloat(half, "", {1}, {0.5f});
  b.Node("Add", {"range_f", "halves"}, {"offsets"});
  b.Node("Add", {"flat", "offsets"}, {"y"});
  absl::StatusOr<std::unique_ptr<Model>> model = b.Build();
  ASSERT_TRUE(model.ok()) << model.status();
  for (int64_t batch : {1, 5}) {
    absl::StatusOr<Tensor> y = RunModel(**model, Tensor({batch, 2, 3}));
    ASSERT_TRUE(y.ok()) << y.status();
    ASSERT_THAT(y->shape(), ElementsAre(batch, 6));
    for (int64_t i = 0; i < y->size(); ++i) {
      EXPECT_EQ(y->data()[i], 0.5f + i % 6) << i;
    }
  }
}

// tf2onnx computes shapes in int32: NHWC input -> Transpose to NCHW ->
// Shape -> Cast(INT32) -> Slice -> Concat with an int32 constant -> Cast(INT64)
// -> Reshape.
TEST(BatchFoldingTest, Tf2OnnxStyleInt32ShapeComputation) {
  OnnxBuilder b(13);
  b.Input("x", {-1, 3, 3, 2}).Output("y");
  SetInts(b.Node("Transpose", {"x"}, {"nchw"}), "perm", {0, 3, 1, 2});
  b.Node("Shape", {"nchw"}, {"shape"});
  SetInt(b.Node("Cast", {"shape"}, {"shape32"}), "to",
         onnx::TensorProto::INT32);
  b.IntInitializer("start", {0});
  b.IntInitializer("end", {1});
  b.Node("Slice", {"shape32", "start", "end"}, {"batch32"});
  onnx::TensorProto* minus_one = b.graph().add_initializer();
  minus_one->set_name("minus_one32");
  minus_one->set_data_type(onnx::TensorProto::INT32);
  minus_one->add_dims(1);
  minus_one->add_int32_data(-1);
  SetInt(b.Node("Concat", {"batch32", "minus_one32"}, {"target32"}), "axis", 0);
  SetInt(b.Node("Cast", {"target32"}, {"target"}), "to",
         onnx::TensorProto::INT64);
  b.Node("Reshape", {"nchw", "target"}, {"y"});
  std::unique_ptr<Model> model = BuildOrDie(b);
  ASSERT_NE(model, nullptr);
  for (int64_t batch : {1, 5}) {
    const Tensor x = Iota({batch, 3, 3, 2});
    absl::StatusOr<Tensor> y = RunModel(*model, x);
    ASSERT_TRUE(y.ok()) << y.status();
    ASSERT_THAT(y->shape(), ElementsAre(batch, 18));
    // y[n][c * 9 + h * 3 + w] = x[n][h][w][c]
    EXPECT_EQ(y->data()[(batch - 1) * 18 + 9 + 4],
              x.data()[(batch - 1) * 18 + (1 * 3 + 1) * 2 + 1]);
  }
}

// Expand to [b, 4, 3] with b from Shape: the batch flows into Expand too.
TEST(BatchFoldingTest, ExpandToTheBatch) {
  OnnxBuilder b(13);
  b.Input("x", {-1, 1, 3}).Output("y");
  b.Node("Shape", {"x"}, {"shape"});
  b.IntInitializer("start", {0});
  b.IntInitializer("end", {1});
  b.Node("Slice", {"shape", "start", "end"}, {"batch1"});
  b.IntConstant("rest", {4, 3});
  SetInt(b.Node("Concat", {"batch1", "rest"}, {"target"}), "axis", 0);
  b.Node("Expand", {"x", "target"}, {"y"});
  std::unique_ptr<Model> model = BuildOrDie(b);
  ASSERT_NE(model, nullptr);
  for (int64_t batch : {1, 5}) {
    const Tensor x = Iota({batch, 1, 3});
    absl::StatusOr<Tensor> y = RunModel(*model, x);
    ASSERT_TRUE(y.ok()) << y.status();
    ASSERT_THAT(y->shape(), ElementsAre(batch, 4, 3));
    EXPECT_EQ(y->data()[(batch - 1) * 12 + 11], x.data()[(batch - 1) * 3 + 2]);
  }
}

// Arithmetic on the batch that mixq cannot carry symbolically is an error
// naming the node, never a constant folded at batch 1.
// A graph whose shapes only hold at the batch its input declares runs at that
// batch and no other, rather than at others with a folded wrong shape.
TEST(BatchFoldingTest, GraphValidOnlyAtItsDeclaredBatchIsPinned) {
  OnnxBuilder b;
  b.Input("x", {2, 3, 4}).Output("y");
  b.IntInitializer("target", {24});
  b.Node("Reshape", {"x", "target"}, {"y"});
  std::unique_ptr<Model> model = BuildOrDie(b);
  ASSERT_NE(model, nullptr);
  absl::StatusOr<Tensor> y = RunModel(*model, Iota({2, 3, 4}));
  ASSERT_TRUE(y.ok()) << y.status();
  EXPECT_THAT(y->shape(), ElementsAre(24));
  ExpectInvalid(RunModel(*model, Iota({4, 3, 4})).status(),
                "only runs at batch 2");
}

// A ViT's `cls_token.repeat(batch, 1, 1)`: Tile repeats that hold the batch.
TEST(BatchFoldingTest, ParameterRepeatedToTheBatch) {
  OnnxBuilder b(13);
  b.Input("x", {-1, 2, 3}).Output("y");
  b.Initializer("token", {1, 1, 3}, {1, 2, 3});
  b.Node("Shape", {"x"}, {"shape"});
  b.IntInitializer("start", {0});
  b.IntInitializer("end", {1});
  b.Node("Slice", {"shape", "start", "end"}, {"batch1"});
  b.IntConstant("ones", {1, 1});
  SetInt(b.Node("Concat", {"batch1", "ones"}, {"repeats"}), "axis", 0);
  b.Node("Tile", {"token", "repeats"}, {"tokens"});
  SetInt(b.Node("Concat", {"tokens", "x"}, {"y"}), "axis", 1);
  std::unique_ptr<Model> model = BuildOrDie(b);
  ASSERT_NE(model, nullptr);
  for (int64_t batch : {1, 4}) {
    absl::StatusOr<Tensor> y = RunModel(*model, Iota({batch, 2, 3}));
    ASSERT_TRUE(y.ok()) << y.status();
    ASSERT_THAT(y->shape(), ElementsAre(batch, 3, 3));
    EXPECT_EQ(y->data()[(batch - 1) * 9 + 2], 3.0f);
  }
}

// Arithmetic that is not a multiple of the batch (batch squared, batch + 1,
// batch - 1, batch / 2) cannot be carried symbolically: an error naming the
// node, never a constant folded at batch 1.
TEST(BatchFoldingTest, UnrepresentableBatchArithmeticIsAnError) {
  struct Case {
    std::string op;
    bool by_itself;  // the batch times itself, else by k
    int64_t k;
  };
  for (const Case& c : {Case{"Mul", true, 0}, Case{"Sub", false, 1},
                        Case{"Add", false, 1}, Case{"Div", false, 2}}) {
    SCOPED_TRACE(c.op);
    OnnxBuilder b(13);
    b.Input("x", {-1, 6}).Output("y");
    b.Node("Shape", {"x"}, {"shape"});
    b.IntInitializer("start", {0});
    b.IntInitializer("end", {1});
    b.Node("Slice", {"shape", "start", "end"}, {"batch1"});
    b.IntInitializer("k", {c.k});
    b.Node(c.op, {"batch1", c.by_itself ? "batch1" : "k"}, {"scaled"},
           "scale_batch");
    b.IntConstant("minus_one", {-1});
    SetInt(b.Node("Concat", {"scaled", "minus_one"}, {"target"}), "axis", 0);
    b.Node("Reshape", {"x", "target"}, {"y"});
    const absl::Status status = b.Build().status();
    ExpectInvalid(status, "node 'scale_batch'");
    ExpectInvalid(status, "shape computation depends on the batch size");
  }
}

// nn.MultiheadAttention's `view(T, batch * heads, D / heads)`: a multiple of
// the batch flows through Mul into a Reshape, and back through a second
// Reshape whose data carries the batch only as batch x heads.
TEST(BatchFoldingTest, BatchTimesHeadsReshapesAtAnyBatch) {
  constexpr int64_t kHeads = 3;
  OnnxBuilder b(13);
  b.Input("x", {-1, 2, 6}).Output("y");
  b.Node("Shape", {"x"}, {"shape"});
  b.IntConstant("zero", {0}, true);
  b.Node("Gather", {"shape", "zero"}, {"batch"});
  b.IntConstant("heads", {kHeads}, true);
  b.Node("Mul", {"batch", "heads"}, {"batch_heads"});
  b.IntConstant("axes", {0});
  b.Node("Unsqueeze", {"batch_heads", "axes"}, {"bh1"});
  b.IntConstant("rest", {2, 2});
  SetInt(b.Node("Concat", {"bh1", "rest"}, {"split_target"}), "axis", 0);
  b.Node("Reshape", {"x", "split_target"}, {"split"});
  SetInts(b.Node("Transpose", {"split"}, {"swapped"}), "perm", {0, 2, 1});
  // Back to [batch, 12] with batch = (batch x heads) / heads.
  b.Node("Shape", {"swapped"}, {"swapped_shape"});
  b.Node("Gather", {"swapped_shape", "zero"}, {"bh"});
  b.Node("Div", {"bh", "heads"}, {"batch_again"});
  b.Node("Unsqueeze", {"batch_again", "axes"}, {"b1"});
  b.IntConstant("minus_one", {-1});
  SetInt(b.Node("Concat", {"b1", "minus_one"}, {"merge_target"}), "axis", 0);
  b.Node("Reshape", {"swapped", "merge_target"}, {"y"});
  std::unique_ptr<Model> model = BuildOrDie(b);
  ASSERT_NE(model, nullptr);
  for (int64_t batch : {1, 2, 5}) {
    const Tensor x = Iota({batch, 2, 6});
    absl::StatusOr<Tensor> y = RunModel(*model, x);
    ASSERT_TRUE(y.ok()) << y.status();
    ASSERT_THAT(y->shape(), ElementsAre(batch, 12));
    // Each [2, 2] block of x is transposed: y[n][4 * h + 1] = x[n][4 * h + 2].
    const int64_t last = (batch - 1) * 12;
    EXPECT_EQ(y->data()[last + 4 * 2 + 1], x.data()[last + 4 * 2 + 2]);
  }
}

// A ViT's class token [1, 1, D] expanded to [batch, 1, D]: the data of the
// Expand carries no batch, so the batch is read from the graph input.
TEST(BatchFoldingTest, ParameterExpandedToTheBatch) {
  OnnxBuilder b(13);
  b.Input("x", {-1, 3}).Output("y");
  b.Initializer("token", {1, 3}, {1, 2, 3});
  b.Node("Shape", {"x"}, {"shape"});
  b.IntInitializer("start", {0});
  b.IntInitializer("end", {1});
  b.Node("Slice", {"shape", "start", "end"}, {"batch1"});
  b.IntConstant("rest", {3});
  SetInt(b.Node("Concat", {"batch1", "rest"}, {"target"}), "axis", 0);
  b.Node("Expand", {"token", "target"}, {"tokens"});
  b.Node("Add", {"x", "tokens"}, {"y"});
  std::unique_ptr<Model> model = BuildOrDie(b);
  ASSERT_NE(model, nullptr);
  for (int64_t batch : {1, 4}) {
    absl::StatusOr<Tensor> y = RunModel(*model, Tensor({batch, 3}));
    ASSERT_TRUE(y.ok()) << y.status();
    ASSERT_THAT(y->shape(), ElementsAre(batch, 3));
    EXPECT_EQ(y->data()[(batch - 1) * 3 + 2], 3.0f);
  }
}

TEST(BatchFoldingTest, Int64OverflowIsAnError) {
  OnnxBuilder b(13);
  b.Input("x", {-1, 6}).Output("y");
  b.IntInitializer("big", {INT64_MAX / 2 + 1});
  b.Node("Add", {"big", "big"}, {"sum"}, "sum");
  b.Node("Reshape", {"x", "sum"}, {"y"});
  ExpectInvalid(b.Build().status(), "node 'sum' (Add): int64 overflow");
}

// A constant shaped by the batch (ConstantOfShape of a run-time Shape, as
// nn.TransformerEncoder's key padding mask exports) runs as an Expand of its
// value, at every batch.
TEST(BatchFoldingTest, BatchShapedConstantRunsAtEveryBatch) {
  OnnxBuilder b(13);
  b.Input("x", {-1, 3}).Output("y");
  b.Node("Shape", {"x"}, {"shape"});
  onnx::NodeProto* fill =
      b.Node("ConstantOfShape", {"shape"}, {"halves"}, "halves");
  onnx::AttributeProto* value = fill->add_attribute();
  value->set_name("value");
  value->set_type(onnx::AttributeProto::TENSOR);
  OnnxBuilder::FillFloat(value->mutable_t(), "", {1}, {0.5f});
  b.Node("Add", {"x", "halves"}, {"y"});
  std::unique_ptr<Model> model = BuildOrDie(b);
  ASSERT_NE(model, nullptr);
  for (int64_t batch : {1, 4}) {
    const Tensor x = Iota({batch, 3});
    absl::StatusOr<Tensor> y = RunModel(*model, x);
    ASSERT_TRUE(y.ok()) << y.status();
    ASSERT_EQ(y->shape(), x.shape());
    for (int64_t i = 0; i < x.size(); ++i) {
      EXPECT_EQ(y->data()[i], x.data()[i] + 0.5f) << "batch " << batch;
    }
  }
}

// Batch-dependent in a way that is no multiple of the batch: refused.
TEST(BatchFoldingTest, ConstantShapedByBatchPlusOneIsAnError) {
  OnnxBuilder b(13);
  b.Input("x", {-1, 3}).Output("y");
  b.Node("Shape", {"x"}, {"shape"});
  b.IntConstant("one", {1, 0});
  b.Node("Add", {"shape", "one"}, {"grown"});
  b.Node("ConstantOfShape", {"grown"}, {"zeros"}, "zeros");
  b.Node("ReduceSum", {"zeros"}, {"y"});
  const absl::Status status = b.Build().status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
}

// The batch may only go where a kernel can re-read it (Reshape, Expand).
TEST(BatchFoldingTest, BatchAsAnIndexIsAnError) {
  OnnxBuilder b(13);
  b.Input("x", {-1, 8}).Output("y");
  b.Node("Shape", {"x"}, {"shape"});
  b.IntConstant("zero", {0});
  b.Node("Gather", {"shape", "zero"}, {"batch1"});
  b.Node("Gather", {"x", "batch1"}, {"y"}, "pick");
  ExpectInvalid(b.Build().status(), "node 'pick'");
}

// A shape that is constant (no batch involved) folds to a plain constant,
// even when computed from the shape of a batch-dependent tensor.
TEST(BatchFoldingTest, NonBatchDimsOfShapesAreConstants) {
  OnnxBuilder b(13);
  b.Input("x", {-1, 2, 3}).Output("y");
  b.Node("Shape", {"x"}, {"shape"});
  b.IntConstant("idx", {2, 1});
  b.Node("Gather", {"shape", "idx"}, {"dims"});  // [3, 2]
  b.IntConstant("minus_one", {-1});
  SetInt(b.Node("Concat", {"minus_one", "dims"}, {"target"}), "axis", 0);
  b.Node("Reshape", {"x", "target"}, {"y"});
  std::unique_ptr<Model> model = BuildOrDie(b);
  ASSERT_NE(model, nullptr);
  absl::StatusOr<Tensor> y = RunModel(*model, Iota({4, 2, 3}));
  ASSERT_TRUE(y.ok()) << y.status();
  EXPECT_THAT(y->shape(), ElementsAre(4, 3, 2));
}

TEST(BatchFoldingTest, ConstantNodeValueForms) {
  OnnxBuilder b(13);
  b.Input("x", {-1, 4}).Output("y");
  onnx::NodeProto* ints = b.Node("Constant", {}, {"target"});
  onnx::AttributeProto* attr = ints->add_attribute();
  attr->set_name("value_ints");
  attr->set_type(onnx::AttributeProto::INTS);
  attr->add_ints(0);
  attr->add_ints(2);
  attr->add_ints(2);
  b.Node("Reshape", {"x", "target"}, {"r"});
  onnx::NodeProto* f = b.Node("Constant", {}, {"half"});
  attr = f->add_attribute();
  attr->set_name("value_float");
  attr->set_type(onnx::AttributeProto::FLOAT);
  attr->set_f(0.5f);
  b.Node("Add", {"r", "half"}, {"y"});
  std::unique_ptr<Model> model = BuildOrDie(b);
  ASSERT_NE(model, nullptr);
  absl::StatusOr<Tensor> y = RunModel(*model, Iota({3, 4}));
  ASSERT_TRUE(y.ok()) << y.status();
  EXPECT_THAT(y->shape(), ElementsAre(3, 2, 2));
  EXPECT_EQ(y->data()[11], 11.5f);
}

}  // namespace
}  // namespace mixq::engine
