// JobPage: one ListJobs reply, filled within a count and a byte budget, so
// that however large the stored jobs are the reply fits a client's receive
// limit (gRPC's default is 4 MiB). Not thread-safe: one per ListJobs call.
#ifndef MIXQ_SERVER_JOB_PAGE_H_
#define MIXQ_SERVER_JOB_PAGE_H_

#include <cstddef>

#include "proto/mixq.pb.h"

namespace mixq::server {

// A ListJobs reply's byte budget: 1 MiB under gRPC's default receive limit.
inline constexpr size_t kListJobsPageBytes = size_t{3} << 20;

class JobPage {
 public:
  // At most `max_jobs` jobs (> 0) in at most about `max_bytes` of reply.
  JobPage(int max_jobs, size_t max_bytes)
      : max_jobs_(max_jobs), max_bytes_(max_bytes) {}

  // Adds the next job (jobs come in listing order) and returns true, or
  // returns false when the page is full (the count is reached, or `job`
  // would take the reply past the budget): the page ends before `job`, and
  // its next_page_token continues with it. The first job is always added: a
  // job larger than the whole budget goes without its spec and layers
  // (GetJob has them).
  bool Add(v1::Job job);

  // The reply: the jobs added, and next_page_token when Add refused a job.
  v1::ListJobsResponse Finish() &&;

 private:
  const int max_jobs_;
  const size_t max_bytes_;
  size_t bytes_ = 0;  // the reply's size so far
  bool full_ = false;
  v1::ListJobsResponse response_;
};

}  // namespace mixq::server

#endif  // MIXQ_SERVER_JOB_PAGE_H_
