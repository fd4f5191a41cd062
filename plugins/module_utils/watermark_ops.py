# -*- coding: utf-8 -*-
# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The watermark store's session: connecting, bounding lock waits, the advisory lock that keeps two
writers apart, backups, audit parameters, and errors in the engineer's words.

Private to this collection. The three operations build on it: watermark_inspect.py (watermark_info),
watermark_reset_run.py (watermark_reset), watermark_cleanup_run.py (watermark_cleanup). The SQL is in
watermark_sql.py; the decisions are in watermark_plan.py. Functions here raise ``OperationError`` with a
message that says what failed and what to do next.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import time

from ansible_collections.k2.iceberg_offload.plugins.module_utils.postgres import (
    TableNameError, connect_to_db, ensure_required_libs, error_text, parse_lock_timeout, parse_table_name,
    postgres_common_argument_spec, psycopg2, watermark_table_argument_spec, watermark_write_argument_spec)
from ansible_collections.k2.iceberg_offload.plugins.module_utils.redaction import audit_parameters
from ansible_collections.k2.iceberg_offload.plugins.module_utils.watermark import WatermarkError
from ansible_collections.k2.iceberg_offload.plugins.module_utils.watermark_plan import default_backup_name
from ansible_collections.k2.iceberg_offload.plugins.module_utils.watermark_sql import WatermarkStore

# table_name is VARCHAR(255) in the runbook's DDL.
MAX_TABLE_NAME = 255


def audit_params(params, argument_spec=None, secrets=()):
    """The module parameters worth recording: no option marked no_log in ``argument_spec`` (by default
    the PostgreSQL options' spec), no value that came from one (``secrets``: the module's
    no_log_values), no URL password, no unset value."""
    if argument_spec is None:
        argument_spec = dict(postgres_common_argument_spec(), **watermark_write_argument_spec())
        argument_spec.update(watermark_table_argument_spec())
    return audit_parameters(params, argument_spec, secrets)


def module_audit_params(module):
    """audit_params for a module: its own argument spec and every value Ansible will not log."""
    return audit_params(module.params, module.argument_spec, module.no_log_values)


class OperationError(Exception):
    def __init__(self, msg, **extra):
        Exception.__init__(self, msg)
        self.msg = msg
        self.extra = extra


def check_source_table_names(names, option="tables"):
    """Source table names are values (parameters), but must still fit the column and be sane."""
    out = []
    for name in names or []:
        if not isinstance(name, str) or not name.strip():
            raise OperationError("%s: empty table name" % option)
        if len(name) > MAX_TABLE_NAME:
            raise OperationError("%s: table name longer than %d characters: %r..."
                                 % (option, MAX_TABLE_NAME, name[:40]))
        if any(ord(c) < 32 for c in name):
            raise OperationError("%s: table name contains control characters: %r" % (option, name))
        out.append(name)
    return out


def open_store(module, audit=False, application_name="k2.iceberg_offload"):
    """Validate names and lock_timeout, connect, bound every lock wait of the session by lock_timeout;
    returns (conn, store). Fails the module on error."""
    ensure_required_libs(module)
    try:
        table = parse_table_name(module.params["watermark_table"], "watermark_table")
        audit_table = parse_table_name(module.params["audit_table"], "audit_table") if audit else None
        if audit and module.params.get("backup_table"):
            parse_table_name(module.params["backup_table"], "backup_table")
        lock_ms = parse_lock_timeout(module.params.get("lock_timeout", 10))
    except (TableNameError, ValueError) as e:
        module.fail_json(msg=str(e))
    conn, err = connect_to_db(module, application_name=application_name)
    if err:
        module.fail_json(msg=err)
    store = WatermarkStore(conn, table, audit_table)
    try:
        store.set_lock_timeout(lock_ms, local=False)
        conn.commit()
    except psycopg2.Error as e:
        conn.close()
        module.fail_json(msg=db_failure(e, "setting lock_timeout").msg)
    return conn, store


def run_or_fail(module, operation, what, *args, **kwargs):
    """Run ``operation(*args, **kwargs)``; turn its errors into module.fail_json with the message;
    close the connection."""
    store = args[0]
    conn = store.conn
    try:
        return operation(*args, **kwargs)
    except OperationError as e:
        module.fail_json(msg=e.msg, **e.extra)
    except WatermarkError as e:
        module.fail_json(msg=str(e))
    except psycopg2.Error as e:
        failure = db_failure(e, what, store, module.params.get("lock_timeout"))
        module.fail_json(msg=failure.msg, **failure.extra)
    finally:
        conn.close()


def _describe_holders(holders):
    return "; ".join("pid %s (%s, %s, %s on %s, since %s: %s)" % (
        h["pid"], h["application_name"] or "no application_name", h["state"], h["mode"], h["relation"],
        h["xact_start"], h["query"]) for h in holders) or "the holder has gone"


def db_failure(exc, what, store=None, lock_timeout=None):
    """An OperationError for a database error during ``what``, with advice; a lock timeout names the
    sessions holding the watermark (or audit) table."""
    text = error_text(exc)
    code = getattr(exc, "pgcode", None)
    extra = {}
    if code == "42501":
        hint = ("the role lacks a privilege; run with the table owner (the runbook uses prefect) "
                "or GRANT the privilege")
    elif code == "55P03":
        holders = []
        if store is not None:
            rollback_quietly(store.conn)
            try:
                holders = store.lock_holders()
                store.conn.rollback()
            except psycopg2.Error:
                rollback_quietly(store.conn)
        extra["lock_holders"] = holders
        waited = ("did not wait (lock_timeout=0)" if lock_timeout == 0 else
                  "waited lock_timeout=%ss" % lock_timeout if lock_timeout is not None else "waited lock_timeout")
        hint = ("another session holds a conflicting lock and this run %s; nothing was written. Holding it: %s. "
                "Retry when it is gone, end that session, or raise lock_timeout" % (waited, _describe_holders(holders)))
    elif code in ("40001", "40P01"):
        hint = "a concurrent change conflicted; nothing was written, run again"
    elif isinstance(exc, (psycopg2.OperationalError, psycopg2.InterfaceError)):
        hint = ("the connection to PostgreSQL was lost; the transaction did not commit, so nothing was "
                "changed (runbook Scenario 2)")
    else:
        hint = "nothing was written (the transaction was rolled back)"
    return OperationError("%s failed: %s; %s" % (what, text, hint), **extra)


def rollback_quietly(conn):
    try:
        conn.rollback()
    except Exception:
        pass


def acquire_advisory_lock(store, timeout_seconds):
    """Session advisory lock keeping two recovery runs apart; tries for up to ``timeout_seconds``
    (0: once) without ever queueing. Returns the lock key (for advisory_unlock)."""
    key = store.lock_key()
    deadline = time.monotonic() + max(0, timeout_seconds)
    while True:
        got = store.try_advisory_lock(key)
        store.conn.commit()
        if got:
            return key
        if time.monotonic() >= deadline:
            holder = store.advisory_lock_holder(key)
            store.conn.commit()
            waited = "did not wait (lock_timeout=0)" if not timeout_seconds else "waited %ss" % timeout_seconds
            raise OperationError(
                "another watermark recovery run holds the lock on %s (%s) and this run %s; wait for it to finish "
                "or end that session, then run again" % (store.qualified_name, holder or "session not visible", waited),
                lock_holder=holder)
        time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))


def release_advisory_lock(store, key):
    try:
        store.conn.rollback()
        store.advisory_unlock(key)
        store.conn.commit()
    except psycopg2.Error:
        pass


def remaining_ms(deadline):
    """What is left of a lock budget, in milliseconds (at least 1: PostgreSQL's 0 waits forever)."""
    return max(1, int((deadline - time.monotonic()) * 1000))


# -- backups (both writers) ------------------------------------------------------------------
SAME_SECOND_BACKUPS = 99


def _free_backup_name(store, now):
    """The default backup table's name, numbered when another run made one within the same second
    (a name given by the user is never changed: an existing one is an error)."""
    parts = default_backup_name(store.table, now)
    for n in range(2, SAME_SECOND_BACKUPS + 1):
        if not store.relation_exists(parts):
            break
        parts = default_backup_name(store.table, now, n)
    return parts


def _backup(store, params, where_sql, where_params, now):
    """Save the rows selected by where_sql; returns a description of where, or None."""
    kind = params.get("backup") or "table"
    if kind == "none":
        return None, 0
    if kind == "table":
        parts = (parse_table_name(params["backup_table"], "backup_table") if params.get("backup_table")
                 else _free_backup_name(store, now))
        try:
            n = store.backup_to_table(parts, where_sql, where_params)
        except ValueError as e:
            raise OperationError(str(e))
        return ".".join(parts), n
    stem = os.path.join(params.get("backup_dir") or "/tmp", "watermarks_backup_%s" % now.strftime("%Y%m%d_%H%M%S"))
    path = stem + ".csv"
    for n in range(2, SAME_SECOND_BACKUPS + 1):  # several runs within one second
        if not os.path.exists(path):
            break
        path = "%s_%d.csv" % (stem, n)
    if os.path.exists(path):
        raise OperationError("backup file %s already exists; wait a second or choose another backup_dir" % path)
    try:
        n = store.backup_to_file(path, where_sql, where_params)
    except (IOError, OSError) as e:
        raise OperationError("cannot write the backup file %s: %s; nothing was deleted" % (path, e))
    return path, n


def _remove_backup_file(out):
    path = out.get("backup")
    if path and os.path.isabs(path) and os.path.exists(path):
        os.unlink(path)
        out["backup"] = None
        out.pop("backup_rows", None)
