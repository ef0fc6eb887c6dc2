// Winograd F(2x2, 3x3) convolution kernels; the maths, layout and threading
// contract are in winograd.h.
#include "engine/winograd.h"

#include <algorithm>
#include <cstring>

#include "Eigen/Core"
#include "engine/tensor.h"

namespace mixq::engine {
namespace {

// Output tiles are 2x2, input tiles 4x4, kernels 3x3: 16 transformed points.
constexpr int kTile = 2;
constexpr int kPatch = 4;
constexpr int kTaps = 3;
constexpr int kPoints = kPatch * kPatch;
constexpr int64_t kMaxPad = 2;
// Zero columns at most past a row in a split plane's padded rows.
constexpr int64_t kPadTail = kMaxPad + 1;
// WinogradSuits' channel range (see winograd.h).
constexpr int64_t kMinSuitedChannels = 4;
constexpr int64_t kMaxSuitedChannels = 512;

// The transforms run over this many consecutive tile positions at a time
// (fixed-size Eigen arrays: SIMD code).
constexpr int64_t kLanes = 16;

// A block holds about kBlockFloats / (16 (c + m)) tile positions, so that
// its V and M (or dM) buffers fill about half of a 1 MiB L2, within these
// bounds.
constexpr int64_t kBlockFloats = int64_t{1} << 17;
constexpr int64_t kMinBlockPositions = 64;
constexpr int64_t kMaxBlockPositions = 1024;
// Weight-gradient blocks are this many times larger: each block ends in
// horizontal sums of its m x c x 16 vector accumulators, which longer
// reductions amortise.
constexpr int64_t kGradBlockScale = 4;
// Weight gradients are summed from at most this many partial sums.
constexpr int64_t kMaxPartials = 8;

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

// G, the kernel transform of F(2, 3).
constexpr float kG[kPatch][kTaps] = {{1.0f, 0.0f, 0.0f},
                                     {0.5f, 0.5f, 0.5f},
                                     {0.5f, -0.5f, 0.5f},
                                     {0.0f, 0.0f, 1.0f}};

int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }
int64_t RoundUp(int64_t a, int64_t b) { return CeilDiv(a, b) * b; }

// `buffer` grown to at least `size` floats (new floats are zero).
float* Scratch(FloatBuffer* buffer, int64_t size) {
  if (static_cast<int64_t>(buffer->size()) < size) buffer->resize(size);
  return buffer->data();
}

// A range of samples and of tile rows (the same rows in each sample).
struct Block {
  int64_t s0, s1;
  int64_t ty0, ty1;
};

// How a shape is cut into blocks, and the sizes of a block's buffers.
//
// Positions: a tile row is `pitch` = tiles_x + 1 positions, the last one a
// junk tile (it reads zero padding and its outputs are dropped), so that
// the tiles of all rows of a sample are one arithmetic sequence and the
// transforms run over whole blocks of positions, not row by row (which
// would waste most SIMD lanes on narrow maps). A block's positions are its
// samples' positions one after the other.
struct Plan {
  // `target`: about how many positions a block should hold.
  Plan(const Conv3x3Shape& s, int64_t target) {
    tiles_y = CeilDiv(s.out_h, kTile);
    tiles_x = CeilDiv(s.out_w, kTile);
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
    // A chunk reads up to one tile row and one column pair past the
    // chunk, which may itself end kLanes - 1 past the block's rows.
    split_stride = RoundUp((rows_per_block + 1) * pitch + 2 * kLanes, kPacket);
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
  int64_t split_stride;  // floats per array of a split plane

  // Floats of a split plane (SplitPlane) with its padded-rows scratch.
  int64_t split_size() const {
    return kPatch * split_stride + kTile * (rows_per_block + 1) * 2 * pitch;
  }
};

// The positions a block's rows of one sample span.
int64_t SamplePositions(const Plan& plan, const Block& blk) {
  return (blk.ty1 - blk.ty0) * plan.pitch;
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

// Splits rows [first, first + 2 pairs) of the [h, w] plane `src` (rows
// outside it are zero), shifted right by `pad_left` zero columns and zero
// past its end, into four arrays `split_stride` apart: [even rows, even
// columns], [even, odd], [odd, even], [odd, odd], each `pitch` floats per
// row pair; their slack past `pairs` row pairs is zero. `padded` is scratch
// for 2 pairs * 2 pitch floats: the padded rows, even rows then odd rows,
// so that each parity is split by one long loop.
void SplitPlane(const float* src, int64_t h, int64_t w, int64_t first,
                int64_t pairs, int64_t pad_left, int64_t pitch,
                int64_t split_stride, float* padded, float* split) {
  const int64_t width = 2 * pitch;
  const int64_t copy = std::min(w, width - pad_left);
  for (int64_t r = 0; r < 2 * pairs; ++r) {
    float* row = padded + ((r % kTile) * pairs + r / kTile) * width;
    const int64_t in_row = first + r;
    if (in_row < 0 || in_row >= h) {
      std::fill(row, row + width, 0.0f);
      continue;
    }
    // The row's zero padding is at most kMaxPad columns on the left and
    // kPadTail on the right (2 tiles_x + 2 <= w + pad_left + pad_right + 1):
    // zero both ends, then copy over (fixed stores, no memset calls).
    for (int64_t k = 0; k < kMaxPad; ++k) row[k] = 0.0f;
    for (int64_t k = width - kPadTail; k < width; ++k) row[k] = 0.0f;
    CopyRow(src + in_row * w, copy, row + pad_left);
  }
  const int64_t count = pairs * pitch;
  for (int a = 0; a < kTile; ++a) {
    const float* in = padded + a * pairs * width;
    float* even = split + 2 * a * split_stride;
    float* odd = even + split_stride;
    for (int64_t k = 0; k < count; ++k) {
      even[k] = in[2 * k];
      odd[k] = in[2 * k + 1];
    }
  }
  for (int k = 0; k < kPatch; ++k) {
    std::fill(split + k * split_stride + count, split + (k + 1) * split_stride,
              0.0f);
  }
}

// V = B^T d B for the kLanes positions from `p` of a split input plane
// (SplitPlane): position p reads row pairs p / pitch and the next, column
// pairs p % pitch and the next. Point xi of position p + l goes to
// out[xi * point_stride + l].
void InputTransform(const float* split, int64_t split_stride, int64_t pitch,
                    int64_t p, float* out, int64_t point_stride) {
  Lanes d[kPatch][kPatch];
  for (int i = 0; i < kPatch; ++i) {
    // Rows 0, 1 are the pair's even and odd rows; 2, 3 the next pair's.
    const float* even =
        split + 2 * (i % kTile) * split_stride + p + (i / kTile) * pitch;
    const float* odd = even + split_stride;
    d[i][0] = Load(even);
    d[i][1] = Load(odd);
    d[i][2] = Load(even + 1);
    d[i][3] = Load(odd + 1);
  }
  for (int j = 0; j < kPatch; ++j) {  // B^T d, in place
    const Lanes t0 = d[0][j] - d[2][j];
    const Lanes t1 = d[1][j] + d[2][j];
    const Lanes t2 = d[2][j] - d[1][j];
    const Lanes t3 = d[1][j] - d[3][j];
    d[0][j] = t0;
    d[1][j] = t1;
    d[2][j] = t2;
    d[3][j] = t3;
  }
  for (int i = 0; i < kPatch; ++i) {  // (B^T d) B
    float* row = out + i * kPatch * point_stride;
    Store(row, d[i][0] - d[i][2]);
    Store(row + point_stride, d[i][1] + d[i][2]);
    Store(row + 2 * point_stride, d[i][2] - d[i][1]);
    Store(row + 3 * point_stride, d[i][1] - d[i][3]);
  }
}

// dM = A dY A^T for the kLanes positions from `p` of a split dY plane
// (SplitPlane, one row pair per tile row); point xi of position p + l goes
// to out[xi * point_stride + l].
void OutputGradTransform(const float* split, int64_t split_stride, int64_t p,
                         float* out, int64_t point_stride) {
  const Lanes d00 = Load(split + p);
  const Lanes d01 = Load(split + split_stride + p);
  const Lanes d10 = Load(split + 2 * split_stride + p);
  const Lanes d11 = Load(split + 3 * split_stride + p);
  // A dY: rows [d0, d0 + d1, d0 - d1, -d1].
  const Lanes t[kPatch][kTile] = {
      {d00, d01}, {d00 + d10, d01 + d11}, {d00 - d10, d01 - d11}, {-d10, -d11}};
  for (int i = 0; i < kPatch; ++i) {  // (A dY) A^T
    float* row = out + i * kPatch * point_stride;
    Store(row, t[i][0]);
    Store(row + point_stride, t[i][0] + t[i][1]);
    Store(row + 2 * point_stride, t[i][0] - t[i][1]);
    Store(row + 3 * point_stride, -t[i][1]);
  }
}

// Y = A^T M A + bias for kLanes positions: point xi of position l is
// in[xi * point_stride + l]; output (a, b) of position l goes to
// out[(2 a + b) * out_stride + l].
void OutputTransform(const float* in, int64_t point_stride, float bias,
                     float* out, int64_t out_stride) {
  Lanes t[kTile][kPatch];  // A^T M
  for (int j = 0; j < kPatch; ++j) {
    const Lanes m0 = Load(in + j * point_stride);
    const Lanes m1 = Load(in + (kPatch + j) * point_stride);
    const Lanes m2 = Load(in + (2 * kPatch + j) * point_stride);
    const Lanes m3 = Load(in + (3 * kPatch + j) * point_stride);
    t[0][j] = m0 + m1 + m2;
    t[1][j] = m1 - m2 - m3;
  }
  for (int a = 0; a < kTile; ++a) {  // (A^T M) A
    Store(out + 2 * a * out_stride, t[a][0] + t[a][1] + t[a][2] + bias);
    Store(out + (2 * a + 1) * out_stride, t[a][1] - t[a][2] - t[a][3] + bias);
  }
}

// Writes the outputs of tile rows [ty0, ty1) of one output plane `y` from
// the four arrays of OutputTransform (`pitch` positions per tile row).
void InterleaveOutput(const Conv3x3Shape& s, const Block& blk, int64_t pitch,
                      const float* out, int64_t out_stride, float* y) {
  const int64_t pairs = s.out_w / kTile;
  for (int64_t ty = blk.ty0; ty < blk.ty1; ++ty) {
    for (int64_t a = 0; a < kTile && kTile * ty + a < s.out_h; ++a) {
      const float* even = out + 2 * a * out_stride + (ty - blk.ty0) * pitch;
      const float* odd = even + out_stride;
      float* row = y + (kTile * ty + a) * s.out_w;
      ForEachChunk(0, pairs, [&]<int N>(int64_t k0) {
        float r[2 * N];
        for (int k = 0; k < N; ++k) {
          r[2 * k] = even[k0 + k];
          r[2 * k + 1] = odd[k0 + k];
        }
        std::memcpy(row + 2 * k0, r, sizeof(r));
      });
      if (s.out_w % kTile != 0) row[s.out_w - 1] = even[pairs];
    }
  }
}

// U[xi][m][c] = (G w[m, c] G^T)[xi].
void TransformWeights(const Conv3x3Shape& s, const float* w, float* u) {
  const int64_t mc = s.m * s.c;
  for (int64_t k = 0; k < mc; ++k) {
    const float* g = w + k * kTaps * kTaps;
    float gg[kPatch][kTaps];  // G g
    for (int a = 0; a < kPatch; ++a) {
      for (int j = 0; j < kTaps; ++j) {
        gg[a][j] = kG[a][0] * g[j] + kG[a][1] * g[kTaps + j] +
                   kG[a][2] * g[2 * kTaps + j];
      }
    }
    for (int a = 0; a < kPatch; ++a) {
      for (int b = 0; b < kPatch; ++b) {
        u[(a * kPatch + b) * mc + k] =
            gg[a][0] * kG[b][0] + gg[a][1] * kG[b][1] + gg[a][2] * kG[b][2];
      }
    }
  }
}

// dw[m, c] = G^T dU[m, c] G, dU laid out [xi][m][c].
void WeightsFromTransformed(const Conv3x3Shape& s, const float* du, float* dw) {
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
        g[i * kTaps + j] = t[i][0] * kG[0][j] + t[i][1] * kG[1][j] +
                           t[i][2] * kG[2][j] + t[i][3] * kG[3][j];
      }
    }
  }
}

// Zeroes positions [total, total rounded up to a packet) of `rows` rows
// (plan.stride apart) of `buffer`, which the products read but the
// transforms may not have written: stale values there could be non-finite
// (and 0 * inf is NaN in the weight gradient's sums).
void ZeroTail(const Plan& plan, int64_t total, int64_t rows, float* buffer) {
  const int64_t rounded = RoundUp(total, kPacket);
  for (int64_t r = 0; r < rows; ++r) {
    std::fill(buffer + r * plan.stride + total,
              buffer + r * plan.stride + rounded, 0.0f);
  }
}

// V[xi][c][position] for block `blk` (SamplePositions per sample), rows
// plan.stride apart; positions past the block's last, up to a whole packet,
// are zero.
void TransformBlockInput(const Conv3x3Shape& s, const Plan& plan,
                         const Block& blk, const float* x, float* split,
                         float* v) {
  const int64_t positions = SamplePositions(plan, blk);
  const int64_t point_stride = s.c * plan.stride;
  for (int64_t n = blk.s0; n < blk.s1; ++n) {
    for (int64_t c = 0; c < s.c; ++c) {
      SplitPlane(x + (n * s.c + c) * s.h * s.w, s.h, s.w,
                 kTile * blk.ty0 - s.pad_top, blk.ty1 - blk.ty0 + 1, s.pad_left,
                 plan.pitch, plan.split_stride,
                 split + kPatch * plan.split_stride, split);
      float* out = v + c * plan.stride + (n - blk.s0) * positions;
      for (int64_t p = 0; p < positions; p += kLanes) {
        InputTransform(split, plan.split_stride, plan.pitch, p, out + p,
                       point_stride);
      }
    }
  }
  ZeroTail(plan, (blk.s1 - blk.s0) * positions, kPoints * s.c, v);
}

// dM[xi][m][position] for block `blk`, like TransformBlockInput.
void TransformBlockOutputGrad(const Conv3x3Shape& s, const Plan& plan,
                              const Block& blk, const float* dy, float* split,
                              float* dm) {
  const int64_t positions = SamplePositions(plan, blk);
  const int64_t point_stride = s.m * plan.stride;
  for (int64_t n = blk.s0; n < blk.s1; ++n) {
    for (int64_t m = 0; m < s.m; ++m) {
      SplitPlane(dy + (n * s.m + m) * s.out_h * s.out_w, s.out_h, s.out_w,
                 kTile * blk.ty0, blk.ty1 - blk.ty0, 0, plan.pitch,
                 plan.split_stride, split + kPatch * plan.split_stride, split);
      float* out = dm + m * plan.stride + (n - blk.s0) * positions;
      for (int64_t p = 0; p < positions; p += kLanes) {
        OutputGradTransform(split, plan.split_stride, p, out + p, point_stride);
      }
    }
  }
  ZeroTail(plan, (blk.s1 - blk.s0) * positions, kPoints * s.m, dm);
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

// ProductBlock<mb, p> for runtime mb in [1, MB], p in [1, P].
template <int MB, int P>
void ProductUpTo(int mb, int p, const float* v, int64_t v_stride,
                 int64_t channels, const float* u, int64_t u_stride, float* out,
                 int64_t out_stride) {
  if constexpr (MB > 1) {
    if (mb < MB) {
      ProductUpTo<MB - 1, P>(mb, p, v, v_stride, channels, u, u_stride, out,
                             out_stride);
      return;
    }
  }
  if constexpr (P > 1) {
    if (p < P) {
      ProductUpTo<MB, P - 1>(mb, p, v, v_stride, channels, u, u_stride, out,
                             out_stride);
      return;
    }
  }
  ProductBlock<MB, P>(v, v_stride, channels, u, u_stride, out, out_stride);
}

// M[xi][m][p] = sum_c U[xi][m][c] V[xi][c][p] for `positions` positions.
void BlockProducts(const Conv3x3Shape& s, const Plan& plan, int64_t positions,
                   const float* u, const float* v, float* m) {
  const int64_t packets = CeilDiv(positions, kPacket);
  for (int xi = 0; xi < kPoints; ++xi) {
    const float* vx = v + xi * s.c * plan.stride;
    const float* ux = u + xi * s.m * s.c;
    float* mx = m + xi * s.m * plan.stride;
    for (int64_t p0 = 0; p0 < packets; p0 += kProductP) {
      const int p =
          static_cast<int>(std::min<int64_t>(kProductP, packets - p0));
      for (int64_t m0 = 0; m0 < s.m; m0 += kProductM) {
        const int mb = static_cast<int>(std::min<int64_t>(kProductM, s.m - m0));
        ProductUpTo<kProductM, kProductP>(
            mb, p, vx + p0 * kPacket, plan.stride, s.c, ux + m0 * s.c, s.c,
            mx + m0 * plan.stride + p0 * kPacket, plan.stride);
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

// GradBlock<mb, cb> for runtime mb in [1, MB], cb in [1, CB].
template <int MB, int CB>
void GradUpTo(int mb, int cb, const float* dm, const float* v, int64_t stride,
              int64_t length, float* out, int64_t out_stride) {
  if constexpr (MB > 1) {
    if (mb < MB) {
      GradUpTo<MB - 1, CB>(mb, cb, dm, v, stride, length, out, out_stride);
      return;
    }
  }
  if constexpr (CB > 1) {
    if (cb < CB) {
      GradUpTo<MB, CB - 1>(mb, cb, dm, v, stride, length, out, out_stride);
      return;
    }
  }
  GradBlock<MB, CB>(dm, v, stride, length, out, out_stride);
}

// du[xi][m][c] += sum over p of dM[xi][m][p] V[xi][c][p].
void BlockGradProducts(const Conv3x3Shape& s, const Plan& plan,
                       int64_t positions, const float* dm, const float* v,
                       float* du) {
  const int64_t length = RoundUp(positions, kPacket);
  for (int xi = 0; xi < kPoints; ++xi) {
    const float* dmx = dm + xi * s.m * plan.stride;
    const float* vx = v + xi * s.c * plan.stride;
    float* dux = du + xi * s.m * s.c;
    for (int64_t m0 = 0; m0 < s.m; m0 += kGradM) {
      const int mb = static_cast<int>(std::min<int64_t>(kGradM, s.m - m0));
      for (int64_t c0 = 0; c0 < s.c; c0 += kGradC) {
        const int cb = static_cast<int>(std::min<int64_t>(kGradC, s.c - c0));
        GradUpTo<kGradM, kGradC>(mb, cb, dmx + m0 * plan.stride,
                                 vx + c0 * plan.stride, plan.stride, length,
                                 dux + m0 * s.c + c0, s.c);
      }
    }
  }
}

int64_t BlockPositions(const Plan& plan, const Block& blk) {
  return (blk.s1 - blk.s0) * SamplePositions(plan, blk);
}

// About how many positions a block holds: V and M (or dM) then fill about
// kBlockFloats.
int64_t TargetPositions(const Conv3x3Shape& s) {
  return std::clamp(kBlockFloats / (kPoints * (s.c + s.m)), kMinBlockPositions,
                    kMaxBlockPositions);
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

void WinogradConvForward(const Conv3x3Shape& s, const float* x, const float* w,
                         const float* bias, float* y) {
  const Plan plan(s, TargetPositions(s));
  // The calling thread owns the transformed weights; workers only read them.
  thread_local FloatBuffer u_buffer;
  float* u = Scratch(&u_buffer, kPoints * s.m * s.c);
  TransformWeights(s, w, u);
#pragma omp parallel for schedule(dynamic, 1) if (plan.blocks > 1)
  for (int64_t b = 0; b < plan.blocks; ++b) {
    thread_local FloatBuffer split_buffer, v_buffer, m_buffer, out_buffer;
    const Block blk = plan.Get(b, s.n);
    float* split = Scratch(&split_buffer, plan.split_size());
    float* v = Scratch(&v_buffer, kPoints * s.c * plan.stride);
    float* m = Scratch(&m_buffer, kPoints * s.m * plan.stride);
    const int64_t positions = SamplePositions(plan, blk);
    const int64_t out_stride = RoundUp(positions + kLanes, kPacket);
    float* out = Scratch(&out_buffer, kPatch * out_stride);
    TransformBlockInput(s, plan, blk, x, split, v);
    BlockProducts(s, plan, BlockPositions(plan, blk), u, v, m);
    for (int64_t n = blk.s0; n < blk.s1; ++n) {
      for (int64_t mo = 0; mo < s.m; ++mo) {
        const float* in = m + mo * plan.stride + (n - blk.s0) * positions;
        const float bias_m = bias == nullptr ? 0.0f : bias[mo];
        for (int64_t p = 0; p < positions; p += kLanes) {
          OutputTransform(in + p, s.m * plan.stride, bias_m, out + p,
                          out_stride);
        }
        InterleaveOutput(s, blk, plan.pitch, out, out_stride,
                         y + (n * s.m + mo) * s.out_h * s.out_w);
      }
    }
  }
}

void WinogradConvWeightGrad(const Conv3x3Shape& s, const float* x,
                            const float* dy, float* dw) {
  const Plan plan(s, TargetPositions(s) * kGradBlockScale);
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
    float* v = Scratch(&v_buffer, kPoints * s.c * plan.stride);
    float* dm = Scratch(&dm_buffer, kPoints * s.m * plan.stride);
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
  WeightsFromTransformed(s, du, dw);
}

}  // namespace mixq::engine
