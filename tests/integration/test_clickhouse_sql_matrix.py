# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Every statement the collection sends to ClickHouse, on ClickHouse 18.16 and on a current engine.

plugins/module_utils/clickhouse.py builds all of them (server info, table columns, summary,
after / up to a watermark, before a cutoff, greatest sequence at a timestamp). Here the same
rows are loaded into the throwaway 18.16 server (tests/support/clickhouse_server.py) and into
chdb, ClickHouse 26.x running in this process, and every statement the builders make for a
grid of tables, watermarks and cutoffs runs on both as the client sends it (``... FORMAT
JSONCompact``). The decoded answers (rows and column types) must be identical; one test also
drives ``ClickHouseClient`` itself over both engines and compares what the modules would see.
Any difference fails, listed in full. The SQL is never copied here: it comes from the builders.
chdb is imported plainly: without it (requirements-dev.txt) this module errors, it is not skipped.

chdb's defaults differ from a ClickHouse server's in two settings that shape the answer
without touching the query; the chdb session is given the server's: 64-bit integers quoted in
JSON (``output_format_json_quote_64bit_integers=1``) and the test server's time zone (UTC).
"""
import datetime
import json
import shutil
import tempfile

import chdb
import pytest
import requests
from chdb import session as chdb_session

from ansible_collections.k2.iceberg_offload.plugins.module_utils import clickhouse as ch

from ansible_collections.k2.iceberg_offload.plugins.module_utils import watermark_sources as sources
from ansible_collections.k2.iceberg_offload.plugins.module_utils.watermark import Watermark
from tests.support.clickhouse_server import TRADES_DDL, execute


T = datetime.datetime
EPOCH = T(1970, 1, 1)
MAX_U64 = 2 ** 64 - 1
BASE = T(2026, 2, 12, 10, 0, 0)
UTC_NAMES = ("UTC", "Etc/UTC")  # 18.16 names the zone of TZ=UTC "Etc/UTC"


def _rows():
    """The offload's shape: several rows per second, gaps, a duplicated pair, extreme values."""
    rows, seq = [], 1000
    for minute in range(0, 120, 7):
        ts = BASE + datetime.timedelta(minutes=minute)
        for dummy in range(3):
            rows.append((ts, seq))
            seq += 1
    rows.append(rows[10])                                   # the same pair twice (a re-ingested row)
    rows.append((BASE + datetime.timedelta(minutes=200), MAX_U64))  # greatest sequence at the last second
    rows.append((BASE + datetime.timedelta(minutes=200), 5))
    rows.append((EPOCH + datetime.timedelta(seconds=1), 0))  # the smallest pair DateTime and UInt64 hold
    return rows


ROWS = _rows()
# name -> (DDL template or None for TRADES_DDL, rows)
TABLES = {
    "bronze_trades_binance": (None, ROWS),
    "src_empty": (None, []),
    "src_one_row": (None, [(BASE, 42)]),
    "src_utc_int64": ("CREATE TABLE {db}.{table} (exchange_timestamp DateTime('UTC'), sequence_number Int64,"
                      " symbol String) ENGINE = MergeTree() ORDER BY (exchange_timestamp, sequence_number)",
                      [(ts, seq) for ts, seq in ROWS if seq < 2 ** 63]),
    "src_u32": ("CREATE TABLE {db}.{table} (exchange_timestamp DateTime, sequence_number UInt32, symbol String)"
                " ENGINE = MergeTree() ORDER BY (exchange_timestamp, sequence_number)",
                [(ts, seq) for ts, seq in ROWS if seq < 2 ** 32]),
    "src_text_ts": ("CREATE TABLE {db}.{table} (exchange_timestamp String, sequence_number UInt64)"
                    " ENGINE = MergeTree() ORDER BY sequence_number", []),
}
PAIR_TABLES = ["bronze_trades_binance", "src_empty", "src_one_row", "src_utc_int64", "src_u32"]


def _fmt(ts):
    return ts.strftime("%Y-%m-%d %H:%M:%S")


def _load_statements(db):
    """DDL and INSERTs, as text: the same statements go to both engines."""
    out = ["CREATE DATABASE IF NOT EXISTS %s" % db]
    for table, (ddl, rows) in TABLES.items():
        out.append("DROP TABLE IF EXISTS %s.%s" % (db, table))
        out.append((ddl or TRADES_DDL).format(db=db, table=table))
        if rows:
            if table == "src_text_ts":
                continue
            extra = "\tBTCUSDT\tbuy\t30000.5\t0.01" if ddl is None else "\tBTCUSDT"
            out.append("INSERT INTO %s.%s FORMAT TabSeparated\n%s\n" % (
                db, table, "\n".join("%s\t%d%s" % (_fmt(ts), seq, extra) for ts, seq in rows)))
    return out


def _seconds():
    return sorted(set(ts for ts, dummy in ROWS))


def _mid():
    return _seconds()[len(_seconds()) // 2]


def _watermarks():
    mid = _mid()
    seqs_at_mid = sorted(seq for ts, seq in ROWS if ts == mid)
    return [
        Watermark(EPOCH, 0),                                   # before every row
        Watermark(EPOCH + datetime.timedelta(seconds=1), 0),   # exactly the smallest row
        Watermark(mid, seqs_at_mid[0]),                        # inside a second: rows of it still to come
        Watermark(mid, seqs_at_mid[-1]),                       # the last row of a second
        Watermark(mid, seqs_at_mid[-1] + 1000),                # past every sequence of that second
        Watermark(mid + datetime.timedelta(seconds=1), 0),     # between seconds
        Watermark(mid + datetime.timedelta(microseconds=250000), 7),  # a fraction of a second
        Watermark(BASE + datetime.timedelta(minutes=200), 5),  # at the greatest second
        Watermark(BASE + datetime.timedelta(minutes=200), MAX_U64),   # the greatest pair itself
        Watermark(T(2100, 1, 1), MAX_U64),                     # past everything
    ]


def _cutoffs():
    return [EPOCH, EPOCH + datetime.timedelta(seconds=1), EPOCH + datetime.timedelta(seconds=2),
            BASE, BASE + datetime.timedelta(minutes=35, microseconds=1),
            BASE + datetime.timedelta(minutes=200), BASE + datetime.timedelta(minutes=200, seconds=1),
            T(2100, 1, 1)]


def statements(db):
    """(label, sql) for every statement the builders make over the grid."""
    out = [("server_info", ch.server_info_sql())]
    for table in list(TABLES) + ["no_such_table"]:
        out.append(("table_columns %s" % table, ch.table_columns_sql(db, table)))
    for table in PAIR_TABLES:
        out.append(("summary %s" % table, ch.summary_sql(db, table, "exchange_timestamp", "sequence_number")))
        for wm in _watermarks():
            out.append(("after_watermark %s %s" % (table, wm),
                        ch.after_watermark_sql(db, table, "exchange_timestamp", "sequence_number", wm)))
            out.append(("upto_watermark %s %s" % (table, wm),
                        ch.upto_watermark_sql(db, table, "exchange_timestamp", "sequence_number", wm)))
        for cutoff in _cutoffs():
            out.append(("before_cutoff %s %s" % (table, cutoff),
                        ch.before_cutoff_sql(db, table, "exchange_timestamp", "sequence_number", cutoff)))
        for ts in _seconds()[:3] + [_mid(), BASE + datetime.timedelta(minutes=200), BASE + datetime.timedelta(seconds=1)]:
            out.append(("max_sequence_at %s %s" % (table, ts),
                        ch.max_sequence_at_sql(db, table, "exchange_timestamp", "sequence_number", ts)))
            for wm in _watermarks()[2:5]:
                cond = ch.after_pair_condition("exchange_timestamp", "sequence_number", wm)
                out.append(("max_sequence_at %s %s after %s" % (table, ts, wm),
                            ch.max_sequence_at_sql(db, table, "exchange_timestamp", "sequence_number", ts, cond)))
    # Errors the modules explain by their code: a missing table, a missing column.
    out.append(("error: missing table", ch.summary_sql(db, "no_such_table", "exchange_timestamp", "sequence_number")))
    out.append(("error: missing column", ch.after_watermark_sql(db, "bronze_trades_binance", "exchange_ts",
                                                                "sequence_number", _watermarks()[2])))
    return out


# ---------------------------------------------------------------------------
# The two engines, each answering what ClickHouseClient.query posts.

class ChdbEngine(object):
    """chdb (in-process ClickHouse) with a server's output defaults."""

    def __init__(self):
        self.path = tempfile.mkdtemp(prefix="k2-chdb-")
        self.session = chdb_session.Session(self.path)
        self.session.query("SET output_format_json_quote_64bit_integers = 1")
        self.session.query("SET session_timezone = 'UTC'")

    def execute(self, sql):
        self.session.query(sql)

    def post(self, body):
        """(HTTP-like status, body text) for one request body."""
        try:
            return 200, str(self.session.query(body, "JSONCompact"))
        except Exception as e:  # chdb raises ChdbError (a RuntimeError) with the server's message
            return 500, str(e)

    def close(self):
        self.session.close()
        shutil.rmtree(self.path, ignore_errors=True)


class HttpEngine(object):
    """The throwaway 18.16 server (or K2_TEST_CH_URL), posted to as ClickHouseClient posts."""

    def __init__(self, clickhouse):
        self.url = clickhouse["url"]
        self.auth = (clickhouse["user"], clickhouse["password"])
        self.database = clickhouse["database"]

    def execute(self, sql):
        execute(self.url, sql, *self.auth)

    def post(self, body):
        r = requests.post(self.url + "/", params={"database": self.database}, data=body.encode("utf-8"),
                          headers={"X-ClickHouse-User": self.auth[0], "X-ClickHouse-Key": self.auth[1]},
                          timeout=120)
        return r.status_code, r.content.decode("utf-8", "replace")


def answer(engine, sql):
    """What the client makes of one statement: its rows and column types, or the error code."""
    status, body = engine.post(sql + " FORMAT JSONCompact")
    if status != 200:
        code, text = ch.parse_error(body)
        return {"error": code}, text
    doc = json.loads(body)
    return {"types": [m["type"] for m in doc["meta"]], "data": doc["data"]}, None


class ChdbHttpSession(object):
    """A requests.Session stand-in that hands ClickHouseClient's POST to chdb."""

    class Response(object):
        def __init__(self, status, text):
            self.status_code = status
            self.content = text.encode("utf-8")

    def __init__(self, engine):
        self.engine = engine
        self.bodies = []

    def post(self, url, params=None, data=None, **kw):  # pylint: disable=unused-argument
        body = data.decode("utf-8")
        self.bodies.append(body)
        return self.Response(*self.engine.post(body))


@pytest.fixture(scope="module")
def engines(clickhouse):
    current = ChdbEngine()
    old = HttpEngine(clickhouse)
    # A database of its own: the session's database is shared with test_offload_source_info,
    # which creates tables of the same names.
    db = clickhouse["database"] + "_matrix"
    try:
        for sql in _load_statements(db):
            old.execute(sql)
            current.execute(sql)
        yield {"db": db, "old": old, "current": current, "clickhouse": clickhouse}
    finally:
        current.close()
        old.execute("DROP DATABASE IF EXISTS %s" % db)


def _version(engine):
    status, body = engine.post("SELECT version() FORMAT JSONCompact")
    assert status == 200, body
    return json.loads(body)["data"][0][0]


def test_engines_are_the_two_generations(engines):
    old, new = _version(engines["old"]), _version(engines["current"])
    print("ClickHouse %s (server) vs %s (chdb %s)" % (old, new, chdb.__version__))
    assert int(new.split(".")[0]) >= 24, new
    if engines["clickhouse"]["own_server"]:  # K2_TEST_CH_URL may name another server
        assert old.startswith("18.16."), old


def test_every_statement_answers_the_same_on_both(engines):
    db = engines["db"]
    differences, checked, grid = [], 0, statements(db)
    for label, sql in grid:
        old, old_text = answer(engines["old"], sql)
        new, new_text = answer(engines["current"], sql)
        if label == "server_info":
            # version() differs by design and now() by the moment it is read; the rest must match.
            assert old["types"] == new["types"] == ["String", "String", "UInt32"], (old, new)
            assert old["data"][0][1] in UTC_NAMES and new["data"][0][1] in UTC_NAMES, (old, new)
            assert abs(int(old["data"][0][2]) - int(new["data"][0][2])) <= 60, (old, new)
            checked += 1
            continue
        if label.startswith("error:"):
            assert "error" in old and "error" in new, (label, old, new)
        elif "error" in old or "error" in new:
            differences.append("%s: an error where a result was expected\n  sql: %s\n  18.16: %s %s\n  current: %s %s"
                               % (label, sql, old, old_text or "", new, new_text or ""))
            continue
        if old != new:
            differences.append("%s\n  sql: %s\n  18.16:   %s\n  current: %s" % (label, sql, old, new))
        checked += 1
    print("%d statements compared" % len(grid))
    assert not differences, "%d of %d statements answer differently:\n%s" % (
        len(differences), len(grid), "\n".join(differences))
    assert checked == len(grid) > 250, (checked, len(grid))


def _client_answers(client, db):
    """What the modules ask the client, for every table and watermark of the grid."""
    out = {"check_trades_table": {}, "summary": {}, "after": {}, "upto": {}, "before": {}, "lookback": {}}
    for table in list(TABLES) + ["no_such_table"]:
        try:
            out["check_trades_table"][table] = client.check_trades_table(table, "exchange_timestamp",
                                                                         "sequence_number")
        except ch.ClickHouseError as e:
            out["check_trades_table"][table] = ("error", e.code)
    for table in PAIR_TABLES:
        out["summary"][table] = client.summary(table)
        out["before"][table] = [client.before_cutoff(table, c) for c in _cutoffs()]
        out["after"][table] = [client.after_watermark(table, wm) for wm in _watermarks()]
        out["upto"][table] = [client.upto_watermark(table, wm) for wm in _watermarks()]
        for seconds in (0, 3600, 86400 * 365 * 56, 86400 * 365 * 57):
            try:
                res = sources.lookback_watermark(client, table, seconds, now=BASE + datetime.timedelta(hours=4))
            except (ch.ClickHouseError, ch.ClickHouseInputError) as e:
                res = ("error", type(e).__name__)
            out["lookback"]["%s %d" % (table, seconds)] = res
        out["source_greatest_pair %s" % table] = sources.source_greatest_pair(client, table)
    info = client.server_info()
    out["server_info"] = (info["timezone"] in UTC_NAMES, sorted(info))
    return out


def test_the_client_sees_the_same_on_both(engines):
    """ClickHouseClient's own methods (two statements for a greatest pair) over each engine."""
    cfg = engines["clickhouse"]
    old = ch.ClickHouseClient(url=cfg["url"], user=cfg["user"], password=cfg["password"], database=engines["db"])
    session = ChdbHttpSession(engines["current"])
    new = ch.ClickHouseClient(url="http://chdb.in-process:8123", database=engines["db"], session=session)
    a, b = _client_answers(old, engines["db"]), _client_answers(new, engines["db"])
    assert session.bodies and all(body.endswith(" FORMAT JSONCompact") for body in session.bodies)
    differences = []
    for key in sorted(a, key=str):
        if a[key] != b[key]:
            differences.append("%s\n  18.16:   %r\n  current: %r" % (key, a[key], b[key]))
    assert not differences, "\n".join(differences)
    # The grid is not vacuous: pairs were found, and a missing table is error 60 on both.
    assert a["summary"]["bronze_trades_binance"]["max_pair"] == Watermark(BASE + datetime.timedelta(minutes=200),
                                                                          MAX_U64)
    assert a["check_trades_table"]["no_such_table"] == ("error", 60)
