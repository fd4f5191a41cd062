# -*- coding: utf-8 -*-
# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The Iceberg cold tier's catalog: open a table (pyiceberg catalogs, Hadoop-layout directories, metadata
files), its snapshots and the watermark an offload recorded in them.

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

Reading the rows is iceberg_scan.py's (pyiceberg and pyarrow on this host): that is the seam where
another engine plugs in; the repair is iceberg_repair.py.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import os
import re
import traceback
import uuid

try:
    from pyiceberg.catalog import load_catalog
    from pyiceberg.catalog.noop import NoopCatalog
    from pyiceberg.exceptions import CommitFailedException, NoSuchNamespaceError, NoSuchTableError
    from pyiceberg.io import load_file_io
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
