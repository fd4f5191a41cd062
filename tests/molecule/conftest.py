# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""`make test` runs the prevention scenario (every prevention role through the prevention
playbook, as a user installs them); each role's own scenario is marked long (`make test-long`)."""
import pytest

SHORT = ("prevention",)


def pytest_collection_modifyitems(config, items):
    for item in items:
        if not item.nodeid.startswith("tests/molecule/"):
            continue
        scenario = getattr(getattr(item, "callspec", None), "params", {}).get("molecule_scenario")
        if scenario is not None and getattr(scenario, "name", None) not in SHORT:
            item.add_marker(pytest.mark.long)
