#!/usr/bin/env bash
# Builds mixq and runs its tests with ctest.
#
#   scripts/test.sh                    # Release, the whole suite (the README's test command)
#   scripts/test.sh --sanitize address,undefined
#                                      # the whole suite under AddressSanitizer (leaks
#                                      # included) + UndefinedBehaviorSanitizer
#
# (No ThreadSanitizer mode: Debian's prebuilt Abseil is not instrumented, so
# TSan cannot see absl::Mutex and reports every access made under one.)
# Sanitized builds are -O1 with line tables, in build-<first sanitizer> unless
# BUILD_DIR says otherwise; a sanitizer report fails the test that hit it.
# Environment: BUILD_DIR (default build), CTEST_ARGS (more ctest arguments).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
SANITIZE=""
if [[ ${1:-} == --sanitize ]]; then
  SANITIZE=${2:?"--sanitize needs a list, e.g. address,undefined"}
elif [[ $# -gt 0 ]]; then
  echo "usage: scripts/test.sh [--sanitize address,undefined]" >&2
  exit 2
fi

if [[ -z $SANITIZE ]]; then
  BUILD_DIR=${BUILD_DIR:-build}
  cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release
  cmake --build "$BUILD_DIR" -j2
  # shellcheck disable=SC2086
  ctest --test-dir "$BUILD_DIR" --output-on-failure -j2 ${CTEST_ARGS:-}
  exit 0
fi

BUILD_DIR=${BUILD_DIR:-build-${SANITIZE%%,*}}
# -march=native stays: the engine's AVX-512 paths are what runs in production.
cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1" -DMIXQ_SANITIZE="$SANITIZE" \
  -DMIXQ_BUILD_BENCH=OFF >/dev/null
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
# (detect_stack_use_after_return stays off: with GCC 12 it crashes inside
# std::initializer_list copies that are correct.)
export ASAN_OPTIONS="detect_leaks=1:strict_string_checks=1"
export LSAN_OPTIONS="suppressions=$ROOT/tests/sanitizers/lsan.supp"
cmake --build "$BUILD_DIR" -j2
# shellcheck disable=SC2086
ctest --test-dir "$BUILD_DIR" --output-on-failure -j2 ${CTEST_ARGS:-}
