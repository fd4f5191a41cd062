# -*- coding: utf-8 -*-
# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Filters of the incident playbooks; the decisions themselves live in module_utils
(diagnosis.py, scheduler.py) and are unit tested there."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible.errors import AnsibleFilterError

from ansible_collections.k2.iceberg_offload.plugins.module_utils.diagnosis import (
    PlanError, classify, corruption, manual_offload, plan, reconcile, silent_offloads)
from ansible_collections.k2.iceberg_offload.plugins.module_utils.scheduler import parse_log


def diagnose(facts):
    if not isinstance(facts, dict):
        raise AnsibleFilterError("diagnose expects the gathered facts as a dictionary, got %s" % type(facts).__name__)
    return classify(facts)


def recovery_plan(diagnosis, requested=None):
    try:
        return plan(diagnosis, requested)
    except PlanError as e:
        raise AnsibleFilterError(str(e))


def offload_output(text, tables=None):
    if isinstance(text, (list, tuple)):
        lines = [str(x) for x in text]
    else:
        lines = str(text or "").splitlines()
    return parse_log(lines, tables=tables or None)


class FilterModule(object):
    def filters(self):
        return {
            "diagnose": diagnose,
            "recovery_plan": recovery_plan,
            "offload_output": offload_output,
            "corruption": corruption,
            "silent_offloads": silent_offloads,
            "manual_offload": manual_offload,
            "reconcile": reconcile,
        }
