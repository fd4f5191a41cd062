# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The K2 lab: a local replica of the stack the watermark runbook talks about.

``python -m k2lab --help`` (from ``lab/``) or ``make lab-up`` / ``make lab-down``.
"""

import os
import subprocess
import sys
import time

LAB_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO_DIR = os.path.dirname(LAB_DIR)
STATE_DIR = os.environ.get("K2LAB_STATE_DIR", os.path.join(LAB_DIR, ".state"))


def log(msg):
    sys.stderr.write("[k2lab %s] %s\n" % (time.strftime("%H:%M:%S"), msg))
    sys.stderr.flush()


def run(cmd, check=True, quiet=False, capture=False, stdin=None, input=None, timeout=None):
    """Run a command; on failure raise with its output so the cause is visible."""
    kwargs = dict(stdin=stdin, timeout=timeout)
    if input is not None:
        kwargs = dict(input=input.encode() if isinstance(input, str) else input, timeout=timeout)
    if capture or quiet:
        kwargs.update(stdout=subprocess.PIPE, stderr=subprocess.STDOUT if not capture else subprocess.PIPE)
    proc = subprocess.run(cmd, **kwargs)
    if check and proc.returncode != 0:
        out = b""
        if proc.stdout:
            out += proc.stdout[-4000:]
        if capture and proc.stderr:
            out += proc.stderr[-4000:]
        raise RuntimeError("command failed (%d): %s\n%s" % (
            proc.returncode, " ".join(cmd), out.decode(errors="replace")))
    if capture:
        return proc.stdout.decode(errors="replace")
    return proc.returncode
