# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""No run waits on a lock without a bound (issue 9): every lock the modules take, against an open
transaction holding a conflicting lock. The module must give up within lock_timeout (0: at once,
without queueing) and say who holds the lock; the scheduler-style INSERT that queued behind the
module's lock request must not be stuck for longer than that bound; nothing is written."""
import threading
import time

import psycopg2
import pytest

from tests.support.ansible_module import run_module

# What starting ansible and the module costs at most on this shared 2-core machine, beyond the lock wait.
OVERHEAD = 8.0


class Holder(object):
    """An open transaction holding a lock, as a stuck scheduler cycle or an operator's psql would."""

    def __init__(self, server, statements):
        self.conn = psycopg2.connect(application_name="k2-test-holder", **server.dsn())
        with self.conn.cursor() as cur:
            for statement in statements:
                cur.execute(statement)

    def release(self):
        self.conn.rollback()
        self.conn.close()


def queued_module_backend(server, seconds, thread):
    """Wait until a k2 module's backend waits for a lock; its pid, or None when the module ended first."""
    conn = psycopg2.connect(**server.dsn())
    conn.autocommit = True
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and thread.is_alive():
            with conn.cursor() as cur:
                cur.execute("SELECT pid FROM pg_stat_activity WHERE application_name LIKE 'k2.iceberg_offload%%'"
                            " AND wait_event_type = 'Lock'")
                row = cur.fetchone()
            if row:
                return row[0]
            time.sleep(0.05)
        return None
    finally:
        conn.close()


def scheduler_insert(server, table, out):
    """The scheduler's INSERT, timed; bounded by a statement_timeout so a stuck test cannot hang."""
    conn = psycopg2.connect(**server.dsn())
    conn.autocommit = True
    start = time.monotonic()
    try:
        with conn.cursor() as cur:
            cur.execute("SET statement_timeout = '60s'")
            cur.execute("INSERT INTO %s (table_name, max_timestamp, sequence_number) VALUES ('b', now(), 999999)"
                        % table)
        out["seconds"] = time.monotonic() - start
    except psycopg2.Error as e:
        out["error"] = str(e)
        out["seconds"] = time.monotonic() - start
    finally:
        conn.close()


def run_in_thread(name, args):
    box = {}

    def target():
        start = time.monotonic()
        try:
            box["result"] = run_module(name, args, timeout=90)
        except Exception as e:  # a hang ends in subprocess.TimeoutExpired
            box["error"] = repr(e)
        box["seconds"] = time.monotonic() - start
    thread = threading.Thread(target=target)
    thread.start()
    return thread, box


# (id, module, args, statements of the holder ({t}: watermark table, {a}: audit table), whether the
# scheduler's INSERT can proceed once the module gives up (False: the holder itself blocks it))
CASES = [
    ("info-reads-vs-access-exclusive", "watermark_info", {},
     ["LOCK TABLE {t} IN ACCESS EXCLUSIVE MODE"], False),
    ("reset-write-lock-vs-open-insert", "watermark_reset", {"tables": ["b"], "strategy": "safe_point"},
     ["INSERT INTO {t} (table_name, max_timestamp, sequence_number) VALUES ('c', now(), 1)"], True),
    ("reset-create-index-vs-open-insert", "watermark_reset", {"_drop_index": True},
     ["INSERT INTO {t} (table_name, max_timestamp, sequence_number) VALUES ('c', now(), 1)"], True),
    ("reset-replace-delete-vs-row-lock", "watermark_reset",
     {"tables": ["b"], "strategy": "safe_point", "mode": "replace"},
     ["SELECT 1 FROM {t} WHERE table_name = 'b' ORDER BY id LIMIT 1 FOR UPDATE"], True),
    ("reset-audit-insert-vs-locked-audit-table", "watermark_reset",
     {"tables": ["b"], "strategy": "shift_by", "shift_by": "+1m"},
     ["LOCK TABLE {a} IN ACCESS EXCLUSIVE MODE"], True),
    ("reset-reads-vs-access-exclusive", "watermark_reset", {"tables": ["b"], "strategy": "safe_point"},
     ["LOCK TABLE {t} IN ACCESS EXCLUSIVE MODE"], False),
    ("cleanup-delete-vs-row-lock", "watermark_cleanup", {"keep": 1, "method": "delete"},
     ["SELECT 1 FROM {t} WHERE table_name = 'b' ORDER BY id LIMIT 1 FOR UPDATE"], True),
    ("cleanup-delete-vs-share-lock", "watermark_cleanup", {"keep": 1, "method": "delete"},
     ["LOCK TABLE {t} IN SHARE MODE"], False),
    ("cleanup-reads-vs-access-exclusive", "watermark_cleanup", {"keep": 1},
     ["LOCK TABLE {t} IN ACCESS EXCLUSIVE MODE"], False),
    ("cleanup-rewrite-vs-open-read", "watermark_cleanup", {"keep": 1, "method": "rewrite", "backup": "none"},
     ["SELECT count(*) FROM {t}"], True),
    ("cleanup-audit-insert-vs-locked-audit-table", "watermark_cleanup", {"keep": 1, "method": "delete"},
     ["LOCK TABLE {a} IN ACCESS EXCLUSIVE MODE"], True),
    ("reset-advisory-lock-vs-other-run", "watermark_reset", {"tables": ["b"], "strategy": "safe_point"},
     ["SELECT pg_advisory_lock(19250, hashtext('{s}.offload_watermarks'))"], True),
    ("cleanup-advisory-lock-vs-other-run", "watermark_cleanup", {"keep": 1},
     ["SELECT pg_advisory_lock(19250, hashtext('{s}.offload_watermarks'))"], True),
]


@pytest.fixture
def locked_db(wdb):
    wdb.create_table()
    wdb.fill("b", 20)
    wdb.sql("CREATE TABLE %s (id BIGSERIAL PRIMARY KEY, changed_at TIMESTAMP NOT NULL DEFAULT"
            " (now() AT TIME ZONE 'UTC'), db_user TEXT NOT NULL DEFAULT current_user, client_addr TEXT,"
            " client_host TEXT, module TEXT NOT NULL, watermark_table TEXT NOT NULL, table_name VARCHAR(255),"
            " parameters JSONB NOT NULL, before JSONB, after JSONB, rows_affected BIGINT NOT NULL, backup TEXT)"
            % wdb.audit_table)
    return wdb


@pytest.mark.parametrize("lock_timeout", [0, 2])
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_every_lock_wait_is_bounded(locked_db, pg_server, case, lock_timeout):
    name, module, args, statements, insert_can_proceed = case
    db = locked_db
    args = dict(args)
    if args.pop("_drop_index", False):
        db.sql("DROP INDEX %s.idx_watermarks_table_created" % db.schema)
    before = db.snapshot()
    holder = Holder(pg_server, [s.format(t=db.table, a=db.audit_table, s=db.schema) for s in statements])
    try:
        thread, box = run_in_thread(module, db.args(module, lock_timeout=lock_timeout, **args))
        insert = {}
        if insert_can_proceed:
            queued_module_backend(pg_server, lock_timeout + OVERHEAD, thread)
            inserter = threading.Thread(target=scheduler_insert, args=(pg_server, db.table, insert))
            inserter.start()
            inserter.join(lock_timeout + OVERHEAD + 60)
        thread.join(120)
    finally:
        holder.release()
    assert "error" not in box, "the module did not return: %s after %.1f s" % (box.get("error"), box["seconds"])
    r = box["result"]
    assert box["seconds"] <= lock_timeout + OVERHEAD, "the module took %.1f s" % box["seconds"]
    if module == "watermark_info":
        # watermark_info reports the lock as a finding with its holders (Diagnosis step 4) instead of failing
        assert not r["failed"] and r["locked"], r
        assert [f["kind"] for f in r["finding_kinds"]] == ["watermark-table-locked"], r["findings"]
        assert any(h["application_name"] == "k2-test-holder" for h in r["lock_holders"]), r["lock_holders"]
        assert db.snapshot() == before
        return
    assert r["failed"], r
    msg = r["msg"]
    assert "lock" in msg and ("did not wait (lock_timeout=0)" if lock_timeout == 0 else "waited") in msg, msg
    if "advisory" not in name:
        holder_pid = r.get("lock_holders") or []
        assert any(h["application_name"] == "k2-test-holder" for h in holder_pid) or "k2-test-holder" in msg, msg
    if insert_can_proceed:
        # the INSERT finished while the holder's transaction was still open
        assert "error" not in insert and "seconds" in insert, insert
        waited = insert["seconds"]
        assert waited <= lock_timeout + 2.0, \
            "the scheduler's INSERT waited %.1f s behind the module (lock_timeout %d)" % (waited, lock_timeout)
    after = db.snapshot()
    if insert_can_proceed:
        # the scheduler's own entry is the only change
        table = db.table.split(".")[1]
        after[table] = [row for row in after[table] if row[3] != 999999]
    assert after == before


def test_negative_lock_timeout_is_refused_by_every_module(locked_db):
    for module, extra in (("watermark_info", {}), ("watermark_reset", {}), ("watermark_cleanup", {"keep": 1})):
        r = locked_db.run(module, lock_timeout=-1, **extra)
        assert r["failed"] and "lock_timeout" in r["msg"], (module, r.get("msg"))
