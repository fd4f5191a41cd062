# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A writer inserting every 50 ms (as the scheduler would, much faster) while cleanup and reset run:
no insert lost or failed, no regression, and the writer's waits measured."""
import time

import psycopg2

from tests.support.ansible_module import run_module
from tests.support.writer import T0, Writer, p99


def preload(wdb, n):
    """n entries of table b, one every 100 ms, ending a day ago less n/10 seconds."""
    wdb.sql("INSERT INTO %s (table_name, max_timestamp, sequence_number, created_at)"
            " SELECT 'b', %%s::timestamp + g * interval '1 second', g,"
            " LOCALTIMESTAMP - interval '1 day' + g * interval '100 ms' FROM generate_series(1, %%s) g"
            % wdb.table, (T0, n))
    wdb.sql("ANALYZE %s" % wdb.table)


def test_writer_during_cleanup_and_reset(wdb, pg_server):
    wdb.create_table()
    n = 200000
    preload(wdb, n)
    writer = Writer(pg_server.dsn(), wdb.table, first_seq=n)
    writer.start()
    try:
        time.sleep(0.5)
        started = len(writer.done)
        clean = wdb.run("watermark_cleanup", keep=10, backup="table", backup_table=wdb.schema + ".bk_clean")
        mid = len(writer.done)
        reset = wdb.run("watermark_reset", strategy="safe_point", mode="replace", backup="table",
                        backup_table=wdb.schema + ".bk_reset")
        time.sleep(0.5)
    finally:
        writer.stop.set()
        writer.join(10)
    assert not clean["failed"] and not reset["failed"], (clean.get("msg"), reset.get("msg"))
    assert clean["deleted"] >= n - 10
    assert writer.errors == []
    assert mid > started and len(writer.done) > mid, "the writer kept writing during the runs"

    # no lost insert: every row the writer committed is in the table or in one of the backups
    def ids(query):
        return set(r[0] for r in wdb.sql(query))
    present = ids("SELECT id FROM %s" % wdb.table)
    saved = ids("SELECT id FROM %s.bk_clean" % wdb.schema) | ids("SELECT id FROM %s.bk_reset" % wdb.schema)
    written = set(d[0] for d in writer.done)
    assert written <= present | saved
    # rows written after the reset are all still there
    last_reset_id = reset["tables"][0]["entry"]["id"]
    after = set(d[0] for d in writer.done if d[0] > last_reset_id)
    assert after and after <= present

    # no regression: by (created_at, id) the pairs never go backward
    pairs = wdb.sql("SELECT max_timestamp, sequence_number FROM %s ORDER BY created_at, id" % wdb.table)
    assert all(a <= b for a, b in zip(pairs, pairs[1:])), pairs[:20]
    # the reset went to the greatest pair that existed, which a row really held
    assert reset["tables"][0]["after"]["sequence_number"] in set(d[1] for d in writer.done)

    waits = [d[2] for d in writer.done]
    worst = p99(waits)
    print("writer inserts: %d, p99 wait %.1f ms, max %.1f ms" % (len(waits), worst * 1000, max(waits) * 1000))
    assert worst <= 0.100


def test_two_runs_do_not_interleave(wdb, pg_server):
    """A second run waits for the advisory lock, then fails naming the holder."""
    wdb.create_table()
    wdb.fill("b", 20)
    holder = psycopg2.connect(**pg_server.dsn())
    holder.autocommit = True
    cur = holder.cursor()
    cur.execute("SELECT pg_advisory_lock(%s, hashtext(%s))", (0x4B32, wdb.table))
    try:
        before = wdb.snapshot()
        r = run_module("watermark_cleanup", wdb.args("watermark_cleanup", keep=1, lock_timeout=1))
        assert r["failed"] and "another watermark recovery run holds the lock" in r["msg"]
        assert r["lock_holder"]["pid"] == holder.get_backend_pid()
        assert wdb.snapshot() == before
    finally:
        holder.close()
    r = run_module("watermark_cleanup", wdb.args("watermark_cleanup", keep=1, lock_timeout=1))
    assert r["changed"] and r["deleted"] == 19


def test_writer_during_rewrite_cleanup(wdb, pg_server):
    """method=rewrite under a writer: counts exact, kept rows are the newest, no insert fails or is lost."""
    wdb.create_table()
    n = 150000
    preload(wdb, n)
    initial = set(r[0] for r in wdb.sql("SELECT id FROM %s" % wdb.table))
    writer = Writer(pg_server.dsn(), wdb.table, first_seq=n)
    writer.start()
    try:
        time.sleep(0.5)
        r = wdb.run("watermark_cleanup", keep=10, backup="none")
        time.sleep(0.5)
    finally:
        writer.stop.set()
        writer.join(10)
    assert not r["failed"], r.get("msg")
    assert r["method"] == "rewrite" and writer.errors == []
    everything = initial | set(d[0] for d in writer.done)
    order = wdb.sql("SELECT id FROM %s ORDER BY created_at, id" % wdb.table)
    present = [x[0] for x in order]
    gone = everything - set(present)
    assert r["deleted"] == len(gone), "reported %d deleted, %d are gone" % (r["deleted"], len(gone))
    assert r["tables"][0]["entries_before"] - r["tables"][0]["deleted"] == 10
    # what is gone is older than everything that stayed
    assert max(gone) < min(present)
    waits = sorted(d[2] for d in writer.done)
    print("rewrite under writer: counted under lock=%s, longest insert wait %.1f ms"
          % (r.get("counted_under_lock"), waits[-1] * 1000))
