# -*- coding: utf-8 -*-
# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""How a recovery ended, and the state it leaves: one pure function over what the run recorded.

Private to this collection. ``outcome(run)`` decides the outcome (``dry-run``, ``nothing-to-do``,
``recovered``, ``not-recovered``, ``escalate``), gathers every escalation that holds (the
diagnosis', the step that stopped the run, what a scenario found, the runbook's Escalation rules)
and describes the state left: the scheduler as found and as left, whether this run stopped it and
why it stays so, every change with its audit ids and backups, and the one command that continues
(and the ones that undo). A run that stops early says all of that; none says "Unknown error".

``run`` keys (all optional)::

    dry_run, executed:  bool
    done_scenarios:     scenario numbers run
    stop:               {kind, step, text, data, keep_scheduler_stopped}: the step that could not go on
    notes:              [{kind, text, data}]: escalations a scenario raised without stopping
    verification:       watermark_wait result
    initial, final:     the diagnosis before and after
    actions:            the run's record (record.yml): {scenario, step, action, dry_run, changed, audit_ids,
                        backup, rollback, at}
    scheduler_found, scheduler_now: scheduler_info ``unit`` at the start and at the end
    settings:           {scheduler_unit, scheduler_host, inventory}
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

OUTCOMES = ("dry-run", "nothing-to-do", "recovered", "not-recovered", "escalate")

# Stops after which running the scheduler would do harm (the same rows appended again every cycle,
# or entries it would sort below): the scheduler is left stopped on purpose.
KEEP_STOPPED = ("watermark-write-failed", "future-entries", "manual-offload-twice", "scenario5-workaround")


def scheduler_state(unit):
    """running, crash-looping, stopped or unknown, from a scheduler_info ``unit``."""
    if not isinstance(unit, dict) or not unit.get("exists"):
        return "unknown"
    if unit.get("crash_loop"):
        return "crash-looping"
    if unit.get("running") or (unit.get("active") and "running" not in unit):
        return "running"
    if unit.get("active_state") == "activating":
        return "starting"
    return "stopped"


def _scheduler_changes(actions):
    return [a for a in actions or [] if a.get("action") in ("scheduler-stop", "scheduler-start", "scheduler-restart")
            and a.get("changed") and not a.get("dry_run")]


def _command(settings, playbook, execute=False):
    inv = settings.get("inventory") or "INVENTORY"
    return "ansible-playbook -i %s k2.iceberg_offload.%s%s" % (inv, playbook, " -e k2_execute=true" if execute else "")


def _changes(actions):
    out = []
    for a in actions or []:
        if not a.get("changed") or a.get("dry_run"):
            continue
        item = {"step": a.get("step"), "scenario": a.get("scenario"), "at": a.get("at"),
                "audit_ids": a.get("audit_ids") or [], "backup": a.get("backup")}
        if a.get("rollback"):
            item["undo"] = a["rollback"]
        elif a.get("backup") and str(a.get("backup")).startswith("snapshot "):
            item["undo"] = "iceberg_dedupe rollback_to_snapshot=%s" % str(a["backup"]).split(" ", 1)[1]
        elif a.get("backup"):
            item["undo"] = "restore the deleted entries from %s (INSERT INTO the watermark table SELECT * FROM it)" \
                % a["backup"]
        out.append(item)
    return out


def outcome(run):
    run = run or {}
    settings = run.get("settings") or {}
    initial = run.get("initial") or {}
    final = run.get("final") or initial
    stop = run.get("stop")
    dry = bool(run.get("dry_run"))
    done = list(run.get("done_scenarios") or [])
    verify = run.get("verification") or {}

    if stop and (not dry or stop.get("step") == "Diagnosis"):
        result = "escalate"  # a dry run that reaches a stop is still the plan: it says where executing stops
    elif not done and final.get("status") == "healthy":
        result = "nothing-to-do"
    elif dry:
        result = "dry-run"
    elif verify.get("verified") and final.get("status") == "healthy":
        result = "recovered"
    else:
        result = "not-recovered"

    escalations = []

    def add(kind, text, **data):
        if kind not in [e["kind"] for e in escalations]:
            escalations.append({"kind": kind, "text": text, "data": data})

    if stop:
        add(stop.get("kind") or "step-failed", "%s: %s" % (stop.get("step") or "a step", stop.get("text")),
            **(stop.get("data") or {}))
    for e in initial.get("escalations") or []:
        add(e.get("kind"), e.get("text"), **(e.get("data") or {}))
    for e in run.get("notes") or []:
        add(e.get("kind"), e.get("text"), **(e.get("data") or {}))
    if not dry:
        for e in final.get("escalations") or []:
            add(e.get("kind"), e.get("text"), **(e.get("data") or {}))
    if result == "not-recovered":
        add("not-recovered", "the recovery did not verify: %s; diagnosis now: %s" % (
            verify.get("msg") or "the watermark was not verified", final.get("summary")))

    found = scheduler_state(run.get("scheduler_found"))
    now = scheduler_state(run.get("scheduler_now")) if not dry and run.get("scheduler_now") else found
    changes = _scheduler_changes(run.get("actions"))
    last = changes[-1] if changes else None
    stopped_by_us = bool(last and last.get("action") == "scheduler-stop")
    keep = bool(stop and (stop.get("keep_scheduler_stopped") or stop.get("kind") in KEEP_STOPPED)) or any(
        n.get("kind") in KEEP_STOPPED for n in run.get("notes") or [])
    unit = settings.get("scheduler_unit") or "iceberg-offload-scheduler.service"
    host = settings.get("scheduler_host") or "the scheduler's host"
    why = None
    if stopped_by_us:
        why = (stop or {}).get("text") if keep and stop else (
            "the run stopped early, before the step that starts it" if stop else last.get("step"))
    scheduler = {"found": found, "now": now, "stopped_by_this_run": stopped_by_us,
                 "started_by_this_run": bool(last and last.get("action") in ("scheduler-start", "scheduler-restart")),
                 "left_stopped_deliberately": stopped_by_us and keep, "why": why, "unit": unit, "host": host}

    undo = []
    if stopped_by_us:
        undo.append("systemctl start %s (on %s)" % (unit, host))
    undo += ["%s (audit %s)" % (c["undo"], ",".join(str(i) for i in c["audit_ids"]) or "-")
             for c in _changes(run.get("actions")) if c.get("undo")]
    if result == "recovered":
        cont = _command(settings, "post_incident")
    elif result == "dry-run":
        cont = _command(settings, "recover", execute=True)
    elif result == "nothing-to-do":
        cont = None
    elif stop and not _changes(run.get("actions")):
        cont = "fix what the escalation names, then %s" % _command(settings, "diagnose")
    elif stop or stopped_by_us:
        cont = "fix what the escalation names, then %s (it repairs what is left%s)" % (
            _command(settings, "recover", execute=True), " and starts the scheduler" if stopped_by_us else "")
    else:
        cont = "%s (more cycles of verification) or %s" % (_command(settings, "post_incident"),
                                                           _command(settings, "diagnose"))
    state = {"scheduler": scheduler, "changes": _changes(run.get("actions")), "continue": cont, "undo": undo}
    return {"outcome": result, "escalate": bool(escalations) or result in ("escalate", "not-recovered"),
            "escalations": escalations, "state_left": state, "headline": _headline(result, escalations, scheduler, stop)}


def _headline(result, escalations, scheduler, stop=None):
    stop_at = "; executing would stop at %s [%s]" % (stop.get("step"), stop.get("kind")) if stop else ""
    words = {"dry-run": "DRY RUN - nothing was changed" + stop_at,
             "nothing-to-do": "NOTHING TO DO",
             "recovered": "RECOVERED and verified", "not-recovered": "NOT RECOVERED",
             "escalate": "ESCALATE - the recovery stopped"}[result]
    if escalations and result not in ("escalate", "dry-run"):
        words += " - ESCALATE to the Engineering Lead (%s)" % ", ".join(e["kind"] for e in escalations)
    sched = scheduler["now"]
    if scheduler["stopped_by_this_run"]:
        sched = "STOPPED by this run%s" % (" on purpose" if scheduler["left_stopped_deliberately"] else "")
    return "%s; scheduler %s" % (words, sched)


def state_lines(state):
    """The state left, as the lines a summary and a notification print."""
    s = state.get("scheduler") or {}
    lines = ["scheduler: found %s, now %s%s" % (
        s.get("found"), s.get("now"), "; STOPPED by this run%s: %s" % (
            " and left stopped on purpose" if s.get("left_stopped_deliberately") else "", s.get("why"))
        if s.get("stopped_by_this_run") else "")]
    for c in state.get("changes") or []:
        audit = " (audit %s)" % ",".join(str(i) for i in c["audit_ids"]) if c.get("audit_ids") else ""
        backup = " (backup %s)" % c["backup"] if c.get("backup") else ""
        lines.append("changed: %s%s%s" % (c.get("step"), audit, backup))
    if not state.get("changes"):
        lines.append("changed: nothing%s" % (" but the scheduler" if s.get("stopped_by_this_run") else ""))
    if state.get("continue"):
        lines.append("continue: %s" % state["continue"])
    for u in state.get("undo") or []:
        lines.append("undo: %s" % u)
    return lines
