# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Issue 4 end to end: the watermark table is lost; recreate it and restart the offload.

`strategy: cold_tier` (the collection's default for this case) leaves the cold tier
exact after three cycles. The runbook's way (`lookback: 24h`) is run second and its
damage recorded: every row between the lookback pair and the cold tier's greatest
pair is offloaded a second time. It runs last before the lab goes down because it
leaves the cold tier duplicated.
"""
import json
import os

from k2lab import REPO_DIR, faults, lab
from tests.support.ansible_module import run_module
from tests.support.incident import lab_inventory, run_playbook

SPARK_HOST = (lab.SPARK, lab.OFFLOAD_PY)
OUTPUT = os.path.join(REPO_DIR, "tests", "output")
CATALOG = {"type": "sql", "uri": "sqlite:////home/iceberg/warehouse/catalog.db",
           "warehouse": "file:///home/iceberg/warehouse"}


def reset_args(k2lab, **kw):
    """watermark_reset as it runs on the Spark host: PostgreSQL and ClickHouse by their
    k2-network names, the Iceberg catalog in place."""
    args = {
        "login_host": lab.PG, "port": 5432, "login_db": "prefect", "login_user": "prefect",
        "login_password": k2lab["pg_password"], "state": "present", "tables": list(lab.TABLES),
        "clickhouse_url": "http://%s:8123/" % lab.CH,
        "iceberg_catalog": "k2", "iceberg_catalog_properties": CATALOG,
    }
    args.update(kw)
    return args


def lose_the_table():
    faults.inject("table-dropped")
    out = lab.dexec(lab.PG, "psql", "-U", "prefect", "-d", "prefect", "-c", r"\dt offload_watermarks",
                    check=False)
    assert "offload_watermarks" not in out


def test_cold_tier_reset_leaves_the_cold_tier_exact(k2lab):
    lose_the_table()
    # As Scenario 3 does: the scheduler stays stopped while the watermarks are re-initialised. With it
    # running, a cycle can commit to the cold tier and write its watermark between the module's read of
    # the cold tier and its read of the table; the rerun then refuses, rightly, to move a watermark back.
    faults.inject("scheduler-stopped")
    try:
        plan = run_module("watermark_reset", reset_args(k2lab, strategy="cold_tier"), check=True, host=SPARK_HOST)
        assert not plan["failed"], plan.get("msg")
        assert plan["changed"]
        # check mode wrote nothing: the table is still missing
        assert "offload_watermarks" not in lab.dexec(lab.PG, "psql", "-U", "prefect", "-d", "prefect", "-c",
                                                     r"\dt offload_watermarks", check=False)
        result = run_module("watermark_reset", reset_args(k2lab, strategy="cold_tier"), host=SPARK_HOST)
        assert not result["failed"], result.get("msg")
        assert result["changed"]
        again = run_module("watermark_reset", reset_args(k2lab, strategy="cold_tier"), host=SPARK_HOST)
        assert not again["failed"] and not again["changed"], (again.get("msg"), again.get("exception"), again)
    finally:
        faults.heal("scheduler-stopped")
    lab.wait_for_new_watermarks(cycles=3)
    report = lab.consistency()
    for t in lab.TABLES:
        r = report["tables"][t]
        assert (r["missing"], r["duplicated_rows"], r["past_watermark"]) == (0, 0, 0), r
    assert report["ok"]


def test_runbook_lookback_reset_duplicates_what_the_cold_tier_had(k2lab):
    table = lab.TABLES[0]
    faults.inject("scheduler-stopped")
    try:
        cold_max = lab.latest_watermarks()[table][:2]
        lose_the_table()
        args = reset_args(k2lab, strategy="lookback", lookback="24h", tables=[table])
        result = run_module("watermark_reset", args, host=SPARK_HOST)
        assert not result["failed"], result.get("msg")
        new = lab.latest_watermarks()[table]
        # the other tables lost their entries too: those are re-initialised exactly (cold tier),
        # so that only the table under study is damaged and the lab's other offloads go on
        others = reset_args(k2lab, strategy="cold_tier", tables=list(lab.TABLES[1:]))
        result = run_module("watermark_reset", others, host=SPARK_HOST)
        assert not result["failed"], result.get("msg")
    finally:
        faults.heal("scheduler-stopped")
    # What the next cycle offloads a second time: the source rows in (lookback pair, cold tier's greatest pair].
    expected = int(lab.ch(
        "SELECT count() FROM {t} WHERE (exchange_timestamp > toDateTime('{a}') OR (exchange_timestamp = "
        "toDateTime('{a}') AND sequence_number > {sa})) AND (exchange_timestamp < toDateTime('{b}') OR "
        "(exchange_timestamp = toDateTime('{b}') AND sequence_number <= {sb}))".format(
            t=table, a=new[0], sa=new[1], b=cold_max[0], sb=cold_max[1])).strip())
    assert expected > 100000  # about a day of trades
    lab.wait_for_new_watermarks(tables=[table], cycles=1)
    r = lab.consistency(tables=[table])["tables"][table]
    assert r["duplicated_rows"] == expected and r["missing"] == 0, r
    record = {"table": table, "lookback": "24h", "lookback_pair": new[:2], "cold_tier_pair_before": cold_max,
              "duplicated_rows": r["duplicated_rows"], "duplicated_keys": r["duplicated_keys"]}
    os.makedirs(OUTPUT, exist_ok=True)
    with open(os.path.join(OUTPUT, "lookback-duplicates.json"), "w") as fh:
        json.dump(record, fh, indent=2)


def test_runbook_lookback_duplicates_are_repaired_by_post_incident(k2lab, tmp_path):
    """Issue 10: the runbook's literal 24 h lookback, once repaired, leaves 0 duplicated and 0 missing rows.
    post_incident.yml finds the copies; with k2_execute it removes them (one Iceberg commit per table)."""
    table = lab.TABLES[0]
    before = lab.consistency(tables=[table])["tables"][table]
    assert before["duplicated_rows"] > 100000, before  # left by the test above
    inventory = lab_inventory(str(tmp_path / "lab.yml"))
    plan = run_playbook("post_incident.yml", inventory, str(tmp_path / "plan"), extra={"k2_post_incident_cycles": 1})
    assert plan.rc != 0, plan  # duplicates fail the checks
    assert plan.report("incident") is not None, plan
    assert any(a["step"].startswith("iceberg_dedupe %s" % table) and a["dry_run"]
               for a in plan.report("incident")["actions"]), plan
    assert lab.consistency(tables=[table])["tables"][table]["duplicated_rows"] >= before["duplicated_rows"]
    done = run_playbook("post_incident.yml", inventory, str(tmp_path / "done"),
                        extra={"k2_post_incident_cycles": 1, "k2_execute": True})
    assert done.rc == 0, done
    incident = done.report("incident")
    assert incident["ok"] and incident["reconciliation"]["ok"], incident
    assert any(a["step"].startswith("iceberg_dedupe %s" % table) and a["changed"] for a in incident["actions"])
    lab.wait_for_new_watermarks(tables=[table], cycles=1)
    r = lab.consistency(tables=[table])["tables"][table]
    assert (r["missing"], r["duplicated_rows"], r["past_watermark"]) == (0, 0, 0), r
    with open(os.path.join(OUTPUT, "lookback-duplicates.json")) as fh:
        record = json.load(fh)
    record["after_post_incident_repair"] = {"duplicated_rows": r["duplicated_rows"], "missing": r["missing"]}
    with open(os.path.join(OUTPUT, "lookback-duplicates.json"), "w") as fh:
        json.dump(record, fh, indent=2)
