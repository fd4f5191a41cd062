# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Integration fixtures: a real PostgreSQL 15 (our throwaway cluster, or the server named by
K2_TEST_PG_* such as the lab's k2-prefect-db), and one fresh schema per test so tests never
touch the real offload_watermarks table.

Tests that use pg_server are marked ``postgres``: ``pytest -m postgres tests/integration`` is the
PostgreSQL suite the version matrix runs on each major (scripts/matrix.sh, K2_PG_BIN); with
K2_TEST_PG_EXPECT_MAJOR set, the fixture refuses a server of another major."""

import contextlib
import os
import uuid

import psycopg2
import pytest

from tests.support.postgres_server import DEFAULT_PORT, PostgresServer, external_server_from_env
from tests.support.ansible_module import run_module
from tests.support.clickhouse_server import clickhouse  # noqa: F401  pylint: disable=unused-import
from tests.support.iceberg_warehouse import cold_tier  # noqa: F401  pylint: disable=unused-import


def pytest_configure(config):
    config.addinivalue_line("markers", "postgres: uses the pg_server fixture (the PostgreSQL suite of the "
                                       "version matrix, scripts/matrix.sh)")


def pytest_collection_modifyitems(items):
    for item in items:
        if "pg_server" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.postgres)


@pytest.fixture(scope="session")
def pg_server():
    server = external_server_from_env() or PostgresServer(DEFAULT_PORT)
    server.start()
    try:
        expected = os.environ.get("K2_TEST_PG_EXPECT_MAJOR")
        if expected:
            with contextlib.closing(psycopg2.connect(**server.dsn())) as conn, conn.cursor() as cur:
                cur.execute("SHOW server_version")
                version = cur.fetchone()[0]
            if version.split(".")[0] != expected:
                pytest.exit("K2_TEST_PG_EXPECT_MAJOR=%s but the server is PostgreSQL %s" % (expected, version),
                            returncode=3)
        yield server
    finally:
        server.stop()


class WatermarkDB(object):
    """A schema of its own on the test server, with helpers to read and write it directly."""

    def __init__(self, server):
        self.server = server
        self.schema = "k2t_" + uuid.uuid4().hex[:12]
        self.table = self.schema + ".offload_watermarks"
        self.audit_table = self.schema + ".offload_watermark_audit"
        self.conn = psycopg2.connect(**server.dsn())
        self.conn.autocommit = True
        self.sql("CREATE SCHEMA " + self.schema)

    def sql(self, query, params=None):
        with self.conn.cursor() as cur:
            cur.execute(query, params)
            return cur.fetchall() if cur.description else cur.rowcount

    def create_table(self):
        """The runbook's Scenario 3 DDL, by hand (independent of the module)."""
        self.sql("CREATE TABLE %s (id SERIAL PRIMARY KEY, table_name VARCHAR(255) NOT NULL,"
                 " max_timestamp TIMESTAMP NOT NULL, sequence_number BIGINT NOT NULL,"
                 " created_at TIMESTAMP DEFAULT NOW())" % self.table)
        self.sql("CREATE INDEX idx_watermarks_table_created ON %s (table_name, created_at DESC)" % self.table)

    def insert(self, table_name, ts, seq, created_at=None):
        if created_at is None:
            return self.sql("INSERT INTO %s (table_name, max_timestamp, sequence_number) VALUES (%%s, %%s, %%s)"
                            " RETURNING id" % self.table, (table_name, ts, seq))[0][0]
        return self.sql("INSERT INTO %s (table_name, max_timestamp, sequence_number, created_at)"
                        " VALUES (%%s, %%s, %%s, %%s) RETURNING id" % self.table,
                        (table_name, ts, seq, created_at))[0][0]

    def fill(self, table_name, n, start="2026-02-12 00:00:00", step_seconds=900, age_hours=None):
        """n entries, one per cycle, ending now (created_at) with max_timestamp advancing."""
        return self.sql(
            "INSERT INTO %s (table_name, max_timestamp, sequence_number, created_at)"
            " SELECT %%s, %%s::timestamp + g * make_interval(secs => %%s), g * 10,"
            " LOCALTIMESTAMP - (%%s - g) * make_interval(secs => %%s)"
            " FROM generate_series(1, %%s) g" % self.table,
            (table_name, start, step_seconds, n, step_seconds, n))

    def rows(self):
        return self.sql("SELECT id, table_name, max_timestamp, sequence_number, created_at FROM %s"
                        " ORDER BY id" % self.table)

    def exists(self, name):
        return self.sql("SELECT to_regclass(%s)", (name,))[0][0] is not None

    def snapshot(self):
        """Everything in the schema: tables and their rows."""
        out = {}
        for (t,) in self.sql("SELECT tablename FROM pg_tables WHERE schemaname = %s ORDER BY 1", (self.schema,)):
            out[t] = self.sql('SELECT * FROM %s."%s" ORDER BY 1' % (self.schema, t))
        return out

    def audit(self):
        if not self.exists(self.audit_table):
            return []
        return self.sql("SELECT module, table_name, parameters, before, after, rows_affected, backup, db_user,"
                        " client_host FROM %s ORDER BY id" % self.audit_table)

    def args(self, module="watermark_reset", **extra):
        a = self.server.module_args(watermark_table=self.table)
        if module != "watermark_info":
            a["audit_table"] = self.audit_table
        a.update(extra)
        return a

    def run(self, module, check=False, diff=False, **extra):
        return run_module(module, self.args(module, **extra), check=check, diff=diff)

    def drop(self):
        with contextlib.suppress(Exception):
            self.sql("DROP SCHEMA %s CASCADE" % self.schema)
        self.conn.close()


@pytest.fixture
def wdb(pg_server):
    db = WatermarkDB(pg_server)
    yield db
    db.drop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Each phase's report on the test item (item.rep_call...), for fixtures that keep artifacts on failure."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, "rep_" + report.when, report)
