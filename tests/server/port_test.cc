// A port in use: gRPC 1.51 sets SO_REUSEPORT by default, so a second server
// on a busy port used to start and silently take half of its connections.
// A second mixq server, in-process or a real mixq-server process, must
// instead fail saying the port is in use, and the first keeps serving.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <string>
#include <thread>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/server.h"
#include "tests/support/server_process.h"
#include "util/file.h"

namespace mixq {
namespace {

using ::testing::HasSubstr;

class PortTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::path(::testing::TempDir()) /
           absl::StrCat("mixq_port_", getpid());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  // Whether the first server still answers.
  static bool Serving(testing::ServerProcess& server) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() +
                         std::chrono::seconds(10));
    v1::ListJobsResponse response;
    return server.stub()
        .ListJobs(&context, v1::ListJobsRequest(), &response)
        .ok();
  }

  std::filesystem::path dir_;
};

TEST_F(PortTest, ASecondServerOnAPortInUseFailsSayingSo) {
  testing::ServerProcess first(MIXQ_SERVER_PATH, dir_ / "first",
                               dir_ / "first.log");
  ASSERT_TRUE(first.Start());
  const std::string address = absl::StrCat("127.0.0.1:", first.port());

  // In-process.
  server::ServerOptions options;
  options.listen = address;
  options.data_dir = (dir_ / "second").string();
  auto second = server::Server::Start(options);
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable)
      << second.status();
  EXPECT_THAT(second.status().message(),
              HasSubstr(absl::StrCat("port ", address, " is in use")));
  second = absl::UnknownError("released");

  // A real process: it must exit, non-zero, with the message.
  const std::string log = (dir_ / "third.log").string();
  const pid_t pid = testing::StartProgram(
      MIXQ_SERVER_PATH,
      {"--listen", address, "--data-dir", (dir_ / "third").string()}, log, log);
  ASSERT_GT(pid, 0);
  int status = 0;
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (waitpid(pid, &status, WNOHANG) == 0) {
    if (std::chrono::steady_clock::now() > deadline) {
      ::kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      FAIL() << "a second mixq-server kept running on " << address;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 1);
  EXPECT_THAT(ReadFile(log).value_or(""),
              HasSubstr(absl::StrCat("port ", address, " is in use")));

  EXPECT_TRUE(Serving(first));
  EXPECT_EQ(first.Kill(SIGTERM), 0);
}

}  // namespace
}  // namespace mixq
