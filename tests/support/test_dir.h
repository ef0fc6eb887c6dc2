// A fresh directory for the running test, removed when it goes out of scope:
// <TempDir>/mixq_<prefix>_<test name>_<pid>. Header-only; needs gtest.
#ifndef MIXQ_TESTS_SUPPORT_TEST_DIR_H_
#define MIXQ_TESTS_SUPPORT_TEST_DIR_H_

#include <unistd.h>

#include <filesystem>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "gtest/gtest.h"

namespace mixq::testing {

class ScopedTestDir {
 public:
  explicit ScopedTestDir(absl::string_view prefix) {
    path_ = std::filesystem::path(::testing::TempDir()) /
            absl::StrCat(
                "mixq_", prefix, "_",
                ::testing::UnitTest::GetInstance()->current_test_info()->name(),
                "_", getpid());
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~ScopedTestDir() { std::filesystem::remove_all(path_); }
  ScopedTestDir(const ScopedTestDir&) = delete;
  ScopedTestDir& operator=(const ScopedTestDir&) = delete;

  const std::filesystem::path& path() const { return path_; }
  // `name` inside the directory.
  std::string Path(absl::string_view name) const {
    return (path_ / std::string(name)).string();
  }

 private:
  std::filesystem::path path_;
};

}  // namespace mixq::testing

#endif  // MIXQ_TESTS_SUPPORT_TEST_DIR_H_
