# -*- coding: utf-8 -*-
# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Filters of the incident playbooks; the decisions themselves live in module_utils
(diagnosis.py, scenarios.py, scenario_checks.py, recovery.py, scheduler.py) and are unit tested there."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible.errors import AnsibleFilterError

from ansible_collections.k2.iceberg_offload.plugins.module_utils.diagnosis import classify
from ansible_collections.k2.iceberg_offload.plugins.module_utils.scenarios import (
    PlanError, plan, scenario_steps as _scenario_steps)
from ansible_collections.k2.iceberg_offload.plugins.module_utils.recovery import outcome, state_lines
from ansible_collections.k2.iceberg_offload.plugins.module_utils.scenario_checks import (
    corruption, manual_offload, reconcile, silent_offloads)
from ansible_collections.k2.iceberg_offload.plugins.module_utils.scheduler import parse_log
from ansible_collections.k2.iceberg_offload.plugins.module_utils.incident_history import text_time, window_start


def diagnose(facts):
    if not isinstance(facts, dict):
        raise AnsibleFilterError("diagnose expects the gathered facts as a dictionary, got %s" % type(facts).__name__)
    return classify(facts)


def recovery_plan(diagnosis, requested=None):
    try:
        return plan(diagnosis, requested)
    except PlanError as e:
        raise AnsibleFilterError(str(e))


def scenario_steps(number, settings=None):
    try:
        return _scenario_steps(int(number), settings or {})
    except (KeyError, ValueError):
        raise AnsibleFilterError("scenario_steps expects a scenario number 1 to 5, got %r" % (number,))


def recovery_outcome(run):
    if not isinstance(run, dict):
        raise AnsibleFilterError("recovery_outcome expects the run's record as a dictionary, got %s"
                                 % type(run).__name__)
    return outcome(run)


def state_left_lines(state):
    return state_lines(state or {})


def container_state(result):
    """What the diagnosis needs of a community.docker.docker_container_info result - state, restart count and
    policy, networks - and nothing else (docker inspect also holds the container's environment, secrets
    among it)."""
    r = result if isinstance(result, dict) else {}
    c = r.get("container") or None
    out = {"exists": bool(r.get("exists")), "failed": bool(r.get("failed")), "unreachable": bool(r.get("unreachable")),
           "msg": str(r.get("msg") or "")[:300] if r.get("failed") else "", "container": None}
    if c:
        nets = (c.get("NetworkSettings") or {}).get("Networks") or {}
        out["container"] = {
            "Name": c.get("Name") or "", "State": c.get("State") or {}, "RestartCount": c.get("RestartCount") or 0,
            "HostConfig": {"RestartPolicy": (c.get("HostConfig") or {}).get("RestartPolicy") or {}},
            "NetworkSettings": {"Networks": dict((n, {"IPAddress": (v or {}).get("IPAddress")})
                                                 for n, v in nets.items())}}
    return out


_NO_MESSAGE = ("", "Unknown error", "failed", "Task failed", "Task failed: Action failed: Unknown error.")


def failure_text(result):
    """What a failed task said, in words: its msg, else its stderr, else its return code, else the failed
    items of a loop; never "Unknown error" (a task that retried until it gave up has no msg of its own)."""
    r = result if isinstance(result, dict) else {}
    msg = " ".join(str(r.get("msg") or "").split())
    failed = [i for i in r.get("results") or [] if isinstance(i, dict) and i.get("failed")]
    if failed:  # a loop: "One or more items failed" says nothing, the items do
        return "; ".join("%s: %s" % (_item_label(i), failure_text(i)) for i in failed)[:1500]
    if msg and msg not in _NO_MESSAGE:
        return msg[:1500]
    stderr = " ".join(str(r.get("stderr") or "").split())
    if stderr:
        return ("rc %s: %s" % (r.get("rc"), stderr[-800:])) if r.get("rc") is not None else stderr[-800:]
    if r.get("attempts"):
        skip = ("invocation", "attempts", "changed", "failed", "msg")
        last = ", ".join("%s=%s" % (k, str(r[k])[:120]) for k in sorted(r) if k not in skip)
        return "gave up after %s attempts; last result: %s" % (r["attempts"], last[:600])
    if r.get("rc") not in (None, 0):
        return "exited with rc %s" % r["rc"]
    return "the task failed without a message (result: %s)" % ", ".join(sorted(r))[:300]


def _item_label(result):
    item = result.get("item")
    if isinstance(item, dict):
        return str(item.get("key") or item.get("name") or item)[:80]
    return str(item)[:80]


_BRIEF_KEYS = ("kind", "scenario", "text", "tables", "blocks_recovery")


def brief(items):
    """Findings, escalations or observations without their data: kind, scenario, text, tables (what
    set_stats hands to the next AWX workflow node and EDA reads)."""
    out = []
    for item in items or []:
        if isinstance(item, dict):
            out.append(dict((k, item[k]) for k in _BRIEF_KEYS if k in item))
        else:
            out.append({"kind": "text", "text": str(item)})
    return out


def offload_output(text, tables=None):
    if isinstance(text, (list, tuple)):
        lines = [str(x) for x in text]
    else:
        lines = str(text or "").splitlines()
    return parse_log(lines, tables=tables or None)


def report_window(times, cycle_seconds=900, ages=None, ages_at=None, now=None):
    """Where the HTML report's charts begin (ISO 8601, UTC): incident_page.window_start."""
    if not isinstance(times, (list, tuple)):
        times = [times]
    try:
        cycle = float(cycle_seconds)
    except (TypeError, ValueError):
        raise AnsibleFilterError("report_window expects cycle_seconds as a number, got %r" % (cycle_seconds,))
    if cycle <= 0:
        raise AnsibleFilterError("report_window expects cycle_seconds greater than 0, got %r" % (cycle_seconds,))
    return text_time(window_start(times, cycle, ages=ages if isinstance(ages, dict) else None, ages_at=ages_at,
                                  now=now)).replace(" ", "T") + "Z"


class FilterModule(object):
    def filters(self):
        return {
            "diagnose": diagnose,
            "recovery_plan": recovery_plan,
            "scenario_steps": scenario_steps,
            "recovery_outcome": recovery_outcome,
            "state_left_lines": state_left_lines,
            "offload_output": offload_output,
            "container_state": container_state,
            "brief": brief,
            "failure_text": failure_text,
            "corruption": corruption,
            "silent_offloads": silent_offloads,
            "manual_offload": manual_offload,
            "reconcile": reconcile,
            "report_window": report_window,
        }
