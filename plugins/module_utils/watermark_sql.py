# -*- coding: utf-8 -*-
# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Every SQL statement on the watermark table and its audit table, in one place.

Private to this collection. One thing, kept whole on purpose (so over 500 lines): the rules the
modules, the prevention jobs and the diagnosis share - the latest entry, the cleanup selections
(keep N, older than, duplicates, regressions, above a pair), the window the regressions and bursts are
read from - are each one statement here, written once. Identifiers come from validated input and are
composed with ``psycopg2.sql``; values are always query parameters.

Ordering: the latest entry of a table is the first by ``created_at DESC, id DESC``
— the scheduler's ``ORDER BY created_at DESC LIMIT 1``, made deterministic for
rows written in one transaction (they share ``created_at``). ``DESC`` puts NULL
``created_at`` first, exactly as the scheduler's query does, and the index
``(table_name, created_at DESC)`` serves that order directly.

Times: ``created_at`` is ``TIMESTAMP DEFAULT NOW()``, i.e. the server session's
local time; ages are computed on the server as ``LOCALTIMESTAMP - created_at`` so
they are right whatever the server's TimeZone is. ``max_timestamp`` holds naive
UTC and is compared with ``now() AT TIME ZONE 'UTC'``.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import hashlib
import json
import socket

from ansible_collections.k2.iceberg_offload.plugins.module_utils.postgres import (
    display_name, identifier, pg_sql, psycopg2)
from ansible_collections.k2.iceberg_offload.plugins.module_utils.watermark import (
    Watermark, format_timestamp)

# The runbook's index on offload_watermarks; other watermark tables get idx_<table>_table_created.
RUNBOOK_INDEX_NAME = "idx_watermarks_table_created"
RUNBOOK_TABLE_NAME = "offload_watermarks"
MAX_IDENTIFIER_BYTES = 63
# A reset entry stamped after future-dated entries sorts after the latest of them by this much.
FUTURE_EPSILON = "1 millisecond"
# First key of the two-key advisory lock; the second is hashtext(<watermark table>).
ADVISORY_LOCK_CLASS = 0x4B32  # "K2"


def _json_default(value):
    if hasattr(value, "isoformat"):
        return format_timestamp(value) if hasattr(value, "hour") else value.isoformat()
    return str(value)


def to_json(value):
    return json.dumps(value, default=_json_default, sort_keys=True)


def index_name_candidates(table_parts):
    """Names for the (table_name, created_at DESC) index of a watermark table, in order of preference.

    The runbook's ``idx_watermarks_table_created`` for ``offload_watermarks``; otherwise
    ``idx_<table>_table_created``, cut to 63 bytes with a hash of the table name when too long; then
    the hashed form, for when the first name is taken by another relation in the schema.
    """
    table = table_parts[-1]
    digest = hashlib.sha1(table.encode("utf-8")).hexdigest()[:8]
    hashed = "idx_%s_%s_table_created" % (table[:MAX_IDENTIFIER_BYTES - len("idx___table_created") - 8], digest)
    plain = "idx_%s_table_created" % table
    names = [RUNBOOK_INDEX_NAME] if table == RUNBOOK_TABLE_NAME else []
    if len(plain.encode("utf-8")) <= MAX_IDENTIFIER_BYTES:
        names.append(plain)
    names.append(hashed)
    return names


def _entry(row):
    """(id, table_name, max_timestamp, sequence_number, created_at) -> dict."""
    if row is None:
        return None
    return {"id": row[0], "table_name": row[1], "max_timestamp": format_timestamp(row[2]),
            "sequence_number": row[3], "created_at": format_timestamp(row[4])}


class WatermarkStore(object):
    """The watermark table ``table`` (parsed name parts) on an open connection."""

    def __init__(self, conn, table, audit_table=None):
        self.conn = conn
        self.table = tuple(table)
        self.audit_table = tuple(audit_table) if audit_table else None
        self.t = identifier(self.table)

    @property
    def qualified_name(self):
        return display_name(self.table)

    @property
    def _regclass_text(self):
        return ".".join('"%s"' % p for p in self.table)

    def _q(self, query, params=None, fetch="all"):
        cur = self.conn.cursor()
        try:
            cur.execute(query, params)
            if fetch == "all":
                return cur.fetchall()
            if fetch == "one":
                return cur.fetchone()
            return cur.rowcount
        finally:
            cur.close()

    # -- structure ------------------------------------------------------------------------
    def _regclass(self, parts):
        return self._q("SELECT to_regclass(%s)", (".".join('"%s"' % p for p in parts),), "one")[0]

    def table_exists(self):
        return self._regclass(self.table) is not None

    def relation_exists(self, parts):
        return self._regclass(parts) is not None

    def find_index(self):
        """Name of a valid b-tree index on THIS table whose leading keys are (table_name, created_at DESC),
        the order the scheduler reads (``created_at DESC`` puts NULLs first), or None. Any name does."""
        row = self._q(
            "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
            " JOIN pg_am am ON am.oid = c.relam"
            " WHERE i.indrelid = to_regclass(%s) AND i.indisvalid AND i.indpred IS NULL AND am.amname = 'btree'"
            " AND i.indnkeyatts >= 2"
            " AND i.indkey[0] = (SELECT attnum FROM pg_attribute WHERE attrelid = i.indrelid"
            "                    AND attname = 'table_name' AND NOT attisdropped)"
            " AND i.indkey[1] = (SELECT attnum FROM pg_attribute WHERE attrelid = i.indrelid"
            "                    AND attname = 'created_at' AND NOT attisdropped)"
            " AND i.indoption[0] = 0 AND i.indoption[1] = 3"
            " ORDER BY i.indnkeyatts, c.relname LIMIT 1", (self._regclass_text,), "one")
        return row[0] if row else None

    def index_exists(self):
        return self.find_index() is not None

    def create_table(self):
        """The runbook's Scenario 3 DDL, verbatim apart from the (validated) table name."""
        self._q(pg_sql.SQL(
            "CREATE TABLE IF NOT EXISTS {t} ("
            " id SERIAL PRIMARY KEY,"
            " table_name VARCHAR(255) NOT NULL,"
            " max_timestamp TIMESTAMP NOT NULL,"
            " sequence_number BIGINT NOT NULL,"
            " created_at TIMESTAMP DEFAULT NOW())").format(t=self.t), fetch=None)
        return self.create_index()

    def create_index(self):
        """The (table_name, created_at DESC) index under the first free name of index_name_candidates;
        returns its name. Raises ValueError when no index serving that order could be made."""
        existing = self.find_index()
        if existing:
            return existing
        schema = self._q("SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                         " WHERE c.oid = to_regclass(%s)", (self._regclass_text,), "one")[0]
        for name in index_name_candidates(self.table):
            taken = self._q("SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                            " WHERE n.nspname = %s AND c.relname = %s", (schema, name), "one")
            if taken:
                continue
            self._q(pg_sql.SQL("CREATE INDEX {i} ON {t} (table_name, created_at DESC)")
                    .format(i=pg_sql.Identifier(name), t=self.t), fetch=None)
            return name
        raise ValueError("no free name for the (table_name, created_at DESC) index of %s (tried %s)"
                         % (self.qualified_name, ", ".join(index_name_candidates(self.table))))

    # -- reading ----------------------------------------------------------------------------
    def table_names(self):
        """Distinct table_name values by a skip scan of the index (fast on millions of rows)."""
        rows = self._q(pg_sql.SQL(
            "WITH RECURSIVE names AS ("
            " (SELECT table_name FROM {t} ORDER BY table_name LIMIT 1)"
            " UNION ALL"
            " SELECT (SELECT w.table_name FROM {t} w WHERE w.table_name > n.table_name"
            "         ORDER BY w.table_name LIMIT 1)"
            " FROM names n WHERE n.table_name IS NOT NULL)"
            " SELECT table_name FROM names WHERE table_name IS NOT NULL").format(t=self.t))
        return [r[0] for r in rows]

    def latest(self, table_name):
        """The entry the scheduler reads (see module docstring), with its age in seconds (negative when
        the entry is dated after the server's now: a TimeZone change or a clock stepped back)."""
        row = self._q(pg_sql.SQL(
            "SELECT id, table_name, max_timestamp, sequence_number, created_at,"
            " EXTRACT(EPOCH FROM (LOCALTIMESTAMP - created_at))::float8,"
            " EXTRACT(EPOCH FROM ((now() AT TIME ZONE 'UTC') - max_timestamp))::float8"
            " FROM {t} WHERE table_name = %s ORDER BY created_at DESC, id DESC LIMIT 1").format(t=self.t),
            (table_name,), "one")
        if row is None:
            return None
        entry = _entry(row[:5])
        entry["age_seconds"] = row[5]
        entry["data_lag_seconds"] = row[6]
        entry["pair"] = Watermark(row[2], row[3])
        return entry

    def future_entries(self, table_name):
        """(count, latest created_at, server now) of the entries dated after LOCALTIMESTAMP: an index range
        that holds only the future-dated rows."""
        row = self._q(pg_sql.SQL(
            "SELECT count(*), max(created_at), LOCALTIMESTAMP FROM {t}"
            " WHERE table_name = %s AND created_at > LOCALTIMESTAMP").format(t=self.t), (table_name,), "one")
        return row[0], row[1], row[2]

    def greatest_pair(self, table_name):
        """The greatest (max_timestamp, sequence_number) pair that exists in one row."""
        row = self._q(pg_sql.SQL(
            "SELECT id, table_name, max_timestamp, sequence_number, created_at FROM {t}"
            " WHERE table_name = %s ORDER BY max_timestamp DESC, sequence_number DESC, id DESC LIMIT 1")
            .format(t=self.t), (table_name,), "one")
        if row is None:
            return None
        entry = _entry(row)
        entry["pair"] = Watermark(row[2], row[3])
        return entry

    def runbook_safe_point(self, table_name):
        """The runbook's step 4.5 query: MAX of each column separately (may invent a pair)."""
        row = self._q(pg_sql.SQL(
            "SELECT MAX(max_timestamp), MAX(sequence_number) FROM {t} WHERE table_name = %s")
            .format(t=self.t), (table_name,), "one")
        return None if row is None or row[0] is None else Watermark(row[0], row[1])

    def count_entries(self, table_name):
        return self._q(pg_sql.SQL("SELECT count(*) FROM {t} WHERE table_name = %s").format(t=self.t),
                       (table_name,), "one")[0]

    def count_entries_up_to(self, table_name, cap):
        """Exact count when the table has at most ``cap`` entries, else ``cap + 1``: reads at most cap + 1
        index entries."""
        return self._q(pg_sql.SQL("SELECT count(*) FROM (SELECT 1 FROM {t} WHERE table_name = %s LIMIT %s) x")
                       .format(t=self.t), (table_name, cap + 1), "one")[0]

    def estimate_entries(self, table_name):
        """An estimate of a table's entries from the statistics ANALYZE keeps (no scan): the table's
        row estimate times the share of ``table_name`` among its values, as the planner takes it. None
        when the table was never analysed."""
        row = self._q(
            "SELECT c.reltuples::float8, s.null_frac, s.n_distinct, s.most_common_vals::text, s.most_common_freqs"
            " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " LEFT JOIN pg_stats s ON s.schemaname = n.nspname AND s.tablename = c.relname AND s.attname = 'table_name'"
            " WHERE c.oid = to_regclass(%s)", (self._regclass_text,), "one")
        if row is None or row[0] is None or row[0] < 0 or row[2] is None:
            return None
        rows, null_frac, n_distinct, mcv_text, mcv_freqs = row
        mcv = self._q("SELECT %s::text::text[]", (mcv_text,), "one")[0] if mcv_text else []
        freqs = list(mcv_freqs or [])
        if table_name in mcv:
            share = freqs[mcv.index(table_name)]
        else:
            distinct = n_distinct if n_distinct > 0 else -n_distinct * rows
            others = max(1.0, distinct - len(mcv))
            share = max(0.0, 1.0 - (null_frac or 0.0) - sum(freqs)) / others
        return int(round(rows * share))

    def count_recent(self, table_name, seconds):
        """Entries written in the last ``seconds`` (up to the server's now: future-dated ones are not)."""
        return self._q(pg_sql.SQL(
            "SELECT count(*) FROM {t} WHERE table_name = %s"
            " AND created_at > LOCALTIMESTAMP - make_interval(secs => %s) AND created_at <= LOCALTIMESTAMP")
            .format(t=self.t), (table_name, seconds), "one")[0]

    def window_rows(self, table_name, window_seconds, limit):
        """The newest ``limit`` entries written in the last ``window_seconds`` (up to the server's now),
        newest first: (id, max_timestamp, sequence_number, created_at). One index range, bounded by the
        window and by limit, whatever the size of the table."""
        return self._q(pg_sql.SQL(
            "SELECT id, max_timestamp, sequence_number, created_at FROM {t} WHERE table_name = %s"
            " AND created_at > LOCALTIMESTAMP - make_interval(secs => %s) AND created_at <= LOCALTIMESTAMP"
            " ORDER BY created_at DESC, id DESC LIMIT %s").format(t=self.t), (table_name, window_seconds, limit))

    def entries(self, table_name=None):
        """All entries (for backups, tests and small tables), oldest first."""
        where = pg_sql.SQL("WHERE table_name = %s") if table_name else pg_sql.SQL("")
        rows = self._q(pg_sql.SQL(
            "SELECT id, table_name, max_timestamp, sequence_number, created_at FROM {t} {w}"
            " ORDER BY created_at NULLS LAST, id").format(t=self.t, w=where),
            (table_name,) if table_name else None)
        return [_entry(r) for r in rows]

    # -- server health (runbook Diagnosis step 4) ------------------------------------------------
    def health(self):
        version = self._q("SHOW server_version", fetch="one")[0]
        conns = self._q("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()",
                        fetch="one")[0]
        idle = self._q(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND state = 'idle'"
            " AND state_change < now() - interval '10 minutes'", fetch="one")[0]
        waiting = self._q(
            "SELECT l.pid, l.locktype, l.mode, l.relation::regclass::text, a.query,"
            " b.pid, b.query, b.state"
            " FROM pg_locks l"
            " LEFT JOIN pg_stat_activity a ON a.pid = l.pid"
            " LEFT JOIN LATERAL unnest(pg_blocking_pids(l.pid)) AS bp(pid) ON true"
            " LEFT JOIN pg_stat_activity b ON b.pid = bp.pid"
            " WHERE NOT l.granted ORDER BY l.pid LIMIT 50")
        can_terminate = self._q(
            "SELECT rolsuper OR pg_has_role(current_user, 'pg_signal_backend', 'MEMBER')"
            " FROM pg_roles WHERE rolname = current_user", fetch="one")
        exists = self.table_exists()
        holders = self.lock_holders(write_blocking_only=True) if exists else []
        can_insert = self._q("SELECT has_table_privilege(current_user, %s::regclass, 'INSERT')",
                             (self._regclass_text,), fetch="one")[0] if exists else None
        return {
            "watermark_lock_holders": holders,
            "can_insert": can_insert,
            "server_version": version,
            "connections": conns,
            "idle_connections_over_10_minutes": idle,
            "ungranted_locks": [{"pid": r[0], "locktype": r[1], "mode": r[2], "relation": r[3], "query": r[4],
                                 "blocking_pid": r[5], "blocking_query": r[6], "blocking_state": r[7]}
                                for r in waiting],
            "current_user": self._q("SELECT current_user", fetch="one")[0],
            "can_terminate_backends": bool(can_terminate and can_terminate[0]),
        }

    # -- locking ----------------------------------------------------------------------------------
    def lock_key(self):
        """Text keying the advisory lock: the table's schema-qualified name as PostgreSQL resolves it
        (offload_watermarks and public.offload_watermarks are one table, so one lock)."""
        if len(self.table) == 2:
            return "%s.%s" % self.table
        schema = self._q("SELECT coalesce((SELECT n.nspname FROM pg_class c JOIN pg_namespace n"
                         " ON n.oid = c.relnamespace WHERE c.oid = to_regclass(%s)), current_schema(), 'public')",
                         (self._regclass_text,), "one")[0]
        return "%s.%s" % (schema, self.table[0])

    def try_advisory_lock(self, key):
        """Session advisory lock for this watermark table; True when taken. Never waits."""
        return self._q("SELECT pg_try_advisory_lock(%s, hashtext(%s))", (ADVISORY_LOCK_CLASS, key), "one")[0]

    def advisory_lock_holder(self, key):
        row = self._q(
            "SELECT l.pid, a.application_name, a.client_addr::text, a.backend_start FROM pg_locks l"
            " LEFT JOIN pg_stat_activity a ON a.pid = l.pid"
            " WHERE l.locktype = 'advisory' AND l.granted AND l.classid = %s::oid"
            " AND l.objid = hashtext(%s)::oid AND l.objsubid = 2 AND l.pid <> pg_backend_pid()",
            (ADVISORY_LOCK_CLASS, key), "one")
        if not row:
            return None
        return {"pid": row[0], "application_name": row[1], "client_addr": row[2],
                "backend_start": format_timestamp(row[3])}

    def advisory_unlock(self, key):
        self._q("SELECT pg_advisory_unlock(%s, hashtext(%s))", (ADVISORY_LOCK_CLASS, key), "one")

    def set_lock_timeout(self, lock_timeout_ms, local=True):
        """For the current transaction only (or, with local=False, the session). Never 0: in PostgreSQL
        that means wait forever."""
        self._q("SELECT set_config('lock_timeout', %s, %s)", ("%dms" % max(1, lock_timeout_ms), local), "one")

    # Lock modes another session may hold that make the scheduler's INSERT (ROW EXCLUSIVE) wait.
    WRITE_BLOCKING_MODES = ("ShareLock", "ShareRowExclusiveLock", "ExclusiveLock", "AccessExclusiveLock")

    def lock_holders(self, write_blocking_only=False):
        """Other sessions holding a granted lock on the watermark or audit table (who to wait for or end):
        pid, mode, relation, user, application, client, state, since when, idle and transaction age in
        seconds, last statement. ``write_blocking_only``: only modes that make an INSERT wait."""
        names = [self._regclass_text]
        if self.audit_table:
            names.append(".".join('"%s"' % p for p in self.audit_table))
        rows = self._q(
            "SELECT DISTINCT l.pid, l.mode, l.relation::regclass::text, a.application_name, a.state,"
            " left(a.query, 200), a.xact_start, a.usename, a.client_addr::text, a.state_change,"
            " extract(epoch FROM now() - a.state_change)::float8, extract(epoch FROM now() - a.xact_start)::float8,"
            " cardinality(ARRAY(SELECT w.pid FROM pg_locks w WHERE NOT w.granted AND w.relation = l.relation"
            "  AND l.pid = ANY(pg_blocking_pids(w.pid))))"
            " FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
            " WHERE l.granted AND l.pid <> pg_backend_pid()"
            " AND l.relation IN (SELECT to_regclass(n) FROM unnest(%s::text[]) n)"
            " AND (NOT %s OR l.mode = ANY(%s)) ORDER BY 1 LIMIT 10",
            (names, bool(write_blocking_only), list(self.WRITE_BLOCKING_MODES)))
        return [{"pid": r[0], "mode": r[1], "relation": r[2], "application_name": r[3], "state": r[4],
                 "query": r[5], "xact_start": format_timestamp(_naive_utc(r[6])), "user": r[7], "client_addr": r[8],
                 "state_change": format_timestamp(_naive_utc(r[9])),
                 "idle_seconds": round(r[10], 1) if r[10] is not None else None,
                 "transaction_seconds": round(r[11], 1) if r[11] is not None else None,
                 "waiting_sessions": r[12]} for r in rows]

    def lock_for_write(self, nowait=False):
        """Block other writers (the scheduler's INSERT waits), let readers through, until commit.

        Must be the first statement of its transaction (after setting its lock_timeout): then the
        transaction's now(), which stamps the entries we insert, is the moment we asked for the lock.
        A writer that starts after that waits behind us and gets a later created_at, so the entries
        keep their commit order. ``nowait``: fail at once instead of queueing (lock_timeout 0).
        """
        self._q(pg_sql.SQL("LOCK TABLE {t} IN SHARE ROW EXCLUSIVE MODE" + (" NOWAIT" if nowait else ""))
                .format(t=self.t), fetch=None)

    # -- writing ----------------------------------------------------------------------------------
    def insert(self, table_name, pair):
        """Insert one entry the scheduler will read next: created_at is the transaction's now()
        (LOCALTIMESTAMP, what the column default gives), or just after the table's latest created_at
        when entries are dated in the future (a TimeZone change, a clock stepped back), so that the
        new entry is first by the scheduler's ORDER BY created_at DESC."""
        row = self._q(pg_sql.SQL(
            "INSERT INTO {t} (table_name, max_timestamp, sequence_number, created_at)"
            " VALUES (%s, %s, %s, GREATEST(LOCALTIMESTAMP,"
            " (SELECT max(created_at) FROM {t} WHERE table_name = %s) + interval '" + FUTURE_EPSILON + "'))"
            " RETURNING id, table_name, max_timestamp, sequence_number, created_at").format(t=self.t),
            (table_name, pair.max_timestamp, pair.sequence_number, table_name), "one")
        return _entry(row)

    def scheduler_reads(self, table_name):
        """What the scheduler's ORDER BY created_at DESC LIMIT 1 returns, and whether the first row is
        first on its own: [(id, created_at)] of the first two rows by (created_at DESC, id DESC)."""
        return self._q(pg_sql.SQL("SELECT id, created_at FROM {t} WHERE table_name = %s"
                                  " ORDER BY created_at DESC, id DESC LIMIT 2").format(t=self.t), (table_name,))

    def delete_table_entries(self, table_name):
        return self._q(pg_sql.SQL("DELETE FROM {t} WHERE table_name = %s").format(t=self.t),
                       (table_name,), None)

    def backup_to_table(self, backup_parts, where_sql, params):
        """CREATE TABLE <backup> AS the rows about to be destroyed; returns the row count."""
        if self._regclass(backup_parts) is not None:
            raise ValueError("backup table %s already exists; choose another backup_table"
                             % ".".join(backup_parts))
        return self._q(pg_sql.SQL("CREATE TABLE {b} AS SELECT * FROM {t} w WHERE ").format(
            b=identifier(backup_parts), t=self.t) + where_sql, params, None)

    def backup_to_file(self, path, where_sql, params):
        """COPY the rows about to be destroyed to a CSV file (with header); returns the row count."""
        cur = self.conn.cursor()
        try:
            query = cur.mogrify(pg_sql.SQL("SELECT * FROM {t} w WHERE ").format(t=self.t) + where_sql, params)
            with open(path, "w") as f:
                cur.copy_expert(b"COPY (" + query + b") TO STDOUT WITH (FORMAT csv, HEADER true)", f)
            return cur.rowcount
        finally:
            cur.close()

    # -- cleanup ----------------------------------------------------------------------------------
    def cleanup_predicate(self, table_name, keep=None, older_than_seconds=None, duplicates_only=False,
                          regressions_only=False, above_pair=None):
        """SQL (alias ``w``) and parameters selecting the rows cleanup deletes for one table,
        or (None, None) when nothing can be deleted. The table's latest entry never matches, except
        with ``above_pair`` (a Watermark): then every entry whose pair is greater matches, the latest
        included, as long as one entry at or below the pair stays (else None, None)."""
        if above_pair is not None:
            below = self._q(pg_sql.SQL(
                "SELECT count(*) FROM (SELECT 1 FROM {t} WHERE table_name = %s"
                " AND (max_timestamp, sequence_number) <= (%s, %s) LIMIT 1) x").format(t=self.t),
                (table_name, above_pair.max_timestamp, above_pair.sequence_number), "one")[0]
            if not below:
                return None, None
            self.last_keep_cut = None
            return (pg_sql.SQL("w.table_name = %s AND (w.max_timestamp, w.sequence_number) > (%s, %s)"),
                    [table_name, above_pair.max_timestamp, above_pair.sequence_number])
        latest = self._q(pg_sql.SQL(
            "SELECT id FROM {t} WHERE table_name = %s ORDER BY created_at DESC, id DESC LIMIT 1")
            .format(t=self.t), (table_name,), "one")
        if latest is None:
            return None, None
        self.last_keep_cut = None
        parts = [pg_sql.SQL("w.table_name = %s AND w.id <> %s")]
        params = [table_name, latest[0]]
        if keep is not None:
            cut = self._q(pg_sql.SQL(
                "SELECT created_at, id FROM {t} WHERE table_name = %s"
                " ORDER BY created_at DESC, id DESC OFFSET %s LIMIT 1").format(t=self.t),
                (table_name, keep), "one")
            if cut is None:
                return None, None
            self.last_keep_cut = (cut[0], cut[1])
            if cut[0] is None:
                # The cut falls among rows without created_at, which sort first (newest).
                parts.append(pg_sql.SQL("(w.created_at IS NOT NULL OR w.id <= %s)"))
                params.append(cut[1])
            else:
                parts.append(pg_sql.SQL("w.created_at IS NOT NULL AND (w.created_at, w.id) <= (%s, %s)"))
                params += [cut[0], cut[1]]
        if older_than_seconds is not None:
            parts.append(pg_sql.SQL("w.created_at < LOCALTIMESTAMP - make_interval(secs => %s)"))
            params.append(older_than_seconds)
        if duplicates_only:
            parts.append(pg_sql.SQL(
                "EXISTS (SELECT 1 FROM {t} d WHERE d.table_name = w.table_name"
                " AND d.max_timestamp = w.max_timestamp AND d.sequence_number = w.sequence_number"
                " AND (d.created_at > w.created_at OR (d.created_at = w.created_at AND d.id > w.id)))")
                .format(t=self.t))
        if regressions_only:
            parts.append(pg_sql.SQL("w.id IN (") + self._regressed_ids_sql() + pg_sql.SQL(")"))
            params.append(table_name)
        return pg_sql.SQL(" AND ").join(parts), params

    def _regressed_ids_sql(self):
        """Ids of the entries (of the table_name given as parameter) whose pair is lower, as a pair, than
        the greatest pair among the entries written before them by (created_at, id). The running
        greatest pair is an array [epoch of max_timestamp, sequence_number]: arrays compare element by
        element, exactly as the pair does."""
        return pg_sql.SQL(
            "SELECT r.id FROM (SELECT id, ARRAY[EXTRACT(EPOCH FROM max_timestamp), sequence_number::numeric] AS p,"
            " max(ARRAY[EXTRACT(EPOCH FROM max_timestamp), sequence_number::numeric]) OVER"
            " (ORDER BY created_at, id ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS hw"
            " FROM {t} WHERE table_name = %s) r WHERE r.p < r.hw").format(t=self.t)

    def latest_regression(self, table_name):
        """When the table's latest entry (by created_at DESC, id DESC) regresses below the greatest pair
        written before it: (latest Watermark, greatest earlier Watermark); else None."""
        row = self._q(pg_sql.SQL(
            "WITH l AS (SELECT id, max_timestamp, sequence_number, created_at FROM {t} WHERE table_name = %s"
            " ORDER BY created_at DESC, id DESC LIMIT 1)"
            " SELECT l.max_timestamp, l.sequence_number, g.max_timestamp, g.sequence_number FROM l,"
            " LATERAL (SELECT max_timestamp, sequence_number FROM {t} e WHERE e.table_name = %s AND e.id <> l.id"
            "  ORDER BY max_timestamp DESC, sequence_number DESC LIMIT 1) g"
            " WHERE (l.max_timestamp, l.sequence_number) < (g.max_timestamp, g.sequence_number)").format(t=self.t),
            (table_name, table_name), "one")
        if row is None:
            return None
        return Watermark(row[0], row[1]), Watermark(row[2], row[3])

    def count_where(self, where_sql, params):
        return self._q(pg_sql.SQL("SELECT count(*) FROM {t} w WHERE ").format(t=self.t) + where_sql,
                       params, "one")[0]

    def delete_where(self, where_sql, params, backup_parts=None):
        """Delete the rows selected by where_sql; returns the count. With backup_parts, the same
        statement first copies the deleted rows into that table (created here, LIKE the watermark
        table), so the backup is exactly what was deleted."""
        if backup_parts is None:
            return self._q(pg_sql.SQL("DELETE FROM {t} w WHERE ").format(t=self.t) + where_sql, params, None)
        b = identifier(backup_parts)
        return self._q(pg_sql.SQL("WITH d AS (DELETE FROM {t} w WHERE ").format(t=self.t) + where_sql
                       + pg_sql.SQL(" RETURNING w.*) INSERT INTO {b} SELECT * FROM d").format(b=b), params, None)

    def create_backup_table(self, backup_parts):
        if self._regclass(backup_parts) is not None:
            raise ValueError("backup table %s already exists; choose another backup_table" % ".".join(backup_parts))
        self._q(pg_sql.SQL("CREATE TABLE {b} (LIKE {t})").format(b=identifier(backup_parts), t=self.t), fetch=None)

    def count_kept(self, table_name, keep_cut):
        """Entries above a keep cut-off (created_at, id), NULL created_at included: an index range."""
        c, i = keep_cut
        if c is None:
            return self._q(pg_sql.SQL("SELECT count(*) FROM {t} WHERE table_name = %s AND created_at IS NULL"
                                      " AND id > %s").format(t=self.t), (table_name, i), "one")[0]
        return self._q(pg_sql.SQL(
            "SELECT (SELECT count(*) FROM {t} WHERE table_name = %s AND created_at > %s)"
            " + (SELECT count(*) FROM {t} WHERE table_name = %s AND created_at = %s AND id > %s)"
            " + (SELECT count(*) FROM {t} WHERE table_name = %s AND created_at IS NULL)").format(t=self.t),
            (table_name, c, table_name, c, i, table_name), "one")[0]

    def estimated_rows(self):
        """The planner's row estimate for the table (pg_class.reltuples); -1 when never analysed."""
        return self._q("SELECT reltuples::bigint FROM pg_class WHERE oid = to_regclass(%s)",
                       (".".join('"%s"' % p for p in self.table),), "one")[0]

    def can_rewrite(self):
        """TRUNCATE is allowed and nothing references the table by foreign key."""
        name = ".".join('"%s"' % p for p in self.table)
        row = self._q("SELECT has_table_privilege(to_regclass(%s), 'TRUNCATE'),"
                      " NOT EXISTS (SELECT 1 FROM pg_constraint WHERE confrelid = to_regclass(%s))",
                      (name, name), "one")
        return bool(row[0] and row[1])

    def last_id(self):
        """The last id the table's id sequence handed out (None without a serial id)."""
        name = ".".join('"%s"' % p for p in self.table)
        seq = self._q("SELECT pg_get_serial_sequence(%s, 'id')", (name,), "one")[0]
        if not seq:
            return None
        return self._q(pg_sql.SQL("SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END FROM {s}")
                       .format(s=pg_sql.SQL(seq)), fetch="one")[0]

    def count_baseline(self, last_id):
        """Per-table counts of the rows with id <= last_id, and whether other transactions were in
        progress. Call as the first statement of a REPEATABLE READ transaction begun after
        last_id was read: with none in progress, no row with such an id can commit later, so the
        counts stay true until the rewrite's lock."""
        counts = dict(self._q(pg_sql.SQL("SELECT table_name, count(*) FROM {t} WHERE id <= %s GROUP BY 1")
                              .format(t=self.t), (last_id,)))
        busy = self._q("SELECT EXISTS (SELECT 1 FROM pg_snapshot_xip(pg_current_snapshot()))", fetch="one")[0]
        return counts, busy

    def rewrite_keeping_newest(self, keep, baseline=None):
        """Keep the newest ``keep`` entries of every table, by copy-out, TRUNCATE and copy-back.

        Call right after lock_exclusive(). ``baseline`` (from count_baseline, taken with no other
        transaction in progress) spares counting the whole table under the lock: only rows with ids
        above the baseline's are counted. Returns {table_name: (entries_before, entries_deleted)}.
        """
        if baseline is not None:
            counts, last_id = dict(baseline[0]), baseline[1]
            for name, n in self._q(pg_sql.SQL("SELECT table_name, count(*) FROM {t} WHERE id > %s GROUP BY 1")
                                   .format(t=self.t), (last_id,)):
                counts[name] = counts.get(name, 0) + n
        else:
            counts = dict(self._q(pg_sql.SQL("SELECT table_name, count(*) FROM {t} GROUP BY 1").format(t=self.t)))
        self._q(pg_sql.SQL("CREATE TEMP TABLE k2_wm_keep (LIKE {t}) ON COMMIT DROP").format(t=self.t), fetch=None)
        kept = {}
        for name in counts:
            kept[name] = self._q(pg_sql.SQL(
                "INSERT INTO k2_wm_keep SELECT * FROM {t} WHERE table_name = %s"
                " ORDER BY created_at DESC, id DESC LIMIT %s").format(t=self.t), (name, keep), None)
        self._q(pg_sql.SQL("TRUNCATE {t}").format(t=self.t), fetch=None)
        self._q(pg_sql.SQL("INSERT INTO {t} SELECT * FROM k2_wm_keep").format(t=self.t), fetch=None)
        return dict((name, (counts[name], counts[name] - kept[name])) for name in counts if counts[name])

    def lock_exclusive(self, nowait=False):
        """ACCESS EXCLUSIVE: readers and writers wait until commit (used only by the rewrite)."""
        self._q(pg_sql.SQL("LOCK TABLE {t} IN ACCESS EXCLUSIVE MODE" + (" NOWAIT" if nowait else ""))
                .format(t=self.t), fetch=None)

    # -- audit --------------------------------------------------------------------------------------
    def ensure_audit_table(self):
        self._q(pg_sql.SQL(
            "CREATE TABLE IF NOT EXISTS {a} ("
            " id BIGSERIAL PRIMARY KEY,"
            " changed_at TIMESTAMP NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'),"
            " db_user TEXT NOT NULL DEFAULT current_user,"
            " client_addr TEXT DEFAULT inet_client_addr()::text,"
            " client_host TEXT,"
            " module TEXT NOT NULL,"
            " watermark_table TEXT NOT NULL,"
            " table_name VARCHAR(255),"
            " parameters JSONB NOT NULL,"
            " before JSONB,"
            " after JSONB,"
            " rows_affected BIGINT NOT NULL,"
            " backup TEXT)").format(a=identifier(self.audit_table)), fetch=None)

    def audit(self, module_name, table_name, parameters, before, after, rows_affected, backup=None):
        row = self._q(pg_sql.SQL(
            "INSERT INTO {a} (client_host, module, watermark_table, table_name, parameters, before, after,"
            " rows_affected, backup) VALUES (%s, %s, %s, %s, %s::jsonb, %s::jsonb, %s::jsonb, %s, %s)"
            " RETURNING id").format(a=identifier(self.audit_table)),
            (socket.gethostname(), module_name, self.qualified_name, table_name, to_json(parameters),
             to_json(before), to_json(after), rows_affected, backup), "one")
        return row[0]

    def id_sequence(self):
        """The id column's sequence against max(id): {sequence, next_value, max_id, behind}; None when the
        table has no serial id. ``behind``: the next nextval() is an id that exists (every INSERT then
        violates the primary key, as after rows were restored with their ids)."""
        row = self._q("SELECT pg_get_serial_sequence(%s, 'id')", (self._regclass_text,), "one")
        if not row or not row[0]:
            return None
        seq = row[0]
        readable = self._q("SELECT has_sequence_privilege(%s, 'SELECT') OR has_sequence_privilege(%s, 'USAGE')",
                           (seq, seq), "one")[0]
        if not readable:
            return {"sequence": seq, "next_value": None, "max_id": None, "behind": None,
                    "error": "this role may not read the sequence"}
        last = self._q(pg_sql.SQL("SELECT last_value, is_called FROM {s}").format(
            s=pg_sql.SQL(".").join(pg_sql.Identifier(p) for p in _split_regclass(seq))), fetch="one")
        max_id = self._q(pg_sql.SQL("SELECT max(id) FROM {t}").format(t=self.t), fetch="one")[0]
        next_value = last[0] + 1 if last[1] else last[0]
        return {"sequence": seq, "next_value": next_value, "max_id": max_id,
                "behind": max_id is not None and next_value <= max_id}

    def advance_id_sequence(self, sequence):
        """setval() the id sequence to max(id) (the next id is max(id) + 1); returns that next id."""
        row = self._q(pg_sql.SQL("SELECT setval(%s, (SELECT coalesce(max(id), 0) FROM {t}) + 1, false)")
                      .format(t=self.t), (sequence,), "one")
        return row[0]

    def recent_changes(self, seconds, limit=200):
        """This collection's audit rows of the watermark table from the last ``seconds`` (newest first):
        id, changed_at, module, table_name, parameters, rows_affected, backup. Empty without an audit table."""
        if not self.audit_table or not self.relation_exists(self.audit_table):
            return []
        rows = self._q(pg_sql.SQL(
            "SELECT id, changed_at, module, table_name, parameters, rows_affected, backup FROM {a}"
            " WHERE watermark_table = %s AND changed_at > (now() AT TIME ZONE 'UTC') - make_interval(secs => %s)"
            " ORDER BY id DESC LIMIT %s").format(a=identifier(self.audit_table)),
            (self.qualified_name, seconds, limit))
        return [{"id": r[0], "changed_at": format_timestamp(r[1]), "module": r[2], "table_name": r[3],
                 "parameters": r[4], "rows_affected": r[5], "backup": r[6]} for r in rows]

    def audit_rows(self):
        rows = self._q(pg_sql.SQL(
            "SELECT id, changed_at, db_user, client_addr, client_host, module, watermark_table, table_name,"
            " parameters, before, after, rows_affected, backup FROM {a} ORDER BY id")
            .format(a=identifier(self.audit_table)))
        keys = ["id", "changed_at", "db_user", "client_addr", "client_host", "module", "watermark_table",
                "table_name", "parameters", "before", "after", "rows_affected", "backup"]
        return [dict(zip(keys, r)) for r in rows]


def _split_regclass(text):
    """Parts of a regclass name as PostgreSQL prints it (schema.name, each part quoted when it must be)."""
    parts, cur, quoted = [], "", False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        elif ch == "." and not quoted:
            parts.append(cur)
            cur = ""
            continue
        cur += ch
    parts.append(cur)
    return [p[1:-1].replace('""', '"') if p.startswith('"') else p for p in parts]


def is_connection_error(exc):
    return isinstance(exc, (psycopg2.OperationalError, psycopg2.InterfaceError)) and \
        not isinstance(exc, psycopg2.errors.LockNotAvailable)


# -- sessions (runbook Scenario 2b) ---------------------------------------------------------------
# Module-level: these run on any connection (usually a superuser's, through a reserved slot),
# not on a watermark table.

def _naive_utc(value):
    if value is None or value.tzinfo is None:
        return value
    return value.astimezone(datetime.timezone.utc).replace(tzinfo=None)


def connection_slots(conn):
    """max_connections, superuser_reserved_connections and the client backends now connected."""
    with conn.cursor() as cur:
        cur.execute("SELECT current_setting('max_connections')::int,"
                    " current_setting('superuser_reserved_connections')::int,"
                    " (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'),"
                    " (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)"
                    " OR pg_has_role(current_user, 'pg_signal_backend', 'MEMBER')")
        row = cur.fetchone()
    return {"max_connections": row[0], "superuser_reserved_connections": row[1], "client_connections": row[2],
            "available_to_normal_roles": row[0] - row[1] - row[2], "can_terminate_backends": bool(row[3])}


# A session holding one of these on the watermark table makes the scheduler's INSERT wait.
_HOLDS_WRITE_BLOCKING_LOCK = (
    " AND pid IN (SELECT l.pid FROM pg_locks l WHERE l.granted AND l.relation = to_regclass(%s)"
    " AND l.mode = ANY(%s))")


def _lock_filter(locked_table):
    if not locked_table:
        return "", []
    return _HOLDS_WRITE_BLOCKING_LOCK, [".".join('"%s"' % p for p in locked_table),
                                        list(WatermarkStore.WRITE_BLOCKING_MODES)]


def idle_sessions(conn, database, older_than_seconds, users=None, states=("idle",), locked_table=None):
    """Client sessions of ``database`` whose state (one of ``states``) has not changed for
    ``older_than_seconds``; never this session. ``locked_table`` (parsed name parts): only sessions
    holding a lock on it that makes an INSERT wait."""
    query = ("SELECT pid, usename, application_name, client_addr::text, state, state_change,"
             " extract(epoch FROM now() - state_change)::float8, left(query, 200)"
             " FROM pg_stat_activity"
             " WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() AND datname = %s"
             " AND state = ANY(%s) AND state_change < now() - make_interval(secs => %s)")
    params = [database, list(states), older_than_seconds]
    lock_sql, lock_params = _lock_filter(locked_table)
    query += lock_sql
    params += lock_params
    if users:
        query += " AND usename = ANY(%s)"
        params.append(list(users))
    query += " ORDER BY state_change LIMIT 10000"
    with conn.cursor() as cur:
        cur.execute(query, params)
        rows = cur.fetchall()
    return [{"pid": r[0], "user": r[1], "application_name": r[2], "client_addr": r[3], "state": r[4],
             "state_change": format_timestamp(_naive_utc(r[5])),
             "idle_seconds": round(r[6], 1) if r[6] is not None else None, "last_query": r[7]} for r in rows]


def terminate_sessions(conn, pids, older_than_seconds, states=("idle",), locked_table=None):
    """pg_terminate_backend() each pid that is still in one of ``states`` since before the cut-off
    (and still holds the lock, with ``locked_table``); a session that became busy meanwhile is left
    alone; returns the pids terminated."""
    if not pids:
        return []
    lock_sql, lock_params = _lock_filter(locked_table)
    with conn.cursor() as cur:
        cur.execute("SELECT pid FROM pg_stat_activity WHERE pid = ANY(%s) AND state = ANY(%s)"
                    " AND state_change < now() - make_interval(secs => %s)" + lock_sql
                    + " AND pg_terminate_backend(pid)",
                    [list(pids), list(states), older_than_seconds] + lock_params)
        return sorted(r[0] for r in cur.fetchall())
