// libFuzzer's custom mutator for fuzz_import: mostly structure-aware edits
// of the model (model_mutator.h), sometimes libFuzzer's byte mutations,
// which keep testing the protobuf parser and reach what no model edit does.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

#include "tests/fuzz/model_mutator.h"

extern "C" size_t LLVMFuzzerMutate(uint8_t* data, size_t size, size_t max_size);

namespace {

// One mutation in this many is a byte mutation.
constexpr unsigned kByteMutationEvery = 4;

}  // namespace

extern "C" size_t LLVMFuzzerCustomMutator(uint8_t* data, size_t size,
                                          size_t max_size, unsigned int seed) {
  if (seed % kByteMutationEvery == 0) {
    return LLVMFuzzerMutate(data, size, max_size);
  }
  std::string bytes(reinterpret_cast<const char*>(data), size);
  if (!mixq::fuzz::MutateModel(&bytes, seed, max_size)) {
    return LLVMFuzzerMutate(data, size, max_size);
  }
  std::memcpy(data, bytes.data(), bytes.size());
  return bytes.size();
}
