# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Chaos: several seeded random fault sequences, each step recovered by recover.yml (issue 10).

    bench/run.sh chaos [--seeds 1,2,3,4,5] [--steps 5] [--no-doc]   (make chaos)

Needs the lab (brought up with 10 s cycles when it is not running, and taken down after).
Per seed: the faults of each step (two at once among them), the recovery's outcome and time,
and the consistency checker at the end (missing / duplicated / past the watermark). Results go
to bench/results/chaos-<time>.json and docs/benchmarks.md (between the chaos markers).
"""
import argparse
import datetime
import json
import os
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [REPO, os.path.join(REPO, "lab"), os.path.join(REPO, ".collections")]

from k2lab import lab  # noqa: E402
from tests.support import chaos  # noqa: E402

sys.path.insert(0, os.path.join(REPO, "bench"))
from _doc import machine_line as machine, write_section  # noqa: E402  (bench/_doc.py)


def section_name(engine):
    """The docs section: ``chaos`` for the default cold-tier engine, ``chaos-spark`` for Spark's."""
    return "chaos" if engine == "pyiceberg" else "chaos-" + engine


# What each make target runs (Makefile): a run with other seeds or steps is named by its own command.
MAKE_RUNS = {"pyiceberg": ("1,2,3,4,5", 5), "spark": ("1,2,3", 5)}


def command(results):
    engine = results.get("engine", "pyiceberg")
    seeds = ",".join(str(r["seed"]) for r in results["runs"])
    line = "`bench/run.sh chaos --seeds %s --steps %d%s`" % (seeds, results["steps"],
                                                            "" if engine == "pyiceberg" else " --engine " + engine)
    target = "make " + section_name(engine)
    make_seeds, make_steps = MAKE_RUNS[engine]
    if (seeds, results["steps"]) == (make_seeds, make_steps):
        return "`%s` (%s)" % (target, line)
    return "%s (a shorter run than `%s`, which runs seeds %s, %d steps each)" % (line, target, make_seeds, make_steps)


def render(results):
    engine = results.get("engine", "pyiceberg")
    name = section_name(engine)
    lines = [
        "<!-- %s:begin (written by bench/chaos_bench.py; do not edit by hand) -->" % name,
        "## Chaos: random fault sequences recovered by the playbooks (issue 10)%s"
        % ("" if engine == "pyiceberg" else ", cold tier on %s (issue 16)" % engine),
        "",
        "Command: %s. Run: %s, %.0f s in all. Machine: %s. "
        "Lab cycle: %d s. Each step injects one fault or two at once, waits 1-2.5 cycles, and runs "
        "`recover.yml -e k2_execute=true`; at the end the lab's consistency checker compares the source with the "
        "cold tier up to the watermark." % (command(results), results["date"], results["seconds"],
                                             results["machine"], results["cycle_seconds"]),
        "",
        "| seed | steps (faults → scenarios run, outcome, seconds) | end: missing / duplicated / past watermark | ok |",
        "|---:|---|---|---|",
    ]
    for r in results["runs"]:
        steps = "; ".join("%s → %s, %s, %.0f s" % (" + ".join(s["faults"]), s.get("scenarios_run"), s["outcome"],
                                                    s["seconds"]) for s in r["steps"])
        final = r.get("final") or {}
        end = ", ".join("%s %s" % (t.replace("bronze_trades_", ""), "/".join(str(x) for x in v))
                        for t, v in sorted(final.items())) or "-"
        lines.append("| %d | %s | %s | %s |" % (r["seed"], steps, end, "yes" if r["ok"] else "**no**"))
    lines += ["<!-- %s:end -->" % name]
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="1,2,3,4,5")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--engine", choices=sorted(chaos.ENGINE_VARS), default="pyiceberg",
                    help="the playbooks' cold-tier engine (k2_cold_engine); spark: Spark local[2] in k2-spark-iceberg")
    ap.add_argument("--no-doc", action="store_true")
    ap.add_argument("--out", metavar="DIR", default=os.path.join(REPO, "bench", "results"),
                    help="where the raw JSON goes (default bench/results)")
    args = ap.parse_args()
    t0 = time.time()
    with lab.running(cycle_seconds=10):
        lab.wait_for_new_watermarks(cycles=1)
        runs = [chaos.run(int(s), args.steps, log=lambda m: sys.stderr.write(m + "\n"), engine=args.engine)
                for s in args.seeds.split(",") if s]
        results = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                   "engine": args.engine, "machine": machine(), "cycle_seconds": lab.settings()["cycle_seconds"],
                   "steps": args.steps,
                   "runs": runs, "seconds": time.time() - t0}
    os.makedirs(args.out, exist_ok=True)
    out = os.path.join(args.out, "%s-%s.json" % (section_name(args.engine), time.strftime("%Y%m%dT%H%M%S")))
    with open(out, "w") as fh:
        json.dump(results, fh, indent=2)
    text = render(results)
    sys.stdout.write(text)
    if not args.no_doc:
        write_section(section_name(args.engine), text)
    return 0 if all(r["ok"] for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
