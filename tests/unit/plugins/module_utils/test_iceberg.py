# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Unit tests of module_utils/iceberg.py: locating metadata, overlap groups, the scan's arithmetic.

The scan tests use a small real warehouse in tmp (local files, no server).
"""
import collections
import datetime
import os

import pyarrow as pa
import pytest

from ansible_collections.k2.iceberg_offload.plugins.module_utils import iceberg

from ansible_collections.k2.iceberg_offload.plugins.module_utils import iceberg_scan
from ansible_collections.k2.iceberg_offload.plugins.module_utils.watermark import Watermark
from tests.support.iceberg_warehouse import Warehouse, max_pair_of, trades


def write_hint(tmp_path, content, versions=("v3.metadata.json",)):
    meta = tmp_path / "t" / "metadata"
    meta.mkdir(parents=True)
    (meta / "version-hint.text").write_bytes(content)
    for v in versions:
        (meta / v).write_text("{}")
    return str(tmp_path / "t")


@pytest.mark.parametrize("content", [b"3", b"3\n", b" 3 \n"])
def test_version_hint_with_or_without_newline(tmp_path, content):
    d = write_hint(tmp_path, content)
    assert iceberg.resolve_hadoop_metadata(d) == os.path.join(d, "metadata", "v3.metadata.json")
    assert iceberg.resolve_hadoop_metadata("file://" + d).endswith("/metadata/v3.metadata.json")


def test_version_hint_naming_a_file(tmp_path):
    d = write_hint(tmp_path, b"00003-abc.metadata.json", versions=("00003-abc.metadata.json",))
    assert iceberg.resolve_hadoop_metadata(d).endswith("00003-abc.metadata.json")


@pytest.mark.parametrize("content,msg", [
    (b"../../etc/passwd", "not a version number"),
    (b"", "not a version number"),
    (b"x/y.metadata.json", "not a version number"),
    (b"9", "which does not exist"),
])
def test_bad_version_hints(tmp_path, content, msg):
    d = write_hint(tmp_path, content)
    with pytest.raises(iceberg.IcebergError, match=msg):
        iceberg.resolve_hadoop_metadata(d)


@pytest.mark.parametrize("location,msg", [
    ("", "must be a directory"), (None, "must be a directory"), ("/nonexistent/x", "not a directory"),
    ("/tmp/a\0b", "NUL"),
])
def test_bad_locations(location, msg):
    with pytest.raises(iceberg.IcebergError, match=msg):
        iceberg.resolve_hadoop_metadata(location)


def test_metadata_file_is_taken_as_is():
    assert iceberg.resolve_hadoop_metadata("/w/t/metadata/v9.metadata.json") == "/w/t/metadata/v9.metadata.json"


@pytest.mark.parametrize("ident", ["t", "", ".t", "ns.", "a..b", "../x.y", " ns.t", None, "ns/x.t"])
def test_bad_identifiers(ident):
    with pytest.raises(iceberg.IcebergError):
        iceberg.split_identifier(ident)


class _File(object):
    def __init__(self, lo, hi, name):
        from pyiceberg.conversions import to_bytes
        from pyiceberg.types import LongType
        self.lower_bounds = {2: to_bytes(LongType(), lo)} if lo is not None else {}
        self.upper_bounds = {2: to_bytes(LongType(), hi)} if hi is not None else {}
        self.name = name


class _Task(object):
    def __init__(self, lo, hi, name):
        self.file = _File(lo, hi, name)


def _key_field():
    from pyiceberg.types import LongType, NestedField
    return NestedField(2, "sequence_number", LongType(), required=False)


def names(groups):
    return [[t.file.name for t in g] for g in groups]


def test_overlap_groups_split_disjoint_files_and_join_overlaps():
    tasks = [_Task(0, 99, "a"), _Task(200, 299, "c"), _Task(100, 199, "b"), _Task(150, 160, "re"),
             _Task(299, 310, "edge")]
    assert names(iceberg_scan.overlap_groups(tasks, _key_field())) == [["a"], ["b", "re"], ["c", "edge"]]


def test_overlap_groups_without_bounds_is_one_group():
    tasks = [_Task(0, 99, "a"), _Task(None, None, "nobounds"), _Task(200, 299, "c")]
    assert names(iceberg_scan.overlap_groups(tasks, _key_field())) == [["a", "c", "nobounds"]]


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    wh = Warehouse(str(tmp_path_factory.mktemp("wh")))
    t = wh.create("t")
    parts = [trades(0, 500), trades(500, 500), trades(250, 10), trades(900, 1), trades(900, 1)]
    for p in parts:
        wh.offload(t, p)
    return wh, t, pa.concat_tables(parts)


@pytest.mark.parametrize("window", [1, 2, 16])
def test_scan_matches_a_python_oracle(small, window):
    table, data = small[1], small[2]
    wm = (datetime.datetime(2026, 2, 12, 0, 3, 0), 721)
    r = iceberg_scan.scan_table(table, watermark=Watermark(*wm), sample_size=3, window_files=window)
    seqs = data.column("sequence_number").to_pylist()
    pairs = list(zip(data.column("exchange_timestamp").to_pylist(), seqs))
    counts = collections.Counter(seqs)
    assert r["row_count"] == len(pairs)
    assert r["max_pair"] == Watermark(*max(pairs))
    assert r["min_timestamp"] == min(pairs)[0]
    assert r["duplicates"]["duplicate_rows"] == sum(c - 1 for c in counts.values() if c > 1) == 12
    assert r["duplicates"]["duplicated_keys"] == 11
    assert r["duplicates"]["sample"][0] == {"key": 900, "count": 3}
    assert len(r["duplicates"]["sample"]) == 3
    past = [p for p in pairs if p > wm]
    assert r["past_watermark"]["rows"] == len(past)
    assert r["past_watermark"]["max_pair"] == Watermark(*max(past))
    assert r["scan"]["data_files"] == 5


def test_scan_without_duplicates_check(small):
    table, data = small[1], small[2]
    r = iceberg_scan.scan_table(table, duplicates=False)
    assert r["duplicates"] is None and r["row_count"] == data.num_rows


@pytest.mark.parametrize("kw,msg", [
    (dict(key_col="nope"), "has no column nope"),
    (dict(ts_col="symbol"), "must be an Iceberg timestamp"),
    (dict(seq_col="price"), "must be an Iceberg long"),
    (dict(sample_size=-1), "between 0 and 1000"),
    (dict(sample_size=True), "between 0 and 1000"),
    (dict(watermark=("2026-01-01", 1)), "must be a Watermark"),
])
def test_scan_refuses_bad_arguments(small, kw, msg):
    with pytest.raises(iceberg.IcebergError, match=msg):
        iceberg_scan.scan_table(small[1], **kw)


def test_cold_tier_max_pair_prunes_but_agrees(small):
    table, data = small[1], small[2]
    assert iceberg_scan.cold_tier_max_pair(table) == Watermark(*max_pair_of(data))


def test_snapshot_watermark_ignores_broken_properties(small):
    wh = small[0]
    t = wh.create("broken")
    wh.offload(t, trades(0, 10))
    good = t.current_snapshot()
    t.append(trades(10, 5), snapshot_properties={
        "k2.watermark.max_timestamp": "garbage", "k2.watermark.sequence_number": "1"})
    assert iceberg.snapshot_watermark(t.current_snapshot()) is None
    assert iceberg.latest_watermark_snapshot(t).snapshot_id == good.snapshot_id
    described = iceberg.describe_snapshot(t.current_snapshot())
    assert described["watermark"] is None and described["summary"]["operation"] == "append"


def test_secrets_are_no_log():
    assert iceberg.iceberg_argument_spec()["iceberg_catalog_secrets"]["no_log"] is True


def test_scan_memory_stays_at_a_window_not_the_table(tmp_path):
    """2 M rows in 40 appends: the scan's Arrow peak stays well under the two columns' full size."""
    wh = Warehouse(str(tmp_path))
    t = wh.create("big")
    per = 50000
    for i in range(40):
        wh.offload(t, trades(i * per, per))
    full_two_columns = 40 * per * 16  # timestamp + sequence, 8 bytes each: 32 MB
    r = iceberg_scan.scan_table(t, window_files=2)
    assert r["row_count"] == 40 * per
    assert r["duplicates"]["duplicate_rows"] == 0
    assert r["duplicates"]["overlap_groups"] == 40
    assert r["scan"]["arrow_peak_bytes"] < full_two_columns / 4, r["scan"]


def test_duplicates_of_a_timestamp_key_are_reported_as_text(small):
    r = iceberg_scan.scan_table(small[1], key_col="exchange_timestamp", sample_size=2)
    # 4 rows share each second in the fixture, so every timestamp repeats.
    assert r["duplicates"]["sample"][0]["count"] >= 4
    assert isinstance(r["duplicates"]["sample"][0]["key"], str)
