// The values the service gives JobSpec fields a submitter leaves unset: the
// one place they are written. The server fills them into every job's stored
// spec (server/job_spec.h, FillSpecDefaults), the CLI's help quotes them,
// and a test (tests/server/spec_defaults_test.cc) checks that mixq.proto's
// comments and the README's table of search defaults say the same.
#ifndef MIXQ_PROTO_SPEC_DEFAULTS_H_
#define MIXQ_PROTO_SPEC_DEFAULTS_H_

namespace mixq::spec_defaults {

// SearchOptions.
inline constexpr int kCandidates = 8;  // n, candidate policies per step
inline constexpr int kMaxLayers = 2;   // k, layers lowered per candidate
inline constexpr int kFinetuneSteps = 50;
// warmup_steps and final_finetune_steps default to finetune_steps.
inline constexpr double kLearningRate = 1e-4;
inline constexpr int kBatchSize = 64;
inline constexpr double kLambda = 1.0;
inline constexpr int kActivationBits = 8;
// The best on the quality bench (bench/README.md): uniform's and knapsack's
// allocations scored on the calibration set, the lower loss fine-tuned.
inline constexpr char kStrategy[] = "auto";
inline constexpr char kSelection[] = "min_index";
inline constexpr int kHutchinsonSamples = 16;

// JobSpec: without validation files or val_size, this share of the samples
// used (at least one) is held out as the validation set.
inline constexpr int kValidationPercent = 10;

}  // namespace mixq::spec_defaults

#endif  // MIXQ_PROTO_SPEC_DEFAULTS_H_
