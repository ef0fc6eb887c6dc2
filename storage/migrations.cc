#include "storage/migrations.h"

#include <cstddef>
#include <cstdint>
#include <iterator>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "util/status_macros.h"

namespace mixq::storage {
namespace {

// Version 1: artifacts, jobs, their layers, steps and evaluated policies.
// Policy metrics are nullable because SQLite stores NaN (a diverged loss) as
// NULL. `bits` is the comma-separated per-layer assignment ("8,6,4"), so equal
// assignments compare equal as text. The PRAGMAs cannot take parameters; their
// values are this script's constants (Migrate checks user_version after it).
constexpr char kSchemaV1[] = R"sql(
CREATE TABLE artifacts (
  sha256 TEXT PRIMARY KEY NOT NULL,
  data BLOB NOT NULL,
  size INTEGER NOT NULL,
  created_ms INTEGER NOT NULL
);

CREATE TABLE jobs (
  id TEXT PRIMARY KEY NOT NULL,
  request_id TEXT UNIQUE,  -- NULL when the client gave none
  spec TEXT NOT NULL,
  model_sha256 TEXT NOT NULL,
  inputs_sha256 TEXT NOT NULL,
  labels_sha256 TEXT NOT NULL,
  state INTEGER NOT NULL CHECK (state BETWEEN 0 AND 4),
  error TEXT NOT NULL,
  created_ms INTEGER NOT NULL,
  started_ms INTEGER NOT NULL,
  finished_ms INTEGER NOT NULL,
  steps_done INTEGER NOT NULL,
  fp32_size_bytes REAL
);
CREATE INDEX jobs_by_created ON jobs (created_ms);
CREATE INDEX jobs_by_state_created ON jobs (state, created_ms);

CREATE TABLE job_layers (
  job_id TEXT NOT NULL REFERENCES jobs (id),
  idx INTEGER NOT NULL,
  name TEXT NOT NULL,
  num_weights INTEGER NOT NULL,
  PRIMARY KEY (job_id, idx)
) WITHOUT ROWID;

CREATE TABLE steps (
  job_id TEXT NOT NULL REFERENCES jobs (id),
  step INTEGER NOT NULL,
  elapsed_seconds REAL,
  PRIMARY KEY (job_id, step)
) WITHOUT ROWID;

CREATE TABLE policies (
  id INTEGER PRIMARY KEY,
  job_id TEXT NOT NULL REFERENCES jobs (id),
  step INTEGER NOT NULL,
  kind INTEGER NOT NULL CHECK (kind BETWEEN 0 AND 2),
  rank INTEGER NOT NULL,
  chosen INTEGER NOT NULL CHECK (chosen IN (0, 1)),
  bits TEXT NOT NULL,
  avg_bits REAL,
  size_bytes REAL,
  loss REAL,
  accuracy REAL,
  omega REAL,
  perf_index REAL
);
CREATE INDEX policies_by_step ON policies (job_id, step);
CREATE INDEX policies_by_avg_bits ON policies (job_id, avg_bits);
CREATE UNIQUE INDEX policies_one_final ON policies (job_id) WHERE kind = 2;

PRAGMA application_id = 1835628657;  -- kMixqApplicationId
PRAGMA user_version = 1;
)sql";

// Version 2: the cost model's BOPs. Layers gain their MACs per sample (0 for
// jobs created before), policies their BOPs (NULL before: unknown, since the
// MACs of older jobs were never recorded).
constexpr char kSchemaV2[] = R"sql(
ALTER TABLE job_layers ADD COLUMN macs INTEGER NOT NULL DEFAULT 0;
ALTER TABLE policies ADD COLUMN bops INTEGER;

PRAGMA user_version = 2;
)sql";

// Version 3: search strategies. Jobs record theirs (every job before was
// progressive); steps their fine-tune steps and scoring work, policies their
// activation bits (NULL before: unknown).
constexpr char kSchemaV3[] = R"sql(
ALTER TABLE jobs ADD COLUMN strategy TEXT NOT NULL DEFAULT 'progressive';
ALTER TABLE steps ADD COLUMN finetune_steps INTEGER;
ALTER TABLE steps ADD COLUMN node_runs INTEGER;
ALTER TABLE steps ADD COLUMN naive_node_runs INTEGER;
ALTER TABLE steps ADD COLUMN scoring_seconds REAL;
ALTER TABLE steps ADD COLUMN oracle_omega REAL;
ALTER TABLE policies ADD COLUMN activation_bits INTEGER;
CREATE INDEX jobs_by_model ON jobs (model_sha256);

PRAGMA user_version = 3;
)sql";

// Version 4: crash safety and export. A running job's latest checkpoint
// (the search state after its last recorded step, one row per job, replaced
// at each step in the step's own transaction); the SHA-256 of a finished
// job's exported QDQ ONNX model (an artifact; '' when none).
constexpr char kSchemaV4[] = R"sql(
CREATE TABLE checkpoints (
  job_id TEXT PRIMARY KEY NOT NULL REFERENCES jobs (id),
  step INTEGER NOT NULL,
  state BLOB NOT NULL,
  updated_ms INTEGER NOT NULL
);
ALTER TABLE jobs ADD COLUMN export_sha256 TEXT NOT NULL DEFAULT '';

PRAGMA user_version = 4;
)sql";

// Version 5: validation. Every kept policy (fine-tuned step policies and
// the final one) is measured on held-out validation data and keeps the SHA-256
// of its exported QDQ model (an artifact; '' when none), so what is ranked
// can be downloaded; jobs record their validation set and the FP32 model's
// figures on it. NULL validation figures are unmeasured (NaN).
constexpr char kSchemaV5[] = R"sql(
ALTER TABLE policies ADD COLUMN val_loss REAL;
ALTER TABLE policies ADD COLUMN val_accuracy REAL;
ALTER TABLE policies ADD COLUMN export_sha256 TEXT NOT NULL DEFAULT '';
ALTER TABLE jobs ADD COLUMN val_samples INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN val_source TEXT NOT NULL DEFAULT '';
ALTER TABLE jobs ADD COLUMN fp32_val_loss REAL;
ALTER TABLE jobs ADD COLUMN fp32_val_accuracy REAL;

PRAGMA user_version = 5;
)sql";

// Version 6: re-solving budgets. The per-layer sensitivities Ω_l(b) a job's
// search measured after its warm-up (step 0), one row per layer (its index in
// job_layers) and bit-width, so a new budget can be answered without
// recomputing them. They go with their step. NULL Ω is NaN.
constexpr char kSchemaV6[] = R"sql(
CREATE TABLE sensitivities (
  job_id TEXT NOT NULL REFERENCES jobs (id),
  step INTEGER NOT NULL,
  layer INTEGER NOT NULL,
  bits INTEGER NOT NULL,
  omega REAL,
  PRIMARY KEY (job_id, step, layer, bits)
) WITHOUT ROWID;

PRAGMA user_version = 6;
)sql";

// Version 7: poison jobs. The starts of a job since it last recorded a step
// or was stopped cleanly: each start counts before the job runs, so a job
// found running at start-up with two counted starts stopped the process
// twice in a row and is quarantined instead of run again.
constexpr char kSchemaV7[] = R"sql(
ALTER TABLE jobs ADD COLUMN unclean_starts INTEGER NOT NULL DEFAULT 0;

PRAGMA user_version = 7;
)sql";

// Version 8: each job's state after its warm-up (a search checkpoint of step
// 0), kept after the job ends, for jobs started from it (JobSpec.from_job).
constexpr char kSchemaV8[] = R"sql(
CREATE TABLE warm_starts (
  job_id TEXT PRIMARY KEY REFERENCES jobs(id),
  state BLOB NOT NULL
) WITHOUT ROWID;

PRAGMA user_version = 8;
)sql";

struct Migration {
  int version;
  const char* sql;
};

constexpr Migration kMigrations[] = {
    {1, kSchemaV1}, {2, kSchemaV2}, {3, kSchemaV3}, {4, kSchemaV4},
    {5, kSchemaV5}, {6, kSchemaV6}, {7, kSchemaV7}, {8, kSchemaV8},
};

constexpr bool VersionsAreConsecutive() {
  for (size_t i = 0; i < std::size(kMigrations); ++i) {
    if (kMigrations[i].version != static_cast<int>(i) + 1) return false;
  }
  return true;
}
static_assert(VersionsAreConsecutive(),
              "migrations must be numbered 1, 2, ...");
static_assert(kMixqApplicationId == 1835628657, "kSchemaV1 spells it out");

absl::StatusOr<int64_t> QueryInt64(Database& db, absl::string_view sql) {
  MIXQ_ASSIGN_OR_RETURN(Statement statement, db.Prepare(sql));
  MIXQ_ASSIGN_OR_RETURN(bool has_row, statement.Step());
  if (!has_row) return absl::InternalError(absl::StrCat("no row from ", sql));
  return statement.ColumnInt64(0);
}

// The database's schema version, after checking that this binary can use it.
absl::StatusOr<int> CheckedVersion(Database& db) {
  MIXQ_ASSIGN_OR_RETURN(const int64_t version,
                        QueryInt64(db, "PRAGMA user_version"));
  if (version > LatestSchemaVersion()) {
    return absl::FailedPreconditionError(
        absl::StrCat("database schema version ", version,
                     " is newer than this binary supports (",
                     LatestSchemaVersion(), "); upgrade mixq"));
  }
  if (version == 0) {
    MIXQ_ASSIGN_OR_RETURN(const int64_t objects,
                          QueryInt64(db, "SELECT count(*) FROM sqlite_master"));
    if (objects > 0) {
      return absl::FailedPreconditionError(
          "not a mixq database: it has tables but no schema version");
    }
  } else {
    MIXQ_ASSIGN_OR_RETURN(const int64_t application_id,
                          QueryInt64(db, "PRAGMA application_id"));
    if (application_id != kMixqApplicationId) {
      return absl::FailedPreconditionError(absl::StrCat(
          "not a mixq database: application_id is ", application_id));
    }
  }
  return static_cast<int>(version);
}

}  // namespace

int LatestSchemaVersion() {
  return kMigrations[std::size(kMigrations) - 1].version;
}

absl::StatusOr<int> Migrate(Database& db) {
  for (const Migration& migration : kMigrations) {
    Transaction transaction(db);
    MIXQ_RETURN_IF_ERROR(transaction.Begin());
    // Read inside the write transaction: another process may have migrated
    // the file since this one last looked.
    MIXQ_ASSIGN_OR_RETURN(const int version, CheckedVersion(db));
    if (version >= migration.version) continue;
    const std::string context =
        absl::StrCat("schema migration to version ", migration.version);
    MIXQ_RETURN_IF_ERROR(Annotate(db.Exec(migration.sql), context));
    MIXQ_ASSIGN_OR_RETURN(const int64_t applied,
                          QueryInt64(db, "PRAGMA user_version"));
    if (applied != migration.version) {
      return absl::InternalError(
          absl::StrCat(context, ": script set user_version ", applied));
    }
    MIXQ_RETURN_IF_ERROR(Annotate(transaction.Commit(), context));
  }
  return CheckedVersion(db);
}

}  // namespace mixq::storage
