# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Lab-only operations run inside k2-spark-iceberg by the lab's CLI (python -m k2lab).

    labtool.py init                 create cold tables; write a first watermark per
                                    table that has none (cold tier's greatest pair, or
                                    just before the oldest source row when the cold tier is empty)
    labtool.py plant-duplicates T K append a second copy of K cold rows (prints their keys)
    labtool.py plant-gap T K        delete K cold rows at or below the watermark (prints their keys)
    labtool.py repair T KEY...      make the cold tier hold each KEY exactly once, from the source
"""

import datetime
import json
import sys

import pyarrow.compute as pc
from pyiceberg.expressions import In

import k2common as k2


def cold_greatest_pair(tbl):
    pairs = k2.cold_pairs(tbl)
    if pairs.num_rows == 0:
        return None
    idx = pc.sort_indices(pairs, sort_keys=[("exchange_timestamp", "descending"),
                                            ("sequence_number", "descending")])[0].as_py()
    return (pairs.column("exchange_timestamp")[idx].as_py(), pairs.column("sequence_number")[idx].as_py())


def init(cfg):
    cat = k2.ensure_cold_tables(cfg)
    conn = k2.pg_connect(cfg)
    written = {}
    try:
        for t in cfg["tables"]:
            if k2.latest_watermark(conn, cfg, t) is not None:
                continue
            pair = cold_greatest_pair(cat.load_table("cold." + t))
            if pair is None:
                first = k2.ch_query(cfg, "SELECT toUnixTimestamp(min(exchange_timestamp)), count() FROM %s FORMAT TSV" % t)
                ts_s, count = first.decode().split()
                if int(count) == 0:
                    raise SystemExit("source %s is empty; cannot place a first watermark" % t)
                pair = (datetime.datetime.utcfromtimestamp(int(ts_s) - 1), 0)
            with conn.cursor() as cur:
                cur.execute("INSERT INTO " + cfg["watermark_table"]
                            + " (table_name, max_timestamp, sequence_number) VALUES (%s, %s, %s)",
                            (t, pair[0], pair[1]))
            conn.commit()
            written[t] = [pair[0].isoformat(sep=" "), pair[1]]
    finally:
        conn.close()
    return written


def plant_duplicates(cfg, table, count):
    with k2.table_lock(table):
        tbl = k2.catalog(cfg).load_table("cold." + table)
        rows = tbl.scan(limit=count).to_arrow()
        tbl.append(rows, snapshot_properties={"k2.lab.planted": "duplicates"})
    return sorted(int(x) for x in rows.column("sequence_number").to_pylist())


def plant_gap(cfg, table, count):
    with k2.table_lock(table):
        tbl = k2.catalog(cfg).load_table("cold." + table)
        keys = tbl.scan(selected_fields=("sequence_number",)).to_arrow().column("sequence_number")
        uniq = sorted(set(keys.to_pylist()))
        mid = len(uniq) // 2
        chosen = uniq[mid:mid + count]
        tbl.delete(In("sequence_number", chosen), snapshot_properties={"k2.lab.planted": "gap"})
    return chosen


def repair(cfg, table, keys):
    keys = [int(k) for k in keys]
    with k2.table_lock(table):
        tbl = k2.catalog(cfg).load_table("cold." + table)
        tbl.delete(In("sequence_number", keys), snapshot_properties={"k2.lab.repair": "delete"})
        where = "sequence_number IN (%s)" % ", ".join(str(k) for k in keys)
        rows = k2.source_rows(cfg, table, where)
        if rows.num_rows:
            tbl.append(rows, snapshot_properties={"k2.lab.repair": "append"})
    return keys


def main(argv):
    cfg = k2.load_env()
    cmd = argv[0] if argv else ""
    if cmd == "init":
        out = init(cfg)
    elif cmd == "plant-duplicates":
        out = plant_duplicates(cfg, k2.check_identifier(argv[1]), int(argv[2]))
    elif cmd == "plant-gap":
        out = plant_gap(cfg, k2.check_identifier(argv[1]), int(argv[2]))
    elif cmd == "repair":
        out = repair(cfg, k2.check_identifier(argv[1]), argv[2:])
    else:
        sys.stderr.write(__doc__)
        return 2
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
