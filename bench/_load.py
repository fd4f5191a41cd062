# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The machine's load during a bench: the 1-minute load average sampled every few seconds.

The benches run on a shared 2-CPU machine (other test runs, the K2 lab); the load at the
start and at the end of a run says little about what it was in between, so each bench
records these samples beside its figures and prints their mean and maximum in its section.
"""
import os
import threading


class LoadSampler(threading.Thread):
    """``with LoadSampler() as load: ...``; then ``load.summary()``."""

    def __init__(self, interval=5.0):
        threading.Thread.__init__(self, daemon=True, name="load sampler")
        self.interval = interval
        self.samples = [os.getloadavg()[0]]
        self._stop_event = threading.Event()

    def run(self):
        while not self._stop_event.wait(self.interval):
            self.samples.append(os.getloadavg()[0])

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self._stop_event.set()
        self.join(self.interval + 1)
        self.samples.append(os.getloadavg()[0])
        return False

    def summary(self):
        s = self.samples
        return {"interval_seconds": self.interval, "samples": len(s), "mean": round(sum(s) / len(s), 2),
                "max": round(max(s), 2), "min": round(min(s), 2)}


def sampled_text(summary, nproc):
    """'mean 2.3, max 6.1 (1-minute load average every 5 s; 2 CPUs)'."""
    return "mean %.1f, max %.1f (1-minute load average sampled every %.0f s; %d CPUs)" % (
        summary["mean"], summary["max"], summary["interval_seconds"], nproc)
