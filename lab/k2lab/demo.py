"""`make demo`: the main job, end to end, on the lab.

Bring the lab up, show it healthy, break it the way a runbook scenario
describes, show what the collection sees (playbooks/diagnose.yml), recover
(playbooks/recover.yml, which dispatches on the diagnosis), prove the
recovery (new watermarks, Prometheus age, consistency of source and cold
tier), and take the lab down. Where a playbook is not there yet, the demo says
so and runs the collection's modules for that step (watermark_info to see,
watermark_reset from the cold tier to recover the default fault, a lost
watermark table); faults no module recovers yet are healed by the lab.

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
    if not os.path.exists(path):
        return None
    with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as inv:
        inv.write(lab.inventory())
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=os.path.join(REPO_DIR, ".collections"),
               ANSIBLE_COLLECTIONS_SCAN_SYS_PATH="True", ANSIBLE_LOCALHOST_WARNING="False",
               ANSIBLE_DEPRECATION_WARNINGS="False")
    cmd = [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", inv.name, path,
           "-e", "ansible_python_interpreter=" + sys.executable]
    if extra:
        cmd += ["-e", json.dumps(extra)]
    sys.stdout.write("$ ansible-playbook -i <lab inventory> playbooks/%s%s\n"
                     % (name, " -e '%s'" % json.dumps(extra) if extra else ""))
    sys.stdout.flush()
    rc = subprocess.run(cmd, env=env).returncode
    os.unlink(inv.name)
    return rc


def module(name, args, host=None, check=False):
    """Run one of the collection's modules ad hoc (on this machine, or in a lab container through
    the community.docker.docker connection); print the command and return its result."""
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=os.path.join(REPO_DIR, ".collections"),
               ANSIBLE_COLLECTIONS_SCAN_SYS_PATH="True", ANSIBLE_LOAD_CALLBACK_PLUGINS="1",
               ANSIBLE_STDOUT_CALLBACK="ansible.posix.json", ANSIBLE_LOCALHOST_WARNING="False")
    target, conn, python = (host, "community.docker.docker", lab.OFFLOAD_PY) if host else \
        ("localhost", "local", sys.executable)
    cmd = [os.path.join(os.path.dirname(sys.executable), "ansible"), target, "-i", target + ",", "-c", conn,
           "-e", "ansible_python_interpreter=" + python, "-m", "k2.iceberg_offload." + name,
           "-a", json.dumps(args)] + (["--check"] if check else [])
    shown = dict((k, "********" if "password" in k else v) for k, v in args.items())
    sys.stdout.write("$ ansible %s -m k2.iceberg_offload.%s -a '%s'%s\n" % (
        target, name, json.dumps(shown), " --check" if check else ""))
    out = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False).stdout.decode()
    return json.loads(out[out.index("{"):])["plays"][0]["tasks"][0]["hosts"][target]


def pg_args(on_lab_network=False):
    s = lab.settings()
    return {"login_host": lab.PG if on_lab_network else s["pg_host"],
            "port": 5432 if on_lab_network else s["pg_port"], "login_db": s["pg_database"],
            "login_user": s["pg_user"], "login_password": s["pg_password"]}


def collection_view():
    info = module("watermark_info", pg_args())
    show({k: info.get(k) for k in ("table_exists", "findings", "stale_tables", "msg")})
    return info


def collection_recover_lost_table():
    """Scenario 3 done right: recreate the table and continue from what the cold tier holds."""
    args = dict(pg_args(on_lab_network=True), tables=list(lab.TABLES), strategy="cold_tier",
                iceberg_catalog="k2", clickhouse_url="http://%s:8123/" % lab.CH,
                iceberg_catalog_properties={"type": "sql", "uri": "sqlite:////home/iceberg/warehouse/catalog.db",
                                            "warehouse": "file:///home/iceberg/warehouse"})
    plan = module("watermark_reset", args, host=lab.SPARK, check=True)
    show({"plan (check mode)": [{k: t.get(k) for k in ("table_name", "before", "after", "action")}
                                for t in plan.get("tables", [])], "msg": plan.get("msg")})
    done = module("watermark_reset", args, host=lab.SPARK)
    show({"changed": done.get("changed"), "created_table": done.get("created_table"),
          "tables": [{k: t.get(k) for k in ("table_name", "after", "source")} for t in done.get("tables", [])],
          "msg": done.get("msg")})
    if done.get("failed"):
        raise RuntimeError("watermark_reset failed: %s" % done.get("msg"))


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

        banner("4. what the collection sees")
        rc = playbook("diagnose.yml")
        if rc is None:
            sys.stdout.write("  (no playbooks/diagnose.yml yet: the watermark_info module)\n")
            collection_view()

        banner("5. recover")
        rc = playbook("recover.yml", {"k2_confirm": True})
        if rc is None and args.fault == "table-dropped":
            sys.stdout.write("  (no playbooks/recover.yml yet: watermark_reset from the cold tier, plan first)\n")
            collection_recover_lost_table()
        elif rc is None:
            sys.stdout.write("  (no playbooks/recover.yml yet, and no module recovers %s: the lab's heal)\n"
                             % args.fault)
            faults.heal(args.fault)
        elif rc != 0:
            raise RuntimeError("recover.yml failed (rc %d)" % rc)

        banner("6. verify: new watermarks, fresh age, source and cold tier consistent")
        lab.wait_for_new_watermarks(cycles=2)
        report = lab.consistency()
        show({"age_seconds": lab.watermark_ages(),
              "consistency": {t: {k: r[k] for k in ("missing", "duplicated_rows", "past_watermark", "cold_rows")}
                              for t, r in report["tables"].items()}})
        ok = report["ok"]
        sys.stdout.write("  consistency: %s\n" % ("OK" if ok else "DAMAGED"))
    finally:
        if not args.keep:
            banner("7. take the lab down")
            lab.down()
        sys.stdout.write("\ndemo %s in %.0f s\n" % ("finished" if ok else "FAILED", time.time() - t0))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
