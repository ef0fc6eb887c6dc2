// 100 concurrent WatchJob streams on a server whose unary RPCs may use at
// most 8 threads: the streams (callback API) hold no server thread, so unary
// RPCs keep answering while they are open, and every stream receives its
// job's terminal event.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "proto/mixq.grpc.pb.h"
#include "server/server.h"
#include "tests/support/npy.h"
#include "tests/support/onnx_mlp.h"
#include "tests/support/server_testing.h"

namespace mixq::server {
namespace {

constexpr int kWatchers = 100;
// Fewer threads than watchers by far: a sync stream would pin one each.
constexpr int kMaxRpcThreads = 8;
constexpr auto kDeadline = std::chrono::seconds(60);

using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

std::unique_ptr<grpc::ClientContext> Context() {
  auto context = std::make_unique<grpc::ClientContext>();
  context->set_deadline(std::chrono::system_clock::now() + kDeadline);
  return context;
}

v1::SubmitJobRequest TinyJob(int finetune_steps) {
  return testing::TinyJobRequest(finetune_steps);
}

// What the watcher threads report: how many streams saw their first event,
// and each stream's last state and status.
struct WatchLog {
  absl::Mutex mu;
  int attached ABSL_GUARDED_BY(mu) = 0;
  std::vector<v1::JobState> last_state ABSL_GUARDED_BY(mu);
  std::vector<grpc::Status> status ABSL_GUARDED_BY(mu);
};

TEST(WatchersTest, HundredWatchersOnAFewThreads) {
  const std::filesystem::path data_dir =
      std::filesystem::path(::testing::TempDir()) /
      absl::StrCat("mixq_watchers_", getpid());
  std::filesystem::remove_all(data_dir);
  ServerOptions options;
  options.listen = "127.0.0.1:0";
  options.data_dir = data_dir.string();
  options.workers = 1;
  options.threads = 1;
  options.max_rpc_threads = kMaxRpcThreads;
  auto server = Server::Start(options);
  ASSERT_TRUE(server.ok()) << server.status();
  auto channel =
      grpc::CreateChannel(absl::StrCat("127.0.0.1:", (*server)->port()),
                          grpc::InsecureChannelCredentials());
  auto stub = v1::Mixq::NewStub(channel);

  // The one worker runs `blocker` (long) so that `watched` stays queued while
  // the watchers attach; cancelling the blocker then lets it run.
  v1::SubmitJobResponse blocker, watched;
  ASSERT_TRUE(stub->SubmitJob(Context().get(), TinyJob(100000), &blocker).ok());
  ASSERT_TRUE(stub->SubmitJob(Context().get(), TinyJob(5), &watched).ok());
  const std::string job_id = watched.job().id();

  WatchLog log;
  {
    absl::MutexLock lock(&log.mu);
    log.last_state.assign(kWatchers, v1::JOB_STATE_UNSPECIFIED);
    log.status.assign(kWatchers, grpc::Status::OK);
  }
  // Made here so that a failing test can cancel every stream before joining.
  std::vector<std::unique_ptr<grpc::ClientContext>> contexts;
  for (int i = 0; i < kWatchers; ++i) contexts.push_back(Context());
  const Clock::time_point start = Clock::now();
  std::vector<std::thread> watchers;
  for (int i = 0; i < kWatchers; ++i) {
    watchers.emplace_back([&, i] {
      v1::WatchJobRequest request;
      request.set_job_id(job_id);
      auto reader = stub->WatchJob(contexts[i].get(), request);
      v1::JobEvent event;
      bool first = true;
      v1::JobState last = v1::JOB_STATE_UNSPECIFIED;
      while (reader->Read(&event)) {
        last = event.state();
        if (first) {
          first = false;
          absl::MutexLock lock(&log.mu);
          ++log.attached;
        }
      }
      grpc::Status status = reader->Finish();
      absl::MutexLock lock(&log.mu);
      log.last_state[i] = last;
      log.status[i] = std::move(status);
    });
  }
  bool attached = false;
  {
    absl::MutexLock lock(&log.mu);
    auto all_attached = [&log]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(log.mu) {
      return log.attached == kWatchers;
    };
    attached = log.mu.AwaitWithTimeout(absl::Condition(&all_attached),
                                       absl::Seconds(30));
    EXPECT_TRUE(attached) << log.attached << " of " << kWatchers
                          << " streams attached";
  }
  const double attach_seconds = SecondsSince(start);

  // With every stream open, unary RPCs still answer, quickly.
  const Clock::time_point unary_start = Clock::now();
  constexpr int kUnaryCalls = 20;
  for (int i = 0; i < kUnaryCalls && attached; ++i) {
    v1::GetJobRequest request;
    request.set_job_id(job_id);
    v1::Job job;
    const grpc::Status status = stub->GetJob(Context().get(), request, &job);
    EXPECT_TRUE(status.ok()) << status.error_message();
    EXPECT_EQ(job.state(), v1::QUEUED);
  }
  const double unary_ms = SecondsSince(unary_start) * 1000 / kUnaryCalls;

  v1::CancelJobRequest cancel;
  cancel.set_job_id(blocker.job().id());
  v1::Job cancelled;
  EXPECT_TRUE(stub->CancelJob(Context().get(), cancel, &cancelled).ok());
  if (!attached) {
    for (auto& context : contexts) context->TryCancel();
  }
  const Clock::time_point run_start = Clock::now();
  for (std::thread& watcher : watchers) watcher.join();
  const double finish_seconds = SecondsSince(run_start);

  absl::MutexLock lock(&log.mu);
  for (int i = 0; i < kWatchers; ++i) {
    EXPECT_TRUE(log.status[i].ok())
        << "stream " << i << ": " << log.status[i].error_message();
    EXPECT_EQ(log.last_state[i], v1::SUCCEEDED) << "stream " << i;
  }
  std::printf(
      "%d watchers on %d RPC threads: all attached in %.3f s; GetJob %.2f ms "
      "while they were open; job run + every terminal event in %.3f s\n",
      kWatchers, kMaxRpcThreads, attach_seconds, unary_ms, finish_seconds);
  (*server)->Shutdown();
  std::filesystem::remove_all(data_dir);
}

}  // namespace
}  // namespace mixq::server
