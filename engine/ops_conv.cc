// Convolution, pooling and batch normalization operators (NCHW).
//
// Conv (1-D and 2-D; a 1-D convolution runs as a 2-D one of height 1) runs
// one of five ways, chosen from the shapes:
//  - 3x3, unit stride, no dilation, one group, 4 to 512 channels in and
//    out: Winograd (engine/winograd.h), F(4x4, 3x3) where its tiles fit the
//    map (4x fewer multiplies) and F(2x2, 3x3) elsewhere (2.25x fewer); its
//    backward computes dX the same way (on the flipped, transposed weights)
//    and dW by the adjoint transforms;
//  - pointwise (1x1 kernel, no padding): a GEMM per group on the input
//    pixels themselves (gathered when strided);
//  - depthwise (one input channel per group, group > 1): on maps of more than
//    kSmallMapPixels output pixels one vector multiply-add per kernel tap over
//    a whole padded plane; on smaller maps channels-last, vectors over
//    channels;
//  - otherwise, while channels x taps <= kDirectMaxK, a direct kernel
//    (DirectConvolve) that keeps a block of outputs in registers and reads
//    the inputs of each tap as one contiguous span of a padded,
//    stride-phase-split copy of the input (PhaseLayout): no im2col matrix
//    and no GEMM packing, which dominate with the few channels of small
//    CNNs. Its backward computes dX as the convolution of dY with the
//    flipped, transposed weights (unit strides) and dW as im2col + GEMM;
//  - beyond kDirectMaxK, im2col (spans of the phase layout) onto a GEMM.
// GEMM paths take the batch in chunks of samples whose columns sit side by
// side, so that layers with small feature maps still make wide GEMMs (1x1
// maps: one GEMM over the whole batch). Threads split samples, chunks or
// channels; chunks, and the order in which partial weight gradients are
// summed, depend only on the shapes, so the thread count changes no result,
// except through Eigen's own blocking where a single GEMM is left to Eigen's
// threads (1x1 maps, single chunks), which may round differently.
//
// Pooling kernels handle 1-D to 3-D windows as 3-D ones with unit leading
// dims; their inner loops are vector operations over runs of output columns.
#include <omp.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "Eigen/Core"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/ops.h"
#include "engine/ops_util.h"
#include "engine/ops_window.h"
#include "engine/winograd.h"
#include "engine/winograd_cache.h"

namespace mixq::engine {
namespace {

using StridedConstArrayMap =
    Eigen::Map<const Eigen::ArrayXf, 0, Eigen::InnerStride<>>;
using StridedArrayMap = Eigen::Map<Eigen::ArrayXf, 0, Eigen::InnerStride<>>;

// GEMMs take this many output columns (samples x output pixels) at a time
// when the batch allows; fewer make GEMMs too narrow to reach Eigen's
// peak, more only cost cache.
constexpr int64_t kTargetColumns = 512;
// The batch is split into at least this many chunks when it has that many
// samples, so that both cores get work even when a layer's maps are tiny.
constexpr int64_t kMinChunks = 8;
// Weight gradients are summed from at most this many partial sums (one per
// interleaved set of chunks), in a fixed order.
constexpr int64_t kMaxPartials = 8;
// An upper bound of the direct convolution's block of output positions
// (kBlockFloats), which phase buffers leave as slack.
constexpr int64_t kMaxBlockFloats = 256;
// The spatial rank pooling kernels work in (lower ranks get unit dims).
constexpr int kPoolRank = 3;

// ------------------------------------------------------------ Windows ----

// One spatial dim of a resolved window.
struct WindowDim {
  int64_t in = 1;
  int64_t kernel = 1;
  int64_t stride = 1;
  int64_t dilation = 1;
  int64_t pad_begin = 0;
  int64_t pad_end = 0;
  int64_t out = 1;

  int64_t extent() const { return dilation * (kernel - 1) + 1; }
  // The input with its padding, and as far as the last window reaches (in
  // ceil mode it may reach past the end padding).
  int64_t padded() const {
    return std::max(in + pad_begin + pad_end, (out - 1) * stride + extent());
  }
  // Output indices [lo, hi) whose tap `t` reads a real (unpadded) input.
  std::pair<int64_t, int64_t> ValidRange(int64_t t) const {
    const int64_t offset = t * dilation - pad_begin;
    const int64_t lo =
        std::max<int64_t>(0, CeilDiv(std::max<int64_t>(-offset, 0), stride));
    const int64_t hi = std::min(out, FloorDiv(in - 1 - offset, stride) + 1);
    return {lo, std::max(lo, hi)};
  }
  // The input index that output `o`'s tap `t` reads (may be in the padding).
  int64_t InputIndex(int64_t o, int64_t t) const {
    return o * stride + t * dilation - pad_begin;
  }
};

// The window over spatial dims `in` (kernel from `kernel` when the attributes
// have none), or INVALID_ARGUMENT when the window does not fit.
absl::StatusOr<std::vector<WindowDim>> Resolve(const WindowAttrs& attrs,
                                               absl::string_view op,
                                               const Shape& in,
                                               const Shape& kernel) {
  const size_t rank = in.size();
  std::vector<WindowDim> dims(rank);
  int64_t padded_plane = 1;
  for (size_t d = 0; d < rank; ++d) {
    WindowDim& w = dims[d];
    w.in = in[d];
    w.kernel = kernel[d];
    if (w.in == 0) {
      return ShapeError(op, absl::StrCat("spatial dim ", d, " is empty"));
    }
    if (!attrs.strides.empty()) w.stride = attrs.strides[d];
    if (!attrs.dilations.empty()) w.dilation = attrs.dilations[d];
    const int64_t extent = w.extent();
    switch (attrs.auto_pad) {
      case AutoPad::kNotSet: {
        if (!attrs.pads.empty()) {
          w.pad_begin = attrs.pads[d];
          w.pad_end = attrs.pads[d + rank];
        }
        const int64_t span = w.in + w.pad_begin + w.pad_end - extent;
        if (span < 0) {
          return ShapeError(
              op, absl::StrCat("window extent ", extent, " of spatial dim ", d,
                               " exceeds the padded input (", w.in, " + ",
                               w.pad_begin, " + ", w.pad_end, ")"));
        }
        if (attrs.ceil_mode) {
          w.out = CeilDiv(span, w.stride) + 1;
          // As PyTorch: the last window must start inside the input or its
          // leading padding.
          if ((w.out - 1) * w.stride >= w.in + w.pad_begin) --w.out;
        } else {
          w.out = span / w.stride + 1;
        }
        break;
      }
      case AutoPad::kValid:
        if (w.in < extent) {
          return ShapeError(
              op, absl::StrCat("window extent ", extent,
                               " exceeds spatial dim ", d, " of size ", w.in));
        }
        w.out = CeilDiv(w.in - extent + 1, w.stride);
        break;
      case AutoPad::kSameUpper:
      case AutoPad::kSameLower: {
        w.out = CeilDiv(w.in, w.stride);
        const int64_t total =
            std::max<int64_t>(0, (w.out - 1) * w.stride + extent - w.in);
        w.pad_begin = attrs.auto_pad == AutoPad::kSameUpper ? total / 2
                                                            : total - total / 2;
        w.pad_end = total - w.pad_begin;
        break;
      }
    }
    if (w.out <= 0) {
      return ShapeError(op, absl::StrCat("spatial dim ", d, " of size ", w.in,
                                         " gives an empty output"));
    }
    // A single output reads the same taps at any stride; stride 1 keeps the
    // stride-split buffers (PhaseLayout) from growing with the stride.
    if (w.out == 1) w.stride = 1;
    if (!MulWithin(padded_plane, w.padded(), kMaxWindowBufferValues,
                   &padded_plane)) {
      return absl::ResourceExhaustedError(
          absl::StrCat(op, ": the padded input plane up to spatial dim ", d,
                       " holds more than ", kMaxWindowBufferValues,
                       " values (kMaxWindowBufferValues)"));
    }
  }
  return dims;
}

// Spatial dims of `shape` (after N and C).
Shape SpatialDims(const Shape& shape) {
  return Shape(shape.begin() + 2, shape.end());
}

// ---------------------------------------------------------------- Conv ----

// Everything a convolution's loops need, derived from the input shapes.
struct ConvGeometry {
  int64_t n, c, h, w;  // input
  int64_t m;           // output channels
  int64_t group;
  WindowDim y, x;  // vertical and horizontal window
  int64_t cg, mg;  // channels per group, in and out
  int64_t taps;    // kernel height * kernel width
  int64_t k;       // cg * taps: the GEMMs' inner dimension
  int64_t hw;      // input pixels
  int64_t p;       // output pixels

  // A 1x1 kernel without padding: output pixels read one input pixel each.
  bool pointwise() const {
    return taps == 1 && y.pad_begin == 0 && y.pad_end == 0 &&
           x.pad_begin == 0 && x.pad_end == 0;
  }
  bool unit_stride() const { return y.stride == 1 && x.stride == 1; }
  bool depthwise() const { return cg == 1 && group > 1; }
};

// Samples per GEMM chunk when one sample gives `columns` GEMM columns.
int64_t ChunkSamples(int64_t n, int64_t columns) {
  const int64_t by_width =
      std::max<int64_t>(1, CeilDiv(kTargetColumns, columns));
  const int64_t by_count = std::max<int64_t>(1, n / kMinChunks);
  return std::min(by_width, by_count);
}

// Input planes zero-padded and split by stride phase. With strides (sy, sx),
// phase (qi, qj) of a plane holds padded rows qi, qi + sy, ... and columns
// qj, qj + sx, ... as an [hq, wq] matrix, so tap (i, j) of output (oy, ox)
// reads element (oy + ri, ox + rj) of one phase: a tap's inputs for all
// outputs are an [oy, ox] block with row stride wq, or - taking wq columns
// per output row instead of ow - one contiguous span of span() floats. The
// extra ("junk") columns read neighbouring data and their results are
// discarded (forward) or multiplied by zero (backward).
struct PhaseLayout {
  int64_t sy, sx;  // strides = phases per dim
  int64_t hq, wq;  // phase matrix dims
  int64_t plane;   // floats per channel

  explicit PhaseLayout(const ConvGeometry& g) : sy(g.y.stride), sx(g.x.stride) {
    hq = CeilDiv(g.y.padded(), sy);
    wq = CeilDiv(g.x.padded(), sx);
    plane = sy * sx * hq * wq;
  }

  // Floats for `channels` planes: a span may run up to wq floats past its
  // plane, and the direct kernel reads spans rounded up to kBlockFloats.
  int64_t BufferSize(int64_t channels) const {
    return channels * plane + wq + kMaxBlockFloats;
  }
  int64_t span(const ConvGeometry& g) const { return g.y.out * wq; }

  // Where tap (i, j)'s block starts within a plane.
  int64_t TapOffset(const ConvGeometry& g, int64_t i, int64_t j) const {
    const int64_t r = i * g.y.dilation;
    const int64_t c = j * g.x.dilation;
    return ((r % sy) * sx + c % sx) * hq * wq + (r / sy) * wq + c / sx;
  }

  // Calls f(input row r, input column, offset in the plane, count) for runs
  // of an input plane's elements that land on consecutive phase elements
  // (input columns first, first + sx, ...).
  template <typename F>
  void ForEachRun(const ConvGeometry& g, F&& f) const {
    for (int64_t qj = 0; qj < sx; ++qj) {
      const int64_t first = ((qj - g.x.pad_begin) % sx + sx) % sx;
      if (first >= g.w) continue;
      const int64_t col = (first + g.x.pad_begin) / sx;
      const int64_t count = (g.w - 1 - first) / sx + 1;
      for (int64_t r = 0; r < g.h; ++r) {
        const int64_t pr = r + g.y.pad_begin;
        f(r, first, ((pr % sy) * sx + qj) * hq * wq + (pr / sy) * wq + col,
          count);
      }
    }
  }

  // Fills a plane from an unpadded [h, w] input plane.
  void Load(const ConvGeometry& g, const float* in, float* planes) const {
    std::fill(planes, planes + plane, 0.0f);
    ForEachRun(g, [&](int64_t r, int64_t col, int64_t offset, int64_t count) {
      if (sx == 1) {
        std::memcpy(planes + offset, in + r * g.w + col, count * sizeof(float));
      } else {
        ArrayMap(planes + offset, count) = StridedConstArrayMap(
            in + r * g.w + col, count, Eigen::InnerStride<>(sx));
      }
    });
  }
  // Writes the unpadded part of a plane into an [h, w] plane.
  void Store(const ConvGeometry& g, const float* planes, float* out) const {
    ForEachRun(g, [&](int64_t r, int64_t col, int64_t offset, int64_t count) {
      if (sx == 1) {
        std::memcpy(out + r * g.w + col, planes + offset,
                    count * sizeof(float));
      } else {
        StridedArrayMap(out + r * g.w + col, count, Eigen::InnerStride<>(sx)) =
            ConstArrayMap(planes + offset, count);
      }
    });
  }
};

// The phase planes of input channels [c0, c0 + cg) of `s` samples at `x`
// (sample stride c * hw), in `buffer`.
float* LoadPhases(const ConvGeometry& g, const PhaseLayout& layout,
                  const float* x, int64_t c0, int64_t s, FloatBuffer* buffer) {
  const int64_t planes = s * g.cg;
  float* out = Scratch(buffer, layout.BufferSize(planes));
  std::fill(out + planes * layout.plane, out + layout.BufferSize(planes), 0.0f);
  for (int64_t si = 0; si < s; ++si) {
    for (int64_t ci = 0; ci < g.cg; ++ci) {
      layout.Load(g, x + (si * g.c + c0 + ci) * g.hw,
                  out + (si * g.cg + ci) * layout.plane);
    }
  }
  return out;
}

// Calls f(row, column, input offset, count) for contiguous runs of columns
// [c0, c0 + width) of the im2col matrix [cg * taps, s * span] of `s`
// samples' phase planes: row (ci, i, j), columns of sample si hold tap
// (i, j)'s span of input channel ci; input offsets are into the planes.
template <typename F>
void ForEachColumnRun(const ConvGeometry& g, const PhaseLayout& layout,
                      int64_t c0, int64_t width, F&& f) {
  const int64_t span = layout.span(g);
  for (int64_t ci = 0; ci < g.cg; ++ci) {
    for (int64_t i = 0; i < g.y.kernel; ++i) {
      for (int64_t j = 0; j < g.x.kernel; ++j) {
        const int64_t row = (ci * g.y.kernel + i) * g.x.kernel + j;
        const int64_t base = ci * layout.plane + layout.TapOffset(g, i, j);
        for (int64_t c = c0; c < c0 + width;) {
          const int64_t si = c / span;
          const int64_t pos = c % span;
          const int64_t count = std::min(span - pos, c0 + width - c);
          f(row, c - c0, base + si * g.cg * layout.plane + pos, count);
          c += count;
        }
      }
    }
  }
}

// Columns [c0, c0 + width) of the im2col matrix, as [cg * taps, width].
void Im2Col(const ConvGeometry& g, const PhaseLayout& layout,
            const float* phases, int64_t c0, int64_t width, float* cols) {
  ForEachColumnRun(g, layout, c0, width,
                   [&](int64_t row, int64_t col, int64_t in, int64_t count) {
                     std::memcpy(cols + row * width + col, phases + in,
                                 count * sizeof(float));
                   });
}

// The adjoint of Im2Col: adds the [cg * taps, width] block into the planes.
void Col2ImAdd(const ConvGeometry& g, const PhaseLayout& layout,
               const float* cols, int64_t c0, int64_t width, float* phases) {
  ForEachColumnRun(g, layout, c0, width,
                   [&](int64_t row, int64_t col, int64_t in, int64_t count) {
                     ArrayMap(phases + in, count) +=
                         ConstArrayMap(cols + row * width + col, count);
                   });
}

// ------------------------------------------------ Direct convolution ----

// The direct kernel keeps a block of kBlockM output channels x kBlockP
// packets of output positions in registers and streams the taps' inputs from
// phase planes: no im2col matrix, no GEMM packing, which dominate with the
// few channels of small CNNs.
using Packet = Eigen::internal::packet_traits<float>::type;
constexpr int64_t kPacket = Eigen::internal::packet_traits<float>::size;
constexpr int kRegisters = EIGEN_ARCH_DEFAULT_NUMBER_OF_REGISTERS;
constexpr int kBlockP = kRegisters >= 32 ? 4 : (kRegisters >= 16 ? 3 : 2);
constexpr int kBlockM = kRegisters >= 32 ? 6 : (kRegisters >= 16 ? 3 : 2);
constexpr int64_t kBlockFloats = kBlockP * kPacket;
static_assert(kBlockFloats <= kMaxBlockFloats);
// Convolutions with a larger inner dimension (channels x taps) use im2col and
// a GEMM, whose cache blocking then pays off.
constexpr int64_t kDirectMaxK = 1024;
// A sample's multiply-adds from which the direct kernel splits one
// sample's work between threads when there are fewer samples than threads:
// about 0.1 ms of work, some 50 times a parallel region's cost.
constexpr int64_t kMinWideSampleWork = int64_t{1} << 22;

// out[mb][0, kBlockFloats) = sum over (ci, t) of w[mb * w_stride + ci * taps
// + t] * in[ci * plane + offsets[t] + (0, kBlockFloats)], for MB rows.
template <int MB>
void DirectBlock(const float* in, int64_t plane, int64_t channels,
                 const int64_t* offsets, int64_t taps, const float* w,
                 int64_t w_stride, float* out, int64_t out_stride) {
  using Eigen::internal::ploadu;
  using Eigen::internal::pmadd;
  using Eigen::internal::pset1;
  Packet acc[MB][kBlockP];
  for (int mb = 0; mb < MB; ++mb) {
    for (int pb = 0; pb < kBlockP; ++pb) acc[mb][pb] = pset1<Packet>(0.0f);
  }
  for (int64_t ci = 0; ci < channels; ++ci) {
    const float* base = in + ci * plane;
    const float* wc = w + ci * taps;
    for (int64_t t = 0; t < taps; ++t) {
      const float* src = base + offsets[t];
      Packet x[kBlockP];
      for (int pb = 0; pb < kBlockP; ++pb) {
        x[pb] = ploadu<Packet>(src + pb * kPacket);
      }
      for (int mb = 0; mb < MB; ++mb) {
        const Packet wv = pset1<Packet>(wc[mb * w_stride + t]);
        for (int pb = 0; pb < kBlockP; ++pb) {
          acc[mb][pb] = pmadd(x[pb], wv, acc[mb][pb]);
        }
      }
    }
  }
  for (int mb = 0; mb < MB; ++mb) {
    for (int pb = 0; pb < kBlockP; ++pb) {
      Eigen::internal::pstoreu(out + mb * out_stride + pb * kPacket,
                               acc[mb][pb]);
    }
  }
}

// DirectBlock<mb> for a runtime mb in [1, MB].
template <int MB>
void DirectBlockUpTo(int mb, const float* in, int64_t plane, int64_t channels,
                     const int64_t* offsets, int64_t taps, const float* w,
                     int64_t w_stride, float* out, int64_t out_stride) {
  if constexpr (MB > 1) {
    if (mb < MB) {
      DirectBlockUpTo<MB - 1>(mb, in, plane, channels, offsets, taps, w,
                              w_stride, out, out_stride);
      return;
    }
  }
  DirectBlock<MB>(in, plane, channels, offsets, taps, w, w_stride, out,
                  out_stride);
}

// out [mg, padded span] = the group's weights [mg, cg * taps] applied to the
// phase planes of its cg input channels; padded span = span rounded up to
// kBlockFloats (the phase buffer's slack covers the extra reads). With
// `wide`, the register blocks are split between the calling thread's
// threads (each output is computed the same way either way).
void DirectConvolve(const ConvGeometry& g, const PhaseLayout& layout,
                    const float* phases, const float* w, float* out,
                    bool wide) {
  const int64_t padded = RoundUp(layout.span(g), kBlockFloats);
  std::vector<int64_t> offsets(g.taps);
  for (int64_t i = 0; i < g.y.kernel; ++i) {
    for (int64_t j = 0; j < g.x.kernel; ++j) {
      offsets[i * g.x.kernel + j] = layout.TapOffset(g, i, j);
    }
  }
  const int64_t m_blocks = CeilDiv(g.mg, kBlockM);
  const int64_t blocks = padded / kBlockFloats * m_blocks;
#pragma omp parallel for schedule(static) if (wide)
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t p0 = b / m_blocks * kBlockFloats;
    const int64_t m0 = b % m_blocks * kBlockM;
    DirectBlockUpTo<kBlockM>(
        static_cast<int>(std::min<int64_t>(kBlockM, g.mg - m0)), phases + p0,
        layout.plane, g.cg, offsets.data(), g.taps, w + m0 * g.k, g.k,
        out + m0 * padded + p0, padded);
  }
}

// Copies the [out height, out width] outputs held in a span (rows wq apart)
// into a dense plane, plus `bias`. Row copies rather than one strided Eigen
// expression: output rows are rarely a whole number of packets.
void CropSpan(const ConvGeometry& g, int64_t wq, const float* span, float bias,
              float* plane) {
  for (int64_t oy = 0; oy < g.y.out; ++oy) {
    std::memcpy(plane + oy * g.x.out, span + oy * wq, g.x.out * sizeof(float));
  }
  if (bias != 0.0f) ArrayMap(plane, g.p) += bias;
}

// The reverse of CropSpan without bias: a dense output-sized plane into a
// span, leaving its junk columns as they are.
void ExpandToSpan(const ConvGeometry& g, int64_t wq, const float* plane,
                  float* span) {
  for (int64_t oy = 0; oy < g.y.out; ++oy) {
    std::memcpy(span + oy * wq, plane + oy * g.x.out, g.x.out * sizeof(float));
  }
}

// Copies channels [c0, c0 + rows) of `s` samples at `src` (sample stride
// `channels` * `pixels`) into a [rows, s * pixels] matrix, or back.
void GatherSamples(const float* src, int64_t channels, int64_t c0, int64_t rows,
                   int64_t pixels, int64_t s, float* dst) {
  for (int64_t si = 0; si < s; ++si) {
    for (int64_t r = 0; r < rows; ++r) {
      std::memcpy(dst + r * s * pixels + si * pixels,
                  src + (si * channels + c0 + r) * pixels,
                  pixels * sizeof(float));
    }
  }
}
void ScatterSamples(const float* src, int64_t channels, int64_t c0,
                    int64_t rows, int64_t pixels, int64_t s, float* dst) {
  for (int64_t si = 0; si < s; ++si) {
    for (int64_t r = 0; r < rows; ++r) {
      std::memcpy(dst + (si * channels + c0 + r) * pixels,
                  src + r * s * pixels + si * pixels, pixels * sizeof(float));
    }
  }
}

// The input pixels of a pointwise convolution, channels [c0, c0 + cg) of
// `s` samples at `x`, as a [cg, s * p] matrix.
void GatherPointwise(const ConvGeometry& g, const float* x, int64_t c0,
                     int64_t s, float* out) {
  if (g.unit_stride()) {
    GatherSamples(x, g.c, c0, g.cg, g.p, s, out);
    return;
  }
  using StridedPlane =
      Eigen::Map<const MatrixRM, 0,
                 Eigen::Stride<Eigen::Dynamic, Eigen::Dynamic>>;
  for (int64_t si = 0; si < s; ++si) {
    for (int64_t ci = 0; ci < g.cg; ++ci) {
      MatrixMap(out + ci * s * g.p + si * g.p, g.y.out, g.x.out) =
          StridedPlane(x + (si * g.c + c0 + ci) * g.hw, g.y.out, g.x.out,
                       Eigen::Stride<Eigen::Dynamic, Eigen::Dynamic>(
                           g.y.stride * g.w, g.x.stride));
    }
  }
}

// The adjoint of GatherPointwise: writes the channels' planes at `dx`, zero
// where no output reads.
void ScatterPointwise(const ConvGeometry& g, const float* in, int64_t c0,
                      int64_t s, float* dx) {
  if (g.unit_stride()) {
    ScatterSamples(in, g.c, c0, g.cg, g.p, s, dx);
    return;
  }
  using StridedPlane =
      Eigen::Map<MatrixRM, 0, Eigen::Stride<Eigen::Dynamic, Eigen::Dynamic>>;
  for (int64_t si = 0; si < s; ++si) {
    for (int64_t ci = 0; ci < g.cg; ++ci) {
      float* plane = dx + (si * g.c + c0 + ci) * g.hw;
      std::fill(plane, plane + g.hw, 0.0f);
      StridedPlane(plane, g.y.out, g.x.out,
                   Eigen::Stride<Eigen::Dynamic, Eigen::Dynamic>(
                       g.y.stride * g.w, g.x.stride)) =
          ConstMatrixMap(in + ci * s * g.p + si * g.p, g.y.out, g.x.out);
    }
  }
}

// Weight gradients summed over the batch in a fixed order whatever the
// number of threads: chunk ch adds into partial sum ch % partials, partial 0
// is the output itself and the others are summed into it in order.
class PartialSums {
 public:
  PartialSums(float* out, int64_t size, int64_t chunks)
      : out_(out), size_(size), count_(std::min(kMaxPartials, chunks)) {
    // The calling thread owns the scratch; the workers only write their own
    // partial sums while it waits for them.
    thread_local FloatBuffer buffer;
    extra_ = out == nullptr ? nullptr : Scratch(&buffer, (count_ - 1) * size);
  }
  int64_t count() const { return count_; }
  float* Get(int64_t part) const {
    if (out_ == nullptr) return nullptr;
    return part == 0 ? out_ : extra_ + (part - 1) * size_;
  }
  void Finish() const {
    if (out_ == nullptr) return;
    VectorMap total(out_, size_);
    for (int64_t part = 1; part < count_; ++part) {
      total += ConstVectorMap(Get(part), size_);
    }
  }

 private:
  float* const out_;
  const int64_t size_;
  const int64_t count_;
  float* extra_;
};

// Maps with rows of `channels` floats per pixel (channels-last scratch).
using ArrayRM =
    Eigen::Array<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using ArrayRMMap = Eigen::Map<ArrayRM>;
using ConstArrayRMMap = Eigen::Map<const ArrayRM>;

// Depthwise convolutions on maps of at most this many output pixels run
// channels-last: vector operations over channels instead of over (tiny)
// rows.
constexpr int64_t kSmallMapPixels = 64;

// Y = conv(X, W) + B over NCHW (or NCL), with groups.
class ConvKernel : public Kernel {
 public:
  // `attrs` are 2-D (LiftTo2d for a 1-D node); `rank` is the node's spatial
  // rank (1 or 2), or 0 when its attributes leave it to the input.
  ConvKernel(WindowAttrs attrs, int rank, int64_t group)
      : attrs_(std::move(attrs)), rank_(rank), group_(group) {}

  absl::StatusOr<Shape> OutputShape(
      absl::Span<const Shape* const> inputs) const override {
    absl::StatusOr<ConvGeometry> g = Geometry(inputs);
    if (!g.ok()) return g.status();
    if (inputs[0]->size() == 3) return CheckedShape({g->n, g->m, g->x.out});
    return CheckedShape({g->n, g->m, g->y.out, g->x.out});
  }

  void Forward(absl::Span<const Tensor* const> inputs,
               Tensor* output) const override {
    const ConvGeometry g = *Geometry(Shapes(inputs));
    const float* x = inputs[0]->data();
    const float* w = inputs[1]->data();
    const float* b = inputs.size() == 3 ? inputs[2]->data() : nullptr;
    float* y = output->data();
    if (const std::optional<Conv3x3Shape> s = WinogradShape(g)) {
      WinogradConvForward(
          *s, x, *weight_transform_.Get(*s, WinogradTile::kAuto, w), b, y);
    } else if (g.depthwise() && g.p <= kSmallMapPixels) {
      SmallDepthwiseForward(g, x, w, b, y);
    } else if (g.depthwise()) {
      DepthwiseForward(g, x, w, b, y);
    } else if (g.pointwise()) {
      PointwiseForward(g, x, w, b, y);
    } else if (g.k <= kDirectMaxK) {
      DirectForward(g, x, w, b, y);
    } else {
      GemmForward(g, x, w, b, y);
    }
  }

  void Backward(absl::Span<const Tensor* const> inputs,
                const Tensor& grad_output,
                absl::Span<Tensor* const> grad_inputs) const override {
    const ConvGeometry g = *Geometry(Shapes(inputs));
    const float* x = inputs[0]->data();
    const float* w = inputs[1]->data();
    const float* dy = grad_output.data();
    float* dx = grad_inputs[0] != nullptr ? grad_inputs[0]->data() : nullptr;
    float* dw = grad_inputs[1] != nullptr ? grad_inputs[1]->data() : nullptr;
    if (dx != nullptr || dw != nullptr) {
      if (g.depthwise() && g.p <= kSmallMapPixels) {
        SmallDepthwiseBackward(g, x, w, dy, dx, dw);
      } else if (g.depthwise()) {
        DepthwiseBackward(g, x, w, dy, dx, dw);
      } else if (g.pointwise()) {
        PointwiseBackward(g, x, w, dy, dx, dw);
      } else {
        const std::optional<Conv3x3Shape> winograd = WinogradShape(g);
        const std::optional<ConvGeometry> t = TransposedGeometry(g);
        // dX is the convolution of dY with the flipped, transposed weights,
        // by Winograd or the direct kernel when they take it.
        const bool dx_by_conv = dx != nullptr && t.has_value() &&
                                (winograd.has_value() || g.k <= kDirectMaxK);
        if (dx_by_conv) {
          const Eigen::VectorXf wt = FlippedTransposedWeights(g, w);
          if (const std::optional<Conv3x3Shape> ts = WinogradShape(*t)) {
            WinogradConvForward(
                *ts, dy,
                *flipped_transform_.Get(*ts, WinogradTile::kAuto, wt.data()),
                nullptr, dx);
          } else {
            DirectForward(*t, dy, wt.data(), nullptr, dx);
          }
        }
        if (winograd.has_value() && dw != nullptr) {
          WinogradConvWeightGrad(*winograd, x, dy, dw);
        }
        float* gemm_dx = dx_by_conv ? nullptr : dx;
        float* gemm_dw = winograd.has_value() ? nullptr : dw;
        if (gemm_dx != nullptr || gemm_dw != nullptr) {
          GemmBackward(g, x, w, dy, gemm_dx, gemm_dw);
        }
      }
    }
    if (grad_inputs.size() == 3 && grad_inputs[2] != nullptr) {
      // Per channel, summed in sample order whatever the thread count.
      float* db = grad_inputs[2]->data();
#pragma omp parallel for schedule(static) if (g.n * g.m * g.p > \
                                              kParallelBiasWork)
      for (int64_t m = 0; m < g.m; ++m) {
        float sum = 0.0f;
        for (int64_t n = 0; n < g.n; ++n) {
          sum += ConstVectorMap(dy + (n * g.m + m) * g.p, g.p).sum();
        }
        db[m] = sum;
      }
    }
  }

 private:
  // Elements of dY above which the bias gradient is summed by threads.
  static constexpr int64_t kParallelBiasWork = 1 << 15;

  // The Winograd transforms of the weights the forward pass, and of the
  // flipped, transposed ones the input gradient, last ran with: reused while
  // the weights are unchanged (inference, scoring), so the kernel stays
  // logically immutable.
  mutable WinogradWeightCache weight_transform_;
  mutable WinogradWeightCache flipped_transform_;

  static std::vector<const Shape*> Shapes(
      absl::Span<const Tensor* const> inputs) {
    std::vector<const Shape*> shapes;
    for (const Tensor* t : inputs) shapes.push_back(&t->shape());
    return shapes;
  }

  // A 1-D convolution's shapes as those of a 2-D one of height 1.
  static Shape WithUnitHeight(const Shape& s) {
    if (s.size() != 3) return s;
    return {s[0], s[1], 1, s[2]};
  }

  absl::StatusOr<ConvGeometry> Geometry(
      absl::Span<const Shape* const> inputs) const {
    const size_t rank = rank_ == 0 ? inputs[0]->size() : rank_ + 2;
    if ((rank != 3 && rank != 4) || inputs[0]->size() != rank ||
        inputs[1]->size() != rank) {
      return ShapeError(
          "Conv", absl::StrCat("only 1-D and 2-D convolution are supported (X ",
                               ShapeToString(*inputs[0]), ", W ",
                               ShapeToString(*inputs[1]), "; expected rank ",
                               rank, " for both)"));
    }
    const Shape xs = WithUnitHeight(*inputs[0]);
    const Shape ws = WithUnitHeight(*inputs[1]);
    ConvGeometry g;
    g.n = xs[0];
    g.c = xs[1];
    g.h = xs[2];
    g.w = xs[3];
    g.m = ws[0];
    g.group = group_;
    if (g.c % group_ != 0 || ws[1] * group_ != g.c || g.m % group_ != 0) {
      return ShapeError(
          "Conv",
          absl::StrCat("X ", ShapeToString(xs), " and W ", ShapeToString(ws),
                       " do not fit group ", group_,
                       " (need C = W[1] * group and W[0] divisible by group)"));
    }
    if (!attrs_.kernel.empty() &&
        (attrs_.kernel[0] != ws[2] || attrs_.kernel[1] != ws[3])) {
      return ShapeError(
          "Conv",
          absl::StrCat("kernel_shape [", absl::StrJoin(attrs_.kernel, ", "),
                       "] differs from W ", ShapeToString(ws)));
    }
    if (inputs.size() == 3 && *inputs[2] != Shape{g.m}) {
      return ShapeError("Conv", absl::StrCat("B ", ShapeToString(*inputs[2]),
                                             " must be [", g.m, "]"));
    }
    absl::StatusOr<std::vector<WindowDim>> dims =
        Resolve(attrs_, "Conv", SpatialDims(xs), {ws[2], ws[3]});
    if (!dims.ok()) return dims.status();
    g.y = (*dims)[0];
    g.x = (*dims)[1];
    g.cg = g.c / group_;
    g.mg = g.m / group_;
    g.taps = ws[2] * ws[3];
    g.k = g.cg * g.taps;
    g.hw = g.h * g.w;
    g.p = g.y.out * g.x.out;
    absl::Status within = CheckLimits(g);
    if (!within.ok()) return within;
    return g;
  }

  // RESOURCE_EXHAUSTED when a sample's buffers (phase planes, im2col
  // matrix, the phase planes of the dX convolution) or multiply-adds exceed
  // the window limits (engine/ops.h).
  static absl::Status CheckLimits(const ConvGeometry& g) {
    const PhaseLayout layout(g);
    int64_t planes, cols, macs;
    bool within =
        MulWithin(g.cg, layout.plane, kMaxWindowBufferValues, &planes) &&
        MulWithin(g.k, layout.span(g), kMaxWindowBufferValues, &cols) &&
        MulWithin(g.m, g.p, kMaxWindowWork, &macs) &&
        MulWithin(macs, g.k, kMaxWindowWork, &macs);
    if (within) {
      if (const std::optional<ConvGeometry> t = TransposedGeometry(g)) {
        within = MulWithin(t->cg, PhaseLayout(*t).plane, kMaxWindowBufferValues,
                           &planes);
      }
    }
    if (within) return absl::OkStatus();
    return absl::ResourceExhaustedError(
        absl::StrCat("Conv: a sample needs more than ", kMaxWindowBufferValues,
                     " floats of padded input or im2col buffer "
                     "(kMaxWindowBufferValues) or more than ",
                     kMaxWindowWork, " multiply-adds (kMaxWindowWork)"));
  }

  // `g` as a Winograd problem (engine/winograd.h) when it is a
  // 3x3, unit-stride, undilated, ungrouped convolution the kernels take and
  // that has enough channels to gain from them; nullopt otherwise.
  static std::optional<Conv3x3Shape> WinogradShape(const ConvGeometry& g) {
    if (g.group != 1 || g.y.kernel != 3 || g.x.kernel != 3 ||
        !g.unit_stride() || g.y.dilation != 1 || g.x.dilation != 1) {
      return std::nullopt;
    }
    const Conv3x3Shape s = {.n = g.n,
                            .c = g.c,
                            .h = g.h,
                            .w = g.w,
                            .m = g.m,
                            .pad_top = g.y.pad_begin,
                            .pad_left = g.x.pad_begin,
                            .out_h = g.y.out,
                            .out_w = g.x.out};
    if (!WinogradSuits(s)) return std::nullopt;
    return s;
  }

  // The geometry of dX = conv(dY, W'), for unit strides and pads within the
  // window extent (so dY needs non-negative padding); nullopt otherwise.
  static std::optional<ConvGeometry> TransposedGeometry(const ConvGeometry& g) {
    if (g.y.stride != 1 || g.x.stride != 1) return std::nullopt;
    ConvGeometry t = g;
    t.c = g.m;
    t.h = g.y.out;
    t.w = g.x.out;
    t.m = g.c;
    t.cg = g.mg;
    t.mg = g.cg;
    t.k = t.cg * g.taps;
    t.hw = g.p;
    t.p = g.hw;
    for (auto [dim, from] : {std::pair{&t.y, &g.y}, std::pair{&t.x, &g.x}}) {
      dim->in = from->out;
      dim->out = from->in;
      dim->pad_begin = from->extent() - 1 - from->pad_begin;
      dim->pad_end = from->extent() - 1 - from->pad_end;
      if (dim->pad_begin < 0 || dim->pad_end < 0 ||
          dim->in + dim->pad_begin + dim->pad_end - dim->extent() + 1 !=
              dim->out) {
        return std::nullopt;
      }
    }
    return t;
  }

  // W' [c, mg, kh, kw] per group: W'[g cg + ci, mi, i, j] =
  // W[g mg + mi, ci, kh - 1 - i, kw - 1 - j].
  static Eigen::VectorXf FlippedTransposedWeights(const ConvGeometry& g,
                                                  const float* w) {
    Eigen::VectorXf out(g.m * g.k);
    for (int64_t gi = 0; gi < g.group; ++gi) {
      for (int64_t mi = 0; mi < g.mg; ++mi) {
        for (int64_t ci = 0; ci < g.cg; ++ci) {
          const float* src = w + ((gi * g.mg + mi) * g.cg + ci) * g.taps;
          float* dst = out.data() + ((gi * g.cg + ci) * g.mg + mi) * g.taps;
          for (int64_t t = 0; t < g.taps; ++t) dst[t] = src[g.taps - 1 - t];
        }
      }
    }
    return out;
  }

  // ---- 1x1, no padding: W times the (strided) input pixels.

  // 1x1 maps: NCHW is then [N, C], and the convolution one GEMM per group
  // over the whole batch (Eigen threads it).
  static bool SinglePixel(const ConvGeometry& g) {
    return g.hw == 1 && g.p == 1;
  }

  static void PointwiseForward(const ConvGeometry& g, const float* x,
                               const float* w, const float* b, float* y) {
    if (SinglePixel(g)) {
      const ConstMatrixMap xm(x, g.n, g.c);
      MatrixMap ym(y, g.n, g.m);
      for (int64_t gi = 0; gi < g.group; ++gi) {
        ym.middleCols(gi * g.mg, g.mg).noalias() =
            xm.middleCols(gi * g.cg, g.cg) *
            ConstMatrixMap(w + gi * g.mg * g.k, g.mg, g.k).transpose();
      }
      if (b != nullptr) ym.rowwise() += ConstVectorMap(b, g.m).transpose();
      return;
    }
    const int64_t chunk = ChunkSamples(g.n, g.p);
    const int64_t chunks = CeilDiv(g.n, chunk);
    ParallelFor(chunks, chunks > 1, [&](int64_t ch) {
      thread_local FloatBuffer in_buffer, out_buffer;
      const int64_t n0 = ch * chunk;
      const int64_t s = std::min(chunk, g.n - n0);
      const int64_t cols = s * g.p;
      const float* xs = x + n0 * g.c * g.hw;
      float* ys = y + n0 * g.m * g.p;
      for (int64_t gi = 0; gi < g.group; ++gi) {
        const ConstMatrixMap wg(w + gi * g.mg * g.k, g.mg, g.k);
        if (s == 1 && g.unit_stride()) {
          MatrixMap(ys + gi * g.mg * g.p, g.mg, g.p).noalias() =
              wg * ConstMatrixMap(xs + gi * g.cg * g.hw, g.cg, g.p);
          continue;
        }
        float* in = Scratch(&in_buffer, g.cg * cols);
        GatherPointwise(g, xs, gi * g.cg, s, in);
        float* out = Scratch(&out_buffer, g.mg * cols);
        MatrixMap(out, g.mg, cols).noalias() =
            wg * ConstMatrixMap(in, g.cg, cols);
        ScatterSamples(out, g.m, gi * g.mg, g.mg, g.p, s, ys);
      }
      if (b != nullptr) {
        for (int64_t si = 0; si < s; ++si) {
          MatrixMap(ys + si * g.m * g.p, g.m, g.p).colwise() +=
              ConstVectorMap(b, g.m);
        }
      }
    });
  }

  static void PointwiseBackward(const ConvGeometry& g, const float* x,
                                const float* w, const float* dy, float* dx,
                                float* dw) {
    if (SinglePixel(g)) {
      const ConstMatrixMap dym(dy, g.n, g.m);
      for (int64_t gi = 0; gi < g.group; ++gi) {
        const auto dyg = dym.middleCols(gi * g.mg, g.mg);
        if (dw != nullptr) {
          MatrixMap(dw + gi * g.mg * g.k, g.mg, g.k).noalias() =
              dyg.transpose() *
              ConstMatrixMap(x, g.n, g.c).middleCols(gi * g.cg, g.cg);
        }
        if (dx != nullptr) {
          MatrixMap(dx, g.n, g.c).middleCols(gi * g.cg, g.cg).noalias() =
              dyg * ConstMatrixMap(w + gi * g.mg * g.k, g.mg, g.k);
        }
      }
      return;
    }
    const int64_t chunk = ChunkSamples(g.n, g.p);
    const int64_t chunks = CeilDiv(g.n, chunk);
    const PartialSums partials(dw, g.m * g.k, chunks);
    ParallelFor(partials.count(), partials.count() > 1, [&](int64_t part) {
      thread_local FloatBuffer in_buffer, dy_buffer, dx_buffer;
      float* dw_part = partials.Get(part);
      for (int64_t ch = part; ch < chunks; ch += partials.count()) {
        const int64_t n0 = ch * chunk;
        const int64_t s = std::min(chunk, g.n - n0);
        const int64_t cols = s * g.p;
        const float* xs = x + n0 * g.c * g.hw;
        const float* dys = dy + n0 * g.m * g.p;
        if (s > 1) {
          float* buffer = Scratch(&dy_buffer, g.m * cols);
          GatherSamples(dys, g.m, 0, g.m, g.p, s, buffer);
          dys = buffer;
        }
        for (int64_t gi = 0; gi < g.group; ++gi) {
          const ConstMatrixMap dyg(dys + gi * g.mg * cols, g.mg, cols);
          const ConstMatrixMap wg(w + gi * g.mg * g.k, g.mg, g.k);
          if (dw_part != nullptr) {
            const float* in = xs + gi * g.cg * g.hw;
            if (s > 1 || !g.unit_stride()) {
              float* buffer = Scratch(&in_buffer, g.cg * cols);
              GatherPointwise(g, xs, gi * g.cg, s, buffer);
              in = buffer;
            }
            MatrixMap dwg(dw_part + gi * g.mg * g.k, g.mg, g.k);
            const ConstMatrixMap inm(in, g.cg, cols);
            if (ch == part) {
              dwg.noalias() = dyg * inm.transpose();
            } else {
              dwg.noalias() += dyg * inm.transpose();
            }
          }
          if (dx != nullptr) {
            float* dxs = dx + n0 * g.c * g.hw;
            if (s == 1 && g.unit_stride()) {
              MatrixMap(dxs + gi * g.cg * g.hw, g.cg, g.hw).noalias() =
                  wg.transpose() * dyg;
            } else {
              float* buffer = Scratch(&dx_buffer, g.cg * cols);
              MatrixMap(buffer, g.cg, cols).noalias() = wg.transpose() * dyg;
              ScatterPointwise(g, buffer, gi * g.cg, s, dxs);
            }
          }
        }
      }
    });
    partials.Finish();
  }

  // ---- General: im2col over phase planes, one GEMM per group and chunk.

  static void GemmForward(const ConvGeometry& g, const float* x, const float* w,
                          const float* b, float* y) {
    const PhaseLayout layout(g);
    const int64_t span = layout.span(g);
    const int64_t chunk = ChunkSamples(g.n, span);
    const int64_t chunks = CeilDiv(g.n, chunk);
    ParallelFor(chunks, chunks > 1, [&](int64_t ch) {
      thread_local FloatBuffer phase_buffer, cols_buffer, out_buffer;
      const int64_t n0 = ch * chunk;
      const int64_t s = std::min(chunk, g.n - n0);
      const int64_t cols = s * span;
      for (int64_t gi = 0; gi < g.group; ++gi) {
        const float* phases = LoadPhases(g, layout, x + n0 * g.c * g.hw,
                                         gi * g.cg, s, &phase_buffer);
        float* colsm = Scratch(&cols_buffer, g.k * cols);
        Im2Col(g, layout, phases, 0, cols, colsm);
        float* out = Scratch(&out_buffer, g.mg * cols);
        MatrixMap(out, g.mg, cols).noalias() =
            ConstMatrixMap(w + gi * g.mg * g.k, g.mg, g.k) *
            ConstMatrixMap(colsm, g.k, cols);
        // Drop the junk columns, add the bias.
        for (int64_t si = 0; si < s; ++si) {
          for (int64_t mi = 0; mi < g.mg; ++mi) {
            const int64_t m = gi * g.mg + mi;
            CropSpan(g, layout.wq, out + mi * cols + si * span,
                     b != nullptr ? b[m] : 0.0f,
                     y + ((n0 + si) * g.m + m) * g.p);
          }
        }
      }
    });
  }

  // ---- Direct: phase planes through DirectConvolve, per sample.

  static void DirectForward(const ConvGeometry& g, const float* x,
                            const float* w, const float* b, float* y) {
    const PhaseLayout layout(g);
    const int64_t padded = RoundUp(layout.span(g), kBlockFloats);
    // Fewer samples than threads (batch 1): each sample's work is split.
    const bool wide =
        g.n < omp_get_max_threads() && g.m * g.k * g.p >= kMinWideSampleWork;
    ParallelFor(g.n, !wide && g.n > 1, [&](int64_t n) {
      thread_local FloatBuffer phase_buffer, out_buffer;
      float* out = Scratch(&out_buffer, g.mg * padded);
      for (int64_t gi = 0; gi < g.group; ++gi) {
        const float* phases = LoadPhases(g, layout, x + n * g.c * g.hw,
                                         gi * g.cg, 1, &phase_buffer);
        DirectConvolve(g, layout, phases, w + gi * g.mg * g.k, out, wide);
        for (int64_t mi = 0; mi < g.mg; ++mi) {
          const int64_t m = gi * g.mg + mi;
          CropSpan(g, layout.wq, out + mi * padded, b != nullptr ? b[m] : 0.0f,
                   y + (n * g.m + m) * g.p);
        }
      }
    });
  }

  static void GemmBackward(const ConvGeometry& g, const float* x,
                           const float* w, const float* dy, float* dx,
                           float* dw) {
    const PhaseLayout layout(g);
    const int64_t span = layout.span(g);
    const int64_t chunk = ChunkSamples(g.n, span);
    const int64_t chunks = CeilDiv(g.n, chunk);
    const PartialSums partials(dw, g.m * g.k, chunks);
    ParallelFor(partials.count(), partials.count() > 1, [&](int64_t part) {
      thread_local FloatBuffer phase_buffer, cols_buffer, dy_buffer;
      float* dw_part = partials.Get(part);
      for (int64_t ch = part; ch < chunks; ch += partials.count()) {
        const int64_t n0 = ch * chunk;
        const int64_t s = std::min(chunk, g.n - n0);
        const int64_t cols = s * span;
        // dY laid out like the forward GEMM's output, junk columns zero.
        float* dyp = Scratch(&dy_buffer, g.m * cols);
        std::fill(dyp, dyp + g.m * cols, 0.0f);
        for (int64_t si = 0; si < s; ++si) {
          for (int64_t m = 0; m < g.m; ++m) {
            ExpandToSpan(g, layout.wq, dy + ((n0 + si) * g.m + m) * g.p,
                         dyp + m * cols + si * span);
          }
        }
        for (int64_t gi = 0; gi < g.group; ++gi) {
          const ConstMatrixMap dyg(dyp + gi * g.mg * cols, g.mg, cols);
          const ConstMatrixMap wg(w + gi * g.mg * g.k, g.mg, g.k);
          float* colsm = Scratch(&cols_buffer, g.k * cols);
          if (dw_part != nullptr) {
            const float* phases = LoadPhases(g, layout, x + n0 * g.c * g.hw,
                                             gi * g.cg, s, &phase_buffer);
            Im2Col(g, layout, phases, 0, cols, colsm);
            MatrixMap dwg(dw_part + gi * g.mg * g.k, g.mg, g.k);
            const ConstMatrixMap cm(colsm, g.k, cols);
            if (ch == part) {
              dwg.noalias() = dyg * cm.transpose();
            } else {
              dwg.noalias() += dyg * cm.transpose();
            }
          }
          if (dx != nullptr) {
            MatrixMap(colsm, g.k, cols).noalias() = wg.transpose() * dyg;
            const int64_t planes = s * g.cg;
            float* phases = Scratch(&phase_buffer, layout.BufferSize(planes));
            std::fill(phases, phases + layout.BufferSize(planes), 0.0f);
            Col2ImAdd(g, layout, colsm, 0, cols, phases);
            for (int64_t si = 0; si < s; ++si) {
              for (int64_t ci = 0; ci < g.cg; ++ci) {
                layout.Store(g, phases + (si * g.cg + ci) * layout.plane,
                             dx + ((n0 + si) * g.c + gi * g.cg + ci) * g.hw);
              }
            }
          }
        }
      }
    });
    partials.Finish();
  }

  // ---- Depthwise on larger maps: whole output planes per tap.

  static void DepthwiseForward(const ConvGeometry& g, const float* x,
                               const float* w, const float* b, float* y) {
    const PhaseLayout layout(g);
    const int64_t span = layout.span(g);
    const int64_t mult = g.mg;
    const int64_t planes = g.n * g.c;
    ParallelFor(planes, planes > 1, [&](int64_t nc) {
      thread_local FloatBuffer phase_buffer, acc_buffer;
      float* phase = Scratch(&phase_buffer, layout.BufferSize(1));
      layout.Load(g, x + nc * g.hw, phase);
      std::fill(phase + layout.plane, phase + layout.BufferSize(1), 0.0f);
      ArrayMap acc(Scratch(&acc_buffer, span), span);
      const int64_t n = nc / g.c;
      const int64_t c = nc % g.c;
      for (int64_t mi = 0; mi < mult; ++mi) {
        const int64_t m = c * mult + mi;
        const float* wm = w + m * g.taps;
        acc.setZero();
        for (int64_t i = 0; i < g.y.kernel; ++i) {
          for (int64_t j = 0; j < g.x.kernel; ++j) {
            acc += wm[i * g.x.kernel + j] *
                   ConstArrayMap(phase + layout.TapOffset(g, i, j), span);
          }
        }
        CropSpan(g, layout.wq, acc.data(), b != nullptr ? b[m] : 0.0f,
                 y + (n * g.m + m) * g.p);
      }
    });
  }

  // Per input channel, so that dW sums over the batch in a fixed order.
  static void DepthwiseBackward(const ConvGeometry& g, const float* x,
                                const float* w, const float* dy, float* dx,
                                float* dw) {
    const PhaseLayout layout(g);
    const int64_t span = layout.span(g);
    const int64_t size = layout.BufferSize(1);
    const int64_t mult = g.mg;
    ParallelFor(g.c, g.c > 1, [&](int64_t c) {
      thread_local FloatBuffer phase_buffer, grad_buffer, dy_buffer;
      float* phase = Scratch(&phase_buffer, size);
      float* grad = Scratch(&grad_buffer, size);
      // dY with the junk columns zero.
      ArrayMap dyp(Scratch(&dy_buffer, span), span);
      dyp.setZero();
      std::fill(phase + layout.plane, phase + size, 0.0f);
      if (dw != nullptr) {
        std::fill(dw + c * mult * g.taps, dw + (c + 1) * mult * g.taps, 0.0f);
      }
      for (int64_t n = 0; n < g.n; ++n) {
        if (dw != nullptr) layout.Load(g, x + (n * g.c + c) * g.hw, phase);
        if (dx != nullptr) std::fill(grad, grad + size, 0.0f);
        for (int64_t mi = 0; mi < mult; ++mi) {
          const int64_t m = c * mult + mi;
          ExpandToSpan(g, layout.wq, dy + (n * g.m + m) * g.p, dyp.data());
          for (int64_t i = 0; i < g.y.kernel; ++i) {
            for (int64_t j = 0; j < g.x.kernel; ++j) {
              const int64_t t = i * g.x.kernel + j;
              const int64_t offset = layout.TapOffset(g, i, j);
              if (dw != nullptr) {
                dw[m * g.taps + t] +=
                    (dyp * ConstArrayMap(phase + offset, span)).sum();
              }
              if (dx != nullptr) {
                ArrayMap(grad + offset, span) += w[m * g.taps + t] * dyp;
              }
            }
          }
        }
        if (dx != nullptr) layout.Store(g, grad, dx + (n * g.c + c) * g.hw);
      }
    });
  }

  // ---- Depthwise on small maps: channels-last, vectors over channels.

  // Calls f(output pixel, input pixel, tap) for every tap that reads a real
  // input.
  template <typename F>
  static void ForEachTap(const ConvGeometry& g, F&& f) {
    for (int64_t oy = 0; oy < g.y.out; ++oy) {
      for (int64_t i = 0; i < g.y.kernel; ++i) {
        const int64_t iy = g.y.InputIndex(oy, i);
        if (iy < 0 || iy >= g.h) continue;
        for (int64_t ox = 0; ox < g.x.out; ++ox) {
          for (int64_t j = 0; j < g.x.kernel; ++j) {
            const int64_t ix = g.x.InputIndex(ox, j);
            if (ix < 0 || ix >= g.w) continue;
            f(oy * g.x.out + ox, iy * g.w + ix, i * g.x.kernel + j);
          }
        }
      }
    }
  }

  // W [m, taps] column-major: column t holds tap t's weights, [c, mult].
  static Eigen::MatrixXf TapMajor(const ConvGeometry& g, const float* w) {
    return ConstMatrixMap(w, g.m, g.taps);
  }

  // acc[c, mult] += a[c, mult] * v[c] broadcast over mult, as flat vectors
  // when mult is 1 (a row-major [c, 1] map would not vectorise).
  static void MultiplyAdd(int64_t c, int64_t mult, const float* a,
                          const float* v, float* acc) {
    if (mult == 1) {
      ArrayMap(acc, c) += ConstArrayMap(a, c) * ConstArrayMap(v, c);
    } else {
      ArrayRMMap(acc, c, mult) +=
          ConstArrayRMMap(a, c, mult).colwise() * ConstArrayMap(v, c);
    }
  }

  static void SmallDepthwiseForward(const ConvGeometry& g, const float* x,
                                    const float* w, const float* b, float* y) {
    const Eigen::MatrixXf wt = TapMajor(g, w);
    const int64_t mult = g.mg;
    ParallelFor(g.n, g.n > 1, [&](int64_t n) {
      thread_local FloatBuffer in_buffer, out_buffer;
      float* xt = Scratch(&in_buffer, g.hw * g.c);
      float* yt = Scratch(&out_buffer, g.p * g.m);
      MatrixMap(xt, g.hw, g.c) =
          ConstMatrixMap(x + n * g.c * g.hw, g.c, g.hw).transpose();
      ArrayRMMap ya(yt, g.p, g.m);
      if (b != nullptr) {
        ya.rowwise() = ConstArrayMap(b, g.m).transpose();
      } else {
        ya.setZero();
      }
      ForEachTap(g, [&](int64_t o, int64_t in, int64_t t) {
        MultiplyAdd(g.c, mult, wt.col(t).data(), xt + in * g.c, yt + o * g.m);
      });
      MatrixMap(y + n * g.m * g.p, g.m, g.p) =
          ConstMatrixMap(yt, g.p, g.m).transpose();
    });
  }

  static void SmallDepthwiseBackward(const ConvGeometry& g, const float* x,
                                     const float* w, const float* dy, float* dx,
                                     float* dw) {
    const Eigen::MatrixXf wt = TapMajor(g, w);
    const int64_t mult = g.mg;
    // Partial sums of dW, tap-major, one column per interleaved set of
    // samples.
    const int64_t partial_count = std::min(kMaxPartials, g.n);
    Eigen::MatrixXf dwt =
        Eigen::MatrixXf::Zero(g.m * g.taps, dw != nullptr ? partial_count : 0);
    ParallelFor(partial_count, partial_count > 1, [&](int64_t part) {
      thread_local FloatBuffer in_buffer, dy_buffer, dx_buffer;
      for (int64_t n = part; n < g.n; n += partial_count) {
        float* dyt = Scratch(&dy_buffer, g.p * g.m);
        MatrixMap(dyt, g.p, g.m) =
            ConstMatrixMap(dy + n * g.m * g.p, g.m, g.p).transpose();
        if (dw != nullptr) {
          float* xt = Scratch(&in_buffer, g.hw * g.c);
          MatrixMap(xt, g.hw, g.c) =
              ConstMatrixMap(x + n * g.c * g.hw, g.c, g.hw).transpose();
          float* acc = dwt.col(part).data();
          ForEachTap(g, [&](int64_t o, int64_t in, int64_t t) {
            MultiplyAdd(g.c, mult, dyt + o * g.m, xt + in * g.c, acc + t * g.m);
          });
        }
        if (dx != nullptr) {
          float* dxt = Scratch(&dx_buffer, g.hw * g.c);
          std::fill(dxt, dxt + g.hw * g.c, 0.0f);
          ForEachTap(g, [&](int64_t o, int64_t in, int64_t t) {
            if (mult == 1) {
              ArrayMap(dxt + in * g.c, g.c) +=
                  ConstArrayMap(wt.col(t).data(), g.c) *
                  ConstArrayMap(dyt + o * g.m, g.c);
            } else {
              ArrayMap(dxt + in * g.c, g.c) +=
                  (ConstArrayRMMap(wt.col(t).data(), g.c, mult) *
                   ConstArrayRMMap(dyt + o * g.m, g.c, mult))
                      .rowwise()
                      .sum();
            }
          });
          MatrixMap(dx + n * g.c * g.hw, g.c, g.hw) =
              ConstMatrixMap(dxt, g.hw, g.c).transpose();
        }
      }
    });
    if (dw != nullptr) {
      Eigen::VectorXf total = dwt.col(0);
      for (int64_t part = 1; part < partial_count; ++part) {
        total += dwt.col(part);
      }
      MatrixMap(dw, g.m, g.taps) =
          ConstMatrixMap(total.data(), g.taps, g.m).transpose();
    }
  }

  const WindowAttrs attrs_;
  const int rank_;
  const int64_t group_;
};

absl::StatusOr<std::unique_ptr<Kernel>> CreateConv(const OpConfig& config) {
  int rank = 0;
  absl::StatusOr<WindowAttrs> attrs = ParseWindow(config, false, &rank);
  if (!attrs.ok()) return attrs.status();
  if (rank > 2) {
    return absl::InvalidArgumentError(absl::StrCat(
        "Conv: only 1-D and 2-D convolution are supported (node '",
        config.node_name, "': its attributes give ", rank, " spatial dims)"));
  }
  absl::StatusOr<int64_t> group = config.GetInt("group", 1);
  if (!group.ok()) return group.status();
  if (*group < 1) {
    return NodeError(config, absl::StrCat("group ", *group, " must be >= 1"));
  }
  return std::make_unique<ConvKernel>(LiftTo2d(*std::move(attrs)), rank,
                                      *group);
}

// ------------------------------------------------------------- Pooling ----

// A resolved pooling window over kPoolRank spatial dims (leading unit dims
// for lower ranks) of `planes` = N * C planes.
struct PoolGeometry {
  int64_t planes;
  WindowDim dims[kPoolRank];
  int64_t in_size;   // elements per input plane
  int64_t out_size;  // elements per output plane

  // Calls f(input offset, output offset, count) for each run of output
  // columns that one kernel tap maps onto real inputs (at the window's
  // horizontal stride), taps in window order.
  template <typename F>
  void ForEachRun(F&& f) const {
    const WindowDim& d = dims[0];
    const WindowDim& h = dims[1];
    const WindowDim& w = dims[2];
    for (int64_t a = 0; a < d.kernel; ++a) {
      for (int64_t b = 0; b < h.kernel; ++b) {
        for (int64_t c = 0; c < w.kernel; ++c) {
          const auto [lo, hi] = w.ValidRange(c);
          if (lo >= hi) continue;
          for (int64_t od = 0; od < d.out; ++od) {
            const int64_t id = d.InputIndex(od, a);
            if (id < 0 || id >= d.in) continue;
            for (int64_t oh = 0; oh < h.out; ++oh) {
              const int64_t ih = h.InputIndex(oh, b);
              if (ih < 0 || ih >= h.in) continue;
              f((id * h.in + ih) * w.in + w.InputIndex(lo, c),
                (od * h.out + oh) * w.out + lo, hi - lo);
            }
          }
        }
      }
    }
  }
};

absl::StatusOr<PoolGeometry> ResolvePool(const WindowAttrs& attrs,
                                         absl::string_view op,
                                         const Shape& in) {
  const size_t rank = attrs.kernel.size();
  if (in.size() != rank + 2) {
    return ShapeError(
        op, absl::StrCat("input ", ShapeToString(in), " must have rank ",
                         rank + 2, " to match kernel_shape"));
  }
  absl::StatusOr<std::vector<WindowDim>> dims =
      Resolve(attrs, op, SpatialDims(in), attrs.kernel);
  if (!dims.ok()) return dims.status();
  PoolGeometry g;
  g.planes = in[0] * in[1];
  g.in_size = 1;
  g.out_size = 1;
  // Per sample: channels x output elements x kernel taps.
  int64_t work = in[1];
  bool within = true;
  for (size_t d = 0; d < rank; ++d) {
    g.dims[kPoolRank - rank + d] = (*dims)[d];
    g.in_size *= (*dims)[d].in;
    g.out_size *= (*dims)[d].out;
    within = within && MulWithin(work, (*dims)[d].out, kMaxWindowWork, &work) &&
             MulWithin(work, (*dims)[d].kernel, kMaxWindowWork, &work);
  }
  if (!within) {
    return absl::ResourceExhaustedError(
        absl::StrCat(op, ": a sample needs more than ", kMaxWindowWork,
                     " window taps (kMaxWindowWork)"));
  }
  return g;
}

// Reads the window of MaxPool / AveragePool: kernel_shape is required and
// sets the rank, 1 to kPoolRank.
absl::StatusOr<WindowAttrs> ParsePoolWindow(const OpConfig& config) {
  int rank = 0;
  absl::StatusOr<WindowAttrs> attrs = ParseWindow(config, true, &rank);
  if (!attrs.ok()) return attrs.status();
  if (attrs->kernel.empty())
    return NodeError(config, "kernel_shape is required");
  if (rank > kPoolRank) {
    return NodeError(config, absl::StrCat(rank,
                                          "-D pooling is not supported "
                                          "(at most ",
                                          kPoolRank, "-D)"));
  }
  return attrs;
}

class PoolKernel : public Kernel {
 public:
  PoolKernel(absl::string_view op, WindowAttrs attrs)
      : op_(op), attrs_(std::move(attrs)) {}

  absl::StatusOr<Shape> OutputShape(
      absl::Span<const Shape* const> inputs) const override {
    absl::StatusOr<PoolGeometry> g = ResolvePool(attrs_, op_, *inputs[0]);
    if (!g.ok()) return g.status();
    Shape out = {(*inputs[0])[0], (*inputs[0])[1]};
    for (size_t d = kPoolRank - attrs_.kernel.size(); d < kPoolRank; ++d) {
      out.push_back(g->dims[d].out);
    }
    return CheckedShape(std::move(out));
  }

 protected:
  PoolGeometry Geometry(const Tensor& input) const {
    return *ResolvePool(attrs_, op_, input.shape());
  }

  const std::string op_;
  const WindowAttrs attrs_;
};

// Max over the window, padding excluded. The gradient goes to the first
// maximal input of each window (in window order), as in PyTorch.
class MaxPoolKernel : public PoolKernel {
 public:
  using PoolKernel::PoolKernel;

  // Also rejects padding as wide as the window, where a window could hold
  // no input at all (ONNX requires pads smaller than the kernel).
  absl::StatusOr<Shape> OutputShape(
      absl::Span<const Shape* const> inputs) const override {
    absl::StatusOr<Shape> out = PoolKernel::OutputShape(inputs);
    if (!out.ok()) return out;
    const PoolGeometry g = *ResolvePool(attrs_, op_, *inputs[0]);
    for (const WindowDim& d : g.dims) {
      if (d.pad_begin >= d.extent() || d.pad_end >= d.extent()) {
        return ShapeError(op_,
                          absl::StrCat("pads (", d.pad_begin, ", ", d.pad_end,
                                       ") must be smaller than the "
                                       "window extent ",
                                       d.extent()));
      }
    }
    return out;
  }

  void Forward(absl::Span<const Tensor* const> inputs,
               Tensor* output) const override {
    const PoolGeometry g = Geometry(*inputs[0]);
    const int64_t stride = g.dims[2].stride;
    const float* x = inputs[0]->data();
    float* y = output->data();
#pragma omp parallel for schedule(static) if (g.planes * g.out_size > \
                                              kParallelWork)
    for (int64_t pl = 0; pl < g.planes; ++pl) {
      const float* in = x + pl * g.in_size;
      float* out = y + pl * g.out_size;
      ArrayMap(out, g.out_size)
          .setConstant(-std::numeric_limits<float>::infinity());
      g.ForEachRun([&](int64_t i, int64_t o, int64_t count) {
        ArrayMap seg(out + o, count);
        seg = seg.max(
            StridedConstArrayMap(in + i, count, Eigen::InnerStride<>(stride)));
      });
    }
  }

  void Backward(absl::Span<const Tensor* const> inputs,
                const Tensor& grad_output,
                absl::Span<Tensor* const> grad_inputs) const override {
    if (grad_inputs[0] == nullptr) return;
    const PoolGeometry g = Geometry(*inputs[0]);
    const int64_t stride = g.dims[2].stride;
    const float* x = inputs[0]->data();
    const float* dy = grad_output.data();
    float* dx = grad_inputs[0]->data();
#pragma omp parallel for schedule(static) if (g.planes * g.out_size > \
                                              kParallelWork)
    for (int64_t pl = 0; pl < g.planes; ++pl) {
      thread_local Eigen::ArrayXf best;
      thread_local Eigen::ArrayXi arg;
      const float* in = x + pl * g.in_size;
      best.setConstant(g.out_size, -std::numeric_limits<float>::infinity());
      arg.setConstant(g.out_size, -1);
      g.ForEachRun([&](int64_t i, int64_t o, int64_t count) {
        const StridedConstArrayMap v(in + i, count,
                                     Eigen::InnerStride<>(stride));
        auto b = best.segment(o, count);
        auto a = arg.segment(o, count);
        for (int64_t k = 0; k < count; ++k) {
          if (v[k] > b[k]) {
            b[k] = v[k];
            a[k] = static_cast<int>(i + k * stride);
          }
        }
      });
      float* grad = dx + pl * g.in_size;
      std::fill(grad, grad + g.in_size, 0.0f);
      const float* up = dy + pl * g.out_size;
      for (int64_t o = 0; o < g.out_size; ++o) {
        if (arg[o] >= 0) grad[arg[o]] += up[o];
      }
    }
  }

 private:
  // Elements below which a pool runs on one thread.
  static constexpr int64_t kParallelWork = 1 << 14;
};

// Mean over the window; the divisor counts padding only with
// count_include_pad (and never the part of a ceil_mode window past the
// padding, as in PyTorch).
class AveragePoolKernel : public PoolKernel {
 public:
  AveragePoolKernel(absl::string_view op, WindowAttrs attrs,
                    bool count_include_pad)
      : PoolKernel(op, std::move(attrs)),
        count_include_pad_(count_include_pad) {}

  void Forward(absl::Span<const Tensor* const> inputs,
               Tensor* output) const override {
    const PoolGeometry g = Geometry(*inputs[0]);
    const Eigen::ArrayXf inverse = InverseCounts(g);
    const int64_t stride = g.dims[2].stride;
    const float* x = inputs[0]->data();
    float* y = output->data();
#pragma omp parallel for schedule(static) if (g.planes * g.out_size > \
                                              kParallelWork)
    for (int64_t pl = 0; pl < g.planes; ++pl) {
      const float* in = x + pl * g.in_size;
      ArrayMap out(y + pl * g.out_size, g.out_size);
      out.setZero();
      g.ForEachRun([&](int64_t i, int64_t o, int64_t count) {
        out.segment(o, count) +=
            StridedConstArrayMap(in + i, count, Eigen::InnerStride<>(stride));
      });
      out *= inverse;
    }
  }

  void Backward(absl::Span<const Tensor* const> inputs,
                const Tensor& grad_output,
                absl::Span<Tensor* const> grad_inputs) const override {
    if (grad_inputs[0] == nullptr) return;
    const PoolGeometry g = Geometry(*inputs[0]);
    const Eigen::ArrayXf inverse = InverseCounts(g);
    const int64_t stride = g.dims[2].stride;
    const float* dy = grad_output.data();
    float* dx = grad_inputs[0]->data();
#pragma omp parallel for schedule(static) if (g.planes * g.out_size > \
                                              kParallelWork)
    for (int64_t pl = 0; pl < g.planes; ++pl) {
      thread_local Eigen::ArrayXf scaled;
      scaled = ConstArrayMap(dy + pl * g.out_size, g.out_size) * inverse;
      float* grad = dx + pl * g.in_size;
      std::fill(grad, grad + g.in_size, 0.0f);
      g.ForEachRun([&](int64_t i, int64_t o, int64_t count) {
        StridedArrayMap(grad + i, count, Eigen::InnerStride<>(stride)) +=
            scaled.segment(o, count);
      });
    }
  }

 private:
  static constexpr int64_t kParallelWork = 1 << 14;

  // 1 / (number of counted elements) for every output position of a plane.
  Eigen::ArrayXf InverseCounts(const PoolGeometry& g) const {
    // Counts are separable: a product of per-dim counts.
    std::vector<float> per_dim[kPoolRank];
    for (int d = 0; d < kPoolRank; ++d) {
      const WindowDim& w = g.dims[d];
      const int64_t lo = count_include_pad_ ? -w.pad_begin : 0;
      const int64_t hi = count_include_pad_ ? w.in + w.pad_end : w.in;
      for (int64_t o = 0; o < w.out; ++o) {
        int64_t count = 0;
        for (int64_t t = 0; t < w.kernel; ++t) {
          const int64_t i = w.InputIndex(o, t);
          count += i >= lo && i < hi;
        }
        per_dim[d].push_back(static_cast<float>(count));
      }
    }
    Eigen::ArrayXf inverse(g.out_size);
    int64_t k = 0;
    for (float a : per_dim[0]) {
      for (float b : per_dim[1]) {
        for (float c : per_dim[2]) {
          const float count = a * b * c;
          inverse[k++] = count > 0 ? 1.0f / count : 0.0f;
        }
      }
    }
    return inverse;
  }

  const bool count_include_pad_;
};

absl::StatusOr<std::unique_ptr<Kernel>> CreateMaxPool(const OpConfig& config) {
  absl::StatusOr<WindowAttrs> attrs = ParsePoolWindow(config);
  if (!attrs.ok()) return attrs.status();
  absl::StatusOr<int64_t> storage_order = config.GetInt("storage_order", 0);
  if (!storage_order.ok()) return storage_order.status();
  if (*storage_order != 0) {
    return NodeError(config, absl::StrCat("unsupported storage_order ",
                                          *storage_order, " (only 0)"));
  }
  return std::make_unique<MaxPoolKernel>("MaxPool", *std::move(attrs));
}

absl::StatusOr<std::unique_ptr<Kernel>> CreateAveragePool(
    const OpConfig& config) {
  absl::StatusOr<WindowAttrs> attrs = ParsePoolWindow(config);
  if (!attrs.ok()) return attrs.status();
  absl::StatusOr<int64_t> include = config.GetInt("count_include_pad", 0);
  if (!include.ok()) return include.status();
  if (*include != 0 && *include != 1) {
    return NodeError(config,
                     absl::StrCat("unsupported count_include_pad ", *include));
  }
  return std::make_unique<AveragePoolKernel>("AveragePool", *std::move(attrs),
                                             *include == 1);
}

// GlobalAveragePool / GlobalMaxPool: [N, C, ...] -> [N, C, 1, ...].
class GlobalPoolKernel : public Kernel {
 public:
  explicit GlobalPoolKernel(bool max) : max_(max) {}

  absl::StatusOr<Shape> OutputShape(
      absl::Span<const Shape* const> inputs) const override {
    const Shape& in = *inputs[0];
    const char* op = max_ ? "GlobalMaxPool" : "GlobalAveragePool";
    if (in.size() < 2) {
      return ShapeError(op, absl::StrCat("input ", ShapeToString(in),
                                         " must be [N, C, ...]"));
    }
    if (in.size() > 2 && Product(in.begin() + 2, in.end()) == 0) {
      return ShapeError(op, absl::StrCat("input ", ShapeToString(in),
                                         " has no spatial elements"));
    }
    Shape out = in;
    std::fill(out.begin() + 2, out.end(), 1);
    return out;
  }

  void Forward(absl::Span<const Tensor* const> inputs,
               Tensor* output) const override {
    const Tensor& x = *inputs[0];
    const int64_t rows = x.dim(0) * x.dim(1);
    const ConstMatrixMap m =
        x.AsMatrix(rows, x.size() / std::max<int64_t>(rows, 1));
    VectorMap y(output->data(), rows);
    if (max_) {
      y = m.rowwise().maxCoeff();
    } else {
      y = m.rowwise().mean();
    }
  }

  void Backward(absl::Span<const Tensor* const> inputs,
                const Tensor& grad_output,
                absl::Span<Tensor* const> grad_inputs) const override {
    if (grad_inputs[0] == nullptr) return;
    const Tensor& x = *inputs[0];
    const int64_t rows = x.dim(0) * x.dim(1);
    const int64_t cols = x.size() / std::max<int64_t>(rows, 1);
    MatrixMap dx = grad_inputs[0]->AsMatrix(rows, cols);
    const ConstVectorMap dy(grad_output.data(), rows);
    if (!max_) {
      dx.colwise() = dy / static_cast<float>(cols);
      return;
    }
    dx.setZero();
    const ConstMatrixMap m = x.AsMatrix(rows, cols);
    for (int64_t r = 0; r < rows; ++r) {
      Eigen::Index arg = 0;
      m.row(r).maxCoeff(&arg);
      dx(r, arg) = dy[r];
    }
  }

 private:
  const bool max_;
};

absl::StatusOr<std::unique_ptr<Kernel>> CreateGlobalAveragePool(
    const OpConfig&) {
  return std::make_unique<GlobalPoolKernel>(false);
}
absl::StatusOr<std::unique_ptr<Kernel>> CreateGlobalMaxPool(const OpConfig&) {
  return std::make_unique<GlobalPoolKernel>(true);
}

// -------------------------------------------------- BatchNormalization ----

// Inference-form batch normalization over [N, C, ...]:
// Y = scale * (X - mean) / sqrt(var + epsilon) + B per channel. Backward
// gives the gradients of X, scale and B; those of mean and var are zero, as
// running statistics are not trained.
class BatchNormKernel : public Kernel {
 public:
  explicit BatchNormKernel(float epsilon) : epsilon_(epsilon) {}
  float epsilon() const { return epsilon_; }

  absl::StatusOr<Shape> OutputShape(
      absl::Span<const Shape* const> inputs) const override {
    const Shape& x = *inputs[0];
    if (x.size() < 2) {
      return ShapeError(
          "BatchNormalization",
          absl::StrCat("X ", ShapeToString(x), " must be [N, C, ...]"));
    }
    static constexpr const char* kNames[] = {"scale", "B", "input_mean",
                                             "input_var"};
    for (int i = 1; i < 5; ++i) {
      if (*inputs[i] != Shape{x[1]}) {
        return ShapeError(
            "BatchNormalization",
            absl::StrCat(kNames[i - 1], " ", ShapeToString(*inputs[i]),
                         " must be [", x[1], "] for X ", ShapeToString(x)));
      }
    }
    return x;
  }

  // Per sample, Y = X * a + shift with a and shift expanded to one value per
  // element of a sample: flat vector operations whatever the spatial size
  // (MobileNet's last maps are 1x1, where per-channel rows would not
  // vectorise).
  void Forward(absl::Span<const Tensor* const> inputs,
               Tensor* output) const override {
    const Tensor& x = *inputs[0];
    const int64_t n = x.dim(0);
    const int64_t size = n == 0 ? 0 : x.size() / n;
    const Eigen::ArrayXf a = Multiplier(inputs);
    const Eigen::ArrayXf shift = ConstArrayMap(inputs[2]->data(), a.size()) -
                                 ConstArrayMap(inputs[3]->data(), a.size()) * a;
    const Eigen::ArrayXf a_all = Expand(a, size);
    const Eigen::ArrayXf shift_all = Expand(shift, size);
#pragma omp parallel for schedule(static) if (x.size() > kParallelWork)
    for (int64_t i = 0; i < n; ++i) {
      ArrayMap(output->data() + i * size, size) =
          ConstArrayMap(x.data() + i * size, size) * a_all + shift_all;
    }
  }

  void Backward(absl::Span<const Tensor* const> inputs,
                const Tensor& grad_output,
                absl::Span<Tensor* const> grad_inputs) const override {
    const Tensor& x = *inputs[0];
    const int64_t n = x.dim(0);
    const int64_t channels = x.dim(1);
    const int64_t size = n == 0 ? 0 : x.size() / n;
    const float* dy = grad_output.data();
    if (grad_inputs[0] != nullptr) {
      const Eigen::ArrayXf a_all = Expand(Multiplier(inputs), size);
      float* dx = grad_inputs[0]->data();
#pragma omp parallel for schedule(static) if (x.size() > kParallelWork)
      for (int64_t i = 0; i < n; ++i) {
        ArrayMap(dx + i * size, size) =
            ConstArrayMap(dy + i * size, size) * a_all;
      }
    }
    for (int i = 3; i < 5; ++i) {
      if (grad_inputs[i] != nullptr) grad_inputs[i]->SetZero();
    }
    Tensor* dscale = grad_inputs[1];
    Tensor* dbias = grad_inputs[2];
    if (dscale == nullptr && dbias == nullptr) return;
    // Per element of a sample, sums over the batch in sample order (threads
    // split the elements, so the sums do not depend on their number):
    // sum_dy = Σ dY and sum_dyx = Σ dY (X - mean).
    const Eigen::ArrayXf mean_all =
        Expand(ConstArrayMap(inputs[3]->data(), channels), size);
    Eigen::ArrayXf sum_dy = Eigen::ArrayXf::Zero(size);
    Eigen::ArrayXf sum_dyx = Eigen::ArrayXf::Zero(size);
    const int64_t blocks = CeilDiv(size, kSumBlock);
#pragma omp parallel for schedule(static) if (x.size() > kParallelWork)
    for (int64_t blk = 0; blk < blocks; ++blk) {
      const int64_t begin = blk * kSumBlock;
      const int64_t len = std::min(kSumBlock, size - begin);
      auto g_sum = sum_dy.segment(begin, len);
      auto gx_sum = sum_dyx.segment(begin, len);
      const auto m = mean_all.segment(begin, len);
      for (int64_t i = 0; i < n; ++i) {
        const ConstArrayMap g(dy + i * size + begin, len);
        g_sum += g;
        gx_sum += g * (ConstArrayMap(x.data() + i * size + begin, len) - m);
      }
    }
    const int64_t spatial = channels == 0 ? 0 : size / channels;
    const Eigen::ArrayXf inv_std =
        (ConstArrayMap(inputs[4]->data(), channels) + epsilon_).rsqrt();
    if (dbias != nullptr) {
      VectorMap(dbias->data(), channels) =
          Eigen::Map<const MatrixRM>(sum_dy.data(), channels, spatial)
              .rowwise()
              .sum();
    }
    if (dscale != nullptr) {
      VectorMap(dscale->data(), channels) =
          (Eigen::Map<const MatrixRM>(sum_dyx.data(), channels, spatial)
               .rowwise()
               .sum()
               .array() *
           inv_std)
              .matrix();
    }
  }

 private:
  static constexpr int64_t kParallelWork = 1 << 15;
  // Elements per parallel block of the gradient sums.
  static constexpr int64_t kSumBlock = 1024;

  // `per_channel` [C] repeated over the spatial elements: [C * size / C].
  static Eigen::ArrayXf Expand(const Eigen::ArrayXf& per_channel,
                               int64_t size) {
    const int64_t channels = per_channel.size();
    const int64_t spatial = channels == 0 ? 0 : size / channels;
    Eigen::ArrayXf out(size);
    Eigen::Map<ArrayRM>(out.data(), channels, spatial).colwise() = per_channel;
    return out;
  }

  // scale / sqrt(var + epsilon).
  Eigen::ArrayXf Multiplier(absl::Span<const Tensor* const> inputs) const {
    const int64_t c = inputs[1]->size();
    return ConstArrayMap(inputs[1]->data(), c) *
           (ConstArrayMap(inputs[4]->data(), c) + epsilon_).rsqrt();
  }

  const float epsilon_;
};

// ------------------------------------------ Conv + BatchNormalization ----

// A Conv whose only consumer is an inference-form BatchNormalization, run as
// one convolution on BN-folded weights:
//   Y = conv(X, a ⊙ W) + a ⊙ (B - mean) + bias,  a = scale / sqrt(var + eps)
// (a per output channel; B is the Conv's bias, 0 when it has none). The same
// function as the two nodes up to float rounding, without the Conv output
// tensor and the BN pass over it. Inputs: X, W, [B], scale, bias, mean, var.
// Backward, with W' = a ⊙ W, b' the folded bias and dW', db' the Conv's
// gradients at (W', b'):
//   dW = a ⊙ dW',  dB = a ⊙ db',  dbias = db',
//   dscale = (Σ_k dW' ⊙ W + db' ⊙ (B - mean)) / sqrt(var + eps),
// the first sum being Σ dY ⊙ conv(X, W) since the convolution is linear in
// W; dmean and dvar are zero, as BatchNormKernel's.
class ConvBatchNormKernel : public Kernel {
 public:
  ConvBatchNormKernel(const Kernel& conv, float epsilon, bool conv_bias)
      : conv_(conv),
        batch_norm_(epsilon),
        epsilon_(epsilon),
        conv_bias_(conv_bias) {}

  absl::StatusOr<Shape> OutputShape(
      absl::Span<const Shape* const> inputs) const override {
    const int bn = BnInput();
    absl::StatusOr<Shape> conv = conv_.OutputShape(inputs.subspan(0, bn));
    if (!conv.ok()) return conv.status();
    const Shape* bn_inputs[] = {&*conv, inputs[bn], inputs[bn + 1],
                                inputs[bn + 2], inputs[bn + 3]};
    return batch_norm_.OutputShape(bn_inputs);
  }

  void Forward(absl::Span<const Tensor* const> inputs,
               Tensor* output) const override {
    thread_local Tensor weights, bias;
    Fold(inputs, InvStd(inputs), &weights, &bias);
    const Tensor* conv_inputs[] = {inputs[0], &weights, &bias};
    conv_.Forward(conv_inputs, output);
  }

  void Backward(absl::Span<const Tensor* const> inputs,
                const Tensor& grad_output,
                absl::Span<Tensor* const> grad_inputs) const override {
    const int bn = BnInput();
    thread_local Tensor weights, bias, d_weights, d_bias;
    const Eigen::ArrayXf inv_std = InvStd(inputs);
    const Eigen::ArrayXf a = Fold(inputs, inv_std, &weights, &bias);
    const int64_t m = bias.size();
    const int64_t k = m == 0 ? 0 : weights.size() / m;
    Tensor* d_w = grad_inputs[1];
    Tensor* d_b = conv_bias_ ? grad_inputs[2] : nullptr;
    Tensor* d_scale = grad_inputs[bn];
    Tensor* d_shift = grad_inputs[bn + 1];
    const bool want_dw = d_w != nullptr || d_scale != nullptr;
    const bool want_db =
        d_b != nullptr || d_scale != nullptr || d_shift != nullptr;
    if (want_dw) d_weights.Resize(weights.shape());
    if (want_db) d_bias.Resize(bias.shape());
    const Tensor* conv_inputs[] = {inputs[0], &weights, &bias};
    Tensor* conv_grads[] = {grad_inputs[0], want_dw ? &d_weights : nullptr,
                            want_db ? &d_bias : nullptr};
    conv_.Backward(conv_inputs, grad_output, conv_grads);

    if (d_w != nullptr) {
      MatrixMap(d_w->data(), m, k) =
          (ConstMatrixMap(d_weights.data(), m, k).array().colwise() * a)
              .matrix();
    }
    if (d_b != nullptr) {
      ArrayMap(d_b->data(), m) = ConstArrayMap(d_bias.data(), m) * a;
    }
    if (d_shift != nullptr) {
      ArrayMap(d_shift->data(), m) = ConstArrayMap(d_bias.data(), m);
    }
    if (d_scale != nullptr) {
      const Eigen::ArrayXf centre =
          ConvBias(inputs, m) - ConstArrayMap(inputs[bn + 2]->data(), m);
      const Eigen::ArrayXf d_a =
          (ConstMatrixMap(d_weights.data(), m, k).array() *
           ConstMatrixMap(inputs[1]->data(), m, k).array())
              .rowwise()
              .sum() +
          ConstArrayMap(d_bias.data(), m) * centre;
      ArrayMap(d_scale->data(), m) = d_a * inv_std;
    }
    for (int i = bn + 2; i < bn + 4; ++i) {
      if (grad_inputs[i] != nullptr) grad_inputs[i]->SetZero();
    }
  }

 private:
  // The index of BN's scale among the inputs.
  int BnInput() const { return conv_bias_ ? 3 : 2; }

  Eigen::ArrayXf ConvBias(absl::Span<const Tensor* const> inputs,
                          int64_t m) const {
    return conv_bias_ ? Eigen::ArrayXf(ConstArrayMap(inputs[2]->data(), m))
                      : Eigen::ArrayXf::Zero(m);
  }

  Eigen::ArrayXf InvStd(absl::Span<const Tensor* const> inputs) const {
    const Tensor& var = *inputs[BnInput() + 3];
    return (ConstArrayMap(var.data(), var.size()) + epsilon_).rsqrt();
  }

  // weights = a ⊙ W, bias = a ⊙ (B - mean) + shift, for inv_std =
  // 1 / sqrt(var + eps); returns a = scale ⊙ inv_std.
  Eigen::ArrayXf Fold(absl::Span<const Tensor* const> inputs,
                      const Eigen::ArrayXf& inv_std, Tensor* weights,
                      Tensor* bias) const {
    const int bn = BnInput();
    const Tensor& w = *inputs[1];
    const int64_t m = inv_std.size();
    const int64_t k = m == 0 ? 0 : w.size() / m;
    const Eigen::ArrayXf a = ConstArrayMap(inputs[bn]->data(), m) * inv_std;
    weights->Resize(w.shape());
    MatrixMap(weights->data(), m, k) =
        (ConstMatrixMap(w.data(), m, k).array().colwise() * a).matrix();
    bias->Resize({m});
    ArrayMap(bias->data(), m) =
        a * (ConvBias(inputs, m) - ConstArrayMap(inputs[bn + 2]->data(), m)) +
        ConstArrayMap(inputs[bn + 1]->data(), m);
    return a;
  }

  const Kernel& conv_;
  const BatchNormKernel batch_norm_;
  const float epsilon_;
  const bool conv_bias_;
};

absl::StatusOr<std::unique_ptr<Kernel>> CreateBatchNorm(
    const OpConfig& config) {
  absl::StatusOr<float> epsilon = config.GetFloat("epsilon", 1e-5f);
  if (!epsilon.ok()) return epsilon.status();
  if (!(*epsilon >= 0)) {
    return NodeError(config,
                     absl::StrCat("epsilon ", *epsilon, " must be >= 0"));
  }
  absl::StatusOr<int64_t> training = config.GetInt("training_mode", 0);
  if (!training.ok()) return training.status();
  if (*training != 0) {
    return NodeError(config,
                     "training_mode=1 is not supported (only the inference "
                     "form, with running statistics)");
  }
  // Opsets before 9: spatial=0 normalises per activation, not per channel.
  absl::StatusOr<int64_t> spatial = config.GetInt("spatial", 1);
  if (!spatial.ok()) return spatial.status();
  if (*spatial != 1) {
    return NodeError(config, absl::StrCat("unsupported spatial=", *spatial,
                                          " (only 1, per-channel statistics)"));
  }
  return std::make_unique<BatchNormKernel>(*epsilon);
}

}  // namespace

absl::Span<const OpEntry> ConvOps() {
  static const OpEntry kOps[] = {
      {"Conv", {2, 3, 3, 1, &CreateConv}},
      // The Indices output is not supported.
      {"MaxPool", {1, 1, 1, 1, &CreateMaxPool}},
      {"AveragePool", {1, 1, 1, 1, &CreateAveragePool}},
      {"GlobalAveragePool", {1, 1, 1, 1, &CreateGlobalAveragePool}},
      {"GlobalMaxPool", {1, 1, 1, 1, &CreateGlobalMaxPool}},
      // Inference form only: one output (the training-mode running
      // statistics outputs are rejected).
      {"BatchNormalization", {5, 5, 5, 1, &CreateBatchNorm}},
  };
  return kOps;
}

std::unique_ptr<Kernel> FuseConvBatchNorm(const Kernel& conv,
                                          const Kernel& batch_norm,
                                          bool conv_bias) {
  const auto* bn = dynamic_cast<const BatchNormKernel*>(&batch_norm);
  if (dynamic_cast<const ConvKernel*>(&conv) == nullptr || bn == nullptr) {
    return nullptr;
  }
  return std::make_unique<ConvBatchNormKernel>(conv, bn->epsilon(), conv_bias);
}

}  // namespace mixq::engine
