// Schema migrations: an ordered list of numbered SQL scripts. The database's
// `PRAGMA user_version` records the last one applied; `PRAGMA application_id`
// marks the file as mixq's.
#ifndef MIXQ_STORAGE_MIGRATIONS_H_
#define MIXQ_STORAGE_MIGRATIONS_H_

#include <cstdint>

#include "absl/status/statusor.h"
#include "storage/sqlite.h"

namespace mixq::storage {

// PRAGMA application_id of a mixq database: "mixq" in ASCII.
inline constexpr int32_t kMixqApplicationId = 0x6D697871;

// The newest schema version this binary knows.
int LatestSchemaVersion();

// Brings `db`, a read-write connection, to LatestSchemaVersion(), applying
// each pending migration in its own BEGIN IMMEDIATE transaction, and returns
// the resulting version. FAILED_PRECONDITION if the database's version is
// newer than this binary's, or if it is not a mixq database (a non-empty
// schema at version 0, or another application_id). Blocks on disk I/O.
absl::StatusOr<int> Migrate(Database& db);

}  // namespace mixq::storage

#endif  // MIXQ_STORAGE_MIGRATIONS_H_
