# -*- coding: utf-8 -*-
# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Action of k2.iceberg_offload.incident_report: write a run's report on the controller,
in-process (no module round trip, so a diagnosis stays fast): JSON, Markdown and, with ``html``,
one self-contained HTML page with the incident's charts (module_utils/incident_page.py shapes the
facts, incident_charts.py draws them with pygal, the role's incident_report.html.j2 lays them out
in a Jinja2 environment of its own, autoescape on)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import json
import os
import time

from ansible.errors import AnsibleActionFail
from ansible.module_utils.common.text.converters import to_text
from ansible.plugins.action import ActionBase

from ansible_collections.k2.iceberg_offload.plugins.module_utils.incident_charts import draw
from ansible_collections.k2.iceberg_offload.plugins.module_utils.incident_page import build_page

KINDS = ("diagnosis", "recovery", "incident")
HTML_FACTS = ("prometheus", "watermarks", "scheduler", "recovery")
HTML_SETTINGS = ("stale_after", "cycle_seconds", "tables", "cold_table", "alert_name", "window_start")
# The page's template ships with the collection, in the role that writes the reports.
DEFAULT_TEMPLATE = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                                "roles", "watermark_recovery", "templates", "incident_report.html.j2")


def _default(value):
    if isinstance(value, (datetime.datetime, datetime.date)):
        return value.isoformat()
    return to_text(value)


def _write(path, text):
    tmp = "%s.%d.tmp" % (path, os.getpid())
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.rename(tmp, path)


def render_html(data, kind, html, template=None):
    """The HTML page of a report: (text, page, charts). ``html`` holds the facts the page draws
    (HTML_FACTS) and its settings (HTML_SETTINGS)."""
    from jinja2 import Environment, FileSystemLoader, StrictUndefined
    from markupsafe import Markup

    unknown = sorted(set(html) - set(HTML_FACTS) - set(HTML_SETTINGS))
    if unknown:
        raise AnsibleActionFail("html: unknown key(s) %s; known: %s" % (
            ", ".join(unknown), ", ".join(HTML_FACTS + HTML_SETTINGS)))
    facts = dict((k, html.get(k)) for k in HTML_FACTS if isinstance(html.get(k), dict))
    settings = dict((k, html.get(k)) for k in HTML_SETTINGS if html.get(k) is not None)
    page = build_page(data, kind, facts=facts, settings=settings)
    charts = draw(page)
    path = template or DEFAULT_TEMPLATE
    env = Environment(loader=FileSystemLoader(os.path.dirname(path)), autoescape=True, undefined=StrictUndefined,
                      trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    text = env.get_template(os.path.basename(path)).render(page=page, charts={
        "age": Markup(charts["age"]) if charts["age"] else None,
        "rows": Markup(charts["rows"]) if charts["rows"] else None,
        "error": charts["error"], "age_legend": charts["age_legend"], "rows_legend": charts["rows_legend"]})
    return text, page, charts


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
        html = args.get("html")
        if html is not None and not isinstance(html, dict):
            raise AnsibleActionFail("html must be a dictionary (the facts the page draws), got %s" % type(html).__name__)
        template = args.get("html_template")
        if template:
            template = os.path.expanduser(to_text(template))
            if not os.path.isfile(template):
                raise AnsibleActionFail("html_template %s is not a file" % template)
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        path = os.path.join(directory, "%s-%s.json" % (kind, stamp))
        md_path = os.path.join(directory, "%s-%s.md" % (kind, stamp)) if markdown else None
        html_path = os.path.join(directory, "%s-%s.html" % (kind, stamp)) if html is not None else None
        result.update(changed=False, path=path, markdown_path=md_path, html_path=html_path,
                      latest=os.path.join(directory, "latest-%s.json" % kind))
        if self._play_context.check_mode:
            result["msg"] = "check mode: no report written"
            result["written"] = False
            return result
        page_text = None
        if html is not None:
            started = time.time()
            page_text, page, charts = render_html(data, kind, html, template)
            result["html"] = {
                "seconds": round(time.time() - started, 3), "marks": len(page["marks"]),
                "age_source": page["age"]["source"], "rows_source": page["rows"]["source"],
                "charts": [name for name in ("age", "rows") if charts[name]], "error": charts["error"]}
            if charts["error"]:
                result.setdefault("warnings", []).append("HTML report: %s" % charts["error"])
        try:
            text = json.dumps(data, indent=2, sort_keys=True, default=_default) + "\n"
            os.makedirs(directory, mode=0o700, exist_ok=True)
            _write(path, text)
            _write(result["latest"], text)
            if markdown:
                _write(md_path, to_text(markdown).rstrip("\n") + "\n")
                _write(os.path.join(directory, "latest-%s.md" % kind), to_text(markdown).rstrip("\n") + "\n")
            if page_text is not None:
                _write(html_path, page_text)
                _write(os.path.join(directory, "latest-%s.html" % kind), page_text)
        except (OSError, IOError, TypeError, ValueError) as e:
            raise AnsibleActionFail("cannot write the %s report into %s: %s" % (kind, directory, e))
        result["written"] = True
        return result
