# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Feed each bronze_trades_* table a few trades per second.

Sequence numbers increase strictly per table and several trades share a
second-precision exchange_timestamp, as on a real exchange feed. Pause the
feed by creating /tmp/k2-generator-paused (tests use it to get a quiet source).
"""
import os
import random
import sys
import time
import urllib.parse
import urllib.request

URL = "http://127.0.0.1:8123/"
SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT")
PAUSE_FLAG = "/tmp/k2-generator-paused"


def query(sql, data=None):
    req = urllib.request.Request(URL + "?query=" + urllib.parse.quote(sql), data=data)
    with urllib.request.urlopen(req, timeout=30) as resp:
        return resp.read().decode()


def main(tables):
    seq = {t: int(query("SELECT max(sequence_number) FROM default.%s" % t).strip() or 0)
           for t in tables}
    rng = random.Random(42)
    while True:
        tick = time.time()
        if not os.path.exists(PAUSE_FLAG):
            ts = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(tick))
            for t in tables:
                lines = []
                for _ in range(rng.randint(1, 4)):
                    seq[t] += 1
                    lines.append("%s\t%d\t%s\t%s\t%.2f\t%.4f" % (
                        ts, seq[t], rng.choice(SYMBOLS), rng.choice(("buy", "sell")),
                        40000 + rng.random() * 100, rng.random()))
                try:
                    query("INSERT INTO default.%s FORMAT TabSeparated" % t,
                          ("\n".join(lines) + "\n").encode())
                except Exception as exc:  # keep feeding; a lost batch only leaves a gap in sequence numbers
                    sys.stderr.write("generator: insert into %s failed: %s\n" % (t, exc))
        time.sleep(max(0.0, 1.0 - (time.time() - tick)))


if __name__ == "__main__":
    main(sys.argv[1:])
