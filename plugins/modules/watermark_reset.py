#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: K2 Platform Engineering
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: watermark_reset
short_description: Create the watermark table and set a table's offload watermark
version_added: 0.1.0
description:
  - With O(state=present), makes sure the watermark table and its C((table_name, created_at DESC)) index exist,
    using the runbook's Scenario 3 DDL. Idempotent.
  - With O(tables) and O(strategy), sets each table's watermark pair (C(max_timestamp), C(sequence_number)).
    The target comes from an explicit pair (O(strategy=pair)), from the greatest pair an existing entry holds
    (O(strategy=safe_point), runbook Scenario 4 step 5), or from the latest pair moved by a duration
    (O(strategy=shift_by)).
  - O(mode=append) inserts one new entry (the scheduler reads the latest one); O(mode=replace) deletes the
    table's entries and inserts the one new entry (runbook Scenario 4 step 5), after saving the deleted rows
    (O(backup)). Each run is one transaction with its audit rows; nothing is half-written.
  - "The safe point is the greatest pair that some entry really holds. The runbook's query
    C(SELECT MAX(max_timestamp), MAX(sequence_number) ... GROUP BY table_name) takes each column's maximum
    separately; when the two maxima come from different rows (a regressed or corrupted entry, a sequence
    reset) it invents a pair no cycle ever wrote, which can skip rows that were never offloaded (data loss)."
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
  - k2.iceberg_offload.postgres.WRITE
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
    type: str
    choices: [pair, safe_point, shift_by]
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
    entry:
      description: The inserted row (not in check mode).
      type: dict
      sample: {"id": 900, "table_name": "bronze_trades_binance", "max_timestamp": "2026-02-12 10:00:00",
               "sequence_number": 500, "created_at": "2026-02-12 11:02:03.456789"}
backup:
  description: Backup table name or file path holding the deleted rows, or null when nothing was deleted.
  returned: always
  type: str
  sample: offload_watermarks_backup_20260212T110203
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

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.k2.iceberg_offload.plugins.module_utils.postgres import (
    postgres_common_argument_spec, watermark_write_argument_spec)
from ansible_collections.k2.iceberg_offload.plugins.module_utils.watermark_ops import (
    open_store, run_reset, run_or_fail)
from ansible_collections.k2.iceberg_offload.plugins.module_utils.watermark_plan import TARGET_STRATEGIES


def argument_spec():
    spec = postgres_common_argument_spec()
    spec.update(watermark_write_argument_spec())
    spec.update(
        state=dict(type="str", choices=["present"], default="present"),
        tables=dict(type="list", elements="str", aliases=["table_name"]),
        strategy=dict(type="str", choices=sorted(TARGET_STRATEGIES)),
        max_timestamp=dict(type="str"),
        sequence_number=dict(type="int"),
        shift_by=dict(type="str"),
        mode=dict(type="str", choices=["append", "replace"], default="append"),
        allow_backward=dict(type="bool", default=False),
    )
    return spec


def main():
    module = AnsibleModule(
        argument_spec=argument_spec(),
        required_if=[("strategy", "pair", ("max_timestamp", "sequence_number")),
                     ("strategy", "shift_by", ("shift_by",))],
        supports_check_mode=True,
    )
    if module.params["lock_timeout"] < 0:
        module.fail_json(msg="lock_timeout must be zero or more seconds, got %d" % module.params["lock_timeout"])
    store = open_store(module, audit=True, application_name="k2.iceberg_offload.watermark_reset")[1]
    result = run_or_fail(module, run_reset, "resetting the watermark", store, module.params, module.check_mode)
    diff = result.pop("diff", None)
    if module._diff and diff is not None:
        result["diff"] = diff
    module.exit_json(**result)


if __name__ == "__main__":
    main()
