#include "storage/errors.h"

#include "absl/strings/cord.h"

namespace mixq::storage {

absl::Status DiskFullError(absl::string_view message) {
  absl::Status status = absl::ResourceExhaustedError(message);
  status.SetPayload(kDiskFullPayloadUrl, absl::Cord());
  return status;
}

bool IsDiskFull(const absl::Status& status) {
  return absl::IsResourceExhausted(status) &&
         status.GetPayload(kDiskFullPayloadUrl).has_value();
}

}  // namespace mixq::storage
