# -*- coding: utf-8 -*-
# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Clean up the watermark table (watermark_cleanup): which entries go (watermark_sql's cleanup predicate),
a backup of exactly those, one audit row per table, in one transaction; or the rewrite of a large table.

Private to this collection.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import time

from ansible_collections.k2.iceberg_offload.plugins.module_utils.postgres import parse_table_name, pg_sql, psycopg2
from ansible_collections.k2.iceberg_offload.plugins.module_utils.watermark import (
    Watermark, WatermarkError, utcnow)
from ansible_collections.k2.iceberg_offload.plugins.module_utils.watermark_ops import (
    OperationError, _backup, _free_backup_name, _remove_backup_file, acquire_advisory_lock, audit_params,
    check_source_table_names, db_failure, release_advisory_lock, remaining_ms, rollback_quietly)
from ansible_collections.k2.iceberg_offload.plugins.module_utils.watermark_plan import validate_cleanup


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
            above = Watermark.from_dict(above, "above_pair")
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
