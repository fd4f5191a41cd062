# -*- coding: utf-8 -*-
# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""ClickHouse over its HTTP interface, for the source side of the offload.

Private to this collection: the API may change between releases.

ClickHouse 18.16 (the lab's, and the runbook's era) has no query parameters, so
every query here is built from two things only: identifiers that passed
``validate_identifier`` (and are back-quoted anyway), and literals made by the
typed builders below (``datetime_literal``, ``uint64_literal``,
``string_literal``), which accept only their own type. No value from a user
reaches SQL any other way. All the queries the collection sends to ClickHouse
are in this file. They avoid anything 18.16-only, so current releases run them
unchanged: ``toUnixTimestamp``, ``toDateTime(<epoch>)`` and ``FORMAT JSONCompact``
exist in both.

Timestamps cross the wire as Unix seconds (``toUnixTimestamp`` out,
``toDateTime(<int>)`` in), so neither the server's nor the column's time zone
can shift a watermark. Python-side they are naive UTC ``datetime`` values, as
in ``watermark.py``.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import json
import math
import re
import traceback
from urllib.parse import unquote, urlsplit, urlunsplit

try:
    import requests
    HAS_REQUESTS = True
    REQUESTS_IMPORT_ERROR = None
except ImportError:  # pragma: no cover - exercised only without requests
    requests = None
    HAS_REQUESTS = False
    REQUESTS_IMPORT_ERROR = traceback.format_exc()

from ansible.module_utils.basic import env_fallback, missing_required_lib

from ansible_collections.k2.iceberg_offload.plugins.module_utils.redaction import redact_urls
from ansible_collections.k2.iceberg_offload.plugins.module_utils.watermark import Watermark, format_timestamp

EPOCH = datetime.datetime(1970, 1, 1)
MAX_UINT64 = 2 ** 64 - 1
MAX_DATETIME_SECONDS = 2 ** 32 - 1  # DateTime is UInt32 seconds since the epoch

# Plain identifiers only: what ClickHouse accepts unquoted. Back-quoting would
# allow more, but the runbook's tables never need it and refusing is safer.
_IDENTIFIER_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")  # \Z: "$" would let a trailing newline in
MAX_IDENTIFIER_LENGTH = 128

# 18.16: "Code: 60, e.displayText() = DB::Exception: Table x doesn't exist., e.what() = DB::Exception"
# current: "Code: 60. DB::Exception: Table x does not exist. (UNKNOWN_TABLE) (version 24.3.1.1)"
_ERROR_RE = re.compile(
    r"Code:\s*(?P<code>\d+)[,.]\s*(?:e\.displayText\(\)\s*=\s*)?(?:DB::Exception:\s*)?"
    r"(?P<text>.*?)(?:,\s*e\.what\(\)\s*=.*)?(?:\s*\(version [^)]*\))?\s*$",
    re.S)

_ERROR_HINTS = {
    60: "check the table name and clickhouse_database",
    81: "check clickhouse_database",
    47: "check timestamp_column and sequence_column",
    192: "check clickhouse_user",
    193: "check clickhouse_password",
    194: "check clickhouse_password",
    516: "check clickhouse_user and clickhouse_password",
    164: "the user is read-only and may not change settings; this is a bug, please report it",
    159: "the query ran longer than clickhouse_timeout; raise it or query a smaller range",
    241: "the server ran out of memory for this query",
}

INTEGER_TYPES = ("UInt8", "UInt16", "UInt32", "UInt64", "Int8", "Int16", "Int32", "Int64")


class ClickHouseError(Exception):
    """A failed request or query; ``str()`` says what failed and what to check."""

    def __init__(self, message, code=None, http_status=None):
        super(ClickHouseError, self).__init__(message)
        self.code = code
        self.http_status = http_status


class ClickHouseInputError(ValueError):
    """An identifier or literal that may not go into a query."""


class NoSourceRowsError(ClickHouseError):
    """The source holds no row in the range asked for (never answered as 0)."""


def clickhouse_argument_spec():
    """Connection options shared by every module that reads ClickHouse."""
    return dict(
        clickhouse_url=dict(type="str", default="http://127.0.0.1:8123",
                            fallback=(env_fallback, ["CLICKHOUSE_URL"])),
        clickhouse_user=dict(type="str", default="default",
                             fallback=(env_fallback, ["CLICKHOUSE_USER"])),
        clickhouse_password=dict(type="str", default="", no_log=True,
                                 fallback=(env_fallback, ["CLICKHOUSE_PASSWORD"])),
        clickhouse_database=dict(type="str", default="default",
                                 fallback=(env_fallback, ["CLICKHOUSE_DATABASE"])),
        clickhouse_timeout=dict(type="float", default=60.0),
        clickhouse_connect_timeout=dict(type="float", default=5.0),
        clickhouse_validate_certs=dict(type="bool", default=True),
        clickhouse_ca_cert=dict(type="path", aliases=["clickhouse_ca_path"]),
    )


def ensure_required_libs(module):
    if not HAS_REQUESTS:
        module.fail_json(msg=missing_required_lib("requests"), exception=REQUESTS_IMPORT_ERROR)


# ---------------------------------------------------------------------------
# Identifiers and literals: the only ways anything reaches a query.

def validate_identifier(name, what="identifier"):
    """Return ``name`` if it is a plain ClickHouse identifier, else raise ClickHouseInputError."""
    if not isinstance(name, str):
        raise ClickHouseInputError("%s must be a string, got %r" % (what, name))
    if not name:
        raise ClickHouseInputError("%s must not be empty" % what)
    if len(name) > MAX_IDENTIFIER_LENGTH:
        raise ClickHouseInputError("%s is longer than %d characters: %r..."
                                   % (what, MAX_IDENTIFIER_LENGTH, name[:40]))
    if not _IDENTIFIER_RE.match(name):
        raise ClickHouseInputError(
            "%s %r is not a plain identifier (letters, digits and _ only, not starting with a "
            "digit)" % (what, name))
    return name


def quote_identifier(name, what="identifier"):
    return "`%s`" % validate_identifier(name, what)


def qualified_table(database, table):
    """`db`.`table` from a database and a table name; ``table`` may itself be ``db.table``."""
    if isinstance(table, str) and table.count(".") == 1:
        database, table = table.split(".")
    return "%s.%s" % (quote_identifier(database, "database name"),
                      quote_identifier(table, "table name"))


def split_table(database, table):
    if isinstance(table, str) and table.count(".") == 1:
        database, table = table.split(".")
    return (validate_identifier(database, "database name"),
            validate_identifier(table, "table name"))


def uint64_literal(value):
    """``toUInt64(n)`` for an int in [0, 2**64-1]; bools and everything else refused."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ClickHouseInputError("a UInt64 value must be an integer, got %r" % (value,))
    if value < 0 or value > MAX_UINT64:
        raise ClickHouseInputError("a UInt64 value must be between 0 and %d, got %d"
                                   % (MAX_UINT64, value))
    return "toUInt64(%d)" % value


def epoch_seconds(dt):
    """Seconds since the epoch of a naive UTC datetime, as a float (microseconds kept)."""
    if not isinstance(dt, datetime.datetime):
        raise ClickHouseInputError("a DateTime value must be a datetime, got %r" % (dt,))
    if dt.tzinfo is not None:
        dt = dt.astimezone(datetime.timezone.utc).replace(tzinfo=None)
    delta = dt - EPOCH
    return delta.days * 86400 + delta.seconds + delta.microseconds / 1e6


def datetime_literal(value):
    """``toDateTime(<unix seconds>)`` for a whole-second datetime within DateTime's range.

    Built from an integer, so no text and no time zone reaches the query.
    """
    seconds = epoch_seconds(value)
    if seconds != int(seconds):
        raise ClickHouseInputError("a DateTime value has whole seconds only, got %s"
                                   % format_timestamp(value))
    if seconds < 0 or seconds > MAX_DATETIME_SECONDS:
        raise ClickHouseInputError("%s is outside ClickHouse DateTime's range (1970 to 2106)"
                                   % format_timestamp(value))
    return "toDateTime(%d)" % int(seconds)


_STRING_ESCAPES = {"\\": "\\\\", "'": "\\'", "\n": "\\n", "\r": "\\r", "\t": "\\t",
                   "\0": "\\0", "\b": "\\b", "\f": "\\f"}


def string_literal(value):
    """A single-quoted ClickHouse string literal with every special character escaped."""
    if not isinstance(value, str):
        raise ClickHouseInputError("a String value must be text, got %r" % (value,))
    return "'%s'" % "".join(_STRING_ESCAPES.get(c, c) for c in value)


def from_epoch(seconds):
    if seconds is None:
        return None
    return EPOCH + datetime.timedelta(seconds=int(seconds))


# ---------------------------------------------------------------------------
# The queries. Each returns SQL text; ``ClickHouseClient.query`` runs it.

def server_info_sql():
    return "SELECT version(), timezone(), toUnixTimestamp(now())"


def table_columns_sql(database, table):
    database, table = split_table(database, table)
    return ("SELECT name, type FROM system.columns WHERE database = %s AND table = %s"
            % (string_literal(database), string_literal(table)))


def after_pair_condition(ts_col, seq_col, watermark):
    """SQL for "the row's pair is strictly greater than ``watermark``".

    ``ts > X OR (ts = X AND seq > N)``, with ``ts >= X`` in front so the primary
    key (exchange_timestamp, sequence_number) can skip parts. DateTime holds
    whole seconds: a watermark with a fraction of a second is passed by every
    row of a later second and equalled by none.
    """
    ts = quote_identifier(ts_col, "timestamp_column")
    seq = quote_identifier(seq_col, "sequence_column")
    if not isinstance(watermark, Watermark):
        raise ClickHouseInputError("watermark must be a Watermark pair, got %r" % (watermark,))
    seconds = epoch_seconds(watermark.max_timestamp)
    whole = EPOCH + datetime.timedelta(seconds=math.floor(seconds))
    if seconds != math.floor(seconds):
        return "%s > %s" % (ts, datetime_literal(whole))
    x = datetime_literal(whole)
    return "%s >= %s AND (%s > %s OR (%s = %s AND %s > %s))" % (
        ts, x, ts, x, ts, x, seq, uint64_literal(watermark.sequence_number))


def before_condition(ts_col, cutoff):
    """SQL for "the row's timestamp is strictly before ``cutoff``"."""
    ts = quote_identifier(ts_col, "timestamp_column")
    seconds = epoch_seconds(cutoff)
    return "%s < %s" % (ts, datetime_literal(EPOCH + datetime.timedelta(seconds=math.ceil(seconds))))


# A greatest pair is found in two steps: the greatest timestamp (one column, with the
# count), then the greatest sequence at exactly that timestamp (a primary-key lookup).
# A tuple max over every row gives the same pair 5-8x slower on 10 M rows (18.16), and
# the two steps can only ever return a pair that a row has.

def summary_sql(database, table, ts_col, seq_col):
    """Total rows and first/last timestamp of the whole table."""
    ts = quote_identifier(ts_col, "timestamp_column")
    quote_identifier(seq_col, "sequence_column")
    return ("SELECT count(), toUnixTimestamp(min(%s)), toUnixTimestamp(max(%s)) FROM %s"
            % (ts, ts, qualified_table(database, table)))


def after_watermark_sql(database, table, ts_col, seq_col, watermark):
    """Rows and greatest timestamp strictly after ``watermark`` (runbook Scenario 5, step 2)."""
    return ("SELECT count(), toUnixTimestamp(max(%s)) FROM %s WHERE %s"
            % (quote_identifier(ts_col, "timestamp_column"), qualified_table(database, table),
               after_pair_condition(ts_col, seq_col, watermark)))


def upto_watermark_sql(database, table, ts_col, seq_col, watermark):
    """Rows at or before ``watermark`` (compared as a pair): what the cold tier must hold."""
    return ("SELECT count() FROM %s WHERE NOT (%s)"
            % (qualified_table(database, table), after_pair_condition(ts_col, seq_col, watermark)))


def before_cutoff_sql(database, table, ts_col, seq_col, cutoff):
    """Rows and greatest timestamp strictly before ``cutoff`` (runbook Scenario 3, step 3)."""
    quote_identifier(seq_col, "sequence_column")
    return ("SELECT count(), toUnixTimestamp(max(%s)) FROM %s WHERE %s"
            % (quote_identifier(ts_col, "timestamp_column"), qualified_table(database, table),
               before_condition(ts_col, cutoff)))


def max_sequence_at_sql(database, table, ts_col, seq_col, timestamp, condition=None):
    """Rows and greatest sequence at exactly ``timestamp`` (and ``condition``, SQL built here)."""
    where = "%s = %s" % (quote_identifier(ts_col, "timestamp_column"), datetime_literal(timestamp))
    if condition:
        where += " AND (%s)" % condition
    return ("SELECT count(), max(%s) FROM %s WHERE %s"
            % (quote_identifier(seq_col, "sequence_column"), qualified_table(database, table), where))


# ---------------------------------------------------------------------------
# The client.

def parse_error(body):
    """(code, text) from a ClickHouse error body, either generation's format."""
    body = (body or "").strip()
    m = _ERROR_RE.match(body)
    if not m:
        return None, body[:500]
    return int(m.group("code")), m.group("text").strip()


def split_url_credentials(url, user="default", password=""):
    """``http://user:secret@host:8123/`` -> (``http://host:8123/``, user, password).

    Credentials in the URL are used as the user and password (sent in the X-ClickHouse-User/Key
    headers, never as HTTP basic auth as well, which ClickHouse refuses in combination). When
    clickhouse_user or clickhouse_password also say something different, the call is refused:
    the credentials must come from one place. No message contains the password.
    """
    if not isinstance(url, str) or "@" not in url:
        return url, user, password
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url, user, password
    userinfo, hostport = parts.netloc.rsplit("@", 1)
    url_user, has_password, url_password = userinfo.partition(":")
    url_user, url_password = unquote(url_user), unquote(url_password)
    if url_user and user not in (None, "", "default", url_user):
        raise ClickHouseInputError(
            "clickhouse_url names the user %r and clickhouse_user says %r; give the credentials in one place "
            "(preferably clickhouse_user and clickhouse_password, which is never logged)" % (url_user, user))
    if has_password and password and password != url_password:
        raise ClickHouseInputError(
            "clickhouse_url carries a password and clickhouse_password holds a different one; give the password "
            "in one place (preferably clickhouse_password, which is never logged)")
    return (urlunsplit(parts._replace(netloc=hostport)), url_user or user,
            url_password if has_password else password)


class ClickHouseClient(object):
    def __init__(self, url="http://127.0.0.1:8123", user="default", password="", database="default",
                 timeout=60.0, connect_timeout=5.0, validate_certs=True, ca_cert=None, session=None):
        if isinstance(url, str):
            url, user, password = split_url_credentials(url, user, password)
        if not isinstance(url, str) or not re.match(r"https?://[^\s/?#@]+(/[^\s?#]*)?\Z", url):
            raise ClickHouseInputError(
                "clickhouse_url must be an http:// or https:// URL such as http://127.0.0.1:8123, "
                "got %r" % (redact_urls(url),))
        self.url = url.rstrip("/") + "/"
        self.user = user or "default"
        self.password = password or ""
        self.database = validate_identifier(database, "clickhouse_database")
        for name, value in (("clickhouse_timeout", timeout),
                            ("clickhouse_connect_timeout", connect_timeout)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ClickHouseInputError("%s must be a number of seconds above zero, got %r"
                                           % (name, value))
        self.timeout = (float(connect_timeout), float(timeout))
        self.verify = ca_cert if (validate_certs and ca_cert) else bool(validate_certs)
        self.session = session or requests.Session()

    @classmethod
    def from_module(cls, module):
        p = module.params
        try:
            return cls(url=p["clickhouse_url"], user=p["clickhouse_user"],
                       password=p["clickhouse_password"], database=p["clickhouse_database"],
                       timeout=p["clickhouse_timeout"], connect_timeout=p["clickhouse_connect_timeout"],
                       validate_certs=p["clickhouse_validate_certs"], ca_cert=p["clickhouse_ca_cert"])
        except ClickHouseInputError as e:
            module.fail_json(msg=str(e))

    def _where(self):
        return "ClickHouse at %s (user %s)" % (self.url.rstrip("/"), self.user)

    def query(self, sql):
        """Run one SELECT; return its rows (lists, JSONCompact-decoded)."""
        headers = {"X-ClickHouse-User": self.user, "X-ClickHouse-Key": self.password,
                   "Content-Type": "text/plain; charset=utf-8"}
        try:
            # auth=_no_auth: the credentials go in the headers only, never also as basic auth from ~/.netrc
            resp = self.session.post(self.url, params={"database": self.database},
                                     data=(sql + " FORMAT JSONCompact").encode("utf-8"),
                                     headers=headers, timeout=self.timeout, verify=self.verify, auth=_no_auth)
        except requests.exceptions.SSLError as e:
            raise ClickHouseError("TLS verification of %s failed (%s); set clickhouse_ca_cert to the "
                                  "CA that signed the server's certificate" % (self._where(), e))
        except requests.exceptions.ConnectTimeout:
            raise ClickHouseError("cannot reach %s within %ss; check clickhouse_url and that "
                                  "ClickHouse is running" % (self._where(), self.timeout[0]))
        except requests.exceptions.ReadTimeout:
            raise ClickHouseError("%s did not answer within %ss (clickhouse_timeout)"
                                  % (self._where(), self.timeout[1]))
        except requests.exceptions.ConnectionError as e:
            raise ClickHouseError("cannot connect to %s: %s; check clickhouse_url and that "
                                  "ClickHouse is running" % (self._where(), _short(e)))
        except requests.exceptions.RequestException as e:
            raise ClickHouseError("request to %s failed: %s" % (self._where(), _short(e)))
        # Decoded as UTF-8 always: requests' guess from a short body can be anything.
        body = resp.content.decode("utf-8", "replace")
        if resp.status_code != 200:
            code, text = parse_error(body)
            hint = _ERROR_HINTS.get(code)
            raise ClickHouseError(
                "%s answered HTTP %d%s: %s%s" % (
                    self._where(), resp.status_code, (", code %d" % code) if code is not None else "",
                    text or "(empty body)", ("; " + hint) if hint else ""),
                code=code, http_status=resp.status_code)
        try:
            return json.loads(body)["data"]
        except (ValueError, KeyError, TypeError):
            raise ClickHouseError("%s answered something that is not ClickHouse JSON: %r"
                                  % (self._where(), body[:200]))

    # -- questions ----------------------------------------------------------

    def server_info(self):
        version, timezone, now = self.query(server_info_sql())[0]
        return {"version": version, "timezone": timezone, "now": from_epoch(int(now))}

    def check_trades_table(self, table, ts_col, seq_col):
        """Fail clearly when the table or its pair columns are missing or of the wrong type."""
        database, name = split_table(self.database, table)
        columns = dict((r[0], r[1]) for r in self.query(table_columns_sql(database, name)))
        if not columns:
            raise ClickHouseError("table %s.%s does not exist in %s" % (database, name, self._where()),
                                  code=60)
        for col, ok, want in ((ts_col, _is_datetime, "DateTime"),
                              (seq_col, _is_integer, "an integer type such as UInt64")):
            if col not in columns:
                raise ClickHouseError("table %s.%s has no column %s (columns: %s)"
                                      % (database, name, col, ", ".join(sorted(columns))), code=47)
            if not ok(columns[col]):
                raise ClickHouseError("column %s.%s.%s is %s; it must be %s"
                                      % (database, name, col, columns[col], want))
        return columns

    def _pair_at(self, table, ts_col, seq_col, epoch, condition=None):
        count, seq = self.query(max_sequence_at_sql(self.database, table, ts_col, seq_col,
                                                    from_epoch(epoch), condition))[0]
        if not int(count):  # the rows went away between the two queries
            return None
        return Watermark(from_epoch(epoch), int(seq))

    def summary(self, table, ts_col="exchange_timestamp", seq_col="sequence_number"):
        count, min_ts, max_ts = self.query(summary_sql(self.database, table, ts_col, seq_col))[0]
        count = int(count)
        if count == 0:
            return {"total_rows": 0, "min_timestamp": None, "max_timestamp": None, "max_pair": None}
        return {"total_rows": count, "min_timestamp": from_epoch(min_ts),
                "max_timestamp": from_epoch(max_ts),
                "max_pair": self._pair_at(table, ts_col, seq_col, max_ts)}

    def after_watermark(self, table, watermark, ts_col="exchange_timestamp", seq_col="sequence_number"):
        count, max_ts = self.query(after_watermark_sql(self.database, table, ts_col, seq_col,
                                                       watermark))[0]
        count = int(count)
        pair = None
        if count:
            pair = self._pair_at(table, ts_col, seq_col, max_ts,
                                 after_pair_condition(ts_col, seq_col, watermark))
        return {"rows": count, "max_pair": pair}

    def upto_watermark(self, table, watermark, ts_col="exchange_timestamp", seq_col="sequence_number"):
        return int(self.query(upto_watermark_sql(self.database, table, ts_col, seq_col, watermark))[0][0])

    def before_cutoff(self, table, cutoff, ts_col="exchange_timestamp", seq_col="sequence_number"):
        count, max_ts = self.query(before_cutoff_sql(self.database, table, ts_col, seq_col, cutoff))[0]
        count = int(count)
        pair = self._pair_at(table, ts_col, seq_col, max_ts) if count else None
        return {"rows": count, "max_pair": pair}


def _no_auth(request):
    return request


def _is_datetime(type_name):
    return type_name == "DateTime" or type_name.startswith("DateTime(")


def _is_integer(type_name):
    return type_name in INTEGER_TYPES


def _short(exc):
    text = redact_urls(str(exc))
    m = re.search(r"\[Errno -?\d+\] [^')\]]+", text)
    return m.group(0) if m else text[:300]
