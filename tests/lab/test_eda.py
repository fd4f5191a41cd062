# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Issue 11, Event-Driven Ansible: the rulebook extensions/eda/rulebooks/iceberg_offload_watermark_stale.yml,
run by ansible-rulebook from the installed collection, for real in the lab: the scheduler stops,
the lab's Prometheus fires IcebergOffloadWatermarkStale (4 cycles), Debian's Alertmanager posts it
to the rulebook's webhook (eda.builtin.webhook, with a bearer token), the rulebook runs diagnose.yml,
and its report names Scenario 1. Alertmanager keeps notifying (the second table's alert joining the
group, a 10 s repeat interval): one run, not one per notification. Then, with k2_eda_plan_recovery,
the recovery plan: recover.yml without k2_execute, which changes nothing.
Ports: Alertmanager 20093, the webhook 20500 and 20501 (127.0.0.1 only)."""
import glob
import json
import os
import time
import uuid

import pytest

from k2lab import faults, lab
from tests.support import eda
from tests.support.incident import lab_inventory

AM_PORT = 20093
HOOK_PORT = 20500
PLAN_HOOK_PORT = 20501
TOKEN = "k2-eda-" + uuid.uuid4().hex


def reports(directory, kind):
    return sorted(glob.glob(os.path.join(directory, "%s-*.json" % kind)))


def wait_for(what, predicate, timeout, procs=()):
    start = time.time()
    while time.time() - start < timeout:
        value = predicate()
        if value:
            return value
        for p in procs:
            assert p.alive(), "%s exited:\n%s" % (p.name, p.log()[-4000:])
        time.sleep(1)
    raise AssertionError("timed out after %d s waiting for %s\n%s" % (
        timeout, what, "\n".join("--- %s\n%s" % (p.name, p.log()[-3000:]) for p in procs)))


@pytest.fixture(scope="module")
def stopped_scheduler(k2lab):
    faults.inject("scheduler-stopped")
    yield
    faults.heal("scheduler-stopped")
    lab.wait_for_new_watermarks(cycles=1)


def test_alertmanager_to_rulebook_runs_one_diagnosis(k2lab, tmp_path, stopped_scheduler):
    report_dir = str(tmp_path / "reports")
    inventory = lab_inventory(str(tmp_path / "inventory.yml"))
    procs = []
    try:
        rulebook = eda.start_rulebook(str(tmp_path), inventory, {
            "k2_eda_webhook_host": "127.0.0.1", "k2_eda_webhook_port": HOOK_PORT, "k2_eda_webhook_token": TOKEN,
            "k2_eda_plan_recovery": False, "k2_report_dir": report_dir})
        procs.append(rulebook)
        am = eda.start_alertmanager(str(tmp_path), AM_PORT, "http://127.0.0.1:%d/alertmanager" % HOOK_PORT, TOKEN)
        procs.append(am)
        lab.prometheus_alertmanagers(["127.0.0.1:%d" % AM_PORT])
        stale = lab.stale_seconds(k2lab["cycle_seconds"])

        first = wait_for("the diagnosis the alert started", lambda: reports(report_dir, "diagnosis"),
                         stale + 150, procs)
        sent_at_first = eda.webhook_notifications(AM_PORT)
        assert sent_at_first >= 1
        # Alertmanager goes on notifying the same group; each must be dropped
        wait_for("two more notifications", lambda: eda.webhook_notifications(AM_PORT) >= sent_at_first + 2, 60, procs)
        time.sleep(25)   # long enough for a second diagnosis to have written its report
        assert reports(report_dir, "diagnosis") == first, rulebook.log()[-4000:]
        assert rulebook.log().count("PLAY [Diagnose step 5") == 1

        with open(first[0]) as fh:
            report = json.load(fh)
        assert report["diagnosis"]["scenario_numbers"] == [1], report["diagnosis"]["summary"]
        assert report["diagnosis"]["status"] == "recover"
        # the run saw the alert it was started by
        assert report["facts"]["prometheus"]["firing_tables"], report["facts"]["prometheus"]
        assert '"POST /alertmanager HTTP/1.1" 200' in rulebook.log()
        # neither the webhook's token nor the database password reaches the report or the run's output
        with open(first[0]) as fh:
            text = fh.read()
        for secret in (TOKEN, k2lab["pg_password"]):
            assert secret not in text and secret not in rulebook.log().split("Starting sources", 1)[-1]
    finally:
        for p in procs:
            p.stop()
        lab.prometheus_alertmanagers([])


def test_plan_mode_runs_the_recovery_plan_once_and_changes_nothing(k2lab, tmp_path, stopped_scheduler):
    report_dir = str(tmp_path / "reports")
    inventory = lab_inventory(str(tmp_path / "inventory.yml"))
    rulebook = eda.start_rulebook(str(tmp_path), inventory, {
        "k2_eda_webhook_host": "127.0.0.1", "k2_eda_webhook_port": PLAN_HOOK_PORT, "k2_eda_webhook_token": TOKEN,
        "k2_eda_plan_recovery": True, "k2_report_dir": report_dir})
    try:
        group = '{}:{alertname="IcebergOffloadWatermarkStale"}'
        resolved = eda.notification(group, list(lab.TABLES), status="resolved")
        assert eda.post(PLAN_HOOK_PORT, TOKEN, resolved) == 200       # starts nothing
        firing = eda.notification(group, list(lab.TABLES))           # two alerts, one group
        for _repeat in range(3):
            assert eda.post(PLAN_HOOK_PORT, TOKEN, firing) == 200
        with pytest.raises(Exception):
            eda.post(PLAN_HOOK_PORT, "not-the-token", firing)
        recovery = wait_for("the recovery plan", lambda: reports(report_dir, "recovery"), 240, [rulebook])
        time.sleep(5)
        assert len(reports(report_dir, "recovery")) == 1
        with open(recovery[0]) as fh:
            plan = json.load(fh)
        assert plan["outcome"] == "dry-run" and plan["dry_run"] is True, plan
        assert plan["diagnosis"]["scenario_numbers"] == [1]
        assert all(a["dry_run"] for a in plan["actions"]) and plan["actions"]
        assert lab.scheduler_active() != "active"   # the plan changed nothing
    finally:
        rulebook.stop()
