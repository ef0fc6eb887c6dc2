#include "server/artifacts.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "server/request_limits.h"
#include "util/sha256.h"
#include "util/status_macros.h"

namespace mixq::server {
namespace {

std::string LimitMessage(size_t max_bytes) {
  return absl::StrCat("the server's limit of ", max_bytes,
                      " bytes (mixq-server --max-artifact-bytes)");
}

}  // namespace

absl::Status CheckStoredArtifact(absl::string_view field,
                                 const std::string& sha256,
                                 absl::string_view data) {
  const std::string actual = Sha256Hex(data);
  if (actual == sha256) return absl::OkStatus();
  return absl::DataLossError(absl::StrCat(field, ": stored artifact ", sha256,
                                          " is damaged (its ", data.size(),
                                          " bytes hash to ", actual, ")"));
}

absl::StatusOr<std::string> ReadVerifiedArtifact(storage::Store* store,
                                                 const std::string& sha256,
                                                 absl::string_view field) {
  MIXQ_ASSIGN_OR_RETURN(std::string data, store->GetArtifact(sha256));
  const absl::Status intact = CheckStoredArtifact(field, sha256, data);
  if (intact.ok()) return data;
  // Content addressing would keep serving the damaged bytes to every job
  // that names them, and skip storing a good copy: drop them instead.
  const absl::Status dropped = store->DeleteArtifact(sha256);
  if (!dropped.ok()) {
    return absl::DataLossError(absl::StrCat(
        intact.message(), "; dropping it failed too: ", dropped.message()));
  }
  return absl::DataLossError(
      absl::StrCat(intact.message(),
                   "; the server dropped it: upload or submit the file "
                   "again"));
}

absl::StatusOr<std::unique_ptr<ArtifactUpload>> ArtifactUpload::Begin(
    storage::Store* store, const v1::ArtifactInfo& info, size_t max_bytes) {
  if (!IsSha256Hex(info.sha256())) {
    return absl::InvalidArgumentError(
        absl::StrCat("info.sha256: \"", Excerpt(info.sha256()),
                     "\" is not a SHA-256 (64 lower-case hex digits)"));
  }
  if (info.size_bytes() <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "info.size_bytes: must be positive, got ", info.size_bytes()));
  }
  if (static_cast<uint64_t>(info.size_bytes()) > max_bytes) {
    return absl::ResourceExhaustedError(
        absl::StrCat("info.size_bytes: ", info.size_bytes(), " bytes is above ",
                     LimitMessage(max_bytes)));
  }
  MIXQ_ASSIGN_OR_RETURN(const std::optional<int64_t> stored,
                        store->ArtifactSize(info.sha256()));
  return std::unique_ptr<ArtifactUpload>(new ArtifactUpload(
      store, info, max_bytes, stored.has_value(), stored.value_or(0)));
}

absl::Status ArtifactUpload::Append(absl::string_view chunk) {
  if (existing_) {
    return absl::InvalidArgumentError(
        absl::StrCat("chunk: artifact ", info_.sha256(),
                     " is stored already; send no chunks"));
  }
  const size_t total = data_.size() + chunk.size();
  if (total > max_bytes_) {
    return absl::ResourceExhaustedError(
        absl::StrCat("chunk: the upload exceeds ", LimitMessage(max_bytes_)));
  }
  if (total > static_cast<uint64_t>(info_.size_bytes())) {
    return absl::InvalidArgumentError(absl::StrCat(
        "chunk: more bytes than info.size_bytes (", info_.size_bytes(), ")"));
  }
  data_.append(chunk.data(), chunk.size());
  return absl::OkStatus();
}

absl::StatusOr<v1::Artifact> ArtifactUpload::Finish() {
  v1::Artifact artifact;
  artifact.set_sha256(info_.sha256());
  artifact.set_size_bytes(existing_ ? stored_size_ : info_.size_bytes());
  artifact.set_existing(existing_);
  if (existing_) return artifact;
  if (data_.size() != static_cast<uint64_t>(info_.size_bytes())) {
    return absl::InvalidArgumentError(absl::StrCat("chunk: received ",
                                                   data_.size(),
                                                   " bytes, but "
                                                   "info.size_bytes is ",
                                                   info_.size_bytes()));
  }
  const std::string actual = Sha256Hex(data_);
  if (actual != info_.sha256()) {
    return absl::DataLossError(
        absl::StrCat("checksum mismatch: info.sha256 is ", info_.sha256(),
                     " but the bytes received hash to ", actual));
  }
  if (absl::Status stored = store_->PutArtifact(actual, data_); !stored.ok()) {
    return stored;
  }
  return artifact;
}

}  // namespace mixq::server
