# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""watermark_reset from outside the watermark table, against a real PostgreSQL, ClickHouse and
pyiceberg warehouse: cold_tier, lookback, and the refusal to move past the source."""
import datetime
import uuid

import pyarrow as pa
import pytest

from tests.support.clickhouse_server import create_trades_table, insert_trades
from tests.support.iceberg_warehouse import Warehouse, trades

SECONDS_48H = 48 * 3600


def utcnow():
    return datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None, microsecond=0)


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory):
    return Warehouse(str(tmp_path_factory.mktemp("reset-warehouse")))


@pytest.fixture
def source(clickhouse):
    """A source table: a row every 10 minutes over the last 48 h (none within 5 min of now-24h),
    two rows per timestamp; returns its name and rows [(ts, seq)]."""
    name = "rs_%s" % uuid.uuid4().hex[:10]
    url, db = clickhouse["url"], clickhouse["database"]
    auth = (clickhouse["user"], clickhouse["password"])
    create_trades_table(url, db, name, *auth)
    start = utcnow() - datetime.timedelta(seconds=SECONDS_48H - 300)
    rows, seq = [], 0
    for k in range(288):
        ts = start + datetime.timedelta(seconds=600 * k)
        if ts > utcnow():
            break
        rows.extend([(ts, seq + 1), (ts, seq + 2)])
        seq += 2
    insert_trades(url, db, name, [(ts.strftime("%Y-%m-%d %H:%M:%S"), s, "BTCUSDT", "buy", 1.0, 1.0)
                                  for ts, s in rows], *auth)
    return {"name": name, "rows": rows, "clickhouse": clickhouse}


def cold_copy(warehouse, name, rows):
    """The cold tier holding ``rows`` (a prefix of the source), as the offload job writes it."""
    table = warehouse.create(name)
    if rows:
        data = trades(rows[0][1], len(rows))
        data = data.set_column(0, "exchange_timestamp", pa.array([r[0] for r in rows], type=pa.timestamp("us")))
        warehouse.offload(table, data, source_table=name)
    return table


def ch_args(source):
    c = source["clickhouse"]
    return {"clickhouse_url": c["url"], "clickhouse_database": c["database"],
            "clickhouse_user": c["user"], "clickhouse_password": c["password"]}


def ice_args(warehouse):
    return {"iceberg_catalog": "default", "iceberg_catalog_properties": warehouse.properties}


def pair(row):
    return {"max_timestamp": row[0].isoformat(sep=" "), "sequence_number": row[1]}


def test_cold_tier_takes_the_greatest_pair_the_cold_tier_holds(wdb, source, warehouse):
    cold_copy(warehouse, source["name"], source["rows"][:100])
    args = dict(tables=[source["name"]], strategy="cold_tier", **ch_args(source), **ice_args(warehouse))
    plan = wdb.run("watermark_reset", check=True, **args)
    assert not plan["failed"], plan.get("msg")
    assert plan["changed"] and not wdb.exists(wdb.table)  # check mode: the table is not even created
    result = wdb.run("watermark_reset", diff=True, **args)
    assert not result["failed"], result.get("msg")
    t = result["tables"][0]
    assert t["after"] == pair(source["rows"][99])
    assert t["source"]["strategy"] == "cold_tier" and t["source"]["source_checked"]
    assert t["source"]["source_greatest_pair"] == pair(source["rows"][-1])
    assert result["diff"]["after"][source["name"]]["latest"] == pair(source["rows"][99])
    rows = wdb.rows()
    assert [(r[1], r[2], r[3]) for r in rows] == [(source["name"], source["rows"][99][0], source["rows"][99][1])]
    again = wdb.run("watermark_reset", **args)
    assert not again["failed"] and not again["changed"]
    assert len(wdb.rows()) == 1
    assert [a[0] for a in wdb.audit()].count("k2.iceberg_offload.watermark_reset") >= 2


def test_cold_tier_refuses_an_empty_cold_table_and_writes_nothing(wdb, source, warehouse):
    cold_copy(warehouse, source["name"], [])
    r = wdb.run("watermark_reset", tables=[source["name"]], strategy="cold_tier", **ch_args(source),
                **ice_args(warehouse))
    assert r["failed"] and "holds no rows" in r["msg"] and "nothing was written" in r["msg"]
    assert not wdb.exists(wdb.table)


def test_lookback_takes_the_greatest_real_pair_before_the_cutoff(wdb, source):
    r = wdb.run("watermark_reset", tables=[source["name"]], strategy="lookback", lookback="24h",
                **ch_args(source))
    assert not r["failed"], r.get("msg")
    cutoff = utcnow() - datetime.timedelta(hours=24)
    expected = max(row for row in source["rows"] if row[0] < cutoff)
    assert r["tables"][0]["after"] == pair(expected)
    assert r["tables"][0]["source"]["strategy"] == "lookback"
    assert r["tables"][0]["source"]["lookback_seconds"] == 86400


def test_lookback_refuses_a_source_with_nothing_before_the_cutoff(wdb, source):
    r = wdb.run("watermark_reset", tables=[source["name"]], strategy="lookback", lookback="72h",
                **ch_args(source))
    assert r["failed"] and "no row before" in r["msg"]
    assert not wdb.exists(wdb.table)


def test_a_target_past_the_source_is_refused_unless_allowed(wdb, source):
    wdb.create_table()
    past = source["rows"][-1][0] + datetime.timedelta(minutes=5)
    args = dict(tables=[source["name"]], strategy="pair", max_timestamp=past.isoformat(), sequence_number=1,
                **ch_args(source))
    r = wdb.run("watermark_reset", **args)
    assert r["failed"] and "past the greatest pair" in r["msg"] and "allow_past_source" in r["msg"]
    assert wdb.rows() == []
    r = wdb.run("watermark_reset", allow_past_source=True, **args)
    assert not r["failed"] and r["changed"]
    assert len(wdb.rows()) == 1


def test_without_clickhouse_the_module_warns_that_it_did_not_check(wdb):
    r = wdb.run("watermark_reset", tables=["bronze_trades_binance"], strategy="pair",
                max_timestamp="2026-02-12T10:00:00Z", sequence_number=5)
    assert not r["failed"], r.get("msg")
    assert any("not checked against the source" in w for w in r.get("warnings", []))
    assert r["tables"][0]["source"]["source_checked"] is False


def test_an_empty_source_refuses_any_target(wdb, source, clickhouse):
    name = "rs_empty_%s" % uuid.uuid4().hex[:8]
    create_trades_table(clickhouse["url"], clickhouse["database"], name, clickhouse["user"], clickhouse["password"])
    r = wdb.run("watermark_reset", tables=[name], strategy="pair", max_timestamp="2026-02-12T10:00:00Z",
                sequence_number=5, **ch_args(source))
    assert r["failed"] and "is empty" in r["msg"]
    assert not wdb.exists(wdb.table)


@pytest.mark.parametrize("extra, message", [
    ({"strategy": "cold_tier", "cold_table": "cold.{tabel}"}, "placeholder {table}"),
    ({"strategy": "cold_tier", "cold_table": "cold.{0}"}, "placeholder {table}"),
    ({"strategy": "cold_tier", "cold_table": "cold.x; DROP TABLE offload_watermarks"}, ""),
    ({"strategy": "cold_tier", "iceberg_catalog_properties": {"type": "no-such-catalog"}}, ""),
    ({"strategy": "cold_tier", "iceberg_catalog_properties": {}}, "iceberg_catalog_properties"),
    ({"strategy": "lookback", "lookback": "-5h"}, "lookback"),
    ({"strategy": "lookback", "lookback": "forever"}, "lookback"),
    ({"strategy": "lookback", "lookback": "0s"}, "lookback"),
    ({"strategy": "lookback", "lookback": "25000d"}, "reaches before 1970"),
    ({"strategy": "lookback", "lookback": "99999999999d"}, "reaches before 1970"),
    ({"strategy": "lookback", "timestamp_column": "ts; DROP TABLE x"}, ""),
    ({"strategy": "lookback", "clickhouse_url": "http://127.0.0.1:1"}, ""),
    ({"strategy": "lookback", "clickhouse_url": "not a url"}, ""),
    ({"strategy": "cold_tier", "sequence_column": "no_such_column"}, ""),
])
def test_hostile_source_inputs_fail_clearly_and_write_nothing(wdb, source, warehouse, extra, message):
    cold_copy(warehouse, source["name"], source["rows"][:10])
    args = dict(tables=[source["name"]], **ch_args(source), **ice_args(warehouse))
    args.update(extra)
    r = wdb.run("watermark_reset", **args)
    assert r["failed"], r
    assert r["msg"] and message in r["msg"]
    assert "Traceback" not in r["msg"]
    assert not wdb.exists(wdb.table)
