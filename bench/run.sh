#!/usr/bin/env bash
# Benchmarks, one command each:   bench/run.sh watermarks [--rows N] [--port P] [--no-doc]
# Results go to bench/results/ (raw JSON) and docs/benchmarks.md.
# Environment: K2_VENV (default .venv).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${K2_VENV:-$PWD/.venv}
what=${1:-}
[ $# -gt 0 ] && shift
case "$what" in
  watermarks) exec "$VENV/bin/python" bench/watermark_bench.py "$@" ;;
  *) echo "usage: $0 watermarks [options]" >&2; exit 2 ;;
esac
