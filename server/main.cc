// mixq-server: serves the mixq gRPC API on an embedded SQLite store.
//   mixq-server --listen 127.0.0.1:50051 --data-dir DIR --workers N
// SIGINT/SIGTERM shut it down cleanly: running jobs go back to the queue and
// resume on the next start.
#include <csignal>
#include <iostream>
#include <string>

#include "CLI/CLI.hpp"
#include "absl/strings/str_cat.h"
#include "server/server.h"
#include "util/file.h"
#include "util/logging.h"

namespace {

struct Options {
  mixq::server::ServerOptions server;
  std::string port_file;
};

int Run(const Options& options) {
  // Block the shutdown signals in every thread; the main thread waits for
  // them with sigwait.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  auto server = mixq::server::Server::Start(options.server);
  if (!server.ok()) {
    std::cerr << "mixq-server: " << server.status().message() << "\n";
    return 1;
  }
  if (!options.port_file.empty()) {
    const auto written = mixq::WriteFile(options.port_file,
                                         absl::StrCat((*server)->port(), "\n"));
    if (!written.ok()) {
      std::cerr << "mixq-server: " << written.message() << "\n";
      return 1;
    }
  }
  int signal = 0;
  sigwait(&signals, &signal);
  mixq::Log(mixq::LogLevel::kInfo, "shutting down",
            {{"signal", absl::StrCat(signal)}});
  (*server)->Shutdown();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Options options;
  CLI::App app{"mixq-server: mixed-precision quantization search service"};
  app.add_option("--listen", options.server.listen,
                 "host:port to listen on (port 0 picks a free port)")
      ->capture_default_str();
  app.add_option("--data-dir", options.server.data_dir,
                 "directory of the SQLite store")
      ->required();
  app.add_option("--workers", options.server.workers, "jobs that run at once")
      ->check(CLI::Range(1, 64))
      ->capture_default_str();
  app.add_option("--max-queued", options.server.max_queued,
                 "queued jobs beyond which SubmitJob is RESOURCE_EXHAUSTED")
      ->check(CLI::Range(1, 1000000))
      ->capture_default_str();
  app.add_option("--threads", options.server.threads,
                 "engine threads per job (0 = all cores)")
      ->check(CLI::Range(0, 1024))
      ->capture_default_str();
  app.add_option("--max-message-bytes", options.server.max_message_bytes,
                 "largest request accepted, in bytes")
      ->check(CLI::Range(1 << 20, 2000000000))
      ->capture_default_str();
  app.add_option(
      "--allow-path", options.server.allow_paths,
      "directory whose files jobs may name by server path (repeatable)");
  app.add_option("--port-file", options.port_file,
                 "write the bound port to this file");
  CLI11_PARSE(app, argc, argv);
  return Run(options);
}
