#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: iceberg_table_info
short_description: What the Iceberg cold tier of the offload holds
version_added: 1.0.0
description:
  - Reads one Iceberg table of the cold tier and reports its row count, the greatest
    C((exchange_timestamp, sequence_number)) pair present, duplicated values of a key column with a
    sample, the rows past a given watermark, and the latest snapshot with the watermark the offload
    job wrote into its summary.
  - Replaces the runbook's post-incident spark-shell check
    (C(groupBy("sequence_number").count().where("count > 1"))) with one streamed pass that reads only
    the columns it needs, in record batches, so memory stays bounded on large tables. Peak memory is
    returned in RV(scan).
  - An empty table is reported as empty (V(null) pair), never as a pair with sequence 0.
  - Read only.
author:
  - K2 Platform Engineering (@k2-platform)
extends_documentation_fragment:
  - k2.iceberg_offload.iceberg
  - k2.iceberg_offload.iceberg.ENGINE
  - k2.iceberg_offload.attributes
  - k2.iceberg_offload.attributes.INFO_MODULE
options:
  table:
    description:
      - The table as C(namespace.table). Required unless O(iceberg_table_location) is given.
    type: str
  timestamp_column:
    description: The timestamp column of the pair.
    type: str
    default: exchange_timestamp
  sequence_column:
    description: The integer column of the pair.
    type: str
    default: sequence_number
  key_column:
    description: The column whose repeated values count as duplicates.
    type: str
    default: sequence_number
  duplicates:
    description: Look for duplicates. V(false) skips that part of the scan.
    type: bool
    default: true
  max_pair_only:
    description:
      - Return only RV(max_pair) (and the snapshots), read from the data files whose column bounds can hold it
        (0.05 s on 10 million rows, docs/benchmarks.md); RV(row_count), RV(duplicates), RV(past_watermark) and
        RV(scan) are then V(null). The diagnosis compares it with the watermark on every run.
    type: bool
    default: false
    version_added: 1.1.0
  duplicate_sample_size:
    description: How many duplicated keys to return (the most repeated first), 0 to 1000.
    type: int
    default: 10
  watermark:
    description:
      - A watermark; the rows strictly after it (compared as a pair) are counted in
        RV(past_watermark). C(max_timestamp) is ISO 8601, with or without offset (UTC when without).
    type: dict
    suboptions:
      max_timestamp:
        description: Timestamp of the pair.
        type: str
        required: true
      sequence_number:
        description: Sequence number of the pair.
        type: int
        required: true
"""

EXAMPLES = r"""
- name: Post-incident - duplicates in the cold tier (the lab's SQL catalog)
  k2.iceberg_offload.iceberg_table_info:
    table: cold.bronze_trades_binance
    iceberg_catalog_properties:
      type: sql
      uri: sqlite:////home/iceberg/warehouse/catalog.db
      warehouse: file:///home/iceberg/warehouse
  register: cold

- name: Expected - no duplicates
  ansible.builtin.assert:
    that: cold.duplicates.duplicate_rows == 0
    fail_msg: "duplicated keys in the cold tier: {{ cold.duplicates.sample }}"

- name: The runbook's hadoop-catalog layout, and rows the cold tier holds past the watermark
  k2.iceberg_offload.iceberg_table_info:
    table: cold.bronze_trades_kraken
    iceberg_catalog_properties:
      type: hadoop
      warehouse: /home/iceberg/warehouse
    watermark:
      max_timestamp: "2026-02-12T10:15:00Z"
      sequence_number: 81234

- name: The same check as a Spark job (the runbook's engine), on a cluster's master
  k2.iceberg_offload.iceberg_table_info:
    table: cold.bronze_trades_binance
    iceberg_catalog: k2
    iceberg_catalog_properties:
      type: sql
      uri: sqlite:////home/iceberg/warehouse/catalog.db
      warehouse: file:///home/iceberg/warehouse
    engine: spark
    spark_master: spark://spark-master.example.com:7077
- name: A table directory, no catalog
  k2.iceberg_offload.iceberg_table_info:
    iceberg_table_location: /home/iceberg/warehouse/cold/bronze_trades_binance
    duplicates: false
"""

RETURN = r"""
table:
  description: The table read.
  returned: always
  type: dict
  contains:
    identifier:
      description: The table's identifier (C(static-table) and the metadata file without a catalog).
      type: str
      sample: cold.bronze_trades_binance
    location:
      description: The table's location.
      type: str
      sample: /home/iceberg/warehouse/cold/bronze_trades_binance
    metadata_location:
      description: The metadata file read.
      type: str
      sample: /home/iceberg/warehouse/cold/bronze_trades_binance/metadata/00012-aa.metadata.json
    format_version:
      description: Iceberg format version.
      type: int
      sample: 2
  sample: {identifier: cold.bronze_trades_binance, location: /home/iceberg/warehouse/cold/bronze_trades_binance,
           metadata_location: /home/iceberg/warehouse/cold/bronze_trades_binance/metadata/v3.metadata.json,
           format_version: 2}
row_count:
  description: Rows in the current snapshot (after deletes).
  returned: always
  type: int
  sample: 10000000
min_timestamp:
  description: Earliest timestamp, naive UTC; V(null) when the table is empty.
  returned: always
  type: str
  sample: "2026-02-12 00:00:00"
max_pair:
  description: Greatest C((timestamp, sequence)) pair present; V(null) when the table is empty.
  returned: always
  type: dict
  sample: {max_timestamp: "2026-02-12 10:29:59", sequence_number: 345599}
duplicates:
  description: Repeated values of O(key_column); V(null) when O(duplicates=false).
  returned: always
  type: dict
  contains:
    key_column:
      description: The column checked.
      type: str
      sample: sequence_number
    duplicate_rows:
      description: Rows beyond the first of each key (rows a deduplication would remove).
      type: int
      sample: 3
    duplicated_keys:
      description: Keys that appear more than once.
      type: int
      sample: 2
    sample:
      description: Up to O(duplicate_sample_size) duplicated keys with their counts, most repeated first.
      type: list
      elements: dict
      sample: [{key: 1234, count: 3}, {key: 1240, count: 2}]
    overlap_groups:
      description: Groups of data files whose key ranges overlap (each checked on its own).
      type: int
      sample: 50
  sample: {key_column: sequence_number, duplicate_rows: 3, duplicated_keys: 2,
           sample: [{key: 1234, count: 3}, {key: 1240, count: 2}], overlap_groups: 50}
past_watermark:
  description: Rows strictly after O(watermark) and their greatest pair; V(null) without O(watermark).
  returned: always
  type: dict
  sample: {watermark: {max_timestamp: "2026-02-12 10:15:00", sequence_number: 81234}, rows: 12,
           max_pair: {max_timestamp: "2026-02-12 10:15:03", sequence_number: 81246}}
latest_snapshot:
  description:
    - The current snapshot; V(null) for a table without one. C(watermark) is the pair in its summary
      properties C(k2.watermark.max_timestamp) and C(k2.watermark.sequence_number), V(null) if absent.
  returned: always
  type: dict
  sample:
    snapshot_id: 5043152216397427000
    parent_snapshot_id: 1398617432712212000
    timestamp_ms: 1770891300000
    timestamp: "2026-02-12 10:15:00"
    operation: append
    summary: {operation: append, added-records: "3600", k2.watermark.max_timestamp: "2026-02-12 10:14:59",
              k2.watermark.sequence_number: "81234", k2.source_table: bronze_trades_binance}
    watermark: {max_timestamp: "2026-02-12 10:14:59", sequence_number: 81234}
    source_table: bronze_trades_binance
latest_watermark_snapshot:
  description:
    - The newest snapshot (walking back from the current one) that carries a watermark, same shape as
      RV(latest_snapshot); differs from it when a later commit (a compaction, a delete) has none.
  returned: always
  type: dict
  sample: {snapshot_id: 5043152216397427000, watermark: {max_timestamp: "2026-02-12 10:14:59",
           sequence_number: 81234}}
scan:
  description:
    - What the scan read and cost. With O(engine=spark) also C(engine), C(master) and C(spark_seconds) (the whole
      job, JVM start included); C(batches) and C(arrow_*) are then V(null).
  returned: always
  type: dict
  contains:
    seconds:
      description: Wall time of the scan.
      type: float
      sample: 2.1
    data_files:
      description: Data files read.
      type: int
      sample: 50
    data_bytes:
      description: Size of those files.
      type: int
      sample: 120000000
    batches:
      description: Record batches processed.
      type: int
      sample: 1250
    arrow_peak_bytes:
      description: Peak Arrow memory allocated during the scan (sampled per batch).
      type: int
      sample: 25165824
    arrow_pool_max_bytes:
      description: High-water mark of the Arrow memory pool, as the pool reports it.
      type: int
      sample: 33554432
    peak_rss_bytes:
      description: Peak resident memory of the module's process (includes Python and the libraries).
      type: int
      sample: 310000000
  sample: {seconds: 2.1, data_files: 50, data_bytes: 120000000, batches: 1250,
           arrow_peak_bytes: 25165824, arrow_pool_max_bytes: 33554432, peak_rss_bytes: 310000000}
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.k2.iceberg_offload.plugins.module_utils.iceberg import (
    IcebergError, describe_snapshot, ensure_required_libs, iceberg_argument_spec, latest_watermark_snapshot,
    open_table_from_params, split_identifier)
from ansible_collections.k2.iceberg_offload.plugins.module_utils.iceberg_scan import cold_tier_max_pair, scan_table
from ansible_collections.k2.iceberg_offload.plugins.module_utils import iceberg_spark
from ansible_collections.k2.iceberg_offload.plugins.module_utils.redaction import harden, redact_urls
from ansible_collections.k2.iceberg_offload.plugins.module_utils.watermark import (
    Watermark, WatermarkError, format_timestamp, pair_dict, parse_sequence, parse_timestamp)

_COLUMN_OPTIONS = ("timestamp_column", "sequence_column", "key_column")


def main():
    argument_spec = iceberg_argument_spec()
    argument_spec.update(iceberg_spark.engine_argument_spec())
    argument_spec.update(
        table=dict(type="str"),
        timestamp_column=dict(type="str", default="exchange_timestamp"),
        sequence_column=dict(type="str", default="sequence_number"),
        key_column=dict(type="str", default="sequence_number", no_log=False),
        duplicates=dict(type="bool", default=True),
        max_pair_only=dict(type="bool", default=False),
        duplicate_sample_size=dict(type="int", default=10),
        watermark=dict(type="dict", options=dict(
            max_timestamp=dict(type="str", required=True),
            sequence_number=dict(type="int", required=True),
        )),
    )
    module = harden(AnsibleModule(argument_spec=argument_spec, supports_check_mode=True,
                                  required_one_of=[("table", "iceberg_table_location")]))
    p = module.params
    if p["engine"] == "pyiceberg":
        ensure_required_libs(module)

    watermark = None
    try:
        if p["table"] is not None:
            split_identifier(p["table"])
        for option in _COLUMN_OPTIONS:
            value = p[option]
            if not value or not value.strip() or len(value) > 255 or "\0" in value:
                raise IcebergError("%s must be a column name, got %r" % (option, value))
        if not 0 <= p["duplicate_sample_size"] <= 1000:
            raise IcebergError("duplicate_sample_size must be between 0 and 1000, got %d"
                               % p["duplicate_sample_size"])
        if p["watermark"]:
            watermark = Watermark(
                parse_timestamp(p["watermark"]["max_timestamp"], "watermark.max_timestamp"),
                parse_sequence(p["watermark"]["sequence_number"], "watermark.sequence_number"))
    except (IcebergError, WatermarkError) as e:
        module.fail_json(msg=str(e))

    result = dict(changed=False)
    if p["engine"] == "spark":
        _spark(module, p, watermark, result)
    try:
        table = open_table_from_params(p, p["table"])
        result["table"] = {
            "identifier": ".".join(table.name()),
            "location": table.location(),
            "metadata_location": table.metadata_location,
            "format_version": table.format_version,
        }
        if p["max_pair_only"]:
            # The greatest pair alone, from the files whose bounds can hold it (the diagnosis' every-run check).
            result["max_pair"] = pair_dict(cold_tier_max_pair(table, p["timestamp_column"], p["sequence_column"]))
            result.update(row_count=None, min_timestamp=None, duplicates=None, past_watermark=None, scan=None)
            result["latest_snapshot"] = describe_snapshot(table.current_snapshot())
            result["latest_watermark_snapshot"] = describe_snapshot(latest_watermark_snapshot(table))
            module.exit_json(**result)
        scanned = scan_table(table, p["timestamp_column"], p["sequence_column"], p["key_column"],
                             watermark=watermark, duplicates=p["duplicates"],
                             sample_size=p["duplicate_sample_size"])
        result["row_count"] = scanned["row_count"]
        result["min_timestamp"] = format_timestamp(scanned["min_timestamp"])
        result["max_pair"] = pair_dict(scanned["max_pair"])
        result["duplicates"] = scanned["duplicates"]
        past = scanned["past_watermark"]
        if past is not None:
            past = {"watermark": past["watermark"].as_dict(), "rows": past["rows"],
                    "max_pair": pair_dict(past["max_pair"])}
        result["past_watermark"] = past
        result["latest_snapshot"] = describe_snapshot(table.current_snapshot())
        result["latest_watermark_snapshot"] = describe_snapshot(latest_watermark_snapshot(table))
        result["scan"] = scanned["scan"]
    except IcebergError as e:
        module.fail_json(msg=str(e), **result)
    except Exception as e:  # pyiceberg and pyarrow raise many kinds; say which and where
        module.fail_json(msg=redact_urls("reading Iceberg table %s failed: %s: %s"
                                         % (p["table"] or p["iceberg_table_location"], type(e).__name__,
                                            str(e)[:500])), **result)
    module.exit_json(**result)


def _spark(module, p, watermark, result):
    """The same result from a Spark job (module_utils/iceberg_spark.py)."""
    try:
        if p["table"] is None:
            raise IcebergError("engine spark needs table (namespace.table) and a catalog, not iceberg_table_location")
        scanned = iceberg_spark.scan(p, p["table"], p["timestamp_column"], p["sequence_column"], p["key_column"],
                                     watermark=watermark, duplicates=p["duplicates"],
                                     sample_size=p["duplicate_sample_size"], max_pair_only=p["max_pair_only"])
    except IcebergError as e:
        module.fail_json(msg=str(e), **result)
    result.update(scanned)
    result["max_pair"] = pair_dict(scanned["max_pair"])
    if not p["max_pair_only"]:
        result["min_timestamp"] = format_timestamp(scanned["min_timestamp"])
        past = scanned["past_watermark"]
        if past is not None:
            past = {"watermark": past["watermark"].as_dict(), "rows": past["rows"],
                    "max_pair": pair_dict(past["max_pair"])}
        result["past_watermark"] = past
    module.exit_json(**result)


if __name__ == "__main__":
    main()
