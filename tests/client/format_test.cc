#include "client/format.h"

#include <limits>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "gmock/gmock.h"
#include "google/protobuf/util/json_util.h"
#include "gtest/gtest.h"
#include "tests/client/text_proto.h"

namespace mixq::client {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

v1::QueryBestPoliciesResponse BestResponse() {
  return ParseText<v1::QueryBestPoliciesResponse>(R"pb(
    job_id: "job-7"
    policies {
      layers { name: "fc1.weight" bits: 8 }
      layers { name: "fc2.weight" bits: 4 }
      layers { name: "fc3.weight" bits: 2 }
      avg_bits: 4.5
      size_bytes: 10240
      bops: 250000000
      accuracy: 0.861
      loss: 0.41234
      step: 3
      kind: "finetuned"
      val_accuracy: 0.8475
      policy_id: "step-3"
    }
    policies {
      layers { name: "fc1.weight" bits: 4 }
      layers { name: "fc2.weight" bits: 4 }
      layers { name: "fc3.weight" bits: 2 }
      avg_bits: 3.25
      size_bytes: 2048
      accuracy: 0.8
      loss: 0.6
      step: 12
      kind: "final"
      val_accuracy: nan
      policy_id: "final"
    }
  )pb");
}

TEST(FormatTableTest, AlignsColumnsWithoutTrailingSpaces) {
  EXPECT_EQ(
      FormatTable({"A", "BB", "C"}, {{"xyz", "1", "p"}, {"q", "22"}}, {1}),
      "A    BB  C\n"
      "xyz   1  p\n"
      "q    22\n");
}

TEST(FormatBitsTest, JoinsLayerBits) {
  EXPECT_EQ(FormatBits(BestResponse().policies(0)), "8/4/2");
  EXPECT_EQ(FormatBits(v1::Policy()), "");
}

TEST(FormatBestPoliciesTest, Table) {
  // An unmeasured (NaN) validation accuracy prints "-".
  EXPECT_EQ(FormatBestPolicies(BestResponse()),
            "layers: fc1.weight/fc2.weight/fc3.weight\n"
            "RANK  POLICY  AVG BITS  SIZE (KiB)  BOPS  VAL ACC  CALIB ACC    "
            "LOSS  KIND       STEP  BITS\n"
            "   1  step-3      4.50        10.0  250M    84.8%      86.1%  "
            "0.4123  finetuned     3  8/4/2\n"
            "   2  final       3.25         2.0     -        -      80.0%  "
            "0.6000  final        12  4/4/2\n");
}

// A label-free (distill) job has no calibration accuracy either: "-".
TEST(FormatBestPoliciesTest, LabelFreePoliciesPrintNoAccuracy) {
  v1::QueryBestPoliciesResponse response = BestResponse();
  for (v1::Policy& policy : *response.mutable_policies()) {
    policy.set_accuracy(std::numeric_limits<double>::quiet_NaN());
    policy.set_val_accuracy(std::numeric_limits<double>::quiet_NaN());
  }
  const std::string table = FormatBestPolicies(response);
  EXPECT_THAT(table, ::testing::Not(::testing::HasSubstr("nan")));
  EXPECT_THAT(table, ::testing::HasSubstr("        -          -  0.4123"));
}

TEST(FormatEvaluationTest, LabelFreeEvaluationPrintsNoAccuracy) {
  v1::EvaluatePolicyResponse response;
  response.set_mode("static");
  response.set_eval_samples(10);
  response.set_accuracy(std::numeric_limits<double>::quiet_NaN());
  response.set_fp32_accuracy(std::numeric_limits<double>::quiet_NaN());
  response.set_loss(0.25);
  EXPECT_THAT(FormatEvaluation(response),
              ::testing::HasSubstr("accuracy - (FP32 -), loss 0.2500"));
}

TEST(FormatBestPoliciesTest, Empty) {
  v1::QueryBestPoliciesResponse response;
  response.set_job_id("job-7");
  EXPECT_EQ(FormatBestPolicies(response),
            "job job-7: no evaluated policy meets the limit\n");
  response.set_model_sha256("ab12");
  EXPECT_EQ(FormatBestPolicies(response),
            "model ab12: no evaluated policy meets the limit\n");
}

TEST(FormatBestPoliciesTest, SameModelShowsJobAndStrategy) {
  v1::QueryBestPoliciesResponse response = BestResponse();
  response.set_model_sha256("9f86d081884c7d65");
  response.mutable_policies(0)->set_job_id("job-7");
  response.mutable_policies(0)->set_strategy("progressive");
  response.mutable_policies(1)->set_job_id("job-12");
  response.mutable_policies(1)->set_strategy("knapsack");
  EXPECT_EQ(FormatBestPolicies(response),
            "model: 9f86d081884c7d65\n"
            "layers: fc1.weight/fc2.weight/fc3.weight\n"
            "RANK  POLICY  JOB     STRATEGY     AVG BITS  SIZE (KiB)  BOPS  "
            "VAL ACC  CALIB ACC    LOSS  KIND       STEP  BITS\n"
            "   1  step-3  job-7   progressive      4.50        10.0  250M    "
            "84.8%      86.1%  0.4123  finetuned     3  8/4/2\n"
            "   2  final   job-12  knapsack         3.25         2.0     -    "
            "    -      80.0%  0.6000  final        12  4/4/2\n");

  // Policies from servers that do not name their job or policy print "-".
  response.mutable_policies(1)->clear_job_id();
  response.mutable_policies(1)->clear_strategy();
  response.mutable_policies(1)->clear_policy_id();
  EXPECT_THAT(FormatBestPolicies(response),
              HasSubstr("   2  -       -      -                3.25"));
}

// A re-solved policy was never run: no policy id, accuracies, loss or step.
TEST(FormatBestPoliciesTest, ResolvedPolicyWithTheCommandThatMeasuresIt) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  v1::QueryBestPoliciesResponse response;
  response.set_job_id("job-7");
  v1::Policy* p = response.add_policies();
  for (auto [name, bits] : {std::pair{"fc1.weight", 6}, {"fc2.weight", 2}}) {
    v1::LayerBits* layer = p->add_layers();
    layer->set_name(name);
    layer->set_bits(bits);
  }
  p->set_avg_bits(3.5);
  p->set_size_bytes(2048);
  p->set_bops(1.5e6);
  p->set_accuracy(nan);
  p->set_loss(nan);
  p->set_val_accuracy(nan);
  p->set_kind("predicted");
  v1::QueryBestPoliciesRequest request;
  request.set_job_id("job-7");
  request.set_resolve(true);
  request.set_max_avg_bits(3.5);
  const std::string table =
      "layers: fc1.weight/fc2.weight\n"
      "RANK  POLICY  AVG BITS  SIZE (KiB)  BOPS  VAL ACC  CALIB ACC  LOSS  "
      "KIND       STEP  BITS\n"
      "   1  -           3.50         2.0  1.5M        -          -     -  "
      "predicted     -  6/2\n";
  EXPECT_EQ(FormatResolvedPolicy(response, request),
            table +
                "note: predicted from the job's stored sensitivities (no "
                "accuracy measured); run `mixq submit --from-job job-7 "
                "--strategy knapsack --target-avg-bits 3.5` with the job's "
                "--bits to measure it (no warm-up)\n");
  request.set_max_avg_bits(0);
  request.set_max_bops(1234567);
  EXPECT_THAT(FormatResolvedPolicy(response, request),
              HasSubstr("--strategy knapsack --target-bops 1234567` with"));
  request.set_max_bops(0);
  request.set_max_size_bytes(1000000.5);
  EXPECT_THAT(FormatResolvedPolicy(response, request),
              HasSubstr("--target-size-bytes 1000000`"));
}

TEST(ToJsonTest, UsesProtoFieldNamesAndPrintsDefaults) {
  auto json = ToJson(BestResponse(), /*multiline=*/true);
  ASSERT_TRUE(json.ok()) << json.status();
  for (const char* key :
       {"\"job_id\"", "\"policies\"", "\"avg_bits\"", "\"size_bytes\"",
        "\"layers\"", "\"name\"", "\"bits\"", "\"accuracy\"", "\"loss\"",
        "\"kind\"", "\"step\"", "\"rank\"", "\"chosen\"", "\"omega\""}) {
    EXPECT_THAT(*json, HasSubstr(key)) << key;
  }
  EXPECT_THAT(*json, Not(HasSubstr("avgBits")));
  EXPECT_THAT(*json, HasSubstr("\"name\": \"fc1.weight\""));
  EXPECT_THAT(*json, HasSubstr("\"bits\": 8"));
  EXPECT_EQ(json->back(), '\n');

  // The JSON parses back to the same message.
  v1::QueryBestPoliciesResponse round_trip;
  ASSERT_TRUE(
      google::protobuf::util::JsonStringToMessage(*json, &round_trip).ok());
  EXPECT_EQ(round_trip.SerializeAsString(), BestResponse().SerializeAsString());
}

TEST(ToJsonTest, SingleLine) {
  v1::JobEvent event;
  event.set_job_id("j");
  event.set_state(v1::RUNNING);
  auto json = ToJson(event, /*multiline=*/false);
  ASSERT_TRUE(json.ok()) << json.status();
  EXPECT_THAT(*json, Not(HasSubstr("\n")));
  EXPECT_THAT(*json, HasSubstr("\"state\":\"RUNNING\""));
  EXPECT_THAT(*json, HasSubstr("\"target_avg_bits\":0"));
}

v1::JobEvent SearchEvent() {
  return ParseText<v1::JobEvent>(R"pb(
    job_id: "j"
    state: RUNNING
    phase: "search"
    step: 7
    avg_bits: 5.3125
    target_avg_bits: 4
    accuracy: 0.8612
    loss: 0.5
    val_accuracy: nan
    progress: 0.52
  )pb");
}

struct ProgressCase {
  std::string event;  // text-format JobEvent
  std::string bar;
  std::string line;
};

TEST(FormatProgressTest, Table) {
  const std::vector<ProgressCase> cases = {
      {R"pb(state: QUEUED phase: "queued")pb", "[..........] 0% queued",
       "QUEUED queued 0%"},
      {R"pb(state: RUNNING phase: "loading" progress: 0.01)pb",
       "[..........] 1% loading", "RUNNING loading 1%"},
      {R"pb(state: RUNNING
            phase: "warmup"
            avg_bits: 8
            target_avg_bits: 4
            accuracy: 0.9
            loss: 0.3
            val_accuracy: nan
            progress: 0.1)pb",
       "[#.........] 10% warmup avg 8.00 bits → 4.00 calib acc 90.0% val acc -",
       "RUNNING warmup 10% avg 8.00 bits → 4.00 calib acc 90.0% val acc - "
       "loss 0.3000"},
      {R"pb(state: RUNNING
            phase: "search"
            step: 7
            avg_bits: 5.3125
            target_avg_bits: 4
            accuracy: 0.8612
            loss: 0.5
            val_accuracy: 0.8405
            progress: 0.52)pb",
       "[#####.....] 52% step 7 avg 5.31 bits → 4.00 calib acc 86.1% val acc "
       "84.0%",
       "RUNNING search 52% step 7 avg 5.31 bits → 4.00 calib acc 86.1% val acc "
       "84.0% loss 0.5000"},
      {R"pb(state: RUNNING
            phase: "search"
            step: 2
            avg_bits: 6
            size_bytes: 81920
            target_size_bytes: 65536
            accuracy: 0.5
            val_accuracy: 0.45
            progress: 0.3)pb",
       "[###.......] 30% step 2 avg 6.00 bits size 80.0 KiB → 64.0 KiB calib "
       "acc 50.0% val acc 45.0%",
       "RUNNING search 30% step 2 avg 6.00 bits size 80.0 KiB → 64.0 KiB calib "
       "acc 50.0% val acc 45.0% loss 0.0000"},
      {R"pb(state: SUCCEEDED
            phase: "done"
            step: 9
            avg_bits: 3.98
            target_avg_bits: 4
            accuracy: 0.85
            loss: 0.4
            val_accuracy: 0.83
            progress: 1)pb",
       "[##########] 100% done step 9 avg 3.98 bits → 4.00 calib acc 85.0% val "
       "acc 83.0%",
       "SUCCEEDED done 100% step 9 avg 3.98 bits → 4.00 calib acc 85.0% val "
       "acc "
       "83.0% loss 0.4000"},
      {R"pb(state: FAILED phase: "done" error: "boom" progress: 1.5)pb",
       "[##########] 100% done", "FAILED done 100% error: boom"},
  };
  for (const ProgressCase& c : cases) {
    const auto event = ParseText<v1::JobEvent>(c.event);
    EXPECT_EQ(FormatProgressBar(event), c.bar) << c.event;
    EXPECT_EQ(FormatEventLine(event), c.line) << c.event;
  }
}

TEST(EventPrinterTest, ProgressBarRedrawsOneLine) {
  std::ostringstream out;
  EventPrinter printer(out, EventPrinter::Mode::kProgressBar);
  v1::JobEvent first;
  first.set_phase("queued");
  ASSERT_TRUE(printer.Print(first).ok());
  ASSERT_TRUE(printer.Print(SearchEvent()).ok());
  printer.Finish();
  EXPECT_EQ(out.str(),
            "\r[..........] 0% queued\x1b[K"
            "\r[#####.....] 52% step 7 avg 5.31 bits → 4.00 calib acc 86.1% "
            "val acc -\x1b[K\n");
}

TEST(EventPrinterTest, LinesAndJson) {
  std::ostringstream lines;
  EventPrinter line_printer(lines, EventPrinter::Mode::kLines);
  ASSERT_TRUE(line_printer.Print(SearchEvent()).ok());
  ASSERT_TRUE(line_printer.Print(SearchEvent()).ok());
  line_printer.Finish();
  EXPECT_EQ(lines.str(), FormatEventLine(SearchEvent()) + "\n" +
                             FormatEventLine(SearchEvent()) + "\n");

  std::ostringstream json;
  EventPrinter json_printer(json, EventPrinter::Mode::kJson);
  ASSERT_TRUE(json_printer.Print(SearchEvent()).ok());
  json_printer.Finish();
  EXPECT_EQ(json.str(), *ToJson(SearchEvent(), /*multiline=*/false) + "\n");
  EXPECT_THAT(json.str(), HasSubstr("\"phase\":\"search\""));
}

TEST(FormatJobTest, KeyValueLines) {
  const auto job = ParseText<v1::Job>(R"pb(
    id: "job-1"
    name: "mlp"
    state: SUCCEEDED
    created { seconds: 1700000000 }
    started { seconds: 1700000005 }
    finished { seconds: 1700000065 }
    steps_done: 7
    layers { name: "a" }
    layers { name: "b" }
    final_policy {
      avg_bits: 3.995
      accuracy: 0.8512
      val_accuracy: 0.8377
      bops: 1234567
    }
    val_samples: 600
    val_source: "held out: samples [5400, 6000) of x.npy"
    fp32_val_accuracy: 0.9101
  )pb");
  EXPECT_EQ(FormatJob(job),
            "id:              job-1\n"
            "name:            mlp\n"
            "state:           SUCCEEDED\n"
            "error:           -\n"
            "created:         2023-11-14T22:13:20Z\n"
            "started:         2023-11-14T22:13:25Z\n"
            "finished:        2023-11-14T22:14:25Z\n"
            "steps done:      7\n"
            "layers:          2\n"
            "final avg bits:  4.00\n"
            "final BOPs:      1.23M\n"
            "final calib acc: 85.1%\n"
            "final val acc:   83.8%\n"
            "validation:      600 samples (held out: samples [5400, 6000) of "
            "x.npy), FP32 val acc 91.0%\n");

  const auto failed =
      ParseText<v1::Job>(R"pb(id: "job-2" state: FAILED error: "bad model")pb");
  const std::string text = FormatJob(failed);
  EXPECT_THAT(text, HasSubstr("error:           bad model\n"));
  EXPECT_THAT(text, HasSubstr("started:         -\n"));
  EXPECT_THAT(text, HasSubstr("final avg bits:  -\n"));
  EXPECT_THAT(text, HasSubstr("final BOPs:      -\n"));
  EXPECT_THAT(text, HasSubstr("final val acc:   -\n"));
  EXPECT_THAT(text, HasSubstr("validation:      -\n"));

  // A running job: the validation set is chosen, nothing is measured yet.
  const auto running = ParseText<v1::Job>(R"pb(
    id: "job-3"
    state: RUNNING
    val_samples: 1000
    val_source: "files: val.npy (1000 samples)"
    fp32_val_accuracy: nan
  )pb");
  EXPECT_THAT(FormatJob(running),
              HasSubstr("validation:      1000 samples (files: val.npy (1000 "
                        "samples)), FP32 val acc -\n"));
  // An old job's final policy was never measured on a validation set.
  const auto old = ParseText<v1::Job>(R"pb(
    id: "job-4"
    state: SUCCEEDED
    final_policy { avg_bits: 4 accuracy: 0.9 val_accuracy: nan }
  )pb");
  EXPECT_THAT(FormatJob(old), HasSubstr("final calib acc: 90.0%\n"
                                        "final val acc:   -\n"));
}

TEST(FormatJobListTest, Table) {
  const auto response = ParseText<v1::ListJobsResponse>(R"pb(
    jobs {
      id: "job-2"
      state: RUNNING
      steps_done: 3
      created { seconds: 1700000000 }
    }
    jobs {
      id: "job-1"
      name: "mlp"
      state: SUCCEEDED
      steps_done: 12
      created { seconds: 1690000000 }
      final_policy { avg_bits: 4 accuracy: 0.9 val_accuracy: 0.875 }
    }
    jobs {
      id: "job-0"
      state: SUCCEEDED
      steps_done: 4
      created { seconds: 1680000000 }
      final_policy { avg_bits: 5 accuracy: 0.8 val_accuracy: nan }
    }
  )pb");
  EXPECT_EQ(FormatJobList(response),
            "ID     NAME  STATE      STEPS  AVG BITS  CALIB ACC  VAL ACC  "
            "CREATED\n"
            "job-2  -     RUNNING        3         -          -        -  "
            "2023-11-14T22:13:20Z\n"
            "job-1  mlp   SUCCEEDED     12      4.00      90.0%    87.5%  "
            "2023-07-22T04:26:40Z\n"
            "job-0  -     SUCCEEDED      4      5.00      80.0%        -  "
            "2023-03-28T10:40:00Z\n");
}

// A finished job: the warm-up, one step with two candidates, the final policy.
v1::GetResultsResponse Results() {
  return ParseText<v1::GetResultsResponse>(R"pb(
    job {
      id: "job-1"
      state: SUCCEEDED
      layers { name: "w1" }
      layers { name: "w2" }
    }
    steps {
      step: 0
      elapsed_seconds: 1.5
      finetuned {
        layers { name: "w1" bits: 8 }
        layers { name: "w2" bits: 8 }
        avg_bits: 8
        size_bytes: 2048
        accuracy: 0.9
        loss: 0.3
        val_accuracy: 0.88
        policy_id: "step-0"
      }
    }
    steps {
      step: 1
      elapsed_seconds: 2.5
      candidates {
        layers { name: "w1" bits: 8 }
        layers { name: "w2" bits: 6 }
        rank: 1
        index: 0.3312
        loss: 0.32
        accuracy: 0.89
        omega: 0.0224
        avg_bits: 7
        bops: 44032
        chosen: true
        val_accuracy: nan
      }
      candidates {
        layers { name: "w1" bits: 6 }
        layers { name: "w2" bits: 8 }
        rank: 2
        index: 0.35
        loss: 0.33
        accuracy: 0.88
        omega: 0.04
        avg_bits: 7
      }
      finetuned {
        layers { name: "w1" bits: 8 }
        layers { name: "w2" bits: 6 }
        avg_bits: 7
        size_bytes: 1792
        bops: 44032
        accuracy: 0.895
        loss: 0.31
        val_accuracy: 0.87
        policy_id: "step-1"
      }
    }
    final_policy {
      layers { name: "w1" bits: 8 }
      layers { name: "w2" bits: 6 }
      avg_bits: 7
      size_bytes: 1792
      accuracy: 0.9
      loss: 0.3
      kind: "final"
      val_accuracy: nan
    }
  )pb");
}

TEST(FormatResultsTest, StepsAndFinalPolicy) {
  const v1::GetResultsResponse response = Results();
  EXPECT_EQ(
      FormatResults(response),
      "job job-1 SUCCEEDED\n"
      "layers: w1/w2\n"
      "\n"
      "step 0 (warm-up): 0 candidates, 1.5 s\n"
      "fine-tuned: policy step-0, avg 8.00 bits, 2.0 KiB, calib acc 90.0%, "
      "val acc 88.0%, loss 0.3000, bits 8/8\n"
      "\n"
      "step 1: 2 candidates, 2.5 s\n"
      "   RANK   INDEX    LOSS  CALIB ACC   OMEGA  AVG BITS  BOPS  BITS\n"
      "*     1  0.3312  0.3200      89.0%  0.0224      7.00   44K  8/6\n"
      "      2    0.35  0.3300      88.0%    0.04      7.00     -  6/8\n"
      "fine-tuned: policy step-1, avg 7.00 bits, 1.8 KiB, 44K BOPs, calib acc "
      "89.5%, val acc 87.0%, loss 0.3100, bits 8/6\n"
      "\n"
      "final: avg 7.00 bits, 1.8 KiB, calib acc 90.0%, val acc -, loss "
      "0.3000, bits 8/6\n"
      "LAYER  BITS\n"
      "w1        8\n"
      "w2        6\n");
}

// Results() with the scoring statistics a current server records per step.
v1::GetResultsResponse ResultsWithStepStats() {
  v1::GetResultsResponse response = Results();
  response.mutable_steps(0)->set_finetune_steps(100);
  v1::Step& step = *response.mutable_steps(1);
  step.set_finetune_steps(50);
  step.set_node_runs(120);
  step.set_naive_node_runs(400);
  step.set_scoring_seconds(0.8);
  step.set_oracle_omega(0.02);
  return response;
}

TEST(FormatResultsTest, StepStats) {
  v1::GetResultsResponse response = ResultsWithStepStats();
  EXPECT_THAT(FormatResults(response),
              HasSubstr("step 0 (warm-up): 0 candidates, 1.5 s, 100 fine-tune "
                        "steps\n"
                        "fine-tuned: policy step-0, avg 8.00 bits"));
  EXPECT_THAT(FormatResults(response),
              HasSubstr("step 1: 2 candidates, 2.5 s, 50 fine-tune steps\n"
                        "scoring: 120 node runs vs 400 naive (70.0% saved), "
                        "0.80 s; Ω 0.0224 vs oracle 0.02 (+0.0024)\n"
                        "   RANK   INDEX"));

  // Without scoring work or a chosen candidate, only the oracle is shown.
  v1::Step& step = *response.mutable_steps(1);
  step.clear_node_runs();
  step.clear_naive_node_runs();
  step.clear_scoring_seconds();
  step.mutable_candidates(0)->set_chosen(false);
  EXPECT_THAT(FormatResults(response), HasSubstr("50 fine-tune steps\n"
                                                 "oracle Ω 0.02\n"
                                                 "  RANK"));
}

TEST(ToJsonTest, ResultsCarryStepStats) {
  auto json = ToJson(ResultsWithStepStats(), /*multiline=*/true);
  ASSERT_TRUE(json.ok()) << json.status();
  // int64 fields are strings in protobuf's JSON mapping.
  for (const char* field :
       {"\"finetune_steps\": 50", "\"node_runs\": \"120\"",
        "\"naive_node_runs\": \"400\"", "\"scoring_seconds\": 0.8",
        "\"oracle_omega\": 0.02"}) {
    EXPECT_THAT(*json, HasSubstr(field)) << field;
  }
}

v1::GetParetoFrontResponse ParetoResponse() {
  return ParseText<v1::GetParetoFrontResponse>(R"pb(
    job_id: "job-7"
    policies {
      policy_id: "final"
      strategy: "progressive"
      avg_bits: 2.5
      size_bytes: 3072
      bops: 62500000
      accuracy: 0.79
      val_accuracy: 0.7712
      val_loss: 0.65
    }
    policies {
      policy_id: "step-2"
      strategy: "progressive"
      avg_bits: 5
      size_bytes: 8192
      bops: 125000000
      accuracy: 0.86
      val_accuracy: 0.8512
      val_loss: 0.49
    }
    fp32_size_bytes: 40960
    fp32_bops: 800000000
    fp32_val_accuracy: 0.8801
    fp32_val_loss: 0.41
  )pb");
}

TEST(FormatParetoFrontTest, Fp32RowThenTheFrontBySize) {
  EXPECT_EQ(FormatParetoFront(ParetoResponse()),
            "POLICY  STRATEGY     AVG BITS  SIZE (KiB)   BOPS  VAL ACC  "
            "VAL LOSS  CALIB ACC\n"
            "fp32    -               32.00        40.0   800M    88.0%    "
            "0.4100          -\n"
            "final   progressive      2.50         3.0  62.5M    77.1%    "
            "0.6500      79.0%\n"
            "step-2  progressive      5.00         8.0   125M    85.1%    "
            "0.4900      86.0%\n");
}

TEST(FormatParetoFrontTest, SameModelShowsTheJob) {
  v1::GetParetoFrontResponse response = ParetoResponse();
  response.set_model_sha256("9f86d081884c7d65");
  response.mutable_policies(0)->set_job_id("job-7");
  response.mutable_policies(1)->set_job_id("job-12");
  response.mutable_policies(1)->set_strategy("knapsack");
  response.set_fp32_val_accuracy(std::numeric_limits<double>::quiet_NaN());
  EXPECT_EQ(
      FormatParetoFront(response),
      "model: 9f86d081884c7d65\n"
      "POLICY  JOB     STRATEGY     AVG BITS  SIZE (KiB)   BOPS  VAL ACC  "
      "VAL LOSS  CALIB ACC\n"
      "fp32    -       -               32.00        40.0   800M        -  "
      "  0.4100          -\n"
      "final   job-7   progressive      2.50         3.0  62.5M    77.1%  "
      "  0.6500      79.0%\n"
      "step-2  job-12  knapsack         5.00         8.0   125M    85.1%  "
      "  0.4900      86.0%\n");
}

TEST(FormatParetoFrontTest, EmptyFrontSaysSo) {
  v1::GetParetoFrontResponse response = ParetoResponse();
  response.clear_policies();
  EXPECT_EQ(FormatParetoFront(response),
            "POLICY  STRATEGY  AVG BITS  SIZE (KiB)  BOPS  VAL ACC  VAL LOSS  "
            "CALIB ACC\n"
            "fp32    -            32.00        40.0  800M    88.0%    0.4100  "
            "        -\n"
            "no kept policy with a measured validation accuracy or loss\n");
}

TEST(FormatWatchSummaryTest, FinalPolicyAndTheCommandsToRun) {
  auto event = ParseText<v1::JobEvent>(R"pb(
    job_id: "job-1"
    state: SUCCEEDED
    avg_bits: 3.98
    size_bytes: 12288
    accuracy: 0.85
    val_accuracy: 0.8312
    fp32_val_accuracy: 0.9
    policy_id: "final"
  )pb");
  EXPECT_EQ(FormatWatchSummary(event),
            "done: policy final, avg 3.98 bits, 12.0 KiB, val acc 83.1% "
            "(FP32 90.0%)\n"
            "export: mixq export job-1 -o job-1.qdq.onnx; every kept policy: "
            "mixq pareto job-1\n");

  // Unmeasured accuracies print "-"; without an exported model only the
  // policy's JSON can be exported.
  event.set_val_accuracy(std::numeric_limits<double>::quiet_NaN());
  event.set_fp32_val_accuracy(std::numeric_limits<double>::quiet_NaN());
  event.clear_policy_id();
  event.clear_size_bytes();
  EXPECT_EQ(FormatWatchSummary(event),
            "done: policy -, avg 3.98 bits, val acc - (FP32 -)\n"
            "export: mixq export job-1 --format policy-json -o "
            "job-1.policy.json; every kept policy: mixq pareto job-1\n");
}

TEST(FormatCancelledTest, OneLine) {
  v1::Job job;
  job.set_id("job-3");
  job.set_state(v1::CANCELLED);
  EXPECT_EQ(FormatCancelled(job), "job-3: CANCELLED\n");
}

}  // namespace
}  // namespace mixq::client
