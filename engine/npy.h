// Writing NumPy .npy files (reading them is DecodeInputs in engine/dataset.h).
#ifndef MIXQ_ENGINE_NPY_H_
#define MIXQ_ENGINE_NPY_H_

#include <string>

#include "engine/tensor.h"

namespace mixq::engine {

// Serialises `tensor` as a .npy file: format version 1.0 (2.0 if the header
// needs 64 KiB or more), dtype '<f4', C order, the header padded with spaces to
// a multiple of 64 bytes as np.save does (so np.save(path,
// array.astype(np.float32)) writes the same bytes). np.load returns an array of
// the tensor's shape (a scalar shape {} gives a 0-d array). Never fails: float
// tensors always fit the format.
std::string EncodeNpy(const Tensor& tensor);

}  // namespace mixq::engine

#endif  // MIXQ_ENGINE_NPY_H_
