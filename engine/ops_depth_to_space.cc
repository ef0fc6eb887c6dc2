// DepthToSpace (modes DCR and CRD) and SpaceToDepth over NCHW: permutations
// that move blocks of b x b pixels between channels and space. Either way a
// "depth" plane [H, W] of the channel-rich side is the sub-grid (i, j),
// (i + b, j), ... of a "space" plane [H b, W b], so each kernel copies whole
// planes through a strided Eigen map; the backward copies the other way.
#include <memory>
#include <string>
#include <utility>

#include "Eigen/Core"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "engine/ops.h"
#include "engine/ops_util.h"

namespace mixq::engine {
namespace {

using PlaneStride = Eigen::Stride<Eigen::Dynamic, Eigen::Dynamic>;
using SubGridMap = Eigen::Map<MatrixRM, 0, PlaneStride>;
using ConstSubGridMap = Eigen::Map<const MatrixRM, 0, PlaneStride>;

// Which depth channel holds sub-grid (i, j) of space channel c.
enum class Order {
  kDcr,  // depth channel (i b + j) C + c (DepthToSpace DCR, SpaceToDepth)
  kCrd,  // depth channel c b^2 + i b + j (DepthToSpace CRD)
};

class DepthSpaceKernel : public Kernel {
 public:
  DepthSpaceKernel(std::string op, int64_t block, Order order, bool to_space)
      : op_(std::move(op)), block_(block), order_(order), to_space_(to_space) {}

  absl::StatusOr<Shape> OutputShape(
      absl::Span<const Shape* const> inputs) const override {
    const Shape& x = *inputs[0];
    if (x.size() != 4) {
      return ShapeError(op_, absl::StrCat("input ", ShapeToString(x),
                                          " must be [N, C, H, W]"));
    }
    const int64_t b2 = block_ * block_;
    if (to_space_) {
      if (x[1] % b2 != 0) {
        return ShapeError(
            op_, absl::StrCat("channels of ", ShapeToString(x),
                              " are not a multiple of blocksize^2 ", b2));
      }
      return CheckedShape({x[0], x[1] / b2, x[2] * block_, x[3] * block_});
    }
    if (x[2] % block_ != 0 || x[3] % block_ != 0) {
      return ShapeError(
          op_, absl::StrCat("H and W of ", ShapeToString(x),
                            " are not multiples of blocksize ", block_));
    }
    int64_t channels = 0;
    if (!MulWithin(x[1], b2, kMaxTensorElements, &channels)) {
      return ShapeError(op_, absl::StrCat("channels of ", ShapeToString(x),
                                          " times blocksize^2 ", b2, " exceed ",
                                          kMaxTensorElements));
    }
    return CheckedShape({x[0], channels, x[2] / block_, x[3] / block_});
  }

  void Forward(absl::Span<const Tensor* const> inputs,
               Tensor* output) const override {
    Copy(*inputs[0], output, /*into_space=*/to_space_);
  }

  void Backward(absl::Span<const Tensor* const>, const Tensor& grad_output,
                absl::Span<Tensor* const> grad_inputs) const override {
    if (grad_inputs[0] == nullptr) return;
    Copy(grad_output, grad_inputs[0], /*into_space=*/!to_space_);
  }

 private:
  // Copies `from` into `to`, one [N, C b^2, H, W] ("depth") and the other
  // [N, C, H b, W b] ("space"): depth into space when `into_space`.
  void Copy(const Tensor& from, Tensor* to, bool into_space) const {
    const Shape& space = into_space ? to->shape() : from.shape();
    const Shape& depth = into_space ? from.shape() : to->shape();
    const int64_t c = space[1];
    const int64_t h = depth[2];
    const int64_t w = depth[3];
    const int64_t b = block_;
    const int64_t plane = h * w;
    const int64_t space_w = w * b;
    const float* src = from.data();
    float* dst = to->data();
    const int64_t planes = space[0] * c;
#pragma omp parallel for schedule(static) if (planes * plane * b * b > \
                                              kElementwiseBlock)
    for (int64_t nc = 0; nc < planes; ++nc) {
      const int64_t ni = nc / c;
      const int64_t ci = nc % c;
      for (int64_t i = 0; i < b; ++i) {
        for (int64_t j = 0; j < b; ++j) {
          const int64_t dc = order_ == Order::kDcr ? (i * b + j) * c + ci
                                                   : (ci * b + i) * b + j;
          const int64_t depth_at = (ni * c * b * b + dc) * plane;
          const int64_t space_at = nc * plane * b * b + i * space_w + j;
          const PlaneStride grid(b * space_w, b);
          if (into_space) {
            SubGridMap(dst + space_at, h, w, grid) =
                ConstMatrixMap(src + depth_at, h, w);
          } else {
            MatrixMap(dst + depth_at, h, w) =
                ConstSubGridMap(src + space_at, h, w, grid);
          }
        }
      }
    }
  }

  const std::string op_;
  const int64_t block_;
  const Order order_;
  const bool to_space_;
};

absl::StatusOr<int64_t> BlockSize(const OpConfig& config) {
  absl::StatusOr<int64_t> block = config.GetInt("blocksize", 0);
  if (!block.ok()) return block.status();
  if (*block < 1 || *block > kMaxWindowAttribute) {
    return NodeError(config,
                     absl::StrCat("blocksize ", *block, " must be in [1, ",
                                  kMaxWindowAttribute, "]"));
  }
  return *block;
}

absl::StatusOr<std::unique_ptr<Kernel>> CreateDepthToSpace(
    const OpConfig& config) {
  absl::StatusOr<int64_t> block = BlockSize(config);
  if (!block.ok()) return block.status();
  absl::StatusOr<std::string> mode = config.GetString("mode", "DCR");
  if (!mode.ok()) return mode.status();
  if (*mode != "DCR" && *mode != "CRD") {
    return NodeError(
        config, absl::StrCat("unsupported mode '", *mode, "' (DCR or CRD)"));
  }
  return std::make_unique<DepthSpaceKernel>(
      "DepthToSpace", *block, *mode == "DCR" ? Order::kDcr : Order::kCrd,
      /*to_space=*/true);
}

absl::StatusOr<std::unique_ptr<Kernel>> CreateSpaceToDepth(
    const OpConfig& config) {
  absl::StatusOr<int64_t> block = BlockSize(config);
  if (!block.ok()) return block.status();
  return std::make_unique<DepthSpaceKernel>("SpaceToDepth", *block, Order::kDcr,
                                            /*to_space=*/false);
}

}  // namespace

absl::Span<const OpEntry> DepthToSpaceOps() {
  static const OpEntry kOps[] = {
      {"DepthToSpace", {1, 1, 1, 1, &CreateDepthToSpace}},
      {"SpaceToDepth", {1, 1, 1, 1, &CreateSpaceToDepth}},
  };
  return kOps;
}

}  // namespace mixq::engine
