#include "util/status_macros.h"

#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"

namespace mixq {

absl::Status Annotate(const absl::Status& status, absl::string_view context) {
  if (status.ok()) return status;
  absl::Status annotated(status.code(),
                         absl::StrCat(context, ": ", status.message()));
  // Payloads are how callers tell errors apart (never by their text), so
  // they survive the annotation.
  status.ForEachPayload(
      [&annotated](absl::string_view type_url, const absl::Cord& payload) {
        annotated.SetPayload(type_url, payload);
      });
  return annotated;
}

}  // namespace mixq
