# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The HTML page as the incident_report action writes it: escaped, self-contained, owner-only."""
import os
import re
import stat

import pytest

from ansible.errors import AnsibleActionFail

from ansible_collections.k2.iceberg_offload.plugins.action.incident_report import _write, render_html
from ansible_collections.k2.iceberg_offload.tests.unit.plugins.module_utils.test_incident_page import (
    SETTINGS, facts, recovery_report)


def test_the_page_is_escaped_self_contained_and_private(tmp_path):
    text, page, charts = render_html(recovery_report(escalations=[{"kind": "x", "text": "<script>alert(1)</script>"}]),
                                     "recovery", dict(facts(), **SETTINGS))
    assert "<script>alert(1)</script>" not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "scheduler started &lt;b&gt;now&lt;/b&gt;" in text
    assert re.findall(r'(?:src|href)="(?:https?:)?//', text) == [] and "<link" not in text
    assert 'id="mark-4"' in text and 'data-audit-ids="7"' in text and "Root cause" in text
    path = str(tmp_path / "r.html")
    _write(path, text)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    with pytest.raises(AnsibleActionFail, match="unknown key"):
        render_html({}, "recovery", {"prometheus_url": "http://x"})
