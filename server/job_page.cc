#include "server/job_page.h"

#include <utility>

#include "google/protobuf/io/coded_stream.h"

namespace mixq::server {
namespace {

// What a job adds to the reply: its tag, its length and itself.
size_t EntryBytes(const v1::Job& job) {
  const size_t size = job.ByteSizeLong();
  return 1 + google::protobuf::io::CodedOutputStream::VarintSize64(size) + size;
}

}  // namespace

bool JobPage::Add(v1::Job job) {
  if (full_) return false;
  size_t entry = EntryBytes(job);
  if (response_.jobs_size() == 0 && entry > max_bytes_) {
    job.clear_spec();
    job.clear_layers();
    if (job.has_final_policy()) job.mutable_final_policy()->clear_layers();
    entry = EntryBytes(job);
  }
  if (response_.jobs_size() > 0 &&
      (response_.jobs_size() >= max_jobs_ || bytes_ + entry > max_bytes_)) {
    full_ = true;
    return false;
  }
  bytes_ += entry;
  *response_.add_jobs() = std::move(job);
  return true;
}

v1::ListJobsResponse JobPage::Finish() && {
  if (full_) {
    response_.set_next_page_token(
        response_.jobs(response_.jobs_size() - 1).id());
  }
  return std::move(response_);
}

}  // namespace mixq::server
