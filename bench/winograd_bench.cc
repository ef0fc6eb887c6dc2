// mixq-winograd-bench: the Winograd F(2x2, 3x3) and F(4x4, 3x3) kernels
// (engine/winograd.h) against im2col + GEMM and the engine's Conv, on 3x3
// stride-1 convolutions.
//
//   mixq-winograd-bench [--batch 128] [--threads 2] [--min-time 1] [--sweep]
//                       [--no-baseline]
//
// Per shape and pass, median times (the three sides run in turn, so that
// all see the same load on a shared machine) of:
//  - gemm: im2col + Eigen GEMM written here, samples split across threads
//    (the engine's GEMM path before its direct kernel);
//  - engine: a one-node Conv model (engine::Model): Forward for the forward
//    pass, Backward for the weight gradient (the graph input needs no
//    gradient, so it computes dW only), Forward of the transposed Conv for
//    the input gradient. Whatever ops_conv.cc dispatches to: the direct
//    kernel and im2col + GEMM before Winograd was wired in, Winograd after;
//  - wino2, wino4: WinogradConvForward, WinogradConvWeightGrad, and
//    WinogradConvForward of dY with the flipped, transposed weights and pads
//    2 - pad for the input gradient, with the tile size forced to F(2x2) and
//    F(4x4) (the engine column shows which one kAuto picks).
// GFLOP/s count the direct convolution's 2 n m c 9 oh ow FLOPs for all, so
// the numbers compare. Default shapes: the ResNet's 3x3 convs (16 channels at
// 28x28, 32 at 14x14); --sweep adds shapes for WinogradSuits' channel
// heuristic. Never run by ctest.
#include <omp.h>

#include <Eigen/Core>
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "bench/bench_util.h"
#include "engine/model.h"
#include "engine/tensor.h"
#include "engine/winograd.h"
#include "onnx/onnx_pb.h"
#include "util/status_macros.h"

namespace mixq::bench {
namespace {

using engine::Conv3x3Shape;
using engine::Model;
using engine::Shape;
using engine::Tensor;

constexpr int kWarmupIterations = 2;
constexpr int kMinIterations = 5;
constexpr uint32_t kSeed = 1;
constexpr int64_t kTaps = 3;
constexpr int64_t kMaxPad = 2;
constexpr double kFlopsPerMac = 2.0;
constexpr double kGiga = 1e9;
constexpr double kMsPerSecond = 1e3;
constexpr int kIrVersion = 8;
constexpr int kOpset = 13;

struct Options {
  int64_t batch = 128;
  int threads = 2;
  double min_seconds = 1.0;
  bool sweep = false;
  bool baseline = true;  // false: time only the Winograd kernels (profiling)
};

struct ConvCase {
  const char* label;
  int64_t c, m, size;  // square maps, pads 1
};

double Median(std::vector<double> v) {
  std::nth_element(v.begin(), v.begin() + v.size() / 2, v.end());
  return v[v.size() / 2];
}

using Step = std::function<absl::Status()>;

// Runs each step kWarmupIterations times, then all in turn until
// `min_seconds` have passed and each ran at least kMinIterations times;
// returns each step's median seconds per run. Stops at the first error.
absl::StatusOr<std::vector<double>> TimeSteps(double min_seconds,
                                              const std::vector<Step>& steps) {
  using Clock = std::chrono::steady_clock;
  for (int i = 0; i < kWarmupIterations; ++i) {
    for (const Step& step : steps) MIXQ_RETURN_IF_ERROR(step());
  }
  std::vector<std::vector<double>> seconds(steps.size());
  const Clock::time_point start = Clock::now();
  do {
    for (size_t k = 0; k < steps.size(); ++k) {
      const Clock::time_point before = Clock::now();
      MIXQ_RETURN_IF_ERROR(steps[k]());
      seconds[k].push_back(
          std::chrono::duration<double>(Clock::now() - before).count());
    }
  } while (static_cast<int>(seconds[0].size()) < kMinIterations ||
           std::chrono::duration<double>(Clock::now() - start).count() <
               min_seconds);
  std::vector<double> medians;
  for (std::vector<double>& v : seconds) medians.push_back(Median(v));
  return medians;
}

// ---------------------------------------------------- im2col + GEMM ----

using MatrixRM =
    Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using MatrixMap = Eigen::Map<MatrixRM>;
using ConstMatrixMap = Eigen::Map<const MatrixRM>;

// cols [c * 9, out_h * out_w] of sample `x` ([c, h, w]).
void Im2Col(const Conv3x3Shape& s, const float* x, float* cols) {
  const int64_t p = s.out_h * s.out_w;
  for (int64_t c = 0; c < s.c; ++c) {
    for (int64_t i = 0; i < kTaps; ++i) {
      for (int64_t j = 0; j < kTaps; ++j) {
        float* row = cols + ((c * kTaps + i) * kTaps + j) * p;
        for (int64_t oh = 0; oh < s.out_h; ++oh) {
          const int64_t ih = oh + i - s.pad_top;
          for (int64_t ow = 0; ow < s.out_w; ++ow) {
            const int64_t iw = ow + j - s.pad_left;
            row[oh * s.out_w + ow] = ih >= 0 && ih < s.h && iw >= 0 && iw < s.w
                                         ? x[(c * s.h + ih) * s.w + iw]
                                         : 0.0f;
          }
        }
      }
    }
  }
}

void GemmForward(const Conv3x3Shape& s, const float* x, const float* w,
                 float* y) {
  const int64_t k = s.c * kTaps * kTaps;
  const int64_t p = s.out_h * s.out_w;
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < s.n; ++n) {
    thread_local std::vector<float> cols;
    cols.resize(k * p);
    Im2Col(s, x + n * s.c * s.h * s.w, cols.data());
    MatrixMap(y + n * s.m * p, s.m, p).noalias() =
        ConstMatrixMap(w, s.m, k) * ConstMatrixMap(cols.data(), k, p);
  }
}

void GemmWeightGrad(const Conv3x3Shape& s, const float* x, const float* dy,
                    float* dw) {
  const int64_t k = s.c * kTaps * kTaps;
  const int64_t p = s.out_h * s.out_w;
  MatrixMap(dw, s.m, k).setZero();
#pragma omp parallel
  {
    MatrixRM partial = MatrixRM::Zero(s.m, k);
    std::vector<float> cols(k * p);
#pragma omp for schedule(static)
    for (int64_t n = 0; n < s.n; ++n) {
      Im2Col(s, x + n * s.c * s.h * s.w, cols.data());
      partial.noalias() += ConstMatrixMap(dy + n * s.m * p, s.m, p) *
                           ConstMatrixMap(cols.data(), k, p).transpose();
    }
#pragma omp critical
    MatrixMap(dw, s.m, k) += partial;
  }
}

void AddInts(const std::string& name, const std::vector<int64_t>& values,
             onnx::NodeProto* node) {
  onnx::AttributeProto* attr = node->add_attribute();
  attr->set_name(name);
  attr->set_type(onnx::AttributeProto::INTS);
  for (int64_t v : values) attr->add_ints(v);
}

// A model holding one Conv (no bias) of `s` with weights `w`.
absl::StatusOr<std::unique_ptr<Model>> ConvModel(const Conv3x3Shape& s,
                                                 const Tensor& w) {
  onnx::ModelProto proto;
  proto.set_ir_version(kIrVersion);
  proto.add_opset_import()->set_version(kOpset);
  onnx::GraphProto* graph = proto.mutable_graph();
  graph->set_name("conv");
  onnx::NodeProto* node = graph->add_node();
  node->set_op_type("Conv");
  node->set_name("conv");
  node->add_input("x");
  node->add_input("w");
  node->add_output("y");
  AddInts("kernel_shape", {kTaps, kTaps}, node);
  const int64_t pad_bottom = s.out_h + kTaps - 1 - s.h - s.pad_top;
  const int64_t pad_right = s.out_w + kTaps - 1 - s.w - s.pad_left;
  AddInts("pads", {s.pad_top, s.pad_left, pad_bottom, pad_right}, node);
  onnx::TensorProto* init = graph->add_initializer();
  init->set_name("w");
  init->set_data_type(onnx::TensorProto::FLOAT);
  for (int64_t d : w.shape()) init->add_dims(d);
  for (float v : w.values()) init->add_float_data(v);
  AddFloatValue("x", {s.n, s.c, s.h, s.w}, graph->mutable_input());
  AddFloatValue("y", {}, graph->mutable_output());
  return Model::FromOnnxBytes(proto.SerializeAsString());
}

// The input gradient's convolution: dY [n, m, out_h, out_w] to [n, c, h, w].
Conv3x3Shape Transposed(const Conv3x3Shape& s) {
  return {.n = s.n,
          .c = s.m,
          .h = s.out_h,
          .w = s.out_w,
          .m = s.c,
          .pad_top = kMaxPad - s.pad_top,
          .pad_left = kMaxPad - s.pad_left,
          .out_h = s.h,
          .out_w = s.w};
}

// w'[c, m, i, j] = w[m, c, 2 - i, 2 - j].
Tensor FlippedTransposed(const Conv3x3Shape& s, const Tensor& w) {
  Tensor t(Shape{s.c, s.m, kTaps, kTaps});
  for (int64_t m = 0; m < s.m; ++m) {
    for (int64_t c = 0; c < s.c; ++c) {
      for (int64_t i = 0; i < kTaps; ++i) {
        for (int64_t j = 0; j < kTaps; ++j) {
          t.values()[((c * s.m + m) * kTaps + i) * kTaps + j] =
              w.values()[((m * s.c + c) * kTaps + (kTaps - 1 - i)) * kTaps +
                         (kTaps - 1 - j)];
        }
      }
    }
  }
  return t;
}

// One pass's row: medians of gemm, engine, wino2, wino4 (or the last two
// alone), and the speed-ups of the faster Winograd and of wino4 over wino2.
void PrintRow(const char* pass, double flops,
              const std::vector<double>& seconds) {
  std::printf("  %-12s", pass);
  if (seconds.size() == 2) {
    std::printf(" %16s %16s", "-", "-");
  }
  for (double t : seconds) {
    std::printf(" %8.3f %7.1f", t * kMsPerSecond, flops / t / kGiga);
  }
  const double wino2 = seconds[seconds.size() - 2];
  const double wino4 = seconds[seconds.size() - 1];
  const double best = std::min(wino2, wino4);
  if (seconds.size() == 4) {
    std::printf(" %8.2fx %8.2fx", seconds[0] / best, seconds[1] / best);
  } else {
    std::printf(" %9s %9s", "-", "-");
  }
  std::printf(" %8.2fx\n", wino2 / wino4);
}

absl::Status BenchCase(const ConvCase& k, const Options& options) {
  const Conv3x3Shape s = {.n = options.batch,
                          .c = k.c,
                          .h = k.size,
                          .w = k.size,
                          .m = k.m,
                          .pad_top = 1,
                          .pad_left = 1,
                          .out_h = k.size,
                          .out_w = k.size};
  const Conv3x3Shape t = Transposed(s);
  std::mt19937 rng(kSeed);
  const Tensor x = RandomTensor({s.n, s.c, s.h, s.w}, &rng);
  const Tensor w = RandomTensor({s.m, s.c, kTaps, kTaps}, &rng);
  const Tensor dy = RandomTensor({s.n, s.m, s.out_h, s.out_w}, &rng);
  const Tensor wt = FlippedTransposed(s, w);
  MIXQ_ASSIGN_OR_RETURN(std::unique_ptr<Model> model, ConvModel(s, w));
  MIXQ_ASSIGN_OR_RETURN(std::unique_ptr<Model> transposed, ConvModel(t, wt));
  const std::vector<const Tensor*> params = {&w};
  const std::vector<const Tensor*> transposed_params = {&wt};
  Tensor y(Shape{s.n, s.m, s.out_h, s.out_w});
  Tensor dw(w.shape());
  Tensor dx(x.shape());
  engine::ForwardTrace trace;
  std::vector<Tensor> grads;
  const double seconds = options.min_seconds;

  Tensor y_gemm(y.shape());
  Tensor dw_gemm(dw.shape());
  Tensor dx_gemm(dx.shape());
  const bool all = options.baseline;
  // `winograd(tile)` runs the Winograd side with the tile size forced.
  const auto sides = [&](Step gemm, Step engine,
                         std::function<void(engine::WinogradTile)> winograd) {
    std::vector<Step> steps;
    if (all) steps = {std::move(gemm), std::move(engine)};
    for (engine::WinogradTile tile :
         {engine::WinogradTile::k2x2, engine::WinogradTile::k4x4}) {
      steps.push_back([winograd, tile] {
        winograd(tile);
        return absl::OkStatus();
      });
    }
    return steps;
  };
  MIXQ_RETURN_IF_ERROR(model->Forward(x, params, &trace).status());
  MIXQ_ASSIGN_OR_RETURN(
      const std::vector<double> forward,
      TimeSteps(seconds,
                sides(
                    [&] {
                      GemmForward(s, x.data(), w.data(), y_gemm.data());
                      return absl::OkStatus();
                    },
                    [&] { return model->Forward(x, params, nullptr).status(); },
                    [&](engine::WinogradTile tile) {
                      engine::WinogradConvForward(s, x.data(), w.data(),
                                                  nullptr, y.data(), tile);
                    })));
  MIXQ_ASSIGN_OR_RETURN(
      const std::vector<double> weight_grad,
      TimeSteps(seconds,
                sides(
                    [&] {
                      GemmWeightGrad(s, x.data(), dy.data(), dw_gemm.data());
                      return absl::OkStatus();
                    },
                    [&] { return model->Backward(trace, params, dy, &grads); },
                    [&](engine::WinogradTile tile) {
                      engine::WinogradConvWeightGrad(s, x.data(), dy.data(),
                                                     dw.data(), tile);
                    })));
  MIXQ_ASSIGN_OR_RETURN(
      const std::vector<double> input_grad,
      TimeSteps(seconds,
                sides(
                    [&] {
                      GemmForward(t, dy.data(), wt.data(), dx_gemm.data());
                      return absl::OkStatus();
                    },
                    [&] {
                      return transposed->Forward(dy, transposed_params, nullptr)
                          .status();
                    },
                    [&](engine::WinogradTile tile) {
                      engine::WinogradConvForward(t, dy.data(), wt.data(),
                                                  nullptr, dx.data(), tile);
                    })));
  GemmForward(s, x.data(), w.data(), y_gemm.data());
  GemmWeightGrad(s, x.data(), dy.data(), dw_gemm.data());
  GemmForward(t, dy.data(), wt.data(), dx_gemm.data());

  // Sanity: Winograd (F(4x4), timed last) and im2col + GEMM computed the
  // same values (largest difference relative to the largest magnitude).
  const auto max_diff = [](const Tensor& a, const Tensor& b) {
    float diff = 0, scale = 0;
    for (size_t i = 0; i < a.values().size(); ++i) {
      diff = std::max(diff, std::abs(a.values()[i] - b.values()[i]));
      scale = std::max(scale, std::abs(b.values()[i]));
    }
    return diff / scale;
  };
  const double flops = kFlopsPerMac * static_cast<double>(s.n * s.m * s.c) *
                       kTaps * kTaps * static_cast<double>(s.out_h * s.out_w);
  std::printf(
      "%s: X [%lld,%lld,%lld,%lld] -> %lld channels, %.0f MFLOP, suits %s; "
      "F(4x4) vs gemm relative max diff: y %.2g, dw %.2g, dx %.2g\n",
      k.label, static_cast<long long>(s.n), static_cast<long long>(s.c),
      static_cast<long long>(s.h), static_cast<long long>(s.w),
      static_cast<long long>(s.m), flops / 1e6,
      engine::WinogradSuits(s) ? "yes" : "no", max_diff(y, y_gemm),
      max_diff(dw, dw_gemm), max_diff(dx, dx_gemm));
  std::printf("  %-12s %16s %16s %16s %16s %9s %9s %9s\n", "pass",
              "gemm ms  GFLOP/s", "engine ms GFLOP/s", "wino2 ms GFLOP/s",
              "wino4 ms GFLOP/s", "vs gemm", "vs engine", "4 vs 2");
  PrintRow("forward", flops, forward);
  PrintRow("weight grad", flops, weight_grad);
  PrintRow("input grad", flops, input_grad);
  std::fflush(stdout);
  return absl::OkStatus();
}

int Run(const Options& options) {
  omp_set_num_threads(options.threads);
  Eigen::setNbThreads(options.threads);
  std::vector<ConvCase> cases = {{"resnet stage 1", 16, 16, 28},
                                 {"resnet stage 2", 32, 32, 14}};
  if (options.sweep) {
    cases.insert(cases.end(), {{"c3 m16", 3, 16, 28},
                               {"c4 m4", 4, 4, 28},
                               {"c8 m8", 8, 8, 28},
                               {"c16 m16 56", 16, 16, 56},
                               {"c32 m32 28", 32, 32, 28},
                               {"c64 m64", 64, 64, 14},
                               {"c64 m64 28", 64, 64, 28},
                               {"c128 m128 16", 128, 128, 16},
                               {"c128 m128", 128, 128, 7},
                               {"c256 m256", 256, 256, 7},
                               {"c512 m512", 512, 512, 4}});
  }
  std::printf("batch %lld, %d threads\n", static_cast<long long>(options.batch),
              options.threads);
  for (const ConvCase& k : cases) {
    absl::Status status = BenchCase(k, options);
    if (!status.ok()) {
      std::fprintf(stderr, "mixq-winograd-bench: %s: %s\n", k.label,
                   status.ToString().c_str());
      return 1;
    }
  }
  return 0;
}

}  // namespace
}  // namespace mixq::bench

int main(int argc, char** argv) {
  mixq::bench::Options options;
  CLI::App app{
      "Winograd F(2x2,3x3) and F(4x4,3x3) convolution kernels vs the engine's "
      "Conv"};
  app.add_option("--batch", options.batch, "samples per batch")
      ->check(CLI::PositiveNumber);
  app.add_option("--threads", options.threads, "OpenMP/Eigen threads")
      ->check(CLI::PositiveNumber);
  app.add_option("--min-time", options.min_seconds, "seconds per measurement")
      ->check(CLI::PositiveNumber);
  app.add_flag("--sweep", options.sweep,
               "also time shapes for WinogradSuits' channel heuristic");
  bool no_baseline = false;
  app.add_flag("--no-baseline", no_baseline,
               "time only the Winograd kernels (for profiling)");
  CLI11_PARSE(app, argc, argv);
  options.baseline = !no_baseline;
  return mixq::bench::Run(options);
}
