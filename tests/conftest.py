# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Shared pytest set-up: the checkout is importable as ansible_collections.k2.iceberg_offload."""
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLLECTIONS = os.path.join(REPO, ".collections")
for p in (COLLECTIONS, REPO, os.path.join(REPO, "lab")):
    if p not in sys.path:
        sys.path.insert(0, p)
