# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""watermark_reset against real PostgreSQL: DDL, strategies, modes, backups, check/diff, audit."""
import datetime
import csv

T = datetime.datetime


def columns(wdb):
    return wdb.sql("SELECT column_name, data_type, character_maximum_length, is_nullable, column_default"
                   " FROM information_schema.columns WHERE table_schema = %s AND table_name = 'offload_watermarks'"
                   " ORDER BY ordinal_position", (wdb.schema,))


def test_state_present_creates_runbook_ddl_and_is_idempotent(wdb):
    r = wdb.run("watermark_reset", check=True)
    assert r["changed"] and r["created_table"] and not r["failed"]
    assert wdb.snapshot() == {}, "check mode created something"
    r = wdb.run("watermark_reset")
    assert r["changed"] and r["created_table"] and r["created_index"]
    cols = columns(wdb)
    assert [(c[0], c[1], c[2], c[3]) for c in cols] == [
        ("id", "integer", None, "NO"), ("table_name", "character varying", 255, "NO"),
        ("max_timestamp", "timestamp without time zone", None, "NO"),
        ("sequence_number", "bigint", None, "NO"), ("created_at", "timestamp without time zone", None, "YES")]
    assert cols[0][4].startswith("nextval(") and cols[4][4] == "now()"
    idx = wdb.sql("SELECT indexdef FROM pg_indexes WHERE schemaname = %s AND indexname = 'idx_watermarks_table_created'",
                  (wdb.schema,))
    assert idx and "(table_name, created_at DESC)" in idx[0][0]
    pk = wdb.sql("SELECT count(*) FROM pg_indexes WHERE schemaname = %s AND tablename = 'offload_watermarks' AND indexdef LIKE '%%UNIQUE%%(id)'", (wdb.schema,))
    assert pk[0][0] == 1
    r = wdb.run("watermark_reset")
    assert not r["changed"] and not r["failed"]
    assert [a[0] for a in wdb.audit()] == ["k2.iceberg_offload.watermark_reset"]


def test_missing_index_is_recreated(wdb):
    wdb.create_table()
    wdb.sql("DROP INDEX %s.idx_watermarks_table_created" % wdb.schema)
    r = wdb.run("watermark_reset")
    assert r["changed"] and r["created_index"] and not r["created_table"]
    assert wdb.exists(wdb.schema + ".idx_watermarks_table_created")


def test_pair_append_converts_offsets_to_naive_utc_and_is_idempotent(wdb):
    wdb.create_table()
    args = dict(tables=["bronze_trades_binance", "bronze_trades_kraken"], strategy="pair",
                max_timestamp="2026-02-12T12:00:00+02:00", sequence_number=4242)
    r = wdb.run("watermark_reset", check=True, diff=True, **args)
    assert r["changed"] and wdb.rows() == []
    want = {"max_timestamp": "2026-02-12 10:00:00", "sequence_number": 4242}
    assert r["diff"]["after"]["bronze_trades_binance"]["latest"] == want
    r = wdb.run("watermark_reset", diff=True, **args)
    assert r["changed"] and [p["action"] for p in r["tables"]] == ["append", "append"]
    assert [(x[1], x[2], x[3]) for x in wdb.rows()] == [
        ("bronze_trades_binance", T(2026, 2, 12, 10), 4242), ("bronze_trades_kraken", T(2026, 2, 12, 10), 4242)]
    assert r["diff"]["before"]["bronze_trades_kraken"]["latest"] is None
    r = wdb.run("watermark_reset", **args)
    assert not r["changed"] and len(wdb.rows()) == 2
    audit = wdb.audit()
    assert len(audit) == 2 and all(a[5] == 1 for a in audit)
    assert "login_password" not in audit[0][2] and audit[0][2]["strategy"] == "pair"
    assert audit[0][4]["latest"]["sequence_number"] == 4242 and audit[0][7] == wdb.server.user and audit[0][8]


def test_new_entry_becomes_the_latest_even_when_created_at_ties(wdb):
    wdb.create_table()
    now = wdb.sql("SELECT LOCALTIMESTAMP + interval '1 second'")[0][0]
    # A future created_at is odd but possible after a clock step; the entry the scheduler reads
    # is what the module reports as before.
    wdb.insert("b", T(2026, 2, 12, 9), 1, created_at=now)
    wdb.insert("b", T(2026, 2, 12, 9), 2, created_at=now)
    r = wdb.run("watermark_reset", check=True, tables=["b"], strategy="pair",
                max_timestamp="2026-02-12T09:00:00Z", sequence_number=2)
    assert not r["changed"], "the latest of two rows with equal created_at is the one with the higher id"


def test_safe_point_is_greatest_existing_pair_not_runbook_max_max(wdb):
    wdb.create_table()
    wdb.insert("b", T(2026, 2, 12, 9), 100)
    wdb.insert("b", T(2026, 2, 12, 10), 500)   # the real progress
    wdb.insert("b", T(2026, 2, 12, 8), 900)    # corrupted/regressed entry, now the latest
    runbook = wdb.sql("SELECT MAX(max_timestamp), MAX(sequence_number) FROM %s WHERE table_name='b'" % wdb.table)[0]
    assert runbook == (T(2026, 2, 12, 10), 900)  # a pair no row holds
    r = wdb.run("watermark_reset", strategy="safe_point", mode="replace", backup="table",
                backup_table=wdb.schema + ".wm_backup")
    want = {"max_timestamp": "2026-02-12 10:00:00", "sequence_number": 500}
    assert r["changed"] and r["tables"][0]["after"] == want
    assert [(x[2], x[3]) for x in wdb.rows()] == [(T(2026, 2, 12, 10), 500)]
    assert r["backup"] == wdb.schema + ".wm_backup" and r["backup_rows"] == 3
    assert wdb.sql("SELECT count(*) FROM %s.wm_backup" % wdb.schema)[0][0] == 3
    r = wdb.run("watermark_reset", strategy="safe_point", mode="replace")
    assert not r["changed"], "one entry already at the safe point"


def test_replace_with_file_backup(wdb, tmp_path):
    wdb.create_table()
    wdb.fill("b", 5)
    wdb.fill("c", 3)
    r = wdb.run("watermark_reset", tables=["b"], strategy="shift_by", shift_by="+15m", mode="replace",
                backup="file", backup_dir=str(tmp_path))
    assert r["changed"] and r["backup"].startswith(str(tmp_path)) and r["backup_rows"] == 5
    with open(r["backup"]) as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["id", "table_name", "max_timestamp", "sequence_number", "created_at"] and len(rows) == 6
    assert {x[1] for x in rows[1:]} == {"b"}
    left = wdb.rows()
    assert len([x for x in left if x[1] == "b"]) == 1 and len([x for x in left if x[1] == "c"]) == 3


def test_backward_refused_then_allowed(wdb):
    wdb.create_table()
    wdb.fill("b", 4)
    before = wdb.snapshot()
    r = wdb.run("watermark_reset", tables=["b"], strategy="shift_by", shift_by="-1h")
    assert r["failed"] and "backward" in r["msg"] and "allow_backward" in r["msg"]
    assert wdb.snapshot() == before
    r = wdb.run("watermark_reset", check=True, tables=["b"], strategy="shift_by", shift_by="-1h")
    assert r["failed"] and wdb.snapshot() == before
    r = wdb.run("watermark_reset", tables=["b"], strategy="shift_by", shift_by="-1h", allow_backward=True)
    assert r["changed"] and r["tables"][0]["backward"]
    latest = wdb.sql("SELECT max_timestamp, sequence_number FROM %s ORDER BY created_at DESC, id DESC LIMIT 1"
                     % wdb.table)[0]
    assert latest == (T(2026, 2, 12, 0) + datetime.timedelta(seconds=4 * 900 - 3600), 40)


def test_check_mode_replace_returns_plan_and_writes_nothing(wdb):
    wdb.create_table()
    wdb.fill("b", 6)
    wdb.fill("c", 2)
    before = wdb.snapshot()
    r = wdb.run("watermark_reset", check=True, diff=True, strategy="safe_point", mode="replace")
    assert r["changed"] and not r["failed"]
    plan = {p["table_name"]: p for p in r["tables"]}
    assert plan["b"]["entries_deleted"] == 6 and plan["c"]["entries_deleted"] == 2
    assert plan["b"]["action"] == "replace" and r["diff"]["after"]["b"]["entries"] == 1
    assert wdb.snapshot() == before


def test_first_write_creates_table_and_audit_in_one_go(wdb):
    r = wdb.run("watermark_reset", tables=["bronze_trades_binance"], strategy="pair",
                max_timestamp="2026-02-11T10:00:00", sequence_number=0)
    assert r["changed"] and r["created_table"] and len(wdb.rows()) == 1
    assert len(wdb.audit()) == 2 and len(r["audit_ids"]) == 2


def test_safe_point_on_empty_table_fails_clearly(wdb):
    wdb.create_table()
    r = wdb.run("watermark_reset", tables=["b"], strategy="safe_point")
    assert r["failed"] and "no watermark entries" in r["msg"] and wdb.rows() == []


def test_existing_backup_table_is_refused_and_nothing_deleted(wdb):
    wdb.create_table()
    wdb.fill("b", 3)
    wdb.sql("CREATE TABLE %s.taken (x int)" % wdb.schema)
    before = wdb.snapshot()
    r = wdb.run("watermark_reset", strategy="safe_point", mode="replace", backup_table=wdb.schema + ".taken")
    assert r["failed"] and "already exists" in r["msg"]
    assert wdb.snapshot() == before
