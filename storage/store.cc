#include "storage/store.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <map>
#include <type_traits>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/memory/memory.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "storage/migrations.h"
#include "storage/sqlite.h"
#include "util/logging.h"
#include "util/status_macros.h"

// Column lists shared by several queries, as literals so every statement is
// still one constant string. ReadJob and ReadPolicy read them in this order.
#define MIXQ_JOB_COLUMNS                                                \
  "id, request_id, spec, model_sha256, inputs_sha256, labels_sha256, "  \
  "state, error, created_ms, started_ms, finished_ms, steps_done, "     \
  "fp32_size_bytes, strategy, export_sha256, val_samples, val_source, " \
  "fp32_val_loss, fp32_val_accuracy, unclean_starts"
#define MIXQ_POLICY_COLUMNS                                                \
  "step, kind, rank, chosen, bits, avg_bits, size_bytes, loss, accuracy, " \
  "omega, perf_index, bops, activation_bits, val_loss, val_accuracy, "     \
  "export_sha256"

namespace mixq::storage {

absl::string_view JobStateName(JobState state) {
  switch (state) {
    case JobState::kQueued:
      return "queued";
    case JobState::kRunning:
      return "running";
    case JobState::kSucceeded:
      return "succeeded";
    case JobState::kFailed:
      return "failed";
    case JobState::kCancelled:
      return "cancelled";
  }
  return "unknown";
}

bool IsTerminal(JobState state) {
  return state == JobState::kSucceeded || state == JobState::kFailed ||
         state == JobState::kCancelled;
}

absl::string_view PolicyKindName(PolicyKind kind) {
  switch (kind) {
    case PolicyKind::kCandidate:
      return "candidate";
    case PolicyKind::kFinetuned:
      return "finetuned";
    case PolicyKind::kFinal:
      return "final";
  }
  return "unknown";
}

namespace {

// How long a connection waits for a lock held by another process (or, for
// the reader, for WAL recovery) before failing with UNAVAILABLE.
constexpr int kBusyTimeoutMs = 10000;

// The writer serializes its own connection with a mutex, as does the
// reader, so SQLite's per-connection mutex would only add cost.
constexpr int kWriterFlags =
    SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX;
constexpr int kReaderFlags = SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX;

constexpr int64_t kMaxJobState = static_cast<int64_t>(JobState::kCancelled);
constexpr int64_t kMaxPolicyKind = static_cast<int64_t>(PolicyKind::kFinal);
// PRAGMA auto_vacuum's value for INCREMENTAL.
constexpr int64_t kIncrementalVacuum = 2;

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// SQLite stores NaN as NULL; read it back as NaN.
double ReadDouble(const Statement& row, int column) {
  if (row.ColumnIsNull(column)) return std::numeric_limits<double>::quiet_NaN();
  return row.ColumnDouble(column);
}

std::string BitsToText(const std::vector<int32_t>& bits) {
  return absl::StrJoin(bits, ",");
}

absl::StatusOr<std::vector<int32_t>> BitsFromText(absl::string_view text) {
  std::vector<int32_t> bits;
  for (absl::string_view piece : absl::StrSplit(text, ',', absl::SkipEmpty())) {
    int32_t value;
    if (!absl::SimpleAtoi(piece, &value)) {
      return absl::DataLossError(
          absl::StrCat("policies.bits: invalid value \"", text, "\""));
    }
    bits.push_back(value);
  }
  return bits;
}

// Reads a row of MIXQ_JOB_COLUMNS.
absl::StatusOr<JobRecord> ReadJob(const Statement& row) {
  JobRecord job;
  job.id = row.ColumnText(0);
  job.request_id = row.ColumnText(1);  // NULL reads as ""
  job.spec = row.ColumnText(2);
  job.model_sha256 = row.ColumnText(3);
  job.inputs_sha256 = row.ColumnText(4);
  job.labels_sha256 = row.ColumnText(5);
  const int64_t state = row.ColumnInt64(6);
  if (state < 0 || state > kMaxJobState) {
    return absl::DataLossError(absl::StrCat("jobs.state: invalid value ", state,
                                            " for job \"", job.id, "\""));
  }
  job.state = static_cast<JobState>(state);
  job.error = row.ColumnText(7);
  job.created_ms = row.ColumnInt64(8);
  job.started_ms = row.ColumnInt64(9);
  job.finished_ms = row.ColumnInt64(10);
  job.steps_done = static_cast<int32_t>(row.ColumnInt64(11));
  job.fp32_size_bytes = ReadDouble(row, 12);
  job.strategy = row.ColumnText(13);
  job.export_sha256 = row.ColumnText(14);
  job.val_samples = static_cast<int32_t>(row.ColumnInt64(15));
  job.val_source = row.ColumnText(16);
  job.fp32_val_loss = ReadDouble(row, 17);
  job.fp32_val_accuracy = ReadDouble(row, 18);
  job.unclean_starts = static_cast<int32_t>(row.ColumnInt64(19));
  return job;
}

// Reads a row of MIXQ_POLICY_COLUMNS.
absl::StatusOr<PolicyRecord> ReadPolicy(const Statement& row) {
  PolicyRecord policy;
  policy.step = static_cast<int32_t>(row.ColumnInt64(0));
  const int64_t kind = row.ColumnInt64(1);
  if (kind < 0 || kind > kMaxPolicyKind) {
    return absl::DataLossError(
        absl::StrCat("policies.kind: invalid value ", kind));
  }
  policy.kind = static_cast<PolicyKind>(kind);
  policy.rank = static_cast<int32_t>(row.ColumnInt64(2));
  policy.chosen = row.ColumnInt64(3) != 0;
  MIXQ_ASSIGN_OR_RETURN(policy.bits, BitsFromText(row.ColumnText(4)));
  policy.avg_bits = ReadDouble(row, 5);
  policy.size_bytes = ReadDouble(row, 6);
  policy.loss = ReadDouble(row, 7);
  policy.accuracy = ReadDouble(row, 8);
  policy.omega = ReadDouble(row, 9);
  policy.index = ReadDouble(row, 10);
  policy.bops = row.ColumnIsNull(11) ? 0 : row.ColumnInt64(11);
  policy.activation_bits =
      row.ColumnIsNull(12) ? 0 : static_cast<int32_t>(row.ColumnInt64(12));
  policy.val_loss = ReadDouble(row, 13);
  policy.val_accuracy = ReadDouble(row, 14);
  policy.export_sha256 = row.ColumnText(15);
  return policy;
}

// INVALID_ARGUMENT unless `table` is empty or has distinct bits in 1..32
// and one row of one value per bit-width for each of `num_layers` layers.
absl::Status ValidateSensitivities(const SensitivityRecord& table,
                                   size_t num_layers) {
  if (table.empty()) return absl::OkStatus();
  constexpr int32_t kMaxBits = 32;
  for (size_t i = 0; i < table.bits.size(); ++i) {
    const int32_t b = table.bits[i];
    if (b < 1 || b > kMaxBits ||
        std::find(table.bits.begin(), table.bits.begin() + i, b) !=
            table.bits.begin() + i) {
      return absl::InvalidArgumentError(
          absl::StrCat("sensitivities.bits[", i, "]: ", b,
                       " is outside 1..32 or listed twice"));
    }
  }
  if (table.omega.size() != num_layers) {
    return absl::InvalidArgumentError(
        absl::StrCat("sensitivities: ", table.omega.size(),
                     " rows, the job has ", num_layers, " layers"));
  }
  for (size_t l = 0; l < num_layers; ++l) {
    if (table.omega[l].size() != table.bits.size()) {
      return absl::InvalidArgumentError(
          absl::StrCat("sensitivities.omega[", l, "]: ", table.omega[l].size(),
                       " values for ", table.bits.size(), " bit-widths"));
    }
  }
  return absl::OkStatus();
}

absl::Status InsertSensitivities(Database& db, const std::string& job_id,
                                 int32_t step, const SensitivityRecord& table) {
  if (table.empty()) return absl::OkStatus();
  MIXQ_ASSIGN_OR_RETURN(
      Statement insert,
      db.Prepare("INSERT INTO sensitivities (job_id, step, layer, bits, "
                 "omega) VALUES (?1, ?2, ?3, ?4, ?5)"));
  for (size_t l = 0; l < table.omega.size(); ++l) {
    for (size_t c = 0; c < table.bits.size(); ++c) {
      insert.Reset();
      insert.BindText(1, job_id);
      insert.BindInt64(2, step);
      insert.BindInt64(3, static_cast<int64_t>(l));
      insert.BindInt64(4, table.bits[c]);
      insert.BindDouble(5, table.omega[l][c]);
      MIXQ_RETURN_IF_ERROR(insert.Run());
    }
  }
  return absl::OkStatus();
}

absl::Status JobNotFound(const std::string& id) {
  return absl::NotFoundError(absl::StrCat("job \"", id, "\" not found"));
}

absl::Status CheckJobExists(Database& db, const std::string& id) {
  MIXQ_ASSIGN_OR_RETURN(Statement query,
                        db.Prepare("SELECT 1 FROM jobs WHERE id = ?1"));
  query.BindText(1, id);
  MIXQ_ASSIGN_OR_RETURN(const bool found, query.Step());
  if (!found) return JobNotFound(id);
  return absl::OkStatus();
}

absl::StatusOr<size_t> CountLayers(Database& db, const std::string& job_id) {
  MIXQ_ASSIGN_OR_RETURN(
      Statement query,
      db.Prepare("SELECT count(*) FROM job_layers WHERE job_id = ?1"));
  query.BindText(1, job_id);
  MIXQ_ASSIGN_OR_RETURN(const bool has_row, query.Step());
  if (!has_row) return absl::InternalError("count(*) returned no row");
  return static_cast<size_t>(query.ColumnInt64(0));
}

// INVALID_ARGUMENT unless `policy` has kind `kind` and one bit-width per
// layer. `what` names the policy in messages.
absl::Status ValidatePolicy(const PolicyRecord& policy, PolicyKind kind,
                            size_t num_layers, absl::string_view what) {
  if (policy.kind != kind) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": kind is ", PolicyKindName(policy.kind),
                     ", expected ", PolicyKindName(kind)));
  }
  if (policy.bits.size() != num_layers) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": ", policy.bits.size(),
                     " bit-widths for a job with ", num_layers, " layers"));
  }
  return absl::OkStatus();
}

absl::StatusOr<Statement> PrepareInsertPolicy(Database& db) {
  return db.Prepare(
      "INSERT INTO policies (job_id, " MIXQ_POLICY_COLUMNS
      ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, "
      "?14, ?15, ?16, ?17)");
}

// Runs `insert` (from PrepareInsertPolicy) for one policy.
absl::Status InsertPolicy(Statement& insert, const std::string& job_id,
                          const PolicyRecord& policy) {
  insert.Reset();
  insert.BindText(1, job_id);
  insert.BindInt64(2, policy.step);
  insert.BindInt64(3, static_cast<int64_t>(policy.kind));
  insert.BindInt64(4, policy.rank);
  insert.BindInt64(5, policy.chosen ? 1 : 0);
  insert.BindText(6, BitsToText(policy.bits));
  insert.BindDouble(7, policy.avg_bits);
  insert.BindDouble(8, policy.size_bytes);
  insert.BindDouble(9, policy.loss);
  insert.BindDouble(10, policy.accuracy);
  insert.BindDouble(11, policy.omega);
  insert.BindDouble(12, policy.index);
  if (policy.bops > 0) {
    insert.BindInt64(13, policy.bops);
  } else {
    insert.BindNull(13);  // unknown
  }
  if (policy.activation_bits > 0) {
    insert.BindInt64(14, policy.activation_bits);
  } else {
    insert.BindNull(14);  // unknown
  }
  insert.BindDouble(15, policy.val_loss);  // NaN binds NULL
  insert.BindDouble(16, policy.val_accuracy);
  insert.BindText(17, policy.export_sha256);
  return insert.Run();
}

// Reads every remaining row of `query` with `read_row`.
template <typename T>
absl::StatusOr<std::vector<T>> ReadRows(
    Statement& query, absl::StatusOr<T> (*read_row)(const Statement&)) {
  std::vector<T> rows;
  while (true) {
    MIXQ_ASSIGN_OR_RETURN(const bool has_row, query.Step());
    if (!has_row) return rows;
    MIXQ_ASSIGN_OR_RETURN(T row, read_row(query));
    rows.push_back(std::move(row));
  }
}

// Inserts or replaces the job's one checkpoint.
absl::Status WriteCheckpoint(Database& db, const std::string& job_id,
                             int32_t step, absl::string_view state) {
  MIXQ_ASSIGN_OR_RETURN(
      Statement save,
      db.Prepare("INSERT INTO checkpoints (job_id, step, state, updated_ms)"
                 " VALUES (?1, ?2, ?3, ?4) ON CONFLICT (job_id) DO UPDATE"
                 " SET step = excluded.step, state = excluded.state,"
                 " updated_ms = excluded.updated_ms"));
  save.BindText(1, job_id);
  save.BindInt64(2, step);
  save.BindBlob(3, state);
  save.BindInt64(4, NowMs());
  return save.Run();
}

absl::Status DeleteCheckpoint(Database& db, const std::string& job_id) {
  MIXQ_ASSIGN_OR_RETURN(
      Statement statement,
      db.Prepare("DELETE FROM checkpoints WHERE job_id = ?1"));
  statement.BindText(1, job_id);
  return statement.Run();
}

// PRAGMA quick_check: the B-tree structure, records and indexes' counts
// (integrity_check without the slow index-content comparison). DATA_LOSS
// quoting SQLite's first finding unless the file is sound.
absl::Status CheckIntegrity(Database& db) {
  MIXQ_ASSIGN_OR_RETURN(Statement check, db.Prepare("PRAGMA quick_check(5)"));
  std::vector<std::string> findings;
  while (true) {
    MIXQ_ASSIGN_OR_RETURN(const bool has_row, check.Step());
    if (!has_row) break;
    findings.push_back(check.ColumnText(0));
  }
  if (findings.size() == 1 && findings[0] == "ok") return absl::OkStatus();
  return absl::DataLossError(absl::StrCat(
      "the database is corrupt (integrity check: ",
      findings.empty() ? "no result" : absl::StrJoin(findings, "; "),
      "); restore it from a backup or move it away to start empty"));
}

absl::Status ConfigureWriter(Database& db) {
  MIXQ_ASSIGN_OR_RETURN(Statement wal, db.Prepare("PRAGMA journal_mode = WAL"));
  MIXQ_ASSIGN_OR_RETURN(const bool has_row, wal.Step());
  const std::string mode = has_row ? wal.ColumnText(0) : "";
  if (mode != "wal") {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot enable WAL journal mode (got \"", mode, "\")"));
  }
  // A checkpoint's transaction passes through the WAL whole (140 MB for
  // ResNet-18), and SQLite keeps the WAL file at its largest size unless
  // told: the first write after each WAL reset truncates it to this.
  const std::string pragmas = absl::StrCat(
      "PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; "
      "PRAGMA journal_size_limit = ",
      kWalSizeLimitBytes);
  return db.Exec(pragmas.c_str());
}

// Switches the database to incremental auto-vacuum (once: a database made
// before it needs one VACUUM, which rewrites the file), so that pages freed by
// dropped checkpoints can be given back to the file system. Best effort: a
// VACUUM needs free space up to the file's size, and a server must still
// start on a full disk, so a failed one is logged and the store keeps its
// old mode (freed pages are then reused, not given back).
absl::Status EnableIncrementalVacuum(Database& db) {
  {  // finalized before VACUUM, which refuses to run beside a statement
    MIXQ_ASSIGN_OR_RETURN(Statement mode, db.Prepare("PRAGMA auto_vacuum"));
    MIXQ_ASSIGN_OR_RETURN(const bool has_row, mode.Step());
    if (has_row && mode.ColumnInt64(0) == kIncrementalVacuum) {
      return absl::OkStatus();
    }
  }
  if (const absl::Status vacuum =
          db.Exec("PRAGMA auto_vacuum = INCREMENTAL; VACUUM");
      !vacuum.ok()) {
    Log(LogLevel::kWarning,
        "store: not converted to incremental vacuum; freed pages stay in "
        "the file",
        {{"error", vacuum.ToString()}});
  }
  return absl::OkStatus();
}

}  // namespace

struct Store::Impl {
  Impl(int version, Database writer_db, Database reader_db)
      : schema_version(version),
        writer(std::move(writer_db)),
        reader(std::move(reader_db)) {}

  // Runs `write(db)` on the writer connection inside BEGIN IMMEDIATE and
  // commits if it succeeds (else rolls back). `write` returns a Status or a
  // StatusOr. Blocks while another write runs.
  template <typename Fn>
  std::invoke_result_t<Fn, Database&> Write(Fn write)
      ABSL_LOCKS_EXCLUDED(writer_mu) {
    absl::MutexLock lock(&writer_mu);
    return InTransaction(writer, &Transaction::Begin, write);
  }

  // Runs `read(db)` on the read-only connection inside one read transaction,
  // so all its queries see the same snapshot. Blocks while another read runs.
  template <typename Fn>
  std::invoke_result_t<Fn, Database&> Read(Fn read)
      ABSL_LOCKS_EXCLUDED(reader_mu) {
    absl::MutexLock lock(&reader_mu);
    return InTransaction(reader, &Transaction::BeginRead, read);
  }

  template <typename Fn>
  static std::invoke_result_t<Fn, Database&> InTransaction(
      Database& db, absl::Status (Transaction::*begin)(), Fn& fn) {
    Transaction transaction(db);
    MIXQ_RETURN_IF_ERROR((transaction.*begin)());
    auto result = fn(db);
    if (!result.ok()) return result;
    MIXQ_RETURN_IF_ERROR(transaction.Commit());
    return result;
  }

  // Gives the file's free pages back to the file system (PRAGMA
  // incremental_vacuum), after a write that dropped a job's checkpoint: a
  // checkpoint is 12 bytes per parameter (140 MB for ResNet-18), and
  // without this the file kept its largest checkpoints' size for good.
  // Best effort: the write before it has committed, so a failure (a full
  // disk) is only logged, and the pages stay free for SQLite to reuse.
  // Then the WAL, which the job's last checkpoint grew, is checkpointed
  // and truncated (TRUNCATE waits, within the busy timeout, for readers of
  // older snapshots: read methods are short): journal_size_limit alone
  // shrinks it only at the next write, which an idle server may not make.
  void ReleaseFreePages() ABSL_LOCKS_EXCLUDED(writer_mu) {
    absl::MutexLock lock(&writer_mu);
    absl::Status status = writer.Exec("PRAGMA incremental_vacuum");
    if (status.ok()) status = writer.Exec("PRAGMA wal_checkpoint(TRUNCATE)");
    if (!status.ok()) {
      Log(LogLevel::kWarning, "store: free pages not released",
          {{"error", status.ToString()}});
    }
  }

  const int schema_version;

  // All writes and checkpoints go through `writer`: SQLite 3.40's WAL-reset
  // bug corrupts the database when two connections write or checkpoint at
  // once. It is declared before `reader` so that it closes last: the last
  // connection to close checkpoints the WAL, and that must be the writer.
  absl::Mutex writer_mu;
  Database writer ABSL_GUARDED_BY(writer_mu);

  // Read-only, so it can never write or checkpoint. In WAL mode its reads
  // do not block the writer, nor the writer them.
  absl::Mutex reader_mu;
  Database reader ABSL_GUARDED_BY(reader_mu);
};

Store::Store(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Store::~Store() = default;

absl::StatusOr<std::unique_ptr<Store>> Store::Open(const std::string& path) {
  const std::string context = absl::StrCat("database ", path);
  absl::StatusOr<Database> writer = Database::Open(path, kWriterFlags);
  if (!writer.ok()) return Annotate(writer.status(), context);
  MIXQ_RETURN_IF_ERROR(
      Annotate(writer->SetBusyTimeout(kBusyTimeoutMs), context));
  // The first read fails on a file that is not SQLite (NOTADB) or whose
  // header is damaged (CORRUPT → DATA_LOSS).
  MIXQ_RETURN_IF_ERROR(Annotate(CheckIntegrity(*writer), context));
  absl::StatusOr<int> version = Migrate(*writer);
  if (!version.ok()) return Annotate(version.status(), context);
  MIXQ_RETURN_IF_ERROR(Annotate(ConfigureWriter(*writer), context));
  MIXQ_RETURN_IF_ERROR(Annotate(EnableIncrementalVacuum(*writer), context));

  absl::StatusOr<Database> reader = Database::Open(path, kReaderFlags);
  if (!reader.ok()) return Annotate(reader.status(), context);
  MIXQ_RETURN_IF_ERROR(
      Annotate(reader->SetBusyTimeout(kBusyTimeoutMs), context));
  return absl::WrapUnique(new Store(std::make_unique<Impl>(
      *version, std::move(writer).value(), std::move(reader).value())));
}

int Store::schema_version() const { return impl_->schema_version; }

// ---------------------------------------------------------------- artifacts

absl::Status Store::PutArtifact(const std::string& sha256,
                                absl::string_view data) {
  if (sha256.empty()) {
    return absl::InvalidArgumentError("artifact sha256: must not be empty");
  }
  return impl_->Write([&](Database& db) -> absl::Status {
    MIXQ_ASSIGN_OR_RETURN(
        Statement query,
        db.Prepare("SELECT 1 FROM artifacts WHERE sha256 = ?1"));
    query.BindText(1, sha256);
    MIXQ_ASSIGN_OR_RETURN(const bool stored, query.Step());
    // Content-addressed: the same hash means the same bytes, so there is
    // nothing to write (and no need to copy a large blob into SQLite).
    if (stored) return absl::OkStatus();
    MIXQ_ASSIGN_OR_RETURN(
        Statement insert,
        db.Prepare("INSERT INTO artifacts (sha256, data, size, created_ms) "
                   "VALUES (?1, ?2, ?3, ?4)"));
    insert.BindText(1, sha256);
    insert.BindBlob(2, data);
    insert.BindInt64(3, static_cast<int64_t>(data.size()));
    insert.BindInt64(4, NowMs());
    return insert.Run();
  });
}

absl::StatusOr<std::string> Store::GetArtifact(
    const std::string& sha256) const {
  return impl_->Read([&](Database& db) -> absl::StatusOr<std::string> {
    MIXQ_ASSIGN_OR_RETURN(
        Statement query,
        db.Prepare("SELECT data FROM artifacts WHERE sha256 = ?1"));
    query.BindText(1, sha256);
    MIXQ_ASSIGN_OR_RETURN(const bool found, query.Step());
    if (!found) {
      return absl::NotFoundError(
          absl::StrCat("artifact \"", sha256, "\" not found"));
    }
    return query.ColumnBlob(0);
  });
}

absl::StatusOr<std::optional<int64_t>> Store::ArtifactSize(
    const std::string& sha256) const {
  return impl_->Read(
      [&](Database& db) -> absl::StatusOr<std::optional<int64_t>> {
        MIXQ_ASSIGN_OR_RETURN(
            Statement query,
            db.Prepare("SELECT size FROM artifacts WHERE sha256 = ?1"));
        query.BindText(1, sha256);
        MIXQ_ASSIGN_OR_RETURN(const bool found, query.Step());
        if (!found) return std::nullopt;
        return query.ColumnInt64(0);
      });
}

absl::Status Store::DeleteArtifact(const std::string& sha256) {
  return impl_->Write([&](Database& db) -> absl::Status {
    MIXQ_ASSIGN_OR_RETURN(
        Statement remove,
        db.Prepare("DELETE FROM artifacts WHERE sha256 = ?1"));
    remove.BindText(1, sha256);
    return remove.Run();
  });
}

int64_t Store::max_artifact_bytes() const {
  // The hash, size and time columns and the record header take well under
  // this; SQLite refuses a row longer than its length limit.
  constexpr int64_t kRowOverheadBytes = 4096;
  absl::MutexLock lock(&impl_->writer_mu);
  return impl_->writer.MaxLength() - kRowOverheadBytes;
}

// --------------------------------------------------------------------- jobs

absl::Status Store::CreateJob(const JobRecord& job,
                              const std::vector<LayerRecord>& layers) {
  if (job.id.empty()) {
    return absl::InvalidArgumentError("job id: must not be empty");
  }
  return impl_->Write([&](Database& db) -> absl::Status {
    // Checked first (rather than mapped from the constraint error) so the
    // message says which key is taken.
    const absl::Status exists = CheckJobExists(db, job.id);
    if (exists.ok()) {
      return absl::AlreadyExistsError(
          absl::StrCat("job \"", job.id, "\" already exists"));
    }
    if (!absl::IsNotFound(exists)) return exists;
    if (!job.request_id.empty()) {
      MIXQ_ASSIGN_OR_RETURN(
          Statement query,
          db.Prepare("SELECT id FROM jobs WHERE request_id = ?1"));
      query.BindText(1, job.request_id);
      MIXQ_ASSIGN_OR_RETURN(const bool taken, query.Step());
      if (taken) {
        return absl::AlreadyExistsError(absl::StrCat(
            "request_id \"", job.request_id, "\" already used by job \"",
            query.ColumnText(0), "\""));
      }
    }

    MIXQ_ASSIGN_OR_RETURN(
        Statement insert,
        db.Prepare("INSERT INTO jobs (" MIXQ_JOB_COLUMNS
                   ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, "
                   "?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, 0)"));
    insert.BindText(1, job.id);
    if (job.request_id.empty()) {
      insert.BindNull(2);  // UNIQUE ignores NULLs, so many jobs may have none
    } else {
      insert.BindText(2, job.request_id);
    }
    insert.BindText(3, job.spec);
    insert.BindText(4, job.model_sha256);
    insert.BindText(5, job.inputs_sha256);
    insert.BindText(6, job.labels_sha256);
    insert.BindInt64(7, static_cast<int64_t>(job.state));
    insert.BindText(8, job.error);
    insert.BindInt64(9, job.created_ms);
    insert.BindInt64(10, job.started_ms);
    insert.BindInt64(11, job.finished_ms);
    insert.BindInt64(12, job.steps_done);
    insert.BindDouble(13, job.fp32_size_bytes);
    insert.BindText(14, job.strategy);
    insert.BindText(15, job.export_sha256);
    insert.BindInt64(16, job.val_samples);
    insert.BindText(17, job.val_source);
    insert.BindDouble(18, job.fp32_val_loss);
    insert.BindDouble(19, job.fp32_val_accuracy);
    MIXQ_RETURN_IF_ERROR(insert.Run());

    MIXQ_ASSIGN_OR_RETURN(
        Statement insert_layer,
        db.Prepare("INSERT INTO job_layers (job_id, idx, name, num_weights, "
                   "macs) VALUES (?1, ?2, ?3, ?4, ?5)"));
    for (size_t i = 0; i < layers.size(); ++i) {
      insert_layer.Reset();
      insert_layer.BindText(1, job.id);
      insert_layer.BindInt64(2, static_cast<int64_t>(i));
      insert_layer.BindText(3, layers[i].name);
      insert_layer.BindInt64(4, layers[i].num_weights);
      insert_layer.BindInt64(5, layers[i].macs);
      MIXQ_RETURN_IF_ERROR(insert_layer.Run());
    }
    return absl::OkStatus();
  });
}

absl::StatusOr<JobRecord> Store::GetJob(const std::string& id) const {
  return impl_->Read([&](Database& db) -> absl::StatusOr<JobRecord> {
    MIXQ_ASSIGN_OR_RETURN(
        Statement query,
        db.Prepare("SELECT " MIXQ_JOB_COLUMNS " FROM jobs WHERE id = ?1"));
    query.BindText(1, id);
    MIXQ_ASSIGN_OR_RETURN(const bool found, query.Step());
    if (!found) return JobNotFound(id);
    return ReadJob(query);
  });
}

absl::StatusOr<std::optional<JobRecord>> Store::FindJobByRequestId(
    const std::string& request_id) const {
  // Jobs without a request id store NULL, which no lookup matches.
  if (request_id.empty()) return std::nullopt;
  return impl_->Read(
      [&](Database& db) -> absl::StatusOr<std::optional<JobRecord>> {
        MIXQ_ASSIGN_OR_RETURN(Statement query,
                              db.Prepare("SELECT " MIXQ_JOB_COLUMNS
                                         " FROM jobs WHERE request_id = ?1"));
        query.BindText(1, request_id);
        MIXQ_ASSIGN_OR_RETURN(const bool found, query.Step());
        if (!found) return std::nullopt;
        MIXQ_ASSIGN_OR_RETURN(JobRecord job, ReadJob(query));
        return job;
      });
}

absl::StatusOr<std::vector<JobRecord>> Store::ListJobs(
    const ListJobsOptions& options) const {
  if (options.limit <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("limit: must be positive, got ", options.limit));
  }
  return impl_->Read(
      [&](Database& db) -> absl::StatusOr<std::vector<JobRecord>> {
        // rowid breaks ties between jobs created in the same millisecond:
        // later inserts first.
        absl::StatusOr<Statement> query = db.Prepare(
            "SELECT " MIXQ_JOB_COLUMNS
            " FROM jobs"
            " WHERE (?2 IS NULL OR state = ?2)"
            "   AND (?3 IS NULL OR (created_ms, rowid) <"
            "        (SELECT created_ms, rowid FROM jobs WHERE id = ?3))"
            " ORDER BY created_ms DESC, rowid DESC LIMIT ?1");
        if (!query.ok()) return query.status();
        query->BindInt64(1, options.limit);
        if (options.state.has_value()) {
          query->BindInt64(2, static_cast<int64_t>(*options.state));
        } else {
          query->BindNull(2);
        }
        if (options.after_job_id.empty()) {
          query->BindNull(3);
        } else {
          query->BindText(3, options.after_job_id);
        }
        return ReadRows(*query, &ReadJob);
      });
}

absl::StatusOr<std::vector<JobRecord>> Store::ListJobsForModel(
    const std::string& model_sha256) const {
  return impl_->Read(
      [&](Database& db) -> absl::StatusOr<std::vector<JobRecord>> {
        MIXQ_ASSIGN_OR_RETURN(
            Statement query,
            db.Prepare("SELECT " MIXQ_JOB_COLUMNS
                       " FROM jobs WHERE model_sha256 = ?1"
                       " ORDER BY created_ms DESC, rowid DESC"));
        query.BindText(1, model_sha256);
        return ReadRows(query, &ReadJob);
      });
}

absl::StatusOr<std::vector<LayerRecord>> Store::GetLayers(
    const std::string& job_id) const {
  return impl_->Read(
      [&](Database& db) -> absl::StatusOr<std::vector<LayerRecord>> {
        MIXQ_RETURN_IF_ERROR(CheckJobExists(db, job_id));
        MIXQ_ASSIGN_OR_RETURN(
            Statement query,
            db.Prepare("SELECT name, num_weights, macs FROM job_layers"
                       " WHERE job_id = ?1 ORDER BY idx"));
        query.BindText(1, job_id);
        return ReadRows(
            query, +[](const Statement& row) -> absl::StatusOr<LayerRecord> {
              return LayerRecord{row.ColumnText(0), row.ColumnInt64(1),
                                 row.ColumnInt64(2)};
            });
      });
}

absl::Status Store::UpdateJobState(const std::string& id, JobState state,
                                   const std::string& error, int64_t started_ms,
                                   int64_t finished_ms) {
  MIXQ_RETURN_IF_ERROR(impl_->Write([&](Database& db) -> absl::Status {
    MIXQ_ASSIGN_OR_RETURN(
        Statement update,
        db.Prepare(
            "UPDATE jobs SET state = ?2, error = ?3,"
            " started_ms = CASE WHEN ?4 != 0 THEN ?4 ELSE started_ms END,"
            " finished_ms = CASE WHEN ?5 != 0 THEN ?5 ELSE finished_ms END"
            " WHERE id = ?1"));
    update.BindText(1, id);
    update.BindInt64(2, static_cast<int64_t>(state));
    update.BindText(3, error);
    update.BindInt64(4, started_ms);
    update.BindInt64(5, finished_ms);
    MIXQ_RETURN_IF_ERROR(update.Run());
    if (db.Changes() == 0) return JobNotFound(id);
    if (IsTerminal(state)) MIXQ_RETURN_IF_ERROR(DeleteCheckpoint(db, id));
    return absl::OkStatus();
  }));
  if (IsTerminal(state)) impl_->ReleaseFreePages();
  return absl::OkStatus();
}

absl::Status Store::StartJob(const std::string& id, int64_t started_ms) {
  return impl_->Write([&](Database& db) -> absl::Status {
    MIXQ_ASSIGN_OR_RETURN(
        Statement update,
        db.Prepare("UPDATE jobs SET state = ?2, error = '', started_ms = ?3,"
                   " unclean_starts = unclean_starts + 1 WHERE id = ?1"));
    update.BindText(1, id);
    update.BindInt64(2, static_cast<int64_t>(JobState::kRunning));
    update.BindInt64(3, started_ms);
    MIXQ_RETURN_IF_ERROR(update.Run());
    if (db.Changes() == 0) return JobNotFound(id);
    return absl::OkStatus();
  });
}

absl::Status Store::StopJob(const std::string& id) {
  return impl_->Write([&](Database& db) -> absl::Status {
    MIXQ_ASSIGN_OR_RETURN(
        Statement update,
        db.Prepare("UPDATE jobs SET state = ?2, error = '', unclean_starts = 0"
                   " WHERE id = ?1"));
    update.BindText(1, id);
    update.BindInt64(2, static_cast<int64_t>(JobState::kQueued));
    MIXQ_RETURN_IF_ERROR(update.Run());
    if (db.Changes() == 0) return JobNotFound(id);
    return absl::OkStatus();
  });
}

absl::StatusOr<int64_t> Store::SetMaxPageCount(int64_t max_pages) {
  if (max_pages <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_page_count: must be positive, got ", max_pages));
  }
  absl::MutexLock lock(&impl_->writer_mu);
  // A PRAGMA takes no bound parameters (and pragma_max_page_count() reads
  // its argument as a schema name); the value is an integer, so the text
  // can only be a number.
  MIXQ_ASSIGN_OR_RETURN(Statement pragma,
                        impl_->writer.Prepare(absl::StrCat(
                            "PRAGMA max_page_count = ", max_pages)));
  MIXQ_ASSIGN_OR_RETURN(const bool has_row, pragma.Step());
  if (!has_row) return absl::InternalError("max_page_count returned no row");
  return pragma.ColumnInt64(0);
}

absl::Status Store::SetFp32Validation(const std::string& job_id, double loss,
                                      double accuracy) {
  return impl_->Write([&](Database& db) -> absl::Status {
    MIXQ_ASSIGN_OR_RETURN(
        Statement update,
        db.Prepare("UPDATE jobs SET fp32_val_loss = ?2, fp32_val_accuracy = ?3"
                   " WHERE id = ?1"));
    update.BindText(1, job_id);
    update.BindDouble(2, loss);
    update.BindDouble(3, accuracy);
    MIXQ_RETURN_IF_ERROR(update.Run());
    if (db.Changes() == 0) return JobNotFound(job_id);
    return absl::OkStatus();
  });
}

// ------------------------------------------------------------------ results

absl::Status Store::AppendStep(const std::string& job_id,
                               const StepRecord& step,
                               absl::string_view checkpoint) {
  return impl_->Write([&](Database& db) -> absl::Status {
    MIXQ_RETURN_IF_ERROR(CheckJobExists(db, job_id));
    MIXQ_ASSIGN_OR_RETURN(const size_t num_layers, CountLayers(db, job_id));
    const auto validate = [&](const PolicyRecord& policy, PolicyKind kind,
                              absl::string_view what) -> absl::Status {
      MIXQ_RETURN_IF_ERROR(ValidatePolicy(policy, kind, num_layers, what));
      if (policy.step != step.step) {
        return absl::InvalidArgumentError(absl::StrCat(
            what, ": step is ", policy.step, ", expected ", step.step));
      }
      return absl::OkStatus();
    };
    for (size_t i = 0; i < step.candidates.size(); ++i) {
      MIXQ_RETURN_IF_ERROR(validate(step.candidates[i], PolicyKind::kCandidate,
                                    absl::StrCat("candidate ", i)));
    }
    MIXQ_RETURN_IF_ERROR(
        validate(step.finetuned, PolicyKind::kFinetuned, "finetuned policy"));
    MIXQ_RETURN_IF_ERROR(ValidateSensitivities(step.sensitivities, num_layers));

    MIXQ_ASSIGN_OR_RETURN(
        Statement query,
        db.Prepare("SELECT 1 FROM steps WHERE job_id = ?1 AND step = ?2"));
    query.BindText(1, job_id);
    query.BindInt64(2, step.step);
    MIXQ_ASSIGN_OR_RETURN(const bool recorded, query.Step());
    if (recorded) {
      return absl::AlreadyExistsError(absl::StrCat(
          "job \"", job_id, "\" step ", step.step, ": already recorded"));
    }

    MIXQ_ASSIGN_OR_RETURN(
        Statement insert_step,
        db.Prepare("INSERT INTO steps (job_id, step, elapsed_seconds, "
                   "finetune_steps, node_runs, naive_node_runs, "
                   "scoring_seconds, oracle_omega) "
                   "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"));
    insert_step.BindText(1, job_id);
    insert_step.BindInt64(2, step.step);
    insert_step.BindDouble(3, step.elapsed_seconds);
    insert_step.BindInt64(4, step.finetune_steps);
    insert_step.BindInt64(5, step.node_runs);
    insert_step.BindInt64(6, step.naive_node_runs);
    insert_step.BindDouble(7, step.scoring_seconds);
    insert_step.BindDouble(8, step.oracle_omega);
    MIXQ_RETURN_IF_ERROR(insert_step.Run());

    MIXQ_ASSIGN_OR_RETURN(Statement insert_policy, PrepareInsertPolicy(db));
    for (const PolicyRecord& candidate : step.candidates) {
      MIXQ_RETURN_IF_ERROR(InsertPolicy(insert_policy, job_id, candidate));
    }
    MIXQ_RETURN_IF_ERROR(InsertPolicy(insert_policy, job_id, step.finetuned));
    MIXQ_RETURN_IF_ERROR(
        InsertSensitivities(db, job_id, step.step, step.sensitivities));

    MIXQ_ASSIGN_OR_RETURN(
        Statement update,
        db.Prepare("UPDATE jobs SET steps_done = ?2, unclean_starts = 0"
                   " WHERE id = ?1"));
    update.BindText(1, job_id);
    update.BindInt64(2, step.step);
    MIXQ_RETURN_IF_ERROR(update.Run());
    if (checkpoint.empty()) return absl::OkStatus();
    if (step.step == 0) {
      MIXQ_ASSIGN_OR_RETURN(
          Statement warm_start,
          db.Prepare("INSERT OR REPLACE INTO warm_starts (job_id, state) "
                     "VALUES (?1, ?2)"));
      warm_start.BindText(1, job_id);
      warm_start.BindBlob(2, checkpoint);
      MIXQ_RETURN_IF_ERROR(warm_start.Run());
    }
    return WriteCheckpoint(db, job_id, step.step, checkpoint);
  });
}

absl::StatusOr<std::optional<std::string>> Store::GetWarmStart(
    const std::string& job_id) const {
  return impl_->Read(
      [&](Database& db) -> absl::StatusOr<std::optional<std::string>> {
        MIXQ_RETURN_IF_ERROR(CheckJobExists(db, job_id));
        MIXQ_ASSIGN_OR_RETURN(
            Statement query,
            db.Prepare("SELECT state FROM warm_starts WHERE job_id = ?1"));
        query.BindText(1, job_id);
        MIXQ_ASSIGN_OR_RETURN(const bool found, query.Step());
        if (!found) return std::nullopt;
        return query.ColumnBlob(0);
      });
}

absl::Status Store::SaveCheckpoint(const std::string& job_id, int32_t step,
                                   absl::string_view state) {
  if (state.empty() || step < -1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "checkpoint of job \"", job_id, "\": empty, or step ", step, " < -1"));
  }
  return impl_->Write([&](Database& db) -> absl::Status {
    MIXQ_RETURN_IF_ERROR(CheckJobExists(db, job_id));
    return WriteCheckpoint(db, job_id, step, state);
  });
}

absl::StatusOr<std::optional<CheckpointRecord>> Store::GetCheckpoint(
    const std::string& job_id) const {
  return impl_->Read([&](Database& db)
                         -> absl::StatusOr<std::optional<CheckpointRecord>> {
    MIXQ_RETURN_IF_ERROR(CheckJobExists(db, job_id));
    MIXQ_ASSIGN_OR_RETURN(
        Statement query,
        db.Prepare("SELECT step, state FROM checkpoints WHERE job_id = ?1"));
    query.BindText(1, job_id);
    MIXQ_ASSIGN_OR_RETURN(const bool found, query.Step());
    if (!found) return std::nullopt;
    CheckpointRecord record;
    record.step = static_cast<int32_t>(query.ColumnInt64(0));
    record.state = query.ColumnBlob(1);
    return record;
  });
}

absl::Status Store::FinishJob(const std::string& job_id,
                              const PolicyRecord& final_policy,
                              int64_t finished_ms,
                              const std::string& export_sha256) {
  MIXQ_RETURN_IF_ERROR(impl_->Write([&](Database& db) -> absl::Status {
    MIXQ_RETURN_IF_ERROR(CheckJobExists(db, job_id));
    MIXQ_ASSIGN_OR_RETURN(const size_t num_layers, CountLayers(db, job_id));
    MIXQ_RETURN_IF_ERROR(ValidatePolicy(final_policy, PolicyKind::kFinal,
                                        num_layers, "final policy"));

    MIXQ_ASSIGN_OR_RETURN(
        Statement query,
        db.Prepare("SELECT 1 FROM policies WHERE job_id = ?1 AND kind = ?2"));
    query.BindText(1, job_id);
    query.BindInt64(2, static_cast<int64_t>(PolicyKind::kFinal));
    MIXQ_ASSIGN_OR_RETURN(const bool recorded, query.Step());
    if (recorded) {
      return absl::AlreadyExistsError(
          absl::StrCat("job \"", job_id, "\": final policy already recorded"));
    }

    MIXQ_ASSIGN_OR_RETURN(Statement insert_policy, PrepareInsertPolicy(db));
    MIXQ_RETURN_IF_ERROR(InsertPolicy(insert_policy, job_id, final_policy));
    MIXQ_ASSIGN_OR_RETURN(
        Statement update,
        db.Prepare("UPDATE jobs SET state = ?2, error = ?3, finished_ms = ?4, "
                   "export_sha256 = ?5 WHERE id = ?1"));
    update.BindText(1, job_id);
    update.BindInt64(2, static_cast<int64_t>(JobState::kSucceeded));
    update.BindText(3, "");
    update.BindInt64(4, finished_ms);
    update.BindText(5, export_sha256);
    MIXQ_RETURN_IF_ERROR(update.Run());
    return DeleteCheckpoint(db, job_id);
  }));
  impl_->ReleaseFreePages();
  return absl::OkStatus();
}

absl::Status Store::ResetJobResults(const std::string& job_id,
                                    std::optional<int32_t> keep_through) {
  return impl_->Write([&](Database& db) -> absl::Status {
    MIXQ_RETURN_IF_ERROR(CheckJobExists(db, job_id));
    // Below every step, the -1 of a checkpoint taken in the warm-up included.
    const int64_t keep =
        keep_through.value_or(std::numeric_limits<int32_t>::min());
    // The final policy goes whatever its step.
    for (const char* sql :
         {"DELETE FROM policies WHERE job_id = ?1 AND (step > ?2 OR kind = 2)",
          "DELETE FROM steps WHERE job_id = ?1 AND step > ?2",
          "DELETE FROM sensitivities WHERE job_id = ?1 AND step > ?2",
          "DELETE FROM checkpoints WHERE job_id = ?1 AND step > ?2",
          "DELETE FROM warm_starts WHERE job_id = ?1 AND 0 > ?2"}) {
      MIXQ_ASSIGN_OR_RETURN(Statement statement, db.Prepare(sql));
      statement.BindText(1, job_id);
      statement.BindInt64(2, keep);
      MIXQ_RETURN_IF_ERROR(statement.Run());
    }
    MIXQ_ASSIGN_OR_RETURN(
        Statement update,
        db.Prepare("UPDATE jobs SET steps_done = (SELECT coalesce(max(step), 0)"
                   " FROM steps WHERE job_id = ?1) WHERE id = ?1"));
    update.BindText(1, job_id);
    return update.Run();
  });
}

absl::StatusOr<std::vector<StepRecord>> Store::GetSteps(
    const std::string& job_id) const {
  // One snapshot, so a step and its policies are seen together or not at all.
  return impl_->Read(
      [&](Database& db) -> absl::StatusOr<std::vector<StepRecord>> {
        MIXQ_RETURN_IF_ERROR(CheckJobExists(db, job_id));
        MIXQ_ASSIGN_OR_RETURN(
            Statement step_query,
            db.Prepare("SELECT step, elapsed_seconds, finetune_steps, "
                       "node_runs, naive_node_runs, scoring_seconds, "
                       "oracle_omega FROM steps"
                       " WHERE job_id = ?1 ORDER BY step"));
        step_query.BindText(1, job_id);
        MIXQ_ASSIGN_OR_RETURN(
            std::vector<StepRecord> steps,
            ReadRows(
                step_query,
                +[](const Statement& row) -> absl::StatusOr<StepRecord> {
                  StepRecord step;
                  step.step = static_cast<int32_t>(row.ColumnInt64(0));
                  step.elapsed_seconds = ReadDouble(row, 1);
                  // NULL (steps recorded before schema version 3) reads 0.
                  step.finetune_steps =
                      static_cast<int32_t>(row.ColumnInt64(2));
                  step.node_runs = row.ColumnInt64(3);
                  step.naive_node_runs = row.ColumnInt64(4);
                  step.scoring_seconds = row.ColumnDouble(5);
                  step.oracle_omega = row.ColumnDouble(6);
                  return step;
                }));
        std::map<int32_t, StepRecord*> by_number;
        for (StepRecord& step : steps) by_number[step.step] = &step;

        MIXQ_ASSIGN_OR_RETURN(
            Statement policy_query,
            db.Prepare("SELECT " MIXQ_POLICY_COLUMNS
                       " FROM policies WHERE job_id = ?1 AND kind IN (?2, ?3)"
                       " ORDER BY step, rank, id"));
        policy_query.BindText(1, job_id);
        policy_query.BindInt64(2, static_cast<int64_t>(PolicyKind::kCandidate));
        policy_query.BindInt64(3, static_cast<int64_t>(PolicyKind::kFinetuned));
        MIXQ_ASSIGN_OR_RETURN(std::vector<PolicyRecord> policies,
                              ReadRows(policy_query, &ReadPolicy));
        for (PolicyRecord& policy : policies) {
          const auto it = by_number.find(policy.step);
          if (it == by_number.end()) {
            return absl::DataLossError(
                absl::StrCat("job \"", job_id, "\": policy of step ",
                             policy.step, " without a step row"));
          }
          if (policy.kind == PolicyKind::kCandidate) {
            it->second->candidates.push_back(std::move(policy));
          } else {
            it->second->finetuned = std::move(policy);
          }
        }
        return steps;
      });
}

absl::StatusOr<std::optional<SensitivityRecord>> Store::GetSensitivities(
    const std::string& job_id) const {
  return impl_->Read(
      [&](Database& db) -> absl::StatusOr<std::optional<SensitivityRecord>> {
        MIXQ_RETURN_IF_ERROR(CheckJobExists(db, job_id));
        MIXQ_ASSIGN_OR_RETURN(
            Statement query,
            db.Prepare("SELECT layer, bits, omega FROM sensitivities"
                       " WHERE job_id = ?1 AND step = (SELECT min(step) FROM"
                       "  sensitivities WHERE job_id = ?1)"
                       " ORDER BY layer, bits DESC"));
        query.BindText(1, job_id);
        MIXQ_ASSIGN_OR_RETURN(const size_t num_layers, CountLayers(db, job_id));
        SensitivityRecord table;
        table.omega.resize(num_layers);
        std::map<int32_t, size_t> column;  // bits -> column, from layer 0
        size_t values = 0;
        while (true) {
          MIXQ_ASSIGN_OR_RETURN(const bool has_row, query.Step());
          if (!has_row) break;
          const int64_t layer = query.ColumnInt64(0);
          const auto bits = static_cast<int32_t>(query.ColumnInt64(1));
          if (layer < 0 || layer >= static_cast<int64_t>(num_layers)) {
            return absl::DataLossError(
                absl::StrCat("job \"", job_id, "\": sensitivities of layer ",
                             layer, ", the job has ", num_layers));
          }
          if (layer == 0) {
            column.emplace(bits, table.bits.size());
            table.bits.push_back(bits);
          }
          const auto it = column.find(bits);
          if (it == column.end() || it->second != table.omega[layer].size()) {
            return absl::DataLossError(
                absl::StrCat("job \"", job_id, "\": sensitivities of layer ",
                             layer, " do not match layer 0's bit-widths"));
          }
          table.omega[layer].push_back(ReadDouble(query, 2));
          ++values;
        }
        if (values == 0) return std::nullopt;
        if (values != num_layers * table.bits.size()) {
          return absl::DataLossError(
              absl::StrCat("job \"", job_id, "\": sensitivities have ", values,
                           " values for ", num_layers, " layers and ",
                           table.bits.size(), " bit-widths"));
        }
        return table;
      });
}

absl::StatusOr<std::optional<PolicyRecord>> Store::GetFinalPolicy(
    const std::string& job_id) const {
  return impl_->Read(
      [&](Database& db) -> absl::StatusOr<std::optional<PolicyRecord>> {
        MIXQ_RETURN_IF_ERROR(CheckJobExists(db, job_id));
        MIXQ_ASSIGN_OR_RETURN(
            Statement query,
            db.Prepare("SELECT " MIXQ_POLICY_COLUMNS
                       " FROM policies WHERE job_id = ?1 AND kind = ?2"));
        query.BindText(1, job_id);
        query.BindInt64(2, static_cast<int64_t>(PolicyKind::kFinal));
        MIXQ_ASSIGN_OR_RETURN(const bool found, query.Step());
        if (!found) return std::nullopt;
        MIXQ_ASSIGN_OR_RETURN(PolicyRecord policy, ReadPolicy(query));
        return policy;
      });
}

namespace {

absl::Status CheckQuery(const PolicyLimits& limits, int32_t top_k) {
  if (top_k <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("top_k: must be positive, got ", top_k));
  }
  if (std::isnan(limits.max_avg_bits) || std::isnan(limits.max_size_bytes) ||
      std::isnan(limits.max_bops)) {
    return absl::InvalidArgumentError(
        "max_avg_bits, max_size_bytes, max_bops: NaN");
  }
  return absl::OkStatus();
}

// Keeps each bit assignment's best exportable policy among those `where`
// selects (a condition on p = policies, j = jobs; ?1 its parameter), under
// the limits (?2 avg bits, ?3 bytes, ?5 BOPs), then ranks those: validation
// accuracy descending, calibration accuracy descending, calibration loss
// ascending, top ?4. NULL (NaN, unmeasured) figures sort last.
// Columns: MIXQ_POLICY_COLUMNS, job_id, strategy.
absl::StatusOr<Statement> PrepareBestQuery(Database& db, const char* where,
                                           const PolicyLimits& limits,
                                           int32_t top_k) {
  MIXQ_ASSIGN_OR_RETURN(
      Statement query,
      db.Prepare(absl::StrCat(
          "SELECT " MIXQ_POLICY_COLUMNS ", job_id, strategy"
          " FROM (SELECT p.*, j.strategy, ROW_NUMBER() OVER (PARTITION BY"
          "   p.bits ORDER BY p.val_accuracy IS NULL, p.val_accuracy DESC,"
          "   p.accuracy IS NULL, p.accuracy DESC, p.loss IS NULL, p.loss, "
          "p.id)"
          "   AS best_rank"
          "  FROM policies p JOIN jobs j ON j.id = p.job_id"
          "  WHERE p.export_sha256 != '' AND ",
          where,
          "   AND (?2 IS NULL OR p.avg_bits <= ?2)"
          "   AND (?3 IS NULL OR p.size_bytes <= ?3)"
          "   AND (?5 IS NULL OR p.bops <= ?5))"
          " WHERE best_rank = 1"
          " ORDER BY val_accuracy IS NULL, val_accuracy DESC,"
          "  accuracy IS NULL, accuracy DESC, loss IS NULL, loss, id"
          " LIMIT ?4")));
  // A NULL limit is none; a NULL (unknown) bops fails any bops limit.
  const auto bind_limit = [&query](int index, double limit) {
    if (limit > 0) {
      query.BindDouble(index, limit);
    } else {
      query.BindNull(index);
    }
  };
  bind_limit(2, limits.max_avg_bits);
  bind_limit(3, limits.max_size_bytes);
  bind_limit(5, limits.max_bops);
  query.BindInt64(4, top_k);
  return query;
}

absl::StatusOr<JobPolicy> ReadJobPolicy(const Statement& row) {
  JobPolicy result;
  MIXQ_ASSIGN_OR_RETURN(result.policy, ReadPolicy(row));
  result.job_id = row.ColumnText(16);
  result.strategy = row.ColumnText(17);
  return result;
}

}  // namespace

absl::StatusOr<std::vector<PolicyRecord>> Store::QueryBestPolicies(
    const std::string& job_id, const PolicyLimits& limits,
    int32_t top_k) const {
  MIXQ_RETURN_IF_ERROR(CheckQuery(limits, top_k));
  return impl_->Read(
      [&](Database& db) -> absl::StatusOr<std::vector<PolicyRecord>> {
        MIXQ_RETURN_IF_ERROR(CheckJobExists(db, job_id));
        MIXQ_ASSIGN_OR_RETURN(
            Statement query,
            PrepareBestQuery(db, "p.job_id = ?1", limits, top_k));
        query.BindText(1, job_id);
        return ReadRows(query, &ReadPolicy);
      });
}

absl::StatusOr<std::vector<JobPolicy>> Store::QueryBestPoliciesForModel(
    const std::string& model_sha256, const PolicyLimits& limits,
    int32_t top_k) const {
  MIXQ_RETURN_IF_ERROR(CheckQuery(limits, top_k));
  if (model_sha256.empty())
    return absl::InvalidArgumentError("model_sha256: required");
  return impl_->Read(
      [&](Database& db) -> absl::StatusOr<std::vector<JobPolicy>> {
        MIXQ_ASSIGN_OR_RETURN(
            Statement query,
            PrepareBestQuery(db, "j.model_sha256 = ?1", limits, top_k));
        query.BindText(1, model_sha256);
        return ReadRows(query, &ReadJobPolicy);
      });
}

}  // namespace mixq::storage

#undef MIXQ_JOB_COLUMNS
#undef MIXQ_POLICY_COLUMNS
