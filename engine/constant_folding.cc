#include "engine/constant_folding.h"

#include <algorithm>
#include <climits>
#include <cmath>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/ops_util.h"
#include "engine/tensor_proto.h"
#include "util/check.h"
#include "util/status_macros.h"

namespace mixq::engine {
namespace {

using SlotKind = Model::Impl::SlotKind;

// Integers up to this are exact in float (FoldMovement's element numbers).
constexpr size_t kMaxExactFloatInt = size_t{1} << 24;

constexpr FoldOnlyOp kFoldOnlyOps[] = {
    {"Shape", 1, 1}, {"Size", 1, 1},    {"ConstantOfShape", 1, 1},
    {"Range", 3, 3}, {"Add", 2, 2},     {"Sub", 2, 2},
    {"Mul", 2, 2},   {"Div", 2, 2},     {"Equal", 2, 2},
    {"Less", 2, 2},  {"Greater", 2, 2}, {"Where", 3, 3},
    {"Not", 1, 1},   {"Mod", 2, 2},
};

// The int64 operators the importer evaluates element-wise.
constexpr absl::string_view kIntArithmeticOps[] = {
    "Add",  "Sub",     "Mul",   "Div", "Equal",
    "Less", "Greater", "Where", "Not", "Mod"};
// Operators that only move elements: on int64 tensors, evaluated through
// their float kernel (Folder::FoldMovement).
constexpr absl::string_view kMovementOps[] = {
    "Gather",   "Slice",   "Concat",    "Unsqueeze", "Squeeze", "Reshape",
    "Identity", "Flatten", "Transpose", "Expand",    "Dropout"};

absl::Status Invalid(absl::string_view message) {
  return absl::InvalidArgumentError(message);
}

Attribute ConvertAttribute(const onnx::AttributeProto& proto) {
  Attribute attr;
  switch (proto.type()) {
    case onnx::AttributeProto::INT:
      attr.type = Attribute::Type::kInt;
      attr.i = proto.i();
      break;
    case onnx::AttributeProto::FLOAT:
      attr.type = Attribute::Type::kFloat;
      attr.f = proto.f();
      break;
    case onnx::AttributeProto::INTS:
      attr.type = Attribute::Type::kInts;
      attr.ints.assign(proto.ints().begin(), proto.ints().end());
      break;
    case onnx::AttributeProto::FLOATS:
      attr.type = Attribute::Type::kFloats;
      attr.floats.assign(proto.floats().begin(), proto.floats().end());
      break;
    case onnx::AttributeProto::STRING:
      attr.type = Attribute::Type::kString;
      attr.s = proto.s();
      break;
    default:
      break;
  }
  return attr;
}

// FoldNode's evaluation, over one FoldContext.
class Folder {
 public:
  using Slot = ImportSlot;

  explicit Folder(const FoldContext& context)
      : slots_(context.slots),
        slot_of_(context.slot_of),
        opset_(context.opset),
        batch_(context.batch),
        probe_(context.probe),
        build_config_(context.build_config) {}

  // Evaluates a node over constants (and Shape over any value): shape
  // computations, int64 arithmetic, Cast and the data-movement operators on
  // int64 tensors. Errors name the node.
  absl::StatusOr<Folded> FoldNode(const onnx::NodeProto& proto,
                                  const std::string& label) {
    const std::string& op = proto.op_type();
    const auto error = [&](absl::string_view message) {
      return Invalid(absl::StrCat("node '", label, "' (", op, "): ", message));
    };
    if (op == "DequantizeLinear") return FoldDequantize(proto, label, error);
    std::vector<const Slot*> in;
    for (int i = 0; i < proto.input_size(); ++i) {
      if (proto.input(i).empty()) {
        in.push_back(nullptr);
        continue;
      }
      const Slot& slot = slots_[slot_of_.at(proto.input(i))];
      MIXQ_RETURN_IF_ERROR(slot.usable);
      if (op != "Shape" && op != "Size" && slot.kind != SlotKind::kConstant) {
        for (const std::string& name : proto.input()) {
          const auto it = slot_of_.find(name);
          if (it != slot_of_.end() && slots_[it->second].is_int) {
            return Invalid(absl::StrCat(
                "input '", name, "' of node '", label, "' (", op,
                ") is an int64 tensor; int64 tensors are only supported in "
                "shape computations over constants"));
          }
        }
        return error(absl::StrCat(
            "input '", slot.name,
            "' is not a constant; mixq evaluates this operator only in shape "
            "computations over constants"));
      }
      in.push_back(&slot);
    }
    const bool movement =
        std::find(std::begin(kMovementOps), std::end(kMovementOps), op) !=
        std::end(kMovementOps);
    if (movement) return FoldMovement(proto, label, error);
    // The remaining operators have no optional inputs.
    for (size_t i = 0; i < in.size(); ++i) {
      if (in[i] == nullptr) {
        return error(absl::StrCat("input ", i, " is missing"));
      }
    }
    const OpConfig config = AttributeConfig(proto, label);
    if (op == "Shape") return FoldShape(config, *in[0], error);
    if (op == "Size") {
      MIXQ_ASSIGN_OR_RETURN(Folded f, FoldShape(config, *in[0], error));
      f.shape = {};
      f.ints = {NumElements(f.ints)};
      f.probe_ints = {NumElements(f.probe_ints)};
      return f;
    }
    if (op == "Cast") return FoldCast(config, *in[0], error);
    if (op == "ConstantOfShape") {
      return FoldConstantOfShape(proto, *in[0], label, error);
    }
    if (op == "Range") return FoldRange(in, error);
    for (absl::string_view name : kIntArithmeticOps) {
      if (op == name) return FoldArithmetic(config, in, error);
    }
    return error(
        "int64 inputs are only supported in shape computations (Shape, "
        "Gather, Slice, Concat, Reshape, arithmetic, ...)");
  }

  // DequantizeLinear of an integer constant (a quantized weight or bias):
  // its kernel run at import on the integers converted to float, which is
  // how ONNX defines it. The result has the input's size, so no folding
  // limit applies.
  template <typename E>
  absl::StatusOr<Folded> FoldDequantize(const onnx::NodeProto& proto,
                                        const std::string& label,
                                        const E& error) const {
    const OpSchema& schema = *FindOp(proto.op_type());
    MIXQ_ASSIGN_OR_RETURN(const OpConfig config,
                          BuildConfig(proto, label, schema.data_inputs));
    MIXQ_ASSIGN_OR_RETURN(std::unique_ptr<Kernel> kernel,
                          schema.create(config));
    const Slot& x = slots_[slot_of_.at(proto.input(0))];
    MIXQ_RETURN_IF_ERROR(x.usable);
    if (x.ints != x.probe_ints) {
      return error(
          "shape computation depends on the batch size in a way mixq cannot "
          "represent (the batch size is dequantized)");
    }
    Tensor integers(x.shape);
    for (int64_t k = 0; k < integers.size(); ++k) {
      integers.data()[k] = static_cast<float>(x.ints[k]);
    }
    const Shape* shapes[] = {&integers.shape()};
    absl::StatusOr<Shape> shape = kernel->OutputShape(shapes);
    if (!shape.ok()) {
      return Annotate(shape.status(), absl::StrCat("node '", label, "'"));
    }
    Tensor out(*shape);
    const Tensor* inputs[] = {&integers};
    kernel->Forward(inputs, &out);
    Folded f;
    f.data_type = onnx::TensorProto::FLOAT;
    f.shape = *std::move(shape);
    f.floats = out.ToVector();
    return f;
  }

  template <typename E>
  absl::StatusOr<Folded> FoldShape(const OpConfig& config, const Slot& x,
                                   const E& error) const {
    const int64_t rank = static_cast<int64_t>(x.shape.size());
    MIXQ_ASSIGN_OR_RETURN(int64_t start, config.GetInt("start", 0));
    MIXQ_ASSIGN_OR_RETURN(int64_t end, config.GetInt("end", rank));
    const auto clamp = [&](int64_t v) {
      return std::clamp<int64_t>(v < 0 ? v + rank : v, 0, rank);
    };
    start = clamp(start);
    end = std::max(start, clamp(end));
    if (!x.probe_ok) {
      return error(absl::StrCat(
          "the shape of '", x.name, "' is only known at batch ", batch_,
          "; shape computation depends on the batch size in a way mixq "
          "cannot represent"));
    }
    Folded f;
    f.is_int = true;
    f.shape = {end - start};
    f.ints.assign(x.shape.begin() + start, x.shape.begin() + end);
    f.probe_ints.assign(x.probe_shape.begin() + start,
                        x.probe_shape.begin() + end);
    return f;
  }

  template <typename E>
  absl::StatusOr<Folded> FoldCast(const OpConfig& config, const Slot& x,
                                  const E& error) const {
    MIXQ_ASSIGN_OR_RETURN(const int64_t to, config.GetInt("to", 0));
    Folded f;
    f.shape = x.shape;
    f.data_type = static_cast<int>(to);
    switch (to) {
      case onnx::TensorProto::FLOAT:
      case onnx::TensorProto::DOUBLE:
      case onnx::TensorProto::FLOAT16:
        if (!x.is_int) {
          f.floats = x.value.ToVector();
          return f;
        }
        if (x.ints != x.probe_ints) {
          return error(
              "shape computation depends on the batch size in a way mixq "
              "cannot represent (the batch size is cast to float)");
        }
        f.floats.assign(x.ints.begin(), x.ints.end());
        return f;
      case onnx::TensorProto::INT64:
      case onnx::TensorProto::INT32:
      case onnx::TensorProto::INT16:
      case onnx::TensorProto::INT8:
      case onnx::TensorProto::UINT8:
      case onnx::TensorProto::UINT16:
      case onnx::TensorProto::UINT32:
      case onnx::TensorProto::UINT64:
      case onnx::TensorProto::BOOL:
        break;
      default:
        return error(absl::StrCat("unsupported attribute value to=", to));
    }
    f.is_int = true;
    if (x.is_int) {
      f.ints = x.ints;
      f.probe_ints = x.probe_ints;
    } else {
      // Exactly representable floats convert; the rest would overflow.
      constexpr float kLimit = 9.2e18f;
      for (float v : x.value.values()) {
        if (!(std::abs(v) < kLimit)) {
          return error(absl::StrCat("cannot cast ", v, " to an integer"));
        }
        f.ints.push_back(static_cast<int64_t>(v));
      }
      f.probe_ints = f.ints;
    }
    if (to == onnx::TensorProto::BOOL) {
      for (int64_t& v : f.ints) v = v != 0;
      for (int64_t& v : f.probe_ints) v = v != 0;
    }
    return f;
  }

  template <typename E>
  absl::StatusOr<Folded> FoldConstantOfShape(const onnx::NodeProto& proto,
                                             const Slot& shape,
                                             const std::string& label,
                                             const E& error) const {
    if (!shape.is_int || shape.shape.size() != 1) {
      return error("the shape must be a 1-D int64 tensor");
    }
    if (shape.ints != shape.probe_ints) {
      return error(
          "shape computation depends on the batch size in a way mixq cannot "
          "represent (a constant tensor shaped by the batch size)");
    }
    Folded f;
    f.shape = shape.ints;
    absl::StatusOr<int64_t> n = CheckedNumElements(f.shape);
    if (!n.ok()) {
      return Annotate(n.status(), absl::StrCat("node '", label, "'"));
    }
    if (*n > kMaxFoldedElements) {
      return error("the result is too large to fold");
    }
    ConstValue value;
    value.floats = {0.0f};
    for (const onnx::AttributeProto& attr : proto.attribute()) {
      if (attr.name() != "value") continue;
      MIXQ_ASSIGN_OR_RETURN(
          value,
          ParseTensor(attr.t(), absl::StrCat("value of node '", label, "'")));
      if (value.floats.size() + value.ints.size() != 1) {
        return error("the value must have exactly one element");
      }
    }
    f.is_int = value.is_int;
    if (f.is_int) {
      f.ints.assign(*n, value.ints[0]);
      f.probe_ints = f.ints;
    } else {
      f.floats.assign(*n, value.floats[0]);
    }
    return f;
  }

  template <typename E>
  absl::StatusOr<Folded> FoldRange(const std::vector<const Slot*>& in,
                                   const E& error) const {
    for (const Slot* slot : in) {
      if (NumElements(slot->shape) != 1 || slot->is_int != in[0]->is_int) {
        return error("start, limit and delta must be scalars of one type");
      }
    }
    Folded f;
    f.is_int = in[0]->is_int;
    if (!f.is_int) {
      const float start = in[0]->value.data()[0];
      const float limit = in[1]->value.data()[0];
      const float delta = in[2]->value.data()[0];
      const double count = std::ceil((double{limit} - start) / delta);
      if (delta == 0 || !(count < kMaxFoldedElements)) {
        return error("delta is 0 or the range is too long");
      }
      for (int64_t i = 0; i < count; ++i) f.floats.push_back(start + i * delta);
      f.shape = {static_cast<int64_t>(f.floats.size())};
      return f;
    }
    const auto range = [&](const std::vector<int64_t>& start,
                           const std::vector<int64_t>& limit,
                           const std::vector<int64_t>& delta,
                           std::vector<int64_t>* out) -> absl::Status {
      if (delta[0] == 0) return error("delta is 0");
      // In 128 bits: limit - start may not fit in 64.
      const __int128 span = static_cast<__int128>(limit[0]) - start[0];
      const __int128 count = std::max<__int128>(
          0, span / delta[0] + (span % delta[0] != 0 ? 1 : 0));
      if (count > kMaxFoldedElements) return error("the range is too long");
      for (int64_t i = 0; i < count; ++i) {
        out->push_back(start[0] + i * delta[0]);
      }
      return absl::OkStatus();
    };
    MIXQ_RETURN_IF_ERROR(range(in[0]->ints, in[1]->ints, in[2]->ints, &f.ints));
    MIXQ_RETURN_IF_ERROR(range(in[0]->probe_ints, in[1]->probe_ints,
                               in[2]->probe_ints, &f.probe_ints));
    if (f.ints.size() != f.probe_ints.size()) {
      return error(
          "shape computation depends on the batch size in a way mixq cannot "
          "represent (a range whose length is the batch size)");
    }
    f.shape = {static_cast<int64_t>(f.ints.size())};
    return f;
  }

  // Element-wise int64 operators with numpy broadcasting, evaluated at both
  // batches. Mod's remainder has the divisor's sign (Python's %), or with
  // fmod=1 the dividend's (C's fmod), as ONNX defines them.
  template <typename E>
  absl::StatusOr<Folded> FoldArithmetic(const OpConfig& config,
                                        const std::vector<const Slot*>& in,
                                        const E& error) const {
    const std::string& op = config.op_type;
    MIXQ_ASSIGN_OR_RETURN(const int64_t fmod, config.GetInt("fmod", 0));
    if (fmod != 0 && fmod != 1) {
      return error(absl::StrCat("unsupported attribute value fmod=", fmod));
    }
    const bool any_float = std::any_of(
        in.begin(), in.end(), [](const Slot* s) { return !s->is_int; });
    if (any_float) return FoldFloatLogic(op, in, error);
    Shape shape;
    std::vector<std::vector<int64_t>> index;
    MIXQ_RETURN_IF_ERROR(BroadcastInputs(in, error, &shape, &index));
    const int64_t n = NumElements(shape);
    Folded f;
    f.is_int = true;
    f.shape = shape;
    for (bool probe : {false, true}) {
      std::vector<int64_t>& out = probe ? f.probe_ints : f.ints;
      out.resize(n);
      for (int64_t j = 0; j < n; ++j) {
        const auto arg = [&](size_t k) {
          return (probe ? in[k]->probe_ints : in[k]->ints)[index[k][j]];
        };
        const int64_t a = arg(0);
        if (op == "Not") {
          out[j] = a == 0;
          continue;
        }
        const int64_t b = arg(1);
        bool overflow = false;
        if (op == "Add") {
          overflow = __builtin_add_overflow(a, b, &out[j]);
        } else if (op == "Sub") {
          overflow = __builtin_sub_overflow(a, b, &out[j]);
        } else if (op == "Mul") {
          overflow = __builtin_mul_overflow(a, b, &out[j]);
        } else if (op == "Div" || op == "Mod") {
          if (b == 0) return error("integer division by zero");
          overflow = a == INT64_MIN && b == -1;
          if (!overflow) out[j] = op == "Div" ? a / b : a % b;
          if (op == "Mod" && fmod == 0 && out[j] != 0 &&
              (out[j] < 0) != (b < 0)) {
            out[j] += b;
          }
        } else if (op == "Equal") {
          out[j] = a == b;
        } else if (op == "Less") {
          out[j] = a < b;
        } else if (op == "Greater") {
          out[j] = a > b;
        } else {  // Where
          out[j] = a != 0 ? b : arg(2);
        }
        if (overflow) return error("int64 overflow");
      }
    }
    return f;
  }

  // Comparisons of float constants (Equal, Less, Greater -> bool) and Where
  // choosing between float constants, with numpy broadcasting: exporters
  // write masked_fill on a constant mask so (Swin's shifted-window mask,
  // `mask.masked_fill(mask != 0, -100)`). Float constants are the same at
  // every batch; a condition that depends on the batch is refused.
  template <typename E>
  absl::StatusOr<Folded> FoldFloatLogic(const std::string& op,
                                        const std::vector<const Slot*>& in,
                                        const E& error) const {
    const bool is_where = op == "Where";
    const bool is_comparison = op == "Equal" || op == "Less" || op == "Greater";
    if (!is_where && !is_comparison) {
      return error("only int64 constants are evaluated at import");
    }
    // Where's condition is a bool (int64 here), its other inputs floats;
    // a comparison's inputs are both floats.
    for (size_t k = 0; k < in.size(); ++k) {
      const bool want_int = is_where && k == 0;
      if (in[k]->is_int != want_int) {
        return error("mixes int64 and float inputs");
      }
    }
    if (is_where && in[0]->ints != in[0]->probe_ints) {
      return error("the condition depends on the batch size");
    }
    Shape shape;
    std::vector<std::vector<int64_t>> index;
    MIXQ_RETURN_IF_ERROR(BroadcastInputs(in, error, &shape, &index));
    const int64_t n = NumElements(shape);
    const auto value = [&](size_t k, int64_t j) {
      return in[k]->value.data()[index[k][j]];
    };
    Folded f;
    f.shape = shape;
    if (is_where) {
      f.data_type = onnx::TensorProto::FLOAT;
      f.floats.resize(n);
      for (int64_t j = 0; j < n; ++j) {
        f.floats[j] = in[0]->ints[index[0][j]] != 0 ? value(1, j) : value(2, j);
      }
      return f;
    }
    f.is_int = true;
    f.data_type = onnx::TensorProto::BOOL;
    f.ints.resize(n);
    for (int64_t j = 0; j < n; ++j) {
      const float a = value(0, j);
      const float b = value(1, j);
      f.ints[j] = op == "Equal" ? a == b : op == "Less" ? a < b : a > b;
    }
    f.probe_ints = f.ints;
    return f;
  }

  // The shape `in` broadcast together to (at most kMaxFoldedElements), and
  // per input the element each output element reads; errors as `error`.
  template <typename E>
  static absl::Status BroadcastInputs(
      const std::vector<const Slot*>& in, const E& error, Shape* shape,
      std::vector<std::vector<int64_t>>* index) {
    shape->clear();
    for (const Slot* slot : in) {
      absl::StatusOr<Shape> s = BroadcastShapes(*shape, slot->shape);
      if (!s.ok()) return error(s.status().message());
      *shape = *std::move(s);
    }
    MIXQ_ASSIGN_OR_RETURN(const int64_t n, CheckedNumElements(*shape));
    if (n > kMaxFoldedElements) return error("the result is too large to fold");
    index->clear();
    for (const Slot* slot : in) {
      index->push_back(BroadcastIndex(slot->shape, *shape));
    }
    return absl::OkStatus();
  }

  // Data-movement operators (Gather, Slice, Concat, ...) on int64 tensors run
  // their float kernel on the element numbers of the inputs and then move
  // the int64 values (at both batches) where the numbers went: one
  // implementation of their semantics serves both types.
  template <typename E>
  absl::StatusOr<Folded> FoldMovement(const onnx::NodeProto& proto,
                                      const std::string& label,
                                      const E& error) const {
    const OpSchema& schema = *FindOp(proto.op_type());
    const int num_data = std::min(proto.input_size(), schema.data_inputs);
    MIXQ_ASSIGN_OR_RETURN(const OpConfig config,
                          BuildConfig(proto, label, num_data));
    MIXQ_ASSIGN_OR_RETURN(std::unique_ptr<Kernel> kernel,
                          schema.create(config));
    std::vector<Tensor> numbers;
    std::vector<int64_t> ints;
    std::vector<int64_t> probe_ints;
    // The moved values keep their element type when the inputs share one.
    std::optional<int> data_type;
    for (int i = 0; i < num_data; ++i) {
      if (proto.input(i).empty()) {
        return error(absl::StrCat("input ", i, " is missing"));
      }
      const Slot& slot = slots_[slot_of_.at(proto.input(i))];
      if (!slot.is_int) return error("mixes int64 and float inputs");
      if (!data_type) data_type = slot.data_type;
      if (*data_type != slot.data_type) {
        data_type = onnx::TensorProto::UNDEFINED;
      }
      Tensor t(slot.shape);
      for (int64_t k = 0; k < t.size(); ++k) {
        t.data()[k] = static_cast<float>(ints.size() + k + 1);
      }
      ints.insert(ints.end(), slot.ints.begin(), slot.ints.end());
      probe_ints.insert(probe_ints.end(), slot.probe_ints.begin(),
                        slot.probe_ints.end());
      if (ints.size() >= kMaxExactFloatInt) {
        return error("the int64 inputs are too large to evaluate at import");
      }
      numbers.push_back(std::move(t));
    }
    std::vector<const Shape*> shapes;
    std::vector<const Tensor*> pointers;
    for (const Tensor& t : numbers) {
      shapes.push_back(&t.shape());
      pointers.push_back(&t);
    }
    absl::StatusOr<Shape> shape = kernel->OutputShape(shapes);
    if (!shape.ok()) {
      return Annotate(shape.status(), absl::StrCat("node '", label, "'"));
    }
    MIXQ_ASSIGN_OR_RETURN(const int64_t n, CheckedNumElements(*shape));
    if (n > kMaxFoldedElements) return error("the result is too large to fold");
    Tensor moved(*shape);
    kernel->Forward(pointers, &moved);
    Folded f;
    f.is_int = true;
    f.data_type = data_type.value_or(onnx::TensorProto::UNDEFINED);
    f.shape = *std::move(shape);
    for (float v : moved.values()) {
      const int64_t k = static_cast<int64_t>(v) - 1;
      MIXQ_CHECK(k >= 0 && k < static_cast<int64_t>(ints.size()));
      f.ints.push_back(ints[k]);
      f.probe_ints.push_back(probe_ints[k]);
    }
    return f;
  }

 private:
  OpConfig AttributeConfig(const onnx::NodeProto& proto,
                           const std::string& label) const {
    return engine::AttributeConfig(proto, label, opset_);
  }
  absl::StatusOr<OpConfig> BuildConfig(const onnx::NodeProto& proto,
                                       const std::string& label,
                                       int num_data) const {
    return build_config_(proto, label, num_data);
  }

  const std::vector<ImportSlot>& slots_;
  const absl::flat_hash_map<std::string, int>& slot_of_;
  const int64_t opset_;
  const int64_t batch_;
  const int64_t probe_;
  const FoldContext::ConfigBuilder& build_config_;
};

}  // namespace

const FoldOnlyOp* FindFoldOnlyOp(absl::string_view op_type) {
  for (const FoldOnlyOp& op : kFoldOnlyOps) {
    if (op.op_type == op_type) return &op;
  }
  return nullptr;
}

OpConfig AttributeConfig(const onnx::NodeProto& proto, const std::string& label,
                         int64_t opset) {
  OpConfig config;
  config.op_type = proto.op_type();
  config.node_name = label;
  config.opset = opset;
  for (const onnx::AttributeProto& attr : proto.attribute()) {
    config.attributes[attr.name()] = ConvertAttribute(attr);
  }
  return config;
}

absl::StatusOr<Folded> FoldNode(const onnx::NodeProto& proto,
                                const std::string& label,
                                const FoldContext& context) {
  return Folder(context).FoldNode(proto, label);
}

}  // namespace mixq::engine
