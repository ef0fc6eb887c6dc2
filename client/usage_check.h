// Names on a `mixq` command line checked against the parser's before it
// parses, so that a typo is reported as what it is ("unknown command
// 'sumbit' (did you mean 'submit'?)", "submit: unknown flag --modle (did
// you mean --model?)") instead of as CLI11's follow-on error (an argument
// "not expected", or a required flag "missing"). Thread-safe for distinct
// apps.
#ifndef MIXQ_CLIENT_USAGE_CHECK_H_
#define MIXQ_CLIENT_USAGE_CHECK_H_

#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/status/status.h"

namespace mixq::client {

// INVALID_ARGUMENT naming the first unknown command or flag in `args` (the
// command line without the program name, in order), with the closest known
// name if one is near and the list of commands for an unknown command. The
// first word that is neither a flag nor a flag's value is the command; flags
// are looked up in that command's and then `app`'s own (global flags may
// follow the command). OK when every name is known: CLI11 still checks the
// rest (values, required flags). `app` is only read.
absl::Status CheckNames(CLI::App& app, const std::vector<std::string>& args);

}  // namespace mixq::client

#endif  // MIXQ_CLIENT_USAGE_CHECK_H_
