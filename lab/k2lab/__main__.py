# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""k2lab — the K2 lab of real servers, with fault injection.

  python -m k2lab build                 build the images (cached by a hash of their inputs)
  python -m k2lab up [--cycle-seconds N] bring the lab up and wait for the first watermarks
  python -m k2lab down                  remove every container, network, volume, process and state
  python -m k2lab status                containers, latest watermarks, Prometheus ages
  python -m k2lab faults                list the faults
  python -m k2lab fault NAME            inject a fault
  python -m k2lab heal [NAME]           undo a fault (all infrastructure faults without NAME)
  python -m k2lab check                 consistency of source and cold tier up to the watermark (exit 1 on damage)
  python -m k2lab settings              connection settings of the running lab (JSON; has the password)
  python -m k2lab inventory             an Ansible inventory (YAML) for the running lab
  python -m k2lab spark-shell [-c CODE] [-- ARGS]  Scala CODE (or standard input) in the Spark
                                        container's spark-shell (docs/spark.md)
  python -m k2lab spark-sql SQL [-- ARGS]  SQL in the Spark container's spark-sql; rows on stdout
"""

import argparse
import json
import sys

from . import faults, images, lab


def _remainder(extra):
    return extra[1:] if extra[:1] == ["--"] else extra


def main(argv=None):
    ap = argparse.ArgumentParser(prog="k2lab", description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("build")
    p = sub.add_parser("up")
    p.add_argument("--cycle-seconds", type=int)
    sub.add_parser("down")
    sub.add_parser("status")
    sub.add_parser("faults")
    p = sub.add_parser("fault")
    p.add_argument("name", choices=sorted(faults.FAULTS))
    p = sub.add_parser("heal")
    p.add_argument("name", nargs="?", choices=sorted(faults.FAULTS))
    p = sub.add_parser("check")
    p.add_argument("--table", action="append")
    sub.add_parser("settings")
    sub.add_parser("inventory")
    p = sub.add_parser("spark-shell")
    p.add_argument("-c", "--code", help="Scala code (default: standard input)")
    p.add_argument("spark_args", nargs=argparse.REMAINDER, help="-- then spark-shell's own arguments")
    p = sub.add_parser("spark-sql")
    p.add_argument("sql")
    p.add_argument("spark_args", nargs=argparse.REMAINDER, help="-- then spark-sql's own arguments")
    args = ap.parse_args(argv)

    if args.cmd == "build":
        print(json.dumps(images.build_all(), indent=2))
    elif args.cmd == "up":
        lab.up(cycle_seconds=args.cycle_seconds)
    elif args.cmd == "down":
        lab.down()
        left = lab.leftovers()
        if left:
            print("left behind: %s" % json.dumps(left))
            return 1
    elif args.cmd == "status":
        out = {"containers": {c: lab.container_running(c) for c in lab.CONTAINERS}}
        try:
            out["scheduler"] = lab.scheduler_active()
            out["latest_watermarks"] = lab.latest_watermarks()
        except Exception as exc:
            out["error"] = str(exc).splitlines()[0]
        try:
            out["prometheus_age_seconds"] = lab.watermark_ages()
        except Exception as exc:
            out["prometheus_error"] = str(exc)
        print(json.dumps(out, indent=2, default=str))
    elif args.cmd == "faults":
        for name, what in faults.FAULTS.items():
            print("%-18s %s" % (name, what))
    elif args.cmd == "fault":
        print(json.dumps(faults.inject(args.name), default=str))
    elif args.cmd == "heal":
        faults.heal(args.name)
    elif args.cmd == "check":
        report = lab.consistency(args.table)
        print(json.dumps(report, indent=2))
        return 0 if report.get("ok") else 1
    elif args.cmd == "settings":
        print(json.dumps(lab.settings(), indent=2))
    elif args.cmd == "inventory":
        sys.stdout.write(lab.inventory())
    elif args.cmd == "spark-shell":
        code = args.code if args.code is not None else sys.stdin.read()
        sys.stdout.write(lab.spark_shell(code, *_remainder(args.spark_args)))
    elif args.cmd == "spark-sql":
        for row in lab.spark_sql(args.sql, *_remainder(args.spark_args)):
            print("\t".join(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
