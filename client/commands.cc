#include "client/commands.h"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <system_error>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"
#include "client/format.h"
#include "client/report_html.h"
#include "google/protobuf/struct.pb.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/support/client_interceptor.h"
#include "proto/mixq.grpc.pb.h"
#include "util/bearer_token.h"
#include "util/file.h"
#include "util/npz_writer.h"
#include "util/sha256.h"
#include "util/status_macros.h"

namespace mixq::client {
namespace {

constexpr double kBytesPerMiB = 1024 * 1024;
// UploadArtifact: chunk size, the initial metadata key that tells whether
// the server has the file already (proto/mixq.proto), and the slowest
// transfer the upload deadline allows for.
constexpr size_t kUploadChunkBytes = size_t{1} << 20;
constexpr char kArtifactExistingKey[] = "mixq-artifact-existing";
constexpr double kMinTransferBytesPerSecond = 1024 * 1024;
// Token files and PEM files are small; refuse anything larger.
constexpr size_t kMaxCredentialFileBytes = size_t{1} << 20;
constexpr char kAuthorizationKey[] = "authorization";
// `mixq list` without --limit: the server's default page size.
constexpr int kDefaultListLimit = 100;
// `mixq report` without --output writes "<job>" and this; it asks for at
// most this many kept policies of the jobs on the model.
constexpr char kReportSuffix[] = ".report.html";
constexpr int kReportModelPolicies = 1000;

absl::StatusOr<std::string> ReadCredentialFile(absl::string_view flag,
                                               const std::string& path) {
  return ReadFlagFile(flag, path, kMaxCredentialFileBytes);
}

// The bearer token to send (cli.h): empty for none.
absl::StatusOr<std::string> ResolveToken(const GlobalOptions& global) {
  std::string source = absl::StrCat("$", kTokenEnvVar);
  std::string text = global.token;
  if (!global.token_file.empty()) {
    source = absl::StrCat("--token-file ", global.token_file);
    MIXQ_ASSIGN_OR_RETURN(
        text, ReadCredentialFile("--token-file", global.token_file));
  } else if (absl::StripAsciiWhitespace(text).empty()) {
    return std::string();  // an empty $MIXQ_TOKEN: no token
  }
  absl::StatusOr<std::string> token = ParseBearerToken(text);
  if (!token.ok()) return Annotate(token.status(), source);
  return token;
}

absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> MakeCredentials(
    const GlobalOptions& global) {
  if (!global.tls) return grpc::InsecureChannelCredentials();
  grpc::SslCredentialsOptions ssl;
  if (!global.tls_ca_file.empty()) {
    MIXQ_ASSIGN_OR_RETURN(ssl.pem_root_certs,
                          ReadCredentialFile("--tls-ca", global.tls_ca_file));
  }
  if (!global.tls_cert_file.empty()) {
    MIXQ_ASSIGN_OR_RETURN(
        ssl.pem_cert_chain,
        ReadCredentialFile("--tls-cert", global.tls_cert_file));
    MIXQ_ASSIGN_OR_RETURN(ssl.pem_private_key,
                          ReadCredentialFile("--tls-key", global.tls_key_file));
  }
  return grpc::SslCredentials(ssl);
}

// Adds `authorization: Bearer <token>` to a call's initial metadata.
class BearerTokenInterceptor final : public grpc::experimental::Interceptor {
 public:
  explicit BearerTokenInterceptor(std::string header)
      : header_(std::move(header)) {}

  void Intercept(
      grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(
            grpc::experimental::InterceptionHookPoints::
                PRE_SEND_INITIAL_METADATA)) {
      methods->GetSendInitialMetadata()->emplace(kAuthorizationKey, header_);
    }
    methods->Proceed();
  }

 private:
  const std::string header_;
};

// Installed on the channel, so every RPC carries the token, whichever command
// builds its ClientContext.
class BearerTokenInterceptorFactory final
    : public grpc::experimental::ClientInterceptorFactoryInterface {
 public:
  explicit BearerTokenInterceptorFactory(const std::string& token)
      : header_(absl::StrCat("Bearer ", token)) {}

  grpc::experimental::Interceptor* CreateClientInterceptor(
      grpc::experimental::ClientRpcInfo*) override {
    // gRPC owns the interceptor and deletes it when the call ends.
    return new BearerTokenInterceptor(header_);
  }

 private:
  const std::string header_;
};

// Whether `name`, from the server, names a file in the working directory
// (no directory part, not "." or ".."): a default output name must not lead
// out of it.
bool IsPlainFileName(const std::string& name) {
  return !name.empty() && name != "." && name != ".." &&
         std::filesystem::path(name).filename().string() == name;
}

absl::StatusOr<v1::DataSource> MakeDataSource(const std::string& flag,
                                              const std::string& path,
                                              bool server_path) {
  v1::DataSource source;
  if (absl::StartsWith(path, kArtifactPrefix)) {
    const std::string sha256 = absl::AsciiStrToLower(
        absl::string_view(path).substr(std::strlen(kArtifactPrefix)));
    if (!IsSha256Hex(sha256)) {
      return absl::InvalidArgumentError(
          absl::StrCat(flag, ": \"", path, "\" is not ", kArtifactPrefix,
                       " and a SHA-256 (64 hex digits); write ./", path,
                       " for a file so named"));
    }
    source.set_artifact_sha256(sha256);
    return source;
  }
  source.set_filename(std::filesystem::path(path).filename().string());
  if (server_path) {
    std::error_code error;
    const std::filesystem::path absolute =
        std::filesystem::absolute(path, error);
    if (error) {
      return absl::InvalidArgumentError(absl::StrCat(
          flag, ": cannot make \"", path, "\" absolute: ", error.message()));
    }
    source.set_server_path(absolute.lexically_normal().string());
    return source;
  }
  MIXQ_ASSIGN_OR_RETURN(std::string content,
                        ReadFlagFile(flag, path, kMaxMessageBytes));
  source.set_content(std::move(content));
  return source;
}

// Runs one command over a channel to global.server. Borrows everything it is
// given for its lifetime.
// The .npz files packed from `--inputs NAME=FILE` flags (one .npy per graph
// input), in a private temporary directory removed with the object: the
// upload and inline paths then send one file, as for a model with one input.
class PackedInputs {
 public:
  PackedInputs() = default;
  PackedInputs(const PackedInputs&) = delete;
  PackedInputs& operator=(const PackedInputs&) = delete;
  ~PackedInputs() {
    std::error_code ignored;
    if (!dir_.empty()) std::filesystem::remove_all(dir_, ignored);
  }

  // Packs `files` into "<dir>/inputs.npz" (or val_inputs.npz for
  // --val-inputs) and returns its path; errors name `flag` and the file.
  absl::StatusOr<std::string> Pack(absl::string_view flag,
                                   const std::vector<NamedFile>& files) {
    MIXQ_ASSIGN_OR_RETURN(const std::string npz, PackNamedFiles(files, flag));
    if (dir_.empty()) {
      std::string pattern =
          (std::filesystem::temp_directory_path() / "mixq-inputs-XXXXXX")
              .string();
      if (mkdtemp(pattern.data()) == nullptr) {
        return absl::InternalError(absl::StrCat(
            flag,
            ": cannot create a temporary directory: ", std::strerror(errno)));
      }
      dir_ = pattern;
    }
    const std::string path =
        (std::filesystem::path(dir_) /
         absl::StrCat(absl::StripPrefix(flag, "--"), ".npz"))
            .string();
    MIXQ_RETURN_IF_ERROR(WriteFile(path, npz));
    return path;
  }

 private:
  std::string dir_;
};

class Runner {
 public:
  Runner(const GlobalOptions& global,
         const std::shared_ptr<grpc::Channel>& channel, std::ostream& out,
         std::ostream& err)
      : global_(global),
        out_(out),
        err_(err),
        stub_(v1::Mixq::NewStub(channel)) {}

  int operator()(const SubmitOptions& given) {
    PackedInputs packed;
    const std::optional<SubmitOptions> options = Pack(given, &packed);
    if (!options.has_value()) return kExitUsage;
    return Submit(*options);
  }

  int Submit(const SubmitOptions& options) {
    int exit_code = kExitOk;
    const std::optional<SubmitOptions> sent = UploadFiles(options, &exit_code);
    if (!sent.has_value()) return exit_code;
    absl::StatusOr<v1::SubmitJobRequest> request = BuildSubmitRequest(*sent);
    if (!request.ok()) {
      err_ << "error: " << request.status().message() << "\n";
      return kExitUsage;
    }
    KeepFilenames(options, request->mutable_spec());
    v1::SubmitJobResponse response;
    grpc::ClientContext context;
    SetDeadline(context);
    const grpc::Status status = stub_->SubmitJob(&context, *request, &response);
    if (!status.ok()) return Fail(status);
    if (response.existing()) {
      err_ << "note: request id \"" << options.request_id << "\" matched job "
           << response.job().id() << "\n";
    }
    if (!options.watch) return Emit(response, FormatSubmitted);
    // Followed by an event per line, the response is printed on one line too
    // so that the whole output is JSON Lines.
    if (global_.json) {
      absl::StatusOr<std::string> json = ToJson(response, /*multiline=*/false);
      if (!json.ok()) return FailLocal(json.status());
      out_ << *json << "\n";
    } else {
      out_ << FormatSubmitted(response);
    }
    return Watch(response.job().id());
  }

  int operator()(const StatusOptions& options) {
    v1::GetJobRequest request;
    request.set_job_id(options.job_id);
    return CallAndPrint(&v1::Mixq::Stub::GetJob, request, FormatJob);
  }

  // The server ends a page early when its reply grows large: follow the
  // pages until the jobs asked for (or the last job) are in.
  int operator()(const ListOptions& options) {
    v1::ListJobsRequest request = BuildListRequest(options);
    const int wanted = options.limit.value_or(kDefaultListLimit);
    v1::ListJobsResponse listed;
    do {
      v1::ListJobsResponse page;
      grpc::ClientContext context;
      SetDeadline(context);
      const grpc::Status status = stub_->ListJobs(&context, request, &page);
      if (!status.ok()) return Fail(status);
      for (v1::Job& job : *page.mutable_jobs()) {
        if (listed.jobs_size() == wanted) break;
        *listed.add_jobs() = std::move(job);
      }
      listed.set_next_page_token(page.next_page_token());
      request.set_page_token(page.next_page_token());
      request.set_limit(wanted - listed.jobs_size());
    } while (!request.page_token().empty() && listed.jobs_size() < wanted);
    return Emit(listed, FormatJobList);
  }

  int operator()(const WatchOptions& options) { return Watch(options.job_id); }

  int operator()(const ResultsOptions& options) {
    v1::GetResultsRequest request;
    request.set_job_id(options.job_id);
    return CallAndPrint(&v1::Mixq::Stub::GetResults, request, FormatResults);
  }

  int operator()(const BestOptions& options) {
    const v1::QueryBestPoliciesRequest request = BuildBestRequest(options);
    if (!options.resolve) {
      return CallAndPrint(&v1::Mixq::Stub::QueryBestPolicies, request,
                          FormatBestPolicies);
    }
    return CallAndPrint(
        &v1::Mixq::Stub::QueryBestPolicies, request,
        [&request](const v1::QueryBestPoliciesResponse& response) {
          return FormatResolvedPolicy(response, request);
        });
  }

  int operator()(const EvalOptions& given) {
    PackedInputs packed;
    const std::optional<SubmitOptions> data = Pack(given.data, &packed);
    if (!data.has_value()) return kExitUsage;
    EvalOptions options = given;
    options.data = *data;
    return Eval(options);
  }

  int Eval(const EvalOptions& options) {
    int exit_code = kExitOk;
    std::optional<SubmitOptions> sent = UploadFiles(options.data, &exit_code);
    if (!sent.has_value()) return exit_code;
    EvalOptions eval = options;
    eval.data = *std::move(sent);
    absl::StatusOr<v1::EvaluatePolicyRequest> request = BuildEvalRequest(eval);
    if (!request.ok()) {
      err_ << "error: " << request.status().message() << "\n";
      return kExitUsage;
    }
    KeepFilenames(options.data, request->mutable_spec());
    return CallAndPrint(&v1::Mixq::Stub::EvaluatePolicy, *request,
                        FormatEvaluation);
  }

  int operator()(const ParetoOptions& options) {
    return CallAndPrint(&v1::Mixq::Stub::GetParetoFront,
                        BuildParetoRequest(options), FormatParetoFront);
  }

  // Three unary calls (each within --timeout), then the page is rendered
  // and written.
  int operator()(const ReportOptions& options) {
    v1::GetResultsRequest results;
    results.set_job_id(options.job_id);
    v1::GetParetoFrontRequest front;
    front.set_job_id(options.job_id);
    // Every job's kept policies on the model, for uniform reference points:
    // no limit, and more than any search keeps.
    v1::QueryBestPoliciesRequest model;
    model.set_job_id(options.job_id);
    model.set_same_model(true);
    model.set_top_k(kReportModelPolicies);
    ReportData data;
    grpc::Status status =
        Call(&v1::Mixq::Stub::GetResults, results, &data.results);
    if (status.ok()) {
      status = Call(&v1::Mixq::Stub::GetParetoFront, front, &data.pareto);
    }
    if (status.ok()) {
      status =
          Call(&v1::Mixq::Stub::QueryBestPolicies, model, &data.model_policies);
    }
    if (!status.ok()) return Fail(status);
    const std::string html = RenderReportHtml(data);
    if (options.output == "-") {
      out_ << html;
      return kExitOk;
    }
    std::string path = options.output;
    if (path.empty()) {
      path = absl::StrCat(data.results.job().id(), kReportSuffix);
      if (!IsPlainFileName(path)) {
        return FailLocal(absl::InternalError(absl::StrCat(
            "the server sent an unusable job id \"", data.results.job().id(),
            "\" for a file name; give --output")));
      }
    }
    if (absl::Status written = WriteFile(path, html); !written.ok()) {
      err_ << "error: --output: " << written.message() << "\n";
      return kExitUsage;
    }
    google::protobuf::Struct summary;
    auto& fields = *summary.mutable_fields();
    fields["job_id"].set_string_value(data.results.job().id());
    fields["output"].set_string_value(path);
    fields["size_bytes"].set_number_value(static_cast<double>(html.size()));
    return Emit(summary, [&](const google::protobuf::Struct&) {
      return absl::StrCat("wrote ", html.size(), " bytes to ", path, "\n");
    });
  }

  // Reports the state the job moves to: a running job stops at its next
  // mini-batch, so this waits (within --timeout) for its end.
  int operator()(const CancelOptions& options) {
    v1::CancelJobRequest request;
    request.set_job_id(options.job_id);
    v1::Job job;
    const grpc::Status status = Call(&v1::Mixq::Stub::CancelJob, request, &job);
    if (!status.ok()) return Fail(status);
    if (job.state() == v1::RUNNING && WaitUntilEnded(job.id())) {
      v1::GetJobRequest get;
      get.set_job_id(job.id());
      v1::Job ended;
      if (Call(&v1::Mixq::Stub::GetJob, get, &ended).ok())
        job = std::move(ended);
    }
    return Emit(job, FormatCancelled);
  }

  // Follows the job's events until the stream ends, which the server does
  // once the job has ended (true), or --timeout passes or the stream fails
  // (false).
  bool WaitUntilEnded(const std::string& job_id) {
    v1::WatchJobRequest request;
    request.set_job_id(job_id);
    grpc::ClientContext context;
    SetDeadline(context);
    std::unique_ptr<grpc::ClientReader<v1::JobEvent>> reader =
        stub_->WatchJob(&context, request);
    v1::JobEvent event;
    while (reader->Read(&event)) {
    }
    return reader->Finish().ok();
  }

  int operator()(const UploadOptions& options) {
    v1::Artifact artifact;
    int exit_code = kExitOk;
    if (!Upload(options.path, "", &artifact, &exit_code)) return exit_code;
    if (artifact.existing() && !global_.json) {
      err_ << "note: the server had this file already\n";
    }
    return Emit(artifact, FormatUploaded);
  }

  int operator()(const ExportOptions& options) {
    v1::ExportModelRequest request;
    request.set_job_id(options.job_id);
    request.set_format(options.format);
    request.set_policy_id(options.policy_id);
    grpc::ClientContext context;
    SetDeadline(context);
    std::unique_ptr<grpc::ClientReader<v1::ExportChunk>> reader =
        stub_->ExportModel(&context, request);
    v1::ExportChunk chunk;
    v1::ExportChunk first;
    std::string data;
    for (bool is_first = true; reader->Read(&chunk); is_first = false) {
      if (is_first) {
        first = chunk;
        // total_bytes comes from the server: reserve only a sane amount.
        data.reserve(static_cast<size_t>(std::clamp<int64_t>(
            chunk.total_bytes(), 0, static_cast<int64_t>(kMaxMessageBytes))));
      }
      data += chunk.data();
    }
    const grpc::Status status = reader->Finish();
    if (!status.ok()) return Fail(status);
    const std::string sha256 = Sha256Hex(data);
    if (static_cast<int64_t>(data.size()) != first.total_bytes() ||
        sha256 != first.sha256()) {
      return FailLocal(absl::DataLossError(absl::StrCat(
          "the export of job ", options.job_id, " arrived damaged: ",
          data.size(), " bytes hashing to ", sha256, ", expected ",
          first.total_bytes(), " bytes hashing to ", first.sha256())));
    }
    if (options.output == "-") {
      out_ << data;
      return kExitOk;
    }
    std::string path = options.output;
    if (path.empty()) {
      path = first.filename();
      if (!IsPlainFileName(path)) {
        return FailLocal(absl::InternalError(
            absl::StrCat("the server suggested an unusable file name \"", path,
                         "\"; give --output")));
      }
    }
    if (absl::Status written = WriteFile(path, data); !written.ok()) {
      err_ << "error: --output: " << written.message() << "\n";
      return kExitUsage;
    }
    google::protobuf::Struct summary;
    auto& fields = *summary.mutable_fields();
    fields["job_id"].set_string_value(options.job_id);
    fields["format"].set_string_value(options.format);
    fields["policy_id"].set_string_value(options.policy_id);
    fields["output"].set_string_value(path);
    fields["size_bytes"].set_number_value(static_cast<double>(data.size()));
    fields["sha256"].set_string_value(first.sha256());
    if (!global_.json) {
      out_ << "wrote " << data.size() << " bytes to " << path << " (sha256 "
           << first.sha256() << ")\n";
      return kExitOk;
    }
    absl::StatusOr<std::string> json = ToJson(summary, /*multiline=*/true);
    if (!json.ok()) return FailLocal(json.status());
    out_ << *json;
    return kExitOk;
  }

 private:
  // Sends the file at `path` with UploadArtifact in kUploadChunkBytes chunks
  // read as they go (memory is one chunk whatever the file's size), unless
  // the server says (initial metadata, see proto/mixq.proto) it has the file
  // already: the file is read once to hash it, and again to send it. The
  // deadline grows with the file: --timeout plus one second per
  // kMinTransferBytesPerSecond. False after printing an error (`flag`, if
  // not empty, names the file's flag), *exit_code set.
  bool Upload(const std::string& path, absl::string_view flag,
              v1::Artifact* artifact, int* exit_code) {
    const auto local_error = [&](const absl::Status& status) {
      err_ << "error: " << flag << (flag.empty() ? "" : ": ")
           << status.message() << "\n";
      *exit_code = kExitUsage;
      return false;
    };
    absl::StatusOr<FileDigest> digest = DigestFile(path);
    if (!digest.ok()) return local_error(digest.status());
    grpc::ClientContext context;
    context.set_deadline(
        std::chrono::system_clock::now() +
        std::chrono::duration_cast<std::chrono::system_clock::duration>(
            std::chrono::duration<double>(
                global_.timeout_seconds +
                static_cast<double>(digest->size_bytes) /
                    kMinTransferBytesPerSecond)));
    std::unique_ptr<grpc::ClientWriter<v1::UploadArtifactRequest>> writer =
        stub_->UploadArtifact(&context, artifact);
    v1::UploadArtifactRequest message;
    v1::ArtifactInfo& info = *message.mutable_info();
    info.set_sha256(digest->sha256);
    info.set_size_bytes(digest->size_bytes);
    info.set_filename(std::filesystem::path(path).filename().string());
    absl::Status read = absl::OkStatus();
    if (writer->Write(message)) {
      writer->WaitForInitialMetadata();
      const auto& metadata = context.GetServerInitialMetadata();
      const auto existing = metadata.find(kArtifactExistingKey);
      // Absent when the server refused the upload: Finish says why.
      if (existing != metadata.end() && existing->second == "false") {
        read = ReadFileChunks(path, kUploadChunkBytes,
                              [&](absl::string_view chunk) {
                                message.set_chunk(std::string(chunk));
                                // False once the server ended the call
                                // (e.g. over its limit).
                                return writer->Write(message);
                              });
      }
    }
    writer->WritesDone();
    const grpc::Status status = writer->Finish();
    if (!read.ok()) {
      // The file changed or vanished since it was hashed; the server has
      // refused the short or different upload.
      return local_error(read);
    }
    if (!status.ok()) {
      *exit_code = Fail(status);
      return false;
    }
    return true;
  }

  // `data` with its NAME=FILE inputs (inputs_by_name, val_inputs_by_name)
  // packed into .npz files of `packed`, named as the flag's path; nullopt
  // after printing an error.
  std::optional<SubmitOptions> Pack(const SubmitOptions& data,
                                    PackedInputs* packed) {
    SubmitOptions out = data;
    for (auto [flag, named, path] :
         {std::tuple<const char*, std::vector<NamedFile>*, std::string*>{
              "--inputs", &out.inputs_by_name, &out.inputs},
          {"--val-inputs", &out.val_inputs_by_name, &out.val_inputs}}) {
      if (named->empty()) continue;
      absl::StatusOr<std::string> file = packed->Pack(flag, *named);
      if (!file.ok()) {
        err_ << "error: " << file.status().message() << "\n";
        return std::nullopt;
      }
      *path = *std::move(file);
      named->clear();
    }
    return out;
  }

  // With data.upload, uploads each file that is not a kArtifactPrefix
  // reference already and returns `data` naming them by reference; without,
  // `data` itself. nullopt after printing an error, *exit_code set.
  std::optional<SubmitOptions> UploadFiles(const SubmitOptions& data,
                                           int* exit_code) {
    SubmitOptions sent = data;
    if (!data.upload) return sent;
    for (auto [flag, path] :
         {std::pair<const char*, std::string*>{"--model", &sent.model},
          {"--inputs", &sent.inputs},
          {"--labels", &sent.labels},
          {"--val-inputs", &sent.val_inputs},
          {"--val-labels", &sent.val_labels}}) {
      // An empty path is an absent optional file (the validation set).
      if (path->empty() || absl::StartsWith(*path, kArtifactPrefix)) continue;
      v1::Artifact artifact;
      if (!Upload(*path, flag, &artifact, exit_code)) return std::nullopt;
      err_ << "uploaded " << *path << ": " << kArtifactPrefix
           << artifact.sha256() << (artifact.existing() ? " (known)" : "")
           << "\n";
      *path = absl::StrCat(kArtifactPrefix, artifact.sha256());
    }
    return sent;
  }

  // Files that UploadFiles replaced by references keep their names in
  // `spec`, for the server's messages.
  static void KeepFilenames(const SubmitOptions& data, v1::JobSpec* spec) {
    if (!data.upload) return;
    // Pointers to the messages, not mutable_*() calls up front: an absent
    // validation file must leave its DataSource unset.
    for (auto [path, source] :
         {std::pair<const std::string*, v1::DataSource* (v1::JobSpec::*)()>{
              &data.model, &v1::JobSpec::mutable_model},
          {&data.inputs, &v1::JobSpec::mutable_inputs},
          {&data.labels, &v1::JobSpec::mutable_labels},
          {&data.val_inputs, &v1::JobSpec::mutable_val_inputs},
          {&data.val_labels, &v1::JobSpec::mutable_val_labels}}) {
      if (!path->empty() && !absl::StartsWith(*path, kArtifactPrefix)) {
        (spec->*source)()->set_filename(
            std::filesystem::path(*path).filename().string());
      }
    }
  }

  void SetDeadline(grpc::ClientContext& context) const {
    context.set_deadline(
        std::chrono::system_clock::now() +
        std::chrono::duration_cast<std::chrono::system_clock::duration>(
            std::chrono::duration<double>(global_.timeout_seconds)));
  }

  int Fail(const grpc::Status& status) {
    err_ << DescribeRpcError(status, global_.server, global_.timeout_seconds,
                             global_.tls);
    return ExitCodeFor(status.error_code());
  }

  // A failure on our side, after the server answered.
  int FailLocal(const absl::Status& status) {
    err_ << "error: " << status.message() << "\n";
    return kExitRpcError;
  }

  // Prints `message` as JSON with --json, else as `human(message)`.
  template <typename Message, typename Human>
  int Emit(const Message& message, const Human& human) {
    if (!global_.json) {
      out_ << human(message);
      return kExitOk;
    }
    absl::StatusOr<std::string> json = ToJson(message, /*multiline=*/true);
    if (!json.ok()) return FailLocal(json.status());
    out_ << *json;
    return kExitOk;
  }

  // Calls the unary `method` within the deadline and prints its response with
  // Emit.
  // `human` formats a Response as text.
  template <typename Request, typename Response, typename Human>
  int CallAndPrint(grpc::Status (v1::Mixq::Stub::*method)(grpc::ClientContext*,
                                                          const Request&,
                                                          Response*),
                   const Request& request, const Human& human) {
    Response response;
    const grpc::Status status = Call(method, request, &response);
    if (!status.ok()) return Fail(status);
    return Emit(response, human);
  }

  // Calls the unary `method` within the deadline.
  template <typename Request, typename Response>
  grpc::Status Call(grpc::Status (v1::Mixq::Stub::*method)(grpc::ClientContext*,
                                                           const Request&,
                                                           Response*),
                    const Request& request, Response* response) {
    grpc::ClientContext context;
    SetDeadline(context);
    return (stub_.get()->*method)(&context, request, response);
  }

  // Follows the job's events until the stream ends. No deadline: a job may
  // run for hours.
  int Watch(const std::string& job_id) {
    v1::WatchJobRequest request;
    request.set_job_id(job_id);
    grpc::ClientContext context;
    std::unique_ptr<grpc::ClientReader<v1::JobEvent>> reader =
        stub_->WatchJob(&context, request);
    EventPrinter printer(out_, global_.json  ? EventPrinter::Mode::kJson
                               : global_.tty ? EventPrinter::Mode::kProgressBar
                                             : EventPrinter::Mode::kLines);
    v1::JobEvent event;
    v1::JobEvent last;
    absl::Status print_status;
    while (reader->Read(&event)) {
      print_status = printer.Print(event);
      if (!print_status.ok()) {
        context.TryCancel();
        break;
      }
      last = event;
    }
    printer.Finish();
    const grpc::Status status = reader->Finish();
    if (!print_status.ok()) return FailLocal(print_status);
    if (!status.ok()) return Fail(status);
    switch (last.state()) {
      case v1::SUCCEEDED:
        // JSON Lines stay one event per line: the summary is for people.
        if (!global_.json) out_ << FormatWatchSummary(last);
        return kExitOk;
      case v1::FAILED:
        err_ << "error: job " << job_id << " failed: " << last.error() << "\n";
        return kExitJobFailed;
      case v1::CANCELLED:
        err_ << "job " << job_id << " was cancelled"
             << (last.error().empty() ? "" : absl::StrCat(": ", last.error()))
             << "\n";
        return kExitJobFailed;
      default:
        err_ << "error: the event stream of job " << job_id
             << " ended in state " << StateName(last.state())
             << " before the job finished\n";
        return kExitRpcError;
    }
  }

  const GlobalOptions& global_;
  std::ostream& out_;
  std::ostream& err_;
  std::unique_ptr<v1::Mixq::Stub> stub_;
};

}  // namespace

int ExitCodeFor(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::OK:
      return kExitOk;
    case grpc::StatusCode::INVALID_ARGUMENT:
    case grpc::StatusCode::FAILED_PRECONDITION:
    case grpc::StatusCode::PERMISSION_DENIED:
      return kExitUsage;
    case grpc::StatusCode::NOT_FOUND:
      return kExitNotFound;
    default:
      return kExitRpcError;
  }
}

std::string DescribeRpcError(const grpc::Status& status,
                             const std::string& server, double timeout_seconds,
                             bool tls) {
  // gRPC's codes are numerically absl's, whose names are the canonical ones.
  std::string text =
      absl::StrCat("error: ",
                   absl::StatusCodeToString(
                       static_cast<absl::StatusCode>(status.error_code())),
                   ": ");
  const std::string& message = status.error_message();
  if (status.error_code() == grpc::StatusCode::UNAVAILABLE) {
    // OpenSSL's reasons, as gRPC 1.51 passes them on.
    if (tls && absl::StrContains(message, "wrong version number")) {
      return absl::StrCat(text, "the server at ", server,
                          " does not speak TLS: connect without --tls, "
                          "--tls-ca and --tls-cert\n");
    }
    if (tls && absl::StrContains(message, "certificate verify failed")) {
      return absl::StrCat(
          text, "the TLS certificate of the server at ", server,
          " is not signed by a CA this client trusts: give the CA that "
          "signed it with --tls-ca FILE\n");
    }
    if (!tls && absl::StrContains(message, "Socket closed")) {
      return absl::StrCat(
          text, "the server at ", server,
          " closed the connection: if it serves TLS, add --tls (or --tls-ca "
          "FILE for a private CA)\n");
    }
  }
  if (status.error_code() == grpc::StatusCode::UNAVAILABLE) {
    absl::StrAppend(&text, "cannot reach mixq server at ", server, ": ");
  } else if (status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
    absl::StrAppend(&text, "no answer from mixq server at ", server, " within ",
                    absl::StrFormat("%g", timeout_seconds),
                    " s (see --timeout): ");
  }
  absl::StrAppend(&text, status.error_message(), "\n");
  return text;
}

absl::StatusOr<std::shared_ptr<grpc::Channel>> MakeChannel(
    const GlobalOptions& global) {
  MIXQ_ASSIGN_OR_RETURN(std::shared_ptr<grpc::ChannelCredentials> credentials,
                        MakeCredentials(global));
  MIXQ_ASSIGN_OR_RETURN(const std::string token, ResolveToken(global));
  grpc::ChannelArguments arguments;
  arguments.SetMaxSendMessageSize(static_cast<int>(kMaxMessageBytes));
  arguments.SetMaxReceiveMessageSize(static_cast<int>(kMaxMessageBytes));
  std::vector<
      std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface>>
      interceptors;
  if (!token.empty()) {
    interceptors.push_back(
        std::make_unique<BearerTokenInterceptorFactory>(token));
  }
  return grpc::experimental::CreateCustomChannelWithInterceptors(
      global.server, credentials, arguments, std::move(interceptors));
}

absl::StatusOr<v1::SubmitJobRequest> BuildSubmitRequest(
    const SubmitOptions& options) {
  v1::SubmitJobRequest request;
  request.set_request_id(options.request_id);
  v1::JobSpec& spec = *request.mutable_spec();
  spec.set_name(options.name);
  spec.set_from_job(options.from_job);
  spec.set_objective(options.objective);
  // Files absent from `options` stay unset: the validation set is optional,
  // and with from_job the model and data are the source job's (cli.h).
  for (auto [flag, path, source] :
       {std::tuple<const char*, const std::string*,
                   v1::DataSource* (v1::JobSpec::*)()>{
            "--model", &options.model, &v1::JobSpec::mutable_model},
        {"--inputs", &options.inputs, &v1::JobSpec::mutable_inputs},
        {"--labels", &options.labels, &v1::JobSpec::mutable_labels},
        {"--val-inputs", &options.val_inputs, &v1::JobSpec::mutable_val_inputs},
        {"--val-labels", &options.val_labels,
         &v1::JobSpec::mutable_val_labels}}) {
    if (path->empty()) continue;
    MIXQ_ASSIGN_OR_RETURN(*(spec.*source)(),
                          MakeDataSource(flag, *path, options.server_paths));
  }
  spec.set_val_size(options.val_size.value_or(0));
  const size_t total =
      spec.model().content().size() + spec.inputs().content().size() +
      spec.labels().content().size() + spec.val_inputs().content().size() +
      spec.val_labels().content().size();
  if (total > kMaxMessageBytes) {
    return absl::InvalidArgumentError(
        absl::StrFormat("the model and data files total %.0f MiB, above the "
                        "%.0f MiB message limit; "
                        "use --upload or --server-paths",
                        total / kBytesPerMiB, kMaxMessageBytes / kBytesPerMiB));
  }
  if (options.normalize) {
    spec.mutable_normalize()->set_mean(options.normalize->mean);
    spec.mutable_normalize()->set_std(options.normalize->std);
  }
  spec.set_max_samples(options.max_samples.value_or(0));
  spec.set_calib_size(options.calib_size);

  v1::SearchOptions& search = *spec.mutable_search();
  for (int bits : options.bits) search.add_bits(bits);
  if (options.target_avg_bits) {
    search.mutable_budget()->set_avg_bits(*options.target_avg_bits);
  } else if (options.target_size_fraction) {
    search.mutable_budget()->set_size_fraction(*options.target_size_fraction);
  } else if (options.target_size_bytes) {
    search.mutable_budget()->set_size_bytes(*options.target_size_bytes);
  } else if (options.target_bops) {
    search.mutable_budget()->set_bops(*options.target_bops);
  }
  for (const SubmitOptions::LayerBits& layer : options.layers) {
    v1::LayerOptions* out = search.add_layers();
    out->set_name(layer.name);
    for (int bits : layer.bits) out->add_bits(bits);
  }
  search.set_pin_first_last(options.pin_first_last);
  if (options.activation_bits) {
    search.set_activation_bits(*options.activation_bits);
  }
  search.set_candidates(options.candidates.value_or(0));
  search.set_max_layers(options.max_layers.value_or(0));
  if (options.finetune_steps)
    search.set_finetune_steps(*options.finetune_steps);
  if (options.warmup_steps) search.set_warmup_steps(*options.warmup_steps);
  if (options.final_steps)
    search.set_final_finetune_steps(*options.final_steps);
  search.set_learning_rate(options.learning_rate.value_or(0));
  search.set_batch_size(options.batch_size.value_or(0));
  if (options.lambda) search.set_lambda(*options.lambda);
  search.set_strategy(options.strategy);
  search.set_selection(options.selection);
  search.set_refresh_fisher(options.refresh_fisher);
  search.set_land_on_budget(options.land_on_budget);
  search.set_knapsack_guided(options.knapsack_guided);
  for (int bits : options.activation_levels) search.add_activation_levels(bits);
  search.set_total_finetune_steps(options.total_finetune_steps.value_or(0));
  search.set_hutchinson_samples(options.hutchinson_samples.value_or(0));
  search.set_seed(options.seed);
  return request;
}

v1::ListJobsRequest BuildListRequest(const ListOptions& options) {
  v1::ListJobsRequest request;
  request.set_state(options.state);
  request.set_limit(options.limit.value_or(0));
  return request;
}

absl::StatusOr<v1::EvaluatePolicyRequest> BuildEvalRequest(
    const EvalOptions& options) {
  SubmitOptions data = options.data;
  data.bits = {8};
  data.target_avg_bits = 8;  // unused by EvaluatePolicy
  MIXQ_ASSIGN_OR_RETURN(v1::SubmitJobRequest submit, BuildSubmitRequest(data));
  v1::EvaluatePolicyRequest request;
  *request.mutable_spec() = std::move(*submit.mutable_spec());
  request.mutable_spec()->clear_search();
  request.set_default_bits(options.default_bits);
  for (const SubmitOptions::LayerBits& layer : options.layers) {
    v1::LayerBits* entry = request.add_layers();
    entry->set_name(layer.name);
    entry->set_bits(layer.bits.empty() ? 0 : layer.bits[0]);
  }
  request.set_mode(options.mode);
  if (options.activation_bits) {
    request.set_activation_bits(*options.activation_bits);
  }
  request.set_finetune_steps(options.finetune_steps.value_or(0));
  request.set_seed(options.data.seed);
  return request;
}

v1::QueryBestPoliciesRequest BuildBestRequest(const BestOptions& options) {
  v1::QueryBestPoliciesRequest request;
  request.set_job_id(options.job_id);
  request.set_top_k(options.top_k.value_or(0));
  request.set_max_avg_bits(options.max_avg_bits);
  request.set_max_size_bytes(options.max_size_bytes);
  request.set_max_bops(options.max_bops);
  // A model hash names no job to rank alone: it always spans the model's jobs.
  request.set_same_model(options.same_model || !options.model_sha256.empty());
  request.set_model_sha256(options.model_sha256);
  request.set_resolve(options.resolve);
  return request;
}

v1::GetParetoFrontRequest BuildParetoRequest(const ParetoOptions& options) {
  v1::GetParetoFrontRequest request;
  request.set_job_id(options.job_id);
  // As for `best`: a model hash always spans the model's jobs.
  request.set_same_model(options.same_model || !options.model_sha256.empty());
  request.set_model_sha256(options.model_sha256);
  return request;
}

int RunInvocation(const Invocation& invocation, std::ostream& out,
                  std::ostream& err) {
  absl::StatusOr<std::shared_ptr<grpc::Channel>> channel =
      MakeChannel(invocation.global);
  if (!channel.ok()) {
    err << "error: " << channel.status().message() << "\n";
    return kExitUsage;
  }
  Runner runner(invocation.global, *channel, out, err);
  return std::visit(runner, invocation.command);
}

}  // namespace mixq::client
