#include "server/request_limits.h"

#include <vector>

#include "absl/strings/str_cat.h"

namespace mixq::server {
namespace {

using google::protobuf::FieldDescriptor;
using google::protobuf::Message;
using google::protobuf::Reflection;

// Sized for what each field holds: identifiers and hashes exactly, names
// generously; together they keep a stored job's spec near 1 MiB at most
// (4096 layers of 256-byte names), so a ListJobs page always has room.
constexpr FieldLimit kLimits[] = {
    {"job_id", 64},      // "job-" and 12 hex digits today
    {"page_token", 64},  // a job id
    {"from_job", 64},    // a job id
    {"request_id", 128},
    {"sha256", 64},  // 64 lower-case hex digits
    {"model_sha256", 64},
    {"artifact_sha256", 64},
    {"policy_id", 32},  // "final" or "step-N"
    {"format", 32},
    {"mode", 32},
    {"strategy", 32},
    {"objective", 32},  // "cross_entropy" or "distill"
    {"selection", 32},
    {"name", 256},  // job and layer names
    {"filename", 1024},
    {"server_path", 4096},  // PATH_MAX
    {"bits", 32},           // candidate bit-widths, each 1..8
    {"activation_levels", 32},
    {"layers", 4096},  // per-layer options or bits
};

// The limit of `field` (bytes of a string, entries of a repeated field).
int64_t LimitOf(const FieldDescriptor& field) {
  for (const FieldLimit& limit : kLimits) {
    if (limit.field == field.name()) return limit.max;
  }
  return field.is_repeated() ? kDefaultMaxEntries : kDefaultMaxStringBytes;
}

bool IsText(const FieldDescriptor& field) {
  return field.type() == FieldDescriptor::TYPE_STRING;
}

absl::Status TooLong(const std::string& path, size_t size, int64_t limit,
                     absl::string_view unit) {
  return absl::InvalidArgumentError(absl::StrCat(
      path, ": ", size, " ", unit, ", above the limit of ", limit));
}

absl::Status CheckMessage(const Message& message, const std::string& prefix) {
  const Reflection& reflection = *message.GetReflection();
  std::vector<const FieldDescriptor*> fields;
  reflection.ListFields(message, &fields);
  for (const FieldDescriptor* field : fields) {
    const std::string path = prefix.empty()
                                 ? field->name()
                                 : absl::StrCat(prefix, ".", field->name());
    const int64_t limit = LimitOf(*field);
    if (field->is_repeated()) {
      const int size = reflection.FieldSize(message, field);
      if (size > limit) return TooLong(path, size, limit, "entries");
      for (int i = 0; i < size; ++i) {
        const std::string element = absl::StrCat(path, "[", i, "]");
        if (field->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) {
          const absl::Status checked = CheckMessage(
              reflection.GetRepeatedMessage(message, field, i), element);
          if (!checked.ok()) return checked;
        } else if (IsText(*field)) {
          std::string scratch;
          const size_t bytes =
              reflection.GetRepeatedStringReference(message, field, i, &scratch)
                  .size();
          if (bytes > static_cast<size_t>(limit)) {
            return TooLong(element, bytes, limit, "bytes");
          }
        }
      }
    } else if (field->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) {
      const absl::Status checked =
          CheckMessage(reflection.GetMessage(message, field), path);
      if (!checked.ok()) return checked;
    } else if (IsText(*field)) {
      std::string scratch;
      const size_t bytes =
          reflection.GetStringReference(message, field, &scratch).size();
      if (bytes > static_cast<size_t>(limit)) {
        return TooLong(path, bytes, limit, "bytes");
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Span<const FieldLimit> RequestFieldLimits() { return kLimits; }

absl::Status CheckRequestLimits(const Message& request) {
  return CheckMessage(request, "");
}

void ClampToRequestLimits(Message* message) {
  const Reflection& reflection = *message->GetReflection();
  std::vector<const FieldDescriptor*> fields;
  reflection.ListFields(*message, &fields);
  for (const FieldDescriptor* field : fields) {
    const size_t limit = static_cast<size_t>(LimitOf(*field));
    if (field->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) {
      if (!field->is_repeated()) {
        ClampToRequestLimits(reflection.MutableMessage(message, field));
        continue;
      }
      for (int i = 0; i < reflection.FieldSize(*message, field); ++i) {
        ClampToRequestLimits(
            reflection.MutableRepeatedMessage(message, field, i));
      }
    } else if (IsText(*field)) {
      if (!field->is_repeated()) {
        const std::string value = reflection.GetString(*message, field);
        if (value.size() > limit) {
          reflection.SetString(message, field, Excerpt(value, limit));
        }
        continue;
      }
      for (int i = 0; i < reflection.FieldSize(*message, field); ++i) {
        const std::string value =
            reflection.GetRepeatedString(*message, field, i);
        if (value.size() > limit) {
          reflection.SetRepeatedString(message, field, i,
                                       Excerpt(value, limit));
        }
      }
    }
  }
}

std::string Excerpt(absl::string_view value, size_t max_bytes) {
  if (value.size() <= max_bytes) return std::string(value);
  constexpr absl::string_view kEllipsis = "…";
  if (max_bytes < kEllipsis.size()) return std::string(kEllipsis);
  size_t cut = max_bytes - kEllipsis.size();
  // Back up to the first byte of a character: protobuf strings and gRPC
  // status messages must stay valid UTF-8.
  while (cut > 0 && (static_cast<unsigned char>(value[cut]) & 0xC0) == 0x80) {
    --cut;
  }
  return absl::StrCat(value.substr(0, cut), kEllipsis);
}

}  // namespace mixq::server
