// ONNX's own conformance cases (libonnx-testdata) run through mixq's importer
// and executor, one test per data directory.
//
// A case is <dir>/<case>/model.onnx plus test_data_set_*/{input,output}_N.pb
// (serialized TensorProtos). mixq models have one graph input, so every graph
// input after the first that is not an initializer becomes an initializer
// holding the data set's input_i.pb (any dtype: int64 ones are constants such
// as Reshape shapes; other types are an import error only if a node reads
// them). Outcomes:
//  - SKIPPED when the importer rejects the model with INVALID_ARGUMENT (the
//    message is recorded) or input_0 / output_0 is not float32;
//  - PASSED when the first graph output matches output_0 in every data set
//    within kAbsTolerance + kRelTolerance * |expected|;
//  - FAILED otherwise: a mismatch, a Forward error on an accepted model, an
//    import error other than INVALID_ARGUMENT, a crash or a hang.
// Each case runs in a forked child so that a crashing kernel fails its case
// instead of the whole run; the parent never runs the engine (so the child
// inherits no OpenMP state) and only reads files and protobufs.
//
// The summary (per operator: cases, ran, passed, failed, skipped; then every
// failed and skipped case with its reason) is printed to stdout and, when
// MIXQ_CONFORMANCE_REPORT names a file, written there for all directories run
// by this process. MIXQ_ONNX_TESTDATA overrides the data root (e.g. a newer
// onnx checkout's onnx/backend/test/data).
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <iostream>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "engine/model.h"
#include "engine/ops.h"
#include "engine/tensor.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "onnx/onnx_pb.h"
#include "util/file.h"

namespace mixq::engine {
namespace {

constexpr char kDefaultDataRoot[] = "/usr/share/libonnx-testdata/data";
constexpr char kDataRootEnv[] = "MIXQ_ONNX_TESTDATA";
constexpr char kReportEnv[] = "MIXQ_CONFORMANCE_REPORT";
constexpr float kAbsTolerance = 1e-4f;
constexpr float kRelTolerance = 1e-4f;
// A case that runs longer is a hang (the largest take milliseconds).
constexpr unsigned kCaseTimeoutSeconds = 60;
// Exit status of a child that could not report its result.
constexpr int kChildPipeError = 3;

enum class Outcome : char { kPassed = 'P', kSkipped = 'S', kFailed = 'F' };

struct CaseResult {
  Outcome outcome = Outcome::kFailed;
  std::string message;  // why it was skipped or failed
};

// One test_data_set_*: the model with its extra inputs turned into
// initializers, and the first input and output.
struct DataSet {
  std::string name;  // "test_data_set_0"
  std::string model_bytes;
  // Absent when the data set has no such file (a model without inputs).
  std::optional<onnx::TensorProto> input;
  std::optional<onnx::TensorProto> output;
};

struct PreparedCase {
  std::vector<DataSet> data_sets;
};

absl::StatusOr<onnx::TensorProto> ReadTensorProto(
    const std::filesystem::path& path) {
  absl::StatusOr<std::string> bytes = ReadFile(path.string());
  if (!bytes.ok()) return bytes.status();
  onnx::TensorProto tensor;
  if (!tensor.ParseFromString(*bytes)) {
    return absl::InvalidArgumentError(
        absl::StrCat(path.string(), ": not a serialized TensorProto"));
  }
  return tensor;
}

std::string DataTypeName(int data_type) {
  return onnx::TensorProto::DataType_IsValid(data_type)
             ? onnx::TensorProto::DataType_Name(
                   static_cast<onnx::TensorProto::DataType>(data_type))
             : absl::StrCat("data type ", data_type);
}

// A float32 TensorProto (raw_data or float_data) as a Tensor.
absl::StatusOr<Tensor> ToTensor(const onnx::TensorProto& proto,
                                absl::string_view what) {
  const Shape shape(proto.dims().begin(), proto.dims().end());
  const absl::StatusOr<int64_t> count = CheckedNumElements(shape);
  if (!count.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": ", count.status().message()));
  }
  const size_t n = static_cast<size_t>(*count);
  const bool raw = proto.has_raw_data();
  const size_t stored = raw ? proto.raw_data().size() / sizeof(float)
                            : static_cast<size_t>(proto.float_data_size());
  if (stored != n || (raw && proto.raw_data().size() % sizeof(float) != 0)) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " of shape ", ShapeToString(shape), " holds ",
                     raw ? proto.raw_data().size() : stored * sizeof(float),
                     " bytes of ", raw ? "raw_data" : "float_data"));
  }
  FloatBuffer values(n);
  if (raw && n > 0) {  // (memcpy from an empty buffer's null is undefined)
    std::memcpy(values.data(), proto.raw_data().data(), n * sizeof(float));
  } else {
    std::copy(proto.float_data().begin(), proto.float_data().end(),
              values.begin());
  }
  return Tensor(shape, std::move(values));
}

// The test_data_set_* directories of a case, sorted.
std::vector<std::filesystem::path> DataSetDirs(
    const std::filesystem::path& case_dir) {
  std::vector<std::filesystem::path> dirs;
  for (const auto& entry : std::filesystem::directory_iterator(case_dir)) {
    if (entry.is_directory() &&
        entry.path().filename().string().rfind("test_data_set_", 0) == 0) {
      dirs.push_back(entry.path());
    }
  }
  std::sort(dirs.begin(), dirs.end());
  return dirs;
}

// Reads a case; runs in the parent (no engine code). Errors are problems of
// the data itself, reported as failures.
absl::StatusOr<PreparedCase> PrepareCase(const std::filesystem::path& case_dir,
                                         const onnx::ModelProto& model) {
  absl::flat_hash_set<std::string> initializers;
  for (const onnx::TensorProto& t : model.graph().initializer()) {
    initializers.insert(t.name());
  }
  // Positions in graph.input of the inputs the data sets feed, in order.
  std::vector<int> fed;
  for (int i = 0; i < model.graph().input_size(); ++i) {
    if (!initializers.contains(model.graph().input(i).name())) fed.push_back(i);
  }
  PreparedCase prepared;
  for (const std::filesystem::path& dir : DataSetDirs(case_dir)) {
    DataSet data;
    data.name = dir.filename().string();
    for (auto [file, tensor] : {std::pair{"input_0.pb", &data.input},
                                {"output_0.pb", &data.output}}) {
      if (!std::filesystem::exists(dir / file)) continue;
      absl::StatusOr<onnx::TensorProto> read = ReadTensorProto(dir / file);
      if (!read.ok()) return read.status();
      *tensor = *std::move(read);
    }

    onnx::ModelProto copy = model;
    onnx::GraphProto& graph = *copy.mutable_graph();
    std::vector<int> turned;  // graph.input positions now initializers
    for (size_t k = 1; k < fed.size(); ++k) {
      const std::filesystem::path file = dir / absl::StrCat("input_", k, ".pb");
      // Without data, or when its data is not a TensorProto (sequences,
      // maps), the input stays a graph input: the importer then rejects the
      // model, and the case is skipped.
      if (!graph.input(fed[k]).type().has_tensor_type() ||
          !std::filesystem::exists(file)) {
        continue;
      }
      absl::StatusOr<onnx::TensorProto> operand = ReadTensorProto(file);
      if (!operand.ok()) return operand.status();
      operand->set_name(graph.input(fed[k]).name());
      *graph.add_initializer() = *std::move(operand);
      turned.push_back(fed[k]);
    }
    // They are initializers now, no longer graph inputs.
    for (auto it = turned.rbegin(); it != turned.rend(); ++it) {
      graph.mutable_input()->DeleteSubrange(*it, 1);
    }
    data.model_bytes = copy.SerializeAsString();
    prepared.data_sets.push_back(std::move(data));
  }
  if (prepared.data_sets.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(case_dir.string(), " has no test_data_set_*"));
  }
  return prepared;
}

// Compares within kAbsTolerance + kRelTolerance * |expected|; NaN matches
// NaN and infinities match themselves. Empty string when they match.
std::string Compare(const Tensor& actual, const Tensor& expected) {
  if (actual.shape() != expected.shape()) {
    return absl::StrCat("output has shape ", ShapeToString(actual.shape()),
                        ", expected ", ShapeToString(expected.shape()));
  }
  const ConstArrayMap a = actual.flat();
  const ConstArrayMap e = expected.flat();
  // An infinite expected value makes the tolerance infinite: it must match
  // exactly.
  const Eigen::Array<bool, Eigen::Dynamic, 1> close =
      (e.isFinite() &&
       (a - e).abs() <= kAbsTolerance + kRelTolerance * e.abs()) ||
      (a.isNaN() && e.isNaN()) || a == e;
  if (close.all()) return "";
  Eigen::Index first = 0;
  while (close[first]) ++first;
  return absl::StrCat(close.size() - close.count(), " of ", close.size(),
                      " values differ; first at flat index ", first, ": got ",
                      a[first], ", expected ", e[first]);
}

// Imports and runs every data set. Runs in the forked child.
CaseResult RunCase(const PreparedCase& prepared) {
  for (const DataSet& data : prepared.data_sets) {
    absl::StatusOr<std::unique_ptr<Model>> model =
        Model::FromOnnxBytes(data.model_bytes);
    if (!model.ok()) {
      const absl::Status& status = model.status();
      if (status.code() == absl::StatusCode::kInvalidArgument) {
        return {Outcome::kSkipped,
                absl::StrCat("importer: ", status.message())};
      }
      return {Outcome::kFailed,
              absl::StrCat("importer returned ", status.ToString(),
                           " (only INVALID_ARGUMENT may reject a model)")};
    }
    for (const auto& [tensor, what] :
         {std::pair{&data.input, "input_0"}, {&data.output, "output_0"}}) {
      if (!tensor->has_value()) {
        return {Outcome::kFailed,
                absl::StrCat(data.name, ": the model was accepted but ", what,
                             ".pb is absent")};
      }
      if ((*tensor)->data_type() != onnx::TensorProto::FLOAT) {
        return {Outcome::kSkipped,
                absl::StrCat(what, " is ", DataTypeName((*tensor)->data_type()),
                             ", not FLOAT")};
      }
    }
    absl::StatusOr<Tensor> input = ToTensor(*data.input, "input_0");
    absl::StatusOr<Tensor> expected = ToTensor(*data.output, "output_0");
    if (!input.ok() || !expected.ok()) {
      return {Outcome::kFailed,
              absl::StrCat(data.name, ": bad test data: ",
                           (input.ok() ? expected : input).status().message())};
    }
    std::vector<const Tensor*> params;
    for (const Tensor& p : (*model)->initial_params()) params.push_back(&p);
    absl::StatusOr<Tensor> output = (*model)->Forward(*input, params, nullptr);
    if (!output.ok()) {
      return {
          Outcome::kFailed,
          absl::StrCat(data.name, ": forward: ", output.status().ToString())};
    }
    const std::string mismatch = Compare(*output, *expected);
    if (!mismatch.empty()) {
      return {Outcome::kFailed, absl::StrCat(data.name, ": ", mismatch)};
    }
  }
  return {Outcome::kPassed, ""};
}

bool WriteAll(int fd, absl::string_view bytes) {
  while (!bytes.empty()) {
    const ssize_t n = write(fd, bytes.data(), bytes.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    bytes.remove_prefix(n);
  }
  return true;
}

// Runs `run` in a child process: a crash or hang fails this case only.
CaseResult RunIsolated(const std::function<CaseResult()>& run) {
  int fds[2];
  if (pipe(fds) != 0) {
    return {Outcome::kFailed, absl::StrCat("pipe: ", std::strerror(errno))};
  }
  std::cout.flush();
  std::fflush(nullptr);
  const pid_t pid = fork();
  if (pid < 0) {
    close(fds[0]);
    close(fds[1]);
    return {Outcome::kFailed, absl::StrCat("fork: ", std::strerror(errno))};
  }
  if (pid == 0) {
    close(fds[0]);
    alarm(kCaseTimeoutSeconds);
    const CaseResult result = run();
    const std::string encoded = absl::StrCat(
        std::string(1, static_cast<char>(result.outcome)), result.message);
    // _exit: the child must not run the parent's atexit handlers (gtest).
    _exit(WriteAll(fds[1], encoded) ? 0 : kChildPipeError);
  }
  close(fds[1]);
  std::string encoded;
  char buffer[4096];
  while (true) {
    const ssize_t n = read(fds[0], buffer, sizeof(buffer));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    encoded.append(buffer, n);
  }
  close(fds[0]);
  int wstatus = 0;
  while (waitpid(pid, &wstatus, 0) < 0 && errno == EINTR) {
  }
  if (WIFSIGNALED(wstatus)) {
    const int sig = WTERMSIG(wstatus);
    return {
        Outcome::kFailed,
        sig == SIGALRM
            ? absl::StrCat("timed out after ", kCaseTimeoutSeconds, " s")
            : absl::StrCat("crashed: signal ", sig, " (", strsignal(sig), ")")};
  }
  if (!WIFEXITED(wstatus) || WEXITSTATUS(wstatus) != 0 || encoded.empty()) {
    return {Outcome::kFailed,
            absl::StrCat("child exited with status ", WEXITSTATUS(wstatus),
                         " without a result")};
  }
  const Outcome outcome = static_cast<Outcome>(encoded[0]);
  if (outcome != Outcome::kPassed && outcome != Outcome::kSkipped &&
      outcome != Outcome::kFailed) {
    return {Outcome::kFailed, "child sent a malformed result"};
  }
  return {outcome, encoded.substr(1)};
}

// The distinct operator types of a model's (top-level) graph.
std::set<std::string> OpTypes(const onnx::ModelProto& model) {
  std::set<std::string> types;
  for (const onnx::NodeProto& node : model.graph().node()) {
    types.insert(node.domain().empty() || node.domain() == "ai.onnx"
                     ? node.op_type()
                     : absl::StrCat(node.domain(), ".", node.op_type()));
  }
  return types;
}

struct OpCounts {
  int cases = 0;
  int passed = 0;
  int failed = 0;
  int skipped = 0;
};

struct NamedResult {
  std::string name;
  std::string ops;  // "Conv,Relu"
  CaseResult result;
};

// Collects outcomes of one data directory and formats the summary.
class Summary {
 public:
  explicit Summary(std::string directory) : directory_(std::move(directory)) {}

  void Add(const std::string& name, const std::set<std::string>& op_types,
           CaseResult result) {
    if (op_types.empty()) {
      Count(&by_op_["(no nodes)"], result.outcome);
    }
    for (const std::string& op : op_types) Count(&by_op_[op], result.outcome);
    Count(&total_, result.outcome);
    NamedResult named{name, absl::StrJoin(op_types, ","), std::move(result)};
    if (named.result.outcome == Outcome::kFailed) {
      failed_.push_back(std::move(named));
    } else if (named.result.outcome == Outcome::kSkipped) {
      skipped_.push_back(std::move(named));
    }
  }

  const std::vector<NamedResult>& failed() const { return failed_; }
  const OpCounts& total() const { return total_; }

  std::string ToString() const {
    std::string out = absl::StrFormat(
        "ONNX conformance: %s: %d cases, %d ran, %d passed, %d failed, %d "
        "skipped\n",
        directory_, total_.cases, total_.passed + total_.failed, total_.passed,
        total_.failed, total_.skipped);
    absl::StrAppendFormat(&out, "  %-32s %6s %6s %6s %6s %7s\n", "operator",
                          "cases", "ran", "passed", "failed", "skipped");
    for (const auto& [op, c] : by_op_) {
      absl::StrAppendFormat(&out, "  %-32s %6d %6d %6d %6d %7d\n", op, c.cases,
                            c.passed + c.failed, c.passed, c.failed, c.skipped);
    }
    AppendList("FAILED", failed_, &out);
    AppendList("SKIPPED", skipped_, &out);
    return out;
  }

 private:
  static void Count(OpCounts* counts, Outcome outcome) {
    ++counts->cases;
    switch (outcome) {
      case Outcome::kPassed:
        ++counts->passed;
        break;
      case Outcome::kFailed:
        ++counts->failed;
        break;
      case Outcome::kSkipped:
        ++counts->skipped;
        break;
    }
  }

  // "FAILED (2):" and one line per case: "  name [ops]: message".
  static void AppendList(absl::string_view title,
                         const std::vector<NamedResult>& results,
                         std::string* out) {
    absl::StrAppend(out, title, " (", results.size(), "):\n");
    for (const NamedResult& r : results) {
      std::string message = r.result.message;
      std::replace(message.begin(), message.end(), '\n', ' ');
      absl::StrAppend(out, "  ", r.name, " [", r.ops, "]: ", message, "\n");
    }
  }

  std::string directory_;
  std::map<std::string, OpCounts> by_op_;
  OpCounts total_;
  std::vector<NamedResult> failed_;
  std::vector<NamedResult> skipped_;
};

std::filesystem::path DataRoot() {
  const char* root = std::getenv(kDataRootEnv);
  return root != nullptr && *root != '\0' ? root : kDefaultDataRoot;
}

// Summaries of every directory run so far, for MIXQ_CONFORMANCE_REPORT.
std::string& ReportText() {
  static std::string* text = new std::string;
  return *text;
}

// The harness itself: tolerance and crash handling.
TEST(ConformanceHarnessTest, CompareUsesAbsAndRelTolerance) {
  const float kNaN = std::numeric_limits<float>::quiet_NaN();
  const float kInf = std::numeric_limits<float>::infinity();
  const Tensor expected({5}, {0.0f, 1000.0f, kNaN, kInf, -kInf});
  EXPECT_EQ(
      Compare(Tensor({5}, {0.9e-4f, 1000.1f, kNaN, kInf, -kInf}), expected),
      "");
  EXPECT_THAT(
      Compare(Tensor({5}, {1.1e-4f, 1000.2f, 0.0f, kNaN, kInf}), expected),
      ::testing::StartsWith("5 of 5 values differ; first at flat "
                            "index 0"));
  EXPECT_THAT(Compare(Tensor({1, 5}), expected),
              ::testing::HasSubstr("shape [1, 5], expected [5]"));
}

TEST(ConformanceHarnessTest, ACrashFailsOnlyItsCase) {
  const CaseResult crashed = RunIsolated([]() -> CaseResult { std::abort(); });
  EXPECT_EQ(crashed.outcome, Outcome::kFailed);
  EXPECT_THAT(crashed.message, ::testing::HasSubstr("crashed: signal 6"));
  const CaseResult skipped = RunIsolated([] {
    return CaseResult{Outcome::kSkipped, "why"};
  });
  EXPECT_EQ(skipped.outcome, Outcome::kSkipped);
  EXPECT_EQ(skipped.message, "why");
}

class ConformanceTest : public ::testing::TestWithParam<std::string> {};

TEST_P(ConformanceTest, AcceptedCasesMatchTheReference) {
  const std::filesystem::path dir = DataRoot() / GetParam();
  if (!std::filesystem::is_directory(dir)) {
    GTEST_SKIP() << dir << " is absent (install libonnx-testdata)";
  }
  std::vector<std::filesystem::path> cases;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    if (std::filesystem::exists(entry.path() / "model.onnx")) {
      cases.push_back(entry.path());
    }
  }
  std::sort(cases.begin(), cases.end());

  Summary summary(GetParam());
  for (const std::filesystem::path& case_dir : cases) {
    const std::string name = case_dir.filename().string();
    absl::StatusOr<std::string> bytes =
        ReadFile((case_dir / "model.onnx").string());
    if (!bytes.ok()) {
      summary.Add(name, {}, {Outcome::kFailed, bytes.status().ToString()});
      continue;
    }
    onnx::ModelProto model;
    if (!model.ParseFromString(*bytes)) {
      summary.Add(name, {},
                  {Outcome::kFailed, "model.onnx is not a ModelProto"});
      continue;
    }
    absl::StatusOr<PreparedCase> prepared = PrepareCase(case_dir, model);
    summary.Add(name, OpTypes(model),
                prepared.ok()
                    ? RunIsolated([&] { return RunCase(*prepared); })
                    : CaseResult{Outcome::kFailed,
                                 absl::StrCat("bad test data: ",
                                              prepared.status().message())});
  }

  const std::string text = summary.ToString();
  std::cout << text << std::flush;
  ReportText() += text;
  if (const char* report = std::getenv(kReportEnv);
      report != nullptr && *report != '\0') {
    const absl::Status written = WriteFile(report, ReportText());
    EXPECT_TRUE(written.ok()) << written;
  }
  for (const NamedResult& r : summary.failed()) {
    ADD_FAILURE() << GetParam() << "/" << r.name << ": " << r.result.message;
  }
  EXPECT_GT(summary.total().cases, 0) << "no cases under " << dir;
}

// Cases that must run and pass, not be skipped: the importer accepting them
// is part of what the operators promise.
class RequiredCaseTest : public ::testing::TestWithParam<std::string> {};

TEST_P(RequiredCaseTest, RunsAndPasses) {
  const std::filesystem::path dir = DataRoot() / "node" / GetParam();
  if (!std::filesystem::is_directory(dir)) {
    GTEST_SKIP() << dir << " is absent (install libonnx-testdata)";
  }
  absl::StatusOr<std::string> bytes = ReadFile((dir / "model.onnx").string());
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  onnx::ModelProto model;
  ASSERT_TRUE(model.ParseFromString(*bytes));
  absl::StatusOr<PreparedCase> prepared = PrepareCase(dir, model);
  ASSERT_TRUE(prepared.ok()) << prepared.status();
  const CaseResult result = RunIsolated([&] { return RunCase(*prepared); });
  EXPECT_EQ(result.outcome, Outcome::kPassed) << result.message;
}

// RNN, LSTM and GRU: defaults, biases, peepholes with a full-length
// sequence_lens, linear_before_reset 0, layout 1 (batchwise).
INSTANTIATE_TEST_SUITE_P(
    Recurrent, RequiredCaseTest,
    ::testing::Values("test_lstm_defaults", "test_lstm_with_initial_bias",
                      "test_lstm_with_peepholes", "test_lstm_batchwise",
                      "test_gru_defaults", "test_gru_with_initial_bias",
                      "test_gru_seq_length", "test_gru_batchwise",
                      "test_simple_rnn_defaults",
                      "test_simple_rnn_with_initial_bias",
                      "test_simple_rnn_batchwise", "test_rnn_seq_length"));

INSTANTIATE_TEST_SUITE_P(OnnxTestData, ConformanceTest,
                         ::testing::Values("node", "pytorch-converted",
                                           "pytorch-operator", "simple"),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           std::string name = info.param;
                           std::replace(name.begin(), name.end(), '-', '_');
                           return name;
                         });

// Cases of the operators added for dense prediction and 1-D signals (issue
// #16) that must run and pass, not merely be skipped: a kernel that starts
// refusing them fails here even though the run above would only skip them.
struct RequiredCase {
  const char* dir;
  const char* name;
};

class RequiredConformanceTest : public ::testing::TestWithParam<RequiredCase> {
};

TEST_P(RequiredConformanceTest, Passes) {
  const std::filesystem::path case_dir =
      DataRoot() / GetParam().dir / GetParam().name;
  if (!std::filesystem::exists(case_dir / "model.onnx")) {
    GTEST_SKIP() << case_dir << " is absent (install libonnx-testdata)";
  }
  absl::StatusOr<std::string> bytes =
      ReadFile((case_dir / "model.onnx").string());
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  onnx::ModelProto model;
  ASSERT_TRUE(model.ParseFromString(*bytes));
  absl::StatusOr<PreparedCase> prepared = PrepareCase(case_dir, model);
  ASSERT_TRUE(prepared.ok()) << prepared.status();
  const CaseResult result = RunIsolated([&] { return RunCase(*prepared); });
  EXPECT_EQ(result.outcome, Outcome::kPassed) << result.message;
}

INSTANTIATE_TEST_SUITE_P(
    Spatial, RequiredConformanceTest,
    ::testing::Values(
        RequiredCase{"pytorch-converted", "test_Conv1d"},
        RequiredCase{"pytorch-converted", "test_Conv1d_dilated"},
        RequiredCase{"pytorch-converted", "test_Conv1d_groups"},
        RequiredCase{"pytorch-converted", "test_Conv1d_pad2size1"},
        RequiredCase{"pytorch-converted", "test_Conv1d_stride"},
        RequiredCase{"pytorch-converted", "test_AvgPool1d_stride"},
        RequiredCase{"pytorch-converted",
                     "test_MaxPool1d_stride_padding_dilation"},
        RequiredCase{"node", "test_averagepool_1d_default"},
        RequiredCase{"node", "test_maxpool_1d_default"},
        RequiredCase{"node", "test_convtranspose"},
        RequiredCase{"node", "test_convtranspose_1d"},
        RequiredCase{"node", "test_convtranspose_autopad_same"},
        RequiredCase{"node", "test_convtranspose_dilations"},
        RequiredCase{"node", "test_convtranspose_kernel_shape"},
        RequiredCase{"node", "test_convtranspose_output_shape"},
        RequiredCase{"node", "test_convtranspose_pad"},
        RequiredCase{"node", "test_convtranspose_pads"},
        RequiredCase{"node", "test_convtranspose_with_kernel"},
        RequiredCase{"pytorch-converted", "test_ConvTranspose2d"},
        RequiredCase{"pytorch-converted", "test_ConvTranspose2d_no_bias"},
        RequiredCase{"pytorch-operator", "test_operator_convtranspose"},
        RequiredCase{"pytorch-converted", "test_PixelShuffle"},
        RequiredCase{"node", "test_depthtospace_crd_mode"},
        RequiredCase{"node", "test_depthtospace_crd_mode_example"},
        RequiredCase{"node", "test_depthtospace_dcr_mode"},
        RequiredCase{"node", "test_depthtospace_example"},
        RequiredCase{"node", "test_spacetodepth"},
        RequiredCase{"node", "test_spacetodepth_example"},
        RequiredCase{"node", "test_upsample_nearest"},
        RequiredCase{"node", "test_resize_downsample_scales_linear"},
        RequiredCase{"node",
                     "test_resize_downsample_scales_linear_align_corners"},
        RequiredCase{"node", "test_resize_downsample_scales_nearest"},
        RequiredCase{"node",
                     "test_resize_downsample_sizes_linear_pytorch_half_pixel"},
        RequiredCase{"node", "test_resize_downsample_sizes_nearest"},
        RequiredCase{
            "node",
            "test_resize_downsample_sizes_nearest_tf_half_pixel_for_nn"},
        RequiredCase{"node", "test_resize_upsample_scales_linear"},
        RequiredCase{"node",
                     "test_resize_upsample_scales_linear_align_corners"},
        RequiredCase{"node", "test_resize_upsample_scales_nearest"},
        RequiredCase{"node", "test_resize_upsample_sizes_nearest"},
        RequiredCase{"node",
                     "test_resize_upsample_sizes_nearest_ceil_half_pixel"},
        RequiredCase{"node",
                     "test_resize_upsample_sizes_nearest_floor_align_corners"},
        RequiredCase{
            "node",
            "test_resize_upsample_sizes_nearest_round_prefer_ceil_asymmetric"}),
    [](const ::testing::TestParamInfo<RequiredCase>& info) {
      return std::string(info.param.name);
    });

// Data is the graph input; indices and updates become initializers.
INSTANTIATE_TEST_SUITE_P(
    Scatter, RequiredConformanceTest,
    ::testing::Values(RequiredCase{"node", "test_scatternd"},
                      RequiredCase{"node", "test_scatternd_add"},
                      RequiredCase{"node", "test_scatternd_multiply"}),
    [](const ::testing::TestParamInfo<RequiredCase>& info) {
      return std::string(info.param.name);
    });

}  // namespace
}  // namespace mixq::engine
