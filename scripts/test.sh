#!/usr/bin/env bash
# The README's test command (`make test`) runs this after scripts/setup.sh.
# One pytest run over every suite, in this order: unit tests (fakes allowed),
# packaging, integration tests against real throwaway servers, ansible-test
# sanity, the short version matrix (ansible-core 2.17, PostgreSQL 18; `make matrix`
# runs the whole of it), molecule scenarios of the roles, then the lab tests, which bring the
# K2 lab up, break it every way the runbook describes, and take it down.
# K2_TEST_PATHS overrides what runs; extra arguments go to pytest.
set -uo pipefail
cd "$(dirname "$0")/.."
VENV=${K2_VENV:-$PWD/.venv}
export ANSIBLE_COLLECTIONS_PATH=$PWD/.collections
paths=${K2_TEST_PATHS:-"tests/unit tests/integration tests/prometheus tests/sanity tests/matrix tests/molecule tests/lab"}
existing=()
for p in $paths; do [ -e "$p" ] && existing+=("$p"); done
start=$(date +%s)
"$VENV/bin/python" -m pytest -p no:cacheprovider -rfEs "${existing[@]}" "$@"
rc=$?
echo "[test] pytest exit code $rc after $(( $(date +%s) - start )) s"
if [ $rc -eq 5 ]; then
  echo "[test] FAILED: pytest collected no tests" >&2
  exit 1
fi
exit $rc
