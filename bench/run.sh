#!/usr/bin/env bash
# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
# Benchmarks, one command each (each works alone after `make setup`; --help lists a bench's options):
#   bench/run.sh watermarks [--rows N] [--port P] [--no-doc] [--out DIR]
#   bench/run.sh coldtier [--rows N] [--files N] [--ch-rows N] [--repeat N] [--no-doc] [--out DIR]
#   bench/run.sh dedupe [--rows N] [--dup-keys K] [--repeat N] [--no-doc] [--out DIR]
#   bench/run.sh mttr [--faults a,b] [--repeat N] [--no-doc]   (needs the lab; ~15 min)
#   bench/run.sh chaos [--seeds 1,2,3] [--steps N] [--no-doc]  (needs the lab; make chaos)
#   bench/run.sh html [--repeat N] [--no-doc]                  (needs the lab; ~6 min)
#   bench/run.sh engines [--rows N,M] [--master M] [--no-doc]  (needs the lab; pyiceberg vs spark vs spark-shell)
#   bench/run.sh all   (the default; what `make bench` runs; chaos is separate)
# Results go to bench/results/ (raw JSON; --out DIR elsewhere) and docs/benchmarks.md, each bench
# its own section (--no-doc leaves the doc alone). `make test` runs watermarks, coldtier and
# dedupe at a tiny size and mttr/chaos --help (tests/bench), so a broken bench fails the tests.
# Environment: K2_VENV (default .venv).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${K2_VENV:-$PWD/.venv}
[ -x "$VENV/bin/python" ] || { echo "$0: no $VENV/bin/python: run \`make setup\` first (or set K2_VENV)" >&2; exit 2; }
what=${1:-all}
[ $# -gt 0 ] && shift
case "$what" in
  watermarks) exec "$VENV/bin/python" bench/watermark_bench.py "$@" ;;
  coldtier) exec "$VENV/bin/python" bench/coldtier_bench.py "$@" ;;
  dedupe) exec "$VENV/bin/python" bench/dedupe_bench.py "$@" ;;
  mttr) exec "$VENV/bin/python" bench/mttr_bench.py "$@" ;;
  chaos) exec "$VENV/bin/python" bench/chaos_bench.py "$@" ;;
  html) exec "$VENV/bin/python" bench/html_report_bench.py "$@" ;;
  engines) exec "$VENV/bin/python" bench/engines_bench.py "$@" ;;
  all)
    "$VENV/bin/python" bench/watermark_bench.py
    "$VENV/bin/python" bench/coldtier_bench.py
    "$VENV/bin/python" bench/dedupe_bench.py
    exec "$VENV/bin/python" bench/mttr_bench.py ;;
  *) echo "usage: $0 [all|watermarks|coldtier|dedupe|mttr|chaos|html|engines] [options]" >&2; exit 2 ;;
esac
