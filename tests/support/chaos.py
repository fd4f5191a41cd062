# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A seeded random sequence of lab faults, each recovered by recover.yml (issue 10).

Every step injects one fault or two at once, leaves them for one to two and a half
cycles, and runs ``recover.yml -e k2_execute=true`` as an on-call engineer would. The run
passes when every recovery verified and, at the end, the consistency checker finds
0 missing, 0 duplicated and 0 past the watermark for every table. Used by
tests/lab/test_chaos.py (one seed, in make test) and bench/chaos_bench.py (several
seeds: make chaos; ``--engine spark``: make chaos-spark).
"""
import os
import random
import tempfile
import time

from k2lab import faults, lab
from tests.support.incident import lab_inventory, run_playbook

# Data faults need the database up, so they go in before the infrastructure faults.
DATA = ["table-dropped", "duplicate-burst", "regression"]
INFRA = ["scheduler-stopped", "pg-stopped", "pg-crashed", "pg-connections", "pg-partition", "silent-zero"]
# Two at once: any data fault with any infrastructure fault, or the scheduler stopped with a
# database fault. (silent-zero needs a running scheduler and a reachable database.)
PAIRS = ([(d, i) for d in DATA for i in INFRA if i != "silent-zero"]
         + [("scheduler-stopped", i) for i in ("pg-stopped", "pg-crashed", "pg-connections", "pg-partition")])
SINGLES = DATA + INFRA


def plan(seed, steps):
    rng = random.Random(seed)
    out = []
    for n in range(steps):
        # at least one step of two faults in a run of three or more
        if rng.random() < 0.5 or (n == steps - 1 and steps >= 3 and not any(len(s) == 2 for s in out)):
            out.append(list(rng.choice(PAIRS)))
        else:
            out.append([rng.choice(SINGLES)])
    return out, [round(rng.uniform(1.0, 2.5), 2) for step in range(steps)]


# The cold-tier engine the playbooks use (k2_cold_engine): pyiceberg, or spark on local[2] (issue 16).
ENGINE_VARS = {"pyiceberg": {}, "spark": {"k2_cold_engine": "spark", "k2_spark_master": "local[2]"}}


def run(seed, steps, log=print, engine="pyiceberg"):
    """Returns {seed, engine, steps: [...], final: {table: (missing, duplicated, past)}, ok, seconds}."""
    cycle = lab.settings()["cycle_seconds"]
    tmp = tempfile.mkdtemp(prefix="k2-chaos-")
    inventory = lab_inventory(os.path.join(tmp, "lab.yml"))
    sequence, waits = plan(seed, steps)
    result = {"seed": seed, "engine": engine, "cycle_seconds": cycle, "steps": [], "ok": False}
    extra = dict(ENGINE_VARS[engine], k2_execute=True)
    t0 = time.time()
    for n, (names, wait) in enumerate(zip(sequence, waits)):
        log("chaos seed %s step %d: inject %s, wait %.2f cycles" % (seed, n + 1, " + ".join(names), wait))
        for name in names:
            faults.inject(name)
        time.sleep(wait * cycle)
        reports = os.path.join(tmp, "step-%d" % (n + 1))
        rec = run_playbook("recover.yml", inventory, reports, extra=extra)
        report = rec.report("recovery") or {}
        step = {"faults": names, "wait_cycles": wait, "rc": rec.rc, "outcome": report.get("outcome"),
                "scenarios": (report.get("diagnosis") or {}).get("scenario_numbers"),
                "scenarios_run": report.get("scenarios_run"), "seconds": round(rec.seconds, 1),
                "verified_in": (report.get("verification") or {}).get("elapsed_seconds")}
        result["steps"].append(step)
        log("chaos seed %s step %d: %s" % (seed, n + 1, step))
        if rec.rc != 0 or step["outcome"] != "recovered":
            result["failed_output"] = rec.output[-8000:]
            result["seconds"] = round(time.time() - t0, 1)
            return result
    lab.wait_for_new_watermarks(cycles=1)
    report = lab.consistency()
    result["final"] = {t: [r.get("missing"), r.get("duplicated_rows"), r.get("past_watermark")]
                       for t, r in report["tables"].items()}
    result["ok"] = all(v == [0, 0, 0] for v in result["final"].values())
    result["seconds"] = round(time.time() - t0, 1)
    return result
