# -*- coding: utf-8 -*-
# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The decisions inside a scenario, after the diagnosis chose it: pure functions over module results.

Private to this collection. ``corruption`` (Scenario 4's work list), ``silent_offloads`` and
``manual_offload`` (Scenario 5), ``reconcile`` (Post-Incident step 2). The classifier that chooses
the scenarios is diagnosis.py; the recovery's outcome is recovery.py.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.k2.iceberg_offload.plugins.module_utils.facts import (
    latest_pairs, ok as _ok, pair_key as _pair_key)


def corruption(watermarks, cold=None):
    """Scenario 4's work list from a watermark_info result and {table: iceberg_table_info result}:
    which tables' watermark lies behind the cold tier (``ahead``: a reset forward to the cold
    tier), lies ahead of it (``watermark_ahead``: {table: the cold tier's greatest pair}; the rows in
    between would be skipped), have duplicate entries, regressed entries, future-dated entries, and
    duplicated cold rows (``cold_duplicates``: {table: rows}).

    Read with the scheduler stopped (Scenario 4 stops it first): an offload appends to Iceberg before
    it writes the watermark, so with the scheduler running a cold tier read after the watermark can be
    ahead of it, and one read before it behind it, for a moment without anything being wrong."""
    out = {"ahead": [], "watermark_ahead": {}, "duplicate_entries": [], "regressed": [], "future": [],
           "cold_duplicates": {}}
    latest = latest_pairs(watermarks)
    for t in (watermarks or {}).get("tables") or []:
        name = t.get("table_name")
        if t.get("duplicate_pairs") or t.get("duplicate_bursts"):
            out["duplicate_entries"].append(name)
        if t.get("regression_count"):
            out["regressed"].append(name)
        if t.get("future_entries"):
            out["future"].append(name)
    for name, c in sorted((cold or {}).items()):
        c = _ok(c, "max_pair")
        if c is None:
            continue
        if name in latest and c.get("max_pair"):
            cold_max = _pair_key(c["max_pair"])
            if cold_max > latest[name]:
                out["ahead"].append(name)
            elif cold_max < latest[name]:
                out["watermark_ahead"][name] = c["max_pair"]
        rows = (c.get("duplicates") or {}).get("duplicate_rows")
        if rows:
            out["cold_duplicates"][name] = rows
    out["any"] = bool(out["ahead"] or out["watermark_ahead"] or out["duplicate_entries"] or out["regressed"]
                      or out["cold_duplicates"])
    return out


def silent_offloads(scheduler, source, min_cycles=2):
    """Scenario 5: {table: evidence} for the tables whose last ``min_cycles`` (or more) offloads
    wrote 0 rows while the source holds rows past their watermark."""
    sched = _ok(scheduler, "log")
    src = _ok(source, "tables")
    out = {}
    if sched is None or src is None:
        return out
    for name, t in sorted(((sched.get("log") or {}).get("tables") or {}).items()):
        zero = t.get("consecutive_zero_rows") or 0
        after = (src.get("tables") or {}).get(name, {}).get("after_watermark") or {}
        if zero >= int(min_cycles) and after.get("rows"):
            out[name] = {"zero_row_offloads": zero, "last_completed": t.get("last_completed"),
                         "rows_waiting": after["rows"], "watermark": after.get("watermark"),
                         "source_max_pair": after.get("max_pair")}
    return out


def manual_offload(results, before=None, after=None, cold=None):
    """Scenario 5's verdict on the runbook's manual offload, from the command results (a loop over
    tables: each has ``item`` and ``stdout``), watermark_info before and after, and per table an
    iceberg_table_info result whose ``past_watermark`` is counted from the watermark before.

    A table ``works`` when its run reported rows and its watermark advanced. It is in ``twice``
    when the cold tier past the old watermark holds more rows than the run wrote (some went in
    twice), and in ``escalate`` when the run wrote nothing although rows were waiting."""
    from ansible_collections.k2.iceberg_offload.plugins.module_utils.scheduler import parse_log

    def latest(info):
        return dict((t.get("table_name"), t.get("latest")) for t in ((info or {}).get("tables") or []))

    lb, la = latest(before), latest(after)
    tables, works, escalate, twice = {}, [], [], []
    for r in results or []:
        name = r.get("item")
        text = r.get("stdout") or ""
        parsed = parse_log(text.splitlines(), tables=[name])["tables"][name]
        done = parsed.get("last_completed") or {}
        moved = bool(la.get(name) and (lb.get(name) is None or _pair_key(la[name]) > _pair_key(lb[name])))
        rows = done.get("rows")
        past = ((_ok((cold or {}).get(name), "row_count") or {}).get("past_watermark") or {}).get("rows")
        ok = bool(rows) and moved and not r.get("rc")
        tables[name] = {"rows": rows, "line": done.get("line"), "rc": r.get("rc"),
                        "watermark_before": lb.get(name), "watermark_after": la.get(name), "advanced": moved,
                        "cold_rows_past_old_watermark": past,
                        "error": (parsed.get("last_error") or {}).get("line") or (r.get("stderr") or "")[-300:] or None,
                        "works": ok}
        (works if ok else escalate).append(name)
        if past is not None and rows is not None and past > rows:
            twice.append(name)
    return {"tables": tables, "works": works, "escalate": escalate, "twice": twice}


def reconcile(source, cold, watermarks=None):
    """Post-incident: does the cold tier hold every source row up to the watermark, once?

    ``source``: offload_source_info with ``upto_watermark`` (rows at or before each table's
    watermark W); ``cold``: {table: iceberg_table_info with ``watermark`` W and duplicates}.
    Cold rows at or before W are its rows minus those past W; the copies a deduplication would
    remove are its duplicate rows (assumed at or before W, where re-offloads put them).
    ``missing`` and ``extra`` compare the distinct cold rows with the source's.
    """
    src = _ok(source, "tables") or {}
    out = {"tables": {}, "ok": True, "problems": []}
    for name, c_raw in sorted((cold or {}).items()):
        c = _ok(c_raw, "row_count")
        s = ((src.get("tables") or {}).get(name) or {}).get("upto_watermark")
        item = {"source_rows": s.get("rows") if s else None, "watermark": s.get("watermark") if s else None}
        if c is None or s is None:
            item["error"] = "not compared: %s" % ("cold tier unreadable" if c is None else "no source count")
            out["tables"][name] = item
            out["ok"] = False
            out["problems"].append("%s: %s" % (name, item["error"]))
            continue
        past = (c.get("past_watermark") or {}).get("rows") or 0
        dups = (c.get("duplicates") or {}).get("duplicate_rows") or 0
        cold_upto = int(c.get("row_count") or 0) - int(past)
        distinct = cold_upto - int(dups)
        item.update(cold_rows=cold_upto, cold_duplicate_rows=dups, cold_rows_past_watermark=past,
                    missing=max(0, s["rows"] - distinct), extra=max(0, distinct - s["rows"]))
        item["ok"] = item["missing"] == 0 and item["extra"] == 0 and dups == 0
        if not item["ok"]:
            out["ok"] = False
            out["problems"].append("%s: %d source rows up to the watermark, the cold tier holds %d (%d duplicated): "
                                   "%d missing, %d extra" % (name, s["rows"], cold_upto, dups, item["missing"],
                                                             item["extra"]))
        out["tables"][name] = item
    return out
