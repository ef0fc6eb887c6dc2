// Structure-aware mutations of serialized ONNX models, for the import fuzz
// target's custom mutator (custom_mutator.cc). Byte flips mostly break the
// protobuf encoding; these edit what the engine reads — attribute values,
// dims, op types, weights at the ends of float's range, the wiring — so the
// fuzzer reaches the validator's and the engine's corners, numerical ones
// included (a Gemm alpha of 1e38, weights of 3e38).
#ifndef MIXQ_TESTS_FUZZ_MODEL_MUTATOR_H_
#define MIXQ_TESTS_FUZZ_MODEL_MUTATOR_H_

#include <cstddef>
#include <cstdint>
#include <string>

namespace mixq::fuzz {

// Applies one mutation, chosen by `seed`, to the ModelProto in `*bytes`:
//  - an attribute's value (INT, INTS, FLOAT, FLOATS) set to an extreme
//    (0, -1, 2^31, INT64_MAX; ±inf, NaN, 3e38, 1e-45, 1e38) or nudged;
//  - a dim of an initializer or of a declared shape changed the same way;
//  - a node's op_type replaced by another operator the engine knows;
//  - a float of an initializer set to an extreme value, or every float of
//    one scaled by 1e30;
//  - a node input rewired to another value of the graph (or emptied);
//  - a node removed or duplicated.
// False (and `*bytes` unchanged) when `*bytes` is not a ModelProto with a
// graph, or the result would exceed `max_size` bytes: the caller then
// mutates bytes. Deterministic for a given input and seed.
bool MutateModel(std::string* bytes, uint32_t seed, size_t max_size);

}  // namespace mixq::fuzz

#endif  // MIXQ_TESTS_FUZZ_MODEL_MUTATOR_H_
