#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: offload_source_info
short_description: What the ClickHouse source of the Iceberg offload holds, seen through the watermark
version_added: 1.0.0
description:
  - For each source table in ClickHouse, reports the total rows, the first and last timestamp and the
    greatest C((exchange_timestamp, sequence_number)) pair.
  - With a watermark per table, reports the rows and the greatest pair strictly after it, compared as a
    pair (C(ts > X OR (ts = X AND seq > N))). Runbook Scenario 5 step 2, "data exists, not being
    offloaded"; the runbook's C(exchange_timestamp > LAST_TS) misses the rows that share the
    watermark's second.
  - Reports the greatest pair strictly before a cutoff (C(now - lookback), by the server's clock, or an
    explicit time). Runbook Scenario 3 step 3, the watermark initialisation; the runbook takes the
    sequence from one query and the timestamp from another, which can pair a sequence with a time it
    never had.
  - An empty answer is reported as empty (V(null) pair, 0 rows), never as a pair with sequence 0.
  - Read only. Every query is a SELECT.
author:
  - K2 Platform Engineering (@k2-platform)
extends_documentation_fragment:
  - k2.iceberg_offload.clickhouse
  - k2.iceberg_offload.attributes
  - k2.iceberg_offload.attributes.INFO_MODULE
options:
  tables:
    description:
      - Source tables, plain names (in O(clickhouse_database)) or C(database.table).
    type: list
    elements: str
    default: [bronze_trades_binance, bronze_trades_kraken]
  timestamp_column:
    description: The DateTime column of the pair.
    type: str
    default: exchange_timestamp
  sequence_column:
    description: The integer column of the pair.
    type: str
    default: sequence_number
  watermarks:
    description:
      - The watermark of each table, as a mapping from table name (as written in O(tables)) to a pair
        with keys C(max_timestamp) (ISO 8601, with or without offset; taken as UTC when without) and
        C(sequence_number).
      - The C(latest) entries of P(k2.iceberg_offload.watermark_info#module) are accepted as they are
        (their C(id), C(table_name) and C(created_at) are ignored), for example
        C({{ info.tables | items2dict(key_name='table_name', value_name='latest') }}).
      - Tables without an entry get no RV(tables.after_watermark).
    type: dict
    default: {}
  upto_watermark:
    description:
      - Also count the rows at or before each table's watermark (RV(tables.upto_watermark)), the rows the cold
        tier must hold, for the post-incident reconciliation. Reads the table up to the watermark.
    type: bool
    default: false
  lookback:
    description:
      - How far before the server's C(now()) the cutoff for RV(tables.before_cutoff) lies, as a duration
        such as C(24h), C(90m), C(1d12h) or seconds.
      - The runbook's initialisation uses 24 hours.
    type: str
    default: 24h
  cutoff:
    description:
      - An explicit cutoff (ISO 8601) instead of O(lookback).
    type: str
"""

EXAMPLES = r"""
- name: Scenario 5 step 2 - does ClickHouse hold rows past the watermark?
  k2.iceberg_offload.offload_source_info:
    clickhouse_url: http://127.0.0.1:18123
    watermarks:
      bronze_trades_binance:
        max_timestamp: "2026-02-12T10:15:00Z"
        sequence_number: 81234
  register: source

- name: Fail when data exists that is not being offloaded
  ansible.builtin.assert:
    that: source.tables.bronze_trades_binance.after_watermark.rows == 0
    fail_msg: >-
      {{ source.tables.bronze_trades_binance.after_watermark.rows }} rows wait past the watermark

- name: Scenario 3 step 3 - the pair a 24 h lookback would start from
  k2.iceberg_offload.offload_source_info:
    clickhouse_url: https://clickhouse.k2.internal:8443
    clickhouse_user: k2_reader
    clickhouse_password: "{{ vault_clickhouse_password }}"
    clickhouse_ca_cert: /etc/ssl/k2-ca.pem
    tables: [bronze_trades_binance, bronze_trades_kraken]
    lookback: 24h
  register: source
"""

RETURN = r"""
server:
  description: The ClickHouse server answering.
  returned: always
  type: dict
  contains:
    version:
      description: Server version.
      type: str
      sample: 18.16.1
    timezone:
      description: Server time zone (timestamps in this result are UTC regardless).
      type: str
      sample: Etc/UTC
    now:
      description: The server's clock, naive UTC.
      type: str
      sample: "2026-02-12 10:30:00"
  sample: {version: 18.16.1, timezone: Etc/UTC, now: "2026-02-12 10:30:00"}
cutoff:
  description: The cutoff used for RV(tables.before_cutoff), naive UTC.
  returned: always
  type: str
  sample: "2026-02-11 10:30:00"
tables:
  description: One entry per table of O(tables), keyed by the name as given.
  returned: always
  type: dict
  sample:
    bronze_trades_binance:
      total_rows: 345600
      min_timestamp: "2026-02-10 10:30:00"
      max_timestamp: "2026-02-12 10:29:59"
      max_pair: {max_timestamp: "2026-02-12 10:29:59", sequence_number: 345599}
      after_watermark:
        watermark: {max_timestamp: "2026-02-12 10:15:00", sequence_number: 336600}
        rows: 2999
        max_pair: {max_timestamp: "2026-02-12 10:29:59", sequence_number: 345599}
      before_cutoff:
        cutoff: "2026-02-11 10:30:00"
        rows: 172800
        max_pair: {max_timestamp: "2026-02-11 10:29:59", sequence_number: 172799}
  contains:
    total_rows:
      description: Rows in the table.
      type: int
      sample: 345600
    min_timestamp:
      description: Earliest timestamp, naive UTC; V(null) when the table is empty.
      type: str
      sample: "2026-02-10 10:30:00"
    max_timestamp:
      description: Latest timestamp, naive UTC; V(null) when the table is empty.
      type: str
      sample: "2026-02-12 10:29:59"
    max_pair:
      description: Greatest C((timestamp, sequence)) pair in the table; V(null) when it is empty.
      type: dict
      sample: {max_timestamp: "2026-02-12 10:29:59", sequence_number: 345599}
    after_watermark:
      description:
        - Rows strictly after the table's watermark (compared as a pair) and their greatest pair
          (V(null) when there are none). V(null) when O(watermarks) has no entry for the table.
      type: dict
      sample:
        watermark: {max_timestamp: "2026-02-12 10:15:00", sequence_number: 336600}
        rows: 2999
        max_pair: {max_timestamp: "2026-02-12 10:29:59", sequence_number: 345599}
    upto_watermark:
      description:
        - Rows at or before the table's watermark (compared as a pair), with that watermark. Only with
          O(upto_watermark=true) and a watermark for the table.
      type: dict
      sample: {watermark: {max_timestamp: "2026-02-12 10:15:00", sequence_number: 336600}, rows: 336601}
    before_cutoff:
      description:
        - Rows strictly before RV(cutoff) and their greatest pair, the watermark a lookback
          initialisation would write. C(max_pair) is V(null) when no row is that old.
      type: dict
      sample:
        cutoff: "2026-02-11 10:30:00"
        rows: 172800
        max_pair: {max_timestamp: "2026-02-11 10:29:59", sequence_number: 172799}
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.k2.iceberg_offload.plugins.module_utils.clickhouse import (
    ClickHouseClient, ClickHouseError, ClickHouseInputError, clickhouse_argument_spec,
    ensure_required_libs, split_table, validate_identifier)
from ansible_collections.k2.iceberg_offload.plugins.module_utils.watermark import pair_dict
from ansible_collections.k2.iceberg_offload.plugins.module_utils.watermark_sources import lookback_cutoff
from ansible_collections.k2.iceberg_offload.plugins.module_utils.redaction import harden
from ansible_collections.k2.iceberg_offload.plugins.module_utils.watermark import (
    Watermark, WatermarkError, format_timestamp, parse_duration, parse_sequence, parse_timestamp)


# Keys of watermark_info's ``latest`` entry that may come along with the pair.
_ENTRY_KEYS = {"id", "table_name", "created_at"}


def parse_watermarks(raw, tables):
    """{table: Watermark} from the module's ``watermarks`` option, every problem named.

    A value is a pair ``{max_timestamp, sequence_number}``, or watermark_info's ``latest``
    entry (which also has ``id``, ``table_name`` and ``created_at``).
    """
    result = {}
    for table, value in (raw or {}).items():
        if table not in tables:
            raise WatermarkError("watermarks has an entry for %r, which is not in tables (%s)"
                                 % (table, ", ".join(tables)))
        if not isinstance(value, dict) or not {"max_timestamp", "sequence_number"} <= set(value):
            raise WatermarkError("watermarks[%r] must be a mapping with max_timestamp and "
                                 "sequence_number, got %r" % (table, value))
        unknown = set(value) - {"max_timestamp", "sequence_number"} - _ENTRY_KEYS
        if unknown:
            raise WatermarkError("watermarks[%r] has unknown keys %s; expected max_timestamp and "
                                 "sequence_number" % (table, ", ".join(sorted(unknown))))
        if value.get("table_name") not in (None, table):
            raise WatermarkError("watermarks[%r] is the entry of table %r"
                                 % (table, value["table_name"]))
        result[table] = Watermark(
            parse_timestamp(value["max_timestamp"], "watermarks[%r].max_timestamp" % table),
            parse_sequence(value["sequence_number"], "watermarks[%r].sequence_number" % table))
    return result


def _text(dt):
    return format_timestamp(dt) if dt is not None else None


def main():
    argument_spec = clickhouse_argument_spec()
    argument_spec.update(
        tables=dict(type="list", elements="str",
                    default=["bronze_trades_binance", "bronze_trades_kraken"]),
        timestamp_column=dict(type="str", default="exchange_timestamp"),
        sequence_column=dict(type="str", default="sequence_number"),
        watermarks=dict(type="dict", default={}),
        upto_watermark=dict(type="bool", default=False),
        lookback=dict(type="str", default="24h"),
        cutoff=dict(type="str"),
    )
    module = harden(AnsibleModule(argument_spec=argument_spec, supports_check_mode=True))
    ensure_required_libs(module)
    p = module.params

    try:
        validate_identifier(p["clickhouse_database"], "clickhouse_database")
        if not p["tables"]:
            raise ClickHouseInputError("tables must name at least one table")
        if len(set(p["tables"])) != len(p["tables"]):
            raise ClickHouseInputError("tables lists a table twice: %s" % ", ".join(p["tables"]))
        for table in p["tables"]:
            split_table(p["clickhouse_database"], table)
        ts_col = validate_identifier(p["timestamp_column"], "timestamp_column")
        seq_col = validate_identifier(p["sequence_column"], "sequence_column")
        watermarks = parse_watermarks(p["watermarks"], p["tables"])
        cutoff = parse_timestamp(p["cutoff"], "cutoff") if p["cutoff"] else None
        lookback = parse_duration(p["lookback"], "lookback") if cutoff is None else None
    except (ClickHouseInputError, WatermarkError) as e:
        module.fail_json(msg=str(e))

    client = ClickHouseClient.from_module(module)
    result = dict(changed=False, tables={})
    try:
        server = client.server_info()
        if cutoff is None:
            cutoff = lookback_cutoff(server["now"], lookback)
        result["server"] = dict(server, now=_text(server["now"]))
        result["cutoff"] = _text(cutoff)
        for table in p["tables"]:
            client.check_trades_table(table, ts_col, seq_col)
            summary = client.summary(table, ts_col, seq_col)
            entry = {
                "total_rows": summary["total_rows"],
                "min_timestamp": _text(summary["min_timestamp"]),
                "max_timestamp": _text(summary["max_timestamp"]),
                "max_pair": pair_dict(summary["max_pair"]),
                "after_watermark": None,
            }
            if table in watermarks:
                after = client.after_watermark(table, watermarks[table], ts_col, seq_col)
                entry["after_watermark"] = {"watermark": watermarks[table].as_dict(),
                                            "rows": after["rows"],
                                            "max_pair": pair_dict(after["max_pair"])}
                if p["upto_watermark"]:
                    entry["upto_watermark"] = {
                        "watermark": watermarks[table].as_dict(),
                        "rows": client.upto_watermark(table, watermarks[table], ts_col, seq_col)}
            before = client.before_cutoff(table, cutoff, ts_col, seq_col)
            entry["before_cutoff"] = {"cutoff": _text(cutoff), "rows": before["rows"],
                                      "max_pair": pair_dict(before["max_pair"])}
            result["tables"][table] = entry
    except (ClickHouseError, ClickHouseInputError) as e:
        module.fail_json(msg=str(e), **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
