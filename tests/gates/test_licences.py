# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Licence and file hygiene, as the community collections check them: COPYING holds the
GPL-3.0 text; every Python and shell source (plugins, tests, scripts, lab, bench, ...) says
GPL-3.0-or-later in an SPDX header, agreeing with its GNU GPL line; plugins/ holds only what
the no-unwanted-files check accepts (no .gitkeep, no stray files).
Alone: .venv/bin/python -m pytest tests/gates/test_licences.py
"""
import os
import subprocess

import pytest

from tests.gates.conftest import REPO

SPDX = "SPDX-License-Identifier: GPL-3.0-or-later"


def _files(*patterns):
    out = subprocess.check_output(["git", "ls-files", "-co", "--exclude-standard", "--"] + list(patterns), cwd=REPO)
    return sorted(f for f in out.decode().splitlines() if os.path.isfile(os.path.join(REPO, f)))


def test_copying_is_the_gpl3():
    with open(os.path.join(REPO, "COPYING")) as f:
        text = f.read()
    assert "GNU GENERAL PUBLIC LICENSE" in text and "Version 3, 29 June 2007" in text
    assert "END OF TERMS AND CONDITIONS" in text and len(text) > 30000


def test_galaxy_yml_licence_matches():
    import yaml  # pylint: disable=import-outside-toplevel
    with open(os.path.join(REPO, "galaxy.yml")) as f:
        assert yaml.safe_load(f)["license"] == ["GPL-3.0-or-later"]


def _header(path):
    with open(os.path.join(REPO, path), encoding="utf-8") as f:
        return [next(f, "") for dummy in range(12)]


@pytest.mark.parametrize("kind", ["*.py", "*.sh"])
def test_every_source_file_has_the_spdx_header(kind):
    missing, mismatched = [], []
    for path in _files(kind):
        if os.path.getsize(os.path.join(REPO, path)) == 0:
            continue  # empty __init__.py: nothing to license (ansible-test wants them empty)
        head = _header(path)
        if not any(SPDX in line for line in head):
            missing.append(path)
        gpl = [line for line in head if "GNU General Public License" in line]
        if gpl and not all("v3.0+" in line or "version 3 or later" in line for line in gpl):
            mismatched.append(path)
        if any("Copyright: " in line for line in head):
            mismatched.append(path)  # the community's check wants "Copyright (c)", no colon
    assert not missing, "no SPDX header: %s" % missing
    assert not mismatched, "licence lines disagree with the SPDX header: %s" % mismatched
    assert _files(kind)


def test_plugins_hold_only_wanted_files():
    unwanted = []
    for path in _files("plugins"):
        ext = os.path.splitext(path)[1]
        if os.path.islink(os.path.join(REPO, path)):
            unwanted.append(path + ": symbolic link")
        elif path.startswith(("plugins/filter/", "plugins/test/")) and ext in (".yml", ".yaml"):
            continue  # documentation of Jinja2 filters and tests
        elif ext not in (".py",):
            unwanted.append(path)
    assert not unwanted, unwanted


def test_no_gitkeep_anywhere():
    assert not _files("*.gitkeep", ".gitkeep")
