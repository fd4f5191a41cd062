# -*- coding: utf-8 -*-
# Copyright: K2 Platform Engineering
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Decisions of the watermark modules, without a server: where a reset goes, whether it
may go there, and what a cleanup is asked to delete. Private to this collection.

Adding a source of the target pair (``lookback`` from ClickHouse, ``cold_tier`` from
Iceberg) means: compute a ``Watermark`` per table by any means, then hand it to
``plan_reset``. Strategies that only need the watermark table's own facts register in
``TARGET_STRATEGIES``; the others compute their targets in their own module_utils and
pass them to the module through ``compute_targets(..., external=...)``.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime

from ansible_collections.k2.iceberg_offload.plugins.module_utils.watermark import (
    Watermark, WatermarkError, make_watermark, parse_duration, parse_sequence, parse_signed_duration)


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


def validate_cleanup(keep, older_than, duplicates_only):
    """Check cleanup options; returns older_than in seconds (or None)."""
    if keep is None and older_than in (None, "") and not duplicates_only:
        raise WatermarkError("say what to delete: keep (newest entries to keep per table), older_than "
                             "(such as 30d), duplicates_only=true, or a combination")
    if keep is not None:
        if isinstance(keep, bool) or not isinstance(keep, int):
            raise WatermarkError("keep must be a whole number of entries, got %r" % (keep,))
        if keep < 1:
            raise WatermarkError("keep must be at least 1 (the latest entry is never deleted), got %d" % keep)
    seconds = None
    if older_than not in (None, ""):
        seconds = parse_duration(older_than, "older_than")
    return seconds


def default_backup_name(watermark_table_parts, now):
    """<table>_backup_YYYYmmddTHHMMSS in the watermark table's schema (fits 63 characters)."""
    suffix = "_backup_" + now.strftime("%Y%m%dT%H%M%S")
    base = watermark_table_parts[-1][:63 - len(suffix)]
    return tuple(watermark_table_parts[:-1]) + (base + suffix,)
