#include "engine/npz.h"

#include <zip.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "util/status_macros.h"

namespace mixq::engine {
namespace {

constexpr absl::string_view kZipLocalHeaderMagic("PK\x03\x04", 4);
constexpr absl::string_view kZipEndOfCentralDirectoryMagic("PK\x05\x06", 4);
constexpr absl::string_view kNpySuffix = ".npy";
// ReadMember's first buffer; it doubles as the data inflates.
constexpr size_t kInitialReadBytes = size_t{1} << 16;

struct ZipDiscard {
  void operator()(zip_t* archive) const { zip_discard(archive); }
};
struct ZipSourceFree {
  void operator()(zip_source_t* source) const { zip_source_free(source); }
};
struct ZipFileClose {
  void operator()(zip_file_t* file) const { zip_fclose(file); }
};

// A zip_error_t that is finalised (its message string freed) however the
// caller returns.
class ZipError {
 public:
  ZipError() { zip_error_init(&error_); }
  ~ZipError() { zip_error_fini(&error_); }
  ZipError(const ZipError&) = delete;
  ZipError& operator=(const ZipError&) = delete;

  zip_error_t* get() { return &error_; }

 private:
  zip_error_t error_;
};

// `what` plus libzip's description of `error`. Only an allocation failure is
// ours; every other libzip error while reading from memory means the archive
// is bad.
absl::Status ZipStatus(zip_error_t* error, absl::string_view what) {
  const std::string message =
      absl::StrCat(what, " (libzip: ", zip_error_strerror(error), ")");
  if (zip_error_code_zip(error) == ZIP_ER_MEMORY) {
    return absl::ResourceExhaustedError(message);
  }
  return absl::InvalidArgumentError(message);
}

struct Member {
  std::string key;
  zip_uint64_t index;
  zip_uint64_t size;  // uncompressed, as the directory declares it
};

// An archive opened over borrowed bytes, its directory validated.
struct Npz {
  std::unique_ptr<zip_t, ZipDiscard> archive;
  std::vector<Member> members;
};

std::string QuotedKeys(const std::vector<Member>& members) {
  if (members.empty()) return "no arrays";
  return absl::StrJoin(members, ", ", [](std::string* out, const Member& m) {
    absl::StrAppend(out, "'", m.key, "'");
  });
}

absl::StatusOr<Member> ValidateMember(zip_t* archive, zip_uint64_t index) {
  zip_stat_t stat;
  zip_stat_init(&stat);
  if (zip_stat_index(archive, index, 0, &stat) != 0) {
    return ZipStatus(zip_get_error(archive),
                     absl::StrCat("unreadable directory entry ", index));
  }
  constexpr zip_uint64_t kNeeded = ZIP_STAT_NAME | ZIP_STAT_SIZE |
                                   ZIP_STAT_COMP_METHOD |
                                   ZIP_STAT_ENCRYPTION_METHOD;
  if ((stat.valid & kNeeded) != kNeeded) {
    return absl::InvalidArgumentError(
        absl::StrCat("directory entry ", index, " is incomplete"));
  }
  absl::string_view file_name(stat.name);
  const std::string member = absl::StrCat("member '", file_name, "'");
  if (absl::EndsWith(file_name, "/")) {
    return absl::InvalidArgumentError(
        absl::StrCat(member, " is a directory; a .npz holds only .npy files"));
  }
  if (!absl::EndsWith(file_name, kNpySuffix)) {
    return absl::InvalidArgumentError(absl::StrCat(
        member, " is not a .npy file; a .npz holds only .npy files"));
  }
  if (stat.encryption_method != ZIP_EM_NONE) {
    return absl::InvalidArgumentError(
        absl::StrCat(member, " is encrypted, which is not supported"));
  }
  if (stat.comp_method != ZIP_CM_STORE && stat.comp_method != ZIP_CM_DEFLATE) {
    return absl::InvalidArgumentError(
        absl::StrCat(member, " uses compression method ", stat.comp_method,
                     "; only stored (0) and deflated (8) are supported"));
  }
  file_name.remove_suffix(kNpySuffix.size());
  return Member{std::string(file_name), index, stat.size};
}

absl::StatusOr<Npz> OpenNpz(absl::string_view bytes) {
  ZipError error;
  // freep = 0: the source borrows `bytes`, which outlive the archive.
  std::unique_ptr<zip_source_t, ZipSourceFree> source(
      zip_source_buffer_create(bytes.data(), bytes.size(), 0, error.get()));
  if (source == nullptr) {
    return ZipStatus(error.get(), "cannot read the zip archive");
  }
  // ZIP_CHECKCONS compares every local header with its central directory
  // entry, so an archive whose two copies disagree (a classic way to show
  // one tool one content and another tool another) is refused.
  Npz npz;
  npz.archive.reset(zip_open_from_source(
      source.get(), ZIP_RDONLY | ZIP_CHECKCONS, error.get()));
  if (npz.archive == nullptr) {
    // Under ZIP_CHECKCONS libzip refuses repeated names (compared after
    // decoding, so "é" in UTF-8 and in CP437 clash too), without saying
    // which; np.load would silently keep only one of them.
    if (zip_error_code_zip(error.get()) == ZIP_ER_EXISTS) {
      return absl::InvalidArgumentError(
          "two members of the archive have the same name");
    }
    return ZipStatus(error.get(), "not a valid zip archive");
  }
  source.release();  // owned by the archive from here on
  const zip_int64_t count = zip_get_num_entries(npz.archive.get(), 0);
  for (zip_int64_t i = 0; i < count; ++i) {
    MIXQ_ASSIGN_OR_RETURN(Member member, ValidateMember(npz.archive.get(), i));
    npz.members.push_back(std::move(member));
  }
  return npz;
}

absl::StatusOr<std::string> ReadMember(zip_t* archive, const Member& member,
                                       size_t max_bytes) {
  if (member.size > max_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "array '", member.key, "' is ", member.size,
        " bytes uncompressed, more than the limit of ", max_bytes, " bytes"));
  }
  const std::string what = absl::StrCat("array '", member.key, "'");
  std::unique_ptr<zip_file_t, ZipFileClose> file(
      zip_fopen_index(archive, member.index, 0));
  if (file == nullptr) {
    return ZipStatus(zip_get_error(archive),
                     absl::StrCat(what, ": unreadable"));
  }
  // The buffer grows with what inflates, not to the size the directory
  // declares: a 100-byte archive claiming a 2 GB member costs what its data
  // inflates to before it is found out.
  std::string data;
  size_t read = 0;
  while (read < member.size) {
    if (read == data.size()) {
      data.resize(std::min<size_t>(
          member.size, std::max(kInitialReadBytes, 2 * data.size())));
    }
    const zip_int64_t n =
        zip_fread(file.get(), data.data() + read, data.size() - read);
    if (n < 0) {
      return ZipStatus(zip_file_get_error(file.get()),
                       absl::StrCat(what, ": corrupt data"));
    }
    if (n == 0) {
      return absl::InvalidArgumentError(absl::StrCat(what, ": truncated data (",
                                                     read, " of the declared ",
                                                     member.size, " bytes)"));
    }
    read += n;
  }
  // One more read: reaching the end is where libzip checks the CRC, and any
  // byte beyond the declared size means the directory lied about it (we
  // never inflate more than that, so a lying archive cannot blow up memory).
  char beyond = 0;
  const zip_int64_t n = zip_fread(file.get(), &beyond, 1);
  if (n < 0) {
    return ZipStatus(zip_file_get_error(file.get()),
                     absl::StrCat(what, ": corrupt data"));
  }
  if (n > 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, ": inflates to more than its declared ", member.size, " bytes"));
  }
  return data;
}

}  // namespace

bool LooksLikeZip(absl::string_view bytes) {
  return absl::StartsWith(bytes, kZipLocalHeaderMagic) ||
         absl::StartsWith(bytes, kZipEndOfCentralDirectoryMagic);
}

absl::StatusOr<std::vector<std::string>> NpzKeys(absl::string_view bytes,
                                                 absl::string_view name) {
  absl::StatusOr<Npz> npz = OpenNpz(bytes);
  if (!npz.ok()) return Annotate(npz.status(), name);
  std::vector<std::string> keys;
  for (Member& member : npz->members) keys.push_back(std::move(member.key));
  return keys;
}

absl::StatusOr<std::string> ReadNpzArray(absl::string_view bytes,
                                         absl::string_view name,
                                         absl::string_view key,
                                         size_t max_bytes) {
  absl::StatusOr<Npz> npz = OpenNpz(bytes);
  if (!npz.ok()) return Annotate(npz.status(), name);
  for (const Member& member : npz->members) {
    if (member.key != key) continue;
    absl::StatusOr<std::string> data =
        ReadMember(npz->archive.get(), member, max_bytes);
    if (!data.ok()) return Annotate(data.status(), name);
    return data;
  }
  return absl::InvalidArgumentError(
      absl::StrCat(name, ": no array '", key, "' in the .npz archive (it has ",
                   QuotedKeys(npz->members), ")"));
}

}  // namespace mixq::engine
