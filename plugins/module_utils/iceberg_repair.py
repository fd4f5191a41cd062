# -*- coding: utf-8 -*-
# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Repairs of the Iceberg cold tier: duplicated keys removed in one atomic commit, and the rollback.

Private to this collection: the API may change between releases. One algorithm (so over 500 lines):
the repair below, from finding the copies to the commit and its rollback.

How a repair runs (``dedupe``):

1. Find. Only the key columns (and the window column) are read, file by file in
   windows of ``2 x CPUs`` files, one overlap group at a time (files whose key ranges
   overlap, from the manifests' bounds; duplicates cannot exist across groups). Each
   row is known by ``ref = file rank << 40 | position``, the file rank being the order
   of ``(data sequence number, path)``: the order in which the rows were committed.
2. Decide. The copies of each duplicated key are read in full (only the files that
   hold them, one at a time) and compared column by column. Identical copies: the
   first committed copy stays. Copies that differ: ``conflict`` says which stays
   (``keep_first`` / ``keep_last``), or the run refuses (``refuse``) and reports them.
3. Rewrite. Each data file that loses rows is read whole, filtered and written again
   (a file that loses all its rows is only dropped). Files that lose nothing are not
   touched.
4. Commit. One OVERWRITE snapshot that removes those files and adds their rewritten
   content, with ``k2.dedupe.*`` properties in its summary. It is committed only if
   the table's current snapshot is still the one that was read (no silent rebase);
   if another writer committed meanwhile, the table is read again and the plan made
   again (rewritten files whose plan did not change are reused), up to
   ``max_attempts`` times, then the run fails with nothing committed.

The rollback (``rollback``) makes an earlier snapshot current again (Iceberg's
``rollback_to_snapshot``), refusing by default when that would also discard later
snapshots that are not repairs (an offload's appends).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import itertools
import os
import time
import traceback
import uuid
from concurrent.futures import ThreadPoolExecutor

try:
    import pyarrow as pa
    import pyarrow.compute as pc
    from pyiceberg.conversions import from_bytes
    from pyiceberg.exceptions import CommitFailedException, CommitStateUnknownException, ValidationException
    from pyiceberg.expressions import AlwaysTrue, And, GreaterThanOrEqual, LessThanOrEqual
    from pyiceberg.io.pyarrow import ArrowScan
    from pyiceberg.manifest import ManifestContent
    from pyiceberg.table import Table, TableProperties
    HAS_LIBS = True
except ImportError:  # pragma: no cover - exercised only without the libraries
    HAS_LIBS = False
    LIBS_IMPORT_ERROR = traceback.format_exc()

from ansible_collections.k2.iceberg_offload.plugins.module_utils.iceberg import IcebergError, describe_snapshot
from ansible_collections.k2.iceberg_offload.plugins.module_utils.iceberg_scan import (
    ScanStats, overlap_groups, peak_rss_bytes)
from ansible_collections.k2.iceberg_offload.plugins.module_utils.watermark import (
    WatermarkError, format_timestamp, parse_timestamp)

CONFLICT_POLICIES = ("refuse", "keep_first", "keep_last")
PROPERTY_PREFIX = "k2.dedupe."
MAX_SAMPLE = 1000
MAX_COPIES_SHOWN = 10
MAX_ATTEMPTS = 10
_POSITION_BITS = 40
_POSITION_MASK = (1 << _POSITION_BITS) - 1
_WINDOW_TYPES = ("timestamp", "timestamptz", "long", "int", "date", "string")
_KEY_TYPES = ("timestamp", "timestamptz", "long", "int", "date", "string", "uuid", "boolean",
              "time", "binary")
_REF = "_k2_ref"
_COUNT = "_k2_count"
# Keys (and their refs) of at most this many rows are held at once: an overlap group with more
# rows is cut into sub-ranges of its first key column, each read on its own.
MAX_GROUP_ROWS = 1000000
_SPLITTABLE_TYPES = ("long", "int", "timestamp", "timestamptz")


class RepairError(IcebergError):
    """The repair cannot go on; ``details`` holds what the result should still show (the plan)."""

    def __init__(self, msg, details=None):
        IcebergError.__init__(self, msg)
        self.details = details or {}


class ConcurrentCommitError(RepairError):
    """Another writer kept committing; nothing was committed by this run."""


# ---------------------------------------------------------------------------
# Pure decisions (no table needed): options, window, which copy stays, rollback.

def check_key_columns(key_columns, schema):
    """The schema fields of ``key_columns``; a clear error for an empty, repeated or unknown name."""
    if not key_columns:
        raise RepairError("key_columns must name at least one column")
    names = []
    for name in key_columns:
        if not isinstance(name, str) or not name.strip() or len(name) > 255 or "\0" in name:
            raise RepairError("key_columns must be column names, got %r" % (name,))
        if name in names:
            raise RepairError("key_columns names %s twice" % name)
        names.append(name)
    fields = []
    for name in names:
        try:
            field = schema.find_field(name)
        except ValueError:
            raise RepairError("table has no column %s (key_columns); columns: %s"
                              % (name, ", ".join(f.name for f in schema.fields)))
        if str(field.field_type) not in _KEY_TYPES and not str(field.field_type).startswith("decimal"):
            raise RepairError("column %s is %s; a key column must be a primitive type (%s, decimal)"
                              % (name, field.field_type, ", ".join(_KEY_TYPES)))
        fields.append(field)
    return fields


def _bound_value(value, type_name, name):
    if value is None:
        return None
    if type_name in ("timestamp", "timestamptz"):
        if isinstance(value, bool) or not isinstance(value, (str, datetime.datetime)):
            raise RepairError("%s must be an ISO 8601 timestamp for a %s column, got %r"
                              % (name, type_name, value))
        try:
            return parse_timestamp(value, name)
        except WatermarkError as e:
            raise RepairError(str(e))
    if type_name in ("long", "int"):
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise RepairError("%s must be an integer for a %s column, got %r" % (name, type_name, value))
        return value
    if type_name == "date":
        if isinstance(value, datetime.date) and not isinstance(value, datetime.datetime):
            return value
        try:
            return datetime.date.fromisoformat(str(value).strip())
        except ValueError:
            raise RepairError("%s must be a date such as 2026-02-12, got %r" % (name, value))
    if not isinstance(value, str):
        raise RepairError("%s must be a string for a string column, got %r" % (name, value))
    return value


class Window(object):
    """Rows with ``low <= column <= high`` (either end may be open)."""

    def __init__(self, column, field, low, high):
        self.column = column
        self.field = field
        self.low = low
        self.high = high
        self.type_name = str(field.field_type)

    def as_dict(self):
        def show(v):
            if isinstance(v, datetime.datetime):
                return format_timestamp(v)
            if isinstance(v, datetime.date):
                return v.isoformat()
            return v
        return {"column": self.column, "from": show(self.low), "to": show(self.high)}

    def describe(self):
        d = self.as_dict()
        return "%s in [%s, %s]" % (self.column, "-inf" if d["from"] is None else d["from"],
                                   "+inf" if d["to"] is None else d["to"])

    def expression(self):
        """The pyiceberg filter that prunes files by their bounds."""
        parts = []
        if self.low is not None:
            parts.append(GreaterThanOrEqual(self.column, self.low))
        if self.high is not None:
            parts.append(LessThanOrEqual(self.column, self.high))
        return parts[0] if len(parts) == 1 else And(*parts)

    def _scalar(self, value, arrow_type):
        if isinstance(value, datetime.datetime) and getattr(arrow_type, "tz", None):
            value = value.replace(tzinfo=datetime.timezone.utc)
        return pa.scalar(value, type=arrow_type)

    def mask(self, column):
        """A boolean array: which values of ``column`` are inside (nulls are outside)."""
        result = None
        if self.low is not None:
            result = pc.greater_equal(column, self._scalar(self.low, column.type))
        if self.high is not None:
            upper = pc.less_equal(column, self._scalar(self.high, column.type))
            result = upper if result is None else pc.and_(result, upper)
        return pc.fill_null(result, False)


def parse_window(window, schema):
    """A Window from the module's ``window`` option, or None for the whole table.

    Refused: an unknown column, a type with no order we support, no bound at all,
    a bound of the wrong type, and ``from`` after ``to`` (not a range).
    """
    if not window:
        return None
    if not isinstance(window, dict):
        raise RepairError("window must be a dict {column, from, to}, got %r" % (window,))
    unknown = sorted(set(window) - set(("column", "from", "to")))
    if unknown:
        raise RepairError("window has unknown keys %s; it takes column, from and to" % ", ".join(unknown))
    column = window.get("column")
    if not isinstance(column, str) or not column.strip():
        raise RepairError("window.column must name a column, got %r" % (column,))
    try:
        field = schema.find_field(column)
    except ValueError:
        raise RepairError("table has no column %s (window.column); columns: %s"
                          % (column, ", ".join(f.name for f in schema.fields)))
    type_name = str(field.field_type)
    if type_name not in _WINDOW_TYPES:
        raise RepairError("window.column %s is %s; a window needs a timestamp, date, integer or string "
                          "column" % (column, type_name))
    low = _bound_value(window.get("from"), type_name, "window.from")
    high = _bound_value(window.get("to"), type_name, "window.to")
    if low is None and high is None:
        raise RepairError("window needs from, to or both (a range of %s); leave window out to repair "
                          "the whole table" % column)
    if low is not None and high is not None and low > high:
        raise RepairError("window is not a range: from %s is after to %s" % (low, high))
    return Window(column, field, low, high)


def check_options(conflict, sample_size, max_attempts):
    if conflict not in CONFLICT_POLICIES:
        raise RepairError("conflict must be one of %s, got %r" % (", ".join(CONFLICT_POLICIES), conflict))
    if isinstance(sample_size, bool) or not isinstance(sample_size, int) or not 0 <= sample_size <= MAX_SAMPLE:
        raise RepairError("sample_size must be between 0 and %d, got %r" % (MAX_SAMPLE, sample_size))
    if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) \
            or not 1 <= max_attempts <= MAX_ATTEMPTS:
        raise RepairError("max_attempts must be between 1 and %d, got %r" % (MAX_ATTEMPTS, max_attempts))


def make_ref(rank, position):
    return (rank << _POSITION_BITS) | position


def split_ref(ref):
    return ref >> _POSITION_BITS, ref & _POSITION_MASK


def choose_removals(copies, key_columns, compare_columns, policy):
    """Which copies go, from a table of every copy of the duplicated keys.

    ``copies`` has the key columns, ``compare_columns`` and ``_k2_ref`` (commit
    order). Returns ``(remove_refs, conflict_keys)``: an int64 array of the refs to
    remove, and a table of the keys whose copies differ in ``compare_columns``.
    Identical copies keep the first committed one; differing copies follow
    ``policy`` (``refuse`` plans as ``keep_first`` and lets the caller refuse).
    """
    aggregations = [(_REF, "min"), (_REF, "max")]
    distinct = []
    for name in compare_columns:
        column = copies.column(name)
        if pa.types.is_nested(column.type):
            copies = copies.set_column(copies.schema.get_field_index(name), name,
                                       pa.array([repr(v) for v in column.to_pylist()], pa.string()))
        aggregations.append((name, "count_distinct", pc.CountOptions(mode="all")))
        distinct.append(name + "_count_distinct")
    grouped = copies.group_by(list(key_columns)).aggregate(aggregations)
    differs = None
    for name in distinct:
        more = pc.greater(grouped.column(name), 1)
        differs = more if differs is None else pc.or_(differs, more)
    if differs is None:
        differs = pa.array([False] * grouped.num_rows, pa.bool_())
    if policy == "keep_last":
        winners = pc.if_else(differs, grouped.column(_REF + "_max"), grouped.column(_REF + "_min"))
    else:
        winners = grouped.column(_REF + "_min")
    refs = copies.column(_REF)
    remove = pc.filter(refs, pc.invert(pc.is_in(refs, value_set=winners.combine_chunks()
                                                if isinstance(winners, pa.ChunkedArray) else winners)))
    conflict_keys = grouped.filter(differs).select(list(key_columns))
    return remove.combine_chunks() if isinstance(remove, pa.ChunkedArray) else remove, conflict_keys


def rollback_decision(current_id, target_id, chain, discard_later):
    """What rolling back to ``target_id`` does, from ``chain``: the snapshots from the
    current one back to (not including) the target, newest first, each a dict with
    ``snapshot_id``, ``operation`` and ``summary``.

    Returns a dict: ``action`` (``none`` or ``rollback``), ``discarded`` (the chain),
    ``discarded_non_repair`` (those that are not k2 repairs: an offload's appends).
    Raises RepairError when non-repair snapshots would be discarded and
    ``discard_later`` is false.
    """
    if current_id == target_id:
        return {"action": "none", "discarded": [], "discarded_non_repair": []}
    others = [s for s in chain if PROPERTY_PREFIX + "rows_removed" not in (s.get("summary") or {})]
    if others and not discard_later:
        rows = sum(int((s.get("summary") or {}).get("added-records") or 0) for s in others)
        raise RepairError(
            "rolling back to snapshot %d would also discard %d later snapshot(s) that are not repairs "
            "(%s; %d rows added), such as the offload's appends since the repair; nothing changed. Stop "
            "the scheduler and re-run with discard_later_snapshots=true, then reset the watermark from "
            "the cold tier (watermark_reset strategy cold_tier) so those rows are offloaded again"
            % (target_id, len(others), ", ".join("%d %s" % (s["snapshot_id"], s.get("operation"))
                                                 for s in others[:5]), rows),
            {"discarded": chain})
    return {"action": "rollback", "discarded": chain, "discarded_non_repair": others}


def summary_properties(plan, read_snapshot_id, files_added):
    props = {
        "k2.operation": "dedupe",
        PROPERTY_PREFIX + "key_columns": ",".join(plan["key_columns"]),
        PROPERTY_PREFIX + "window": plan["window_text"],
        PROPERTY_PREFIX + "conflict": plan["conflict"],
        PROPERTY_PREFIX + "duplicated_keys": str(plan["duplicated_keys"]),
        PROPERTY_PREFIX + "rows_removed": str(plan["rows_to_remove"]),
        PROPERTY_PREFIX + "conflicting_keys": str(plan["conflicting_keys"]),
        PROPERTY_PREFIX + "files_rewritten": str(len(plan["files_to_rewrite"])),
        PROPERTY_PREFIX + "files_added": str(files_added),
        PROPERTY_PREFIX + "replaces_snapshot_id": str(read_snapshot_id),
    }
    return props


def rollback_instructions(table_name, snapshot_id):
    return {
        "snapshot_id": snapshot_id,
        "module_args": {"rollback_to_snapshot": snapshot_id},
        "spark_sql": "CALL <catalog>.system.rollback_to_snapshot('%s', %d)" % (table_name, snapshot_id),
        "pyiceberg": "table.manage_snapshots().rollback_to_snapshot(%d).commit()" % snapshot_id,
    }


# ---------------------------------------------------------------------------
# Reading.

def _jsonable(value):
    if isinstance(value, datetime.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(datetime.timezone.utc).replace(tzinfo=None)
        return format_timestamp(value)
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, (int, float, str, bool)) or value is None:
        return value
    return str(value)


def _key_of(row, key_columns):
    if len(key_columns) == 1:
        return _jsonable(row[key_columns[0]])
    return dict((k, _jsonable(row[k])) for k in key_columns)


class _Positions(object):
    """0..n-1 as int64 arrays, without numpy: one cached range sliced and shifted."""

    def __init__(self):
        self._range = pa.array([], pa.int64())

    def refs(self, rank, start, n):
        if len(self._range) < n:
            self._range = pa.array(range(max(n, 2 * len(self._range))), pa.int64())
        return pc.add(self._range.slice(0, n), pa.scalar(make_ref(rank, start), pa.int64()))


def _file_sequence_numbers(table, snapshot):
    """Data sequence number of each live data file (the commit order)."""
    out = {}
    for manifest in snapshot.manifests(table.io):
        if manifest.content != ManifestContent.DATA:
            continue
        for entry in manifest.fetch_manifest_entry(table.io, discard_deleted=True):
            out[entry.data_file.file_path] = entry.sequence_number or 0
    return out


def _window_of(items, size):
    for start in range(0, len(items), size):
        yield items[start:start + size]


class _Reader(object):
    def __init__(self, table, columns, stats, window_files):
        self.table = table
        self.stats = stats
        schema = table.schema().select(*columns) if columns else table.schema()
        self.scan = ArrowScan(table.metadata, table.io, schema, AlwaysTrue())
        self.window_files = window_files

    def batches_per_task(self, tasks, pool):
        """(task, [record batches]) for each task, in order, ``window_files`` at a time."""
        for window in _window_of(tasks, self.window_files):
            for task, batches in zip(window, pool.map(lambda t: list(self.scan.to_record_batches([t])),
                                                      window)):
                self.stats.sample()
                yield task, batches

    def whole(self, task):
        batches = list(self.scan.to_record_batches([task]))
        self.stats.sample()
        if not batches:
            return None
        return pa.Table.from_batches(batches)


def find_duplicates(table, key_columns, window=None, conflict="refuse", sample_size=10,
                    window_files=None, stats=None, max_group_rows=None):
    """The plan: duplicated keys, the copies to remove and the files that hold them.

    Reads only the key columns (and the window column) of the files the window can
    reach, one overlap group at a time; then the whole rows of the copies, from the
    files that hold them, one file at a time.
    """
    stats = stats or ScanStats()
    key_fields = check_key_columns(key_columns, table.schema())
    snapshot = table.current_snapshot()
    plan = {
        "snapshot_id": snapshot.snapshot_id if snapshot else None,
        "key_columns": list(key_columns),
        "window": window.as_dict() if window else None,
        "window_text": window.describe() if window else "all",
        "conflict": conflict,
        "duplicated_keys": 0, "rows_to_remove": 0, "conflicting_keys": 0,
        "sample": [], "conflicts": [], "files_to_rewrite": [],
        "bytes_to_rewrite": 0, "files_scanned": 0, "bytes_scanned": 0, "rows_scanned": 0,
        "overlap_groups": 0, "key_ranges": 0,
    }
    internal = {"tasks": {}, "remove": {}, "rows": {}}
    if snapshot is None:
        return plan, internal
    scan = table.scan(row_filter=window.expression() if window else AlwaysTrue())
    tasks = list(scan.plan_files())
    plan["files_scanned"] = len(tasks)
    plan["bytes_scanned"] = sum(t.file.file_size_in_bytes for t in tasks)
    if not tasks:
        return plan, internal
    sequence = _file_sequence_numbers(table, snapshot)
    ordered = sorted(tasks, key=lambda t: (sequence.get(t.file.file_path, 0), t.file.file_path))
    rank = dict((t.file.file_path, i) for i, t in enumerate(ordered))
    by_rank = dict((i, t) for i, t in enumerate(ordered))
    internal["tasks"] = dict((t.file.file_path, t) for t in tasks)

    columns = list(key_columns)
    if window is not None and window.column not in columns:
        columns.append(window.column)
    key_reader = _Reader(table, columns, stats, window_files or max(2, 2 * (os.cpu_count() or 1)))
    full_reader = _Reader(table, None, stats, 1)
    compare_columns = [f.name for f in table.schema().fields if f.name not in key_columns]
    positions = _Positions()
    groups = overlap_groups(tasks, key_fields[0])
    plan["overlap_groups"] = len(groups)
    parts_of_groups = [part for group in groups
                       for part in split_group(group, key_fields[0], max_group_rows or MAX_GROUP_ROWS)]
    plan["key_ranges"] = len(parts_of_groups)
    removals = []
    conflict_samples = []
    with ThreadPoolExecutor(max_workers=key_reader.window_files) as pool:
        for group, key_range in parts_of_groups:
            parts = []
            for task, batches in key_reader.batches_per_task(group, pool):
                path = task.file.file_path
                start = 0
                for batch in batches:
                    n = len(batch)
                    if not n:
                        continue
                    part = pa.table(dict([(k, batch.column(k)) for k in key_columns]
                                         + [(_REF, positions.refs(rank[path], start, n))]))
                    keep = None
                    for k in key_columns:
                        valid = pc.is_valid(batch.column(k))
                        keep = valid if keep is None else pc.and_(keep, valid)
                    if window is not None:
                        keep = pc.and_(keep, window.mask(batch.column(window.column)))
                    if key_range is not None:
                        keep = pc.and_(keep, pc.fill_null(_in_key_range(batch.column(key_columns[0]), key_range),
                                                          False))
                    part = part.filter(keep)
                    if part.num_rows:
                        parts.append(part)
                    start += n
                if path not in internal["rows"]:
                    internal["rows"][path] = start
                    plan["rows_scanned"] += start
            if not parts:
                continue
            keys = pa.concat_tables(parts)
            del parts
            if len(key_columns) == 1 and _strictly_increasing(keys.column(key_columns[0])):
                continue  # the usual offload file: keys in order, no copy; no need to hash them
            counts = keys.group_by(list(key_columns)).aggregate([([], "count_all")])
            counts = counts.rename_columns([_COUNT if n == "count_all" and n not in key_columns else n
                                            for n in counts.column_names])
            repeated = counts.filter(pc.greater(counts.column(_COUNT), 1))
            del counts
            if not repeated.num_rows:
                continue
            copies = keys.join(repeated, list(key_columns), join_type="inner")
            del keys
            plan["duplicated_keys"] += repeated.num_rows
            _add_sample(plan["sample"], repeated, key_columns, sample_size)
            full = _read_copies(copies, by_rank, full_reader, key_columns)
            remove, conflict_keys = choose_removals(full, key_columns, compare_columns, conflict)
            plan["conflicting_keys"] += conflict_keys.num_rows
            if conflict_keys.num_rows and len(conflict_samples) < sample_size:
                conflict_samples.extend(_conflict_sample(full, conflict_keys, key_columns, by_rank, remove,
                                                         sample_size - len(conflict_samples)))
            removals.append(remove)
            stats.sample()
    _mark_conflicts(plan["sample"], conflict_samples, key_columns)
    plan["conflicts"] = conflict_samples
    per_file = {}
    for remove in removals:
        ranks = pc.shift_right(remove, _POSITION_BITS)
        for rank_value in pc.unique(ranks).to_pylist():
            mine = pc.filter(remove, pc.equal(ranks, rank_value))
            per_file.setdefault(by_rank[rank_value].file.file_path, []).append(
                pc.bit_wise_and(mine, pa.scalar(_POSITION_MASK, pa.int64())))
    for path, chunks in per_file.items():
        pos = pa.concat_arrays(chunks) if len(chunks) > 1 else chunks[0]
        internal["remove"][path] = pc.take(pos, pc.sort_indices(pos))
    for path in sorted(internal["remove"], key=lambda p: rank[p]):
        task = internal["tasks"][path]
        removed = len(internal["remove"][path])
        rows = internal["rows"][path]
        plan["files_to_rewrite"].append({
            "path": path, "rows": rows, "rows_to_remove": removed, "rows_kept": rows - removed,
            "bytes": task.file.file_size_in_bytes,
            "action": "drop" if removed >= rows else "rewrite",
        })
        plan["rows_to_remove"] += removed
        plan["bytes_to_rewrite"] += task.file.file_size_in_bytes
    return plan, internal


def split_group(group, key_field, max_rows=MAX_GROUP_ROWS):
    """``[(tasks, key_range)]`` covering one overlap group, each part holding about ``max_rows`` rows.

    ``key_range`` is None (every row of the tasks) or ``(low, high)``, inclusive, in the raw
    integer form of the first key column (microseconds for timestamps) - copies share their key,
    so they fall in the same part. A part reads only the files whose bounds reach its range;
    a file wider than one part is read once per part it reaches. Groups of files without
    bounds, or of a key type without an integer form, are not cut.
    """
    rows = sum(t.file.record_count for t in group)
    if rows <= max_rows or str(key_field.field_type) not in _SPLITTABLE_TYPES:
        return [(group, None)]
    bounds = [(_raw_bound(t, key_field, False), _raw_bound(t, key_field, True)) for t in group]
    if any(lo is None or hi is None for lo, hi in bounds):
        return [(group, None)]
    low = min(b[0] for b in bounds)
    high = max(b[1] for b in bounds)
    parts = -(-rows // max_rows)
    width = max(1, -(-(high - low + 1) // parts))
    out = []
    start = low
    while start <= high:
        end = min(high, start + width - 1)
        tasks = [t for t, b in zip(group, bounds) if b[0] <= end and b[1] >= start]
        if tasks:
            out.append((tasks, (start, end)))
        start = end + 1
    return out


def _raw_bound(task, field, upper):
    bounds = task.file.upper_bounds if upper else task.file.lower_bounds
    raw = (bounds or {}).get(field.field_id)
    return None if raw is None else from_bytes(field.field_type, raw)


def _in_key_range(column, key_range):
    values = column.cast(pa.int64()) if not pa.types.is_integer(column.type) else column
    return pc.and_(pc.greater_equal(values, pa.scalar(key_range[0], values.type)),
                   pc.less_equal(values, pa.scalar(key_range[1], values.type)))


def _strictly_increasing(column):
    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if len(column) < 2:
        return True
    try:
        return bool(pc.all(pc.less(column.slice(0, len(column) - 1), column.slice(1))).as_py())
    except (pa.ArrowNotImplementedError, pa.ArrowInvalid):  # a type without order in Arrow
        return False


def _add_sample(sample, repeated, key_columns, size):
    if not size:
        return
    top = repeated.sort_by([(_COUNT, "descending")] + [(k, "ascending") for k in key_columns]).slice(0, size)
    for row in top.to_pylist():
        sample.append({"key": _key_of(row, key_columns), "count": row[_COUNT], "conflict": False})
    sample.sort(key=lambda s: (-s["count"], tuple(s["key"].values()) if isinstance(s["key"], dict)
                               else (s["key"],)))
    del sample[size:]


def _read_copies(copies, by_rank, reader, key_columns):
    """Whole rows of the copies, with their refs: the files that hold them read one at a time."""
    refs = copies.column(_REF).combine_chunks()
    ranks = pc.shift_right(refs, _POSITION_BITS)
    parts = []
    for rank_value in sorted(pc.unique(ranks).to_pylist()):
        mine = pc.filter(refs, pc.equal(ranks, rank_value))
        pos = pc.bit_wise_and(mine, pa.scalar(_POSITION_MASK, pa.int64()))
        whole = reader.whole(by_rank[rank_value])
        rows = whole.take(pos)
        del whole
        parts.append(rows.append_column(_REF, mine))
    return pa.concat_tables(parts, promote_options="permissive")


def _conflict_sample(full, conflict_keys, key_columns, by_rank, remove, size):
    wanted = conflict_keys.sort_by([(k, "ascending") for k in key_columns]).slice(0, size)
    rows = full.join(wanted, list(key_columns), join_type="inner")
    rows = rows.sort_by([(k, "ascending") for k in key_columns] + [(_REF, "ascending")])
    removed = set(remove.to_pylist()) if len(remove) <= 1000000 else None
    out = {}
    order = []
    for row in rows.to_pylist():
        key = _key_of(row, key_columns)
        marker = repr(key)
        if marker not in out:
            out[marker] = {"key": key, "copies": []}
            order.append(marker)
        copies = out[marker]["copies"]
        if len(copies) >= MAX_COPIES_SHOWN:
            continue
        rank_value, position = split_ref(row[_REF])
        copies.append({
            "file": by_rank[rank_value].file.file_path, "position": position,
            "kept": None if removed is None else row[_REF] not in removed,
            "values": dict((k, _jsonable(v)) for k, v in row.items() if k != _REF and k not in key_columns),
        })
    return [out[m] for m in order]


def _mark_conflicts(sample, conflicts, key_columns):
    marked = set(repr(c["key"]) for c in conflicts)
    for item in sample:
        if repr(item["key"]) in marked:
            item["conflict"] = True


# ---------------------------------------------------------------------------
# Rewriting and committing.

def _single_attempt(table):
    """The same table, with pyiceberg's own commit retries off for this process.

    pyiceberg would rebase a failed commit onto the new head (or give up on its own
    validation); this module instead reads the table again and plans again, so the
    snapshot it commits always has the snapshot it read as its parent. The property
    is changed in this process's copy of the metadata only; the catalog applies the
    commit's updates to its own current metadata.
    """
    props = dict(table.metadata.properties)
    props[getattr(TableProperties, "COMMIT_NUM_RETRIES", "commit.retry.num-retries")] = "0"
    metadata = table.metadata.model_copy(update={"properties": props})
    return Table(identifier=table.name(), metadata=metadata, metadata_location=table.metadata_location,
                 io=table.io, catalog=table.catalog)


def _write_rewrites(table, plan, internal, reuse, stats):
    """Write the kept rows of each file to rewrite; reuse earlier attempts' files whose plan
    did not change. Returns ({path: [DataFile]}, bytes written, rows written)."""
    from pyiceberg.io.pyarrow import _dataframe_to_data_files  # the writer pyiceberg's own delete uses

    written = {}
    reader = _Reader(table, None, stats, 1)
    positions_of = _Positions()
    write_uuid = uuid.uuid4()
    counter = itertools.count(0)
    for item in plan["files_to_rewrite"]:
        path = item["path"]
        positions = internal["remove"][path]
        previous = reuse.get(path)
        if previous is not None and previous[0].equals(positions):
            written[path] = previous[1]
            continue
        if item["action"] == "drop":
            written[path] = []
        else:
            whole = reader.whole(internal["tasks"][path])
            index = positions_of.refs(0, 0, whole.num_rows)
            kept = whole.filter(pc.invert(pc.is_in(index, value_set=positions)))
            del whole
            written[path] = list(_dataframe_to_data_files(table.metadata, kept, table.io,
                                                          write_uuid=write_uuid, counter=counter))
            del kept
        reuse[path] = (positions, written[path])
    return written


def _delete_files(table, data_files):
    for data_file in data_files:
        try:
            table.io.delete(data_file.file_path)
        except Exception:  # best effort: an orphan file is not referenced by any snapshot
            pass


def _commit(table, plan, internal, written, read_snapshot_id):
    added = [f for files in written.values() for f in files]
    props = summary_properties(plan, read_snapshot_id, len(added))
    commit_table = _single_attempt(table)
    transaction = commit_table.transaction()
    with transaction.update_snapshot(snapshot_properties=props).overwrite() as overwrite:
        for item in plan["files_to_rewrite"]:
            overwrite.delete_data_file(internal["tasks"][item["path"]].file)
        for data_file in added:
            overwrite.append_data_file(data_file)
    transaction.commit_transaction()
    return commit_table.current_snapshot(), added


def dedupe(open_table, key_columns=("sequence_number",), window_option=None, conflict="refuse",
           sample_size=10, max_attempts=3, check_mode=False, before_commit=None, window_files=None):
    """Find and remove duplicated keys; returns the result dict of the module.

    ``open_table()`` returns the table freshly read (called again on each attempt).
    ``before_commit(attempt)`` is called after the rewrite and before the commit
    (tests use it to make another writer commit at that moment).
    """
    check_options(conflict, sample_size, max_attempts)
    stats = ScanStats()
    started = time.time()
    reuse = {}
    attempts = []
    all_written = []
    result = {"changed": False}
    try:
        for attempt in range(1, max_attempts + 1):
            table = open_table()
            window = parse_window(window_option, table.schema())
            found_at = time.time()
            plan, internal = find_duplicates(table, list(key_columns), window, conflict, sample_size,
                                             window_files=window_files, stats=stats)
            find_seconds = time.time() - found_at
            current = table.current_snapshot()
            result.update(_table_info(table), plan=_public_plan(plan),
                          before=_counts(current, plan, removed=False))
            if plan["conflicting_keys"] and conflict == "refuse":
                raise RepairError(
                    "%d duplicated key(s) have copies that differ in other columns (sample in "
                    "plan.conflicts); nothing changed. Set conflict to keep_first (the copy committed "
                    "first stays) or keep_last (the copy committed last stays)" % plan["conflicting_keys"],
                    result)
            if not plan["files_to_rewrite"]:
                result["stats"] = _stats(stats, started, attempts)
                return result
            result["changed"] = True
            result["after"] = _counts(current, plan, removed=True)
            if check_mode:
                result["stats"] = _stats(stats, started, attempts)
                return result
            rewrite_at = time.time()
            written = _write_rewrites(table, plan, internal, reuse, stats)
            all_written.extend(f for files in written.values() for f in files if f not in all_written)
            rewrite_seconds = time.time() - rewrite_at
            if before_commit is not None:
                before_commit(attempt)
            commit_at = time.time()
            try:
                snapshot, added = _commit(table, plan, internal, written, plan["snapshot_id"])
            except (CommitFailedException, ValidationException) as e:
                attempts.append({"attempt": attempt, "snapshot_read": plan["snapshot_id"],
                                 "find_seconds": round(find_seconds, 3),
                                 "rewrite_seconds": round(rewrite_seconds, 3),
                                 "outcome": "conflict: %s" % str(e)[:300]})
                continue
            attempts.append({"attempt": attempt, "snapshot_read": plan["snapshot_id"],
                             "find_seconds": round(find_seconds, 3),
                             "rewrite_seconds": round(rewrite_seconds, 3),
                             "commit_seconds": round(time.time() - commit_at, 3), "outcome": "committed"})
            _delete_files(table, [f for f in all_written if f not in added])
            result["snapshot_id"] = snapshot.snapshot_id
            result["previous_snapshot_id"] = snapshot.parent_snapshot_id
            result["snapshot"] = describe_snapshot(snapshot)
            result["commit"] = {
                "files_removed": len(plan["files_to_rewrite"]), "files_added": len(added),
                "bytes_removed": plan["bytes_to_rewrite"],
                "bytes_written": sum(f.file_size_in_bytes for f in added),
                "rows_written": sum(f.record_count for f in added),
            }
            result["rollback"] = rollback_instructions(".".join(table.name()), snapshot.parent_snapshot_id)
            result["stats"] = _stats(stats, started, attempts)
            return result
    except CommitStateUnknownException as e:
        raise RepairError("the catalog did not say whether the commit landed (%s); look at the table's "
                          "current snapshot for k2.dedupe properties before running again" % e, result)
    except RepairError:
        _delete_files_quietly(open_table, all_written)
        raise
    except Exception:
        _delete_files_quietly(open_table, all_written)
        raise
    _delete_files_quietly(open_table, all_written)
    result["changed"] = False
    result["stats"] = _stats(stats, started, attempts)
    raise ConcurrentCommitError(
        "another writer committed to the table during each of %d attempt(s) (last: %s); nothing was "
        "committed by this run. Run it again, or raise max_attempts"
        % (len(attempts), attempts[-1]["outcome"] if attempts else "none"), result)


def _delete_files_quietly(open_table, data_files):
    if not data_files:
        return
    try:
        _delete_files(open_table(), data_files)
    except Exception:  # the table may be the thing that failed; orphans are harmless
        pass


def _table_info(table):
    return {"table": {
        "identifier": ".".join(table.name()),
        "location": table.location(),
        "metadata_location": table.metadata_location,
        "format_version": table.format_version,
    }}


def _public_plan(plan):
    return dict((k, v) for k, v in plan.items() if k != "window_text")


def _counts(snapshot, plan, removed):
    total = None
    if snapshot is not None and snapshot.summary is not None:
        text = snapshot.summary.get("total-records")
        total = int(text) if text is not None and str(text).isdigit() else None
    if not removed:
        return {"snapshot_id": plan["snapshot_id"], "rows": total,
                "duplicated_keys": plan["duplicated_keys"], "duplicate_rows": plan["rows_to_remove"]}
    return {"rows": None if total is None else total - plan["rows_to_remove"],
            "duplicated_keys": 0, "duplicate_rows": 0}


def _stats(stats, started, attempts):
    out = stats.as_dict([])
    del out["data_files"], out["data_bytes"]
    out["seconds"] = round(time.time() - started, 3)
    out["attempts"] = attempts
    out["peak_rss_bytes"] = peak_rss_bytes()
    return out


# ---------------------------------------------------------------------------
# Rollback.

def rollback(table, snapshot_id, discard_later=False, check_mode=False):
    """Make ``snapshot_id`` (an ancestor of the current snapshot) current again."""
    current = table.current_snapshot()
    if current is None:
        raise RepairError("table %s has no snapshot to roll back from" % ".".join(table.name()))
    if table.snapshot_by_id(snapshot_id) is None:
        raise RepairError("table %s has no snapshot %d; the repair's result gives previous_snapshot_id"
                          % (".".join(table.name()), snapshot_id))
    chain = []
    snapshot = current
    while snapshot is not None and snapshot.snapshot_id != snapshot_id:
        chain.append(describe_snapshot(snapshot))
        snapshot = table.snapshot_by_id(snapshot.parent_snapshot_id) \
            if snapshot.parent_snapshot_id is not None else None
    if snapshot is None:
        raise RepairError("snapshot %d is not an ancestor of the current snapshot %d of %s; nothing changed"
                          % (snapshot_id, current.snapshot_id, ".".join(table.name())))
    decision = rollback_decision(current.snapshot_id, snapshot_id, chain, discard_later)
    result = dict(_table_info(table), changed=decision["action"] == "rollback",
                  previous_snapshot_id=current.snapshot_id, snapshot_id=snapshot_id,
                  discarded_snapshots=[{"snapshot_id": s["snapshot_id"], "operation": s["operation"],
                                        "timestamp": s["timestamp"], "summary": s["summary"]}
                                       for s in decision["discarded"]])
    if decision["action"] == "none" or check_mode:
        return result
    try:
        table.manage_snapshots().rollback_to_snapshot(snapshot_id).commit()
    except (CommitFailedException, ValidationException) as e:
        raise RepairError("another writer committed to %s during the rollback (%s); nothing changed, "
                          "run it again" % (".".join(table.name()), str(e)[:300]), result)
    result["snapshot"] = describe_snapshot(table.current_snapshot())
    return result
