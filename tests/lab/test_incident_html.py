# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Issue 17: the incident report people look at, one HTML page with the incident's timeline drawn.

Through the playbooks on the lab, as an on-call engineer runs them: a fault is recovered
(recover.yml -e k2_execute=true), post_incident.yml writes latest-incident.html beside the JSON and
the Markdown; headless Chromium (Debian's chromium) opens it and takes a screenshot. The page must
hold both charts (watermark age per table, rows offloaded per cycle), each with the marks of every
action, and the actions' marks must match the audit rows the lab's PostgreSQL holds
(offload_watermark_audit: id and module); nothing on it needs a network, no secret is in it, the
report directory keeps 0700 and its files 0600. Then the same page with Prometheus down (the age from
the watermark table's entries, and the page says so), and the recovery page of an escalation (the
silent offload failure of a logic bug: the flat line on 0, the state left, the escalation).

`make test` runs the duplicate burst, Prometheus down and the escalation; the long variant (make
test-long) lets the scheduler stop until the alert fires, then recovers it with the burst (the
picture of docs/images/incident-report.png).
"""
import json
import os
import shutil
import stat
import time

import pytest

from k2lab import faults, lab
from tests.support.incident import lab_inventory, run_playbook
from tests.support.receivers import closed_port
from tests.support.report_page import chromium, parse, png_summary, screenshot

pytestmark = pytest.mark.skipif(not chromium(), reason="Debian's chromium is not installed (scripts/setup.sh)")


@pytest.fixture(scope="module")
def inventory(k2lab, tmp_path_factory):
    return lab_inventory(str(tmp_path_factory.mktemp("inv") / "lab.yml"))


def audit_rows(after_id):
    """The audit rows the lab holds past ``after_id``: {id: module}."""
    out = {}
    for line in lab.psql("SELECT id, module FROM offload_watermark_audit WHERE id > %d ORDER BY id" % after_id,
                         user="postgres").splitlines():
        if line.strip():
            i, module = line.split("\t")
            out[int(i)] = module
    return out


def last_audit_id():
    return int(lab.psql("SELECT coalesce(max(id), 0) FROM offload_watermark_audit", user="postgres").strip() or 0)


def check_page(path, tmp_path, name, age_source, rows_source):
    """What every page must be: self-contained, private, both charts drawn with every mark, the marks'
    table; returns the parsed page. The screenshot must show the charts (a page of ink and colours)."""
    # owner-only files (the directory the collection creates is 0700: tests/integration; this one the harness made)
    for written in os.listdir(os.path.dirname(path)):
        assert stat.S_IMODE(os.stat(os.path.join(os.path.dirname(path), written)).st_mode) == 0o600, written
    page = parse(path)
    assert page["scripts"] == 0 and page["links"] == 0 and page["external"] == [], \
        (page["scripts"], page["links"], page["external"])
    assert lab.settings()["pg_password"] not in page["html"]
    assert set(page["figures"]) == {"age-chart", "rows-chart"}, (page["figures"], page["text"][:2000])
    assert page["figures"]["age-chart"]["source"] == age_source, page["text"][:3000]
    assert page["figures"]["rows-chart"]["source"] == rows_source, page["text"][:3000]
    mark_ids = [m["id"] for m in page["marks"]]
    assert mark_ids and len(mark_ids) == len(set(mark_ids))
    for figure in page["figures"].values():
        assert figure["svg"] == 1
        # every mark is drawn on both charts (its line and its number link to its row), and only marks are
        assert set(figure["links"]) == set(mark_ids), (figure["links"], mark_ids)
    for section in ("answers", "marks", "audit", "cold-tier", "diagnosis", "escalations", "state-left", "root-cause"):
        assert section in page["ids"], section
    # K2_REPORT_SHOT_DIR keeps the screenshots (and the pages) to look at
    keep = os.environ.get("K2_REPORT_SHOT_DIR")
    png = screenshot(path, os.path.join(keep, name + ".png") if keep else str(tmp_path / ("%s.png" % name)),
                     height=1600)
    if keep:
        shutil.copy(path, os.path.join(keep, name + ".html"))
    shot = png_summary(png)
    assert shot["width"] == 1100 and shot["height"] == 1600, shot
    assert shot["inked"] > 0.04 and shot["colours"] > 40, shot
    return page


def check_marks_against_audit(page, report, audit):
    """The marks of the actions are the audit table's rows: each row has its mark (same id, same module),
    and each action's audit id is a row of the table."""
    actions = [m for m in page["marks"] if m["kind"] == "action"]
    marked = {}
    for m in actions:
        for i in m["audit_ids"]:
            marked[i] = m
    assert audit, "the recovery wrote no audit row"
    for i, module in audit.items():
        assert i in marked, ("audit row %d has no mark" % i, audit, actions)
        assert module in marked[i]["module"].split(", "), (i, module, marked[i])
    assert set(marked) <= set(audit), (sorted(marked), audit)
    assert sorted(r["id"] for r in page["audit"] if r["id"] in audit) == sorted(audit)
    # ... and they are the recovery's record of its actions
    recorded = [a for a in report["actions"] if not a.get("skipped")]
    assert len(actions) >= len(recorded)
    assert set(i for a in recorded for i in a["audit_ids"]) <= set(marked), (recorded, sorted(marked))


@pytest.fixture(scope="module")
def recovered(k2lab, inventory, tmp_path_factory):
    """A duplicate burst recovered through the playbooks, then post_incident.yml: the reports' directory."""
    reports = str(tmp_path_factory.mktemp("html") / "reports")
    before = last_audit_id()
    started = time.time()
    lab.wait_for_new_watermarks(cycles=1)
    faults.inject("duplicate-burst")
    try:
        time.sleep(k2lab["cycle_seconds"] + 3)
        rec = run_playbook("recover.yml", inventory, reports, extra={"k2_execute": True})
        assert rec.rc == 0 and rec.report("recovery")["outcome"] == "recovered", rec
        pi = run_playbook("post_incident.yml", inventory, reports, extra={"k2_execute": True,
                                                                          "k2_post_incident_cycles": 1})
        assert pi.rc == 0, pi
    except BaseException:
        faults.heal("duplicate-burst")
        raise
    return {"dir": reports, "recovery": rec, "post_incident": pi, "audit": audit_rows(before),
            "seconds": time.time() - started}


def test_incident_page_draws_the_recovery_with_the_audit_rows(recovered, tmp_path):
    reports = recovered["dir"]
    pi = recovered["post_incident"]
    assert "(and .md, .html)" in pi.output
    incident = pi.report("incident")
    for name in ("latest-incident.html", "latest-recovery.html"):
        assert os.path.exists(os.path.join(reports, name)), os.listdir(reports)
    stamped = [f for f in os.listdir(reports) if f.startswith("incident-") and f.endswith(".html")]
    assert len(stamped) == 1, os.listdir(reports)
    page = check_page(os.path.join(reports, "latest-incident.html"), tmp_path, "incident", "prometheus",
                      "scheduler-log")
    recovery = recovered["recovery"].report("recovery")
    check_marks_against_audit(page, recovery, recovered["audit"])
    kinds = [m["kind"] for m in page["marks"]]
    assert kinds[-1] == "end" and "verification" in kinds and "progression" in kinds and \
        ("detection" in kinds or "began" in kinds), kinds
    assert [m["at"] for m in page["marks"]] == sorted(m["at"] for m in page["marks"])
    # the reconciliation per table and the answer to "is the cold tier whole again"
    for table, r in incident["reconciliation"]["tables"].items():
        assert "%s %s/%s" % (table, r["source_rows"], r["cold_rows"]) in page["text"]
    assert "yes: every source row up to the watermark is in the cold tier exactly once" in page["text"]
    # the recovery's own page, written by recover.yml's finish
    rec_page = check_page(os.path.join(reports, "latest-recovery.html"), tmp_path, "recovery", "prometheus",
                          "scheduler-log")
    check_marks_against_audit(rec_page, recovery, recovered["audit"])


def test_incident_page_with_prometheus_down_draws_from_the_watermark_table(recovered, inventory, tmp_path):
    pi = run_playbook("post_incident.yml", inventory, recovered["dir"], extra={
        "k2_execute": True, "k2_post_incident_cycles": 1,
        "k2_prometheus_url": "http://127.0.0.1:%d" % closed_port()})
    assert pi.rc == 0, pi
    page = check_page(os.path.join(recovered["dir"], "latest-incident.html"), tmp_path, "prometheus-down",
                      "watermark-table", "scheduler-log")
    assert "Source: the watermark table's entries" in page["text"]
    assert "Prometheus did not answer" in page["text"]
    check_marks_against_audit(page, recovered["recovery"].report("recovery"), recovered["audit"])


def test_recovery_page_of_an_escalation(k2lab, inventory, tmp_path):
    """silent-zero-logic: the offload job writes 0 rows by hand too; recover.yml stops and escalates. Its page
    shows the flat line, the escalation, where the run stopped and the state it left."""
    reports = str(tmp_path / "reports")
    faults.inject("silent-zero-logic")
    try:
        time.sleep(2 * k2lab["cycle_seconds"] + 3)
        rec = run_playbook("recover.yml", inventory, reports, extra={"k2_execute": True})
        report = rec.report("recovery")
        assert rec.rc != 0 and report["outcome"] == "escalate", rec
        page = check_page(os.path.join(reports, "latest-recovery.html"), tmp_path, "escalation", "prometheus",
                          "scheduler-log")
        assert page["ids"]["status"]
        assert "silent-offload-logic-bug" in page["text"] and "stop" in page["ids"]
        for line in report["state_left"]["scheduler"]["found"], report["state_left"]["continue"]:
            assert line in page["text"]
        flat = [t for t in lab.TABLES if 'class="note flat" data-table="%s"' % t in page["html"]]
        assert flat, "no table shows the flat line on 0"
        assert "the flat line of a silent offload failure" in page["text"]
        with open(os.path.join(reports, "latest-recovery.json")) as fh:
            assert json.load(fh)["escalations"][0]["kind"] == "silent-offload-logic-bug"
    finally:
        faults.heal("silent-zero-logic")
    lab.wait_for_new_watermarks(cycles=1)


@pytest.mark.long
def test_incident_page_of_a_stale_watermark_and_a_burst(k2lab, inventory, tmp_path):
    """The picture of the README: the scheduler stops, the watermark ages past the alert's threshold and the
    alert fires, a duplicate burst lands; recover.yml repairs and restarts, post_incident.yml checks. The age
    chart rises past the threshold and falls at the restart; the marks match the audit rows."""
    reports = str(tmp_path / "reports")
    before = last_audit_id()
    faults.inject("scheduler-stopped")
    try:
        time.sleep(5 * k2lab["cycle_seconds"])
        faults.inject("duplicate-burst")
        time.sleep(k2lab["cycle_seconds"])
        rec = run_playbook("recover.yml", inventory, reports, extra={"k2_execute": True})
        assert rec.rc == 0 and rec.report("recovery")["outcome"] == "recovered", rec
        pi = run_playbook("post_incident.yml", inventory, reports, extra={"k2_execute": True,
                                                                          "k2_post_incident_cycles": 1})
        assert pi.rc == 0, pi
    finally:
        if lab.scheduler_active() != "active":
            faults.heal("scheduler-stopped")
    page = check_page(os.path.join(reports, "latest-incident.html"), tmp_path, "stale", "prometheus",
                      "scheduler-log")
    check_marks_against_audit(page, rec.report("recovery"), audit_rows(before))
    assert page["marks"][0]["kind"] == "detection" and "fired" in page["text"]
    if os.environ.get("K2_REPORT_SCREENSHOT"):
        screenshot(os.path.join(reports, "latest-incident.html"), os.environ["K2_REPORT_SCREENSHOT"],
                   height=int(os.environ.get("K2_REPORT_SCREENSHOT_HEIGHT", "1250")))
