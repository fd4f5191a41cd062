# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Prometheus' range query of the watermark age (the HTML report's age chart)."""
from ansible_collections.k2.iceberg_offload.plugins.module_utils import prometheus as p


class FakeClient(object):
    def __init__(self, series=None, error=None):
        self.series = series or []
        self.error = error
        self.asked = []

    def query_range(self, expr, start, end, step):
        self.asked.append((expr, start, end, step))
        if self.error:
            raise p.PrometheusError(self.error)
        return self.series


def test_step_fits_the_points():
    assert p.range_step(0, 600, 240) == 3
    assert p.range_step(0, 100, 240) == 1
    assert p.range_step(0, 86400 * 30, 10 ** 6) == 236  # Prometheus' 11,000 points at most


def test_age_history_is_the_alerts_expression_over_the_range():
    client = FakeClient([
        {"metric": {"table": "a"}, "values": [[100, "5"], [110, "15"]]},
        {"metric": {"table": "a", "instance": "second"}, "values": [[105, "10"]]},
        {"metric": {"table": "other"}, "values": [[100, "1"]]},
        {"metric": {}, "values": [[100, "1"]]},
        {"metric": {"table": "b"}, "values": [[100, "NaN?"], [110, "2"]]},
    ])
    out = p.age_history(client, 100, 400, tables=["a", "b"])
    assert client.asked == [("time() - watermark_timestamp_seconds", 100, 400, 2)]
    assert out["error"] is None and out["step"] == 2
    assert out["tables"] == {"a": [[100.0, 5.0], [105.0, 10.0], [110.0, 15.0]], "b": [[110.0, 2.0]]}


def test_age_history_never_raises():
    out = p.age_history(FakeClient(error="Prometheus at http://h:9090 did not answer"), 0, 60)
    assert out["tables"] == {} and "did not answer" in out["error"]
    assert "empty" in p.age_history(FakeClient(), 60, 60)["error"]
