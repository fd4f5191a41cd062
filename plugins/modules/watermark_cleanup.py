#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: watermark_cleanup
short_description: Delete old or duplicate offload watermark entries, keeping the newest
version_added: 1.0.0
description:
  - Keeps the newest O(keep) entries per table (runbook Scenario 4 step 3 keeps 10; the weekly prevention job
    keeps 50) and/or deletes entries older than O(older_than), and can restrict the deletion to exact duplicates
    (O(duplicates_only)) or to entries that regressed (O(regressions_only)). An entry is deleted only when every
    rule given selects it.
  - Never deletes a table's latest entry (except with O(above_pair)). Ties are safe; rows written in one
    transaction share C(created_at), so entries are ordered by C(created_at) then C(id).
  - One transaction per run, holding the deletion, the backup (O(backup)) and one audit row per table; a failure
    or a server crash leaves the table as it was.
  - Check mode returns the number of entries each table would lose; a second run deletes nothing and reports
    C(changed=false).
  - "What the scheduler sees: nothing blocks it. A C(DELETE) takes a C(ROW EXCLUSIVE) table lock, which does not
    conflict with the scheduler's C(INSERT) or C(SELECT); the run reads one C(REPEATABLE READ) snapshot, so the
    backup is exactly the rows deleted and entries committed during the run are never touched. Two cleanup or
    reset runs are kept apart by a session advisory lock."
  - Faster than the runbook's C(ROW_NUMBER()) CTE because it does not rank the whole table; it finds each table's
    cut-off row by walking the C((table_name, created_at DESC)) index and deletes by a range (see
    docs/benchmarks.md).
extends_documentation_fragment:
  - k2.iceberg_offload.postgres
  - k2.iceberg_offload.postgres.WATERMARK_TABLE
  - k2.iceberg_offload.postgres.WRITE
  - k2.iceberg_offload.attributes
  - k2.iceberg_offload.attributes.IDEMPOTENT
attributes:
  check_mode:
    support: full
    details:
      - Returns the counts it would delete per table and writes nothing.
  diff_mode:
    support: full
  idempotent:
    support: full
options:
  tables:
    description:
      - Source tables to clean (values of the C(table_name) column). Default every table present.
    type: list
    elements: str
    aliases: [table_name]
  keep:
    description:
      - Newest entries to keep per table; at least 1.
    type: int
  older_than:
    description:
      - Delete entries written longer ago than this duration (such as C(30d), C(12h)).
    type: str
  duplicates_only:
    description:
      - Delete only entries whose (C(max_timestamp), C(sequence_number)) pair is repeated by a newer entry of the
        same table; the newest of each repeated pair stays.
    type: bool
    default: false
  regressions_only:
    description:
      - Delete only entries whose pair, compared as a pair, is lower than the greatest pair among the entries of the
        same table written before them (by C(created_at), then C(id)), that is a regressed entry and every later
        entry still below the earlier high-water mark. Entries equal to it (duplicates) stay.
      - The latest entry is never deleted. When it is the one that regressed it stays, the result says so
        (C(latest_regressed)) and the module warns; reset the watermark forward first
        (M(k2.iceberg_offload.watermark_reset) O(k2.iceberg_offload.watermark_reset#module:strategy=safe_point)).
      - Combines with O(tables), O(keep), O(older_than) and O(duplicates_only) (every rule must select an entry).
    type: bool
    default: false
  above_pair:
    description:
      - Delete the entries whose pair, compared as a pair, is greater than this one, the latest entry included
        - entries that claim rows the cold tier does not hold (the greatest pair it holds is
        M(k2.iceberg_offload.iceberg_table_info)'s RV(k2.iceberg_offload.iceberg_table_info#module:max_pair)).
        The scheduler then resumes from the newest entry at or below it, and the rows in between are offloaded
        instead of skipped (runbook Scenario 4, inconsistent watermarks; a watermark is never moved backward by
        writing a lower entry, which would read as a regression).
      - A table whose every entry is above the pair is left as it is, with a warning (a table is never left
        without a watermark).
      - Combines with O(tables) only. Stop the scheduler first (the playbooks do).
    type: dict
    suboptions:
      max_timestamp:
        description: ISO 8601, UTC unless it carries an offset.
        type: str
        required: true
      sequence_number:
        description: The sequence number of the pair.
        type: int
        required: true
    version_added: 1.1.0
  method:
    description:
      - How the rows go.
      - V(delete) deletes them in one C(REPEATABLE READ) transaction without a table lock; the scheduler never
        waits.
      - V(rewrite) copies the newest O(keep) entries of every table aside, C(TRUNCATE)s the table and copies them
        back, in one transaction under an C(ACCESS EXCLUSIVE) lock; readers and writers wait for it (a fraction
        of a second on 5 million rows, see docs/benchmarks.md). It needs O(keep) alone (no O(older_than),
        O(duplicates_only), O(regressions_only) or O(tables)), O(backup=none), the C(TRUNCATE) privilege and no foreign key
        referencing the table. C(TRUNCATE) is not MVCC-safe; a C(REPEATABLE READ) transaction that started
        before it sees the table empty.
      - V(auto) uses V(rewrite) when it is allowed, the table has at least 100000 rows and at most a tenth of
        them would stay; otherwise V(delete).
    type: str
    choices: [auto, delete, rewrite]
    default: auto
notes:
  - The order of entries, the latest entry, O(keep) and the entries below the high-water mark
    (O(regressions_only)) are defined once, in the collection's docs/watermark_modules.md ("Definitions"); the
    weekly prevention job (P(k2.iceberg_offload.watermark_cleanup#role)) runs this module's code with O(keep=50).
author:
  - K2 Platform Engineering (@k2-platform)
seealso:
  - module: k2.iceberg_offload.watermark_info
  - module: k2.iceberg_offload.watermark_reset
"""

EXAMPLES = r"""
# Scenario 4 steps 2-3: back up, then keep only the latest 10 entries per table
- name: See what the cleanup would delete
  k2.iceberg_offload.watermark_cleanup:
    login_host: 127.0.0.1
    login_db: prefect
    login_user: prefect
    login_password: "{{ prefect_db_password }}"
    keep: 10
  check_mode: true
  register: would

- name: Keep the latest 10 entries per table, old rows saved to a CSV file in /tmp first
  k2.iceberg_offload.watermark_cleanup:
    login_host: 127.0.0.1
    login_db: prefect
    login_user: prefect
    login_password: "{{ prefect_db_password }}"
    keep: 10
    backup: file
    backup_dir: /tmp
  register: cleaned

# Scenario 4, duplicate burst: drop repeated pairs only
- name: Delete exact duplicate entries of Binance
  k2.iceberg_offload.watermark_cleanup:
    login_host: 127.0.0.1
    login_db: prefect
    login_user: prefect
    login_password: "{{ prefect_db_password }}"
    tables: [bronze_trades_binance]
    duplicates_only: true

# Scenario 4, regression: after resetting the watermark forward, drop the entries below the high-water mark
- name: Delete regressed entries of Binance (backup table first)
  k2.iceberg_offload.watermark_cleanup:
    login_host: 127.0.0.1
    login_db: prefect
    login_user: prefect
    login_password: "{{ prefect_db_password }}"
    tables: [bronze_trades_binance]
    regressions_only: true
  register: regressed

- name: Say when the latest entry itself regressed (it is kept)
  ansible.builtin.debug:
    msg: "{{ item.table_name }}: reset the watermark forward first, latest {{ item.latest_pair }} < {{ item.high_water_pair }}"
  loop: "{{ regressed.tables }}"
  when: item.latest_regressed | default(false)

# Prevention 2: the weekly job (keep 50, and at least 30 days)
- name: Weekly watermark cleanup
  k2.iceberg_offload.watermark_cleanup:
    login_db: prefect
    keep: 50
    older_than: 30d
    backup: none
"""

RETURN = r"""
method:
  description: How the rows were deleted, V(delete) or V(rewrite) (check mode always plans a V(delete)).
  returned: always
  type: str
  sample: delete
watermark_table:
  description: The watermark table.
  returned: always
  type: str
  sample: offload_watermarks
deleted:
  description: Entries deleted in total (in check mode, that would be deleted).
  returned: always
  type: int
  sample: 4999980
tables:
  description: Counts per source table.
  returned: always
  type: list
  elements: dict
  contains:
    table_name:
      description: Source table.
      type: str
      sample: bronze_trades_binance
    entries_before:
      description: Entries before.
      type: int
      sample: 2500000
    deleted:
      description: Entries deleted (or that would be).
      type: int
      sample: 2499990
    entries_after:
      description: Entries left (or that would be).
      type: int
      sample: 10
    latest_regressed:
      description: With O(regressions_only), whether the table's latest entry is itself below the greatest pair
        written before it (it is kept; reset the watermark forward first).
      type: bool
      sample: false
    latest_pair:
      description: When C(latest_regressed), the latest entry's pair.
      type: dict
      sample: {"max_timestamp": "2026-02-12 09:30:00", "sequence_number": 450}
    high_water_pair:
      description: When C(latest_regressed), the greatest pair written before the latest entry.
      type: dict
      sample: {"max_timestamp": "2026-02-12 10:00:00", "sequence_number": 500}
backup:
  description: Backup table name or file path holding the deleted rows, or null.
  returned: always
  type: str
  sample: /tmp/watermarks_backup_20260212_110203.csv
backup_rows:
  description: Rows saved in the backup.
  returned: when a backup was made
  type: int
  sample: 4999980
audit_ids:
  description: Ids of the audit rows written.
  returned: always
  type: list
  elements: int
  sample: [14, 15]
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.k2.iceberg_offload.plugins.module_utils.postgres import (
    parse_lock_timeout, postgres_common_argument_spec, watermark_table_argument_spec, watermark_write_argument_spec)
from ansible_collections.k2.iceberg_offload.plugins.module_utils.redaction import harden
from ansible_collections.k2.iceberg_offload.plugins.module_utils.watermark import WatermarkError
from ansible_collections.k2.iceberg_offload.plugins.module_utils.watermark_cleanup_run import run_cleanup
from ansible_collections.k2.iceberg_offload.plugins.module_utils.watermark_ops import (
    module_audit_params, open_store, run_or_fail)
from ansible_collections.k2.iceberg_offload.plugins.module_utils.watermark_plan import validate_cleanup


def main():
    argument_spec = postgres_common_argument_spec()
    argument_spec.update(watermark_table_argument_spec())
    argument_spec.update(watermark_write_argument_spec())
    argument_spec.update(
        tables=dict(type="list", elements="str", aliases=["table_name"]),
        keep=dict(type="int"),
        older_than=dict(type="str"),
        duplicates_only=dict(type="bool", default=False),
        regressions_only=dict(type="bool", default=False),
        above_pair=dict(type="dict", options=dict(
            max_timestamp=dict(type="str", required=True),
            sequence_number=dict(type="int", required=True),
        )),
        method=dict(type="str", choices=["auto", "delete", "rewrite"], default="auto"),
    )
    module = harden(AnsibleModule(
        argument_spec=argument_spec,
        supports_check_mode=True,
    ))
    p = module.params
    try:
        parse_lock_timeout(p["lock_timeout"])
        validate_cleanup(p["keep"], p["older_than"], p["duplicates_only"], p["regressions_only"], p["above_pair"])
    except (ValueError, WatermarkError) as e:
        module.fail_json(msg=str(e))
    store = open_store(module, audit=True, application_name="k2.iceberg_offload.watermark_cleanup")[1]
    result = run_or_fail(module, run_cleanup, "cleaning up the watermark table", store, p, module.check_mode,
                         audited=module_audit_params(module))
    for warning in result.pop("_warnings", []):
        module.warn(warning)
    if module._diff:
        result["diff"] = {
            "before": dict((t["table_name"], {"entries": t["entries_before"]}) for t in result["tables"]),
            "after": dict((t["table_name"], {"entries": t["entries_after"]}) for t in result["tables"]),
        }
    module.exit_json(**result)


if __name__ == "__main__":
    main()
