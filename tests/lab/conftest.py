# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The K2 lab for tests: brought up once per session, taken down at the end.

K2LAB_KEEP=1 leaves a lab that was already running (or that the session
started) in place, for iterating on tests.

The files run in the order of ORDER, whatever their names: the image build's lock (no lab), the lab itself, then the
modules on it, the playbooks fault by fault, the runbook's other cases, bad input and secrets,
the AWX / EE / EDA packaging (they need a healthy lab and leave it so), Spark, both cold-tier engines, the HTML incident
report (a burst recovered, Prometheus down, an escalation), the chaos run
(which leaves the most behind), the runbook's 24 h lookback (it re-offloads a day), and last
`lab down`. A file that is not listed runs after the listed ones, before `lab down`.
"""
import os

import pytest

from k2lab import lab

CYCLE = int(os.environ.get("K2LAB_TEST_CYCLE_SECONDS", "10"))

ORDER = (
    "test_images.py",
    "test_lab.py",
    "test_modules_on_lab.py",
    "test_playbooks.py",
    "test_runbook_cases.py",
    "test_playbooks_bad_input.py",
    "test_secrets_playbooks.py",
    "test_awx_runner.py",
    "test_eda.py",
    "test_ee.py",
    "test_spark.py",
    "test_cold_engines.py",
    "test_incident_html.py",
    "test_chaos.py",
    "test_reset_after_lost_table.py",
    "test_lab_down.py",
)


def _rank(item):
    name = os.path.basename(str(item.fspath))
    if name == ORDER[-1]:
        return len(ORDER) + 1
    return ORDER.index(name) if name in ORDER else len(ORDER)


def pytest_collection_modifyitems(session, config, items):
    """tests/lab in ORDER (stable within a file); other directories keep their place before it."""
    lab_dir = os.path.dirname(os.path.abspath(__file__))
    mine = [i for i in items if os.path.dirname(str(i.fspath)) == lab_dir]
    if not mine:
        return
    others = [i for i in items if os.path.dirname(str(i.fspath)) != lab_dir]
    items[:] = others + sorted(mine, key=_rank)


@pytest.fixture(scope="session")
def k2lab():
    with lab.running(cycle_seconds=CYCLE, keep=os.environ.get("K2LAB_KEEP") == "1") as s:
        yield s
