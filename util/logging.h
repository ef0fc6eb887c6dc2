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

// A field value as it appears in a line: as is when it is non-empty plain
// text, else in double quotes with `"` and `\` escaped; control characters
// (newlines included) are escaped as \n, \r, \t or \xNN, so a value from a
// client can never start a line of its own. Values longer than
// kMaxLogValueBytes are cut there, marked "...(N bytes)".
inline constexpr size_t kMaxLogValueBytes = 512;
std::string FormatLogValue(absl::string_view value);

// Writes one log line atomically (whole lines never interleave).
void Log(LogLevel level, absl::string_view message,
         const LogFields& fields = {});

}  // namespace mixq

#endif  // MIXQ_UTIL_LOGGING_H_
