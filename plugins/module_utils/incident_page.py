# -*- coding: utf-8 -*-
# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The incident report's HTML page, as data: the facts of one run shaped for a person.

Private to this collection; used on the controller by the incident_report action (and the
report_window filter). Pure Python, no plotting and no server: incident_history.py makes the
window and the series, incident_charts.py draws what ``build_page`` returns, the role's template
incident_report.html.j2 lays it out.

What the page answers, and from which facts (nothing else is read):

- when did the watermark stop: each table's watermark age over the incident window, from
  Prometheus (``watermark_metrics_info`` ``age_history``, the alert's expression over a range)
  or, when Prometheus did not answer, from the watermark table's entries (``watermark_info``
  ``entries``: the age falls to 0 at each entry and grows until the next);
- rows offloaded per cycle: the scheduler's log (``scheduler_info`` ``history``), or the
  watermark pairs (the sequence numbers each entry advanced) when the log was not read;
- what was done and when: marks for the incident's start, its detection (the alert's
  ``activeAt`` or the diagnosis), every action of the run's record (``at``, ``step``,
  ``scenario``, ``audit_ids``, the audit rows' ``module``), the verification and the end;
- is the cold tier whole: the reconciliation per table and the cold-tier repairs with the
  command that rolls each back; then the diagnosis, the escalations and the state left.

All times are UTC; text without an offset is taken as UTC.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import re

from ansible_collections.k2.iceberg_offload.plugins.module_utils.incident_history import (
    age_from_entries, age_from_prometheus, epoch, num, parse_time, rows_from_log, rows_from_pairs, text_time,
    window_start, zero_runs)
from ansible_collections.k2.iceberg_offload.plugins.module_utils.recovery import state_lines

MARK_KINDS = ("began", "detection", "action", "verification", "progression", "end")

_DEDUPE_STEP_RE = re.compile(r"^iceberg_dedupe (\S+?):")
_REMOVED_IN_RE = re.compile(r"removed in snapshot (\d+)")
_MODULE_RE = re.compile(r"^[a-z][a-z0-9]*_[a-z0-9_]+$")


# -- marks ----------------------------------------------------------------------------------

def _audit_index(watermarks):
    rows = (watermarks or {}).get("recent_changes") or []
    return dict((r.get("id"), r) for r in rows if isinstance(r, dict) and r.get("id") is not None)


def _action_module(action, audit_rows):
    modules = []
    for r in audit_rows:
        if r.get("module") and r["module"] not in modules:
            modules.append(r["module"])
    if modules:
        return ", ".join(modules)
    first = (action.get("step") or "").split(" ", 1)[0]
    if _MODULE_RE.match(first):
        return first
    return action.get("action") or None


def _short(text, limit=22):
    text = " ".join(str(text or "").split())
    return text if len(text) <= limit else text[:limit - 1] + "\u2026"


def _mark(kind, at, text, label, **extra):
    item = {"kind": kind, "at": at, "text": " ".join(str(text or "").split()), "label": label, "scenario": None,
            "module": None, "audit_ids": [], "audit": [], "dry_run": False, "changed": None, "backup": None,
            "undo": None}
    item.update(extra)
    return item


def marks(report, kind, recovery=None, audit=None):
    """The moments drawn on both charts, in time order and numbered from 1: the incident's start, its
    detection, every action of the run's record, the verification (and the post-incident progression),
    the end. Each action carries its scenario, module and audit ids, with the audit rows of those ids."""
    report = report or {}
    recovery = recovery if kind == "incident" else report
    recovery = recovery or {}
    audit = audit or {}
    out = []
    began = parse_time(report.get("incident_started") or recovery.get("incident_started"))
    began_from = recovery.get("incident_started_from") or "the alert"
    detected = parse_time(recovery.get("started"))
    if began is not None:
        if began_from == "the alert":
            out.append(_mark("detection", began, "%s fired (the alert's activeAt): the incident began" % (
                report.get("alert") or "the alert"), "alert"))
        else:
            out.append(_mark("began", began, "the incident began: the watermark last advanced (%s)" % began_from,
                             "began"))
    if detected is not None and (began is None or began_from != "the alert"):
        out.append(_mark("detection", detected, "diagnosed: recover.yml started%s" % (
            " (a dry run)" if recovery.get("dry_run") else ""), "diagnosed"))
    for action in report.get("actions") or []:
        if not isinstance(action, dict) or action.get("skipped"):
            continue
        at = parse_time(action.get("at"))
        if at is None:
            continue
        ids = [i for i in action.get("audit_ids") or [] if i is not None]
        rows = [audit[i] for i in ids if i in audit]
        module = _action_module(action, rows)
        words = ("would do: " if action.get("dry_run") else ("did: " if action.get("changed") else "no change: "))
        out.append(_mark("action", at, words + (action.get("step") or ""),
                         _short(module or action.get("action") or "action"),
                         scenario=action.get("scenario"), module=module, audit_ids=ids, audit=rows,
                         dry_run=bool(action.get("dry_run")), changed=bool(action.get("changed")),
                         backup=action.get("backup")))
    verification = recovery.get("verification") or {}
    if isinstance(verification, dict) and verification.get("msg"):
        at = parse_time(verification.get("verified_at_epoch") or verification.get("ended_at_epoch"))
        if at is not None:
            ok = bool(verification.get("verified"))
            out.append(_mark("verification", at, ("verified: " if ok else "NOT verified: ") + verification["msg"],
                             "verified" if ok else "not verified", changed=ok))
    if kind == "recovery":
        end = parse_time(report.get("ended"))
        if end is not None:
            out.append(_mark("end", end, "recovery ended: %s" % (report.get("headline") or report.get("outcome")),
                             "end"))
    else:
        progression = report.get("progression") or {}
        at = parse_time(progression.get("ended_at_epoch")) if isinstance(progression, dict) else None
        if at is not None and progression.get("msg"):
            ok = bool(progression.get("verified"))
            out.append(_mark("progression", at, "post-incident progression: %s" % progression["msg"],
                             "progression" if ok else "no progression", changed=ok))
        if recovery.get("ended") and parse_time(recovery.get("ended")):
            out.append(_mark("end", parse_time(recovery["ended"]), "recovery ended: %s" % (
                recovery.get("headline") or recovery.get("outcome")), "recovery end"))
        end = parse_time(report.get("at"))
        if end is not None:
            out.append(_mark("end", end, "post-incident checks %s" % ("passed" if report.get("ok") else "FAILED"),
                             "end"))
    out.sort(key=lambda m: (m["at"], MARK_KINDS.index(m["kind"])))
    for n, m in enumerate(out, 1):
        m["n"] = n
        m["id"] = "mark-%d" % n
        m["epoch"] = epoch(m["at"])
        m["at"] = text_time(m["at"])
        m["label"] = "%d %s" % (n, m["label"])
    return out


# -- the tables under the charts -----------------------------------------------------------------

def reconciliation(report):
    rec = (report or {}).get("reconciliation")
    if not isinstance(rec, dict):
        return None
    rows = []
    for name, r in sorted((rec.get("tables") or {}).items()):
        r = r or {}
        wm = r.get("watermark") or {}
        rows.append({"table": name, "source_rows": r.get("source_rows"), "cold_rows": r.get("cold_rows"),
                     "duplicated": r.get("cold_duplicate_rows"), "missing": r.get("missing"), "extra": r.get("extra"),
                     "past_watermark": r.get("cold_rows_past_watermark"),
                     "watermark": "(%s, %s)" % (wm.get("max_timestamp"), wm.get("sequence_number")) if wm else None,
                     "ok": r.get("ok")})
    return {"ok": bool(rec.get("ok")), "problems": list(rec.get("problems") or []), "rows": rows}


def repairs(actions, cold_table="cold.{table}"):
    """The cold-tier repairs among the actions (iceberg_dedupe, backup ``snapshot N``): the snapshot the
    repair committed, the one a rollback returns to, and the commands that do it."""
    out = []
    for a in actions or []:
        backup = str((a or {}).get("backup") or "")
        if not backup.startswith("snapshot ") or a.get("dry_run"):
            continue
        target = backup.split(" ", 1)[1]
        m = _DEDUPE_STEP_RE.match(a.get("step") or "")
        source = m.group(1) if m else None
        table = cold_table.replace("{table}", source) if source else "<cold table>"
        removed = _REMOVED_IN_RE.search(a.get("step") or "")
        out.append({"at": text_time(parse_time(a.get("at"))), "table": table, "source_table": source,
                    "snapshot_id": removed.group(1) if removed else None, "rollback_to_snapshot": target,
                    "module": "k2.iceberg_offload.iceberg_dedupe: {table: %s, rollback_to_snapshot: %s}" % (table, target),
                    "spark_sql": "CALL <catalog>.system.rollback_to_snapshot('%s', %s)" % (table, target)})
    return out


def diagnosis(diag):
    if not isinstance(diag, dict):
        return None
    return {"summary": diag.get("summary"), "status": diag.get("status"),
            "scenarios": [{"scenario": s.get("scenario"), "title": s.get("title"),
                           "evidence": list(s.get("evidence") or [])} for s in diag.get("scenarios") or []
                          if isinstance(s, dict)],
            "findings": [{"kind": f.get("kind"), "scenario": f.get("scenario"), "text": f.get("text")}
                         for f in diag.get("findings") or [] if isinstance(f, dict)],
            "observations": [{"kind": o.get("kind"), "text": o.get("text")}
                             for o in diag.get("observations") or [] if isinstance(o, dict)]}


def _peak(series):
    best = None
    for name, points in sorted(series.items()):
        for when, value in points:
            if best is None or value > best[2]:
                best = (name, when, value)
    return best


def _answers(view, report):
    began = next((m for m in view["marks"] if m["kind"] in ("began", "detection")), None)
    when = "unknown: no alert, no recovery report"
    if began:
        when = "%s (%s)" % (began["at"], began["text"])
    peak = _peak(view["age"]["series"])
    if peak:
        when += "; the oldest age drawn: %.0f s (%s at %s%s)" % (
            peak[2], peak[0], text_time(parse_time(peak[1])),
            "; the alert fires past %.0f s" % view["age"]["threshold"] if view["age"]["threshold"] else "")
    actions = [m for m in view["marks"] if m["kind"] == "action"]
    done = [m for m in actions if m["changed"] and not m["dry_run"]]
    ids = sorted(set(i for m in actions for i in m["audit_ids"]))
    if not actions:
        what = "nothing: the run recorded no action"
    else:
        what = "%d action(s) from %s to %s, %d changed something%s%s" % (
            len(actions), actions[0]["at"], actions[-1]["at"], len(done),
            "; audit ids %s" % ", ".join(str(i) for i in ids) if ids else "",
            "; %d cold-tier repair(s)" % len(view["repairs"]) if view["repairs"] else "")
        if all(m["dry_run"] for m in actions):
            what += " (a dry run: nothing was changed)"
    rec = view["reconciliation"]
    if rec is None:
        whole = "not checked by this run: post_incident.yml reconciles the source with the cold tier"
    elif rec["ok"]:
        whole = "yes: every source row up to the watermark is in the cold tier exactly once (%s)" % ", ".join(
            "%s %s/%s" % (r["table"], r["source_rows"], r["cold_rows"]) for r in rec["rows"])
    else:
        whole = "NO: %s" % "; ".join(rec["problems"] or ["see the reconciliation"])
    return [{"question": "When did the watermark stop?", "answer": when},
            {"question": "What was done, and when?", "answer": what},
            {"question": "Is the cold tier whole again?", "answer": whole}]


def build_page(report, kind, facts=None, settings=None, now=None):
    """Everything the page shows, from the run's report (``data`` of incident_report) and the facts gathered
    for it: ``prometheus`` (watermark_metrics_info with ``age_history``), ``watermarks`` (watermark_info with
    ``entries`` and ``recent_changes``), ``scheduler`` (scheduler_info with the log's ``history``) and, for
    an incident report, ``recovery`` (the recovery report it follows). ``settings``: ``stale_after``,
    ``cycle_seconds``, ``tables``, ``cold_table``, ``alert_name``, ``window_start``."""
    report = report or {}
    facts = facts or {}
    settings = settings or {}
    tables = list(settings.get("tables") or [])
    recovery = facts.get("recovery") if kind == "incident" else report
    recovery = recovery if isinstance(recovery, dict) else {}
    end = parse_time(report.get("at") if kind == "incident" else report.get("ended")) or parse_time(now) or \
        datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
    audit = _audit_index(facts.get("watermarks"))
    page_marks = marks(report, kind, recovery, audit)
    start = parse_time(settings.get("window_start")) or window_start(
        [report.get("incident_started"), recovery.get("started")], settings.get("cycle_seconds"), now=end)
    if page_marks:
        start = min(start, parse_time(page_marks[0]["at"]))
        end = max(end, parse_time(page_marks[-1]["at"]))

    age, why_not = age_from_prometheus((facts.get("prometheus") or {}).get("age_history"), start, end, tables)
    age_source, age_note = "prometheus", None
    if not age:
        age_note = why_not
        age, why_not = age_from_entries(facts.get("watermarks"), start, end, tables)
        age_source = "watermark-table" if age else None
        if not age:
            age_note = "%s; %s" % (age_note, why_not)
    log_rows, failures, why_not = rows_from_log(facts.get("scheduler"), start, end, tables)
    rows_source, rows_note = "scheduler-log", None
    if not log_rows and not failures:
        rows_note = why_not
        log_rows, why_not = rows_from_pairs(facts.get("watermarks"), start, end, tables)
        rows_source = "watermark-pairs" if log_rows else None
        if not log_rows:
            rows_note = "%s; %s" % (rows_note, why_not)

    ids = set(i for m in page_marks for i in m["audit_ids"])
    audit_rows = [r for i, r in sorted(audit.items(), key=lambda kv: kv[0])
                  if i in ids or (parse_time(r.get("changed_at")) and start <= parse_time(r.get("changed_at")) <= end)]
    source_text = {
        "prometheus": "Prometheus (query_range of time() - watermark_timestamp_seconds, the alert's expression)",
        "watermark-table": "the watermark table's entries (the age falls to 0 at each entry and grows until the next)",
        "scheduler-log": "the scheduler's log (Offload completed: N rows, and failed jobs)",
        "watermark-pairs": "the watermark pairs (the sequence numbers each entry advanced; the scheduler's log was "
                           "not read)",
        None: "no data"}
    if kind == "incident":
        ok = bool(report.get("ok"))
        status = {"text": "post-incident checks %s" % ("passed" if ok else "FAILED"), "ok": ok,
                  "detail": "recovery: %s" % (report.get("recovery_outcome") or "no recovery report")}
        if ok and report.get("escalations"):
            status["ok"] = False
            status["text"] += ", escalate"
            status["text_level"] = "warn"
    else:
        outcome = report.get("outcome") or "unknown"
        status = {"text": outcome, "ok": outcome in ("recovered", "nothing-to-do") and not report.get("escalate"),
                  "detail": report.get("headline")}
    # green: done; amber: recovered (or checks passed) and still to escalate, or a dry run; red: anything else
    status["level"] = "ok" if status["ok"] else (
        "warn" if status.pop("text_level", None) or status["text"] in ("recovered", "dry-run") else "bad")
    state = report.get("state_left") if isinstance(report.get("state_left"), dict) else None
    view = {
        "kind": kind, "cycle_seconds": num(settings.get("cycle_seconds")),
        "alert": settings.get("alert_name") or report.get("alert") or "IcebergOffloadWatermarkStale",
        "generated": text_time(end), "status": status,
        "window": {"start": text_time(start), "end": text_time(end), "start_epoch": epoch(start),
                   "end_epoch": epoch(end)},
        "tables": tables or sorted(set(age) | set(log_rows)),
        "age": {"source": age_source, "source_text": source_text[age_source], "note": age_note, "series": age,
                "threshold": num(settings.get("stale_after"))},
        "rows": {"source": rows_source, "source_text": source_text[rows_source], "note": rows_note,
                 "series": log_rows, "failures": failures if rows_source == "scheduler-log" else {},
                 "unit": "sequence numbers per entry" if rows_source == "watermark-pairs" else "rows per offload",
                 "zero_runs": zero_runs(log_rows) if rows_source == "scheduler-log" else {}},
        "marks": page_marks,
        "audit": audit_rows,
        "audit_missing": sorted(i for i in ids if i not in audit),
        "reconciliation": reconciliation(report) if kind == "incident" else None,
        "repairs": repairs(report.get("actions"), settings.get("cold_table") or "cold.{table}"),
        "diagnosis": diagnosis(report.get("diagnosis")),
        "escalations": [{"kind": e.get("kind"), "text": e.get("text")} for e in report.get("escalations") or []
                        if isinstance(e, dict)],
        "stop": report.get("stop") if isinstance(report.get("stop"), dict) else None,
        "state_left": {"lines": state_lines(state), "scheduler": state.get("scheduler") or {}} if state else None,
        "verification": recovery.get("verification") if isinstance(recovery.get("verification"), dict) else None,
        "progression": report.get("progression") if kind == "incident" else None,
        "cold_tier_repair": list(report.get("cold_tier_repair") or []),
    }
    view["answers"] = _answers(view, report)
    return view
