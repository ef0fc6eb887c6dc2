// Server: a running mixq gRPC server — the store, the job manager, the
// service, health checking and reflection — started from ServerOptions.
// Used by mixq-server's main and by integration tests (port 0).
// Thread-safe; Shutdown may be called from any thread.
#ifndef MIXQ_SERVER_SERVER_H_
#define MIXQ_SERVER_SERVER_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace mixq::server {

struct ServerOptions {
  std::string listen = "127.0.0.1:50051";  // host:port; port 0 picks a free one
  std::string data_dir;                    // holds mixq.db; created if missing
  int workers = 1;                         // jobs that run at once
  int max_queued = 64;
  int threads = 0;                    // engine threads per job; 0 = all cores
  int max_message_bytes = 256 << 20;  // largest request accepted
  std::vector<std::string> allow_paths;  // roots for DataSource.server_path
};

class Server {
 public:
  // Opens the store, re-queues unfinished jobs, and starts serving.
  // FAILED_PRECONDITION for a bad data dir or database; UNAVAILABLE if the
  // address cannot be bound.
  static absl::StatusOr<std::unique_ptr<Server>> Start(
      const ServerOptions& options);
  ~Server();  // Shutdown()
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // The port actually bound.
  int port() const;
  // Blocks until Shutdown is called.
  void Wait();
  // Marks health NOT_SERVING, stops accepting RPCs (open streams end),
  // stops the workers (running jobs go back to queued). Idempotent.
  void Shutdown();

  struct Impl;

 private:
  explicit Server(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace mixq::server

#endif  // MIXQ_SERVER_SERVER_H_
