# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The execution environment of execution-environment.yml, without a registry: its build context
(ansible-builder create), and its content installed into a clean virtualenv (ansible-core and
ansible-runner as pinned, the Python requirement file it names, its collections) in which a
playbook can run. The venv is kept in .cache/ under a hash of what went into it."""
import glob
import hashlib
import os
import shutil
import subprocess
import sys

import yaml

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EE_FILE = os.path.join(REPO, "execution-environment.yml")
VENV_BIN = os.path.dirname(sys.executable)
DIST = os.path.join(REPO, ".cache", "dist")


def definition():
    with open(EE_FILE) as fh:
        return yaml.safe_load(fh)


def requirement_lines(path):
    with open(path) as fh:
        return [line.split("#")[0].strip() for line in fh if line.split("#")[0].strip()]


def build_collection():
    """The collection tarball, as `make build` makes it (the EE's additional build file)."""
    os.makedirs(DIST, exist_ok=True)
    for old in glob.glob(os.path.join(DIST, "k2-iceberg_offload-*.tar.gz")):
        os.remove(old)
    subprocess.run([os.path.join(VENV_BIN, "ansible-galaxy"), "collection", "build", "--force",
                    "--output-path", DIST, REPO], check=True, stdout=subprocess.PIPE, cwd=REPO)
    (tarball,) = glob.glob(os.path.join(DIST, "k2-iceberg_offload-*.tar.gz"))
    return tarball


def create_context(context_dir):
    """ansible-builder create: the build context (Dockerfile, _build/)."""
    build_collection()
    proc = subprocess.run([os.path.join(VENV_BIN, "ansible-builder"), "create", "-f", EE_FILE, "-c", context_dir],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=REPO, check=False)
    assert proc.returncode == 0, proc.stdout.decode()
    return context_dir


def pip_refs():
    """What the EE's pip installs: ansible-core and ansible-runner as pinned, then the python file."""
    deps = definition()["dependencies"]
    refs = [deps["ansible_core"]["package_pip"], deps["ansible_runner"]["package_pip"]]
    return refs, os.path.join(REPO, deps["python"])


def clean_venv():
    """A virtualenv with exactly the EE's Python content (made once per content, kept in .cache)."""
    refs, requirements = pip_refs()
    key = hashlib.sha256(("%s\n%s\n%s" % (sys.version, refs, open(requirements).read())).encode()).hexdigest()[:12]
    venv = os.path.join(REPO, ".cache", "ee-venv-" + key)
    python = os.path.join(venv, "bin", "python")
    if not os.path.exists(os.path.join(venv, ".complete")):
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([shutil.which("python3") or sys.executable, "-m", "venv", venv], check=True)
        proc = subprocess.run([python, "-m", "pip", "install", "-q"] + refs + ["-r", requirements],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False)
        assert proc.returncode == 0, proc.stdout.decode()[-4000:]
        open(os.path.join(venv, ".complete"), "w").close()
    return venv


def install_collections(venv, dest):
    """The EE's collections into dest: community.docker (the EE's galaxy requirement; there is no
    Galaxy server here, so the copy the dev venv's ansible package ships stands in for the download)
    and this collection from its tarball, installed by the clean venv's ansible-galaxy."""
    import ansible
    shutil.rmtree(dest, ignore_errors=True)
    wanted = [c["name"] for c in definition()["dependencies"]["galaxy"]["collections"]]
    site = os.path.join(os.path.dirname(os.path.dirname(ansible.__file__)), "ansible_collections")
    for name in wanted:
        ns, coll = name.split(".")
        shutil.copytree(os.path.join(site, ns, coll), os.path.join(dest, "ansible_collections", ns, coll))
    tarball = build_collection()
    # --force: without it ansible-galaxy may answer "Nothing to do" when it finds the collection on
    # another configured path (the checkout's .collections), and dest would stay without it.
    proc = subprocess.run([os.path.join(venv, "bin", "ansible-galaxy"), "collection", "install", "--offline",
                           "--no-deps", "--force", "-p", dest, tarball],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False)
    installed = os.path.join(dest, "ansible_collections", "k2", "iceberg_offload", "MANIFEST.json")
    assert proc.returncode == 0 and os.path.exists(installed), proc.stdout.decode(errors="replace")
    return dest
