# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Issue 9's secrets rule for the playbooks: diagnose, recover (the plan and the change) and
post_incident run at -vvvv on the lab, through a failure (a wrong ClickHouse password) and a
recovery that uses the superuser password (Scenario 2b), and no secret appears in their
output, their Ansible log, the reports they write, the audit table or a backup table.

The secrets are the lab's PostgreSQL password (random, also the superuser's) and
distinctive made-up ClickHouse and Prometheus credentials, given as extra vars the way an
AWX credential or a vault would give them.
"""
import glob
import json
import os
import uuid

from k2lab import faults, lab
from tests.support.incident import lab_inventory, run_playbook

TOKEN = uuid.uuid4().hex[:10]
CH_SECRET = "K2chPlaybookSecret" + TOKEN
PROM_SECRET = "K2promPlaybookSecret" + TOKEN


def test_no_secret_in_any_playbook_output_report_or_row(k2lab, tmp_path):
    secrets = [k2lab["pg_password"], CH_SECRET, PROM_SECRET]
    inventory = lab_inventory(str(tmp_path / "lab.yml"))
    reports = str(tmp_path / "reports")
    texts = {}

    def play(name, extra=None, expect_rc=0):
        log = str(tmp_path / ("%s-%d.log" % (name, len(texts))))
        extra = dict(extra or {}, k2_prometheus_token=PROM_SECRET)
        r = run_playbook(name, inventory, reports, extra=extra, args=["-vvvv"],
                         env_extra={"ANSIBLE_LOG_PATH": log})
        texts["output of %s #%d" % (name, len(texts))] = r.output
        with open(log, errors="replace") as fh:
            texts["ansible log of %s #%d" % (name, len(texts))] = fh.read()
        assert (r.rc == 0) == (expect_rc == 0), r
        return r

    # a failure path: ClickHouse refuses the password, the diagnosis says so and goes on
    bad = play("diagnose.yml", {"k2_clickhouse_user": "default", "k2_clickhouse_password": CH_SECRET})
    assert any("ClickHouse" in m["text"] or "source" in m["text"]
               for m in bad.report("diagnosis")["diagnosis"]["missing_facts"])

    faults.inject("pg-connections")
    play("recover.yml")
    rec = play("recover.yml", {"k2_execute": True})
    assert rec.report("recovery")["outcome"] == "recovered", (rec.output[-6000:], rec.report("diagnosis"))
    play("post_incident.yml", {"k2_post_incident_cycles": 1})

    for path in glob.glob(os.path.join(reports, "*")):
        with open(path, errors="replace") as fh:
            texts["report " + os.path.basename(path)] = fh.read()
    # the audit table exists once a watermark_reset has run on this lab (Scenario 2b alone writes none)
    audited = lab.psql("SELECT to_regclass('offload_watermark_audit') IS NOT NULL", user="postgres").strip() == "t"
    texts["audit rows"] = lab.psql("SELECT coalesce(json_agg(a), '[]') FROM offload_watermark_audit a",
                                   user="postgres") if audited else "[]"
    for table in lab.psql("SELECT tablename FROM pg_tables WHERE tablename LIKE '%backup%'", user="postgres").split():
        texts["table " + table] = lab.psql("SELECT coalesce(json_agg(b), '[]') FROM %s b" % table, user="postgres")
    found = ["%s in %s: ...%s..." % (s[:6], where, text[max(0, text.index(s) - 150):text.index(s)])
             for where, text in texts.items() for s in secrets if s in text]
    assert not found, "\n".join(found)
    assert len(texts) > 8 and json.loads(texts["audit rows"]) is not None
