# -*- coding: utf-8 -*-
# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Inspect the watermark table (watermark_info): everything runbook Diagnosis steps 2 and 4 read.

Private to this collection. The SQL is in watermark_sql.py, the window analysis in watermark_plan.py.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.k2.iceberg_offload.plugins.module_utils.postgres import psycopg2
from ansible_collections.k2.iceberg_offload.plugins.module_utils.watermark import (
    format_timestamp, parse_duration, parse_since)
from ansible_collections.k2.iceberg_offload.plugins.module_utils.watermark_ops import (
    _describe_holders, check_source_table_names, rollback_quietly)
from ansible_collections.k2.iceberg_offload.plugins.module_utils.watermark_plan import (
    analyse_window, window_entries_limit)

# total_entries is exact up to this many entries per table; above, the planner's estimate
# (exact_counts: true counts them all).
EXACT_COUNT_CAP = 10000


FINDING_KINDS = ("watermark-table-missing", "index-missing", "watermark-table-locked", "id-sequence-behind",
                 "watermark-missing", "future-entries", "stale", "late", "window-truncated", "regression",
                 "duplicate-burst")


def _finding(result, kind, table, text):
    """A finding twice: the sentence in ``findings`` (for people) and ``{kind, table, text}`` in
    ``finding_kinds`` (for code: the health-check job and playbooks branch on the kind, never the text)."""
    if kind not in FINDING_KINDS:
        raise ValueError("unknown finding kind %r" % kind)
    result["findings"].append(text)
    result["finding_kinds"].append({"kind": kind, "table": table, "text": text})


def collect_info(store, params):
    """Everything watermark_info reports. The work grows with the number of source tables and the
    lookback window, not with the table's rows: one index probe per table for the latest entry, index
    ranges bounded by the window (at most ``max_window_entries`` rows read per table), and a count that
    is exact up to EXACT_COUNT_CAP entries and the planner's estimate above (unless exact_counts)."""
    result = {"watermark_table": store.qualified_name, "findings": [], "finding_kinds": []}
    result["table_exists"] = store.table_exists()
    result["index_name"] = store.find_index() if result["table_exists"] else None
    result["index_exists"] = result["index_name"] is not None
    if params.get("health", True):
        result["health"] = store.health()
    if not result["table_exists"]:
        result["tables"] = []
        result["stale_tables"] = []
        result["warning_tables"] = []
        _finding(
            result, "watermark-table-missing", None,
            "watermark table %s does not exist (runbook Scenario 3: create it with "
            "k2.iceberg_offload.watermark_reset state=present, then initialise the watermarks)"
            % store.qualified_name)
        return result
    if not result["index_exists"]:
        _finding(result, "index-missing", None,
                 "no (table_name, created_at DESC) index on %s (the runbook's idx_watermarks_table_created): "
                 "latest-entry lookups scan the table (watermark_reset state=present creates it)" % store.qualified_name)
    try:
        return _collect_tables(store, params, result)
    except psycopg2.errors.LockNotAvailable:
        # Another session holds a lock that makes even a read wait (LOCK TABLE, ALTER TABLE ...): say who,
        # instead of failing after lock_timeout with nothing (runbook Diagnosis step 4).
        rollback_quietly(store.conn)
        holders = store.lock_holders()
        store.conn.rollback()
        result.update(tables=[], stale_tables=[], warning_tables=[], locked=True, lock_holders=holders)
        _finding(
            result, "watermark-table-locked", None,
            "%s could not be read within lock_timeout=%ss: another session holds a lock on it (%s); every offload "
            "cycle waits on it too (runbook Diagnosis step 4, Scenario 2)" % (
                store.qualified_name, params.get("lock_timeout"), _describe_holders(holders)))
        return result


def _collect_tables(store, params, result):
    result["id_sequence"] = store.id_sequence()
    if params.get("recent_changes"):
        window = parse_duration(params["recent_changes"], "recent_changes")
        result["recent_changes"] = store.recent_changes(window)
        result["recent_changes_window"] = params["recent_changes"]
    if (result["id_sequence"] or {}).get("behind"):
        seq = result["id_sequence"]
        _finding(
            result, "id-sequence-behind", None,
            "the id sequence %s hands out %s next while max(id) is %s: every INSERT violates the primary key "
            "(runbook Scenario 4, constraint violations; watermark_reset state=present advances it)"
            % (seq["sequence"], seq["next_value"], seq["max_id"]))
    names = check_source_table_names(params.get("tables")) or store.table_names()
    lookback = parse_duration(params.get("lookback") or "24h", "lookback")
    cycle = params["cycle_seconds"]
    limit = window_entries_limit(lookback, cycle, params.get("max_window_entries"))
    tables = []
    for name in names:
        item = {"table_name": name}
        latest = store.latest(name)
        if latest is None:
            item.update(latest=None, age_seconds=None, stale=True, warning=True, entries_last_hour=0,
                        expected_entries_last_hour=3600.0 / cycle, future_entries=0)
            _finding(result, "watermark-missing", name, "%s has no watermark entry (runbook Scenario 3)" % name)
            if params.get("count_entries", True):
                item["total_entries"] = 0
                item["total_entries_exact"] = True
            tables.append(item)
            continue
        latest.pop("pair")
        age = latest.pop("age_seconds")
        item["latest"] = latest
        item["age_seconds"] = age
        item["data_lag_seconds"] = latest.pop("data_lag_seconds")
        future, future_max, server_now = store.future_entries(name)
        item["future_entries"] = future
        item["stale"] = age is None or age > params["stale_after"]
        # A future-dated latest entry has a negative age that says nothing about the scheduler.
        item["warning"] = age is None or age > params["warn_after"] or age < 0
        item["entries_last_hour"] = store.count_recent(name, 3600)
        item["expected_entries_last_hour"] = 3600.0 / cycle
        if params.get("count_entries", True):
            item.update(_total_entries(store, name, params.get("exact_counts", False)))
        rows = store.window_rows(name, lookback, limit + 1)
        item["window_entries"] = min(len(rows), limit)
        item["window_truncated"] = len(rows) > limit
        item.update(analyse_window(rows[:limit], 2 * cycle, params["burst_threshold"]))
        if params.get("entries_since"):
            item.update(entries_since(rows, limit, parse_since(params["entries_since"], server_now, "entries_since")))
        lookback_text = params.get("lookback") or "24h"
        if future:
            _finding(
                result, "future-entries", name,
                "%s: %d entr%s dated after the server's now (%s), the latest at %s: the server's TimeZone "
                "changed or its clock was stepped back. The scheduler reads the latest by created_at, so it "
                "reads a future-dated entry and its own new entries (stamped now()) sort below it; age_seconds "
                "is negative and says nothing about the scheduler. Future-dated entries are left out of the "
                "gap, regression and burst analysis" % (name, future, "y is" if future == 1 else "ies are",
                                                        format_timestamp(server_now), format_timestamp(future_max)))
        if item["stale"]:
            _finding(result, "stale", name, "%s: watermark stale, last entry %.0f s ago (> %d s)"
                     % (name, age or 0, params["stale_after"]))
        elif item["warning"] and age >= 0:
            _finding(result, "late", name, "%s: last entry %.0f s ago (> %d s)" % (name, age, params["warn_after"]))
        if item["window_truncated"]:
            _finding(
                result, "window-truncated", name,
                "%s: more than %d entries in the last %s (a cycle every %d s writes about %.0f): only the newest "
                "%d were analysed; that many entries is itself a duplicate burst (runbook Scenario 4)"
                % (name, limit, lookback_text, cycle, lookback / cycle, limit))
        if item["regression_count"]:
            _finding(result, "regression", name, "%s: %d regression(s) in the last %s (runbook Scenario 4)"
                     % (name, item["regression_count"], lookback_text))
        if item["duplicate_bursts"]:
            _finding(result, "duplicate-burst", name, "%s: duplicate bursts, more than %d entries in an hour "
                     "(runbook Scenario 4)" % (name, params["burst_threshold"]))
        tables.append(item)
    store.conn.rollback()
    result["tables"] = tables
    result["stale_tables"] = [t["table_name"] for t in tables if t["stale"]]
    result["warning_tables"] = [t["table_name"] for t in tables if t["warning"]]
    return result


def entries_since(rows, limit, since):
    """The window's entries (``rows``: (id, max_timestamp, sequence_number, created_at), newest first, at most
    ``limit`` + 1 of them) written at or after ``since``, oldest first; ``entries_truncated`` when the window
    was cut at ``limit`` after ``since`` (older entries of the period are missing)."""
    kept = [r for r in rows[:limit] if r[3] is not None and r[3] >= since]
    truncated = len(rows) > limit and bool(kept) and len(kept) == limit
    return {"entries": [{"id": r[0], "max_timestamp": format_timestamp(r[1]), "sequence_number": r[2],
                         "created_at": format_timestamp(r[3])} for r in reversed(kept)],
            "entries_truncated": truncated}


def _total_entries(store, name, exact):
    if exact:
        return {"total_entries": store.count_entries(name), "total_entries_exact": True}
    n = store.count_entries_up_to(name, EXACT_COUNT_CAP)
    if n <= EXACT_COUNT_CAP:
        return {"total_entries": n, "total_entries_exact": True}
    return {"total_entries": max(store.estimate_entries(name) or 0, n), "total_entries_exact": False}
