#include "engine/ops_util.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "engine/ops.h"

namespace mixq::engine {

absl::Status ShapeError(absl::string_view op, absl::string_view message) {
  return absl::InvalidArgumentError(absl::StrCat(op, ": ", message));
}

absl::Status NodeError(const OpConfig& config, absl::string_view message) {
  return absl::InvalidArgumentError(absl::StrCat(
      config.op_type, " node '", config.node_name, "': ", message));
}

absl::StatusOr<int64_t> NormalizeAxis(absl::string_view op, int64_t axis,
                                      int64_t rank) {
  if (axis < -rank || axis >= rank) {
    return ShapeError(
        op, absl::StrCat("axis ", axis, " is out of range for rank ", rank));
  }
  return axis < 0 ? axis + rank : axis;
}

int64_t Product(Shape::const_iterator begin, Shape::const_iterator end) {
  int64_t n = 1;
  for (auto it = begin; it != end; ++it) n *= *it;
  return n;
}

absl::StatusOr<Shape> BroadcastShapes(const Shape& a, const Shape& b) {
  const size_t rank = std::max(a.size(), b.size());
  Shape out(rank);
  for (size_t i = 0; i < rank; ++i) {
    const int64_t da = i < rank - a.size() ? 1 : a[i - (rank - a.size())];
    const int64_t db = i < rank - b.size() ? 1 : b[i - (rank - b.size())];
    if (da != db && da != 1 && db != 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("shapes ", ShapeToString(a), " and ", ShapeToString(b),
                       " do not broadcast"));
    }
    out[i] = da == 1 ? db : da;
  }
  return out;
}

absl::Status CheckBroadcastsTo(const Shape& in, const Shape& out) {
  bool ok = in.size() <= out.size();
  for (size_t i = 0; ok && i < in.size(); ++i) {
    const int64_t d = in[in.size() - 1 - i];
    ok = d == 1 || d == out[out.size() - 1 - i];
  }
  if (ok) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(
      ShapeToString(in), " does not broadcast to ", ShapeToString(out)));
}

absl::StatusOr<Shape> CheckedShape(Shape shape) {
  const absl::StatusOr<int64_t> n = CheckedNumElements(shape);
  if (!n.ok()) return n.status();
  return shape;
}

void AddBroadcast(const Tensor& in, float scale, Tensor* out) {
  const float* src = in.data();
  float* dst = out->data();
  BroadcastRuns(in.shape(), out->shape())
      .ForEach([&](int64_t out_offset, int64_t in_offset, int64_t n,
                   int64_t stride) {
        VectorMap y(dst + out_offset, n);
        if (stride == 1) {
          y += scale * ConstVectorMap(src + in_offset, n);
        } else {
          y.array() += scale * src[in_offset];
        }
      });
}

void ReduceBroadcast(const Tensor& grad_out, float scale, Tensor* grad_in) {
  grad_in->SetZero();
  const float* src = grad_out.data();
  float* dst = grad_in->data();
  BroadcastRuns(grad_in->shape(), grad_out.shape())
      .ForEach([&](int64_t out_offset, int64_t in_offset, int64_t n,
                   int64_t stride) {
        const ConstVectorMap g(src + out_offset, n);
        if (stride == 1) {
          VectorMap(dst + in_offset, n) += scale * g;
        } else {
          dst[in_offset] += scale * g.sum();
        }
      });
}

std::vector<int64_t> BroadcastIndex(const Shape& in, const Shape& out) {
  std::vector<int64_t> index(NumElements(out));
  BroadcastRuns(in, out).ForEach(
      [&](int64_t out_offset, int64_t in_offset, int64_t n, int64_t stride) {
        for (int64_t k = 0; k < n; ++k) {
          index[out_offset + k] = in_offset + k * stride;
        }
      });
  return index;
}

}  // namespace mixq::engine
