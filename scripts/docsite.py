# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Build the collection's HTML docsite with antsibull-docs and Sphinx, offline (make docs).

antsibull-docs sphinx-init writes the Sphinx project (conf.py, build.sh) into
.cache/docsite; build.sh renders every module, plugin and role of this checkout to RST
(antsibull-docs collection --use-current) and builds it with sphinx-build -W, so any
warning fails the build. Output: .cache/docsite/build/html/index.html.

Offline: the generated conf.py looks the Ansible documentation's labels up in its
intersphinx inventory on the web. Here it gets a small local inventory instead, with
the few labels antsibull-docs links to (common_return_values, ...) pointing at their
real pages; a label missing from it fails the build with Sphinx's "undefined label".

Usage: .venv/bin/python scripts/docsite.py [--dest DIR]
(antsibull-docs and sphinx-build are taken from beside that python.)
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import zlib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLLECTION = "k2.iceberg_offload"
ANSIBLE_DOCS = "https://docs.ansible.com/projects/ansible/devel/"
# label -> (page#anchor, title) in the Ansible documentation, for the local inventory.
ANSIBLE_LABELS = {
    "common_return_values": ("reference_appendices/common_return_values.html#common-return-values",
                             "Return Values"),
    "ansible_configuration_settings": ("reference_appendices/config.html#ansible-configuration-settings",
                                       "Ansible Configuration Settings"),
    "action_plugins": ("plugins/action.html#action-plugins", "Action plugins"),
}


def write_inventory(path):
    """A Sphinx (intersphinx) inventory, version 2, of ANSIBLE_LABELS."""
    body = "".join("%s std:label -1 %s %s\n" % (label, uri, title)
                   for label, (uri, title) in sorted(ANSIBLE_LABELS.items()))
    with open(path, "wb") as f:
        f.write(b"# Sphinx inventory version 2\n# Project: Ansible\n# Version: devel\n"
                b"# The remainder of this file is compressed using zlib.\n")
        f.write(zlib.compress(body.encode("utf-8")))


def collections_path(work):
    """A collections path holding only this checkout: antsibull-docs --use-current then reads
    one collection instead of every collection the ansible package installed."""
    path = os.path.join(work, "collections")
    link = os.path.join(path, "ansible_collections", "k2", "iceberg_offload")
    os.makedirs(os.path.dirname(link), exist_ok=True)
    if not os.path.islink(link):
        os.symlink(ROOT, link)
    return path


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dest", default=os.path.join(ROOT, ".cache", "docsite"))
    args = parser.parse_args()
    bindir = os.path.dirname(sys.executable)  # the venv whose python runs this script
    dest = os.path.abspath(args.dest)
    shutil.rmtree(dest, ignore_errors=True)
    os.makedirs(dest, mode=0o700)  # antsibull-docs wants it writable by its owner only
    work = tempfile.mkdtemp(prefix="k2-docsite-")
    try:
        env = dict(os.environ, PATH=bindir + os.pathsep + os.environ.get("PATH", ""),
                   ANSIBLE_COLLECTIONS_PATH=collections_path(work),
                   ANSIBLE_COLLECTIONS_SCAN_SYS_PATH="false", ANSIBLE_NOCOLOR="1")
        subprocess.run([os.path.join(bindir, "antsibull-docs"), "sphinx-init", "--use-current",
                        "--squash-hierarchy", "--fail-on-error", "--dest-dir", dest,
                        "--project", COLLECTION, "--copyright", "K2 Platform Engineering",
                        "--title", "k2.iceberg_offload", COLLECTION],
                       env=env, check=True, stdout=subprocess.DEVNULL)
        inventory = os.path.join(dest, "ansible_devel.inv")
        write_inventory(inventory)
        conf = os.path.join(dest, "conf.py")
        with open(conf, "a") as f:
            f.write("\n# Offline (scripts/docsite.py): the Ansible documentation's labels come from a\n"
                    "# local inventory, and nothing else is looked up on the web.\n"
                    "intersphinx_mapping = {'ansible_devel': (%r, %r)}\n" % (ANSIBLE_DOCS, inventory))
        # build.sh: antsibull-docs collection --fail-on-error (sphinx-init --fail-on-error put it
        # there: a plugin whose docs do not parse fails the build), then sphinx-build -W.
        proc = subprocess.run(["bash", os.path.join(dest, "build.sh")], cwd=dest, env=env, check=False)
        if proc.returncode != 0:
            return proc.returncode
        print("docsite: %s" % os.path.join(dest, "build", "html", "index.html"))
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
