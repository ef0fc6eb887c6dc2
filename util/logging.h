// Minimal structured logging to stderr: one line per event,
// `<RFC3339 time> <LEVEL> <message> key=value ...`. Thread-safe.
#ifndef MIXQ_UTIL_LOGGING_H_
#define MIXQ_UTIL_LOGGING_H_

#include <string>
#include <utility>
#include <vector>

#include "absl/strings/string_view.h"

namespace mixq {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3 };

// Messages below `level` are dropped. Default: kInfo.
void SetMinLogLevel(LogLevel level);

using LogFields = std::vector<std::pair<std::string, std::string>>;

// Writes one log line atomically (whole lines never interleave).
void Log(LogLevel level, absl::string_view message,
         const LogFields& fields = {});

}  // namespace mixq

#endif  // MIXQ_UTIL_LOGGING_H_
