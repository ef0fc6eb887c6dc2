// Test support: the small search job the server tests submit (a 12-16-3 MLP
// on 200 teacher-labelled samples, bits 8/4/2, a 3-average-bit budget). It
// finishes in well under a second. Header-only; users link mixq::proto.
#ifndef MIXQ_TESTS_SUPPORT_TINY_JOB_H_
#define MIXQ_TESTS_SUPPORT_TINY_JOB_H_

#include "proto/mixq.pb.h"
#include "search/qat.h"
#include "tests/support/npy.h"
#include "tests/support/onnx_mlp.h"

namespace mixq::testing {

// `finetune_steps` per search step sets how long the job runs.
inline v1::SubmitJobRequest TinyJobRequest(int finetune_steps = 5) {
  v1::SubmitJobRequest request;
  v1::JobSpec* spec = request.mutable_spec();
  spec->mutable_model()->set_content(MakeMlpOnnx({12, 16, 3}, 1));
  const search::LabeledData data = MakeTeacherData(200, 12, 3, 2);
  spec->mutable_inputs()->set_content(NpyFloat32(data.inputs));
  spec->mutable_labels()->set_content(NpyInt64(data.labels));
  spec->set_calib_size(50);
  v1::SearchOptions* search = spec->mutable_search();
  for (int b : {8, 4, 2}) search->add_bits(b);
  search->mutable_budget()->set_avg_bits(3);
  search->set_finetune_steps(finetune_steps);
  return request;
}

}  // namespace mixq::testing

#endif  // MIXQ_TESTS_SUPPORT_TINY_JOB_H_
