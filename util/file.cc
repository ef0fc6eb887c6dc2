#include "util/file.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <system_error>

#include "absl/strings/str_cat.h"
#include "util/sha256.h"
#include "util/status_macros.h"

namespace mixq {
namespace {

// DigestFile's read size.
constexpr size_t kDigestChunkBytes = size_t{1} << 20;

// The size of the regular file at `path`, with ReadFile's errors.
absl::StatusOr<uintmax_t> RegularFileSize(const std::string& path) {
  std::error_code ec;
  auto status = std::filesystem::status(path, ec);
  if (ec || !std::filesystem::exists(status)) {
    return absl::NotFoundError(absl::StrCat("file not found: ", path));
  }
  if (!std::filesystem::is_regular_file(status)) {
    return absl::InvalidArgumentError(
        absl::StrCat("not a regular file: ", path));
  }
  const auto size = std::filesystem::file_size(path, ec);
  if (ec)
    return absl::InternalError(
        absl::StrCat("cannot stat ", path, ": ", ec.message()));
  return size;
}

absl::Status CannotOpen(const std::string& path) {
  return absl::PermissionDeniedError(
      absl::StrCat("cannot open ", path, ": ", std::strerror(errno)));
}

}  // namespace

absl::StatusOr<std::string> ReadFile(const std::string& path,
                                     size_t max_bytes) {
  MIXQ_ASSIGN_OR_RETURN(const uintmax_t size, RegularFileSize(path));
  if (size > max_bytes) {
    return absl::ResourceExhaustedError(
        absl::StrCat("file ", path, " has ", size,
                     " bytes, more than the limit of ", max_bytes));
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) return CannotOpen(path);
  std::string data(size, '\0');
  in.read(data.data(), static_cast<std::streamsize>(size));
  if (static_cast<size_t>(in.gcount()) != size) {
    return absl::DataLossError(absl::StrCat("short read of ", path));
  }
  return data;
}

absl::Status ReadFileChunks(
    const std::string& path, size_t chunk_bytes,
    absl::FunctionRef<bool(absl::string_view)> consume) {
  MIXQ_ASSIGN_OR_RETURN(const uintmax_t size, RegularFileSize(path));
  std::ifstream in(path, std::ios::binary);
  if (!in) return CannotOpen(path);
  std::string chunk(std::min<uintmax_t>(std::max<size_t>(chunk_bytes, 1), size),
                    '\0');
  for (uintmax_t offset = 0; offset < size;) {
    const size_t want =
        static_cast<size_t>(std::min<uintmax_t>(chunk.size(), size - offset));
    in.read(chunk.data(), static_cast<std::streamsize>(want));
    if (static_cast<size_t>(in.gcount()) != want) {
      return absl::DataLossError(absl::StrCat("short read of ", path));
    }
    offset += want;
    if (!consume(absl::string_view(chunk.data(), want))) break;
  }
  return absl::OkStatus();
}

absl::StatusOr<FileDigest> DigestFile(const std::string& path) {
  Sha256Hasher hasher;
  FileDigest digest;
  MIXQ_RETURN_IF_ERROR(
      ReadFileChunks(path, kDigestChunkBytes, [&](absl::string_view chunk) {
        hasher.Update(chunk);
        digest.size_bytes += chunk.size();
        return true;
      }));
  digest.sha256 = hasher.HexDigest();
  return digest;
}

absl::Status WriteFile(const std::string& path, absl::string_view data) {
  const std::string tmp = absl::StrCat(path, ".tmp");
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) {
      return absl::PermissionDeniedError(
          absl::StrCat("cannot write ", path, ": ", std::strerror(errno)));
    }
    out.write(data.data(), static_cast<std::streamsize>(data.size()));
    if (!out) return absl::DataLossError(absl::StrCat("short write to ", path));
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec)
    return absl::InternalError(
        absl::StrCat("cannot rename to ", path, ": ", ec.message()));
  return absl::OkStatus();
}

absl::StatusOr<std::string> ReadFlagFile(absl::string_view flag,
                                         const std::string& path,
                                         size_t max_bytes) {
  absl::StatusOr<std::string> content = ReadFile(path, max_bytes);
  if (!content.ok()) return Annotate(content.status(), flag);
  return content;
}

}  // namespace mixq
