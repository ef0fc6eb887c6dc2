// fuzz_import_replay: runs the import fuzz target (import_fuzzer.h) over
// files, as the fuzzer would, without libFuzzer or sanitizers. Used by
// ctest on the committed corpus and on libonnx-testdata's models, and to
// reproduce a crasher:
//
//   fuzz_import_replay tests/fuzz/corpus crash-1234
//   fuzz_import_replay --name=model.onnx --skip-missing
//   /usr/share/libonnx-testdata/data
//
// Arguments are files or directories (walked recursively, in sorted order).
// --name=N replays only files named N inside the directories that follow;
// --skip-missing lets the paths that follow be absent (a package not
// installed). Exits 1 for a missing path or unreadable file, after printing
// what it replayed; a contract violation aborts (see RunImport).
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <map>
#include <string>
#include <system_error>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/string_view.h"
#include "tests/fuzz/import_fuzzer.h"
#include "util/file.h"

namespace {

namespace fs = std::filesystem;
using mixq::fuzz::Outcome;

struct Options {
  std::string name;  // only files with this name, in directories
  bool skip_missing = false;
};

// The files under `path` (itself if it is a file), sorted.
std::vector<fs::path> FilesUnder(const fs::path& path, const Options& options,
                                 std::error_code* ec) {
  std::vector<fs::path> files;
  if (!fs::is_directory(path, *ec)) {
    files.push_back(path);
    return files;
  }
  for (fs::recursive_directory_iterator it(path, *ec), end; !*ec && it != end;
       it.increment(*ec)) {
    if (!it->is_regular_file()) continue;
    if (!options.name.empty() && it->path().filename() != options.name) {
      continue;
    }
    files.push_back(it->path());
  }
  std::sort(files.begin(), files.end());
  return files;
}

int Run(const std::vector<std::string>& args) {
  Options options;
  std::map<Outcome, int> counts;
  int errors = 0;
  for (const std::string& arg : args) {
    if (absl::StartsWith(arg, "--name=")) {
      options.name = arg.substr(7);
      continue;
    }
    if (arg == "--skip-missing") {
      options.skip_missing = true;
      continue;
    }
    std::error_code ec;
    if (!fs::exists(arg, ec)) {
      std::fprintf(stderr, "%s: %s\n", arg.c_str(),
                   options.skip_missing ? "absent, skipped" : "not found");
      if (!options.skip_missing) ++errors;
      continue;
    }
    const std::vector<fs::path> files = FilesUnder(arg, options, &ec);
    if (ec) {
      std::fprintf(stderr, "%s: %s\n", arg.c_str(), ec.message().c_str());
      ++errors;
    }
    for (const fs::path& file : files) {
      const auto bytes = mixq::ReadFile(file.string());
      if (!bytes.ok()) {
        std::fprintf(stderr, "%s\n", bytes.status().ToString().c_str());
        ++errors;
        continue;
      }
      ++counts[mixq::fuzz::RunImport(*bytes)];
    }
  }
  std::printf(
      "replayed %d inputs: %d not models, %d rejected, %d imported (too "
      "large to run), %d imported and ran\n",
      counts[Outcome::kNotAModel] + counts[Outcome::kRejected] +
          counts[Outcome::kImported] + counts[Outcome::kRan],
      counts[Outcome::kNotAModel], counts[Outcome::kRejected],
      counts[Outcome::kImported], counts[Outcome::kRan]);
  return errors == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  return Run(std::vector<std::string>(argv + 1, argv + argc));
}
