# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Pair ordering, target strategies, reset plans, cleanup option checks."""
import datetime

import pytest

from ansible_collections.k2.iceberg_offload.plugins.module_utils.watermark import (
    Watermark, WatermarkError, make_watermark, parse_signed_duration)
from ansible_collections.k2.iceberg_offload.plugins.module_utils import watermark_plan as wp

T = datetime.datetime


def wm(ts, seq):
    return make_watermark(ts, seq)


def test_pairs_compare_lexicographically():
    assert wm("2026-02-12T10:00:00Z", 1) > wm("2026-02-12T09:59:59Z", 10 ** 12)
    assert wm("2026-02-12T10:00:00Z", 6) > wm("2026-02-12T10:00:00Z", 5)
    assert wm("2026-02-12T12:00:00+02:00", 5) == wm("2026-02-12 10:00:00", 5)


def test_signed_durations():
    assert parse_signed_duration("-1h") == -3600
    assert parse_signed_duration("+15m") == 900
    assert parse_signed_duration(-90) == -90
    for bad in ("", "-", "0", "-0s", "1 hour", True, None, "--1h"):
        with pytest.raises(WatermarkError):
            parse_signed_duration(bad)


def test_safe_point_is_a_pair_that_exists_not_per_column_maxima():
    # Two rows: (10:00, 500) and a corrupted (09:00, 900). The runbook's MAX/MAX gives
    # (10:00, 900), which no row holds and which would skip rows 501..900 at 10:00.
    rows = [wm("2026-02-12T10:00:00", 500), wm("2026-02-12T09:00:00", 900)]
    facts = wp.TableFacts("b", latest=rows[1], greatest=max(rows), entries=2)
    target = wp.compute_target("safe_point", {}, facts)
    assert target == rows[0]
    runbook = Watermark(max(r.max_timestamp for r in rows), max(r.sequence_number for r in rows))
    assert runbook not in rows


def test_safe_point_without_entries_is_refused():
    with pytest.raises(WatermarkError, match="no watermark entries"):
        wp.compute_target("safe_point", {}, wp.TableFacts("b"))


def test_pair_strategy_needs_both_values_and_validates_them():
    facts = wp.TableFacts("b")
    assert wp.compute_target("pair", {"max_timestamp": "2026-02-12T10:00:00Z", "sequence_number": 7}, facts) \
        == Watermark(T(2026, 2, 12, 10), 7)
    with pytest.raises(WatermarkError):
        wp.compute_target("pair", {"max_timestamp": "2026-02-12T10:00:00Z"}, facts)
    for bad_ts in ("yesterday", "2026-13-01", "1969-12-31T23:59:59Z", "'; DROP TABLE x; --"):
        with pytest.raises(WatermarkError):
            wp.compute_target("pair", {"max_timestamp": bad_ts, "sequence_number": 1}, facts)
    for bad_seq in (-1, 2 ** 63, True):
        with pytest.raises(WatermarkError):
            wp.compute_target("pair", {"max_timestamp": "2026-02-12T10:00:00Z", "sequence_number": bad_seq}, facts)


def test_shift_by_moves_timestamp_keeps_sequence_unless_given():
    latest = Watermark(T(2026, 2, 12, 10), 500)
    facts = wp.TableFacts("b", latest=latest, greatest=latest, entries=3)
    assert wp.compute_target("shift_by", {"shift_by": "-1h"}, facts) == Watermark(T(2026, 2, 12, 9), 500)
    assert wp.compute_target("shift_by", {"shift_by": "+30m", "sequence_number": 0}, facts) == \
        Watermark(T(2026, 2, 12, 10, 30), 0)
    with pytest.raises(WatermarkError, match="before 1970"):
        wp.compute_target("shift_by", {"shift_by": "-100000d"}, facts)
    with pytest.raises(WatermarkError, match="no watermark entry"):
        wp.compute_target("shift_by", {"shift_by": "-1h"}, wp.TableFacts("b"))


def test_unknown_strategy():
    with pytest.raises(WatermarkError, match="unknown strategy"):
        wp.compute_target("lookback", {}, wp.TableFacts("b"))


def test_plan_append_and_idempotence():
    cur = Watermark(T(2026, 2, 12, 10), 5)
    facts = wp.TableFacts("b", latest=cur, greatest=cur, entries=4)
    same = wp.plan_reset(facts, cur, "append", False)
    assert same["action"] == "none" and same["refused"] is None
    fwd = wp.plan_reset(facts, Watermark(T(2026, 2, 12, 10), 6), "append", False)
    assert fwd["action"] == "append" and not fwd["backward"] and fwd["entries_deleted"] == 0


def test_plan_replace_is_a_noop_only_with_exactly_the_one_entry():
    cur = Watermark(T(2026, 2, 12, 10), 5)
    assert wp.plan_reset(wp.TableFacts("b", cur, cur, 1), cur, "replace", False)["action"] == "none"
    p = wp.plan_reset(wp.TableFacts("b", cur, cur, 3), cur, "replace", False)
    assert p["action"] == "replace" and p["entries_deleted"] == 3


def test_backward_is_refused_unless_allowed():
    cur = Watermark(T(2026, 2, 12, 10), 5)
    back = Watermark(T(2026, 2, 12, 10), 4)
    p = wp.plan_reset(wp.TableFacts("b", cur, cur, 1), back, "append", False)
    assert p["backward"] and "allow_backward" in p["refused"]
    p = wp.plan_reset(wp.TableFacts("b", cur, cur, 1), back, "append", True)
    assert p["backward"] and p["refused"] is None and p["action"] == "append"


def test_first_entry_is_never_backward():
    p = wp.plan_reset(wp.TableFacts("b"), Watermark(T(2026, 1, 1), 0), "append", False)
    assert p["action"] == "append" and p["before"] is None and not p["backward"]


def test_bad_mode():
    with pytest.raises(WatermarkError):
        wp.plan_reset(wp.TableFacts("b"), Watermark(T(2026, 1, 1), 0), "upsert", False)


@pytest.mark.parametrize("keep,older,dups", [(None, None, False), (0, None, False), (-5, None, False),
                                             (True, None, False), (None, "0s", False), (None, "-1d", False),
                                             (None, "soon", False), ("10", None, False)])
def test_cleanup_validation_refuses(keep, older, dups):
    with pytest.raises(WatermarkError):
        wp.validate_cleanup(keep, older, dups)


def test_cleanup_validation_accepts():
    assert wp.validate_cleanup(10, None, False) is None
    assert wp.validate_cleanup(None, "7d", False) == 7 * 86400
    assert wp.validate_cleanup(None, None, True) is None


def test_default_backup_name_fits_63_and_keeps_schema():
    now = T(2026, 2, 12, 11, 2, 3)
    assert wp.default_backup_name(("offload_watermarks",), now) == ("offload_watermarks_backup_20260212_110203",)
    long = wp.default_backup_name(("s", "x" * 63), now)
    assert long[0] == "s" and len(long[1]) == 63 and long[1].endswith("_backup_20260212_110203")


# -- analyse_window: the findings watermark_info reports --------------------------------------------
def _rows(spec):
    """spec: (minutes after 08:00 created, ts hour, seq) -> rows newest first, as window_rows returns."""
    base = datetime.datetime(2026, 2, 12, 8)
    rows = [(i + 1, datetime.datetime(2026, 2, 12, h), s, base + datetime.timedelta(minutes=m))
            for i, (m, h, s) in enumerate(spec)]
    return sorted(rows, key=lambda r: (r[3], r[0]), reverse=True)


def test_analyse_window_gaps_regressions_and_pairs():
    rows = _rows([(0, 5, 50), (15, 5, 60), (135, 7, 80), (150, 6, 70), (151, 7, 90), (152, 7, 90)])
    out = wp.analyse_window(rows, gap_seconds=1800, burst_threshold=10)
    assert out["gap_count"] == 1 and out["gaps"][0]["seconds"] == 7200.0
    assert out["regression_count"] == 1
    assert out["regressions"][0]["previous"]["sequence_number"] == 80
    assert out["regressions"][0]["entry"]["sequence_number"] == 70
    assert out["duplicate_pairs"] == [{"max_timestamp": "2026-02-12 07:00:00", "sequence_number": 90, "entries": 2}]
    assert out["duplicate_bursts"] == []


def test_analyse_window_bursts_count_the_trailing_hour_with_peers():
    rows = _rows([(m, 7, m) for m in range(0, 12)] + [(200, 8, 500)] + [(300 + m // 2, 9, 600 + m) for m in range(12)])
    out = wp.analyse_window(rows, gap_seconds=1800, burst_threshold=10)
    assert [b["max_entries_per_hour"] for b in out["duplicate_bursts"]] == [12, 12]
    assert out["duplicate_bursts"][0]["first"] > out["duplicate_bursts"][1]["last"]  # most recent first


def test_analyse_window_limits_lists_but_counts_all():
    rows = _rows([(m, 10 - (m % 2), m) for m in range(0, 100)])
    out = wp.analyse_window(rows, gap_seconds=1800, burst_threshold=1000, limit=5)
    assert out["regression_count"] == 50 and len(out["regressions"]) == 5


def test_window_entries_limit():
    assert wp.window_entries_limit(86400, 900) == 1000
    assert wp.window_entries_limit(7 * 86400, 60) == 100800
    assert wp.window_entries_limit(86400, 900, 50) == 50


def test_regressions_only_is_a_cleanup_rule():
    assert wp.validate_cleanup(None, None, False, True) is None
    with pytest.raises(wp.WatermarkError, match="regressions_only"):
        wp.validate_cleanup(None, None, False, False)
