# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The module parts of the runbook's other cases (issue 14), against real PostgreSQL 15:

- watermark_info names a session that holds a lock on the table (and does not fail when even reads
  wait), says whether the role may INSERT, reads the id sequence against max(id), and returns this
  collection's recent audit rows;
- watermark_cleanup above_pair deletes the entries ahead of a pair, the latest included, after a
  backup, and never leaves a table without a watermark;
- watermark_reset state=present advances an id sequence that is behind max(id);
- db_idle_sessions holding_lock ends only a session idle in a transaction that holds such a lock;
- db_connection_info names why a login fails.
"""
import threading
import time
import uuid

import psycopg2

from tests.support.ansible_module import run_module


class Holder(object):
    """An interactive psql left idle in its transaction."""

    def __init__(self, server, statements, application_name="psql"):
        self.conn = psycopg2.connect(application_name=application_name, **server.dsn())
        self.pid = self.conn.get_backend_pid()
        with self.conn.cursor() as cur:
            for statement in statements:
                cur.execute(statement)

    def alive(self):
        try:
            with self.conn.cursor() as cur:
                cur.execute("SELECT 1")
            return True
        except psycopg2.Error:
            return False

    def release(self):
        try:
            self.conn.rollback()
            self.conn.close()
        except psycopg2.Error:
            pass


def latest(wdb, table_name):
    return wdb.sql("SELECT max_timestamp::text, sequence_number FROM %s WHERE table_name = %%s"
                   " ORDER BY created_at DESC, id DESC LIMIT 1" % wdb.table, (table_name,))[0]


def test_a_lock_that_makes_reads_wait_is_named_not_a_failure(wdb, pg_server):
    wdb.create_table()
    wdb.fill("t", 4)
    holder = Holder(pg_server, ["LOCK TABLE %s" % wdb.table])
    try:
        started = time.monotonic()
        r = wdb.run("watermark_info", lock_timeout=1)
        assert time.monotonic() - started < 15
        assert not r["failed"] and r["locked"] is True and r["tables"] == [], r
        h = [x for x in r["lock_holders"] if x["pid"] == holder.pid]
        assert h and h[0]["mode"] == "AccessExclusiveLock" and h[0]["application_name"] == "psql"
        assert h[0]["state"] == "idle in transaction" and "LOCK TABLE" in h[0]["query"]
        assert "another session holds a lock" in r["findings"][-1]
        assert [x["pid"] for x in r["health"]["watermark_lock_holders"]] == [holder.pid]
    finally:
        holder.release()


def test_a_lock_that_only_blocks_writes_is_in_health(wdb, pg_server):
    wdb.create_table()
    wdb.fill("t", 4)
    holder = Holder(pg_server, ["LOCK TABLE %s IN EXCLUSIVE MODE" % wdb.table])
    try:
        r = wdb.run("watermark_info", lock_timeout=1)
        assert not r.get("locked") and r["tables"][0]["latest"], r  # reads pass an EXCLUSIVE lock
        h = r["health"]["watermark_lock_holders"]
        assert [x["pid"] for x in h] == [holder.pid] and h[0]["mode"] == "ExclusiveLock"
    finally:
        holder.release()
    r = wdb.run("watermark_info")
    assert r["health"]["watermark_lock_holders"] == []


def test_can_insert_says_whether_the_role_may_write(wdb, pg_server):
    wdb.create_table()
    wdb.fill("t", 2)
    role = "k2t_reader_" + uuid.uuid4().hex[:8]
    password = uuid.uuid4().hex
    wdb.sql("CREATE ROLE %s LOGIN PASSWORD '%s'" % (role, password))
    try:
        wdb.sql("GRANT USAGE ON SCHEMA %s TO %s" % (wdb.schema, role))
        wdb.sql("GRANT SELECT ON %s TO %s" % (wdb.table, role))
        r = run_module("watermark_info", dict(wdb.args("watermark_info"), login_user=role, login_password=password))
        assert "health" in r, r.get("msg")
        assert r["health"]["can_insert"] is False and r["health"]["current_user"] == role, r
        wdb.sql("GRANT INSERT ON %s TO %s" % (wdb.table, role))
        r = run_module("watermark_info", dict(wdb.args("watermark_info"), login_user=role, login_password=password))
        assert r["health"]["can_insert"] is True
    finally:
        wdb.sql("DROP OWNED BY %s" % role)
        wdb.sql("DROP ROLE %s" % role)


def test_an_id_sequence_behind_max_id_is_found_and_advanced(wdb):
    wdb.create_table()
    wdb.fill("t", 5)
    seq = wdb.sql("SELECT pg_get_serial_sequence(%s, 'id')", (wdb.table,))[0][0]
    assert wdb.run("watermark_info")["id_sequence"]["behind"] is False
    wdb.sql("SELECT setval(%s, 1, false)", (seq,))
    info = wdb.run("watermark_info")
    assert info["id_sequence"] == {"sequence": seq, "next_value": 1, "max_id": 5, "behind": True}, info
    assert any("primary key" in f for f in info["findings"])
    try:
        wdb.insert("t", "2026-02-13 00:00:00", 999)
        raise AssertionError("the INSERT should have violated the primary key")
    except psycopg2.errors.UniqueViolation:
        pass
    plan = wdb.run("watermark_reset", check=True, state="present")
    assert plan["changed"] and plan["id_sequence"]["next_value_after"] == 6 and wdb.audit() == []
    done = wdb.run("watermark_reset", state="present")
    assert done["changed"] and done["id_sequence"]["next_value_after"] == 6 and len(done["audit_ids"]) == 1
    assert wdb.insert("t", "2026-02-13 00:00:00", 999) == 6  # the scheduler's INSERT works again
    assert not wdb.run("watermark_reset", state="present")["changed"]  # idempotent


def test_above_pair_deletes_the_entries_ahead_of_the_cold_tier_after_a_backup(wdb):
    wdb.create_table()
    wdb.fill("a", 6)                           # seq 10..60, the latest (60) newest
    wdb.fill("b", 3)
    cold = {"max_timestamp": "2026-02-12 00:45:00", "sequence_number": 30}  # the 3rd entry's pair
    plan = wdb.run("watermark_cleanup", check=True, tables=["a"], above_pair=cold)
    assert plan["changed"] and plan["deleted"] == 3 and wdb.audit() == []
    r = wdb.run("watermark_cleanup", tables=["a"], above_pair=cold)
    assert r["deleted"] == 3 and r["backup"] and len(r["audit_ids"]) == 1
    assert latest(wdb, "a") == ("2026-02-12 00:45:00", 30)     # the scheduler resumes from the cold tier
    assert len(wdb.sql("SELECT * FROM %s.%s" % (wdb.schema, r["backup"].split(".")[-1]))) == 3
    assert len(wdb.sql("SELECT * FROM %s WHERE table_name = 'b'" % wdb.table)) == 3  # other tables untouched
    assert not wdb.run("watermark_cleanup", tables=["a"], above_pair=cold)["changed"]
    # every entry above: nothing deleted, a table is never left without a watermark
    low = {"max_timestamp": "2020-01-01 00:00:00", "sequence_number": 0}
    r = wdb.run("watermark_cleanup", tables=["a"], above_pair=low)
    assert r["deleted"] == 0 and any("every entry is above" in w for w in r.get("warnings", [])), r
    bad = wdb.run("watermark_cleanup", tables=["a"], above_pair=cold, keep=2)
    assert bad["failed"] and "combines with tables only" in bad["msg"]


def test_holding_lock_ends_only_the_idle_lock_holder(wdb, pg_server):
    wdb.create_table()
    wdb.fill("t", 2)
    plain_idle = Holder(pg_server, [], application_name="k2-idle")   # idle, no transaction, no lock
    reader = Holder(pg_server, ["SELECT * FROM %s" % wdb.table], application_name="k2-reader")  # ACCESS SHARE
    holder = Holder(pg_server, ["LOCK TABLE %s IN SHARE MODE" % wdb.table])
    try:
        time.sleep(2.5)
        args = dict(wdb.server.module_args(watermark_table=wdb.table), holding_lock=True, older_than="2s",
                    states=["idle in transaction", "idle in transaction (aborted)"], terminate=True)
        plan = run_module("db_idle_sessions", args, check=True)
        assert [s["pid"] for s in plan["sessions"]] == [holder.pid] and plan["terminated"] == [], plan
        assert plan["changed"]
        r = run_module("db_idle_sessions", args)
        assert r["terminated"] == [holder.pid], r
        assert not holder.alive() and reader.alive() and plain_idle.alive()
        # nothing holds it now: the scheduler's INSERT goes through at once
        wdb.sql("SET lock_timeout = '1s'")
        wdb.insert("t", "2026-02-13 00:00:00", 999)
    finally:
        for h in (plain_idle, reader, holder):
            h.release()


def test_db_connection_info_names_why_a_login_fails(pg_server):
    base = pg_server.module_args()
    ok = run_module("db_connection_info", dict(base))
    assert ok["ok"] and ok["kind"] == "ok" and ok["server_version"]
    wrong = run_module("db_connection_info", dict(base, login_password="not-the-password-" + uuid.uuid4().hex[:6]))
    assert not wrong["ok"] and wrong["kind"] == "authentication", wrong
    assert "not-the-password" not in str(wrong)
    missing = run_module("db_connection_info", dict(base, login_db="k2t_no_such_db"))
    assert missing["kind"] == "database_missing", missing
    refused = run_module("db_connection_info", dict(base, port=1))
    assert refused["kind"] == "refused" and not refused["ok"], refused
    dns = run_module("db_connection_info", dict(base, login_host="k2-no-such-host.invalid"))
    assert dns["kind"] == "dns", dns


def test_a_lock_waiting_scheduler_insert_is_counted_as_waiting(wdb, pg_server):
    wdb.create_table()
    wdb.fill("t", 2)
    holder = Holder(pg_server, ["LOCK TABLE %s IN SHARE MODE" % wdb.table])
    writer = threading.Thread(target=lambda: _insert_quietly(pg_server, wdb.table), daemon=True)
    writer.start()
    try:
        deadline = time.monotonic() + 10
        waiting = 0
        while time.monotonic() < deadline and not waiting:
            h = wdb.run("watermark_info", lock_timeout=1)["health"]["watermark_lock_holders"]
            waiting = h[0]["waiting_sessions"] if h else 0
        assert waiting == 1
    finally:
        holder.release()
        writer.join(10)


def _insert_quietly(server, table):
    conn = psycopg2.connect(application_name="k2-offload", **server.dsn())
    try:
        with conn.cursor() as cur:
            cur.execute("SET lock_timeout = '8s'")
            cur.execute("INSERT INTO %s (table_name, max_timestamp, sequence_number) VALUES ('t', now(), 1)" % table)
        conn.commit()
    except psycopg2.Error:
        pass
    finally:
        conn.close()
