// The `mixq` command-line client; see client/cli.h for usage and exit codes.
#include <unistd.h>

#include <algorithm>
#include <iostream>
#include <string>
#include <vector>

#include "client/cli.h"

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  // Terminal detection lives here so that RunCli stays testable with any
  // stream: a terminal gets the updating progress bar unless the user chose.
  const bool user_chose =
      std::find(args.begin(), args.end(), "--tty") != args.end() ||
      std::find(args.begin(), args.end(), "--no-tty") != args.end();
  if (!user_chose && isatty(STDOUT_FILENO)) args.insert(args.begin(), "--tty");
  return mixq::client::RunCli(args, std::cout, std::cerr);
}
