// Crash safety, end to end with the real mixq-server binary: a job survives
// SIGKILL at random points and SIGTERM, resumes from its last checkpoint
// (after a step, or inside the fine-tune a SIGTERM stopped), and ends with
// exactly the policy and scores of an uninterrupted run with the same seed.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <iostream>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "proto/mixq.grpc.pb.h"
#include "tests/support/npy.h"
#include "tests/support/onnx_mlp.h"
#include "tests/support/server_process.h"
#include "tests/support/subprocess.h"
#include "util/file.h"

namespace mixq {
namespace {

using Clock = std::chrono::steady_clock;
using ::testing::HasSubstr;
using testing::ServerProcess;

class CrashResumeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::path(::testing::TempDir()) /
           absl::StrCat(
               "mixq_crash_",
               ::testing::UnitTest::GetInstance()->current_test_info()->name(),
               "_", getpid());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override {
    if (!HasFailure() && getenv("MIXQ_KEEP_TEST_DIR") == nullptr)
      std::filesystem::remove_all(dir_);
  }

  // A job of a few seconds on one engine thread: about ten search steps
  // (progressive, the strategy with the most steps to kill it between).
  static v1::SubmitJobRequest Job() {
    v1::SubmitJobRequest request;
    request.set_request_id("crash-test-job");
    v1::JobSpec* spec = request.mutable_spec();
    spec->mutable_model()->set_content(
        testing::MakeMlpOnnx({64, 256, 256, 128, 10}, 3));
    const search::LabeledData data = testing::MakeTeacherData(3000, 64, 10, 4);
    spec->mutable_inputs()->set_content(testing::NpyFloat32(data.inputs));
    spec->mutable_labels()->set_content(testing::NpyInt64(data.labels));
    spec->set_calib_size(600);
    v1::SearchOptions* search = spec->mutable_search();
    for (int b : {8, 6, 5, 4, 3, 2}) search->add_bits(b);
    search->mutable_budget()->set_avg_bits(3);
    search->set_candidates(8);
    search->set_finetune_steps(60);
    search->set_warmup_steps(60);
    search->set_final_finetune_steps(60);
    search->set_seed(11);
    search->set_strategy("progressive");
    return request;
  }

  static v1::Job Submit(ServerProcess& server) {
    grpc::ClientContext context;
    v1::SubmitJobResponse response;
    const grpc::Status status =
        server.stub().SubmitJob(&context, Job(), &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return response.job();
  }

  // Polls until the job is terminal (or 120 s pass).
  static v1::Job WaitDone(ServerProcess& server, const std::string& id) {
    const auto deadline = Clock::now() + std::chrono::seconds(120);
    v1::Job job;
    while (Clock::now() < deadline) {
      job = server.GetJob(id);
      if (job.state() >= v1::SUCCEEDED) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return job;
  }

  static v1::GetResultsResponse Results(ServerProcess& server,
                                        const std::string& id) {
    grpc::ClientContext context;
    v1::GetResultsRequest request;
    request.set_job_id(id);
    v1::GetResultsResponse response;
    const grpc::Status status =
        server.stub().GetResults(&context, request, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return response;
  }

  // The uninterrupted run: its results and how long the job took.
  void RunReference(v1::GetResultsResponse* results, double* seconds) {
    ServerProcess server(MIXQ_SERVER_PATH, dir_ / "reference",
                         dir_ / "reference.log");
    ASSERT_TRUE(server.Start());
    const auto start = Clock::now();
    const v1::Job job = Submit(server);
    const v1::Job done = WaitDone(server, job.id());
    ASSERT_EQ(done.state(), v1::SUCCEEDED) << done.error();
    *seconds = std::chrono::duration<double>(Clock::now() - start).count();
    *results = Results(server, job.id());
    EXPECT_EQ(server.Kill(SIGTERM), 0);
  }

  // Same steps, policies and scores to the bit (timings aside).
  static void ExpectSameResults(const v1::GetResultsResponse& a,
                                const v1::GetResultsResponse& b) {
    const auto same_policy = [](const v1::Policy& x, const v1::Policy& y,
                                const std::string& what) {
      ASSERT_EQ(x.layers_size(), y.layers_size()) << what;
      for (int l = 0; l < x.layers_size(); ++l)
        EXPECT_EQ(x.layers(l).bits(), y.layers(l).bits()) << what;
      EXPECT_EQ(x.loss(), y.loss()) << what;
      EXPECT_EQ(x.accuracy(), y.accuracy()) << what;
      EXPECT_EQ(x.omega(), y.omega()) << what;
      EXPECT_EQ(x.index(), y.index()) << what;
    };
    ASSERT_EQ(a.steps_size(), b.steps_size());
    for (int s = 0; s < a.steps_size(); ++s) {
      const std::string what = absl::StrCat("step ", s);
      ASSERT_EQ(a.steps(s).candidates_size(), b.steps(s).candidates_size())
          << what;
      for (int c = 0; c < a.steps(s).candidates_size(); ++c)
        same_policy(a.steps(s).candidates(c), b.steps(s).candidates(c), what);
      same_policy(a.steps(s).finetuned(), b.steps(s).finetuned(), what);
    }
    same_policy(a.final_policy(), b.final_policy(), "final");
  }

  std::filesystem::path dir_;
};

TEST_F(CrashResumeTest, SigkillAtRandomPointsLosesNothing) {
  v1::GetResultsResponse reference;
  double seconds = 0;
  ASSERT_NO_FATAL_FAILURE(RunReference(&reference, &seconds));
  ASSERT_GE(reference.steps_size(), 4);
  std::cout << "uninterrupted run: " << seconds << " s, "
            << reference.steps_size() << " steps\n";

  const std::filesystem::path log = dir_ / "crash.log";
  ServerProcess server(MIXQ_SERVER_PATH, dir_ / "crash", log);
  ASSERT_TRUE(server.Start());
  const std::string id = Submit(server).id();
  ASSERT_FALSE(id.empty());
  // Kills at random points inside steps: once the job has recorded one or
  // two more steps than at the last kill, after a random fraction of a
  // step's time (so kills land in fine-tuning, scoring or the store write).
  // Keyed to progress rather than wall time, every kill hits a running job
  // however loaded the machine is.
  const int total_steps = reference.steps_size();  // warm-up included
  const double step_seconds = seconds / total_steps;
  std::mt19937 rng(7);
  std::uniform_real_distribution<double> fraction(0.0, 1.0);
  int kills_while_running = 0;
  int last_steps = 0;
  for (int kill = 0; kill < 5; ++kill) {
    const int target =
        std::min(last_steps + 1 + static_cast<int>(rng() % 2), total_steps - 2);
    const auto deadline = Clock::now() + std::chrono::seconds(60);
    while (Clock::now() < deadline && server.GetJob(id).steps_done() < target)
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    std::this_thread::sleep_for(
        std::chrono::duration<double>(fraction(rng) * step_seconds));
    const v1::Job before = server.GetJob(id);
    ASSERT_EQ(server.Kill(SIGKILL), -SIGKILL);
    if (before.state() == v1::RUNNING || before.state() == v1::QUEUED) {
      ++kills_while_running;
      // A kill never loses a recorded step.
      EXPECT_GE(before.steps_done(), last_steps);
      last_steps = before.steps_done();
    }
    ASSERT_TRUE(server.Start());
    // The accepted job is still there, and its recorded steps with it.
    const v1::Job after = server.GetJob(id);
    EXPECT_EQ(after.id(), id);
    if (before.state() != v1::SUCCEEDED) {
      EXPECT_GE(after.steps_done(), before.steps_done());
    }
  }
  const v1::Job done = WaitDone(server, id);
  ASSERT_EQ(done.state(), v1::SUCCEEDED) << done.error();
  ExpectSameResults(Results(server, id), reference);
  // Submitting again (same request id) names the same job.
  EXPECT_EQ(Submit(server).id(), id);
  EXPECT_EQ(server.Kill(SIGTERM), 0);
  EXPECT_EQ(kills_while_running, 5) << "the job finished before the kills";
  const std::string text = ReadFile(log.string()).value_or("");
  EXPECT_THAT(text, HasSubstr("job resumed"));
}

TEST_F(CrashResumeTest, SigtermStopsWithinTheGracePeriodAndTheJobResumes) {
  v1::GetResultsResponse reference;
  double seconds = 0;
  ASSERT_NO_FATAL_FAILURE(RunReference(&reference, &seconds));

  ServerProcess server(MIXQ_SERVER_PATH, dir_ / "term", dir_ / "term.log");
  ASSERT_TRUE(server.Start());
  const std::string id = Submit(server).id();
  // Wait until the search has recorded a step or two.
  const auto deadline = Clock::now() + std::chrono::seconds(60);
  while (Clock::now() < deadline && server.GetJob(id).steps_done() < 2)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  const auto stop = Clock::now();
  EXPECT_EQ(server.Kill(SIGTERM), 0);
  const double stop_seconds =
      std::chrono::duration<double>(Clock::now() - stop).count();
  EXPECT_LT(stop_seconds, 10.0);

  ASSERT_TRUE(server.Start());
  const v1::Job done = WaitDone(server, id);
  ASSERT_EQ(done.state(), v1::SUCCEEDED) << done.error();
  ExpectSameResults(Results(server, id), reference);
  EXPECT_EQ(server.Kill(SIGTERM), 0);
  const std::string text = ReadFile((dir_ / "term.log").string()).value_or("");
  EXPECT_THAT(text, HasSubstr("job resumed"));
}

}  // namespace
}  // namespace mixq
