# -*- coding: utf-8 -*-
# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Reset the watermark (watermark_reset): ensure the table, plan each table's target, write it under the
table lock, verify the scheduler reads it, audit it.

Private to this collection. The targets' rules are in watermark_plan.py and watermark_sources.py.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import time

from ansible_collections.k2.iceberg_offload.plugins.module_utils.postgres import pg_sql, psycopg2
from ansible_collections.k2.iceberg_offload.plugins.module_utils.watermark import (
    WatermarkError, format_timestamp, utcnow)
from ansible_collections.k2.iceberg_offload.plugins.module_utils.watermark_ops import (
    OperationError, _backup, _remove_backup_file, acquire_advisory_lock, audit_params,
    check_source_table_names, db_failure, release_advisory_lock, remaining_ms, rollback_quietly)
from ansible_collections.k2.iceberg_offload.plugins.module_utils.watermark_plan import (
    TableFacts, compute_target, plan_reset)
from ansible_collections.k2.iceberg_offload.plugins.module_utils.watermark_sources import SourceError


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
