# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The HTML docsite builds offline (scripts/docsite.py: antsibull-docs renders every module,
plugin and role, sphinx-build -W turns any warning into a failure), with a page for each.
Alone: make docs   (then open .cache/docsite/build/html/index.html)
"""
import glob
import os
import sys

from tests.gates.conftest import REPO, run


def _plugins():
    names = []
    for path in glob.glob(os.path.join(REPO, "plugins", "modules", "*.py")):
        names.append("%s_module" % os.path.basename(path)[:-3])
    for path in glob.glob(os.path.join(REPO, "plugins", "filter", "*.yml")):
        names.append("%s_filter" % os.path.basename(path)[:-4])
    for role in os.listdir(os.path.join(REPO, "roles")):
        if os.path.isdir(os.path.join(REPO, "roles", role)):
            names.append("%s_role" % role)
    return sorted(names)


def test_docsite_builds_with_a_page_per_plugin_and_role(tmp_path):
    dest = tmp_path / "docsite"
    rc, out = run([sys.executable, os.path.join(REPO, "scripts", "docsite.py"), "--dest", str(dest)], timeout=900)
    assert rc == 0, out[-8000:]
    html = dest / "build" / "html"
    assert (html / "index.html").exists(), out[-3000:]
    missing = [n for n in _plugins() if not (html / (n + ".html")).exists()]
    assert not missing, missing
    index = (html / "index.html").read_text()
    assert all(n + ".html" in index for n in _plugins()), index[:3000]
