#include "client/format.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <iterator>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "client/cli.h"
#include "google/protobuf/util/json_util.h"

namespace mixq::client {
namespace {

constexpr int kProgressBarWidth = 10;
constexpr double kBytesPerKiB = 1024;
constexpr char kUnset[] = "-";
constexpr char kColumnGap[] = "  ";
// The FP32 model's weight bits, for its row in `pareto`.
constexpr double kFloatBits = 32;

std::string OrUnset(const std::string& s) { return s.empty() ? kUnset : s; }

std::string Percent(double fraction) {
  return absl::StrFormat("%.1f%%", 100 * fraction);
}
std::string Bits(double bits) { return absl::StrFormat("%.2f", bits); }
std::string KiB(double bytes) {
  return absl::StrFormat("%.1f", bytes / kBytesPerKiB);
}
std::string Loss(double loss) { return absl::StrFormat("%.4f", loss); }
std::string LossOrUnset(double loss) {
  return std::isnan(loss) ? kUnset : Loss(loss);
}
// Policy.kind of a policy re-solved from stored sensitivities, never run.
constexpr char kPredictedKind[] = "predicted";

// The layer names in policy order, "a/b/c", from the job's layers or, if the
// job has none, from `policy`.
std::string LayerOrder(const v1::Job& job, const v1::Policy& policy) {
  std::vector<std::string> names;
  if (job.layers_size() > 0) {
    for (const v1::Layer& layer : job.layers()) names.push_back(layer.name());
  } else {
    for (const v1::LayerBits& layer : policy.layers())
      names.push_back(layer.name());
  }
  return absl::StrJoin(names, "/");
}

// A kept policy: "policy step-3, avg 4.00 bits, 12.3 KiB, 1.2G BOPs, calib
// acc 85.0%, val acc 84.1%, loss 0.4123, bits 8/4/4/2" (no policy id
// without an exported model, no BOPs when unknown).
std::string DescribePolicy(const v1::Policy& policy) {
  return absl::StrCat(
      policy.policy_id().empty()
          ? ""
          : absl::StrCat("policy ", policy.policy_id(), ", "),
      "avg ", Bits(policy.avg_bits()), " bits, ", KiB(policy.size_bytes()),
      " KiB, ",
      policy.bops() > 0 ? absl::StrCat(FormatBops(policy.bops()), " BOPs, ")
                        : "",
      "calib acc ", FormatAccuracy(policy.accuracy()), ", val acc ",
      FormatAccuracy(policy.val_accuracy()), ", loss ", Loss(policy.loss()),
      ", bits ", FormatBits(policy));
}

// The part of an event line after the progress: the step, the policy's cost
// against the budget, its accuracies.
std::string DescribeEvent(const v1::JobEvent& event) {
  std::vector<std::string> parts;
  if (event.step() > 0) parts.push_back(absl::StrCat("step ", event.step()));
  if (event.avg_bits() > 0) {
    std::string avg = absl::StrCat("avg ", Bits(event.avg_bits()), " bits");
    if (event.target_avg_bits() > 0)
      absl::StrAppend(&avg, " → ", Bits(event.target_avg_bits()));
    parts.push_back(std::move(avg));
  }
  // A size budget is shown in bytes; an avg-bits budget needs no size.
  if (event.target_avg_bits() <= 0 && event.target_size_bytes() > 0 &&
      event.size_bytes() > 0) {
    parts.push_back(absl::StrCat("size ", KiB(event.size_bytes()), " KiB → ",
                                 KiB(event.target_size_bytes()), " KiB"));
  }
  // Accuracy and loss are meaningful once a policy has been evaluated; the
  // validation accuracy once it has been kept (NaN before).
  if (event.avg_bits() > 0) {
    parts.push_back(absl::StrCat("calib acc ", FormatAccuracy(event.accuracy()),
                                 " val acc ",
                                 FormatAccuracy(event.val_accuracy())));
  }
  return absl::StrJoin(parts, " ");
}

// A step's scoring work and distance from the optimum, e.g.
// "scoring: 120 node runs vs 400 naive (70.0% saved), 0.80 s; Ω 0.0224 vs
// oracle 0.02 (+0.0024)", with the newline; empty when the step recorded
// neither (the warm-up, or steps stored before mixq measured them).
std::string DescribeStepStats(const v1::Step& step) {
  std::vector<std::string> parts;
  if (step.naive_node_runs() > 0) {
    const double saved =
        1 - static_cast<double>(step.node_runs()) / step.naive_node_runs();
    parts.push_back(
        absl::StrFormat("scoring: %d node runs vs %d naive (%s saved), %.2f s",
                        step.node_runs(), step.naive_node_runs(),
                        Percent(saved), step.scoring_seconds()));
  }
  if (step.oracle_omega() > 0) {
    auto chosen =
        std::find_if(step.candidates().begin(), step.candidates().end(),
                     [](const v1::Policy& c) { return c.chosen(); });
    parts.push_back(
        chosen == step.candidates().end()
            ? absl::StrFormat("oracle Ω %.4g", step.oracle_omega())
            : absl::StrFormat("Ω %.4g vs oracle %.4g (%+.2g)", chosen->omega(),
                              step.oracle_omega(),
                              chosen->omega() - step.oracle_omega()));
  }
  if (parts.empty()) return "";
  return absl::StrCat(absl::StrJoin(parts, "; "), "\n");
}

// The job's validation set, e.g. "600 samples (held out: samples [5400,
// 6000) of x.npy), FP32 val acc 91.0%"; "-" before the server chose it.
std::string DescribeValidation(const v1::Job& job) {
  if (job.val_samples() == 0 && job.val_source().empty()) return kUnset;
  return absl::StrCat(job.val_samples(), " samples (",
                      OrUnset(job.val_source()), "), FP32 val acc ",
                      FormatAccuracy(job.fp32_val_accuracy()));
}

int ProgressPercent(double progress) {
  return static_cast<int>(std::clamp(progress, 0.0, 1.0) * 100);
}

}  // namespace

std::string FormatTimestamp(const google::protobuf::Timestamp& t) {
  if (t.seconds() == 0 && t.nanos() == 0) return kUnset;
  return absl::FormatTime("%Y-%m-%dT%H:%M:%SZ",
                          absl::FromUnixSeconds(t.seconds()),
                          absl::UTCTimeZone());
}

std::string FormatAvgBits(double bits) { return Bits(bits); }

std::string FormatKiB(double bytes) { return KiB(bytes); }

std::string FormatLoss(double loss) { return LossOrUnset(loss); }

std::string FormatAccuracy(double fraction) {
  return std::isnan(fraction) ? kUnset : Percent(fraction);
}

std::string FormatBops(double bops) {
  if (!(bops > 0)) return kUnset;
  constexpr const char* kSuffixes[] = {"", "K", "M", "G", "T", "P", "E"};
  constexpr double kStep = 1000;
  size_t i = 0;
  while (bops >= kStep && i + 1 < std::size(kSuffixes)) {
    bops /= kStep;
    ++i;
  }
  return absl::StrFormat("%.3g%s", bops, kSuffixes[i]);
}

absl::StatusOr<std::string> ToJson(const google::protobuf::Message& message,
                                   bool multiline) {
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  options.always_print_primitive_fields = true;
  options.add_whitespace = multiline;
  std::string json;
  auto status =
      google::protobuf::util::MessageToJsonString(message, &json, options);
  if (!status.ok()) {
    return absl::InternalError(absl::StrCat("cannot print ",
                                            message.GetTypeName(),
                                            " as JSON: ", status.ToString()));
  }
  // With add_whitespace the printer already ends in a newline.
  if (!multiline && !json.empty() && json.back() == '\n') json.pop_back();
  if (multiline && (json.empty() || json.back() != '\n')) json.push_back('\n');
  return json;
}

std::string FormatTable(const std::vector<std::string>& header,
                        const std::vector<std::vector<std::string>>& rows,
                        const std::vector<size_t>& right_aligned) {
  std::vector<size_t> widths(header.size());
  auto measure = [&widths](const std::vector<std::string>& row) {
    for (size_t i = 0; i < row.size() && i < widths.size(); ++i) {
      widths[i] = std::max(widths[i], row[i].size());
    }
  };
  measure(header);
  for (const auto& row : rows) measure(row);

  std::string table;
  auto append = [&](const std::vector<std::string>& row) {
    std::string line;
    for (size_t i = 0; i < widths.size(); ++i) {
      const std::string cell = i < row.size() ? row[i] : "";
      const std::string padding(widths[i] - cell.size(), ' ');
      if (i > 0) line += kColumnGap;
      const bool right = std::find(right_aligned.begin(), right_aligned.end(),
                                   i) != right_aligned.end();
      line += right ? padding + cell : cell + padding;
    }
    line.erase(line.find_last_not_of(' ') + 1);
    table += line;
    table += '\n';
  };
  append(header);
  for (const auto& row : rows) append(row);
  return table;
}

std::string FormatBits(const v1::Policy& policy) {
  return absl::StrJoin(policy.layers(), "/",
                       [](std::string* out, const v1::LayerBits& layer) {
                         absl::StrAppend(out, layer.bits());
                       });
}

std::string StateName(v1::JobState state) { return v1::JobState_Name(state); }

std::string FormatSubmitted(const v1::SubmitJobResponse& response) {
  return absl::StrCat(response.job().id(), "\n");
}

std::string FormatJob(const v1::Job& job) {
  const bool has_final = job.has_final_policy();
  const std::vector<std::pair<std::string, std::string>> fields = {
      {"id", job.id()},
      {"name", OrUnset(job.name())},
      {"state", StateName(job.state())},
      {"error", OrUnset(job.error())},
      {"created", FormatTimestamp(job.created())},
      {"started", FormatTimestamp(job.started())},
      {"finished", FormatTimestamp(job.finished())},
      {"steps done", absl::StrCat(job.steps_done())},
      {"layers", absl::StrCat(job.layers_size())},
      {"final avg bits",
       has_final ? Bits(job.final_policy().avg_bits()) : kUnset},
      {"final BOPs",
       has_final ? FormatBops(job.final_policy().bops()) : kUnset},
      {"final calib acc",
       has_final ? FormatAccuracy(job.final_policy().accuracy()) : kUnset},
      {"final val acc",
       has_final ? FormatAccuracy(job.final_policy().val_accuracy()) : kUnset},
      {"validation", DescribeValidation(job)},
  };
  size_t width = 0;
  for (const auto& [key, value] : fields) width = std::max(width, key.size());
  std::string text;
  for (const auto& [key, value] : fields) {
    absl::StrAppend(&text, key, ":", std::string(width - key.size() + 1, ' '),
                    value, "\n");
  }
  return text;
}

std::string FormatJobList(const v1::ListJobsResponse& response) {
  std::vector<std::vector<std::string>> rows;
  for (const v1::Job& job : response.jobs()) {
    const bool has_final = job.has_final_policy();
    const v1::Policy& final_policy = job.final_policy();
    rows.push_back(
        {job.id(), OrUnset(job.name()), StateName(job.state()),
         absl::StrCat(job.steps_done()),
         has_final ? Bits(final_policy.avg_bits()) : kUnset,
         has_final ? FormatAccuracy(final_policy.accuracy()) : kUnset,
         has_final ? FormatAccuracy(final_policy.val_accuracy()) : kUnset,
         FormatTimestamp(job.created())});
  }
  return FormatTable({"ID", "NAME", "STATE", "STEPS", "AVG BITS", "CALIB ACC",
                      "VAL ACC", "CREATED"},
                     rows, {3, 4, 5, 6});
}

std::string FormatResults(const v1::GetResultsResponse& response) {
  std::string text;
  absl::StrAppend(&text, "job ", response.job().id(), " ",
                  StateName(response.job().state()), "\nlayers: ",
                  LayerOrder(response.job(), response.final_policy()), "\n");
  for (const v1::Step& step : response.steps()) {
    absl::StrAppend(
        &text, "\nstep ", step.step(), step.step() == 0 ? " (warm-up)" : "",
        absl::StrFormat(": %d candidates, %.1f s", step.candidates_size(),
                        step.elapsed_seconds()),
        step.finetune_steps() > 0
            ? absl::StrCat(", ", step.finetune_steps(), " fine-tune steps")
            : "",
        "\n", DescribeStepStats(step));
    if (step.candidates_size() > 0) {
      std::vector<std::vector<std::string>> rows;
      for (const v1::Policy& c : step.candidates()) {
        rows.push_back({c.chosen() ? "*" : "", absl::StrCat(c.rank()),
                        absl::StrFormat("%.4g", c.index()), Loss(c.loss()),
                        FormatAccuracy(c.accuracy()),
                        absl::StrFormat("%.4g", c.omega()), Bits(c.avg_bits()),
                        FormatBops(c.bops()), FormatBits(c)});
      }
      // Candidates are scored on the calibration set only (no VAL ACC).
      text += FormatTable({"", "RANK", "INDEX", "LOSS", "CALIB ACC", "OMEGA",
                           "AVG BITS", "BOPS", "BITS"},
                          rows, {1, 2, 3, 4, 5, 6, 7});
    }
    if (step.has_finetuned()) {
      absl::StrAppend(&text, "fine-tuned: ", DescribePolicy(step.finetuned()),
                      "\n");
    }
  }
  if (response.has_final_policy()) {
    const v1::Policy& final_policy = response.final_policy();
    absl::StrAppend(&text, "\nfinal: ", DescribePolicy(final_policy), "\n");
    std::vector<std::vector<std::string>> rows;
    for (const v1::LayerBits& layer : final_policy.layers()) {
      rows.push_back({layer.name(), absl::StrCat(layer.bits())});
    }
    text += FormatTable({"LAYER", "BITS"}, rows, {1});
  } else {
    text += "\nfinal: -\n";
  }
  return text;
}

std::string FormatBestPolicies(const v1::QueryBestPoliciesResponse& response) {
  // The server names the model only for same-model queries, whose policies
  // come from several jobs.
  const bool spans_jobs = !response.model_sha256().empty();
  if (response.policies_size() == 0) {
    return absl::StrCat(spans_jobs
                            ? absl::StrCat("model ", response.model_sha256())
                            : absl::StrCat("job ", response.job_id()),
                        ": no evaluated policy meets the limit\n");
  }
  std::vector<std::string> header = {
      "RANK",      "POLICY", "AVG BITS", "SIZE (KiB)", "BOPS", "VAL ACC",
      "CALIB ACC", "LOSS",   "KIND",     "STEP",       "BITS"};
  std::vector<size_t> right_aligned = {0, 2, 3, 4, 5, 6, 7, 9};
  // JOB and STRATEGY go after POLICY.
  constexpr size_t kJobColumn = 2;
  const std::vector<std::string> job_columns = {"JOB", "STRATEGY"};
  if (spans_jobs) {
    header.insert(header.begin() + kJobColumn, job_columns.begin(),
                  job_columns.end());
    for (size_t& column : right_aligned) {
      if (column >= kJobColumn) column += job_columns.size();
    }
  }
  std::vector<std::vector<std::string>> rows;
  int rank = 0;
  for (const v1::Policy& p : response.policies()) {
    std::vector<std::string> row = {
        absl::StrCat(++rank),
        OrUnset(p.policy_id()),
        Bits(p.avg_bits()),
        KiB(p.size_bytes()),
        FormatBops(p.bops()),
        FormatAccuracy(p.val_accuracy()),
        FormatAccuracy(p.accuracy()),
        LossOrUnset(p.loss()),
        p.kind(),
        p.kind() == kPredictedKind ? kUnset : absl::StrCat(p.step()),
        FormatBits(p)};
    if (spans_jobs) {
      row.insert(row.begin() + kJobColumn,
                 {OrUnset(p.job_id()), OrUnset(p.strategy())});
    }
    rows.push_back(std::move(row));
  }
  return absl::StrCat(
      spans_jobs ? absl::StrCat("model: ", response.model_sha256(), "\n") : "",
      "layers: ", LayerOrder(v1::Job(), response.policies(0)), "\n",
      FormatTable(header, rows, right_aligned));
}

std::string FormatResolvedPolicy(const v1::QueryBestPoliciesResponse& response,
                                 const v1::QueryBestPoliciesRequest& request) {
  // The limit as `mixq submit` reads it back: the shortest exact decimal.
  const auto target = [](absl::string_view flag, double value) {
    char buffer[64];
    const std::to_chars_result end =
        std::to_chars(buffer, buffer + sizeof(buffer), value);
    return absl::StrCat(flag, " ", absl::string_view(buffer, end.ptr - buffer));
  };
  const std::string flag =
      request.max_avg_bits() > 0
          ? target("--target-avg-bits", request.max_avg_bits())
      : request.max_size_bytes() > 0
          // whole bytes: submit takes an integer
          ? absl::StrFormat("--target-size-bytes %.0f",
                            std::floor(request.max_size_bytes()))
          : target("--target-bops", request.max_bops());
  return absl::StrCat(
      FormatBestPolicies(response),
      "note: predicted from the job's stored sensitivities (no accuracy "
      "measured); run `mixq submit --from-job ",
      request.job_id(), " --strategy knapsack ", flag,
      "` with the job's --bits to measure it (no warm-up)\n");
}

std::string FormatParetoFront(const v1::GetParetoFrontResponse& response) {
  const bool spans_jobs = !response.model_sha256().empty();
  std::vector<std::string> header = {"POLICY",     "STRATEGY", "AVG BITS",
                                     "SIZE (KiB)", "BOPS",     "VAL ACC",
                                     "VAL LOSS",   "CALIB ACC"};
  std::vector<size_t> right_aligned = {2, 3, 4, 5, 6, 7};
  // JOB goes after POLICY.
  constexpr size_t kJobColumn = 1;
  if (spans_jobs) {
    header.insert(header.begin() + kJobColumn, "JOB");
    for (size_t& column : right_aligned) ++column;
  }
  // The FP32 model first: the point every policy is measured against.
  std::vector<std::vector<std::string>> rows = {
      {"fp32", kUnset, Bits(kFloatBits), KiB(response.fp32_size_bytes()),
       FormatBops(response.fp32_bops()),
       FormatAccuracy(response.fp32_val_accuracy()),
       LossOrUnset(response.fp32_val_loss()), kUnset}};
  if (spans_jobs) rows[0].insert(rows[0].begin() + kJobColumn, kUnset);
  for (const v1::Policy& p : response.policies()) {
    std::vector<std::string> row = {
        OrUnset(p.policy_id()),    OrUnset(p.strategy()),
        Bits(p.avg_bits()),        KiB(p.size_bytes()),
        FormatBops(p.bops()),      FormatAccuracy(p.val_accuracy()),
        LossOrUnset(p.val_loss()), FormatAccuracy(p.accuracy())};
    if (spans_jobs) row.insert(row.begin() + kJobColumn, OrUnset(p.job_id()));
    rows.push_back(std::move(row));
  }
  return absl::StrCat(
      spans_jobs ? absl::StrCat("model: ", response.model_sha256(), "\n") : "",
      FormatTable(header, rows, right_aligned),
      response.policies_size() == 0
          ? "no kept policy with a measured validation accuracy or loss\n"
          : "");
}

std::string FormatUploaded(const v1::Artifact& artifact) {
  return absl::StrCat(kArtifactPrefix, artifact.sha256(), "\n");
}

std::string FormatCancelled(const v1::Job& job) {
  return absl::StrCat(
      job.id(), ": ", StateName(job.state()),
      job.state() == v1::RUNNING
          ? " (cancel requested: it stops at its next mini-batch)"
          : "",
      "\n");
}

std::string FormatProgressBar(const v1::JobEvent& event) {
  const double progress = std::clamp(event.progress(), 0.0, 1.0);
  const int filled = static_cast<int>(std::floor(progress * kProgressBarWidth));
  std::string line = absl::StrCat("[", std::string(filled, '#'),
                                  std::string(kProgressBarWidth - filled, '.'),
                                  "] ", ProgressPercent(progress), "%");
  // The bar shows the phase only outside the search, which is most of a job.
  if (!event.phase().empty() && event.phase() != "search")
    absl::StrAppend(&line, " ", event.phase());
  const std::string details = DescribeEvent(event);
  if (!details.empty()) absl::StrAppend(&line, " ", details);
  return line;
}

std::string FormatEventLine(const v1::JobEvent& event) {
  std::string line = StateName(event.state());
  if (!event.phase().empty()) absl::StrAppend(&line, " ", event.phase());
  absl::StrAppend(&line, " ", ProgressPercent(event.progress()), "%");
  const std::string details = DescribeEvent(event);
  if (!details.empty()) absl::StrAppend(&line, " ", details);
  if (event.avg_bits() > 0)
    absl::StrAppend(&line, " loss ", LossOrUnset(event.loss()));
  if (!event.error().empty()) absl::StrAppend(&line, " error: ", event.error());
  return line;
}

std::string FormatWatchSummary(const v1::JobEvent& event) {
  const std::string& job = event.job_id();
  std::string text =
      absl::StrCat("done: policy ", OrUnset(event.policy_id()), ", avg ",
                   Bits(event.avg_bits()), " bits",
                   event.size_bytes() > 0
                       ? absl::StrCat(", ", KiB(event.size_bytes()), " KiB")
                       : "",
                   ", val acc ", FormatAccuracy(event.val_accuracy()),
                   " (FP32 ", FormatAccuracy(event.fp32_val_accuracy()), ")\n");
  // Without a policy id the final policy has no exported model (the server
  // logged why); its bits still export as JSON.
  absl::StrAppend(
      &text, "export: mixq export ", job,
      event.policy_id().empty()
          ? absl::StrCat(" --format policy-json -o ", job, ".policy.json")
          : absl::StrCat(" -o ", job, ".qdq.onnx"),
      "; every kept policy: mixq pareto ", job, "\n");
  return text;
}

absl::Status EventPrinter::Print(const v1::JobEvent& event) {
  switch (mode_) {
    case Mode::kLines:
      out_ << FormatEventLine(event) << "\n";
      break;
    case Mode::kProgressBar:
      // "\x1b[K" clears what a longer previous line left behind.
      out_ << "\r" << FormatProgressBar(event) << "\x1b[K";
      bar_drawn_ = true;
      break;
    case Mode::kJson: {
      absl::StatusOr<std::string> json = ToJson(event, /*multiline=*/false);
      if (!json.ok()) return json.status();
      out_ << *json << "\n";
      break;
    }
  }
  out_.flush();
  return absl::OkStatus();
}

void EventPrinter::Finish() {
  if (bar_drawn_) out_ << "\n";
  bar_drawn_ = false;
  out_.flush();
}

namespace {
// An evaluation's accuracy to 0.01 %; "-" without labels (distill).
std::string EvalAccuracy(double fraction) {
  return std::isnan(fraction) ? kUnset
                              : absl::StrFormat("%.2f%%", 100.0 * fraction);
}
}  // namespace

std::string FormatEvaluation(const v1::EvaluatePolicyResponse& r) {
  std::string out = absl::StrFormat(
      "%s evaluation on %d samples (activations %s): accuracy %s "
      "(FP32 %s), loss %.4f (FP32 %.4f)\n"
      "avg weight bits %.3f, size %.0f bytes, %.4g BOPs per sample, %.2f s\n",
      r.mode(), r.eval_samples(),
      r.activation_bits() >= 32 ? std::string("float")
                                : absl::StrCat(r.activation_bits(), "-bit"),
      EvalAccuracy(r.accuracy()), EvalAccuracy(r.fp32_accuracy()), r.loss(),
      r.fp32_loss(), r.avg_bits(), r.size_bytes(), r.bops(), r.seconds());
  std::vector<std::vector<std::string>> rows;
  for (const v1::LayerBits& layer : r.layers()) {
    rows.push_back({layer.name(), absl::StrCat(layer.bits())});
  }
  return out + FormatTable({"LAYER", "BITS"}, rows);
}

}  // namespace mixq::client
