# -*- coding: utf-8 -*-
# Copyright: K2 Platform Engineering
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The three watermark operations (inspect, reset, clean up) on a WatermarkStore.

Private to this collection. The modules parse arguments and shape results; the SQL
is in watermark_sql.py; the decisions are in watermark_plan.py. Functions here raise
``OperationError`` with a message that says what failed and what to do next.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import time

from ansible_collections.k2.iceberg_offload.plugins.module_utils.postgres import (
    TableNameError, connect_to_db, ensure_required_libs, error_text, parse_table_name, pg_sql, psycopg2)
from ansible_collections.k2.iceberg_offload.plugins.module_utils.watermark import (
    WatermarkError, parse_duration, utcnow)
from ansible_collections.k2.iceberg_offload.plugins.module_utils.watermark_plan import (
    TableFacts, compute_target, default_backup_name, plan_reset, validate_cleanup)
from ansible_collections.k2.iceberg_offload.plugins.module_utils.watermark_sources import SourceError
from ansible_collections.k2.iceberg_offload.plugins.module_utils.watermark_sql import WatermarkStore

# table_name is VARCHAR(255) in the runbook's DDL.
MAX_TABLE_NAME = 255


# Never written to the audit table.
SECRET_PARAMS = ("login_password",)


def audit_params(params):
    """The module parameters worth recording: no secrets, no unset values."""
    return dict((k, v) for k, v in params.items() if k not in SECRET_PARAMS and v is not None)


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
    """Validate names, connect; returns (conn, store). Fails the module on error."""
    ensure_required_libs(module)
    try:
        table = parse_table_name(module.params["watermark_table"], "watermark_table")
        audit_table = parse_table_name(module.params["audit_table"], "audit_table") if audit else None
        if audit and module.params.get("backup_table"):
            parse_table_name(module.params["backup_table"], "backup_table")
    except TableNameError as e:
        module.fail_json(msg=str(e))
    conn, err = connect_to_db(module, application_name=application_name)
    if err:
        module.fail_json(msg=err)
    return conn, WatermarkStore(conn, table, audit_table)


def run_or_fail(module, operation, what, *args, **kwargs):
    """Run ``operation(*args, **kwargs)``; turn its errors into module.fail_json with the message;
    close the connection."""
    conn = args[0].conn
    try:
        return operation(*args, **kwargs)
    except OperationError as e:
        module.fail_json(msg=e.msg, **e.extra)
    except WatermarkError as e:
        module.fail_json(msg=str(e))
    except psycopg2.Error as e:
        module.fail_json(msg=db_failure(e, what).msg)
    finally:
        conn.close()


def db_failure(exc, what):
    """An OperationError for a database error during ``what``, with advice."""
    text = error_text(exc)
    code = getattr(exc, "pgcode", None)
    if code == "42501":
        hint = ("the role lacks a privilege; run with the table owner (the runbook uses prefect) "
                "or GRANT the privilege")
    elif code == "55P03":
        hint = "another session holds the table (see pg_locks); retry, or raise lock_timeout"
    elif code in ("40001", "40P01"):
        hint = "a concurrent change conflicted; nothing was written, run again"
    elif isinstance(exc, (psycopg2.OperationalError, psycopg2.InterfaceError)):
        hint = ("the connection to PostgreSQL was lost; the transaction did not commit, so nothing was "
                "changed (runbook Scenario 2)")
    else:
        hint = "nothing was written (the transaction was rolled back)"
    return OperationError("%s failed: %s; %s" % (what, text, hint))


def rollback_quietly(conn):
    try:
        conn.rollback()
    except Exception:
        pass


def acquire_advisory_lock(store, timeout_seconds):
    """Session advisory lock keeping two recovery runs apart; waits up to ``timeout_seconds``."""
    deadline = time.monotonic() + max(0, timeout_seconds)
    while True:
        got = store.try_advisory_lock()
        store.conn.commit()
        if got:
            return
        if time.monotonic() >= deadline:
            holder = store.advisory_lock_holder()
            store.conn.commit()
            raise OperationError(
                "another watermark recovery run holds the lock on %s (%s); wait for it to finish or end "
                "that session, then run again" % (store.qualified_name, holder or "session not visible"),
                lock_holder=holder)
        time.sleep(0.2)


# -- inspect (watermark_info) --------------------------------------------------------------------
def collect_info(store, params):
    result = {"watermark_table": store.qualified_name, "findings": []}
    result["table_exists"] = store.table_exists()
    result["index_exists"] = store.index_exists() if result["table_exists"] else False
    if params.get("health", True):
        result["health"] = store.health()
    if not result["table_exists"]:
        result["tables"] = []
        result["stale_tables"] = []
        result["warning_tables"] = []
        result["findings"].append(
            "watermark table %s does not exist (runbook Scenario 3: create it with "
            "k2.iceberg_offload.watermark_reset state=present, then initialise the watermarks)"
            % store.qualified_name)
        return result
    if not result["index_exists"]:
        result["findings"].append("index idx_watermarks_table_created is missing: latest-entry lookups scan "
                                  "the table (watermark_reset state=present creates it)")
    names = check_source_table_names(params.get("tables")) or store.table_names()
    lookback = parse_duration(params.get("lookback") or "24h", "lookback")
    cycle = params["cycle_seconds"]
    tables = []
    for name in names:
        item = {"table_name": name}
        latest = store.latest(name)
        if latest is None:
            item.update(latest=None, age_seconds=None, stale=True, warning=True, entries_last_hour=0,
                        expected_entries_last_hour=3600.0 / cycle)
            result["findings"].append("%s has no watermark entry (runbook Scenario 3)" % name)
            if params.get("count_entries", True):
                item["total_entries"] = 0
            tables.append(item)
            continue
        latest.pop("pair")
        age = latest.pop("age_seconds")
        item["latest"] = latest
        item["age_seconds"] = age
        item["data_lag_seconds"] = latest.pop("data_lag_seconds")
        item["stale"] = age is None or age > params["stale_after"]
        item["warning"] = age is None or age > params["warn_after"]
        item["entries_last_hour"] = store.count_recent(name, 3600)
        item["expected_entries_last_hour"] = 3600.0 / cycle
        if params.get("count_entries", True):
            item["total_entries"] = store.count_entries(name)
        item.update(store.window_findings(name, lookback, 2 * cycle, params["burst_threshold"]))
        if item["stale"]:
            result["findings"].append("%s: watermark stale, last entry %.0f s ago (> %d s)"
                                      % (name, age or 0, params["stale_after"]))
        elif item["warning"]:
            result["findings"].append("%s: last entry %.0f s ago (> %d s)" % (name, age, params["warn_after"]))
        if item["regression_count"]:
            result["findings"].append("%s: %d regression(s) in the last %s (runbook Scenario 4)"
                                      % (name, item["regression_count"], params.get("lookback") or "24h"))
        if item["duplicate_bursts"]:
            result["findings"].append("%s: duplicate bursts, more than %d entries in an hour (runbook Scenario 4)"
                                      % (name, params["burst_threshold"]))
        tables.append(item)
    store.conn.rollback()
    result["tables"] = tables
    result["stale_tables"] = [t["table_name"] for t in tables if t["stale"]]
    result["warning_tables"] = [t["table_name"] for t in tables if t["warning"]]
    return result


# -- reset (watermark_reset) ---------------------------------------------------------------------
def _facts(store, name):
    latest = store.latest(name)
    greatest = store.greatest_pair(name)
    return TableFacts(name, latest=latest["pair"] if latest else None,
                      greatest=greatest["pair"] if greatest else None,
                      entries=store.count_entries(name) if latest else 0)


def _plans(store, names, strategy, params, table_exists, targets=None, target_check=None):
    plans = []
    for name in names:
        facts = _facts(store, name) if table_exists else TableFacts(name)
        try:
            target = targets[name] if targets and name in targets else compute_target(strategy, params, facts)
            if target_check is not None:
                target_check(name, target)
        except (WatermarkError, SourceError) as e:
            raise OperationError(str(e))
        plan = plan_reset(facts, target, params["mode"], params["allow_backward"])
        plan["_target"] = target
        plans.append(plan)
    return plans


def _backup(store, params, where_sql, where_params, now):
    """Save the rows selected by where_sql; returns a description of where, or None."""
    kind = params.get("backup") or "table"
    if kind == "none":
        return None, 0
    if kind == "table":
        parts = (parse_table_name(params["backup_table"], "backup_table") if params.get("backup_table")
                 else default_backup_name(store.table, now))
        try:
            n = store.backup_to_table(parts, where_sql, where_params)
        except ValueError as e:
            raise OperationError(str(e))
        return ".".join(parts), n
    path = os.path.join(params.get("backup_dir") or "/tmp", "watermarks_backup_%s.csv" % now.strftime("%Y%m%d_%H%M%S"))
    if os.path.exists(path):
        raise OperationError("backup file %s already exists; wait a second or choose another backup_dir" % path)
    try:
        n = store.backup_to_file(path, where_sql, where_params)
    except (IOError, OSError) as e:
        raise OperationError("cannot write the backup file %s: %s; nothing was deleted" % (path, e))
    return path, n


def run_reset(store, params, check_mode, module_name="k2.iceberg_offload.watermark_reset", targets=None,
              target_check=None):
    """Ensure the table, then move each table's watermark to its target. See the module's docs.

    ``targets``: {table: Watermark} computed elsewhere (ClickHouse, Iceberg); ``target_check``:
    a callable(table, target) raising SourceError to refuse a target (past the source).
    """
    conn = store.conn
    out = {"changed": False, "watermark_table": store.qualified_name, "created_table": False,
           "created_index": False, "tables": [], "backup": None, "audit_ids": []}
    exists = store.table_exists()
    index = store.index_exists() if exists else False
    conn.rollback()
    names = check_source_table_names(params.get("tables"))
    strategy = params.get("strategy")
    if names and not strategy:
        raise OperationError("tables given but no strategy: say where the watermark goes "
                             "(strategy=pair, safe_point, shift_by, lookback or cold_tier)")
    if strategy and not names:
        if strategy == "pair" or not exists:
            raise OperationError("strategy=%s needs tables (the source tables whose watermark to set)" % strategy)
        names = store.table_names()
        conn.rollback()
    if names and (not exists or not index):
        # Targets are computed and checked before the table is created: bad input writes nothing.
        _plans(store, names, strategy, params, exists, targets, target_check)
        conn.rollback()
    if not exists or not index:
        out["changed"] = True
        out["created_table"] = not exists
        out["created_index"] = not index
        if not check_mode:
            try:
                store.create_table()
                store.ensure_audit_table()
                out["audit_ids"].append(store.audit(
                    module_name, None, audit_params(params), None,
                    {"created_table": not exists, "created_index": not index}, 0))
                conn.commit()
            except psycopg2.Error as e:
                rollback_quietly(conn)
                raise db_failure(e, "creating %s" % store.qualified_name)
            exists = True
    if not names:
        return out

    acquire_advisory_lock(store, params["lock_timeout"])
    try:
        plans = _plans(store, names, strategy, params, exists, targets, target_check)
        conn.rollback()
        if check_mode:
            return _reset_result(out, plans, check_mode=True)
        # Under the table lock the facts are read again: the plan written is the plan checked.
        try:
            store.set_lock_timeout(params["lock_timeout"] * 1000, local=False)
            conn.commit()
            store.lock_for_write()
            plans = _plans(store, names, strategy, params, True, targets, target_check)
            refused = [p["refused"] for p in plans if p["refused"]]
            if refused:
                conn.rollback()
                raise OperationError(" ".join(refused), tables=_public(plans))
            todo = [p for p in plans if p["action"] != "none"]
            if not todo:
                conn.rollback()
                return _reset_result(out, plans, check_mode=False)
            now = utcnow()
            replaced = [p["table_name"] for p in todo if p["action"] == "replace" and p["entries_deleted"]]
            if replaced:
                where = pg_sql.SQL("w.table_name = ANY(%s)")
                out["backup"], out["backup_rows"] = _backup(store, params, where, [replaced], now)
            store.ensure_audit_table()
            for p in todo:
                deleted = store.delete_table_entries(p["table_name"]) if p["action"] == "replace" else 0
                p["entries_deleted"] = deleted
                p["entry"] = store.insert(p["table_name"], p["_target"])
                out["audit_ids"].append(store.audit(
                    module_name, p["table_name"], audit_params(params), {"latest": p["before"], "entries": p["entries_before"]},
                    {"latest": p["after"], "entries": (1 if p["action"] == "replace" else p["entries_before"] + 1)},
                    deleted + 1, out["backup"]))
            conn.commit()
        except psycopg2.Error as e:
            rollback_quietly(conn)
            raise db_failure(e, "resetting the watermark in %s" % store.qualified_name)
        return _reset_result(out, plans, check_mode=False)
    finally:
        try:
            conn.rollback()
            store.advisory_unlock()
            conn.commit()
        except psycopg2.Error:
            pass


def _public(plans):
    return [dict((k, v) for k, v in p.items() if k != "_target") for p in plans]


def _reset_result(out, plans, check_mode):
    for p in plans:
        p.pop("_target", None)
    out["tables"] = plans
    if any(p["action"] != "none" for p in plans):
        out["changed"] = True
    refused = [p["refused"] for p in plans if p["refused"]]
    if refused and check_mode:
        raise OperationError(" ".join(refused), tables=plans)
    out["diff"] = {
        "before": {p["table_name"]: {"latest": p["before"], "entries": p["entries_before"]} for p in plans},
        "after": {p["table_name"]: {"latest": p["after"] if p["action"] != "none" else p["before"],
                                    "entries": (1 if p["action"] == "replace" else
                                                p["entries_before"] + (1 if p["action"] == "append" else 0))}
                  for p in plans},
    }
    return out


# -- clean up (watermark_cleanup) ------
# The rewrite (copy the kept rows out, TRUNCATE, copy back) replaces a DELETE of millions of
# rows when few are kept; below these sizes a DELETE is as quick and blocks nobody.
REWRITE_MIN_ROWS = 100000
REWRITE_MAX_KEPT_FRACTION = 0.1
REWRITE_BASELINE_TRIES = 20


def _choose_rewrite(store, params, older_seconds):
    method = params.get("method") or "auto"
    if method == "delete":
        return False
    keep = params.get("keep")
    eligible = (keep is not None and older_seconds is None and not params.get("duplicates_only")
                and not params.get("tables") and (params.get("backup") or "table") == "none")
    why = None
    if not eligible:
        why = "method=rewrite needs keep alone (no older_than, duplicates_only or tables) and backup=none"
    elif not store.can_rewrite():
        why = "method=rewrite needs the TRUNCATE privilege and no foreign key referencing the watermark table"
    if why:
        store.conn.rollback()
        if method == "rewrite":
            raise OperationError(why)
        return False
    rows = store.estimated_rows()
    tables = len(store.table_names())
    store.conn.rollback()
    if method == "rewrite":
        return True
    return rows >= REWRITE_MIN_ROWS and keep * tables <= REWRITE_MAX_KEPT_FRACTION * rows


def _cleanup_by_rewrite(store, params, out, module_name):
    """Keep the newest ``keep`` per table under an ACCESS EXCLUSIVE lock, in one transaction."""
    conn = store.conn
    try:
        # Count without blocking anyone, from a snapshot with no other transaction in flight; under
        # the lock only the rows that arrived since are counted. Otherwise count under the lock.
        baseline = None
        for dummy in range(REWRITE_BASELINE_TRIES):
            last_id = store.last_id()
            conn.commit()
            if last_id is None:
                break
            # an INSERT that drew its id just before gets its transaction id within this pause
            time.sleep(0.02)
            conn.set_session(isolation_level="REPEATABLE READ")
            counts, busy = store.count_baseline(last_id)
            conn.rollback()
            conn.set_session(isolation_level="READ COMMITTED")
            if not busy:
                baseline = (counts, last_id)
                break
            time.sleep(0.05)
        out["counted_under_lock"] = baseline is None
        store.set_lock_timeout(params["lock_timeout"] * 1000, local=False)
        conn.commit()
        store.lock_exclusive()
        result = store.rewrite_keeping_newest(params["keep"], baseline)
        for name in sorted(result):
            before, deleted = result[name]
            out["tables"].append({"table_name": name, "entries_before": before, "deleted": deleted,
                                  "entries_after": before - deleted})
        out["deleted"] = sum(t["deleted"] for t in out["tables"])
        if not out["deleted"]:
            conn.rollback()
            return out
        store.ensure_audit_table()
        for item in out["tables"]:
            if item["deleted"]:
                out["audit_ids"].append(store.audit(
                    module_name, item["table_name"], audit_params(params), {"entries": item["entries_before"]},
                    {"entries": item["entries_after"], "method": "rewrite"}, item["deleted"], None))
        conn.commit()
        out["changed"] = True
        return out
    except psycopg2.Error as e:
        rollback_quietly(conn)
        raise db_failure(e, "cleaning up %s (rewrite)" % store.qualified_name)


def run_cleanup(store, params, check_mode, module_name="k2.iceberg_offload.watermark_cleanup"):
    """Delete old/duplicate entries per table in one REPEATABLE READ transaction.

    No table lock: a DELETE takes ROW EXCLUSIVE, which does not conflict with the
    scheduler's INSERT, so the scheduler never waits on cleanup. The snapshot makes the
    backup exactly the rows deleted, and rows committed after it are never deleted.
    """
    conn = store.conn
    try:
        older = validate_cleanup(params.get("keep"), params.get("older_than"), params.get("duplicates_only"))
    except WatermarkError as e:
        raise OperationError(str(e))
    out = {"changed": False, "watermark_table": store.qualified_name, "tables": [], "deleted": 0,
           "backup": None, "audit_ids": []}
    if not store.table_exists():
        conn.rollback()
        raise OperationError("watermark table %s does not exist; nothing to clean (runbook Scenario 3: "
                             "k2.iceberg_offload.watermark_reset state=present creates it)" % store.qualified_name)
    conn.rollback()
    names = check_source_table_names(params.get("tables"))
    acquire_advisory_lock(store, params["lock_timeout"])
    try:
        out["method"] = "delete"
        if not check_mode and _choose_rewrite(store, params, older):
            out["method"] = "rewrite"
            return _cleanup_by_rewrite(store, params, out, module_name)
        conn.set_session(isolation_level="REPEATABLE READ")
        try:
            store.set_lock_timeout(params["lock_timeout"] * 1000)
            names = names or store.table_names()
            keep_only = params.get("keep") is not None and older is None and not params.get("duplicates_only")
            preds = []
            for name in names:
                where, wparams = store.cleanup_predicate(name, params.get("keep"), older,
                                                         params.get("duplicates_only"))
                item = {"table_name": name}
                if where is None:
                    item["entries_before"] = item["entries_after"] = store.count_entries(name)
                    item["deleted"] = 0
                elif check_mode:
                    item["entries_before"] = store.count_entries(name)
                    item["deleted"] = store.count_where(where, wparams)
                    item["entries_after"] = item["entries_before"] - item["deleted"]
                elif keep_only:
                    # What stays is a short index range; what goes is counted by the DELETE itself.
                    item["entries_after"] = store.count_kept(name, store.last_keep_cut)
                else:
                    item["entries_before"] = store.count_entries(name)
                if where is not None:
                    preds.append((name, where, wparams, item))
                out["tables"].append(item)
            if check_mode or not preds:
                out["deleted"] = sum(t["deleted"] for t in out["tables"])
                out["changed"] = out["deleted"] > 0
                conn.rollback()
                return out
            now = utcnow()
            kind = params.get("backup") or "table"
            backup_parts = None
            if kind == "file":
                # Written before the delete, from the same snapshot: exactly the rows deleted.
                union = pg_sql.SQL(" OR ").join(pg_sql.SQL("(") + pred[1] + pg_sql.SQL(")") for pred in preds)
                union_params = [value for pred in preds for value in pred[2]]
                out["backup"], out["backup_rows"] = _backup(store, params, union, union_params, now)
            elif kind == "table":
                backup_parts = (parse_table_name(params["backup_table"], "backup_table")
                                if params.get("backup_table") else default_backup_name(store.table, now))
                try:
                    store.create_backup_table(backup_parts)
                except ValueError as e:
                    raise OperationError(str(e))
            for name, where, wparams, item in preds:
                item["deleted"] = store.delete_where(where, wparams, backup_parts)
                if "entries_before" in item:
                    item["entries_after"] = item["entries_before"] - item["deleted"]
                else:
                    item["entries_before"] = item["entries_after"] + item["deleted"]
            out["deleted"] = sum(t["deleted"] for t in out["tables"])
            if not out["deleted"]:
                conn.rollback()
                if out["backup"]:
                    os.unlink(out["backup"])
                out["backup"] = None
                out.pop("backup_rows", None)
                return out
            if backup_parts is not None:
                out["backup"] = ".".join(backup_parts)
                out["backup_rows"] = out["deleted"]
            store.ensure_audit_table()
            for name, where, wparams, item in preds:
                if item["deleted"]:
                    out["audit_ids"].append(store.audit(
                        module_name, name, audit_params(params), {"entries": item["entries_before"]},
                        {"entries": item["entries_after"]}, item["deleted"], out["backup"]))
            out["changed"] = True
            conn.commit()
        except psycopg2.Error as e:
            rollback_quietly(conn)
            raise db_failure(e, "cleaning up %s" % store.qualified_name)
        return out
    finally:
        try:
            conn.rollback()
            conn.set_session(isolation_level="READ COMMITTED")
            store.advisory_unlock()
            conn.commit()
        except psycopg2.Error:
            pass
