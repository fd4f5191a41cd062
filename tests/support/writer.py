# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A stand-in for the offload scheduler's watermark writes, much faster: one INSERT every
``interval`` seconds with increasing pairs, each INSERT's duration recorded (its wait).

Used by the concurrency integration tests and by bench/watermark_bench.py.
"""
import datetime
import threading
import time

import psycopg2

T0 = datetime.datetime(2026, 2, 12)


class Writer(threading.Thread):
    def __init__(self, dsn, table="offload_watermarks", table_names=("b",), first_seq=0, interval=0.05):
        threading.Thread.__init__(self, daemon=True)
        self.conn = psycopg2.connect(**dsn)
        self.conn.autocommit = True
        self.table = table
        self.table_names = list(table_names)
        self.seq = first_seq
        self.interval = interval
        self.stop = threading.Event()
        self.done = []      # (id, sequence_number, seconds the INSERT took)
        self.errors = []

    def run(self):
        cur = self.conn.cursor()
        while not self.stop.is_set():
            self.seq += 1
            t = time.monotonic()
            try:
                cur.execute("INSERT INTO %s (table_name, max_timestamp, sequence_number) VALUES (%%s, %%s, %%s)"
                            " RETURNING id" % self.table,
                            (self.table_names[self.seq % len(self.table_names)],
                             T0 + datetime.timedelta(seconds=self.seq), self.seq))
                self.done.append((cur.fetchone()[0], self.seq, time.monotonic() - t))
            except psycopg2.Error as e:
                self.errors.append(str(e))
            time.sleep(max(0.0, self.interval - (time.monotonic() - t)))
        self.conn.close()

    def waits(self):
        return sorted(d[2] for d in self.done)

    def summary(self):
        w = self.waits()
        if not w:
            return {"inserts": 0, "errors": len(self.errors)}
        return {"inserts": len(w), "errors": len(self.errors),
                "p50_ms": round(w[len(w) // 2] * 1000, 2), "p99_ms": round(p99(w) * 1000, 2),
                "max_ms": round(w[-1] * 1000, 2)}


def p99(values):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(0.99 * (len(values) - 1))))]
