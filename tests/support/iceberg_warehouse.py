# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A real pyiceberg warehouse in a temporary directory, shaped like the lab's.

SQL (sqlite) catalog at ``<root>/catalog.db``, warehouse ``file://<root>``,
namespace ``cold``, tables with the bronze trade columns (exchange_timestamp as
Iceberg ``timestamp`` without zone, sequence_number ``long``). Each append is one
offload cycle: its snapshot summary carries ``k2.watermark.max_timestamp`` (ISO,
naive UTC), ``k2.watermark.sequence_number`` and ``k2.source_table``, as the lab's
offload job writes them.
"""
import datetime
import os
import shutil

import pyarrow as pa
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.schema import Schema
from pyiceberg.types import DoubleType, LongType, NestedField, StringType, TimestampType

NAMESPACE = "cold"
BASE_TIME = datetime.datetime(2026, 2, 12, 0, 0, 0)

SCHEMA = Schema(
    NestedField(1, "exchange_timestamp", TimestampType(), required=False),
    NestedField(2, "sequence_number", LongType(), required=False),
    NestedField(3, "symbol", StringType(), required=False),
    NestedField(4, "side", StringType(), required=False),
    NestedField(5, "price", DoubleType(), required=False),
    NestedField(6, "quantity", DoubleType(), required=False),
)

ARROW_SCHEMA = pa.schema([
    pa.field("exchange_timestamp", pa.timestamp("us")),
    pa.field("sequence_number", pa.int64()),
    pa.field("symbol", pa.string()),
    pa.field("side", pa.string()),
    pa.field("price", pa.float64()),
    pa.field("quantity", pa.float64()),
])


def catalog_properties(root):
    return {"type": "sql", "uri": "sqlite:///%s/catalog.db" % root, "warehouse": "file://%s" % root}


def trades(first_seq, count, rows_per_second=4, base=BASE_TIME):
    """Arrow table of ``count`` trades with sequences first_seq.. and several rows per second.

    Row i has sequence first_seq + i and timestamp base + (first_seq + i) // rows_per_second
    seconds, so the pair grows with the sequence and seconds are shared.
    """
    import pyarrow.compute as pc
    seq = pa.array(range(first_seq, first_seq + count), type=pa.int64())
    base_us = int((base - datetime.datetime(1970, 1, 1)).total_seconds()) * 1000000
    ts_us = pc.add(pc.multiply(pc.divide(seq, rows_per_second), 1000000), base_us)
    ts = ts_us.cast(pa.timestamp("us"))
    sym = pa.array(["BTCUSDT", "ETHUSDT", "SOLUSDT"])
    side = pa.array(["buy", "sell"])
    idx3 = pc.cast(pc.divide(pc.cast(pc.bit_wise_and(seq, 3), pa.int32()), 2), pa.int32())
    symbol_col = pc.take(sym, pc.min_element_wise(idx3, 2))
    side_col = pc.take(side, pc.cast(pc.bit_wise_and(seq, 1), pa.int32()))
    price = pc.add(pc.cast(pc.bit_wise_and(seq, 1023), pa.float64()), 30000.0)
    qty = pc.divide(pc.cast(pc.add(pc.bit_wise_and(seq, 15), 1), pa.float64()), 100.0)
    return pa.Table.from_arrays([ts, seq, symbol_col, side_col, price, qty], schema=ARROW_SCHEMA)


def max_pair_of(table):
    """(naive datetime, int) greatest pair of an arrow trades table (test oracle, pure Python)."""
    rows = zip(table.column("exchange_timestamp").to_pylist(), table.column("sequence_number").to_pylist())
    return max(rows)


class Warehouse(object):
    def __init__(self, root):
        self.root = root
        self.catalog = SqlCatalog("default", **catalog_properties(root))
        try:
            self.catalog.create_namespace(NAMESPACE)
        except Exception:  # already there
            pass

    @property
    def properties(self):
        return catalog_properties(self.root)

    def create(self, name):
        ident = "%s.%s" % (NAMESPACE, name)
        try:
            self.catalog.drop_table(ident)
        except Exception:
            pass
        return self.catalog.create_table(ident, schema=SCHEMA,
                                         location="%s/%s/%s" % (self.root, NAMESPACE, name))

    def offload(self, table, data, source_table=None, watermark=None):
        """Append ``data`` as one offload cycle, with the watermark in the snapshot summary."""
        if watermark is None:
            watermark = max_pair_of(data)
        props = {
            "k2.watermark.max_timestamp": watermark[0].isoformat(sep=" "),
            "k2.watermark.sequence_number": str(watermark[1]),
            "k2.source_table": source_table or table.name()[-1],
        }
        table.append(data, snapshot_properties=props)
        return table

    def hadoop_copy(self, table, name):
        """A Hadoop-catalog table directory (metadata/vN.metadata.json, version-hint.text without
        newline) holding the current state of ``table``; data files are shared."""
        target = os.path.join(self.root, "hadoop", NAMESPACE, name)
        meta_dir = os.path.join(target, "metadata")
        os.makedirs(meta_dir, exist_ok=True)
        src = table.metadata_location
        if src.startswith("file://"):
            src = src[len("file://"):]
        version = len(table.metadata.metadata_log) + 1
        shutil.copy(src, os.path.join(meta_dir, "v%d.metadata.json" % version))
        with open(os.path.join(meta_dir, "version-hint.text"), "w") as f:
            f.write(str(version))
        return target


# ---------------------------------------------------------------------------
# pytest fixture (session-scoped): the cold tables the tests read.

def _fixture():
    import pytest

    @pytest.fixture(scope="session")
    def cold_tier(tmp_path_factory):
        """A warehouse with the planted cases; returns a dict of what each table holds.

        - clean: 3 offload cycles, 3,000 rows, no duplicates;
        - dups: 4 cycles where the 4th re-offloads 50 rows of the 2nd, plus one cycle
          holding the same key 3 times (a within-file duplicate);
        - past: the last append's rows go 25 rows past the watermark in its summary;
        - empty: created, never written (no snapshot);
        - hadoop: a Hadoop-layout directory holding 'dups' (version-hint.text, no newline).
        """
        root = str(tmp_path_factory.mktemp("warehouse"))
        wh = Warehouse(root)
        info = {"root": root, "properties": wh.properties, "warehouse": wh, "data": {}}

        clean = wh.create("clean")
        parts = [trades(0, 1000), trades(1000, 1000), trades(2000, 1000)]
        for part in parts:
            wh.offload(clean, part, source_table="bronze_trades_binance")
        info["data"]["clean"] = pa.concat_tables(parts)

        dups = wh.create("dups")
        parts = [trades(0, 1000), trades(1000, 1000), trades(2000, 1000), trades(1500, 50)]
        for part in parts:
            wh.offload(dups, part, source_table="bronze_trades_binance")
        triple = pa.concat_tables([trades(5000, 1)] * 3)
        wh.offload(dups, triple, source_table="bronze_trades_binance")
        parts.append(triple)
        info["data"]["dups"] = pa.concat_tables(parts)

        past = wh.create("past")
        parts = [trades(0, 1000), trades(1000, 1025)]
        wh.offload(past, parts[0])
        wh.offload(past, parts[1], watermark=max_pair_of(trades(1000, 1000)))
        info["data"]["past"] = pa.concat_tables(parts)
        info["past_watermark"] = max_pair_of(trades(1000, 1000))

        wh.create("empty")
        info["data"]["empty"] = ARROW_SCHEMA.empty_table()

        info["hadoop_dir"] = wh.hadoop_copy(dups, "dups")
        info["hadoop_warehouse"] = os.path.join(root, "hadoop")
        return info

    return cold_tier


cold_tier = _fixture()
