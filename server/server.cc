#include "server/server.h"

#include <netdb.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <filesystem>
#include <optional>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "grpc/health/v1/health.pb.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"
#include "grpcpp/resource_quota.h"
#include "grpcpp/security/server_credentials.h"
#include "server/auth.h"
#include "server/job_manager.h"
#include "server/reflection_service.h"
#include "server/service.h"
#include "storage/store.h"
#include "util/file.h"
#include "util/logging.h"
#include "util/status_macros.h"

namespace mixq::server {
namespace {

// Open streams get this long to finish when the server shuts down.
constexpr auto kShutdownGrace = std::chrono::seconds(5);
constexpr char kServiceName[] = "mixq.v1.Mixq";
// Certificates, keys and CA bundles are small; refuse anything larger.
constexpr size_t kMaxPemBytes = size_t{1} << 20;

// The listening port's credentials: plaintext, TLS, or mutual TLS (client
// certificates required and verified against --tls-client-ca).
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeCredentials(
    const ServerOptions& options) {
  const bool tls =
      !options.tls_cert_file.empty() || !options.tls_key_file.empty();
  if (!tls) {
    if (!options.tls_client_ca_file.empty()) {
      return absl::InvalidArgumentError(
          "--tls-client-ca: mutual TLS needs --tls-cert and --tls-key too");
    }
    return grpc::InsecureServerCredentials();
  }
  if (options.tls_cert_file.empty() || options.tls_key_file.empty()) {
    return absl::InvalidArgumentError(
        "--tls-cert and --tls-key: give both (the certificate chain and its "
        "private key) or neither");
  }
  grpc::SslServerCredentialsOptions ssl(
      GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
  grpc::SslServerCredentialsOptions::PemKeyCertPair pair;
  MIXQ_ASSIGN_OR_RETURN(
      pair.cert_chain,
      ReadFlagFile("--tls-cert", options.tls_cert_file, kMaxPemBytes));
  MIXQ_ASSIGN_OR_RETURN(
      pair.private_key,
      ReadFlagFile("--tls-key", options.tls_key_file, kMaxPemBytes));
  ssl.pem_key_cert_pairs.push_back(std::move(pair));
  if (!options.tls_client_ca_file.empty()) {
    MIXQ_ASSIGN_OR_RETURN(
        ssl.pem_root_certs,
        ReadFlagFile("--tls-client-ca", options.tls_client_ca_file,
                     kMaxPemBytes));
    ssl.client_certificate_request =
        GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
  }
  return grpc::SslServerCredentials(ssl);
}

// Whether the port of `listen` (host:port, the host a name, an IPv4 address
// or a bracketed IPv6 one) is taken by another socket: gRPC only says that
// it could not bind, so a bind of our own asks why.
bool PortInUse(const std::string& listen) {
  const size_t colon = listen.rfind(':');
  if (colon == std::string::npos) return false;
  std::string host = listen.substr(0, colon);
  const std::string port = listen.substr(colon + 1);
  if (absl::StartsWith(host, "[") && absl::EndsWith(host, "]")) {
    host = host.substr(1, host.size() - 2);
  }
  addrinfo hints = {};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE;
  addrinfo* found = nullptr;
  if (getaddrinfo(host.empty() ? nullptr : host.c_str(), port.c_str(), &hints,
                  &found) != 0) {
    return false;
  }
  const std::unique_ptr<addrinfo, decltype(&freeaddrinfo)> addresses(
      found, &freeaddrinfo);
  for (const addrinfo* a = addresses.get(); a != nullptr; a = a->ai_next) {
    const int fd = socket(a->ai_family, a->ai_socktype, a->ai_protocol);
    if (fd < 0) continue;
    const bool in_use =
        bind(fd, a->ai_addr, a->ai_addrlen) != 0 && errno == EADDRINUSE;
    close(fd);
    if (in_use) return true;
  }
  return false;
}

// Whether `listen` (host:port) names a loopback address.
bool IsLoopback(absl::string_view listen) {
  return absl::StartsWith(listen, "127.") ||
         absl::StartsWith(listen, "localhost:") ||
         absl::StartsWith(listen, "[::1]:");
}

const char* TransportName(const ServerOptions& options) {
  if (options.tls_cert_file.empty()) return "plaintext";
  return options.tls_client_ca_file.empty() ? "tls" : "mutual-tls";
}

}  // namespace

struct Server::Impl {
  std::unique_ptr<storage::Store> store;
  std::unique_ptr<JobManager> manager;
  std::optional<TokenAuthenticator> authenticator;  // borrowed by service
  std::unique_ptr<MixqService> service;
  std::unique_ptr<ReflectionService> reflection_v1;
  std::unique_ptr<grpc::Server> grpc_server;
  int port = 0;
  absl::Mutex mu;
  bool shut_down ABSL_GUARDED_BY(mu) = false;
};

absl::StatusOr<std::unique_ptr<Server>> Server::Start(
    const ServerOptions& options) {
  if (options.data_dir.empty())
    return absl::InvalidArgumentError("--data-dir: required");
  // Flags and files first: a typo should not leave a fresh data dir behind.
  MIXQ_ASSIGN_OR_RETURN(std::shared_ptr<grpc::ServerCredentials> credentials,
                        MakeCredentials(options));
  auto impl = std::make_unique<Impl>();
  if (!options.auth_token_file.empty()) {
    absl::StatusOr<TokenAuthenticator> authenticator =
        TokenAuthenticator::FromFile(options.auth_token_file);
    if (!authenticator.ok()) {
      return Annotate(authenticator.status(), "--auth-token-file");
    }
    impl->authenticator = *std::move(authenticator);
  }
  std::error_code ec;
  std::filesystem::create_directories(options.data_dir, ec);
  if (ec) {
    return absl::FailedPreconditionError(absl::StrCat(
        "cannot create data dir ", options.data_dir, ": ", ec.message()));
  }

  MIXQ_ASSIGN_OR_RETURN(
      impl->store,
      storage::Store::Open(
          (std::filesystem::path(options.data_dir) / "mixq.db").string()));
  const int64_t store_max_bytes = impl->store->max_artifact_bytes();
  if (options.max_artifact_bytes > store_max_bytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("--max-artifact-bytes: ", options.max_artifact_bytes,
                     " is above the largest file the store can hold (",
                     store_max_bytes, " bytes, SQLite's length limit)"));
  }
  if (options.max_artifact_bytes < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--max-artifact-bytes: must not be negative, got ",
                     options.max_artifact_bytes));
  }
  // Files read from server paths are stored as artifacts too.
  const size_t max_file_bytes = static_cast<size_t>(
      options.max_artifact_bytes > 0 ? options.max_artifact_bytes
                                     : store_max_bytes);
  JobManagerOptions manager_options;
  manager_options.workers = options.workers;
  manager_options.max_queued = options.max_queued;
  manager_options.allow_paths = options.allow_paths;
  manager_options.max_artifact_bytes = max_file_bytes;
  manager_options.max_file_bytes = max_file_bytes;
  manager_options.engine_threads = options.threads;
  manager_options.max_evaluations = options.max_evaluations;
  impl->manager =
      std::make_unique<JobManager>(impl->store.get(), manager_options);
  impl->service = std::make_unique<MixqService>(
      impl->manager.get(),
      impl->authenticator ? &*impl->authenticator : nullptr);

  grpc::EnableDefaultHealthCheckService(true);
  // Reflection describes services from protobuf's generated pool, where
  // gRPC's health service (encoded with upb) puts no descriptor. Naming our
  // compiled health.proto keeps the linker from dropping it from the
  // archive, so reflection-driven tools can call Health too.
  grpc::health::v1::HealthCheckRequest::descriptor();
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  // gRPC's plugin serves v1alpha; ours serves v1 and lists the same
  // services: every one this function registers.
  impl->reflection_v1 =
      std::make_unique<ReflectionService>(std::vector<std::string>{
          kServiceName, "grpc.health.v1.Health",
          "grpc.reflection.v1alpha.ServerReflection",
          grpc::reflection::v1::ServerReflection::service_full_name()});
  grpc::ServerBuilder builder;
  // gRPC sets SO_REUSEPORT by default: a second server on a port in use
  // would start and silently take half of its connections.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder.AddListeningPort(options.listen, credentials, &impl->port);
  if (options.max_rpc_threads > 0) {
    grpc::ResourceQuota quota("mixq-server");
    quota.SetMaxThreads(options.max_rpc_threads);
    builder.SetResourceQuota(quota);
  }
  builder.SetMaxReceiveMessageSize(options.max_message_bytes);
  builder.SetMaxSendMessageSize(options.max_message_bytes);
  builder.RegisterService(impl->service.get());
  builder.RegisterService(impl->reflection_v1.get());
  impl->grpc_server = builder.BuildAndStart();
  if (impl->grpc_server == nullptr || impl->port == 0) {
    if (PortInUse(options.listen)) {
      return absl::UnavailableError(absl::StrCat(
          "port ", options.listen,
          " is in use (another mixq-server?); stop it or choose another "
          "--listen port"));
    }
    return absl::UnavailableError(absl::StrCat(
        "cannot listen on ", options.listen,
        options.tls_cert_file.empty()
            ? ""
            : " (or --tls-cert/--tls-key is not a valid PEM certificate "
              "chain and matching key)"));
  }
  MIXQ_RETURN_IF_ERROR(impl->manager->Start());
  impl->grpc_server->GetHealthCheckService()->SetServingStatus(kServiceName,
                                                               true);
  impl->grpc_server->GetHealthCheckService()->SetServingStatus(true);
  Log(LogLevel::kInfo, "mixq-server listening",
      {{"address", options.listen},
       {"port", absl::StrCat(impl->port)},
       {"data_dir", options.data_dir},
       {"workers", absl::StrCat(options.workers)},
       {"transport", TransportName(options)},
       {"auth", impl->authenticator ? "bearer-token" : "none"}});
  if (options.tls_cert_file.empty() && !IsLoopback(options.listen)) {
    Log(LogLevel::kWarning,
        "plaintext beyond loopback: requests and bearer tokens travel "
        "unencrypted (use --tls-cert/--tls-key, or a TLS proxy)",
        {{"address", options.listen}});
  }
  return std::unique_ptr<Server>(new Server(std::move(impl)));
}

Server::Server(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Server::~Server() { Shutdown(); }

int Server::port() const { return impl_->port; }

void Server::Wait() {
  absl::MutexLock lock(&impl_->mu);
  impl_->mu.Await(absl::Condition(&impl_->shut_down));
}

void Server::Shutdown() {
  {
    absl::MutexLock lock(&impl_->mu);
    if (impl_->shut_down) return;
  }
  impl_->grpc_server->GetHealthCheckService()->SetServingStatus(false);
  // Stop the workers first so watch streams receive their jobs' last events,
  // then close the RPC server.
  impl_->manager->Shutdown();
  impl_->grpc_server->Shutdown(std::chrono::system_clock::now() +
                               kShutdownGrace);
  Log(LogLevel::kInfo, "mixq-server stopped");
  absl::MutexLock lock(&impl_->mu);
  impl_->shut_down = true;
}

}  // namespace mixq::server
