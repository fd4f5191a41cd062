#!/usr/bin/env python3
# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Benchmark: the cold tier's two engines, pyiceberg and spark, against the runbook's spark-shell one-liner.

One command (from the checkout, with the lab up): ``bench/run.sh engines [--rows 1000000,10000000]
[--master local[2]] [--no-doc]``.

For each size, a table ``k2bench.engines`` of the lab's shared catalog (made with pyiceberg in
k2-spark-iceberg): ``--files`` appends of increasing keys, then one append holding copies of the
last ``--dup-keys`` keys and as many new keys (a re-offload from a regressed watermark). Then, in
the Spark container, each contender on the same table:

- the duplicate check: ``iceberg_table_info`` with ``engine=pyiceberg`` and ``engine=spark``
  (``--master``), and the runbook's one-liner (``groupBy("sequence_number").count().where("count > 1")
  .show()``) in ``spark-shell --master MASTER``;
- the repair: ``iceberg_dedupe`` with each engine, each followed by a rollback to the snapshot before
  it, so both repair the same table.

Time is the wall time of the module's task (Ansible's docker connection included) or of the shell;
peak memory is what the module reports (pyiceberg: the module's VmHWM; spark: the largest child
process, the driver JVM) or, for spark-shell, the largest child of a Python wrapper. Writes
``bench/results/engines-<time>.json`` and the "Cold-tier engines" section of docs/benchmarks.md.
"""
import argparse
import json
import os
import platform
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for p in (os.path.join(REPO, ".collections"), REPO, os.path.join(REPO, "lab")):
    if p not in sys.path:
        sys.path.insert(0, p)

from _ansible import run_module as ansible_run_module  # noqa: E402  (bench/_ansible.py)
from _doc import write_section  # noqa: E402  (bench/_doc.py)
from k2lab import lab  # noqa: E402

CATALOG = {"type": "sql", "uri": "sqlite:////home/iceberg/warehouse/catalog.db",
           "warehouse": "file:///home/iceberg/warehouse"}
TABLE = "k2bench.engines"

MAKE = r'''
import datetime, sys
import numpy as np
import pyarrow as pa
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.schema import Schema
from pyiceberg.types import DoubleType, LongType, NestedField, StringType, TimestampType
rows, files, dups = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
cat = SqlCatalog("k2", uri="sqlite:////home/iceberg/warehouse/catalog.db", warehouse="file:///home/iceberg/warehouse")
schema = Schema(NestedField(1, "exchange_timestamp", TimestampType(), required=False),
                NestedField(2, "sequence_number", LongType(), required=False),
                NestedField(3, "symbol", StringType(), required=False),
                NestedField(4, "price", DoubleType(), required=False))
arrow = pa.schema([("exchange_timestamp", pa.timestamp("us")), ("sequence_number", pa.int64()),
                   ("symbol", pa.string()), ("price", pa.float64())])
try:
    cat.create_namespace("k2bench")
except Exception:
    pass
try:
    cat.purge_table("k2bench.engines")
except Exception:
    pass
t = cat.create_table("k2bench.engines", schema)
base = 1767225600 * 1000000
def chunk(lo, hi):
    keys = np.arange(lo, hi, dtype=np.int64)  # numpy, not Python lists: 100 M rows in minutes
    return pa.table({"exchange_timestamp": pa.array(base + keys * 1000, pa.timestamp("us")),
                     "sequence_number": pa.array(keys), "symbol": pa.array(["BTCUSDT"] * (hi - lo)),
                     "price": pa.array(100.0 + (keys % 1000) / 10.0)}, schema=arrow)
per = (rows - 2 * dups) // files
top = 0
for i in range(files):
    t.append(chunk(top, top + per))
    top += per
t.append(pa.concat_tables([chunk(top - dups, top), chunk(top, top + dups)]))
print(top + dups + dups)
'''

RUSAGE = r'''
import resource, subprocess, sys, time
code = sys.argv[1]
start = time.time()
p = subprocess.run(sys.argv[2:], input=code + "\n", stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
print(p.returncode, round(time.time() - start, 3), resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024)
print(p.stdout[-3000:])
'''


def args(engine, master, **more):
    out = {"table": TABLE, "iceberg_catalog": "k2", "iceberg_catalog_properties": CATALOG, "engine": engine,
           "spark_master": master}
    out.update(more)
    return out


def run_module(name, module_args, timeout=3600):
    """``ansible SPARK -c community.docker.docker -m k2.iceberg_offload.NAME``: the module where a playbook runs it."""
    return ansible_run_module(name, module_args, timeout=timeout, host=lab.SPARK,
                              connection="community.docker.docker", interpreter=lab.OFFLOAD_PY)


def timed(name, module, module_args):
    start = time.time()
    r = run_module(module, module_args)
    seconds = time.time() - start
    if r["failed"]:
        raise SystemExit("%s failed: %s" % (name, r.get("msg")))
    return r, seconds


def one_size(rows, files, dups, master):
    out = lab.dexec(lab.SPARK, lab.OFFLOAD_PY, "-c", MAKE, str(rows), str(files), str(dups), timeout=3600)
    total = int(out.strip().splitlines()[-1])
    figures = {"rows": total, "files": files + 1, "dup_keys": dups}
    for engine in ("pyiceberg", "spark"):
        r, seconds = timed("check " + engine, "iceberg_table_info", args(engine, master, duplicates=True))
        assert r["duplicates"]["duplicated_keys"] == dups, r["duplicates"]
        figures["check_" + engine] = {"seconds": round(seconds, 1), "peak_rss_bytes": r["scan"]["peak_rss_bytes"]}
    code = 'spark.read.table("k2.%s").groupBy("sequence_number").count().where("count > 1").show()' % TABLE
    shell = lab.dexec(lab.SPARK, lab.OFFLOAD_PY, "-c", RUSAGE, code, "spark-shell", "--master", master,
                      "--jars", lab.ICEBERG_RUNTIME_JAR, timeout=3600)
    rc, seconds, rss = shell.split("\n", 1)[0].split()
    figures["check_spark_shell"] = {"seconds": round(float(seconds), 1), "peak_rss_bytes": int(rss), "rc": int(rc)}
    for engine in ("pyiceberg", "spark"):
        r, seconds = timed("repair " + engine, "iceberg_dedupe", args(engine, master))
        assert r["plan"]["rows_to_remove"] == dups, r["plan"]
        figures["repair_" + engine] = {
            "seconds": round(seconds, 1), "peak_rss_bytes": r["stats"].get("peak_rss_bytes"),
            "bytes_removed": r["commit"]["bytes_removed"], "bytes_written": r["commit"]["bytes_written"],
            "files_rewritten": r["commit"]["files_removed"], "table_bytes": r["plan"]["bytes_scanned"]}
        timed("rollback", "iceberg_dedupe", args("pyiceberg", master, rollback_to_snapshot=r["previous_snapshot_id"]))
    return figures


def mib(n):
    if not n:
        return "-"
    return "%.0f MiB" % (n / 1048576.0) if n >= 1048576 else "%.0f KiB" % (n / 1024.0)


def section(results, master, when):
    lines = ["<!-- engines:begin (bench/engines_bench.py writes this section) -->",
             "## Cold-tier engines: pyiceberg, spark, the runbook's spark-shell (issue 16) — %s" % when, "",
             "`bench/run.sh engines` on %s (%d CPUs), the lab's k2-spark-iceberg; Spark master `%s`. Time is the "
             "task's wall time (Ansible's docker connection and, for Spark, the JVM's start included); memory is the "
             "module's peak RSS (pyiceberg) or the largest child process's (the driver JVM for spark and "
             "spark-shell)." % (platform.node() or "this machine", os.cpu_count() or 0, master), "",
             "| rows | check pyiceberg | check spark | runbook spark-shell | repair pyiceberg | repair spark | "
             "repair spark: written / table |",
             "|---|---|---|---|---|---|---|"]
    for f in results:
        def cell(key):
            return "%s s, %s" % (f[key]["seconds"], mib(f[key]["peak_rss_bytes"]))
        rs = f["repair_spark"]
        lines.append("| %s | %s | %s | %s | %s | %s | %s / %s |" % (
            "{:,}".format(f["rows"]), cell("check_pyiceberg"), cell("check_spark"), cell("check_spark_shell"),
            cell("repair_pyiceberg"), cell("repair_spark"), mib(rs["bytes_written"]), mib(rs["table_bytes"])))
    lines += ["", "<!-- engines:end -->", ""]
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", default="1000000,10000000", help="table sizes, comma-separated")
    parser.add_argument("--files", type=int, default=20, help="appends of new keys per table")
    parser.add_argument("--dup-keys", type=int, default=1000, help="keys copied by the last append")
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--no-doc", action="store_true")
    parser.add_argument("--out", default=os.path.join(REPO, "bench", "results"))
    opts = parser.parse_args()
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    results = []
    for rows in [int(r) for r in opts.rows.split(",")]:
        figures = one_size(rows, opts.files, opts.dup_keys, opts.master)
        print(json.dumps(figures), flush=True)
        results.append(figures)
    os.makedirs(opts.out, exist_ok=True)
    with open(os.path.join(opts.out, "engines-%s.json" % time.strftime("%Y%m%dT%H%M%S", time.gmtime())), "w") as fh:
        json.dump({"when": when, "master": opts.master, "machine": platform.node(), "cpus": os.cpu_count(),
                   "results": results}, fh, indent=2)
    text = section(results, opts.master, when)
    print(text)
    if not opts.no_doc:
        write_section("engines", text)


if __name__ == "__main__":
    main()
