# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The history the HTML report draws, as the modules read it: since when (a timestamp or a duration), and the
watermark entries watermark_info returns from the window it reads anyway."""
import datetime

import pytest

from ansible_collections.k2.iceberg_offload.plugins.module_utils.watermark import WatermarkError, parse_since
from ansible_collections.k2.iceberg_offload.plugins.module_utils.watermark_inspect import entries_since

NOW = datetime.datetime(2026, 2, 12, 12, 0, 0)


def test_since_is_a_timestamp_or_a_duration_before_now():
    assert parse_since("2026-02-12T10:00:00Z") == datetime.datetime(2026, 2, 12, 10, 0, 0)
    assert parse_since("2026-02-12 11:00:00+01:00") == datetime.datetime(2026, 2, 12, 10, 0, 0)
    assert parse_since("2h", now=NOW) == datetime.datetime(2026, 2, 12, 10, 0, 0)
    assert parse_since("1h30m", now=NOW) == datetime.datetime(2026, 2, 12, 10, 30, 0)
    with pytest.raises(WatermarkError, match="timestamp such as .* or a duration such as 2h"):
        parse_since("yesterday")


def rows(*minutes):
    """window_rows' shape, newest first: (id, max_timestamp, sequence_number, created_at)."""
    out = [(i, NOW, 100 + i, NOW - datetime.timedelta(minutes=m)) for i, m in enumerate(minutes)]
    return sorted(out, key=lambda r: r[3], reverse=True)


def test_entries_since_oldest_first_from_the_window():
    got = entries_since(rows(1, 5, 30, 90), 10, NOW - datetime.timedelta(minutes=60))
    assert [e["created_at"] for e in got["entries"]] == ["2026-02-12 11:30:00", "2026-02-12 11:55:00",
                                                         "2026-02-12 11:59:00"]
    assert got["entries_truncated"] is False and got["entries"][0]["id"] == 2


def test_entries_since_says_when_the_window_was_cut():
    # the window holds more than the limit (limit + 1 rows read) and all kept ones are after since
    got = entries_since(rows(1, 2, 3), 2, NOW - datetime.timedelta(minutes=60))
    assert len(got["entries"]) == 2 and got["entries_truncated"] is True
    assert entries_since([], 2, NOW) == {"entries": [], "entries_truncated": False}
