# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The benches' one way to run a module of this collection through Ansible.

``run_module(name, args)`` runs ``ansible localhost -m k2.iceberg_offload.<name> -a <JSON>``
in a subprocess, as an operator would, with the checkout's ``.collections`` (made by
``make setup``) as the collections path and the JSON stdout callback (``ansible.posix.json``,
in the ``ansible`` package the venv installs), and returns the module's result. The time a
bench measures around it is the end-to-end figure: process start, imports, the module, JSON.

It depends on Ansible alone, not on the test harness (tests/support/ansible_module.run_module
drives pytest-ansible's dispatcher and needs its pytest set-up). The module's arguments are on
the command line: the benches only talk to throwaway servers whose passwords are in this
repository anyway; do not point a bench at a server whose password matters.
"""
import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLLECTIONS = os.path.join(REPO, ".collections")
ANSIBLE = os.path.join(os.path.dirname(sys.executable), "ansible")
COLLECTION = "k2.iceberg_offload"


def ansible_env():
    """This process's environment with the Ansible settings a bench's ``ansible`` run needs."""
    env = dict(os.environ)
    env.update({
        "ANSIBLE_COLLECTIONS_PATH": COLLECTIONS,
        "ANSIBLE_COLLECTIONS_SCAN_SYS_PATH": "True",  # ansible.posix from the venv's ansible package
        "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1",
        "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json",
        "ANSIBLE_HOST_KEY_CHECKING": "False",
        "ANSIBLE_RETRY_FILES_ENABLED": "False",
        "ANSIBLE_LOCALHOST_WARNING": "False",
        "ANSIBLE_INVENTORY_UNPARSED_WARNING": "False",
        "ANSIBLE_DEPRECATION_WARNINGS": "False",
        "ANSIBLE_NOCOLOR": "1",
    })
    return env


def run_module(name, args=None, timeout=1800, host="localhost", connection="local", interpreter=None):
    """Run ``k2.iceberg_offload.<name>`` (or a full FQCN) on ``host`` (localhost with this interpreter).

    ``host``/``connection``/``interpreter`` run it elsewhere, e.g. in a lab container with
    ``connection="community.docker.docker"``, where a playbook would run it.

    Returns the module's result as the JSON callback reports it, with ``failed`` always
    present and ``_rc``, ansible's exit code (0 ok, 2 failed, 4 unreachable). Raises
    RuntimeError when ansible prints no result (a missing collection, a broken install),
    subprocess.TimeoutExpired after ``timeout`` seconds.
    """
    fqcn = name if "." in name else "%s.%s" % (COLLECTION, name)
    if fqcn.startswith(COLLECTION + ".") and not os.path.isdir(
            os.path.join(COLLECTIONS, "ansible_collections", *COLLECTION.split("."))):
        raise RuntimeError("%s is not on the collections path %s: run `make setup` (scripts/setup.sh) first"
                           % (COLLECTION, COLLECTIONS))
    cmd = [ANSIBLE, host, "-i", host + ",", "-c", connection,
           "-e", "ansible_python_interpreter=" + (interpreter or sys.executable),
           "-m", fqcn]
    if args:  # "-a {}" would reach the module as a free-form "{}"
        cmd += ["-a", json.dumps(args)]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ansible_env(),
                          timeout=timeout, check=False)
    out = proc.stdout.decode(errors="replace")
    try:
        data = json.loads(out[out.index("{"):])
        result = data["plays"][0]["tasks"][0]["hosts"][host]
    except (ValueError, KeyError, IndexError):
        raise RuntimeError("ansible -m %s printed no result (exit code %d):\n%s\n%s"
                           % (fqcn, proc.returncode, out[-4000:], proc.stderr.decode(errors="replace")[-4000:]))
    result.setdefault("failed", False)
    result["_rc"] = proc.returncode
    return result
