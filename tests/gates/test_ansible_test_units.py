# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""ansible-test units, as community collections run their unit tests: tests/unit in
ansible-test's own virtualenv (tests/unit/requirements.txt, ansible-core from ansible-test),
independent of the project's .venv. make test runs the unit tests this way only.
Alone: scripts/units.sh   (or .venv/bin/python -m pytest tests/unit for a quick run in .venv)
"""
import os
import re

from tests.gates.conftest import REPO, run


def test_ansible_test_units_pass():
    rc, out = run(["bash", os.path.join(REPO, "scripts", "units.sh")], timeout=1800)
    assert rc == 0, out[-8000:]
    passed = sum(int(n) for n in re.findall(r"=+ (\d+) passed", out))
    assert passed >= 400, out[-3000:]  # every group ran (modules, module_utils, the rest)
