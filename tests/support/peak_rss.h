// Test support: the process's peak resident set size, for tests asserting
// that hostile input (a memory bomb) costs little memory. Header-only.
#ifndef MIXQ_TESTS_SUPPORT_PEAK_RSS_H_
#define MIXQ_TESTS_SUPPORT_PEAK_RSS_H_

#include <sys/resource.h>

#include <cstdint>

namespace mixq::testing {

// The most memory a memory-bomb test may add to the process's peak.
inline constexpr int64_t kBombRssBudgetBytes = int64_t{200} << 20;

// The peak resident set size of this process so far, in bytes (getrusage's
// ru_maxrss, which Linux reports in KiB). It only grows: a test compares it
// before and after the work it measures, which shows that work's cost when
// it exceeds the earlier peak.
inline int64_t PeakRssBytes() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return int64_t{usage.ru_maxrss} * 1024;
}

}  // namespace mixq::testing

#endif  // MIXQ_TESTS_SUPPORT_PEAK_RSS_H_
