// Test support for the server tests: the small search job they submit,
// reading a WatchJob stream to its end, submitting and watching a job.
// Header-only; users link mixq::proto and gRPC.
#ifndef MIXQ_TESTS_SUPPORT_SERVER_TESTING_H_
#define MIXQ_TESTS_SUPPORT_SERVER_TESTING_H_

#include <string>
#include <vector>

#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "proto/mixq.grpc.pb.h"
#include "proto/mixq.pb.h"
#include "search/qat.h"
#include "tests/support/npy.h"
#include "tests/support/onnx_mlp.h"

namespace mixq::testing {

// A 12-16-3 MLP on 200 teacher-labelled samples, bits 8/4/2, a 3-average-bit
// budget: it finishes in well under a second. `finetune_steps` per search
// step sets how long it runs.
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

// Makes `request`'s job outlast any test until cancelled or killed: a warm-up
// of 10^8 mini-batches in fine-tune cycles as long, so that no evaluation of
// the calibration loss comes to stop it early (a tiny model's stops
// improving within a few, and three without improvement end a fine-tune).
inline void MakeEndless(v1::SubmitJobRequest* request) {
  constexpr int kEndless = 100'000'000;
  v1::SearchOptions* search = request->mutable_spec()->mutable_search();
  search->set_warmup_steps(kEndless);
  search->set_finetune_steps(kEndless);
}

// Reads job `job_id`'s WatchJob stream, on `context` (fresh, with any
// metadata the call needs), to its end: appends the events to `*events`
// (optional) and returns the stream's status.
inline grpc::Status WatchToEnd(v1::Mixq::Stub& stub,
                               grpc::ClientContext* context,
                               const std::string& job_id,
                               std::vector<v1::JobEvent>* events = nullptr) {
  v1::WatchJobRequest request;
  request.set_job_id(job_id);
  auto reader = stub.WatchJob(context, request);
  v1::JobEvent event;
  while (reader->Read(&event)) {
    if (events != nullptr) events->push_back(event);
  }
  return reader->Finish();
}

// Reads an ExportModel stream for `request` to its end: the chunks'
// data concatenated into `*data`, the first chunk (size, SHA-256, file
// name) into `*first` (optional); returns the stream's status.
inline grpc::Status ReadExport(v1::Mixq::Stub& stub,
                               const v1::ExportModelRequest& request,
                               std::string* data,
                               v1::ExportChunk* first = nullptr) {
  grpc::ClientContext context;
  auto reader = stub.ExportModel(&context, request);
  v1::ExportChunk chunk;
  data->clear();
  for (bool is_first = true; reader->Read(&chunk); is_first = false) {
    if (is_first && first != nullptr) *first = chunk;
    data->append(chunk.data());
  }
  return reader->Finish();
}

// Submits `request` on `stub` and reads the job's watch stream to its end
// (events appended to `*events`, optional); the job's id, empty (with a test
// failure) when the submission or the stream failed.
inline std::string SubmitAndWatch(v1::Mixq::Stub& stub,
                                  const v1::SubmitJobRequest& request,
                                  std::vector<v1::JobEvent>* events = nullptr) {
  grpc::ClientContext context;
  v1::SubmitJobResponse response;
  const grpc::Status submitted = stub.SubmitJob(&context, request, &response);
  EXPECT_TRUE(submitted.ok()) << submitted.error_message();
  if (!submitted.ok()) return "";
  grpc::ClientContext watch;
  const grpc::Status watched =
      WatchToEnd(stub, &watch, response.job().id(), events);
  EXPECT_TRUE(watched.ok()) << watched.error_message();
  return response.job().id();
}

}  // namespace mixq::testing

#endif  // MIXQ_TESTS_SUPPORT_SERVER_TESTING_H_
