# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Run a module of this collection the way a playbook would, and return its result.

Integration tests call modules through ``ansible`` (ad-hoc, local connection,
the venv's interpreter), not by importing them, so argument parsing, no_log,
check mode and diff go through the real Ansible machinery.
"""
import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COLLECTIONS = os.path.join(REPO, ".collections")
ANSIBLE = os.path.join(os.path.dirname(sys.executable), "ansible")
ANSIBLE_PLAYBOOK = os.path.join(os.path.dirname(sys.executable), "ansible-playbook")


def ansible_env(extra=None):
    env = dict(os.environ)
    env.update({
        "ANSIBLE_COLLECTIONS_PATH": COLLECTIONS,
        "ANSIBLE_COLLECTIONS_SCAN_SYS_PATH": "True",
        "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1",
        "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json",
        "ANSIBLE_HOST_KEY_CHECKING": "False",
        "ANSIBLE_RETRY_FILES_ENABLED": "False",
        "ANSIBLE_LOCALHOST_WARNING": "False",
        "ANSIBLE_INVENTORY_UNPARSED_WARNING": "False",
        "ANSIBLE_DEPRECATION_WARNINGS": "False",
    })
    if extra:
        env.update(extra)
    return env


def _run_json(cmd, env, timeout):
    """Run an ansible command with the JSON callback; (process, stdout text, parsed JSON or None)."""
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          env=ansible_env(env), timeout=timeout, check=False)
    out = proc.stdout.decode()
    try:
        return proc, out, json.loads(out[out.index("{"):])
    except ValueError:
        return proc, out, None


def run_module(name, args=None, check=False, diff=False, env=None, timeout=300, host=None):
    """Run ``k2.iceberg_offload.<name>`` (or a full FQCN); return its result dict.

    By default on localhost with this interpreter. ``host`` = (container, python)
    runs it inside a container through the community.docker.docker connection,
    as a playbook does for the lab's k2-spark-iceberg.
    The dict has the module's keys plus ``failed`` / ``changed`` as Ansible reports them.
    """
    fqcn = name if "." in name else "k2.iceberg_offload." + name
    if host:
        target, python = host
        cmd = [ANSIBLE, target, "-i", target + ",", "-c", "community.docker.docker",
               "-e", "ansible_python_interpreter=" + python]
    else:
        target = "localhost"
        cmd = [ANSIBLE, "localhost", "-i", "localhost,", "-c", "local",
               "-e", "ansible_python_interpreter=" + sys.executable]
    cmd += ["-m", fqcn, "-a", json.dumps(args or {})]
    if check:
        cmd.append("--check")
    if diff:
        cmd.append("--diff")
    proc, out, data = _run_json(cmd, env, timeout)
    if data is None:
        raise AssertionError("ansible printed no JSON (rc=%d):\n%s\n%s"
                             % (proc.returncode, out, proc.stderr.decode()))
    result = data["plays"][0]["tasks"][0]["hosts"][target]
    result.setdefault("failed", False)
    result["_rc"] = proc.returncode
    result["_stdout"] = out
    return result


def run_playbook(playbook, extra_vars=None, check=False, env=None, inventory="localhost,",
                 timeout=1800):
    """Run a playbook with the JSON callback; return (rc, parsed JSON, raw stdout)."""
    cmd = [ANSIBLE_PLAYBOOK, "-i", inventory, playbook,
           "-e", "ansible_python_interpreter=" + sys.executable]
    if extra_vars:
        cmd += ["-e", json.dumps(extra_vars)]
    if check:
        cmd.append("--check")
    proc, out, data = _run_json(cmd, env, timeout)
    return proc.returncode, data, out + proc.stderr.decode()
