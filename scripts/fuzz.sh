#!/usr/bin/env bash
# Fuzzes mixq's model validator and importer (tests/fuzz/import_fuzzer.cc)
# with libFuzzer for SECONDS (default 60).
#
#   scripts/fuzz.sh [SECONDS]
#
# Builds fuzz_import with clang, AddressSanitizer (leaks included) and
# coverage into $BUILD_DIR, seeds it with tests/fuzz/corpus and
# libonnx-testdata's models (also with their extra inputs turned into
# initializers, when /usr/bin/python3 has onnx), with the operator and
# attribute names of tests/fuzz/onnx.dict, and keeps the corpus it grows in
# $BUILD_DIR/fuzz-corpus. A crash, leak, timeout (10 s per input) or OOM
# (2.5 GB) stops the run, leaves the input in $BUILD_DIR/fuzz-artifacts/ and
# fails the script. Reproduce one with
#   $BUILD_DIR/tests/fuzz/fuzz_import $BUILD_DIR/fuzz-artifacts/crash-...
# and, once fixed, add it to tests/fuzz/corpus/ (ctest replays it).
# Environment: BUILD_DIR (default build-fuzz), JOBS (libFuzzer -jobs,
# default 1), FUZZ_FLAGS (more libFuzzer flags).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
SECONDS_TO_RUN=${1:-60}
BUILD_DIR=${BUILD_DIR:-build-fuzz}
JOBS=${JOBS:-1}
TESTDATA=/usr/share/libonnx-testdata/data

cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_CXX_FLAGS=-Wno-unknown-warning-option \
  -DMIXQ_FUZZ=ON -DMIXQ_BUILD_BENCH=OFF >/dev/null
cmake --build "$BUILD_DIR" -j2 --target fuzz_import

SEEDS="$BUILD_DIR/fuzz-seeds"
if [[ ! -d "$SEEDS" && -d "$TESTDATA" ]]; then
  if /usr/bin/python3 -c "import onnx" 2>/dev/null; then
    /usr/bin/python3 tests/fuzz/make_seeds.py "$TESTDATA" "$SEEDS"
  else
    mkdir -p "$SEEDS"
    for model in "$TESTDATA"/*/*/model.onnx; do
      case_dir=$(dirname "$model")
      cp "$model" "$SEEDS/$(basename "$(dirname "$case_dir")")_$(basename "$case_dir").onnx"
    done
  fi
fi
mkdir -p "$BUILD_DIR/fuzz-corpus" "$BUILD_DIR/fuzz-artifacts" "$SEEDS"

FUZZER=$(realpath "$BUILD_DIR/tests/fuzz/fuzz_import")
cd "$BUILD_DIR"
rm -f fuzz-[0-9]*.log
status=0
# shellcheck disable=SC2086
"$FUZZER" -max_total_time="$SECONDS_TO_RUN" -jobs="$JOBS" -workers="$JOBS" \
  -timeout=10 -rss_limit_mb=2560 -print_final_stats=1 \
  -dict="$ROOT/tests/fuzz/onnx.dict" \
  -artifact_prefix=fuzz-artifacts/ ${FUZZ_FLAGS:-} \
  fuzz-corpus "$ROOT/tests/fuzz/corpus" fuzz-seeds || status=$?
for log in fuzz-[0-9]*.log; do
  [[ -f "$log" ]] || continue
  echo "== $BUILD_DIR/$log"
  grep -E "^#[0-9]+[[:space:]]+(INITED|DONE)|^stat::|ERROR|SUMMARY|finding|Test unit written" "$log" || true
done
ls fuzz-artifacts
exit "$status"
