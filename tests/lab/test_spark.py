# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Spark in k2-spark-iceberg reads and writes the tables the scheduler writes (docs/spark.md).

One catalog for both engines: Spark's JdbcCatalog ``k2`` on the scheduler's pyiceberg sqlite
catalog. The runbook's post-incident duplicate check runs as docs/spark.md shows it; Spark and
pyiceberg count the same rows and find the same duplicated keys; Spark's repair of them (an
INSERT OVERWRITE) is what pyiceberg and the scheduler then build on.

Duplicates are planted with the lab's own ``labtool plant-duplicates`` (copies of existing cold
rows, the damage a regression's re-offload leaves) rather than with the ``regression`` fault:
that fault re-offloads hours of rows, which nothing here would remove, and later tests of the
session share this lab. The planted copies are removed again by Spark's write (or, if a step
before it failed, by ``labtool repair``).
"""
import re
import subprocess

import pytest

from k2lab import faults, lab

BINANCE, KRAKEN = lab.TABLES
# A show() of (sequence_number, count): header, its rules, and "|key|n|" rows.
SHOW_ROW = re.compile(r"^\|\s*(\d+)\|\s*(\d+)\|$")


def show_table(output):
    """The rows of the one ``show()`` table of (sequence_number, count) in ``output``."""
    lines = output.splitlines()
    starts = [i for i, line in enumerate(lines) if line.replace(" ", "") == "|sequence_number|count|"]
    assert len(starts) == 1, "expected one show() table of duplicates in:\n" + output[-3000:]
    rows = []
    for line in lines[starts[0] + 2:]:
        if line.startswith("+"):
            break
        m = SHOW_ROW.match(line.strip())
        assert m, line
        rows.append((int(m.group(1)), int(m.group(2))))
    return rows


def test_runbook_duplicate_check_answers(k2lab):
    """Post-Incident step 2 with --jars for --packages, its code on standard input."""
    proc = subprocess.run(lab.runbook_spark_shell_command(), input=lab.RUNBOOK_SPARK_CODE + "\n",
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                          timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    expected = lab.consistency([BINANCE])["tables"][BINANCE]
    rows = show_table(proc.stdout)
    # A healthy lab answers with the empty table; a lab an earlier test left damaged, with
    # exactly the keys the consistency checker (pyiceberg) finds.
    assert len(rows) == expected["duplicated_keys"], (rows, expected)
    assert {key for key, dummy in rows} >= set(expected["duplicated_sample"])


@pytest.mark.long
def test_runbook_dash_e_runs_nothing(k2lab):
    """The runbook's line as written (-e) starts the shell, runs nothing and exits 0: Spark
    3.5's REPL reads -i/-I files and standard input, never -e. Guards the claim in docs/spark.md."""
    out = lab.dexec(lab.SPARK, "spark-shell", *lab.RUNBOOK_SPARK_ARGS, "-e", lab.RUNBOOK_SPARK_CODE)
    assert "version 3.5" in out and "scala> :quit" in out
    assert "sequence_number" not in out


# make test-long and make cold-engines (test_cold_engines.py's Spark repair read back by pyiceberg)
@pytest.mark.long
def test_spark_and_pyiceberg_share_the_tables(k2lab):
    faults.inject("scheduler-stopped")  # so both engines count the same snapshot
    planted = []
    repaired_by_spark = False
    try:
        planted = lab.labtool("plant-duplicates", BINANCE, "7")
        before = lab.consistency()["tables"]
        rows = lab.spark_sql(
            "SELECT count(*) FROM cold.{b};"
            "SELECT count(*) FROM cold.{k};"
            "SELECT sequence_number, count(*) FROM cold.{b} GROUP BY sequence_number HAVING count(*) > 1;"
            # Spark writes: one commit keeping the first copy of every key.
            "INSERT OVERWRITE cold.{b} SELECT exchange_timestamp, sequence_number, symbol, side, price, quantity "
            "FROM (SELECT *, row_number() OVER (PARTITION BY sequence_number ORDER BY exchange_timestamp) AS k2_copy "
            "FROM cold.{b}) WHERE k2_copy = 1;"
            "SELECT count(*) FROM cold.{b}".format(b=BINANCE, k=KRAKEN))
        repaired_by_spark = True
        spark_binance, spark_kraken, after = int(rows[0][0]), int(rows[1][0]), int(rows[-1][0])
        spark_dups = {int(r[0]): int(r[1]) for r in rows[2:-1]}
        # Same rows, same duplicated keys, read by each engine (the planted ones, and any an
        # earlier test of the session left).
        assert spark_binance == before[BINANCE]["cold_rows"]
        assert spark_kraken == before[KRAKEN]["cold_rows"]
        assert set(planted) <= set(spark_dups)
        assert len(spark_dups) == before[BINANCE]["duplicated_keys"]
        assert set(before[BINANCE]["duplicated_sample"]) <= set(spark_dups)
        assert sum(n - 1 for n in spark_dups.values()) == before[BINANCE]["duplicated_rows"]
        # Spark's commit, read back by pyiceberg: every key once, no row lost.
        now = lab.consistency([BINANCE])["tables"][BINANCE]
        assert (now["duplicated_rows"], now["missing"]) == (0, before[BINANCE]["missing"]), now
        assert now["cold_rows"] == after == spark_binance - sum(n - 1 for n in spark_dups.values())
    finally:
        if planted and not repaired_by_spark:
            lab.labtool("repair", BINANCE, *map(str, planted))
        faults.heal("scheduler-stopped")
    # The scheduler's next append is committed on top of Spark's snapshot.
    lab.wait_for_new_watermarks(cycles=1)
    report = lab.consistency([BINANCE])["tables"][BINANCE]
    assert report["duplicated_rows"] == 0 and report["past_watermark"] == 0, report
    assert report["cold_rows"] > after
