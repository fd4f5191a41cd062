# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Unit tests of module_utils/clickhouse.py: literals, identifiers, queries, errors (no server)."""
import datetime
import json
import re

import pytest
import requests

from ansible_collections.k2.iceberg_offload.plugins.module_utils import clickhouse as ch

from ansible_collections.k2.iceberg_offload.plugins.module_utils import watermark_sources as sources
from ansible_collections.k2.iceberg_offload.plugins.module_utils.watermark import (
    Watermark, WatermarkError)

TS = datetime.datetime(2026, 2, 12, 10, 15, 0)
WM = Watermark(TS, 81234)

HOSTILE_NAMES = [
    "t; DROP TABLE x", "t`", "`t`", "t' OR '1'='1", "t--", "t/*", "1abc", "", " t", "t\n",
    "t\0", "bronze.trades.x", "t)", "ta\u0301ble", "\u0442\u0430\u0431\u043b\u0438\u0446\u0430",
    "a" * 129, "t UNION SELECT 1", None, 5, ["t"],
]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_hostile_identifiers_are_refused(name):
    with pytest.raises(ch.ClickHouseInputError):
        ch.validate_identifier(name, "table name")


@pytest.mark.parametrize("name", ["bronze_trades_binance", "_t", "T1", "a" * 128])
def test_plain_identifiers_are_quoted(name):
    assert ch.quote_identifier(name) == "`%s`" % name


def test_qualified_table_splits_database():
    assert ch.qualified_table("default", "bronze_trades_binance") == "`default`.`bronze_trades_binance`"
    assert ch.qualified_table("default", "k2.bronze") == "`k2`.`bronze`"
    with pytest.raises(ch.ClickHouseInputError):
        ch.qualified_table("default", "k2.bronze;x")


@pytest.mark.parametrize("value,expected", [(0, "toUInt64(0)"), (2 ** 64 - 1, "toUInt64(18446744073709551615)")])
def test_uint64_literal(value, expected):
    assert ch.uint64_literal(value) == expected


@pytest.mark.parametrize("value", [-1, 2 ** 64, True, 1.5, "5", "5) OR 1=1 --", None])
def test_uint64_literal_refuses_non_integers(value):
    with pytest.raises(ch.ClickHouseInputError):
        ch.uint64_literal(value)


def test_datetime_literal_is_unix_seconds():
    assert ch.datetime_literal(TS) == "toDateTime(%d)" % (TS - datetime.datetime(1970, 1, 1)).total_seconds()
    aware = datetime.datetime(2026, 2, 12, 12, 15, tzinfo=datetime.timezone(datetime.timedelta(hours=2)))
    assert ch.datetime_literal(aware) == ch.datetime_literal(TS)


@pytest.mark.parametrize("value", [
    datetime.datetime(2106, 2, 8), datetime.datetime(1969, 12, 31, 23, 59, 59),
    datetime.datetime(2026, 1, 1, 0, 0, 0, 500000), "2026-01-01 00:00:00", 1767225600, None])
def test_datetime_literal_refuses(value):
    with pytest.raises(ch.ClickHouseInputError):
        ch.datetime_literal(value)


@pytest.mark.parametrize("text", [
    "plain", "it's", "back\\slash", "\\'; DROP TABLE t; --", "new\nline", "nul\0byte",
    "tab\there", "\u00e9\u4e2d\U0001f600", "''''", "\\",
])
def test_string_literal_round_trips_and_cannot_close_early(text):
    lit = ch.string_literal(text)
    assert lit.startswith("'") and lit.endswith("'")
    inner = lit[1:-1]
    # No unescaped quote inside: every ' is preceded by an odd run of backslashes.
    for m in re.finditer("'", inner):
        run = len(inner[:m.start()]) - len(inner[:m.start()].rstrip("\\"))
        assert run % 2 == 1, lit
    # Decoding the escapes gives the text back.
    decoded = re.sub(r"\\(.)", lambda m: {"n": "\n", "r": "\r", "t": "\t", "0": "\0", "b": "\b",
                                          "f": "\f"}.get(m.group(1), m.group(1)), inner)
    assert decoded == text


def test_string_literal_refuses_non_text():
    with pytest.raises(ch.ClickHouseInputError):
        ch.string_literal(b"bytes")


def test_after_pair_condition_is_the_pair_comparison():
    x = ch.datetime_literal(TS)
    assert ch.after_pair_condition("exchange_timestamp", "sequence_number", WM) == (
        "`exchange_timestamp` >= %s AND (`exchange_timestamp` > %s OR "
        "(`exchange_timestamp` = %s AND `sequence_number` > toUInt64(81234)))" % (x, x, x))


def test_after_pair_condition_with_fraction_of_second():
    wm = Watermark(TS + datetime.timedelta(microseconds=250000), 7)
    assert ch.after_pair_condition("ts", "seq", wm) == "`ts` > %s" % ch.datetime_literal(TS)


def test_before_condition_rounds_up_a_fraction():
    assert ch.before_condition("ts", TS) == "`ts` < %s" % ch.datetime_literal(TS)
    frac = TS + datetime.timedelta(microseconds=1)
    assert ch.before_condition("ts", frac) == "`ts` < %s" % ch.datetime_literal(
        TS + datetime.timedelta(seconds=1))


def test_queries_have_fixed_shape():
    sql = ch.after_watermark_sql("default", "bronze_trades_binance", "exchange_timestamp",
                                 "sequence_number", WM)
    assert sql == ("SELECT count(), toUnixTimestamp(max(`exchange_timestamp`)) FROM "
                   "`default`.`bronze_trades_binance` WHERE "
                   + ch.after_pair_condition("exchange_timestamp", "sequence_number", WM))
    at = ch.max_sequence_at_sql("default", "t", "ts", "seq", TS, "x = 1")
    assert at == ("SELECT count(), max(`seq`) FROM `default`.`t` WHERE `ts` = %s AND (x = 1)"
                  % ch.datetime_literal(TS))
    cols = ch.table_columns_sql("default", "bronze_trades_binance")
    assert cols == ("SELECT name, type FROM system.columns WHERE database = 'default' AND "
                    "table = 'bronze_trades_binance'")


@pytest.mark.parametrize("builder", [
    lambda bad: ch.summary_sql("default", bad, "ts", "seq"),
    lambda bad: ch.summary_sql(bad, "t", "ts", "seq"),
    lambda bad: ch.after_watermark_sql("default", "t", bad, "seq", WM),
    lambda bad: ch.after_watermark_sql("default", "t", "ts", bad, WM),
    lambda bad: ch.before_cutoff_sql("default", "t", bad, "seq", TS),
    lambda bad: ch.table_columns_sql("default", bad),
    lambda bad: ch.max_sequence_at_sql("default", "t", "ts", bad, TS),
    lambda bad: ch.max_sequence_at_sql("default", bad, "ts", "seq", TS),
])
@pytest.mark.parametrize("bad", HOSTILE_NAMES[:12])
def test_no_query_builder_accepts_a_hostile_name(builder, bad):
    with pytest.raises(ch.ClickHouseInputError):
        builder(bad)


def test_after_watermark_refuses_a_non_pair():
    with pytest.raises(ch.ClickHouseInputError):
        ch.after_watermark_sql("default", "t", "ts", "seq", ("2026-01-01", "1 OR 1=1"))


@pytest.mark.parametrize("body,code,text", [
    ("Code: 60, e.displayText() = DB::Exception: Table default.nope doesn't exist., "
     "e.what() = DB::Exception\n", 60, "Table default.nope doesn't exist."),
    ("Code: 193, e.displayText() = DB::Exception: Wrong password for user k2, e.what() = DB::Exception",
     193, "Wrong password for user k2"),
    ("Code: 60. DB::Exception: Table default.nope does not exist. (UNKNOWN_TABLE) (version 24.3.1.1)\n",
     60, "Table default.nope does not exist. (UNKNOWN_TABLE)"),
    ("<html>502 Bad Gateway</html>", None, "<html>502 Bad Gateway</html>"),
    ("", None, ""),
])
def test_parse_error(body, code, text):
    assert ch.parse_error(body) == (code, text)


class FakeResponse(object):
    def __init__(self, status, body):
        self.status_code = status
        self.content = body.encode("utf-8")


class FakeSession(object):
    def __init__(self, responses=None, exc=None):
        self.responses = list(responses or [])
        self.exc = exc
        self.calls = []

    def post(self, url, **kw):
        self.calls.append(dict(kw, url=url))
        if self.exc:
            raise self.exc
        return self.responses.pop(0)


def client(session, **kw):
    return ch.ClickHouseClient(url="http://127.0.0.1:8123", user="k2", password="pw'd",
                               session=session, **kw)


def test_query_sends_credentials_in_headers_and_database_as_parameter():
    s = FakeSession([FakeResponse(200, json.dumps({"data": [["1", 2]]}))])
    assert client(s).query("SELECT 1") == [["1", 2]]
    call = s.calls[0]
    assert call["headers"]["X-ClickHouse-User"] == "k2"
    assert call["headers"]["X-ClickHouse-Key"] == "pw'd"
    assert call["params"] == {"database": "default"}
    assert call["data"] == b"SELECT 1 FORMAT JSONCompact"
    assert "pw" not in call["url"]


@pytest.mark.parametrize("status,body,expected", [
    (404, "Code: 60, e.displayText() = DB::Exception: Table default.x doesn't exist., e.what() = "
          "DB::Exception", "HTTP 404, code 60: Table default.x doesn't exist.; check the table name"),
    (401, "Code: 193, e.displayText() = DB::Exception: Wrong password for user k2, e.what() = x",
     "check clickhouse_password"),
    (500, "", "HTTP 500: (empty body)"),
    (200, "not json", "not ClickHouse JSON"),
])
def test_query_errors_are_clear(status, body, expected):
    with pytest.raises(ch.ClickHouseError) as e:
        client(FakeSession([FakeResponse(status, body)])).query("SELECT 1")
    assert expected in str(e.value)
    assert "ClickHouse at http://127.0.0.1:8123 (user k2)" in str(e.value)


@pytest.mark.parametrize("exc,expected", [
    (requests.exceptions.ConnectionError("[Errno 111] Connection refused"), "cannot connect"),
    (requests.exceptions.ConnectTimeout("x"), "cannot reach"),
    (requests.exceptions.ReadTimeout("x"), "did not answer within"),
    (requests.exceptions.SSLError("certificate verify failed"), "clickhouse_ca_cert"),
])
def test_transport_errors_are_clear(exc, expected):
    with pytest.raises(ch.ClickHouseError) as e:
        client(FakeSession(exc=exc)).query("SELECT 1")
    assert expected in str(e.value)


@pytest.mark.parametrize("kw", [
    dict(url="ftp://x"), dict(url="http://h:8123\n"), dict(url="http://h:8123/?query=DROP"), dict(url="http://"), dict(url=None),
    dict(database="x;y"), dict(timeout=0), dict(connect_timeout=-1), dict(timeout=True),
])
def test_client_refuses_bad_settings(kw):
    args = dict(url="http://127.0.0.1:8123", session=FakeSession())
    args.update(kw)
    with pytest.raises(ch.ClickHouseInputError):
        ch.ClickHouseClient(**args)


def test_tls_verify_uses_ca_cert():
    assert client(FakeSession(), ca_cert="/ca.pem").verify == "/ca.pem"
    assert client(FakeSession(), validate_certs=False, ca_cert="/ca.pem").verify is False
    assert client(FakeSession()).verify is True


def answer(*row):
    return FakeResponse(200, json.dumps({"data": [list(row)]}))


def test_empty_answers_are_none_not_zero():
    s = FakeSession([answer("0", 0)] * 2)
    c = client(s)
    assert c.after_watermark("t", WM) == {"rows": 0, "max_pair": None}
    assert c.before_cutoff("t", TS) == {"rows": 0, "max_pair": None}
    assert len(s.calls) == 2  # no second step for an empty answer
    s = FakeSession([answer("0", 0, 0)])
    assert client(s).summary("t")["max_pair"] is None


def test_the_pair_is_the_greatest_sequence_at_the_greatest_timestamp():
    epoch = int((TS - datetime.datetime(1970, 1, 1)).total_seconds())
    s = FakeSession([answer("10", epoch), answer("3", "81240")])
    assert client(s).after_watermark("t", WM) == {"rows": 10, "max_pair": Watermark(TS, 81240)}
    second = s.calls[1]["data"].decode()
    assert "`exchange_timestamp` = toDateTime(%d)" % epoch in second
    assert ch.after_pair_condition("exchange_timestamp", "sequence_number", WM) in second
    # The rows vanished between the two steps: no pair is invented.
    s = FakeSession([answer("10", epoch), answer("0", "0")])
    assert client(s).before_cutoff("t", TS)["max_pair"] is None


def test_lookback_watermark_refuses_an_empty_range():
    s = FakeSession([answer("0", 0)])
    with pytest.raises(ch.NoSourceRowsError) as e:
        sources.lookback_watermark(client(s), "bronze_trades_binance", 86400, now=TS)
    assert "no row before 2026-02-11 10:15:00" in str(e.value)


def test_lookback_watermark_returns_the_pair_and_cutoff():
    epoch = int((TS - datetime.datetime(1970, 1, 1)).total_seconds()) - 86400 - 1
    s = FakeSession([answer("5", epoch), answer("1", "77")])
    wm, cutoff = sources.lookback_watermark(client(s), "t", 86400, now=TS + datetime.timedelta(microseconds=9))
    assert cutoff == TS - datetime.timedelta(days=1)
    assert wm == Watermark(TS - datetime.timedelta(days=1, seconds=1), 77)
    assert "`exchange_timestamp` < %s" % ch.datetime_literal(cutoff) in s.calls[0]["data"].decode()


def test_check_not_past_source():
    sources.check_not_past_source(WM, WM)
    sources.check_not_past_source(Watermark(TS, 1), WM)
    with pytest.raises(WatermarkError, match="past the greatest pair"):
        sources.check_not_past_source(Watermark(TS, 81235), WM, "t")
    with pytest.raises(WatermarkError, match="is empty"):
        sources.check_not_past_source(WM, None, "t")
    sources.check_not_past_source(Watermark(TS, 81235), WM, allow=True)


def test_argument_spec_hides_the_password():
    spec = ch.clickhouse_argument_spec()
    assert spec["clickhouse_password"]["no_log"] is True
    assert all(k.startswith("clickhouse_") for k in spec)


# -- credentials in clickhouse_url ---------------------------------------------------------------
@pytest.mark.parametrize("url, user, password, want", [
    ("http://reader:s%40cret@h:8123/", "default", "", ("http://h:8123/", "reader", "s@cret")),
    ("http://reader@h:8123", "default", "pw", ("http://h:8123", "reader", "pw")),
    ("http://reader:pw@h", "reader", "pw", ("http://h", "reader", "pw")),
    ("http://h:8123/", "u", "p", ("http://h:8123/", "u", "p")),
])
def test_url_credentials_are_taken_out_of_the_url(url, user, password, want):
    assert ch.split_url_credentials(url, user, password) == want


@pytest.mark.parametrize("url, user, password, words", [
    ("http://reader:pw@h/", "other", "", "names the user"),
    ("http://reader:pw@h/", "default", "different", "holds a different one"),
])
def test_conflicting_credentials_are_refused_without_the_password(url, user, password, words):
    with pytest.raises(ch.ClickHouseInputError) as e:
        ch.split_url_credentials(url, user, password)
    assert words in str(e.value) and "pw" not in str(e.value).replace("password", "")


def test_the_client_never_keeps_the_url_password():
    client = ch.ClickHouseClient(url="http://reader:topsecret@127.0.0.1:8123/")
    assert client.url == "http://127.0.0.1:8123/" and client.user == "reader" and client.password == "topsecret"
    with pytest.raises(ch.ClickHouseInputError) as e:
        ch.ClickHouseClient(url="ftp://reader:topsecret@127.0.0.1/")
    assert "topsecret" not in str(e.value)
