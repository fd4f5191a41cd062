# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""watermark_info against real PostgreSQL: the findings of the runbook's diagnosis steps."""
import datetime
import threading
import time

import psycopg2

T = datetime.datetime


def by_table(r):
    return {t["table_name"]: t for t in r["tables"]}


def test_missing_table_is_a_finding_not_a_failure(wdb):
    r = wdb.run("watermark_info")
    assert not r["failed"] and not r["changed"]
    assert r["table_exists"] is False and r["index_exists"] is False and r["tables"] == []
    assert "Scenario 3" in r["findings"][0]
    assert r["finding_kinds"] == [{"kind": "watermark-table-missing", "table": None, "text": r["findings"][0]}]
    assert r["health"]["server_version"] == wdb.sql("SHOW server_version")[0][0] and r["health"]["connections"] >= 1


def test_missing_index_is_a_finding(wdb):
    wdb.create_table()
    wdb.sql("DROP INDEX %s.idx_watermarks_table_created" % wdb.schema)
    r = wdb.run("watermark_info")
    assert r["table_exists"] and not r["index_exists"] and "idx_watermarks_table_created" in r["findings"][0]
    assert r["finding_kinds"][0]["kind"] == "index-missing"


def test_healthy_stale_and_warning_tables(wdb):
    wdb.create_table()
    wdb.fill("healthy", 8)                       # last entry: now
    wdb.sql("INSERT INTO %s (table_name, max_timestamp, sequence_number, created_at) VALUES"
            " ('stale', '2026-02-12 08:00', 1, LOCALTIMESTAMP - interval '2 hours'),"
            " ('warn', '2026-02-12 08:00', 1, LOCALTIMESTAMP - interval '40 minutes')" % wdb.table)
    r = wdb.run("watermark_info")
    t = by_table(r)
    assert set(t) == {"healthy", "stale", "warn"}
    assert not t["healthy"]["stale"] and not t["healthy"]["warning"]
    assert t["healthy"]["entries_last_hour"] == 4 and t["healthy"]["expected_entries_last_hour"] == 4.0
    assert t["healthy"]["total_entries"] == 8 and t["healthy"]["latest"]["sequence_number"] == 80
    assert t["stale"]["stale"] and 7100 < t["stale"]["age_seconds"] < 7300
    assert t["warn"]["warning"] and not t["warn"]["stale"]
    assert r["stale_tables"] == ["stale"] and sorted(r["warning_tables"]) == ["stale", "warn"]
    r = wdb.run("watermark_info", tables=["healthy", "nothing_here"], check=True)
    t = by_table(r)
    assert t["nothing_here"]["latest"] is None and t["nothing_here"]["stale"]
    assert "nothing_here has no watermark entry" in " ".join(r["findings"])
    assert [(f["kind"], f["table"]) for f in r["finding_kinds"]] == [("watermark-missing", "nothing_here")]


def test_latest_entry_ties_use_id(wdb):
    wdb.create_table()
    same = T(2026, 2, 12, 10)
    wdb.insert("b", T(2026, 2, 12, 9), 1, created_at=same)
    last = wdb.insert("b", T(2026, 2, 12, 9), 2, created_at=same)
    r = wdb.run("watermark_info", tables=["b"])
    assert r["tables"][0]["latest"]["id"] == last


def test_gaps_regressions_bursts_and_duplicate_pairs(wdb):
    wdb.create_table()
    ins = "INSERT INTO %s (table_name, max_timestamp, sequence_number, created_at) VALUES" % wdb.table
    # regular cycles, then a 2-hour gap, then a regression, then a burst of duplicates
    wdb.sql(ins + " ('b', '2026-02-12 05:00', 50, LOCALTIMESTAMP - interval '5 hours'),"
                  " ('b', '2026-02-12 05:15', 60, LOCALTIMESTAMP - interval '4 hours 45 minutes'),"
                  " ('b', '2026-02-12 07:15', 80, LOCALTIMESTAMP - interval '2 hours 45 minutes'),"
                  " ('b', '2026-02-12 06:00', 70, LOCALTIMESTAMP - interval '2 hours 30 minutes')")
    for i in range(12):
        wdb.sql(ins + " ('b', '2026-02-12 07:30', 90, LOCALTIMESTAMP - interval '1 minute' * %s)", (30 - i,))
    r = wdb.run("watermark_info", tables=["b"])
    t = r["tables"][0]
    assert t["gap_count"] == 2  # 4h45 -> 2h45 ago, and 2h30 -> 30 min ago
    assert any(abs(g["seconds"] - 7200) < 1 for g in t["gaps"])
    assert t["regression_count"] == 1
    reg = t["regressions"][0]
    assert reg["previous"]["sequence_number"] == 80 and reg["entry"]["sequence_number"] == 70
    assert t["duplicate_pairs"][0] == {"max_timestamp": "2026-02-12 07:30:00", "sequence_number": 90, "entries": 12}
    assert len(t["duplicate_bursts"]) == 1 and t["duplicate_bursts"][0]["max_entries_per_hour"] == 12
    assert any("regression" in f for f in r["findings"]) and any("burst" in f for f in r["findings"])
    # the same findings, in the same order, by kind: what the health-check job branches on
    assert [f["text"] for f in r["finding_kinds"]] == r["findings"]
    assert {(f["kind"], f["table"]) for f in r["finding_kinds"]} >= {("regression", "b"), ("duplicate-burst", "b")}


def test_ungranted_lock_shows_the_blocker(wdb, pg_server):
    wdb.create_table()
    blocker = psycopg2.connect(**pg_server.dsn())
    cur = blocker.cursor()
    cur.execute("LOCK TABLE %s IN ACCESS EXCLUSIVE MODE" % wdb.table)
    waiter = psycopg2.connect(**pg_server.dsn())
    waiter.autocommit = True

    def wait_insert():
        try:
            waiter.cursor().execute("INSERT INTO %s (table_name, max_timestamp, sequence_number)"
                                    " VALUES ('b', now(), 1)" % wdb.table)
        except psycopg2.Error:
            pass
    th = threading.Thread(target=wait_insert)
    th.start()
    try:
        time.sleep(0.5)
        # the module's own reads would wait on ACCESS EXCLUSIVE too: health only, another table name
        r = wdb.run("watermark_info", watermark_table=wdb.schema + ".other_table")
        locks = r["health"]["ungranted_locks"]
        mine = [lk for lk in locks if lk["blocking_pid"] == blocker.get_backend_pid()]
        assert mine and "INSERT INTO" in mine[0]["query"] and "LOCK TABLE" in mine[0]["blocking_query"]
    finally:
        blocker.rollback()
        th.join(10)
        blocker.close()
        waiter.close()


def _examples_play(wdb, tmp_path):
    """The module's first EXAMPLES (gather, then assert), pointed at this test's database."""
    import yaml
    from ansible_collections.k2.iceberg_offload.plugins.modules import watermark_info
    tasks = yaml.safe_load(watermark_info.EXAMPLES)[:2]
    tasks[0]["k2.iceberg_offload.watermark_info"] = wdb.args("watermark_info", tables=["b"])
    path = tmp_path / "examples.yml"
    path.write_text(yaml.safe_dump([{"hosts": "localhost", "gather_facts": False, "connection": "local",
                                     "tasks": tasks}]))
    return str(path)


def test_the_examples_stale_check_fails_on_a_missing_table(wdb, tmp_path):
    from tests.support.ansible_module import run_playbook
    rc, data, out = run_playbook(_examples_play(wdb, tmp_path))
    assert rc != 0 and "does not exist" in out, out[-2000:]
    wdb.create_table()
    wdb.fill("b", 4)
    rc, data, out = run_playbook(_examples_play(wdb, tmp_path))
    assert rc == 0, out[-2000:]
