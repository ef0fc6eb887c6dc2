#include "client/report_html.h"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <iterator>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "client/format.h"
#include "client/html_escape.h"
#include "client/proto_fields.h"
#include "client/svg_chart.h"

namespace mixq::client {
namespace {

constexpr double kBytesPerKiB = 1024;
constexpr double kPercent = 100;
// The bits axis reaches at least this far, so that charts of different jobs
// compare at a glance.
constexpr int kMinBitsAxis = 8;
constexpr int kBitsChartWidth = 760;
constexpr int kSmallChartWidth = 520;
constexpr int kSmallChartHeight = 280;
constexpr int kParetoChartWidth = 760;
constexpr int kParetoChartHeight = 380;
constexpr char kUnset[] = "-";
// Policy.kind (and policy_id) of a job's final policy.
constexpr char kFinalKind[] = "final";

// Colours: one per weight bit-width (bars), one per series role.
constexpr char kFloatColor[] = "#7f7f7f";
// Index: weight bits 1..8.
constexpr const char* kBitsColors[] = {kFloatColor, "#8c564b", "#d62728",
                                       "#9467bd",   "#ff7f0e", "#bcbd22",
                                       "#2ca02c",   "#17becf", "#1f77b4"};

const char* BitsColor(int bits) {
  return bits >= 1 && bits < static_cast<int>(std::size(kBitsColors))
             ? kBitsColors[bits]
             : kFloatColor;
}
constexpr char kAvgBitsColor[] = "#1f77b4";
constexpr char kBudgetColor[] = "#7f7f7f";
constexpr char kCalibColor[] = "#ff7f0e";
constexpr char kValColor[] = "#2ca02c";
constexpr char kFp32Color[] = "#d62728";
constexpr char kFinalColor[] = "#9467bd";
constexpr char kKeptColor[] = "#b0b0b0";
constexpr char kFrontColor[] = "#ff7f0e";
constexpr char kUniformColor[] = "#1f77b4";

constexpr char kStyle[] = R"css(
body { font-family: sans-serif; margin: 24px auto; max-width: 1100px;
       padding: 0 16px; color: #222; background: #fff; }
h1 { font-size: 22px; margin-bottom: 4px; }
h2 { font-size: 18px; margin-top: 32px; border-bottom: 1px solid #ddd;
     padding-bottom: 4px; }
h3 { font-size: 15px; margin: 20px 0 6px; }
table { border-collapse: collapse; font-size: 13px; margin: 6px 0; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: left;
         vertical-align: top; }
th { background: #f4f4f4; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.chosen td { background: #fff4e0; font-weight: bold; }
td.key { color: #555; white-space: nowrap; }
td.value { word-break: break-all; }
table.candidates td:last-child, table.pareto td:last-child,
table.uniform td:last-child { overflow-wrap: anywhere; min-width: 10em; }
p.empty { color: #777; font-style: italic; }
p.note { color: #555; font-size: 13px; }
.state-FAILED, .state-CANCELLED { color: #b00; font-weight: bold; }
.state-SUCCEEDED { color: #070; font-weight: bold; }
figure { margin: 8px 0; overflow-x: auto; }
.charts { display: flex; flex-wrap: wrap; gap: 8px; }
footer { margin-top: 40px; color: #888; font-size: 12px; }
)css";

std::string Significant(double value) {
  return std::isnan(value) ? kUnset : absl::StrFormat("%.4g", value);
}

// An HTML table; cells are text (escaped here). Columns in `numeric` are
// right-aligned; rows whose index is in `chosen_rows` are highlighted.
struct Table {
  std::vector<std::string> header;
  std::vector<std::vector<std::string>> rows;
  std::vector<size_t> numeric;
  std::vector<size_t> chosen_rows;
  std::string css_class;
};

std::string RenderTable(const Table& table) {
  const auto has = [](const std::vector<size_t>& list, size_t i) {
    return std::find(list.begin(), list.end(), i) != list.end();
  };
  std::string html =
      absl::StrCat("<table class=\"", table.css_class, "\"><thead><tr>");
  for (const std::string& cell : table.header) {
    absl::StrAppend(&html, "<th>", HtmlEscape(cell), "</th>");
  }
  absl::StrAppend(&html, "</tr></thead><tbody>");
  for (size_t r = 0; r < table.rows.size(); ++r) {
    absl::StrAppend(
        &html, has(table.chosen_rows, r) ? "<tr class=\"chosen\">" : "<tr>");
    for (size_t c = 0; c < table.rows[r].size(); ++c) {
      absl::StrAppend(&html,
                      has(table.numeric, c) ? "<td class=\"num\">" : "<td>",
                      HtmlEscape(table.rows[r][c]), "</td>");
    }
    absl::StrAppend(&html, "</tr>\n");
  }
  absl::StrAppend(&html, "</tbody></table>\n");
  return html;
}

// Key/value rows (the summary, the spec).
std::string RenderKeyValues(
    const std::vector<std::pair<std::string, std::string>>& rows,
    const std::string& css_class) {
  std::string html = absl::StrCat("<table class=\"", css_class, "\"><tbody>");
  for (const auto& [key, value] : rows) {
    absl::StrAppend(&html, "<tr><td class=\"key\">", HtmlEscape(key),
                    "</td><td class=\"value\">", HtmlEscape(value),
                    "</td></tr>\n");
  }
  absl::StrAppend(&html, "</tbody></table>\n");
  return html;
}

std::string Empty(const std::string& text) {
  return absl::StrCat("<p class=\"empty\">", HtmlEscape(text), "</p>\n");
}

std::string Note(const std::string& text) {
  return absl::StrCat("<p class=\"note\">", HtmlEscape(text), "</p>\n");
}

std::string Figure(const std::string& svg) {
  return absl::StrCat("<figure>", svg, "</figure>\n");
}

bool HasPolicy(const v1::Policy& policy) { return policy.layers_size() > 0; }

// The policy the bits chart shows: the final one, else the latest kept one;
// nullptr if there is none.
const v1::Policy* LatestPolicy(const v1::GetResultsResponse& results) {
  if (HasPolicy(results.final_policy())) return &results.final_policy();
  for (int s = results.steps_size() - 1; s >= 0; --s) {
    if (HasPolicy(results.steps(s).finetuned())) {
      return &results.steps(s).finetuned();
    }
  }
  return nullptr;
}

// "step-3", "final", or the step when no model was exported.
std::string PolicyName(const v1::Policy& policy) {
  if (!policy.policy_id().empty()) return policy.policy_id();
  if (policy.kind() == kFinalKind) return kFinalKind;
  return absl::StrCat("step ", policy.step());
}

// The strategy that kept `policy`: its own field (set by QueryBestPolicies
// and GetParetoFront), else `job`'s spec's, else "-".
std::string StrategyOf(const v1::Policy& policy, const v1::Job& job) {
  if (!policy.strategy().empty()) return policy.strategy();
  if (!job.spec().search().strategy().empty()) {
    return job.spec().search().strategy();
  }
  return kUnset;
}

// The bit-width all of `policy`'s layers share, or 0 if they differ (or it
// has none).
int UniformBits(const v1::Policy& policy) {
  if (!HasPolicy(policy)) return 0;
  const int bits = policy.layers(0).bits();
  for (const v1::LayerBits& layer : policy.layers()) {
    if (layer.bits() != bits) return 0;
  }
  return bits;
}

std::string SummarySection(const v1::GetResultsResponse& results) {
  const v1::Job& job = results.job();
  std::vector<std::pair<std::string, std::string>> rows = {
      {"job", job.id()},
      {"name", job.name().empty() ? kUnset : job.name()},
      {"state", StateName(job.state())},
  };
  if (!job.error().empty()) rows.emplace_back("error", job.error());
  rows.insert(
      rows.end(),
      {{"created", FormatTimestamp(job.created())},
       {"started", FormatTimestamp(job.started())},
       {"finished", FormatTimestamp(job.finished())},
       {"steps done", absl::StrCat(job.steps_done())},
       {"model sha256",
        job.model_sha256().empty() ? kUnset : job.model_sha256()},
       {"quantizable layers", absl::StrCat(job.layers_size())},
       {"FP32 size",
        job.fp32_size_bytes() > 0
            ? absl::StrCat(FormatKiB(job.fp32_size_bytes()), " KiB")
            : kUnset},
       {"FP32 val acc", FormatAccuracy(job.fp32_val_accuracy())},
       {"validation set",
        job.val_samples() > 0
            ? absl::StrCat(job.val_samples(), " samples, ", job.val_source())
            : kUnset}});
  const v1::Policy& final_policy = results.final_policy();
  if (HasPolicy(final_policy)) {
    std::string size =
        absl::StrCat(FormatKiB(final_policy.size_bytes()), " KiB");
    if (job.fp32_size_bytes() > 0) {
      absl::StrAppend(&size,
                      absl::StrFormat(" (%.1f%% of FP32)",
                                      kPercent * final_policy.size_bytes() /
                                          job.fp32_size_bytes()));
    }
    rows.insert(rows.end(),
                {{"final avg bits", FormatAvgBits(final_policy.avg_bits())},
                 {"final size", size},
                 {"final BOPs", FormatBops(final_policy.bops())},
                 {"final calib acc", FormatAccuracy(final_policy.accuracy())},
                 {"final val acc", FormatAccuracy(final_policy.val_accuracy())},
                 {"final bits", FormatBits(final_policy)}});
  }
  return absl::StrCat("<section id=\"summary\"><h2>Summary</h2>\n",
                      RenderKeyValues(rows, "summary"), "</section>\n");
}

std::string SpecSection(const v1::Job& job) {
  std::string html = "<section id=\"spec\"><h2>Spec as run</h2>\n";
  const auto rows = SetFieldRows(job.spec());
  if (rows.empty()) {
    absl::StrAppend(&html, Empty("The server sent no spec for this job."));
  } else {
    absl::StrAppend(&html,
                    Note("Every field the job's spec sets (Job.spec); file "
                         "contents are not kept, only their names and "
                         "hashes. Fields left unset are not listed."),
                    RenderKeyValues(rows, "spec"));
  }
  absl::StrAppend(&html, "</section>\n");
  return html;
}

std::string BitsSection(const v1::GetResultsResponse& results) {
  std::string html = "<section id=\"policy\"><h2>Bits per layer</h2>\n";
  const v1::Policy* policy = LatestPolicy(results);
  if (policy == nullptr) {
    absl::StrAppend(&html,
                    Empty(absl::StrCat("No policy yet (the job is ",
                                       StateName(results.job().state()), ").")),
                    "</section>\n");
    return html;
  }
  std::map<std::string, int64_t> weights;
  for (const v1::Layer& layer : results.job().layers()) {
    weights[layer.name()] = layer.num_weights();
  }
  BarChart chart;
  chart.id = kBitsChartId;
  chart.title = absl::StrCat(
      policy == &results.final_policy()
          ? "Final policy"
          : absl::StrCat("Latest kept policy (", PolicyName(*policy), ")"),
      ": weight bits per layer, avg ", FormatAvgBits(policy->avg_bits()),
      " bits");
  chart.value_label = "weight bits";
  chart.integer_ticks = true;
  chart.width = kBitsChartWidth;
  int max_bits = kMinBitsAxis;
  for (const v1::LayerBits& layer : policy->layers()) {
    max_bits = std::max(max_bits, layer.bits());
    const auto found = weights.find(layer.name());
    chart.bars.push_back(
        {layer.name(), static_cast<double>(layer.bits()),
         BitsColor(layer.bits()),
         absl::StrCat(layer.bits(), " bits",
                      found == weights.end()
                          ? ""
                          : absl::StrCat(", ", found->second, " weights"))});
  }
  chart.max = max_bits;
  absl::StrAppend(&html, Figure(RenderBarChart(chart)), "</section>\n");
  return html;
}

// What the accuracy charts' y axes measure: top-1 accuracy in percent, or
// for label-free jobs (no accuracy anywhere: distilling without labels) the
// loss, lower being better.
struct Metric {
  bool loss = false;

  double Calib(const v1::Policy& p) const {
    return loss ? p.loss() : kPercent * p.accuracy();
  }
  double Val(const v1::Policy& p) const {
    return loss ? p.val_loss() : kPercent * p.val_accuracy();
  }
  // The plotted value of an accuracy (a fraction) or a loss.
  double Plotted(double accuracy, double loss_value) const {
    return loss ? loss_value : kPercent * accuracy;
  }
  // "acc 86.1%" or "loss 0.4123".
  std::string Text(double accuracy, double loss_value) const {
    return loss ? absl::StrCat("loss ", FormatLoss(loss_value))
                : absl::StrCat("acc ", FormatAccuracy(accuracy));
  }
  std::string Name() const { return loss ? "loss" : "accuracy"; }
};

Metric ChooseMetric(const ReportData& data) {
  const v1::GetResultsResponse& results = data.results;
  bool any = std::isfinite(results.job().fp32_val_accuracy()) ||
             std::isfinite(data.pareto.fp32_val_accuracy());
  const auto has_accuracy = [](const v1::Policy& p) {
    return HasPolicy(p) &&
           (std::isfinite(p.accuracy()) || std::isfinite(p.val_accuracy()));
  };
  for (const v1::Step& step : results.steps()) {
    any = any || has_accuracy(step.finetuned());
  }
  any = any || has_accuracy(results.final_policy());
  for (const v1::Policy& p : data.pareto.policies()) {
    any = any || std::isfinite(p.val_accuracy());
  }
  return Metric{!any};
}

std::string TrajectorySection(const v1::GetResultsResponse& results,
                              const Metric& metric) {
  std::string html = "<section id=\"trajectory\"><h2>Trajectory</h2>\n";
  std::vector<const v1::Step*> steps;
  for (const v1::Step& step : results.steps()) {
    if (HasPolicy(step.finetuned())) steps.push_back(&step);
  }
  if (steps.empty()) {
    absl::StrAppend(&html,
                    Empty(absl::StrCat("No steps recorded yet (the job is ",
                                       StateName(results.job().state()), ").")),
                    "</section>\n");
    return html;
  }
  absl::StrAppend(&html,
                  Note("The policy each step kept (after its fine-tune); "
                       "step 0 is the warm-up at the highest bits. "
                       "Calibration figures are on the data the search "
                       "scores with, validation figures on data it never "
                       "saw."));
  const double first = steps.front()->step();
  const double last = steps.back()->step();

  XyChart bits;
  bits.id = kTrajectoryBitsChartId;
  bits.title = "Average weight bits per step";
  bits.x = {"step", true, std::nullopt, std::nullopt};
  bits.y = {"avg bits", false, 0.0, std::nullopt};
  bits.width = kSmallChartWidth;
  bits.height = kSmallChartHeight;
  ChartSeries avg{
      "kept policy", kAvgBitsColor, ChartSeries::Style::kLineAndPoints, {}};
  for (const v1::Step* step : steps) {
    avg.points.push_back(
        {static_cast<double>(step->step()), step->finetuned().avg_bits(),
         absl::StrCat("step ", step->step(), ": ",
                      FormatAvgBits(step->finetuned().avg_bits()), " bits, ",
                      FormatBits(step->finetuned()))});
  }
  bits.series.push_back(std::move(avg));
  const double budget_bits = results.job().spec().search().budget().avg_bits();
  if (budget_bits > 0) {
    bits.series.push_back(
        {absl::StrCat("budget ", FormatAvgBits(budget_bits)),
         kBudgetColor,
         ChartSeries::Style::kLine,
         {{first, budget_bits, ""}, {last, budget_bits, ""}}});
  }

  XyChart accuracy;
  accuracy.id = kTrajectoryAccuracyChartId;
  accuracy.title = metric.loss ? "Loss per step" : "Accuracy per step";
  accuracy.x = {"step", true, std::nullopt, std::nullopt};
  accuracy.y = {metric.loss ? "loss (lower is better)" : "top-1 accuracy (%)",
                false, std::nullopt, std::nullopt};
  accuracy.width = kSmallChartWidth;
  accuracy.height = kSmallChartHeight;
  ChartSeries calib{
      "calibration", kCalibColor, ChartSeries::Style::kLineAndPoints, {}};
  ChartSeries val{
      "validation", kValColor, ChartSeries::Style::kLineAndPoints, {}};
  for (const v1::Step* step : steps) {
    const v1::Policy& kept = step->finetuned();
    const double x = step->step();
    calib.points.push_back(
        {x, metric.Calib(kept),
         absl::StrCat("step ", step->step(), ": calib ",
                      metric.Text(kept.accuracy(), kept.loss()))});
    val.points.push_back(
        {x, metric.Val(kept),
         absl::StrCat("step ", step->step(), ": val ",
                      metric.Text(kept.val_accuracy(), kept.val_loss()))});
  }
  accuracy.series.push_back(std::move(calib));
  accuracy.series.push_back(std::move(val));
  const v1::Job& job = results.job();
  const double fp32 =
      metric.Plotted(job.fp32_val_accuracy(), job.fp32_val_loss());
  if (std::isfinite(fp32)) {
    accuracy.series.push_back(
        {absl::StrCat("FP32 val ", metric.Text(job.fp32_val_accuracy(),
                                               job.fp32_val_loss())),
         kFp32Color,
         ChartSeries::Style::kLine,
         {{first, fp32, ""}, {last, fp32, ""}}});
  }
  const v1::Policy& final_policy = results.final_policy();
  if (HasPolicy(final_policy) && std::isfinite(metric.Val(final_policy))) {
    const std::string text =
        metric.Text(final_policy.val_accuracy(), final_policy.val_loss());
    accuracy.series.push_back(
        {absl::StrCat("final val ", text),
         kFinalColor,
         ChartSeries::Style::kPoints,
         {{last, metric.Val(final_policy),
           absl::StrCat("final (after the last fine-tune): val ", text)}}});
  }
  absl::StrAppend(&html, "<div class=\"charts\">", Figure(RenderXyChart(bits)),
                  Figure(RenderXyChart(accuracy)), "</div></section>\n");
  return html;
}

std::string ParetoSection(const ReportData& data, const Metric& metric) {
  const v1::GetResultsResponse& results = data.results;
  const v1::GetParetoFrontResponse& front = data.pareto;
  std::string html = "<section id=\"pareto\"><h2>Accuracy against size</h2>\n";
  std::vector<const v1::Policy*> kept;
  for (const v1::Step& step : results.steps()) {
    if (HasPolicy(step.finetuned())) kept.push_back(&step.finetuned());
  }
  if (HasPolicy(results.final_policy()))
    kept.push_back(&results.final_policy());

  const auto describe = [&](const v1::Policy& policy) {
    return absl::StrCat(PolicyName(policy), ": ",
                        FormatAvgBits(policy.avg_bits()), " bits, ",
                        FormatKiB(policy.size_bytes()), " KiB, ", "val ",
                        metric.Text(policy.val_accuracy(), policy.val_loss()),
                        ", bits ", FormatBits(policy));
  };
  const auto point = [&](const v1::Policy& policy) {
    return ChartPoint{policy.size_bytes() / kBytesPerKiB, metric.Val(policy),
                      describe(policy)};
  };

  XyChart chart;
  chart.id = kParetoChartId;
  chart.title = metric.loss ? "Validation loss against model size"
                            : "Validation accuracy against model size";
  chart.x = {"model size (KiB)", false, 0.0, std::nullopt};
  chart.y = {metric.loss ? "validation loss (lower is better)"
                         : "validation top-1 accuracy (%)",
             false, std::nullopt, std::nullopt};
  chart.width = kParetoChartWidth;
  chart.height = kParetoChartHeight;
  ChartSeries kept_series{
      "kept policies", kKeptColor, ChartSeries::Style::kPoints, {}};
  ChartSeries uniform_series{"uniform (one bit-width)",
                             kUniformColor,
                             ChartSeries::Style::kPoints,
                             {}};
  // This job's kept policies, then other jobs' on the model.
  std::vector<const v1::Policy*> uniform;
  for (const v1::Policy* policy : kept) {
    kept_series.points.push_back(point(*policy));
    if (UniformBits(*policy) > 0) uniform.push_back(policy);
  }
  // Other jobs' losses may measure another objective (cross-entropy against
  // a distance to FP32): only their accuracies compare.
  for (const v1::Policy& policy : data.model_policies.policies()) {
    if (!metric.loss && UniformBits(policy) > 0 && !policy.job_id().empty() &&
        policy.job_id() != results.job().id()) {
      uniform.push_back(&policy);
    }
  }
  for (const v1::Policy* policy : uniform) {
    ChartPoint p = point(*policy);
    p.tooltip = absl::StrCat(
        "uniform ", UniformBits(*policy), "-bit",
        policy->job_id().empty() || policy->job_id() == results.job().id()
            ? ""
            : absl::StrCat(" (job ", policy->job_id(), ")"),
        ", ", p.tooltip);
    uniform_series.points.push_back(std::move(p));
  }
  ChartSeries front_series{
      "Pareto front", kFrontColor, ChartSeries::Style::kLineAndPoints, {}};
  for (const v1::Policy& policy : front.policies()) {
    front_series.points.push_back(point(policy));
  }
  const double fp32_y =
      metric.Plotted(front.fp32_val_accuracy(), front.fp32_val_loss());
  ChartSeries fp32_series{
      "FP32 model",
      kFp32Color,
      ChartSeries::Style::kPoints,
      {{front.fp32_size_bytes() / kBytesPerKiB, fp32_y,
        absl::StrCat(
            "FP32: ", FormatKiB(front.fp32_size_bytes()), " KiB, ", "val ",
            metric.Text(front.fp32_val_accuracy(), front.fp32_val_loss()))}}};
  if (!(front.fp32_size_bytes() > 0)) fp32_series.points.clear();
  // Drawn in this order: the front over the points it passes through.
  chart.series = {std::move(kept_series), std::move(uniform_series),
                  std::move(front_series), std::move(fp32_series)};
  if (!HasData(chart)) {
    absl::StrAppend(&html,
                    Empty(absl::StrCat("No measured policy yet (the job is ",
                                       StateName(results.job().state()), ").")),
                    "</section>\n");
    return html;
  }
  absl::StrAppend(
      &html,
      Note(absl::StrCat(
          "The Pareto front: this job's kept policies no other beats on "
          "size, BOPs and validation ",
          metric.Name(),
          " at once. Uniform: kept policies with one bit-width for every "
          "layer, this job's (such as the warm-up at the highest bits)",
          metric.loss ? ""
                      : " and other jobs' on the same model (each on "
                        "its own validation set)",
          "; for a uniform reference at the budget, run mixq submit "
          "--from-job JOB --strategy uniform with the same budget.")),
      Figure(RenderXyChart(chart)));
  Table table;
  table.css_class = "pareto";
  table.header = {"POLICY",  "STRATEGY", "AVG BITS",  "SIZE (KiB)", "BOPS",
                  "VAL ACC", "VAL LOSS", "CALIB ACC", "BITS"};
  table.numeric = {2, 3, 4, 5, 6, 7};
  if (front.fp32_size_bytes() > 0) {
    table.rows.push_back({"fp32", kUnset, "32.00",
                          FormatKiB(front.fp32_size_bytes()),
                          FormatBops(front.fp32_bops()),
                          FormatAccuracy(front.fp32_val_accuracy()),
                          FormatLoss(front.fp32_val_loss()), kUnset, kUnset});
  }
  for (const v1::Policy& p : front.policies()) {
    table.rows.push_back({PolicyName(p), StrategyOf(p, results.job()),
                          FormatAvgBits(p.avg_bits()),
                          FormatKiB(p.size_bytes()), FormatBops(p.bops()),
                          FormatAccuracy(p.val_accuracy()),
                          FormatLoss(p.val_loss()),
                          FormatAccuracy(p.accuracy()), FormatBits(p)});
  }
  absl::StrAppend(&html, "<h3>The front</h3>\n", RenderTable(table));
  if (!uniform.empty()) {
    Table uniform_table;
    uniform_table.css_class = "uniform";
    uniform_table.header = {"JOB",      "POLICY",     "STRATEGY",
                            "AVG BITS", "SIZE (KiB)", "VAL ACC",
                            "VAL LOSS", "CALIB ACC",  "BITS"};
    uniform_table.numeric = {3, 4, 5, 6, 7};
    for (const v1::Policy* p : uniform) {
      uniform_table.rows.push_back(
          {p->job_id().empty() ? results.job().id() : p->job_id(),
           PolicyName(*p), StrategyOf(*p, results.job()),
           FormatAvgBits(p->avg_bits()), FormatKiB(p->size_bytes()),
           FormatAccuracy(p->val_accuracy()), FormatLoss(p->val_loss()),
           FormatAccuracy(p->accuracy()), FormatBits(*p)});
    }
    absl::StrAppend(&html, "<h3>Uniform policies</h3>\n",
                    RenderTable(uniform_table));
  }
  absl::StrAppend(&html, "</section>\n");
  return html;
}

std::string CandidatesSection(const v1::GetResultsResponse& results) {
  std::string html =
      "<section id=\"candidates\"><h2>Ranked candidates per step</h2>\n";
  if (results.steps_size() == 0) {
    absl::StrAppend(&html,
                    Empty(absl::StrCat("No steps recorded yet (the job is ",
                                       StateName(results.job().state()), ").")),
                    "</section>\n");
    return html;
  }
  if (results.job().layers_size() > 0) {
    std::vector<std::string> names;
    for (const v1::Layer& layer : results.job().layers()) {
      names.push_back(layer.name());
    }
    absl::StrAppend(&html, Note(absl::StrCat("BITS lists the layers in order: ",
                                             absl::StrJoin(names, " / "))));
  }
  for (const v1::Step& step : results.steps()) {
    absl::StrAppend(
        &html, "<h3>",
        HtmlEscape(step.step() == 0 ? "Step 0 (warm-up)"
                                    : absl::StrCat("Step ", step.step())),
        "</h3>\n",
        Note(absl::StrFormat("%d candidates, %.1f s, %d fine-tune steps",
                             step.candidates_size(), step.elapsed_seconds(),
                             step.finetune_steps())));
    if (step.candidates_size() > 0) {
      Table table;
      table.css_class = "candidates";
      table.header = {"",      "RANK",     "INDEX",      "LOSS", "CALIB ACC",
                      "OMEGA", "AVG BITS", "SIZE (KiB)", "BOPS", "BITS"};
      table.numeric = {1, 2, 3, 4, 5, 6, 7, 8};
      for (int c = 0; c < step.candidates_size(); ++c) {
        const v1::Policy& p = step.candidates(c);
        if (p.chosen()) table.chosen_rows.push_back(c);
        table.rows.push_back(
            {p.chosen() ? "*" : "", absl::StrCat(p.rank()),
             Significant(p.index()), FormatLoss(p.loss()),
             FormatAccuracy(p.accuracy()), Significant(p.omega()),
             FormatAvgBits(p.avg_bits()), FormatKiB(p.size_bytes()),
             FormatBops(p.bops()), FormatBits(p)});
      }
      absl::StrAppend(&html, RenderTable(table));
    }
    const v1::Policy& kept = step.finetuned();
    if (HasPolicy(kept)) {
      absl::StrAppend(
          &html,
          Note(absl::StrCat("Kept (after its fine-tune): ", PolicyName(kept),
                            ", avg ", FormatAvgBits(kept.avg_bits()), " bits, ",
                            FormatKiB(kept.size_bytes()), " KiB, calib acc ",
                            FormatAccuracy(kept.accuracy()), ", val acc ",
                            FormatAccuracy(kept.val_accuracy()), ", bits ",
                            FormatBits(kept))));
    }
  }
  absl::StrAppend(&html, "</section>\n");
  return html;
}

}  // namespace

std::string RenderReportHtml(const ReportData& data) {
  const v1::Job& job = data.results.job();
  const Metric metric = ChooseMetric(data);
  const std::string title =
      absl::StrCat("mixq report: ", job.name().empty() ? job.id() : job.name());
  std::string html = absl::StrCat(
      "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
      "<meta name=\"viewport\" content=\"width=device-width, "
      "initial-scale=1\"><title>",
      HtmlEscape(title), "</title><style>", kStyle, "</style></head>\n<body>\n",
      "<h1>", HtmlEscape(title), "</h1>\n<p>Job <code>", HtmlEscape(job.id()),
      "</code>, <span class=\"state-", HtmlEscape(StateName(job.state())),
      "\">", HtmlEscape(StateName(job.state())), "</span></p>\n");
  absl::StrAppend(&html, SummarySection(data.results), SpecSection(job),
                  BitsSection(data.results),
                  TrajectorySection(data.results, metric),
                  ParetoSection(data, metric), CandidatesSection(data.results),
                  "<footer>Written by <code>mixq report</code>; "
                  "self-contained (no scripts or links).</footer>\n"
                  "</body></html>\n");
  return html;
}

}  // namespace mixq::client
