# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""When a recovery counts as verified (k2.iceberg_offload.watermark_wait)."""
import pytest

from ansible_collections.k2.iceberg_offload.plugins.module_utils.wait import WaitState


def info(*pairs, age=5.0):
    return {"table_exists": True, "tables": [
        {"table_name": t, "latest": {"max_timestamp": ts, "sequence_number": seq}, "age_seconds": age}
        for t, ts, seq in pairs]}


def test_first_look_is_the_baseline_and_one_advance_verifies():
    w = WaitState(["a"], cycle_seconds=10, cycles=2)
    assert w.timeout == 50 and w.poll == 2.5 and w.fresh_after == 20
    w.observe(info(("a", "2026-02-12 10:00:00", 5)), 0)
    assert not w.done()
    w.observe(info(("a", "2026-02-12 10:00:00", 5)), 3)
    assert not w.done()
    line = w.observe(info(("a", "2026-02-12 10:00:10", 9)), 6)
    assert w.done() and "ok" in line and "{" not in line
    r = w.report(6)
    assert r["verified"] and r["tables"]["a"]["advances"] == 1 and r["tries"] == 3


def test_given_baseline_and_entries_we_wrote_do_not_count():
    w = WaitState(["a"], baseline={"a": {"max_timestamp": "2026-02-12 10:00:10", "sequence_number": 9, "id": 3}},
                  cycle_seconds=900)
    w.observe(info(("a", "2026-02-12 10:00:10", 9)), 0)
    assert not w.done()
    w.observe(info(("a", "2026-02-12 10:00:11", 1)), 1)
    assert w.done()


def test_stale_or_regressing_watermarks_do_not_verify():
    w = WaitState(["a"], cycle_seconds=10)
    w.observe(info(("a", "2026-02-12 10:00:00", 5)), 0)
    w.observe(info(("a", "2026-02-12 10:00:01", 5), age=500), 1)
    assert not w.done()
    w = WaitState(["a"], cycle_seconds=10, advances=1)
    w.observe(info(("a", "2026-02-12 10:00:00", 5)), 0)
    w.observe(info(("a", "2026-02-12 10:00:05", 5)), 1)
    w.observe(info(("a", "2026-02-12 10:00:02", 5)), 2)
    assert not w.done()
    r = w.report(30)
    assert not r["verified"] and "regressed" in r["msg"] and "NOT verified" in r["msg"]


def test_three_cycles_of_progress_and_errors_are_reported():
    w = WaitState(["a", "b"], cycle_seconds=10, cycles=3.5, advances=3)
    w.observe({"failed": True, "msg": "could not connect"}, 0)
    for i in range(4):
        w.observe(info(("a", "2026-02-12 10:00:0%d" % i, 1), ("b", "2026-02-12 10:00:00", 1)), i)
    r = w.report(40)
    assert r["tables"]["a"]["advances"] == 3 and r["tables"]["a"]["verified"]
    assert not r["verified"] and "b latest" in r["msg"] and "could not connect" in r["msg"]


def test_bad_options():
    for kw in ({"cycle_seconds": 0}, {"cycles": "x"}, {"advances": 0}, {"baseline": {"a": {"x": 1}}},
               {"poll": True}):
        with pytest.raises(ValueError):
            WaitState(["a"], **kw)
