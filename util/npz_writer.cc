#include "util/npz_writer.h"

#include <cstdint>
#include <limits>

#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "util/file.h"
#include "util/status_macros.h"
#include "zlib.h"

namespace mixq {
namespace {

// Zip record signatures and constants (PKWARE APPNOTE 4.3).
constexpr uint32_t kLocalHeader = 0x04034b50;
constexpr uint32_t kCentralHeader = 0x02014b50;
constexpr uint32_t kEndOfCentralDirectory = 0x06054b50;
constexpr uint16_t kVersion = 20;  // 2.0: what a stored member needs
constexpr uint16_t kStored = 0;
// 1980-01-01 00:00 in MS-DOS form, as np.savez writes none of its own.
constexpr uint16_t kDosTime = 0;
constexpr uint16_t kDosDate = (0 << 9) | (1 << 5) | 1;
constexpr uint64_t kMaxZip32 = std::numeric_limits<uint32_t>::max();
constexpr uint64_t kMaxMembers = std::numeric_limits<uint16_t>::max();

void Put16(uint16_t v, std::string* out) {
  out->push_back(static_cast<char>(v & 0xff));
  out->push_back(static_cast<char>(v >> 8));
}

void Put32(uint32_t v, std::string* out) {
  Put16(static_cast<uint16_t>(v & 0xffff), out);
  Put16(static_cast<uint16_t>(v >> 16), out);
}

// The fields local and central headers share, from "version needed" to the
// extra field's length.
void PutCommon(const std::string& file_name, uint32_t crc, uint32_t size,
               std::string* out) {
  Put16(kVersion, out);
  Put16(0, out);  // flags
  Put16(kStored, out);
  Put16(kDosTime, out);
  Put16(kDosDate, out);
  Put32(crc, out);
  Put32(size, out);  // compressed
  Put32(size, out);  // uncompressed
  Put16(static_cast<uint16_t>(file_name.size()), out);
  Put16(0, out);  // extra field length
}

}  // namespace

absl::StatusOr<std::string> EncodeNpz(const std::vector<NpzMember>& members) {
  if (members.size() > kMaxMembers) {
    return absl::ResourceExhaustedError(absl::StrCat(
        members.size(), " arrays; a zip holds at most ", kMaxMembers));
  }
  absl::flat_hash_set<std::string> keys;
  std::string archive;
  std::string directory;
  for (const NpzMember& member : members) {
    if (member.key.empty() || absl::StrContains(member.key, '/') ||
        absl::StrContains(member.key, '\\')) {
      return absl::InvalidArgumentError(absl::StrCat(
          "array key '", member.key, "' is empty or holds a path separator"));
    }
    if (!keys.insert(member.key).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("array key '", member.key, "' is given twice"));
    }
    if (member.npy.size() > kMaxZip32 || archive.size() > kMaxZip32) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "array '", member.key, "' does not fit a zip without ZIP64 (4 GiB)"));
    }
    const std::string file_name = absl::StrCat(member.key, ".npy");
    const uint32_t size = static_cast<uint32_t>(member.npy.size());
    const uint32_t crc = static_cast<uint32_t>(crc32_z(
        crc32_z(0, nullptr, 0),
        reinterpret_cast<const Bytef*>(member.npy.data()), member.npy.size()));
    const uint32_t offset = static_cast<uint32_t>(archive.size());
    Put32(kLocalHeader, &archive);
    PutCommon(file_name, crc, size, &archive);
    archive += file_name;
    archive += member.npy;

    Put32(kCentralHeader, &directory);
    Put16(kVersion, &directory);  // made by
    PutCommon(file_name, crc, size, &directory);
    Put16(0, &directory);  // comment length
    Put16(0, &directory);  // disk number
    Put16(0, &directory);  // internal attributes
    Put32(0, &directory);  // external attributes
    Put32(offset, &directory);
    directory += file_name;
  }
  if (archive.size() + directory.size() > kMaxZip32) {
    return absl::ResourceExhaustedError(
        "the archive does not fit a zip without ZIP64 (4 GiB)");
  }
  const uint32_t directory_offset = static_cast<uint32_t>(archive.size());
  archive += directory;
  Put32(kEndOfCentralDirectory, &archive);
  Put16(0, &archive);  // this disk
  Put16(0, &archive);  // the directory's disk
  Put16(static_cast<uint16_t>(members.size()), &archive);
  Put16(static_cast<uint16_t>(members.size()), &archive);
  Put32(static_cast<uint32_t>(directory.size()), &archive);
  Put32(directory_offset, &archive);
  Put16(0, &archive);  // comment length
  return archive;
}

std::optional<NamedFile> ParseNamedFile(absl::string_view value) {
  const size_t eq = value.find('=');
  if (eq == absl::string_view::npos || eq == 0) return std::nullopt;
  const absl::string_view name = value.substr(0, eq);
  if (absl::StrContains(name, '/')) return std::nullopt;
  return NamedFile{std::string(name), std::string(value.substr(eq + 1))};
}

absl::StatusOr<std::string> PackNamedFiles(const std::vector<NamedFile>& files,
                                           absl::string_view flag) {
  std::vector<NpzMember> members;
  for (const NamedFile& file : files) {
    absl::StatusOr<std::string> bytes = ReadFile(file.path);
    if (!bytes.ok()) return Annotate(bytes.status(), flag);
    members.push_back({file.name, *std::move(bytes)});
  }
  absl::StatusOr<std::string> npz = EncodeNpz(members);
  if (!npz.ok()) return Annotate(npz.status(), flag);
  return npz;
}

}  // namespace mixq
