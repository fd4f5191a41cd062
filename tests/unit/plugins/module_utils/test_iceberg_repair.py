# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Unit tests of module_utils/iceberg_repair.py: the decisions, with no table (Arrow tables and
pyiceberg schemas built in memory), plus the Hadoop-layout commit's refusal of a taken version."""
import datetime
import os

import pyarrow as pa
import pytest
import yaml
from pyiceberg.schema import Schema
from pyiceberg.types import (DateType, DoubleType, ListType, LongType, NestedField, StringType,
                             TimestampType, TimestamptzType)

from ansible_collections.k2.iceberg_offload.plugins.doc_fragments import iceberg as ice_doc
from ansible_collections.k2.iceberg_offload.plugins.module_utils import iceberg
from ansible_collections.k2.iceberg_offload.plugins.module_utils import iceberg_scan
from ansible_collections.k2.iceberg_offload.plugins.module_utils import iceberg_repair as R
from ansible_collections.k2.iceberg_offload.plugins.modules import iceberg_dedupe
from tests.support.iceberg_warehouse import Warehouse, trades

SCHEMA = Schema(
    NestedField(1, "exchange_timestamp", TimestampType(), required=False),
    NestedField(2, "sequence_number", LongType(), required=False),
    NestedField(3, "symbol", StringType(), required=False),
    NestedField(4, "price", DoubleType(), required=False),
    NestedField(5, "day", DateType(), required=False),
    NestedField(6, "at_utc", TimestamptzType(), required=False),
    NestedField(7, "tags", ListType(8, StringType(), element_required=False), required=False),
)


# ---------------------------------------------------------------------------
# Options.

def test_key_columns_are_checked_against_the_schema():
    assert [f.name for f in R.check_key_columns(["sequence_number"], SCHEMA)] == ["sequence_number"]
    assert len(R.check_key_columns(["symbol", "exchange_timestamp"], SCHEMA)) == 2


@pytest.mark.parametrize("keys,msg", [
    ([], "at least one column"),
    (None, "at least one column"),
    (["nope"], "table has no column nope (key_columns); columns: exchange_timestamp, sequence_number"),
    (["sequence_number", "sequence_number"], "names sequence_number twice"),
    ([" "], "must be column names"),
    (["a\0b"], "must be column names"),
    ([7], "must be column names"),
    (["tags"], "must be a primitive type"),
    (["price"], "must be a primitive type"),
])
def test_bad_key_columns(keys, msg):
    with pytest.raises(R.RepairError, match=msg.replace("(", r"\(").replace(")", r"\)")):
        R.check_key_columns(keys, SCHEMA)


@pytest.mark.parametrize("window,low,high", [
    ({"column": "sequence_number", "from": 10, "to": 20}, 10, 20),
    ({"column": "sequence_number", "from": "10"}, 10, None),
    ({"column": "sequence_number", "to": 5, "from": 5}, 5, 5),
    ({"column": "exchange_timestamp", "from": "2026-02-12T12:00:00+02:00", "to": "2026-02-12T10:30:00Z"},
     datetime.datetime(2026, 2, 12, 10), datetime.datetime(2026, 2, 12, 10, 30)),
    ({"column": "at_utc", "to": "2026-02-12 10:00:00"}, None, datetime.datetime(2026, 2, 12, 10)),
    ({"column": "day", "from": "2026-02-11", "to": "2026-02-12"},
     datetime.date(2026, 2, 11), datetime.date(2026, 2, 12)),
    ({"column": "symbol", "from": "A", "to": "M"}, "A", "M"),
])
def test_windows(window, low, high):
    w = R.parse_window(window, SCHEMA)
    assert (w.low, w.high) == (low, high)
    assert w.as_dict()["column"] == window["column"]


def test_no_window_is_the_whole_table():
    assert R.parse_window(None, SCHEMA) is None
    assert R.parse_window({}, SCHEMA) is None


@pytest.mark.parametrize("window,msg", [
    ({"column": "sequence_number", "from": 20, "to": 10}, "window is not a range: from 20 is after to 10"),
    ({"column": "exchange_timestamp", "from": "2026-02-12T11:00:00Z", "to": "2026-02-12T12:00:00+02:00"},
     "window is not a range"),
    ({"column": "sequence_number"}, "window needs from, to or both"),
    ({"column": "sequence_number", "from": None, "to": None}, "window needs from, to or both"),
    ({"column": "sequence_number", "from": True}, "must be an integer"),
    ({"column": "sequence_number", "from": 1.5}, "must be an integer"),
    ({"column": "exchange_timestamp", "from": 1700000000}, "must be an ISO 8601 timestamp"),
    ({"column": "exchange_timestamp", "from": "2026-02-30"}, "ISO 8601"),
    ({"column": "day", "from": "someday"}, "must be a date"),
    ({"column": "symbol", "from": 3}, "must be a string"),
    ({"column": "price", "from": 1}, "a window needs a timestamp, date, integer or string column"),
    ({"column": "nope", "from": 1}, "table has no column nope (window.column)"),
    ({"column": "", "from": 1}, "window.column must name a column"),
    ({"from": 1}, "window.column must name a column"),
    ({"column": "sequence_number", "from": 1, "until": 2}, "unknown keys until"),
    ("sequence_number > 5", "window must be a dict"),
])
def test_windows_that_are_not_ranges(window, msg):
    with pytest.raises(R.RepairError) as e:
        R.parse_window(window, SCHEMA)
    assert msg in str(e.value)


def test_window_mask_and_expression():
    w = R.parse_window({"column": "sequence_number", "from": 2, "to": 4}, SCHEMA)
    assert w.mask(pa.array([1, 2, None, 4, 5], pa.int64())).to_pylist() == [False, True, False, True, False]
    assert "GreaterThanOrEqual" in repr(w.expression()) and "LessThanOrEqual" in repr(w.expression())
    only_high = R.parse_window({"column": "exchange_timestamp", "to": "2026-02-12T00:00:01Z"}, SCHEMA)
    ts = pa.array([datetime.datetime(2026, 2, 12), datetime.datetime(2026, 2, 12, 0, 0, 2)], pa.timestamp("us"))
    assert only_high.mask(ts).to_pylist() == [True, False]
    tz = R.parse_window({"column": "at_utc", "from": "2026-02-12T01:00:00+01:00"}, SCHEMA)
    aware = pa.array([datetime.datetime(2026, 2, 11, 23, 59, tzinfo=datetime.timezone.utc),
                      datetime.datetime(2026, 2, 12, 0, 0, tzinfo=datetime.timezone.utc)],
                     pa.timestamp("us", tz="UTC"))
    assert tz.mask(aware).to_pylist() == [False, True]
    assert only_high.describe() == "exchange_timestamp in [-inf, 2026-02-12 00:00:01]"


@pytest.mark.parametrize("conflict,sample,attempts,msg", [
    ("newest", 10, 3, "conflict must be one of refuse, keep_first, keep_last"),
    ("refuse", -1, 3, "sample_size must be between 0 and 1000"),
    ("refuse", 1001, 3, "sample_size must be between 0 and 1000"),
    ("refuse", True, 3, "sample_size"),
    ("refuse", 10, 0, "max_attempts must be between 1 and 10"),
    ("refuse", 10, 11, "max_attempts must be between 1 and 10"),
])
def test_bad_options(conflict, sample, attempts, msg):
    with pytest.raises(R.RepairError, match=msg):
        R.check_options(conflict, sample, attempts)


def test_refs_keep_commit_order():
    assert R.split_ref(R.make_ref(3, 17)) == (3, 17)
    assert R.make_ref(1, (1 << 40) - 1) < R.make_ref(2, 0)
    refs = R._Positions().refs(2, 5, 3).to_pylist()
    assert refs == [R.make_ref(2, 5), R.make_ref(2, 6), R.make_ref(2, 7)]


# ---------------------------------------------------------------------------
# Which copy stays.

def copies(rows):
    """rows: (key, price, rank, position)."""
    return pa.table({
        "sequence_number": pa.array([r[0] for r in rows], pa.int64()),
        "price": pa.array([r[1] for r in rows], pa.float64()),
        R._REF: pa.array([R.make_ref(r[2], r[3]) for r in rows], pa.int64()),
    })


def removed(result):
    return sorted(R.split_ref(x) for x in result[0].to_pylist())


ROWS = [(1, 10.0, 0, 5), (1, 10.0, 2, 0),                    # identical copies in two files
        (2, 20.0, 0, 6), (2, 20.5, 1, 0), (2, 20.0, 2, 1),  # three copies, one differs
        (3, 30.0, 1, 1), (3, 30.0, 1, 2)]                    # twice in one file


@pytest.mark.parametrize("policy,expected", [
    ("refuse", [(1, 0), (1, 2), (2, 0), (2, 1)]),
    ("keep_first", [(1, 0), (1, 2), (2, 0), (2, 1)]),
    ("keep_last", [(0, 6), (1, 0), (1, 2), (2, 0)]),
])
def test_choose_removals(policy, expected):
    result = R.choose_removals(copies(ROWS), ["sequence_number"], ["price"], policy)
    assert removed(result) == expected
    assert result[1].column("sequence_number").to_pylist() == [2]


def test_a_null_and_a_value_differ_and_two_nulls_do_not():
    rows = copies([(1, None, 0, 0), (1, 1.0, 1, 0), (2, None, 0, 1), (2, None, 1, 1)])
    remove, conflicts = R.choose_removals(rows, ["sequence_number"], ["price"], "keep_last")
    assert conflicts.column("sequence_number").to_pylist() == [1]
    assert sorted(R.split_ref(x) for x in remove.to_pylist()) == [(0, 0), (1, 1)]


def test_nested_columns_are_compared_by_value():
    t = pa.table({"k": [1, 1, 2, 2], "tags": [["a"], ["a"], ["a"], ["b"]],
                  R._REF: pa.array([R.make_ref(0, 0), R.make_ref(1, 0), R.make_ref(0, 1), R.make_ref(1, 1)],
                                   pa.int64())})
    _remove, conflicts = R.choose_removals(t, ["k"], ["tags"], "keep_first")
    assert conflicts.column("k").to_pylist() == [2]


def test_several_key_columns_and_no_other_column():
    t = pa.table({"a": [1, 1, 1], "b": ["x", "x", "y"],
                  R._REF: pa.array([R.make_ref(0, 0), R.make_ref(0, 1), R.make_ref(0, 2)], pa.int64())})
    remove, conflicts = R.choose_removals(t.slice(0, 2), ["a", "b"], [], "refuse")
    assert [R.split_ref(x) for x in remove.to_pylist()] == [(0, 1)] and conflicts.num_rows == 0


# ---------------------------------------------------------------------------
# Rollback decisions, summary, instructions.

def snap(sid, op="append", **summary):
    return {"snapshot_id": sid, "operation": op, "summary": summary}


def test_rollback_to_the_current_snapshot_does_nothing():
    assert R.rollback_decision(5, 5, [], False)["action"] == "none"


def test_rollback_over_repairs_only():
    chain = [snap(9, "overwrite", **{"k2.dedupe.rows_removed": "3"}),
             snap(8, "overwrite", **{"k2.dedupe.rows_removed": "1"})]
    d = R.rollback_decision(9, 7, chain, False)
    assert d["action"] == "rollback" and d["discarded_non_repair"] == []


def test_rollback_over_appends_is_refused_unless_told():
    chain = [snap(10, **{"added-records": "200"}), snap(9, **{"added-records": "100"}),
             snap(8, "overwrite", **{"k2.dedupe.rows_removed": "1"})]
    with pytest.raises(R.RepairError) as e:
        R.rollback_decision(10, 7, chain, False)
    assert "would also discard 2 later snapshot(s) that are not repairs (10 append, 9 append; 300 rows added)" \
        in str(e.value)
    assert "watermark_reset strategy cold_tier" in str(e.value)
    assert e.value.details["discarded"] == chain
    d = R.rollback_decision(10, 7, chain, True)
    assert d["action"] == "rollback" and [s["snapshot_id"] for s in d["discarded_non_repair"]] == [10, 9]


def test_summary_properties_and_rollback_instructions():
    plan = {"key_columns": ["sequence_number", "symbol"], "window_text": "sequence_number in [1, 2]",
            "conflict": "keep_last", "duplicated_keys": 4, "rows_to_remove": 5, "conflicting_keys": 1,
            "files_to_rewrite": [{}, {}]}
    props = R.summary_properties(plan, 123, 1)
    assert props == {
        "k2.operation": "dedupe", "k2.dedupe.key_columns": "sequence_number,symbol",
        "k2.dedupe.window": "sequence_number in [1, 2]", "k2.dedupe.conflict": "keep_last",
        "k2.dedupe.duplicated_keys": "4", "k2.dedupe.rows_removed": "5", "k2.dedupe.conflicting_keys": "1",
        "k2.dedupe.files_rewritten": "2", "k2.dedupe.files_added": "1", "k2.dedupe.replaces_snapshot_id": "123"}
    assert all(isinstance(v, str) for v in props.values())
    how = R.rollback_instructions("cold.t", 123)
    assert how["module_args"] == {"rollback_to_snapshot": 123}
    assert how["spark_sql"] == "CALL <catalog>.system.rollback_to_snapshot('cold.t', 123)"


@pytest.mark.parametrize("value,expected", [
    (datetime.datetime(2026, 2, 12, 1, 2, 3), "2026-02-12 01:02:03"),
    (datetime.datetime(2026, 2, 12, 3, 2, 3, tzinfo=datetime.timezone(datetime.timedelta(hours=2))),
     "2026-02-12 01:02:03"),
    (datetime.date(2026, 2, 12), "2026-02-12"), (b"\x01\xff", "01ff"), (5, 5), ("x", "x"), (None, None),
])
def test_jsonable(value, expected):
    assert R._jsonable(value) == expected


# ---------------------------------------------------------------------------
# The Hadoop-layout commit: a version another writer created is never replaced.

def test_hadoop_commit_refuses_a_version_created_meanwhile(tmp_path):
    wh = Warehouse(str(tmp_path))
    table = wh.create("t")
    wh.offload(table, trades(0, 10))
    directory = wh.hadoop_copy(table, "t")
    stale = iceberg.open_table(table_location=directory, for_write=True)
    other = iceberg.open_table(table_location=directory, for_write=True)
    other.append(trades(10, 10))
    taken = other.metadata_location
    with open(taken) as f:
        content = f.read()
    # our commit reads the state it started from, as if the other writer were not done yet
    stale.catalog.load_table = lambda identifier: stale
    with pytest.raises(Exception) as e:
        stale.append(trades(20, 10))
    assert "another writer committed" in str(e.value) and os.path.basename(taken) in str(e.value)
    with open(taken) as f:
        assert f.read() == content
    assert not [n for n in os.listdir(os.path.dirname(taken)) if n.endswith(".tmp")]


def test_bare_metadata_files_and_object_stores_cannot_take_commits(tmp_path):
    with pytest.raises(iceberg.IcebergError, match="a .metadata.json file alone cannot take a commit"):
        iceberg.open_table(table_location=str(tmp_path / "v1.metadata.json"), for_write=True)
    with pytest.raises(iceberg.IcebergError, match="local file system only, not s3"):
        iceberg.open_table(table_location="s3://bucket/warehouse/cold/t", for_write=True)


# ---------------------------------------------------------------------------
# The module's documentation matches its argument spec.

def test_every_option_is_documented():
    documented = dict(yaml.safe_load(iceberg_dedupe.DOCUMENTATION)["options"])
    documented.update(yaml.safe_load(ice_doc.ModuleDocFragment.DOCUMENTATION)["options"])
    source = open(iceberg_dedupe.__file__).read()
    for name in ("table", "key_columns", "window", "conflict", "sample_size", "max_attempts",
                 "rollback_to_snapshot", "discard_later_snapshots", "iceberg_catalog",
                 "iceberg_catalog_properties", "iceberg_catalog_secrets", "iceberg_table_location"):
        assert name in documented, name
    for name in set(documented) - set(iceberg.iceberg_argument_spec()):
        assert "%s=dict(" % name in source, name
    assert set(documented["window"]["suboptions"]) == {"column", "from", "to"}
    assert documented["conflict"]["choices"] == list(R.CONFLICT_POLICIES)
    ret = yaml.safe_load(iceberg_dedupe.RETURN)
    assert all("description" in v and "returned" in v and "type" in v for v in ret.values())
    assert isinstance(yaml.safe_load(iceberg_dedupe.EXAMPLES), list)


# ---------------------------------------------------------------------------
# Cutting a large overlap group into key ranges.

class _File(object):
    def __init__(self, lo, hi, rows):
        from pyiceberg.conversions import to_bytes
        self.lower_bounds = {2: to_bytes(LongType(), lo)} if lo is not None else {}
        self.upper_bounds = {2: to_bytes(LongType(), hi)} if hi is not None else {}
        self.record_count = rows
        self.file_path = "f%s-%s" % (lo, hi)


class _Task(object):
    def __init__(self, lo, hi, rows):
        self.file = _File(lo, hi, rows)


def test_a_small_group_is_not_cut():
    group = [_Task(0, 99, 100), _Task(50, 149, 100)]
    assert R.split_group(group, SCHEMA.find_field("sequence_number"), max_rows=200) == [(group, None)]


def test_a_large_group_is_cut_into_ranges_that_cover_it():
    wide = _Task(0, 999, 1000)
    group = [_Task(i * 100, i * 100 + 99, 100) for i in range(10)] + [wide]
    parts = R.split_group(group, SCHEMA.find_field("sequence_number"), max_rows=500)
    assert [r for _t, r in parts] == [(0, 249), (250, 499), (500, 749), (750, 999)]
    for tasks, (low, high) in parts:
        assert wide in tasks
        assert all(t.file.lower_bounds and (t is wide or (low <= R._raw_bound(t, SCHEMA.find_field(
            "sequence_number"), True) and R._raw_bound(t, SCHEMA.find_field("sequence_number"), False) <= high))
            for t in tasks)
    assert len(parts[0][0]) == 4  # files 0, 1, 2 and the wide one


def test_groups_without_bounds_or_integer_keys_are_not_cut():
    group = [_Task(0, 99, 1000), _Task(None, None, 1000)]
    assert R.split_group(group, SCHEMA.find_field("sequence_number"), max_rows=10) == [(group, None)]
    assert R.split_group(group[:1], SCHEMA.find_field("symbol"), max_rows=10) == [(group[:1], None)]


def test_cut_groups_find_the_same_plan(tmp_path):
    wh = Warehouse(str(tmp_path))
    table = wh.create("t")
    for i in range(6):
        wh.offload(table, trades(i * 1000, 1000))
    wh.offload(table, trades(500, 4000))   # a wide re-offload: one group of everything
    wh.offload(table, pa.concat_tables([trades(2500, 3)] * 2))
    whole, _i1 = R.find_duplicates(table, ["sequence_number"], sample_size=5)
    cut, internal = R.find_duplicates(table, ["sequence_number"], sample_size=5, max_group_rows=1500)
    assert whole["key_ranges"] == whole["overlap_groups"] == 2 and cut["key_ranges"] > 4
    for key in ("duplicated_keys", "rows_to_remove", "files_to_rewrite", "sample", "rows_scanned"):
        assert whole[key] == cut[key], key
    assert whole["duplicated_keys"] == 4000 and whole["rows_to_remove"] == 4006
    assert sum(len(p) for p in internal["remove"].values()) == 4006


@pytest.mark.parametrize("window", [
    {"column": "exchange_timestamp", "from": "2026-02-12T00:00:00Z", "to": "2026-02-13T00:00:00Z"},
    {"column": "at_utc", "from": "2026-02-12T00:00:00+01:00"},
    {"column": "day", "to": "2026-02-12"},
    {"column": "sequence_number", "from": 1, "to": 2},
    {"column": "symbol", "from": "A"},
])
def test_window_expressions_bind_to_the_schema(window):
    from pyiceberg.expressions.visitors import bind
    assert "Bound" in repr(bind(SCHEMA, R.parse_window(window, SCHEMA).expression(), True))


def test_peak_rss_is_this_process_not_its_parent():
    import subprocess
    import sys
    ballast = bytearray(300 * 1024 * 1024)
    for i in range(0, len(ballast), 4096):
        ballast[i] = 1
    # The child imports the collection from where this process did: .collections in a
    # checkout, ansible-test's tree under ansible-test units.
    collections_root = iceberg.__file__
    for dummy in range(6):  # .../ansible_collections/k2/iceberg_offload/plugins/module_utils/iceberg.py
        collections_root = os.path.dirname(collections_root)
    code = ("import sys; sys.path[:0] = %r; from ansible_collections.k2.iceberg_offload.plugins.module_utils "
            "import iceberg_scan; print(iceberg_scan.peak_rss_bytes())" % ([collections_root],))
    child = int(subprocess.check_output([sys.executable, "-c", code]).decode().split()[-1])
    assert child < 250 * 1024 * 1024 < iceberg_scan.peak_rss_bytes()
    del ballast
