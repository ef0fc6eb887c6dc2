#include "client/usage_check.h"

#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "util/closest_name.h"

namespace mixq::client {
namespace {

std::vector<CLI::App*> Commands(CLI::App& app) {
  return app.get_subcommands([](CLI::App*) { return true; });
}

// Every spelling of `app`'s own flags: --long, -s and --no-long forms.
std::vector<std::string> FlagNames(CLI::App& app) {
  std::vector<std::string> names;
  for (const CLI::Option* option : app.get_options()) {
    for (const std::string& name : option->get_lnames())
      names.push_back(absl::StrCat("--", name));
    for (const std::string& name : option->get_snames())
      names.push_back(absl::StrCat("-", name));
  }
  return names;
}

// " (did you mean 'submit'?)", or nothing without a near name.
std::string DidYouMean(const std::optional<std::string>& name,
                       absl::string_view quote) {
  return name.has_value()
             ? absl::StrCat(" (did you mean ", quote, *name, quote, "?)")
             : "";
}

}  // namespace

absl::Status CheckNames(CLI::App& app, const std::vector<std::string>& args) {
  CLI::App* command = nullptr;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (arg == "--") break;  // what follows is positional
    if (arg.size() > 1 && arg[0] == '-' &&
        !(arg[1] >= '0' && arg[1] <= '9')) {  // not a negative number
      const std::string name = arg.substr(0, arg.find('='));
      const CLI::Option* option =
          command != nullptr ? command->get_option_no_throw(name) : nullptr;
      if (option == nullptr) option = app.get_option_no_throw(name);
      if (option == nullptr) {
        std::vector<std::string> known = FlagNames(app);
        if (command != nullptr) {
          const std::vector<std::string> own = FlagNames(*command);
          known.insert(known.begin(), own.begin(), own.end());
        }
        return absl::InvalidArgumentError(absl::StrCat(
            command != nullptr ? absl::StrCat(command->get_name(), ": ") : "",
            "unknown flag ", name,
            DidYouMean(util::ClosestName(name, known), ""), "; see 'mixq ",
            command != nullptr ? command->get_name() : "",
            command != nullptr ? " " : "", "--help'"));
      }
      // A flag's value is the next word unless given as --flag=value.
      if (option->get_items_expected_max() > 0 && name.size() == arg.size())
        ++i;
      continue;
    }
    if (command != nullptr) continue;  // the command's positional arguments
    std::vector<std::string> names;
    for (CLI::App* candidate : Commands(app)) {
      if (candidate->check_name(arg)) command = candidate;
      names.push_back(candidate->get_name());
    }
    if (command == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown command '", arg, "'",
                       DidYouMean(util::ClosestName(arg, names), "'"),
                       "; commands: ", absl::StrJoin(names, ", ")));
    }
  }
  return absl::OkStatus();
}

}  // namespace mixq::client
