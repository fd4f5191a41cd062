# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""ansible-lint with the production profile over the whole repository (.ansible-lint says
what is left out: only what is not Ansible content; .ansible-lint-ignore the findings kept as
warnings), and what the run leaves behind (.ansible/) is ignored by git.
Alone: make lint   (ANSIBLE_COLLECTIONS_PATH=.collections .venv/bin/ansible-lint)
"""
import os

from tests.gates.conftest import BIN, REPO, run


def test_ansible_lint_production_profile_passes():
    # VIRTUAL_ENV unset, as when .venv/bin/ansible-lint is run without activating the venv:
    # ansible-compat then keeps its cache in the project's .ansible/, which git and the
    # build must ignore.
    env = {"VIRTUAL_ENV": None, "ANSIBLE_COLLECTIONS_PATH": os.path.join(REPO, ".collections")}
    rc, out = run([os.path.join(BIN, "ansible-lint"), "--nocolor"], timeout=900, **env)
    assert rc == 0, out[-8000:]
    assert "production" in out, out[-2000:]
    rc, status = run(["git", "status", "--porcelain", "--untracked-files=all"], timeout=60)
    assert rc == 0 and not [line for line in status.splitlines() if ".ansible/" in line], status
