// A full disk, without a channel and without root: the store's page cap
// (Store::SetMaxPageCount) makes its writes fail as a full disk does. While
// the disk is full, submissions and uploads are RESOURCE_EXHAUSTED, but
// accepted jobs are neither failed nor reported failed: their writes wait for
// space, and every job completes once space returns. A shutdown ends the
// wait.
#include <atomic>
#include <chrono>
#include <iostream>
#include <memory>
#include <string>
#include <thread>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/job_manager.h"
#include "storage/store.h"
#include "tests/support/full_disk_vfs.h"
#include "tests/support/npy.h"
#include "tests/support/onnx_mlp.h"
#include "tests/support/recording_subscriber.h"
#include "tests/support/test_dir.h"
#include "util/sha256.h"

namespace mixq::server {
namespace {

using Clock = std::chrono::steady_clock;
constexpr auto kDeadline = std::chrono::seconds(60);
constexpr int64_t kNoCap = int64_t{1} << 30;  // pages
// How long the disk stays full once a job waits on it: long enough for
// several retries of the back-off.
constexpr auto kFullFor = std::chrono::seconds(1);

double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// A job of about a second whose checkpoints and exports (tens of KB) need
// new pages at every step; `seed` makes its model (an artifact) its own.
v1::SubmitJobRequest Job(uint64_t seed) {
  v1::SubmitJobRequest request;
  v1::JobSpec* spec = request.mutable_spec();
  spec->mutable_model()->set_content(
      testing::MakeMlpOnnx({32, 128, 128, 10}, seed));
  const search::LabeledData data = testing::MakeTeacherData(400, 32, 10, 5);
  spec->mutable_inputs()->set_content(testing::NpyFloat32(data.inputs));
  spec->mutable_labels()->set_content(testing::NpyInt64(data.labels));
  spec->set_calib_size(100);
  v1::SearchOptions* search = spec->mutable_search();
  for (int b : {8, 6, 4, 3, 2}) search->add_bits(b);
  search->mutable_budget()->set_avg_bits(3);
  search->set_finetune_steps(10);
  search->set_strategy("progressive");
  return request;
}

class DiskFullTest : public ::testing::Test {
 protected:
  void SetUp() override {
    vfs_.SetFull(false);
    auto store = storage::Store::Open(dir_.Path("mixq.db"));
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = *std::move(store);
  }

  // Fills the disk: no write that needs a new page succeeds.
  void Fill() { ASSERT_TRUE(store_->SetMaxPageCount(1).ok()); }
  void Free() { ASSERT_TRUE(store_->SetMaxPageCount(kNoCap).ok()); }

  storage::JobState State(const std::string& id) {
    auto job = store_->GetJob(id);
    EXPECT_TRUE(job.ok()) << job.status();
    return job.ok() ? job->state : storage::JobState::kFailed;
  }

  // Polls until `done()` or the deadline; whether it came.
  template <typename Predicate>
  static bool WaitFor(Predicate done) {
    const auto deadline = Clock::now() + kDeadline;
    while (Clock::now() < deadline) {
      if (done()) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return false;
  }

  // Before the store opens, so that it writes through the VFS.
  testing::FullDiskVfs& vfs_ = testing::FullDiskVfs::Install();
  testing::ScopedTestDir dir_{"disk_full"};
  std::unique_ptr<storage::Store> store_;
};

// The disk fills once the running job has recorded its first step, with a
// second job queued: neither fails, a new submission or upload is refused,
// and both complete (every kept policy with its export) once space returns.
TEST_F(DiskFullTest, AcceptedJobsWaitForSpaceAndComplete) {
  JobManagerOptions options;
  options.workers = 1;
  options.engine_threads = 1;
  JobManager manager(store_.get(), options);
  auto first = manager.Submit(Job(1));
  ASSERT_TRUE(first.ok()) << first.status();
  auto second = manager.Submit(Job(2));
  ASSERT_TRUE(second.ok()) << second.status();
  const std::string running = first->job.id();
  const std::string queued = second->job.id();

  // The disk fills right after the first job's first recorded step.
  std::atomic<bool> filled{false};
  storage::Store* store = store_.get();
  auto running_watcher = std::make_shared<testing::RecordingSubscriber>(
      [&filled, store](const v1::JobEvent& event) {
        if (!event.policy_id().empty() && !filled.exchange(true))
          (void)store->SetMaxPageCount(1);
      });
  auto queued_watcher = std::make_shared<testing::RecordingSubscriber>();
  ASSERT_TRUE(manager.Subscribe(running, running_watcher).ok());
  ASSERT_TRUE(manager.Subscribe(queued, queued_watcher).ok());
  const auto start = Clock::now();
  ASSERT_TRUE(manager.Start().ok());

  ASSERT_TRUE(WaitFor([&] { return manager.waiting_for_disk() > 0; }))
      << "no write waited for the full disk";
  const auto full = Clock::now();
  std::cout << "disk full " << SecondsSince(start)
            << " s after start; held full for "
            << std::chrono::duration<double>(kFullFor).count() << " s\n";
  const auto refused = manager.Submit(Job(3));
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted)
      << refused.status();
  // An upload too: its bytes have nowhere to go.
  const std::string file(size_t{64} << 10, 'u');
  v1::ArtifactInfo info;
  info.set_sha256(Sha256Hex(file));
  info.set_size_bytes(static_cast<int64_t>(file.size()));
  auto upload = manager.BeginUpload(info);
  ASSERT_TRUE(upload.ok()) << upload.status();
  ASSERT_TRUE((*upload)->Append(file).ok());
  const auto uploaded = (*upload)->Finish();
  EXPECT_EQ(uploaded.status().code(), absl::StatusCode::kResourceExhausted)
      << uploaded.status();
  std::this_thread::sleep_for(kFullFor);
  // Nothing failed, in the store or in what the watchers heard.
  EXPECT_EQ(State(running), storage::JobState::kRunning);
  EXPECT_EQ(State(queued), storage::JobState::kQueued);
  EXPECT_FALSE(running_watcher->ended());
  EXPECT_FALSE(queued_watcher->ended());
  EXPECT_GT(manager.waiting_for_disk(), 0);

  Free();
  const auto freed = Clock::now();
  // The store records a job's end before its watchers hear of it.
  ASSERT_TRUE(WaitFor([&] {
    return storage::IsTerminal(State(running)) &&
           storage::IsTerminal(State(queued)) && running_watcher->ended() &&
           queued_watcher->ended();
  }));
  std::cout << "both jobs done " << SecondsSince(freed)
            << " s after space returned (full for "
            << SecondsSince(full) - SecondsSince(freed) << " s)\n";
  for (const std::string& id : {running, queued}) {
    auto job = store_->GetJob(id);
    ASSERT_TRUE(job.ok());
    EXPECT_EQ(job->state, storage::JobState::kSucceeded) << id << job->error;
    auto steps = store_->GetSteps(id);
    ASSERT_TRUE(steps.ok()) << steps.status();
    EXPECT_EQ(static_cast<int>(steps->size()), job->steps_done + 1) << id;
    for (const storage::StepRecord& step : *steps)
      EXPECT_FALSE(step.finetuned.export_sha256.empty()) << id << step.step;
    EXPECT_FALSE(job->export_sha256.empty()) << id;
  }
  for (const auto& watcher : {running_watcher, queued_watcher}) {
    const auto events = watcher->events();
    ASSERT_FALSE(events.empty());
    EXPECT_EQ(events.back().state(), v1::SUCCEEDED);
    for (const v1::JobEvent& event : events)
      EXPECT_NE(event.state(), v1::FAILED) << event.error();
  }
  EXPECT_TRUE(manager.Submit(Job(3)).ok());
}

// A shutdown while a job's write waits for space ends the wait at once; the
// job is not failed, and the next manager completes it once space returns.
TEST_F(DiskFullTest, ShutdownEndsTheWaitAndTheJobRunsLater) {
  JobManagerOptions options;
  options.engine_threads = 1;
  std::string id;
  {
    JobManager manager(store_.get(), options);
    auto submitted = manager.Submit(Job(1));
    ASSERT_TRUE(submitted.ok()) << submitted.status();
    id = submitted->job.id();
    Fill();
    ASSERT_TRUE(manager.Start().ok());
    ASSERT_TRUE(WaitFor([&] { return manager.waiting_for_disk() > 0; }));
    const auto stop = Clock::now();
    manager.Shutdown();
    std::cout << "shutdown took " << SecondsSince(stop) << " s\n";
    EXPECT_LT(SecondsSince(stop), 5.0);
  }
  EXPECT_FALSE(storage::IsTerminal(State(id)));
  Free();
  JobManager manager(store_.get(), options);
  ASSERT_TRUE(manager.Start().ok());
  ASSERT_TRUE(WaitFor([&] { return storage::IsTerminal(State(id)); }));
  auto job = store_->GetJob(id);
  ASSERT_TRUE(job.ok());
  EXPECT_EQ(job->state, storage::JobState::kSucceeded) << job->error;
}

// A server starting on a full disk: the previous process died running two
// jobs, one of them for the second time in a row. Start() neither fails nor
// fails a job: the job to resume is queued (its store row says RUNNING until
// its start is written), the quarantine of the other waits for space, and
// once space returns the first job completes and the second is FAILED as
// quarantined. Every write fails here, updates of existing rows too.
TEST_F(DiskFullTest, ServerStartsOnAFullDiskAndItsWritesWaitForSpace) {
  JobManagerOptions options;
  options.workers = 1;
  options.engine_threads = 1;
  std::string resumed;
  std::string quarantined;
  {
    JobManager before(store_.get(), options);  // never started: no workers
    auto first = before.Submit(Job(1));
    ASSERT_TRUE(first.ok()) << first.status();
    auto second = before.Submit(Job(2));
    ASSERT_TRUE(second.ok()) << second.status();
    resumed = first->job.id();
    quarantined = second->job.id();
  }
  // What the dead process left: both running, with one and two unclean
  // starts.
  ASSERT_TRUE(store_->StartJob(resumed, 1).ok());
  for (int i = 0; i < JobManager::kQuarantineStarts; ++i) {
    ASSERT_TRUE(store_->StartJob(quarantined, 1).ok());
  }
  vfs_.SetFull(true);
  ASSERT_FALSE(
      store_->UpdateJobState(resumed, storage::JobState::kRunning, "", 0, 0)
          .ok())
      << "the VFS lets an update of an existing row through";

  JobManager manager(store_.get(), options);
  const absl::Status started = manager.Start();
  ASSERT_TRUE(started.ok()) << started;
  ASSERT_TRUE(WaitFor([&] { return manager.waiting_for_disk() > 0; }));
  std::this_thread::sleep_for(kFullFor);
  EXPECT_EQ(State(resumed), storage::JobState::kRunning);
  EXPECT_EQ(State(quarantined), storage::JobState::kRunning);

  vfs_.SetFull(false);
  ASSERT_TRUE(WaitFor([&] {
    return storage::IsTerminal(State(resumed)) &&
           storage::IsTerminal(State(quarantined));
  }));
  auto job = store_->GetJob(resumed);
  ASSERT_TRUE(job.ok());
  EXPECT_EQ(job->state, storage::JobState::kSucceeded) << job->error;
  job = store_->GetJob(quarantined);
  ASSERT_TRUE(job.ok());
  EXPECT_EQ(job->state, storage::JobState::kFailed);
  EXPECT_THAT(job->error, ::testing::HasSubstr("quarantined"));
}

}  // namespace
}  // namespace mixq::server
