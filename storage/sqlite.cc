#include "storage/sqlite.h"

#include <cctype>
#include <cerrno>
#include <utility>

#include "absl/strings/str_cat.h"
#include "storage/errors.h"

namespace mixq::storage {
namespace {

// A Status for `result_code`, with the connection's error text when there is
// a connection (it names the constraint, table or syntax problem).
// A full disk (SQLITE_FULL, or an I/O error caused by ENOSPC) is marked with
// DiskFullError's payload: the job manager retries such writes.
absl::Status Error(sqlite3* db, int result_code, absl::string_view context) {
  const char* text =
      db != nullptr ? sqlite3_errmsg(db) : sqlite3_errstr(result_code);
  const int primary = result_code & 0xff;
  if (primary == SQLITE_FULL || (primary == SQLITE_IOERR && db != nullptr &&
                                 sqlite3_system_errno(db) == ENOSPC)) {
    return DiskFullError(absl::StrCat(context, ": ", text, " (disk full)"));
  }
  return absl::Status(SqliteStatusCode(result_code),
                      absl::StrCat(context, ": ", text));
}

bool OnlyWhitespace(const char* begin, const char* end) {
  for (const char* c = begin; c < end; ++c) {
    if (!std::isspace(static_cast<unsigned char>(*c))) return false;
  }
  return true;
}

}  // namespace

absl::StatusCode SqliteStatusCode(int result_code) {
  switch (result_code) {
    case SQLITE_CONSTRAINT_PRIMARYKEY:
    case SQLITE_CONSTRAINT_UNIQUE:
      return absl::StatusCode::kAlreadyExists;
    default:
      break;
  }
  switch (result_code & 0xff) {  // the primary code
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
      return absl::StatusCode::kUnavailable;
    case SQLITE_CONSTRAINT:
    case SQLITE_NOTADB:
    case SQLITE_CANTOPEN:
    case SQLITE_PERM:
    case SQLITE_READONLY:
    case SQLITE_AUTH:
      return absl::StatusCode::kFailedPrecondition;
    case SQLITE_CORRUPT:
      return absl::StatusCode::kDataLoss;
    case SQLITE_FULL:
    case SQLITE_NOMEM:
      return absl::StatusCode::kResourceExhausted;
    case SQLITE_TOOBIG:
    case SQLITE_RANGE:
      return absl::StatusCode::kInvalidArgument;
    case SQLITE_INTERRUPT:
      return absl::StatusCode::kCancelled;
    default:
      return absl::StatusCode::kInternal;
  }
}

// ---------------------------------------------------------------- Statement

Statement::Statement(sqlite3* db, sqlite3_stmt* stmt) : db_(db), stmt_(stmt) {}

void Statement::RecordBindResult(int result_code, int index) {
  if (result_code == SQLITE_OK || !bind_status_.ok()) return;
  bind_status_ =
      Error(db_, result_code, absl::StrCat("bind parameter ", index));
}

void Statement::BindInt64(int index, int64_t value) {
  RecordBindResult(sqlite3_bind_int64(stmt_.get(), index, value), index);
}

void Statement::BindDouble(int index, double value) {
  RecordBindResult(sqlite3_bind_double(stmt_.get(), index, value), index);
}

void Statement::BindText(int index, absl::string_view value) {
  // A null data pointer would bind NULL; "" must stay an empty string.
  RecordBindResult(
      sqlite3_bind_text64(stmt_.get(), index, value.data() ? value.data() : "",
                          value.size(), SQLITE_TRANSIENT, SQLITE_UTF8),
      index);
}

void Statement::BindBlob(int index, absl::string_view value) {
  RecordBindResult(
      sqlite3_bind_blob64(stmt_.get(), index, value.data() ? value.data() : "",
                          value.size(), SQLITE_TRANSIENT),
      index);
}

void Statement::BindNull(int index) {
  RecordBindResult(sqlite3_bind_null(stmt_.get(), index), index);
}

absl::StatusOr<bool> Statement::Step() {
  if (!bind_status_.ok()) return bind_status_;
  const int rc = sqlite3_step(stmt_.get());
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  return Error(db_, rc, "step");
}

absl::Status Statement::Run() {
  absl::StatusOr<bool> row = Step();
  if (!row.ok()) return row.status();
  if (*row) {
    return absl::InternalError(
        absl::StrCat("statement returned a row: ", sqlite3_sql(stmt_.get())));
  }
  return absl::OkStatus();
}

void Statement::Reset() {
  // sqlite3_reset repeats the last step's error, which Step() already
  // reported.
  sqlite3_reset(stmt_.get());
  sqlite3_clear_bindings(stmt_.get());
  bind_status_ = absl::OkStatus();
}

int64_t Statement::ColumnInt64(int column) const {
  return sqlite3_column_int64(stmt_.get(), column);
}

double Statement::ColumnDouble(int column) const {
  return sqlite3_column_double(stmt_.get(), column);
}

std::string Statement::ColumnText(int column) const {
  // The pointer first, then the size (the order sqlite3_column_bytes's
  // documentation requires).
  const auto* text = sqlite3_column_text(stmt_.get(), column);
  const int size = sqlite3_column_bytes(stmt_.get(), column);
  if (text == nullptr) return std::string();
  return std::string(reinterpret_cast<const char*>(text), size);
}

std::string Statement::ColumnBlob(int column) const {
  const void* data = sqlite3_column_blob(stmt_.get(), column);
  const int size = sqlite3_column_bytes(stmt_.get(), column);
  if (data == nullptr) return std::string();
  return std::string(static_cast<const char*>(data), size);
}

bool Statement::ColumnIsNull(int column) const {
  return sqlite3_column_type(stmt_.get(), column) == SQLITE_NULL;
}

// ----------------------------------------------------------------- Database

absl::StatusOr<Database> Database::Open(const std::string& path, int flags) {
  sqlite3* raw = nullptr;
  const int rc = sqlite3_open_v2(path.c_str(), &raw, flags, nullptr);
  // Even a failed open usually allocates a handle (holding the error text);
  // owning it at once closes it on every path.
  Database db(raw);
  if (raw == nullptr) return Error(nullptr, SQLITE_NOMEM, "open");
  if (rc != SQLITE_OK) return Error(raw, rc, "open");
  sqlite3_extended_result_codes(raw, 1);
  return db;
}

absl::Status Database::SetBusyTimeout(int timeout_ms) {
  const int rc = sqlite3_busy_timeout(db_.get(), timeout_ms);
  if (rc != SQLITE_OK) return Error(db_.get(), rc, "busy_timeout");
  return absl::OkStatus();
}

absl::Status Database::Exec(const char* sql) {
  const int rc = sqlite3_exec(db_.get(), sql, nullptr, nullptr, nullptr);
  if (rc != SQLITE_OK) return Error(db_.get(), rc, "exec");
  return absl::OkStatus();
}

absl::StatusOr<Statement> Database::Prepare(absl::string_view sql) {
  sqlite3_stmt* raw = nullptr;
  const char* tail = nullptr;
  const int rc = sqlite3_prepare_v3(
      db_.get(), sql.data(), static_cast<int>(sql.size()), 0, &raw, &tail);
  Statement statement(db_.get(), raw);
  if (rc != SQLITE_OK) return Error(db_.get(), rc, "prepare");
  if (raw == nullptr) {
    return absl::InternalError(
        absl::StrCat("prepare: no statement in \"", sql, "\""));
  }
  if (!OnlyWhitespace(tail, sql.data() + sql.size())) {
    return absl::InternalError(
        absl::StrCat("prepare: more than one statement in \"", sql, "\""));
  }
  return statement;
}

int64_t Database::Changes() const { return sqlite3_changes64(db_.get()); }

int64_t Database::MaxLength() const {
  return sqlite3_limit(db_.get(), SQLITE_LIMIT_LENGTH, -1);
}

// -------------------------------------------------------------- Transaction

Transaction::~Transaction() {
  // Best effort: if SQLite already rolled back (e.g. after SQLITE_FULL),
  // ROLLBACK fails harmlessly with "no transaction is active".
  if (active_) (void)db_.Exec("ROLLBACK");
}

absl::Status Transaction::Begin() { return Start("BEGIN IMMEDIATE"); }

absl::Status Transaction::BeginRead() { return Start("BEGIN"); }

absl::Status Transaction::Start(const char* begin_sql) {
  if (active_) return absl::InternalError("transaction already begun");
  absl::Status status = db_.Exec(begin_sql);
  active_ = status.ok();
  return status;
}

absl::Status Transaction::Commit() {
  absl::Status status = db_.Exec("COMMIT");
  // A failed COMMIT leaves the transaction open; the destructor rolls back.
  if (status.ok()) active_ = false;
  return status;
}

}  // namespace mixq::storage
