#include "server/server.h"

#include <chrono>
#include <filesystem>
#include <system_error>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"
#include "server/job_manager.h"
#include "server/service.h"
#include "storage/store.h"
#include "util/logging.h"
#include "util/status_macros.h"

namespace mixq::server {
namespace {

// Open streams get this long to finish when the server shuts down.
constexpr auto kShutdownGrace = std::chrono::seconds(5);
constexpr char kServiceName[] = "mixq.v1.Mixq";

}  // namespace

struct Server::Impl {
  std::unique_ptr<storage::Store> store;
  std::unique_ptr<JobManager> manager;
  std::unique_ptr<MixqService> service;
  std::unique_ptr<grpc::Server> grpc_server;
  int port = 0;
  absl::Mutex mu;
  bool shut_down ABSL_GUARDED_BY(mu) = false;
};

absl::StatusOr<std::unique_ptr<Server>> Server::Start(
    const ServerOptions& options) {
  if (options.data_dir.empty())
    return absl::InvalidArgumentError("--data-dir: required");
  std::error_code ec;
  std::filesystem::create_directories(options.data_dir, ec);
  if (ec) {
    return absl::FailedPreconditionError(absl::StrCat(
        "cannot create data dir ", options.data_dir, ": ", ec.message()));
  }

  auto impl = std::make_unique<Impl>();
  MIXQ_ASSIGN_OR_RETURN(
      impl->store,
      storage::Store::Open(
          (std::filesystem::path(options.data_dir) / "mixq.db").string()));
  JobManagerOptions manager_options;
  manager_options.workers = options.workers;
  manager_options.max_queued = options.max_queued;
  manager_options.allow_paths = options.allow_paths;
  manager_options.engine_threads = options.threads;
  impl->manager =
      std::make_unique<JobManager>(impl->store.get(), manager_options);
  impl->service = std::make_unique<MixqService>(impl->manager.get());

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  builder.AddListeningPort(options.listen, grpc::InsecureServerCredentials(),
                           &impl->port);
  builder.SetMaxReceiveMessageSize(options.max_message_bytes);
  builder.SetMaxSendMessageSize(options.max_message_bytes);
  builder.RegisterService(impl->service.get());
  impl->grpc_server = builder.BuildAndStart();
  if (impl->grpc_server == nullptr || impl->port == 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen on ", options.listen));
  }
  MIXQ_RETURN_IF_ERROR(impl->manager->Start());
  impl->grpc_server->GetHealthCheckService()->SetServingStatus(kServiceName,
                                                               true);
  impl->grpc_server->GetHealthCheckService()->SetServingStatus(true);
  Log(LogLevel::kInfo, "mixq-server listening",
      {{"address", options.listen},
       {"port", absl::StrCat(impl->port)},
       {"data_dir", options.data_dir},
       {"workers", absl::StrCat(options.workers)}});
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
