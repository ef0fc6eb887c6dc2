// The job manager without a channel: the queue cap under concurrent
// submitters, cancelling a queued job, and a job whose checkpoint cannot be
// used starting over.
#include "server/job_manager.h"

#include <chrono>
#include <cmath>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "gtest/gtest.h"
#include "proto/spec_defaults.h"
#include "storage/store.h"
#include "tests/support/recording_subscriber.h"
#include "tests/support/server_testing.h"
#include "tests/support/test_dir.h"

namespace mixq::server {
namespace {

using Clock = std::chrono::steady_clock;
constexpr auto kDeadline = std::chrono::seconds(60);

class JobManagerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto store = storage::Store::Open(dir_.Path("mixq.db"));
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = *std::move(store);
  }

  // Polls the store until job `id` is terminal; its record.
  storage::JobRecord WaitEnded(const std::string& id) {
    const auto deadline = Clock::now() + kDeadline;
    absl::StatusOr<storage::JobRecord> job;
    while (Clock::now() < deadline) {
      job = store_->GetJob(id);
      if (!job.ok() || storage::IsTerminal(job->state)) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    EXPECT_TRUE(job.ok()) << job.status();
    return job.ok() ? *job : storage::JobRecord{};
  }

  testing::ScopedTestDir dir_{"job_manager"};
  std::unique_ptr<storage::Store> store_;
};

// 16 submitters at once on a queue of 4 (the manager not started, so
// nothing leaves it): exactly 4 jobs are accepted, the rest refused.
TEST_F(JobManagerTest, QueueCapHoldsUnderConcurrentSubmitters) {
  constexpr int kSubmitters = 16;
  constexpr int kPerSubmitter = 3;
  JobManagerOptions options;
  options.max_queued = 4;
  JobManager manager(store_.get(), options);
  const v1::SubmitJobRequest request = testing::TinyJobRequest();
  absl::Mutex mu;
  int accepted = 0;
  int refused = 0;
  std::vector<std::string> other_errors;
  std::vector<std::thread> submitters;
  for (int t = 0; t < kSubmitters; ++t) {
    submitters.emplace_back([&] {
      for (int i = 0; i < kPerSubmitter; ++i) {
        auto submitted = manager.Submit(request);
        absl::MutexLock lock(&mu);
        if (submitted.ok()) {
          ++accepted;
        } else if (absl::IsResourceExhausted(submitted.status())) {
          ++refused;
        } else {
          other_errors.push_back(submitted.status().ToString());
        }
      }
    });
  }
  for (std::thread& submitter : submitters) submitter.join();
  EXPECT_TRUE(other_errors.empty()) << other_errors.front();
  EXPECT_EQ(accepted, options.max_queued);
  EXPECT_EQ(refused, kSubmitters * kPerSubmitter - options.max_queued);
  EXPECT_EQ(manager.queued(), options.max_queued);
  storage::ListJobsOptions list;
  list.limit = 1000;
  auto jobs = store_->ListJobs(list);
  ASSERT_TRUE(jobs.ok()) << jobs.status();
  EXPECT_EQ(static_cast<int>(jobs->size()), options.max_queued);
}

// A full queue is refused before the model is read: a submitter learns it
// without the cost of an import, whatever its model.
TEST_F(JobManagerTest, FullQueueIsRefusedBeforeTheModelIsRead) {
  JobManagerOptions options;
  options.max_queued = 1;
  JobManager manager(store_.get(), options);
  ASSERT_TRUE(manager.Submit(testing::TinyJobRequest()).ok());
  v1::SubmitJobRequest broken = testing::TinyJobRequest();
  broken.mutable_spec()->mutable_model()->set_content("not an onnx model");
  const auto refused = manager.Submit(broken);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted)
      << refused.status();
  // With room, the same request is judged on its model; the refusals gave
  // their places back.
  JobManagerOptions roomy = options;
  roomy.max_queued = 2;
  JobManager other(store_.get(), roomy);
  EXPECT_EQ(other.Submit(broken).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(other.Submit(testing::TinyJobRequest()).ok());
  EXPECT_TRUE(other.Submit(testing::TinyJobRequest()).ok());
  EXPECT_EQ(other.Submit(testing::TinyJobRequest()).status().code(),
            absl::StatusCode::kResourceExhausted);
}

// A queued job is cancelled at once: stored CANCELLED, out of the queue,
// its watchers told; cancelling it again is refused.
TEST_F(JobManagerTest, CancelsAQueuedJob) {
  JobManager manager(store_.get(), JobManagerOptions{});
  auto submitted = manager.Submit(testing::TinyJobRequest());
  ASSERT_TRUE(submitted.ok()) << submitted.status();
  const std::string id = submitted->job.id();
  auto watcher = std::make_shared<testing::RecordingSubscriber>();
  ASSERT_TRUE(manager.Subscribe(id, watcher).ok());
  auto cancelled = manager.Cancel(id);
  ASSERT_TRUE(cancelled.ok()) << cancelled.status();
  EXPECT_EQ(cancelled->state(), v1::CANCELLED);
  EXPECT_EQ(manager.queued(), 0);
  auto stored = store_->GetJob(id);
  ASSERT_TRUE(stored.ok());
  EXPECT_EQ(stored->state, storage::JobState::kCancelled);
  ASSERT_FALSE(watcher->events().empty());
  EXPECT_EQ(watcher->events().back().state(), v1::CANCELLED);
  EXPECT_EQ(manager.Cancel(id).status().code(),
            absl::StatusCode::kFailedPrecondition);
  // Nothing is left for the workers.
  ASSERT_TRUE(manager.Start().ok());
  manager.Shutdown();
  stored = store_->GetJob(id);
  ASSERT_TRUE(stored.ok());
  EXPECT_EQ(stored->state, storage::JobState::kCancelled);
}

// The stored spec is what the job runs with: what the request left unset
// reads as the default, and what it set is kept.
TEST_F(JobManagerTest, TheStoredSpecHasEveryDefault) {
  JobManager manager(store_.get(), JobManagerOptions{});
  v1::SubmitJobRequest request = testing::TinyJobRequest();
  request.mutable_spec()->mutable_search()->clear_strategy();
  request.mutable_spec()->mutable_search()->clear_candidates();
  request.mutable_spec()->mutable_search()->set_max_layers(1);
  auto submitted = manager.Submit(request);
  ASSERT_TRUE(submitted.ok()) << submitted.status();
  const v1::SearchOptions& search = submitted->job.spec().search();
  EXPECT_EQ(search.strategy(), spec_defaults::kStrategy);
  EXPECT_EQ(search.candidates(), spec_defaults::kCandidates);
  EXPECT_EQ(search.max_layers(), 1);
  EXPECT_EQ(search.learning_rate(), spec_defaults::kLearningRate);
  EXPECT_EQ(submitted->job.spec().objective(), "cross_entropy");
  // The same after a round trip through the store.
  auto got = manager.GetJob(submitted->job.id());
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->spec().search().strategy(), spec_defaults::kStrategy);
  EXPECT_EQ(got->spec().search().batch_size(), spec_defaults::kBatchSize);
}

// A job the store holds as running but no worker has reported on yet (it
// is loading its model) is described as such, with nothing measured.
TEST_F(JobManagerTest, ARunningJobWithoutEventsIsLoading) {
  JobManager manager(store_.get(), JobManagerOptions{});
  auto submitted = manager.Submit(testing::TinyJobRequest());
  ASSERT_TRUE(submitted.ok()) << submitted.status();
  const std::string id = submitted->job.id();
  ASSERT_TRUE(store_->StartJob(id, 1).ok());
  auto watcher = std::make_shared<testing::RecordingSubscriber>();
  auto snapshot = manager.Subscribe(id, watcher);
  ASSERT_TRUE(snapshot.ok()) << snapshot.status();
  EXPECT_EQ(snapshot->state(), v1::RUNNING);
  EXPECT_EQ(snapshot->phase(), "loading");
  EXPECT_TRUE(std::isnan(snapshot->accuracy()));
  EXPECT_TRUE(std::isnan(snapshot->val_accuracy()));
}

// A job whose stored checkpoint the search cannot use (another version's,
// say) starts over and succeeds rather than failing.
TEST_F(JobManagerTest, UnusableCheckpointStartsOver) {
  JobManager manager(store_.get(), JobManagerOptions{});
  auto submitted = manager.Submit(testing::TinyJobRequest());
  ASSERT_TRUE(submitted.ok()) << submitted.status();
  const std::string id = submitted->job.id();
  ASSERT_TRUE(store_->SaveCheckpoint(id, -1, "not a checkpoint").ok());
  ASSERT_TRUE(manager.Start().ok());
  const storage::JobRecord done = WaitEnded(id);
  EXPECT_EQ(done.state, storage::JobState::kSucceeded) << done.error;
  EXPECT_GT(done.steps_done, 0);
  auto final_policy = store_->GetFinalPolicy(id);
  ASSERT_TRUE(final_policy.ok());
  EXPECT_TRUE(final_policy->has_value());
}

}  // namespace
}  // namespace mixq::server
