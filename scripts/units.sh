#!/usr/bin/env bash
# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
# ansible-test units for the collection, as community collections run their unit tests:
# tests/unit in ansible-test's own virtualenv with tests/unit/requirements.txt, not this
# project's .venv. See scripts/ansible-test.sh.
# Usage: scripts/units.sh [ansible-test units options or test files]
# Environment: K2_VENV (default .venv), K2_ANSIBLE_TEST_PYTHON (default 3.11).
set -euo pipefail
exec "$(dirname "$0")/ansible-test.sh" units "$@"
