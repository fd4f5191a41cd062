# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Offload the rows of one ClickHouse table that lie after its watermark into Iceberg.

    offload_generic.py --source-table bronze_trades_binance \
        --target-table cold.bronze_trades_binance \
        --timestamp-col exchange_timestamp --sequence-col sequence_number --layer bronze

One run: read the latest watermark pair from PostgreSQL; read the source rows
strictly after that pair, ordered by the pair; append them to the Iceberg table
with the new watermark in the snapshot summary; insert the new watermark row.
With no watermark (no row, or no table) it refuses: starting from nothing
would re-offload the whole source.
"""

import argparse
import sys
import time

import k2common as k2


def log(msg):
    print("%s %s" % (time.strftime("%Y-%m-%d %H:%M:%S"), msg), flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--source-table", required=True)
    ap.add_argument("--target-table", required=True)
    ap.add_argument("--timestamp-col", default="exchange_timestamp")
    ap.add_argument("--sequence-col", default="sequence_number")
    ap.add_argument("--layer", default="bronze")
    args = ap.parse_args(argv)
    if (args.timestamp_col, args.sequence_col) != ("exchange_timestamp", "sequence_number"):
        log("ERROR the lab's tables use exchange_timestamp/sequence_number")
        return 2
    cfg = k2.load_env()
    table = k2.check_identifier(args.source_table)
    started = time.time()

    if k2.fault_active("silent_zero") or k2.scheduler_fault_active("silent_zero_scheduler"):
        # Fault 5: the job does nothing and still reports success (silent_zero: a bug in the
        # job itself; silent_zero_scheduler: only the jobs one scheduler process starts).
        log("Offload completed: 0 rows (%s -> %s, layer %s)" % (table, args.target_table, args.layer))
        return 0

    with k2.table_lock(table):
        try:
            conn = k2.pg_connect(cfg)
        except Exception as exc:
            log("ERROR watermark: cannot connect to PostgreSQL: %s" % str(exc).strip())
            return 3
        try:
            try:
                wm = k2.latest_watermark(conn, cfg, table)
            except Exception as exc:
                log("ERROR watermark: cannot read %s: %s" % (cfg["watermark_table"], str(exc).strip()))
                return 3
            if wm is None:
                log("ERROR watermark: no watermark for %s in %s; refusing to offload "
                    "(initialise the watermark first)" % (table, cfg["watermark_table"]))
                return 3
            wm_ts, wm_seq = wm[0], wm[1]
            log("watermark for %s: (%s, %d)" % (table, wm_ts, wm_seq))
            try:
                rows = k2.source_rows(cfg, table, k2.after_pair_sql(table, wm_ts, wm_seq))
            except Exception as exc:
                log("ERROR reading ClickHouse %s: %s" % (table, exc))
                return 4
            if rows.num_rows == 0:
                log("Offload completed: 0 rows (%s has nothing after (%s, %d))" % (table, wm_ts, wm_seq))
                return 0
            new_ts = rows.column("exchange_timestamp")[-1].as_py()
            new_seq = rows.column("sequence_number")[-1].as_py()
            cold = k2.catalog(cfg).load_table(args.target_table)
            cold.append(rows, snapshot_properties={
                "k2.watermark.max_timestamp": new_ts.isoformat(sep=" "),
                "k2.watermark.sequence_number": str(new_seq),
                "k2.source_table": table,
                "k2.rows": str(rows.num_rows),
            })
            with conn.cursor() as cur:
                cur.execute(
                    "INSERT INTO " + cfg["watermark_table"]
                    + " (table_name, max_timestamp, sequence_number) VALUES (%s, %s, %s)",
                    (table, new_ts, new_seq))
            conn.commit()
        except Exception as exc:
            log("ERROR watermark: offload of %s failed after reading the watermark: %s" % (table, exc))
            return 5
        finally:
            conn.close()
    log("Offload completed: %d rows (%s -> %s, watermark (%s, %d), %.1f s)" % (
        rows.num_rows, table, args.target_table, new_ts, new_seq, time.time() - started))
    return 0


if __name__ == "__main__":
    sys.exit(main())
