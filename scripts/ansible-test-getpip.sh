#!/usr/bin/env bash
# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
# Give ansible-test a get-pip script it does not have to download.
#
# ansible-test bootstraps pip into each virtualenv it makes with
# https://ci-files.testing.ansible.com/ansible-test/get-pip-<version>.py, which this
# machine cannot reach, and uses ~/.ansible/test/cache/get_pip_<version>.py when that
# file exists. We put there a stand-in that installs pip from the PyPI wheel, which
# `pip download` fetches through the machine's ordinary pip configuration.
# Usage: scripts/ansible-test-getpip.sh VENV
set -euo pipefail
VENV=${1:?usage: $0 VENV}
PY="$VENV/bin/python"
CACHE="$HOME/.ansible/test/cache"

# The pip version ansible-test pins for its virtualenvs.
PIP_VERSION=$("$PY" - <<'PY'
from ansible_test._internal.python_requirements import get_venv_packages
class P:  # a stand-in PythonConfig: only .version is read
    version = "3.11"
print(get_venv_packages(P())["pip"])
PY
)
mkdir -p "$CACHE"
WHEEL="$CACHE/pip-$PIP_VERSION-py3-none-any.whl"
if [ ! -s "$WHEEL" ]; then
  "$VENV/bin/pip" download -q --no-deps --only-binary=:all: -d "$CACHE" "pip==$PIP_VERSION"
fi
[ -s "$WHEEL" ] || { echo "ansible-test-getpip: no $WHEEL after pip download" >&2; exit 1; }

SCRIPT="$CACHE/get_pip_${PIP_VERSION//./_}.py"
cat > "$SCRIPT" <<PY
"""Stand-in for get-pip.py $PIP_VERSION (written by scripts/ansible-test-getpip.sh).

Runs pip from the wheel next to this file to install the requested packages
(pip==$PIP_VERSION) into the interpreter running it; options get-pip.py accepts but
pip does not are dropped.
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "pip-$PIP_VERSION-py3-none-any.whl"))
from pip._internal.cli.main import main  # noqa: E402

args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
sys.exit(main(["install", "--find-links", HERE] + args))
PY
echo "ansible-test get-pip stand-in: $SCRIPT (pip $PIP_VERSION from $WHEEL)" >&2
