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
from ansible_collections.k2.iceberg_offload.plugins.module_utils import scenario_checks as sc
from ansible_collections.k2.iceberg_offload.plugins.module_utils import scenarios as scn

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


def db_crashloop(facts):
    facts = db_down(facts, status="exited", exit_code=1)
    facts["db_container"]["container"].update(RestartCount=4, HostConfig={"RestartPolicy": {"Name": "on-failure"}})
    facts["db_container_logs"] = ["LOG:  starting PostgreSQL 15",
                                  'FATAL:  could not access file "k2_missing_extension": No such file or directory']
    return facts


def spark_cut_off(facts):
    facts["spark_container"] = {"exists": True, "container": {"State": {"Running": True},
                                                              "NetworkSettings": {"Networks": {}}}}
    facts["db_from_spark"] = {"ok": False, "kind": "dns", "target": "k2-prefect-db:5432",
                              "error": "k2-prefect-db does not resolve"}
    return facts


def lock_holder(facts, locked=True):
    holder = {"pid": 197, "mode": "AccessExclusiveLock", "relation": "offload_watermarks", "user": "prefect",
              "application_name": "psql", "client_addr": "172.19.0.4/32", "state": "idle in transaction",
              "idle_seconds": 40.0, "transaction_seconds": 41.0, "query": "LOCK TABLE offload_watermarks;",
              "waiting_sessions": 3}
    wm = facts["watermarks"]
    wm["health"] = {"connections": 6, "watermark_lock_holders": [holder], "can_insert": True}
    if locked:
        wm.update(locked=True, lock_holders=[holder], tables=[])
    return facts


def scheduler_crashloop(facts):
    facts["scheduler"]["unit"].update(
        active=True, running=False, active_state="activating", sub_state="auto-restart", crash_loop=True,
        crash_loop_evidence={"restarts": 7, "restarts_during_look": 1, "seconds_watched": 7.0, "exit_code": "exited",
                             "exit_status": 1, "result": "exit-code"},
        journal_errors=["ValueError: not a plain table name: 'offload-watermarks'"])
    return facts


def table_empty(facts):
    for t in facts["watermarks"]["tables"]:
        t["latest"] = None
    return facts


def write_denied(facts, can_insert=False, kind="permission_denied"):
    line = "2026-02-12 10:00:04 ERROR watermark: offload of %s failed after reading the watermark: %s" % (
        TABLES[0], "permission denied for table offload_watermarks" if kind == "permission_denied" else
        'duplicate key value violates unique constraint "offload_watermarks_pkey"')
    facts["scheduler"]["log"]["tables"][TABLES[0]]["last_failure"] = {
        "time": "2026-02-12 10:00:05", "cycle": 9, "rc": 5, "error_kind": kind, "error": line}
    facts["watermarks"]["health"] = {"connections": 5, "can_insert": can_insert}
    return facts


def id_sequence_behind(facts):
    facts = write_denied(facts, can_insert=True, kind="constraint_violation")
    facts["watermarks"]["id_sequence"] = {"sequence": "public.offload_watermarks_id_seq", "next_value": 2,
                                          "max_id": 4242, "behind": True}
    return facts


def watermark_ahead(facts):
    cold = {"row_count": None, "max_pair": {"max_timestamp": "2026-02-12 09:50:00", "sequence_number": 900},
            "duplicates": None}
    facts["cold_now"] = {TABLES[0]: dict(cold)}
    facts["cold"] = {TABLES[0]: dict(cold, duplicates={"duplicate_rows": 0})}
    facts["watermarks_after_cold"] = copy.deepcopy(facts["watermarks"])
    facts["source_after_cold"] = {"tables": {TABLES[0]: {"after_watermark": {"rows": 603}}}}
    return facts


def metrics_broken(facts):
    facts["prometheus"].update(ages={}, missing_tables=TABLES, unhealthy_targets=[
        {"job": "iceberg-offload", "instance": "127.0.0.1:19188", "health": "down",
         "last_error": "connect: connection refused"}])
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
     ["db-crashloop"]),
    ("2 db crash loop between restarts", db_crashloop, "recover", [2], ["db-crashloop"]),
    ("2 the Spark container cut off", spark_cut_off, "recover", [2], ["db-partition"]),
    ("2 a session holds a lock on the table", lock_holder, "recover", [2], ["db-lock"]),
    ("2 a lock holder blocking the writes only", lambda f: lock_holder(f, locked=False), "recover", [2], ["db-lock"]),
    ("1 scheduler crash loop", scheduler_crashloop, "recover", [1], ["scheduler-crashloop"]),
    ("3 the table exists and is empty", table_empty, "recover", [3], ["no-entry"]),
    ("4 the watermark INSERT is refused", write_denied, "recover", [4], ["watermark-write-failed"]),
    ("4 write refused, the privilege is back", lambda f: write_denied(f, can_insert=True), "healthy", [], []),
    ("4 id sequence behind, INSERTs violate the key", id_sequence_behind, "recover", [4],
     ["watermark-write-failed", "id-sequence-behind"]),
    ("4 watermark ahead of the cold tier", watermark_ahead, "recover", [4], ["watermark-ahead"]),
    ("metrics broken, watermarks fresh", metrics_broken, "escalate", [], []),
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
    text = " ".join(m["text"] for m in d["missing_facts"])
    assert "prometheus" in text and "scheduler" in text
    assert dg.classify({})["status"] == "healthy"
    assert dg.classify({"watermarks": None, "scheduler": "junk"})["missing_facts"]


def test_db_down_says_the_table_is_not_readable_and_uses_prometheus_ages():
    d = dg.classify(db_down(healthy()))
    assert any("not readable while the database is unreachable" in m["text"] for m in d["missing_facts"])
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
    assert d["scenario_numbers"] == [] and any("ClickHouse" in m["text"] for m in d["missing_facts"])


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
    assert scn.plan(d) == [2, 1]
    assert scn.plan(d, [1]) == [1]
    assert scn.plan(d, "5,2") == [2, 5]
    assert scn.plan(d, ["scenario_4", "scenario-3"]) == [3, 4]
    assert scn.plan({}, []) == []
    for bad in (["6"], ["x"], "0", [None], ["scenario_9_x"]):
        with pytest.raises(scn.PlanError) as e:
            scn.plan(d, bad)
        assert "1 (scheduler)" in str(e.value)


def test_corruption_worklist():
    f = cold_ahead(duplicate_entries(regression(healthy())))
    out = sc.corruption(f["watermarks"], f["cold"])
    assert out["ahead"] == [TABLES[1]]
    assert out["duplicate_entries"] == [TABLES[0]] and out["regressed"] == [TABLES[0]]
    assert out["cold_duplicates"] == {TABLES[0]: 5} and out["any"]
    assert not sc.corruption(healthy()["watermarks"], {})["any"]


def test_silent_offloads_and_manual_offload_verdict():
    f = silent(healthy())
    s = sc.silent_offloads(f["scheduler"], f["source"])
    assert sorted(s) == TABLES and s[TABLES[0]]["rows_waiting"] == 500
    before = {"tables": [{"table_name": t, "latest": entry(t, seq=1000)} for t in TABLES]}
    after = {"tables": [{"table_name": TABLES[0], "latest": entry(TABLES[0], ts="2026-02-12 10:05:00", seq=1500)},
                        {"table_name": TABLES[1], "latest": entry(TABLES[1], seq=1000)}]}
    results = [
        {"item": TABLES[0], "rc": 0, "stdout": "2026-02-12 10:05:01 Offload completed: 500 rows (%s -> cold)" % TABLES[0]},
        {"item": TABLES[1], "rc": 0, "stdout": "2026-02-12 10:05:02 Offload completed: 0 rows (%s -> cold)" % TABLES[1]},
    ]
    cold = {TABLES[0]: {"row_count": 9, "past_watermark": {"rows": 500}}}
    v = sc.manual_offload(results, before, after, cold)
    assert v["works"] == [TABLES[0]] and v["escalate"] == [TABLES[1]] and v["twice"] == []
    cold[TABLES[0]]["past_watermark"]["rows"] = 600
    assert sc.manual_offload(results, before, after, cold)["twice"] == [TABLES[0]]


def test_reconcile():
    src = {"tables": {t: {"upto_watermark": {"rows": 100, "watermark": {}}} for t in TABLES}}
    cold = {TABLES[0]: {"row_count": 110, "past_watermark": {"rows": 10}, "duplicates": {"duplicate_rows": 0}},
            TABLES[1]: {"row_count": 103, "past_watermark": {"rows": 0}, "duplicates": {"duplicate_rows": 5}}}
    r = sc.reconcile(src, cold)
    assert r["tables"][TABLES[0]]["ok"] and not r["tables"][TABLES[1]]["ok"]
    assert r["tables"][TABLES[1]]["missing"] == 2 and not r["ok"]
    assert sc.reconcile(src, {TABLES[0]: {"msg": "catalog did not answer"}})["ok"] is False


def test_a_clickhouse_that_refuses_is_named_not_taken_as_empty():
    f = healthy()
    f["source"] = {"failed": False, "failed_when_result": False, "tables": {},
                   "msg": "ClickHouse at http://127.0.0.1:8123 refused the credentials (code 516)"}
    d = dg.classify(f)
    assert d["status"] == "healthy"
    assert any("ClickHouse" in m["text"] and "516" in m["text"] for m in d["missing_facts"]), d["missing_facts"]


def test_every_finding_escalation_and_observation_has_a_kind():
    facts = cold_ahead(silent(scheduler_stopped(metrics_broken(lock_holder(healthy(), locked=False)))))
    d = dg.classify(facts)
    for item in d["findings"] + d["escalations"] + d["observations"] + d["missing_facts"]:
        assert item["kind"] and item["text"], item
    for f in d["findings"]:
        assert f["kind"] in dg.CASES and f["scenario"] == dg.CASES[f["kind"]][0]
    assert set(d["kinds"]) >= set(f["kind"] for f in d["findings"])


def test_crash_loop_evidence_names_restarts_exit_and_journal():
    ev = dg.classify(scheduler_crashloop(healthy()))["findings"][0]["text"]
    assert "7 automatic restart" in ev and "exited 1" in ev and "not a plain table name" in ev
    ev = dg.classify(db_crashloop(healthy()))["findings"][0]["text"]
    assert "4 restarts" in ev and "k2_missing_extension" in ev


def test_lock_holder_named_with_pid_user_application_state_age_statement():
    f = dg.classify(lock_holder(healthy()))["findings"][0]
    for word in ("pid 197", "prefect", "psql", "idle in transaction", "40 s", "LOCK TABLE offload_watermarks"):
        assert word in f["text"], (word, f["text"])
    assert f["data"]["holders"] == [197]


def test_spark_side_of_a_partition_is_named():
    d = dg.classify(spark_cut_off(healthy()))
    texts = " ".join(f["text"] for f in d["findings"])
    assert "k2-spark-iceberg runs but is not attached to k2-network" in texts
    assert d["findings"][0]["data"]["containers"] == ["k2-spark-iceberg"]


def test_write_failures_need_a_recent_failure_with_no_offload_since():
    f = write_denied(healthy(), can_insert=None)  # the log alone (another role than the scheduler's)
    f["scheduler"]["log"]["tables"][TABLES[0]]["last_completed"]["time"] = "2026-02-12 10:00:06"
    assert dg.classify(f)["status"] == "healthy"  # an offload completed after it
    f = write_denied(healthy(), can_insert=None)
    f["scheduler"]["log"]["seconds_since_last_line"] = 3 * CYCLE
    assert dg.classify(f)["status"] == "healthy"  # older than two cycles
    d = dg.classify(write_denied(healthy()))
    assert d["findings"][0]["data"]["error_kind"] == "permission_denied"
    assert d["findings"][0]["data"]["fixable"] is False
    d = dg.classify(id_sequence_behind(healthy()))
    assert [x["data"].get("fixable") for x in d["findings"] if x["kind"] == "watermark-write-failed"] == [True]


def test_watermark_ahead_counts_the_rows_in_between_and_needs_the_second_look():
    d = dg.classify(watermark_ahead(healthy()))
    f = [x for x in d["findings"] if x["kind"] == "watermark-ahead"][0]
    assert "600 source row(s) in between would never be offloaded" in f["text"]
    assert f["data"]["rows"] == {TABLES[0]: 600} and f["data"]["cold_max_pair"][TABLES[0]]["sequence_number"] == 900
    first = watermark_ahead(healthy())
    del first["cold"]
    d = dg.classify(first)
    assert d["status"] == "healthy" and d["cold_check"] == [TABLES[0]]


def test_metrics_broken_is_said_not_healthy_and_only_without_a_case():
    d = dg.classify(metrics_broken(healthy()))
    e = d["escalations"][0]
    assert e["kind"] == "metrics-broken" and e["blocks_recovery"]
    assert "the pipeline is healthy" in e["text"] and "connection refused" in e["text"]
    d = dg.classify(metrics_broken(scheduler_stopped(healthy())))
    assert "metrics-broken" not in d["kinds"]


def test_an_alert_still_firing_over_fresh_series_is_clearing_not_broken():
    """Right after a recovery the alert fires until its rule's next evaluation: with every watermark
    fresh in PostgreSQL and in Prometheus that is an observation, not an escalation."""
    facts = healthy()
    facts["prometheus"].update(firing_tables=[TABLES[0]])
    d = dg.classify(facts)
    assert d["status"] == "healthy" and not d["escalations"], d["escalations"]
    assert [o["kind"] for o in d["observations"] if o["kind"] == "alert-clearing"] == ["alert-clearing"]
    # the same alert over a series Prometheus no longer gets is the broken exporter
    d = dg.classify(metrics_broken(facts))
    assert [e["kind"] for e in d["escalations"]] == ["metrics-broken"]


def test_escalation_rules_hold_without_blocking_the_recovery():
    d = dg.classify(cold_duplicates(healthy()))
    e = [x for x in d["escalations"] if x["kind"] == "cold-duplicates-found"][0]
    assert not e["blocks_recovery"] and d["status"] == "recover"
    d = dg.classify(silent(healthy()))
    assert "silent-offload-failure" in d["kinds"] and d["status"] == "recover"


def test_corruption_recurs_when_the_audit_shows_a_repair_of_the_same_table():
    f = duplicate_entries(healthy())
    f["watermarks"]["recent_changes_window"] = "7d"
    f["watermarks"]["recent_changes"] = [
        {"id": 41, "module": "k2.iceberg_offload.watermark_cleanup", "table_name": TABLES[0],
         "parameters": {"duplicates_only": True}, "changed_at": "2026-02-10 10:00:00"},
        {"id": 42, "module": "k2.iceberg_offload.watermark_reset", "table_name": TABLES[0],
         "parameters": {"strategy": "cold_tier"}, "changed_at": "2026-02-10 10:00:00"}]
    d = dg.classify(f)
    e = [x for x in d["escalations"] if x["kind"] == "corruption-recurs"][0]
    assert e["data"]["audit_ids"] == [41] and e["data"]["tables"] == {TABLES[0]: ["duplicate-entries"]}
    assert not e["blocks_recovery"]
    f["watermarks"]["recent_changes"][0]["table_name"] = TABLES[1]
    assert "corruption-recurs" not in dg.classify(f)["kinds"]


def test_many_connections_are_seen():
    f = healthy()
    f["watermarks"]["health"] = {"connections": 25, "idle_connections_over_10_minutes": 4}
    d = dg.classify(f)
    assert d["status"] == "healthy"
    assert [o["kind"] for o in d["observations"]] == ["many-connections"]


def test_scenario_steps_come_from_the_definitions():
    steps = scn.scenario_steps(2, {"network": "net-x", "spark_container": "spark-x", "idle_session_after": 6})
    assert any("spark-x" in s and "net-x" in s for s in steps)
    assert any("6 s" in s for s in steps)
    assert "workaround" in " ".join(scn.scenario_steps(5, {"workaround": True}))
    assert "workaround" not in " ".join(scn.scenario_steps(5))
    for n in scn.SCENARIOS:
        assert scn.scenario_steps(n)


def test_a_revoked_insert_privilege_is_a_write_failure_without_the_log():
    f = scheduler_stopped(healthy())
    f["watermarks"]["health"] = {"connections": 3, "can_insert": False, "current_user": "prefect"}
    d = dg.classify(f)
    w = [x for x in d["findings"] if x["kind"] == "watermark-write-failed"]
    assert w and w[0]["data"]["fixable"] is False and "may not INSERT" in w[0]["text"]
    assert d["scenario_numbers"] == [4, 1]


def test_a_scheduler_started_moments_ago_is_catching_up_not_unexplained():
    f = stale_no_cause(healthy())
    f["scheduler"]["host_time"] = "2026-02-12 10:00:10"
    f["scheduler"]["unit"]["active_since"] = "2026-02-12 09:59:50"
    d = dg.classify(f)
    assert d["status"] == "healthy" and d["summary"].startswith("catching up"), d
    assert "catching-up" in [o["kind"] for o in d["observations"]]
    f["scheduler"]["unit"]["active_since"] = "2026-02-12 09:00:00"
    assert dg.classify(f)["status"] == "escalate"


def test_kinds_are_listed_once():
    f = wrong_password(healthy())
    f["db_from_spark"] = dict(f["db_from_controller"], target="k2-prefect-db:5432")
    d = dg.classify(f)
    assert len([e for e in d["escalations"] if e["kind"] == "db-authentication"]) == 2
    assert d["blocking_escalations"] == ["db-authentication"] and d["kinds"].count("db-authentication") == 1
