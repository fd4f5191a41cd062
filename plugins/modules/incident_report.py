#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: incident_report
short_description: Write a diagnosis, recovery or incident report on the controller
version_added: 1.0.0
description:
  - Writes O(data) as JSON (and O(markdown) beside it) into O(dir) on the controller, as
    C(<kind>-<UTC time>.json) and C(latest-<kind>.json). The directory is created owner-only (0700), the files
    0600. Writes nothing in check mode.
  - With O(html), also one self-contained HTML page, C(<kind>-<UTC time>.html) and C(latest-<kind>.html) (0600),
    with a chart of each table's watermark age over the incident with the alert's threshold, a chart of the rows
    offloaded per cycle, both with a numbered mark for the incident's start, its detection, every action of the
    run's record (scenario, module, audit ids), the verification and the end; the audit rows, the reconciliation
    per table, the cold-tier repairs with their rollback command, the diagnosis and its evidence, the escalations,
    the state the run left and an empty root-cause section. Styles and charts (SVG) are inline, so it opens without a
    network. The charts are drawn with the Python library pygal on the controller; without it the page is written
    without them, with a warning.
  - The playbooks put no secrets in reports; what is written is what the modules returned.
  - An action plugin, it runs on the controller, in-process.
extends_documentation_fragment:
  - k2.iceberg_offload.attributes
  - k2.iceberg_offload.attributes.ACTION
attributes:
  check_mode:
    support: full
    details:
      - Returns the path it would write and writes nothing.
  diff_mode:
    support: none
options:
  dir:
    description: The report directory.
    type: path
    required: true
  kind:
    description: What the report is about.
    type: str
    choices: [diagnosis, recovery, incident]
    required: true
  data:
    description: The report.
    type: dict
    required: true
  markdown:
    description: The same report for people, written as C(<kind>-<UTC time>.md) and C(latest-<kind>.md).
    type: str
  html:
    description:
      - Also write the report as an HTML page, C(<kind>-<UTC time>.html) and C(latest-<kind>.html), drawn from
        O(data) and these facts of the run (each optional; every value on the page comes from them).
      - The age chart is drawn from O(html.prometheus) when Prometheus answered, else from O(html.watermarks)'s
        entries; the rows chart from O(html.scheduler)'s log, else from the watermark pairs. The page says which.
    type: dict
    version_added: 1.1.0
    suboptions:
      prometheus:
        description: A result of M(k2.iceberg_offload.watermark_metrics_info) with O(k2.iceberg_offload.watermark_metrics_info#module:history_since).
        type: dict
      watermarks:
        description:
          - A result of M(k2.iceberg_offload.watermark_info) with O(k2.iceberg_offload.watermark_info#module:entries_since)
            (the entries) and O(k2.iceberg_offload.watermark_info#module:recent_changes) (the audit rows).
        type: dict
      scheduler:
        description: A result of M(k2.iceberg_offload.scheduler_info) with O(k2.iceberg_offload.scheduler_info#module:history).
        type: dict
      recovery:
        description: For O(kind=incident), the recovery report it follows (C(latest-recovery.json)).
        type: dict
      stale_after:
        description: The alert's threshold in seconds, drawn on the age chart.
        type: int
      cycle_seconds:
        description: The scheduler's cycle in seconds.
        type: int
      tables:
        description: The source tables, in the order the charts list them.
        type: list
        elements: str
      cold_table:
        description: The cold table of a source table, C({table}) standing for its name (for the rollback commands).
        type: str
        default: cold.{table}
      alert_name:
        description: The alert, in the page's title.
        type: str
      window_start:
        description:
          - Where the charts begin (ISO 8601, UTC), as the facts were gathered (the
            P(k2.iceberg_offload.report_window#filter) filter); default a margin before the incident's start.
        type: str
  html_template:
    description:
      - The Jinja2 template of the HTML page, rendered with autoescape on. Default the collection's
        C(roles/watermark_recovery/templates/incident_report.html.j2).
    type: path
    version_added: 1.1.0
author:
  - K2 Platform Engineering (@k2-platform)
"""

EXAMPLES = r"""
- name: Write the diagnosis report
  k2.iceberg_offload.incident_report:
    dir: /var/tmp/k2-iceberg-offload
    kind: diagnosis
    data: "{{ diagnosis }}"
  register: report

- name: Write the incident report with its HTML page
  k2.iceberg_offload.incident_report:
    dir: /var/tmp/k2-iceberg-offload
    kind: incident
    data: "{{ incident }}"
    html:
      prometheus: "{{ prometheus_with_history }}"
      watermarks: "{{ watermark_info_with_entries }}"
      scheduler: "{{ scheduler_info_with_history }}"
      recovery: "{{ lookup('ansible.builtin.file', '/var/tmp/k2-iceberg-offload/latest-recovery.json') | from_json }}"
      stale_after: 3600
      cycle_seconds: 900
      tables: [bronze_trades_binance, bronze_trades_kraken]
"""

RETURN = r"""
path:
  description: The report written (or that would be, in check mode).
  returned: always
  type: str
  sample: /var/tmp/k2-iceberg-offload/diagnosis-20260212T101500Z.json
latest:
  description: The copy under a fixed name.
  returned: always
  type: str
  sample: /var/tmp/k2-iceberg-offload/latest-diagnosis.json
markdown_path:
  description: The Markdown report, V(null) without O(markdown).
  returned: always
  type: str
  sample: /var/tmp/k2-iceberg-offload/incident-20260212T101500Z.md
html_path:
  description: The HTML page, V(null) without O(html).
  returned: always
  type: str
  sample: /var/tmp/k2-iceberg-offload/incident-20260212T101500Z.html
  version_added: 1.1.0
html:
  description:
    - What the HTML page holds - C(charts) (those drawn, C(age) and C(rows)), C(age_source) (C(prometheus),
      C(watermark-table) or V(null)), C(rows_source) (C(scheduler-log), C(watermark-pairs) or V(null)), C(marks)
      (how many), C(error) (a chart that could not be drawn), C(seconds) (the time it took).
  returned: when O(html) is set, but in check mode
  type: dict
  sample: {charts: [age, rows], age_source: prometheus, rows_source: scheduler-log, marks: 11, error: null, seconds: 0.21}
  version_added: 1.1.0
written:
  description: Whether anything was written (false in check mode).
  returned: always
  type: bool
  sample: true
"""
