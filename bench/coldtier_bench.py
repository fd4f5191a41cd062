#!/usr/bin/env python3
# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Cold tier and source benchmarks: the collection's way against the runbook's way.

One command (from the checkout): ``bench/run.sh coldtier [--rows 10000000] [--files 50]
[--ch-rows 10000000] [--repeat 3]`` (``--help`` for every option).

1. Iceberg: a pyiceberg warehouse in a temporary directory with ``--rows`` trades in
   ``--files`` offload appends (plus a planted re-offload of 1,000 rows), then
   - the module's scan (``scan_table``: count, max pair, duplicates, rows past a watermark),
   - ``cold_tier_max_pair`` (what watermark_reset's cold_tier reads),
   - the naive way, as the runbook's spark one-liner does it: the whole table into memory
     (``scan().to_arrow()``) and a group-by count on sequence_number,
   each in its own process, so the peak RSS of one does not hide in another's.
2. ClickHouse: a throwaway clickhouse-server (127.0.0.1, HTTP 28123, TCP 29000, interserver
   29009 unless ``--ch-http-port`` / ``--ch-tcp-port`` / ``--ch-interserver-port``) with
   ``--ch-rows`` rows; the module's queries over HTTP against the runbook's
   ``clickhouse-client -q`` shell queries.

Writes bench/results/coldtier-<time>.json (``--out DIR`` elsewhere) and the "Cold tier and
source" section of docs/benchmarks.md, between the coldtier markers (``--no-doc`` to skip).
"""
import argparse
import datetime
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, ".collections"))
sys.path.insert(0, REPO)

from _load import LoadSampler, sampled_text  # noqa: E402  (bench/_load.py)
from _doc import machine as host_machine, write_section  # noqa: E402  (bench/_doc.py)


def _child(kind, root, table_name, extra):
    """Run one measured scan in a fresh process; return its JSON result."""
    cmd = [sys.executable, os.path.abspath(__file__), "--child", kind, "--root", root,
           "--table", table_name, "--extra", json.dumps(extra)]
    out = subprocess.check_output(cmd, env=dict(os.environ, PYTHONHASHSEED="0"))
    return json.loads(out.decode().strip().splitlines()[-1])


def child_main(kind, root, table_name, extra):
    import pyarrow as pa
    from tests.support.iceberg_warehouse import Warehouse
    from ansible_collections.k2.iceberg_offload.plugins.module_utils import iceberg_scan
    from ansible_collections.k2.iceberg_offload.plugins.module_utils.watermark import make_watermark
    table = Warehouse(root).catalog.load_table("cold." + table_name)
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    started = time.time()
    if kind == "module_one_group":
        # Worst case for memory: every file in one overlap group (as with no column bounds),
        # so the whole key column is held and sorted at once.
        iceberg_scan.overlap_groups = lambda tasks, key_field: [list(tasks)]
        kind = "module"
    if kind == "module":
        wm = make_watermark(extra["watermark"][0], extra["watermark"][1])
        r = iceberg_scan.scan_table(table, watermark=wm)
        out = {"rows": r["row_count"], "duplicate_rows": r["duplicates"]["duplicate_rows"],
               "max_pair": str(r["max_pair"]), "past_watermark": r["past_watermark"]["rows"],
               "arrow_peak_bytes": r["scan"]["arrow_peak_bytes"]}
    elif kind == "cold_tier_max_pair":
        out = {"max_pair": str(iceberg_scan.cold_tier_max_pair(table))}
    elif kind == "naive":
        # The runbook: spark.read.table(...).groupBy("sequence_number").count().where("count > 1")
        data = table.scan().to_arrow()
        counts = data.group_by("sequence_number").aggregate([("sequence_number", "count")])
        dups = counts.filter(pa.compute.greater(counts.column("sequence_number_count"), 1))
        out = {"rows": data.num_rows, "duplicated_keys": dups.num_rows}
    else:
        raise SystemExit("unknown child kind " + kind)
    out["seconds"] = round(time.time() - started, 3)
    out["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    out["rss_before_bytes"] = base_rss
    out["arrow_pool_max_bytes"] = pa.default_memory_pool().max_memory()
    print(json.dumps(out))


def build_warehouse(root, rows, files):
    from tests.support.iceberg_warehouse import Warehouse, trades
    wh = Warehouse(root)
    table = wh.create("bench_trades")
    per = rows // files
    started = time.time()
    for i in range(files):
        wh.offload(table, trades(i * per, per), source_table="bronze_trades_binance")
    # A planted re-offload: the last 1,000 rows of the middle cycle written again.
    middle_end = (files // 2 + 1) * per
    wh.offload(table, trades(middle_end - min(1000, per), min(1000, per)),
               source_table="bronze_trades_binance")
    return table, time.time() - started


def mib(n):
    return "%.0f MiB" % (n / 1048576.0)


def bench_iceberg(args, tmp):
    from tests.support.iceberg_warehouse import BASE_TIME
    root = os.path.join(tmp, "warehouse")
    os.makedirs(root)
    table, build_s = build_warehouse(root, args.rows, args.files)
    size = sum(os.path.getsize(os.path.join(d, f)) for d, _dirs, fs in os.walk(root) for f in fs)
    wm_seq = args.rows - args.rows // 10
    wm = ((BASE_TIME + datetime.timedelta(seconds=wm_seq // 4)).isoformat(), wm_seq)
    results = {}
    for kind in ("module", "module_one_group", "cold_tier_max_pair", "naive"):
        runs = [_child(kind, root, "bench_trades", {"watermark": wm}) for _run in range(args.repeat)]
        best = min(runs, key=lambda r: r["seconds"])
        best["all_seconds"] = [r["seconds"] for r in runs]
        results[kind] = best
        print("iceberg %-20s %s" % (kind, json.dumps(best)), flush=True)
    # End to end: the module through ansible (process start, imports, catalog, scan, JSON).
    from _ansible import run_module  # bench/_ansible.py
    from tests.support.iceberg_warehouse import catalog_properties
    started = time.time()
    res = run_module("iceberg_table_info", {"table": "cold.bench_trades",
                                            "iceberg_catalog_properties": catalog_properties(root),
                                            "watermark": {"max_timestamp": wm[0], "sequence_number": wm[1]}})
    results["ansible_module"] = {"seconds": round(time.time() - started, 2), "failed": res["failed"],
                                 "scan": res.get("scan"), "rows": res.get("row_count"),
                                 "duplicate_rows": (res.get("duplicates") or {}).get("duplicate_rows")}
    print("iceberg %-20s %s" % ("ansible_module", json.dumps(results["ansible_module"])), flush=True)
    return {"rows": (args.rows // args.files) * args.files + min(1000, args.rows // args.files),
            "files": args.files + 1, "build_seconds": round(build_s, 1),
            "warehouse_bytes": size, "results": results}


def bench_clickhouse(args, tmp):
    from tests.support.clickhouse_server import CLIENT_BIN, ClickHouseServer, execute, TRADES_DDL
    from ansible_collections.k2.iceberg_offload.plugins.module_utils import clickhouse as ch
    from ansible_collections.k2.iceberg_offload.plugins.module_utils import watermark_sources as sources
    from ansible_collections.k2.iceberg_offload.plugins.module_utils.watermark import make_watermark
    # its own /tmp dir: the clickhouse user must reach it; ports: the options or the class's defaults
    server = ClickHouseServer(http_port=args.ch_http_port, tcp_port=args.ch_tcp_port,
                              interserver_port=args.ch_interserver_port).start()
    try:
        url = server.url
        execute(url, "CREATE DATABASE bench")
        execute(url, TRADES_DDL.format(db="bench", table="bronze_trades_binance"))
        started = time.time()
        # 4 rows per second, ending at the server's now(): 48 h of history per 691,200 rows.
        execute(url, "INSERT INTO bench.bronze_trades_binance SELECT "
                     "toDateTime(toUnixTimestamp(now()) - intDiv(%d - number, 4)), number, "
                     "'BTCUSDT', if(number %% 2 = 0, 'buy', 'sell'), 30000 + number %% 1000, 0.01 "
                     "FROM system.numbers LIMIT %d" % (args.ch_rows, args.ch_rows), timeout=600)
        execute(url, "OPTIMIZE TABLE bench.bronze_trades_binance FINAL", timeout=600)
        load_s = time.time() - started
        client = ch.ClickHouseClient(url=url, database="bench")
        now = client.server_info()["now"]
        # A watermark that is a real row's pair, 15 minutes behind, with two rows of the same
        # second after it (the rows the runbook's timestamp-only count misses).
        wm_seq = args.ch_rows - 3602
        wm_epoch = client.query("SELECT toUnixTimestamp(exchange_timestamp) FROM "
                                "bench.bronze_trades_binance WHERE sequence_number = %d" % wm_seq)[0][0]
        wm = make_watermark(ch.from_epoch(wm_epoch).isoformat(), wm_seq)
        cutoff = sources.lookback_cutoff(now, 86400)
        t = "bronze_trades_binance"
        module_queries = {
            "summary (count, min/max, max pair)": lambda: client.summary(t),
            "rows after watermark (pair)": lambda: client.after_watermark(t, wm),
            "max pair before now-24h": lambda: client.before_cutoff(t, cutoff),
        }
        last_ts = wm.max_timestamp.strftime("%Y-%m-%d %H:%M:%S")
        runbook_queries = {
            "rows after watermark (runbook 5.2, ts only)":
                "SELECT COUNT(*) FROM bench.bronze_trades_binance WHERE exchange_timestamp > '%s'"
                % last_ts,
            "max sequence before now-24h (runbook 3.3)":
                "SELECT MAX(sequence_number) FROM bench.bronze_trades_binance "
                "WHERE exchange_timestamp < now() - INTERVAL 24 HOUR FORMAT TSV",
            "now-24h timestamp (runbook 3.3)": "SELECT NOW() - INTERVAL 24 HOUR FORMAT TSV",
        }
        out = {"rows": args.ch_rows, "load_seconds": round(load_s, 1), "module": {}, "runbook": {}}
        for name, fn in module_queries.items():
            times, value = [], None
            for _run in range(args.repeat + 2):
                s = time.time()
                value = fn()
                times.append(time.time() - s)
            out["module"][name] = {"ms_median": round(sorted(times)[len(times) // 2] * 1000, 1),
                                   "answer": json.loads(json.dumps(value, default=str))}
        for name, sql in runbook_queries.items():
            times, value = [], None
            for _run in range(args.repeat + 2):
                s = time.time()
                value = subprocess.check_output([CLIENT_BIN, "--host", "127.0.0.1", "--port",
                                                 str(server.tcp_port), "-q", sql]).decode().strip()
                times.append(time.time() - s)
            out["runbook"][name] = {"ms_median": round(sorted(times)[len(times) // 2] * 1000, 1),
                                    "answer": value}
        out["watermark"] = str(wm)
        print("clickhouse %s" % json.dumps(out), flush=True)
        return out
    finally:
        server.stop()


def machine():
    import pyarrow
    import pyiceberg
    return host_machine(pyarrow=pyarrow.__version__, pyiceberg=pyiceberg.__version__)


def render(results):
    """The docs section, between the coldtier markers, from a results dict (or its JSON file)."""
    ice, chq, m, repeat = results["iceberg"], results["clickhouse"], results["machine"], results["repeat"]
    memory = "%s GiB" % m["memory_gib"] if "memory_gib" in m else m["memory"]  # (older results: "memory")
    lines = [
        "<!-- coldtier:begin (written by bench/coldtier_bench.py; do not edit by hand) -->",
        "## Cold tier and source (issue 4) — %s" % results["date"], "",
        "Machine: %d CPUs (%s), %s RAM; Python %s, pyarrow %s, pyiceberg %s. Command: `%s`. %.0f s in all." % (
            m["nproc"], m.get("cpu_model") or m.get("cpu"),
            memory, m["python"], m["pyarrow"], m["pyiceberg"], results["command"],
            results["seconds"]), "",
        "Load: %s. The machine is shared; times scale with the load." % _load_text(results), ""]
    if ice:
        r = ice["results"]
        lines += [
            "### Iceberg cold-tier scan, %s rows in %d data files (%s on disk), 1,000 planted duplicates"
            % ("{:,}".format(ice["rows"]), ice["files"], mib(ice["warehouse_bytes"])), "",
            "Each way in its own process; best of %d; peak RSS includes the interpreter and libraries "
            "(%s before the scan)." % (repeat, mib(r["module"]["rss_before_bytes"])), "",
            "| way | seconds | peak RSS | Arrow pool peak | answer |",
            "| --- | ---: | ---: | ---: | --- |",
            "| module scan (`iceberg_table_info`: count, max pair, duplicates, past watermark) "
            "| %.2f | %s | %s | %s rows, %d duplicate rows, max %s |" % (
                r["module"]["seconds"], mib(r["module"]["peak_rss_bytes"]),
                mib(r["module"]["arrow_pool_max_bytes"]), "{:,}".format(r["module"]["rows"]),
                r["module"]["duplicate_rows"], r["module"]["max_pair"]),
            "| module scan, worst case: all files in one overlap group (no bounds) | %.2f | %s | %s "
            "| %s rows, %d duplicate rows |" % (
                r["module_one_group"]["seconds"], mib(r["module_one_group"]["peak_rss_bytes"]),
                mib(r["module_one_group"]["arrow_pool_max_bytes"]),
                "{:,}".format(r["module_one_group"]["rows"]), r["module_one_group"]["duplicate_rows"]),
            "| `cold_tier_max_pair` (watermark_reset cold_tier; bounds-pruned) | %.2f | %s | %s | %s |"
            % (r["cold_tier_max_pair"]["seconds"], mib(r["cold_tier_max_pair"]["peak_rss_bytes"]),
               mib(r["cold_tier_max_pair"]["arrow_pool_max_bytes"]),
               r["cold_tier_max_pair"]["max_pair"]),
            "| naive: `scan().to_arrow()` + group-by count (the runbook's spark one-liner, in Arrow) "
            "| %.2f | %s | %s | %s rows, %d duplicated keys |" % (
                r["naive"]["seconds"], mib(r["naive"]["peak_rss_bytes"]),
                mib(r["naive"]["arrow_pool_max_bytes"]), "{:,}".format(r["naive"]["rows"]),
                r["naive"]["duplicated_keys"]),
            "", "Through Ansible (`ansible localhost -m k2.iceberg_offload.iceberg_table_info`, "
            "process start, imports, catalog, scan and JSON): %.2f s wall, of which the scan %.2f s; "
            "module peak RSS %s, scan Arrow peak %s." % (
                r["ansible_module"]["seconds"], r["ansible_module"]["scan"]["seconds"],
                mib(r["ansible_module"]["scan"]["peak_rss_bytes"]),
                mib(r["ansible_module"]["scan"]["arrow_peak_bytes"])),
            "", "Building the warehouse took %.1f s." % ice["build_seconds"], ""]
    if chq:
        lines += ["### ClickHouse source queries, %s rows (4 per second, ending now), median of %d"
                  % ("{:,}".format(chq["rows"]), repeat + 2), "",
                  "Watermark %s (15 minutes of rows behind). Module: HTTP from Python (requests); "
                  "runbook: `clickhouse-client -q` (includes starting the client)." % chq["watermark"],
                  "", "| query | way | ms | answer |", "| --- | --- | ---: | --- |"]
        for name, v in chq["module"].items():
            lines.append("| %s | module | %.1f | `%s` |" % (name, v["ms_median"], json.dumps(v["answer"])))
        for name, v in chq["runbook"].items():
            lines.append("| %s | runbook | %.1f | `%s` |" % (name, v["ms_median"], v["answer"]))
        lines += ["", "The runbook's step 5.2 counts only rows of later seconds, missing those that "
                      "share the watermark's second; its step 3.3 takes MAX(sequence_number) and the "
                      "timestamp from separate queries, so the pair it writes is not a pair any row "
                      "has.", ""]
    lines += ["Raw figures: `bench/results/%s`." % os.path.basename(results["json"]),
              "<!-- coldtier:end -->"]
    return "\n".join(lines) + "\n"


def _load_text(results):
    if "loadavg_sampled" in results:
        return "1-minute load average %.1f at the start, %.1f at the end of the run; during it %s" % (
            results["loadavg_start"][0], results["loadavg_end"][0],
            sampled_text(results["loadavg_sampled"], results["machine"]["nproc"]))
    if "loadavg_start" in results:
        return "1-minute load average %.1f at the start, %.1f at the end of the run (%d CPUs)" % (
            results["loadavg_start"][0], results["loadavg_end"][0], results["machine"]["nproc"])
    return "not recorded"


def write_doc(section):
    return write_section("coldtier", section)


def command_line(argv):
    """The command for the docs: what was run, less the options that do not change a figure."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a in ("--no-doc", "--no-write"):
            continue
        if a in ("--out", "--ch-http-port", "--ch-tcp-port", "--ch-interserver-port"):
            skip = True
            continue
        if a.split("=", 1)[0] in ("--out", "--ch-http-port", "--ch-tcp-port", "--ch-interserver-port"):
            continue
        out.append(a)
    return " ".join(["bench/run.sh coldtier"] + out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
    ap.add_argument("--rows", type=int, default=10000000)
    ap.add_argument("--files", type=int, default=50)
    ap.add_argument("--ch-rows", type=int, default=10000000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--skip-iceberg", action="store_true")
    ap.add_argument("--skip-clickhouse", action="store_true")
    ap.add_argument("--ch-http-port", type=int, help="the throwaway ClickHouse's HTTP port (default 28123)")
    ap.add_argument("--ch-tcp-port", type=int, help="its native TCP port (default 29000)")
    ap.add_argument("--ch-interserver-port", type=int, help="its interserver HTTP port (default 29009)")
    ap.add_argument("--no-doc", "--no-write", dest="no_doc", action="store_true",
                    help="do not rewrite docs/benchmarks.md")
    ap.add_argument("--out", metavar="DIR", default=os.path.join(REPO, "bench", "results"),
                    help="where the raw JSON goes (default bench/results)")
    ap.add_argument("--render", metavar="JSON", help="only rewrite docs/benchmarks.md from a results file")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--root", help=argparse.SUPPRESS)
    ap.add_argument("--table", help=argparse.SUPPRESS)
    ap.add_argument("--extra", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child_main(args.child, args.root, args.table, json.loads(args.extra))
    if args.render:
        with open(args.render) as f:
            print("wrote %s" % write_doc(render(json.load(f))))
        return 0
    started = time.time()
    results = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
               "command": command_line(sys.argv[1:]), "repeat": args.repeat, "loadavg_start": os.getloadavg()}
    with LoadSampler() as load:
        tmp = tempfile.mkdtemp(prefix="k2-bench-")
        try:
            results["machine"] = machine()
            print("machine %s" % json.dumps(results["machine"]), flush=True)
            results["iceberg"] = None if args.skip_iceberg else bench_iceberg(args, tmp)
            results["clickhouse"] = None if args.skip_clickhouse else bench_clickhouse(args, tmp)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    results["loadavg_sampled"] = load.summary()
    results["seconds"] = time.time() - started
    results["loadavg_end"] = os.getloadavg()
    os.makedirs(args.out, exist_ok=True)
    results["json"] = os.path.join(args.out, "coldtier-%s.json" % time.strftime("%Y%m%dT%H%M%S", time.gmtime()))
    with open(results["json"], "w") as f:
        json.dump(results, f, indent=2, sort_keys=True)
    section = render(results)
    print(section)
    if not args.no_doc:
        print("wrote %s" % write_doc(section))
    return 0


if __name__ == "__main__":
    sys.exit(main())
