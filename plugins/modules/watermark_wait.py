#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: watermark_wait
short_description: Wait until every table's watermark advances again, printing progress on every look
version_added: 1.0.0
description:
  - The end of every recovery (runbook "Verify watermark updates", Post-Incident step 1) as one task. Looks at the
    watermark table with P(k2.iceberg_offload.watermark_info#module) every O(poll) seconds until each table's
    latest pair has advanced past its baseline O(advances) times and is fresher than O(fresh_after), or O(timeout)
    has passed; then fails with the evidence.
  - Prints one line per look (pair, age, progress per table), so a wait of a 15-minute cycle is never silent.
  - A pair that goes down between two looks is a regression and fails the verification.
  - An action plugin, it runs on the controller and calls P(k2.iceberg_offload.watermark_info#module) on the
    task's host.
extends_documentation_fragment:
  - k2.iceberg_offload.attributes
  - k2.iceberg_offload.attributes.ACTION
  - k2.iceberg_offload.postgres
  - k2.iceberg_offload.postgres.WATERMARK_TABLE
attributes:
  check_mode:
    support: full
    details:
      - Only reads; it waits in check mode too (skip it there when nothing was changed).
  diff_mode:
    support: none
options:
  tables:
    description: The source tables whose watermark must advance.
    type: list
    elements: str
    required: true
  baseline:
    description:
      - The pair (C(max_timestamp), C(sequence_number)) per table that the watermark must pass, such as the
        entries before the fix. A table without one takes its first look as the baseline.
    type: dict
    default: {}
  cycles:
    description: How many scheduler cycles to wait at most (the default O(timeout) is this many cycles plus a margin).
    type: float
    default: 2
  cycle_seconds:
    description: The scheduler's cycle (900 in production).
    type: int
    default: 900
  advances:
    description: How many successive new pairs each table needs (3 for the post-incident progression check).
    type: int
    default: 1
  timeout:
    description: Seconds to wait at most. Default O(cycles) times O(cycle_seconds) plus max(30, 10% of a cycle).
    type: float
  poll:
    description: Seconds between looks. Default a quarter of a cycle, between 1 and 60.
    type: float
  fresh_after:
    description: The latest entry must be younger than this many seconds. Default two cycles.
    type: float
  label:
    description: Prefix of the progress lines.
    type: str
    default: watermark
author:
  - K2 Platform Engineering (@k2-platform)
seealso:
  - module: k2.iceberg_offload.watermark_info
"""

EXAMPLES = r"""
- name: Verify - every watermark advances within 2 cycles
  k2.iceberg_offload.watermark_wait:
    login_host: 127.0.0.1
    login_db: prefect
    login_user: prefect
    login_password: "{{ k2_pg_password }}"
    tables: [bronze_trades_binance, bronze_trades_kraken]
    cycle_seconds: 900
    cycles: 2

- name: Post-incident - 3 cycles of progress
  k2.iceberg_offload.watermark_wait:
    login_db: prefect
    tables: [bronze_trades_binance, bronze_trades_kraken]
    cycles: 3.5
    advances: 3
"""

RETURN = r"""
verified:
  description: Every table advanced enough and is fresh.
  returned: always
  type: bool
  sample: true
msg:
  description: What was verified, or what was not with the evidence.
  returned: always
  type: str
  sample: "verified in 14 s: a new watermark on bronze_trades_binance, bronze_trades_kraken, fresher than 30 min"
elapsed_seconds:
  description: Seconds waited.
  returned: always
  type: float
  sample: 14.2
cycles_waited:
  description: The wait in scheduler cycles.
  returned: always
  type: float
  sample: 0.02
tries:
  description: Looks taken.
  returned: always
  type: int
  sample: 3
ended_at_epoch:
  description: When the wait ended (Unix time).
  returned: always
  type: float
  sample: 1770891314.2
verified_at_epoch:
  description: When the verification succeeded (Unix time), V(null) when it did not.
  returned: always
  type: float
  sample: 1770891314.2
timeout_seconds:
  description: The longest the wait could have been.
  returned: always
  type: float
  sample: 1830.0
tables:
  description: Per table, C(baseline), C(latest) entry, C(advances), C(age_seconds), C(regressions), C(verified).
  returned: always
  type: dict
  sample: {bronze_trades_binance: {baseline: {max_timestamp: "2026-02-12 10:00:00", sequence_number: 5},
           advances: 1, age_seconds: 3.1, verified: true}}
"""
