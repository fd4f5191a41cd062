# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Issue 8: bad input to the playbooks gets a clear error and nothing is written.

Unknown scenario names, an inventory without the Spark host, a Prometheus or a ClickHouse
that does not answer (findings: the diagnosis goes on), a wrong password (an escalation:
recover refuses to act).
"""
import os

import yaml

from k2lab import lab
from tests.support.incident import lab_inventory, run_playbook


def audit_rows():
    exists = lab.psql("SELECT to_regclass('offload_watermark_audit') IS NOT NULL", user="postgres").strip() == "t"
    return int(lab.psql("SELECT count(*) FROM offload_watermark_audit", user="postgres")) if exists else 0


def test_unknown_scenario_names_are_refused_before_anything_runs(k2lab, tmp_path):
    inventory = lab_inventory(str(tmp_path / "lab.yml"))
    for bad in ([7], ["scenario_9"], "x"):
        r = run_playbook("recover.yml", inventory, str(tmp_path / "r"), extra={"k2_scenarios": bad,
                                                                               "k2_execute": True})
        assert r.rc != 0 and "the runbook's scenarios are 1 (scheduler)" in r.output, r
        assert not os.path.exists(str(tmp_path / "r" / "latest-diagnosis.json"))


def test_an_inventory_without_the_spark_host_is_refused(k2lab, tmp_path):
    inventory = lab_inventory(str(tmp_path / "lab.yml"))
    with open(inventory) as fh:
        inv = yaml.safe_load(fh)
    del inv["all"]["children"]["k2_spark"]
    broken = str(tmp_path / "no-spark.yml")
    with open(broken, "w") as fh:
        yaml.safe_dump(inv, fh)
    for name in ("diagnose.yml", "recover.yml", "post_incident.yml"):
        r = run_playbook(name, broken, str(tmp_path / "r"))
        assert r.rc != 0 and "The inventory lacks k2_spark" in r.output, r
    assert not os.listdir(str(tmp_path / "r")) if os.path.exists(str(tmp_path / "r")) else True


def test_prometheus_and_clickhouse_that_do_not_answer_are_findings(k2lab, tmp_path):
    inventory = lab_inventory(str(tmp_path / "lab.yml"))
    r = run_playbook("diagnose.yml", inventory, str(tmp_path / "r"), extra={
        "k2_prometheus_url": "http://127.0.0.1:9", "k2_clickhouse_url": "http://127.0.0.1:9/"})
    assert r.rc == 0, r
    d = r.report("diagnosis")["diagnosis"]
    assert d["status"] == "healthy", d
    missing = " ".join(m["text"] for m in d["missing_facts"])
    assert "prometheus" in missing and "127.0.0.1:9" in missing, missing
    assert "not known: prometheus" in r.output


def test_a_wrong_password_is_an_escalation_and_nothing_is_written(k2lab, tmp_path):
    inventory = lab_inventory(str(tmp_path / "lab.yml"))
    before = audit_rows()
    r = run_playbook("diagnose.yml", inventory, str(tmp_path / "r"), extra={"k2_pg_password": "wrong-password"})
    assert r.rc == 0, r
    d = r.report("diagnosis")["diagnosis"]
    assert d["status"] == "escalate" and d["blocking_escalations"] == ["db-authentication"], d
    assert any("wrong credentials" in e["text"] for e in d["escalations"]), d
    assert "password authentication failed" in r.output
    rec = run_playbook("recover.yml", inventory, str(tmp_path / "r"),
                       extra={"k2_pg_password": "wrong-password", "k2_execute": True})
    assert rec.rc != 0 and "wrong credentials" in rec.output and "Nothing was changed" in rec.output, rec
    report = rec.report("recovery")
    assert report["outcome"] == "escalate" and report["actions"] == [], report
    assert report["escalations"][0]["kind"] == "db-authentication"
    assert report["state_left"]["scheduler"]["stopped_by_this_run"] is False
    assert audit_rows() == before
    assert lab.scheduler_active() == "active"
