// Output formatting for the client: human-readable tables and lines, JSON in
// protobuf's mapping, and the `watch` progress display. gRPC-free; every
// function is pure except EventPrinter, which writes to a borrowed stream.
#ifndef MIXQ_CLIENT_FORMAT_H_
#define MIXQ_CLIENT_FORMAT_H_

#include <ostream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "google/protobuf/message.h"
#include "google/protobuf/timestamp.pb.h"
#include "proto/mixq.pb.h"

namespace mixq::client {

// `message` in protobuf's JSON mapping with proto field names and every
// primitive field printed. `multiline`: indented with newlines (ending in one);
// otherwise one line without a trailing newline. INTERNAL if the message
// cannot be converted.
absl::StatusOr<std::string> ToJson(const google::protobuf::Message& message,
                                   bool multiline);

// Left-aligned columns separated by two spaces, header row first, one line
// per row, no trailing spaces. Columns whose index is in `right_aligned` are
// right-aligned. Rows shorter than the header get empty cells.
std::string FormatTable(const std::vector<std::string>& header,
                        const std::vector<std::vector<std::string>>& rows,
                        const std::vector<size_t>& right_aligned = {});

// A policy's per-layer bits in layer order, e.g. "8/6/4/4".
std::string FormatBits(const v1::Policy& policy);

// "QUEUED", "RUNNING", ...
std::string StateName(v1::JobState state);

// A fraction as a percentage with one decimal ("86.1%"); NaN (not measured)
// prints as "-".
std::string FormatAccuracy(double fraction);

// BOPs with an SI suffix and three significant digits ("44K", "1.2G"); "-"
// when unknown (0: policies recorded before BOPs were stored).
std::string FormatBops(double bops);

// Average bits with two decimals ("4.36").
std::string FormatAvgBits(double bits);

// Bytes in KiB with one decimal ("54.1").
std::string FormatKiB(double bytes);

// A loss with four decimals ("0.2509"); NaN (not measured) prints as "-".
std::string FormatLoss(double loss);

// UTC, to the second ("2025-01-01T12:00:00Z"); "-" when unset.
std::string FormatTimestamp(const google::protobuf::Timestamp& time);

// `submit`: the job id and a newline.
std::string FormatSubmitted(const v1::SubmitJobResponse& response);

// Accuracies: "calib acc" is on the job's calibration set, "val acc" on its
// validation set; a NaN (unmeasured) accuracy prints as "-".

// `status`: "key: value" lines (id, name, state, error, created, started,
// finished, steps done, layers, final avg bits, final BOPs, final calib acc,
// final val acc, validation: its size, source and the FP32 model's val acc);
// "-" where unset. BOPs print with an SI suffix ("44K", "1.2G").
std::string FormatJob(const v1::Job& job);

// `list`: a table ID, NAME, STATE, STEPS, AVG BITS, CALIB ACC, VAL ACC,
// CREATED (AVG BITS and the accuracies from the final policy, "-" before it
// exists).
std::string FormatJobList(const v1::ListJobsResponse& response);

// `results`: the layer order, then per step a header line (candidates,
// seconds, fine-tune steps), a line with the scoring work (node runs vs
// naive, % saved, scoring seconds) and the chosen candidate's Ω vs the
// step's oracle Ω when the server recorded them, a table RANK, INDEX, LOSS,
// CALIB ACC, OMEGA, AVG BITS, BOPS, BITS with the chosen candidate marked
// "*", and the step's fine-tuned (kept) policy with its policy id and both
// accuracies; then the final policy, and its bits per layer. BOPs unknown to
// the server (0) print as "-".
std::string FormatResults(const v1::GetResultsResponse& response);

// `best`: the layer order, then a table RANK, POLICY, AVG BITS, SIZE (KiB),
// BOPS, VAL ACC, CALIB ACC, LOSS, KIND, STEP, BITS (RANK is the position in
// the response; POLICY what `export --policy-id` takes). A same-model answer
// (response.model_sha256 set) spans jobs: a "model:" line first, and JOB and
// STRATEGY columns after POLICY.
std::string FormatBestPolicies(const v1::QueryBestPoliciesResponse& response);

// `best --resolve`: the predicted policy as FormatBestPolicies prints it
// (KIND "predicted", POLICY, VAL ACC, CALIB ACC, LOSS and STEP "-"), then a
// note that nothing measured it, with the `mixq submit` flags that would:
// --strategy knapsack and the target of `request`'s limit.
std::string FormatResolvedPolicy(const v1::QueryBestPoliciesResponse& response,
                                 const v1::QueryBestPoliciesRequest& request);

// `pareto`: a table POLICY, STRATEGY, AVG BITS, SIZE (KiB), BOPS, VAL ACC,
// CALIB ACC whose first row, "fp32", is the FP32 model (32 bits, its size,
// BOPs and validation accuracy), then the front by size ascending. A
// same-model answer gets a "model:" line first and a JOB column after
// POLICY. An empty front says so after the table.
std::string FormatParetoFront(const v1::GetParetoFrontResponse& response);

// `upload`: "sha256:<hex>" and a newline, as submit's --model accepts it.
std::string FormatUploaded(const v1::Artifact& artifact);
// `cancel`: "<id>: <STATE>", the state the job moved to (CANCELLED, or the
// state it had already ended in); a job still RUNNING (the wait for its
// end timed out) says the cancel is pending.
std::string FormatCancelled(const v1::Job& job);

// EvaluatePolicy's answer: FP32 vs quantized accuracy/loss, cost, bits.
std::string FormatEvaluation(const v1::EvaluatePolicyResponse& response);

// One progress-bar line (no "\r", no newline), e.g.
// "[#####.....] 52% step 7 avg 5.31 bits → 4.00 calib acc 86.1% val acc
// 84.0%"; the phase follows the percentage unless it is "search"; a size
// budget shows as "size 80.0 KiB → 64.0 KiB"; the validation accuracy is
// "-" until a policy has been kept and measured.
std::string FormatProgressBar(const v1::JobEvent& event);

// One line per event (no newline), e.g. "RUNNING search 52% step 7 avg 5.31
// bits → 4.00 calib acc 86.1% val acc 84.0% loss 0.4123".
std::string FormatEventLine(const v1::JobEvent& event);

// What `watch` prints after the SUCCEEDED event `event` (the last one): the
// final policy ("done: policy final, avg 4.00 bits, 12.0 KiB, val acc 87.0%
// (FP32 90.0%)") and the commands that save it and show the other kept
// policies ("export: mixq export JOB -o JOB.qdq.onnx; every kept policy:
// mixq pareto JOB"), each line ending in a newline.
std::string FormatWatchSummary(const v1::JobEvent& event);

// Prints a WatchJob stream as it arrives. Borrows `out`, which must outlive
// it. Not thread-safe.
class EventPrinter {
 public:
  enum class Mode {
    kLines,        // FormatEventLine, one line per event
    kProgressBar,  // FormatProgressBar, redrawn in place with "\r"
    kJson,         // one compact JSON object per line
  };

  EventPrinter(std::ostream& out, Mode mode) : out_(out), mode_(mode) {}
  EventPrinter(const EventPrinter&) = delete;
  EventPrinter& operator=(const EventPrinter&) = delete;

  // Prints `event`; INTERNAL if it cannot be converted to JSON.
  absl::Status Print(const v1::JobEvent& event);
  // Ends the progress bar's line, if one was drawn. Call once after the last
  // event.
  void Finish();

 private:
  std::ostream& out_;
  const Mode mode_;
  bool bar_drawn_ = false;
};

}  // namespace mixq::client

#endif  // MIXQ_CLIENT_FORMAT_H_
