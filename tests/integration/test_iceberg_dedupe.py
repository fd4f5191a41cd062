# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""iceberg_dedupe against real pyiceberg warehouses (SQL catalog on sqlite, as in the lab; Hadoop layout).

Each test builds its own warehouse in tmp. Expected answers come from the Arrow data the test
wrote (the oracle) and from pyiceberg's own full scan of the table, never from the module's scan.
Concurrent writers are separate processes (tests.support.iceberg_writer), appending through
the same SQL catalog the way the lab's offload job does.
"""
import collections
import json
import os
import subprocess
import sys
import time

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from pyiceberg.catalog.sql import SqlCatalog

from ansible_collections.k2.iceberg_offload.plugins.module_utils import iceberg, iceberg_repair
from tests.support.ansible_module import run_module
from tests.support.iceberg_warehouse import SCHEMA, Warehouse, trades
from tests.support.iceberg_writer import read_log

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


# ---------------------------------------------------------------------------
# Building tables and reading them back.

@pytest.fixture
def wh(tmp_path):
    root = tmp_path / "warehouse"
    root.mkdir()
    return Warehouse(str(root))


def dups_table(wh, name="dups"):
    """Three clean cycles, a re-offload of 50 rows of the second, a cycle with one key three times.
    Returns (table, the Arrow data written)."""
    table = wh.create(name)
    parts = [trades(0, 1000), trades(1000, 1000), trades(2000, 1000), trades(1500, 50),
             pa.concat_tables([trades(5000, 1)] * 3)]
    for part in parts:
        wh.offload(table, part, source_table="bronze_trades_binance")
    return table, pa.concat_tables(parts)


def load(wh, name):
    return wh.catalog.load_table("cold." + name)


def rows_of(table):
    return table.scan().to_arrow().sort_by([("sequence_number", "ascending"), ("price", "ascending")])


def key_counts(table, key="sequence_number"):
    return collections.Counter(table.scan(selected_fields=(key,)).to_arrow().column(key).to_pylist())


def live_files(table):
    return dict((t.file.file_path, t.file.file_size_in_bytes) for t in table.scan().plan_files())


def args(wh, name, **extra):
    a = {"table": "cold." + name, "iceberg_catalog_properties": wh.properties}
    a.update(extra)
    return a


def state(table):
    table = table.refresh()
    snap = table.current_snapshot()
    return (snap.snapshot_id if snap else None, table.metadata_location)


def referenced_data_files(table):
    """Every data file some snapshot of the table refers to."""
    out = set()
    for snap in table.snapshots():
        for manifest in snap.manifests(table.io):
            for entry in manifest.fetch_manifest_entry(table.io, discard_deleted=False):
                out.add(entry.data_file.file_path.replace("file://", ""))
    return out


def data_dir_files(table):
    d = table.location().replace("file://", "") + "/data"
    return set(os.path.join(d, f) for f in os.listdir(d) if f.endswith(".parquet"))


# ---------------------------------------------------------------------------
# Plan, repair, idempotence, rollback.

def test_check_mode_returns_the_plan_and_writes_nothing(wh):
    table, data = dups_table(wh)
    before = state(table)
    files_before = live_files(table)
    r = run_module("iceberg_dedupe", args(wh, "dups", sample_size=3), check=True)
    assert not r["failed"], r.get("msg")
    assert r["changed"] is True
    counts = collections.Counter(data.column("sequence_number").to_pylist())
    p = r["plan"]
    assert p["duplicated_keys"] == sum(1 for c in counts.values() if c > 1) == 51
    assert p["rows_to_remove"] == sum(c - 1 for c in counts.values() if c > 1) == 52
    assert p["conflicting_keys"] == 0 and p["conflicts"] == []
    assert p["sample"][0] == {"key": 5000, "count": 3, "conflict": False} and len(p["sample"]) == 3
    # the first committed copy stays: the re-offload file and two copies of the triple go
    rewrite = dict((f["path"], f) for f in p["files_to_rewrite"])
    assert len(rewrite) == 2
    assert sorted((f["rows"], f["rows_to_remove"], f["action"]) for f in rewrite.values()) == \
        [(3, 2, "rewrite"), (50, 50, "drop")]
    assert all(path in files_before and files_before[path] == f["bytes"] for path, f in rewrite.items())
    assert p["bytes_to_rewrite"] == sum(f["bytes"] for f in rewrite.values())
    assert p["files_scanned"] == 5 and p["rows_scanned"] == data.num_rows
    assert r["before"] == {"snapshot_id": before[0], "rows": data.num_rows, "duplicated_keys": 51,
                           "duplicate_rows": 52}
    assert r["after"] == {"rows": data.num_rows - 52, "duplicated_keys": 0, "duplicate_rows": 0}
    assert "snapshot_id" not in r and "rollback" not in r
    assert state(table) == before


def test_repair_rewrites_only_the_files_that_lose_rows(wh):
    table, data = dups_table(wh)
    before_id = state(table)[0]
    files_before = live_files(table)
    r = run_module("iceberg_dedupe", args(wh, "dups"), diff=True)
    assert not r["failed"], r.get("msg")
    assert r["changed"] is True
    table = table.refresh()
    # exactly one row per key, and every key that was there is there
    counts = key_counts(table)
    assert set(counts.values()) == {1}
    assert set(counts) == set(data.column("sequence_number").to_pylist())
    # the rows that stay are the rows written (no value changed)
    assert rows_of(table).equals(
        pa.Table.from_pylist(sorted({tuple(row.values()): row for row in data.to_pylist()}.values(),
                                    key=lambda row: (row["sequence_number"], row["price"])),
                             schema=data.schema).cast(rows_of(table).schema))
    # the files: the untouched ones are the same files; two removed, one added (the triple's survivor)
    files_after = live_files(table)
    removed = set(files_before) - set(files_after)
    added = set(files_after) - set(files_before)
    assert removed == set(f["path"] for f in r["plan"]["files_to_rewrite"])
    assert len(removed) == 2 and len(added) == 1
    for path in set(files_before) & set(files_after):
        assert files_before[path] == files_after[path]
    assert r["commit"] == {"files_removed": 2, "files_added": 1,
                           "bytes_removed": sum(files_before[p] for p in removed),
                           "bytes_written": files_after[added.pop()], "rows_written": 1}
    # one snapshot, the repair, on top of the one read
    snap = table.current_snapshot()
    assert r["snapshot_id"] == snap.snapshot_id and r["previous_snapshot_id"] == before_id
    assert snap.parent_snapshot_id == before_id
    summary = snap.summary
    assert summary.operation.value == "overwrite"
    assert summary["k2.dedupe.rows_removed"] == "52"
    assert summary["k2.dedupe.duplicated_keys"] == "51"
    assert summary["k2.dedupe.replaces_snapshot_id"] == str(before_id)
    assert summary["k2.dedupe.key_columns"] == "sequence_number"
    assert summary["k2.dedupe.window"] == "all"
    assert summary["deleted-records"] == "53" and summary["added-records"] == "1"
    assert r["rollback"]["snapshot_id"] == before_id
    assert r["rollback"]["module_args"] == {"rollback_to_snapshot": before_id}
    assert "rollback_to_snapshot('cold.dups', %d)" % before_id in r["rollback"]["spark_sql"]
    assert r["diff"]["before"]["duplicated_keys"] == 51 and r["diff"]["after"]["duplicated_keys"] == 0
    assert r["diff"]["before"]["rows"] - r["diff"]["after"]["rows"] == 52
    assert r["stats"]["attempts"][-1]["outcome"] == "committed"
    # iceberg_table_info agrees, and every data file in the directory belongs to some snapshot
    info = run_module("iceberg_table_info", args(wh, "dups"))
    assert info["duplicates"]["duplicate_rows"] == 0 and info["row_count"] == data.num_rows - 52
    assert data_dir_files(table) <= referenced_data_files(table)


def test_second_run_changes_nothing(wh):
    dups_table(wh)
    first = run_module("iceberg_dedupe", args(wh, "dups"))
    assert first["changed"] is True
    before = state(load(wh, "dups"))
    second = run_module("iceberg_dedupe", args(wh, "dups"), diff=True)
    assert not second["failed"], second.get("msg")
    assert second["changed"] is False and "diff" not in second
    assert second["plan"]["duplicated_keys"] == 0 and second["plan"]["files_to_rewrite"] == []
    assert state(load(wh, "dups")) == before


def test_clean_and_empty_tables_are_left_alone(wh):
    clean = wh.create("clean")
    for i in range(3):
        wh.offload(clean, trades(i * 1000, 1000))
    wh.create("empty")
    for name in ("clean", "empty"):
        before = state(load(wh, name))
        r = run_module("iceberg_dedupe", args(wh, name))
        assert not r["failed"], r.get("msg")
        assert r["changed"] is False and r["plan"]["rows_to_remove"] == 0
        assert state(load(wh, name)) == before
    assert r["plan"]["snapshot_id"] is None


def test_rollback_restores_the_table_and_is_idempotent(wh):
    table, data = dups_table(wh)
    before_rows = rows_of(table)
    repair = run_module("iceberg_dedupe", args(wh, "dups"))
    target = repair["rollback"]["snapshot_id"]
    after_repair = state(load(wh, "dups"))
    plan = run_module("iceberg_dedupe", args(wh, "dups", rollback_to_snapshot=target), check=True)
    assert not plan["failed"], plan.get("msg")
    assert plan["changed"] is True and plan["snapshot_id"] == target
    assert [s["snapshot_id"] for s in plan["discarded_snapshots"]] == [repair["snapshot_id"]]
    assert state(load(wh, "dups")) == after_repair
    r = run_module("iceberg_dedupe", args(wh, "dups", rollback_to_snapshot=target), diff=True)
    assert not r["failed"], r.get("msg")
    assert r["changed"] is True and r["previous_snapshot_id"] == repair["snapshot_id"]
    assert r["diff"] == {"before": {"current_snapshot_id": repair["snapshot_id"]},
                         "after": {"current_snapshot_id": target}}
    table = load(wh, "dups")
    assert table.current_snapshot().snapshot_id == target
    assert rows_of(table).equals(before_rows)
    again = run_module("iceberg_dedupe", args(wh, "dups", rollback_to_snapshot=target))
    assert again["changed"] is False and not again["failed"]
    # the one-liner the result gives does the same
    table = load(wh, "dups")
    run_module("iceberg_dedupe", args(wh, "dups"))
    table = load(wh, "dups")
    second_target = table.current_snapshot().parent_snapshot_id
    table.manage_snapshots().rollback_to_snapshot(second_target).commit()
    assert load(wh, "dups").current_snapshot().snapshot_id == second_target
    assert rows_of(load(wh, "dups")).equals(before_rows)


def test_rollback_refuses_to_discard_later_appends_unless_told(wh):
    dups_table(wh)
    repair = run_module("iceberg_dedupe", args(wh, "dups"))
    target = repair["rollback"]["snapshot_id"]
    wh.offload(load(wh, "dups"), trades(6000, 100))
    before = state(load(wh, "dups"))
    r = run_module("iceberg_dedupe", args(wh, "dups", rollback_to_snapshot=target))
    assert r["failed"] and "would also discard 1 later snapshot(s) that are not repairs" in r["msg"], r["msg"]
    assert "100 rows added" in r["msg"] and "discard_later_snapshots" in r["msg"]
    assert state(load(wh, "dups")) == before
    r = run_module("iceberg_dedupe", args(wh, "dups", rollback_to_snapshot=target,
                                          discard_later_snapshots=True))
    assert not r["failed"], r.get("msg")
    assert len(r["discarded_snapshots"]) == 2
    assert load(wh, "dups").current_snapshot().snapshot_id == target


# ---------------------------------------------------------------------------
# Copies that differ.

def conflict_table(wh, name="conflicts"):
    """Keys 100..104 offloaded twice, the second time with a different price for 102 and 103."""
    table = wh.create(name)
    wh.offload(table, trades(0, 1000))
    again = trades(100, 5)
    price = again.column("price").to_pylist()
    price[2] += 0.5
    price[3] += 0.25
    again = again.set_column(again.schema.get_field_index("price"), "price", pa.array(price, pa.float64()))
    wh.offload(table, again)
    return table, again


def test_conflicting_copies_are_reported_and_refused(wh):
    table, again = conflict_table(wh)
    before = state(table)
    for check in (True, False):
        r = run_module("iceberg_dedupe", args(wh, "conflicts"), check=check)
        assert r["failed"] is True
        assert "2 duplicated key(s) have copies that differ in other columns" in r["msg"], r["msg"]
        assert "keep_first" in r["msg"] and "keep_last" in r["msg"]
        assert r["plan"]["conflicting_keys"] == 2 and r["plan"]["duplicated_keys"] == 5
        conflicts = r["plan"]["conflicts"]
        assert [c["key"] for c in conflicts] == [102, 103]
        first = conflicts[0]["copies"]
        assert [c["values"]["price"] for c in first] == [30102.0, 30102.5]
        assert [c["kept"] for c in first] == [True, False]
        assert first[1]["position"] == 2
        assert set(s["key"] for s in r["plan"]["sample"] if s["conflict"]) == {102, 103}
        assert state(load(wh, "conflicts")) == before


@pytest.mark.parametrize("policy,expected", [("keep_first", [30102.0, 30103.0]),
                                             ("keep_last", [30102.5, 30103.25])])
def test_conflict_policy_chooses_the_copy(wh, policy, expected):
    conflict_table(wh)
    r = run_module("iceberg_dedupe", args(wh, "conflicts", conflict=policy))
    assert not r["failed"], r.get("msg")
    assert r["plan"]["conflicting_keys"] == 2
    table = load(wh, "conflicts")
    assert set(key_counts(table).values()) == {1}
    data = table.scan(row_filter="sequence_number >= 102 and sequence_number <= 103").to_arrow()
    assert sorted(data.column("price").to_pylist()) == expected
    assert table.current_snapshot().summary["k2.dedupe.conflict"] == policy
    # identical copies (100, 101, 104) keep the first committed, whatever the policy: with
    # keep_last, the second file keeps 102 and 103 and is rewritten, the first loses 100, 101, 104
    if policy == "keep_last":
        assert sorted(f["rows_to_remove"] for f in r["plan"]["files_to_rewrite"]) == [2, 3]
    else:
        assert [f["action"] for f in r["plan"]["files_to_rewrite"]] == ["drop"]


# ---------------------------------------------------------------------------
# Windows and key columns.

def two_incidents(wh, name="incidents"):
    """Re-offloads of keys 200..299 and 3200..3299, in files that also hold new rows."""
    table = wh.create(name)
    for i in range(4):
        wh.offload(table, trades(i * 1000, 1000))
    wh.offload(table, pa.concat_tables([trades(200, 100), trades(4000, 100)]))
    wh.offload(table, pa.concat_tables([trades(3200, 100), trades(4100, 100)]))
    return table


@pytest.mark.parametrize("window", [
    {"column": "sequence_number", "from": 150, "to": 1000},
    {"column": "sequence_number", "to": 299},
    {"column": "exchange_timestamp", "from": "2026-02-12T00:00:40Z", "to": "2026-02-12T00:01:15+00:00"},
    {"column": "exchange_timestamp", "from": "2026-02-12T02:00:50+02:00", "to": "2026-02-12 00:01:14.75"},
])
def test_a_window_repairs_only_its_range(wh, window):
    two_incidents(wh)
    r = run_module("iceberg_dedupe", args(wh, "incidents", window=window))
    assert not r["failed"], r.get("msg")
    assert r["plan"]["duplicated_keys"] == 100 and r["plan"]["rows_to_remove"] == 100
    counts = key_counts(load(wh, "incidents"))
    assert all(counts[k] == 1 for k in range(200, 300))
    assert all(counts[k] == 2 for k in range(3200, 3300))
    assert all(counts[k] == 1 for k in range(4000, 4200))  # new rows of the rewritten file stay
    assert sum(counts.values()) == 4000 + 400 - 100
    assert [f["action"] for f in r["plan"]["files_to_rewrite"]] == ["rewrite"]
    assert r["plan"]["files_to_rewrite"][0]["rows_kept"] == 100
    # files the window cannot reach are not read
    assert r["plan"]["files_scanned"] < 6
    assert load(wh, "incidents").current_snapshot().summary["k2.dedupe.window"].startswith(window["column"])


def test_several_key_columns(wh):
    table = wh.create("multi")
    wh.offload(table, trades(0, 100))
    copy = trades(10, 10)
    flipped = copy.set_column(3, "side", pc.if_else(pc.equal(copy.column("side"), "buy"), "sell", "buy"))
    wh.offload(table, pa.concat_tables([copy.slice(0, 5), flipped.slice(5, 5)]))
    r = run_module("iceberg_dedupe", args(wh, "multi", key_columns=["sequence_number", "side"]), check=True)
    assert not r["failed"], r.get("msg")
    assert r["plan"]["duplicated_keys"] == 5
    assert r["plan"]["sample"][0]["key"] == {"sequence_number": 10, "side": "buy"}
    r = run_module("iceberg_dedupe", args(wh, "multi"), check=True)
    assert r["plan"]["duplicated_keys"] == 10 and r["plan"]["conflicting_keys"] == 5


# ---------------------------------------------------------------------------
# Bad input: a clear error, nothing committed.

BAD = [
    ({"key_columns": ["no_such_column"]}, "table has no column no_such_column (key_columns)"),
    ({"key_columns": []}, "key_columns must name at least one column"),
    ({"key_columns": ["sequence_number", "sequence_number"]}, "names sequence_number twice"),
    ({"table": "cold.no_such_table"}, "not found"),
    ({"table": "nope.bronze"}, "not found"),
    ({"table": "bronze"}, "namespace.table"),
    ({"window": {"column": "sequence_number", "from": 2000, "to": 1000}}, "window is not a range"),
    ({"window": {"column": "exchange_timestamp", "from": "2026-02-12T10:00:00Z",
                 "to": "2026-02-12T09:00:00Z"}}, "window is not a range"),
    ({"window": {"column": "sequence_number"}}, "window needs from, to or both"),
    ({"window": {"column": "exchange_timestamp", "from": "yesterday"}}, "ISO 8601"),
    ({"window": {"column": "sequence_number", "from": "ten"}}, "must be an integer"),
    ({"window": {"column": "no_such", "from": 1}}, "table has no column no_such (window.column)"),
    ({"window": {"column": "price", "from": 1}}, "a window needs a timestamp, date, integer or string"),
    ({"sample_size": 5000}, "sample_size must be between 0 and 1000"),
    ({"max_attempts": 0}, "max_attempts must be between 1 and 10"),
    ({"conflict": "newest"}, "value of conflict must be one of"),
    ({"rollback_to_snapshot": 12345}, "has no snapshot 12345"),
    ({"iceberg_catalog_properties": {"type": "rest", "uri": "http://127.0.0.1:9"}},
     "cannot open Iceberg table cold.dups (ConnectionError"),
    ({"iceberg_catalog_properties": {"type": "sql", "uri": "sqlite:////nonexistent/k2/catalog.db",
                                     "warehouse": "file:///nonexistent/k2"}}, "unable to open database file"),
]


@pytest.mark.parametrize("extra,expected", BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_input_fails_clearly_and_commits_nothing(wh, extra, expected):
    dups_table(wh)
    before = state(load(wh, "dups"))
    files = data_dir_files(load(wh, "dups"))
    r = run_module("iceberg_dedupe", args(wh, "dups", **extra))
    assert r["failed"] is True, json.dumps(r)[:2000]
    assert expected in r["msg"], r["msg"]
    assert "Traceback" not in r["msg"]
    assert state(load(wh, "dups")) == before
    assert data_dir_files(load(wh, "dups")) == files


def test_a_metadata_file_can_be_planned_not_committed(wh):
    table = dups_table(wh)[0]
    before = state(table)
    location = table.metadata_location.replace("file://", "")
    r = run_module("iceberg_dedupe", {"iceberg_table_location": location}, check=True)
    assert not r["failed"], r.get("msg")
    assert r["plan"]["rows_to_remove"] == 52
    r = run_module("iceberg_dedupe", {"iceberg_table_location": location})
    assert r["failed"] and "a .metadata.json file alone cannot take a commit" in r["msg"]
    assert state(load(wh, "dups")) == before


# ---------------------------------------------------------------------------
# Where the table lives: the lab's catalog, the runbook's hadoop layout.

def test_the_labs_catalog_layout(tmp_path):
    """The lab: SqlCatalog named k2, sqlite:////home/iceberg/warehouse/catalog.db, file:// table locations."""
    root = str(tmp_path / "home-iceberg-warehouse")
    os.makedirs(root)
    props = {"type": "sql", "uri": "sqlite:///%s/catalog.db" % root, "warehouse": "file://%s" % root}
    catalog = SqlCatalog("k2", **props)
    catalog.create_namespace("cold")
    table = catalog.create_table("cold.bronze_trades_binance", schema=SCHEMA,
                                 location="file://%s/cold/bronze_trades_binance" % root)
    for part in (trades(0, 500), trades(500, 500), trades(250, 100)):
        table.append(part, snapshot_properties={"k2.source_table": "bronze_trades_binance"})
    base = {"table": "cold.bronze_trades_binance", "iceberg_catalog": "k2", "iceberg_catalog_properties": props}
    r = run_module("iceberg_dedupe", base)
    assert not r["failed"], r.get("msg")
    assert r["plan"]["rows_to_remove"] == 100 and r["plan"]["files_to_rewrite"][0]["action"] == "drop"
    table = catalog.load_table("cold.bronze_trades_binance")
    assert set(key_counts(table).values()) == {1} and sum(key_counts(table).values()) == 1000
    wrong = run_module("iceberg_dedupe", dict(base, iceberg_catalog="default"))
    assert wrong["failed"] and "not found" in wrong["msg"]


@pytest.mark.parametrize("how", ["directory", "hadoop_catalog"])
def test_hadoop_layout_takes_the_commit(wh, how):
    table, data = dups_table(wh)
    directory = wh.hadoop_copy(table, "dups")
    meta = os.path.join(directory, "metadata")
    version = int(open(os.path.join(meta, "version-hint.text")).read())
    if how == "directory":
        a = {"iceberg_table_location": directory}
    else:
        a = {"table": "cold.dups", "iceberg_catalog_properties": {
            "type": "hadoop", "warehouse": "file://" + os.path.join(wh.root, "hadoop")}}
    r = run_module("iceberg_dedupe", a)
    assert not r["failed"], r.get("msg")
    assert r["plan"]["rows_to_remove"] == 52
    with open(os.path.join(meta, "version-hint.text")) as f:
        assert f.read() == str(version + 1)
    assert r["table"]["metadata_location"].endswith("v%d.metadata.json" % version)
    info = run_module("iceberg_table_info", {"iceberg_table_location": directory})
    assert info["duplicates"]["duplicate_rows"] == 0 and info["row_count"] == data.num_rows - 52
    assert info["latest_snapshot"]["summary"]["k2.dedupe.rows_removed"] == "52"
    # the SQL catalog's table is another table's metadata: untouched
    assert key_counts(load(wh, "dups"))[5000] == 3
    again = run_module("iceberg_dedupe", a)
    assert again["changed"] is False
    back = run_module("iceberg_dedupe", dict(a, rollback_to_snapshot=r["previous_snapshot_id"]))
    assert back["changed"] and not back["failed"], back.get("msg")
    info = run_module("iceberg_table_info", {"iceberg_table_location": directory})
    assert info["duplicates"]["duplicate_rows"] == 52


def test_hadoop_commit_after_another_writers_version(wh):
    """Another writer commits version N+1 (and has not rewritten version-hint.text yet) between our
    plan and our commit: the commit is refused, the next attempt reads N+1 (as Spark does, the hint
    is only a starting point) and commits N+2."""
    table = dups_table(wh)[0]
    directory = wh.hadoop_copy(table, "dups")
    meta = os.path.join(directory, "metadata")
    version = int(open(os.path.join(meta, "version-hint.text")).read())

    def race(attempt):
        if attempt == 1:
            other = iceberg.open_table(table_location=directory, for_write=True)
            other.append(trades(7000, 10))
            with open(os.path.join(meta, "version-hint.text"), "w") as f:
                f.write(str(version))

    def open_table():
        return iceberg.open_table(table_location=directory, for_write=True)

    r = iceberg_repair.dedupe(open_table, before_commit=race)
    outcomes = [a["outcome"] for a in r["stats"]["attempts"]]
    assert outcomes[0].startswith("conflict: ") and "main" in outcomes[0], outcomes
    assert outcomes[1:] == ["committed"]
    assert r["table"]["metadata_location"].endswith("v%d.metadata.json" % (version + 1))
    with open(os.path.join(meta, "version-hint.text")) as f:
        assert f.read() == str(version + 2)
    info = run_module("iceberg_table_info", {"iceberg_table_location": directory})
    assert info["duplicates"]["duplicate_rows"] == 0 and info["row_count"] == 3001 + 10


# ---------------------------------------------------------------------------
# Concurrent writers: separate processes appending through the same catalog.

def writer(wh, table, first_seq, rows=100, count=1, interval=0.0, step=None, log=None, stop_file=None,
           wait=True):
    cmd = [sys.executable, "-m", "tests.support.iceberg_writer", "--root", wh.root, "--table", table,
           "--first-seq", str(first_seq), "--rows", str(rows), "--count", str(count),
           "--interval", str(interval), "--log", log]
    if step is not None:
        cmd += ["--step", str(step)]
    if stop_file:
        cmd += ["--stop-file", stop_file]
    proc = subprocess.Popen(cmd, cwd=REPO)
    if wait:
        assert proc.wait(120) == 0
    return proc


def opener(wh, name):
    def open_table():
        return iceberg.open_table("cold." + name, catalog_properties=wh.properties, for_write=True)
    return open_table


def test_an_append_between_plan_and_commit_is_kept(wh, tmp_path):
    """The writer commits new keys after the plan was made: the commit is refused, the table read
    again, the plan made again (the rewritten file reused), and the writer's rows stay."""
    dups_table(wh)
    log = str(tmp_path / "writer.jsonl")

    def append_once(attempt):
        if attempt == 1:
            writer(wh, "cold.dups", 10000, rows=100, log=log)

    r = iceberg_repair.dedupe(opener(wh, "dups"), before_commit=append_once)
    attempts = r["stats"]["attempts"]
    assert [a["outcome"].split(":")[0] for a in attempts] == ["conflict", "committed"]
    written = read_log(log)
    assert len(written) == 1 and "error" not in written[0]
    table = load(wh, "dups")
    counts = key_counts(table)
    assert all(counts[k] == 1 for k in range(10000, 10100))
    assert set(counts.values()) == {1}
    assert r["previous_snapshot_id"] == written[0]["snapshot_id"]
    assert table.current_snapshot().parent_snapshot_id == written[0]["snapshot_id"]
    assert attempts[1]["snapshot_read"] == written[0]["snapshot_id"]
    assert data_dir_files(table) <= referenced_data_files(table)


def test_a_reoffload_between_plan_and_commit_is_deduplicated_too(wh, tmp_path):
    """The writer re-offloads keys 2000..2099 (new copies) after the plan: the second plan sees them."""
    dups_table(wh)
    log = str(tmp_path / "writer.jsonl")

    def reoffload(attempt):
        if attempt == 1:
            writer(wh, "cold.dups", 2000, rows=100, log=log)

    r = iceberg_repair.dedupe(opener(wh, "dups"), before_commit=reoffload)
    assert r["plan"]["duplicated_keys"] == 151 and r["plan"]["rows_to_remove"] == 152
    assert len(r["stats"]["attempts"]) == 2
    counts = key_counts(load(wh, "dups"))
    assert set(counts.values()) == {1} and len(counts) == 3001


def test_a_writer_that_always_wins_leaves_the_table_as_it_wrote_it(wh, tmp_path):
    dups_table(wh)
    log = str(tmp_path / "writer.jsonl")

    def always(attempt):
        writer(wh, "cold.dups", 20000 + attempt * 100, rows=100, log=log)

    with pytest.raises(iceberg_repair.ConcurrentCommitError) as err:
        iceberg_repair.dedupe(opener(wh, "dups"), max_attempts=2, before_commit=always)
    assert "during each of 2 attempt(s)" in str(err.value) and "nothing was committed" in str(err.value)
    table = load(wh, "dups")
    written = read_log(log)
    assert table.current_snapshot().snapshot_id == written[-1]["snapshot_id"]
    assert not any("k2.dedupe.rows_removed" in s.summary.additional_properties for s in table.snapshots())
    counts = key_counts(table)
    assert counts[5000] == 3 and all(counts[k] == 1 for k in range(20100, 20300))
    # the files the attempts wrote were deleted
    assert data_dir_files(table) <= referenced_data_files(table)


def test_through_ansible_with_a_writer_appending_all_along(wh, tmp_path):
    """The module (through Ansible) while a writer process appends a cycle every second (900 times the
    production rate): nothing the writer committed is lost, the duplicates are gone, every key is there once.
    (Every 0.3 s, on a loaded 2-core host, each of the 10 re-plans took longer than the gap between two appends
    and the run gave up, as it must: test_a_writer_that_always_wins_leaves_the_table_as_it_wrote_it.)"""
    table = wh.create("busy")
    for i in range(10):
        wh.offload(table, trades(i * 20000, 20000))
    for first in (30000, 90000, 150000):
        wh.offload(table, trades(first, 5000))
    log = str(tmp_path / "writer.jsonl")
    stop = str(tmp_path / "stop")
    proc = writer(wh, "cold.busy", 1000000, rows=200, count=1000, interval=1.0, log=log, stop_file=stop,
                  wait=False)
    try:
        deadline = time.time() + 30
        while not read_log(log) and time.time() < deadline:
            time.sleep(0.1)
        r = run_module("iceberg_dedupe", args(wh, "busy", max_attempts=10))
        time.sleep(2)
    finally:
        open(stop, "w").close()
        proc.wait(60)
    assert not r["failed"], r.get("msg")
    written = read_log(log)
    assert written and not [w for w in written if "error" in w], written[:3]
    assert r["plan"]["rows_to_remove"] == 15000
    counts = key_counts(load(wh, "busy"))
    assert set(counts.values()) == {1}
    expected = set(range(200000))
    for w in written:
        expected.update(range(w["first_seq"], w["first_seq"] + w["rows"]))
    assert set(counts) == expected
    committed = [w["snapshot_id"] for w in written]
    print("writer appends: %d; repair attempts: %s" % (len(written), r["stats"]["attempts"]))
    assert r["previous_snapshot_id"] in committed  # the writer had committed before the repair read
