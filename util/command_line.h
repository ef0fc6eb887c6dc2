// How every mixq program's main() parses its flags with CLI11 (the `mixq`
// client has its own, richer parser: client/cli.h): --help and --version
// print and exit 0, a usage error prints CLI11's message and exits 2.
// Header-only; programs that include it link CLI11::CLI11 and mixq::version
// (which defines MIXQ_VERSION).
#ifndef MIXQ_UTIL_COMMAND_LINE_H_
#define MIXQ_UTIL_COMMAND_LINE_H_

#include <optional>
#include <string>

#include "CLI/CLI.hpp"

namespace mixq::util {

inline constexpr int kExitUsage = 2;

// Parses argv into the options bound to `app`, after adding --version
// ("<program> <version>"). nullopt: go on; else the code main() returns.
inline std::optional<int> ParseFlags(CLI::App& app, const std::string& program,
                                     int argc, char** argv) {
  app.set_version_flag("--version", program + " " + MIXQ_VERSION);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);  // prints help, version or the error
    return code == 0 ? 0 : kExitUsage;
  }
  return std::nullopt;
}

}  // namespace mixq::util

#endif  // MIXQ_UTIL_COMMAND_LINE_H_
