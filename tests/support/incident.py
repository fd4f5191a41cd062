# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Run the incident playbooks the way an on-call engineer does: ansible-playbook in a
subprocess, with an inventory file, the default output, and read the JSON reports the
playbooks write. Used by the lab tests and by bench/mttr_bench.py."""
import glob
import json
import os
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ANSIBLE_PLAYBOOK = os.path.join(os.path.dirname(sys.executable), "ansible-playbook")


class Run(object):
    def __init__(self, playbook, rc, output, seconds, report_dir):
        self.playbook = playbook
        self.rc = rc
        self.output = output
        self.seconds = seconds
        self.report_dir = report_dir

    def report(self, kind):
        """The latest <kind> report (diagnosis, recovery, incident) this run's directory holds, or None."""
        path = os.path.join(self.report_dir, "latest-%s.json" % kind)
        if not os.path.exists(path):
            return None
        with open(path) as fh:
            return json.load(fh)

    def reports(self, kind):
        out = []
        for path in sorted(glob.glob(os.path.join(self.report_dir, "%s-*.json" % kind))):
            with open(path) as fh:
                out.append(json.load(fh))
        return out

    def __repr__(self):
        return "%s rc=%d in %.1f s\n%s" % (self.playbook, self.rc, self.seconds, self.output[-6000:])


def env(extra=None):
    e = dict(os.environ)
    e.update({"ANSIBLE_COLLECTIONS_PATH": os.path.join(REPO, ".collections"),
              "ANSIBLE_COLLECTIONS_SCAN_SYS_PATH": "True", "ANSIBLE_HOST_KEY_CHECKING": "False",
              "ANSIBLE_RETRY_FILES_ENABLED": "False", "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0"})
    for k in ("ANSIBLE_STDOUT_CALLBACK", "ANSIBLE_LOAD_CALLBACK_PLUGINS"):
        e.pop(k, None)
    e.update(extra or {})
    return e


def run_playbook(name, inventory, report_dir, extra=None, check=False, timeout=900, args=(), env_extra=None):
    """ansible-playbook -i INVENTORY playbooks/NAME -e k2_report_dir=... [-e EXTRA] [--check]."""
    os.makedirs(report_dir, exist_ok=True)
    # The extra vars go in a 0600 file (-e @file), the way AWX and ansible-runner pass them: on the
    # command line, ansible-playbook -vvvv would print them back, secrets included.
    fd, extra_file = tempfile.mkstemp(prefix="k2-extra-vars-", suffix=".json")
    with os.fdopen(fd, "w") as fh:
        json.dump(dict({"k2_report_dir": report_dir}, **(extra or {})), fh)
    cmd = [ANSIBLE_PLAYBOOK, "-i", inventory, os.path.join(REPO, "playbooks", name), "-e", "@" + extra_file]
    if check:
        cmd.append("--check")
    cmd += list(args)
    start = time.time()
    try:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env(env_extra),
                              timeout=timeout, check=False)
    finally:
        os.remove(extra_file)
    return Run(name, proc.returncode, proc.stdout.decode(errors="replace"), time.time() - start, report_dir)


def lab_inventory(path):
    """Write the running lab's inventory (python -m k2lab inventory) to path."""
    from k2lab import lab
    with open(path, "w") as fh:
        fh.write(lab.inventory())
    os.chmod(path, 0o600)
    return path
