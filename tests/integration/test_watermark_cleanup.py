# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""watermark_cleanup against real PostgreSQL: keep, older_than, duplicates_only, ties, check mode,
idempotence, backups and audit."""
import datetime

T = datetime.datetime


def per_table(wdb):
    return dict(wdb.sql("SELECT table_name, count(*) FROM %s GROUP BY 1" % wdb.table))


def latest_ids(wdb):
    return dict(wdb.sql("SELECT DISTINCT ON (table_name) table_name, id FROM %s"
                        " ORDER BY table_name, created_at DESC, id DESC" % wdb.table))


def test_keep_check_mode_run_and_second_run(wdb):
    wdb.create_table()
    wdb.fill("bronze_trades_binance", 30)
    wdb.fill("bronze_trades_kraken", 12)
    wdb.fill("tiny", 3)
    before = wdb.snapshot()
    r = wdb.run("watermark_cleanup", check=True, diff=True, keep=10)
    assert r["changed"] and r["deleted"] == 22
    assert {t["table_name"]: t["deleted"] for t in r["tables"]} == {
        "bronze_trades_binance": 20, "bronze_trades_kraken": 2, "tiny": 0}
    assert r["diff"]["after"]["bronze_trades_binance"] == {"entries": 10}
    assert wdb.snapshot() == before, "check mode wrote something"
    newest = set(x[0] for x in wdb.sql("SELECT id FROM %s WHERE table_name='bronze_trades_binance'"
                                       " ORDER BY created_at DESC, id DESC LIMIT 10" % wdb.table))
    r = wdb.run("watermark_cleanup", keep=10, backup="table", backup_table=wdb.schema + ".bk")
    assert r["changed"] and r["deleted"] == 22 and r["backup_rows"] == 22
    assert per_table(wdb) == {"bronze_trades_binance": 10, "bronze_trades_kraken": 10, "tiny": 3}
    assert set(x[0] for x in wdb.sql("SELECT id FROM %s WHERE table_name='bronze_trades_binance'" % wdb.table)) == newest
    # the backup holds exactly the deleted rows
    deleted = set(x[0] for x in before["offload_watermarks"]) - set(x[0] for x in wdb.rows())
    assert set(x[0] for x in wdb.sql("SELECT id FROM %s.bk" % wdb.schema)) == deleted
    audit = wdb.audit()
    assert [(a[0], a[1], a[5]) for a in audit] == [
        ("k2.iceberg_offload.watermark_cleanup", "bronze_trades_binance", 20),
        ("k2.iceberg_offload.watermark_cleanup", "bronze_trades_kraken", 2)]
    assert audit[0][3] == {"entries": 30} and audit[0][4] == {"entries": 10} and audit[0][6] == wdb.schema + ".bk"
    r = wdb.run("watermark_cleanup", keep=10)
    assert not r["changed"] and r["deleted"] == 0 and len(wdb.audit()) == 2


def test_ties_on_created_at_are_ordered_by_id(wdb):
    wdb.create_table()
    same = T(2026, 2, 12, 10, 0, 0)
    ids = [wdb.insert("b", T(2026, 2, 12, 9), i, created_at=same) for i in range(6)]
    r = wdb.run("watermark_cleanup", keep=2, backup="none")
    assert r["deleted"] == 4
    assert sorted(x[0] for x in wdb.rows()) == ids[-2:]


def test_null_created_at_rows_sort_first_like_the_scheduler_reads(wdb):
    wdb.create_table()
    wdb.fill("b", 5)
    wdb.sql("INSERT INTO %s (table_name, max_timestamp, sequence_number, created_at)"
            " VALUES ('b', '2026-02-12 00:00:00', 1, NULL)" % wdb.table)
    r = wdb.run("watermark_cleanup", keep=2, backup="none")
    assert r["deleted"] == 4
    left = wdb.rows()
    assert len(left) == 2 and any(x[4] is None for x in left)


def test_older_than_never_deletes_the_latest_entry(wdb):
    wdb.create_table()
    for i in range(5):
        wdb.insert("b", T(2026, 1, 1, i), i, created_at=T(2020, 1, 1, i))
    latest = latest_ids(wdb)["b"]
    r = wdb.run("watermark_cleanup", older_than="30d", backup="none")
    assert r["deleted"] == 4 and [x[0] for x in wdb.rows()] == [latest]


def test_keep_and_older_than_together_delete_only_what_both_select(wdb):
    wdb.create_table()
    wdb.fill("b", 20, step_seconds=3600)     # one per hour, the last 20 hours
    r = wdb.run("watermark_cleanup", check=True, keep=5, older_than="10h")
    # beyond the newest 5 are 15 entries; of those, older than 10 h are the 10 oldest (ages 10..19 h)
    assert r["deleted"] == 10


def test_duplicates_only_keeps_newest_of_each_pair(wdb):
    wdb.create_table()
    a = [wdb.insert("b", T(2026, 2, 12, 10), 500) for dummy in range(4)]
    b = wdb.insert("b", T(2026, 2, 12, 10, 15), 600)
    c = [wdb.insert("b", T(2026, 2, 12, 10, 30), 700) for dummy in range(3)]
    other = [wdb.insert("c", T(2026, 2, 12, 10), 500) for dummy in range(2)]
    r = wdb.run("watermark_cleanup", tables=["b"], duplicates_only=True, backup="none")
    assert r["deleted"] == 5
    assert sorted(x[0] for x in wdb.rows()) == sorted([a[-1], b, c[-1]] + other)
    assert not wdb.run("watermark_cleanup", tables=["b"], duplicates_only=True)["changed"]


def test_file_backup(wdb, tmp_path):
    wdb.create_table()
    wdb.fill("b", 12)
    r = wdb.run("watermark_cleanup", keep=10, backup="file", backup_dir=str(tmp_path))
    assert r["backup"].startswith(str(tmp_path)) and r["backup_rows"] == 2
    assert len(open(r["backup"]).read().splitlines()) == 3


def test_unknown_source_table_is_reported_not_failed(wdb):
    wdb.create_table()
    wdb.fill("b", 12)
    r = wdb.run("watermark_cleanup", tables=["no_such_table"], keep=1)
    assert not r["failed"] and not r["changed"] and r["tables"][0]["entries_before"] == 0


def test_missing_watermark_table_fails_clearly(wdb):
    r = wdb.run("watermark_cleanup", keep=10)
    assert r["failed"] and "does not exist" in r["msg"] and "state=present" in r["msg"]
    assert wdb.snapshot() == {}


def test_rewrite_keeps_newest_per_table_ids_and_audit(wdb):
    wdb.create_table()
    wdb.fill("b", 300)
    wdb.fill("c", 40)
    same = T(2030, 1, 1)
    tie = [wdb.insert("d", T(2026, 2, 12, 9), i, created_at=same) for i in range(5)]
    newest = set(x[0] for x in wdb.sql(
        "SELECT id FROM (SELECT id, row_number() OVER (PARTITION BY table_name ORDER BY created_at DESC, id DESC) rn"
        " FROM %s) s WHERE rn <= 3" % wdb.table))
    r = wdb.run("watermark_cleanup", keep=3, backup="none", method="rewrite")
    assert r["changed"] and r["method"] == "rewrite" and r["deleted"] == 297 + 37 + 2
    assert set(x[0] for x in wdb.rows()) == newest and set(tie[-3:]) <= newest
    assert {t["table_name"]: t["entries_after"] for t in r["tables"]} == {"b": 3, "c": 3, "d": 3}
    assert sorted(a[1] for a in wdb.audit()) == ["b", "c", "d"]
    # the id sequence still continues after the kept ids
    new_id = wdb.insert("b", T(2026, 3, 1), 1)
    assert new_id > max(newest)
    r = wdb.run("watermark_cleanup", keep=3, backup="none", method="rewrite")
    assert r["changed"] and r["deleted"] == 1       # the entry just added pushed one out
    r = wdb.run("watermark_cleanup", keep=3, backup="none", method="rewrite")
    assert not r["changed"] and r["deleted"] == 0


def test_rewrite_is_refused_when_it_would_not_be_exact(wdb):
    wdb.create_table()
    wdb.fill("b", 30)
    before = wdb.snapshot()
    r = wdb.run("watermark_cleanup", keep=3, method="rewrite")          # backup defaults to table
    assert r["failed"] and "backup=none" in r["msg"]
    r = wdb.run("watermark_cleanup", keep=3, backup="none", tables=["b"], method="rewrite")
    assert r["failed"] and "tables" in r["msg"]
    assert wdb.snapshot() == before


def test_auto_uses_delete_on_small_tables(wdb):
    wdb.create_table()
    wdb.fill("b", 30)
    r = wdb.run("watermark_cleanup", keep=3, backup="none")
    assert r["method"] == "delete" and r["deleted"] == 27
