# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""antsibull-docs lint of every plugin's and role's documentation (schema, markup, rstcheck,
and every reference to a plugin, option or return value, of this collection or another), and
antsibull-changelog lint of the changelog and its fragments.

The linters see a collections path with this checkout and community.docker (the one other
collection the docs name): with the ~100 collections of the ansible package, loading them all
takes minutes. --disallow-unknown-collection-refs makes a reference to any collection not
there an error, so --validate-collection-refs all still checks every reference.
Alone: see README, "Gates"
"""
import os

from tests.gates.conftest import BIN, run


def test_antsibull_docs_lint_collection_docs(only_this_collection):
    checkout = os.path.join(only_this_collection, "ansible_collections", "k2", "iceberg_offload")
    rc, out = run([os.path.join(BIN, "antsibull-docs"), "lint-collection-docs", "--plugin-docs",
                   "--validate-collection-refs", "all", "--disallow-unknown-collection-refs", "."],
                  timeout=900, cwd=checkout, ANSIBLE_COLLECTIONS_PATH=only_this_collection,
                  ANSIBLE_COLLECTIONS_SCAN_SYS_PATH="false")
    assert rc == 0 and not out.strip(), out[-8000:]


def test_antsibull_changelog_lint():
    rc, out = run([os.path.join(BIN, "antsibull-changelog"), "lint"], timeout=300)
    assert rc == 0 and not out.strip(), out[-4000:]
