# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A stand-in for the offload scheduler's Iceberg appends, in a process of its own.

    python -m tests.support.iceberg_writer --root R --table cold.t --first-seq N --rows K \
        [--count C] [--interval S] [--stop-file F] [--log L] [--catalog-name default]

Appends ``--rows`` trades (tests.support.iceberg_warehouse.trades, sequences from
``--first-seq`` on) ``--count`` times (or until ``--stop-file`` exists), ``--interval``
seconds apart, each append one commit through the SQL catalog with the offload's
watermark properties, as the lab's offload job does (pyiceberg ``append``, which
retries its own commit on a conflict). ``--step`` is how far the first sequence
moves between appends (default ``--rows``: new keys each time; 0 re-appends the same
keys, a re-offload). Each committed append is a JSON line in ``--log``:
``{"first_seq", "rows", "snapshot_id"}``; errors are ``{"error": ...}`` lines.
"""
import argparse
import json
import os
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
for p in (os.path.join(REPO, ".collections"), REPO):
    if p not in sys.path:
        sys.path.insert(0, p)

from pyiceberg.catalog.sql import SqlCatalog  # noqa: E402  pylint: disable=wrong-import-position

from tests.support.iceberg_warehouse import catalog_properties, max_pair_of, trades  # noqa: E402  pylint: disable=wrong-import-position


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
    ap.add_argument("--root", required=True)
    ap.add_argument("--table", required=True)
    ap.add_argument("--catalog-name", default="default")
    ap.add_argument("--first-seq", type=int, required=True)
    ap.add_argument("--rows", type=int, default=100)
    ap.add_argument("--step", type=int)
    ap.add_argument("--count", type=int, default=1)
    ap.add_argument("--interval", type=float, default=0.0)
    ap.add_argument("--stop-file")
    ap.add_argument("--log")
    args = ap.parse_args(argv)
    step = args.rows if args.step is None else args.step
    catalog = SqlCatalog(args.catalog_name, **catalog_properties(args.root))
    out = open(args.log, "a") if args.log else sys.stdout
    seq = args.first_seq
    done = 0
    while done < args.count:
        if args.stop_file and os.path.exists(args.stop_file):
            break
        data = trades(seq, args.rows)
        pair = max_pair_of(data)
        try:
            table = catalog.load_table(args.table)
            table.append(data, snapshot_properties={
                "k2.watermark.max_timestamp": pair[0].isoformat(sep=" "),
                "k2.watermark.sequence_number": str(pair[1]),
                "k2.source_table": "writer",
            })
            out.write(json.dumps({"first_seq": seq, "rows": args.rows,
                                  "snapshot_id": table.current_snapshot().snapshot_id}) + "\n")
        except Exception as e:  # reported to the test, which fails on any
            out.write(json.dumps({"error": "%s: %s" % (type(e).__name__, e)}) + "\n")
        out.flush()
        seq += step
        done += 1
        if args.interval:
            time.sleep(args.interval)
    return 0


def read_log(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


if __name__ == "__main__":
    sys.exit(main())
