// ScatterND with constant indices and updates: a copy of the data with the
// slices the indices address replaced by (reduction "none"), added to ("add")
// or multiplied by ("mul") the updates. Exporters write a slice assignment
// (`mask[a:b, c:d] = k`, as Swin's shifted-window mask) as ScatterND on a
// constant, which the importer then folds; on a runtime tensor the gradient
// flows to the data (the updates are constants, without one).
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "engine/ops.h"
#include "engine/ops_util.h"

namespace mixq::engine {
namespace {

enum class Reduction { kNone, kAdd, kMul };

class ScatterNdKernel : public Kernel {
 public:
  // `indices` holds `tuple_size` coordinates per slice, `indices_shape`
  // without its last dim gives the slices' layout; `updates` is constant.
  ScatterNdKernel(std::vector<int64_t> indices, Shape slices_shape,
                  int64_t tuple_size, Tensor updates, Reduction reduction)
      : indices_(std::move(indices)),
        slices_shape_(std::move(slices_shape)),
        tuple_size_(tuple_size),
        updates_(std::move(updates)),
        reduction_(reduction) {}

  absl::StatusOr<Shape> OutputShape(
      absl::Span<const Shape* const> inputs) const override {
    const Shape& data = *inputs[0];
    if (static_cast<int64_t>(data.size()) < tuple_size_) {
      return ShapeError("ScatterND",
                        absl::StrCat("indices address ", tuple_size_,
                                     " dims of data ", ShapeToString(data)));
    }
    Shape expected = slices_shape_;
    expected.insert(expected.end(), data.begin() + tuple_size_, data.end());
    if (expected != updates_.shape()) {
      return ShapeError(
          "ScatterND", absl::StrCat("updates ", ShapeToString(updates_.shape()),
                                    " must be ", ShapeToString(expected),
                                    " for data ", ShapeToString(data)));
    }
    for (size_t i = 0; i < indices_.size(); ++i) {
      const int64_t dim = data[i % tuple_size_];
      if (indices_[i] < -dim || indices_[i] >= dim) {
        return ShapeError("ScatterND",
                          absl::StrCat("index ", indices_[i],
                                       " is out of range for a dim of ", dim,
                                       " in data ", ShapeToString(data)));
      }
    }
    return data;
  }

  void Forward(absl::Span<const Tensor* const> inputs,
               Tensor* output) const override {
    output->flat() = inputs[0]->flat();
    const Layout layout = GetLayout(inputs[0]->shape());
    for (size_t i = 0; i < layout.offsets.size(); ++i) {
      auto out = output->flat().segment(layout.offsets[i], layout.slice);
      const auto update =
          updates_.flat().segment(i * layout.slice, layout.slice);
      switch (reduction_) {
        case Reduction::kNone:
          out = update;
          break;
        case Reduction::kAdd:
          out += update;
          break;
        case Reduction::kMul:
          out *= update;
          break;
      }
    }
  }

  // d out / d data is 0 where a slice was replaced, 1 where updates were
  // added, and the product of the updates where they multiplied.
  void Backward(absl::Span<const Tensor* const> inputs,
                const Tensor& grad_output,
                absl::Span<Tensor* const> grad_inputs) const override {
    Tensor* grad = grad_inputs[0];
    if (grad == nullptr) return;
    grad->flat() = grad_output.flat();
    if (reduction_ == Reduction::kAdd) return;
    const Layout layout = GetLayout(inputs[0]->shape());
    for (size_t i = 0; i < layout.offsets.size(); ++i) {
      auto g = grad->flat().segment(layout.offsets[i], layout.slice);
      if (reduction_ == Reduction::kNone) {
        g.setZero();
      } else {
        g *= updates_.flat().segment(i * layout.slice, layout.slice);
      }
    }
  }

 private:
  // Where each slice starts in the data, and its length.
  struct Layout {
    std::vector<int64_t> offsets;
    int64_t slice = 1;
  };

  // For data shapes OutputShape accepted (indices in range).
  Layout GetLayout(const Shape& data) const {
    Layout layout;
    layout.slice = Product(data.begin() + tuple_size_, data.end());
    const int64_t tuples = Product(slices_shape_.begin(), slices_shape_.end());
    layout.offsets.reserve(tuples);
    for (int64_t t = 0; t < tuples; ++t) {
      int64_t offset = 0;
      for (int64_t d = 0; d < tuple_size_; ++d) {
        int64_t index = indices_[t * tuple_size_ + d];
        if (index < 0) index += data[d];
        offset = offset * data[d] + index;
      }
      layout.offsets.push_back(offset * layout.slice);
    }
    return layout;
  }

  const std::vector<int64_t> indices_;
  const Shape slices_shape_;
  const int64_t tuple_size_;
  const Tensor updates_;
  const Reduction reduction_;
};

constexpr int kIndices = 0;  // index in constant_inputs
constexpr int kUpdates = 1;

absl::StatusOr<std::unique_ptr<Kernel>> CreateScatterNd(
    const OpConfig& config) {
  const absl::StatusOr<std::string> reduction_name =
      config.GetString("reduction", "none");
  if (!reduction_name.ok()) return reduction_name.status();
  Reduction reduction = Reduction::kNone;
  if (*reduction_name == "add") {
    reduction = Reduction::kAdd;
  } else if (*reduction_name == "mul") {
    reduction = Reduction::kMul;
  } else if (*reduction_name != "none") {
    return NodeError(config,
                     absl::StrCat("unsupported attribute value "
                                  "reduction='",
                                  *reduction_name, "' (none, add or mul)"));
  }
  if (config.batch_source.input == 0) {
    return NodeError(
        config,
        "scattering into a tensor that carries the batch is not supported "
        "(its indices and updates are constants of one batch)");
  }
  if (config.constant_inputs.size() <= kUpdates ||
      !config.constant_inputs[kIndices] || !config.constant_inputs[kUpdates]) {
    return NodeError(config, "indices and updates must be given");
  }
  const ConstantInput& indices = *config.constant_inputs[kIndices];
  const ConstantInput& updates = *config.constant_inputs[kUpdates];
  if (!indices.is_int || indices.shape.empty()) {
    return NodeError(config, "indices must be an int64 tensor of rank >= 1");
  }
  if (updates.is_int) {
    return NodeError(config, "updates must be a float tensor");
  }
  const int64_t tuple_size = indices.shape.back();
  Shape slices_shape(indices.shape.begin(), indices.shape.end() - 1);
  return std::make_unique<ScatterNdKernel>(
      indices.ints, std::move(slices_shape), tuple_size,
      Tensor(updates.shape, updates.floats), reduction);
}

}  // namespace

absl::Span<const OpEntry> ScatterOps() {
  // Data is a float tensor; indices and updates are constants.
  static const OpEntry kOps[] = {
      {"ScatterND", {3, 3, 1, 1, &CreateScatterNd}},
  };
  return kOps;
}

}  // namespace mixq::engine
