// The gRPC-free side of UploadArtifact: one upload's description checked,
// its chunks collected within a size limit, its checksum verified, and the
// file stored content-addressed (storage::Store::PutArtifact), once. And the
// way back: stored artifacts read with their bytes re-hashed, so a blob
// damaged on disk is refused (and dropped) instead of used.
#ifndef MIXQ_SERVER_ARTIFACTS_H_
#define MIXQ_SERVER_ARTIFACTS_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "proto/mixq.pb.h"
#include "storage/store.h"

namespace mixq::server {

// OK if `data` hashes to `sha256`; else DATA_LOSS naming `field` and the
// artifact (the stored bytes no longer match their SHA-256).
absl::Status CheckStoredArtifact(absl::string_view field,
                                 const std::string& sha256,
                                 absl::string_view data);

// The stored artifact `sha256`, its bytes re-hashed: DATA_LOSS naming
// `field` when they no longer hash to `sha256`, and the artifact is dropped
// from the store, so that uploading (or submitting) the file again stores it
// afresh. NOT_FOUND as Store::GetArtifact. Blocks on the store.
absl::StatusOr<std::string> ReadVerifiedArtifact(storage::Store* store,
                                                 const std::string& sha256,
                                                 absl::string_view field);

// One upload in progress. Not thread-safe: one per UploadArtifact call.
// Holds the bytes received so far in memory (at most the limit).
class ArtifactUpload {
 public:
  // Starts the upload `info` describes. Borrows `store`, which must outlive
  // the upload. Errors: INVALID_ARGUMENT naming the field
  // ("info.sha256: ...", "info.size_bytes: ...") for a hash that is not 64
  // lower-case hex digits or a size that is not positive;
  // RESOURCE_EXHAUSTED when info.size_bytes exceeds `max_bytes` (the message
  // gives the limit and --max-artifact-bytes); the store's errors. Blocks on
  // the store.
  static absl::StatusOr<std::unique_ptr<ArtifactUpload>> Begin(
      storage::Store* store, const v1::ArtifactInfo& info, size_t max_bytes);

  ArtifactUpload(const ArtifactUpload&) = delete;
  ArtifactUpload& operator=(const ArtifactUpload&) = delete;

  // The artifact is stored already: no chunk is wanted, Finish may follow.
  bool existing() const { return existing_; }

  // Appends the next chunk. RESOURCE_EXHAUSTED past the limit;
  // INVALID_ARGUMENT past info.size_bytes, or for any chunk of an existing
  // artifact. After an error the upload is unusable.
  absl::Status Append(absl::string_view chunk);

  // Checks and stores what was received; returns the artifact (existing:
  // stored before). INVALID_ARGUMENT if fewer bytes than info.size_bytes
  // arrived; DATA_LOSS if their SHA-256 is not info.sha256 (the message
  // gives both; nothing is stored); the store's errors. Blocks on the store.
  absl::StatusOr<v1::Artifact> Finish();

 private:
  ArtifactUpload(storage::Store* store, const v1::ArtifactInfo& info,
                 size_t max_bytes, bool existing, int64_t stored_size)
      : store_(store),
        info_(info),
        max_bytes_(max_bytes),
        existing_(existing),
        stored_size_(stored_size) {}

  storage::Store* const store_;
  const v1::ArtifactInfo info_;
  const size_t max_bytes_;
  const bool existing_;
  const int64_t stored_size_;  // of an existing artifact
  std::string data_;
};

}  // namespace mixq::server

#endif  // MIXQ_SERVER_ARTIFACTS_H_
