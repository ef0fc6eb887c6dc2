// Test support: one real mixq-server process on a data directory, started
// and killed (any signal) by tests of what survives a restart, its port read
// from --port-file, with a gRPC stub to it. Header-only; users link
// mixq::proto, mixq::util and gRPC.
#ifndef MIXQ_TESTS_SUPPORT_SERVER_PROCESS_H_
#define MIXQ_TESTS_SUPPORT_SERVER_PROCESS_H_

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "proto/mixq.grpc.pb.h"
#include "tests/support/subprocess.h"
#include "util/file.h"

namespace mixq::testing {

// One mixq-server process (one worker, one engine thread, plus
// `extra_args`) on a data dir, listening on a free loopback port; its
// stdout/stderr are appended to `log` across restarts.
class ServerProcess {
 public:
  // `server` is the mixq-server binary's path.
  ServerProcess(std::string server, const std::filesystem::path& data_dir,
                const std::filesystem::path& log,
                std::vector<std::string> extra_args = {})
      : server_(std::move(server)),
        data_dir_(data_dir),
        log_(log),
        extra_args_(std::move(extra_args)) {}
  ServerProcess(const ServerProcess&) = delete;
  ServerProcess& operator=(const ServerProcess&) = delete;
  ~ServerProcess() {
    if (pid_ > 0) Kill(SIGKILL);
  }

  // Starts the server and connects; false (with a test failure) if it does
  // not come up within 30 s.
  bool Start() {
    const std::string port_file = (data_dir_ / "port").string();
    std::filesystem::create_directories(data_dir_);
    std::filesystem::remove(port_file);
    std::vector<std::string> args = {"--listen",    "127.0.0.1:0",
                                     "--data-dir",  data_dir_.string(),
                                     "--port-file", port_file,
                                     "--threads",   "1",
                                     "--workers",   "1"};
    args.insert(args.end(), extra_args_.begin(), extra_args_.end());
    pid_ = StartProgram(server_, args, log_.string(), log_.string(),
                        /*append=*/true);
    if (pid_ == 0) return false;
    port_ = WaitForPortFile(port_file, std::chrono::seconds(30));
    if (port_ == 0) return false;
    stub_ = v1::Mixq::NewStub(grpc::CreateChannel(
        absl::StrCat("127.0.0.1:", port_), grpc::InsecureChannelCredentials()));
    return true;
  }

  // Sends `signal` and waits for the process; its exit code (-signal if
  // killed by one).
  int Kill(int signal) {
    stub_.reset();
    ::kill(pid_, signal);
    int status = 0;
    waitpid(pid_, &status, 0);
    pid_ = 0;
    stub_.reset();
    return WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
  }

  v1::Mixq::Stub& stub() { return *stub_; }
  // Job `id` from GetJob (10 s deadline); an empty job and a test failure
  // when the call fails.
  v1::Job GetJob(const std::string& id) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() +
                         std::chrono::seconds(10));
    v1::GetJobRequest request;
    request.set_job_id(id);
    v1::Job job;
    const grpc::Status status = stub_->GetJob(&context, request, &job);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return job;
  }
  int port() const { return port_; }

 private:
  std::string server_;
  std::filesystem::path data_dir_;
  std::filesystem::path log_;
  std::vector<std::string> extra_args_;
  pid_t pid_ = 0;
  int port_ = 0;
  std::unique_ptr<v1::Mixq::Stub> stub_;
};

}  // namespace mixq::testing

#endif  // MIXQ_TESTS_SUPPORT_SERVER_PROCESS_H_
