# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The two action plugins, through Ansible (issue 15: tested beyond the lab playbooks).

- watermark_wait against real PostgreSQL 15: verified when every table's watermark advances past
  the baseline within its cycles (a writer thread plays the scheduler), a failure that names the
  tables that did not move otherwise, and a clear error for bad options.
- incident_report on the controller: the report and its latest copy, owner-only, Markdown and the HTML
  page beside it, nothing written in check mode, a bad kind refused.
"""
import json
import os
import stat
import threading

from tests.support.ansible_module import run_module


def _writer(wdb, stop, table="t", every=0.5):
    seq = 1000
    while not stop.is_set():
        seq += 1
        wdb.sql("INSERT INTO %s (table_name, max_timestamp, sequence_number) VALUES (%%s, LOCALTIMESTAMP, %%s)"
                % wdb.table, (table, seq))
        stop.wait(every)


def test_watermark_wait_verifies_when_the_scheduler_writes(wdb):
    wdb.create_table()
    wdb.fill("t", 3)
    latest = wdb.sql("SELECT max_timestamp::text, sequence_number FROM %s ORDER BY created_at DESC, id DESC LIMIT 1"
                     % wdb.table)[0]
    stop = threading.Event()
    writer = threading.Thread(target=_writer, args=(wdb, stop), daemon=True)
    writer.start()
    try:
        r = run_module("watermark_wait", dict(wdb.args("watermark_info"), tables=["t"], cycles=3, cycle_seconds=2,
                                              baseline={"t": {"max_timestamp": latest[0],
                                                              "sequence_number": latest[1]}}, label="test"))
    finally:
        stop.set()
        writer.join(5)
    assert r["verified"] and not r.get("failed") and not r["changed"], r
    assert r["verified_at_epoch"] and r["msg"].startswith("verified")


def test_watermark_wait_names_the_table_that_did_not_move(wdb):
    wdb.create_table()
    wdb.fill("t", 3)
    wdb.fill("u", 3)
    r = run_module("watermark_wait", dict(wdb.args("watermark_info"), tables=["t", "u"], cycles=1, cycle_seconds=2,
                                          timeout=4))
    assert r["failed"] and not r["verified"], r
    assert "t" in r["msg"] and "u" in r["msg"]
    assert r["timeout_seconds"] == 4 and r["elapsed_seconds"] <= 4 + 2, r  # gives up on time
    bad = run_module("watermark_wait", dict(wdb.args("watermark_info"), tables=[]))
    assert bad["failed"] and "needs tables" in bad["msg"]


def test_incident_report_writes_owner_only_files_and_nothing_in_check_mode(tmp_path):
    directory = str(tmp_path / "reports")
    data = {"kind": "recovery", "outcome": "escalate", "escalations": [{"kind": "db-crashloop", "text": "x"}]}
    plan = run_module("incident_report", {"dir": directory, "kind": "recovery", "data": data}, check=True)
    assert not plan.get("failed") and plan["written"] is False and not os.path.exists(directory), plan
    r = run_module("incident_report", {"dir": directory, "kind": "recovery", "data": data, "markdown": "# R\n"})
    assert r["written"] is True and not r.get("failed"), r
    assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
    for path in (r["path"], r["latest"], r["markdown_path"]):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, path
    with open(r["latest"]) as fh:
        assert json.load(fh)["escalations"][0]["kind"] == "db-crashloop"
    with open(r["markdown_path"]) as fh:
        assert fh.read() == "# R\n"
    bad = run_module("incident_report", {"dir": directory, "kind": "novel", "data": data})
    assert bad["failed"] and "kind must be one of" in bad["msg"]


def test_incident_report_writes_the_html_page_owner_only(tmp_path):
    directory = str(tmp_path / "reports")
    data = {"kind": "recovery", "outcome": "escalate", "started": "2026-02-12T10:00:00", "ended": "2026-02-12T10:02:00",
            "escalations": [{"kind": "db-crashloop", "text": "PostgreSQL <crashes> again"}],
            "actions": [{"at": "2026-02-12T10:01:00", "step": "scheduler stopped", "action": "scheduler-stop",
                         "changed": True, "dry_run": False, "audit_ids": [], "scenario": 2}]}
    html = {"stale_after": 3600, "cycle_seconds": 900, "tables": ["t"], "alert_name": "IcebergOffloadWatermarkStale"}
    plan = run_module("incident_report", {"dir": directory, "kind": "recovery", "data": data, "html": html}, check=True)
    assert plan["written"] is False and plan["html_path"].endswith(".html") and not os.path.exists(directory), plan
    r = run_module("incident_report", {"dir": directory, "kind": "recovery", "data": data, "html": html})
    assert r["written"] is True and not r.get("failed"), r
    assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
    latest_html = os.path.join(directory, "latest-recovery.html")
    for path in (r["path"], r["latest"], r["html_path"], latest_html):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, path
    # no history was given: the page says what it could not draw, and still holds the run
    assert r["html"]["charts"] == [] and r["html"]["marks"] == 3, r["html"]
    with open(r["html_path"]) as fh:
        page = fh.read()
    assert "No age chart" in page and 'id="mark-2"' in page and "PostgreSQL &lt;crashes&gt; again" in page
    bad = run_module("incident_report", {"dir": directory, "kind": "recovery", "data": data,
                                         "html": {"prometheus_url": "http://x"}})
    assert bad["failed"] and "unknown key" in bad["msg"]
