# -*- coding: utf-8 -*-
# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
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
    TableNameError, connect_to_db, ensure_required_libs, error_text, parse_lock_timeout, parse_table_name,
    postgres_common_argument_spec, pg_sql, psycopg2, watermark_write_argument_spec)
from ansible_collections.k2.iceberg_offload.plugins.module_utils.redaction import audit_parameters
from ansible_collections.k2.iceberg_offload.plugins.module_utils.watermark import (
    WatermarkError, format_timestamp, make_watermark, parse_duration, utcnow)
from ansible_collections.k2.iceberg_offload.plugins.module_utils.watermark_plan import (
    TableFacts, analyse_window, compute_target, default_backup_name, plan_reset, validate_cleanup,
    window_entries_limit)
from ansible_collections.k2.iceberg_offload.plugins.module_utils.watermark_sources import SourceError
from ansible_collections.k2.iceberg_offload.plugins.module_utils.watermark_sql import WatermarkStore

# table_name is VARCHAR(255) in the runbook's DDL.
MAX_TABLE_NAME = 255


# total_entries is exact up to this many entries per table; above, the planner's estimate
# (exact_counts: true counts them all).
EXACT_COUNT_CAP = 10000


def audit_params(params, argument_spec=None, secrets=()):
    """The module parameters worth recording: no option marked no_log in ``argument_spec`` (by default
    the PostgreSQL options' spec), no value that came from one (``secrets``: the module's
    no_log_values), no URL password, no unset value."""
    if argument_spec is None:
        argument_spec = dict(postgres_common_argument_spec(), **watermark_write_argument_spec())
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


# -- inspect (watermark_info) --------------------------------------------------------------------
def collect_info(store, params):
    """Everything watermark_info reports. The work grows with the number of source tables and the
    lookback window, not with the table's rows: one index probe per table for the latest entry, index
    ranges bounded by the window (at most ``max_window_entries`` rows read per table), and a count that
    is exact up to EXACT_COUNT_CAP entries and the planner's estimate above (unless exact_counts)."""
    result = {"watermark_table": store.qualified_name, "findings": []}
    result["table_exists"] = store.table_exists()
    result["index_name"] = store.find_index() if result["table_exists"] else None
    result["index_exists"] = result["index_name"] is not None
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
        result["findings"].append("no (table_name, created_at DESC) index on %s (the runbook's "
                                  "idx_watermarks_table_created): latest-entry lookups scan the table "
                                  "(watermark_reset state=present creates it)" % store.qualified_name)
    try:
        return _collect_tables(store, params, result)
    except psycopg2.errors.LockNotAvailable:
        # Another session holds a lock that makes even a read wait (LOCK TABLE, ALTER TABLE ...): say who,
        # instead of failing after lock_timeout with nothing (runbook Diagnosis step 4).
        rollback_quietly(store.conn)
        holders = store.lock_holders()
        store.conn.rollback()
        result.update(tables=[], stale_tables=[], warning_tables=[], locked=True, lock_holders=holders)
        result["findings"].append(
            "%s could not be read within lock_timeout=%ss: another session holds a lock on it (%s); every offload "
            "cycle waits on it too (runbook Diagnosis step 4, Scenario 2)" % (
                store.qualified_name, params.get("lock_timeout"), _describe_holders(holders)))
        return result


def _collect_tables(store, params, result):
    result["id_sequence"] = store.id_sequence()
    if params.get("recent_changes"):
        window = parse_duration(params["recent_changes"], "recent_changes")
        result["recent_changes"] = store.recent_changes(window)
        result["recent_changes_window"] = params["recent_changes"]
    if (result["id_sequence"] or {}).get("behind"):
        seq = result["id_sequence"]
        result["findings"].append(
            "the id sequence %s hands out %s next while max(id) is %s: every INSERT violates the primary key "
            "(runbook Scenario 4, constraint violations; watermark_reset state=present advances it)"
            % (seq["sequence"], seq["next_value"], seq["max_id"]))
    names = check_source_table_names(params.get("tables")) or store.table_names()
    lookback = parse_duration(params.get("lookback") or "24h", "lookback")
    cycle = params["cycle_seconds"]
    limit = window_entries_limit(lookback, cycle, params.get("max_window_entries"))
    tables = []
    for name in names:
        item = {"table_name": name}
        latest = store.latest(name)
        if latest is None:
            item.update(latest=None, age_seconds=None, stale=True, warning=True, entries_last_hour=0,
                        expected_entries_last_hour=3600.0 / cycle, future_entries=0)
            result["findings"].append("%s has no watermark entry (runbook Scenario 3)" % name)
            if params.get("count_entries", True):
                item["total_entries"] = 0
                item["total_entries_exact"] = True
            tables.append(item)
            continue
        latest.pop("pair")
        age = latest.pop("age_seconds")
        item["latest"] = latest
        item["age_seconds"] = age
        item["data_lag_seconds"] = latest.pop("data_lag_seconds")
        future, future_max, server_now = store.future_entries(name)
        item["future_entries"] = future
        item["stale"] = age is None or age > params["stale_after"]
        # A future-dated latest entry has a negative age that says nothing about the scheduler.
        item["warning"] = age is None or age > params["warn_after"] or age < 0
        item["entries_last_hour"] = store.count_recent(name, 3600)
        item["expected_entries_last_hour"] = 3600.0 / cycle
        if params.get("count_entries", True):
            item.update(_total_entries(store, name, params.get("exact_counts", False)))
        rows = store.window_rows(name, lookback, limit + 1)
        item["window_entries"] = min(len(rows), limit)
        item["window_truncated"] = len(rows) > limit
        item.update(analyse_window(rows[:limit], 2 * cycle, params["burst_threshold"]))
        lookback_text = params.get("lookback") or "24h"
        if future:
            result["findings"].append(
                "%s: %d entr%s dated after the server's now (%s), the latest at %s: the server's TimeZone "
                "changed or its clock was stepped back. The scheduler reads the latest by created_at, so it "
                "reads a future-dated entry and its own new entries (stamped now()) sort below it; age_seconds "
                "is negative and says nothing about the scheduler. Future-dated entries are left out of the "
                "gap, regression and burst analysis" % (name, future, "y is" if future == 1 else "ies are",
                                                        format_timestamp(server_now), format_timestamp(future_max)))
        if item["stale"]:
            result["findings"].append("%s: watermark stale, last entry %.0f s ago (> %d s)"
                                      % (name, age or 0, params["stale_after"]))
        elif item["warning"] and age >= 0:
            result["findings"].append("%s: last entry %.0f s ago (> %d s)" % (name, age, params["warn_after"]))
        if item["window_truncated"]:
            result["findings"].append(
                "%s: more than %d entries in the last %s (a cycle every %d s writes about %.0f): only the newest "
                "%d were analysed; that many entries is itself a duplicate burst (runbook Scenario 4)"
                % (name, limit, lookback_text, cycle, lookback / cycle, limit))
        if item["regression_count"]:
            result["findings"].append("%s: %d regression(s) in the last %s (runbook Scenario 4)"
                                      % (name, item["regression_count"], lookback_text))
        if item["duplicate_bursts"]:
            result["findings"].append("%s: duplicate bursts, more than %d entries in an hour (runbook Scenario 4)"
                                      % (name, params["burst_threshold"]))
        tables.append(item)
    store.conn.rollback()
    result["tables"] = tables
    result["stale_tables"] = [t["table_name"] for t in tables if t["stale"]]
    result["warning_tables"] = [t["table_name"] for t in tables if t["warning"]]
    return result


def _total_entries(store, name, exact):
    if exact:
        return {"total_entries": store.count_entries(name), "total_entries_exact": True}
    n = store.count_entries_up_to(name, EXACT_COUNT_CAP)
    if n <= EXACT_COUNT_CAP:
        return {"total_entries": n, "total_entries_exact": True}
    return {"total_entries": max(store.estimate_entries(name) or 0, n), "total_entries_exact": False}


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
        plan["future_entries"] = store.future_entries(name)[0] if table_exists and facts.latest is not None else 0
        plan["_target"] = target
        plans.append(plan)
    return plans


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


def run_reset(store, params, check_mode, module_name="k2.iceberg_offload.watermark_reset", targets=None,
              target_check=None, audited=None):
    """Ensure the table, then move each table's watermark to its target. See the module's docs.

    ``targets``: {table: Watermark} computed elsewhere (ClickHouse, Iceberg); ``target_check``:
    a callable(table, target) raising SourceError to refuse a target (past the source);
    ``audited``: the parameters to record (module_audit_params), by default audit_params(params).
    """
    conn = store.conn
    audited = audit_params(params) if audited is None else audited
    lock_timeout = params["lock_timeout"]
    out = {"changed": False, "watermark_table": store.qualified_name, "created_table": False,
           "created_index": False, "index_name": None, "tables": [], "backup": None, "audit_ids": [],
           "_warnings": []}
    exists = store.table_exists()
    out["index_name"] = store.find_index() if exists else None
    index = out["index_name"] is not None
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
                out["index_name"] = store.create_table()
                store.ensure_audit_table()
                out["audit_ids"].append(store.audit(
                    module_name, None, audited, None,
                    {"created_table": not exists, "created_index": not index, "index_name": out["index_name"]}, 0))
                conn.commit()
            except ValueError as e:
                rollback_quietly(conn)
                raise OperationError("creating %s failed: %s; nothing was written" % (store.qualified_name, e))
            except psycopg2.Error as e:
                rollback_quietly(conn)
                raise db_failure(e, "creating %s" % store.qualified_name, store, lock_timeout)
            exists = True
    _repair_id_sequence(store, out, check_mode, module_name, audited, lock_timeout)
    if not names:
        return out

    deadline = time.monotonic() + lock_timeout
    key = acquire_advisory_lock(store, lock_timeout)
    try:
        plans = _plans(store, names, strategy, params, exists, targets, target_check)
        conn.rollback()
        if check_mode:
            return _reset_result(out, plans, check_mode=True)
        # Under the table lock the facts are read again: the plan written is the plan checked.
        try:
            store.set_lock_timeout(remaining_ms(deadline))
            store.lock_for_write(nowait=lock_timeout == 0)
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
                _verify_scheduler_reads(store, p)
                out["audit_ids"].append(store.audit(
                    module_name, p["table_name"], audited, {"latest": p["before"], "entries": p["entries_before"]},
                    {"latest": p["after"], "entries": (1 if p["action"] == "replace" else p["entries_before"] + 1),
                     "created_at": p["entry"]["created_at"]},
                    deleted + 1, out["backup"]))
            conn.commit()
        except OperationError:
            rollback_quietly(conn)
            _remove_backup_file(out)
            raise
        except psycopg2.Error as e:
            rollback_quietly(conn)
            _remove_backup_file(out)
            raise db_failure(e, "resetting the watermark in %s" % store.qualified_name, store, lock_timeout)
        for p in plans:
            if p["action"] == "append" and p["future_entries"]:
                out["_warnings"].append(
                    "%s had %d entr%s dated after the server's now (a TimeZone change or a clock stepped back); the "
                    "new entry is stamped %s, after them, so the scheduler reads it. The scheduler's own next "
                    "entries (stamped now()) will sort below it until the server's clock passes that time: fix the "
                    "server's TimeZone or clock, or reset with mode=replace (after a backup)"
                    % (p["table_name"], p["future_entries"], "y" if p["future_entries"] == 1 else "ies",
                       p["entry"]["created_at"]))
        return _reset_result(out, plans, check_mode=False)
    finally:
        release_advisory_lock(store, key)


def _repair_id_sequence(store, out, check_mode, module_name, audited, lock_timeout):
    """The table in working order: an id sequence behind max(id) (every INSERT would violate the primary
    key, as after rows were restored with their ids) is advanced past it, with an audit row."""
    conn = store.conn
    try:
        seq = store.id_sequence() if store.table_exists() else None
        conn.rollback()
    except psycopg2.Error as e:
        rollback_quietly(conn)
        raise db_failure(e, "reading the id sequence of %s" % store.qualified_name, store, lock_timeout)
    if not seq or not seq["behind"]:
        return
    out["changed"] = True
    out["id_sequence"] = {"sequence": seq["sequence"], "next_value_before": seq["next_value"],
                          "next_value_after": seq["max_id"] + 1}
    if check_mode:
        return
    try:
        after = store.advance_id_sequence(seq["sequence"])
        out["id_sequence"]["next_value_after"] = after
        store.ensure_audit_table()
        out["audit_ids"].append(store.audit(module_name, None, audited, {"id_sequence_next": seq["next_value"]},
                                            {"id_sequence_next": after}, 0))
        conn.commit()
    except psycopg2.Error as e:
        rollback_quietly(conn)
        raise db_failure(e, "advancing the id sequence of %s" % store.qualified_name, store, lock_timeout)


def _verify_scheduler_reads(store, plan):
    """Before commit: the new entry must be what the scheduler's ORDER BY created_at DESC LIMIT 1 reads,
    first on its own (not tied with another row); else the run is rolled back."""
    reads = store.scheduler_reads(plan["table_name"])
    mine = plan["entry"]["id"]
    first = bool(reads) and reads[0][0] == mine
    if first and (len(reads) == 1 or (reads[1][1] is not None and reads[1][1] < reads[0][1])):
        return
    other = reads[1] if first else reads[0]
    why = ("it has no created_at, and the scheduler's ORDER BY created_at DESC puts NULLs first"
           if other[1] is None else "its created_at %s is not before the new entry's" % format_timestamp(other[1]))
    raise OperationError(
        "the new entry of %s would not be the one the scheduler reads: entry id %s sorts first (%s). Nothing was "
        "written. Delete or fix that entry, or reset with mode=replace (after a backup)"
        % (plan["table_name"], other[0], why))


def _remove_backup_file(out):
    path = out.get("backup")
    if path and os.path.isabs(path) and os.path.exists(path):
        os.unlink(path)
        out["backup"] = None
        out.pop("backup_rows", None)


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
                and not params.get("regressions_only") and not params.get("tables") and (params.get("backup") or "table") == "none")
    why = None
    if not eligible:
        why = ("method=rewrite needs keep alone (no older_than, duplicates_only, regressions_only or tables) "
               "and backup=none")
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


def _cleanup_by_rewrite(store, params, out, module_name, audited, deadline):
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
        store.set_lock_timeout(remaining_ms(deadline))
        store.lock_exclusive(nowait=params["lock_timeout"] == 0)
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
                    module_name, item["table_name"], audited, {"entries": item["entries_before"]},
                    {"entries": item["entries_after"], "method": "rewrite"}, item["deleted"], None))
        conn.commit()
        out["changed"] = True
        return out
    except psycopg2.Error as e:
        rollback_quietly(conn)
        raise db_failure(e, "cleaning up %s (rewrite)" % store.qualified_name, store, params["lock_timeout"])


def run_cleanup(store, params, check_mode, module_name="k2.iceberg_offload.watermark_cleanup", audited=None):
    """Delete old/duplicate entries per table in one REPEATABLE READ transaction.

    No table lock: a DELETE takes ROW EXCLUSIVE, which does not conflict with the
    scheduler's INSERT, so the scheduler never waits on cleanup. The snapshot makes the
    backup exactly the rows deleted, and rows committed after it are never deleted.
    """
    conn = store.conn
    try:
        older = validate_cleanup(params.get("keep"), params.get("older_than"), params.get("duplicates_only"),
                                 params.get("regressions_only"), params.get("above_pair"))
        above = params.get("above_pair")
        if above is not None:
            above = make_watermark(above.get("max_timestamp"), above.get("sequence_number"))
    except WatermarkError as e:
        raise OperationError(str(e))
    audited = audit_params(params) if audited is None else audited
    out = {"changed": False, "watermark_table": store.qualified_name, "tables": [], "deleted": 0,
           "backup": None, "audit_ids": [], "_warnings": []}
    if not store.table_exists():
        conn.rollback()
        raise OperationError("watermark table %s does not exist; nothing to clean (runbook Scenario 3: "
                             "k2.iceberg_offload.watermark_reset state=present creates it)" % store.qualified_name)
    conn.rollback()
    names = check_source_table_names(params.get("tables"))
    deadline = time.monotonic() + params["lock_timeout"]
    key = acquire_advisory_lock(store, params["lock_timeout"])
    try:
        out["method"] = "delete"
        if not check_mode and _choose_rewrite(store, params, older):
            out["method"] = "rewrite"
            return _cleanup_by_rewrite(store, params, out, module_name, audited, deadline)
        conn.set_session(isolation_level="REPEATABLE READ")
        try:
            store.set_lock_timeout(remaining_ms(deadline))
            names = names or store.table_names()
            keep_only = (params.get("keep") is not None and older is None and not params.get("duplicates_only")
                         and not params.get("regressions_only"))
            preds = []
            for name in names:
                where, wparams = store.cleanup_predicate(name, params.get("keep"), older,
                                                         params.get("duplicates_only"), params.get("regressions_only"),
                                                         above)
                item = {"table_name": name}
                if above is not None and where is None and store.latest(name) is not None:
                    out["_warnings"].append(
                        "%s: every entry is above %s; none was deleted (a table is never left without a "
                        "watermark: set one with watermark_reset)" % (name, above))
                if params.get("regressions_only"):
                    _note_latest_regression(store, name, item, out)
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
                                if params.get("backup_table") else _free_backup_name(store, now))
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
                        module_name, name, audited, {"entries": item["entries_before"]},
                        {"entries": item["entries_after"]}, item["deleted"], out["backup"]))
            out["changed"] = True
            conn.commit()
        except psycopg2.Error as e:
            rollback_quietly(conn)
            _remove_backup_file(out)  # the rows it holds were not deleted
            raise db_failure(e, "cleaning up %s" % store.qualified_name, store, params["lock_timeout"])
        return out
    finally:
        try:
            conn.rollback()
            conn.set_session(isolation_level="READ COMMITTED")
        except psycopg2.Error:
            pass
        release_advisory_lock(store, key)


def _note_latest_regression(store, name, item, out):
    """regressions_only never deletes the latest entry; when it is the one that regressed, say so."""
    found = store.latest_regression(name)
    item["latest_regressed"] = found is not None
    if found is None:
        return
    latest, high = found
    item["latest_pair"], item["high_water_pair"] = latest.as_dict(), high.as_dict()
    out["_warnings"].append(
        "%s: the latest entry %s is below the greatest pair written before it %s; it was left, since the "
        "latest entry is never deleted and the scheduler reads it. Reset the watermark forward first "
        "(watermark_reset strategy=safe_point), then run this cleanup again" % (name, latest, high))
