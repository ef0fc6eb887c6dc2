#include "storage/store.h"

#include <unistd.h>

#include <atomic>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "storage/errors.h"
#include "storage/migrations.h"
#include "storage/sqlite.h"
#include "tests/support/full_disk_vfs.h"

namespace mixq::storage {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// Debian's Abseil has no status matchers: compare codes, print messages.
#define ASSERT_OK(expr)                              \
  do {                                               \
    const absl::Status status_ = (expr);             \
    ASSERT_TRUE(status_.ok()) << status_.ToString(); \
  } while (0)
#define EXPECT_OK(expr)                              \
  do {                                               \
    const absl::Status status_ = (expr);             \
    EXPECT_TRUE(status_.ok()) << status_.ToString(); \
  } while (0)
#define EXPECT_CODE(expr, expected)                            \
  do {                                                         \
    const absl::Status status_ = (expr);                       \
    EXPECT_EQ(status_.code(), expected) << status_.ToString(); \
  } while (0)

// A fresh directory per test under TempDir(), removed afterwards.
class StoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = std::filesystem::path(::testing::TempDir()) /
           absl::StrCat("mixq_store_", info->test_suite_name(), "_",
                        info->name(), "_", getpid());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    path_ = (dir_ / "mixq.db").string();
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  // A current database with job "old", its layers and a step recorded, then
  // taken back to an older schema by `undo` (SQL ending in PRAGMA
  // user_version = N).
  void WriteOldDatabase(const std::string& undo);

  std::unique_ptr<Store> OpenStore() {
    absl::StatusOr<std::unique_ptr<Store>> store = Store::Open(path_);
    EXPECT_TRUE(store.ok()) << store.status().ToString();
    return store.ok() ? std::move(store).value() : nullptr;
  }

  std::filesystem::path dir_;
  std::string path_;
};

JobRecord MakeJob(const std::string& id, int64_t created_ms,
                  const std::string& request_id = "") {
  JobRecord job;
  job.id = id;
  job.request_id = request_id;
  job.spec = R"({"strategy":"progressive","n":8})";
  job.model_sha256 = "model-" + id;
  job.inputs_sha256 = "inputs-" + id;
  job.labels_sha256 = "labels-" + id;
  job.created_ms = created_ms;
  job.fp32_size_bytes = 1234.5;
  return job;
}

const std::vector<LayerRecord> kLayers = {{"fc1", 784 * 128, 784 * 128},
                                          {"fc2", 128 * 64, 128 * 64},
                                          {"fc3", 64 * 10, 64 * 10}};

PolicyRecord MakePolicy(int step, PolicyKind kind, std::vector<int32_t> bits,
                        double accuracy, double loss, int rank = 0) {
  PolicyRecord policy;
  policy.step = step;
  policy.kind = kind;
  policy.rank = rank;
  policy.chosen = rank == 1;
  policy.bits = std::move(bits);
  double sum = 0;
  for (int32_t b : policy.bits) sum += b;
  policy.avg_bits = policy.bits.empty() ? 0 : sum / policy.bits.size();
  policy.size_bytes = 100.0 * policy.avg_bits;
  policy.bops = static_cast<int64_t>(1000 * sum);
  policy.activation_bits = 6;
  policy.accuracy = accuracy;
  policy.loss = loss;
  policy.omega = 0.25 * step;
  policy.index = loss + 0.5 * policy.omega;
  if (kind != PolicyKind::kCandidate) {
    // Kept policies are exported and validated; here validation agrees
    // with calibration on accuracy.
    policy.val_accuracy = accuracy;
    policy.val_loss = loss + 0.1;
    policy.export_sha256 =
        absl::StrCat("export-", step, "-", static_cast<int>(kind));
  }
  return policy;
}

// A step with `candidates` candidates lowering layers of an 8-bit start.
StepRecord MakeStep(int step, int candidates = 3) {
  StepRecord record;
  record.step = step;
  record.elapsed_seconds = 1.5 + step;
  for (int r = 1; r <= candidates; ++r) {
    record.candidates.push_back(MakePolicy(step, PolicyKind::kCandidate,
                                           {8 - step, 8 - r % 3, 6},
                                           0.9 - 0.01 * r, 0.3 + 0.01 * r, r));
  }
  record.finetuned =
      MakePolicy(step, PolicyKind::kFinetuned, {8 - step, 7, 6}, 0.92, 0.25);
  return record;
}

void ExpectPolicyEq(const PolicyRecord& actual, const PolicyRecord& expected) {
  EXPECT_EQ(actual.step, expected.step);
  EXPECT_EQ(actual.kind, expected.kind);
  EXPECT_EQ(actual.rank, expected.rank);
  EXPECT_EQ(actual.chosen, expected.chosen);
  EXPECT_EQ(actual.bits, expected.bits);
  EXPECT_EQ(actual.activation_bits, expected.activation_bits);
  EXPECT_DOUBLE_EQ(actual.avg_bits, expected.avg_bits);
  EXPECT_DOUBLE_EQ(actual.size_bytes, expected.size_bytes);
  EXPECT_EQ(actual.bops, expected.bops);
  EXPECT_DOUBLE_EQ(actual.loss, expected.loss);
  EXPECT_DOUBLE_EQ(actual.accuracy, expected.accuracy);
  EXPECT_DOUBLE_EQ(actual.omega, expected.omega);
  EXPECT_DOUBLE_EQ(actual.index, expected.index);
}

void ExpectJobEq(const JobRecord& actual, const JobRecord& expected) {
  EXPECT_EQ(actual.id, expected.id);
  EXPECT_EQ(actual.request_id, expected.request_id);
  EXPECT_EQ(actual.spec, expected.spec);
  EXPECT_EQ(actual.model_sha256, expected.model_sha256);
  EXPECT_EQ(actual.inputs_sha256, expected.inputs_sha256);
  EXPECT_EQ(actual.labels_sha256, expected.labels_sha256);
  EXPECT_EQ(actual.state, expected.state);
  EXPECT_EQ(actual.error, expected.error);
  EXPECT_EQ(actual.created_ms, expected.created_ms);
  EXPECT_EQ(actual.started_ms, expected.started_ms);
  EXPECT_EQ(actual.finished_ms, expected.finished_ms);
  EXPECT_EQ(actual.steps_done, expected.steps_done);
  EXPECT_DOUBLE_EQ(actual.fp32_size_bytes, expected.fp32_size_bytes);
}

std::vector<std::string> Ids(const std::vector<JobRecord>& jobs) {
  std::vector<std::string> ids;
  for (const auto& job : jobs) ids.push_back(job.id);
  return ids;
}

// ------------------------------------------------------------ enums, names

TEST(StoreNamesTest, JobStates) {
  struct Case {
    JobState state;
    absl::string_view name;
    bool terminal;
  };
  for (const Case& c : {Case{JobState::kQueued, "queued", false},
                        Case{JobState::kRunning, "running", false},
                        Case{JobState::kSucceeded, "succeeded", true},
                        Case{JobState::kFailed, "failed", true},
                        Case{JobState::kCancelled, "cancelled", true}}) {
    EXPECT_EQ(JobStateName(c.state), c.name);
    EXPECT_EQ(IsTerminal(c.state), c.terminal) << c.name;
  }
}

TEST(StoreNamesTest, PolicyKinds) {
  EXPECT_EQ(PolicyKindName(PolicyKind::kCandidate), "candidate");
  EXPECT_EQ(PolicyKindName(PolicyKind::kFinetuned), "finetuned");
  EXPECT_EQ(PolicyKindName(PolicyKind::kFinal), "final");
}

// ---------------------------------------------------------- sqlite wrapper

TEST_F(StoreTest, SqliteBindAndColumnsRoundTrip) {
  auto db = Database::Open(path_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
  ASSERT_TRUE(db.ok()) << db.status();
  ASSERT_OK(db->Exec("CREATE TABLE t (i INTEGER, d REAL, s TEXT, b BLOB, n)"));
  auto insert = db->Prepare("INSERT INTO t VALUES (?1, ?2, ?3, ?4, ?5)");
  ASSERT_TRUE(insert.ok()) << insert.status();
  const std::string blob("a\0b\xff", 4);
  insert->BindInt64(1, int64_t{1} << 40);
  insert->BindDouble(2, -2.5);
  insert->BindText(3, "héllo");
  insert->BindBlob(4, blob);
  insert->BindNull(5);
  ASSERT_OK(insert->Run());
  EXPECT_EQ(db->Changes(), 1);

  auto select = db->Prepare("SELECT i, d, s, b, n FROM t");
  ASSERT_TRUE(select.ok()) << select.status();
  auto row = select->Step();
  ASSERT_TRUE(row.ok() && *row);
  EXPECT_EQ(select->ColumnInt64(0), int64_t{1} << 40);
  EXPECT_EQ(select->ColumnDouble(1), -2.5);
  EXPECT_EQ(select->ColumnText(2), "héllo");
  EXPECT_EQ(select->ColumnBlob(3), blob);
  EXPECT_TRUE(select->ColumnIsNull(4));
  EXPECT_FALSE(select->ColumnIsNull(0));
  row = select->Step();
  ASSERT_TRUE(row.ok());
  EXPECT_FALSE(*row);
}

TEST_F(StoreTest, SqliteErrorsCarrySqliteMessages) {
  auto db = Database::Open(path_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
  ASSERT_TRUE(db.ok()) << db.status();
  auto bad = db->Prepare("SELECT * FROM missing_table");
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("no such table"));

  EXPECT_CODE(db->Prepare("SELECT 1; SELECT 2").status(),
              absl::StatusCode::kInternal);

  ASSERT_OK(db->Exec("CREATE TABLE t (k TEXT PRIMARY KEY)"));
  auto insert = db->Prepare("INSERT INTO t VALUES (?1)");
  ASSERT_TRUE(insert.ok());
  insert->BindText(1, "x");
  ASSERT_OK(insert->Run());
  insert->Reset();
  insert->BindText(1, "x");
  const absl::Status duplicate = insert->Run();
  EXPECT_EQ(duplicate.code(), absl::StatusCode::kAlreadyExists);
  EXPECT_THAT(std::string(duplicate.message()), HasSubstr("UNIQUE constraint"));

  // A bind to a parameter that does not exist is reported by Run().
  insert->Reset();
  insert->BindText(7, "y");
  EXPECT_CODE(insert->Run(), absl::StatusCode::kInvalidArgument);
}

TEST_F(StoreTest, SqliteTransactionRollsBackUnlessCommitted) {
  auto db = Database::Open(path_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
  ASSERT_TRUE(db.ok()) << db.status();
  ASSERT_OK(db->Exec("CREATE TABLE t (v INTEGER)"));
  {
    Transaction transaction(*db);
    ASSERT_OK(transaction.Begin());
    ASSERT_OK(db->Exec("INSERT INTO t VALUES (1)"));
    EXPECT_CODE(transaction.Begin(), absl::StatusCode::kInternal);
  }
  {
    Transaction transaction(*db);
    ASSERT_OK(transaction.Begin());
    ASSERT_OK(db->Exec("INSERT INTO t VALUES (2)"));
    ASSERT_OK(transaction.Commit());
  }
  auto select = db->Prepare("SELECT group_concat(v) FROM t");
  ASSERT_TRUE(select.ok());
  ASSERT_TRUE(*select->Step());
  EXPECT_EQ(select->ColumnText(0), "2");
}

// ------------------------------------------------------------ open, schema

TEST_F(StoreTest, OpenCreatesLatestSchema) {
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  EXPECT_EQ(store->schema_version(), LatestSchemaVersion());
  EXPECT_GE(LatestSchemaVersion(), 1);
}

TEST_F(StoreTest, OpenUsesWalMode) {
  ASSERT_NE(OpenStore(), nullptr);
  auto db = Database::Open(path_, SQLITE_OPEN_READONLY);
  ASSERT_TRUE(db.ok());
  auto mode = db->Prepare("PRAGMA journal_mode");
  ASSERT_TRUE(mode.ok()) << mode.status();
  ASSERT_TRUE(*mode->Step());
  EXPECT_EQ(mode->ColumnText(0), "wal");
}

TEST_F(StoreTest, RefusesNewerSchemaVersion) {
  ASSERT_NE(OpenStore(), nullptr);
  {
    auto db = Database::Open(path_, SQLITE_OPEN_READWRITE);
    ASSERT_TRUE(db.ok());
    ASSERT_OK(db->Exec("PRAGMA user_version = 99"));
  }
  auto store = Store::Open(path_);
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(store.status().message()), HasSubstr(path_));
  EXPECT_THAT(std::string(store.status().message()), HasSubstr("99"));
}

TEST_F(StoreTest, RejectsFileThatIsNotSqlite) {
  {
    std::ofstream out(path_, std::ios::binary);
    for (int i = 0; i < 200; ++i) out << "this is not an SQLite database\n";
  }
  auto store = Store::Open(path_);
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), absl::StatusCode::kFailedPrecondition)
      << store.status();
  EXPECT_THAT(std::string(store.status().message()), HasSubstr(path_));
}

TEST_F(StoreTest, RejectsAnotherApplicationsDatabase) {
  {
    auto db = Database::Open(path_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
    ASSERT_TRUE(db.ok());
    ASSERT_OK(db->Exec("CREATE TABLE notes (text TEXT)"));
  }
  auto store = Store::Open(path_);
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(store.status().message()),
              HasSubstr("not a mixq database"));

  {
    auto db = Database::Open(path_, SQLITE_OPEN_READWRITE);
    ASSERT_TRUE(db.ok());
    ASSERT_OK(db->Exec("PRAGMA user_version = 1"));
  }
  store = Store::Open(path_);
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(store.status().message()),
              HasSubstr("application_id"));
}

TEST_F(StoreTest, OpenFailsInMissingDirectory) {
  auto store = Store::Open((dir_ / "no" / "such" / "dir" / "mixq.db").string());
  ASSERT_FALSE(store.ok());
  EXPECT_THAT(std::string(store.status().message()), HasSubstr("no/such/dir"));
}

// Drops what schema versions 8 and 7 added (with PRAGMA user_version, a
// database as version 6 left it).
constexpr char kUndoSchemaV8To7[] =
    "DROP TABLE warm_starts;"
    "ALTER TABLE jobs DROP COLUMN unclean_starts;";
// Drops what schema versions 8, 7 and 6 added (with PRAGMA user_version, a
// database as version 5 left it).
constexpr char kUndoSchemaV8To6[] =
    "DROP TABLE warm_starts;"
    "ALTER TABLE jobs DROP COLUMN unclean_starts;"
    "DROP TABLE sensitivities;";
// Drops what schema versions 8 to 3 added (with PRAGMA user_version, a
// database as versions 1 and 2 left it).
constexpr char kUndoSchemaV8ToV3[] =
    "DROP TABLE warm_starts;"
    "ALTER TABLE jobs DROP COLUMN unclean_starts;"
    "DROP TABLE sensitivities;"
    "ALTER TABLE policies DROP COLUMN val_loss;"
    "ALTER TABLE policies DROP COLUMN val_accuracy;"
    "ALTER TABLE policies DROP COLUMN export_sha256;"
    "ALTER TABLE jobs DROP COLUMN val_samples;"
    "ALTER TABLE jobs DROP COLUMN val_source;"
    "ALTER TABLE jobs DROP COLUMN fp32_val_loss;"
    "ALTER TABLE jobs DROP COLUMN fp32_val_accuracy;"
    "DROP TABLE checkpoints;"
    "ALTER TABLE jobs DROP COLUMN export_sha256;"
    "DROP INDEX jobs_by_model;"
    "ALTER TABLE jobs DROP COLUMN strategy;"
    "ALTER TABLE steps DROP COLUMN finetune_steps;"
    "ALTER TABLE steps DROP COLUMN node_runs;"
    "ALTER TABLE steps DROP COLUMN naive_node_runs;"
    "ALTER TABLE steps DROP COLUMN scoring_seconds;"
    "ALTER TABLE steps DROP COLUMN oracle_omega;"
    "ALTER TABLE policies DROP COLUMN activation_bits;";

void StoreTest::WriteOldDatabase(const std::string& undo) {
  {
    auto store = OpenStore();
    ASSERT_NE(store, nullptr);
    ASSERT_OK(store->CreateJob(MakeJob("old", 1), kLayers));
    ASSERT_OK(store->AppendStep("old", MakeStep(1)));
  }
  auto db = Database::Open(path_, SQLITE_OPEN_READWRITE);
  ASSERT_TRUE(db.ok());
  ASSERT_OK(db->Exec(undo.c_str()));
}

// A database as schema version 1 wrote it: versions 2, 3 and 4 undone on a
// current one.
TEST_F(StoreTest, MigratesVersion1DatabaseKeepingItsRows) {
  ASSERT_NO_FATAL_FAILURE(
      WriteOldDatabase(absl::StrCat(kUndoSchemaV8ToV3,
                                    "ALTER TABLE job_layers DROP COLUMN macs;"
                                    "ALTER TABLE policies DROP COLUMN bops;"
                                    "PRAGMA user_version = 1")));
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  EXPECT_EQ(store->schema_version(), LatestSchemaVersion());

  // Old rows: MACs and BOPs unknown (0), everything else intact.
  auto layers = store->GetLayers("old");
  ASSERT_TRUE(layers.ok()) << layers.status();
  ASSERT_EQ(layers->size(), kLayers.size());
  EXPECT_EQ((*layers)[0].name, "fc1");
  EXPECT_EQ((*layers)[0].num_weights, kLayers[0].num_weights);
  EXPECT_EQ((*layers)[0].macs, 0);
  auto steps = store->GetSteps("old");
  ASSERT_TRUE(steps.ok()) << steps.status();
  ASSERT_EQ(steps->size(), 1u);
  EXPECT_EQ((*steps)[0].finetuned.bops, 0);
  EXPECT_DOUBLE_EQ((*steps)[0].finetuned.avg_bits,
                   MakeStep(1).finetuned.avg_bits);

  // New rows carry them; a BOPs limit never admits an unknown cost.
  ASSERT_OK(store->CreateJob(MakeJob("new", 2), kLayers));
  ASSERT_OK(store->AppendStep("new", MakeStep(1)));
  layers = store->GetLayers("new");
  ASSERT_TRUE(layers.ok());
  EXPECT_EQ((*layers)[2].macs, kLayers[2].macs);
  auto best_old = store->QueryBestPolicies("old", PolicyLimits{0, 0, 1e12}, 10);
  ASSERT_TRUE(best_old.ok()) << best_old.status();
  EXPECT_TRUE(best_old->empty());
  auto best_new = store->QueryBestPolicies("new", PolicyLimits{0, 0, 1e12}, 10);
  ASSERT_TRUE(best_new.ok()) << best_new.status();
  EXPECT_FALSE(best_new->empty());
  EXPECT_GT((*best_new)[0].bops, 0);
}

TEST_F(StoreTest, MigratesVersion2DatabaseToStrategiesAndScoringStats) {
  ASSERT_NO_FATAL_FAILURE(WriteOldDatabase(
      absl::StrCat(kUndoSchemaV8ToV3, "PRAGMA user_version = 2")));
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  EXPECT_EQ(store->schema_version(), LatestSchemaVersion());
  // Every job before strategies was progressive; its steps' stats unknown.
  auto job = store->GetJob("old");
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(job->strategy, "progressive");
  auto steps = store->GetSteps("old");
  ASSERT_TRUE(steps.ok()) << steps.status();
  ASSERT_EQ(steps->size(), 1u);
  EXPECT_EQ((*steps)[0].node_runs, 0);
  EXPECT_EQ((*steps)[0].oracle_omega, 0);
  EXPECT_EQ((*steps)[0].finetuned.activation_bits, 0);  // unknown
  EXPECT_EQ((*steps)[0].candidates.size(), MakeStep(1).candidates.size());
  // Before validation sets: unmeasured, no export, so nothing is ranked.
  EXPECT_TRUE(std::isnan((*steps)[0].finetuned.val_accuracy));
  EXPECT_TRUE((*steps)[0].finetuned.export_sha256.empty());
  EXPECT_EQ(job->val_samples, 0);
  EXPECT_TRUE(std::isnan(job->fp32_val_accuracy));
  auto best = store->QueryBestPolicies("old", PolicyLimits{}, 10);
  ASSERT_TRUE(best.ok()) << best.status();
  EXPECT_TRUE(best->empty());
}

// A version-5 job has no sensitivities; new steps store theirs.
TEST_F(StoreTest, MigratesVersion5DatabaseToSensitivities) {
  ASSERT_NO_FATAL_FAILURE(WriteOldDatabase(
      absl::StrCat(kUndoSchemaV8To6, "PRAGMA user_version = 5")));
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  EXPECT_EQ(store->schema_version(), LatestSchemaVersion());
  auto none = store->GetSensitivities("old");
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_FALSE(none->has_value());
  StepRecord step = MakeStep(2);
  step.sensitivities = {{8, 4}, {{0, 1}, {0, 2}, {0, 3}}};
  ASSERT_OK(store->AppendStep("old", step));
  auto table = store->GetSensitivities("old");
  ASSERT_TRUE(table.ok() && table->has_value()) << table.status();
  EXPECT_THAT((*table)->bits, ElementsAre(8, 4));
}

// A version-6 job has counted no start; the column starts at 0.
TEST_F(StoreTest, MigratesVersion6DatabaseToUncleanStarts) {
  ASSERT_NO_FATAL_FAILURE(WriteOldDatabase(
      absl::StrCat(kUndoSchemaV8To7, "PRAGMA user_version = 6")));
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  EXPECT_EQ(store->schema_version(), LatestSchemaVersion());
  auto job = store->GetJob("old");
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(job->unclean_starts, 0);
  EXPECT_EQ(job->steps_done, 1);
}

// Every start counts until the job records a step or stops cleanly; a
// restart after a crash (UpdateJobState back to queued) keeps the count.
TEST_F(StoreTest, UncleanStartsCountStartsWithoutProgress) {
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  ASSERT_OK(store->CreateJob(MakeJob("job-1", 1), kLayers));
  const auto starts = [&] {
    auto job = store->GetJob("job-1");
    EXPECT_TRUE(job.ok()) << job.status();
    return job.ok() ? job->unclean_starts : -1;
  };
  EXPECT_EQ(starts(), 0);
  ASSERT_OK(store->StartJob("job-1", 1000));
  auto job = store->GetJob("job-1");
  ASSERT_TRUE(job.ok());
  EXPECT_EQ(job->state, JobState::kRunning);
  EXPECT_EQ(job->started_ms, 1000);
  EXPECT_EQ(starts(), 1);
  ASSERT_OK(store->UpdateJobState("job-1", JobState::kQueued, "", 0, 0));
  ASSERT_OK(store->StartJob("job-1", 2000));
  EXPECT_EQ(starts(), 2);
  ASSERT_OK(store->AppendStep("job-1", MakeStep(0)));
  EXPECT_EQ(starts(), 0);
  ASSERT_OK(store->StartJob("job-1", 3000));
  EXPECT_EQ(starts(), 1);
  ASSERT_OK(store->StopJob("job-1"));
  job = store->GetJob("job-1");
  ASSERT_TRUE(job.ok());
  EXPECT_EQ(job->state, JobState::kQueued);
  EXPECT_EQ(starts(), 0);
  EXPECT_CODE(store->StartJob("nope", 1), absl::StatusCode::kNotFound);
  EXPECT_CODE(store->StopJob("nope"), absl::StatusCode::kNotFound);
}

// A database at its page cap fails writes as a full disk does (marked, so
// callers can retry), changes nothing, reads on, and writes again once the
// cap is raised.
TEST_F(StoreTest, FullDatabaseFailsWritesAsDiskFullUntilRaised) {
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  ASSERT_OK(store->CreateJob(MakeJob("job-1", 1), kLayers));
  EXPECT_CODE(store->SetMaxPageCount(0).status(),
              absl::StatusCode::kInvalidArgument);
  // Never below the current size: asking for 1 page caps it where it is.
  auto cap = store->SetMaxPageCount(1);
  ASSERT_TRUE(cap.ok()) << cap.status();
  EXPECT_GT(*cap, 1);
  const std::string blob(size_t{1} << 20, 'x');
  const absl::Status put = store->PutArtifact("big", blob);
  EXPECT_CODE(put, absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(IsDiskFull(put)) << put;
  StepRecord step = MakeStep(0);
  const absl::Status appended = store->AppendStep("job-1", step, blob);
  EXPECT_TRUE(IsDiskFull(appended)) << appended;
  EXPECT_CODE(store->GetArtifact("big").status(), absl::StatusCode::kNotFound);
  auto job = store->GetJob("job-1");
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(job->steps_done, 0);
  // Other errors are not a full disk.
  EXPECT_FALSE(IsDiskFull(store->StartJob("nope", 1)));
  EXPECT_FALSE(IsDiskFull(absl::ResourceExhaustedError("queue full")));

  ASSERT_TRUE(store->SetMaxPageCount(int64_t{1} << 30).ok());
  EXPECT_OK(store->PutArtifact("big", blob));
  EXPECT_OK(store->AppendStep("job-1", step, blob));
  auto checkpoint = store->GetCheckpoint("job-1");
  ASSERT_TRUE(checkpoint.ok() && checkpoint->has_value());
  EXPECT_EQ((*checkpoint)->state.size(), blob.size());
}

// A step's table: every layer at every bit-width, read back highest bits
// first whatever order it was written in (NaN as NaN); a malformed table is
// refused with its step; it goes with its step when results are reset.
TEST_F(StoreTest, SensitivitiesRoundTripWithTheirStep) {
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  ASSERT_OK(store->CreateJob(MakeJob("job-1", 1), kLayers));
  auto none = store->GetSensitivities("job-1");
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_FALSE(none->has_value());
  EXPECT_EQ(store->GetSensitivities("nope").status().code(),
            absl::StatusCode::kNotFound);

  const double nan = std::numeric_limits<double>::quiet_NaN();
  StepRecord bad = MakeStep(0);
  bad.sensitivities = {{8, 4, 8}, {{0, 1, 0}, {0, 2, 0}, {0, 3, 0}}};
  EXPECT_CODE(store->AppendStep("job-1", bad),
              absl::StatusCode::kInvalidArgument);
  bad.sensitivities = {{8, 4}, {{0, 1}, {0, 2}}};  // a layer short
  EXPECT_CODE(store->AppendStep("job-1", bad),
              absl::StatusCode::kInvalidArgument);
  bad.sensitivities = {{8, 4}, {{0, 1}, {0, 2}, {0}}};
  EXPECT_CODE(store->AppendStep("job-1", bad),
              absl::StatusCode::kInvalidArgument);
  bad.sensitivities = {{8, 0}, {{0, 1}, {0, 2}, {0, 3}}};
  EXPECT_CODE(store->AppendStep("job-1", bad),
              absl::StatusCode::kInvalidArgument);
  auto steps = store->GetSteps("job-1");
  ASSERT_TRUE(steps.ok());
  EXPECT_TRUE(steps->empty());

  StepRecord warmup = MakeStep(0);
  warmup.sensitivities = {{2, 8, 4},
                          {{3.5, 0, 0.25}, {7, 0, 1.5e-9}, {nan, 0, 2}}};
  ASSERT_OK(store->AppendStep("job-1", warmup));
  ASSERT_OK(store->AppendStep("job-1", MakeStep(1)));
  auto table = store->GetSensitivities("job-1");
  ASSERT_TRUE(table.ok() && table->has_value()) << table.status();
  EXPECT_THAT((*table)->bits, ElementsAre(8, 4, 2));
  ASSERT_EQ((*table)->omega.size(), 3u);
  EXPECT_THAT((*table)->omega[0], ElementsAre(0, 0.25, 3.5));
  EXPECT_THAT((*table)->omega[1], ElementsAre(0, 1.5e-9, 7));
  EXPECT_EQ((*table)->omega[2][0], 0);
  EXPECT_EQ((*table)->omega[2][1], 2);
  EXPECT_TRUE(std::isnan((*table)->omega[2][2]));

  // Resuming after step 0 keeps the table; resuming inside the warm-up (or
  // starting over) drops it with step 0, which records it again.
  ASSERT_OK(store->ResetJobResults("job-1", 0));
  table = store->GetSensitivities("job-1");
  ASSERT_TRUE(table.ok() && table->has_value()) << table.status();
  ASSERT_OK(store->ResetJobResults("job-1", -1));
  table = store->GetSensitivities("job-1");
  ASSERT_TRUE(table.ok()) << table.status();
  EXPECT_FALSE(table->has_value());
  ASSERT_OK(store->AppendStep("job-1", warmup));
  table = store->GetSensitivities("job-1");
  ASSERT_TRUE(table.ok() && table->has_value()) << table.status();
  ASSERT_OK(store->ResetJobResults("job-1"));
  table = store->GetSensitivities("job-1");
  ASSERT_TRUE(table.ok()) << table.status();
  EXPECT_FALSE(table->has_value());
}

TEST_F(StoreTest, StepScoringStatsAndStrategyRoundTrip) {
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  JobRecord job = MakeJob("k", 1);
  job.strategy = "knapsack";
  ASSERT_OK(store->CreateJob(job, kLayers));
  StepRecord step = MakeStep(1);
  step.finetune_steps = 50;
  step.node_runs = 1234;
  step.naive_node_runs = 4000;
  step.scoring_seconds = 0.75;
  step.oracle_omega = 0.125;
  ASSERT_OK(store->AppendStep("k", step));
  auto got_job = store->GetJob("k");
  ASSERT_TRUE(got_job.ok());
  EXPECT_EQ(got_job->strategy, "knapsack");
  auto steps = store->GetSteps("k");
  ASSERT_TRUE(steps.ok()) << steps.status();
  ASSERT_EQ(steps->size(), 1u);
  EXPECT_EQ((*steps)[0].finetune_steps, 50);
  EXPECT_EQ((*steps)[0].node_runs, 1234);
  EXPECT_EQ((*steps)[0].naive_node_runs, 4000);
  EXPECT_DOUBLE_EQ((*steps)[0].scoring_seconds, 0.75);
  EXPECT_DOUBLE_EQ((*steps)[0].oracle_omega, 0.125);
}

TEST_F(StoreTest, BestPoliciesForAModelSpanItsJobsAndStrategies) {
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  // Two jobs on model "m" (progressive, uniform), one on another model.
  JobRecord a = MakeJob("a", 1), b = MakeJob("b", 2), c = MakeJob("c", 3);
  a.model_sha256 = b.model_sha256 = "m";
  b.strategy = "uniform";
  for (const JobRecord& job : {a, b, c})
    ASSERT_OK(store->CreateJob(job, kLayers));
  StepRecord sa;
  sa.step = 1;
  sa.candidates = {
      MakePolicy(1, PolicyKind::kCandidate, {8, 4, 4}, 0.80, 0.5, 1),
      MakePolicy(1, PolicyKind::kCandidate, {4, 4, 4}, 0.70, 0.6, 2)};
  sa.finetuned = MakePolicy(1, PolicyKind::kFinetuned, {8, 4, 4}, 0.82, 0.4);
  ASSERT_OK(store->AppendStep("a", sa));
  StepRecord sb;
  sb.step = 1;
  sb.candidates = {
      MakePolicy(1, PolicyKind::kCandidate, {4, 4, 4}, 0.75, 0.5, 1)};
  sb.finetuned = MakePolicy(1, PolicyKind::kFinetuned, {4, 4, 4}, 0.90, 0.3);
  ASSERT_OK(store->AppendStep("b", sb));
  StepRecord sc = MakeStep(1);
  for (auto& p : sc.candidates) p.accuracy = 0.99;
  ASSERT_OK(store->AppendStep("c", sc));

  auto best = store->QueryBestPoliciesForModel("m", PolicyLimits{}, 10);
  ASSERT_TRUE(best.ok()) << best.status();
  ASSERT_EQ(best->size(), 2u);  // {4,4,4} once, at its best (job b)
  EXPECT_EQ((*best)[0].job_id, "b");
  EXPECT_EQ((*best)[0].strategy, "uniform");
  EXPECT_EQ((*best)[0].policy.bits, std::vector<int32_t>({4, 4, 4}));
  EXPECT_DOUBLE_EQ((*best)[0].policy.accuracy, 0.90);
  EXPECT_EQ((*best)[1].job_id, "a");
  EXPECT_EQ((*best)[1].strategy, "progressive");
  EXPECT_DOUBLE_EQ((*best)[1].policy.accuracy, 0.82);
  // A cost limit applies across jobs.
  best = store->QueryBestPoliciesForModel("m", PolicyLimits{4.5, 0, 0}, 10);
  ASSERT_TRUE(best.ok());
  ASSERT_EQ(best->size(), 1u);
  EXPECT_EQ((*best)[0].job_id, "b");
  // Unknown models have no policies; bad arguments are refused.
  best = store->QueryBestPoliciesForModel("nope", PolicyLimits{}, 10);
  ASSERT_TRUE(best.ok());
  EXPECT_TRUE(best->empty());
  EXPECT_EQ(
      store->QueryBestPoliciesForModel("", PolicyLimits{}, 10).status().code(),
      absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(
      store->QueryBestPoliciesForModel("m", PolicyLimits{}, 0).status().code(),
      absl::StatusCode::kInvalidArgument);
}

// --------------------------------------------------------------- artifacts

TEST_F(StoreTest, ArtifactsRoundTripAndPutIsIdempotent) {
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  const std::string data("\x00\x01binary\xfe\xff", 10);
  ASSERT_OK(store->PutArtifact("aa11", data));
  ASSERT_OK(store->PutArtifact("aa11", data));
  ASSERT_OK(store->PutArtifact("empty", ""));
  auto got = store->GetArtifact("aa11");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, data);
  got = store->GetArtifact("empty");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, "");

  EXPECT_CODE(store->GetArtifact("bb22").status(), absl::StatusCode::kNotFound);
  EXPECT_CODE(store->PutArtifact("", data), absl::StatusCode::kInvalidArgument);
}

TEST_F(StoreTest, ArtifactSizeWithoutReadingTheBlob) {
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  auto absent = store->ArtifactSize("abc");
  ASSERT_TRUE(absent.ok()) << absent.status();
  EXPECT_FALSE(absent->has_value());
  ASSERT_OK(store->PutArtifact("abc", std::string(1234, 'x')));
  auto size = store->ArtifactSize("abc");
  ASSERT_TRUE(size.ok() && size->has_value());
  EXPECT_EQ(**size, 1234);
}

TEST_F(StoreTest, LargeArtifactRoundTrips) {
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  std::string data(8 << 20, '\0');
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>(i * 131);
  ASSERT_OK(store->PutArtifact("big", data));
  auto got = store->GetArtifact("big");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_TRUE(*got == data);
}

// -------------------------------------------------------------------- jobs

TEST_F(StoreTest, CreateAndGetJobRoundTrip) {
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  JobRecord job = MakeJob("job-1", 1000, "req-1");
  job.state = JobState::kRunning;
  job.error = "none yet";
  job.started_ms = 1001;
  job.steps_done = 0;
  ASSERT_OK(store->CreateJob(job, kLayers));

  auto got = store->GetJob("job-1");
  ASSERT_TRUE(got.ok()) << got.status();
  ExpectJobEq(*got, job);

  auto layers = store->GetLayers("job-1");
  ASSERT_TRUE(layers.ok()) << layers.status();
  ASSERT_EQ(layers->size(), kLayers.size());
  for (size_t i = 0; i < kLayers.size(); ++i) {
    EXPECT_EQ((*layers)[i].name, kLayers[i].name);
    EXPECT_EQ((*layers)[i].num_weights, kLayers[i].num_weights);
    EXPECT_EQ((*layers)[i].macs, kLayers[i].macs);
  }
}

TEST_F(StoreTest, MissingJobsAreNotFound) {
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  EXPECT_CODE(store->GetJob("nope").status(), absl::StatusCode::kNotFound);
  EXPECT_CODE(store->GetLayers("nope").status(), absl::StatusCode::kNotFound);
  EXPECT_CODE(store->GetSteps("nope").status(), absl::StatusCode::kNotFound);
  EXPECT_CODE(store->GetFinalPolicy("nope").status(),
              absl::StatusCode::kNotFound);
  EXPECT_CODE(store->QueryBestPolicies("nope", PolicyLimits{0, 0}, 5).status(),
              absl::StatusCode::kNotFound);
  EXPECT_CODE(store->UpdateJobState("nope", JobState::kFailed, "x", 0, 5),
              absl::StatusCode::kNotFound);
  EXPECT_CODE(store->AppendStep("nope", MakeStep(1)),
              absl::StatusCode::kNotFound);
  EXPECT_CODE(
      store->FinishJob(
          "nope", MakePolicy(2, PolicyKind::kFinal, {4, 4, 4}, 0.9, 0.3), 5),
      absl::StatusCode::kNotFound);
  EXPECT_CODE(store->ResetJobResults("nope"), absl::StatusCode::kNotFound);
}

TEST_F(StoreTest, CreateJobRejectsDuplicates) {
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  ASSERT_OK(store->CreateJob(MakeJob("job-1", 1, "req-1"), kLayers));

  const absl::Status same_id =
      store->CreateJob(MakeJob("job-1", 2, "req-2"), kLayers);
  EXPECT_EQ(same_id.code(), absl::StatusCode::kAlreadyExists) << same_id;
  EXPECT_THAT(std::string(same_id.message()), HasSubstr("job-1"));

  const absl::Status same_request =
      store->CreateJob(MakeJob("job-2", 3, "req-1"), kLayers);
  EXPECT_EQ(same_request.code(), absl::StatusCode::kAlreadyExists)
      << same_request;
  EXPECT_THAT(std::string(same_request.message()), HasSubstr("req-1"));

  // Neither failed attempt left anything behind.
  EXPECT_CODE(store->GetJob("job-2").status(), absl::StatusCode::kNotFound);
  auto job = store->GetJob("job-1");
  ASSERT_TRUE(job.ok());
  EXPECT_EQ(job->created_ms, 1);

  // Many jobs may have no request id.
  EXPECT_OK(store->CreateJob(MakeJob("job-3", 4), kLayers));
  EXPECT_OK(store->CreateJob(MakeJob("job-4", 5), kLayers));
  EXPECT_CODE(store->CreateJob(MakeJob("", 6), kLayers),
              absl::StatusCode::kInvalidArgument);
}

TEST_F(StoreTest, FindJobByRequestId) {
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  ASSERT_OK(store->CreateJob(MakeJob("job-1", 1, "req-1"), kLayers));
  ASSERT_OK(store->CreateJob(MakeJob("job-2", 2), kLayers));

  auto found = store->FindJobByRequestId("req-1");
  ASSERT_TRUE(found.ok()) << found.status();
  ASSERT_TRUE(found->has_value());
  EXPECT_EQ((*found)->id, "job-1");

  found = store->FindJobByRequestId("req-9");
  ASSERT_TRUE(found.ok());
  EXPECT_FALSE(found->has_value());

  found = store->FindJobByRequestId("");
  ASSERT_TRUE(found.ok());
  EXPECT_FALSE(found->has_value());
  auto job2 = store->GetJob("job-2");
  ASSERT_TRUE(job2.ok());
  EXPECT_EQ(job2->request_id, "");
}

TEST_F(StoreTest, ListJobsNewestFirstWithFilterAndLimit) {
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  // b and c share a creation time: the later insert lists first.
  ASSERT_OK(store->CreateJob(MakeJob("a", 100), kLayers));
  ASSERT_OK(store->CreateJob(MakeJob("b", 300), kLayers));
  ASSERT_OK(store->CreateJob(MakeJob("c", 300), kLayers));
  ASSERT_OK(store->CreateJob(MakeJob("d", 200), kLayers));
  ASSERT_OK(store->UpdateJobState("a", JobState::kRunning, "", 150, 0));
  ASSERT_OK(store->UpdateJobState("c", JobState::kRunning, "", 350, 0));

  struct Case {
    std::optional<JobState> state;
    int32_t limit;
    std::vector<std::string> ids;
  };
  const Case cases[] = {
      {std::nullopt, 100, {"c", "b", "d", "a"}},
      {std::nullopt, 2, {"c", "b"}},
      {JobState::kRunning, 100, {"c", "a"}},
      {JobState::kQueued, 100, {"b", "d"}},
      {JobState::kQueued, 1, {"b"}},
      {JobState::kFailed, 100, {}},
  };
  for (const Case& c : cases) {
    ListJobsOptions options;
    options.state = c.state;
    options.limit = c.limit;
    auto jobs = store->ListJobs(options);
    ASSERT_TRUE(jobs.ok()) << jobs.status();
    EXPECT_EQ(Ids(*jobs), c.ids) << "limit " << c.limit;
  }
  ListJobsOptions zero;
  zero.limit = 0;
  EXPECT_CODE(store->ListJobs(zero).status(),
              absl::StatusCode::kInvalidArgument);
}

TEST_F(StoreTest, UpdateJobStateKeepsUnsetTimestamps) {
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  ASSERT_OK(store->CreateJob(MakeJob("job-1", 10), kLayers));

  ASSERT_OK(store->UpdateJobState("job-1", JobState::kRunning, "", 20, 0));
  auto job = store->GetJob("job-1");
  ASSERT_TRUE(job.ok());
  EXPECT_EQ(job->state, JobState::kRunning);
  EXPECT_EQ(job->started_ms, 20);
  EXPECT_EQ(job->finished_ms, 0);

  ASSERT_OK(store->UpdateJobState("job-1", JobState::kFailed, "boom", 0, 30));
  job = store->GetJob("job-1");
  ASSERT_TRUE(job.ok());
  EXPECT_EQ(job->state, JobState::kFailed);
  EXPECT_EQ(job->error, "boom");
  EXPECT_EQ(job->started_ms, 20);
  EXPECT_EQ(job->finished_ms, 30);
  EXPECT_EQ(job->created_ms, 10);

  // Re-queueing clears the error and keeps both timestamps.
  ASSERT_OK(store->UpdateJobState("job-1", JobState::kQueued, "", 0, 0));
  job = store->GetJob("job-1");
  ASSERT_TRUE(job.ok());
  EXPECT_EQ(job->state, JobState::kQueued);
  EXPECT_EQ(job->error, "");
  EXPECT_EQ(job->started_ms, 20);
  EXPECT_EQ(job->finished_ms, 30);
}

// ----------------------------------------------------------------- results

TEST_F(StoreTest, AppendStepAndGetStepsRoundTrip) {
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  ASSERT_OK(store->CreateJob(MakeJob("job-1", 1), kLayers));

  StepRecord warmup = MakeStep(0, 0);
  StepRecord step1 = MakeStep(1, 4);
  // Stored out of rank order; read back ranked.
  std::swap(step1.candidates[0], step1.candidates[3]);
  const StepRecord step2 = MakeStep(2, 2);
  ASSERT_OK(store->AppendStep("job-1", warmup));
  ASSERT_OK(store->AppendStep("job-1", step1));
  auto job = store->GetJob("job-1");
  ASSERT_TRUE(job.ok());
  EXPECT_EQ(job->steps_done, 1);
  ASSERT_OK(store->AppendStep("job-1", step2));
  job = store->GetJob("job-1");
  ASSERT_TRUE(job.ok());
  EXPECT_EQ(job->steps_done, 2);

  auto steps = store->GetSteps("job-1");
  ASSERT_TRUE(steps.ok()) << steps.status();
  ASSERT_EQ(steps->size(), 3u);
  std::swap(step1.candidates[0], step1.candidates[3]);
  const StepRecord* expected[] = {&warmup, &step1, &step2};
  for (size_t s = 0; s < steps->size(); ++s) {
    const StepRecord& got = (*steps)[s];
    SCOPED_TRACE(absl::StrCat("step ", s));
    EXPECT_EQ(got.step, expected[s]->step);
    EXPECT_DOUBLE_EQ(got.elapsed_seconds, expected[s]->elapsed_seconds);
    ASSERT_EQ(got.candidates.size(), expected[s]->candidates.size());
    for (size_t c = 0; c < got.candidates.size(); ++c) {
      EXPECT_EQ(got.candidates[c].rank, static_cast<int32_t>(c) + 1);
      ExpectPolicyEq(got.candidates[c], expected[s]->candidates[c]);
    }
    ExpectPolicyEq(got.finetuned, expected[s]->finetuned);
  }
  EXPECT_TRUE((*steps)[1].candidates[0].chosen);
  EXPECT_FALSE((*steps)[1].candidates[1].chosen);
}

TEST_F(StoreTest, AppendStepRejectsDuplicateStepAtomically) {
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  ASSERT_OK(store->CreateJob(MakeJob("job-1", 1), kLayers));
  ASSERT_OK(store->AppendStep("job-1", MakeStep(1)));
  StepRecord again = MakeStep(1, 5);
  again.elapsed_seconds = 99;
  EXPECT_CODE(store->AppendStep("job-1", again),
              absl::StatusCode::kAlreadyExists);

  auto steps = store->GetSteps("job-1");
  ASSERT_TRUE(steps.ok());
  ASSERT_EQ(steps->size(), 1u);
  EXPECT_EQ((*steps)[0].candidates.size(), 3u);
  EXPECT_DOUBLE_EQ((*steps)[0].elapsed_seconds, 2.5);
}

TEST_F(StoreTest, AppendStepValidatesPolicies) {
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  ASSERT_OK(store->CreateJob(MakeJob("job-1", 1), kLayers));
  struct Case {
    const char* name;
    void (*mutate)(StepRecord&);
  };
  const Case cases[] = {
      {"candidate kind",
       [](StepRecord& s) { s.candidates[1].kind = PolicyKind::kFinal; }},
      {"finetuned kind",
       [](StepRecord& s) { s.finetuned.kind = PolicyKind::kCandidate; }},
      {"candidate step", [](StepRecord& s) { s.candidates[0].step = 7; }},
      {"finetuned step", [](StepRecord& s) { s.finetuned.step = 0; }},
      {"bits per layer",
       [](StepRecord& s) { s.candidates[2].bits.pop_back(); }},
  };
  for (const Case& c : cases) {
    StepRecord step = MakeStep(1);
    c.mutate(step);
    SCOPED_TRACE(c.name);
    EXPECT_CODE(store->AppendStep("job-1", step),
                absl::StatusCode::kInvalidArgument);
  }
  auto steps = store->GetSteps("job-1");
  ASSERT_TRUE(steps.ok());
  EXPECT_TRUE(steps->empty());
  auto job = store->GetJob("job-1");
  ASSERT_TRUE(job.ok());
  EXPECT_EQ(job->steps_done, 0);
}

TEST_F(StoreTest, NanMetricsRoundTripAsNan) {
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  ASSERT_OK(store->CreateJob(MakeJob("job-1", 1), kLayers));
  StepRecord step = MakeStep(1, 1);
  step.candidates[0].loss = std::nan("");
  step.finetuned.omega = std::nan("");
  ASSERT_OK(store->AppendStep("job-1", step));
  auto steps = store->GetSteps("job-1");
  ASSERT_TRUE(steps.ok()) << steps.status();
  ASSERT_EQ(steps->size(), 1u);
  EXPECT_TRUE(std::isnan((*steps)[0].candidates[0].loss));
  EXPECT_TRUE(std::isnan((*steps)[0].finetuned.omega));
  EXPECT_DOUBLE_EQ((*steps)[0].finetuned.loss, 0.25);
}

TEST_F(StoreTest, FinishJobRecordsFinalPolicy) {
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  ASSERT_OK(store->CreateJob(MakeJob("job-1", 1), kLayers));
  ASSERT_OK(store->UpdateJobState("job-1", JobState::kRunning, "", 5, 0));
  ASSERT_OK(store->AppendStep("job-1", MakeStep(1)));

  auto final_policy = store->GetFinalPolicy("job-1");
  ASSERT_TRUE(final_policy.ok());
  EXPECT_FALSE(final_policy->has_value());

  const PolicyRecord policy =
      MakePolicy(2, PolicyKind::kFinal, {6, 5, 4}, 0.91, 0.27);
  ASSERT_OK(store->FinishJob("job-1", policy, 777));
  final_policy = store->GetFinalPolicy("job-1");
  ASSERT_TRUE(final_policy.ok()) << final_policy.status();
  ASSERT_TRUE(final_policy->has_value());
  ExpectPolicyEq(**final_policy, policy);

  auto job = store->GetJob("job-1");
  ASSERT_TRUE(job.ok());
  EXPECT_EQ(job->state, JobState::kSucceeded);
  EXPECT_EQ(job->finished_ms, 777);
  EXPECT_EQ(job->started_ms, 5);
  EXPECT_EQ(job->steps_done, 1);

  // The final policy is not a step's.
  auto steps = store->GetSteps("job-1");
  ASSERT_TRUE(steps.ok());
  EXPECT_EQ(steps->size(), 1u);

  EXPECT_CODE(store->FinishJob("job-1", policy, 778),
              absl::StatusCode::kAlreadyExists);
  PolicyRecord wrong_kind = policy;
  wrong_kind.kind = PolicyKind::kFinetuned;
  ASSERT_OK(store->CreateJob(MakeJob("job-2", 2), kLayers));
  EXPECT_CODE(store->FinishJob("job-2", wrong_kind, 9),
              absl::StatusCode::kInvalidArgument);
}

TEST_F(StoreTest, ResetJobResultsClearsStepsAndPolicies) {
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  ASSERT_OK(store->CreateJob(MakeJob("job-1", 1), kLayers));
  ASSERT_OK(store->CreateJob(MakeJob("job-2", 2), kLayers));
  for (int s = 0; s < 3; ++s) {
    ASSERT_OK(store->AppendStep("job-1", MakeStep(s)));
    ASSERT_OK(store->AppendStep("job-2", MakeStep(s)));
  }
  ASSERT_OK(store->FinishJob(
      "job-1", MakePolicy(3, PolicyKind::kFinal, {5, 5, 5}, 0.9, 0.3), 50));

  ASSERT_OK(store->ResetJobResults("job-1"));
  auto steps = store->GetSteps("job-1");
  ASSERT_TRUE(steps.ok());
  EXPECT_TRUE(steps->empty());
  auto final_policy = store->GetFinalPolicy("job-1");
  ASSERT_TRUE(final_policy.ok());
  EXPECT_FALSE(final_policy->has_value());
  auto best = store->QueryBestPolicies("job-1", PolicyLimits{0, 0}, 10);
  ASSERT_TRUE(best.ok());
  EXPECT_TRUE(best->empty());
  auto job = store->GetJob("job-1");
  ASSERT_TRUE(job.ok());
  EXPECT_EQ(job->steps_done, 0);
  auto layers = store->GetLayers("job-1");
  ASSERT_TRUE(layers.ok());
  EXPECT_EQ(layers->size(), kLayers.size());

  // The other job is untouched, and the reset job can record step 0 again.
  steps = store->GetSteps("job-2");
  ASSERT_TRUE(steps.ok());
  EXPECT_EQ(steps->size(), 3u);
  EXPECT_OK(store->AppendStep("job-1", MakeStep(0)));
}

TEST_F(StoreTest, CheckpointsRideWithTheirStepsAndGoWithTheJob) {
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  ASSERT_OK(store->CreateJob(MakeJob("job-1", 1), kLayers));
  auto none = store->GetCheckpoint("job-1");
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_FALSE(none->has_value());
  EXPECT_EQ(store->GetCheckpoint("nope").status().code(),
            absl::StatusCode::kNotFound);

  // Binary state, replaced by each step that carries one.
  const std::string state0("s0\0\xff", 4);
  ASSERT_OK(store->AppendStep("job-1", MakeStep(0), state0));
  ASSERT_OK(store->AppendStep("job-1", MakeStep(1), "s1"));
  ASSERT_OK(store->AppendStep("job-1", MakeStep(2)));  // none: s1 stays
  auto checkpoint = store->GetCheckpoint("job-1");
  ASSERT_TRUE(checkpoint.ok() && checkpoint->has_value());
  EXPECT_EQ((*checkpoint)->step, 1);
  EXPECT_EQ((*checkpoint)->state, "s1");

  // A step that fails to record leaves the checkpoint as it was.
  EXPECT_EQ(store->AppendStep("job-1", MakeStep(2), "s2").code(),
            absl::StatusCode::kAlreadyExists);
  checkpoint = store->GetCheckpoint("job-1");
  ASSERT_TRUE(checkpoint.ok() && checkpoint->has_value());
  EXPECT_EQ((*checkpoint)->state, "s1");

  // Resuming from step 1 drops what came after it, and keeps the rest.
  ASSERT_OK(store->ResetJobResults("job-1", 1));
  auto steps = store->GetSteps("job-1");
  ASSERT_TRUE(steps.ok());
  ASSERT_EQ(steps->size(), 2u);
  EXPECT_EQ(steps->back().step, 1);
  auto job = store->GetJob("job-1");
  ASSERT_TRUE(job.ok());
  EXPECT_EQ(job->steps_done, 1);
  checkpoint = store->GetCheckpoint("job-1");
  ASSERT_TRUE(checkpoint.ok() && checkpoint->has_value());
  EXPECT_EQ((*checkpoint)->step, 1);
  // Resuming from step 0 drops the checkpoint of step 1.
  ASSERT_OK(store->ResetJobResults("job-1", 0));
  checkpoint = store->GetCheckpoint("job-1");
  ASSERT_TRUE(checkpoint.ok());
  EXPECT_FALSE(checkpoint->has_value());

  // Finishing records the export and drops the checkpoint.
  ASSERT_OK(store->AppendStep("job-1", MakeStep(1), "again"));
  ASSERT_OK(store->FinishJob(
      "job-1", MakePolicy(1, PolicyKind::kFinal, {5, 5, 5}, 0.9, 0.3), 50,
      std::string(64, 'a')));
  checkpoint = store->GetCheckpoint("job-1");
  ASSERT_TRUE(checkpoint.ok());
  EXPECT_FALSE(checkpoint->has_value());
  job = store->GetJob("job-1");
  ASSERT_TRUE(job.ok());
  EXPECT_EQ(job->export_sha256, std::string(64, 'a'));

  // A shutdown's checkpoint inside a step (none recorded yet: step -1)
  // survives resuming from it, and starting over drops it.
  ASSERT_OK(store->CreateJob(MakeJob("job-3", 3), kLayers));
  EXPECT_EQ(store->SaveCheckpoint("job-3", -2, "x").code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store->SaveCheckpoint("nope", 0, "x").code(),
            absl::StatusCode::kNotFound);
  ASSERT_OK(store->SaveCheckpoint("job-3", -1, "in warm-up"));
  ASSERT_OK(store->ResetJobResults("job-3", -1));
  checkpoint = store->GetCheckpoint("job-3");
  ASSERT_TRUE(checkpoint.ok() && checkpoint->has_value());
  EXPECT_EQ((*checkpoint)->step, -1);
  EXPECT_EQ((*checkpoint)->state, "in warm-up");
  ASSERT_OK(store->ResetJobResults("job-3"));
  checkpoint = store->GetCheckpoint("job-3");
  ASSERT_TRUE(checkpoint.ok());
  EXPECT_FALSE(checkpoint->has_value());

  // So does any other end of a job.
  ASSERT_OK(store->CreateJob(MakeJob("job-2", 2), kLayers));
  ASSERT_OK(store->AppendStep("job-2", MakeStep(0), "x"));
  ASSERT_OK(store->UpdateJobState("job-2", JobState::kRunning, "", 3, 0));
  checkpoint = store->GetCheckpoint("job-2");
  ASSERT_TRUE(checkpoint.ok());
  EXPECT_TRUE(checkpoint->has_value());
  ASSERT_OK(store->UpdateJobState("job-2", JobState::kFailed, "boom", 0, 4));
  checkpoint = store->GetCheckpoint("job-2");
  ASSERT_TRUE(checkpoint.ok());
  EXPECT_FALSE(checkpoint->has_value());
}

TEST_F(StoreTest, RefusesACorruptDatabaseAtOpen) {
  {
    auto store = OpenStore();
    ASSERT_NE(store, nullptr);
    for (int i = 0; i < 40; ++i) {
      ASSERT_OK(store->CreateJob(MakeJob(absl::StrCat("job-", i), i), kLayers));
      ASSERT_OK(store->AppendStep(absl::StrCat("job-", i), MakeStep(0)));
    }
  }  // the last connection to close checkpoints the WAL into the file
  const auto size = std::filesystem::file_size(path_);
  ASSERT_GT(size, 8u * 4096);
  {
    // Garbage over the middle pages (B-tree pages of the tables).
    std::fstream file(path_, std::ios::in | std::ios::out | std::ios::binary);
    for (uint64_t offset = 2 * 4096; offset + 4096 < size; offset += 3 * 4096) {
      file.seekp(static_cast<std::streamoff>(offset + 8));
      const std::string garbage(600, '\x5a');
      file.write(garbage.data(), static_cast<std::streamsize>(garbage.size()));
    }
  }
  auto store = Store::Open(path_);
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), absl::StatusCode::kDataLoss)
      << store.status();
  EXPECT_THAT(std::string(store.status().message()), HasSubstr(path_));
  EXPECT_THAT(std::string(store.status().message()), HasSubstr("corrupt"));
}

// ------------------------------------------------------- QueryBestPolicies

class QueryBestPoliciesTest : public StoreTest {
 protected:
  void SetUp() override {
    StoreTest::SetUp();
    store_ = OpenStore();
    ASSERT_NE(store_, nullptr);
    ASSERT_OK(store_->CreateJob(MakeJob("job-1", 1), kLayers));
    ASSERT_OK(store_->CreateJob(MakeJob("other", 2), kLayers));
    // avg_bits = mean(bits), size_bytes = 100 * avg_bits (see MakePolicy).
    // Candidates have no exported model: never ranked, however good.
    StepRecord step1;
    step1.step = 1;
    step1.candidates = {
        MakePolicy(1, PolicyKind::kCandidate, {8, 8, 2}, 0.99, 0.10, 1),
        MakePolicy(1, PolicyKind::kCandidate, {8, 8, 4}, 0.80, 0.50, 2),
    };
    step1.finetuned =
        MakePolicy(1, PolicyKind::kFinetuned, {8, 8, 4}, 0.85, 0.45);  // 6.67
    StepRecord step2;
    step2.step = 2;
    step2.candidates = {
        MakePolicy(2, PolicyKind::kCandidate, {8, 4, 4}, 0.84, 0.40, 1)};
    step2.finetuned =
        MakePolicy(2, PolicyKind::kFinetuned, {8, 4, 4}, 0.83, 0.41);  // 5.33
    StepRecord step3;
    step3.step = 3;
    step3.candidates = {
        MakePolicy(3, PolicyKind::kCandidate, {4, 4, 4}, 0.60, 0.70, 1)};
    step3.finetuned =
        MakePolicy(3, PolicyKind::kFinetuned, {4, 4, 4}, 0.60, 0.70);  // 4
    // A kept policy whose export failed is not ranked either.
    StepRecord step4;
    step4.step = 4;
    step4.candidates = {
        MakePolicy(4, PolicyKind::kCandidate, {2, 2, 2}, 0.10, 2.00, 1)};
    step4.finetuned =
        MakePolicy(4, PolicyKind::kFinetuned, {2, 2, 2}, 0.95, 2.00);
    step4.finetuned.export_sha256.clear();
    for (const StepRecord* step : {&step1, &step2, &step3, &step4})
      ASSERT_OK(store_->AppendStep("job-1", *step));
    ASSERT_OK(store_->FinishJob(
        "job-1", MakePolicy(5, PolicyKind::kFinal, {8, 4, 4}, 0.86, 0.39), 10));
    // Another job's better policies never leak in.
    StepRecord other = MakeStep(1);
    for (auto& c : other.candidates) c.accuracy = 0.99;
    ASSERT_OK(store_->AppendStep("other", other));
  }

  std::unique_ptr<Store> store_;
};

TEST_F(QueryBestPoliciesTest, DedupesOrdersAndLimits) {
  struct Case {
    const char* name;
    double max_avg_bits;
    double max_size_bytes;
    int32_t top_k;
    double max_bops;
    std::vector<std::vector<int32_t>> bits;
    std::vector<double> accuracy;
  };
  // Exported: {8,8,4} 0.85, {8,4,4} 0.83 and 0.86 (final), {4,4,4} 0.60.
  // BOPs are 1000 · Σ bits: 20000, 16000, 12000.
  const Case cases[] = {
      {"all",
       0,
       0,
       10,
       0,
       {{8, 4, 4}, {8, 8, 4}, {4, 4, 4}},
       {0.86, 0.85, 0.60}},
      {"negative limits mean none",
       -1,
       -1,
       10,
       -1,
       {{8, 4, 4}, {8, 8, 4}, {4, 4, 4}},
       {0.86, 0.85, 0.60}},
      {"top_k", 0, 0, 2, 0, {{8, 4, 4}, {8, 8, 4}}, {0.86, 0.85}},
      {"avg bits limit inclusive",
       6.0,
       0,
       10,
       0,
       {{8, 4, 4}, {4, 4, 4}},
       {0.86, 0.60}},
      {"size limit", 0, 450, 10, 0, {{4, 4, 4}}, {0.60}},
      {"both limits", 5.5, 300, 10, 0, {}, {}},
      {"bops limit inclusive",
       0,
       0,
       10,
       16000,
       {{8, 4, 4}, {4, 4, 4}},
       {0.86, 0.60}},
      {"bops and avg bits", 4, 0, 10, 12000, {{4, 4, 4}}, {0.60}},
      {"nothing fits", 1, 0, 10, 0, {}, {}},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    auto best = store_->QueryBestPolicies(
        "job-1", PolicyLimits{c.max_avg_bits, c.max_size_bytes, c.max_bops},
        c.top_k);
    ASSERT_TRUE(best.ok()) << best.status();
    std::vector<std::vector<int32_t>> bits;
    std::vector<double> accuracy;
    for (const auto& p : *best) {
      bits.push_back(p.bits);
      accuracy.push_back(p.accuracy);
    }
    EXPECT_EQ(bits, c.bits);
    EXPECT_EQ(accuracy, c.accuracy);
  }
}

TEST_F(QueryBestPoliciesTest, ReturnsTheBestEvaluationOfEachAssignment) {
  auto best = store_->QueryBestPolicies("job-1", PolicyLimits{0, 0}, 1);
  ASSERT_TRUE(best.ok()) << best.status();
  ASSERT_EQ(best->size(), 1u);
  // {8,4,4} was kept twice; the final policy (0.86) is the best.
  EXPECT_EQ((*best)[0].kind, PolicyKind::kFinal);
  EXPECT_EQ((*best)[0].step, 5);
  EXPECT_DOUBLE_EQ((*best)[0].loss, 0.39);
  EXPECT_EQ((*best)[0].export_sha256, "export-5-2");
}

TEST_F(QueryBestPoliciesTest, ValidationAccuracyRanksThenCalibration) {
  ASSERT_OK(store_->CreateJob(MakeJob("ties", 3), kLayers));
  // bits, calibration accuracy, loss, validation accuracy.
  struct Kept {
    int32_t bits;
    double accuracy, loss, val_accuracy;
  };
  const Kept kept[] = {
      {4, 0.5, 0.9, 0.7},            // equal val and calib: loss 0.9
      {5, 0.5, 0.2, 0.7},            // loss 0.2: before 4
      {6, 0.99, 0.1, std::nan("")},  // unmeasured: last, however good
      {7, 0.6, 0.5, 0.7},            // calib 0.6 breaks the val tie: first
      {3, 0.1, 3.0, 0.8},            // best on validation: first of all
  };
  for (size_t i = 0; i < std::size(kept); ++i) {
    StepRecord step;
    step.step = static_cast<int32_t>(i);
    const int32_t b = kept[i].bits;
    step.candidates = {MakePolicy(step.step, PolicyKind::kCandidate, {b, b, b},
                                  kept[i].accuracy, kept[i].loss, 1)};
    step.finetuned = MakePolicy(step.step, PolicyKind::kFinetuned, {b, b, b},
                                kept[i].accuracy, kept[i].loss);
    step.finetuned.val_accuracy = kept[i].val_accuracy;
    ASSERT_OK(store_->AppendStep("ties", step));
  }
  auto best = store_->QueryBestPolicies("ties", PolicyLimits{0, 0}, 10);
  ASSERT_TRUE(best.ok()) << best.status();
  std::vector<int32_t> first_bits;
  for (const auto& p : *best) first_bits.push_back(p.bits[0]);
  EXPECT_THAT(first_bits, ElementsAre(3, 7, 5, 4, 6));
  EXPECT_TRUE(std::isnan(best->back().val_accuracy));
  EXPECT_EQ((*best)[0].kind, PolicyKind::kFinetuned);
  EXPECT_DOUBLE_EQ((*best)[0].val_loss, 3.1);
}

TEST_F(QueryBestPoliciesTest, RejectsBadArguments) {
  EXPECT_CODE(
      store_->QueryBestPolicies("job-1", PolicyLimits{0, 0}, 0).status(),
      absl::StatusCode::kInvalidArgument);
  EXPECT_CODE(
      store_->QueryBestPolicies("job-1", PolicyLimits{0, 0}, -3).status(),
      absl::StatusCode::kInvalidArgument);
  EXPECT_CODE(
      store_->QueryBestPolicies("job-1", PolicyLimits{0, 0, std::nan("")}, 3)
          .status(),
      absl::StatusCode::kInvalidArgument);
  EXPECT_CODE(
      store_->QueryBestPolicies("job-1", PolicyLimits{std::nan(""), 0}, 3)
          .status(),
      absl::StatusCode::kInvalidArgument);
}

// -------------------------------------------------------------- validation

TEST_F(StoreTest, JobValidationFiguresRoundTrip) {
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  JobRecord job = MakeJob("job-1", 1);
  job.val_samples = 1000;
  job.val_source = "files: t10k-images-idx3-ubyte.gz (1000 samples)";
  ASSERT_OK(store->CreateJob(job, kLayers));
  auto read = store->GetJob("job-1");
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(read->val_samples, 1000);
  EXPECT_EQ(read->val_source, job.val_source);
  EXPECT_TRUE(std::isnan(read->fp32_val_accuracy));  // not measured yet
  EXPECT_TRUE(std::isnan(read->fp32_val_loss));

  ASSERT_OK(store->SetFp32Validation("job-1", 0.31, 0.915));
  read = store->GetJob("job-1");
  ASSERT_TRUE(read.ok());
  EXPECT_DOUBLE_EQ(read->fp32_val_loss, 0.31);
  EXPECT_DOUBLE_EQ(read->fp32_val_accuracy, 0.915);
  EXPECT_EQ(store->SetFp32Validation("nope", 0, 0).code(),
            absl::StatusCode::kNotFound);

  // A kept policy's figures and export survive the round trip; a
  // candidate's validation figures stay unmeasured.
  ASSERT_OK(store->AppendStep("job-1", MakeStep(1)));
  auto steps = store->GetSteps("job-1");
  ASSERT_TRUE(steps.ok());
  const PolicyRecord& kept = (*steps)[0].finetuned;
  EXPECT_DOUBLE_EQ(kept.val_accuracy, 0.92);
  EXPECT_DOUBLE_EQ(kept.val_loss, 0.35);
  EXPECT_EQ(kept.export_sha256, "export-1-1");
  EXPECT_TRUE(std::isnan((*steps)[0].candidates[0].val_accuracy));
  EXPECT_TRUE((*steps)[0].candidates[0].export_sha256.empty());
}

TEST_F(StoreTest, ListsTheJobsOfAModelNewestFirst) {
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  JobRecord a = MakeJob("a", 1), b = MakeJob("b", 2), c = MakeJob("c", 3);
  a.model_sha256 = c.model_sha256 = "m";
  for (const JobRecord& job : {a, b, c})
    ASSERT_OK(store->CreateJob(job, kLayers));
  auto jobs = store->ListJobsForModel("m");
  ASSERT_TRUE(jobs.ok()) << jobs.status();
  ASSERT_EQ(jobs->size(), 2u);
  EXPECT_EQ((*jobs)[0].id, "c");
  EXPECT_EQ((*jobs)[1].id, "a");
  jobs = store->ListJobsForModel("unknown");
  ASSERT_TRUE(jobs.ok());
  EXPECT_TRUE(jobs->empty());
}

// ------------------------------------------------------------------ reopen

TEST_F(StoreTest, ReopenPreservesEverything) {
  const PolicyRecord final_policy =
      MakePolicy(3, PolicyKind::kFinal, {6, 6, 5}, 0.88, 0.33);
  JobRecord job = MakeJob("job-1", 42, "req-1");
  {
    auto store = OpenStore();
    ASSERT_NE(store, nullptr);
    ASSERT_OK(store->PutArtifact("model-sha", "model bytes"));
    ASSERT_OK(store->CreateJob(job, kLayers));
    ASSERT_OK(store->CreateJob(MakeJob("job-2", 43), kLayers));
    ASSERT_OK(store->UpdateJobState("job-1", JobState::kRunning, "", 50, 0));
    ASSERT_OK(store->AppendStep("job-1", MakeStep(0)));
    ASSERT_OK(store->AppendStep("job-1", MakeStep(1)));
    ASSERT_OK(store->FinishJob("job-1", final_policy, 60));
  }
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  EXPECT_EQ(store->schema_version(), LatestSchemaVersion());

  auto artifact = store->GetArtifact("model-sha");
  ASSERT_TRUE(artifact.ok());
  EXPECT_EQ(*artifact, "model bytes");

  job.state = JobState::kSucceeded;
  job.started_ms = 50;
  job.finished_ms = 60;
  job.steps_done = 1;
  auto got = store->GetJob("job-1");
  ASSERT_TRUE(got.ok()) << got.status();
  ExpectJobEq(*got, job);
  auto found = store->FindJobByRequestId("req-1");
  ASSERT_TRUE(found.ok() && found->has_value());
  EXPECT_EQ((*found)->id, "job-1");

  auto jobs = store->ListJobs({});
  ASSERT_TRUE(jobs.ok());
  EXPECT_EQ(Ids(*jobs), (std::vector<std::string>{"job-2", "job-1"}));

  auto layers = store->GetLayers("job-1");
  ASSERT_TRUE(layers.ok());
  EXPECT_EQ(layers->size(), kLayers.size());

  auto steps = store->GetSteps("job-1");
  ASSERT_TRUE(steps.ok());
  ASSERT_EQ(steps->size(), 2u);
  ExpectPolicyEq((*steps)[1].finetuned, MakeStep(1).finetuned);
  ExpectPolicyEq((*steps)[1].candidates[2], MakeStep(1).candidates[2]);

  auto got_final = store->GetFinalPolicy("job-1");
  ASSERT_TRUE(got_final.ok() && got_final->has_value());
  ExpectPolicyEq(**got_final, final_policy);

  // Duplicates are still refused after reopening.
  EXPECT_CODE(store->CreateJob(MakeJob("job-3", 44, "req-1"), kLayers),
              absl::StatusCode::kAlreadyExists);
  EXPECT_CODE(store->AppendStep("job-1", MakeStep(1)),
              absl::StatusCode::kAlreadyExists);
}

// ------------------------------------------------------------- concurrency

TEST_F(StoreTest, ConcurrentWritersAndReaders) {
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  constexpr int kWriters = 4;
  constexpr int kReaders = 3;
  constexpr int kSteps = 25;
  for (int w = 0; w < kWriters; ++w) {
    ASSERT_OK(store->CreateJob(MakeJob(absl::StrCat("job-", w), w), kLayers));
  }

  std::atomic<int> writers_running{kWriters};
  std::atomic<int> errors{0};
  std::atomic<int> reads{0};
  std::vector<std::thread> threads;
  for (int w = 0; w < kWriters; ++w) {
    threads.emplace_back([&, w] {
      const std::string id = absl::StrCat("job-", w);
      for (int s = 0; s < kSteps; ++s) {
        if (!store->AppendStep(id, MakeStep(s)).ok()) ++errors;
        if (!store->PutArtifact(absl::StrCat("artifact-", s % 5), "shared")
                 .ok()) {
          ++errors;
        }
      }
      if (!store
               ->FinishJob(
                   id,
                   MakePolicy(kSteps, PolicyKind::kFinal, {4, 4, 4}, 0.9, 0.3),
                   100)
               .ok()) {
        ++errors;
      }
      --writers_running;
    });
  }
  for (int r = 0; r < kReaders; ++r) {
    threads.emplace_back([&, r] {
      // Read at least a few times even if the writers finish first.
      for (int i = 0; writers_running.load() > 0 || i < 5; ++i) {
        const std::string id = absl::StrCat("job-", (r + i) % kWriters);
        auto steps = store->GetSteps(id);
        auto job = store->GetJob(id);
        auto jobs = store->ListJobs({});
        auto best = store->QueryBestPolicies(id, PolicyLimits{7, 0}, 5);
        if (!steps.ok() || !job.ok() || !jobs.ok() || !best.ok()) {
          ++errors;
          continue;
        }
        // Every step seen is complete: its candidates and fine-tuned policy.
        for (const auto& step : *steps) {
          if (step.candidates.size() != 3 ||
              step.finetuned.kind != PolicyKind::kFinetuned) {
            ++errors;
          }
        }
        if (jobs->size() != kWriters) ++errors;
        ++reads;
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(errors.load(), 0);
  EXPECT_GT(reads.load(), 0);
  for (int w = 0; w < kWriters; ++w) {
    const std::string id = absl::StrCat("job-", w);
    auto steps = store->GetSteps(id);
    ASSERT_TRUE(steps.ok());
    EXPECT_EQ(steps->size(), static_cast<size_t>(kSteps));
    auto job = store->GetJob(id);
    ASSERT_TRUE(job.ok());
    EXPECT_EQ(job->state, JobState::kSucceeded);
    EXPECT_EQ(job->steps_done, kSteps - 1);
  }
}

// Step 0's checkpoint is the job's warm start: it outlives the job's end and
// later checkpoints, and goes only when the job starts over.
TEST_F(StoreTest, WarmStartIsStepZerosCheckpointAndOutlivesTheJob) {
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  ASSERT_OK(store->CreateJob(MakeJob("job-1", 1), kLayers));
  EXPECT_EQ(store->GetWarmStart("nope").status().code(),
            absl::StatusCode::kNotFound);
  auto warm = store->GetWarmStart("job-1");
  ASSERT_TRUE(warm.ok()) << warm.status();
  EXPECT_FALSE(warm->has_value());

  const std::string state0("w0\0\xff", 4);
  ASSERT_OK(store->AppendStep("job-1", MakeStep(0), state0));
  ASSERT_OK(store->AppendStep("job-1", MakeStep(1), "s1"));
  ASSERT_OK(store->ResetJobResults("job-1", 0));  // a resume keeps it
  ASSERT_OK(store->AppendStep("job-1", MakeStep(1), "s1"));
  ASSERT_OK(store->FinishJob(
      "job-1", MakePolicy(1, PolicyKind::kFinal, {5, 5, 5}, 0.9, 0.3), 50));
  warm = store->GetWarmStart("job-1");
  ASSERT_TRUE(warm.ok() && warm->has_value());
  EXPECT_EQ(**warm, state0);

  // Step 0 recorded without a checkpoint leaves none; starting over (or
  // resuming from inside the warm-up) drops it.
  ASSERT_OK(store->CreateJob(MakeJob("job-2", 2), kLayers));
  ASSERT_OK(store->AppendStep("job-2", MakeStep(0)));
  warm = store->GetWarmStart("job-2");
  ASSERT_TRUE(warm.ok());
  EXPECT_FALSE(warm->has_value());
  ASSERT_OK(store->ResetJobResults("job-2"));
  ASSERT_OK(store->AppendStep("job-2", MakeStep(0), "w"));
  ASSERT_OK(store->ResetJobResults("job-2", -1));
  warm = store->GetWarmStart("job-2");
  ASSERT_TRUE(warm.ok());
  EXPECT_FALSE(warm->has_value());
}

// PRAGMA `name` of the database at `path`, read through its own connection.
int64_t ReadPragma(const std::string& path, const std::string& name) {
  auto db = Database::Open(path, SQLITE_OPEN_READONLY);
  EXPECT_TRUE(db.ok()) << db.status();
  if (!db.ok()) return -1;
  auto pragma = db->Prepare("PRAGMA " + name);
  EXPECT_TRUE(pragma.ok()) << pragma.status();
  if (!pragma.ok() || !*pragma->Step()) return -1;
  return pragma->ColumnInt64(0);
}

// A job's dropped checkpoint gives its pages back: after the job ends the
// file holds no free pages, whether it succeeded or failed.
TEST_F(StoreTest, EndedJobsGiveTheirCheckpointPagesBack) {
  constexpr size_t kCheckpointBytes = size_t{8} << 20;
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  EXPECT_EQ(ReadPragma(path_, "auto_vacuum"), 2);  // incremental
  for (const char* id : {"job-1", "job-2"}) {
    ASSERT_OK(store->CreateJob(MakeJob(id, 1), kLayers));
    ASSERT_OK(store->UpdateJobState(id, JobState::kRunning, "", 5, 0));
    ASSERT_OK(store->AppendStep(id, MakeStep(1)));
    ASSERT_OK(store->SaveCheckpoint(id, 1, std::string(kCheckpointBytes, 'c')));
  }
  const int64_t pages_with_checkpoints = ReadPragma(path_, "page_count");
  ASSERT_OK(store->FinishJob(
      "job-1", MakePolicy(2, PolicyKind::kFinal, {6, 5, 4}, 0.9, 0.3), 7));
  ASSERT_OK(store->UpdateJobState("job-2", JobState::kFailed, "boom", 0, 8));
  EXPECT_EQ(ReadPragma(path_, "freelist_count"), 0);
  // Nor does the WAL keep the checkpoints' size.
  EXPECT_EQ(std::filesystem::file_size(path_ + "-wal"), 0u);
  const int64_t page_size = ReadPragma(path_, "page_size");
  EXPECT_LT(ReadPragma(path_, "page_count") * page_size,
            pages_with_checkpoints * page_size -
                2 * static_cast<int64_t>(kCheckpointBytes) * 9 / 10);
}

// A checkpoint larger than kWalSizeLimitBytes passes through the WAL whole;
// the WAL file does not stay that large once the next write starts it over.
TEST_F(StoreTest, TheWalFileShrinksBackAfterALargeCheckpoint) {
  const size_t checkpoint_bytes =
      static_cast<size_t>(kWalSizeLimitBytes) + (size_t{16} << 20);
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  ASSERT_OK(store->CreateJob(MakeJob("job-1", 1), kLayers));
  ASSERT_OK(store->UpdateJobState("job-1", JobState::kRunning, "", 5, 0));
  ASSERT_OK(store->AppendStep("job-1", MakeStep(1)));
  ASSERT_OK(
      store->SaveCheckpoint("job-1", 1, std::string(checkpoint_bytes, 'c')));
  const std::string wal = path_ + "-wal";
  EXPECT_GT(std::filesystem::file_size(wal), checkpoint_bytes);
  ASSERT_OK(store->AppendStep("job-1", MakeStep(2)));
  EXPECT_LE(static_cast<int64_t>(std::filesystem::file_size(wal)),
            kWalSizeLimitBytes);
}

// A database made before incremental vacuum is converted when opened.
TEST_F(StoreTest, OpenTurnsIncrementalVacuumOnInOlderDatabases) {
  ASSERT_NE(OpenStore(), nullptr);
  {
    auto db = Database::Open(path_, SQLITE_OPEN_READWRITE);
    ASSERT_TRUE(db.ok());
    ASSERT_OK(db->Exec("PRAGMA auto_vacuum = NONE; VACUUM"));
  }
  ASSERT_EQ(ReadPragma(path_, "auto_vacuum"), 0);
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  EXPECT_EQ(ReadPragma(path_, "auto_vacuum"), 2);
  ASSERT_OK(store->CreateJob(MakeJob("job-1", 1), kLayers));
}

// The conversion needs space for a copy of the file; on a full disk an old
// database still opens (a server must start there), in its old mode.
TEST_F(StoreTest, AnOldDatabaseStillOpensOnAFullDisk) {
  ASSERT_NE(OpenStore(), nullptr);
  {
    auto db = Database::Open(path_, SQLITE_OPEN_READWRITE);
    ASSERT_TRUE(db.ok());
    ASSERT_OK(db->Exec("PRAGMA auto_vacuum = NONE; VACUUM"));
  }
  mixq::testing::FullDiskVfs& disk = mixq::testing::FullDiskVfs::Install();
  disk.SetFull(true);
  absl::StatusOr<std::unique_ptr<Store>> store = Store::Open(path_);
  disk.SetFull(false);
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_EQ(ReadPragma(path_, "auto_vacuum"), 0);
}

}  // namespace
}  // namespace mixq::storage
