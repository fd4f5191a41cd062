#!/usr/bin/env bash
# ansible-test sanity for the collection, in ansible-test's own virtualenvs (--venv).
#
# ansible-test wants the collection at .../ansible_collections/k2/iceberg_offload and
# reads the file list from git, so the checkout's tracked and untracked (not ignored)
# files are copied into such a tree in a temporary directory. lab/ and bench/ are
# left out (they are not part of the built collection either, see galaxy.yml).
# Usage: scripts/sanity.sh [ansible-test sanity options, e.g. --test pep8]
# Environment: K2_VENV (default .venv), K2_SANITY_PYTHON (default 3.11).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=${K2_VENV:-$ROOT/.venv}
PYVER=${K2_SANITY_PYTHON:-3.11}
[ -x "$VENV/bin/ansible-test" ] || { echo "no $VENV/bin/ansible-test: run scripts/setup.sh" >&2; exit 2; }
scripts/ansible-test-getpip.sh "$VENV"

WORK=$(mktemp -d /tmp/k2-sanity.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
DEST="$WORK/ansible_collections/k2/iceberg_offload"
mkdir -p "$DEST"
git ls-files -z --cached --others --exclude-standard \
  | grep -zv -E '^(lab|bench|\.ci)/' \
  | while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done \
  | xargs -0 cp --parents -t "$DEST"
cd "$DEST"
git init -q && git add -A && git -c user.email=sanity@k2 -c user.name=sanity commit -qm sanity
export PATH="$VENV/bin:$PATH"
rc=0
"$VENV/bin/ansible-test" sanity --venv --python "$PYVER" --color no "$@" || rc=$?
exit $rc
