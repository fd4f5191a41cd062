# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Both cold-tier engines, pyiceberg and spark, on the same tables of the lab's shared catalog.

The tables are the test's own (namespace ``k2test`` of the lab's catalog, made here with pyiceberg in
k2-spark-iceberg), so their content is known to the row and nothing the scheduler writes moves
under the assertions:

- ``dups``: one append of keys 1..200, then one append holding identical copies of keys 50..54 and
  the new keys 201..210 (so a repair must rewrite that file, not drop it);
- ``conflict``: keys 1..100, then a copy of key 60 with another price and an identical copy of key 70;
- ``empty``: a table without a snapshot.

Each module runs on the Spark host (community.docker.docker), as a playbook runs it. A Spark job
starts a JVM (30-50 s on the lab's 2-core machine), so what runs in plain ``make test`` is one
scan and one repair by Spark (with its rollback) and the bad input that is refused before Spark
starts; the other variants are marked ``long``.
"""
import json
import time

import pytest

from k2lab import faults, lab
from tests.support.ansible_module import run_module

SPARK_HOST = (lab.SPARK, lab.OFFLOAD_PY)
CATALOG = {"type": "sql", "uri": "sqlite:////home/iceberg/warehouse/catalog.db",
           "warehouse": "file:///home/iceberg/warehouse"}
ENGINES = ("pyiceberg", "spark")
SLOW_SPARK = pytest.param("spark", marks=pytest.mark.long)
BASE = "2026-01-01 00:00:00"

MAKE_TABLES = r'''
import datetime, json, sys
import pyarrow as pa
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.schema import Schema
from pyiceberg.types import DoubleType, LongType, NestedField, StringType, TimestampType
cat = SqlCatalog("k2", uri="sqlite:////home/iceberg/warehouse/catalog.db", warehouse="file:///home/iceberg/warehouse")
schema = Schema(NestedField(1, "exchange_timestamp", TimestampType(), required=False),
                NestedField(2, "sequence_number", LongType(), required=False),
                NestedField(3, "symbol", StringType(), required=False),
                NestedField(4, "price", DoubleType(), required=False))
arrow = pa.schema([("exchange_timestamp", pa.timestamp("us")), ("sequence_number", pa.int64()),
                   ("symbol", pa.string()), ("price", pa.float64())])
base = datetime.datetime(2026, 1, 1)
def rows(keys, price=None):
    keys = list(keys)
    return pa.table({"exchange_timestamp": [base + datetime.timedelta(seconds=k) for k in keys],
                     "sequence_number": keys, "symbol": ["BTCUSDT"] * len(keys),
                     "price": [price if price is not None else 100.0 + k for k in keys]}, schema=arrow)
try:
    cat.create_namespace("k2test")
except Exception:
    pass
for name in ("dups", "conflict", "empty"):
    try:
        cat.purge_table("k2test." + name)
    except Exception:
        pass
    cat.create_table("k2test." + name, schema)
t = cat.load_table("k2test.dups")
t.append(rows(range(1, 201)))
t.append(pa.concat_tables([rows(range(50, 55)), rows(range(201, 211))]))
t = cat.load_table("k2test.conflict")
t.append(rows(range(1, 101)))
t.append(pa.concat_tables([rows([60], price=1.5), rows([70])]))
print(json.dumps({"ok": True}))
'''


def args(table, engine, **more):
    out = {"table": "k2test." + table, "iceberg_catalog": "k2", "iceberg_catalog_properties": CATALOG,
           "engine": engine, "spark_master": "local[2]"}
    out.update(more)
    return out


def table_info(table, engine, **more):
    r = run_module("iceberg_table_info", args(table, engine, **more), host=SPARK_HOST, timeout=600)
    assert not r["failed"], r.get("msg")
    return r


def dedupe(table, engine, check=False, **more):
    return run_module("iceberg_dedupe", args(table, engine, **more), host=SPARK_HOST, check=check, timeout=900)


def current_snapshot(table):
    return table_info(table, "pyiceberg", duplicates=False, max_pair_only=True)["latest_snapshot"]["snapshot_id"]


@pytest.fixture(scope="module")
def tables(k2lab):
    out = lab.dexec(lab.SPARK, lab.OFFLOAD_PY, "-c", MAKE_TABLES)
    assert json.loads(out.strip().splitlines()[-1]) == {"ok": True}, out
    yield


def answers(r):
    """What both engines must agree on (not the cost of the scan, nor overlap_groups, pyiceberg's alone)."""
    dup = dict(r["duplicates"], overlap_groups=None) if r["duplicates"] else None
    return {"row_count": r["row_count"], "min_timestamp": r["min_timestamp"], "max_pair": r["max_pair"],
            "duplicates": dup, "past_watermark": r["past_watermark"],
            "latest_snapshot": r["latest_snapshot"]["snapshot_id"] if r["latest_snapshot"] else None,
            "table": r["table"]["format_version"]}


EXPECTED_DUPS = {
    "row_count": 215, "min_timestamp": "2026-01-01 00:00:01",
    "max_pair": {"max_timestamp": "2026-01-01 00:03:30", "sequence_number": 210},
    "duplicates": {"key_column": "sequence_number", "duplicate_rows": 5, "duplicated_keys": 5,
                   "sample": [{"key": k, "count": 2} for k in (50, 51, 52)], "overlap_groups": None},
    "past_watermark": {"watermark": {"max_timestamp": "2026-01-01 00:03:25", "sequence_number": 205}, "rows": 5,
                       "max_pair": {"max_timestamp": "2026-01-01 00:03:30", "sequence_number": 210}},
}


@pytest.mark.parametrize("engine", ["pyiceberg", SLOW_SPARK])
def test_scan_finds_copies_and_rows_past_the_watermark(tables, engine):
    r = table_info("dups", engine, duplicate_sample_size=3,
                   watermark={"max_timestamp": "2026-01-01T00:03:25Z", "sequence_number": 205})
    got = answers(r)
    assert dict((k, got[k]) for k in EXPECTED_DUPS) == EXPECTED_DUPS
    assert r["latest_snapshot"]["snapshot_id"] == current_snapshot("dups")
    assert r["scan"]["data_files"] == 2
    if engine == "spark":
        assert r["scan"]["engine"] == "spark" and r["scan"]["master"] == "local[2]"


@pytest.mark.parametrize("engine", ["pyiceberg", SLOW_SPARK])
def test_empty_table_and_a_watermark_past_everything(tables, engine):
    r = table_info("empty", engine, watermark={"max_timestamp": "2026-01-01 00:00:00", "sequence_number": 0})
    assert (r["row_count"], r["max_pair"], r["min_timestamp"], r["latest_snapshot"]) == (0, None, None, None)
    assert r["duplicates"]["duplicate_rows"] == 0 and r["past_watermark"]["rows"] == 0
    r = table_info("dups", engine, duplicates=False,
                   watermark={"max_timestamp": "2026-01-01 00:03:30", "sequence_number": 210})
    assert r["past_watermark"]["rows"] == 0 and r["past_watermark"]["max_pair"] is None
    assert r["duplicates"] is None


@pytest.mark.long
def test_both_engines_give_equal_answers(tables):
    """Same request, same answer, on every table (the cost of the scan aside)."""
    for table in ("dups", "conflict", "empty"):
        got = [answers(table_info(table, engine, duplicate_sample_size=20,
                                  watermark={"max_timestamp": "2026-01-01 00:01:00", "sequence_number": 60}))
               for engine in ENGINES]
        assert got[0] == got[1], (table, got)
        pairs = [table_info(table, engine, max_pair_only=True)["max_pair"] for engine in ENGINES]
        assert pairs[0] == pairs[1]


@pytest.mark.parametrize("engine", ["pyiceberg", SLOW_SPARK])
def test_dedupe_plan_in_check_mode_commits_nothing(tables, engine):
    before = current_snapshot("dups")
    r = dedupe("dups", engine, check=True)
    assert not r["failed"], r.get("msg")
    assert r["changed"] is True
    plan = r["plan"]
    assert (plan["duplicated_keys"], plan["rows_to_remove"], plan["conflicting_keys"]) == (5, 5, 0)
    assert [(f["rows"], f["rows_to_remove"], f["rows_kept"], f["action"]) for f in plan["files_to_rewrite"]] == \
        [(15, 5, 10, "rewrite")]
    assert r["before"]["rows"] == 215 and r["after"]["rows"] == 210
    assert "snapshot_id" not in r and current_snapshot("dups") == before


@pytest.mark.parametrize("engine", ["pyiceberg", SLOW_SPARK])
def test_differing_copies_are_refused(tables, engine):
    before = current_snapshot("conflict")
    r = dedupe("conflict", engine)
    assert r["failed"] and "differ" in r["msg"] and "keep_first" in r["msg"], r.get("msg")
    plan = r["plan"]
    assert (plan["duplicated_keys"], plan["conflicting_keys"]) == (2, 1)
    assert [c["key"] for c in plan["conflicts"]] == [60]
    prices = sorted(copy["values"]["price"] for copy in plan["conflicts"][0]["copies"])
    assert prices == [1.5, 160.0]
    assert current_snapshot("conflict") == before


# Each Spark job starts a JVM and a Spark session (40-90 s on this 2-core host): make test keeps the
# lab suite's cheap checks, make cold-engines runs every Spark variant.
@pytest.mark.long
def test_spark_repair_is_read_back_by_pyiceberg_and_rolled_back(tables):
    before = current_snapshot("dups")
    r = dedupe("dups", "spark")
    assert not r["failed"], r.get("msg")
    assert r["changed"] and r["previous_snapshot_id"] == before
    assert r["commit"]["files_removed"] == 1 and r["commit"]["rows_written"] == 10
    assert r["snapshot"]["summary"]["k2.dedupe.rows_removed"] == "5"
    assert r["snapshot"]["summary"]["k2.dedupe.replaces_snapshot_id"] == str(before)
    assert r["rollback"]["module_args"] == {"rollback_to_snapshot": before}
    # pyiceberg reads Spark's commit: every key once, nothing else lost.
    after = table_info("dups", "pyiceberg")
    assert (after["row_count"], after["duplicates"]["duplicate_rows"]) == (210, 0)
    assert after["max_pair"] == EXPECTED_DUPS["max_pair"]
    assert after["latest_snapshot"]["snapshot_id"] == r["snapshot_id"]
    # The repair's rollback brings the copies back.
    back = run_module("iceberg_dedupe", args("dups", "spark", rollback_to_snapshot=before), host=SPARK_HOST)
    assert not back["failed"] and back["changed"], back.get("msg")
    again = table_info("dups", "pyiceberg")
    assert (again["row_count"], again["duplicates"]["duplicate_rows"]) == (215, 5)
    assert again["latest_snapshot"]["snapshot_id"] == before


@pytest.mark.long
def test_spark_keep_last_keeps_the_last_copy(tables):
    r = dedupe("conflict", "spark", conflict="keep_last")
    assert not r["failed"] and r["changed"], r.get("msg")
    assert r["plan"]["rows_to_remove"] == 2
    after = table_info("conflict", "pyiceberg")
    assert (after["row_count"], after["duplicates"]["duplicate_rows"]) == (100, 0)
    # Key 60's last copy (price 1.5) stayed: read it back through pyiceberg's scan of the row.
    out = lab.dexec(lab.SPARK, lab.OFFLOAD_PY, "-c", (
        "from pyiceberg.catalog.sql import SqlCatalog; from pyiceberg.expressions import EqualTo;"
        "c = SqlCatalog('k2', uri='sqlite:////home/iceberg/warehouse/catalog.db', "
        "warehouse='file:///home/iceberg/warehouse');"
        "print(c.load_table('k2test.conflict').scan(row_filter=EqualTo('sequence_number', 60))"
        ".to_arrow().column('price').to_pylist())"))
    assert out.strip().splitlines()[-1] == "[1.5]"


@pytest.mark.long
def test_spark_repairs_the_lab_table_after_planted_duplicates(k2lab):
    """The lab's own damage (labtool plant-duplicates, as test_spark.py), repaired by the spark engine."""
    binance = lab.TABLES[0]
    faults.inject("scheduler-stopped")
    planted = []
    repaired = False
    try:
        planted = lab.labtool("plant-duplicates", binance, "7")
        r = run_module("iceberg_dedupe", {"table": "cold." + binance, "iceberg_catalog": "k2",
                                          "iceberg_catalog_properties": CATALOG, "engine": "spark",
                                          "spark_master": "local[2]"}, host=SPARK_HOST, timeout=900)
        assert not r["failed"], r.get("msg")
        repaired = True
        assert r["plan"]["rows_to_remove"] >= 7
        report = lab.consistency([binance])["tables"][binance]
        assert (report["duplicated_rows"], report["missing"]) == (0, 0), report
    finally:
        if planted and not repaired:
            lab.labtool("repair", binance, *map(str, planted))
        faults.heal("scheduler-stopped")


def _scheduler_log_count(text):
    out = lab.dexec(lab.SPARK, "grep", "-c", "-F", text, lab.SCHEDULER_LOG, check=False)
    return int(out.strip() or 0)


@pytest.mark.long
def test_spark_repair_while_the_scheduler_appends(k2lab):
    """The scheduler keeps offloading (a commit every cycle) while Spark repairs its table: a plan that
    loses the race is made again in the same Spark session, the commit lands, and nothing the scheduler
    appended meanwhile is lost."""
    binance = lab.TABLES[0]
    planted = []
    repaired = False
    faults.inject("scheduler-stopped")
    try:
        planted = lab.labtool("plant-duplicates", binance, "7")
    finally:
        faults.heal("scheduler-stopped")
    try:
        lab.wait_for_new_watermarks([binance], 1)
        before = lab.consistency([binance])["tables"][binance]
        locked_before = _scheduler_log_count("database is locked")
        r = run_module("iceberg_dedupe", {"table": "cold." + binance, "iceberg_catalog": "k2",
                                          "iceberg_catalog_properties": CATALOG, "engine": "spark",
                                          "spark_master": "local[2]", "max_attempts": 10},
                       host=SPARK_HOST, timeout=1800)
        assert not r["failed"], (r.get("msg"), r.get("stats"), r.get("attempts"), r.get("spark_traceback"))
        repaired = True
        assert r["plan"]["rows_to_remove"] >= 7
        # Every row up to the watermark once, and the cycles the scheduler committed during the run
        # (more rows than before, less the planted copies) are there.
        after = lab.consistency([binance])["tables"][binance]
        assert (after["duplicated_rows"], after["missing"]) == (0, 0), after
        assert after["cold_rows"] > before["cold_rows"] - len(planted), (before, after)
        # and the job did not stop the pipeline: Iceberg's JdbcCatalog once held a read transaction on the
        # sqlite catalog for the whole job, and every offload meanwhile failed "database is locked"
        assert _scheduler_log_count("database is locked") == locked_before
        print("attempts:", r["stats"]["attempts"])
    finally:
        if planted and not repaired:
            lab.labtool("repair", binance, *map(str, planted))


@pytest.mark.long
def test_watermark_reset_cold_tier_same_pair_by_both_engines(k2lab):
    faults.inject("scheduler-stopped")
    try:
        pairs = []
        for engine in ENGINES:
            r = run_module("watermark_reset", {
                "strategy": "cold_tier", "tables": [lab.TABLES[0]], "cold_table": "cold.{table}",
                "iceberg_catalog": "k2", "iceberg_catalog_properties": CATALOG, "engine": engine,
                "spark_master": "local[2]", "login_host": lab.PG, "port": 5432, "login_db": "prefect",
                "login_user": "prefect", "login_password": k2lab["pg_password"]},
                host=SPARK_HOST, check=True, timeout=600)
            assert not r["failed"], r.get("msg")
            source = r["tables"][0]["source"]
            assert source["strategy"] == "cold_tier"
            pairs.append((source["pair"], source["snapshot_id"]))
        assert pairs[0] == pairs[1]
    finally:
        faults.heal("scheduler-stopped")


# -- bad input: refused with a message naming what to fix, nothing committed -------------------

def test_spark_bad_input_refused_before_spark_starts(tables):
    before = current_snapshot("dups")
    r = dedupe("dups", "spark", spark_jars=["/opt/iceberg/no-such-runtime.jar"])
    assert r["failed"] and "/opt/iceberg/no-such-runtime.jar" in r["msg"] and "spark_jars" in r["msg"], r["msg"]
    r = dedupe("dups", "spark", spark_master="spark://127.0.0.1:1")
    assert r["failed"] and "does not answer" in r["msg"] and "spark_master" in r["msg"], r["msg"]
    r = dedupe("dups", "spark", spark_submit="/nowhere/spark-submit")
    assert r["failed"] and "spark_submit" in r["msg"], r["msg"]
    r = table_info_failure("dups", spark_master="sc://127.0.0.1:15002")
    assert "spark_master" in r["msg"] and "Spark Connect" in r["msg"], r["msg"]
    assert current_snapshot("dups") == before


def table_info_failure(table, engine="spark", **more):
    r = run_module("iceberg_table_info", args(table, engine, **more), host=SPARK_HOST, timeout=600)
    assert r["failed"]
    return r


@pytest.mark.long
def test_spark_missing_table_and_unopenable_catalog(tables):
    r = table_info_failure("no_such_table")
    assert "k2test.no_such_table not found" in r["msg"], r["msg"]
    before = current_snapshot("dups")
    bad = dict(CATALOG, uri="sqlite:////nonexistent/dir/catalog.db")
    r = run_module("iceberg_dedupe", args("dups", "spark", iceberg_catalog_properties=bad), host=SPARK_HOST,
                   timeout=600)
    assert r["failed"] and "cannot open Iceberg table" in r["msg"], r["msg"]
    assert current_snapshot("dups") == before


@pytest.mark.long
def test_spark_secrets_stay_off_the_command_line_and_output(tables):
    secret = "k2-very-secret-token-42"
    r = run_module("iceberg_table_info", args("dups", "spark", duplicates=False,
                                              iceberg_catalog_secrets={"jdbc.password": secret}),
                   host=SPARK_HOST, timeout=600)
    assert not r["failed"], r.get("msg")
    assert secret not in r["_stdout"]


# -- the runbook's regression fault, recovered through the playbooks with the spark engine ---------

SPARK_VARS = {"k2_cold_engine": "spark", "k2_spark_master": "local[2]"}


@pytest.mark.fault_matrix
def test_regression_recovered_through_the_playbooks_with_spark(k2lab, tmp_path):
    """Scenario 4's regression: the scheduler re-offloads from a regressed watermark, the cold tier holds
    copies; diagnose and recover (k2_execute) with k2_cold_engine=spark end with the data whole."""
    from tests.support.incident import lab_inventory, run_playbook
    inventory = lab_inventory(str(tmp_path / "lab.yml"))
    reports = str(tmp_path / "reports")
    cycle = k2lab["cycle_seconds"]
    passed = False
    try:
        faults.inject("regression")
        time.sleep(2 * cycle + 3)
        diag = run_playbook("diagnose.yml", inventory, reports, extra=SPARK_VARS)
        assert diag.rc == 0, diag
        d = diag.report("diagnosis")["diagnosis"]
        assert d["scenario_numbers"] == [4], d["summary"]
        rec = run_playbook("recover.yml", inventory, reports, extra=dict(SPARK_VARS, k2_execute=True), timeout=1800)
        assert rec.rc == 0, rec
        outcome = rec.report("recovery")
        assert outcome["outcome"] == "recovered" and outcome["verification"]["verified"], rec
        lab.wait_for_new_watermarks(cycles=1)
        report = lab.consistency()
        figures = {t: (r.get("missing"), r.get("duplicated_rows"), r.get("past_watermark"))
                   for t, r in report["tables"].items()}
        assert all(f == (0, 0, 0) for f in figures.values()), (figures, report)
        passed = True
    finally:
        if not passed:
            faults.heal()
            faults.heal("regression")
            run_playbook("recover.yml", inventory, reports + "-cleanup", extra={"k2_execute": True})
            run_playbook("post_incident.yml", inventory, reports + "-cleanup",
                         extra={"k2_execute": True, "k2_post_incident_cycles": 1})
