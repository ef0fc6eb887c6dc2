// Request limits: the most bytes a string field, and the most entries a
// repeated field, of a mixq.v1 request may hold. The service checks every
// request against them before the job manager sees it, so no request can
// store, or have echoed back, more than they allow: a job's name cannot grow
// ListJobs past a client's message limit, and an error quotes at most a
// bounded value. Bytes fields (DataSource.content, UploadArtifactRequest.chunk)
// are files: the message size limit and --max-artifact-bytes bound them.
// Pure functions over protobuf reflection; thread-safe.
#ifndef MIXQ_SERVER_REQUEST_LIMITS_H_
#define MIXQ_SERVER_REQUEST_LIMITS_H_

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "google/protobuf/message.h"

namespace mixq::server {

// The limit of every request field with this (simple) name, in whichever
// request message it appears: bytes for a string, entries for a repeated
// field ("name" covers JobSpec.name, LayerOptions.name and LayerBits.name).
struct FieldLimit {
  absl::string_view field;
  int64_t max;
};
// The table (README's "Request limits" lists it).
absl::Span<const FieldLimit> RequestFieldLimits();
// Fields the table does not name get these.
inline constexpr int64_t kDefaultMaxStringBytes = 256;
inline constexpr int64_t kDefaultMaxEntries = 64;

// OK, or INVALID_ARGUMENT naming the first field over its limit by its path
// in the request ("spec.search.layers[3].name: 300 bytes, above the limit of
// 256"); the value itself is not quoted.
absl::Status CheckRequestLimits(const google::protobuf::Message& request);

// Cuts every string field of `message`, recursively, that is longer than its
// limit down to the limit (the cut marked "…"), for records stored before
// the limits existed.
void ClampToRequestLimits(google::protobuf::Message* message);

// `value` cut to at most `max_bytes` bytes (at a UTF-8 character boundary,
// the cut marked "…"): what an error message may quote of a user's value.
inline constexpr size_t kMaxQuotedBytes = 64;
// The longest error message a reply carries (RPC statuses, Job.error): one
// quoting request values within their limits stays far below it.
inline constexpr size_t kMaxErrorMessageBytes = 4096;
std::string Excerpt(absl::string_view value,
                    size_t max_bytes = kMaxQuotedBytes);

}  // namespace mixq::server

#endif  // MIXQ_SERVER_REQUEST_LIMITS_H_
