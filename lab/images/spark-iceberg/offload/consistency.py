# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Compare the source (ClickHouse) with the cold tier (Iceberg) up to the watermark.

For each table: rows of the source up to the watermark pair that the cold tier
lacks (missing), sequence numbers the cold tier holds more than once
(duplicated), and cold rows past the watermark. Prints JSON.

    consistency.py [--table T ...] [--watermark-ts TS --watermark-seq N]
"""

import argparse
import datetime
import json
import sys

import numpy as np

import k2common as k2


def check_table(cfg, table, watermark=None, sample=10):
    with k2.table_lock(table):
        if watermark is None:
            conn = k2.pg_connect(cfg)
            try:
                row = k2.latest_watermark(conn, cfg, table)
            finally:
                conn.close()
            if row is None:
                return {"table": table, "error": "no watermark"}
            watermark = (row[0], row[1])
        wm_ts, wm_seq = watermark
        source = k2.source_rows(cfg, table, k2.upto_pair_sql(wm_ts, wm_seq),
                                columns=("exchange_timestamp", "sequence_number"))
        cold = k2.cold_pairs(k2.catalog(cfg).load_table("cold." + table))
    src_seq = source.column("sequence_number").to_numpy()
    cold_seq = cold.column("sequence_number").to_numpy(zero_copy_only=False)
    keys, counts = np.unique(cold_seq, return_counts=True)
    dup_keys = keys[counts > 1]
    missing = np.setdiff1d(src_seq, keys, assume_unique=False)
    wm_us = np.datetime64(wm_ts, "us")
    cold_ts = cold.column("exchange_timestamp").to_numpy(zero_copy_only=False).astype("datetime64[us]")
    past = (cold_ts > wm_us) | ((cold_ts == wm_us) & (cold_seq > wm_seq))
    return {
        "table": table,
        "watermark": {"max_timestamp": wm_ts.isoformat(sep=" "), "sequence_number": int(wm_seq)},
        "source_rows_upto_watermark": int(src_seq.size),
        "cold_rows": int(cold_seq.size),
        "missing": int(missing.size),
        "missing_sample": [int(x) for x in missing[:sample]],
        "duplicated_keys": int(dup_keys.size),
        "duplicated_rows": int((counts[counts > 1] - 1).sum()),
        "duplicated_sample": [int(x) for x in dup_keys[:sample]],
        "past_watermark": int(past.sum()),
    }


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--table", action="append")
    ap.add_argument("--watermark-ts")
    ap.add_argument("--watermark-seq", type=int)
    args = ap.parse_args(argv)
    cfg = k2.load_env()
    wm = None
    if args.watermark_ts:
        wm = (datetime.datetime.fromisoformat(args.watermark_ts), args.watermark_seq or 0)
    tables = [k2.check_identifier(t) for t in (args.table or cfg["tables"])]
    report = {"tables": {}}
    for t in tables:
        report["tables"][t] = check_table(cfg, t, wm)
    report["ok"] = all(r.get("missing") == 0 and r.get("duplicated_rows") == 0 and r.get("past_watermark") == 0
                       for r in report["tables"].values())
    json.dump(report, sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
