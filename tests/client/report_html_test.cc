#include "client/report_html.h"

#include <limits>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "proto/mixq.pb.h"
#include "tests/client/substring_count.h"
#include "tests/client/text_proto.h"

namespace mixq::client {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

// The <svg> element with id `id`, or "" if absent.
std::string Chart(const std::string& html, const std::string& id) {
  const size_t start =
      html.find("<svg xmlns=\"http://www.w3.org/2000/svg\" id=\"" + id + "\"");
  if (start == std::string::npos) return "";
  const size_t end = html.find("</svg>", start);
  return html.substr(start, end + 6 - start);
}

// A finished two-step job on a three-layer model; `name` is the job's and a
// layer's name.
ReportData Succeeded(const std::string& name) {
  ReportData data;
  data.results = ParseText<v1::GetResultsResponse>(R"pb(
    job {
      id: "job-1"
      state: SUCCEEDED
      steps_done: 2
      model_sha256: "abc123"
      layers { name: "fc1.weight" num_weights: 1000 }
      layers { name: "fc2.weight" num_weights: 100 }
      layers { name: "NAME" num_weights: 10 }
      fp32_size_bytes: 4440
      fp32_val_accuracy: 0.9
      val_samples: 150
      val_source: "held out"
      spec {
        name: "NAME"
        model { filename: "NAME.onnx" }
        calib_size: 256
        search {
          bits: [ 8, 4 ]
          budget { avg_bits: 4 }
          strategy: "progressive"
        }
      }
    }
    steps {
      step: 0
      finetuned {
        layers { name: "fc1.weight" bits: 8 }
        layers { name: "fc2.weight" bits: 8 }
        layers { name: "NAME" bits: 8 }
        avg_bits: 8
        size_bytes: 1110
        accuracy: 0.91
        val_accuracy: 0.895
        policy_id: "step-0"
        kind: "finetuned"
      }
    }
    steps {
      step: 1
      candidates {
        layers { name: "fc1.weight" bits: 4 }
        layers { name: "fc2.weight" bits: 8 }
        layers { name: "NAME" bits: 8 }
        avg_bits: 4.36
        size_bytes: 610
        accuracy: 0.88
        loss: 0.41
        omega: 0.002
        index: 0.412
        rank: 1
        chosen: true
        kind: "candidate"
        bops: 2.5e6
      }
      candidates {
        layers { name: "fc1.weight" bits: 8 }
        layers { name: "fc2.weight" bits: 4 }
        layers { name: "NAME" bits: 4 }
        avg_bits: 7.6
        size_bytes: 1055
        accuracy: 0.9
        loss: 0.45
        omega: 0.02
        index: 0.47
        rank: 2
        kind: "candidate"
      }
      finetuned {
        layers { name: "fc1.weight" bits: 4 }
        layers { name: "fc2.weight" bits: 8 }
        layers { name: "NAME" bits: 8 }
        avg_bits: 4.36
        size_bytes: 610
        accuracy: 0.89
        val_accuracy: 0.87
        policy_id: "step-1"
        kind: "finetuned"
      }
    }
    final_policy {
      layers { name: "fc1.weight" bits: 4 }
      layers { name: "fc2.weight" bits: 8 }
      layers { name: "NAME" bits: 8 }
      avg_bits: 4.36
      size_bytes: 610
      accuracy: 0.9
      val_accuracy: 0.88
      policy_id: "final"
      kind: "final"
    }
  )pb");
  data.pareto = ParseText<v1::GetParetoFrontResponse>(R"pb(
    job_id: "job-1"
    policies {
      layers { name: "fc1.weight" bits: 4 }
      layers { name: "fc2.weight" bits: 8 }
      layers { name: "NAME" bits: 8 }
      avg_bits: 4.36
      size_bytes: 610
      val_accuracy: 0.88
      policy_id: "final"
      strategy: "progressive"
    }
    policies {
      layers { name: "fc1.weight" bits: 8 }
      layers { name: "fc2.weight" bits: 8 }
      layers { name: "NAME" bits: 8 }
      avg_bits: 8
      size_bytes: 1110
      val_accuracy: 0.895
      policy_id: "step-0"
      strategy: "progressive"
    }
    fp32_size_bytes: 4440
    fp32_bops: 1.1e8
    fp32_val_accuracy: 0.9
    fp32_val_loss: 0.3
  )pb");
  data.results.mutable_job()->set_name(name);
  data.results.mutable_job()->mutable_spec()->set_name(name);
  data.results.mutable_job()->mutable_spec()->mutable_model()->set_filename(
      name + ".onnx");
  data.results.mutable_job()->mutable_layers(2)->set_name(name);
  for (v1::Step& step : *data.results.mutable_steps()) {
    for (v1::Policy& p : *step.mutable_candidates()) {
      p.mutable_layers(2)->set_name(name);
    }
    step.mutable_finetuned()->mutable_layers(2)->set_name(name);
  }
  data.results.mutable_final_policy()->mutable_layers(2)->set_name(name);
  return data;
}

TEST(RenderReportHtmlTest, HasEverySectionAndChart) {
  const std::string html = RenderReportHtml(Succeeded("fc3.weight"));
  EXPECT_THAT(html, testing::StartsWith("<!DOCTYPE html>"));
  EXPECT_THAT(html, testing::EndsWith("</html>\n"));
  for (const char* section :
       {"id=\"summary\"", "id=\"spec\"", "id=\"policy\"", "id=\"trajectory\"",
        "id=\"pareto\"", "id=\"candidates\""}) {
    EXPECT_THAT(html, HasSubstr(section));
  }
  // Self-contained: no scripts, nothing fetched.
  EXPECT_THAT(html, Not(HasSubstr("<script")));
  EXPECT_THAT(html, Not(HasSubstr("src=")));
  EXPECT_THAT(html, Not(HasSubstr("href=")));
  EXPECT_THAT(html, Not(HasSubstr("url(")));

  // Bits per layer: one bar per layer of the final policy.
  const std::string bits = Chart(html, kBitsChartId);
  EXPECT_EQ(CountSubstrings(bits, "class=\"mark bar\""), 3);
  EXPECT_THAT(bits, HasSubstr("Final policy: weight bits per layer, avg 4.36"));
  EXPECT_THAT(bits, HasSubstr("<title>fc1.weight: 4 bits, 1000 weights"));
  // Trajectory: avg bits of steps 0 and 1 and the budget line.
  const std::string trajectory = Chart(html, kTrajectoryBitsChartId);
  EXPECT_EQ(CountSubstrings(trajectory, "class=\"mark point\""), 2);
  EXPECT_EQ(CountSubstrings(trajectory, "class=\"mark line\""), 2);
  EXPECT_THAT(trajectory, HasSubstr(">budget 4.00<"));
  // Accuracy: calib and val per step, the FP32 line, the final point.
  const std::string accuracy = Chart(html, kTrajectoryAccuracyChartId);
  EXPECT_EQ(CountSubstrings(accuracy, "class=\"mark point\""), 5);
  EXPECT_THAT(accuracy, HasSubstr(">FP32 val acc 90.0%<"));
  EXPECT_THAT(accuracy,
              HasSubstr("final (after the last fine-tune): val acc 88.0%"));
  // Pareto: 3 kept + 2 front + 1 uniform (step-0, 8/8/8) + FP32.
  const std::string pareto = Chart(html, kParetoChartId);
  EXPECT_EQ(CountSubstrings(pareto, "class=\"mark point\""), 7);
  EXPECT_THAT(pareto, HasSubstr("uniform 8-bit, step-0"));
  EXPECT_THAT(pareto, HasSubstr("FP32: 4.3 KiB, val acc 90.0%"));
  EXPECT_THAT(html, HasSubstr("<td>fp32</td>"));

  // Numbers as the CLI's tables print them.
  EXPECT_THAT(html, HasSubstr("<td class=\"num\">2.5M</td>"));  // BOPs
  EXPECT_THAT(html, HasSubstr("<td class=\"num\">88.0%</td>"));
  EXPECT_THAT(html, HasSubstr("<td class=\"num\">0.4100</td>"));  // loss
  EXPECT_THAT(html, HasSubstr("13.7% of FP32"));
  // The chosen candidate is marked.
  EXPECT_EQ(CountSubstrings(html, "<tr class=\"chosen\">"), 1);
  // The spec as run.
  EXPECT_THAT(html, HasSubstr("<td class=\"key\">search.budget.avg_bits</td>"
                              "<td class=\"value\">4</td>"));
  EXPECT_THAT(html, HasSubstr("<td class=\"value\">8, 4</td>"));
}

TEST(RenderReportHtmlTest, UniformPoliciesOfOtherJobsOnTheModel) {
  ReportData data = Succeeded("fc3.weight");
  data.model_policies = ParseText<v1::QueryBestPoliciesResponse>(R"pb(
    policies {
      # another job's uniform policy: a reference point
      layers { name: "fc1.weight" bits: 4 }
      layers { name: "fc2.weight" bits: 4 }
      layers { name: "fc3.weight" bits: 4 }
      avg_bits: 4
      size_bytes: 555
      val_accuracy: 0.85
      policy_id: "final"
      job_id: "job-uniform"
      strategy: "uniform"
    }
    policies {
      # another job's mixed policy: not one
      layers { name: "fc1.weight" bits: 2 }
      layers { name: "fc2.weight" bits: 8 }
      layers { name: "fc3.weight" bits: 8 }
      avg_bits: 2.5
      size_bytes: 400
      val_accuracy: 0.8
      policy_id: "final"
      job_id: "job-other"
      strategy: "knapsack"
    }
    policies {
      # this job's, already drawn from its steps
      layers { name: "fc1.weight" bits: 8 }
      layers { name: "fc2.weight" bits: 8 }
      layers { name: "fc3.weight" bits: 8 }
      avg_bits: 8
      size_bytes: 1110
      val_accuracy: 0.895
      policy_id: "step-0"
      job_id: "job-1"
      strategy: "progressive"
    }
  )pb");
  const std::string html = RenderReportHtml(data);
  const std::string pareto = Chart(html, kParetoChartId);
  // 3 kept + 2 front + 2 uniform (step-0 and job-uniform's) + FP32.
  EXPECT_EQ(CountSubstrings(pareto, "class=\"mark point\""), 8);
  EXPECT_THAT(pareto, HasSubstr("uniform 4-bit (job job-uniform), final:"));
  EXPECT_THAT(html, Not(HasSubstr("job-other")));
  EXPECT_THAT(html, HasSubstr("<td>job-uniform</td><td>final</td>"
                              "<td>uniform</td>"));
}

TEST(RenderReportHtmlTest, HostileNamesAreEscapedEverywhere) {
  const std::string hostile = "<script>alert('x')</script>&\"";
  const std::string html = RenderReportHtml(Succeeded(hostile));
  EXPECT_THAT(html, Not(HasSubstr("<script")));
  EXPECT_THAT(html, Not(HasSubstr("alert('x')")));
  EXPECT_THAT(html, HasSubstr("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"
                              "&amp;&quot;"));
  // In the page title, the summary, the spec, the bars' labels and tooltips.
  EXPECT_GE(CountSubstrings(html, "&lt;script&gt;"), 6);
}

TEST(RenderReportHtmlTest, QueuedJobSaysSoInsteadOfCharts) {
  ReportData data;
  data.results = ParseText<v1::GetResultsResponse>(R"pb(
    job {
      id: "job-q"
      state: QUEUED
      spec { calib_size: 10 }
    }
  )pb");
  data.pareto.set_job_id("job-q");
  const std::string html = RenderReportHtml(data);
  EXPECT_THAT(html, HasSubstr("No policy yet (the job is QUEUED)."));
  EXPECT_THAT(html, HasSubstr("No steps recorded yet (the job is QUEUED)."));
  EXPECT_THAT(html, HasSubstr("No measured policy yet (the job is QUEUED)."));
  EXPECT_THAT(html, Not(HasSubstr("<svg")));
  EXPECT_THAT(html, HasSubstr("<td class=\"key\">calib_size</td>"));
  EXPECT_THAT(html, HasSubstr("</html>"));
}

TEST(RenderReportHtmlTest, RunningJobShowsItsLatestKeptPolicy) {
  ReportData data = Succeeded("fc3.weight");
  data.results.mutable_job()->set_state(v1::RUNNING);
  data.results.clear_final_policy();
  const std::string html = RenderReportHtml(data);
  EXPECT_THAT(Chart(html, kBitsChartId),
              HasSubstr("Latest kept policy (step-1): weight bits per layer"));
  EXPECT_EQ(CountSubstrings(Chart(html, kTrajectoryAccuracyChartId),
                            "class=\"mark point\""),
            4);
}

TEST(RenderReportHtmlTest, FailedJobShowsItsError) {
  ReportData data;
  data.results = ParseText<v1::GetResultsResponse>(R"pb(
    job {
      id: "job-f"
      state: FAILED
      error: "model: node <Conv_3> has no input"
      fp32_size_bytes: 2048
    }
  )pb");
  data.pareto.set_fp32_size_bytes(2048);
  data.pareto.set_fp32_val_accuracy(std::numeric_limits<double>::quiet_NaN());
  data.pareto.set_fp32_val_loss(std::numeric_limits<double>::quiet_NaN());
  const std::string html = RenderReportHtml(data);
  EXPECT_THAT(html, HasSubstr("<span class=\"state-FAILED\">FAILED</span>"));
  EXPECT_THAT(html, HasSubstr("model: node &lt;Conv_3&gt; has no input"));
  // FP32's size alone is no measured point.
  EXPECT_THAT(html, HasSubstr("No measured policy yet (the job is FAILED)."));
  EXPECT_THAT(html, HasSubstr("The server sent no spec for this job."));
}

// Distilling without labels: every accuracy is NaN (not measured), and the
// charts plot the losses instead.
TEST(RenderReportHtmlTest, LabelFreeJobPlotsLosses) {
  ReportData data = Succeeded("fc3.weight");
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const auto no_accuracy = [&](v1::Policy& p, double val_loss) {
    p.set_accuracy(nan);
    p.set_val_accuracy(nan);
    p.set_loss(val_loss - 0.1);
    p.set_val_loss(val_loss);
  };
  data.results.mutable_job()->set_fp32_val_accuracy(nan);
  data.results.mutable_job()->set_fp32_val_loss(0.3);
  data.pareto.set_fp32_val_accuracy(nan);
  for (v1::Policy& p : *data.pareto.mutable_policies()) no_accuracy(p, 0.5);
  for (v1::Step& step : *data.results.mutable_steps()) {
    no_accuracy(*step.mutable_finetuned(), 0.5);
    for (v1::Policy& p : *step.mutable_candidates()) no_accuracy(p, 0.6);
  }
  no_accuracy(*data.results.mutable_final_policy(), 0.45);
  const std::string html = RenderReportHtml(data);
  const std::string pareto = Chart(html, kParetoChartId);
  EXPECT_THAT(pareto, HasSubstr("validation loss (lower is better)"));
  EXPECT_THAT(pareto, HasSubstr("FP32: 4.3 KiB, val loss 0.3000"));
  EXPECT_EQ(CountSubstrings(pareto, "class=\"mark point\""), 7);
  const std::string trajectory = Chart(html, kTrajectoryAccuracyChartId);
  EXPECT_THAT(trajectory, HasSubstr(">Loss per step</text>"));
  EXPECT_THAT(trajectory, HasSubstr("step 1: calib loss 0.4000"));
  EXPECT_THAT(trajectory, HasSubstr(">FP32 val loss 0.3000<"));
  EXPECT_THAT(trajectory, HasSubstr(">final val loss 0.4500<"));
  // Another job's uniform policy: its loss may measure another objective.
  *data.model_policies.add_policies() = ParseText<v1::Policy>(R"pb(
    layers { name: "fc1.weight" bits: 4 }
    layers { name: "fc2.weight" bits: 4 }
    layers { name: "fc3.weight" bits: 4 }
    avg_bits: 4
    size_bytes: 555
    val_loss: 0.7
    policy_id: "final"
    job_id: "job-uniform"
    strategy: "uniform"
  )pb");
  EXPECT_THAT(RenderReportHtml(data), Not(HasSubstr("job-uniform")));
  // Calib and val per step, and the final point.
  EXPECT_EQ(CountSubstrings(trajectory, "class=\"mark point\""), 5);
}

}  // namespace
}  // namespace mixq::client
