#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: watermark_metrics_info
short_description: Watermark age and the IcebergOffloadWatermarkStale alert, from Prometheus
version_added: 1.0.0
description:
  - "Runbook Diagnosis step 1, C(curl .../api/v1/query?query=(time()-watermark_timestamp_seconds)), as a module:
    the age of each table's watermark as Prometheus sees it, and the state of the alert (firing or pending,
    since when)."
  - A Prometheus that does not answer is a finding (RV(reachable=false) with RV(error)), not a failure, so a
    diagnosis goes on without it.
  - Read only.
author:
  - K2 Platform Engineering (@k2-platform)
extends_documentation_fragment:
  - k2.iceberg_offload.attributes
  - k2.iceberg_offload.attributes.INFO_MODULE
options:
  prometheus_url:
    description: Prometheus' base URL, such as C(http://localhost:9090) (the runbook's).
    type: str
    default: http://localhost:9090
  prometheus_token:
    description: A bearer token for a Prometheus behind authentication.
    type: str
  validate_certs:
    description: Verify the server's TLS certificate.
    type: bool
    default: true
  ca_path:
    description: A CA bundle to verify it with.
    type: path
  timeout:
    description: Seconds to wait for each answer.
    type: int
    default: 5
  metric:
    description: The gauge holding the Unix time of each table's latest watermark entry.
    type: str
    default: watermark_timestamp_seconds
  table_label:
    description: The label naming the table.
    type: str
    default: table
  alert_name:
    description: The alert that pages.
    type: str
    default: IcebergOffloadWatermarkStale
  tables:
    description: Tables expected to have a series; those without one are listed in RV(missing_tables).
    type: list
    elements: str
    default: []
  history_since:
    description:
      - "Also return each table's age over time, from this moment to now (RV(age_history)): the alert's own
        expression C(time() - watermark_timestamp_seconds) through C(/api/v1/query_range)."
      - An ISO 8601 timestamp (UTC when it has no offset) or a duration such as C(2h) (that long ago).
      - The incident report's HTML page draws it.
    type: str
    version_added: 1.1.0
  history_points:
    description: At most this many points per table in RV(age_history) (the step is chosen to fit).
    type: int
    default: 240
    version_added: 1.1.0
"""

EXAMPLES = r"""
- name: Diagnosis step 1 - watermark age from Prometheus
  k2.iceberg_offload.watermark_metrics_info:
    prometheus_url: http://localhost:9090
    tables: [bronze_trades_binance, bronze_trades_kraken]
  register: prom

- name: The age of each table over the last two hours, for a chart
  k2.iceberg_offload.watermark_metrics_info:
    prometheus_url: http://localhost:9090
    history_since: 2h
  register: prom_history

- name: Ages over 30 minutes
  ansible.builtin.debug:
    msg: "{{ item.key }} {{ item.value | int }} s"
  loop: "{{ prom.ages | dict2items }}"
  when: item.value > 1800
"""

RETURN = r"""
reachable:
  description: Prometheus answered both queries.
  returned: always
  type: bool
  sample: true
error:
  description: Why it did not (the URL without credentials), V(null) when it did.
  returned: always
  type: str
  sample: "Prometheus at http://localhost:9090 did not answer /api/v1/query: [Errno 111] Connection refused"
ages:
  description: Seconds since each table's latest watermark entry, C(time() - watermark_timestamp_seconds).
  returned: always
  type: dict
  sample: {bronze_trades_binance: 412.3, bronze_trades_kraken: 398.1}
alerts:
  description: The alert's instances (C(table), C(state), C(active_at), C(value), C(labels)).
  returned: always
  type: list
  elements: dict
  sample: [{table: bronze_trades_binance, state: firing, active_at: "2026-02-12T09:58:41.000Z", value: 3702.0}]
firing_tables:
  description: Tables for which the alert fires.
  returned: always
  type: list
  elements: str
  sample: [bronze_trades_binance]
pending_tables:
  description: Tables for which the alert is pending.
  returned: always
  type: list
  elements: str
  sample: []
alert_active_since:
  description: The earliest C(activeAt) of a firing instance (when the incident began, as Prometheus saw it).
  returned: always
  type: str
  sample: "2026-02-12T09:58:41.000Z"
missing_tables:
  description: Tables of O(tables) with no age series (the exporter has not seen them).
  returned: always
  type: list
  elements: str
  sample: []
age_history:
  description:
    - With O(history_since), each table's age over time, from a range query. C(tables) maps a table to its
      points C([unix time, age seconds]), oldest first (a series with no sample, such as an exporter that
      stopped, is missing or has gaps); C(start) and C(end) (Unix seconds), C(step) (seconds) and C(error)
      (why Prometheus did not answer, the URL without credentials; V(null) when it did).
  returned: when O(history_since) is set
  type: dict
  sample: {start: 1796527500.0, end: 1796527800.0, step: 2, error: null,
           tables: {bronze_trades_binance: [[1796527500.0, 4.1], [1796527502.0, 6.1]]}}
  version_added: 1.1.0
"""

import calendar
import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.k2.iceberg_offload.plugins.module_utils.redaction import harden
from ansible_collections.k2.iceberg_offload.plugins.module_utils.prometheus import (
    MAX_RANGE_POINTS, PrometheusClient, PrometheusError, age_history, check_names, watermark_facts)
from ansible_collections.k2.iceberg_offload.plugins.module_utils.watermark import WatermarkError, parse_since


def main():
    module = harden(AnsibleModule(
        argument_spec=dict(
            prometheus_url=dict(type="str", default="http://localhost:9090"),
            prometheus_token=dict(type="str", no_log=True),
            validate_certs=dict(type="bool", default=True),
            ca_path=dict(type="path"),
            timeout=dict(type="int", default=5),
            metric=dict(type="str", default="watermark_timestamp_seconds"),
            table_label=dict(type="str", default="table"),
            alert_name=dict(type="str", default="IcebergOffloadWatermarkStale"),
            tables=dict(type="list", elements="str", default=[]),
            history_since=dict(type="str"),
            history_points=dict(type="int", default=240),
        ),
        supports_check_mode=True,
    ))
    p = module.params
    if not 1 <= p["timeout"] <= 300:
        module.fail_json(msg="timeout must be between 1 and 300 seconds, got %d" % p["timeout"])
    try:
        check_names(p["metric"], p["table_label"], p["alert_name"])
        client = PrometheusClient(p["prometheus_url"], timeout=p["timeout"], validate_certs=p["validate_certs"],
                                  token=p["prometheus_token"], ca_path=p["ca_path"])
    except PrometheusError as e:
        module.fail_json(msg=str(e))
    since = None
    if p["history_since"]:
        if not 10 <= p["history_points"] <= MAX_RANGE_POINTS:
            module.fail_json(msg="history_points must be between 10 and %d, got %d"
                             % (MAX_RANGE_POINTS, p["history_points"]))
        try:
            since = parse_since(p["history_since"], name="history_since")
        except WatermarkError as e:
            module.fail_json(msg=str(e))
    facts = watermark_facts(client, p["metric"], p["table_label"], p["alert_name"], p["tables"])
    if since is not None:
        end = time.time()
        start = calendar.timegm(since.timetuple()) + since.microsecond / 1e6
        facts["age_history"] = age_history(client, start, end, p["metric"], p["table_label"],
                                           p["history_points"], p["tables"])
    module.exit_json(changed=False, **facts)


if __name__ == "__main__":
    main()
