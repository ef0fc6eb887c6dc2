// The `mixq` command-line client; see client/cli.h for usage and exit codes.
#include <grpc/support/log.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

#include "client/cli.h"

namespace {

// gRPC core's own log lines ("E1207 … ssl_transport_security.cc …") repeat,
// in its words, what the failed call's status says; the CLI explains that
// status (DescribeRpcError). GRPC_VERBOSITY set brings them back.
void DropGrpcLog(gpr_log_func_args*) {}

}  // namespace

int main(int argc, char** argv) {
  if (std::getenv("GRPC_VERBOSITY") == nullptr)
    gpr_set_log_function(DropGrpcLog);
  std::vector<std::string> args(argv + 1, argv + argc);
  // Terminal detection lives here so that RunCli stays testable with any
  // stream: a terminal gets the updating progress bar unless the user chose.
  const bool user_chose =
      std::find(args.begin(), args.end(), "--tty") != args.end() ||
      std::find(args.begin(), args.end(), "--no-tty") != args.end();
  if (!user_chose && isatty(STDOUT_FILENO)) args.insert(args.begin(), "--tty");
  return mixq::client::RunCli(args, std::cout, std::cerr);
}
