# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The K2 lab for tests: brought up once per session, taken down at the end.

K2LAB_KEEP=1 leaves a lab that was already running (or that the session
started) in place, for iterating on tests.
"""
import os

import pytest

from k2lab import lab

CYCLE = int(os.environ.get("K2LAB_TEST_CYCLE_SECONDS", "10"))


@pytest.fixture(scope="session")
def k2lab():
    with lab.running(cycle_seconds=CYCLE, keep=os.environ.get("K2LAB_KEEP") == "1") as s:
        yield s
