# -*- coding: utf-8 -*-
# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Decisions of the watermark modules, without a server: where a reset goes, whether it
may go there, and what a cleanup is asked to delete. Private to this collection.

Adding a source of the target pair (``lookback`` from ClickHouse, ``cold_tier`` from
Iceberg) means: compute a ``Watermark`` per table by any means, then hand it to
``plan_reset``. Strategies that only need the watermark table's own facts register in
``TARGET_STRATEGIES``; the others (watermark_sources.py) compute their targets outside and
hand them to ``watermark_reset_run.run_reset(targets=...)``, which plans each with ``plan_reset``.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import bisect
import datetime

from ansible_collections.k2.iceberg_offload.plugins.module_utils.watermark import (
    Watermark, WatermarkError, format_timestamp, make_watermark, parse_duration, parse_sequence, parse_signed_duration)


class TableFacts(object):
    """What the watermark table says about one source table."""

    def __init__(self, table_name, latest=None, greatest=None, entries=0):
        self.table_name = table_name
        self.latest = latest          # Watermark the scheduler reads, or None
        self.greatest = greatest      # greatest Watermark among existing rows, or None
        self.entries = entries


def target_from_pair(params, facts):
    if params.get("max_timestamp") is None or params.get("sequence_number") is None:
        raise WatermarkError("strategy=pair needs both max_timestamp and sequence_number")
    return make_watermark(params["max_timestamp"], params["sequence_number"])


def target_from_safe_point(params, facts):
    """The greatest pair that some entry really holds.

    Not the runbook's ``MAX(max_timestamp), MAX(sequence_number)``: taken per column
    those maxima can come from different rows and make a pair no cycle ever wrote,
    which can skip rows (data loss) or sit past data not yet offloaded.
    """
    if facts.greatest is None:
        raise WatermarkError("strategy=safe_point: table %r has no watermark entries to take a safe "
                             "point from; use strategy=pair (runbook Scenario 3)" % facts.table_name)
    return facts.greatest


def target_from_shift_by(params, facts):
    """The latest pair with its timestamp moved by ``shift_by`` (negative = back, re-offload)."""
    if params.get("shift_by") in (None, ""):
        raise WatermarkError("strategy=shift_by needs shift_by, such as -1h or +15m")
    if facts.latest is None:
        raise WatermarkError("strategy=shift_by: table %r has no watermark entry to shift" % facts.table_name)
    seconds = parse_signed_duration(params["shift_by"], "shift_by")
    try:
        ts = facts.latest.max_timestamp + datetime.timedelta(seconds=seconds)
    except OverflowError:
        raise WatermarkError("shift_by %r moves the timestamp out of range" % (params["shift_by"],))
    if ts.year < 1970:
        raise WatermarkError("shift_by %r moves the timestamp before 1970" % (params["shift_by"],))
    seq = facts.latest.sequence_number
    if params.get("sequence_number") is not None:
        seq = parse_sequence(params["sequence_number"])
    return Watermark(ts, seq)


TARGET_STRATEGIES = {
    "pair": target_from_pair,
    "safe_point": target_from_safe_point,
    "shift_by": target_from_shift_by,
}


def compute_target(strategy, params, facts):
    try:
        fn = TARGET_STRATEGIES[strategy]
    except KeyError:
        raise WatermarkError("unknown strategy %r; choose one of %s" % (strategy, ", ".join(sorted(TARGET_STRATEGIES))))
    return fn(params, facts)


def plan_reset(facts, target, mode, allow_backward):
    """One table's plan: ``action`` is ``none``, ``append`` or ``replace``; ``refused`` explains a refusal.

    Backward means below the latest entry (what the scheduler continues from): the
    rows between the two pairs would be offloaded again, i.e. duplicated.
    """
    if mode not in ("append", "replace"):
        raise WatermarkError("mode must be append or replace, got %r" % (mode,))
    before = facts.latest
    backward = before is not None and target < before
    plan = {
        "table_name": facts.table_name,
        "before": before.as_dict() if before is not None else None,
        "after": target.as_dict(),
        "entries_before": facts.entries,
        "backward": backward,
        "refused": None,
    }
    if mode == "append":
        unchanged = before is not None and before == target
        plan["action"] = "none" if unchanged else "append"
        plan["entries_deleted"] = 0
    else:
        unchanged = facts.entries == 1 and before == target
        plan["action"] = "none" if unchanged else "replace"
        plan["entries_deleted"] = 0 if unchanged else facts.entries
    if plan["action"] != "none" and backward and not allow_backward:
        plan["refused"] = (
            "refusing to move the watermark of %s backward from %s to %s: the rows in between would be "
            "offloaded again (duplicates in the cold tier). Set allow_backward=true if that is intended."
            % (facts.table_name, before, target))
    return plan


def validate_cleanup(keep, older_than, duplicates_only, regressions_only=False, above_pair=None):
    """Check cleanup options; returns older_than in seconds (or None)."""
    if keep is None and older_than in (None, "") and not duplicates_only and not regressions_only \
            and above_pair is None:
        raise WatermarkError("say what to delete: keep (newest entries to keep per table), older_than "
                             "(such as 30d), duplicates_only=true, regressions_only=true, above_pair, or a "
                             "combination")
    if above_pair is not None and (keep is not None or older_than not in (None, "") or duplicates_only
                                   or regressions_only):
        raise WatermarkError("above_pair deletes the entries ahead of a pair and combines with tables only, not "
                             "with keep, older_than, duplicates_only or regressions_only")
    if keep is not None:
        if isinstance(keep, bool) or not isinstance(keep, int):
            raise WatermarkError("keep must be a whole number of entries, got %r" % (keep,))
        if keep < 1:
            raise WatermarkError("keep must be at least 1 (the latest entry is never deleted), got %d" % keep)
    seconds = None
    if older_than not in (None, ""):
        seconds = parse_duration(older_than, "older_than")
    return seconds


def default_backup_name(watermark_table_parts, now, n=None):
    """<table>_backup_YYYYmmdd_HHMMSS[_n] in the watermark table's schema (fits 63 characters; all lower case, so
    the name needs no quoting). ``n`` tells apart backups made within the same second."""
    suffix = "_backup_" + now.strftime("%Y%m%d_%H%M%S") + ("_%d" % n if n else "")
    base = watermark_table_parts[-1][:63 - len(suffix)]
    return tuple(watermark_table_parts[:-1]) + (base + suffix,)


# -- findings in a window of entries (watermark_info) --------------------------------------------
BURST_SPAN = datetime.timedelta(hours=1)


def analyse_window(rows, gap_seconds, burst_threshold, limit=20):
    """Gaps, regressions, duplicate bursts and repeated pairs among ``rows``.

    ``rows``: (id, max_timestamp, sequence_number, created_at), newest first, as
    WatermarkStore.window_rows returns them. The previous entry of each is the one before it by
    (created_at, id); the oldest row has none. A gap is more than ``gap_seconds`` between two
    consecutive entries; a regression an entry whose pair is lower than the previous one's; a burst
    a period in which some trailing hour (the entry's created_at and the hour before, rows at the
    same created_at included) holds more than ``burst_threshold`` entries, consecutive such entries
    less than an hour apart making one burst. Lists hold the ``limit`` most recent; counts all.
    """
    ordered = sorted(rows, key=lambda r: (r[3], r[0]))
    gaps, regressions = [], []
    for prev, cur in zip(ordered, ordered[1:]):
        seconds = (cur[3] - prev[3]).total_seconds()
        if seconds > gap_seconds:
            gaps.append({"after": format_timestamp(prev[3]), "before": format_timestamp(cur[3]), "seconds": seconds})
        if (cur[1], cur[2]) < (prev[1], prev[2]):
            regressions.append({
                "previous": {"id": prev[0], "max_timestamp": format_timestamp(prev[1]), "sequence_number": prev[2],
                             "created_at": format_timestamp(prev[3])},
                "entry": {"id": cur[0], "max_timestamp": format_timestamp(cur[1]), "sequence_number": cur[2],
                          "created_at": format_timestamp(cur[3])}})
    # trailing-hour counts: entries with created_at in [c - 1h, c], peers of c included
    times = [r[3] for r in ordered]
    over = []
    for c in times:
        n = bisect.bisect_right(times, c) - bisect.bisect_left(times, c - BURST_SPAN)
        if n > burst_threshold:
            over.append((c, n))
    bursts = []
    for c, n in over:
        if bursts and c - bursts[-1]["_last"] <= BURST_SPAN:
            bursts[-1]["_last"] = c
            bursts[-1]["max_entries_per_hour"] = max(bursts[-1]["max_entries_per_hour"], n)
        else:
            bursts.append({"_first": c, "_last": c, "max_entries_per_hour": n})
    bursts = [{"first": format_timestamp(b["_first"]), "last": format_timestamp(b["_last"]),
               "max_entries_per_hour": b["max_entries_per_hour"]} for b in reversed(bursts)]
    counts = {}
    for r in ordered:
        counts[(r[1], r[2])] = counts.get((r[1], r[2]), 0) + 1
    repeated = sorted(((n, ts, seq) for (ts, seq), n in counts.items() if n > 1), reverse=True)
    return {
        "gaps": list(reversed(gaps))[:limit],
        "gap_count": len(gaps),
        "regressions": list(reversed(regressions))[:limit],
        "regression_count": len(regressions),
        "duplicate_bursts": bursts[:limit],
        "duplicate_pairs": [{"max_timestamp": format_timestamp(ts), "sequence_number": seq, "entries": n}
                            for n, ts, seq in repeated[:limit]],
    }


def window_entries_limit(lookback_seconds, cycle_seconds, configured=None):
    """How many of a window's newest entries watermark_info analyses: ``configured``, or ten times the
    cycles the window should hold, at least 1000. More entries than that is a finding in itself."""
    if configured:
        return configured
    return max(1000, int(10 * lookback_seconds / cycle_seconds))
