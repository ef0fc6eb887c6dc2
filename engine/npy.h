// Writing NumPy .npy files (reading them is DecodeInputs in engine/dataset.h).
#ifndef MIXQ_ENGINE_NPY_H_
#define MIXQ_ENGINE_NPY_H_

#include <cstdint>
#include <string>
#include <vector>

#include "engine/tensor.h"

namespace mixq::engine {

// Serialises `tensor` as a .npy file: format version 1.0 (2.0 if the header
// needs 64 KiB or more), dtype '<f4', C order, the header padded with spaces to
// a multiple of 64 bytes as np.save does (so np.save(path,
// array.astype(np.float32)) writes the same bytes). np.load returns an array of
// the tensor's shape (a scalar shape {} gives a 0-d array). Never fails: float
// tensors always fit the format.
std::string EncodeNpy(const Tensor& tensor);

// The same for a 1-D int64 array (dtype '<i8'), e.g. labels.
std::string EncodeNpyInt64(const std::vector<int64_t>& values);
// An int64 array of `shape` (token ids [N, T]); `values` holds its product of
// dims, in C order (the caller's invariant).
std::string EncodeNpyInt64(const std::vector<int64_t>& values,
                           const Shape& shape);

}  // namespace mixq::engine

#endif  // MIXQ_ENGINE_NPY_H_
