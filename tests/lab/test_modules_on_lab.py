# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The collection's modules against the lab's servers (not throwaway ones).

The Iceberg module runs inside k2-spark-iceberg through the community.docker.docker
connection, where the warehouse is, as a playbook does in production on the Spark host.
"""
import os
import subprocess
import sys
import time

import pytest

from k2lab import faults, lab
from tests.support.ansible_module import run_module

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SPARK_HOST = (lab.SPARK, lab.OFFLOAD_PY)
CATALOG = {"type": "sql", "uri": "sqlite:////home/iceberg/warehouse/catalog.db",
           "warehouse": "file:///home/iceberg/warehouse"}


def _pytest(paths, env):
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"] + paths,
                          cwd=REPO, env=dict(os.environ, **env), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, timeout=900, check=False)
    out = proc.stdout.decode()
    assert proc.returncode == 0, out[-5000:]
    assert " passed" in out.splitlines()[-1], out[-2000:]
    return out.splitlines()[-1]


def test_offload_source_info_suite_against_the_lab_clickhouse(k2lab):
    _pytest(["tests/integration/test_offload_source_info.py"],
            {"K2_TEST_CH_URL": k2lab["clickhouse_url"].rstrip("/")})


def test_iceberg_table_info_reads_the_lab_cold_tier_in_place(k2lab):
    faults.inject("scheduler-stopped")  # a still cold tier, so both reads see the same table
    try:
        report = lab.consistency()
        latest = lab.latest_watermarks()
        for t in lab.TABLES:
            r = run_module("iceberg_table_info", {"table": "cold." + t, "iceberg_catalog": "k2",
                                                  "iceberg_catalog_properties": CATALOG,
                                                  "watermark": {"max_timestamp": latest[t][0],
                                                                "sequence_number": latest[t][1]}},
                           host=SPARK_HOST)
            assert not r["failed"], r.get("msg")
            assert r["row_count"] == report["tables"][t]["cold_rows"]
            assert r["duplicates"]["duplicate_rows"] == 0
            assert r["past_watermark"]["rows"] == 0 and r["past_watermark"]["max_pair"] is None
            assert (r["max_pair"]["max_timestamp"], r["max_pair"]["sequence_number"]) == \
                (latest[t][0], latest[t][1])
            assert r["latest_watermark_snapshot"]["watermark"]["sequence_number"] == latest[t][1]
    finally:
        faults.heal("scheduler-stopped")


def test_offload_source_info_sees_the_rows_a_silent_failure_leaves_behind(k2lab):
    faults.inject("silent-zero")
    try:
        time.sleep(k2lab["cycle_seconds"] + 2)
        latest = lab.latest_watermarks()["bronze_trades_binance"]
        r = run_module("offload_source_info", {
            "clickhouse_url": k2lab["clickhouse_url"], "tables": ["bronze_trades_binance"],
            "watermarks": {"bronze_trades_binance": {"max_timestamp": latest[0], "sequence_number": latest[1]}}})
        assert not r["failed"], r.get("msg")
        after = r["tables"]["bronze_trades_binance"]["after_watermark"]
        assert after["rows"] > 0
    finally:
        faults.heal("silent-zero")
    lab.wait_for_new_watermarks(cycles=1)  # the next test finds a lab that offloads again


# tests/integration runs the same suite on a throwaway PostgreSQL in make test
@pytest.mark.long
def test_watermark_module_suite_against_the_lab_postgres(k2lab):
    """Issue 3's integration tests, pointed at k2-prefect-db (each test in a schema of its own,
    so the lab's offload_watermarks is not touched; the server-kill tests skip an external server)."""
    _pytest(["tests/integration/test_watermark_info.py", "tests/integration/test_watermark_reset.py",
             "tests/integration/test_watermark_cleanup.py", "tests/integration/test_watermark_hostile.py",
             "tests/integration/test_watermark_concurrency.py"],
            {"K2_TEST_PG_HOST": k2lab["pg_host"], "K2_TEST_PG_PORT": str(k2lab["pg_port"]),
             "K2_TEST_PG_USER": k2lab["pg_user"], "K2_TEST_PG_PASSWORD": k2lab["pg_password"],
             "K2_TEST_PG_DB": k2lab["pg_database"]})


@pytest.mark.long
def test_scheduler_info_tells_a_crash_loop_from_a_running_scheduler(k2lab):
    """scheduler_info on the scheduler's host: running -> running; after a bad setting (the lab's
    scheduler-crashloop fault) -> not running, a crash loop with the restarts and the journal's error."""
    args = {"tables": list(lab.TABLES), "crash_watch_seconds": 8}
    r = run_module("scheduler_info", args, host=SPARK_HOST)
    assert r["unit"]["running"] and not r["unit"]["crash_loop"] and r["unit"]["journal"] == [], r["unit"]
    faults.inject("scheduler-crashloop")
    try:
        r = run_module("scheduler_info", args, host=SPARK_HOST)
        u = r["unit"]
        assert u["crash_loop"] and not u["running"], u
        assert u["crash_loop_evidence"]["restarts"] >= 1 and u["crash_loop_evidence"]["exit_status"] == 1
        assert any("not a plain table name" in line for line in u["journal_errors"]), u["journal_errors"]
        assert any("keeps failing" in f for f in r["findings"])
    finally:
        faults.heal("scheduler-crashloop")
    lab.wait_for_new_watermarks(cycles=1)
