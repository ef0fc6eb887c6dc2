// Test support: runs an installed program (mixq-run, mixq-quantize) as a
// child process, its stdout and stderr captured through files. Header-only;
// needs GoogleTest.
#ifndef MIXQ_TESTS_SUPPORT_SUBPROCESS_H_
#define MIXQ_TESTS_SUPPORT_SUBPROCESS_H_

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "gtest/gtest.h"
#include "util/file.h"

extern char** environ;

namespace mixq::testing {

struct RunResult {
  int exit_code = -1;  // -1 if it could not start or did not exit normally
  std::string out;
  std::string err;
};

// Runs `program` with `args`; `scratch_dir` receives stdout.txt/stderr.txt.
inline RunResult RunProgram(const std::string& program,
                            const std::vector<std::string>& args,
                            const std::string& scratch_dir) {
  std::vector<std::string> argv_strings = {program};
  argv_strings.insert(argv_strings.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (std::string& s : argv_strings) argv.push_back(s.data());
  argv.push_back(nullptr);
  const std::string out_path = scratch_dir + "/stdout.txt";
  const std::string err_path = scratch_dir + "/stderr.txt";
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, out_path.c_str(),
                                   O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, err_path.c_str(),
                                   O_WRONLY | O_CREAT | O_TRUNC, 0644);
  RunResult result;
  pid_t pid = 0;
  const int rc = posix_spawn(&pid, program.c_str(), &actions, nullptr,
                             argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  EXPECT_EQ(rc, 0) << "cannot start " << program;
  if (rc != 0) return result;
  int status = 0;
  EXPECT_EQ(waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(WIFEXITED(status)) << program << " did not exit normally";
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  result.out = ReadFile(out_path).value_or("");
  result.err = ReadFile(err_path).value_or("");
  return result;
}

}  // namespace mixq::testing

#endif  // MIXQ_TESTS_SUPPORT_SUBPROCESS_H_
