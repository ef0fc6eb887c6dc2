// Small RAII wrappers over the SQLite C API, in the manner of Chromium's
// `sql/`: a Database owns a connection, a Statement owns a prepared statement,
// and a Transaction rolls back unless committed. Every failure becomes an
// absl::Status carrying sqlite3_errmsg's text; a full disk is marked as
// storage/errors.h says. Values reach SQL only through
// bound parameters.
//
// Thread-safety: none. A Database and the Statements and Transactions made
// from it must be used by one thread at a time (Store guards each connection
// with its own mutex).
#ifndef MIXQ_STORAGE_SQLITE_H_
#define MIXQ_STORAGE_SQLITE_H_

#include <sqlite3.h>

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace mixq::storage {

// Maps an SQLite result code (primary or extended) to a Status code:
// BUSY/LOCKED → UNAVAILABLE, unique/primary-key constraint → ALREADY_EXISTS,
// other constraints → FAILED_PRECONDITION, NOTADB/CANTOPEN/PERM/READONLY →
// FAILED_PRECONDITION, CORRUPT → DATA_LOSS, FULL/NOMEM → RESOURCE_EXHAUSTED,
// TOOBIG/RANGE → INVALID_ARGUMENT, INTERRUPT → CANCELLED, else INTERNAL.
absl::StatusCode SqliteStatusCode(int result_code);

// A prepared statement. Made by Database::Prepare; must not outlive it.
// Movable, not copyable; finalized on destruction.
class Statement {
 public:
  Statement(Statement&&) = default;
  Statement& operator=(Statement&&) = default;
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;
  ~Statement() = default;

  // Bind a value to the 1-based parameter `index` (`?N` in the SQL). Text
  // and blobs are copied. A failed bind (index out of range, value too big)
  // is remembered and returned by the next Step() or Run().
  void BindInt64(int index, int64_t value);
  void BindDouble(int index, double value);  // NaN is stored as NULL
  void BindText(int index, absl::string_view value);
  void BindBlob(int index, absl::string_view value);
  void BindNull(int index);

  // Advances the statement: true if a row is available, false when done.
  absl::StatusOr<bool> Step();
  // Executes a statement that returns no rows (INSERT, UPDATE, DELETE, ...);
  // INTERNAL if it produces a row.
  absl::Status Run();
  // Rewinds the statement and clears its bindings (and any remembered bind
  // error) so it can be bound and run again.
  void Reset();

  // Columns of the current row, 0-based. NULL reads as 0, 0.0 or "".
  int64_t ColumnInt64(int column) const;
  double ColumnDouble(int column) const;
  std::string ColumnText(int column) const;
  std::string ColumnBlob(int column) const;
  bool ColumnIsNull(int column) const;

 private:
  friend class Database;
  struct Finalizer {
    void operator()(sqlite3_stmt* stmt) const { sqlite3_finalize(stmt); }
  };

  Statement(sqlite3* db, sqlite3_stmt* stmt);
  void RecordBindResult(int result_code, int index);

  sqlite3* db_;  // not owned; the connection that prepared stmt_
  std::unique_ptr<sqlite3_stmt, Finalizer> stmt_;
  absl::Status bind_status_;  // first failed bind since the last Reset()
};

// One SQLite connection, closed on destruction. Movable, not copyable.
class Database {
 public:
  // Opens the database at `path` with SQLITE_OPEN_* `flags` (see
  // sqlite3_open_v2) and extended result codes on. Opening is lazy: a file
  // that is not SQLite fails at the first statement, with
  // FAILED_PRECONDITION ("file is not a database").
  static absl::StatusOr<Database> Open(const std::string& path, int flags);

  Database(Database&&) = default;
  Database& operator=(Database&&) = default;
  Database(const Database&) = delete;
  Database& operator=(const Database&) = delete;
  ~Database() = default;

  // Waits up to `timeout_ms` for locks held by other connections before
  // failing with UNAVAILABLE.
  absl::Status SetBusyTimeout(int timeout_ms);

  // Runs `sql`, one or more statements without parameters (DDL, PRAGMAs,
  // BEGIN/COMMIT). Rows they return are discarded.
  absl::Status Exec(const char* sql);

  // Compiles `sql`, exactly one statement (INTERNAL if more follow).
  absl::StatusOr<Statement> Prepare(absl::string_view sql);

  // Rows changed by the most recent INSERT, UPDATE or DELETE.
  int64_t Changes() const;

  // The longest string, blob or row this connection accepts
  // (SQLITE_LIMIT_LENGTH; 1e9 bytes unless SQLite was built otherwise).
  int64_t MaxLength() const;

 private:
  struct Closer {
    // close_v2: a connection with unfinalized statements closes once the
    // last of them is finalized instead of leaking.
    void operator()(sqlite3* db) const { sqlite3_close_v2(db); }
  };

  explicit Database(sqlite3* db) : db_(db) {}
  std::unique_ptr<sqlite3, Closer> db_;
};

// A transaction on a borrowed Database that must outlive it. Rolls back on
// destruction unless Commit() succeeded. Not copyable or movable.
class Transaction {
 public:
  explicit Transaction(Database& db) : db_(db) {}
  ~Transaction();
  Transaction(const Transaction&) = delete;
  Transaction& operator=(const Transaction&) = delete;

  // BEGIN IMMEDIATE: takes the write lock now, so the transaction can never
  // fail later by upgrading a read lock (busy_timeout does not cover that).
  absl::Status Begin();
  // BEGIN (deferred): for read-only work; its reads see one snapshot.
  absl::Status BeginRead();
  absl::Status Commit();

 private:
  absl::Status Start(const char* begin_sql);

  Database& db_;
  bool active_ = false;
};

}  // namespace mixq::storage

#endif  // MIXQ_STORAGE_SQLITE_H_
