// Recurrent operators: ONNX RNN, LSTM and GRU with layout 0 and the default
// activations (Tanh for RNN; Sigmoid for the gates, Tanh for the cell and
// hidden states of LSTM and GRU).
//
// A kernel computes every output of its node at once and writes them packed
// along axis 0 (the time axis): [T + S, D, B, H] holds Y ([T, D, B, H]) then
// the final states, Y_h and (LSTM) Y_c, as S = 2 (LSTM) or 1 (RNN, GRU) extra
// "steps" of shape [D, B, H]. The importer slices the node's outputs out of
// it (engine/rnn_import.h), because a kernel has a single output.
//
// The input products of all steps are one GEMM (X·W^T for [T·B, I] rows);
// each step adds its recurrent product H_{t-1}·R^T, and the batch splits
// between the OpenMP threads (ForBatchChunks). Backward recomputes the
// forward pass of each direction, keeping the gate activations, then runs
// back-propagation through time; the gradients of X, W and R are again GEMMs
// over all steps.
#include <omp.h>

#include <algorithm>
#include <memory>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "engine/ops.h"
#include "engine/ops_util.h"

namespace mixq::engine {
namespace {

// Input positions (ONNX).
constexpr int kX = 0;
constexpr int kW = 1;
constexpr int kR = 2;
constexpr int kBias = 3;
constexpr int kSequenceLens = 4;
constexpr int kInitialH = 5;
constexpr int kInitialC = 6;       // LSTM
constexpr int kPeepholes = 7;      // LSTM
constexpr int kLstmGates = 4;      // i, o, f, c
constexpr int kGruGates = 3;       // z, r, h
constexpr int kLstmStates = 2;     // Y_h, Y_c
constexpr int kGruStates = 1;      // Y_h
constexpr int kRnnGates = 1;       // i
constexpr int kRnnStates = 1;      // Y_h
constexpr int kLstmPeepholes = 3;  // P = [Pi, Po, Pf]

using RowVectorMap = Eigen::Map<const Eigen::RowVectorXf>;

bool Present(absl::Span<const Tensor* const> inputs, int i) {
  return static_cast<int>(inputs.size()) > i &&
         !IsOmittedInput(inputs[i]->shape());
}
bool PresentShape(absl::Span<const Shape* const> inputs, int i) {
  return static_cast<int>(inputs.size()) > i && !IsOmittedInput(*inputs[i]);
}

// The sizes of one call.
struct Dims {
  int64_t steps, batch, input, hidden, directions;
  int64_t rows() const { return steps * batch; }
};

// Batch rows per thread below which the recurrence runs on fewer threads:
// the per-step products of a smaller chunk cost less than a thread's start.
constexpr int64_t kMinRowsPerThread = 8;

// What a direction's forward pass keeps for its backward pass, per time
// step t in row block [t·B, (t+1)·B).
struct DirectionTrace {
  MatrixRM gates;   // [T·B, G·H] gate activations (after Sigmoid/Tanh)
  MatrixRM extra;   // LSTM: cell states C_t; GRU (linear_before_reset): the
                    // recurrent product of the h gate, H_{t-1}·Rh^T + Rbh
  MatrixRM hidden;  // [T·B, H] hidden states H_t
};

// What back-propagation through time produces, in the same rows.
struct DirectionGrads {
  MatrixRM gates;  // [T·B, G·H] dLoss/d(X·W^T + Wb)
  MatrixRM extra;  // GRU (linear_before_reset): dLoss/d(H_{t-1}·Rh^T + Rbh)
};

// The attributes the operators share.
struct RecurrentAttributes {
  int64_t hidden = 0;
  int directions = 1;
  bool reverse = false;
  int64_t sequence_length = -1;  // kSequenceLengthAttribute
};

// Calls f(begin, count) for consecutive chunks of `batch` rows, on the
// calling thread's OpenMP threads when there are several. Batch rows are
// independent through a recurrence, so each chunk runs the whole sequence
// with its own small per-step products: one parallel region per direction
// instead of one per step and product.
template <typename F>
void ForBatchChunks(int64_t batch, F&& f) {
  const int64_t chunks =
      std::clamp<int64_t>(batch / kMinRowsPerThread, 1, omp_get_max_threads());
  ParallelFor(chunks, chunks > 1, [&](int64_t c) {
    const int64_t begin = batch * c / chunks;
    f(begin, batch * (c + 1) / chunks - begin);
  });
}

// Shapes, inputs and the packing of outputs shared by the recurrent
// operators. A subclass runs one direction forward (Prepare, Recur) and back
// (RecurBackward, FinishBackward).
class RecurrentKernel : public Kernel {
 public:
  RecurrentKernel(absl::string_view op, const RecurrentAttributes& attributes,
                  int gates, int states)
      : op_(op),
        hidden_(attributes.hidden),
        directions_(attributes.directions),
        reverse_(attributes.reverse),
        sequence_length_(attributes.sequence_length),
        gates_(gates),
        states_(states) {}

  absl::StatusOr<Shape> OutputShape(
      absl::Span<const Shape* const> inputs) const override {
    const Shape& x = *inputs[kX];
    if (x.size() != 3) {
      return ShapeError(op_, absl::StrCat("X ", ShapeToString(x),
                                          " must be [seq_length, batch, "
                                          "input_size]"));
    }
    if (x[0] < 1) return ShapeError(op_, "the sequence is empty");
    if (sequence_length_ >= 0 && x[0] != sequence_length_) {
      return ShapeError(
          op_, absl::StrCat("sequence_lens gives every sequence length ",
                            sequence_length_, " but X ", ShapeToString(x),
                            " has ", x[0],
                            " steps (only full-length sequences are "
                            "supported)"));
    }
    const int64_t gh = gates_ * hidden_;
    const auto expect = [&](int i, const char* name,
                            const Shape& want) -> absl::Status {
      if (*inputs[i] == want) return absl::OkStatus();
      return ShapeError(
          op_, absl::StrCat(name, " has shape ", ShapeToString(*inputs[i]),
                            "; expected ", ShapeToString(want)));
    };
    absl::Status status = expect(kW, "W", {directions_, gh, x[2]});
    if (status.ok()) status = expect(kR, "R", {directions_, gh, hidden_});
    if (status.ok() && PresentShape(inputs, kBias)) {
      status = expect(kBias, "B", {directions_, 2 * gh});
    }
    if (status.ok() && PresentShape(inputs, kSequenceLens)) {
      status = ShapeError(op_, "sequence_lens is not supported");
    }
    const Shape state = {directions_, x[1], hidden_};
    if (status.ok() && PresentShape(inputs, kInitialH)) {
      status = expect(kInitialH, "initial_h", state);
    }
    if (status.ok() && PresentShape(inputs, kInitialC)) {
      status = expect(kInitialC, "initial_c", state);
    }
    if (status.ok() && PresentShape(inputs, kPeepholes)) {
      status = expect(kPeepholes, "P", {directions_, kLstmPeepholes * hidden_});
    }
    if (!status.ok()) return status;
    return CheckedShape({x[0] + states_, directions_, x[1], hidden_});
  }

  void Forward(absl::Span<const Tensor* const> inputs,
               Tensor* output) const override {
    const Dims dims = GetDims(inputs);
    DirectionTrace trace;
    for (int d = 0; d < directions_; ++d) {
      Run(inputs, dims, d, &trace);
      for (int64_t t = 0; t < dims.steps; ++t) {
        OutputBlock(output, dims, t, d) =
            trace.hidden.middleRows(t * dims.batch, dims.batch);
      }
      const int64_t last = Step(dims, d, dims.steps - 1) * dims.batch;
      OutputBlock(output, dims, dims.steps, d) =
          trace.hidden.middleRows(last, dims.batch);
      if (states_ == kLstmStates) {
        OutputBlock(output, dims, dims.steps + 1, d) =
            trace.extra.middleRows(last, dims.batch);
      }
    }
  }

  void Backward(absl::Span<const Tensor* const> inputs,
                const Tensor& grad_output,
                absl::Span<Tensor* const> grad_inputs) const override {
    const Dims dims = GetDims(inputs);
    const int64_t gh = gates_ * dims.hidden;
    const ConstMatrixMap x = inputs[kX]->AsMatrix(dims.rows(), dims.input);
    Tensor* dx = grad_inputs[kX];
    if (dx != nullptr) dx->SetZero();
    DirectionTrace trace;
    DirectionGrads grads;
    for (int d = 0; d < directions_; ++d) {
      Run(inputs, dims, d, &trace);
      grads.gates.resize(dims.rows(), gh);
      grads.extra.resize(dims.rows(), dims.hidden);
      ForBatchChunks(dims.batch, [&](int64_t begin, int64_t count) {
        RecurBackward(inputs, grad_output, dims, d, trace, begin, count, &grads,
                      grad_inputs);
      });
      FinishBackward(inputs, dims, d, trace, grads, grad_inputs);
      const ConstMatrixMap w = Weights(*inputs[kW], d, dims.input);
      if (dx != nullptr) {
        dx->AsMatrix(dims.rows(), dims.input).noalias() += grads.gates * w;
      }
      if (grad_inputs[kW] != nullptr) {
        MatrixMap(grad_inputs[kW]->data() + d * gh * dims.input, gh, dims.input)
            .noalias() = grads.gates.transpose() * x;
      }
      if (Present(inputs, kBias) && grad_inputs[kBias] != nullptr) {
        Eigen::Map<Eigen::RowVectorXf>(grad_inputs[kBias]->data() + d * 2 * gh,
                                       gh) = grads.gates.colwise().sum();
      }
    }
  }

 protected:
  // Sizes trace->extra for the subclass and adds the biases that do not
  // depend on the recurrence to trace->gates, which holds X·W^T + Wb.
  virtual void Prepare(absl::Span<const Tensor* const> inputs, const Dims& dims,
                       int d, DirectionTrace* trace) const = 0;

  // Runs batch rows [begin, begin + count) of direction `d` through the
  // sequence, turning their rows of trace->gates into gate activations and
  // filling their rows of trace->extra and trace->hidden. Chunks run
  // concurrently: only its own rows may be written.
  virtual void Recur(absl::Span<const Tensor* const> inputs, const Dims& dims,
                     int d, int64_t begin, int64_t count,
                     DirectionTrace* trace) const = 0;

  // Back-propagates batch rows [begin, begin + count) of direction `d`
  // through time, given the forward trace: fills their rows of `grads`,
  // and of the initial states' gradients (when present and wanted). Chunks
  // run concurrently: only its own rows may be written.
  virtual void RecurBackward(absl::Span<const Tensor* const> inputs,
                             const Tensor& grad_output, const Dims& dims, int d,
                             const DirectionTrace& trace, int64_t begin,
                             int64_t count, DirectionGrads* grads,
                             absl::Span<Tensor* const> grad_inputs) const = 0;

  // After every chunk: direction d's gradients of R, the recurrent half of B
  // and P (each when present and wanted).
  virtual void FinishBackward(absl::Span<const Tensor* const> inputs,
                              const Dims& dims, int d,
                              const DirectionTrace& trace,
                              const DirectionGrads& grads,
                              absl::Span<Tensor* const> grad_inputs) const = 0;

  Dims GetDims(absl::Span<const Tensor* const> inputs) const {
    const Tensor& x = *inputs[kX];
    return {x.dim(0), x.dim(1), x.dim(2), hidden_, directions_};
  }

  // The time step direction `d` processes as its `s`-th.
  int64_t Step(const Dims& dims, int d, int64_t s) const {
    return IsReverse(d) ? dims.steps - 1 - s : s;
  }
  bool IsReverse(int d) const { return reverse_ || d == 1; }

  // Direction d's [G·H, cols] block of W ([D, G·H, I]) or R ([D, G·H, H]).
  ConstMatrixMap Weights(const Tensor& w, int d, int64_t cols) const {
    const int64_t gh = gates_ * hidden_;
    return ConstMatrixMap(w.data() + d * gh * cols, gh, cols);
  }
  // Direction d's input (half = 0) or recurrent (half = 1) bias, [G·H].
  RowVectorMap Bias(const Tensor& b, int d, int half) const {
    const int64_t gh = gates_ * hidden_;
    return RowVectorMap(b.data() + (2 * d + half) * gh, gh);
  }
  // Direction d's recurrent bias gradient, [G·H].
  Eigen::Map<Eigen::RowVectorXf> RecurrentBiasGrad(Tensor* grad, int d) const {
    const int64_t gh = gates_ * hidden_;
    return Eigen::Map<Eigen::RowVectorXf>(grad->data() + (2 * d + 1) * gh, gh);
  }

  // Batch rows [begin, begin + count) of time step `t` in `m` ([T·B, ...]).
  template <typename M>
  static auto StepRows(M& m, const Dims& dims, int64_t t, int64_t begin,
                       int64_t count) {
    return m.middleRows(t * dims.batch + begin, count);
  }

  // Batch rows [begin, begin + count) of time step `t` of direction d in the
  // packed output's gradient. Steps T and T + 1 are Y_h and Y_c.
  static ConstMatrixMap OutputRows(const Tensor& out, const Dims& dims,
                                   int64_t t, int d, int64_t begin,
                                   int64_t count) {
    return ConstMatrixMap(
        out.data() +
            ((t * dims.directions + d) * dims.batch + begin) * dims.hidden,
        count, dims.hidden);
  }
  static MatrixMap OutputBlock(Tensor* out, const Dims& dims, int64_t t,
                               int d) {
    return MatrixMap(
        out->data() + ((t * dims.directions + d) * dims.batch) * dims.hidden,
        dims.batch, dims.hidden);
  }

  // Batch rows [begin, begin + count) of direction d's initial state `i`, or
  // zeros when absent.
  static MatrixRM InitialState(absl::Span<const Tensor* const> inputs, int i,
                               const Dims& dims, int d, int64_t begin,
                               int64_t count) {
    if (!Present(inputs, i)) return MatrixRM::Zero(count, dims.hidden);
    return ConstMatrixMap(
        inputs[i]->data() + (d * dims.batch + begin) * dims.hidden, count,
        dims.hidden);
  }
  // Writes `grad` as rows [begin, begin + count) of direction d's gradient
  // of initial state `i`, when present and wanted.
  static void SetStateGrad(absl::Span<const Tensor* const> inputs,
                           absl::Span<Tensor* const> grad_inputs, int i,
                           const Dims& dims, int d, int64_t begin,
                           const MatrixRM& grad) {
    if (!Present(inputs, i) || grad_inputs[i] == nullptr) return;
    MatrixMap(grad_inputs[i]->data() + (d * dims.batch + begin) * dims.hidden,
              grad.rows(), dims.hidden) = grad;
  }

  // The state before every step t of direction d ([T·B, H], in time order):
  // `states`' row block of the previous step in processing order, initial
  // state `initial` for the first.
  MatrixRM PreviousStates(absl::Span<const Tensor* const> inputs,
                          const Dims& dims, int d, const MatrixRM& states,
                          int initial) const {
    MatrixRM previous(dims.rows(), dims.hidden);
    for (int64_t s = 0; s < dims.steps; ++s) {
      auto rows = StepRows(previous, dims, Step(dims, d, s), 0, dims.batch);
      if (s == 0) {
        rows = InitialState(inputs, initial, dims, d, 0, dims.batch);
      } else {
        rows = StepRows(states, dims, Step(dims, d, s - 1), 0, dims.batch);
      }
    }
    return previous;
  }

 private:
  // Runs direction `d` over the sequence, filling `trace`.
  void Run(absl::Span<const Tensor* const> inputs, const Dims& dims, int d,
           DirectionTrace* trace) const {
    const ConstMatrixMap x = inputs[kX]->AsMatrix(dims.rows(), dims.input);
    trace->gates.noalias() =
        x * Weights(*inputs[kW], d, dims.input).transpose();
    if (Present(inputs, kBias)) {
      trace->gates.rowwise() += Bias(*inputs[kBias], d, 0);
    }
    trace->hidden.resize(dims.rows(), dims.hidden);
    Prepare(inputs, dims, d, trace);
    ForBatchChunks(dims.batch, [&](int64_t begin, int64_t count) {
      Recur(inputs, dims, d, begin, count, trace);
    });
  }

  const std::string op_;
  const int64_t hidden_;
  const int directions_;
  const bool reverse_;             // direction "reverse"
  const int64_t sequence_length_;  // kSequenceLengthAttribute, or -1
  const int gates_;
  const int states_;
};

// ONNX RNN: Ht = tanh(Xt·Wi^T + Ht-1·Ri^T + Wbi + Rbi).
class RnnKernel : public RecurrentKernel {
 public:
  explicit RnnKernel(const RecurrentAttributes& attributes)
      : RecurrentKernel("RNN", attributes, kRnnGates, kRnnStates) {}

 protected:
  void Prepare(absl::Span<const Tensor* const> inputs, const Dims& dims, int d,
               DirectionTrace* trace) const override {
    (void)dims;
    if (Present(inputs, kBias)) {
      trace->gates.rowwise() += Bias(*inputs[kBias], d, 1);
    }
  }

  void Recur(absl::Span<const Tensor* const> inputs, const Dims& dims, int d,
             int64_t begin, int64_t count,
             DirectionTrace* trace) const override {
    const ConstMatrixMap r = Weights(*inputs[kR], d, dims.hidden);
    MatrixRM hidden = InitialState(inputs, kInitialH, dims, d, begin, count);
    for (int64_t s = 0; s < dims.steps; ++s) {
      const int64_t t = Step(dims, d, s);
      auto g = StepRows(trace->gates, dims, t, begin, count);
      g.noalias() += hidden * r.transpose();
      g.array() = g.array().tanh();
      hidden = g;
      StepRows(trace->hidden, dims, t, begin, count) = hidden;
    }
  }

  void RecurBackward(absl::Span<const Tensor* const> inputs,
                     const Tensor& grad_output, const Dims& dims, int d,
                     const DirectionTrace& trace, int64_t begin, int64_t count,
                     DirectionGrads* grads,
                     absl::Span<Tensor* const> grad_inputs) const override {
    const ConstMatrixMap r = Weights(*inputs[kR], d, dims.hidden);
    MatrixRM dh = OutputRows(grad_output, dims, dims.steps, d, begin, count);
    for (int64_t s = dims.steps; s-- > 0;) {
      const int64_t t = Step(dims, d, s);
      dh += OutputRows(grad_output, dims, t, d, begin, count);
      auto dg = StepRows(grads->gates, dims, t, begin, count);
      dg.array() =
          dh.array() *
          (1.0f -
           StepRows(trace.hidden, dims, t, begin, count).array().square());
      dh.noalias() = dg * r;
    }
    SetStateGrad(inputs, grad_inputs, kInitialH, dims, d, begin, dh);
  }

  void FinishBackward(absl::Span<const Tensor* const> inputs, const Dims& dims,
                      int d, const DirectionTrace& trace,
                      const DirectionGrads& grads,
                      absl::Span<Tensor* const> grad_inputs) const override {
    const int64_t h = dims.hidden;
    if (grad_inputs[kR] != nullptr) {
      MatrixMap(grad_inputs[kR]->data() + d * h * h, h, h).noalias() =
          grads.gates.transpose() *
          PreviousStates(inputs, dims, d, trace.hidden, kInitialH);
    }
    if (Present(inputs, kBias) && grad_inputs[kBias] != nullptr) {
      RecurrentBiasGrad(grad_inputs[kBias], d) = grads.gates.colwise().sum();
    }
  }
};

// ONNX LSTM, gates i, o, f, c (in that order in W, R and B), optional
// peepholes P = [Pi, Po, Pf]:
//   i = σ(Xt·Wi^T + Ht-1·Ri^T + Pi⊙Ct-1 + Wbi + Rbi)
//   f = σ(Xt·Wf^T + Ht-1·Rf^T + Pf⊙Ct-1 + Wbf + Rbf)
//   c = tanh(Xt·Wc^T + Ht-1·Rc^T + Wbc + Rbc)
//   Ct = f⊙Ct-1 + i⊙c
//   o = σ(Xt·Wo^T + Ht-1·Ro^T + Po⊙Ct + Wbo + Rbo)
//   Ht = o⊙tanh(Ct)
class LstmKernel : public RecurrentKernel {
 public:
  explicit LstmKernel(const RecurrentAttributes& attributes)
      : RecurrentKernel("LSTM", attributes, kLstmGates, kLstmStates) {}

 protected:
  void Prepare(absl::Span<const Tensor* const> inputs, const Dims& dims, int d,
               DirectionTrace* trace) const override {
    if (Present(inputs, kBias)) {
      trace->gates.rowwise() += Bias(*inputs[kBias], d, 1);
    }
    trace->extra.resize(dims.rows(), dims.hidden);
  }

  void Recur(absl::Span<const Tensor* const> inputs, const Dims& dims, int d,
             int64_t begin, int64_t count,
             DirectionTrace* trace) const override {
    const int64_t h = dims.hidden;
    const ConstMatrixMap r = Weights(*inputs[kR], d, h);
    const bool peepholes = Present(inputs, kPeepholes);
    MatrixRM hidden = InitialState(inputs, kInitialH, dims, d, begin, count);
    MatrixRM cell = InitialState(inputs, kInitialC, dims, d, begin, count);
    for (int64_t s = 0; s < dims.steps; ++s) {
      const int64_t t = Step(dims, d, s);
      auto g = StepRows(trace->gates, dims, t, begin, count);
      g.noalias() += hidden * r.transpose();
      auto i = g.middleCols(0, h).array();
      auto o = g.middleCols(h, h).array();
      auto f = g.middleCols(2 * h, h).array();
      auto c = g.middleCols(3 * h, h).array();
      if (peepholes) {
        i += cell.array().rowwise() * Peephole(inputs, d, 0).array();
        f += cell.array().rowwise() * Peephole(inputs, d, 2).array();
      }
      i = i.logistic();
      f = f.logistic();
      c = c.tanh();
      cell.array() = f * cell.array() + i * c;
      if (peepholes) {
        o += cell.array().rowwise() * Peephole(inputs, d, 1).array();
      }
      o = o.logistic();
      hidden.array() = o * cell.array().tanh();
      StepRows(trace->extra, dims, t, begin, count) = cell;
      StepRows(trace->hidden, dims, t, begin, count) = hidden;
    }
  }

  void RecurBackward(absl::Span<const Tensor* const> inputs,
                     const Tensor& grad_output, const Dims& dims, int d,
                     const DirectionTrace& trace, int64_t begin, int64_t count,
                     DirectionGrads* grads,
                     absl::Span<Tensor* const> grad_inputs) const override {
    const int64_t h = dims.hidden;
    const ConstMatrixMap r = Weights(*inputs[kR], d, h);
    const bool peepholes = Present(inputs, kPeepholes);
    const MatrixRM initial_cell =
        InitialState(inputs, kInitialC, dims, d, begin, count);
    MatrixRM dh = OutputRows(grad_output, dims, dims.steps, d, begin, count);
    MatrixRM dc =
        OutputRows(grad_output, dims, dims.steps + 1, d, begin, count);
    for (int64_t s = dims.steps; s-- > 0;) {
      const int64_t t = Step(dims, d, s);
      const auto previous_cell =
          s == 0
              ? initial_cell.middleRows(0, count)
              : StepRows(trace.extra, dims, Step(dims, d, s - 1), begin, count);
      dh += OutputRows(grad_output, dims, t, d, begin, count);
      const auto g = StepRows(trace.gates, dims, t, begin, count);
      const auto i = g.middleCols(0, h).array();
      const auto o = g.middleCols(h, h).array();
      const auto f = g.middleCols(2 * h, h).array();
      const auto c = g.middleCols(3 * h, h).array();
      const Eigen::ArrayXXf cell_tanh =
          StepRows(trace.extra, dims, t, begin, count).array().tanh();
      auto dg = StepRows(grads->gates, dims, t, begin, count);
      auto di = dg.middleCols(0, h).array();
      auto d_o = dg.middleCols(h, h).array();
      auto df = dg.middleCols(2 * h, h).array();
      auto dcc = dg.middleCols(3 * h, h).array();
      d_o = dh.array() * cell_tanh * o * (1.0f - o);
      dc.array() += dh.array() * o * (1.0f - cell_tanh.square());
      if (peepholes) {
        dc.array() += d_o.rowwise() * Peephole(inputs, d, 1).array();
      }
      di = dc.array() * c * i * (1.0f - i);
      df = dc.array() * previous_cell.array() * f * (1.0f - f);
      dcc = dc.array() * i * (1.0f - c.square());
      dc.array() *= f;
      if (peepholes) {
        dc.array() += di.rowwise() * Peephole(inputs, d, 0).array() +
                      df.rowwise() * Peephole(inputs, d, 2).array();
      }
      dh.noalias() = dg * r;
    }
    SetStateGrad(inputs, grad_inputs, kInitialH, dims, d, begin, dh);
    SetStateGrad(inputs, grad_inputs, kInitialC, dims, d, begin, dc);
  }

  void FinishBackward(absl::Span<const Tensor* const> inputs, const Dims& dims,
                      int d, const DirectionTrace& trace,
                      const DirectionGrads& grads,
                      absl::Span<Tensor* const> grad_inputs) const override {
    const int64_t h = dims.hidden;
    if (grad_inputs[kR] != nullptr) {
      MatrixMap(grad_inputs[kR]->data() + d * kLstmGates * h * h,
                kLstmGates * h, h)
          .noalias() = grads.gates.transpose() *
                       PreviousStates(inputs, dims, d, trace.hidden, kInitialH);
    }
    if (Present(inputs, kBias) && grad_inputs[kBias] != nullptr) {
      RecurrentBiasGrad(grad_inputs[kBias], d) = grads.gates.colwise().sum();
    }
    if (Present(inputs, kPeepholes) && grad_inputs[kPeepholes] != nullptr) {
      // Pi and Pf multiply the previous cell state, Po the new one.
      const MatrixRM previous_cell =
          PreviousStates(inputs, dims, d, trace.extra, kInitialC);
      const auto dg = grads.gates.array();
      const Eigen::RowVectorXf sums[kLstmPeepholes] = {
          (dg.middleCols(0, h) * previous_cell.array()).colwise().sum(),
          (dg.middleCols(h, h) * trace.extra.array()).colwise().sum(),
          (dg.middleCols(2 * h, h) * previous_cell.array()).colwise().sum()};
      for (int k = 0; k < kLstmPeepholes; ++k) {
        Eigen::Map<Eigen::RowVectorXf>(
            grad_inputs[kPeepholes]->data() + (d * kLstmPeepholes + k) * h, h) =
            sums[k];
      }
    }
  }

 private:
  // Direction d's peephole weights k (0: Pi, 1: Po, 2: Pf) as a row.
  static RowVectorMap Peephole(absl::Span<const Tensor* const> inputs, int d,
                               int k) {
    const int64_t h = inputs[kR]->dim(2);
    return RowVectorMap(
        inputs[kPeepholes]->data() + (d * kLstmPeepholes + k) * h, h);
  }
};

// ONNX GRU, gates z, r, h:
//   z = σ(Xt·Wz^T + Ht-1·Rz^T + Wbz + Rbz)
//   r = σ(Xt·Wr^T + Ht-1·Rr^T + Wbr + Rbr)
//   h = tanh(Xt·Wh^T + (r⊙Ht-1)·Rh^T + Rbh + Wbh)      linear_before_reset 0
//   h = tanh(Xt·Wh^T + r⊙(Ht-1·Rh^T + Rbh) + Wbh)      linear_before_reset 1
//   Ht = (1 - z)⊙h + z⊙Ht-1
class GruKernel : public RecurrentKernel {
 public:
  GruKernel(const RecurrentAttributes& attributes, bool linear_before_reset)
      : RecurrentKernel("GRU", attributes, kGruGates, kGruStates),
        linear_before_reset_(linear_before_reset) {}

 protected:
  void Prepare(absl::Span<const Tensor* const> inputs, const Dims& dims, int d,
               DirectionTrace* trace) const override {
    const int64_t h = dims.hidden;
    if (Present(inputs, kBias)) {
      // Rbz and Rbr add like the input bias; Rbh depends on the variant.
      trace->gates.middleCols(0, 2 * h).rowwise() +=
          Bias(*inputs[kBias], d, 1).head(2 * h);
    }
    if (linear_before_reset_) trace->extra.resize(dims.rows(), h);
  }

  void Recur(absl::Span<const Tensor* const> inputs, const Dims& dims, int d,
             int64_t begin, int64_t count,
             DirectionTrace* trace) const override {
    const int64_t h = dims.hidden;
    const Eigen::RowVectorXf recurrent_h_bias =
        Present(inputs, kBias)
            ? Eigen::RowVectorXf(Bias(*inputs[kBias], d, 1).tail(h))
            : Eigen::RowVectorXf::Zero(h);
    const ConstMatrixMap r = Weights(*inputs[kR], d, h);
    MatrixRM hidden = InitialState(inputs, kInitialH, dims, d, begin, count);
    MatrixRM product(count, kGruGates * h);
    MatrixRM reset_hidden(count, h);
    for (int64_t s = 0; s < dims.steps; ++s) {
      const int64_t t = Step(dims, d, s);
      auto g = StepRows(trace->gates, dims, t, begin, count);
      if (linear_before_reset_) {
        product.noalias() = hidden * r.transpose();
        g.middleCols(0, 2 * h) += product.middleCols(0, 2 * h);
      } else {
        g.middleCols(0, 2 * h).noalias() +=
            hidden * r.topRows(2 * h).transpose();
      }
      auto z = g.middleCols(0, h).array();
      auto reset = g.middleCols(h, h).array();
      auto candidate = g.middleCols(2 * h, h).array();
      z = z.logistic();
      reset = reset.logistic();
      if (linear_before_reset_) {
        auto a = StepRows(trace->extra, dims, t, begin, count);
        a = product.middleCols(2 * h, h);
        a.rowwise() += recurrent_h_bias;
        candidate += reset * a.array();
      } else {
        reset_hidden.array() = reset * hidden.array();
        g.middleCols(2 * h, h).noalias() +=
            reset_hidden * r.bottomRows(h).transpose();
        g.middleCols(2 * h, h).rowwise() += recurrent_h_bias;
      }
      candidate = candidate.tanh();
      hidden.array() = (1.0f - z) * candidate + z * hidden.array();
      StepRows(trace->hidden, dims, t, begin, count) = hidden;
    }
  }

  void RecurBackward(absl::Span<const Tensor* const> inputs,
                     const Tensor& grad_output, const Dims& dims, int d,
                     const DirectionTrace& trace, int64_t begin, int64_t count,
                     DirectionGrads* grads,
                     absl::Span<Tensor* const> grad_inputs) const override {
    const int64_t h = dims.hidden;
    const ConstMatrixMap r = Weights(*inputs[kR], d, h);
    const MatrixRM initial =
        InitialState(inputs, kInitialH, dims, d, begin, count);
    MatrixRM dh = OutputRows(grad_output, dims, dims.steps, d, begin, count);
    MatrixRM grad_reset_hidden(count, h);
    for (int64_t s = dims.steps; s-- > 0;) {
      const int64_t t = Step(dims, d, s);
      const auto hidden_before =
          (s == 0 ? initial.middleRows(0, count)
                  : StepRows(trace.hidden, dims, Step(dims, d, s - 1), begin,
                             count))
              .array();
      dh += OutputRows(grad_output, dims, t, d, begin, count);
      const auto g = StepRows(trace.gates, dims, t, begin, count);
      const auto z = g.middleCols(0, h).array();
      const auto reset = g.middleCols(h, h).array();
      const auto candidate = g.middleCols(2 * h, h).array();
      auto dg = StepRows(grads->gates, dims, t, begin, count);
      auto dz = dg.middleCols(0, h).array();
      auto dr = dg.middleCols(h, h).array();
      auto dcandidate = dg.middleCols(2 * h, h).array();
      dcandidate = dh.array() * (1.0f - z) * (1.0f - candidate.square());
      dz = dh.array() * (hidden_before - candidate) * z * (1.0f - z);
      dh.array() *= z;
      if (linear_before_reset_) {
        const auto a = StepRows(trace.extra, dims, t, begin, count).array();
        dr = dcandidate * a * reset * (1.0f - reset);
        auto da = StepRows(grads->extra, dims, t, begin, count);
        da.array() = dcandidate * reset;
        dh.noalias() += dg.middleCols(0, 2 * h) * r.topRows(2 * h);
        dh.noalias() += da * r.bottomRows(h);
      } else {
        grad_reset_hidden.noalias() = dg.middleCols(2 * h, h) * r.bottomRows(h);
        dr = grad_reset_hidden.array() * hidden_before * reset * (1.0f - reset);
        dh.array() += grad_reset_hidden.array() * reset;
        dh.noalias() += dg.middleCols(0, 2 * h) * r.topRows(2 * h);
      }
    }
    SetStateGrad(inputs, grad_inputs, kInitialH, dims, d, begin, dh);
  }

  void FinishBackward(absl::Span<const Tensor* const> inputs, const Dims& dims,
                      int d, const DirectionTrace& trace,
                      const DirectionGrads& grads,
                      absl::Span<Tensor* const> grad_inputs) const override {
    const int64_t h = dims.hidden;
    if (grad_inputs[kR] != nullptr) {
      const MatrixRM previous =
          PreviousStates(inputs, dims, d, trace.hidden, kInitialH);
      MatrixMap dr(grad_inputs[kR]->data() + d * kGruGates * h * h,
                   kGruGates * h, h);
      dr.topRows(2 * h).noalias() =
          grads.gates.middleCols(0, 2 * h).transpose() * previous;
      if (linear_before_reset_) {
        dr.bottomRows(h).noalias() = grads.extra.transpose() * previous;
      } else {
        const MatrixRM reset_hidden =
            (trace.gates.middleCols(h, h).array() * previous.array()).matrix();
        dr.bottomRows(h).noalias() =
            grads.gates.middleCols(2 * h, h).transpose() * reset_hidden;
      }
    }
    if (Present(inputs, kBias) && grad_inputs[kBias] != nullptr) {
      auto db = RecurrentBiasGrad(grad_inputs[kBias], d);
      db.head(2 * h) = grads.gates.middleCols(0, 2 * h).colwise().sum();
      db.tail(h) = linear_before_reset_
                       ? Eigen::RowVectorXf(grads.extra.colwise().sum())
                       : Eigen::RowVectorXf(
                             grads.gates.middleCols(2 * h, h).colwise().sum());
    }
  }

 private:
  const bool linear_before_reset_;
};

// Reads hidden_size, direction and kSequenceLengthAttribute; refuses what the
// kernels do not implement, naming the node.
absl::StatusOr<RecurrentAttributes> ParseAttributes(const OpConfig& config) {
  for (const char* unsupported :
       {"activations", "activation_alpha", "activation_beta", "clip"}) {
    if (config.attributes.contains(unsupported)) {
      return NodeError(config, absl::StrCat("attribute '", unsupported,
                                            "' is not supported (only the "
                                            "default activations, no clip)"));
    }
  }
  const absl::StatusOr<int64_t> layout = config.GetInt("layout", 0);
  if (!layout.ok()) return layout.status();
  if (*layout != 0) {
    return NodeError(
        config, absl::StrCat("layout ", *layout, " is not supported (only 0)"));
  }
  const absl::StatusOr<int64_t> hidden = config.GetInt("hidden_size", 0);
  if (!hidden.ok()) return hidden.status();
  // One hidden state of the largest tensor the engine allocates bounds it.
  if (*hidden < 1 || *hidden > kMaxTensorElements) {
    return NodeError(config,
                     absl::StrCat("hidden_size ", *hidden, " must be in [1, ",
                                  kMaxTensorElements, "]"));
  }
  const absl::StatusOr<std::string> direction =
      config.GetString("direction", "forward");
  if (!direction.ok()) return direction.status();
  const absl::StatusOr<int64_t> sequence_length =
      config.GetInt(kSequenceLengthAttribute, -1);
  if (!sequence_length.ok()) return sequence_length.status();
  RecurrentAttributes attributes;
  attributes.hidden = *hidden;
  attributes.sequence_length = *sequence_length;
  if (*direction == "bidirectional") {
    attributes.directions = 2;
  } else if (*direction == "reverse") {
    attributes.reverse = true;
  } else if (*direction != "forward") {
    return NodeError(config,
                     absl::StrCat("unknown direction '", *direction, "'"));
  }
  return attributes;
}

absl::StatusOr<std::unique_ptr<Kernel>> CreateLstm(const OpConfig& config) {
  const absl::StatusOr<RecurrentAttributes> attributes =
      ParseAttributes(config);
  if (!attributes.ok()) return attributes.status();
  const absl::StatusOr<int64_t> input_forget = config.GetInt("input_forget", 0);
  if (!input_forget.ok()) return input_forget.status();
  if (*input_forget != 0) {
    return NodeError(config, "input_forget=1 is not supported");
  }
  return std::make_unique<LstmKernel>(*attributes);
}

absl::StatusOr<std::unique_ptr<Kernel>> CreateRnn(const OpConfig& config) {
  const absl::StatusOr<RecurrentAttributes> attributes =
      ParseAttributes(config);
  if (!attributes.ok()) return attributes.status();
  return std::make_unique<RnnKernel>(*attributes);
}

absl::StatusOr<std::unique_ptr<Kernel>> CreateGru(const OpConfig& config) {
  const absl::StatusOr<RecurrentAttributes> attributes =
      ParseAttributes(config);
  if (!attributes.ok()) return attributes.status();
  const absl::StatusOr<int64_t> linear_before_reset =
      config.GetInt("linear_before_reset", 0);
  if (!linear_before_reset.ok()) return linear_before_reset.status();
  return std::make_unique<GruKernel>(*attributes, *linear_before_reset != 0);
}

}  // namespace

absl::Span<const OpEntry> RecurrentOps() {
  // Every input is a data input (sequence_lens, the only integer one, is
  // refused); omitted ones reach the kernel as IsOmittedInput tensors.
  static const OpEntry kOps[] = {
      {"LSTM", {3, 8, 8, 1, &CreateLstm, /*optional_data_inputs=*/true}},
      {"GRU", {3, 6, 6, 1, &CreateGru, /*optional_data_inputs=*/true}},
      {"RNN", {3, 6, 6, 1, &CreateRnn, /*optional_data_inputs=*/true}},
  };
  return kOps;
}

}  // namespace mixq::engine
