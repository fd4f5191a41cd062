# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Runbook Diagnosis step 5 as a decision table: facts in, scenarios (with evidence) out.

Each row builds the facts the diagnose playbook gathers (module results, possibly failed,
skipped or missing) and states the status, the scenarios in recovery order and the cases.
"""
import copy

import pytest

from ansible_collections.k2.iceberg_offload.plugins.module_utils import diagnosis as dg

TABLES = ["bronze_trades_binance", "bronze_trades_kraken"]
CYCLE = 900


def entry(table, ts="2026-02-12 10:00:00", seq=1000, wid=1):
    return {"id": wid, "table_name": table, "max_timestamp": ts, "sequence_number": seq,
            "created_at": "2026-02-12 10:00:05"}


def wm_table(table, age=60.0, **kw):
    t = {"table_name": table, "latest": entry(table), "age_seconds": age, "regression_count": 0,
         "regressions": [], "duplicate_pairs": [], "duplicate_bursts": []}
    t.update(kw)
    return t


def healthy():
    return {
        "settings": {"tables": TABLES, "cycle_seconds": CYCLE, "stale_after": 4 * CYCLE,
                     "pg_container": "k2-prefect-db", "network": "k2-network"},
        "prometheus": {"reachable": True, "error": None, "ages": {t: 60.0 for t in TABLES}, "alerts": [],
                       "firing_tables": [], "pending_tables": [], "alert_active_since": None,
                       "missing_tables": []},
        "watermarks": {"table_exists": True, "watermark_table": "offload_watermarks",
                       "tables": [wm_table(t) for t in TABLES]},
        "db_from_controller": {"skipped": True},
        "db_from_spark": {"ok": True, "kind": "ok", "target": "k2-prefect-db:5432"},
        "db_container": {"exists": True, "container": {
            "State": {"Running": True, "Status": "running", "ExitCode": 0, "OOMKilled": False},
            "NetworkSettings": {"Networks": {"k2-network": {}}}}},
        "scheduler": {"unit": {"name": "iceberg-offload-scheduler.service", "exists": True, "active": True,
                               "active_state": "active", "sub_state": "running", "since": "2026-02-12 09:00:00",
                               "result": "success", "restarts": 0},
                      "log": {"file": {"exists": True, "path": "/tmp/iceberg-offload-scheduler.log"},
                              "last_line_time": "2026-02-12 10:00:05", "seconds_since_last_line": 10,
                              "tables": {t: {"consecutive_zero_rows": 0, "last_completed": {
                                  "time": "2026-02-12 10:00:04", "rows": 12}} for t in TABLES},
                              "last_error_by_kind": {}, "errors": []}},
        "source": {"tables": {t: {"after_watermark": {"rows": 3, "watermark": {}, "max_pair": {}}} for t in TABLES}},
    }


def db_down(facts, status="exited", exit_code=0, oom=False, restarting=False):
    facts["db_container"]["container"]["State"] = {"Running": False, "Status": status, "ExitCode": exit_code,
                                                   "OOMKilled": oom, "Restarting": restarting,
                                                   "FinishedAt": "2026-02-12T10:01:00Z", "Error": ""}
    facts["watermarks"] = {"failed": False, "msg": "Cannot connect to PostgreSQL: Connection refused"}
    facts["db_from_controller"] = {"ok": False, "kind": "refused", "target": "127.0.0.1:5432",
                                   "error": "Connection refused"}
    facts["db_from_spark"] = {"ok": False, "kind": "refused", "target": "k2-prefect-db:5432",
                              "error": "Connection refused"}
    facts["source"] = {"skipped": True}
    for t in TABLES:
        facts["prometheus"]["ages"][t] = 2400.0
    return facts


def scheduler_stopped(facts):
    facts["scheduler"]["unit"].update(active=False, active_state="inactive", sub_state="dead",
                                      last_exit={"code": "exited", "status": 0})
    facts["scheduler"]["log"]["last_stopped"] = {"line": "2026-02-12 10:01:00 scheduler stopped"}
    return facts


def pool_exhausted(facts):
    facts["watermarks"] = {"msg": "Cannot connect: FATAL: sorry, too many clients already"}
    facts["db_from_controller"] = {"ok": False, "kind": "too_many_clients", "target": "127.0.0.1:5432",
                                   "error": "FATAL: sorry, too many clients already"}
    facts["db_from_spark"] = {"ok": False, "kind": "too_many_clients", "target": "k2-prefect-db:5432",
                              "error": "FATAL: remaining connection slots are reserved"}
    return facts


def partition(facts):
    facts["db_container"]["container"]["NetworkSettings"]["Networks"] = {}
    facts["watermarks"] = {"msg": "timeout expired"}
    facts["db_from_controller"] = {"ok": False, "kind": "timeout", "target": "127.0.0.1:5432", "error": "timeout"}
    facts["db_from_spark"] = {"ok": False, "kind": "dns", "target": "k2-prefect-db:5432",
                              "error": "k2-prefect-db does not resolve"}
    return facts


def table_missing(facts):
    facts["watermarks"] = {"table_exists": False, "watermark_table": "offload_watermarks", "tables": []}
    facts["source"] = {"skipped": True}
    return facts


def no_entry(facts):
    facts["watermarks"]["tables"][1]["latest"] = None
    return facts


def duplicate_entries(facts):
    facts["watermarks"]["tables"][0]["duplicate_pairs"] = [
        {"max_timestamp": "2026-02-12 10:00:00", "sequence_number": 1000, "entries": 31}]
    return facts


def regression(facts, active=False):
    t = facts["watermarks"]["tables"][0]
    t["regression_count"] = 1
    t["regressions"] = [{"previous": entry(t["table_name"], seq=2000, wid=8),
                         "entry": entry(t["table_name"], ts="2026-02-12 08:00:00", seq=10, wid=1 if active else 9)}]
    return facts


def cold_duplicates(facts):
    facts["cold"] = {t: {"row_count": 1000, "max_pair": {"max_timestamp": "2026-02-12 10:00:00",
                                                         "sequence_number": 1000},
                         "duplicates": {"duplicate_rows": 5 if t == TABLES[0] else 0, "duplicated_keys": 5,
                                        "sample": [{"key": 7, "count": 2}]}} for t in TABLES}
    facts["watermarks_after_cold"] = copy.deepcopy(facts["watermarks"])
    return facts


def cold_ahead(facts):
    facts = cold_duplicates(facts)
    facts["cold"][TABLES[1]]["max_pair"] = {"max_timestamp": "2026-02-12 10:05:00", "sequence_number": 1200}
    return facts


def silent(facts, rows=500, age=3 * CYCLE):
    for t in TABLES:
        facts["scheduler"]["log"]["tables"][t]["consecutive_zero_rows"] = 3
        facts["scheduler"]["log"]["tables"][t]["last_completed"]["rows"] = 0
        facts["source"]["tables"][t]["after_watermark"]["rows"] = rows
    for t in facts["watermarks"]["tables"]:
        t["age_seconds"] = age
    return facts


def prometheus_down(facts):
    facts["prometheus"] = {"reachable": False, "error": "Prometheus at http://localhost:9090 did not answer"}
    return facts


def scheduler_unreachable(facts):
    facts["scheduler"] = {"unreachable": True, "msg": "Failed to connect to the host"}
    return facts


def stale_no_cause(facts):
    for t in facts["watermarks"]["tables"]:
        t["age_seconds"] = 5 * CYCLE
    return facts


def wrong_password(facts):
    facts["watermarks"] = {"msg": "password authentication failed for user prefect"}
    facts["db_from_controller"] = {"ok": False, "kind": "authentication", "target": "127.0.0.1:5432 as prefect",
                                   "error": "password authentication failed"}
    return facts


# (id, build, status, scenarios in order, cases)
ROWS = [
    ("healthy", lambda f: f, "healthy", [], []),
    ("1 scheduler stopped", scheduler_stopped, "recover", [1], ["scheduler-stopped"]),
    ("2 db stopped", db_down, "recover", [2], ["db-stopped"]),
    ("2 db crashed (SIGKILL)", lambda f: db_down(f, exit_code=137), "recover", [2], ["db-crashed"]),
    ("2 db OOM-killed", lambda f: db_down(f, exit_code=137, oom=True), "recover", [2], ["db-crashed"]),
    ("2 db restarting", lambda f: db_down(f, status="restarting", exit_code=1, restarting=True), "recover", [2],
     ["db-crashed"]),
    ("2 pool exhausted", pool_exhausted, "recover", [2], ["db-connections"]),
    ("2 network partition", partition, "recover", [2], ["db-partition"]),
    ("3 table missing", table_missing, "recover", [3], ["table-missing"]),
    ("3 a table without entry", no_entry, "recover", [3], ["no-entry"]),
    ("4 duplicate entries", duplicate_entries, "recover", [4], ["duplicate-entries"]),
    ("4 regression", regression, "recover", [4], ["regression"]),
    ("4 active regression", lambda f: regression(f, active=True), "recover", [4], ["regression"]),
    ("4 cold duplicates", cold_duplicates, "recover", [4], ["cold-duplicates"]),
    ("4 cold tier ahead of the watermark", cold_ahead, "recover", [4], ["cold-duplicates", "cold-ahead"]),
    ("5 silent zero", silent, "recover", [5], ["silent-zero"]),
    ("db down and scheduler stopped", lambda f: scheduler_stopped(db_down(f)), "recover", [2, 1],
     ["db-stopped", "scheduler-stopped"]),
    ("table missing and scheduler stopped", lambda f: scheduler_stopped(table_missing(f)), "recover", [3, 1],
     ["table-missing", "scheduler-stopped"]),
    ("regression and duplicates and cold copies", lambda f: cold_duplicates(duplicate_entries(regression(f))),
     "recover", [4], ["duplicate-entries", "regression", "cold-duplicates"]),
    ("pool exhausted and silent elsewhere is not silent (no source facts)", pool_exhausted, "recover", [2],
     ["db-connections"]),
    ("prometheus down, otherwise healthy", prometheus_down, "healthy", [], []),
    ("prometheus down and db stopped", lambda f: prometheus_down(db_down(f)), "recover", [2], ["db-stopped"]),
    ("scheduler host unreachable, otherwise healthy", scheduler_unreachable, "healthy", [], []),
    ("stale without a runbook cause", stale_no_cause, "escalate", [], []),
    ("wrong password", wrong_password, "escalate", [], []),
]


@pytest.mark.parametrize("name,build,status,scenarios,cases", ROWS, ids=[r[0] for r in ROWS])
def test_decision_table(name, build, status, scenarios, cases):
    d = dg.classify(build(healthy()))
    assert d["status"] == status, d
    assert d["scenario_numbers"] == scenarios, d
    assert [c for s in d["scenarios"] for c in s["cases"]] == cases, d
    for s in d["scenarios"]:
        assert s["evidence"], s  # every scenario says why
    if status == "escalate":
        assert d["escalations"], d
    assert d["healthy"] == (status == "healthy")


def test_missing_facts_are_named_not_fatal():
    d = dg.classify(scheduler_unreachable(prometheus_down(healthy())))
    text = " ".join(d["missing_facts"])
    assert "prometheus" in text and "scheduler" in text
    assert dg.classify({})["status"] == "healthy"
    assert dg.classify({"watermarks": None, "scheduler": "junk"})["missing_facts"]


def test_db_down_says_the_table_is_not_readable_and_uses_prometheus_ages():
    d = dg.classify(db_down(healthy()))
    assert any("not readable while the database is unreachable" in m for m in d["missing_facts"])
    assert d["ages"][TABLES[0]]["source"] == "prometheus"


def test_crash_evidence_names_the_signal_and_oom():
    ev = dg.classify(db_down(healthy(), exit_code=137))["scenarios"][0]["evidence"][0]
    assert "killed by signal 9" in ev and "137" in ev
    ev = dg.classify(db_down(healthy(), exit_code=137, oom=True))["scenarios"][0]["evidence"][0]
    assert "OOM" in ev


def test_silent_needs_rows_waiting_and_an_old_watermark():
    assert dg.classify(silent(healthy(), rows=0))["status"] == "healthy"
    # a new entry came in meanwhile: the zero-row offloads were a quiet source
    assert dg.classify(silent(healthy(), age=60.0))["status"] == "healthy"
    f = silent(healthy())
    f["source"] = {"msg": "ClickHouse at http://127.0.0.1:8123 did not answer"}
    d = dg.classify(f)
    assert d["scenario_numbers"] == [] and any("ClickHouse" in m for m in d["missing_facts"])


def test_old_pool_errors_in_the_log_are_over_once_an_offload_completed():
    f = healthy()
    log = f["scheduler"]["log"]
    log["last_error_by_kind"] = {"too_many_clients": {"time": "2026-02-12 10:00:01", "line": "too many clients"}}
    assert dg.classify(f)["status"] == "healthy"  # completed at 10:00:04, after the error
    log["last_error_by_kind"]["too_many_clients"]["time"] = "2026-02-12 10:00:05"
    assert dg.classify(f)["scenario_numbers"] == [2]


def test_cold_ahead_needs_the_watermark_read_after_the_cold_tier():
    f = cold_ahead(healthy())
    del f["watermarks_after_cold"]
    assert "cold-ahead" not in [c for s in dg.classify(f)["scenarios"] for c in s["cases"]]


def test_plan_order_and_operator_choice():
    d = dg.classify(scheduler_stopped(db_down(healthy())))
    assert dg.plan(d) == [2, 1]
    assert dg.plan(d, [1]) == [1]
    assert dg.plan(d, "5,2") == [2, 5]
    assert dg.plan(d, ["scenario_4", "scenario-3"]) == [3, 4]
    assert dg.plan({}, []) == []
    for bad in (["6"], ["x"], "0", [None], ["scenario_9_x"]):
        with pytest.raises(dg.PlanError) as e:
            dg.plan(d, bad)
        assert "1 (scheduler)" in str(e.value)


def test_corruption_worklist():
    f = cold_ahead(duplicate_entries(regression(healthy())))
    out = dg.corruption(f["watermarks"], f["cold"])
    assert out["ahead"] == [TABLES[1]]
    assert out["duplicate_entries"] == [TABLES[0]] and out["regressed"] == [TABLES[0]]
    assert out["cold_duplicates"] == {TABLES[0]: 5} and out["any"]
    assert not dg.corruption(healthy()["watermarks"], {})["any"]


def test_silent_offloads_and_manual_offload_verdict():
    f = silent(healthy())
    s = dg.silent_offloads(f["scheduler"], f["source"])
    assert sorted(s) == TABLES and s[TABLES[0]]["rows_waiting"] == 500
    before = {"tables": [{"table_name": t, "latest": entry(t, seq=1000)} for t in TABLES]}
    after = {"tables": [{"table_name": TABLES[0], "latest": entry(TABLES[0], ts="2026-02-12 10:05:00", seq=1500)},
                        {"table_name": TABLES[1], "latest": entry(TABLES[1], seq=1000)}]}
    results = [
        {"item": TABLES[0], "rc": 0, "stdout": "2026-02-12 10:05:01 Offload completed: 500 rows (%s -> cold)" % TABLES[0]},
        {"item": TABLES[1], "rc": 0, "stdout": "2026-02-12 10:05:02 Offload completed: 0 rows (%s -> cold)" % TABLES[1]},
    ]
    cold = {TABLES[0]: {"row_count": 9, "past_watermark": {"rows": 500}}}
    v = dg.manual_offload(results, before, after, cold)
    assert v["works"] == [TABLES[0]] and v["escalate"] == [TABLES[1]] and v["twice"] == []
    cold[TABLES[0]]["past_watermark"]["rows"] = 600
    assert dg.manual_offload(results, before, after, cold)["twice"] == [TABLES[0]]


def test_reconcile():
    src = {"tables": {t: {"upto_watermark": {"rows": 100, "watermark": {}}} for t in TABLES}}
    cold = {TABLES[0]: {"row_count": 110, "past_watermark": {"rows": 10}, "duplicates": {"duplicate_rows": 0}},
            TABLES[1]: {"row_count": 103, "past_watermark": {"rows": 0}, "duplicates": {"duplicate_rows": 5}}}
    r = dg.reconcile(src, cold)
    assert r["tables"][TABLES[0]]["ok"] and not r["tables"][TABLES[1]]["ok"]
    assert r["tables"][TABLES[1]]["missing"] == 2 and not r["ok"]
    assert dg.reconcile(src, {TABLES[0]: {"msg": "catalog did not answer"}})["ok"] is False


def test_a_clickhouse_that_refuses_is_named_not_taken_as_empty():
    f = healthy()
    f["source"] = {"failed": False, "failed_when_result": False, "tables": {},
                   "msg": "ClickHouse at http://127.0.0.1:8123 refused the credentials (code 516)"}
    d = dg.classify(f)
    assert d["status"] == "healthy"
    assert any("ClickHouse" in m and "516" in m for m in d["missing_facts"]), d["missing_facts"]
