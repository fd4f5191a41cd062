# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""watermark_cleanup regressions_only against real PostgreSQL: per table, the entries whose pair is lower,
as a pair, than the greatest pair written before them (by created_at, id) go; never the latest entry;
backup, audit, check mode, diff and idempotence as for the other modes."""
import datetime

T = datetime.datetime


def entries(wdb, rows, table_name="b"):
    """rows: (max_timestamp, sequence_number), written one minute apart in this order; their ids."""
    base = T(2026, 2, 12, 8)
    return [wdb.insert(table_name, ts, seq, created_at=base + datetime.timedelta(minutes=i))
            for i, (ts, seq) in enumerate(rows)]


def ids(wdb, table_name="b"):
    return [r[0] for r in wdb.sql("SELECT id FROM %s WHERE table_name = %%s ORDER BY created_at, id" % wdb.table,
                                  (table_name,))]


def test_the_regressed_entries_and_those_below_the_high_water_mark_go(wdb):
    wdb.create_table()
    e = entries(wdb, [
        (T(2026, 2, 12, 10, 0), 500),
        (T(2026, 2, 12, 10, 15), 600),   # the high-water mark
        (T(2026, 2, 12, 9, 0), 400),     # regressed
        (T(2026, 2, 12, 10, 5), 550),    # above the previous entry, still below the high-water mark
        (T(2026, 2, 12, 10, 15), 590),   # same timestamp, lower sequence: below, as a pair
        (T(2026, 2, 12, 10, 15), 600),   # equal to the high-water mark: a duplicate, not a regression
        (T(2026, 2, 12, 10, 20), 1),     # later timestamp, lower sequence: above, as a pair
        (T(2026, 2, 12, 10, 30), 700),   # the latest
    ])
    other = entries(wdb, [(T(2026, 2, 12, 10), 5), (T(2026, 2, 12, 9), 4), (T(2026, 2, 12, 11), 6)], "c")
    before = wdb.snapshot()
    plan = wdb.run("watermark_cleanup", check=True, diff=True, regressions_only=True, tables=["b"])
    assert plan["changed"] and plan["deleted"] == 3 and wdb.snapshot() == before
    assert plan["diff"]["before"] == {"b": {"entries": 8}} and plan["diff"]["after"] == {"b": {"entries": 5}}
    r = wdb.run("watermark_cleanup", regressions_only=True, tables=["b"], backup="table",
                backup_table=wdb.schema + ".bk")
    assert r["changed"] and r["deleted"] == 3 and r["backup_rows"] == 3
    assert r["tables"][0]["latest_regressed"] is False
    assert ids(wdb) == [e[0], e[1], e[5], e[6], e[7]]
    assert sorted(x[0] for x in wdb.sql("SELECT id FROM %s.bk" % wdb.schema)) == [e[2], e[3], e[4]]
    assert ids(wdb, "c") == other, "tables limits the cleanup"
    audit = wdb.audit()
    assert [(a[1], a[5], a[6]) for a in audit] == [("b", 3, wdb.schema + ".bk")]
    assert audit[0][2]["regressions_only"] is True
    again = wdb.run("watermark_cleanup", regressions_only=True, tables=["b"])
    assert not again["changed"] and again["deleted"] == 0 and len(wdb.audit()) == 1


def test_every_table_by_default_and_file_backup(wdb, tmp_path):
    wdb.create_table()
    entries(wdb, [(T(2026, 2, 12, 10), 5), (T(2026, 2, 12, 9), 4), (T(2026, 2, 12, 11), 6)], "b")
    entries(wdb, [(T(2026, 2, 12, 10), 5), (T(2026, 2, 12, 10), 3), (T(2026, 2, 12, 11), 6)], "c")
    r = wdb.run("watermark_cleanup", regressions_only=True, backup="file", backup_dir=str(tmp_path))
    assert r["changed"] and r["deleted"] == 2 and r["backup_rows"] == 2
    with open(r["backup"]) as f:
        assert len(f.read().strip().splitlines()) == 3  # header and the two rows
    assert [t["deleted"] for t in r["tables"]] == [1, 1]


def test_the_latest_entry_is_never_deleted_even_when_it_regressed(wdb):
    wdb.create_table()
    e = entries(wdb, [(T(2026, 2, 12, 10), 500), (T(2026, 2, 12, 9), 400), (T(2026, 2, 12, 9, 30), 450)])
    r = wdb.run("watermark_cleanup", regressions_only=True)
    assert r["changed"] and r["deleted"] == 1 and ids(wdb) == [e[0], e[2]]
    t = r["tables"][0]
    assert t["latest_regressed"] is True
    assert t["latest_pair"] == {"max_timestamp": "2026-02-12 09:30:00", "sequence_number": 450}
    assert t["high_water_pair"] == {"max_timestamp": "2026-02-12 10:00:00", "sequence_number": 500}
    assert any("reset the watermark forward first" in w.lower() for w in r.get("warnings", [])), r.get("warnings")
    again = wdb.run("watermark_cleanup", regressions_only=True)
    assert not again["changed"] and again["tables"][0]["latest_regressed"] is True


def test_combined_with_older_than_both_rules_must_select(wdb):
    wdb.create_table()
    wdb.sql("INSERT INTO %s (table_name, max_timestamp, sequence_number, created_at) VALUES"
            " ('b', '2026-02-12 10:00', 500, LOCALTIMESTAMP - interval '40 days'),"
            " ('b', '2026-02-12 09:00', 400, LOCALTIMESTAMP - interval '39 days'),"
            " ('b', '2026-02-12 09:30', 450, LOCALTIMESTAMP - interval '1 day'),"
            " ('b', '2026-02-12 11:00', 600, LOCALTIMESTAMP)" % wdb.table)
    r = wdb.run("watermark_cleanup", regressions_only=True, older_than="30d", backup="none")
    assert r["deleted"] == 1
    assert [x[0] for x in wdb.sql("SELECT sequence_number FROM %s ORDER BY created_at" % wdb.table)] == [500, 450, 600]


def test_rewrite_is_refused_with_regressions_only(wdb):
    wdb.create_table()
    entries(wdb, [(T(2026, 2, 12, 10), 5), (T(2026, 2, 12, 9), 4), (T(2026, 2, 12, 11), 6)])
    before = wdb.snapshot()
    r = wdb.run("watermark_cleanup", regressions_only=True, keep=1, method="rewrite", backup="none")
    assert r["failed"] and "regressions_only" in r["msg"]
    assert wdb.snapshot() == before


def test_a_default_backup_name_taken_within_the_same_second_is_numbered(wdb):
    """Two cleanups within one second (a retry, two operators): the second backup gets `_2`, it does not fail."""
    wdb.create_table()
    entries(wdb, [(T(2026, 2, 12, 10), 500), (T(2026, 2, 12, 9), 400), (T(2026, 2, 12, 11), 600)])
    now = datetime.datetime.utcnow()
    taken = ["offload_watermarks_backup_%s" % (now + datetime.timedelta(seconds=s)).strftime("%Y%m%d_%H%M%S")
             for s in range(-2, 30)]
    for name in taken:  # every default name the run can pick is already there
        wdb.sql("CREATE TABLE %s.%s (LIKE %s)" % (wdb.schema, name, wdb.table))
    r = wdb.run("watermark_cleanup", regressions_only=True)
    assert not r.get("failed"), r.get("msg")
    assert r["deleted"] == 1 and r["backup"].endswith("_2"), r
    assert r["backup"].split(".")[-1][:-2] in taken
    assert wdb.sql("SELECT count(*) FROM %s" % r["backup"])[0][0] == 1
