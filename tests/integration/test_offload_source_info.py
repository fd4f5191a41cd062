# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""offload_source_info against a real ClickHouse (throwaway 18.16, or K2_TEST_CH_URL).

Source tables are filled relative to the server's clock; every expected answer is
computed here in Python from the rows inserted (the oracle), not read back.
"""
import datetime
import json

import pytest

from ansible_collections.k2.iceberg_offload.plugins.module_utils import clickhouse as ch

from ansible_collections.k2.iceberg_offload.plugins.module_utils import watermark_sources as sources
from ansible_collections.k2.iceberg_offload.plugins.module_utils.watermark import Watermark
from tests.support.ansible_module import run_module
from tests.support.clickhouse_server import (
    TEST_PASSWORD, TEST_USER, create_trades_table, execute, insert_trades)

EPOCH = datetime.datetime(1970, 1, 1)


def epoch(dt):
    return int((dt - EPOCH).total_seconds())


def rows_every(start, seconds, step, first_seq, per_second=3):
    """``per_second`` rows sharing each timestamp, every ``step`` seconds, increasing sequences."""
    rows, seq = [], first_seq
    for offset in range(0, seconds, step):
        for _unused in range(per_second):
            rows.append((start + datetime.timedelta(seconds=offset), seq))
            seq += 1
    return rows


def tsv(rows):
    return [(epoch(ts), seq, "BTCUSDT", "buy", 30000.5, 0.01) for ts, seq in rows]


@pytest.fixture(scope="module")
def source(clickhouse):
    url, db = clickhouse["url"], clickhouse["database"]
    auth = (clickhouse["user"], clickhouse["password"])
    now = ch.from_epoch(int(execute(url, "SELECT toUnixTimestamp(now())", *auth)))
    tables = {
        # 48 hours of history, 3 rows per second every 10 minutes (the runbook's lookback matters)
        "bronze_trades_binance": rows_every(now - datetime.timedelta(hours=48), 48 * 3600, 600, 1),
        "bronze_trades_kraken": rows_every(now - datetime.timedelta(hours=30), 30 * 3600, 900, 100),
        "src_empty": [],
        # only the last hour: nothing before now - 24h
        "src_recent": rows_every(now - datetime.timedelta(hours=1), 3000, 60, 7),
    }
    for name, rows in tables.items():
        create_trades_table(url, db, name, *auth)
        insert_trades(url, db, name, tsv(rows), *auth)
    execute(url, "CREATE TABLE %s.src_text_ts (exchange_timestamp String, sequence_number UInt64) "
                 "ENGINE = MergeTree() ORDER BY sequence_number" % db, *auth)
    return {"now": now, "rows": tables, "url": url, "db": db, "auth": auth}


def conn(clickhouse, **extra):
    args = {"clickhouse_url": clickhouse["url"], "clickhouse_database": clickhouse["database"],
            "clickhouse_user": clickhouse["user"], "clickhouse_password": clickhouse["password"]}
    args.update(extra)
    return args


def pair_dict(pair):
    return {"max_timestamp": pair[0].isoformat(sep=" "), "sequence_number": pair[1]} if pair else None


def test_summary_and_pair_after_watermark(clickhouse, source):
    rows = source["rows"]["bronze_trades_binance"]
    # The watermark is the middle row of a second: one row of that second is still to offload.
    wm = rows[len(rows) // 2 + 1]
    assert rows[len(rows) // 2][0] == wm[0] == rows[len(rows) // 2 + 2][0]
    r = run_module("offload_source_info", conn(clickhouse, tables=["bronze_trades_binance"], watermarks={
        "bronze_trades_binance": {"max_timestamp": wm[0].isoformat() + "Z", "sequence_number": wm[1]}}))
    assert not r["failed"], r.get("msg")
    t = r["tables"]["bronze_trades_binance"]
    assert t["total_rows"] == len(rows)
    assert t["min_timestamp"] == min(rows)[0].isoformat(sep=" ")
    assert t["max_pair"] == pair_dict(max(rows))
    after = [x for x in rows if x > wm]
    assert t["after_watermark"]["rows"] == len(after)
    assert t["after_watermark"]["max_pair"] == pair_dict(max(after))
    # The runbook's "exchange_timestamp > LAST_TS" would count one row fewer.
    assert len([x for x in rows if x[0] > wm[0]]) == len(after) - 1
    assert r["changed"] is False


def test_watermark_with_offset_is_normalised_to_utc(clickhouse, source):
    rows = source["rows"]["bronze_trades_binance"]
    wm = rows[30]
    local = (wm[0] + datetime.timedelta(hours=2)).isoformat() + "+02:00"
    r = run_module("offload_source_info", conn(clickhouse, tables=["bronze_trades_binance"], watermarks={
        "bronze_trades_binance": {"max_timestamp": local, "sequence_number": wm[1]}}))
    assert r["tables"]["bronze_trades_binance"]["after_watermark"]["rows"] == len(
        [x for x in rows if x > wm])


def test_before_cutoff_is_the_lookback_pair(clickhouse, source):
    r = run_module("offload_source_info", conn(clickhouse, lookback="24h"))
    assert not r["failed"], r.get("msg")
    cutoff = datetime.datetime.fromisoformat(r["cutoff"])
    assert abs((cutoff - (source["now"] - datetime.timedelta(hours=24))).total_seconds()) < 120
    for name in ("bronze_trades_binance", "bronze_trades_kraken"):
        rows = [x for x in source["rows"][name] if x[0] < cutoff]
        t = r["tables"][name]
        assert t["before_cutoff"]["rows"] == len(rows)
        assert t["before_cutoff"]["max_pair"] == pair_dict(max(rows))
        assert t["after_watermark"] is None


def test_explicit_cutoff(clickhouse, source):
    rows = source["rows"]["bronze_trades_kraken"]
    cutoff = rows[10][0]
    r = run_module("offload_source_info", conn(clickhouse, tables=["bronze_trades_kraken"],
                                               cutoff=cutoff.isoformat()))
    t = r["tables"]["bronze_trades_kraken"]["before_cutoff"]
    assert t["cutoff"] == cutoff.isoformat(sep=" ")
    assert t["max_pair"] == pair_dict(max(x for x in rows if x[0] < cutoff))
    assert t["rows"] == 9  # rows 0..8: the three seconds before row 10's
    assert t["rows"] == len([x for x in rows if x[0] < cutoff])


def test_empty_table_is_empty_not_zero(clickhouse, source):
    r = run_module("offload_source_info", conn(clickhouse, tables=["src_empty"], watermarks={
        "src_empty": {"max_timestamp": "2026-01-01T00:00:00Z", "sequence_number": 0}}))
    assert not r["failed"], r.get("msg")
    t = r["tables"]["src_empty"]
    assert t == {"total_rows": 0, "min_timestamp": None, "max_timestamp": None, "max_pair": None,
                 "after_watermark": {"watermark": {"max_timestamp": "2026-01-01 00:00:00",
                                                   "sequence_number": 0},
                                     "rows": 0, "max_pair": None},
                 "before_cutoff": {"cutoff": r["cutoff"], "rows": 0, "max_pair": None}}


def test_source_with_rows_only_after_the_cutoff(clickhouse, source):
    r = run_module("offload_source_info", conn(clickhouse, tables=["src_recent"]))
    t = r["tables"]["src_recent"]
    assert t["total_rows"] == len(source["rows"]["src_recent"])
    assert t["before_cutoff"]["rows"] == 0 and t["before_cutoff"]["max_pair"] is None
    client = ch.ClickHouseClient(url=clickhouse["url"], database=clickhouse["database"],
                                 user=clickhouse["user"], password=clickhouse["password"])
    with pytest.raises(ch.NoSourceRowsError, match="no row before"):
        sources.lookback_watermark(client, "src_recent", 86400)


def test_helpers_for_watermark_reset(clickhouse, source):
    client = ch.ClickHouseClient(url=clickhouse["url"], database=clickhouse["database"],
                                 user=clickhouse["user"], password=clickhouse["password"])
    rows = source["rows"]["bronze_trades_binance"]
    wm, cutoff = sources.lookback_watermark(client, "bronze_trades_binance", 86400)
    assert wm == Watermark(*max(x for x in rows if x[0] < cutoff))
    assert sources.source_greatest_pair(client, "bronze_trades_binance") == Watermark(*max(rows))
    assert sources.source_greatest_pair(client, "src_empty") is None
    with pytest.raises(ValueError, match="past the greatest pair"):
        sources.check_not_past_source(Watermark(max(rows)[0], max(rows)[1] + 1), Watermark(*max(rows)), "b")


def test_check_mode_and_read_only_user(clickhouse, source):
    if not clickhouse["own_server"]:
        pytest.skip("the read-only test user exists on the throwaway server only")
    r = run_module("offload_source_info", conn(clickhouse, clickhouse_user=TEST_USER,
                                               clickhouse_password=TEST_PASSWORD,
                                               tables=["bronze_trades_binance"]), check=True)
    assert not r["failed"], r.get("msg")
    assert r["tables"]["bronze_trades_binance"]["total_rows"] == len(
        source["rows"]["bronze_trades_binance"])
    assert TEST_PASSWORD not in r["_stdout"]
    assert r["invocation"]["module_args"]["clickhouse_password"] == "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER"


def _tables(clickhouse):
    return execute(clickhouse["url"], "SELECT name FROM system.tables WHERE database = '%s' ORDER BY name"
                   % clickhouse["database"], clickhouse["user"], clickhouse["password"])


GOOD_WM = {"max_timestamp": "2026-02-12T10:00:00Z", "sequence_number": 5}
HOSTILE = [
    ({"tables": ["bronze_trades_binance; DROP TABLE bronze_trades_kraken"]}, "not a plain identifier"),
    ({"tables": ["bronze_trades_binance` UNION ALL SELECT 1 --"]}, "not a plain identifier"),
    ({"tables": ["a.b.c"]}, "not a plain identifier"),
    ({"tables": ["bronze_trades_binance\n"]}, "not a plain identifier"),
    ({"tables": []}, "at least one table"),
    ({"tables": ["bronze_trades_binance", "bronze_trades_binance"]}, "lists a table twice"),
    ({"tables": ["no_such_table"]}, "does not exist"),
    ({"tables": ["src_text_ts"]}, "is String; it must be DateTime"),
    ({"timestamp_column": "exchange_timestamp) OR (1=1"}, "timestamp_column"),
    ({"sequence_column": "symbol"}, "is String; it must be an integer type"),
    ({"sequence_column": "nope"}, "has no column nope"),
    ({"watermarks": {"bronze_trades_binance": {"max_timestamp": "2026-02-12' OR '1'='1",
                                               "sequence_number": 1}}}, "ISO 8601"),
    ({"watermarks": {"bronze_trades_binance": {"max_timestamp": "2026-02-12T10:00:00Z",
                                               "sequence_number": "1 OR 1=1"}}}, "integer"),
    ({"watermarks": {"bronze_trades_binance": {"max_timestamp": "2026-02-12T10:00:00Z",
                                               "sequence_number": -1}}}, "between 0 and"),
    ({"watermarks": {"bronze_trades_binance": {"max_timestamp": "2200-01-01T00:00:00Z",
                                               "sequence_number": 1}}}, "outside ClickHouse DateTime"),
    ({"watermarks": {"bronze_trades_binance": {"max_timestamp": "1969-12-31T23:59:59Z",
                                               "sequence_number": 1}}}, "before 1970"),
    ({"watermarks": {"bronze_trades_binance": {"sequence_number": 1}}}, "max_timestamp and sequence_number"),
    ({"watermarks": {"other_table": GOOD_WM}}, "not in tables"),
    ({"lookback": "24 parsecs"}, "duration"),
    ({"lookback": "0h"}, "greater than zero"),
    ({"cutoff": "yesterday"}, "ISO 8601"),
    ({"clickhouse_url": "http://127.0.0.1:28123/?query=DROP%20TABLE"}, "clickhouse_url must be"),
    ({"clickhouse_url": "gopher://127.0.0.1"}, "clickhouse_url must be"),
    ({"clickhouse_url": "http://127.0.0.1:1"}, "cannot connect"),
    ({"clickhouse_password": "wrong' password"}, "assword"),
    ({"clickhouse_database": "no_such_db"}, "check clickhouse_database"),
    ({"clickhouse_database": "db`; DROP DATABASE x"}, "clickhouse_database"),
    ({"clickhouse_timeout": 0}, "above zero"),
]


@pytest.mark.parametrize("args,expected", HOSTILE, ids=[str(i) for i in range(len(HOSTILE))])
def test_hostile_or_malformed_input_is_refused_clearly(clickhouse, source, args, expected):
    before = _tables(clickhouse)
    base = conn(clickhouse, tables=["bronze_trades_binance"])
    if "clickhouse_password" in args and clickhouse["user"] == "default" and clickhouse["own_server"]:
        args = dict(args, clickhouse_user=TEST_USER)
    base.update(args)
    r = run_module("offload_source_info", base)
    assert r["failed"] is True, json.dumps(r)[:2000]
    assert expected in r["msg"], r["msg"]
    assert "Traceback" not in r["msg"]
    assert _tables(clickhouse) == before


def test_column_time_zone_cannot_shift_the_watermark(clickhouse, source):
    """A DateTime('Asia/Tokyo') column holds the same instants; every answer is the same, in UTC."""
    url, db, auth = source["url"], source["db"], source["auth"]
    execute(url, "CREATE TABLE %s.src_tokyo (exchange_timestamp DateTime('Asia/Tokyo'), "
                 "sequence_number UInt64, symbol String, side String, price Float64, quantity Float64) "
                 "ENGINE = MergeTree() ORDER BY (exchange_timestamp, sequence_number)" % db, *auth)
    insert_trades(url, db, "src_tokyo", tsv(source["rows"]["bronze_trades_kraken"]), *auth)
    rows = source["rows"]["bronze_trades_kraken"]
    wm = rows[len(rows) // 3]
    wm_arg = {"max_timestamp": wm[0].isoformat(), "sequence_number": wm[1]}
    r = run_module("offload_source_info", conn(clickhouse, tables=["src_tokyo", "bronze_trades_kraken"],
                                               watermarks={"src_tokyo": wm_arg,
                                                           "bronze_trades_kraken": wm_arg}))
    assert not r["failed"], r.get("msg")
    tokyo, utc = r["tables"]["src_tokyo"], r["tables"]["bronze_trades_kraken"]
    assert tokyo == utc
    assert tokyo["min_timestamp"] == min(rows)[0].isoformat(sep=" ")
    assert tokyo["after_watermark"]["rows"] == len([x for x in rows if x > wm])


def test_watermark_with_a_fraction_of_a_second(clickhouse, source):
    """DateTime has whole seconds: (10:00:00.5, N) is passed by every row of later seconds only."""
    rows = source["rows"]["bronze_trades_binance"]
    wm_ts = rows[60][0]
    r = run_module("offload_source_info", conn(clickhouse, tables=["bronze_trades_binance"], watermarks={
        "bronze_trades_binance": {"max_timestamp": wm_ts.isoformat() + ".5", "sequence_number": 0}}))
    assert r["tables"]["bronze_trades_binance"]["after_watermark"]["rows"] == len(
        [x for x in rows if x[0] > wm_ts])
