# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The HTML report's data: which source each chart draws, the marks of a run, its tables, and the charts."""
import datetime
import re

import pytest

from ansible_collections.k2.iceberg_offload.plugins.module_utils import incident_page as ip
from ansible_collections.k2.iceberg_offload.plugins.module_utils import incident_charts as ic

T0 = datetime.datetime(2026, 2, 12, 10, 0, 0)
TABLES = ["bronze_trades_binance", "bronze_trades_kraken"]


def at(seconds):
    return (T0 + datetime.timedelta(seconds=seconds)).isoformat()


def recovery_report(**over):
    r = {"kind": "recovery", "outcome": "recovered", "headline": "RECOVERED and verified; scheduler running",
         "escalate": False, "escalations": [], "started": at(300), "ended": at(420), "dry_run": False,
         "incident_started": at(100) + "Z", "incident_started_from": "the oldest watermark age at diagnosis",
         "actions": [
             {"scenario": 4, "step": "scheduler stopped (no cycle may read a watermark being repaired)",
              "action": "scheduler-stop", "dry_run": False, "changed": True, "skipped": False, "audit_ids": [],
              "backup": None, "at": at(310)},
             {"scenario": 4, "step": "watermark_cleanup duplicates_only: deleted 30 entries", "action": None,
              "dry_run": False, "changed": True, "skipped": False, "audit_ids": [7], "backup": "b_1", "at": at(320)},
             {"scenario": 4, "step": "iceberg_dedupe bronze_trades_binance: 12 copies of 12 keys removed in snapshot "
              "222, rollback_to_snapshot=111", "action": None, "dry_run": False, "changed": True, "skipped": False,
              "audit_ids": [], "backup": "snapshot 111", "at": at(330)},
             {"scenario": 1, "step": "skipped step", "skipped": True, "audit_ids": [], "at": at(335)},
             {"scenario": 4, "step": "scheduler started <b>now</b>", "action": "scheduler-start", "dry_run": False,
              "changed": True, "skipped": False, "audit_ids": [], "backup": None, "at": at(340)}],
         "verification": {"verified": True, "msg": "verified in 7 s", "verified_at_epoch": ip.epoch(T0) + 380},
         "state_left": {"scheduler": {"found": "stopped", "now": "running", "stopped_by_this_run": False},
                        "changes": [], "continue": "ansible-playbook -i inv k2.iceberg_offload.post_incident",
                        "undo": []},
         "diagnosis": {"summary": "Scenario 4", "scenarios": [{"scenario": 4, "title": "Watermark Corruption",
                                                              "evidence": ["30 extra entries"]}],
                       "findings": [{"kind": "duplicate-entries", "scenario": 4, "text": "a burst"}]}}
    r.update(over)
    return r


def facts(prometheus=True, log=True):
    out = {"watermarks": {
        "recent_changes": [{"id": 7, "changed_at": at(320), "module": "k2.iceberg_offload.watermark_cleanup",
                            "table_name": TABLES[0], "rows_affected": 30, "backup": "b_1"},
                           {"id": 3, "changed_at": "2026-02-01 00:00:00", "module": "old", "table_name": TABLES[0]}],
        "tables": [{"table_name": TABLES[0], "latest": {"created_at": at(400)}, "age_seconds": 20.0,
                    "entries": [{"id": i, "created_at": at(s), "sequence_number": q, "max_timestamp": at(s)}
                                for i, (s, q) in enumerate([(0, 100), (10, 130), (20, 160), (350, 200), (360, 190),
                                                            (400, 250)])]}]}}
    if prometheus:
        out["prometheus"] = {"age_history": {"error": None, "tables": {
            TABLES[0]: [[ip.epoch(T0) + s, float(s % 300)] for s in range(0, 420, 10)],
            TABLES[1]: [[ip.epoch(T0) + s, 5.0] for s in range(0, 420, 10)]}}}
    else:
        out["prometheus"] = {"age_history": {"error": "Prometheus at http://127.0.0.1:1 did not answer", "tables": {}}}
    if log:
        out["scheduler"] = {"log": {"tables": {
            TABLES[0]: {"history": [{"utc": at(s).replace("T", " "), "rows": r} for s, r in
                                    [(0, 30), (10, 30), (20, 0), (30, 0), (40, 0)]] + [
                {"utc": at(50).replace("T", " "), "rows": None, "failed": 3}]},
            TABLES[1]: {"history": [{"utc": at(5), "rows": 12}]}}}}
    return out


SETTINGS = {"stale_after": 40, "cycle_seconds": 10, "tables": TABLES, "alert_name": "IcebergOffloadWatermarkStale",
            "window_start": at(-60)}


def test_parse_time_takes_every_form_the_facts_use():
    assert ip.parse_time("2026-02-12T10:00:00Z") == T0
    assert ip.parse_time("2026-02-12 11:00:00+01:00") == T0
    assert ip.parse_time("2026-02-12T10:00:00.123456789Z") == T0.replace(microsecond=123456)
    assert ip.parse_time(ip.epoch(T0)) == T0
    assert ip.parse_time(None) is None and ip.parse_time("soon") is None and ip.parse_time(True) is None


def test_window_starts_before_the_earliest_moment_and_is_bounded():
    now = T0 + datetime.timedelta(hours=1)
    assert ip.window_start([at(0)], 10, now=now) == T0 - datetime.timedelta(seconds=360)
    assert ip.window_start([], 10, now=now) == now - datetime.timedelta(seconds=120)
    assert ip.window_start(["2020-01-01T00:00:00"], 10, now=now) == now - datetime.timedelta(days=7)
    assert ip.window_start([at(7200)], 10, now=now) == now - datetime.timedelta(seconds=120)  # a future time


def test_marks_of_a_recovery_in_order_with_their_audit_rows():
    page = ip.build_page(recovery_report(), "recovery", facts(), SETTINGS)
    kinds = [m["kind"] for m in page["marks"]]
    assert kinds == ["began", "detection", "action", "action", "action", "action", "verification", "end"]
    assert [m["n"] for m in page["marks"]] == list(range(1, 9))
    cleanup = page["marks"][3]
    assert cleanup["audit_ids"] == [7] and cleanup["module"] == "k2.iceberg_offload.watermark_cleanup"
    assert cleanup["scenario"] == 4 and cleanup["id"] == "mark-4" and cleanup["text"].startswith("did: ")
    assert page["marks"][2]["module"] == "scheduler-stop" and page["marks"][4]["module"] == "iceberg_dedupe"
    assert [r["id"] for r in page["audit"]] == [7]  # the older row is outside the window and not named
    assert page["repairs"] == [{
        "at": "2026-02-12 10:05:30", "table": "cold.bronze_trades_binance", "source_table": "bronze_trades_binance",
        "snapshot_id": "222", "rollback_to_snapshot": "111",
        "module": "k2.iceberg_offload.iceberg_dedupe: {table: cold.bronze_trades_binance, rollback_to_snapshot: 111}",
        "spark_sql": "CALL <catalog>.system.rollback_to_snapshot('cold.bronze_trades_binance', 111)"}]
    assert page["status"]["level"] == "ok" and page["reconciliation"] is None
    assert "not checked by this run" in page["answers"][2]["answer"]


def test_the_alert_is_the_detection_when_it_fired():
    page = ip.build_page(recovery_report(incident_started=at(100), incident_started_from="the alert"), "recovery",
                         facts(), SETTINGS)
    assert [m["kind"] for m in page["marks"][:2]] == ["detection", "action"]
    assert "fired" in page["marks"][0]["text"]


def test_sources_prometheus_else_the_watermark_table_and_the_log_else_the_pairs():
    page = ip.build_page(recovery_report(), "recovery", facts(), SETTINGS)
    assert page["age"]["source"] == "prometheus" and page["rows"]["source"] == "scheduler-log"
    assert page["rows"]["failures"] == {TABLES[0]: [ip.epoch(T0) + 50]}
    assert page["rows"]["zero_runs"] == {TABLES[0]: {"offloads": 3, "since": "2026-02-12 10:00:20"}}
    down = ip.build_page(recovery_report(), "recovery", facts(prometheus=False, log=False), SETTINGS)
    assert down["age"]["source"] == "watermark-table" and "did not answer" in down["age"]["note"]
    # the age falls to 0 at each entry and grows until the next, up to the read (created_at + age)
    first = [(ip.epoch(T0), 0.0), (ip.epoch(T0) + 10, 10.0), (ip.epoch(T0) + 10, 0.0), (ip.epoch(T0) + 20, 10.0)]
    assert down["age"]["series"][TABLES[0]][:4] == first
    assert down["age"]["series"][TABLES[0]][-1] == (ip.epoch(T0) + 420, 20.0)
    assert down["rows"]["source"] == "watermark-pairs"
    assert [v for _t, v in down["rows"]["series"][TABLES[0]]] == [30.0, 30.0, 40.0, -10.0, 60.0]
    nothing = ip.build_page(recovery_report(), "recovery", {}, SETTINGS)
    assert nothing["age"]["source"] is None and nothing["rows"]["source"] is None


def test_an_incident_report_with_its_reconciliation_and_escalation():
    incident = {"kind": "incident", "at": at(600), "ok": True, "recovery_outcome": "recovered",
                "incident_started": at(100), "actions": recovery_report()["actions"],
                "progression": {"verified": True, "msg": "verified in 7 s", "ended_at_epoch": ip.epoch(T0) + 590},
                "escalations": [{"kind": "cold-duplicates-found", "text": "duplicates <script>"}],
                "reconciliation": {"ok": True, "problems": [], "tables": {TABLES[0]: {
                    "source_rows": 10, "cold_rows": 10, "cold_duplicate_rows": 0, "missing": 0, "extra": 0,
                    "cold_rows_past_watermark": 2, "ok": True,
                    "watermark": {"max_timestamp": "x", "sequence_number": 9}}}}}
    page = ip.build_page(incident, "incident", dict(facts(), recovery=recovery_report()), SETTINGS)
    kinds = [m["kind"] for m in page["marks"]]
    assert kinds[-3:] == ["end", "progression", "end"] or kinds[-2:] == ["progression", "end"], kinds
    assert page["status"]["level"] == "warn" and "escalate" in page["status"]["text"]
    assert page["reconciliation"]["rows"][0]["past_watermark"] == 2
    assert page["answers"][2]["answer"].startswith("yes: ") and "bronze_trades_binance 10/10" in \
        page["answers"][2]["answer"]


@pytest.mark.skipif(not ic.HAS_PYGAL, reason="pygal is not installed")
def test_charts_draw_every_mark_linked_to_its_row_and_run_no_script():
    page = ip.build_page(recovery_report(), "recovery", facts(), SETTINGS)
    charts = ic.draw(page)
    assert charts["error"] is None
    for svg in (charts["age"], charts["rows"]):
        links = re.findall(r'xlink:href="#(mark-\d+)"', svg)
        assert sorted(set(links)) == sorted(m["id"] for m in page["marks"])
        assert "<script" not in svg and re.findall(r'(?:href|src)="(?:https?:)?//', svg) == []
        assert "xml-stylesheet" not in svg  # every style sheet inline
    assert "alert threshold (40 s)" in [k["name"] for k in charts["age_legend"]]
    assert "failed job" in [k["name"] for k in charts["rows_legend"]]


def test_without_pygal_the_page_says_why(monkeypatch):
    monkeypatch.setattr(ic, "HAS_PYGAL", False)
    charts = ic.draw(ip.build_page(recovery_report(), "recovery", facts(), SETTINGS))
    assert charts["age"] is None and "pip install pygal" in charts["error"]
