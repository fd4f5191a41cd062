# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Run every role's molecule scenario (converge, idempotence, verify) and
assert it passes.

Needs Docker (fails, does not skip, when it is missing) and the lab's base
image builder; the scenario image is built once by molecule/build_image.py
and reused while its inputs are unchanged. Each scenario's full output goes
to tests/output/molecule-<scenario>.log.

Run: .venv/bin/python -m pytest tests/molecule -v   (about 4-5 minutes)
"""
import os
import shutil
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCENARIOS = ("watermark_cleanup", "watermark_health_check", "watermark_backup", "watermark_alerts",
             "prevention")
OUTPUT = os.path.join(REPO, "tests", "output")
VENV_BIN = os.path.dirname(sys.executable)


@pytest.fixture(scope="module")
def molecule_env():
    docker = shutil.which("docker")
    if docker is None:
        pytest.fail("docker is not installed: the molecule scenarios cannot run (install docker.io "
                    "and start dockerd)", pytrace=False)
    info = subprocess.run([docker, "info", "--format", "{{.ServerVersion}}"],
                          capture_output=True, text=True, check=False)
    if info.returncode != 0:
        pytest.fail("the Docker daemon is not answering (%s): start dockerd"
                    % info.stderr.strip(), pytrace=False)
    if not os.path.isdir(os.path.join(REPO, ".collections", "ansible_collections", "k2")):
        pytest.fail("no .collections/ in the checkout: run scripts/setup.sh first", pytrace=False)
    build = subprocess.run([sys.executable, os.path.join(REPO, "molecule", "build_image.py")],
                           capture_output=True, text=True, check=False)
    if build.returncode != 0:
        pytest.fail("building the molecule image failed:\n" + build.stderr[-3000:], pytrace=False)
    image = build.stdout.strip().splitlines()[-1]
    env = dict(os.environ)
    env.update(K2_MOLECULE_IMAGE=image, PATH=VENV_BIN + os.pathsep + env.get("PATH", ""),
               ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0", NO_COLOR="1", PY_COLORS="0")
    os.makedirs(OUTPUT, exist_ok=True)
    return env


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_molecule_scenario(molecule_env, scenario):
    log_path = os.path.join(OUTPUT, "molecule-%s.log" % scenario)
    with open(log_path, "w") as log:
        proc = subprocess.run([os.path.join(VENV_BIN, "molecule"), "test", "-s", scenario],
                              cwd=REPO, env=molecule_env, stdout=log, stderr=subprocess.STDOUT,
                              timeout=900, check=False)
    # The container is named k2-molecule-<scenario>; molecule's destroy removes it,
    # even after a failure. Make sure nothing is left behind regardless.
    name = "k2-molecule-" + scenario.replace("_", "-")
    subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)
    if proc.returncode != 0:
        with open(log_path) as fh:
            tail = fh.read()[-6000:]
        pytest.fail("molecule test -s %s failed (rc %d), full log %s:\n%s"
                    % (scenario, proc.returncode, log_path, tail), pytrace=False)
