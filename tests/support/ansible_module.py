# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Run a module of this collection the way a playbook would, and return its result.

Integration tests call modules through pytest-ansible's host manager and module dispatcher
(the machinery behind its ``ansible_adhoc`` / ``ansible_module`` fixtures), not by importing
them, so argument parsing, no_log, check mode and diff go through the real Ansible executor.
``run_module`` is a plain function because its callers are fixtures' helpers and threads,
which have no ``request`` to build the fixtures from.

Each call runs in a process forked for it: the dispatcher drives a TaskQueueManager in the
process that calls it, and that leaves global state behind (the parsed CLI arguments, SIGINT
and SIGTERM handlers, stdio marked non-inheritable, the collection loader) and must run in a
main thread. In a child of its own, nothing of one call reaches the next or the test, a
call from a thread works, and the fork costs milliseconds where starting ``ansible`` cost a
second.

Whole playbooks stay real ``ansible-playbook`` runs (``run_playbook``, and the secrets test's
-vvvv runs through ``ANSIBLE_PLAYBOOK`` / ``ansible_env``): what they check is the CLI's output.
"""
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import traceback
import warnings

from ansible.parsing.ajson import AnsibleJSONEncoder
from ansible.plugins.loader import init_plugin_loader
from ansible.utils.collection_loader import AnsibleCollectionConfig
from pytest_ansible.errors import AnsibleConnectionFailure
from pytest_ansible.host_manager.utils import get_host_manager
from pytest_ansible.module_dispatcher.v213 import ModuleDispatcherV213

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COLLECTIONS = os.path.join(REPO, ".collections")
ANSIBLE = os.path.join(os.path.dirname(sys.executable), "ansible")
ANSIBLE_PLAYBOOK = os.path.join(os.path.dirname(sys.executable), "ansible-playbook")
# How long a child that was asked to stop (SIGTERM, which the TaskQueueManager passes on to its
# workers) gets before it is killed.
STOP_GRACE = 10


def ansible_env(extra=None):
    """The environment of an ``ansible`` / ``ansible-playbook`` process started by a test."""
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


class _Dispatcher(ModuleDispatcherV213):
    """pytest-ansible's dispatcher, with task keywords on its one task (it has no check mode or
    diff of its own: its --check option never reaches the task), and the task in the form
    ansible-core 2.19 takes without a deprecation warning (``action:`` as a mapping is deprecated,
    and the warning prints the module's arguments)."""

    def _build_play_ds(self, complex_args):
        play = super()._build_play_ds(complex_args)
        action = play["tasks"][0]["action"]
        play["tasks"] = [dict(self.options["task_keywords"], **{action["module"]: action["args"]})]
        return play


def _dispatch(fqcn, args, target, connection, python, check, diff, env):
    """In the forked child: one ad-hoc task through pytest-ansible; the result as JSON text."""
    os.environ.update(env or {})
    with warnings.catch_warnings():
        # pytest-ansible marks its host management deprecated (project end of life December 2026),
        # and the dispatcher configures the collection loader again.
        warnings.simplefilter("ignore")
        if not AnsibleCollectionConfig.collection_finder:
            # as the ansible CLI does before it looks a module up (the dispatcher does it after)
            init_plugin_loader([COLLECTIONS])
        hosts = get_host_manager(inventory=target + ",", connection=connection, host_pattern=target)
        hosts.options["inventory_manager"].get_host(target).set_variable("ansible_python_interpreter", python)
        options = dict(hosts.options, host_pattern=target, task_keywords={"check_mode": check, "diff": diff})
        dispatcher = _Dispatcher(**options)
        try:
            contacted = getattr(dispatcher, fqcn)(**(args or {})).contacted
            result = dict(contacted[target])
        except AnsibleConnectionFailure as e:
            result = dict(e.dark[target], failed=True, unreachable=True)
    result["action"] = fqcn
    return json.dumps(result, cls=AnsibleJSONEncoder, sort_keys=True)


def _child(conn, *call):
    try:
        conn.send(("ok", _dispatch(*call)))
    except BaseException:  # pylint: disable=broad-except  # reported to the parent, which raises
        conn.send(("error", traceback.format_exc()))
    finally:
        conn.close()


def _stop(proc, grace):
    """Wait ``grace`` seconds for the child to end, then SIGTERM (the TaskQueueManager passes it on
    to its workers) and, after STOP_GRACE more, SIGKILL."""
    proc.join(grace)
    if proc.is_alive():
        os.kill(proc.pid, signal.SIGTERM)
        proc.join(STOP_GRACE)
    if proc.is_alive():
        proc.kill()
    proc.join()


def run_module(name, args=None, check=False, diff=False, env=None, timeout=300, host=None):
    """Run ``k2.iceberg_offload.<name>`` (or a full FQCN); return its result dict.

    By default on localhost with this interpreter. ``host`` = (container, python)
    runs it inside a container through the community.docker.docker connection,
    as a playbook does for the lab's k2-spark-iceberg.
    ``env`` is added to the controller's environment for this call only (environment
    fallbacks such as PGPASSWORD reach a module on localhost from there); ANSIBLE_*
    settings cannot be among them, Ansible's configuration is read once per test session.
    The dict has the module's keys plus ``failed`` / ``changed`` as Ansible reports them,
    ``action``, ``_rc`` (ansible's exit code: 0, 2 failed, 4 unreachable) and ``_stdout``
    (the result as the JSON callback prints it, to search for secrets).
    Raises subprocess.TimeoutExpired after ``timeout`` seconds.
    """
    fqcn = name if "." in name else "k2.iceberg_offload." + name
    settings = sorted(k for k in (env or {}) if k.startswith("ANSIBLE_"))
    if settings:
        raise ValueError("run_module cannot change Ansible settings per call (%s): use run_playbook"
                         % ", ".join(settings))
    if host:
        target, python = host
        connection = "community.docker.docker"
    else:
        target, python, connection = "localhost", sys.executable, "local"
    reader, writer = multiprocessing.Pipe(duplex=False)
    proc = multiprocessing.get_context("fork").Process(
        target=_child, args=(writer, fqcn, args, target, connection, python, check, diff, env),
        name="run_module " + fqcn, daemon=False)
    proc.start()
    writer.close()
    grace = 0
    try:
        if not reader.poll(timeout):
            raise subprocess.TimeoutExpired("run_module %s on %s" % (fqcn, target), timeout)
        grace = STOP_GRACE
        status, payload = reader.recv()
    except EOFError:
        status, payload = "error", "the child running %s died (exit code %s)" % (fqcn, proc.exitcode)
    finally:
        reader.close()
        _stop(proc, grace)
    if status != "ok":
        raise AssertionError("pytest-ansible could not run %s on %s:\n%s" % (fqcn, target, payload))
    result = json.loads(payload)
    result.setdefault("failed", False)
    result["_rc"] = 4 if result.get("unreachable") else 2 if result["failed"] else 0
    result["_stdout"] = payload
    return result


def run_playbook(playbook, extra_vars=None, check=False, env=None, inventory="localhost,",
                 timeout=1800):
    """Run a playbook with ansible-playbook and the JSON callback; return (rc, parsed JSON, raw output)."""
    cmd = [ANSIBLE_PLAYBOOK, "-i", inventory, playbook,
           "-e", "ansible_python_interpreter=" + sys.executable]
    if extra_vars:
        cmd += ["-e", json.dumps(extra_vars)]
    if check:
        cmd.append("--check")
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          env=ansible_env(env), timeout=timeout, check=False)
    out = proc.stdout.decode()
    try:
        data = json.loads(out[out.index("{"):])
    except ValueError:
        data = None
    return proc.returncode, data, out + proc.stderr.decode()
