// MIXQ_CHECK: aborts with file:line and a message when one of mixq's own
// invariants is broken. Never for user data (that gets a Status).
// Debian's Abseil 20220623 has no absl/log/check.h.
#ifndef MIXQ_UTIL_CHECK_H_
#define MIXQ_UTIL_CHECK_H_

#include <cstdio>
#include <cstdlib>

#define MIXQ_CHECK(cond, ...)                                                  \
  do {                                                                         \
    if (!(cond)) {                                                             \
      std::fprintf(stderr, "%s:%d: check failed: %s " __VA_OPT__("(%s)") "\n", \
                   __FILE__, __LINE__, #cond __VA_OPT__(, __VA_ARGS__));       \
      std::abort();                                                            \
    }                                                                          \
  } while (0)

#endif  // MIXQ_UTIL_CHECK_H_
