#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: watermark_reset
short_description: Create the watermark table and set a table's offload watermark
version_added: 1.0.0
description:
  - With O(state=present), makes sure the watermark table and its C((table_name, created_at DESC)) index exist,
    using the runbook's Scenario 3 DDL. Idempotent. The index counts as present whatever its name when it is a
    valid b-tree index on that table with those leading keys; a new one is named C(idx_<table>_table_created)
    (the runbook's C(idx_watermarks_table_created) for C(offload_watermarks)), so a second watermark table in the
    same schema gets its own.
  - With O(tables) and O(strategy), sets each table's watermark pair (C(max_timestamp), C(sequence_number)).
    The target comes from an explicit pair (O(strategy=pair)), from the greatest pair an existing entry holds
    (O(strategy=safe_point), runbook Scenario 4 step 5), from the latest pair moved by a duration
    (O(strategy=shift_by)), from what the Iceberg cold tier really holds (O(strategy=cold_tier)), or from the
    ClickHouse source C(now - lookback) (O(strategy=lookback), runbook Scenario 3 step 3).
  - With O(clickhouse_url), refuses a target past the source's greatest pair unless O(allow_past_source=true).
  - O(mode=append) inserts one new entry (the scheduler reads the latest one); O(mode=replace) deletes the
    table's entries and inserts the one new entry (runbook Scenario 4 step 5), after saving the deleted rows
    (O(backup)). Each run is one transaction with its audit rows; nothing is half-written.
  - "The safe point is the greatest pair that some entry really holds. The runbook's query
    C(SELECT MAX(max_timestamp), MAX(sequence_number) ... GROUP BY table_name) takes each column's maximum
    separately; when the two maxima come from different rows (a regressed or corrupted entry, a sequence
    reset) it invents a pair no cycle ever wrote, which can skip rows that were never offloaded (data loss)."
  - "Every new entry is the one the scheduler reads next: it is stamped with the transaction's C(now()), or just
    after the table's latest C(created_at) when entries are dated in the future (a TimeZone change, a clock stepped
    back), and before commit the module checks that the scheduler's C(ORDER BY created_at DESC LIMIT 1) returns it
    and nothing ties with it; otherwise (an entry without C(created_at) sorts first) it rolls back and says why."
  - Refuses to move a watermark backward (below the latest entry) unless O(allow_backward=true); the rows
    between the two pairs would be offloaded again, which means duplicates in the cold tier.
  - "What the scheduler sees: while the change runs the table is locked in C(SHARE ROW EXCLUSIVE) mode, so its
    C(SELECT) of the latest entry proceeds but its C(INSERT) of a new entry waits (it does not fail) until the
    commit, normally milliseconds. The new entry's C(created_at) is the moment the lock was requested, so an insert
    that waited sorts after it. A cycle that read the old watermark before the reset may still write its own
    entry afterwards and become the latest; stop the scheduler before a reset and restart it after (runbook
    Scenario 4 step 6)."
extends_documentation_fragment:
  - k2.iceberg_offload.postgres
  - k2.iceberg_offload.postgres.WATERMARK_TABLE
  - k2.iceberg_offload.postgres.WRITE
  - k2.iceberg_offload.clickhouse
  - k2.iceberg_offload.iceberg
  - k2.iceberg_offload.iceberg.ENGINE
  - k2.iceberg_offload.attributes
  - k2.iceberg_offload.attributes.IDEMPOTENT
attributes:
  check_mode:
    support: full
    details:
      - Returns the plan (before and after per table) and writes nothing, not even the table.
  diff_mode:
    support: full
  idempotent:
    support: full
options:
  state:
    description:
      - V(present) ensures the watermark table and index exist (and sets watermarks when O(tables) is given).
      - It also keeps the table in working order - an C(id) sequence behind C(max(id)) (every C(INSERT) then
        violates the primary key, as after rows were restored with their ids; runbook Scenario 4, constraint
        violations) is advanced past it, with an audit row (RV(id_sequence); since 1.1.0).
    type: str
    choices: [present]
    default: present
  tables:
    description:
      - Source tables whose watermark to set (values of the C(table_name) column), such as
        C(bronze_trades_binance). For O(strategy=safe_point) and O(strategy=shift_by) the default is every
        table present in the watermark table.
    type: list
    elements: str
    aliases: [table_name]
  strategy:
    description:
      - Where the new watermark comes from.
      - V(pair) uses O(max_timestamp) and O(sequence_number).
      - V(safe_point) uses the greatest (C(max_timestamp), C(sequence_number)) pair held by an existing entry
        of the table (compared as a pair), not the runbook's per-column maxima.
      - V(shift_by) moves the latest entry's C(max_timestamp) by O(shift_by) and keeps its sequence number
        (or uses O(sequence_number) when given).
      - V(cold_tier) uses the greatest pair the Iceberg cold tier really holds (O(cold_table)), so nothing that is
        already there is offloaded again and nothing that is not is skipped. Use it after corruption or a lost
        watermark table. Needs O(iceberg_catalog_properties) or O(iceberg_table_location), and runs where the
        warehouse can be read (the Spark host). O(engine=spark) finds that pair with a Spark job instead of
        pyiceberg; the engine options are used by this strategy only.
      - V(lookback) is the runbook's initialisation (Scenario 3 step 3) done with a real pair, the greatest
        (timestamp, sequence) pair of the ClickHouse source strictly before C(now - lookback) (server clock).
        Refused when the source has no row before that cutoff (the runbook's pipeline would write 0).
        Everything after the pair is offloaded again, so when the cold tier still holds those rows they are
        duplicated; prefer V(cold_tier) unless the cold tier is lost too.
    type: str
    choices: [cold_tier, lookback, pair, safe_point, shift_by]
  max_timestamp:
    description:
      - For O(strategy=pair). ISO 8601, with or without an offset (without one, UTC); stored as naive UTC.
    type: str
  sequence_number:
    description:
      - For O(strategy=pair), or to override the sequence number with O(strategy=shift_by). 0 to 2^63-1.
    type: int
  shift_by:
    description:
      - For O(strategy=shift_by), a signed duration such as C(-1h) (back, re-offload the last hour) or C(+15m).
    type: str
  lookback:
    description:
      - For O(strategy=lookback), how far back from the ClickHouse server's C(now()), such as C(24h) (the
        runbook's value) or C(90m).
    type: str
    default: 24h
  cold_table:
    description:
      - For O(strategy=cold_tier), the Iceberg identifier of each source table's cold table; C({table}) stands
        for the source table. With O(iceberg_table_location), C({table}) may be used there too.
    type: str
    default: cold.{table}
  timestamp_column:
    description: Timestamp column of the source and cold tables (the pair's first half).
    type: str
    default: exchange_timestamp
  sequence_column:
    description: Sequence column of the source and cold tables (the pair's second half).
    type: str
    default: sequence_number
  clickhouse_url:
    description:
      - When set (or E(CLICKHOUSE_URL) is), every target is checked against the greatest pair of the ClickHouse
        source table and a target past it is refused (the offload would skip the rows that arrive in between),
        unless O(allow_past_source=true). Required by O(strategy=lookback).
      - Unset, the check is not made and the module warns.
    default: null
  allow_past_source:
    description:
      - Set a target past the source's greatest pair anyway (or on an empty source).
    type: bool
    default: false
  mode:
    description:
      - V(append) inserts one entry; earlier entries stay. V(replace) deletes the table's entries (after O(backup))
        and inserts one.
    type: str
    choices: [append, replace]
    default: append
  allow_backward:
    description:
      - Allow a target below the latest entry. Backward means re-offloading, that is duplicates.
    type: bool
    default: false
author:
  - K2 Platform Engineering (@k2-platform)
seealso:
  - module: k2.iceberg_offload.watermark_info
  - module: k2.iceberg_offload.watermark_cleanup
"""

EXAMPLES = r"""
# Scenario 3, done right: the table was lost; recreate it and continue from what the cold
# tier really holds. Runs on the Spark host, where the warehouse is.
- name: Recreate offload_watermarks and set each watermark from the cold tier
  k2.iceberg_offload.watermark_reset:
    login_host: k2-prefect-db
    login_db: prefect
    login_user: prefect
    login_password: "{{ prefect_db_password }}"
    tables: [bronze_trades_binance, bronze_trades_kraken]
    strategy: cold_tier
    iceberg_catalog: k2
    iceberg_catalog_properties:
      type: sql
      uri: sqlite:////home/iceberg/warehouse/catalog.db
      warehouse: file:///home/iceberg/warehouse
    clickhouse_url: http://k2-clickhouse:8123
  delegate_to: k2-spark-iceberg

# The runbook's own Scenario 3 step 3 (24 hours back), only when the cold tier is lost too:
# everything after the pair is offloaded again.
- name: Initialise from the source, 24 hours back
  k2.iceberg_offload.watermark_reset:
    login_host: 127.0.0.1
    login_db: prefect
    login_user: prefect
    login_password: "{{ prefect_db_password }}"
    tables: [bronze_trades_binance]
    strategy: lookback
    lookback: 24h
    clickhouse_url: http://127.0.0.1:8123

# Scenario 3 step 2: recreate the watermark table (runbook DDL, idempotent)
- name: Ensure offload_watermarks and its index exist
  k2.iceberg_offload.watermark_reset:
    login_host: 127.0.0.1
    login_db: prefect
    login_user: prefect
    login_password: "{{ prefect_db_password }}"
    state: present

# Scenario 3 step 3: initialise a watermark from a pair computed elsewhere
- name: Initialise the Binance watermark 24 hours back
  k2.iceberg_offload.watermark_reset:
    login_host: 127.0.0.1
    login_db: prefect
    login_user: prefect
    login_password: "{{ prefect_db_password }}"
    tables: [bronze_trades_binance]
    strategy: pair
    max_timestamp: "{{ lookback_ts }}"          # e.g. 2026-02-11T10:00:00Z
    sequence_number: "{{ lookback_seq | int }}"

# Scenario 4 step 5: one safe entry per table, after a backup table of the old rows
- name: Plan the reset to the safe point (check mode writes nothing)
  k2.iceberg_offload.watermark_reset:
    login_host: 127.0.0.1
    login_db: prefect
    login_user: prefect
    login_password: "{{ prefect_db_password }}"
    strategy: safe_point
    mode: replace
  check_mode: true
  register: plan

- name: Reset every table to its safe point
  k2.iceberg_offload.watermark_reset:
    login_host: 127.0.0.1
    login_db: prefect
    login_user: prefect
    login_password: "{{ prefect_db_password }}"
    strategy: safe_point
    mode: replace
    backup: table
  register: reset

- name: Say where the old rows went
  ansible.builtin.debug:
    msg: "backup of {{ reset.backup_rows | default(0) }} rows in {{ reset.backup }}"

# Re-offload the last hour of Kraken (duplicates are expected and accepted)
- name: Move the Kraken watermark back one hour
  k2.iceberg_offload.watermark_reset:
    login_host: 127.0.0.1
    login_db: prefect
    login_user: prefect
    login_password: "{{ prefect_db_password }}"
    tables: [bronze_trades_kraken]
    strategy: shift_by
    shift_by: -1h
    allow_backward: true
"""

RETURN = r"""
watermark_table:
  description: The watermark table.
  returned: always
  type: str
  sample: offload_watermarks
created_table:
  description: Whether the watermark table was (or in check mode would be) created.
  returned: always
  type: bool
  sample: false
created_index:
  description: Whether the index was (or in check mode would be) created.
  returned: always
  type: bool
  sample: false
id_sequence:
  description: The id sequence advanced past C(max(id)) (C(sequence), C(next_value_before), C(next_value_after)).
  returned: when it was (or in check mode would be) advanced
  type: dict
  sample: {sequence: public.offload_watermarks_id_seq, next_value_before: 1, next_value_after: 4243}
  version_added: 1.1.0
index_name:
  description: The C((table_name, created_at DESC)) index of the watermark table (null in check mode when it would
    be created).
  returned: always
  type: str
  sample: idx_watermarks_table_created
tables:
  description: The plan and its outcome, one item per source table.
  returned: always
  type: list
  elements: dict
  contains:
    table_name:
      description: Source table.
      type: str
      sample: bronze_trades_binance
    before:
      description: Latest pair before (null when the table had no entry).
      type: dict
      sample: {"max_timestamp": "2026-02-12 09:00:00", "sequence_number": 400}
    after:
      description: Target pair.
      type: dict
      sample: {"max_timestamp": "2026-02-12 10:00:00", "sequence_number": 500}
    action:
      description: V(none) (already there), V(append) or V(replace).
      type: str
      sample: replace
    backward:
      description: Whether the target is below the latest entry.
      type: bool
      sample: false
    refused:
      description: Why the change is refused, or null.
      type: str
    entries_before:
      description: Entries of the table before.
      type: int
      sample: 57
    entries_deleted:
      description: Entries deleted (V(replace)), or that would be in check mode.
      type: int
      sample: 57
    future_entries:
      description:
        - Entries of the table dated after the server's now. With O(mode=append) the new entry is stamped after
          them, and the module warns that the scheduler's own next entries sort below it until the clock passes it.
      type: int
      sample: 0
    entry:
      description: The inserted row (not in check mode); the one the scheduler reads next.
      type: dict
      sample: {"id": 900, "table_name": "bronze_trades_binance", "max_timestamp": "2026-02-12 10:00:00",
               "sequence_number": 500, "created_at": "2026-02-12 11:02:03.456789"}
    source:
      description:
        - Where the target came from and how it was checked. C(strategy); for V(cold_tier) C(cold_table),
          C(snapshot_id) and C(pair); for V(lookback) C(lookback_seconds), C(cutoff) and C(pair);
          C(source_greatest_pair) (null when not checked) and C(source_checked).
      type: dict
      sample: {"strategy": "cold_tier", "cold_table": "cold.bronze_trades_binance", "snapshot_id": 5043152216397427000,
               "pair": {"max_timestamp": "2026-02-12 10:14:59", "sequence_number": 81234},
               "source_greatest_pair": {"max_timestamp": "2026-02-12 10:29:59", "sequence_number": 82011},
               "source_checked": true}
backup:
  description: Backup table name or file path holding the deleted rows, or null when nothing was deleted.
  returned: always
  type: str
  sample: offload_watermarks_backup_20260212_110203
backup_rows:
  description: Rows saved in the backup.
  returned: when a backup was made
  type: int
  sample: 57
audit_ids:
  description: Ids of the audit rows written.
  returned: always
  type: list
  elements: int
  sample: [12, 13]
"""

from ansible.module_utils.basic import AnsibleModule, env_fallback

from ansible_collections.k2.iceberg_offload.plugins.module_utils.postgres import (
    parse_lock_timeout, postgres_common_argument_spec, watermark_table_argument_spec, watermark_write_argument_spec)
from ansible_collections.k2.iceberg_offload.plugins.module_utils.redaction import harden
from ansible_collections.k2.iceberg_offload.plugins.module_utils.watermark_ops import (
    module_audit_params, open_store, run_or_fail)
from ansible_collections.k2.iceberg_offload.plugins.module_utils.watermark_reset_run import run_reset
from ansible_collections.k2.iceberg_offload.plugins.module_utils.watermark_plan import TARGET_STRATEGIES
from ansible_collections.k2.iceberg_offload.plugins.module_utils.watermark_sources import (
    EXTERNAL_STRATEGIES, SourceCheck, SourceError, cold_tier_targets, lookback_targets)
from ansible_collections.k2.iceberg_offload.plugins.module_utils import clickhouse as ch_utils
from ansible_collections.k2.iceberg_offload.plugins.module_utils import iceberg_spark
from ansible_collections.k2.iceberg_offload.plugins.module_utils import iceberg as ice_utils


def argument_spec():
    spec = postgres_common_argument_spec()
    spec.update(watermark_table_argument_spec())
    spec.update(watermark_write_argument_spec())
    spec.update(ch_utils.clickhouse_argument_spec())
    # No default URL here: the source is asked only when the play says where it is.
    spec["clickhouse_url"] = dict(type="str", fallback=(env_fallback, ["CLICKHOUSE_URL"]))
    spec.update(ice_utils.iceberg_argument_spec())
    spec.update(iceberg_spark.engine_argument_spec())  # strategy=cold_tier only
    spec.update(
        state=dict(type="str", choices=["present"], default="present"),
        tables=dict(type="list", elements="str", aliases=["table_name"]),
        strategy=dict(type="str", choices=sorted(set(TARGET_STRATEGIES) | set(EXTERNAL_STRATEGIES))),
        max_timestamp=dict(type="str"),
        sequence_number=dict(type="int"),
        shift_by=dict(type="str"),
        lookback=dict(type="str", default="24h"),
        cold_table=dict(type="str", default="cold.{table}"),
        timestamp_column=dict(type="str", default="exchange_timestamp"),
        sequence_column=dict(type="str", default="sequence_number"),
        mode=dict(type="str", choices=["append", "replace"], default="append"),
        allow_backward=dict(type="bool", default=False),
        allow_past_source=dict(type="bool", default=False),
    )
    return spec


def external_targets(module, client):
    """Targets from ClickHouse (lookback) or Iceberg (cold_tier); fails the module on error."""
    p = module.params
    cols = (p["timestamp_column"], p["sequence_column"])
    try:
        if p["strategy"] == "lookback":
            return lookback_targets(client, p["tables"], p["lookback"], *cols)
        if p["engine"] == "pyiceberg":
            ice_utils.ensure_required_libs(module)
        if not p["iceberg_catalog_properties"] and not p["iceberg_table_location"]:
            module.fail_json(msg="strategy=cold_tier needs the cold tier: iceberg_catalog_properties (a pyiceberg "
                                 "catalog, or {type: hadoop, warehouse: ...}) or iceberg_table_location")
        return cold_tier_targets(p, p["tables"], p["cold_table"], *cols)
    except SourceError as e:
        module.fail_json(msg="%s; nothing was written" % e)


def main():
    module = harden(AnsibleModule(
        argument_spec=argument_spec(),
        required_if=[("strategy", "pair", ("max_timestamp", "sequence_number")),
                     ("strategy", "shift_by", ("shift_by",)),
                     ("strategy", "lookback", ("tables", "clickhouse_url")),
                     ("strategy", "cold_tier", ("tables",))],
        supports_check_mode=True,
    ))
    p = module.params
    try:
        parse_lock_timeout(p["lock_timeout"])
    except ValueError as e:
        module.fail_json(msg=str(e))
    client = None
    if p["clickhouse_url"]:
        ch_utils.ensure_required_libs(module)
        client = ch_utils.ClickHouseClient.from_module(module)
    targets, sources = None, {}
    if p["strategy"] in EXTERNAL_STRATEGIES:
        targets, sources = external_targets(module, client)
    check = None
    if client is not None:
        check = SourceCheck(client, p["timestamp_column"], p["sequence_column"], allow=p["allow_past_source"])
    store = open_store(module, audit=True, application_name="k2.iceberg_offload.watermark_reset")[1]
    result = run_or_fail(module, run_reset, "resetting the watermark", store, p, module.check_mode,
                         targets=targets, target_check=check, audited=module_audit_params(module))
    for warning in result.pop("_warnings", []):
        module.warn(warning)
    for plan in result.get("tables", []):
        name = plan["table_name"]
        plan["source"] = dict(sources.get(name) or {"strategy": p["strategy"]},
                              source_greatest_pair=check.info(name) if check else None,
                              source_checked=bool(check) and not p["allow_past_source"])
    if result.get("tables") and check is None:
        module.warn("the target was not checked against the source's greatest pair: set clickhouse_url so a "
                    "watermark past the source (rows skipped) is refused")
    diff = result.pop("diff", None)
    if module._diff and diff is not None:
        result["diff"] = diff
    module.exit_json(**result)


if __name__ == "__main__":
    main()
