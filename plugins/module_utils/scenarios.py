# -*- coding: utf-8 -*-
# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The runbook's five scenarios, the cases (kinds) each recovers, the safe order, and the plan.

Private to this collection. One place for a scenario's title, playbook and steps (the recovery plan
prints them: ``scenario_steps``) and for the case kinds the diagnosis (diagnosis.py) finds; the kinds
are a stable interface (docs/diagnosis-kinds.md). ``plan(diagnosis, requested)`` turns a diagnosis, or
an operator's explicit list, into the scenario numbers to run in the safe order.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

# The runbook's five scenarios. ``steps`` is what the recovery does, in the runbook's words where it can;
# {names} are filled from the settings (scenario_steps()).
SCENARIOS = {
    1: {"title": "Scheduler Not Running", "playbook": "scenario_1_scheduler.yml",
        "steps": ["move a watermark forward if a killed offload left the cold tier ahead of it",
                  "start {scheduler_unit} (systemctl start), or restart it once when it crash-loops",
                  "check that it stays up (no climbing restart counter); escalate with its journal when it does not"]},
    2: {"title": "PostgreSQL Connection Issues", "playbook": "scenario_2_postgres.yml",
        "steps": ["stop the scheduler",
                  "start {pg_container} if stopped or crashed (exit reason and last log lines first); restart it "
                  "once when Docker keeps restarting it, and escalate with its log when it crashes again",
                  "reattach {pg_container} and {spark_container} to {network} where cut off",
                  "end sessions idle for more than {idle_session_after} s through a superuser slot if the pool is "
                  "full, and sessions idle in a transaction for more than {idle_session_after} s that hold a lock "
                  "on {watermark_table}",
                  "wait until PostgreSQL answers from here and from the Spark host",
                  "move a watermark forward if a cut offload left the cold tier ahead of it",
                  "start the scheduler"]},
    3: {"title": "Watermark Table Missing", "playbook": "scenario_3_table_missing.yml",
        "steps": ["stop the scheduler",
                  "create {watermark_table} and its index (runbook DDL) when missing",
                  "set each missing watermark from {strategy_text}",
                  "start the scheduler"]},
    4: {"title": "Watermark Corruption", "playbook": "scenario_4_corruption.yml",
        "steps": ["stop the scheduler",
                  "when the watermark INSERT itself is refused: advance the id sequence when it is behind max(id); "
                  "otherwise (a privilege, a constraint, a full disk) escalate and leave the scheduler stopped, "
                  "since every cycle would append the same rows again",
                  "delete entries ahead of what the cold tier holds (backup table first), so the rows in between "
                  "are offloaded instead of skipped",
                  "move a regressed watermark forward to what the cold tier holds",
                  "delete duplicate and regressed entries (backup table first)",
                  "remove duplicated rows from the cold tier (one Iceberg commit per table, rollback snapshot "
                  "recorded)",
                  "start the scheduler"]},
    5: {"title": "Silent Offload Failure", "playbook": "scenario_5_silent_offload.yml",
        "steps": ["prove the silent failure (0-row offloads, rows waiting in ClickHouse)",
                  "stop the scheduler; run offload_generic.py by hand with the runbook's flags; check rows "
                  "arrived and none twice",
                  "manual offload works: a scheduler integration bug (runbook step 4) - start a fresh scheduler, "
                  "verify, and escalate to engineering{workaround_text}",
                  "manual offload writes 0 rows too: a logic bug in the job - escalate"]},
}

# Database before table before data; the scheduler is started once those are right;
# a silent offload can only be judged with everything else healthy.
SAFE_ORDER = (2, 3, 4, 1, 5)

# kind -> (scenario, title)
CASES = {
    "scheduler-stopped": (1, "the scheduler is not running"),
    "scheduler-crashloop": (1, "the scheduler keeps failing and systemd keeps restarting it"),
    "db-stopped": (2, "the database container is stopped"),
    "db-crashed": (2, "the database container crashed"),
    "db-crashloop": (2, "the database container keeps crashing and Docker keeps restarting it"),
    "db-connections": (2, "the connection pool is exhausted"),
    "db-partition": (2, "a container is cut off from the scheduler's network"),
    "db-lock": (2, "a session holds a lock on the watermark table that every cycle waits on"),
    "table-missing": (3, "the watermark table does not exist"),
    "no-entry": (3, "tables without a watermark entry"),
    "duplicate-entries": (4, "duplicate watermark entries"),
    "regression": (4, "the watermark went backward"),
    "future-entries": (4, "entries dated in the future"),
    "watermark-write-failed": (4, "the watermark INSERT fails after the Iceberg append (the same rows are "
                                  "offloaded again every cycle)"),
    "id-sequence-behind": (4, "the id sequence is behind max(id): every INSERT violates the primary key"),
    "watermark-ahead": (4, "the watermark is ahead of what the cold tier holds (rows would be skipped)"),
    "cold-duplicates": (4, "duplicated rows in the cold tier"),
    "cold-ahead": (4, "the cold tier holds rows past the watermark (they would be offloaded again)"),
    "silent-zero": (5, "offloads complete with 0 rows while the source has rows past the watermark"),
}


class PlanError(ValueError):
    """An operator's scenario list that cannot be followed."""


def parse_scenarios(requested):
    """[1, 4] from ``[1, "4"]``, ``"1,4"``, ``["scenario_1"]``; unknown names raise PlanError."""
    if requested in (None, "", []):
        return []
    if isinstance(requested, (str, int)):
        requested = str(requested).split(",")
    out = []
    for item in requested:
        text = str(item).strip().lower()
        for prefix in ("scenario_", "scenario-", "scenario"):
            if text.startswith(prefix):
                text = text[len(prefix):]
        text = text.split("_")[0]
        if not text.isdigit() or int(text) not in SCENARIOS:
            raise PlanError("unknown scenario %r: the runbook's scenarios are 1 (scheduler), 2 (PostgreSQL), "
                            "3 (table missing), 4 (corruption), 5 (silent offload)" % (item,))
        if int(text) not in out:
            out.append(int(text))
    return out


def plan(diagnosis, requested=None):
    """The scenario numbers to run, in the safe order: the diagnosis', or the operator's ``requested``."""
    asked = parse_scenarios(requested)
    chosen = asked or list((diagnosis or {}).get("scenario_numbers") or [])
    return [n for n in SAFE_ORDER if n in chosen]


def scenario_steps(number, settings=None):
    """What the recovery does in Scenario ``number``, one line per step, with the settings' names."""
    s = dict({"scheduler_unit": "iceberg-offload-scheduler.service", "pg_container": "k2-prefect-db",
              "spark_container": "k2-spark-iceberg", "network": "k2-network", "idle_session_after": 600,
              "watermark_table": "offload_watermarks", "strategy": "cold_tier", "lookback": "24h",
              "workaround": False}, **(settings or {}))
    s["strategy_text"] = ("the cold tier (what Iceberg really holds: nothing offloaded twice)"
                          if s["strategy"] == "cold_tier" else
                          "the source %s back (the runbook way: rows the cold tier holds are offloaded again)"
                          % s["lookback"])
    s["workaround_text"] = ("; then, as asked (k2_scenario5_workaround), the runbook's workaround: the scheduler "
                            "stays stopped and the offload runs by hand every cycle until its stop condition"
                            if s["workaround"] else "")
    return [step.format(**s) for step in SCENARIOS[int(number)]["steps"]]
