# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Runs last in tests/lab: `lab down` leaves nothing behind."""
import os

from k2lab import STATE_DIR, lab


def test_lab_down_leaves_nothing(k2lab):
    with open(os.path.join(STATE_DIR, "prometheus.pid")) as fh:
        prom_pid = int(fh.read())
    lab.down()
    assert lab.leftovers() == {}
    assert not os.path.exists("/proc/%d" % prom_pid) or open("/proc/%d/stat" % prom_pid).read().split()[2] == "Z"
