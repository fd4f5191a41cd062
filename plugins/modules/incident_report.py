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
written:
  description: Whether anything was written (false in check mode).
  returned: always
  type: bool
  sample: true
"""
