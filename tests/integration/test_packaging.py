# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The checkout builds into a collection tarball that installs, and ansible-doc reads it."""
import glob
import os
import subprocess
import sys
import tarfile

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.dirname(sys.executable)
MODULES = sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(REPO, "plugins/modules/*.py")))


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("collection")
    build = subprocess.run([os.path.join(BIN, "ansible-galaxy"), "collection", "build", "--output-path",
                            str(tmp), REPO], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False)
    assert build.returncode == 0, build.stdout.decode()
    tarballs = glob.glob(str(tmp / "k2-iceberg_offload-*.tar.gz"))
    assert len(tarballs) == 1
    dest = tmp / "collections"
    # --force: a copy installed elsewhere (e.g. ~/.ansible/collections) must not make this a no-op.
    inst = subprocess.run([os.path.join(BIN, "ansible-galaxy"), "collection", "install", "--force", "-p",
                           str(dest), tarballs[0]], env=_env(dest), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False)
    assert inst.returncode == 0, inst.stdout.decode()
    return tarballs[0], dest


def _env(dest):
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(dest), ANSIBLE_COLLECTIONS_SCAN_SYS_PATH="False")
    return env


def test_tarball_leaves_out_lab_bench_and_test_output(installed):
    tarball = installed[0]
    names = tarfile.open(tarball).getnames()
    assert "galaxy.yml" not in names and "MANIFEST.json" in names
    for prefix in ("lab/", "bench/", "tests/output/", ".ci/", ".venv/", ".collections/", "scripts/"):
        assert not [n for n in names if n.startswith(prefix)], prefix
    assert "meta/runtime.yml" in names and "meta/ee-requirements.txt" in names
    # AWX configuration and the EDA rulebook ship (ansible-rulebook finds rulebooks in installed
    # collections); the AWX project's and ansible-builder's own files do not
    assert "extensions/eda/rulebooks/iceberg_offload_watermark_stale.yml" in names
    assert "extensions/awx/controller_config.yml" in names
    assert "execution-environment.yml" not in names and not [n for n in names if n.startswith("collections/")]


def test_ansible_doc_lists_the_installed_collection(installed):
    dest = installed[1]
    assert (dest / "ansible_collections/k2/iceberg_offload/MANIFEST.json").exists()
    out = subprocess.run([os.path.join(BIN, "ansible-doc"), "-l", "k2.iceberg_offload"], env=_env(dest),
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False)
    assert out.returncode == 0, out.stdout.decode()
    for m in MODULES:
        assert "k2.iceberg_offload." + m in out.stdout.decode()


@pytest.mark.parametrize("module", MODULES or ["(none yet)"])
def test_ansible_doc_renders_each_module(installed, module):
    if module == "(none yet)":
        pytest.skip("no modules yet")
    dest = installed[1]
    out = subprocess.run([os.path.join(BIN, "ansible-doc"), "k2.iceberg_offload." + module], env=_env(dest),
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False)
    text = out.stdout.decode()
    assert out.returncode == 0 and "EXAMPLES" in text and "RETURN VALUES" in text, text[-2000:]
