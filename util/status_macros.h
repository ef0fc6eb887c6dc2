// Small Status helpers: Debian's Abseil 20220623 has no RETURN_IF_ERROR /
// ASSIGN_OR_RETURN, so mixq keeps its own, here and nowhere else.
#ifndef MIXQ_UTIL_STATUS_MACROS_H_
#define MIXQ_UTIL_STATUS_MACROS_H_

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define MIXQ_STATUS_CONCAT_INNER_(a, b) a##b
#define MIXQ_STATUS_CONCAT_(a, b) MIXQ_STATUS_CONCAT_INNER_(a, b)

// Returns from the enclosing function if `expr` (an absl::Status) is not OK.
#define MIXQ_RETURN_IF_ERROR(expr)               \
  do {                                           \
    ::absl::Status mixq_status_ = (expr);        \
    if (!mixq_status_.ok()) return mixq_status_; \
  } while (0)

// `MIXQ_ASSIGN_OR_RETURN(auto x, MakeX());` declares/assigns `x` from an
// absl::StatusOr<T>, or returns its error status.
#define MIXQ_ASSIGN_OR_RETURN(lhs, rexpr)                                    \
  MIXQ_ASSIGN_OR_RETURN_IMPL_(MIXQ_STATUS_CONCAT_(mixq_statusor_, __LINE__), \
                              lhs, rexpr)

#define MIXQ_ASSIGN_OR_RETURN_IMPL_(statusor, lhs, rexpr) \
  auto statusor = (rexpr);                                \
  if (!statusor.ok()) return statusor.status();           \
  lhs = std::move(statusor).value()

namespace mixq {

// Prefixes a non-OK status's message with `context` ("context: message"),
// keeping its code and payloads. OK stays OK.
absl::Status Annotate(const absl::Status& status, absl::string_view context);

}  // namespace mixq

#endif  // MIXQ_UTIL_STATUS_MACROS_H_
