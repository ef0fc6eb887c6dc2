#!/usr/bin/env bash
# Checks that every C++ file in the repository is formatted as .clang-format
# says (Google style), with Debian bookworm's clang-format 14; CI runs it.
#   scripts/check-format.sh          # list the files that differ; exit 1 if any
#   scripts/check-format.sh --fix    # reformat them in place
set -euo pipefail
cd "$(dirname "$0")/.."
CLANG_FORMAT=${CLANG_FORMAT:-clang-format-14}
if ! command -v "$CLANG_FORMAT" >/dev/null; then
  echo "check-format: $CLANG_FORMAT not found (scripts/install-deps.sh installs it)" >&2
  exit 2
fi
mapfile -t files < <(git ls-files '*.cc' '*.h')
if [[ ${1:-} == --fix ]]; then
  "$CLANG_FORMAT" -i "${files[@]}"
  exit 0
elif [[ $# -gt 0 ]]; then
  echo "usage: scripts/check-format.sh [--fix]" >&2
  exit 2
fi
differ=()
for f in "${files[@]}"; do
  if ! "$CLANG_FORMAT" --dry-run --Werror "$f" >/dev/null 2>&1; then
    differ+=("$f")
  fi
done
if ((${#differ[@]} > 0)); then
  printf 'check-format: %d of %d files differ from .clang-format (fix: scripts/check-format.sh --fix):\n' \
    "${#differ[@]}" "${#files[@]}" >&2
  printf '  %s\n' "${differ[@]}" >&2
  exit 1
fi
echo "check-format: ${#files[@]} files formatted"
