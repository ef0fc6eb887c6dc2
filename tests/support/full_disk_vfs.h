// Test support: a full disk for SQLite without root or a small filesystem.
// Install() makes a VFS that wraps the default one SQLite's default, so every
// database a test opens afterwards goes through it; while SetFull(true),
// every write to a database, journal or WAL file fails with SQLITE_FULL, as
// on a disk with no space left (reads still work). Unlike a page cap
// (Store::SetMaxPageCount), this also fails updates of existing rows, whose
// WAL frames need space too.
#ifndef MIXQ_TESTS_SUPPORT_FULL_DISK_VFS_H_
#define MIXQ_TESTS_SUPPORT_FULL_DISK_VFS_H_

namespace mixq::testing {

class FullDiskVfs {
 public:
  // Registers the VFS as the default, once per process; later calls return
  // the same instance. Databases opened before keep their VFS.
  static FullDiskVfs& Install();

  void SetFull(bool full);
  bool full() const;

 private:
  FullDiskVfs() = default;
};

}  // namespace mixq::testing

#endif  // MIXQ_TESTS_SUPPORT_FULL_DISK_VFS_H_
