# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""iceberg_table_info against a real pyiceberg warehouse (SQL catalog, Hadoop layout, metadata file).

Expected answers come from the Arrow data the fixture wrote (the oracle), never from a scan.
"""
import collections
import json
import os

import pytest

from ansible_collections.k2.iceberg_offload.plugins.module_utils import iceberg

from ansible_collections.k2.iceberg_offload.plugins.module_utils import iceberg_scan
from ansible_collections.k2.iceberg_offload.plugins.module_utils.watermark import Watermark
from tests.support.ansible_module import run_module


def oracle(data, watermark=None):
    ts = data.column("exchange_timestamp").to_pylist()
    seq = data.column("sequence_number").to_pylist()
    pairs = list(zip(ts, seq))
    counts = collections.Counter(seq)
    out = {
        "rows": len(pairs),
        "max_pair": max(pairs) if pairs else None,
        "duplicate_rows": sum(c - 1 for c in counts.values() if c > 1),
        "duplicated": dict((k, c) for k, c in counts.items() if c > 1),
    }
    if watermark is not None:
        past = [p for p in pairs if p > tuple(watermark)]
        out["past_rows"] = len(past)
        out["past_max"] = max(past) if past else None
    return out


def pair_dict(pair):
    return {"max_timestamp": pair[0].isoformat(sep=" "), "sequence_number": pair[1]} if pair else None


def cat(cold_tier, **extra):
    args = {"iceberg_catalog_properties": cold_tier["properties"]}
    args.update(extra)
    return args


def test_clean_table(cold_tier):
    r = run_module("iceberg_table_info", cat(cold_tier, table="cold.clean"))
    assert not r["failed"], r.get("msg")
    o = oracle(cold_tier["data"]["clean"])
    assert r["row_count"] == o["rows"] == 3000
    assert r["max_pair"] == pair_dict(o["max_pair"])
    assert r["duplicates"]["duplicate_rows"] == 0 and r["duplicates"]["sample"] == []
    assert r["duplicates"]["overlap_groups"] == 3
    assert r["past_watermark"] is None
    snap = r["latest_snapshot"]
    assert snap["operation"] == "append"
    assert snap["watermark"] == pair_dict(o["max_pair"])
    assert snap["source_table"] == "bronze_trades_binance"
    assert snap["summary"]["k2.watermark.sequence_number"] == str(o["max_pair"][1])
    assert r["scan"]["data_files"] == 3 and r["scan"]["peak_rss_bytes"] > 0
    assert r["changed"] is False


def test_planted_duplicates_are_found(cold_tier):
    r = run_module("iceberg_table_info", cat(cold_tier, table="cold.dups", duplicate_sample_size=5))
    assert not r["failed"], r.get("msg")
    o = oracle(cold_tier["data"]["dups"])
    d = r["duplicates"]
    assert d["duplicate_rows"] == o["duplicate_rows"] == 52
    assert d["duplicated_keys"] == len(o["duplicated"]) == 51
    assert d["sample"][0] == {"key": 5000, "count": 3}
    assert len(d["sample"]) == 5
    for item in d["sample"]:
        assert o["duplicated"][item["key"]] == item["count"]
    assert r["row_count"] == o["rows"]
    assert r["max_pair"] == pair_dict(o["max_pair"])


def test_rows_past_the_snapshot_watermark(cold_tier):
    first = run_module("iceberg_table_info", cat(cold_tier, table="cold.past", duplicates=False))
    wm = first["latest_snapshot"]["watermark"]
    assert wm == pair_dict(cold_tier["past_watermark"])
    r = run_module("iceberg_table_info", cat(cold_tier, table="cold.past", duplicates=False,
                                             watermark=wm), check=True)
    o = oracle(cold_tier["data"]["past"], cold_tier["past_watermark"])
    assert r["past_watermark"]["rows"] == o["past_rows"] == 25
    assert r["past_watermark"]["max_pair"] == pair_dict(o["past_max"])
    assert r["duplicates"] is None


def test_watermark_with_offset(cold_tier):
    ts, seq = cold_tier["past_watermark"]
    shifted = (ts.replace(hour=(ts.hour + 3) % 24)).isoformat() + "+03:00"
    assert ts.hour < 21
    r = run_module("iceberg_table_info", cat(cold_tier, table="cold.past", duplicates=False,
                                             watermark={"max_timestamp": shifted, "sequence_number": seq}))
    assert r["past_watermark"]["rows"] == 25


def test_empty_table_is_empty_not_zero(cold_tier):
    r = run_module("iceberg_table_info", cat(cold_tier, table="cold.empty", watermark={
        "max_timestamp": "2026-01-01T00:00:00Z", "sequence_number": 0}))
    assert not r["failed"], r.get("msg")
    assert r["row_count"] == 0 and r["max_pair"] is None and r["min_timestamp"] is None
    assert r["latest_snapshot"] is None and r["latest_watermark_snapshot"] is None
    assert r["past_watermark"]["rows"] == 0 and r["past_watermark"]["max_pair"] is None
    assert r["duplicates"]["duplicate_rows"] == 0


@pytest.mark.parametrize("how", ["directory", "metadata_file", "hadoop_catalog"])
def test_hadoop_layout_without_a_catalog(cold_tier, how):
    with open(os.path.join(cold_tier["hadoop_dir"], "metadata", "version-hint.text"), "rb") as f:
        assert not f.read().endswith(b"\n")
    if how == "directory":
        args = {"iceberg_table_location": cold_tier["hadoop_dir"]}
    elif how == "metadata_file":
        meta = os.path.join(cold_tier["hadoop_dir"], "metadata")
        args = {"iceberg_table_location": os.path.join(
            meta, [f for f in os.listdir(meta) if f.endswith(".metadata.json")][0])}
    else:
        args = {"table": "cold.dups", "iceberg_catalog_properties": {
            "type": "hadoop", "warehouse": "file://" + cold_tier["hadoop_warehouse"]}}
    r = run_module("iceberg_table_info", args)
    assert not r["failed"], r.get("msg")
    o = oracle(cold_tier["data"]["dups"])
    assert r["row_count"] == o["rows"]
    assert r["duplicates"]["duplicate_rows"] == o["duplicate_rows"]
    assert r["table"]["metadata_location"].endswith(".metadata.json")


def test_cold_tier_helpers(cold_tier):
    props = cold_tier["properties"]
    for name in ("clean", "dups", "past"):
        table = iceberg.open_table("cold." + name, catalog_properties=props)
        assert iceberg_scan.cold_tier_max_pair(table) == Watermark(*oracle(cold_tier["data"][name])["max_pair"])
    assert iceberg_scan.cold_tier_max_pair(iceberg.open_table("cold.empty", catalog_properties=props)) is None
    past = iceberg.open_table("cold.past", catalog_properties=props)
    snap = iceberg.latest_watermark_snapshot(past)
    assert iceberg.snapshot_watermark(snap) == Watermark(*cold_tier["past_watermark"])


def _broken_dirs(root):
    no_meta = os.path.join(root, "broken", "no_meta")
    os.makedirs(no_meta, exist_ok=True)
    junk = os.path.join(root, "broken", "junk_hint")
    os.makedirs(os.path.join(junk, "metadata"), exist_ok=True)
    with open(os.path.join(junk, "metadata", "version-hint.text"), "w") as f:
        f.write("../../../etc/passwd")
    missing = os.path.join(root, "broken", "missing_version")
    os.makedirs(os.path.join(missing, "metadata"), exist_ok=True)
    with open(os.path.join(missing, "metadata", "version-hint.text"), "w") as f:
        f.write("7")
    return no_meta, junk, missing


HOSTILE = [
    ({"table": "bronze_trades_binance"}, "namespace.table"),
    ({"table": "cold..x"}, "namespace.table"),
    ({"table": "../../etc.passwd"}, "namespace.table"),
    ({"table": "cold.no_such_table"}, "not found"),
    ({"table": "nope.bronze"}, "not found"),
    ({"table": None}, "one of the following is required: table, iceberg_table_location"),
    ({"table": "cold.clean", "key_column": "no_such_column"}, "has no column no_such_column"),
    ({"table": "cold.clean", "timestamp_column": "symbol"}, "must be an Iceberg timestamp"),
    ({"table": "cold.clean", "sequence_column": "price"}, "must be an Iceberg long"),
    ({"table": "cold.clean", "key_column": " "}, "key_column must be a column name"),
    ({"table": "cold.clean", "duplicate_sample_size": -1}, "between 0 and 1000"),
    ({"table": "cold.clean", "duplicate_sample_size": 100000}, "between 0 and 1000"),
    ({"table": "cold.clean", "watermark": {"max_timestamp": "not a time", "sequence_number": 1}},
     "ISO 8601"),
    ({"table": "cold.clean", "watermark": {"max_timestamp": "2026-02-12T00:00:00Z",
                                           "sequence_number": -5}}, "between 0 and"),
    ({"table": "cold.clean", "iceberg_catalog_properties": {"type": "no_such_catalog_type"}},
     "cannot open Iceberg table"),
    ({"table": "cold.clean", "iceberg_catalog_properties": {"type": "hadoop"}}, "needs a warehouse"),
    ({"iceberg_table_location": "/nonexistent/k2/table"}, "is not a directory"),
    ("no_meta", "has no metadata/version-hint.text"),
    ("junk_hint", "not a version number"),
    ("missing_version", "which does not exist"),
]


@pytest.mark.parametrize("args,expected", HOSTILE, ids=[str(i) for i in range(len(HOSTILE))])
def test_hostile_or_malformed_input_is_refused_clearly(cold_tier, args, expected):
    if isinstance(args, str):
        dirs = dict(zip(("no_meta", "junk_hint", "missing_version"), _broken_dirs(cold_tier["root"])))
        args = {"iceberg_table_location": dirs[args]}
    full = cat(cold_tier)
    full.update(args)
    full = dict((k, v) for k, v in full.items() if v is not None)
    r = run_module("iceberg_table_info", full)
    assert r["failed"] is True, json.dumps(r)[:2000]
    assert expected in r["msg"], r["msg"]
    assert "Traceback" not in r["msg"]


def test_a_missing_data_file_is_reported_not_a_traceback(cold_tier):
    wh = cold_tier["warehouse"]
    from tests.support.iceberg_warehouse import trades
    table = wh.create("lost_file")
    wh.offload(table, trades(0, 100))
    wh.offload(table, trades(100, 100))
    victim = next(iter(table.scan().plan_files())).file.file_path
    os.remove(victim[len("file://"):] if victim.startswith("file://") else victim)
    r = run_module("iceberg_table_info", cat(cold_tier, table="cold.lost_file"))
    assert r["failed"] is True
    assert r["msg"].startswith("reading Iceberg table cold.lost_file failed: ")
    assert os.path.basename(victim) in r["msg"] or "No such file" in r["msg"] or "not found" in r["msg"].lower(), r["msg"]
