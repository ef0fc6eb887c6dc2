// Test support: a JobManager::Subscriber that records every event it gets,
// for tests of the gRPC-free job manager. Header-only; users link
// mixq::server.
#ifndef MIXQ_TESTS_SUPPORT_RECORDING_SUBSCRIBER_H_
#define MIXQ_TESTS_SUPPORT_RECORDING_SUBSCRIBER_H_

#include <functional>
#include <utility>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "proto/mixq.pb.h"
#include "server/job_manager.h"

namespace mixq::testing {

// Thread-safe. `on_event` (optional) runs for each event, after it is
// recorded, on the manager's thread and under its lock: it must not block
// or call back into the manager.
class RecordingSubscriber : public server::JobManager::Subscriber {
 public:
  explicit RecordingSubscriber(
      std::function<void(const v1::JobEvent&)> on_event = nullptr)
      : on_event_(std::move(on_event)) {}

  void OnEvent(const v1::JobEvent& event) override {
    {
      absl::MutexLock lock(&mu_);
      events_.push_back(event);
    }
    if (on_event_) on_event_(event);
  }

  std::vector<v1::JobEvent> events() const {
    absl::MutexLock lock(&mu_);
    return events_;
  }

  // Whether a terminal event (SUCCEEDED, FAILED, CANCELLED) came.
  bool ended() const {
    absl::MutexLock lock(&mu_);
    for (const v1::JobEvent& event : events_) {
      if (event.state() >= v1::SUCCEEDED) return true;
    }
    return false;
  }

 private:
  const std::function<void(const v1::JobEvent&)> on_event_;
  mutable absl::Mutex mu_;
  std::vector<v1::JobEvent> events_ ABSL_GUARDED_BY(mu_);
};

}  // namespace mixq::testing

#endif  // MIXQ_TESTS_SUPPORT_RECORDING_SUBSCRIBER_H_
