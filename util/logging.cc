#include "util/logging.h"

#include <algorithm>
#include <atomic>
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace mixq {
namespace {

std::atomic<int> g_min_level{static_cast<int>(LogLevel::kInfo)};
absl::Mutex g_log_mutex(absl::kConstInit);

const char* LevelName(LogLevel level) {
  switch (level) {
    case LogLevel::kDebug:
      return "DEBUG";
    case LogLevel::kInfo:
      return "INFO";
    case LogLevel::kWarning:
      return "WARN";
    case LogLevel::kError:
      return "ERROR";
  }
  return "?";
}

}  // namespace

std::string FormatLogValue(absl::string_view value) {
  const size_t size = value.size();
  const bool cut = size > kMaxLogValueBytes;
  if (cut) value = value.substr(0, kMaxLogValueBytes);
  const bool plain = !value.empty() && !cut &&
                     std::none_of(value.begin(), value.end(), [](char c) {
                       return c == ' ' || c == '"' || c == '=' || c == '\\' ||
                              static_cast<unsigned char>(c) < 0x20 || c == 0x7f;
                     });
  if (plain) return std::string(value);
  std::string out = "\"";
  for (char c : value) {
    switch (c) {
      case '"':
      case '\\':
        out.push_back('\\');
        out.push_back(c);
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
          absl::StrAppend(
              &out, "\\x",
              absl::Hex(static_cast<unsigned char>(c), absl::kZeroPad2));
        } else {
          out.push_back(c);
        }
    }
  }
  if (cut) absl::StrAppend(&out, "...(", size, " bytes)");
  out.push_back('"');
  return out;
}

void SetMinLogLevel(LogLevel level) {
  g_min_level.store(static_cast<int>(level));
}

void Log(LogLevel level, absl::string_view message, const LogFields& fields) {
  if (static_cast<int>(level) < g_min_level.load()) return;
  std::string line =
      absl::StrCat(absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", absl::Now(),
                                    absl::UTCTimeZone()),
                   " ", LevelName(level), " ", message);
  for (const auto& [key, value] : fields) {
    absl::StrAppend(&line, " ", key, "=", FormatLogValue(value));
  }
  line.push_back('\n');
  absl::MutexLock lock(&g_log_mutex);
  std::fwrite(line.data(), 1, line.size(), stderr);
  std::fflush(stderr);
}

}  // namespace mixq
