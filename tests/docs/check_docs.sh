#!/usr/bin/env bash
# docs_citations_test: keeps the documentation's references true.
#
#   tests/docs/check_docs.sh SOURCE_DIR
#
# Fails (exit 1, one line per finding) when
#  - a file cites a design document other than docs/design.md (DESIGN.md,
#    ../shared/...: files outside the repository);
#  - a line cites a section of docs/design.md that does not exist: every
#    section number on a line naming docs/design.md, and in docs/*.md every
#    section number (they cite docs/design.md), must be a heading
#    "## N. Title" or "### N.M Title" there;
#  - a line outside docs/ cites a section without naming docs/design.md;
#  - docs/*.md names a repository path (engine/..., tests/..., a relative
#    link) that does not exist.
set -euo pipefail
root=${1:?usage: check_docs.sh SOURCE_DIR}
cd "$root"
export LC_ALL=C
self=tests/docs/check_docs.sh
design=docs/design.md
failures=0
fail() {
  echo "$1"
  failures=$((failures + 1))
}

[[ -f $design ]] || { echo "$design: missing"; exit 1; }
# "## 3. Title" -> 3, "### 3.1 Title" -> 3.1
sections=" $(sed -nE 's/^#{2,4} ([0-9]+(\.[0-9]+)*)\.? .*/\1/p' "$design" | tr '\n' ' ') "

mapfile -t files < <(
  find . \( -name .git -o -path './build*' -o -name node_modules \) -prune -o \
    -type f \( -name '*.h' -o -name '*.cc' -o -name '*.proto' -o -name '*.py' \
    -o -name '*.sh' -o -name '*.js' -o -name '*.md' -o -name '*.txt' \
    -o -name 'Dockerfile*' -o -name '*.yaml' -o -name run \) -print |
    sed 's|^\./||' | grep -vxF "$self" | sort)

for f in "${files[@]}"; do
  # Design documents by any other name or place.
  while IFS=: read -r line token; do
    case "$token" in
      docs/design.md) ;;
      design.md) [[ $f == docs/* ]] || fail "$f:$line: cites '$token'; cite docs/design.md" ;;
      *) fail "$f:$line: cites '$token'; cite docs/design.md" ;;
    esac
  done < <(grep -noiE '[A-Za-z0-9_./-]*design\.md' "$f" || true)
  while IFS=: read -r line _; do
    fail "$f:$line: names ../shared/, which is not in the repository"
  done < <(grep -nF '../shared/' "$f" || true)

  # Section citations.
  while IFS= read -r hit; do
    line=${hit%%:*}
    text=${hit#*:}
    if [[ $f != docs/* && $text != *docs/design.md* ]]; then
      fail "$f:$line: cites a section without naming docs/design.md"
      continue
    fi
    for ref in $(grep -oE '§[0-9]+(\.[0-9]+)*' <<<"$text" | sed 's/^§//'); do
      [[ $sections == *" $ref "* ]] ||
        fail "$f:$line: cites docs/design.md §$ref, which does not exist"
    done
  done < <(grep -n '§[0-9]' "$f" || true)
done

# Paths named in docs/*.md exist.
prefixes='util|engine|search|storage|server|client|proto|tools|bench|tests|scripts|docker|docs|\.ci'
for f in docs/*.md; do
  while IFS=: read -r line token; do
    path=$(sed -E 's/^[^A-Za-z.]//; s/\.+$//' <<<"$token")
    # shellcheck disable=SC2086
    compgen -G "$path" >/dev/null || fail "$f:$line: names '$path', which does not exist"
  done < <(grep -noE "(^|[^A-Za-z0-9_./-])($prefixes)/[A-Za-z0-9_.*/-]*" "$f" || true)
  while IFS=: read -r line token; do
    target=${token#](}
    target=${target%%#*}
    [[ -z $target || $target == *://* ]] && continue
    [[ -e docs/$target ]] || fail "$f:$line: links '$target', which does not exist"
  done < <(grep -noE '\]\([^)]+' "$f" || true)
done

if ((failures > 0)); then
  echo "docs_citations_test: $failures finding(s)"
  exit 1
fi
echo "docs_citations_test: ${#files[@]} files, sections:${sections% }"
