// The `mixq report` page: one self-contained HTML document (inline CSS and
// SVG charts; no scripts, fonts, images or links to fetch) about one job.
// gRPC-free: it renders the messages the command fetched. Pure, thread-safe.
#ifndef MIXQ_CLIENT_REPORT_HTML_H_
#define MIXQ_CLIENT_REPORT_HTML_H_

#include <string>

#include "proto/mixq.pb.h"

namespace mixq::client {

// What a report shows: GetResults' answer (the job with its spec, every
// recorded step with its ranked candidates and kept policy, the final
// policy), GetParetoFront's for the job (the front and the FP32 point), and
// QueryBestPolicies' for every job on the job's model without a limit (the
// kept policies of other jobs: uniform ones among them are reference
// points).
struct ReportData {
  v1::GetResultsResponse results;
  v1::GetParetoFrontResponse pareto;
  v1::QueryBestPoliciesResponse model_policies;
};

// The ids of the report's charts (<svg id=... class="chart">), in page order.
inline constexpr char kBitsChartId[] = "chart-bits";
inline constexpr char kTrajectoryBitsChartId[] = "chart-trajectory-bits";
inline constexpr char kTrajectoryAccuracyChartId[] =
    "chart-trajectory-accuracy";
inline constexpr char kParetoChartId[] = "chart-pareto";

// The page, in this order: a summary (state, error, times, model hash,
// FP32 and final figures, validation set); the spec as run (every set field
// of Job.spec); the final policy's bits per layer (a bar chart; before the
// job ends, the latest kept policy's, so titled); the trajectory (the kept
// policy's average bits per step against the budget, and its calibration
// and validation accuracy per step against the FP32 model's); accuracy
// against size (the Pareto front, every kept policy, the FP32 model, and
// the kept policies with one bit-width for every layer, of this job or of
// any other job on the model in `model_policies`, marked "uniform"), with a
// table of the front and of those uniform policies; and per step the ranked
// candidates (the chosen one marked) and the kept policy. A job with no data
// yet for a part (queued, failed early) says so in place of that part's chart
// ("No steps recorded yet"). Every text from the data is HTML-escaped.
std::string RenderReportHtml(const ReportData& data);

}  // namespace mixq::client

#endif  // MIXQ_CLIENT_REPORT_HTML_H_
