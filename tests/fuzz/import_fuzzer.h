// The import fuzz target's work on one input, shared by the libFuzzer binary
// (fuzz_import) and the corpus replay driver (fuzz_import_replay).
#ifndef MIXQ_TESTS_FUZZ_IMPORT_FUZZER_H_
#define MIXQ_TESTS_FUZZ_IMPORT_FUZZER_H_

#include "absl/strings/string_view.h"

namespace mixq::fuzz {

// How far an input got.
enum class Outcome {
  kNotAModel,  // protobuf parsing failed
  kRejected,   // ValidateModel or the importer refused it
  kImported,   // imported; too large to run under the fuzz size guard
  kRan,        // imported, and Forward and Backward ran at the import batch
};

// Runs `bytes` through what the service does with a submitted model:
// FoldBatchNorm (which sees unvalidated bytes), ValidateModel, the importer
// on the original and on the folded bytes, and, for a model whose sizes
// stay small, one Forward and Backward on a zero input and a 4-bit policy
// evaluated in dynamic and static mode (search/evaluate.h) on a few random
// samples, so quantizers and observers meet overflowed values. Aborts (a
// finding) when a documented contract breaks: a status code other than
// INVALID_ARGUMENT or RESOURCE_EXHAUSTED for a refused model, a model the
// validator refused but the importer accepted, or an error from Forward or
// Backward on an accepted model. Crashes, leaks and hangs are the
// sanitizers' and libFuzzer's to report.
Outcome RunImport(absl::string_view bytes);

}  // namespace mixq::fuzz

#endif  // MIXQ_TESTS_FUZZ_IMPORT_FUZZER_H_
