# -*- coding: utf-8 -*-
# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Action of k2.iceberg_offload.incident_report: write a run's report on the controller,
in-process (no module round trip, so a diagnosis stays fast)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import json
import os

from ansible.errors import AnsibleActionFail
from ansible.module_utils.common.text.converters import to_text
from ansible.plugins.action import ActionBase

KINDS = ("diagnosis", "recovery", "incident")


def _default(value):
    if isinstance(value, (datetime.datetime, datetime.date)):
        return value.isoformat()
    return to_text(value)


def _write(path, text):
    tmp = "%s.%d.tmp" % (path, os.getpid())
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.rename(tmp, path)


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False

    def run(self, tmp=None, task_vars=None):
        result = super(ActionModule, self).run(tmp, task_vars)
        args = self._task.args
        kind = args.get("kind")
        if kind not in KINDS:
            raise AnsibleActionFail("kind must be one of %s, got %r" % (", ".join(KINDS), kind))
        directory = args.get("dir")
        if not directory:
            raise AnsibleActionFail("dir is required (the report directory, k2_report_dir)")
        directory = os.path.expanduser(to_text(directory))
        data = args.get("data") or {}
        markdown = args.get("markdown")
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        path = os.path.join(directory, "%s-%s.json" % (kind, stamp))
        md_path = os.path.join(directory, "%s-%s.md" % (kind, stamp)) if markdown else None
        result.update(changed=False, path=path, markdown_path=md_path,
                      latest=os.path.join(directory, "latest-%s.json" % kind))
        if self._play_context.check_mode:
            result["msg"] = "check mode: no report written"
            result["written"] = False
            return result
        try:
            text = json.dumps(data, indent=2, sort_keys=True, default=_default) + "\n"
            os.makedirs(directory, mode=0o700, exist_ok=True)
            _write(path, text)
            _write(result["latest"], text)
            if markdown:
                _write(md_path, to_text(markdown).rstrip("\n") + "\n")
                _write(os.path.join(directory, "latest-%s.md" % kind), to_text(markdown).rstrip("\n") + "\n")
        except (OSError, IOError, TypeError, ValueError) as e:
            raise AnsibleActionFail("cannot write the %s report into %s: %s" % (kind, directory, e))
        result["written"] = True
        return result
