# -*- coding: utf-8 -*-
# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The incident's history for the HTML report: its window and the two charts' series.

Private to this collection; used on the controller (incident_page.py, the report_window filter).
Pure Python, no server. Times are naive UTC; text without an offset is taken as UTC.

- the watermark age per table: from Prometheus (``watermark_metrics_info`` ``age_history``, the
  alert's expression over a range) or, when it did not answer, from the watermark table's entries
  (``watermark_info`` ``entries``: the age falls to 0 at each entry and grows until the next);
- rows offloaded per cycle: from the scheduler's log (``scheduler_info`` ``history``), or from the
  watermark pairs (the sequence numbers each entry advanced) when the log was not read.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import calendar
import datetime
import re

# A window with no known start covers this many cycles before its end.
DEFAULT_WINDOW_CYCLES = 12
# ... and never more than this (a chart of a week says nothing about one incident).
MAX_WINDOW_SECONDS = 7 * 86400

_FRACTION_RE = re.compile(r"(\.\d{6})\d+")


def parse_time(value):
    """A naive UTC ``datetime`` from a datetime, Unix seconds, or ISO 8601 text (``T`` or a space,
    ``Z``, an offset or none, any number of fraction digits); None for anything else."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, datetime.datetime):
        dt = value
    elif isinstance(value, (int, float)):
        try:
            return datetime.datetime.fromtimestamp(float(value), datetime.timezone.utc).replace(tzinfo=None)
        except (OverflowError, OSError, ValueError):
            return None
    else:
        text = str(value).strip()
        if not text or len(text) > 64:
            return None
        if text[-1:] in ("Z", "z"):
            text = text[:-1] + "+00:00"
        text = _FRACTION_RE.sub(r"\1", text)
        try:
            dt = datetime.datetime.fromisoformat(text)
        except ValueError:
            return None
    if dt.tzinfo is not None:
        dt = dt.astimezone(datetime.timezone.utc).replace(tzinfo=None)
    return dt


def epoch(dt):
    """Unix seconds of a naive UTC datetime."""
    return calendar.timegm(dt.timetuple()) + dt.microsecond / 1e6


def text_time(dt):
    """``YYYY-MM-DD HH:MM:SS`` (UTC), or None."""
    return dt.replace(microsecond=0).isoformat(sep=" ") if dt is not None else None


def num(value, default=None):
    try:
        return float(value)
    except (TypeError, ValueError):
        return default


def window_start(times, cycle_seconds, ages=None, ages_at=None, now=None, max_seconds=MAX_WINDOW_SECONDS):
    """Where the incident's charts begin: before the earliest of ``times`` (the incident's start, the
    alert's ``activeAt``, the recovery's start), and before the moment each table's watermark last
    advanced when ``ages`` ({table: seconds or {seconds}}) were read at ``ages_at``. A margin of six cycles
    (the alert fires four cycles after the watermark stops), or a tenth of the span, shows how the pipeline
    ran before. Never more than ``max_seconds``
    before ``now``; with no time known, ``DEFAULT_WINDOW_CYCLES`` cycles before it. Naive UTC."""
    now = parse_time(now) or datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
    cycle = max(1.0, num(cycle_seconds, 900.0))
    candidates = [t for t in (parse_time(x) for x in (times or [])) if t is not None]
    at = parse_time(ages_at)
    if at is not None and isinstance(ages, dict):
        seconds = [num(v.get("seconds") if isinstance(v, dict) else v) for v in ages.values()]
        seconds = [s for s in seconds if s is not None and s >= 0]
        if seconds:
            candidates.append(at - datetime.timedelta(seconds=max(seconds)))
    candidates = [t for t in candidates if t <= now]
    if not candidates:
        start = now - datetime.timedelta(seconds=DEFAULT_WINDOW_CYCLES * cycle)
    else:
        earliest = min(candidates)
        span = (now - earliest).total_seconds()
        start = earliest - datetime.timedelta(seconds=max(6 * cycle, span / 10.0))
    return max(start, now - datetime.timedelta(seconds=max_seconds))


# -- the two series ---------------------------------------------------------------------------

def age_from_prometheus(history, start, end, tables):
    """{table: [(unix, age)]} within [start, end] from watermark_metrics_info's ``age_history``, and why
    not (None when usable)."""
    if not isinstance(history, dict):
        return {}, "Prometheus' age history was not read"
    if history.get("error"):
        return {}, "Prometheus did not answer: %s" % history["error"]
    lo, hi = epoch(start), epoch(end)
    series = {}
    for name, points in (history.get("tables") or {}).items():
        if tables and name not in tables:
            continue
        kept = [(float(p[0]), float(p[1])) for p in points or []
                if isinstance(p, (list, tuple)) and len(p) == 2 and lo <= float(p[0]) <= hi]
        if kept:
            series[name] = kept
    if not series:
        return {}, "Prometheus answered with no watermark age series in the window"
    return series, None


def _entries(watermarks, tables):
    """{table: (entries oldest first as (created_at, sequence_number, id), read_at)} from a watermark_info
    result with ``entries``."""
    out = {}
    for item in (watermarks or {}).get("tables") or []:
        name = item.get("table_name")
        if tables and name not in tables or "entries" not in item:
            continue
        rows = []
        for e in item.get("entries") or []:
            created = parse_time(e.get("created_at"))
            if created is not None:
                rows.append((created, e.get("sequence_number"), e.get("id")))
        rows.sort(key=lambda r: (r[0], r[2] or 0))
        read_at = None
        latest = item.get("latest") or {}
        created = parse_time(latest.get("created_at"))
        age = num(item.get("age_seconds"))
        if created is not None and age is not None:
            read_at = created + datetime.timedelta(seconds=age)
        out[name] = (rows, read_at)
    return out


def age_from_entries(watermarks, start, end, tables):
    """{table: [(unix, age)]}: the age as the entries make it (0 at each entry, growing until the next, up to
    the moment the entries were read), and why not (None when usable)."""
    found = _entries(watermarks, tables)
    if not found:
        return {}, "the watermark table's entries were not read"
    series = {}
    for name, (rows, read_at) in found.items():
        points, prev = [], None
        for created, _seq, _id in rows:
            if created > end:
                break
            if prev is not None and created > prev:
                points.append((epoch(created), (created - prev).total_seconds()))
            if created >= start:
                points.append((epoch(created), 0.0))
            prev = created
        last = min(read_at or end, end)
        if prev is not None and last > prev:
            points.append((epoch(last), (last - prev).total_seconds()))
        points = [p for p in points if p[0] >= epoch(start)]
        if points:
            series[name] = points
    if not series:
        return {}, "the watermark table holds no entry in the window"
    return series, None


def rows_from_log(scheduler, start, end, tables):
    """({table: [(unix, rows)]}, {table: [unix of a failed job]}) within the window from scheduler_info's
    log ``history``, and why not (None when usable)."""
    log = (scheduler or {}).get("log", scheduler) if isinstance(scheduler, dict) else None
    per_table = (log or {}).get("tables") or {}
    if not any("history" in (v or {}) for v in per_table.values()):
        return {}, {}, "the scheduler's log was not read"
    lo, hi = epoch(start), epoch(end)
    series, failures = {}, {}
    for name, facts in per_table.items():
        if tables and name not in tables:
            continue
        for h in (facts or {}).get("history") or []:
            when = parse_time(h.get("utc"))
            if when is None or not lo <= epoch(when) <= hi:
                continue
            if h.get("rows") is None:
                failures.setdefault(name, []).append(epoch(when))
            else:
                series.setdefault(name, []).append((epoch(when), float(h["rows"])))
    if not series and not failures:
        return {}, {}, "the scheduler's log holds no offload in the window"
    return series, failures, None


def rows_from_pairs(watermarks, start, end, tables):
    """{table: [(unix, sequence numbers advanced)]}: each entry against the one before it (negative for a
    regression, 0 for a pair written again), and why not."""
    found = _entries(watermarks, tables)
    series = {}
    for name, (rows, _read_at) in found.items():
        points = []
        for prev, cur in zip(rows, rows[1:]):
            if not start <= cur[0] <= end or prev[1] is None or cur[1] is None:
                continue
            points.append((epoch(cur[0]), float(cur[1] - prev[1])))
        if points:
            series[name] = points
    if not series:
        return {}, "no two watermark entries in the window"
    return series, None


def zero_runs(series, minimum=2):
    """{table: {offloads, since}}: the tables whose last ``minimum`` or more offloads in the series wrote 0 rows
    (runbook Scenario 5: the flat line of a silent offload failure), with when that run began."""
    out = {}
    for name, points in series.items():
        run = []
        for when, rows in sorted(points):
            run = run + [when] if rows == 0 else []
        if len(run) >= minimum:
            out[name] = {"offloads": len(run), "since": text_time(parse_time(run[0]))}
    return out
