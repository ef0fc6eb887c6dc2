// Winograd F(2x2, 3x3) and F(4x4, 3x3) convolution kernels; the maths,
// layout, threading contract and the choice between them are in winograd.h.
#include "engine/winograd.h"

#include <omp.h>

#include <algorithm>
#include <cstring>

#include "Eigen/Core"
#include "engine/ops_util.h"
#include "engine/tensor.h"

namespace mixq::engine {
namespace {

constexpr int kTaps = 3;
constexpr int64_t kMaxPad = 2;
// WinogradSuits' channel range (see winograd.h).
constexpr int64_t kMinSuitedChannels = 4;
constexpr int64_t kMaxSuitedChannels = 512;

// The transforms run over this many consecutive tile positions at a time
// (fixed-size Eigen arrays: SIMD code).
constexpr int64_t kLanes = 16;
constexpr int64_t kCacheLineFloats = 16;

// A block holds about kBlockFloats / (points (c + m)) tile positions, so
// that its V and M (or dM) buffers fill about half of a 1 MiB L2, within
// these bounds.
constexpr int64_t kBlockFloats = int64_t{1} << 17;
constexpr int64_t kMinBlockPositions = 64;
constexpr int64_t kMaxBlockPositions = 1024;
// Weight-gradient blocks are this many times larger: each block ends in
// horizontal sums of its m x c x points vector accumulators, which longer
// reductions amortise.
constexpr int64_t kGradBlockScale = 4;
// Weight gradients are summed from at most this many partial sums.
constexpr int64_t kMaxPartials = 8;
// kAuto takes F(4x4) when its transformed points per sample are at most
// this fraction of F(2x2)'s (16x16 maps, 62.5%, gain; 7x7, 67.5%, lose).
constexpr int64_t kMaxPointRatioNumerator = 64;
constexpr int64_t kPointRatioDenominator = 100;
// TransformWeights works on this many filters at a time, and splits them
// between threads above kParallelTransformFilters filters.
constexpr int64_t kWeightChunk = 64;
// A forward block's products (multiply-adds) from which its stages are
// split between threads when there are fewer blocks than threads: about
// 0.1 ms of work, some 50 times a parallel region's cost.
constexpr int64_t kMinWideProductWork = int64_t{1} << 22;
constexpr int64_t kParallelTransformFilters = 4096;

// Register blocking of the products, in SIMD packets of tiles.
using Packet = Eigen::internal::packet_traits<float>::type;
constexpr int64_t kPacket = Eigen::internal::packet_traits<float>::size;
constexpr int kRegisters = EIGEN_ARCH_DEFAULT_NUMBER_OF_REGISTERS;
// Forward: kProductM output channels x kProductP packets of tiles.
constexpr int kProductM = kRegisters >= 32 ? 8 : 4;
constexpr int kProductP = kRegisters >= 32 ? 3 : 2;
// Weight gradient: kGradM x kGradC accumulators, each a packet of tiles.
constexpr int kGradM = kRegisters >= 32 ? 4 : 2;
constexpr int kGradC = kRegisters >= 32 ? 4 : 3;
static_assert(kLanes % kPacket == 0);
using Lanes = Eigen::Array<float, kLanes, 1>;
Lanes Load(const float* p) { return Eigen::Map<const Lanes>(p); }
void Store(float* p, const Lanes& v) { Eigen::Map<Lanes>{p} = v; }

// F(T x T, 3x3): output tiles T x T, input tiles (patches) P x P with
// P = T + 2, P^2 transformed points.
template <int T>
struct TileSize {
  static constexpr int kTile = T;
  static constexpr int kPatch = T + kTaps - 1;
  static constexpr int kPoints = kPatch * kPatch;
  // Zero columns at most past the data of a split plane's padded rows:
  // width T (tiles_x + 1) <= out_w + 2 T - 1 = w + pad_left + pad_right +
  // 2 T - 3.
  static constexpr int64_t kPadTail = kMaxPad + 2 * T - 3;
};

// The transforms of each tile size, on kLanes tile positions at a time.
// Split planes (SplitPlane) hold T x T phase arrays `split_stride` apart:
// array a T + b holds rows = a and columns = b (mod T) of the padded plane,
// `pitch` floats per group of T rows, so that point (i, j) of position p
// (tile row p / pitch, column p % pitch) is array (i % T) T + j % T at
// p + (i / T) pitch + j / T.
template <int T>
struct Transforms;

template <>
struct Transforms<2> {
  // G, the kernel transform of F(2, 3).
  static constexpr float kG[4][kTaps] = {{1.0f, 0.0f, 0.0f},
                                         {0.5f, 0.5f, 0.5f},
                                         {0.5f, -0.5f, 0.5f},
                                         {0.0f, 0.0f, 1.0f}};

  // V = B^T d B for the kLanes positions from `p` of a split input plane.
  // Point xi of position p + l goes to out[xi * point_stride + l].
  static void Input(const float* split, int64_t split_stride, int64_t pitch,
                    int64_t p, float* out, int64_t point_stride) {
    Lanes d[4][4];
    for (int i = 0; i < 4; ++i) {
      // Rows 0, 1 are the pair's even and odd rows; 2, 3 the next pair's.
      const float* even =
          split + 2 * (i % 2) * split_stride + p + (i / 2) * pitch;
      const float* odd = even + split_stride;
      d[i][0] = Load(even);
      d[i][1] = Load(odd);
      d[i][2] = Load(even + 1);
      d[i][3] = Load(odd + 1);
    }
    for (int j = 0; j < 4; ++j) {  // B^T d, in place
      const Lanes t0 = d[0][j] - d[2][j];
      const Lanes t1 = d[1][j] + d[2][j];
      const Lanes t2 = d[2][j] - d[1][j];
      const Lanes t3 = d[1][j] - d[3][j];
      d[0][j] = t0;
      d[1][j] = t1;
      d[2][j] = t2;
      d[3][j] = t3;
    }
    for (int i = 0; i < 4; ++i) {  // (B^T d) B
      float* row = out + i * 4 * point_stride;
      Store(row, d[i][0] - d[i][2]);
      Store(row + point_stride, d[i][1] + d[i][2]);
      Store(row + 2 * point_stride, d[i][2] - d[i][1]);
      Store(row + 3 * point_stride, d[i][1] - d[i][3]);
    }
  }

  // dM = A dY A^T for the kLanes positions from `p` of a split dY plane
  // (one row group per tile row); point xi of position p + l goes to
  // out[xi * point_stride + l].
  static void OutputGrad(const float* split, int64_t split_stride, int64_t p,
                         float* out, int64_t point_stride) {
    const Lanes d00 = Load(split + p);
    const Lanes d01 = Load(split + split_stride + p);
    const Lanes d10 = Load(split + 2 * split_stride + p);
    const Lanes d11 = Load(split + 3 * split_stride + p);
    // A dY: rows [d0, d0 + d1, d0 - d1, -d1].
    const Lanes t[4][2] = {{d00, d01},
                           {d00 + d10, d01 + d11},
                           {d00 - d10, d01 - d11},
                           {-d10, -d11}};
    for (int i = 0; i < 4; ++i) {  // (A dY) A^T
      float* row = out + i * 4 * point_stride;
      Store(row, t[i][0]);
      Store(row + point_stride, t[i][0] + t[i][1]);
      Store(row + 2 * point_stride, t[i][0] - t[i][1]);
      Store(row + 3 * point_stride, -t[i][1]);
    }
  }

  // Y = A^T M A + bias for kLanes positions: point xi of position l is
  // in[xi * point_stride + l]; output (a, b) of position l goes to
  // out[(2 a + b) * out_stride + l].
  static void Output(const float* in, int64_t point_stride, float bias,
                     float* out, int64_t out_stride) {
    Lanes t[2][4];  // A^T M
    for (int j = 0; j < 4; ++j) {
      const Lanes m0 = Load(in + j * point_stride);
      const Lanes m1 = Load(in + (4 + j) * point_stride);
      const Lanes m2 = Load(in + (2 * 4 + j) * point_stride);
      const Lanes m3 = Load(in + (3 * 4 + j) * point_stride);
      t[0][j] = m0 + m1 + m2;
      t[1][j] = m1 - m2 - m3;
    }
    for (int a = 0; a < 2; ++a) {  // (A^T M) A
      Store(out + 2 * a * out_stride, t[a][0] + t[a][1] + t[a][2] + bias);
      Store(out + (2 * a + 1) * out_stride, t[a][1] - t[a][2] - t[a][3] + bias);
    }
  }
};

// Its loops are fully unrolled (#pragma GCC unroll): GCC otherwise keeps
// the second pass a loop over the 36 intermediates on the stack, and the
// transforms run about 1.3x slower.
template <>
struct Transforms<4> {
  // G, the kernel transform of F(4, 3) (points 0, 1, -1, 2, -2, inf).
  static constexpr float kG[6][kTaps] = {{1.0f / 4, 0.0f, 0.0f},
                                         {-1.0f / 6, -1.0f / 6, -1.0f / 6},
                                         {-1.0f / 6, 1.0f / 6, -1.0f / 6},
                                         {1.0f / 24, 1.0f / 12, 1.0f / 6},
                                         {1.0f / 24, -1.0f / 12, 1.0f / 6},
                                         {0.0f, 0.0f, 1.0f}};

  // (d0..d5) = B^T (d0..d5), with
  //   B^T = [4  0 -5  0  1  0]
  //         [0 -4 -4  1  1  0]
  //         [0  4 -4 -1  1  0]
  //         [0 -2 -1  2  1  0]
  //         [0  2 -1 -2  1  0]
  //         [0  4  0 -5  0  1].
  static void InputVector(Lanes& d0, Lanes& d1, Lanes& d2, Lanes& d3, Lanes& d4,
                          Lanes& d5) {
    const Lanes a = d4 - 4.0f * d2;
    const Lanes b = d3 - 4.0f * d1;
    const Lanes c = d4 - d2;
    const Lanes e = 2.0f * (d3 - d1);
    const Lanes r0 = 4.0f * (d0 - d2) + c;
    const Lanes r5 = 4.0f * (d1 - d3) + (d5 - d3);
    d0 = r0;
    d1 = a + b;
    d2 = a - b;
    d3 = c + e;
    d4 = c - e;
    d5 = r5;
  }

  // See Transforms<2>::Input.
  static void Input(const float* split, int64_t split_stride, int64_t pitch,
                    int64_t p, float* out, int64_t point_stride) {
    Lanes d[6][6];
#pragma GCC unroll 6
    for (int i = 0; i < 6; ++i) {
#pragma GCC unroll 6
      for (int j = 0; j < 6; ++j) {
        d[i][j] = Load(split + ((i % 4) * 4 + j % 4) * split_stride + p +
                       (i / 4) * pitch + j / 4);
      }
    }
#pragma GCC unroll 6
    for (int j = 0; j < 6; ++j) {  // B^T d, in place
      InputVector(d[0][j], d[1][j], d[2][j], d[3][j], d[4][j], d[5][j]);
    }
#pragma GCC unroll 6
    for (int i = 0; i < 6; ++i) {  // (B^T d) B
      InputVector(d[i][0], d[i][1], d[i][2], d[i][3], d[i][4], d[i][5]);
#pragma GCC unroll 6
      for (int j = 0; j < 6; ++j)
        Store(out + (i * 6 + j) * point_stride, d[i][j]);
    }
  }

  // (r0..r5) = A (y0..y3), with A^T as in Output.
  static void OutputGradVector(const Lanes& y0, const Lanes& y1,
                               const Lanes& y2, const Lanes& y3, Lanes* r) {
    const Lanes a = y0 + y2;
    const Lanes b = y1 + y3;
    const Lanes c = y0 + 4.0f * y2;
    const Lanes e = 2.0f * y1 + 8.0f * y3;
    r[0] = y0;
    r[1] = a + b;
    r[2] = a - b;
    r[3] = c + e;
    r[4] = c - e;
    r[5] = y3;
  }

  // See Transforms<2>::OutputGrad.
  static void OutputGrad(const float* split, int64_t split_stride, int64_t p,
                         float* out, int64_t point_stride) {
    Lanes t[6][4];  // A dY
#pragma GCC unroll 4
    for (int j = 0; j < 4; ++j) {
      Lanes r[6];
      OutputGradVector(Load(split + j * split_stride + p),
                       Load(split + (4 + j) * split_stride + p),
                       Load(split + (8 + j) * split_stride + p),
                       Load(split + (12 + j) * split_stride + p), r);
#pragma GCC unroll 6
      for (int i = 0; i < 6; ++i) t[i][j] = r[i];
    }
#pragma GCC unroll 6
    for (int i = 0; i < 6; ++i) {  // (A dY) A^T
      Lanes r[6];
      OutputGradVector(t[i][0], t[i][1], t[i][2], t[i][3], r);
#pragma GCC unroll 6
      for (int j = 0; j < 6; ++j) Store(out + (i * 6 + j) * point_stride, r[j]);
    }
  }

  // (o0..o3) = A^T (m0..m5), with
  //   A^T = [1  1  1  1  1  0]
  //         [0  1 -1  2 -2  0]
  //         [0  1  1  4  4  0]
  //         [0  1 -1  8 -8  1].
  static void OutputVector(const Lanes& m0, const Lanes& m1, const Lanes& m2,
                           const Lanes& m3, const Lanes& m4, const Lanes& m5,
                           Lanes* o) {
    const Lanes sum12 = m1 + m2;
    const Lanes diff12 = m1 - m2;
    const Lanes sum34 = m3 + m4;
    const Lanes diff34 = m3 - m4;
    o[0] = m0 + sum12 + sum34;
    o[1] = diff12 + 2.0f * diff34;
    o[2] = sum12 + 4.0f * sum34;
    o[3] = diff12 + 8.0f * diff34 + m5;
  }

  // See Transforms<2>::Output; output (a, b) goes to out[(4 a + b) *
  // out_stride + l].
  static void Output(const float* in, int64_t point_stride, float bias,
                     float* out, int64_t out_stride) {
    Lanes t[4][6];  // A^T M
#pragma GCC unroll 6
    for (int j = 0; j < 6; ++j) {
      Lanes o[4];
      OutputVector(Load(in + j * point_stride),
                   Load(in + (6 + j) * point_stride),
                   Load(in + (12 + j) * point_stride),
                   Load(in + (18 + j) * point_stride),
                   Load(in + (24 + j) * point_stride),
                   Load(in + (30 + j) * point_stride), o);
#pragma GCC unroll 4
      for (int a = 0; a < 4; ++a) t[a][j] = o[a];
    }
#pragma GCC unroll 4
    for (int a = 0; a < 4; ++a) {  // (A^T M) A
      Lanes o[4];
      OutputVector(t[a][0], t[a][1], t[a][2], t[a][3], t[a][4], t[a][5], o);
#pragma GCC unroll 4
      for (int b = 0; b < 4; ++b)
        Store(out + (4 * a + b) * out_stride, o[b] + bias);
    }
  }
};

// A range of samples and of tile rows (the same rows in each sample).
struct Block {
  int64_t s0, s1;
  int64_t ty0, ty1;
};

// Floats per point of a [point][channel][position] buffer holding `floats`
// per point: an odd number of cache lines, so that the transforms' loads or
// stores of all points of a chunk (16 or 36 streams) fall in different L1
// sets rather than evicting each other (a power-of-two multiple of 4 KiB,
// e.g. 16 channels x 128 positions, maps them all to one set).
int64_t PointStride(int64_t floats) {
  const int64_t lines = CeilDiv(floats, kCacheLineFloats);
  return (lines | 1) * kCacheLineFloats;
}

// How a shape is cut into blocks of T x T output tiles, and the sizes of a
// block's buffers.
//
// Positions: a tile row is `pitch` = tiles_x + 1 positions, the last one a
// junk tile (it reads zero padding and its outputs are dropped), so that
// the tiles of all rows of a sample are one arithmetic sequence and the
// transforms run over whole blocks of positions, not row by row (which
// would waste most SIMD lanes on narrow maps). A block's positions are its
// samples' positions one after the other.
template <int T>
struct Plan {
  // `target`: about how many positions a block should hold.
  Plan(const Conv3x3Shape& s, int64_t target) {
    tiles_y = CeilDiv(s.out_h, T);
    tiles_x = CeilDiv(s.out_w, T);
    pitch = tiles_x + 1;
    const int64_t per_sample = tiles_y * pitch;
    if (per_sample >= target) {
      samples_per_block = 1;
      rows_per_block = std::clamp<int64_t>(target / pitch, 1, tiles_y);
      row_blocks = CeilDiv(tiles_y, rows_per_block);
      blocks = s.n * row_blocks;
    } else {
      samples_per_block = std::clamp<int64_t>(target / per_sample, 1, s.n);
      rows_per_block = tiles_y;
      row_blocks = 1;
      blocks = CeilDiv(s.n, samples_per_block);
    }
    // The last kLanes chunk of positions stores up to kLanes - 1 past them.
    stride =
        RoundUp(samples_per_block * rows_per_block * pitch, kPacket) + kLanes;
    // A chunk reads up to one tile row and one column group past the
    // chunk, which may itself end kLanes - 1 past the block's rows.
    split_stride = PointStride((rows_per_block + 1) * pitch + 2 * kLanes);
    v_point = PointStride(s.c * stride);
    m_point = PointStride(s.m * stride);
  }

  Block Get(int64_t b, int64_t n) const {
    if (row_blocks == 1) {
      return {b * samples_per_block, std::min(n, (b + 1) * samples_per_block),
              0, tiles_y};
    }
    const int64_t sample = b / row_blocks;
    const int64_t ty0 = (b % row_blocks) * rows_per_block;
    return {sample, sample + 1, ty0, std::min(tiles_y, ty0 + rows_per_block)};
  }

  int64_t tiles_y, tiles_x, pitch;
  int64_t samples_per_block, rows_per_block, row_blocks, blocks;
  int64_t stride;        // floats per (point, channel) row of V, M and dM
  int64_t v_point;       // floats per point of V (c rows)
  int64_t m_point;       // floats per point of M and dM (m rows)
  int64_t split_stride;  // floats per array of a split plane

  // Floats of a split plane (SplitPlane) with its padded-rows scratch.
  int64_t split_size() const {
    return T * T * split_stride + T * (rows_per_block + 1) * T * pitch;
  }
};

// The positions a block's rows of one sample span.
template <int T>
int64_t SamplePositions(const Plan<T>& plan, const Block& blk) {
  return (blk.ty1 - blk.ty0) * plan.pitch;
}

template <int T>
int64_t BlockPositions(const Plan<T>& plan, const Block& blk) {
  return (blk.s1 - blk.s0) * SamplePositions(plan, blk);
}

// Runs f(k, N) over [lo, hi) in chunks of a compile-time N (16, 8 or 4;
// the last chunk of a size overlaps the previous one rather than leaving a
// remainder) and f(k, 1) when fewer than 4 remain: short rows still get
// fixed-size loops the compiler vectorises. f must be idempotent.
template <typename F>
void ForEachChunk(int64_t lo, int64_t hi, F&& f) {
  const auto run = [&]<int N>() {
    int64_t k = lo;
    for (; k + N <= hi; k += N) f.template operator()<N>(k);
    if (k < hi) f.template operator()<N>(hi - N);
  };
  const int64_t length = hi - lo;
  if (length >= 16) {
    run.template operator()<16>();
  } else if (length >= 8) {
    run.template operator()<8>();
  } else if (length >= 4) {
    run.template operator()<4>();
  } else {
    for (int64_t k = lo; k < hi; ++k) f.template operator()<1>(k);
  }
}

// Copies w floats from `src` to `dst` with fixed-size chunk copies (no
// library call: rows are short and many).
void CopyRow(const float* src, int64_t w, float* dst) {
  ForEachChunk(0, w, [&]<int N>(int64_t k0) {
    float chunk[N];
    for (int k = 0; k < N; ++k) chunk[k] = src[k0 + k];
    for (int k = 0; k < N; ++k) dst[k0 + k] = chunk[k];
  });
}

// Splits rows [first, first + T groups) of the [h, w] plane `src` (rows
// outside it are zero), shifted right by `pad_left` zero columns and zero
// past its end, into the T x T phase arrays of Transforms (`split_stride`
// apart, `pitch` floats per group of T rows); their slack past `groups`
// row groups is zero. `padded` is scratch for T groups * T pitch floats:
// the padded rows, grouped by row phase, so that each phase is split by
// one long loop.
template <int T>
void SplitPlane(const float* src, int64_t h, int64_t w, int64_t first,
                int64_t groups, int64_t pad_left, int64_t pitch,
                int64_t split_stride, float* padded, float* split) {
  const int64_t width = T * pitch;
  const int64_t copy = std::min(w, width - pad_left);
  for (int64_t r = 0; r < T * groups; ++r) {
    float* row = padded + ((r % T) * groups + r / T) * width;
    const int64_t in_row = first + r;
    if (in_row < 0 || in_row >= h) {
      std::fill(row, row + width, 0.0f);
      continue;
    }
    // The row's zero padding is at most kMaxPad columns on the left and
    // kPadTail on the right: zero both ends, then copy over (fixed stores,
    // no memset calls).
    for (int64_t k = 0; k < kMaxPad; ++k) row[k] = 0.0f;
    for (int64_t k = width - TileSize<T>::kPadTail; k < width; ++k) {
      row[k] = 0.0f;
    }
    CopyRow(src + in_row * w, copy, row + pad_left);
  }
  const int64_t count = groups * pitch;
  for (int a = 0; a < T; ++a) {
    const float* in = padded + a * groups * width;
    float* out = split + a * T * split_stride;
    for (int64_t k = 0; k < count; ++k) {
      for (int b = 0; b < T; ++b) out[b * split_stride + k] = in[T * k + b];
    }
  }
  for (int k = 0; k < T * T; ++k) {
    std::fill(split + k * split_stride + count, split + (k + 1) * split_stride,
              0.0f);
  }
}

// Writes the outputs of tile rows [ty0, ty1) of one output plane `y` from
// the T x T arrays of Transforms<T>::Output (`pitch` positions per tile
// row).
template <int T>
void InterleaveOutput(const Conv3x3Shape& s, const Block& blk, int64_t pitch,
                      const float* out, int64_t out_stride, float* y) {
  const int64_t whole = s.out_w / T;
  const int64_t rest = s.out_w % T;
  for (int64_t ty = blk.ty0; ty < blk.ty1; ++ty) {
    for (int64_t a = 0; a < T && T * ty + a < s.out_h; ++a) {
      const float* in = out + T * a * out_stride + (ty - blk.ty0) * pitch;
      float* row = y + (T * ty + a) * s.out_w;
      ForEachChunk(0, whole, [&]<int N>(int64_t k0) {
        float r[T * N];
        for (int k = 0; k < N; ++k) {
          for (int b = 0; b < T; ++b)
            r[T * k + b] = in[b * out_stride + k0 + k];
        }
        std::memcpy(row + T * k0, r, sizeof(r));
      });
      for (int64_t b = 0; b < rest; ++b) {
        row[T * whole + b] = in[b * out_stride + whole];
      }
    }
  }
}

// U[xi][m][c] = (G w[m, c] G^T)[xi]. Filters go in chunks of
// kWeightChunk, transposed first so that both halves of the transform run
// over consecutive filters (SIMD) and each point's row of U is written
// contiguously; chunks are split between threads.
template <int T>
void TransformWeights(const Conv3x3Shape& s, const float* w, float* u) {
  constexpr int kPatch = TileSize<T>::kPatch;
  constexpr auto& kG = Transforms<T>::kG;
  constexpr int kFilter = kTaps * kTaps;
  const int64_t mc = s.m * s.c;
  const int64_t chunks = CeilDiv(mc, kWeightChunk);
#pragma omp parallel for schedule(static) if (mc > kParallelTransformFilters)
  for (int64_t chunk = 0; chunk < chunks; ++chunk) {
    const int64_t k0 = chunk * kWeightChunk;
    const int64_t count = std::min(kWeightChunk, mc - k0);
    float g[kFilter][kWeightChunk];  // g[tap][filter]
    for (int64_t k = 0; k < count; ++k) {
      for (int t = 0; t < kFilter; ++t) g[t][k] = w[(k0 + k) * kFilter + t];
    }
    float gg[kPatch][kTaps][kWeightChunk];  // (G g)[a][j]
    for (int a = 0; a < kPatch; ++a) {
      for (int j = 0; j < kTaps; ++j) {
        for (int64_t k = 0; k < count; ++k) {
          gg[a][j][k] = kG[a][0] * g[j][k] + kG[a][1] * g[kTaps + j][k] +
                        kG[a][2] * g[2 * kTaps + j][k];
        }
      }
    }
    for (int a = 0; a < kPatch; ++a) {
      for (int b = 0; b < kPatch; ++b) {
        float* row = u + (a * kPatch + b) * mc + k0;
        for (int64_t k = 0; k < count; ++k) {
          row[k] = gg[a][0][k] * kG[b][0] + gg[a][1][k] * kG[b][1] +
                   gg[a][2][k] * kG[b][2];
        }
      }
    }
  }
}

// dw[m, c] = G^T dU[m, c] G, dU laid out [xi][m][c].
template <int T>
void WeightsFromTransformed(const Conv3x3Shape& s, const float* du, float* dw) {
  constexpr int kPatch = TileSize<T>::kPatch;
  constexpr auto& kG = Transforms<T>::kG;
  const int64_t mc = s.m * s.c;
  for (int64_t k = 0; k < mc; ++k) {
    float t[kTaps][kPatch];  // G^T dU
    for (int i = 0; i < kTaps; ++i) {
      for (int b = 0; b < kPatch; ++b) {
        float sum = 0.0f;
        for (int a = 0; a < kPatch; ++a) {
          sum += kG[a][i] * du[(a * kPatch + b) * mc + k];
        }
        t[i][b] = sum;
      }
    }
    float* g = dw + k * kTaps * kTaps;
    for (int i = 0; i < kTaps; ++i) {
      for (int j = 0; j < kTaps; ++j) {
        float sum = 0.0f;
        for (int b = 0; b < kPatch; ++b) sum += t[i][b] * kG[b][j];
        g[i * kTaps + j] = sum;
      }
    }
  }
}

// Zeroes positions [total, total rounded up to a packet) of the `rows`
// rows (`stride` apart) of each of `points` points (`point_stride` apart) of
// `buffer`, which the products read but the transforms may not have
// written: stale values there could be non-finite (and 0 * inf is NaN in
// the weight gradient's sums).
void ZeroTail(int points, int64_t point_stride, int64_t rows, int64_t stride,
              int64_t total, float* buffer) {
  const int64_t rounded = RoundUp(total, kPacket);
  for (int xi = 0; xi < points; ++xi) {
    for (int64_t r = 0; r < rows; ++r) {
      float* row = buffer + xi * point_stride + r * stride;
      std::fill(row + total, row + rounded, 0.0f);
    }
  }
}

// V[xi][c][position] of input channel `c` for block `blk` (SamplePositions
// per sample), rows plan.stride apart; positions past the block's last, up
// to a whole packet, are zero. `split`: plan.split_size() floats of scratch.
template <int T>
void TransformChannelInput(const Conv3x3Shape& s, const Plan<T>& plan,
                           const Block& blk, int64_t c, const float* x,
                           float* split, float* v) {
  const int64_t positions = SamplePositions(plan, blk);
  const int64_t point_stride = plan.v_point;
  for (int64_t n = blk.s0; n < blk.s1; ++n) {
    SplitPlane<T>(x + (n * s.c + c) * s.h * s.w, s.h, s.w,
                  T * blk.ty0 - s.pad_top, blk.ty1 - blk.ty0 + 1, s.pad_left,
                  plan.pitch, plan.split_stride,
                  split + T * T * plan.split_stride, split);
    float* out = v + c * plan.stride + (n - blk.s0) * positions;
    for (int64_t p = 0; p < positions; p += kLanes) {
      Transforms<T>::Input(split, plan.split_stride, plan.pitch, p, out + p,
                           point_stride);
    }
  }
  ZeroTail(TileSize<T>::kPoints, plan.v_point, 1, plan.stride,
           (blk.s1 - blk.s0) * positions, v + c * plan.stride);
}

// V for all input channels of block `blk` (TransformChannelInput).
template <int T>
void TransformBlockInput(const Conv3x3Shape& s, const Plan<T>& plan,
                         const Block& blk, const float* x, float* split,
                         float* v) {
  for (int64_t c = 0; c < s.c; ++c) {
    TransformChannelInput(s, plan, blk, c, x, split, v);
  }
}

// dM[xi][m][position] for block `blk`, like TransformBlockInput.
template <int T>
void TransformBlockOutputGrad(const Conv3x3Shape& s, const Plan<T>& plan,
                              const Block& blk, const float* dy, float* split,
                              float* dm) {
  const int64_t positions = SamplePositions(plan, blk);
  const int64_t point_stride = plan.m_point;
  for (int64_t n = blk.s0; n < blk.s1; ++n) {
    for (int64_t m = 0; m < s.m; ++m) {
      SplitPlane<T>(dy + (n * s.m + m) * s.out_h * s.out_w, s.out_h, s.out_w,
                    T * blk.ty0, blk.ty1 - blk.ty0, 0, plan.pitch,
                    plan.split_stride, split + T * T * plan.split_stride,
                    split);
      float* out = dm + m * plan.stride + (n - blk.s0) * positions;
      for (int64_t p = 0; p < positions; p += kLanes) {
        Transforms<T>::OutputGrad(split, plan.split_stride, p, out + p,
                                  point_stride);
      }
    }
  }
  ZeroTail(TileSize<T>::kPoints, plan.m_point, s.m, plan.stride,
           (blk.s1 - blk.s0) * positions, dm);
}

// Calls f.template operator()<A', B'>() for A' = a in [1, A] and B' = b in
// [1, B] known at run time: the register blocks of the products, smaller at
// the edges of their matrices.
template <int A, int B, typename F>
void WithBlock(int a, int b, F&& f) {
  if constexpr (A > 1) {
    if (a < A) return WithBlock<A - 1, B>(a, b, f);
  }
  if constexpr (B > 1) {
    if (b < B) return WithBlock<A, B - 1>(a, b, f);
  }
  f.template operator()<A, B>();
}

// out[mb * out_stride + (0, P packets)] = sum over c of u[mb * u_stride + c]
// * v[c * v_stride + (0, P packets)], for MB rows.
template <int MB, int P>
void ProductBlock(const float* v, int64_t v_stride, int64_t channels,
                  const float* u, int64_t u_stride, float* out,
                  int64_t out_stride) {
  using Eigen::internal::pmadd;
  using Eigen::internal::pset1;
  Packet acc[MB][P];
  for (int mb = 0; mb < MB; ++mb) {
    for (int p = 0; p < P; ++p) acc[mb][p] = pset1<Packet>(0.0f);
  }
  for (int64_t c = 0; c < channels; ++c) {
    Packet x[P];
    for (int p = 0; p < P; ++p) {
      x[p] = Eigen::internal::ploadu<Packet>(v + c * v_stride + p * kPacket);
    }
    for (int mb = 0; mb < MB; ++mb) {
      const Packet wv = pset1<Packet>(u[mb * u_stride + c]);
      for (int p = 0; p < P; ++p) acc[mb][p] = pmadd(x[p], wv, acc[mb][p]);
    }
  }
  for (int mb = 0; mb < MB; ++mb) {
    for (int p = 0; p < P; ++p) {
      Eigen::internal::pstoreu(out + mb * out_stride + p * kPacket, acc[mb][p]);
    }
  }
}

// M[xi][m][p] = sum_c U[xi][m][c] V[xi][c][p] for `positions` positions;
// with `wide`, the points are split between threads.
template <int T>
void BlockProducts(const Conv3x3Shape& s, const Plan<T>& plan,
                   int64_t positions, const float* u, const float* v, float* m,
                   bool wide) {
  const int64_t packets = CeilDiv(positions, kPacket);
#pragma omp parallel for schedule(static) if (wide)
  for (int xi = 0; xi < TileSize<T>::kPoints; ++xi) {
    const float* vx = v + xi * plan.v_point;
    const float* ux = u + xi * s.m * s.c;
    float* mx = m + xi * plan.m_point;
    for (int64_t p0 = 0; p0 < packets; p0 += kProductP) {
      const int p =
          static_cast<int>(std::min<int64_t>(kProductP, packets - p0));
      for (int64_t m0 = 0; m0 < s.m; m0 += kProductM) {
        const int mb = static_cast<int>(std::min<int64_t>(kProductM, s.m - m0));
        WithBlock<kProductM, kProductP>(mb, p, [&]<int MB, int P>() {
          ProductBlock<MB, P>(
              vx + p0 * kPacket, plan.stride, s.c, ux + m0 * s.c, s.c,
              mx + m0 * plan.stride + p0 * kPacket, plan.stride);
        });
      }
    }
  }
}

// out[mb * out_stride + cb] += sum over t < length of dm[mb * stride + t] *
// v[cb * stride + t], for MB x CB entries (length a multiple of kPacket).
template <int MB, int CB>
void GradBlock(const float* dm, const float* v, int64_t stride, int64_t length,
               float* out, int64_t out_stride) {
  using Eigen::internal::ploadu;
  using Eigen::internal::pmadd;
  Packet acc[MB][CB];
  for (int mb = 0; mb < MB; ++mb) {
    for (int cb = 0; cb < CB; ++cb) {
      acc[mb][cb] = Eigen::internal::pset1<Packet>(0.0f);
    }
  }
  for (int64_t t = 0; t < length; t += kPacket) {
    Packet a[MB];
    for (int mb = 0; mb < MB; ++mb)
      a[mb] = ploadu<Packet>(dm + mb * stride + t);
    for (int cb = 0; cb < CB; ++cb) {
      const Packet x = ploadu<Packet>(v + cb * stride + t);
      for (int mb = 0; mb < MB; ++mb)
        acc[mb][cb] = pmadd(a[mb], x, acc[mb][cb]);
    }
  }
  for (int mb = 0; mb < MB; ++mb) {
    for (int cb = 0; cb < CB; ++cb) {
      out[mb * out_stride + cb] += Eigen::internal::predux(acc[mb][cb]);
    }
  }
}

// du[xi][m][c] += sum over p of dM[xi][m][p] V[xi][c][p].
template <int T>
void BlockGradProducts(const Conv3x3Shape& s, const Plan<T>& plan,
                       int64_t positions, const float* dm, const float* v,
                       float* du) {
  const int64_t length = RoundUp(positions, kPacket);
  for (int xi = 0; xi < TileSize<T>::kPoints; ++xi) {
    const float* dmx = dm + xi * plan.m_point;
    const float* vx = v + xi * plan.v_point;
    float* dux = du + xi * s.m * s.c;
    for (int64_t m0 = 0; m0 < s.m; m0 += kGradM) {
      const int mb = static_cast<int>(std::min<int64_t>(kGradM, s.m - m0));
      for (int64_t c0 = 0; c0 < s.c; c0 += kGradC) {
        const int cb = static_cast<int>(std::min<int64_t>(kGradC, s.c - c0));
        WithBlock<kGradM, kGradC>(mb, cb, [&]<int MB, int CB>() {
          GradBlock<MB, CB>(dmx + m0 * plan.stride, vx + c0 * plan.stride,
                            plan.stride, length, dux + m0 * s.c + c0, s.c);
        });
      }
    }
  }
}

// About how many positions a block holds: V and M (or dM) then fill about
// kBlockFloats.
template <int T>
int64_t TargetPositions(const Conv3x3Shape& s) {
  return std::clamp(kBlockFloats / (TileSize<T>::kPoints * (s.c + s.m)),
                    kMinBlockPositions, kMaxBlockPositions);
}

// Y for block `blk` from the transformed weights u. With `wide`, each stage
// splits its independent parts (input channels, points, output channels)
// between the calling thread's OpenMP threads: for forward passes with
// fewer blocks than threads (batch 1 on small maps), which would otherwise
// run on one thread. Each output is computed the same way either way.
template <int T>
void ForwardBlock(const Conv3x3Shape& s, const Plan<T>& plan, const Block& blk,
                  const float* x, const float* u, const float* bias, float* y,
                  bool wide) {
  constexpr int kPoints = TileSize<T>::kPoints;
  // The calling thread's; with `wide` its workers fill disjoint rows.
  thread_local FloatBuffer v_buffer, m_buffer;
  float* v = Scratch(&v_buffer, kPoints * plan.v_point);
  float* m = Scratch(&m_buffer, kPoints * plan.m_point);
#pragma omp parallel for schedule(static) if (wide)
  for (int64_t c = 0; c < s.c; ++c) {
    thread_local FloatBuffer split_buffer;
    TransformChannelInput(s, plan, blk, c, x,
                          Scratch(&split_buffer, plan.split_size()), v);
  }
  BlockProducts(s, plan, BlockPositions(plan, blk), u, v, m, wide);
  const int64_t positions = SamplePositions(plan, blk);
  const int64_t out_stride = PointStride(positions + kLanes);
#pragma omp parallel for schedule(static) if (wide)
  for (int64_t mo = 0; mo < s.m; ++mo) {
    thread_local FloatBuffer out_buffer;
    float* out = Scratch(&out_buffer, T * T * out_stride);
    const float bias_m = bias == nullptr ? 0.0f : bias[mo];
    for (int64_t n = blk.s0; n < blk.s1; ++n) {
      const float* in = m + mo * plan.stride + (n - blk.s0) * positions;
      for (int64_t p = 0; p < positions; p += kLanes) {
        Transforms<T>::Output(in + p, plan.m_point, bias_m, out + p,
                              out_stride);
      }
      InterleaveOutput<T>(s, blk, plan.pitch, out, out_stride,
                          y + (n * s.m + mo) * s.out_h * s.out_w);
    }
  }
}

// Blocks go to threads; with fewer blocks than threads, each block's work
// does (ForwardBlock's `wide`) when it is large enough to pay for the
// threads' hand-offs. Workers only read the transformed weights.
template <int T>
void Forward(const Conv3x3Shape& s, const float* x, const float* u,
             const float* bias, float* y) {
  const Plan<T> plan(s, TargetPositions<T>(s));
  const bool wide = plan.blocks < omp_get_max_threads() &&
                    TileSize<T>::kPoints * s.m * s.c *
                            BlockPositions(plan, plan.Get(0, s.n)) >=
                        kMinWideProductWork;
  ParallelFor(plan.blocks, !wide && plan.blocks > 1, [&](int64_t b) {
    ForwardBlock(s, plan, plan.Get(b, s.n), x, u, bias, y, wide);
  });
}

template <int T>
void WeightGrad(const Conv3x3Shape& s, const float* x, const float* dy,
                float* dw) {
  constexpr int kPoints = TileSize<T>::kPoints;
  const Plan<T> plan(s, TargetPositions<T>(s) * kGradBlockScale);
  const int64_t partials = std::min(kMaxPartials, plan.blocks);
  const int64_t du_size = kPoints * s.m * s.c;
  // The calling thread owns the partial sums; each worker writes its own.
  thread_local FloatBuffer du_buffer;
  float* du = Scratch(&du_buffer, partials * du_size);
#pragma omp parallel for schedule(dynamic, 1) if (partials > 1)
  for (int64_t part = 0; part < partials; ++part) {
    thread_local FloatBuffer split_buffer, v_buffer, dm_buffer;
    float* sum = du + part * du_size;
    std::fill(sum, sum + du_size, 0.0f);
    float* split = Scratch(&split_buffer, plan.split_size());
    float* v = Scratch(&v_buffer, kPoints * plan.v_point);
    float* dm = Scratch(&dm_buffer, kPoints * plan.m_point);
    for (int64_t b = part; b < plan.blocks; b += partials) {
      const Block blk = plan.Get(b, s.n);
      TransformBlockInput(s, plan, blk, x, split, v);
      TransformBlockOutputGrad(s, plan, blk, dy, split, dm);
      BlockGradProducts(s, plan, BlockPositions(plan, blk), dm, v, sum);
    }
  }
  for (int64_t part = 1; part < partials; ++part) {
    Eigen::Map<Eigen::VectorXf>(du, du_size) +=
        Eigen::Map<const Eigen::VectorXf>(du + part * du_size, du_size);
  }
  WeightsFromTransformed<T>(s, du, dw);
}

// Transformed points per sample of F(T x T): P^2 per position, a row of
// tiles_x + 1 positions per tile row.
template <int T>
int64_t PointsPerSample(const Conv3x3Shape& s) {
  return TileSize<T>::kPoints * CeilDiv(s.out_h, T) * (CeilDiv(s.out_w, T) + 1);
}

// kAuto resolved: F(4x4) when its points per sample are at most
// kMaxPointRatio of F(2x2)'s (see winograd.h for the measurements).
WinogradTile ChooseTile(const Conv3x3Shape& s, WinogradTile tile) {
  if (tile != WinogradTile::kAuto) return tile;
  return PointsPerSample<4>(s) * kPointRatioDenominator <=
                 PointsPerSample<2>(s) * kMaxPointRatioNumerator
             ? WinogradTile::k4x4
             : WinogradTile::k2x2;
}

}  // namespace

bool WinogradValid(const Conv3x3Shape& s) {
  if (s.n < 1 || s.c < 1 || s.h < 1 || s.w < 1 || s.m < 1 || s.out_h < 1 ||
      s.out_w < 1) {
    return false;
  }
  const int64_t pad_bottom = s.out_h + kTaps - 1 - s.h - s.pad_top;
  const int64_t pad_right = s.out_w + kTaps - 1 - s.w - s.pad_left;
  for (int64_t pad : {s.pad_top, s.pad_left, pad_bottom, pad_right}) {
    if (pad < 0 || pad > kMaxPad) return false;
  }
  return true;
}

bool WinogradSuits(const Conv3x3Shape& s) {
  return WinogradValid(s) && s.c >= kMinSuitedChannels &&
         s.m >= kMinSuitedChannels && s.c <= kMaxSuitedChannels &&
         s.m <= kMaxSuitedChannels;
}

WinogradTile ResolveWinogradTile(const Conv3x3Shape& s, WinogradTile tile) {
  return ChooseTile(s, tile);
}

void WinogradWeights::Assign(const Conv3x3Shape& s, WinogradTile tile,
                             const float* w) {
  tile_ = ChooseTile(s, tile);
  m_ = s.m;
  c_ = s.c;
  if (tile_ == WinogradTile::k4x4) {
    u_.resize(TileSize<4>::kPoints * m_ * c_);
    TransformWeights<4>(s, w, u_.data());
  } else {
    u_.resize(TileSize<2>::kPoints * m_ * c_);
    TransformWeights<2>(s, w, u_.data());
  }
}

void WinogradConvForward(const Conv3x3Shape& s, const float* x,
                         const WinogradWeights& u, const float* bias,
                         float* y) {
  if (u.tile() == WinogradTile::k4x4) {
    Forward<4>(s, x, u.data(), bias, y);
  } else {
    Forward<2>(s, x, u.data(), bias, y);
  }
}

void WinogradConvForward(const Conv3x3Shape& s, const float* x, const float* w,
                         const float* bias, float* y, WinogradTile tile) {
  // The calling thread's transform, kept so that repeated calls do not
  // allocate.
  thread_local WinogradWeights u;
  u.Assign(s, tile, w);
  WinogradConvForward(s, x, u, bias, y);
}

void WinogradConvWeightGrad(const Conv3x3Shape& s, const float* x,
                            const float* dy, float* dw, WinogradTile tile) {
  if (ChooseTile(s, tile) == WinogradTile::k4x4) {
    WeightGrad<4>(s, x, dy, dw);
  } else {
    WeightGrad<2>(s, x, dy, dw);
  }
}

}  // namespace mixq::engine
