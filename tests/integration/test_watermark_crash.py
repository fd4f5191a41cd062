# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A PostgreSQL server killed (SIGKILL, postmaster and backends) in the middle of a cleanup or a reset:
after crash recovery the table is exactly as it was, and the module failed with a clear message."""
import subprocess
import sys
import json
import time

import psycopg2
import pytest

from tests.support.ansible_module import ANSIBLE, ansible_env
from tests.support.postgres_server import PostgresServer

CRASH_PORT = 25433


@pytest.fixture(scope="module")
def crash_server(pg_server):
    if pg_server.external:
        pytest.skip("will not kill an external server (K2_TEST_PG_* set)")
    server = PostgresServer(CRASH_PORT).start()
    yield server
    server.stop()


def state(dsn, table):
    conn = psycopg2.connect(**dsn)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*), sum(id), sum(sequence_number), max(created_at), "
                        " md5(string_agg(table_name || max_timestamp::text, ',' ORDER BY id)) FROM %s" % table)
            rows = cur.fetchone()
            cur.execute("SELECT count(*) FROM pg_tables WHERE tablename LIKE '%%backup%%'")
            return rows, cur.fetchone()[0]
    finally:
        conn.close()


def start_module(server, module, args):
    a = server.module_args(**args)
    cmd = [ANSIBLE, "localhost", "-i", "localhost,", "-c", "local", "-e",
           "ansible_python_interpreter=" + sys.executable, "-m", "k2.iceberg_offload." + module, "-a", json.dumps(a)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ansible_env())


def wait_for_query(server, like, timeout=60):
    conn = psycopg2.connect(**server.dsn())
    conn.autocommit = True
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with conn.cursor() as cur:
                cur.execute("SELECT query FROM pg_stat_activity WHERE application_name LIKE 'k2.iceberg_offload.%%'"
                            " AND state = 'active' AND query LIKE %s", (like,))
                if cur.fetchone():
                    return True
            time.sleep(0.02)
        return False
    finally:
        conn.close()


def result_of(proc):
    out = proc.communicate(timeout=120)[0].decode()
    data = json.loads(out[out.index("{"):])
    return data["plays"][0]["tasks"][0]["hosts"]["localhost"]


@pytest.mark.parametrize("module,args,query", [
    ("watermark_cleanup", dict(keep=10, backup="table"), "%DELETE FROM%"),
    ("watermark_reset", dict(strategy="safe_point", mode="replace", backup="table"), "%DELETE FROM%"),
])
def test_kill_mid_operation_leaves_table_as_it_was(crash_server, module, args, query):
    dsn = crash_server.dsn()
    conn = psycopg2.connect(**dsn)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("DROP TABLE IF EXISTS offload_watermarks, offload_watermark_audit")
        cur.execute("CREATE TABLE offload_watermarks (id SERIAL PRIMARY KEY, table_name VARCHAR(255) NOT NULL,"
                    " max_timestamp TIMESTAMP NOT NULL, sequence_number BIGINT NOT NULL,"
                    " created_at TIMESTAMP DEFAULT NOW())")
        cur.execute("CREATE INDEX idx_watermarks_table_created ON offload_watermarks (table_name, created_at DESC)")
        cur.execute("INSERT INTO offload_watermarks (table_name, max_timestamp, sequence_number, created_at)"
                    " SELECT 'b', '2026-01-01'::timestamp + g * interval '1 second', g,"
                    " LOCALTIMESTAMP - interval '30 days' + g * interval '1 second'"
                    " FROM generate_series(1, 1500000) g")
    conn.close()
    before = state(dsn, "offload_watermarks")
    proc = start_module(crash_server, module, args)
    try:
        assert wait_for_query(crash_server, query), "the module never reached its DELETE"
        crash_server.kill()
        result = result_of(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
        crash_server.restart_after_crash()
    assert result.get("failed") and ("connection" in result["msg"] or "terminat" in result["msg"]), result
    assert "nothing was changed" in result["msg"] or "rolled back" in result["msg"] or "did not commit" in result["msg"]
    after = state(dsn, "offload_watermarks")
    assert after == before
    conn = psycopg2.connect(**dsn)
    with conn.cursor() as cur:
        cur.execute("SELECT to_regclass('offload_watermark_audit') IS NOT NULL")
        if cur.fetchone()[0]:
            cur.execute("SELECT count(*) FROM offload_watermark_audit WHERE table_name IS NOT NULL")
            assert cur.fetchone()[0] == 0, "an audit row survived a change that did not"
    conn.close()
