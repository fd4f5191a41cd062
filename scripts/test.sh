#!/usr/bin/env bash
# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
# The README's test command (`make test`) runs this after scripts/setup.sh.
# One pytest run over every suite, in this order: the community collections'
# gates (tests/gates: ansible-lint, galaxy-importer on the built tarball, the unit
# tests through ansible-test units, antsibull-docs and antsibull-changelog lint, the
# docsite, licences), the AWX configuration and execution environment definitions
# (tests/awx), packaging, integration tests against real throwaway servers,
# ansible-test sanity, the version matrix's short run (tests/matrix: ansible-core 2.17,
# PostgreSQL 18, ClickHouse 26 via chdb), molecule scenarios of the roles, then the lab tests, which
# bring the K2 lab up, break it every way the runbook describes, and take it down.
# tests/unit runs inside tests/gates (ansible-test units), not a second time here;
# K2_TEST_PATHS=tests/unit runs it directly in .venv.
# K2_TEST_PATHS overrides what runs; extra arguments go to pytest.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
VENV=${K2_VENV:-$PWD/.venv}
export ANSIBLE_COLLECTIONS_PATH=$PWD/.collections
paths=${K2_TEST_PATHS:-"tests/gates tests/awx tests/integration tests/prometheus tests/sanity tests/matrix tests/molecule tests/bench tests/lab"}
existing=()
for p in $paths; do [ -e "$p" ] && existing+=("$p"); done
start=$(date +%s)
# Tests marked `long` (the lab's heal-based fault checks beyond the short set) run in
# `make test-long`, those marked `fault_matrix` (lab faults beyond one per scenario and the
# never-worse cases) in `make faults`; K2_TEST_MARK chooses (default: everything else; "all": every test).
mark=${K2_TEST_MARK:-not long and not fault_matrix}
markargs=(-m "$mark")
[ "$mark" = all ] && markargs=()
# The lab's and molecule's images (minutes on a machine that has none: debootstrap, three service
# images, the molecule image) build in the background while the first suites run. The fixtures that
# need them take the same lock (lab/k2lab/images.py build_lock): they wait for this build and find the
# images rather than build them twice. Nothing is built when no docker suite runs; K2_PREBUILD=0: off.
prebuild_pid=
prebuild_log=$PWD/.cache/prebuild.log
needs_images=
for p in "${existing[@]}"; do case $p in tests/lab*|tests/molecule*) needs_images=1 ;; esac; done
if [ -n "$needs_images" ] && [ "${K2_PREBUILD:-1}" != 0 ] && docker info >/dev/null 2>&1; then
  mkdir -p .cache
  # its own session (setsid), so that the whole build can be stopped by its PID when pytest ends first;
  # "$1" is the inner shell's argument (the venv's python), hence single quotes
  # shellcheck disable=SC2016
  setsid bash -c 'cd lab && nice -n 10 "$1" -m k2lab build && nice -n 10 "$1" ../molecule/build_image.py' \
    prebuild "$VENV/bin/python" >"$prebuild_log" 2>&1 &
  prebuild_pid=$!
  echo "[test] building the lab and molecule images in the background (PID $prebuild_pid, log: $prebuild_log)"
fi
"$VENV/bin/python" -m pytest -p no:cacheprovider -rfEs --durations=40 "${markargs[@]}" "${existing[@]}" "$@"
rc=$?
if [ -n "$prebuild_pid" ]; then
  if kill -0 "$prebuild_pid" 2>/dev/null; then
    echo "[test] pytest ended before the background image build: stopping it (PID $prebuild_pid)"
    kill -- -"$prebuild_pid" 2>/dev/null
    wait "$prebuild_pid" 2>/dev/null
  elif wait "$prebuild_pid"; then
    echo "[test] background image build: done ($(grep -c 'built k2' "$prebuild_log") built, log: $prebuild_log)"
  else
    echo "[test] background image build FAILED (the fixtures built or reported on their own): $prebuild_log" >&2
  fi
fi
echo "[test] pytest exit code $rc after $(( $(date +%s) - start )) s"
if [ $rc -eq 5 ]; then
  echo "[test] FAILED: pytest collected no tests" >&2
  exit 1
fi
exit $rc
