# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Hostile and malformed inputs: each is answered with a clear message and nothing is written."""
import psycopg2
import pytest

PAIR = dict(tables=["b"], strategy="pair", max_timestamp="2026-02-13T00:00:00Z", sequence_number=99)

CASES = [
    # (id, module, args, words the message must contain)
    ("sql-in-table", "watermark_reset", dict(PAIR, watermark_table="offload_watermarks; DROP TABLE x"),
     ["watermark_table", "not a valid table name"]),
    ("quote-in-table", "watermark_cleanup", dict(keep=1, watermark_table='offload"watermarks'),
     ["watermark_table", "not a valid table name"]),
    ("unicode-table", "watermark_info", dict(watermark_table="wätermarks"), ["not a valid table name"]),
    ("empty-table", "watermark_cleanup", dict(keep=1, watermark_table=""), ["watermark_table"]),
    ("long-table", "watermark_reset", dict(PAIR, watermark_table="w" * 64), ["not a valid table name"]),
    ("three-part-table", "watermark_info", dict(watermark_table="a.b.c"), ["not a valid table name"]),
    ("sql-in-audit", "watermark_reset", dict(PAIR, audit_table="a; DELETE FROM b"), ["audit_table"]),
    ("sql-in-backup", "watermark_cleanup", dict(keep=1, backup_table="x) AS SELECT 1; --"), ["backup_table"]),
    ("empty-source", "watermark_reset", dict(PAIR, tables=[""]), ["empty table name"]),
    ("long-source", "watermark_reset", dict(PAIR, tables=["b" * 256]), ["longer than 255"]),
    ("control-char-source", "watermark_cleanup", dict(keep=1, tables=["b\n"]), ["control characters"]),
    ("bad-timestamp", "watermark_reset", dict(PAIR, max_timestamp="yesterday"), ["ISO 8601"]),
    ("impossible-date", "watermark_reset", dict(PAIR, max_timestamp="2026-02-30T00:00:00"), ["ISO 8601"]),
    ("pre-1970", "watermark_reset", dict(PAIR, max_timestamp="1969-12-31T23:59:59Z"), ["before 1970"]),
    ("sql-in-timestamp", "watermark_reset", dict(PAIR, max_timestamp="2026-02-12'; DROP TABLE offload_watermarks;--"),
     ["ISO 8601"]),
    ("negative-seq", "watermark_reset", dict(PAIR, sequence_number=-1), ["sequence_number"]),
    ("huge-seq", "watermark_reset", dict(PAIR, sequence_number=2 ** 63), ["sequence_number"]),
    ("text-seq", "watermark_reset", dict(PAIR, sequence_number="12abc"), ["sequence_number"]),
    ("keep-zero", "watermark_cleanup", dict(keep=0), ["keep must be at least 1"]),
    ("keep-negative", "watermark_cleanup", dict(keep=-5), ["keep must be at least 1"]),
    ("keep-text", "watermark_cleanup", dict(keep="ten"), ["keep"]),
    ("older-zero", "watermark_cleanup", dict(older_than="0s"), ["older_than"]),
    ("older-junk", "watermark_cleanup", dict(older_than="forever"), ["older_than"]),
    ("nothing-to-delete-rule", "watermark_cleanup", dict(), ["say what to delete"]),
    ("shift-zero", "watermark_reset", dict(tables=["b"], strategy="shift_by", shift_by="0"), ["shift_by"]),
    ("shift-junk", "watermark_reset", dict(tables=["b"], strategy="shift_by", shift_by="-1 fortnight"), ["shift_by"]),
    ("unknown-strategy", "watermark_reset", dict(tables=["b"], strategy="lookback"), ["strategy"]),
    ("unknown-mode", "watermark_reset", dict(PAIR, mode="upsert"), ["mode"]),
    ("tables-without-strategy", "watermark_reset", dict(tables=["b"]), ["no strategy"]),
    ("negative-lock-timeout", "watermark_cleanup", dict(keep=1, lock_timeout=-1), ["lock_timeout"]),
    ("unknown-option", "watermark_info", dict(drop_everything=True), ["drop_everything"]),
    ("bad-ssl-mode", "watermark_info", dict(ssl_mode="sometimes"), ["ssl_mode"]),
]


@pytest.fixture
def populated(wdb):
    wdb.create_table()
    wdb.fill("b", 20)
    wdb.fill("c", 5)
    return wdb


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_hostile_input_refused_and_nothing_written(populated, case):
    module, args, words = case[1:]
    before = populated.snapshot()
    r = populated.run(module, **args)
    assert r["failed"], r
    for w in words:
        assert w in r["msg"], (w, r["msg"])
    assert populated.snapshot() == before


def test_sql_in_a_source_table_value_is_only_a_value(populated):
    """A source table name is a parameter, never SQL: an odd name matches nothing and deletes nothing."""
    before = populated.snapshot()
    r = populated.run("watermark_cleanup", keep=1, tables=["b'; DELETE FROM offload_watermarks; --"])
    assert not r["failed"] and not r["changed"] and r["deleted"] == 0
    assert populated.snapshot() == before


def test_wrong_password(populated):
    before = populated.snapshot()
    r = populated.run("watermark_cleanup", keep=1, login_password="not-the-password")
    assert r["failed"] and "password authentication failed" in r["msg"] and "login_password" in r["msg"]
    assert "not-the-password" not in r["_stdout"]
    assert populated.snapshot() == before


def test_unreachable_host_closed_port(populated):
    r = populated.run("watermark_info", port=25438, connect_timeout=3)
    assert r["failed"] and "Cannot connect" in r["msg"] and "Scenario 2" in r["msg"]


def test_unknown_database(populated):
    r = populated.run("watermark_info", login_db="no_such_db")
    assert r["failed"] and "does not exist" in r["msg"]


@pytest.fixture
def readonly_role(populated, pg_server):
    role = "k2_ro_" + populated.schema[-8:]
    try:
        populated.sql("CREATE ROLE %s LOGIN PASSWORD 'ro-pass'" % role)
    except psycopg2.Error as e:
        pytest.skip("cannot create a role on this server: %s" % e)
    populated.sql("GRANT USAGE ON SCHEMA %s TO %s" % (populated.schema, role))
    populated.sql("GRANT SELECT ON ALL TABLES IN SCHEMA %s TO %s" % (populated.schema, role))
    yield role
    populated.sql("DROP OWNED BY %s" % role)
    populated.sql("DROP ROLE %s" % role)


def test_read_only_role(populated, readonly_role):
    before = populated.snapshot()
    creds = dict(login_user=readonly_role, login_password="ro-pass")
    r = populated.run("watermark_info", **creds)
    assert not r["failed"] and r["tables"] and r["health"]["can_terminate_backends"] is False
    r = populated.run("watermark_cleanup", keep=1, **creds)
    assert r["failed"] and "permission denied" in r["msg"] and "privilege" in r["msg"]
    r = populated.run("watermark_reset", strategy="safe_point", mode="replace", **creds)
    assert r["failed"] and "permission denied" in r["msg"]
    r = populated.run("watermark_reset", **dict(PAIR, **creds))
    assert r["failed"] and "permission denied" in r["msg"]
    assert populated.snapshot() == before
    # check mode only reads, so it works for a read-only role
    r = populated.run("watermark_cleanup", check=True, keep=1, **creds)
    assert not r["failed"] and r["deleted"] == 23
