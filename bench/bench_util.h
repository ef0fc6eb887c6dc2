// Helpers the benchmark programs share: seeded inputs and the ONNX value
// declarations of the one-node models they build. Never run by ctest.
#ifndef MIXQ_BENCH_BENCH_UTIL_H_
#define MIXQ_BENCH_BENCH_UTIL_H_

#include <random>
#include <string>

#include "engine/tensor.h"
#include "onnx/onnx_pb.h"

namespace mixq::bench {

// A tensor of `shape` filled with standard normal values from `rng`.
engine::Tensor RandomTensor(engine::Shape shape, std::mt19937* rng);

// Appends a float tensor value `name` of `dims` to `values` (a graph's
// inputs or outputs), dim 0 symbolic ("batch"); empty `dims` leaves the
// shape to the importer.
void AddFloatValue(
    const std::string& name, const engine::Shape& dims,
    google::protobuf::RepeatedPtrField<onnx::ValueInfoProto>* values);

}  // namespace mixq::bench

#endif  // MIXQ_BENCH_BENCH_UTIL_H_
