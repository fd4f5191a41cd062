# -*- coding: utf-8 -*-
# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The cold tier's rows, read on this host with pyiceberg and pyarrow: the greatest pair, the count,
duplicated keys, rows past a watermark (iceberg_table_info, watermark_reset cold_tier, the repair's plan).

Private to this collection. Tables are opened by iceberg.py (the catalog).

The scan reads only the columns it needs, file by file in small windows, and
keeps no more than one window of record batches plus the key column of one
"overlap group" (the data files whose key ranges, from the manifests' column
bounds, overlap; duplicates cannot exist across groups). An offload that appends
increasing sequence numbers gives one small group per file; a re-offloaded range
puts the files it overlaps in one group.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import os
import resource
import time

try:
    import pyarrow as pa
    import pyarrow.compute as pc
    from pyiceberg.conversions import from_bytes
    from pyiceberg.expressions import AlwaysTrue
    from pyiceberg.io.pyarrow import ArrowScan
except ImportError:  # pragma: no cover - iceberg.ensure_required_libs says what is missing
    pass

from ansible_collections.k2.iceberg_offload.plugins.module_utils.iceberg import IcebergError
from ansible_collections.k2.iceberg_offload.plugins.module_utils.watermark import Watermark, format_timestamp

MAX_SAMPLE = 1000

# ---------------------------------------------------------------------------
# The scan.


def _field(table, name, what):
    try:
        return table.schema().find_field(name)
    except ValueError:
        raise IcebergError("table has no column %s (%s); columns: %s"
                           % (name, what, ", ".join(f.name for f in table.schema().fields)))


def _bound(data_file, field, upper):
    bounds = data_file.upper_bounds if upper else data_file.lower_bounds
    raw = (bounds or {}).get(field.field_id)
    if raw is None:
        return None
    return from_bytes(field.field_type, raw)


def overlap_groups(tasks, key_field):
    """Tasks grouped so that files whose key ranges overlap share a group.

    Files without bounds for the key column all go in one group with everything,
    since nothing is known about them.
    """
    ranged, unknown = [], []
    for task in tasks:
        lo, hi = _bound(task.file, key_field, False), _bound(task.file, key_field, True)
        (unknown if lo is None or hi is None else ranged).append((lo, hi, task))
    if unknown:
        return [[r[2] for r in ranged] + [r[2] for r in unknown]]
    ranged.sort(key=lambda r: (r[0], r[1]))
    groups, current, current_hi = [], [], None
    for lo, hi, task in ranged:
        if current and lo > current_hi:
            groups.append(current)
            current, current_hi = [], None
        current.append(task)
        current_hi = hi if current_hi is None else max(current_hi, hi)
    if current:
        groups.append(current)
    return groups


def _ts_scalar(dt, arrow_type):
    if getattr(arrow_type, "tz", None):
        dt = dt.replace(tzinfo=datetime.timezone.utc)
    return pa.scalar(dt, type=arrow_type)


def _to_naive(value):
    if value is None:
        return None
    if value.tzinfo is not None:
        value = value.astimezone(datetime.timezone.utc).replace(tzinfo=None)
    return value


def _batch_max_pair(ts, seq):
    """Greatest (ts, seq) in one batch, as python values, or None."""
    mx = pc.max(ts)
    if not mx.is_valid:
        return None
    top = pc.max(pc.filter(seq, pc.equal(ts, mx)))
    return (_to_naive(mx.as_py()), top.as_py() if top.is_valid else -1)


def _greater(a, b):
    if a is None:
        return b
    if b is None:
        return a
    return a if a >= b else b


def _duplicates_in(keys, counter):
    """Add the duplicates of one overlap group's key chunks to ``counter``."""
    if not keys:
        return
    arr = pa.chunked_array(keys).combine_chunks() if len(keys) > 1 else keys[0]
    arr = arr.drop_null() if arr.null_count else arr
    if len(arr) < 2:
        return
    ordered = pc.take(arr, pc.array_sort_indices(arr))
    equal = pc.equal(ordered.slice(1), ordered.slice(0, len(ordered) - 1))
    extra = pc.sum(equal).as_py() or 0
    if not extra:
        return
    counter["duplicate_rows"] += extra
    repeated = pc.value_counts(pc.filter(ordered.slice(1), equal))
    counter["duplicated_keys"] += len(repeated)
    for item in repeated.to_pylist():
        key = item["values"]
        if isinstance(key, datetime.datetime):
            key = format_timestamp(_to_naive(key))
        elif isinstance(key, (bytes, datetime.date)):
            key = str(key)
        counter["sample"].append({"key": key, "count": item["counts"] + 1})
    counter["sample"].sort(key=lambda s: (-s["count"], s["key"]))
    del counter["sample"][counter["sample_size"]:]


def peak_rss_bytes():
    """This process's peak resident memory.

    ``VmHWM`` from /proc/self/status where there is one: ``getrusage``'s ``ru_maxrss`` of a
    process started by fork and exec also counts the parent's peak before the exec (Linux keeps
    it across exec), so a module started by a large Ansible worker, or a benchmark child, would
    report its parent's memory.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (IOError, OSError, ValueError, IndexError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class ScanStats(object):
    """Peak memory while scanning: the arrow pool's high-water mark and the process's RSS."""

    def __init__(self):
        self.pool = pa.default_memory_pool()
        self.arrow_start = pa.total_allocated_bytes()
        self.arrow_peak = self.arrow_start
        self.started = time.time()
        self.batches = 0

    def sample(self):
        self.batches += 1
        self.arrow_peak = max(self.arrow_peak, pa.total_allocated_bytes())

    def as_dict(self, tasks):
        return {
            "seconds": round(time.time() - self.started, 3),
            "data_files": len(tasks),
            "data_bytes": sum(t.file.file_size_in_bytes for t in tasks),
            "batches": self.batches,
            "arrow_peak_bytes": max(self.arrow_peak - self.arrow_start, 0),
            "arrow_pool_max_bytes": self.pool.max_memory(),
            "peak_rss_bytes": peak_rss_bytes(),
        }


def scan_table(table, ts_col="exchange_timestamp", seq_col="sequence_number",
               key_col="sequence_number", watermark=None, duplicates=True, sample_size=10,
               window_files=None):
    """Row count, greatest pair, duplicates of ``key_col``, rows past ``watermark``; one pass.

    Returns a dict; pairs are Watermark or None (an empty table has no pair, not a zero one).
    """
    if isinstance(sample_size, bool) or not isinstance(sample_size, int) \
            or not 0 <= sample_size <= MAX_SAMPLE:
        raise IcebergError("duplicate_sample_size must be between 0 and %d, got %r"
                           % (MAX_SAMPLE, sample_size))
    if watermark is not None and not isinstance(watermark, Watermark):
        raise IcebergError("watermark must be a Watermark pair, got %r" % (watermark,))
    ts_field = _field(table, ts_col, "timestamp_column")
    seq_field = _field(table, seq_col, "sequence_column")
    key_field = _field(table, key_col, "key_column")
    if str(ts_field.field_type) not in ("timestamp", "timestamptz"):
        raise IcebergError("column %s is %s; timestamp_column must be an Iceberg timestamp"
                           % (ts_col, ts_field.field_type))
    if str(seq_field.field_type) not in ("long", "int"):
        raise IcebergError("column %s is %s; sequence_column must be an Iceberg long or int"
                           % (seq_col, seq_field.field_type))

    stats = ScanStats()
    result = {"row_count": 0, "max_pair": None, "min_timestamp": None,
              "duplicates": None, "past_watermark": None}
    dup = {"duplicate_rows": 0, "duplicated_keys": 0, "sample": [], "sample_size": sample_size}
    past = {"rows": 0, "max_pair": None}
    snapshot = table.current_snapshot()
    tasks = []
    if snapshot is not None:
        columns = tuple(dict.fromkeys([ts_col, seq_col, key_col]))
        scan = table.scan(selected_fields=columns)
        tasks = list(scan.plan_files())
        projected = scan.projection()
        arrow_scan = ArrowScan(table.metadata, table.io, projected, AlwaysTrue())
        window = window_files or max(2, 2 * (os.cpu_count() or 1))
        groups = overlap_groups(tasks, key_field) if duplicates else [tasks]
        wm_ts = wm_seq = None
        max_pair = None
        min_ts = None
        for group in groups:
            keys = []
            for start in range(0, len(group), window):
                for batch in arrow_scan.to_record_batches(group[start:start + window]):
                    stats.sample()
                    if not len(batch):
                        continue
                    ts = batch.column(ts_col)
                    seq = batch.column(seq_col)
                    result["row_count"] += len(batch)
                    max_pair = _greater(max_pair, _batch_max_pair(ts, seq))
                    low = pc.min(ts)
                    if low.is_valid:
                        low = _to_naive(low.as_py())
                        min_ts = low if min_ts is None else min(min_ts, low)
                    if watermark is not None:
                        if wm_ts is None:
                            wm_ts = _ts_scalar(watermark.max_timestamp, ts.type)
                            wm_seq = pa.scalar(watermark.sequence_number, type=seq.type)
                        mask = pc.or_(pc.greater(ts, wm_ts),
                                      pc.and_(pc.equal(ts, wm_ts), pc.greater(seq, wm_seq)))
                        n = pc.sum(mask).as_py() or 0
                        if n:
                            past["rows"] += n
                            past["max_pair"] = _greater(
                                past["max_pair"],
                                _batch_max_pair(pc.filter(ts, mask), pc.filter(seq, mask)))
                    if duplicates:
                        keys.append(batch.column(key_col))
            if duplicates:
                _duplicates_in(keys, dup)
                stats.sample()
            del keys
        result["max_pair"] = Watermark(*max_pair) if max_pair else None
        result["min_timestamp"] = min_ts
        if past["max_pair"]:
            past["max_pair"] = Watermark(*past["max_pair"])
    if duplicates:
        dup.pop("sample_size")
        dup["key_column"] = key_col
        dup["overlap_groups"] = len(overlap_groups(tasks, key_field)) if tasks else 0
        result["duplicates"] = dup
    if watermark is not None:
        past["watermark"] = watermark
        result["past_watermark"] = past
    result["scan"] = stats.as_dict(tasks)
    return result


# ---------------------------------------------------------------------------
# Pure helpers for watermark_reset (cold_tier).

def cold_tier_max_pair(table, ts_col="exchange_timestamp", seq_col="sequence_number"):
    """The greatest ``(timestamp, sequence)`` pair present in the table, or None when it is empty.

    Reads only the files that can hold it: with no delete files, the greatest timestamp
    is at least every file's lower bound, so a file whose upper bound is below the
    largest lower bound cannot hold it. Without bounds, or with deletes, reads all.
    """
    if table.current_snapshot() is None:
        return None
    ts_field = _field(table, ts_col, "timestamp_column")
    _field(table, seq_col, "sequence_column")
    scan = table.scan(selected_fields=(ts_col, seq_col))
    tasks = list(scan.plan_files())
    bounds = [(_bound(t.file, ts_field, False), _bound(t.file, ts_field, True)) for t in tasks]
    if tasks and all(lo is not None and hi is not None for lo, hi in bounds) \
            and not any(t.delete_files for t in tasks):
        floor = max(b[0] for b in bounds)
        tasks = [t for t, b in zip(tasks, bounds) if b[1] >= floor]
    best = None
    arrow_scan = ArrowScan(table.metadata, table.io, scan.projection(), AlwaysTrue())
    for batch in arrow_scan.to_record_batches(tasks):
        if len(batch):
            best = _greater(best, _batch_max_pair(batch.column(ts_col), batch.column(seq_col)))
    return Watermark(*best) if best else None
