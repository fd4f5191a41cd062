# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The image build's lock (no lab needed): `make test` builds the images in the background while
its first suites run, and a fixture that needs them waits for that build instead of building twice."""
import os
import subprocess
import sys
import time

from k2lab import images

LAB = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "lab")

HOLDER = """
import sys, time
from k2lab import images
with images.build_lock():
    print("held", flush=True)
    time.sleep(float(sys.argv[1]))
"""


def test_a_second_build_waits_for_the_first_and_says_whose(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(images, "CACHE_DIR", str(tmp_path))
    env = dict(os.environ, K2LAB_CACHE_DIR=str(tmp_path), PYTHONPATH=LAB)
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, "3"], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        start = time.time()
        with images.build_lock(poll=0.2, say_every=1.0):
            waited = time.time() - start  # the holder keeps it 3 s after saying "held"
            with images.build_lock(poll=0.2):  # re-entrant: build_all holds it around build_base
                pass
    finally:
        holder.kill()
        holder.wait()
    assert waited >= 2.0, waited
    err = capsys.readouterr().err
    assert "waiting for the image build of PID %d" % holder.pid in err, err
    assert "the other image build finished after" in err, err
    # released: another process takes it at once
    quick = subprocess.run([sys.executable, "-c", HOLDER, "0"], env=env, capture_output=True, text=True, timeout=30,
                           check=False)
    assert quick.stdout.strip() == "held", quick
