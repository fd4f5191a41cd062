# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Build (once) the image the molecule scenarios run in and print its ref.

FROM the lab's debootstrap'ed base image (lab/k2lab/images.py builds it when
absent); tagged with a hash of the base ref and of molecule/image/, so it is
rebuilt only when one of them changes. No registry is involved.
"""
import hashlib
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
IMAGE_DIR = os.path.join(HERE, "image")
sys.path.insert(0, os.path.join(REPO, "lab"))

from k2lab.images import build_base, build_lock, image_exists  # noqa: E402


def image_ref(base):
    h = hashlib.sha256(base.encode() + b"\0")
    for name in sorted(os.listdir(IMAGE_DIR)):
        h.update(name.encode() + b"\0")
        with open(os.path.join(IMAGE_DIR, name), "rb") as fh:
            h.update(fh.read() + b"\0")
    return "k2-molecule/roles:" + h.hexdigest()[:12]


def build():
    with build_lock():  # make test's background build may be building it (scripts/test.sh)
        base = build_base()
        ref = image_ref(base)
        if not image_exists(ref):
            subprocess.run(["docker", "build", "--network", "host", "--build-arg", "BASE=" + base,
                            "-t", ref, IMAGE_DIR], check=True, stdout=sys.stderr)
        return ref


if __name__ == "__main__":
    print(build())
