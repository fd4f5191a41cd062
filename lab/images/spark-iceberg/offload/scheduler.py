# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The lab's iceberg-offload-scheduler: one offload per table every K2_CYCLE_SECONDS.

Logs CYCLE lines, each job's output (including watermark errors and
"Offload completed: N rows") to K2_LOG, /tmp/iceberg-offload-scheduler.log by default.
"""

import os
import signal
import subprocess
import sys
import time

import k2common as k2

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    cfg = k2.load_env()
    logf = open(cfg["log"], "a", buffering=1)

    def log(msg):
        logf.write("%s %s\n" % (time.strftime("%Y-%m-%d %H:%M:%S"), msg))

    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    log("scheduler started: tables=%s cycle=%ss" % (",".join(cfg["tables"]), cfg["cycle_seconds"]))
    cycle = 0
    while not stop:
        cycle += 1
        start = time.time()
        log("CYCLE %d START" % cycle)
        failed = 0
        for t in cfg["tables"]:
            timeout = max(60, cfg["cycle_seconds"] * 4)
            try:
                proc = subprocess.run(
                    [sys.executable, os.path.join(HERE, "offload_generic.py"),
                     "--source-table", t, "--target-table", "cold." + t,
                     "--timestamp-col", "exchange_timestamp", "--sequence-col", "sequence_number",
                     "--layer", "bronze"],
                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout,
                    env=dict(os.environ, K2_SCHEDULER_PID=str(os.getpid())))
            except subprocess.TimeoutExpired as exc:
                for line in (exc.output or b"").decode(errors="replace").splitlines():
                    logf.write(line + "\n")
                failed += 1
                log("ERROR offload of %s did not finish within %d s (killed; waiting on a lock or a server?)"
                    % (t, timeout))
                log("CYCLE %d table=%s FAILED rc=-9" % (cycle, t))
                continue
            for line in proc.stdout.decode(errors="replace").splitlines():
                logf.write(line + "\n")
            if proc.returncode != 0:
                failed += 1
                log("CYCLE %d table=%s FAILED rc=%d" % (cycle, t, proc.returncode))
        log("CYCLE %d END tables=%d failed=%d duration=%.1fs"
            % (cycle, len(cfg["tables"]), failed, time.time() - start))
        while not stop and time.time() < start + cfg["cycle_seconds"]:
            time.sleep(0.2)
    log("scheduler stopped")


if __name__ == "__main__":
    main()
