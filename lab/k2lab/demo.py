# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""`make demo`: the main job, end to end, on the lab, the way an on-call engineer runs it.

Bring the lab up, show it healthy, break it the way a runbook scenario describes, then
run the collection's playbooks: diagnose.yml (what is wrong, with the evidence),
recover.yml (the plan: a dry run that changes nothing), recover.yml -e k2_execute=true
(the recovery, verified), post_incident.yml (3 cycles of progress, the cold tier
reconciled with the source, the incident report). Then the lab's own consistency check,
and the lab goes down.

    python -m k2lab.demo [--fault NAME] [--keep]    (default fault: table-dropped)
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from . import REPO_DIR, faults, lab


def banner(text):
    sys.stdout.write("\n=== %s ===\n" % text)
    sys.stdout.flush()


def show(obj):
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")
    sys.stdout.flush()


def playbook(name, extra=None):
    path = os.path.join(REPO_DIR, "playbooks", name)
    with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as inv:
        inv.write(lab.inventory())
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=os.path.join(REPO_DIR, ".collections"),
               ANSIBLE_COLLECTIONS_SCAN_SYS_PATH="True", ANSIBLE_LOCALHOST_WARNING="False",
               ANSIBLE_DEPRECATION_WARNINGS="False")
    cmd = [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", inv.name, path]
    if extra:
        cmd += ["-e", json.dumps(extra)]
    sys.stdout.write("$ ansible-playbook -i <lab inventory> playbooks/%s%s\n"
                     % (name, " -e '%s'" % json.dumps(extra) if extra else ""))
    sys.stdout.flush()
    rc = subprocess.run(cmd, env=env).returncode
    os.unlink(inv.name)
    return rc


def main(argv=None):
    ap = argparse.ArgumentParser(description="the K2 lab demo")
    ap.add_argument("--fault", default="table-dropped", choices=sorted(faults.FAULTS))
    ap.add_argument("--keep", action="store_true", help="leave the lab up at the end")
    ap.add_argument("--cycle-seconds", type=int, default=10)
    args = ap.parse_args(argv)
    t0 = time.time()
    ok = False
    try:
        banner("1. bring the K2 lab up (PostgreSQL, ClickHouse, Iceberg + scheduler, Prometheus)")
        lab.up(cycle_seconds=args.cycle_seconds)
        lab.wait_for_new_watermarks(cycles=1)
        banner("2. healthy: latest watermarks, Prometheus (time()-watermark_timestamp_seconds)")
        show({"latest_watermarks": lab.latest_watermarks(), "age_seconds": lab.watermark_ages()})

        banner("3. inject fault %s — %s" % (args.fault, faults.FAULTS[args.fault]))
        faults.inject(args.fault)
        wait = 2 * lab.settings()["cycle_seconds"] + 3
        for i in range(3):
            time.sleep(wait / 3.0)
            sys.stdout.write("  after %2.0f s: watermark age %s\n" % (
                (i + 1) * wait / 3.0, {t: round(a) for t, a in lab.watermark_ages().items()}))
        sys.stdout.write("  scheduler: %s; last log lines:\n%s\n" % (
            lab.scheduler_active(), "\n".join("    " + l for l in lab.scheduler_log(6).splitlines())))

        reports = tempfile.mkdtemp(prefix="k2-demo-reports-")
        banner("4. diagnose: ansible-playbook k2.iceberg_offload.diagnose")
        rc = playbook("diagnose.yml", {"k2_report_dir": reports})
        if rc != 0:
            raise RuntimeError("diagnose.yml failed (rc %d)" % rc)

        banner("5. recover: the plan first (changes nothing), then with k2_execute=true")
        rc = playbook("recover.yml", {"k2_report_dir": reports})
        if rc != 0:
            raise RuntimeError("recover.yml (dry run) failed (rc %d)" % rc)
        rc = playbook("recover.yml", {"k2_report_dir": reports, "k2_execute": True})
        if rc != 0 and args.fault != "silent-zero-logic":
            raise RuntimeError("recover.yml failed (rc %d)" % rc)
        if args.fault == "silent-zero-logic":
            sys.stdout.write("  (escalated, as it must: the job itself is broken; the lab stands in for engineering)\n")
            faults.heal(args.fault)

        banner("6. post-incident: ansible-playbook k2.iceberg_offload.post_incident")
        rc = playbook("post_incident.yml", {"k2_report_dir": reports, "k2_execute": True})
        if rc != 0:
            raise RuntimeError("post_incident.yml failed (rc %d)" % rc)
        md = os.path.join(reports, "latest-incident.md")
        if os.path.exists(md):
            sys.stdout.write("\n--- %s ---\n%s\n" % (md, open(md).read()))

        banner("7. the lab's own check: new watermarks, fresh age, source and cold tier consistent")
        lab.wait_for_new_watermarks(cycles=2)
        report = lab.consistency()
        show({"age_seconds": lab.watermark_ages(),
              "consistency": {t: {k: r[k] for k in ("missing", "duplicated_rows", "past_watermark", "cold_rows")}
                              for t, r in report["tables"].items()}})
        ok = report["ok"]
        sys.stdout.write("  consistency: %s\n" % ("OK" if ok else "DAMAGED"))
    finally:
        if not args.keep:
            banner("8. take the lab down")
            lab.down()
        sys.stdout.write("\ndemo %s in %.0f s\n" % ("finished" if ok else "FAILED", time.time() - t0))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
