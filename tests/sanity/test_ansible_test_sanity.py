# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""ansible-test sanity (validate-modules, pep8, pylint, import, yamllint, …) over the collection.

scripts/sanity.sh lays the checkout out as ansible_collections/k2/iceberg_offload in a
temporary tree and runs ansible-test there in its own virtualenvs.
"""
import os
import subprocess

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_ansible_test_sanity_passes():
    proc = subprocess.run(["bash", os.path.join(REPO, "scripts", "sanity.sh")], cwd=REPO,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=1800, check=False)
    out = proc.stdout.decode(errors="replace")
    assert proc.returncode == 0, out[-6000:]
    assert "Running sanity test" in out, out[-3000:]
