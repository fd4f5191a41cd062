# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A reset the scheduler reads (issue 9): when entries are dated after the server's now() (its TimeZone
changed, or its clock was stepped back), watermark_reset still writes the entry the scheduler's
ORDER BY created_at DESC LIMIT 1 returns, verifies that before commit, and is idempotent;
watermark_info reports the future-dated entries as a finding of their own, without a spurious
regression."""
import datetime

import psycopg2
import pytest

T = datetime.datetime
PAIR = dict(tables=["b"], strategy="pair", max_timestamp="2026-02-12T12:00:00Z", sequence_number=1200)


def scheduler_reads(wdb, table_name="b"):
    """Exactly the scheduler's query."""
    return wdb.sql("SELECT id, max_timestamp, sequence_number FROM %s WHERE table_name = %%s"
                   " ORDER BY created_at DESC LIMIT 1" % wdb.table, (table_name,))[0]


def insert_from_another_timezone(wdb, pg_server, hours_ahead, rows):
    """Entries written by a session whose TimeZone is ``hours_ahead`` of the server's default, with the
    column default now(): what a TimeZone change does to created_at."""
    offset = wdb.sql("SELECT EXTRACT(TIMEZONE FROM now())::int")[0][0]
    conn = psycopg2.connect(**pg_server.dsn())
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("SET TIME ZONE INTERVAL '%+d seconds'" % (offset + hours_ahead * 3600))
            for ts, seq in rows:
                cur.execute("INSERT INTO %s (table_name, max_timestamp, sequence_number) VALUES ('b', %%s, %%s)"
                            % wdb.table, (ts, seq))
    finally:
        conn.close()


@pytest.fixture
def future_db(wdb, pg_server):
    """Entries of b written before a TimeZone change (now 3 hours in the future of the server's now()),
    then one entry written after it, at now()."""
    wdb.create_table()
    insert_from_another_timezone(wdb, pg_server, 3, [(T(2026, 2, 12, 10), 1000), (T(2026, 2, 12, 11), 1100)])
    wdb.insert("b", T(2026, 2, 12, 11, 15), 1150)
    return wdb


def test_append_writes_the_entry_the_scheduler_reads_and_is_idempotent(future_db):
    wdb = future_db
    assert scheduler_reads(wdb)[2] == 1100  # the future-dated entry is what the scheduler reads today
    plan = wdb.run("watermark_reset", check=True, **PAIR)
    assert plan["changed"] and plan["tables"][0]["future_entries"] == 2
    r = wdb.run("watermark_reset", **PAIR)
    assert r["changed"] and not r["failed"], r.get("msg")
    entry = r["tables"][0]["entry"]
    assert scheduler_reads(wdb) == (entry["id"], T(2026, 2, 12, 12), 1200)
    newest_other = wdb.sql("SELECT max(created_at) FROM %s WHERE id <> %%s" % wdb.table, (entry["id"],))[0][0]
    assert T.fromisoformat(entry["created_at"]) > newest_other
    assert any("dated after the server's now" in w for w in r.get("warnings", [])), r.get("warnings")
    assert wdb.audit()[-1][4]["created_at"] == entry["created_at"]
    rows = len(wdb.rows())
    again = wdb.run("watermark_reset", **PAIR)
    assert not again["failed"] and not again["changed"] and len(wdb.rows()) == rows


def test_replace_leaves_no_future_entry(future_db):
    wdb = future_db
    r = wdb.run("watermark_reset", mode="replace", backup="table", backup_table=wdb.schema + ".bk", **PAIR)
    assert r["changed"] and r["backup_rows"] == 3
    assert scheduler_reads(wdb)[2] == 1200
    info = wdb.run("watermark_info", tables=["b"])
    assert info["tables"][0]["future_entries"] == 0 and info["tables"][0]["age_seconds"] >= 0


def test_an_entry_without_created_at_is_refused_and_nothing_is_written(wdb):
    """NULLs sort first in the scheduler's ORDER BY created_at DESC: no entry can be stamped after one."""
    wdb.create_table()
    wdb.insert("b", T(2026, 2, 12, 10), 1000)
    wdb.sql("INSERT INTO %s (table_name, max_timestamp, sequence_number, created_at)"
            " VALUES ('b', '2026-02-12 09:00', 900, NULL)" % wdb.table)
    before = wdb.snapshot()
    r = wdb.run("watermark_reset", allow_backward=True, **PAIR)
    assert r["failed"] and "would not be the one the scheduler reads" in r["msg"] and "NULL" in r["msg"], r["msg"]
    assert wdb.snapshot() == before


def test_info_reports_future_entries_without_a_spurious_regression(future_db):
    wdb = future_db
    r = wdb.run("watermark_info", tables=["b"])
    t = r["tables"][0]
    assert t["future_entries"] == 2
    assert t["latest"]["sequence_number"] == 1100 and t["age_seconds"] < 0
    assert t["warning"] and not t["stale"] and r["warning_tables"] == ["b"]
    assert t["regression_count"] == 0 and t["regressions"] == [], t["regressions"]
    finding = [f for f in r["findings"] if "dated after the server's now" in f]
    assert finding and "b: 2 entries" in finding[0] and "age_seconds" in finding[0], r["findings"]
    assert not any("regression(s)" in f for f in r["findings"])
    # the entries written at the server's now still count as the last hour's
    assert t["entries_last_hour"] == 1


def test_info_after_the_old_reset_shows_no_spurious_regression(wdb):
    """The issue's picture: a reset stamped now() below future-dated entries with lower pairs."""
    wdb.create_table()
    wdb.sql("INSERT INTO %s (table_name, max_timestamp, sequence_number, created_at)"
            " VALUES ('b', '2026-02-12 10:00', 1000, LOCALTIMESTAMP + interval '5 hours')" % wdb.table)
    wdb.sql("INSERT INTO %s (table_name, max_timestamp, sequence_number) VALUES ('b', '2026-02-12 12:00', 1200)"
            % wdb.table)
    r = wdb.run("watermark_info", tables=["b"])
    t = r["tables"][0]
    assert t["future_entries"] == 1 and t["regression_count"] == 0
