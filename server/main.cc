// mixq-server: serves the mixq gRPC API on an embedded SQLite store.
//   mixq-server --listen 127.0.0.1:50051 --data-dir DIR --workers N
//       [--auth-token-file F] [--tls-cert C --tls-key K [--tls-client-ca CA]]
// SIGINT/SIGTERM shut it down: health turns NOT_SERVING, running jobs stop
// between mini-batches and go back to the queue (they resume from their last
// checkpointed step on the next start), and the process exits within
// --shutdown-grace seconds even if something does not stop.
// Exit codes: 0 after a shutdown (and for --help, --version), 1 when the
// server cannot start, 2 for a usage error.
#include <csignal>
#include <cstdlib>
#include <iostream>
#include <string>
#include <thread>

#include "CLI/CLI.hpp"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "server/server.h"
#include "util/command_line.h"
#include "util/file.h"
#include "util/logging.h"

namespace {

struct Options {
  mixq::server::ServerOptions server;
  std::string port_file;
  double shutdown_grace_seconds = 10;
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
  // Everything the store holds is committed transaction by transaction, so
  // leaving before the shutdown completes loses at most the work since each
  // running job's last checkpoint.
  absl::Notification stopped;
  std::thread stopper([&] {
    (*server)->Shutdown();
    stopped.Notify();
  });
  if (!stopped.WaitForNotificationWithTimeout(
          absl::Seconds(options.shutdown_grace_seconds))) {
    mixq::Log(
        mixq::LogLevel::kWarning,
        "shutdown grace period over; exiting without waiting",
        {{"grace_seconds", absl::StrCat(options.shutdown_grace_seconds)}});
    std::_Exit(0);
  }
  stopper.join();
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
  app.add_option("--max-artifact-bytes", options.server.max_artifact_bytes,
                 "largest file UploadArtifact accepts (held in memory while "
                 "it arrives) or a job reads from a server path, in bytes; "
                 "0 = the largest the store holds (SQLite's limit, 1e9 "
                 "bytes, less 4 KiB); above that the server refuses to start")
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 40))
      ->capture_default_str();
  app.add_option(
      "--allow-path", options.server.allow_paths,
      "directory whose files jobs may name by server path (repeatable)");
  app.add_option("--max-evaluations", options.server.max_evaluations,
                 "EvaluatePolicy requests that may run at once; beyond, "
                 "RESOURCE_EXHAUSTED")
      ->check(CLI::Range(1, 1024))
      ->capture_default_str();
  app.add_option("--shutdown-grace", options.shutdown_grace_seconds,
                 "seconds SIGTERM/SIGINT may take before the process exits "
                 "anyway (jobs resume from their last checkpoint)")
      ->check(CLI::Range(0.0, 3600.0))
      ->capture_default_str();
  app.add_option("--port-file", options.port_file,
                 "write the bound port to this file");
  app.add_option("--auth-token-file", options.server.auth_token_file,
                 "require `authorization: Bearer <token>` on every mixq RPC, "
                 "the token read from this file (health checks stay open)");
  app.add_option("--tls-cert", options.server.tls_cert_file,
                 "serve TLS with this PEM certificate chain (with --tls-key)");
  app.add_option("--tls-key", options.server.tls_key_file,
                 "PEM private key of --tls-cert");
  app.add_option("--tls-client-ca", options.server.tls_client_ca_file,
                 "mutual TLS: require client certificates signed by this PEM "
                 "CA");
  if (const std::optional<int> exit_code =
          mixq::util::ParseFlags(app, "mixq-server", argc, argv)) {
    return *exit_code;
  }
  return Run(options);
}
