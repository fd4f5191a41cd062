# -*- coding: utf-8 -*-
# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Action of k2.iceberg_offload.watermark_wait: poll watermark_info until every table's
watermark has advanced (and is fresh), printing progress on every try."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import time

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase
from ansible.utils.display import Display

from ansible_collections.k2.iceberg_offload.plugins.module_utils.wait import WaitState

display = Display()

WAIT_OPTIONS = ("baseline", "cycles", "cycle_seconds", "advances", "timeout", "poll", "fresh_after", "label")


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = True

    def run(self, tmp=None, task_vars=None):
        result = super(ActionModule, self).run(tmp, task_vars)
        args = dict(self._task.args)
        opts = dict((k, args.pop(k)) for k in WAIT_OPTIONS if k in args)
        tables = args.get("tables") or []
        if isinstance(tables, str):
            tables = [tables]
        if not tables:
            raise AnsibleActionFail("watermark_wait needs tables (the source tables whose watermark must advance)")
        try:
            state = WaitState(tables=tables, baseline=opts.get("baseline"), cycles=opts.get("cycles", 2),
                              cycle_seconds=opts.get("cycle_seconds", 900), advances=opts.get("advances", 1),
                              timeout=opts.get("timeout"), poll=opts.get("poll"), fresh_after=opts.get("fresh_after"))
        except ValueError as e:
            raise AnsibleActionFail(str(e))
        label = opts.get("label") or "watermark"
        module_args = dict(args, tables=tables, health=False, count_entries=False)
        module_args.setdefault("cycle_seconds", int(state.cycle_seconds))
        display.display("[%s] waiting up to %s for %s (%s)" % (
            label, state.describe_seconds(state.timeout), state.goal(), state.describe_poll()))
        started = time.monotonic()
        while True:
            info = self._execute_module(module_name="k2.iceberg_offload.watermark_info", module_args=module_args,
                                        task_vars=task_vars)
            elapsed = time.monotonic() - started
            line = state.observe(info, elapsed)
            display.display("[%s] %s" % (label, line))
            if state.done() or elapsed >= state.timeout:
                break
            time.sleep(min(state.poll, max(0.5, state.timeout - elapsed)))
        report = state.report(time.monotonic() - started)
        report["ended_at_epoch"] = round(time.time(), 3)
        report["verified_at_epoch"] = report["ended_at_epoch"] if report["verified"] else None
        result.update(report)
        result["changed"] = False
        if not report["verified"]:
            result["failed"] = True
        return result
