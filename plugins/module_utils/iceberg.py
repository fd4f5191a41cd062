# -*- coding: utf-8 -*-
# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The Iceberg cold tier, read with pyiceberg and pyarrow.

Private to this collection: the API may change between releases.

A table is opened through a pyiceberg catalog configured the way pyiceberg takes
it (``type: sql|rest|hive|glue|...`` plus that catalog's properties, or nothing to
use ``~/.pyiceberg.yaml`` / ``PYICEBERG_CATALOG__*``), or without a catalog: a
Hadoop-catalog table directory (``metadata/version-hint.text`` naming
``vN.metadata.json``, as Spark's hadoop catalog writes it), a ``*.metadata.json``
file, or ``type: hadoop`` with a ``warehouse`` in which ``ns.table`` is the
directory ``<warehouse>/ns/table``. Opened for writing (``for_write=True``), a
Hadoop-layout directory on a local file system takes commits the way Spark's
HadoopTableOperations makes them: the next ``vN.metadata.json`` is created only if
no other writer created it first, then ``version-hint.text`` is rewritten.

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
import re
import resource
import time
import traceback
import uuid

try:
    import pyarrow as pa
    import pyarrow.compute as pc
    from pyiceberg.catalog import load_catalog
    from pyiceberg.catalog.noop import NoopCatalog
    from pyiceberg.conversions import from_bytes
    from pyiceberg.exceptions import CommitFailedException, NoSuchNamespaceError, NoSuchTableError
    from pyiceberg.expressions import AlwaysTrue
    from pyiceberg.io import load_file_io
    from pyiceberg.io.pyarrow import ArrowScan
    from pyiceberg.serializers import FromInputFile, ToOutputFile
    from pyiceberg.table import CommitTableResponse, StaticTable, Table
    from pyiceberg.table.update import update_table_metadata
    HAS_PYICEBERG = True
    PYICEBERG_IMPORT_ERROR = None
except ImportError:  # pragma: no cover - exercised only without the libraries
    HAS_PYICEBERG = False
    PYICEBERG_IMPORT_ERROR = traceback.format_exc()
    NoopCatalog = object

from ansible.module_utils.basic import missing_required_lib

from ansible_collections.k2.iceberg_offload.plugins.module_utils.redaction import redact_urls
from ansible_collections.k2.iceberg_offload.plugins.module_utils.watermark import (
    Watermark, WatermarkError, format_timestamp, parse_sequence, parse_timestamp)

WATERMARK_TIMESTAMP_PROPERTY = "k2.watermark.max_timestamp"
WATERMARK_SEQUENCE_PROPERTY = "k2.watermark.sequence_number"
SOURCE_TABLE_PROPERTY = "k2.source_table"

EPOCH = datetime.datetime(1970, 1, 1)
MAX_SAMPLE = 1000


class IcebergError(Exception):
    """The table cannot be opened or read; ``str()`` says what and what to check."""


def iceberg_argument_spec():
    """How to find the cold-tier table; shared by every module that reads it."""
    return dict(
        iceberg_catalog=dict(type="str", default="default"),
        iceberg_catalog_properties=dict(type="dict", default={}),
        iceberg_catalog_secrets=dict(type="dict", default={}, no_log=True),
        iceberg_table_location=dict(type="str"),
    )


def ensure_required_libs(module):
    if not HAS_PYICEBERG:
        module.fail_json(msg=missing_required_lib("pyiceberg and pyarrow"),
                         exception=PYICEBERG_IMPORT_ERROR)


# ---------------------------------------------------------------------------
# Opening a table.

def _strip_file_scheme(path):
    return path[len("file://"):] if path.startswith("file://") else path


def resolve_hadoop_metadata(location):
    """The metadata file of a Hadoop-layout table directory, or ``location`` if it is one.

    Spark writes ``version-hint.text`` without a newline; one is tolerated.
    """
    if not isinstance(location, str) or not location.strip():
        raise IcebergError("the table location must be a directory or a .metadata.json file, got %r"
                           % (location,))
    if "\0" in location:
        raise IcebergError("the table location contains a NUL byte")
    if location.endswith(".metadata.json"):
        return location
    if "://" in location and not location.startswith("file://"):
        # Object stores: pyiceberg reads the hint itself.
        return location
    local = _strip_file_scheme(location)
    hint = os.path.join(local, "metadata", "version-hint.text")
    if not os.path.isdir(local):
        raise IcebergError("table location %s is not a directory" % local)
    try:
        with open(hint, "rb") as f:
            text = f.read(64).decode("utf-8", "replace").strip()
    except (IOError, OSError):
        raise IcebergError("%s has no metadata/version-hint.text: not a Hadoop-catalog Iceberg "
                           "table directory (give the table directory or a vN.metadata.json file)"
                           % local)
    if text.isdigit():
        name = "v%s.metadata.json" % text
    elif text.endswith(".metadata.json") and "/" not in text:
        name = text
    else:
        raise IcebergError("%s holds %r, not a version number" % (hint, text[:40]))
    path = os.path.join(local, "metadata", name)
    if not os.path.isfile(path):
        raise IcebergError("%s names %s, which does not exist" % (hint, path))
    return path


def split_identifier(identifier):
    if not isinstance(identifier, str) or not identifier.strip():
        raise IcebergError("table must be an identifier such as cold.bronze_trades_binance, got %r"
                           % (identifier,))
    parts = identifier.split(".")
    if len(parts) < 2 or any(not p or p != p.strip() or "/" in p or "\0" in p or p in (".", "..")
                             for p in parts):
        raise IcebergError("table must be namespace.table, such as cold.bronze_trades_binance, got %r"
                           % (identifier,))
    return parts


_HADOOP_VERSION_RE = re.compile(r"^v([0-9]+)(\.gz)?\.metadata\.json\Z")


class HadoopDirectoryCatalog(NoopCatalog):
    """Commits to one Hadoop-layout table directory on a local file system.

    pyiceberg has no hadoop catalog. Spark's HadoopTableOperations commits by
    renaming a temporary file to the next ``vN.metadata.json`` (which fails when
    another writer got there first) and then rewriting ``version-hint.text``;
    this does the same with ``os.link``, which refuses to replace an existing name.
    """

    def __init__(self, table_dir, properties):
        NoopCatalog.__init__(self, "hadoop", **properties)
        self.table_dir = table_dir

    def load_table(self, identifier):
        path = resolve_hadoop_metadata(self.table_dir)
        # Like Spark, trust the hint only as a starting point: a writer may have created
        # the next version and not yet rewritten the hint.
        match = _HADOOP_VERSION_RE.match(os.path.basename(path))
        while match:
            following = os.path.join(os.path.dirname(path), "v%d.metadata.json" % (int(match.group(1)) + 1))
            if not os.path.isfile(following):
                break
            path = following
            match = _HADOOP_VERSION_RE.match(os.path.basename(path))
        metadata = FromInputFile.table_metadata(load_file_io(self.properties, path).new_input(path))
        io = load_file_io(dict(self.properties, **metadata.properties), path)
        return Table(identifier=tuple(identifier), metadata=metadata, metadata_location=path, io=io,
                     catalog=self)

    def commit_table(self, table, requirements, updates):
        current = self.load_table(table.name())
        for requirement in requirements:
            requirement.validate(current.metadata)  # raises CommitFailedException
        match = _HADOOP_VERSION_RE.match(os.path.basename(current.metadata_location))
        if not match:
            raise CommitFailedException("%s is not named vN.metadata.json: not a Hadoop-catalog version "
                                        "file, cannot take the next version" % current.metadata_location)
        metadata = update_table_metadata(current.metadata, updates,
                                         metadata_location=current.metadata_location)
        meta_dir = os.path.join(self.table_dir, "metadata")
        target = os.path.join(meta_dir, "v%d.metadata.json" % (int(match.group(1)) + 1))
        tmp = os.path.join(meta_dir, ".%s.tmp" % uuid.uuid4().hex)
        ToOutputFile.table_metadata(metadata, current.io.new_output(tmp))
        try:
            os.link(tmp, target)
        except FileExistsError:
            raise CommitFailedException("another writer committed %s first" % target)
        finally:
            os.unlink(tmp)
        hint_tmp = os.path.join(meta_dir, ".version-hint.%s.tmp" % uuid.uuid4().hex)
        with open(hint_tmp, "w") as f:
            f.write(str(int(match.group(1)) + 1))
        os.replace(hint_tmp, os.path.join(meta_dir, "version-hint.text"))
        return CommitTableResponse(metadata=metadata, metadata_location=target)


def _writable_hadoop_table(location, identifier, props):
    if location.endswith(".metadata.json"):
        raise IcebergError("a .metadata.json file alone cannot take a commit (the catalog or directory "
                           "that points at it would not see it): give the table directory (Hadoop layout) "
                           "as iceberg_table_location, or the catalog")
    if "://" in location and not location.startswith("file://"):
        raise IcebergError("commits to a Hadoop-layout table are supported on a local file system only, "
                           "not %s; open the table through a catalog" % location.split("://")[0])
    local = _strip_file_scheme(location)
    resolve_hadoop_metadata(local)
    return HadoopDirectoryCatalog(local, props).load_table(identifier or ("hadoop", local))


def open_table(identifier=None, catalog_name="default", catalog_properties=None, secrets=None,
               table_location=None, for_write=False):
    """A pyiceberg Table from a catalog, a Hadoop-layout directory or a metadata file.

    With ``for_write`` the table can take commits: a catalog's table, or a Hadoop-layout
    directory on a local file system; a bare metadata file is refused.
    """
    props = dict(catalog_properties or {})
    props.update(secrets or {})
    props = dict((str(k), v if isinstance(v, str) else str(v)) for k, v in props.items())
    try:
        if table_location:
            if for_write:
                return _writable_hadoop_table(table_location, None, props)
            return StaticTable.from_metadata(resolve_hadoop_metadata(table_location), props)
        parts = split_identifier(identifier)
        if props.get("type") == "hadoop":
            warehouse = props.get("warehouse")
            if not warehouse:
                raise IcebergError("a hadoop catalog needs a warehouse property (the directory "
                                   "that holds <namespace>/<table>)")
            location = os.path.join(_strip_file_scheme(warehouse), *parts)
            io_props = dict((k, v) for k, v in props.items() if k not in ("type", "warehouse"))
            if for_write:
                return _writable_hadoop_table(location, tuple(parts), io_props)
            return StaticTable.from_metadata(resolve_hadoop_metadata(location), io_props)
        catalog = load_catalog(catalog_name, **props)
        return catalog.load_table(tuple(parts))
    except IcebergError:
        raise
    except (NoSuchTableError, NoSuchNamespaceError) as e:
        raise IcebergError(redact_urls("Iceberg table %s not found in catalog %s: %s"
                                       % (identifier, catalog_name, e)))
    except Exception as e:  # pyiceberg raises many kinds; the message is what matters
        raise IcebergError(redact_urls("cannot open Iceberg table %s (%s: %s); check iceberg_catalog_properties "
                                       "or iceberg_table_location"
                                       % (identifier or table_location, type(e).__name__, str(e)[:400])))


def open_table_from_params(params, identifier=None, table_location=None, for_write=False):
    return open_table(identifier, params.get("iceberg_catalog") or "default",
                      params.get("iceberg_catalog_properties"), params.get("iceberg_catalog_secrets"),
                      table_location or params.get("iceberg_table_location"), for_write=for_write)


# ---------------------------------------------------------------------------
# Snapshots and the watermark the offload job writes into them.

def _ms_to_text(ms):
    return format_timestamp(EPOCH + datetime.timedelta(milliseconds=ms))


def snapshot_summary(snapshot):
    summary = {"operation": str(snapshot.summary.operation.value)
               if snapshot.summary is not None else None}
    if snapshot.summary is not None:
        summary.update(snapshot.summary.additional_properties)
    return summary


def snapshot_watermark(snapshot):
    """The Watermark in a snapshot's summary, or None when it carries none (or a broken one)."""
    if snapshot is None or snapshot.summary is None:
        return None
    ts = snapshot.summary.get(WATERMARK_TIMESTAMP_PROPERTY)
    seq = snapshot.summary.get(WATERMARK_SEQUENCE_PROPERTY)
    if ts is None or seq is None:
        return None
    try:
        return Watermark(parse_timestamp(ts), parse_sequence(seq))
    except WatermarkError:
        return None


def describe_snapshot(snapshot):
    if snapshot is None:
        return None
    wm = snapshot_watermark(snapshot)
    summary = snapshot_summary(snapshot)
    return {
        "snapshot_id": snapshot.snapshot_id,
        "parent_snapshot_id": snapshot.parent_snapshot_id,
        "timestamp_ms": snapshot.timestamp_ms,
        "timestamp": _ms_to_text(snapshot.timestamp_ms),
        "operation": summary.get("operation"),
        "summary": summary,
        "watermark": wm.as_dict() if wm else None,
        "source_table": summary.get(SOURCE_TABLE_PROPERTY),
    }


def latest_watermark_snapshot(table):
    """The newest snapshot, walking back from the current one, that carries a watermark."""
    snapshot = table.current_snapshot()
    seen = 0
    while snapshot is not None and seen < 100000:
        if snapshot_watermark(snapshot) is not None:
            return snapshot
        if snapshot.parent_snapshot_id is None:
            return None
        snapshot = table.snapshot_by_id(snapshot.parent_snapshot_id)
        seen += 1
    return None


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


def pair_result(pair):
    return pair.as_dict() if pair is not None else None
