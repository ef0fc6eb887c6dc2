#include "client/cli.h"

#include <cstdlib>
#include <sstream>
#include <string>
#include <variant>
#include <vector>

#include "client/commands.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace mixq::client {
namespace {

using ::testing::HasSubstr;

constexpr char kServer[] = "env-server:1234";

// The minimal `submit` command line with `bits`, extended by `extra`.
std::vector<std::string> Submit(std::vector<std::string> extra = {},
                                const std::string& bits = "8,6,4,2") {
  std::vector<std::string> args = {
      "submit", "--model",      "m.onnx", "--inputs", "x.npy", "--labels",
      "y.npy",  "--calib-size", "100",    "--bits",   bits};
  args.insert(args.end(), extra.begin(), extra.end());
  return args;
}

TEST(ParseCommandLineTest, SubmitFromJobNeedsOnlyTheSearchFlags) {
  auto parsed =
      ParseCommandLine({"submit", "--from-job", "job-7", "--bits", "8,4",
                        "--target-avg-bits", "5", "--strategy", "knapsack"},
                       kServer);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  const auto* submit = std::get_if<SubmitOptions>(&parsed->command);
  ASSERT_NE(submit, nullptr);
  EXPECT_EQ(submit->from_job, "job-7");
  EXPECT_EQ(submit->model, "");
  EXPECT_EQ(submit->calib_size, 0);
  EXPECT_EQ(submit->strategy, "knapsack");
}

TEST(ParseCommandLineTest, InputsByNameForSeveralGraphInputs) {
  auto parsed = ParseCommandLine(
      {"submit", "--model", "m.onnx", "--inputs", "input_ids=ids.npy",
       "--inputs", "attention_mask=dir/mask.npy", "--calib-size", "10",
       "--bits", "8,4", "--target-avg-bits", "5", "--val-inputs",
       "input_ids=vi.npy", "--val-inputs", "attention_mask=vm.npy"},
      kServer);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  const auto* submit = std::get_if<SubmitOptions>(&parsed->command);
  ASSERT_NE(submit, nullptr);
  EXPECT_EQ(submit->inputs, "");
  ASSERT_EQ(submit->inputs_by_name.size(), 2u);
  EXPECT_EQ(submit->inputs_by_name[0].name, "input_ids");
  EXPECT_EQ(submit->inputs_by_name[1].path, "dir/mask.npy");
  EXPECT_EQ(submit->val_inputs_by_name.size(), 2u);
  // A plain path keeps working; a path with '=' after a '/' is a path.
  auto plain = ParseCommandLine(Submit({"--target-avg-bits", "4"}), kServer);
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_TRUE(std::get<SubmitOptions>(plain->command).inputs_by_name.empty());
  auto slash =
      ParseCommandLine({"eval", "--model", "m.onnx", "--inputs", "./a=b.npy",
                        "--labels", "y.npy", "--calib-size", "10"},
                       kServer);
  ASSERT_TRUE(slash.ok()) << slash.status();
  EXPECT_EQ(std::get<EvalOptions>(slash->command).data.inputs, "./a=b.npy");
  // Two plain files, or plain mixed with NAME=FILE, are an error.
  for (const std::vector<std::string>& inputs :
       std::vector<std::vector<std::string>>{{"a.npy", "b.npy"},
                                             {"a.npy", "ids=b.npy"}}) {
    std::vector<std::string> args = {
        "submit", "--model",           "m.onnx", "--calib-size", "10", "--bits",
        "8,4",    "--target-avg-bits", "5"};
    for (const std::string& value : inputs) {
      args.push_back("--inputs");
      args.push_back(value);
    }
    auto bad = ParseCommandLine(args, kServer);
    ASSERT_FALSE(bad.ok());
    EXPECT_THAT(bad.status().message(), HasSubstr("--inputs: 'a.npy'"));
  }
}

TEST(ParseCommandLineTest, SubmitDefaults) {
  auto parsed = ParseCommandLine(Submit({"--target-avg-bits", "4"}), kServer);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_TRUE(parsed->help.empty());
  EXPECT_EQ(parsed->global.server, kServer);
  EXPECT_FALSE(parsed->global.json);
  EXPECT_EQ(parsed->global.timeout_seconds, kDefaultTimeoutSeconds);
  EXPECT_FALSE(parsed->global.tty);
  const auto* submit = std::get_if<SubmitOptions>(&parsed->command);
  ASSERT_NE(submit, nullptr);
  EXPECT_EQ(submit->model, "m.onnx");
  EXPECT_EQ(submit->inputs, "x.npy");
  EXPECT_EQ(submit->labels, "y.npy");
  EXPECT_EQ(submit->calib_size, 100);
  EXPECT_EQ(submit->bits, (std::vector<int>{8, 6, 4, 2}));
  EXPECT_EQ(submit->target_avg_bits, 4.0);
  EXPECT_FALSE(submit->target_size_fraction.has_value());
  // Unset options stay unset so that the server applies its defaults.
  EXPECT_FALSE(submit->candidates.has_value());
  EXPECT_FALSE(submit->max_layers.has_value());
  EXPECT_FALSE(submit->finetune_steps.has_value());
  EXPECT_FALSE(submit->warmup_steps.has_value());
  EXPECT_FALSE(submit->final_steps.has_value());
  EXPECT_FALSE(submit->learning_rate.has_value());
  EXPECT_FALSE(submit->batch_size.has_value());
  EXPECT_FALSE(submit->lambda.has_value());
  EXPECT_FALSE(submit->normalize.has_value());
  EXPECT_FALSE(submit->max_samples.has_value());
  EXPECT_EQ(submit->strategy, "");
  EXPECT_EQ(submit->selection, "");
  EXPECT_FALSE(submit->refresh_fisher);
  EXPECT_FALSE(submit->land_on_budget);
  EXPECT_FALSE(submit->total_finetune_steps.has_value());
  EXPECT_FALSE(submit->hutchinson_samples.has_value());
  EXPECT_EQ(submit->seed, 0u);
  EXPECT_FALSE(submit->server_paths);
  EXPECT_FALSE(submit->watch);
  // No validation flags: the server holds out its default.
  EXPECT_EQ(submit->val_inputs, "");
  EXPECT_EQ(submit->val_labels, "");
  EXPECT_FALSE(submit->val_size.has_value());
}

TEST(ParseCommandLineTest, SubmitAndEvalValidationSet) {
  auto files = ParseCommandLine(
      Submit({"--target-avg-bits", "4", "--val-inputs", "vx.npy",
              "--val-labels", "sha256:" + std::string(64, 'b'), "--upload"}),
      kServer);
  ASSERT_TRUE(files.ok()) << files.status();
  const auto& submit = std::get<SubmitOptions>(files->command);
  EXPECT_EQ(submit.val_inputs, "vx.npy");
  EXPECT_EQ(submit.val_labels, "sha256:" + std::string(64, 'b'));
  EXPECT_FALSE(submit.val_size.has_value());
  EXPECT_TRUE(submit.upload);

  auto held_out = ParseCommandLine(
      Submit({"--target-avg-bits", "4", "--val-size", "500"}), kServer);
  ASSERT_TRUE(held_out.ok()) << held_out.status();
  EXPECT_EQ(std::get<SubmitOptions>(held_out->command).val_size, 500);
  EXPECT_EQ(std::get<SubmitOptions>(held_out->command).val_inputs, "");

  auto eval = ParseCommandLine(
      {"eval", "--model", "m", "--inputs", "x", "--labels", "y", "--calib-size",
       "1", "--val-inputs", "vx", "--val-labels", "vy", "--server-paths"},
      kServer);
  ASSERT_TRUE(eval.ok()) << eval.status();
  const auto& data = std::get<EvalOptions>(eval->command).data;
  EXPECT_EQ(data.val_inputs, "vx");
  EXPECT_EQ(data.val_labels, "vy");
  EXPECT_TRUE(data.server_paths);

  auto eval_size =
      ParseCommandLine({"eval", "--model", "m", "--inputs", "x", "--labels",
                        "y", "--calib-size", "1", "--val-size", "20"},
                       kServer);
  ASSERT_TRUE(eval_size.ok()) << eval_size.status();
  EXPECT_EQ(std::get<EvalOptions>(eval_size->command).data.val_size, 20);
}

// Without labels the job distils; --objective names it either way, and
// validation inputs alone are a validation set then.
TEST(ParseCommandLineTest, SubmitAndEvalObjective) {
  auto label_free = ParseCommandLine(
      {"submit", "--model", "m.onnx", "--inputs", "x.npy", "--calib-size",
       "100", "--bits", "8,4", "--target-avg-bits", "4", "--val-inputs",
       "vx.npy", "--server-paths"},
      kServer);
  ASSERT_TRUE(label_free.ok()) << label_free.status();
  const auto& submit = std::get<SubmitOptions>(label_free->command);
  EXPECT_EQ(submit.labels, "");
  EXPECT_EQ(submit.objective, "");
  EXPECT_EQ(submit.val_inputs, "vx.npy");
  absl::StatusOr<v1::SubmitJobRequest> request = BuildSubmitRequest(submit);
  ASSERT_TRUE(request.ok()) << request.status();
  EXPECT_FALSE(request->spec().has_labels());
  EXPECT_FALSE(request->spec().has_val_labels());

  auto named = ParseCommandLine(Submit({"--target-avg-bits", "4", "--objective",
                                        "distill", "--server-paths"}),
                                kServer);
  ASSERT_TRUE(named.ok()) << named.status();
  request = BuildSubmitRequest(std::get<SubmitOptions>(named->command));
  ASSERT_TRUE(request.ok()) << request.status();
  EXPECT_EQ(request->spec().objective(), "distill");
  EXPECT_TRUE(request->spec().has_labels());

  auto eval =
      ParseCommandLine({"eval", "--model", "m", "--inputs", "x", "--calib-size",
                        "1", "--objective", "distill", "--server-paths"},
                       kServer);
  ASSERT_TRUE(eval.ok()) << eval.status();
  absl::StatusOr<v1::EvaluatePolicyRequest> eval_request =
      BuildEvalRequest(std::get<EvalOptions>(eval->command));
  ASSERT_TRUE(eval_request.ok()) << eval_request.status();
  EXPECT_EQ(eval_request->spec().objective(), "distill");
  EXPECT_FALSE(eval_request->spec().has_labels());

  const absl::StatusOr<Invocation> unknown = ParseCommandLine(
      Submit({"--target-avg-bits", "4", "--objective", "mse"}), kServer);
  EXPECT_FALSE(unknown.ok());
  EXPECT_THAT(std::string(unknown.status().message()), HasSubstr("mse"));
  // Cross-entropy still needs both validation files.
  const absl::StatusOr<Invocation> half = ParseCommandLine(
      Submit({"--target-avg-bits", "4", "--val-inputs", "v"}), kServer);
  EXPECT_THAT(std::string(half.status().message()),
              HasSubstr("--val-inputs: needs --val-labels"));
}

TEST(ParseCommandLineTest, SubmitAllOptions) {
  auto parsed = ParseCommandLine(Submit({"--target-size-fraction",
                                         "0.25",
                                         "--candidates",
                                         "6",
                                         "--max-layers",
                                         "3",
                                         "--finetune-steps",
                                         "40",
                                         "--warmup-steps",
                                         "100",
                                         "--final-steps",
                                         "200",
                                         "--lr",
                                         "3e-4",
                                         "--batch-size",
                                         "32",
                                         "--lambda",
                                         "0.5",
                                         "--seed",
                                         "18446744073709551615",
                                         "--normalize",
                                         "0.286,0.353",
                                         "--max-samples",
                                         "5000",
                                         "--name",
                                         "mlp",
                                         "--request-id",
                                         "r-1",
                                         "--server-paths",
                                         "--watch"}),
                                 kServer);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  const auto& submit = std::get<SubmitOptions>(parsed->command);
  EXPECT_FALSE(submit.target_avg_bits.has_value());
  EXPECT_EQ(submit.target_size_fraction, 0.25);
  EXPECT_EQ(submit.candidates, 6);
  EXPECT_EQ(submit.max_layers, 3);
  EXPECT_EQ(submit.finetune_steps, 40);
  EXPECT_EQ(submit.warmup_steps, 100);
  EXPECT_EQ(submit.final_steps, 200);
  EXPECT_EQ(submit.learning_rate, 3e-4);
  EXPECT_EQ(submit.batch_size, 32);
  EXPECT_EQ(submit.lambda, 0.5);
  EXPECT_EQ(submit.seed, 18446744073709551615u);
  ASSERT_TRUE(submit.normalize.has_value());
  EXPECT_DOUBLE_EQ(submit.normalize->mean, 0.286);
  EXPECT_DOUBLE_EQ(submit.normalize->std, 0.353);
  EXPECT_EQ(submit.max_samples, 5000);
  EXPECT_EQ(submit.name, "mlp");
  EXPECT_EQ(submit.request_id, "r-1");
  EXPECT_TRUE(submit.server_paths);
  EXPECT_TRUE(submit.watch);
}

TEST(ParseCommandLineTest, SubmitBudgetsPinsAndActivationBits) {
  auto parsed =
      ParseCommandLine(Submit({"--target-bops", "2.5e9", "--layer-bits",
                               "fc1.weight=8,4", "--pin", "fc2.weight",
                               "--pin-first-last", "--activation-bits", "4"}),
                       kServer);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  const auto* submit = std::get_if<SubmitOptions>(&parsed->command);
  ASSERT_NE(submit, nullptr);
  EXPECT_EQ(submit->target_bops, 2.5e9);
  EXPECT_FALSE(submit->target_avg_bits.has_value());
  ASSERT_EQ(submit->layers.size(), 2u);
  EXPECT_EQ(submit->layers[0].name, "fc1.weight");
  EXPECT_EQ(submit->layers[0].bits, (std::vector<int>{8, 4}));
  EXPECT_EQ(submit->layers[1].name, "fc2.weight");
  EXPECT_EQ(submit->layers[1].bits, (std::vector<int>{8}));  // max of --bits
  EXPECT_TRUE(submit->pin_first_last);
  EXPECT_EQ(submit->activation_bits, 4);

  // --pin on a layer with its own list keeps the highest of that list, in
  // the same entry.
  parsed = ParseCommandLine(
      Submit({"--target-avg-bits", "4", "--layer-bits", "fc1.weight=6,3",
              "--pin", "fc1.weight", "--pin", "fc3.weight"}),
      kServer);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  const auto& pinned = std::get<SubmitOptions>(parsed->command).layers;
  ASSERT_EQ(pinned.size(), 2u);
  EXPECT_EQ(pinned[0].name, "fc1.weight");
  EXPECT_EQ(pinned[0].bits, (std::vector<int>{6}));
  EXPECT_EQ(pinned[1].name, "fc3.weight");
  EXPECT_EQ(pinned[1].bits, (std::vector<int>{8}));

  parsed = ParseCommandLine(Submit({"--target-size-bytes", "50000"}), kServer);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(std::get<SubmitOptions>(parsed->command).target_size_bytes, 50000);

  EXPECT_FALSE(ParseCommandLine(Submit({"--target-avg-bits", "4",
                                        "--layer-bits", "fc1.weight"}),
                                kServer)
                   .ok());
  EXPECT_FALSE(ParseCommandLine(Submit({"--target-avg-bits", "4",
                                        "--layer-bits", "fc1.weight=8,x"}),
                                kServer)
                   .ok());
}

TEST(ParseCommandLineTest, SubmitStrategies) {
  for (const char* strategy : {"progressive", "uniform", "knapsack", "hawq"}) {
    auto parsed = ParseCommandLine(
        Submit({"--target-avg-bits", "4", "--strategy", strategy}), kServer);
    ASSERT_TRUE(parsed.ok()) << strategy << ": " << parsed.status();
    EXPECT_EQ(std::get<SubmitOptions>(parsed->command).strategy, strategy);
  }

  auto parsed = ParseCommandLine(
      Submit({"--target-avg-bits", "4", "--selection", "per_cost_saved",
              "--refresh-fisher", "--land-on-budget", "--knapsack-guided",
              "--activation-levels", "8,6,4", "--total-finetune-steps", "600"}),
      kServer);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  const auto& progressive = std::get<SubmitOptions>(parsed->command);
  EXPECT_EQ(progressive.strategy, "");
  EXPECT_EQ(progressive.selection, "per_cost_saved");
  EXPECT_TRUE(progressive.refresh_fisher);
  EXPECT_TRUE(progressive.land_on_budget);
  EXPECT_TRUE(progressive.knapsack_guided);
  EXPECT_EQ(progressive.activation_levels, std::vector<int>({8, 6, 4}));
  EXPECT_EQ(progressive.total_finetune_steps, 600);
  EXPECT_FALSE(progressive.hutchinson_samples.has_value());

  parsed = ParseCommandLine(
      Submit({"--target-bops", "2e8", "--strategy", "hawq",
              "--hutchinson-samples", "32", "--selection", "min_index"}),
      kServer);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  const auto& hawq = std::get<SubmitOptions>(parsed->command);
  EXPECT_EQ(hawq.strategy, "hawq");
  EXPECT_EQ(hawq.selection, "min_index");
  EXPECT_EQ(hawq.hutchinson_samples, 32);
  EXPECT_FALSE(hawq.refresh_fisher);
  EXPECT_FALSE(hawq.land_on_budget);
  EXPECT_FALSE(hawq.total_finetune_steps.has_value());
}

TEST(ParseCommandLineTest, GlobalOptionsBeforeAndAfterTheCommand) {
  for (const auto& args : std::vector<std::vector<std::string>>{
           {"--server", "h:1", "--json", "--timeout", "2.5", "--tty", "status",
            "job-1"},
           {"status", "job-1", "--server", "h:1", "--json", "--timeout", "2.5",
            "--tty"}}) {
    auto parsed = ParseCommandLine(args, kServer);
    ASSERT_TRUE(parsed.ok()) << parsed.status();
    EXPECT_EQ(parsed->global.server, "h:1");
    EXPECT_TRUE(parsed->global.json);
    EXPECT_EQ(parsed->global.timeout_seconds, 2.5);
    EXPECT_TRUE(parsed->global.tty);
    EXPECT_EQ(std::get<StatusOptions>(parsed->command).job_id, "job-1");
  }
  auto no_tty = ParseCommandLine({"--tty", "--no-tty", "watch", "j"}, kServer);
  ASSERT_TRUE(no_tty.ok()) << no_tty.status();
  EXPECT_FALSE(no_tty->global.tty);
}

TEST(ParseCommandLineTest, JobCommands) {
  auto watch = ParseCommandLine({"watch", "j1"}, kServer);
  ASSERT_TRUE(watch.ok()) << watch.status();
  EXPECT_EQ(std::get<WatchOptions>(watch->command).job_id, "j1");

  auto results = ParseCommandLine({"results", "j2"}, kServer);
  ASSERT_TRUE(results.ok()) << results.status();
  EXPECT_EQ(std::get<ResultsOptions>(results->command).job_id, "j2");

  auto cancel = ParseCommandLine({"cancel", "j3"}, kServer);
  ASSERT_TRUE(cancel.ok()) << cancel.status();
  EXPECT_EQ(std::get<CancelOptions>(cancel->command).job_id, "j3");
}

TEST(ParseCommandLineTest, UploadAndExport) {
  auto upload = ParseCommandLine({"upload", "m.onnx"}, kServer);
  ASSERT_TRUE(upload.ok()) << upload.status();
  EXPECT_EQ(std::get<UploadOptions>(upload->command).path, "m.onnx");

  auto defaults = ParseCommandLine({"export", "j1"}, kServer);
  ASSERT_TRUE(defaults.ok()) << defaults.status();
  const auto& onnx = std::get<ExportOptions>(defaults->command);
  EXPECT_EQ(onnx.job_id, "j1");
  EXPECT_EQ(onnx.format, "onnx");
  EXPECT_EQ(onnx.output, "");  // the server's file name

  EXPECT_EQ(onnx.policy_id, "");  // the final policy

  auto policy = ParseCommandLine(
      {"export", "j2", "--format", "policy-json", "-o", "p.json"}, kServer);
  ASSERT_TRUE(policy.ok()) << policy.status();
  const auto& json = std::get<ExportOptions>(policy->command);
  EXPECT_EQ(json.format, "policy_json");  // the API's spelling
  EXPECT_EQ(json.output, "p.json");

  // The API's spelling is accepted too; any kept policy can be exported.
  auto step = ParseCommandLine(
      {"export", "j3", "--policy-id", "step-3", "--format", "policy_json"},
      kServer);
  ASSERT_TRUE(step.ok()) << step.status();
  const auto& kept = std::get<ExportOptions>(step->command);
  EXPECT_EQ(kept.job_id, "j3");
  EXPECT_EQ(kept.policy_id, "step-3");
  EXPECT_EQ(kept.format, "policy_json");
}

TEST(ParseCommandLineTest, Report) {
  auto defaults = ParseCommandLine({"report", "j1"}, kServer);
  ASSERT_TRUE(defaults.ok()) << defaults.status();
  const auto& plain = std::get<ReportOptions>(defaults->command);
  EXPECT_EQ(plain.job_id, "j1");
  EXPECT_EQ(plain.output, "");  // <job>.report.html

  auto named = ParseCommandLine({"report", "j2", "-o", "r.html"}, kServer);
  ASSERT_TRUE(named.ok()) << named.status();
  EXPECT_EQ(std::get<ReportOptions>(named->command).output, "r.html");
  auto stdout_ = ParseCommandLine({"report", "--output", "-", "j3"}, kServer);
  ASSERT_TRUE(stdout_.ok()) << stdout_.status();
  EXPECT_EQ(std::get<ReportOptions>(stdout_->command).output, "-");
  EXPECT_EQ(std::get<ReportOptions>(stdout_->command).job_id, "j3");
}

TEST(ParseCommandLineTest, Pareto) {
  auto job = ParseCommandLine({"pareto", "j1"}, kServer);
  ASSERT_TRUE(job.ok()) << job.status();
  const auto& one = std::get<ParetoOptions>(job->command);
  EXPECT_EQ(one.job_id, "j1");
  EXPECT_FALSE(one.same_model);
  EXPECT_EQ(one.model_sha256, "");

  auto same =
      ParseCommandLine({"pareto", "--same-model", "j1", "--json"}, kServer);
  ASSERT_TRUE(same.ok()) << same.status();
  EXPECT_TRUE(std::get<ParetoOptions>(same->command).same_model);
  EXPECT_TRUE(same->global.json);

  auto by_hash = ParseCommandLine(
      {"pareto", "--model-sha256", std::string(64, 'D')}, kServer);
  ASSERT_TRUE(by_hash.ok()) << by_hash.status();
  const auto& model = std::get<ParetoOptions>(by_hash->command);
  EXPECT_EQ(model.job_id, "");
  EXPECT_EQ(model.model_sha256, std::string(64, 'd'));  // as stored
}

TEST(ParseCommandLineTest, SubmitAndEvalUpload) {
  auto submit =
      ParseCommandLine(Submit({"--target-avg-bits", "4", "--upload"}), kServer);
  ASSERT_TRUE(submit.ok()) << submit.status();
  EXPECT_TRUE(std::get<SubmitOptions>(submit->command).upload);
  EXPECT_FALSE(std::get<SubmitOptions>(submit->command).server_paths);

  auto eval =
      ParseCommandLine({"eval", "--model", "sha256:ab", "--inputs", "x",
                        "--labels", "y", "--calib-size", "1", "--upload"},
                       kServer);
  ASSERT_TRUE(eval.ok()) << eval.status();
  // References are checked when the request is built (commands.h).
  EXPECT_EQ(std::get<EvalOptions>(eval->command).data.model, "sha256:ab");
  EXPECT_TRUE(std::get<EvalOptions>(eval->command).data.upload);
}

TEST(ParseCommandLineTest, List) {
  auto all = ParseCommandLine({"list"}, kServer);
  ASSERT_TRUE(all.ok()) << all.status();
  const auto& list = std::get<ListOptions>(all->command);
  EXPECT_EQ(list.state, v1::JOB_STATE_UNSPECIFIED);
  EXPECT_FALSE(list.limit.has_value());

  const std::vector<std::pair<std::string, v1::JobState>> states = {
      {"queued", v1::QUEUED},       {"running", v1::RUNNING},
      {"succeeded", v1::SUCCEEDED}, {"failed", v1::FAILED},
      {"cancelled", v1::CANCELLED}, {"Running", v1::RUNNING},
  };
  for (const auto& [name, state] : states) {
    auto parsed =
        ParseCommandLine({"list", "--state", name, "--limit", "7"}, kServer);
    ASSERT_TRUE(parsed.ok()) << name << ": " << parsed.status();
    EXPECT_EQ(std::get<ListOptions>(parsed->command).state, state) << name;
    EXPECT_EQ(std::get<ListOptions>(parsed->command).limit, 7);
  }
}

TEST(ParseCommandLineTest, Best) {
  auto parsed =
      ParseCommandLine({"best", "j1", "--top-k", "3", "--max-avg-bits", "4.5",
                        "--max-size-bytes", "65536"},
                       kServer);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  const auto& best = std::get<BestOptions>(parsed->command);
  EXPECT_EQ(best.job_id, "j1");
  EXPECT_EQ(best.top_k, 3);
  EXPECT_EQ(best.max_avg_bits, 4.5);
  EXPECT_EQ(best.max_size_bytes, 65536);

  auto defaults = ParseCommandLine({"best", "j1"}, kServer);
  ASSERT_TRUE(defaults.ok()) << defaults.status();
  EXPECT_FALSE(std::get<BestOptions>(defaults->command).top_k.has_value());
  EXPECT_EQ(std::get<BestOptions>(defaults->command).max_avg_bits, 0);
  EXPECT_EQ(std::get<BestOptions>(defaults->command).max_size_bytes, 0);
  EXPECT_EQ(std::get<BestOptions>(defaults->command).max_bops, 0);
  EXPECT_FALSE(std::get<BestOptions>(defaults->command).same_model);
  EXPECT_EQ(std::get<BestOptions>(defaults->command).model_sha256, "");
}

TEST(ParseCommandLineTest, BestResolve) {
  auto parsed = ParseCommandLine(
      {"best", "j1", "--resolve", "--max-size-bytes", "4096"}, kServer);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  const auto& best = std::get<BestOptions>(parsed->command);
  EXPECT_TRUE(best.resolve);
  EXPECT_EQ(best.job_id, "j1");
  EXPECT_EQ(best.max_size_bytes, 4096);
  auto plain = ParseCommandLine({"best", "j1"}, kServer);
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_FALSE(std::get<BestOptions>(plain->command).resolve);
}

TEST(ParseCommandLineTest, BestAcrossTheModelsJobs) {
  auto same = ParseCommandLine(
      {"best", "--same-model", "j1", "--max-bops", "2.5e8"}, kServer);
  ASSERT_TRUE(same.ok()) << same.status();
  const auto& best = std::get<BestOptions>(same->command);
  EXPECT_EQ(best.job_id, "j1");
  EXPECT_TRUE(best.same_model);
  EXPECT_EQ(best.max_bops, 2.5e8);
  EXPECT_EQ(best.model_sha256, "");

  // A model hash replaces the job id; it is sent lowercase, as stored.
  const std::string hash(64, 'a');
  auto by_hash = ParseCommandLine(
      {"best", "--model-sha256", std::string(64, 'A'), "--top-k", "3"},
      kServer);
  ASSERT_TRUE(by_hash.ok()) << by_hash.status();
  const auto& model = std::get<BestOptions>(by_hash->command);
  EXPECT_EQ(model.job_id, "");
  EXPECT_EQ(model.model_sha256, hash);
  EXPECT_EQ(model.top_k, 3);
}

TEST(ParseCommandLineTest, Help) {
  for (const auto& args : std::vector<std::vector<std::string>>{
           {"--help"}, {"-h"}, {"status", "--help"}, {"submit", "--help"}}) {
    auto parsed = ParseCommandLine(args, kServer);
    ASSERT_TRUE(parsed.ok()) << args[0] << ": " << parsed.status();
    EXPECT_THAT(parsed->help, HasSubstr("Usage: mixq")) << args[0];
    EXPECT_THAT(parsed->help, HasSubstr("Exit codes")) << args[0];
  }
  EXPECT_THAT(ParseCommandLine({"--help"}, kServer)->help, HasSubstr("submit"));
  EXPECT_THAT(ParseCommandLine({"submit", "--help"}, kServer)->help,
              HasSubstr("--calib-size"));
  EXPECT_THAT(ParseCommandLine({"--help"}, kServer)->help, HasSubstr("pareto"));
  for (const char* command : {"submit", "eval"}) {
    const std::string help =
        ParseCommandLine({command, "--help"}, kServer)->help;
    for (const char* flag : {"--val-inputs", "--val-labels", "--val-size"}) {
      EXPECT_THAT(help, HasSubstr(flag)) << command;
    }
  }
  EXPECT_THAT(ParseCommandLine({"export", "--help"}, kServer)->help,
              HasSubstr("--policy-id"));
  EXPECT_THAT(ParseCommandLine({"pareto", "--help"}, kServer)->help,
              HasSubstr("--same-model"));
}

struct UsageErrorCase {
  std::vector<std::string> args;
  std::string message;  // a substring of the error
};

TEST(ParseCommandLineTest, UsageErrors) {
  const std::vector<UsageErrorCase> cases = {
      {{}, "a command is required: submit, status"},
      {{"--json"}, "a command is required"},
      {{"frobnicate"}, "frobnicate"},
      {{"status"}, "job is required"},
      {{"status", "a", "b"}, "b"},
      {{"submit", "--inputs", "x", "--labels", "y", "--calib-size", "1",
        "--bits", "8", "--target-avg-bits", "4"},
       "--model is required (or --from-job JOB)"},
      {{"submit", "--model", "m", "--inputs", "x", "--labels", "y", "--bits",
        "8", "--target-avg-bits", "4"},
       "--calib-size is required"},
      {Submit({"--target-avg-bits", "4", "--from-job", "job-1"}),
       "--model: not with --from-job (the job uses job job-1's model"},
      {{"submit", "--from-job", "j", "--calib-size", "5", "--bits", "8",
        "--target-avg-bits", "4"},
       "--calib-size: not with --from-job"},
      {Submit(),
       "one of --target-avg-bits, --target-size-fraction, --target-size-bytes "
       "or --target-bops is required"},
      {Submit({"--target-avg-bits", "4", "--target-size-fraction", "0.5"}),
       "excludes"},
      {Submit({"--target-avg-bits", "4"}, "8,x"),
       "--bits: \"x\" is not an integer"},
      {Submit({"--target-avg-bits", "4"}, "8,,4"),
       "--bits: \"\" is not an integer"},
      {Submit({"--target-avg-bits", "4"}, "8.5"), "--bits"},
      {Submit({"--target-avg-bits", "4", "--normalize", "0.5"}), "--normalize"},
      {Submit({"--target-avg-bits", "4", "--normalize", "0.5,a"}),
       "--normalize"},
      {Submit({"--target-avg-bits", "4", "--normalize", "1,2,3"}),
       "--normalize"},
      {Submit({"--target-avg-bits", "four"}), "--target-avg-bits"},
      {Submit({"--target-avg-bits", "4", "--candidates", "0"}), "--candidates"},
      {Submit({"--target-avg-bits", "4", "--batch-size", "-1"}),
       "--batch-size"},
      {Submit({"--target-avg-bits", "4", "--bogus"}), "--bogus"},
      {Submit({"--target-avg-bits", "4"}, ""), "--bits"},
      {Submit({"--target-avg-bits", "4", "--bits", "4"}), "--bits"},
      {{"status", "a", "list"}, "list"},
      {{"list", "--state", "sleeping"}, "--state"},
      {{"list", "--limit", "x"}, "--limit"},
      {{"best", "j", "--top-k", "0"}, "--top-k"},
      {{"best"}, "best: job is required (or --model-sha256 HASH)"},
      {{"best", "--same-model"}, "best: job is required"},
      {{"best", "j", "--model-sha256", std::string(64, '0')},
       "best: give a job or --model-sha256, not both"},
      {{"best", "--model-sha256", "abc123"},
       "--model-sha256: \"abc123\" is not 64 hex digits"},
      {{"best", "--model-sha256", std::string(63, '0') + "g"},
       "--model-sha256"},
      {{"best", "j", "--max-bops", "0"}, "--max-bops"},
      {{"best", "j", "--same-model=maybe"}, "--same-model"},
      {{"best", "j", "--resolve"},
       "--resolve: give exactly one of --max-avg-bits, --max-size-bytes and "
       "--max-bops"},
      {{"best", "j", "--resolve", "--max-avg-bits", "3", "--max-bops", "1e6"},
       "--resolve: give exactly one"},
      {{"best", "j", "--resolve", "--same-model", "--max-avg-bits", "3"},
       "--resolve: re-solves one job; not with --same-model"},
      {{"best", "--model-sha256", std::string(64, '0'), "--resolve",
        "--max-avg-bits", "3"},
       "--resolve"},
      {Submit({"--target-avg-bits", "4", "--strategy", "greedy"}),
       "--strategy: greedy not in {auto,progressive,uniform,knapsack,hawq}"},
      {Submit({"--target-avg-bits", "4", "--strategy", "Knapsack"}),
       "--strategy"},
      {Submit({"--target-avg-bits", "4", "--selection", "max_index"}),
       "--selection"},
      {Submit({"--target-avg-bits", "4", "--total-finetune-steps", "0"}),
       "--total-finetune-steps"},
      {Submit({"--target-avg-bits", "4", "--hutchinson-samples", "-4"}),
       "--hutchinson-samples"},
      {{"--timeout", "0", "status", "j"}, "--timeout"},
      {Submit({"--target-avg-bits", "4", "--upload", "--server-paths"}),
       "excludes"},
      {{"upload"}, "file is required"},
      {{"upload", "a", "b"}, "b"},
      {{"export"}, "job is required"},
      {{"export", "j", "--format", "tflite"}, "--format"},
      {{"export", "j", "--policy-id"}, "--policy-id"},
      {{"report"}, "job is required"},
      {{"report", "j", "-o"}, "--output"},
      {Submit({"--target-avg-bits", "4", "--val-inputs", "vx.npy"}),
       "--val-inputs: needs --val-labels"},
      {Submit({"--target-avg-bits", "4", "--val-labels", "vy.npy"}),
       "--val-labels: needs --val-inputs"},
      {Submit({"--target-avg-bits", "4", "--val-inputs", "vx.npy",
               "--val-labels", "vy.npy", "--val-size", "100"}),
       "--val-size: give validation files (--val-inputs, --val-labels) or "
       "--val-size, not both"},
      {Submit({"--target-avg-bits", "4", "--val-size", "0"}), "--val-size"},
      {Submit({"--target-avg-bits", "4", "--val-size", "x"}), "--val-size"},
      {{"eval", "--model", "m", "--inputs", "x", "--labels", "y",
        "--calib-size", "1", "--val-labels", "vy"},
       "--val-labels: needs --val-inputs"},
      {{"eval", "--model", "m", "--inputs", "x", "--labels", "y",
        "--calib-size", "1", "--val-inputs", "vx", "--val-labels", "vy",
        "--val-size", "5"},
       "--val-size: give validation files"},
      {{"pareto"}, "pareto: job is required (or --model-sha256 HASH)"},
      {{"pareto", "j", "--model-sha256", std::string(64, '0')},
       "pareto: give a job or --model-sha256, not both"},
      {{"pareto", "--model-sha256", "abc"},
       "--model-sha256: \"abc\" is not 64 hex digits"},
      {{"pareto", "j", "--top-k", "3"}, "--top-k"},
      // Typos are named, with the nearest name.
      {{"sumbit", "--model", "x"},
       "unknown command 'sumbit' (did you mean 'submit'?); commands: submit, "
       "status"},
      {{"zzzzzzzz"}, "unknown command 'zzzzzzzz'; commands: submit"},
      {{"submit", "--modle", "x"},
       "submit: unknown flag --modle (did you mean --model?)"},
      {{"--sever", "h:1", "list"},
       "unknown flag --sever (did you mean --server?)"},
      {{"list", "--jsno"}, "list: unknown flag --jsno (did you mean --json?)"},
      {{"status", "j", "--tiemout=5"},
       "unknown flag --tiemout (did you mean "
       "--timeout?)"},
      {{"export", "j", "-x"}, "export: unknown flag -x"},
      // A host without a port would dial port 0.
      {{"--server", "127.0.0.1", "list"},
       "--server: '127.0.0.1' is not host:port (e.g. 127.0.0.1:50051"},
      {{"--server=h:0", "list"}, "--server: 'h:0' is not host:port"},
      {{"list", "--server", "h:65536"}, "--server: 'h:65536'"},
      {{"--server", ":50051", "list"}, "--server: ':50051'"},
      {{"--server", "[::1]", "list"}, "--server: '[::1]'"},
  };
  for (const UsageErrorCase& c : cases) {
    std::string joined;
    for (const auto& a : c.args) joined += a + " ";
    auto parsed = ParseCommandLine(c.args, kServer);
    ASSERT_FALSE(parsed.ok()) << joined;
    EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument)
        << joined;
    EXPECT_THAT(std::string(parsed.status().message()), HasSubstr(c.message))
        << joined;
  }
}

TEST(ParseCommandLineTest, ServerAddressesGrpcDials) {
  for (const char* address :
       {"127.0.0.1:50051", "[::1]:50051", "mixq.example.com:443",
        "unix:/run/mixq.sock", "dns:///mixq:50051", "ipv4:10.0.0.1:9"}) {
    auto parsed = ParseCommandLine({"--server", address, "list"}, kServer);
    ASSERT_TRUE(parsed.ok()) << address << ": " << parsed.status();
    EXPECT_EQ(parsed->global.server, address);
  }
  // A value that looks like a negative number is a value, not a flag.
  EXPECT_THAT(
      std::string(ParseCommandLine({"best", "j", "--top-k", "-3"}, kServer)
                      .status()
                      .message()),
      HasSubstr("--top-k"));
}

TEST(ParseCommandLineTest, VersionIsOneLine) {
  auto parsed = ParseCommandLine({"--version"}, kServer);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_THAT(parsed->help,
              ::testing::MatchesRegex("mixq [0-9]+\\.[0-9]+\\.[0-9]+\n"));
}

TEST(RunCliTest, UsageErrorExitsTwo) {
  std::ostringstream out;
  std::ostringstream err;
  EXPECT_EQ(RunCli(Submit({"--target-avg-bits", "4"}, "8,x"), out, err),
            kExitUsage);
  EXPECT_EQ(out.str(), "");
  EXPECT_THAT(err.str(), HasSubstr("error: --bits"));
  EXPECT_THAT(err.str(), HasSubstr("mixq --help"));
}

TEST(RunCliTest, HalfAValidationSetExitsTwo) {
  std::ostringstream out;
  std::ostringstream err;
  EXPECT_EQ(
      RunCli(Submit({"--target-avg-bits", "4", "--val-inputs", "v"}), out, err),
      kExitUsage);
  EXPECT_EQ(out.str(), "");
  EXPECT_THAT(err.str(), HasSubstr("error: --val-inputs: needs --val-labels"));
}

TEST(RunCliTest, HelpExitsZero) {
  std::ostringstream out;
  std::ostringstream err;
  EXPECT_EQ(RunCli({"best", "--help"}, out, err), kExitOk);
  EXPECT_THAT(out.str(), HasSubstr("--max-avg-bits"));
  EXPECT_THAT(out.str(), HasSubstr("--same-model"));
  EXPECT_THAT(out.str(), HasSubstr("--model-sha256"));
  EXPECT_EQ(err.str(), "");
}

TEST(RunCliTest, UnreadableFileExitsTwo) {
  std::ostringstream out;
  std::ostringstream err;
  std::vector<std::string> args = Submit({"--target-avg-bits", "4"});
  args[2] = "/nonexistent/model.onnx";
  // The file is read before any connection is made.
  args.insert(args.begin(), {"--server", "127.0.0.1:1"});
  EXPECT_EQ(RunCli(args, out, err), kExitUsage);
  EXPECT_THAT(err.str(), HasSubstr("--model"));
  EXPECT_THAT(err.str(), HasSubstr("/nonexistent/model.onnx"));
}

TEST(RunCliTest, UnreachableServerExitsFour) {
  std::ostringstream out;
  std::ostringstream err;
  EXPECT_EQ(
      RunCli({"--server", "127.0.0.1:1", "status", "job-x", "--timeout", "2"},
             out, err),
      kExitRpcError);
  EXPECT_EQ(out.str(), "");
  EXPECT_THAT(
      err.str(),
      HasSubstr("error: UNAVAILABLE: cannot reach mixq server at 127.0.0.1:1"));
}

TEST(RunCliTest, ServerDefaultsToTheEnvironment) {
  ASSERT_EQ(setenv(kServerEnvVar, "127.0.0.1:1", /*overwrite=*/1), 0);
  std::ostringstream out;
  std::ostringstream err;
  const int code = RunCli({"status", "job-x", "--timeout", "2"}, out, err);
  unsetenv(kServerEnvVar);
  EXPECT_EQ(code, kExitRpcError);
  EXPECT_THAT(err.str(), HasSubstr("cannot reach mixq server at 127.0.0.1:1"));
}

}  // namespace
}  // namespace mixq::client
