#!/usr/bin/env bash
# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
# ansible-test (sanity, units, ...) for the collection, in ansible-test's own virtualenvs (--venv).
#
# ansible-test wants the collection at .../ansible_collections/k2/iceberg_offload and
# reads the file list from git, so the checkout's tracked and untracked (not ignored)
# files are copied into such a tree, .cache/ansible-test/COMMAND/ansible_collections/
# k2/iceberg_offload, made anew each run but for the virtualenv ansible-test made there
# (tests/output/.tmp/delegation), which later runs reuse. lab/ and bench/ are left out
# (they are not part of the built collection either, see galaxy.yml).
# Usage: scripts/ansible-test.sh COMMAND [ansible-test options], e.g.
#   scripts/ansible-test.sh sanity --test pep8
#   scripts/ansible-test.sh units tests/unit/plugins/module_utils/test_wait.py
# Environment: K2_VENV (default .venv), K2_ANSIBLE_TEST_PYTHON (default 3.11;
# K2_SANITY_PYTHON is read too).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=${K2_VENV:-$ROOT/.venv}
PYVER=${K2_ANSIBLE_TEST_PYTHON:-${K2_SANITY_PYTHON:-3.11}}
COMMAND=${1:?usage: $0 sanity|units|... [ansible-test options]}
shift
[ -x "$VENV/bin/ansible-test" ] || { echo "no $VENV/bin/ansible-test: run scripts/setup.sh" >&2; exit 2; }
scripts/ansible-test-getpip.sh "$VENV"

DEST="$ROOT/.cache/ansible-test/$COMMAND/ansible_collections/k2/iceberg_offload"
KEEP="$ROOT/.cache/ansible-test/$COMMAND/delegation"
rm -rf "$KEEP"
if [ -d "$DEST/tests/output/.tmp/delegation" ]; then mv "$DEST/tests/output/.tmp/delegation" "$KEEP"; fi
rm -rf "$DEST"
mkdir -p "$DEST"
if [ -d "$KEEP" ]; then mkdir -p "$DEST/tests/output/.tmp" && mv "$KEEP" "$DEST/tests/output/.tmp/delegation"; fi
git ls-files -z --cached --others --exclude-standard \
  | grep -zv -E '^(lab|bench|\.ci)/' \
  | while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done \
  | xargs -0 cp --parents -t "$DEST"
cd "$DEST"
git init -q && git add -A && git -c user.email=ansible-test@k2 -c user.name=ansible-test commit -qm "$COMMAND"
# The programs ansible-test looks for (shellcheck for sanity, ...) come from the venv.
export PATH="$VENV/bin:$PATH"
rc=0
"$VENV/bin/ansible-test" "$COMMAND" --venv --python "$PYVER" --color no "$@" || rc=$?
exit $rc
