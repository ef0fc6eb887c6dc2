// Import of ONNX RNN, LSTM and GRU nodes: rewrites them into the form the
// recurrent kernels take (engine/ops_rnn.cc). Private to the importer
// (import_graph.cc), which runs it on the parsed model before compiling it.
//
// Thread-safety: a pure function of its argument.
#ifndef MIXQ_ENGINE_RNN_IMPORT_H_
#define MIXQ_ENGINE_RNN_IMPORT_H_

#include <cstdint>

#include "absl/status/status.h"
#include "onnx/onnx_pb.h"

namespace mixq::engine {

// For every RNN, LSTM and GRU node of `graph` (default domain, model opset
// `opset`):
//  - its outputs become one packed output (see ops_rnn.cc), and each output
//    the graph names (Y, Y_h, Y_c; any subset) is sliced out of it by new
//    Slice / Gather nodes writing the original name, so readers are
//    unchanged;
//  - an initial_h / initial_c that is all zeros (a ConstantOfShape of 0,
//    possibly through Slice, Expand, Reshape, ... as torch.onnx exports
//    `torch.zeros(layers, x.size(1), hidden)`) is dropped, since an absent
//    state is zero: its shape would depend on the batch. Nodes left without
//    readers by that are removed;
//  - layout 1 (batch first) becomes layout 0 between Transpose nodes;
//  - an `activations` attribute listing the defaults per direction (RNN:
//    Tanh; LSTM: Sigmoid, Tanh, Tanh; GRU: Sigmoid, Tanh) is removed.
//  - a constant sequence_lens with one length for every sequence becomes
//    attribute kSequenceLengthAttribute (engine/ops.h), which the kernel
//    checks against the sequence it is given.
// INVALID_ARGUMENT naming the node for what the kernels cannot compute:
// sequence_lens of varying or non-constant lengths, activations other than
// the defaults.
absl::Status LowerRecurrentNodes(int64_t opset, onnx::GraphProto* graph);

}  // namespace mixq::engine

#endif  // MIXQ_ENGINE_RNN_IMPORT_H_
