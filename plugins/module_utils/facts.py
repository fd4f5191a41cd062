# -*- coding: utf-8 -*-
# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Reading the module results the incident playbooks register: what diagnosis.py, scenario_checks.py
and recovery.py share. Private to this collection; pure Python.

A playbook registers a failed read with ``failed_when: false`` (so its output stays calm), which
clears ``failed``; the key each module always returns when it worked tells a result from a failure.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type


def ok(result, marker=None):
    """The result when the fact was gathered, else None."""
    if not isinstance(result, dict) or not result:
        return None
    if result.get("failed") or result.get("unreachable") or result.get("skipped"):
        return None
    if marker and (marker not in result or result[marker] == {}):
        return None  # a failure registered with failed_when: false keeps the key, empty
    return result


def why_missing(name, result):
    """{"kind": "missing-fact", "fact": name, "text": why} for a fact that could not be gathered."""
    if not isinstance(result, dict) or not result:
        why = "not gathered"
    elif result.get("skipped"):
        why = "skipped"
    else:
        why = " ".join(str(result.get("msg") or result.get("error") or "failed").split())[:300]
    return {"kind": "missing-fact", "fact": name, "text": "%s: %s" % (name, why)}


def pair_key(entry):
    """A watermark entry ({max_timestamp, sequence_number}) as a comparable Watermark."""
    from ansible_collections.k2.iceberg_offload.plugins.module_utils.watermark import Watermark
    return Watermark.from_dict(dict(entry, sequence_number=entry.get("sequence_number") or 0))


def fmt_pair(entry):
    return "(%s, %s)" % (entry.get("max_timestamp"), entry.get("sequence_number"))


def age_text(seconds):
    if seconds is None:
        return "unknown"
    seconds = float(seconds)
    if seconds < 120:
        return "%.0f s" % seconds
    if seconds < 7200:
        return "%.0f min" % (seconds / 60.0)
    return "%.1f h" % (seconds / 3600.0)


def latest_pairs(watermark_info):
    """{table: Watermark} of each table's latest entry in a watermark_info result (empty when failed)."""
    info = ok(watermark_info, "table_exists")
    out = {}
    for t in (info or {}).get("tables") or []:
        if t.get("latest"):
            out[t.get("table_name")] = pair_key(t["latest"])
    return out
