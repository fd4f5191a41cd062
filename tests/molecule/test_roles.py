# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Every role's molecule scenario (converge, idempotence, verify) must pass.

The scenarios are collected by pytest-ansible: it finds molecule/*/molecule.yml with git from
the root directory (the checkout, where pytest.ini is) and gives each test one as its
``molecule_scenario`` fixture, whose ``test()`` runs ``molecule test -s <scenario>`` with this
interpreter in the checkout.

Needs Docker (fails, does not skip, when it is missing) and the lab's base image builder; the
scenario image is built first, once, by molecule/build_image.py and reused while its inputs are
unchanged. The instances are named molecule-<run>-<scenario>, <run> unique to this run, so that
scenarios of two checkouts never meet and nothing else is ever removed. Each scenario's full
output goes to tests/output/molecule-<scenario>.log.

Run: .venv/bin/python -m pytest tests/molecule -v   (about 4-5 minutes)
"""
import contextlib
import glob
import hashlib
import os
import shutil
import signal
import subprocess
import sys

import pytest
from pytest_ansible import plugin as pytest_ansible_plugin

from k2lab import engine

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUTPUT = os.path.join(REPO, "tests", "output")
VENV_BIN = os.path.dirname(sys.executable)
SCENARIO_TIMEOUT = 900
# What molecule test must have done for a scenario to count (molecule.yml's test_sequence).
STEPS = ("converge", "idempotence", "verify")


def scenarios_on_disk():
    return sorted(os.path.basename(os.path.dirname(p))
                  for p in glob.glob(os.path.join(REPO, "molecule", "*", "molecule.yml")))


@pytest.fixture(scope="module")
def molecule_env():
    """Docker answering, the scenario image built, and the environment molecule runs in."""
    if shutil.which("docker") is None:
        pytest.fail("docker is not installed: the molecule scenarios cannot run (install docker.io "
                    "and start dockerd)", pytrace=False)
    try:
        engine.client().ping()
    except Exception as e:  # pylint: disable=broad-except  # any failure to answer is the same failure
        pytest.fail("the Docker daemon is not answering (%s): start dockerd" % e, pytrace=False)
    if not os.path.isdir(os.path.join(REPO, ".collections", "ansible_collections", "k2")):
        pytest.fail("no .collections/ in the checkout: run scripts/setup.sh first", pytrace=False)
    build = subprocess.run([sys.executable, os.path.join(REPO, "molecule", "build_image.py")],
                           capture_output=True, text=True, check=False)
    if build.returncode != 0:
        pytest.fail("building the molecule image failed:\n" + build.stderr[-3000:], pytrace=False)
    image = build.stdout.strip().splitlines()[-1]
    run = hashlib.sha256(REPO.encode()).hexdigest()[:6] + "-%d" % os.getpid()
    os.makedirs(OUTPUT, exist_ok=True)
    # MoleculeScenario.test() runs molecule with this process's environment.
    with pytest.MonkeyPatch.context() as mp:
        for name, value in (("K2_MOLECULE_IMAGE", image), ("K2_MOLECULE_RUN", run),
                            ("PATH", VENV_BIN + os.pathsep + os.environ.get("PATH", "")),
                            ("ANSIBLE_NOCOLOR", "1"), ("ANSIBLE_FORCE_COLOR", "0"), ("NO_COLOR", "1"),
                            ("PY_COLORS", "0")):
            mp.setenv(name, value)
        yield {"image": image, "run": run}


@contextlib.contextmanager
def output_to(path):
    """This process's stdout and stderr (file descriptors, so children's too) into a file."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = (os.dup(1), os.dup(2))
    try:
        with open(path, "w") as log:
            os.dup2(log.fileno(), 1)
            os.dup2(log.fileno(), 2)
            try:
                yield
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os.dup2(saved[0], 1)
                os.dup2(saved[1], 2)
    finally:
        os.close(saved[0])
        os.close(saved[1])


@contextlib.contextmanager
def deadline(seconds, what):
    """TimeoutError after ``seconds``; subprocess.run kills its child when one interrupts it."""
    def expired(signum, frame):
        raise TimeoutError("%s took longer than %d s" % (what, seconds))
    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def remove_instances(run):
    """Whatever of this run is left (molecule's destroy removes it, even after a failure)."""
    for c in engine.api().containers(all=True, filters={"name": "molecule-%s-" % run}):
        engine.remove(c["Id"])


def test_pytest_ansible_collects_every_scenario():
    """An empty collection would skip the scenarios' test, not fail it."""
    collected = sorted(s.name for s in pytest_ansible_plugin.scenarios)
    assert collected == scenarios_on_disk(), (
        "pytest-ansible collected %s, molecule/ has %s (is the checkout pytest's root directory?)"
        % (collected, scenarios_on_disk()))
    # molecule runs in the scenario's parent_directory, which is relative to where pytest started
    assert all(os.path.abspath(s.parent_directory) == REPO for s in pytest_ansible_plugin.scenarios), \
        "run pytest from the top of the checkout"


def test_molecule_scenario(molecule_env, molecule_scenario):
    name = molecule_scenario.name
    log_path = os.path.join(OUTPUT, "molecule-%s.log" % name)
    try:
        with output_to(log_path), deadline(SCENARIO_TIMEOUT, "molecule test -s " + name):
            proc = molecule_scenario.test()
    finally:
        remove_instances(molecule_env["run"])
    with open(log_path, errors="replace") as fh:
        log = fh.read()
    if proc.returncode != 0:
        pytest.fail("molecule test -s %s failed (rc %d), full log %s:\n%s"
                    % (name, proc.returncode, log_path, log[-6000:]), pytrace=False)
    # molecule's recap: a step left out of the scenario's test_sequence would pass unnoticed
    missing = [step for step in STEPS if "%s > %s: Executed: Successful" % (name, step) not in log]
    assert not missing, "molecule test -s %s did not run %s (log %s)" % (name, ", ".join(missing), log_path)
