// Winograd F(2x2, 3x3) and F(4x4, 3x3) kernels for 3x3 convolutions (stride
// 1, dilation 1, group 1, NCHW, zero padding): the forward pass and the
// weight gradient, the tile size chosen per shape (see WinogradTile).
// The input gradient is the forward pass of dY with the flipped, transposed
// weights (w'[c, m, i, j] = w[m, c, 2 - i, 2 - j]) and pads 2 - pad.
//
// The maths (Lavin & Gray, "Fast Algorithms for Convolutional Neural
// Networks", 2015). The outputs are cut into 2x2 tiles; output tile (ty, tx)
// reads the 4x4 input patch d at rows 2 ty - pad_top + [0, 4) and columns
// 2 tx - pad_left + [0, 4) (zero outside the input). With
//   B^T = [1  0 -1  0]     G = [ 1    0    0 ]    A^T = [1  1  1  0]
//         [0  1  1  0]         [1/2  1/2  1/2]          [0  1 -1 -1]
//         [0 -1  1  0]         [1/2 -1/2  1/2]
//         [0  1  0 -1]         [ 0    0    1 ]
// the forward pass is, per tile,
//   U[m, c] = G g[m, c] G^T            (4x4, once per weights)
//   V[c]    = B^T d[c] B               (4x4 per tile and input channel)
//   M[xi][m] = sum_c U[xi][m, c] V[xi][c]   for each of the 16 points xi
//   Y[m]    = A^T M[m] A               (the 2x2 outputs, cropped at edges)
// i.e. 16 independent [m x c] x [c x tiles] products, 2.25x fewer
// multiplies than the direct convolution's 9 per output.
//
// F(4x4, 3x3) is the same with 4x4 output tiles, 6x6 input patches at
// rows / columns 4 t - pad + [0, 6), 36 points (4x fewer multiplies than
// direct) and the matrices for interpolation points 0, 1, -1, 2, -2, inf:
//   B^T = [4  0 -5  0  1  0]   G = [ 1/4     0     0  ]   A^T = [1 1  1 1  1 0]
//         [0 -4 -4  1  1  0]       [-1/6  -1/6  -1/6  ]         [0 1 -1 2 -2 0]
//         [0  4 -4 -1  1  0]       [-1/6   1/6  -1/6  ]         [0 1  1 4  4 0]
//         [0 -2 -1  2  1  0]       [1/24  1/12   1/6  ]         [0 1 -1 8 -8 1]
//         [0  2 -1 -2  1  0]       [1/24 -1/12   1/6  ]
//         [0  4  0 -5  0  1]       [  0     0     1   ]
// For either, the weight gradient is the adjoint: per tile dM[m] =
// A dY_tile[m] A^T (dY zero outside the output), dU[xi][m, c] = sum over
// tiles dM[xi][m] V[xi][c], and dw[m, c] = G^T dU[m, c] G.
//
// Layout. A tile row is stored as tiles_x + 1 positions (the last a junk
// tile that reads zero padding and whose outputs are dropped), so that all
// tiles of a sample form one arithmetic sequence of positions. Work goes in
// blocks of positions: whole samples (as many as make a few hundred
// positions, fewer with more channels, so that a block's buffers stay in
// L2; 4x larger for the weight gradient, whose blocks each end in
// horizontal sums) or, for large maps, bands of tile rows of one sample.
// Each input plane is first split into T x T arrays (rows and columns by
// their residue mod the tile size T, zero-padded), so that every transform
// load is contiguous; the transforms then run over 16 consecutive positions
// at a time (SIMD across tiles, crossing tile rows). A block's transformed
// inputs are V[xi][c][position] and its products M[xi][m][position] (each
// point an odd number of cache lines apart, so that a transform's 16 or 36
// streams do not evict each other from L1), so each of the 16 or 36
// products is a small GEMM whose inner loop runs over positions in SIMD
// packets with a register block of 8 output channels x 3 packets (AVX-512);
// the weight gradient's products reduce over positions with a 4 x 4 block
// of m x c vector accumulators. Scratch buffers are thread_local and
// reused: repeated calls with the same shapes do not allocate.
//
// Threading and determinism. OpenMP threads of the calling thread (see
// engine/threads.h) split the blocks. Forward: each output is written by one
// block, the result does not depend on the thread count. Weight gradient:
// block b adds into partial sum b % P, with P = min(8, blocks) fixed by the
// shape; each partial adds its blocks in increasing order and the partials
// are summed in order, so the result is bit-identical for any thread count.
//
// Accuracy, as |result - exact| / (1 + sum of the magnitudes of the terms),
// worst over tests/engine/winograd_test.cc's shapes (up to 256 channels):
// F(2x2, 3x3)'s transforms only add, subtract and halve, so results are
// within a few float roundings of the direct convolution (at most 7e-7;
// the test allows 1e-5). F(4x4, 3x3)'s scale by up to 8 and 1/24: at most
// 5.2e-6 forward, 3.6e-6 weight gradient, 4.3e-6 input gradient (the test
// allows 3e-5).
#ifndef MIXQ_ENGINE_WINOGRAD_H_
#define MIXQ_ENGINE_WINOGRAD_H_

#include <cstdint>
#include <vector>

#include "Eigen/Core"

namespace mixq::engine {

// A 3x3 convolution, stride 1, dilation 1, group 1, NCHW, zero padding.
struct Conv3x3Shape {
  int64_t n = 1, c = 1, h = 1, w = 1;  // input [n, c, h, w]
  int64_t m = 1;                       // output channels
  int64_t pad_top = 0, pad_left = 0;   // in [0, 2]
  // Output [n, m, out_h, out_w]: out_h = h + pad_top + pad_bottom - 2 for a
  // pad_bottom in [0, 2] (likewise out_w with pad_right).
  int64_t out_h = 1, out_w = 1;
};

// Whether the Winograd kernels take `s`: WinogradValid, and enough channels
// for Winograd to pay off, 4 <= c, m <= 512. Measured with F(2x2) only
// (F(4x4) is faster still where kAuto takes it), bench/winograd_bench.cc
// (batch 128, 2 threads, AMD Zen 4, against the
// engine's direct kernel for forward / input gradient and im2col + GEMM for
// the weight gradient): c = m = 16 and 32 (the ResNet) 1.4-1.7x on all
// three passes; c = m = 8 1.1-1.3x; c = m = 4 0.95x forward and input
// gradient but 2.2x weight gradient (a training step gains); c = 3, m = 16
// 0.9x forward, 0.66x input gradient (with few channels on either side the
// transforms cost more than the multiplies they save); c = m = 64..512
// 1.7-2.2x forward and input gradient, 1.0-1.35x weight gradient. Above 512
// a block's transformed tiles outgrow the cache (not measured).
bool WinogradSuits(const Conv3x3Shape& s);

// Whether the kernels can compute `s` at all (WinogradSuits without the
// channel heuristic); the functions below require it.
bool WinogradValid(const Conv3x3Shape& s);

// Which tile size the kernels use; k2x2 / k4x4 force F(2x2, 3x3) /
// F(4x4, 3x3) (for tests and benchmarks), kAuto picks per shape.
//
// kAuto's rule: F(4x4) when its transformed points per sample, 36 *
// ceil(out_h / 4) * (ceil(out_w / 4) + 1), are at most 64% of F(2x2)'s,
// 16 * ceil(out_h / 2) * (ceil(out_w / 2) + 1), for every pass (forward,
// input gradient, weight gradient: the same rule won or lost on all three
// in each measured shape). Points count the products' work, and with it
// the transforms' (per position F(4x4)'s cost about 2.5x F(2x2)'s). Maps
// that are not a multiple of 4 waste F(4x4) tiles on the edges, and the
// junk tile per tile row weighs more with fewer tiles per row. Measured
// with bench/winograd_bench.cc --sweep (batch 128, 2 threads, AMD Zen 4,
// pads 1), speed-up of F(4x4) over F(2x2), forward / weight grad / input
// grad, by map size (F(4x4) points as a share of F(2x2)'s):
//   56x56 (58%): c = m = 16 1.42 / 1.14 / 1.43x.
//   28x28 (60%): c = m = 16 1.20 / 1.08 / 1.27x (3.06 -> 2.54 ms,
//     3.34 -> 3.09, 2.57 -> 2.03); c = m = 32 1.35 / 1.18 / 1.56x;
//     c = m = 64 1.41 / 1.38 / 1.43x; c = m = 8 1.24 / 1.14 / 1.27x;
//     c = m = 4 1.22 / 1.21 / 1.23x; c = 3, m = 16 1.26 / 1.13 / 1.11x.
//   16x16 (62.5%): c = m = 128 1.29 / 1.11 / 1.28x.
//   7x7 (67.5%): c = m = 128 0.82 / 0.85 / 0.82x; c = m = 256 0.75 / 1.01 /
//     0.71x.
//   4x4 (75%): c = m = 512 0.74 / 0.79 / 0.80x.
//   14x14 (80%): c = m = 32 0.81 / 0.76 / 0.80x (1.88 -> 2.32 ms,
//     2.93 -> 3.86, 1.99 -> 2.50); c = m = 64 0.89 / 0.81 / 0.90x.
// So the ResNet's 28x28 stage takes F(4x4) and its 14x14 stage keeps
// F(2x2).
enum class WinogradTile { kAuto, k2x2, k4x4 };

// kAuto resolved for `s` (k2x2 or k4x4); another tile is returned as is.
WinogradTile ResolveWinogradTile(const Conv3x3Shape& s, WinogradTile tile);

// The transformed weights U[xi][m][c] = (G w[m, c] G^T)[xi] of one
// convolution for one tile size: what the forward pass multiplies with.
// Transforming costs about as much as a batch-1 forward pass of the layer
// (ResNet-18 at 224x224, batch 1: 57% of the time went to it), so callers
// whose weights do not change between calls keep one (WinogradWeightCache)
// instead of redoing it per call. Immutable once made.
class WinogradWeights {
 public:
  // Empty: fits no convolution until Assign.
  WinogradWeights() = default;
  // The transform of w [s.m, s.c, 3, 3] for `tile` (see Assign).
  WinogradWeights(const Conv3x3Shape& s, WinogradTile tile, const float* w) {
    Assign(s, tile, w);
  }

  // Becomes the transform of w [s.m, s.c, 3, 3] for `tile` (kAuto resolved
  // for `s`), reusing its storage when large enough. Split between the
  // calling thread's OpenMP threads when large; the result does not depend
  // on the thread count. Requires WinogradValid(s).
  void Assign(const Conv3x3Shape& s, WinogradTile tile, const float* w);

  // Whether these are the transform of weights for a convolution of `s`'s
  // channels with `tile` resolved for `s`.
  bool Fits(const Conv3x3Shape& s, WinogradTile tile) const {
    return ResolveWinogradTile(s, tile) == tile_ && s.m == m_ && s.c == c_;
  }
  WinogradTile tile() const { return tile_; }
  const float* data() const { return u_.data(); }

 private:
  WinogradTile tile_ = WinogradTile::k2x2;
  int64_t m_ = 0, c_ = 0;
  std::vector<float, Eigen::aligned_allocator<float>> u_;
};

// y[n, m, oh, ow] = bias[m] + sum_{c,i,j} w[m, c, i, j] *
//                   x[n, c, oh + i - pad_top, ow + j - pad_left]
// (x outside the input = 0). x is [n, c, h, w], w is [m, c, 3, 3], bias is
// [m] or null; overwrites y [n, m, out_h, out_w]. Requires WinogradValid(s).
// `tile`: see WinogradTile. Blocks until done; borrows the pointers for the
// call only. The result does not depend on the thread count.
void WinogradConvForward(const Conv3x3Shape& s, const float* x, const float* w,
                         const float* bias, float* y,
                         WinogradTile tile = WinogradTile::kAuto);

// The same with the weights already transformed: requires u.Fits(s, tile)
// for the tile it was made with, and gives the same result as the form
// above with that tile.
void WinogradConvForward(const Conv3x3Shape& s, const float* x,
                         const WinogradWeights& u, const float* bias, float* y);

// dw[m, c, i, j] = sum_{n,oh,ow} dy[n, m, oh, ow] *
//                  x[n, c, oh + i - pad_top, ow + j - pad_left].
// x is [n, c, h, w], dy is [n, m, out_h, out_w]; overwrites dw [m, c, 3, 3].
// Requires WinogradValid(s); `tile`: see WinogradTile. Bit-identical for any
// thread count.
void WinogradConvWeightGrad(const Conv3x3Shape& s, const float* x,
                            const float* dy, float* dw,
                            WinogradTile tile = WinogradTile::kAuto);

}  // namespace mixq::engine

#endif  // MIXQ_ENGINE_WINOGRAD_H_
