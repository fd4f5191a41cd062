#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: watermark_info
short_description: Diagnose the Iceberg offload watermarks in PostgreSQL
version_added: 1.0.0
description:
  - Reads the offload watermark table and reports, per source table, what the runbook's Diagnosis and
    Scenario 4 steps look at, plus the health of the PostgreSQL server holding it (Diagnosis step 4).
  - For each table, the latest entry (the one the scheduler reads), its age, whether it is stale or in
    warning, entries in the last hour against the number the cycle period predicts, gaps longer than two
    cycles, regressions (an entry whose pair is lower than the one before it), duplicate bursts and
    repeated pairs in a lookback window, and the total number of entries.
  - A missing watermark table or missing index is reported as a finding, not a failure. Entries dated after
    the server's C(now()) (its TimeZone changed, or its clock was stepped back) are a finding of their own
    (C(future_entries)).
  - The work grows with the number of source tables and the lookback window, not with the table's rows; the
    latest entry is found by walking the C((table_name, created_at DESC)) index, the distinct table names by a
    skip scan of it, every other query is an index range bounded by the window (and by O(max_window_entries)),
    and C(total_entries) is exact up to 10000 entries per table and the statistics' estimate above unless
    O(exact_counts=true). Under 50 ms in-process on 5 million entries (docs/benchmarks.md).
  - A conflicting lock (a stuck C(ACCESS EXCLUSIVE)) is waited for at most O(lock_timeout) seconds; then the
    module fails and names the sessions holding it.
extends_documentation_fragment:
  - k2.iceberg_offload.postgres
  - k2.iceberg_offload.postgres.WATERMARK_TABLE
  - k2.iceberg_offload.postgres.LOCK_TIMEOUT
  - k2.iceberg_offload.attributes
  - k2.iceberg_offload.attributes.INFO_MODULE
options:
  tables:
    description:
      - Source tables to report on (values of the C(table_name) column). Default all tables found.
    type: list
    elements: str
    aliases: [table_name]
  stale_after:
    description:
      - Seconds after which the latest entry is stale (the C(IcebergOffloadWatermarkStale) alert fires at 3600).
    type: int
    default: 3600
  warn_after:
    description:
      - Seconds after which the latest entry is in warning (the runbook expects an entry within 1800).
    type: int
    default: 1800
  cycle_seconds:
    description:
      - Scheduler cycle period in seconds (900, one cycle per 15 minutes, in the runbook). Gaps are
        intervals between consecutive entries longer than two cycles.
    type: int
    default: 900
  lookback:
    description:
      - Window (duration such as C(24h), C(7d)) in which gaps, regressions and duplicate bursts are looked for.
        Entries dated after the server's now are left out of it (they are counted in C(future_entries)).
    type: str
    default: 24h
  max_window_entries:
    description:
      - At most this many of the window's newest entries are analysed per table (gaps, regressions, bursts,
        repeated pairs). Default ten times the cycles the window should hold (O(lookback) / O(cycle_seconds)),
        at least 1000. A window holding more is reported (C(window_truncated), and a finding); that many
        entries is a duplicate burst in itself.
    type: int
  burst_threshold:
    description:
      - More entries than this for one table within any hour is a duplicate burst (runbook Scenario 4 says
        more than 10 means possible duplicate writes).
    type: int
    default: 10
  health:
    description:
      - Also report PostgreSQL health (version, connections, idle connections older than 10 minutes,
        ungranted locks and who blocks them, whether this role may terminate backends).
    type: bool
    default: true
  count_entries:
    description:
      - Report C(total_entries) per table, exact up to 10000 entries, above that the estimate of the table's
        statistics (C(total_entries_exact=false)) unless O(exact_counts=true).
    type: bool
    default: true
  exact_counts:
    description:
      - Count every entry exactly. The count reads the table's whole index range; on tables with millions of
        rows it takes about as long as the rest of the module many times over.
    type: bool
    default: false
  audit_table:
    description: The audit table the changing modules write (read for RV(recent_changes)).
    type: str
    default: offload_watermark_audit
    version_added: 1.1.0
  recent_changes:
    description:
      - Return this collection's audit rows of the watermark table from this long ago (a duration such as
        C(7d)); an empty string returns none. The diagnosis reads them to tell whether corruption recurs
        (runbook Escalation).
    type: str
    default: 7d
    version_added: 1.1.0
  entries_since:
    description:
      - Also return each table's entries written since this moment (RV(tables[].entries)), read with the window
        (no further query), given as an ISO 8601 timestamp (UTC when it has no offset) or a duration such as C(2h),
        that long before the server's now. The incident report's HTML page draws the watermark's age from them when
        Prometheus does not answer.
    type: str
    version_added: 1.1.0
notes:
  - The latest entry, its age, a regression and a duplicate burst are defined once, in the collection's
    docs/watermark_modules.md ("Definitions"); the daily prevention health check
    (P(k2.iceberg_offload.watermark_health_check#role)) runs this module's code with its own thresholds.
  - "A session holding a lock that makes even a read wait (C(LOCK TABLE), C(ALTER TABLE)) is not a failure: after
    O(lock_timeout) the module returns RV(locked=true) with the sessions holding it (RV(lock_holders)), the
    health of the server, and no table entries (runbook Diagnosis step 4)."
author:
  - K2 Platform Engineering (@k2-platform)
seealso:
  - module: k2.iceberg_offload.watermark_reset
  - module: k2.iceberg_offload.watermark_cleanup
"""

EXAMPLES = r"""
# Diagnosis step 2 and Scenario 4 step 1: recent entries, age, regressions, duplicate bursts
- name: Check the watermark table of the two Bronze tables
  k2.iceberg_offload.watermark_info:
    login_host: 127.0.0.1
    port: 5432
    login_db: prefect
    login_user: prefect
    login_password: "{{ prefect_db_password }}"
    tables:
      - bronze_trades_binance
      - bronze_trades_kraken
  register: wm

# A missing table has no stale table to list: check that it exists too
- name: Stop when the table is missing or a watermark is stale (the IcebergOffloadWatermarkStale condition)
  ansible.builtin.assert:
    that:
      - wm.table_exists
      - wm.stale_tables | length == 0
    fail_msg: "{{ wm.findings | join('; ') }}"

# Diagnosis step 5: choose the scenario
- name: Scenario 3 when the table is missing
  ansible.builtin.debug:
    msg: "Watermark table missing: run the Scenario 3 playbook"
  when: not wm.table_exists

- name: Scenario 4 when entries regress
  ansible.builtin.debug:
    msg: "{{ item.table_name }} regressed {{ item.regression_count }} time(s)"
  loop: "{{ wm.tables }}"
  when: item.regression_count | default(0) > 0

# Diagnosis step 4: PostgreSQL health only, using the libpq environment
- name: PostgreSQL health from PGHOST/PGUSER/PGPASSWORD
  k2.iceberg_offload.watermark_info:
    login_db: prefect
    count_entries: false
  register: pg
"""

RETURN = r"""
watermark_table:
  description: The watermark table inspected.
  returned: always
  type: str
  sample: offload_watermarks
table_exists:
  description: Whether the watermark table exists.
  returned: always
  type: bool
  sample: true
index_exists:
  description:
    - Whether a valid b-tree index on the watermark table has C((table_name, created_at DESC)) as its leading keys,
      whatever its name (the runbook's C(idx_watermarks_table_created), or C(idx_<table>_table_created) as
      M(k2.iceberg_offload.watermark_reset) names it).
  returned: always
  type: bool
  sample: true
index_name:
  description: The name of that index, or null.
  returned: always
  type: str
  sample: idx_watermarks_table_created
findings:
  description: Human-readable findings (missing table or index, stale or warning tables, regressions, bursts).
  returned: always
  type: list
  elements: str
  sample: ["bronze_trades_binance: watermark stale, last entry 5400 s ago (> 3600 s)"]
finding_kinds:
  description:
    - The same findings, in the same order, for code to branch on (a stable interface; the text may change).
    - C(kind) is one of C(watermark-table-missing), C(index-missing), C(watermark-table-locked),
      C(id-sequence-behind), C(watermark-missing), C(future-entries), C(stale), C(late), C(window-truncated),
      C(regression), C(duplicate-burst); C(table) is the source table it concerns (null for the whole table);
      C(text) is the sentence in RV(findings).
  returned: always
  type: list
  elements: dict
  sample: [{"kind": "stale", "table": "bronze_trades_binance",
            "text": "bronze_trades_binance: watermark stale, last entry 5400 s ago (> 3600 s)"}]
stale_tables:
  description: Tables whose latest entry is older than O(stale_after) (or that have no entry).
  returned: always
  type: list
  elements: str
  sample: [bronze_trades_binance]
warning_tables:
  description: Tables whose latest entry is older than O(warn_after), dated in the future, or missing.
  returned: always
  type: list
  elements: str
  sample: [bronze_trades_binance]
tables:
  description: One item per source table.
  returned: always
  type: list
  elements: dict
  contains:
    table_name:
      description: The source table.
      type: str
      sample: bronze_trades_binance
    latest:
      description: The latest entry (what the scheduler reads); timestamps are naive UTC for C(max_timestamp)
        and server local time for C(created_at), as stored.
      type: dict
      sample: {"id": 812, "table_name": "bronze_trades_binance", "max_timestamp": "2026-02-12 10:00:00",
               "sequence_number": 1234567, "created_at": "2026-02-12 10:15:02.123456"}
    age_seconds:
      description:
        - Seconds since the latest entry was written (C(LOCALTIMESTAMP - created_at) on the server).
        - Negative when the latest entry is dated after the server's now; then C(future_entries) is above zero,
          C(warning) is true and a finding explains it.
      type: float
      sample: 412.5
    future_entries:
      description:
        - Entries dated after the server's now (C(created_at > LOCALTIMESTAMP)), after a change of the server's
          TimeZone or a clock stepped back. The scheduler reads the latest by C(created_at), so while such
          entries exist its own new entries sort below them.
      type: int
      sample: 0
    data_lag_seconds:
      description: Seconds between now (UTC) and the latest entry's C(max_timestamp).
      type: float
      sample: 1320.0
    stale:
      description: C(age_seconds) is greater than O(stale_after).
      type: bool
    warning:
      description: C(age_seconds) is greater than O(warn_after), or negative (a future-dated latest entry).
      type: bool
    entries_last_hour:
      description: Entries written in the last hour.
      type: int
      sample: 4
    expected_entries_last_hour:
      description: Entries one hour of cycles should write (3600 / O(cycle_seconds)).
      type: float
      sample: 4.0
    total_entries:
      description: All entries of the table (when O(count_entries=true)); see C(total_entries_exact).
      type: int
      sample: 812
    total_entries_exact:
      description: Whether C(total_entries) was counted (up to 10000, or with O(exact_counts=true)) or estimated.
      type: bool
      sample: true
    window_entries:
      description: Entries of the lookback window that were analysed.
      type: int
      sample: 96
    window_truncated:
      description: The window held more than O(max_window_entries); only the newest were analysed.
      type: bool
      sample: false
    entries:
      description:
        - With O(entries_since), the table's entries written since then, oldest first (C(id), C(max_timestamp),
          C(sequence_number), C(created_at)), among the window's entries (within O(lookback), at most
          O(max_window_entries)).
      returned: when O(entries_since) is set and the table has an entry
      type: list
      elements: dict
      sample: [{id: 41, max_timestamp: "2026-02-12 10:14:58", sequence_number: 812, created_at: "2026-02-12 10:15:02"}]
      version_added: 1.1.0
    entries_truncated:
      description: The window held more entries than O(max_window_entries) and the oldest of RV(tables[].entries) is
        later than O(entries_since), so older ones are missing.
      returned: when O(entries_since) is set and the table has an entry
      type: bool
      sample: false
      version_added: 1.1.0
    gaps:
      description: Up to 20 most recent intervals between consecutive entries longer than two cycles.
      type: list
      elements: dict
      sample: [{"after": "2026-02-12 08:00:00", "before": "2026-02-12 09:30:00", "seconds": 5400.0}]
    gap_count:
      description: Number of such gaps among the entries analysed.
      type: int
    regressions:
      description: Up to 20 most recent entries whose pair is lower than the previous entry's, with both.
      type: list
      elements: dict
      sample: [{"previous": {"id": 9, "max_timestamp": "2026-02-12 10:00:00", "sequence_number": 500,
                             "created_at": "2026-02-12 10:15:00"},
                "entry": {"id": 10, "max_timestamp": "2026-02-12 09:00:00", "sequence_number": 400,
                          "created_at": "2026-02-12 10:30:00"}}]
    regression_count:
      description: Number of regressions among the entries analysed.
      type: int
    duplicate_bursts:
      description: Periods in which some sliding hour held more than O(burst_threshold) entries; C(first) and
        C(last) are the first and last entry at which the trailing hour was over the threshold.
      type: list
      elements: dict
      sample: [{"first": "2026-02-12 10:03:00", "last": "2026-02-12 10:41:00", "max_entries_per_hour": 57}]
    duplicate_pairs:
      description: Pairs written more than once in the lookback window, with their count.
      type: list
      elements: dict
      sample: [{"max_timestamp": "2026-02-12 10:00:00", "sequence_number": 500, "entries": 3}]
locked:
  description: The watermark table could not be read within O(lock_timeout) because another session holds a lock
    on it (see RV(lock_holders)); RV(tables) is then empty.
  returned: when the table was locked
  type: bool
  version_added: 1.1.0
lock_holders:
  description: The sessions holding a lock on the watermark table when RV(locked) (same keys as
    RV(health.watermark_lock_holders)).
  returned: when the table was locked
  type: list
  elements: dict
  version_added: 1.1.0
id_sequence:
  description: The id column's sequence (C(sequence), C(next_value), C(max_id), C(behind)); C(behind) means the next
    id exists already and every C(INSERT) violates the primary key. V(null) without a serial C(id).
  returned: when the table exists and could be read
  type: dict
  sample: {sequence: public.offload_watermarks_id_seq, next_value: 1, max_id: 4242, behind: true}
  version_added: 1.1.0
recent_changes:
  description: This collection's audit rows of the watermark table within O(recent_changes), newest first (C(id),
    C(changed_at), C(module), C(table_name), C(parameters), C(rows_affected), C(backup)).
  returned: when O(recent_changes) is set and the table could be read
  type: list
  elements: dict
  version_added: 1.1.0
recent_changes_window:
  description: O(recent_changes) as given.
  returned: when O(recent_changes) is set and the table could be read
  type: str
  version_added: 1.1.0
health:
  description: PostgreSQL health (when O(health=true)).
  returned: when health is true
  type: dict
  contains:
    server_version:
      description: Server version.
      type: str
      sample: "15.18 (Debian 15.18-0+deb12u1)"
    connections:
      description: Sessions connected to this database (runbook expects fewer than 20).
      type: int
      sample: 7
    idle_connections_over_10_minutes:
      description: Idle sessions whose state has not changed for 10 minutes (runbook Issue 2b).
      type: int
      sample: 0
    can_insert:
      description: Whether the role this module connected as may C(INSERT) into the watermark table (the scheduler
        writes as that role in the runbook; a revoked privilege stops every watermark write). V(null) when the
        table does not exist.
      type: bool
      version_added: 1.1.0
    watermark_lock_holders:
      description: Other sessions holding a lock on the watermark table in a mode that makes the scheduler's
        C(INSERT) wait (C(pid), C(mode), C(relation), C(user), C(application_name), C(client_addr), C(state),
        C(state_change), C(idle_seconds), C(transaction_seconds), C(xact_start), C(query) (the last statement),
        C(waiting_sessions)).
      type: list
      elements: dict
      version_added: 1.1.0
    ungranted_locks:
      description: Lock requests not granted, with the blocking session and its query.
      type: list
      elements: dict
      sample: [{"pid": 4242, "mode": "RowExclusiveLock", "relation": "offload_watermarks",
                "query": "INSERT INTO offload_watermarks ...", "blocking_pid": 4243,
                "blocking_query": "LOCK TABLE ...", "blocking_state": "idle in transaction",
                "locktype": "relation"}]
    current_user:
      description: The role the module connected as.
      type: str
      sample: prefect
    can_terminate_backends:
      description: Whether this role may call C(pg_terminate_backend) on other sessions (superuser or
        member of C(pg_signal_backend)).
      type: bool
      sample: false
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.k2.iceberg_offload.plugins.module_utils.postgres import (
    lock_timeout_argument_spec, postgres_common_argument_spec, watermark_table_argument_spec, psycopg2)
from ansible_collections.k2.iceberg_offload.plugins.module_utils.redaction import harden
from ansible_collections.k2.iceberg_offload.plugins.module_utils.watermark import WatermarkError, parse_since
from ansible_collections.k2.iceberg_offload.plugins.module_utils.watermark_inspect import collect_info
from ansible_collections.k2.iceberg_offload.plugins.module_utils.watermark_ops import (
    OperationError, db_failure, open_store)


def main():
    argument_spec = postgres_common_argument_spec()
    argument_spec.update(watermark_table_argument_spec())
    argument_spec.update(
        tables=dict(type="list", elements="str", aliases=["table_name"]),
        stale_after=dict(type="int", default=3600),
        warn_after=dict(type="int", default=1800),
        cycle_seconds=dict(type="int", default=900),
        lookback=dict(type="str", default="24h"),
        burst_threshold=dict(type="int", default=10),
        health=dict(type="bool", default=True),
        count_entries=dict(type="bool", default=True),
        exact_counts=dict(type="bool", default=False),
        max_window_entries=dict(type="int"),
        audit_table=dict(type="str", default="offload_watermark_audit"),
        recent_changes=dict(type="str", default="7d"),
        entries_since=dict(type="str"),
    )
    argument_spec.update(lock_timeout_argument_spec())
    module = harden(AnsibleModule(argument_spec=argument_spec, supports_check_mode=True))
    for opt in ("stale_after", "warn_after", "cycle_seconds"):
        if module.params[opt] <= 0:
            module.fail_json(msg="%s must be greater than zero, got %d" % (opt, module.params[opt]))
    if module.params["burst_threshold"] < 1:
        module.fail_json(msg="burst_threshold must be at least 1, got %d" % module.params["burst_threshold"])
    if module.params["max_window_entries"] is not None and module.params["max_window_entries"] < 1:
        module.fail_json(msg="max_window_entries must be at least 1, got %d" % module.params["max_window_entries"])
    if module.params["entries_since"]:
        try:
            parse_since(module.params["entries_since"], name="entries_since")
        except WatermarkError as e:
            module.fail_json(msg=str(e))

    conn, store = open_store(module, audit=True, application_name="k2.iceberg_offload.watermark_info")
    try:
        conn.set_session(readonly=True)
        result = collect_info(store, module.params)
    except (OperationError, WatermarkError) as e:
        module.fail_json(msg=getattr(e, "msg", str(e)))
    except psycopg2.Error as e:
        failure = db_failure(e, "reading %s" % store.qualified_name, store, module.params["lock_timeout"])
        module.fail_json(msg=failure.msg, **failure.extra)
    finally:
        conn.close()
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
