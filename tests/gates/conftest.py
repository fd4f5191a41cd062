# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The gates community collections pass, run from this checkout with the project's tools
(requirements-dev.txt): the built tarball through galaxy-importer, ansible-lint, ansible-test
units, antsibull-docs and antsibull-changelog lint, the docsite, licences."""
import glob
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.dirname(sys.executable)


def tool_env(**extra):
    """The environment of a gate: the venv's programs first on PATH, no colour; extra
    variables set, or removed when None."""
    env = dict(os.environ, PATH=BIN + os.pathsep + os.environ.get("PATH", ""), NO_COLOR="1",
               ANSIBLE_NOCOLOR="1", PY_COLORS="0")
    for key, value in extra.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def run(cmd, timeout, cwd=REPO, **env):
    """Run a gate's command; returns (returncode, combined output)."""
    proc = subprocess.run(cmd, cwd=cwd, env=tool_env(**env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          timeout=timeout, check=False)
    return proc.returncode, proc.stdout.decode(errors="replace")


@pytest.fixture(scope="session")
def only_this_collection(tmp_path_factory):
    """A collections path with this checkout and the collections its docs refer to
    (community.docker), not the ~100 the ansible package installs: the linters then load
    a few collections instead of all of them."""
    root = tmp_path_factory.mktemp("collections")
    link = root / "ansible_collections" / "k2" / "iceberg_offload"
    link.parent.mkdir(parents=True)
    link.symlink_to(REPO)
    from ansible_collections.community import docker  # pylint: disable=import-outside-toplevel
    (root / "ansible_collections" / "community").mkdir()
    (root / "ansible_collections" / "community" / "docker").symlink_to(list(docker.__path__)[0])
    return str(root)


@pytest.fixture(scope="session")
def tarball(tmp_path_factory):
    """The collection as `ansible-galaxy collection build` makes it (make build)."""
    out = tmp_path_factory.mktemp("dist")
    rc, text = run([os.path.join(BIN, "ansible-galaxy"), "collection", "build", "--output-path", str(out), REPO],
                   timeout=300)
    assert rc == 0, text
    found = glob.glob(str(out / "k2-iceberg_offload-*.tar.gz"))
    assert len(found) == 1, text
    return found[0]
