// Poison jobs, end to end with the real mixq-server binary: a job that was
// running each of the two times in a row the process died (killed here with
// SIGKILL, as the OOM killer or a crash would) is failed as quarantined at
// the next start instead of resumed, and the jobs queued behind it run. A
// graceful stop (SIGTERM) between the deaths does not count.
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <iostream>
#include <string>
#include <thread>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "proto/mixq.grpc.pb.h"
#include "tests/support/server_process.h"
#include "tests/support/server_testing.h"
#include "util/file.h"

namespace mixq {
namespace {

using Clock = std::chrono::steady_clock;
using ::testing::HasSubstr;
using testing::ServerProcess;
using ::testing::StartsWith;

constexpr auto kDeadline = std::chrono::seconds(60);

class QuarantineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::path(::testing::TempDir()) /
           absl::StrCat(
               "mixq_quarantine_",
               ::testing::UnitTest::GetInstance()->current_test_info()->name(),
               "_", getpid());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override {
    if (!HasFailure() && getenv("MIXQ_KEEP_TEST_DIR") == nullptr)
      std::filesystem::remove_all(dir_);
  }

  static std::string Submit(ServerProcess& server,
                            const v1::SubmitJobRequest& request) {
    grpc::ClientContext context;
    v1::SubmitJobResponse response;
    const grpc::Status status =
        server.stub().SubmitJob(&context, request, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return response.job().id();
  }

  // Polls until `done(job)` holds (true) or the deadline passes (false).
  template <typename Predicate>
  static bool WaitFor(ServerProcess& server, const std::string& id,
                      Predicate done, v1::Job* job) {
    const auto deadline = Clock::now() + kDeadline;
    while (Clock::now() < deadline) {
      *job = server.GetJob(id);
      if (done(*job)) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return false;
  }

  // Waits until job `id` runs, then kills the server with SIGKILL.
  static void KillWhileRunning(ServerProcess& server, const std::string& id) {
    v1::Job job;
    ASSERT_TRUE(WaitFor(
        server, id, [](const v1::Job& j) { return j.state() == v1::RUNNING; },
        &job))
        << "state " << v1::JobState_Name(job.state());
    // Its warm-up outlasts the test: no step is recorded before the kill.
    EXPECT_EQ(job.steps_done(), 0);
    EXPECT_EQ(server.Kill(SIGKILL), -SIGKILL);
  }

  // A job whose warm-up never ends within the test: it can only be killed.
  static v1::SubmitJobRequest EndlessJob() {
    v1::SubmitJobRequest request = testing::TinyJobRequest();
    testing::MakeEndless(&request);
    request.set_request_id("endless");
    return request;
  }

  std::filesystem::path dir_;
};

TEST_F(QuarantineTest, JobRunningAtTwoDeathsInARowIsFailedAndTheQueueRuns) {
  const std::filesystem::path log = dir_ / "server.log";
  ServerProcess server(MIXQ_SERVER_PATH, dir_ / "data", log);
  ASSERT_TRUE(server.Start());
  const std::string poison = Submit(server, EndlessJob());
  ASSERT_FALSE(poison.empty());

  // Death 1, then a graceful stop: the stop does not count, so the job
  // runs again after it (and after death 2, the first since the stop).
  ASSERT_NO_FATAL_FAILURE(KillWhileRunning(server, poison));
  ASSERT_TRUE(server.Start());
  v1::Job job;
  ASSERT_TRUE(WaitFor(
      server, poison, [](const v1::Job& j) { return j.state() == v1::RUNNING; },
      &job));
  EXPECT_EQ(server.Kill(SIGTERM), 0);
  ASSERT_TRUE(server.Start());
  ASSERT_NO_FATAL_FAILURE(KillWhileRunning(server, poison));
  ASSERT_TRUE(server.Start());
  // A job queued behind it, then death 3 (the second in a row).
  const std::string queued = Submit(server, testing::TinyJobRequest());
  ASSERT_NO_FATAL_FAILURE(KillWhileRunning(server, poison));

  const auto restart = Clock::now();
  ASSERT_TRUE(server.Start());
  job = server.GetJob(poison);
  EXPECT_EQ(job.state(), v1::FAILED);
  EXPECT_THAT(job.error(), StartsWith("stopped the server twice; quarantined"));
  v1::Job other;
  ASSERT_TRUE(WaitFor(
      server, queued,
      [](const v1::Job& j) { return j.state() >= v1::SUCCEEDED; }, &other));
  EXPECT_EQ(other.state(), v1::SUCCEEDED) << other.error();
  std::cout << "queued job done "
            << std::chrono::duration<double>(Clock::now() - restart).count()
            << " s after the restart\n";
  // The quarantined job stays failed across a further restart.
  EXPECT_EQ(server.Kill(SIGTERM), 0);
  ASSERT_TRUE(server.Start());
  EXPECT_EQ(server.GetJob(poison).state(), v1::FAILED);
  EXPECT_EQ(server.Kill(SIGTERM), 0);
  EXPECT_THAT(ReadFile(log.string()).value_or(""),
              HasSubstr("job quarantined"));
}

}  // namespace
}  // namespace mixq
