// Server: a running mixq gRPC server — the store, the job manager, the
// service, health checking and reflection — started from ServerOptions.
// Used by mixq-server's main and by integration tests (port 0).
// Thread-safe; Shutdown may be called from any thread.
#ifndef MIXQ_SERVER_SERVER_H_
#define MIXQ_SERVER_SERVER_H_

#include <cstdint>
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
  // Largest file UploadArtifact accepts (it is held in memory while it
  // arrives), and largest file a job reads from a server path; 0 = the
  // largest the store can hold (SQLite's length limit, 1e9 bytes, less
  // 4 KiB).
  int64_t max_artifact_bytes = 0;
  int max_evaluations = 2;  // EvaluatePolicy requests running at once
  // Bearer-token authentication of every mixq.v1.Mixq RPC: the file holding
  // the token (surrounding whitespace ignored). Empty: no authentication.
  // Health checking and reflection stay open either way.
  std::string auth_token_file;
  // TLS: PEM certificate chain and private key, both or neither. Empty:
  // plaintext.
  std::string tls_cert_file;
  std::string tls_key_file;
  // Mutual TLS: PEM CA certificates; clients must present a certificate that
  // chains to them. Requires TLS.
  std::string tls_client_ca_file;
  // The most threads gRPC may use for unary RPCs (a grpc::ResourceQuota);
  // 0 = gRPC's default (unbounded). WatchJob streams hold none.
  int max_rpc_threads = 0;
};

class Server {
 public:
  // Reads the token and TLS files, opens the store, re-queues unfinished jobs,
  // and starts serving. Errors name the flag: INVALID_ARGUMENT for
  // --tls-cert without --tls-key (or the reverse), --tls-client-ca without
  // TLS, an empty token file, or --max-artifact-bytes above what the store
  // can hold; the read error (NOT_FOUND, ...) for a missing token/TLS file;
  // FAILED_PRECONDITION for a bad data dir or database; UNAVAILABLE if the
  // address cannot be bound ("port HOST:PORT is in use" when another socket
  // holds it: SO_REUSEPORT is off, so a second server never shares a port)
  // or the certificate or key is not valid PEM.
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
  // stops the workers (running jobs go back to queued and resume from their
  // last checkpoint at the next start). Idempotent.
  void Shutdown();

  struct Impl;

 private:
  explicit Server(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace mixq::server

#endif  // MIXQ_SERVER_SERVER_H_
