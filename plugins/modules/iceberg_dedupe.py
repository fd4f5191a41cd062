#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: iceberg_dedupe
short_description: Remove duplicated rows from the Iceberg cold tier in one atomic commit, or roll that back
version_added: 1.0.0
description:
  - For one Iceberg table of the cold tier, finds the keys (O(key_columns), by default C(sequence_number))
    that appear more than once, everywhere or inside a O(window), and removes the extra copies so that
    exactly one row per key remains. This is the repair the runbook's post-incident check escalates
    ("Data duplicates detected in cold tier") after a watermark regression or a 24 h lookback.
  - Check mode returns the plan and changes nothing - the duplicated keys (count and a sample), the rows to
    remove, the data files to rewrite (paths, rows, bytes) and the copies that differ.
  - The change is one atomic Iceberg commit (an C(overwrite) snapshot) that removes only the data files that
    lose rows and adds their rewritten content; files without a copy to remove are not touched. A file whose
    rows are all extra copies is dropped without writing anything. The snapshot summary records the repair
    in C(k2.dedupe.*) properties (key columns, window, duplicated keys, rows removed, the snapshot it
    replaces).
  - Which copy stays - identical copies keep the one committed first (the file with the lowest data sequence
    number, then the file path, then the row's position). Copies that differ in any other column are
    reported in RV(plan.conflicts) and the module refuses unless O(conflict) says which one wins.
  - Concurrent writers (the offload scheduler appending) lose nothing. The commit requires the table's
    current snapshot to be the one the plan was read from; if another writer committed in between, the
    table is read again and the plan made again (rewritten files whose plan did not change are reused), up
    to O(max_attempts) times. Then the module fails and nothing of it is committed.
  - Memory is bounded by the files whose key ranges overlap, not by the table - only the key columns (and
    the window column) are read to find duplicates, and files are rewritten one at a time.
  - With O(rollback_to_snapshot), makes an earlier snapshot current again instead (the RV(rollback) of a
    repair gives the id), refusing when that would also discard later snapshots that are not repairs, such
    as the offload's appends, unless O(discard_later_snapshots=true).
author:
  - K2 Platform Engineering (@k2-platform)
extends_documentation_fragment:
  - k2.iceberg_offload.iceberg
  - k2.iceberg_offload.iceberg.ENGINE
  - k2.iceberg_offload.attributes
  - k2.iceberg_offload.attributes.IDEMPOTENT
attributes:
  check_mode:
    support: full
    details:
      - Returns the plan (and refuses conflicting copies the same way) and writes nothing.
  diff_mode:
    support: full
    details:
      - Rows, duplicated keys and duplicate rows before and after.
  idempotent:
    support: full
    details:
      - A second repair finds no duplicated key and reports C(changed=false). A rollback to the current
        snapshot changes nothing.
options:
  table:
    description:
      - The table as C(namespace.table). Required unless O(iceberg_table_location) is given.
      - "The table must take commits - a catalog's table, or a Hadoop-layout table directory on a local file
        system (O(iceberg_table_location), or O(iceberg_catalog_properties) C({type: hadoop, warehouse: ...}));
        a C(.metadata.json) file alone can only be planned (check mode)."
    type: str
  key_columns:
    description:
      - The columns whose values identify a row; rows with equal values in all of them are copies. Rows with
        a null in any key column are never counted as copies.
    type: list
    elements: str
    default: [sequence_number]
  window:
    description:
      - Look for copies only among the rows whose O(window.column) is in [O(window.from), O(window.to)]
        (both ends included; either may be left out, not both). Leave out to repair the whole table.
      - Only copies inside the window count - a key with one copy inside and one outside is left alone.
      - Data files whose bounds do not reach the window are not read.
    type: dict
    suboptions:
      column:
        description: A timestamp, date, integer or string column, such as C(exchange_timestamp) or C(sequence_number).
        type: str
        required: true
      from:
        description:
          - Lowest value, included. ISO 8601 for a timestamp column (with or without offset; UTC when without).
        type: raw
      to:
        description:
          - Highest value, included. Must not be before O(window.from).
        type: raw
  conflict:
    description:
      - What to do with a key whose copies differ in another column.
      - V(refuse) fails, reporting the copies (RV(plan.conflicts)), and changes nothing.
      - V(keep_first) keeps the copy committed first, V(keep_last) the copy committed last (by data sequence
        number of the file, then file path, then position in the file).
    type: str
    choices: [refuse, keep_first, keep_last]
    default: refuse
  sample_size:
    description: How many duplicated keys, and how many conflicting keys, to return; 0 to 1000.
    type: int
    default: 10
  max_attempts:
    description:
      - How many times to read, plan and commit when other writers commit meanwhile; 1 to 10.
    type: int
    default: 3
  rollback_to_snapshot:
    description:
      - Instead of a repair, make this snapshot (an ancestor of the current one) current again, as Iceberg's
        C(rollback_to_snapshot) does - typically RV(rollback.snapshot_id) of a repair.
      - The key, window and conflict options are ignored.
      - Runs through pyiceberg whatever O(engine) says (a rollback reads and writes only metadata).
    type: int
  discard_later_snapshots:
    description:
      - With O(rollback_to_snapshot), also discard later snapshots that are not repairs (the offload's appends
        since the repair). Their rows leave the table while the watermark stays ahead of them - stop the
        scheduler first and reset the watermark from the cold tier afterwards
        (M(k2.iceberg_offload.watermark_reset) with C(strategy=cold_tier)).
    type: bool
    default: false
notes:
  - "With O(engine=spark) the repair is a Spark job: Spark finds the duplicated keys and their copies (ordered by
    the data sequence number of their file, the file and the position), rewrites the kept rows of exactly the
    files that hold extra copies with Iceberg's Spark writer (staged, not committed), and one Iceberg
    C(OverwriteFiles) commit removes those files and adds their rewrites, with the same C(k2.dedupe.*) summary
    properties, validated from the snapshot read: if another writer appended meanwhile, the commit fails with
    nothing committed and the job plans again in the same Spark session (seconds, no new C(spark-submit)), up
    to O(max_attempts) plans in all. O(window) is not supported with V(spark)."
  - "Arrow's default allocator (mimalloc) keeps freed memory of its reading threads resident: the
    task's C(environment: {ARROW_DEFAULT_MEMORY_POOL: system}) lowers the module's peak RSS by about
    100 MiB (docs/benchmarks.md)."
  - Writes data files with pyiceberg's Parquet writer under the table's C(data/) location; files written by an
    attempt that did not commit are deleted.
  - A table with merge-on-read delete files is handled - the rewrite applies the deletes - but
    rolling back such a repair restores the old files as they were.
seealso:
  - module: k2.iceberg_offload.iceberg_table_info
  - module: k2.iceberg_offload.watermark_reset
"""

EXAMPLES = r"""
- name: Post-incident - the plan for removing duplicated trades (nothing is written in check mode)
  k2.iceberg_offload.iceberg_dedupe:
    table: cold.bronze_trades_binance
    iceberg_catalog: k2                          # the lab's SqlCatalog is named k2
    iceberg_catalog_properties:
      type: sql
      uri: sqlite:////home/iceberg/warehouse/catalog.db
      warehouse: file:///home/iceberg/warehouse
  check_mode: true
  register: dedupe_plan

- name: Remove them, in the hours the regressed watermark re-offloaded
  k2.iceberg_offload.iceberg_dedupe:
    table: cold.bronze_trades_binance
    iceberg_catalog: k2                          # the lab's SqlCatalog is named k2
    iceberg_catalog_properties:
      type: sql
      uri: sqlite:////home/iceberg/warehouse/catalog.db
      warehouse: file:///home/iceberg/warehouse
    window:
      column: exchange_timestamp
      from: "2026-02-12T09:00:00Z"
      to: "2026-02-12T11:00:00Z"
  register: dedupe

- name: Undo that repair (refused if the scheduler appended since, see discard_later_snapshots)
  k2.iceberg_offload.iceberg_dedupe:
    table: cold.bronze_trades_binance
    iceberg_catalog: k2                          # the lab's SqlCatalog is named k2
    iceberg_catalog_properties:
      type: sql
      uri: sqlite:////home/iceberg/warehouse/catalog.db
      warehouse: file:///home/iceberg/warehouse
    rollback_to_snapshot: "{{ dedupe.rollback.snapshot_id }}"
  when: dedupe is changed

- name: Copies that differ in price - the later offload wins; the runbook's hadoop-catalog layout
  k2.iceberg_offload.iceberg_dedupe:
    table: cold.bronze_trades_kraken
    iceberg_catalog_properties:
      type: hadoop
      warehouse: /home/iceberg/warehouse
    key_columns: [sequence_number]
    window: {column: sequence_number, from: 81000, to: 82000}
    conflict: keep_last
"""

RETURN = r"""
table:
  description: The table repaired.
  returned: when the table could be opened
  type: dict
  sample: {identifier: cold.bronze_trades_binance, location: /home/iceberg/warehouse/cold/bronze_trades_binance,
           metadata_location: /home/iceberg/warehouse/cold/bronze_trades_binance/metadata/00012-aa.metadata.json,
           format_version: 2}
plan:
  description:
    - What the repair removes (or would, in check mode), read from snapshot C(snapshot_id). On a conflict
      refusal, also returned with the failure.
  returned: when not rolling back
  type: dict
  contains:
    snapshot_id:
      description: The snapshot the plan was read from (V(null) for a table without one).
      type: int
      sample: 5043152216397427000
    key_columns:
      description: The key columns.
      type: list
      elements: str
      sample: [sequence_number]
    window:
      description: The window, V(null) for the whole table.
      type: dict
      sample: {column: exchange_timestamp, from: "2026-02-12 09:00:00", to: "2026-02-12 11:00:00"}
    conflict:
      description: The conflict policy.
      type: str
      sample: refuse
    duplicated_keys:
      description: Keys with more than one copy (in the window).
      type: int
      sample: 3600
    rows_to_remove:
      description: Copies to remove (every copy but one per key).
      type: int
      sample: 3600
    conflicting_keys:
      description: Duplicated keys whose copies differ in another column.
      type: int
      sample: 0
    sample:
      description:
        - Up to O(sample_size) duplicated keys, most repeated first; C(key) is the value, or a dict of the key
          columns when there are several.
      type: list
      elements: dict
      sample: [{key: 81234, count: 2, conflict: false}]
    conflicts:
      description:
        - Up to O(sample_size) conflicting keys with their copies (up to 10 each) - file, position in the
          file, whether it stays, and the other columns' values.
      type: list
      elements: dict
      sample: [{key: 81234, copies: [{file: /w/cold/t/data/00000-0-a.parquet, position: 17, kept: true,
                                      values: {price: 30001.5}}]}]
    files_to_rewrite:
      description: >-
        The data files that lose rows, in commit order - path, rows, rows_to_remove, rows_kept, bytes, and
        action (V(rewrite) writes the kept rows to a new file; V(drop) removes a file of extra copies only).
      type: list
      elements: dict
      sample: [{path: /w/cold/t/data/00000-0-b.parquet, rows: 3600, rows_to_remove: 3600, rows_kept: 0,
                bytes: 61234, action: drop}]
    bytes_to_rewrite:
      description: Size of those files.
      type: int
      sample: 61234
    files_scanned:
      description: Data files read (the key columns only, for most of them).
      type: int
      sample: 51
    bytes_scanned:
      description: Size of the data files read.
      type: int
      sample: 57671680
    rows_scanned:
      description: Rows whose keys were read.
      type: int
      sample: 10001000
    overlap_groups:
      description: Groups of files with overlapping key ranges, each checked on its own.
      type: int
      sample: 50
before:
  description: The table before - snapshot, rows (from the snapshot summary), duplicated keys and rows to remove.
  returned: when not rolling back
  type: dict
  sample: {snapshot_id: 5043152216397427000, rows: 10001000, duplicated_keys: 1000, duplicate_rows: 1000}
after:
  description: The table after the repair (or after it would be, in check mode).
  returned: when changed
  type: dict
  sample: {rows: 10000000, duplicated_keys: 0, duplicate_rows: 0}
snapshot_id:
  description: The repair's new snapshot; with O(rollback_to_snapshot), the snapshot made current.
  returned: when a repair was committed, and on rollback
  type: int
  sample: 7182937728831736000
previous_snapshot_id:
  description: The snapshot that was current before (the new snapshot's parent).
  returned: when a repair was committed, and on rollback
  type: int
  sample: 5043152216397427000
snapshot:
  description: The new current snapshot with its summary (C(k2.dedupe.*) properties for a repair).
  returned: when a repair or a rollback was committed
  type: dict
  sample: {snapshot_id: 7182937728831736000, operation: overwrite,
           summary: {operation: overwrite, k2.dedupe.rows_removed: "1000", k2.dedupe.duplicated_keys: "1000",
                     k2.dedupe.replaces_snapshot_id: "5043152216397427000"}}
commit:
  description: What the commit changed - files removed and added, bytes removed and written, rows written.
  returned: when a repair was committed
  type: dict
  sample: {files_removed: 1, files_added: 0, bytes_removed: 61234, bytes_written: 0, rows_written: 0}
rollback:
  description: How to undo the repair - the snapshot to roll back to, the arguments of this module, and the
    same as a Spark SQL procedure call and a pyiceberg line.
  returned: when a repair was committed
  type: dict
  contains:
    snapshot_id:
      description: The snapshot to roll back to (the repair's parent).
      type: int
      sample: 5043152216397427000
    module_args:
      description: The arguments of this module that roll back, with the table options of the repair.
      type: dict
      sample: {rollback_to_snapshot: 5043152216397427000}
    spark_sql:
      description: The same with Spark's C(rollback_to_snapshot) procedure (name your catalog).
      type: str
      sample: "CALL <catalog>.system.rollback_to_snapshot('cold.bronze_trades_binance', 5043152216397427000)"
    pyiceberg:
      description: The same in pyiceberg, on the loaded table.
      type: str
      sample: table.manage_snapshots().rollback_to_snapshot(5043152216397427000).commit()
  sample: {snapshot_id: 5043152216397427000, module_args: {rollback_to_snapshot: 5043152216397427000},
           spark_sql: "CALL <catalog>.system.rollback_to_snapshot('cold.bronze_trades_binance', 5043152216397427000)",
           pyiceberg: "table.manage_snapshots().rollback_to_snapshot(5043152216397427000).commit()"}
discarded_snapshots:
  description: With O(rollback_to_snapshot), the snapshots no longer current (newest first).
  returned: on rollback
  type: list
  elements: dict
  sample: [{snapshot_id: 7182937728831736000, operation: overwrite, timestamp: "2026-02-12 10:20:00",
            summary: {k2.dedupe.rows_removed: "1000"}}]
stats:
  description: >-
    Cost of the run - seconds, record batches, peak Arrow memory, peak RSS of the module's process, and each
    attempt (snapshot read, seconds to find and rewrite, outcome).
  returned: when not rolling back
  type: dict
  sample: {seconds: 1.9, batches: 160, arrow_peak_bytes: 25165824, arrow_pool_max_bytes: 33554432,
           peak_rss_bytes: 310000000, attempts: [{attempt: 1, snapshot_read: 5043152216397427000,
                                                 find_seconds: 0.4, rewrite_seconds: 0.1, commit_seconds: 0.05,
                                                 outcome: committed}]}
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.k2.iceberg_offload.plugins.module_utils.iceberg import (
    IcebergError, ensure_required_libs, iceberg_argument_spec, open_table_from_params, split_identifier)
from ansible_collections.k2.iceberg_offload.plugins.module_utils.iceberg_repair import (
    RepairError, check_options, dedupe, rollback)
from ansible_collections.k2.iceberg_offload.plugins.module_utils import iceberg_spark


def main():
    argument_spec = iceberg_argument_spec()
    argument_spec.update(iceberg_spark.engine_argument_spec())
    argument_spec.update(
        table=dict(type="str"),
        key_columns=dict(type="list", elements="str", default=["sequence_number"], no_log=False),
        window=dict(type="dict", options={
            "column": dict(type="str", required=True),
            "from": dict(type="raw"),
            "to": dict(type="raw"),
        }),
        conflict=dict(type="str", choices=["refuse", "keep_first", "keep_last"], default="refuse"),
        sample_size=dict(type="int", default=10),
        max_attempts=dict(type="int", default=3),
        rollback_to_snapshot=dict(type="int"),
        discard_later_snapshots=dict(type="bool", default=False),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True,
                           required_one_of=[("table", "iceberg_table_location")])
    p = module.params
    if p["engine"] == "pyiceberg" or p["rollback_to_snapshot"] is not None:
        ensure_required_libs(module)
    result = {"changed": False}
    try:
        if p["table"] is not None:
            split_identifier(p["table"])
        check_options(p["conflict"], p["sample_size"], p["max_attempts"])
        # Check mode only reads, so a bare metadata file is enough; a change needs a table that commits.
        for_write = not module.check_mode

        def open_table():
            return open_table_from_params(p, p["table"], for_write=for_write)

        if p["rollback_to_snapshot"] is not None:
            result = rollback(open_table(), p["rollback_to_snapshot"], p["discard_later_snapshots"],
                              module.check_mode)
        elif p["engine"] == "spark":
            if p["table"] is None:
                raise IcebergError("engine spark needs table (namespace.table) and a catalog, not "
                                   "iceberg_table_location")
            result = iceberg_spark.dedupe(p, p["table"], p["key_columns"], p["window"], p["conflict"],
                                          p["sample_size"], p["max_attempts"], check_mode=module.check_mode)
        else:
            result = dedupe(open_table, p["key_columns"], p["window"], p["conflict"], p["sample_size"],
                            p["max_attempts"], check_mode=module.check_mode)
    except RepairError as e:
        module.fail_json(msg=str(e), **_without_reserved(e.details))
    except IcebergError as e:
        module.fail_json(msg=str(e), **result)
    except Exception as e:  # pyiceberg and pyarrow raise many kinds; say which and where
        module.fail_json(msg="repairing Iceberg table %s failed: %s: %s; nothing was committed by this run "
                             "unless the table's current snapshot carries k2.dedupe properties"
                         % (p["table"] or p["iceberg_table_location"], type(e).__name__, str(e)[:500]),
                         **result)
    if module._diff and "before" in result and result["changed"]:
        result["diff"] = {"before": result["before"], "after": result["after"]}
    elif module._diff and "discarded_snapshots" in result and result["changed"]:
        result["diff"] = {"before": {"current_snapshot_id": result["previous_snapshot_id"]},
                          "after": {"current_snapshot_id": result["snapshot_id"]}}
    module.exit_json(**result)


def _without_reserved(details):
    return dict((k, v) for k, v in (details or {}).items() if k not in ("msg", "failed", "changed"))


if __name__ == "__main__":
    main()
