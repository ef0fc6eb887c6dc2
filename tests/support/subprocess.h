// Test support: runs an installed program (mixq-run, mixq-quantize,
// mixq-server) as a child process, its stdout and stderr captured through
// files. Header-only; needs GoogleTest.
#ifndef MIXQ_TESTS_SUPPORT_SUBPROCESS_H_
#define MIXQ_TESTS_SUPPORT_SUBPROCESS_H_

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "gtest/gtest.h"
#include "util/file.h"

extern char** environ;

namespace mixq::testing {

struct RunResult {
  int exit_code = -1;  // -1 if it could not start or did not exit normally
  std::string out;
  std::string err;
};

// Starts `program` with `args`, its stdout and stderr written to the files
// `out_path` and `err_path` (the same path for both is fine), appended to
// when `append`, else truncated first. Returns the child's pid, or 0 (with
// a test failure) if it could not start; the caller waits for it.
inline pid_t StartProgram(const std::string& program,
                          const std::vector<std::string>& args,
                          const std::string& out_path,
                          const std::string& err_path, bool append = false) {
  std::vector<std::string> argv_strings = {program};
  argv_strings.insert(argv_strings.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (std::string& s : argv_strings) argv.push_back(s.data());
  argv.push_back(nullptr);
  const int flags = O_WRONLY | O_CREAT | (append ? O_APPEND : O_TRUNC);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, out_path.c_str(),
                                   flags, 0644);
  posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, err_path.c_str(),
                                   flags, 0644);
  pid_t pid = 0;
  const int rc = posix_spawn(&pid, program.c_str(), &actions, nullptr,
                             argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  EXPECT_EQ(rc, 0) << "cannot start " << program;
  return rc == 0 ? pid : 0;
}

// Runs `program` with `args`; `scratch_dir` receives stdout.txt/stderr.txt.
inline RunResult RunProgram(const std::string& program,
                            const std::vector<std::string>& args,
                            const std::string& scratch_dir) {
  const std::string out_path = scratch_dir + "/stdout.txt";
  const std::string err_path = scratch_dir + "/stderr.txt";
  RunResult result;
  const pid_t pid = StartProgram(program, args, out_path, err_path);
  if (pid == 0) return result;
  int status = 0;
  EXPECT_EQ(waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(WIFEXITED(status)) << program << " did not exit normally";
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  result.out = ReadFile(out_path).value_or("");
  result.err = ReadFile(err_path).value_or("");
  return result;
}

// The port a child server writes to `port_file` (its --port-file), polled
// for up to `timeout`. Returns 0, with a test failure, if none appears.
inline int WaitForPortFile(const std::string& port_file,
                           std::chrono::seconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    auto text = ReadFile(port_file);
    int port = 0;
    if (text.ok() &&
        absl::SimpleAtoi(absl::StripAsciiWhitespace(*text), &port) &&
        port > 0) {
      return port;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ADD_FAILURE() << "the server did not write its port to " << port_file;
  return 0;
}

}  // namespace mixq::testing

#endif  // MIXQ_TESTS_SUPPORT_SUBPROCESS_H_
