# -*- coding: utf-8 -*-
# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Prometheus' HTTP API, read the way runbook Diagnosis step 1 reads it.

Private to this collection. ``watermark_facts`` never raises for an unreachable or
misbehaving Prometheus: a diagnosis goes on without it, and says so.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import re

from ansible.module_utils.six.moves.urllib.parse import urlencode
from ansible.module_utils.urls import open_url

from ansible_collections.k2.iceberg_offload.plugins.module_utils.redaction import redact_urls

_METRIC_RE = re.compile(r"\A[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
_LABEL_RE = re.compile(r"\A[a-zA-Z_][a-zA-Z0-9_]*\Z")


class PrometheusError(Exception):
    pass


def check_names(metric, label, alert_name):
    if not _METRIC_RE.match(metric or ""):
        raise PrometheusError("metric %r is not a Prometheus metric name" % (metric,))
    if not _LABEL_RE.match(label or ""):
        raise PrometheusError("table_label %r is not a Prometheus label name" % (label,))
    if not alert_name or any(c in alert_name for c in "\"'{}\\\n"):
        raise PrometheusError("alert_name %r is not a plain alert name" % (alert_name,))


class PrometheusClient(object):
    def __init__(self, url, timeout=5, validate_certs=True, token=None, ca_path=None):
        if not url or not url.startswith(("http://", "https://")):
            raise PrometheusError("prometheus_url must be an http:// or https:// URL, got %r"
                                  % (redact_urls(url or ""),))
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.validate_certs = validate_certs
        self.headers = {"Authorization": "Bearer %s" % token} if token else {}
        self.ca_path = ca_path

    def get(self, path, params=None):
        url = self.url + path + ("?" + urlencode(params) if params else "")
        try:
            resp = open_url(url, headers=self.headers, timeout=self.timeout,
                            validate_certs=self.validate_certs, ca_path=self.ca_path)
            body = resp.read()
        except Exception as e:  # HTTPError, URLError, socket errors, SSL errors
            text = getattr(e, "reason", None) or e
            raise PrometheusError("Prometheus at %s did not answer %s: %s"
                                  % (redact_urls(self.url), path, str(text)[:300]))
        try:
            data = json.loads(body)
        except ValueError:
            raise PrometheusError("Prometheus at %s answered %s with something that is not JSON"
                                  % (redact_urls(self.url), path))
        if data.get("status") != "success":
            raise PrometheusError("Prometheus at %s: %s: %s" % (
                redact_urls(self.url), data.get("errorType"), data.get("error")))
        return data.get("data")

    def query(self, expr):
        data = self.get("/api/v1/query", {"query": expr})
        return data.get("result", []) if isinstance(data, dict) else []

    def query_range(self, expr, start, end, step):
        """A range query (``/api/v1/query_range``); start and end in Unix seconds, step in seconds."""
        data = self.get("/api/v1/query_range", {"query": expr, "start": "%.3f" % start, "end": "%.3f" % end,
                                                "step": "%gs" % step})
        return data.get("result", []) if isinstance(data, dict) else []

    def alerts(self):
        data = self.get("/api/v1/alerts")
        return data.get("alerts", []) if isinstance(data, dict) else []

    def targets(self):
        data = self.get("/api/v1/targets", {"state": "active"})
        return data.get("activeTargets", []) if isinstance(data, dict) else []


def _float(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def watermark_facts(client, metric="watermark_timestamp_seconds", table_label="table",
                    alert_name="IcebergOffloadWatermarkStale", tables=None):
    """Per-table watermark age (``time() - metric``) and the alert's state; never raises."""
    out = {"reachable": False, "error": None, "ages": {}, "alerts": [], "firing_tables": [],
           "pending_tables": [], "alert_active_since": None, "missing_tables": [], "targets": [],
           "unhealthy_targets": []}
    try:
        series = client.query("time() - %s" % metric)
        alerts = client.alerts()
    except PrometheusError as e:
        out["error"] = str(e)
        return out
    out["reachable"] = True
    for s in series:
        name = (s.get("metric") or {}).get(table_label)
        value = s.get("value") or [None, None]
        if name is not None:
            out["ages"][name] = _float(value[1])
    for a in alerts:
        labels = a.get("labels") or {}
        if labels.get("alertname") != alert_name:
            continue
        item = {"table": labels.get(table_label), "state": a.get("state"), "active_at": a.get("activeAt"),
                "value": _float(a.get("value")), "labels": labels}
        out["alerts"].append(item)
        if item["state"] == "firing":
            out["firing_tables"].append(item["table"])
            if item["active_at"] and (out["alert_active_since"] is None or item["active_at"] < out["alert_active_since"]):
                out["alert_active_since"] = item["active_at"]
        elif item["state"] == "pending":
            out["pending_tables"].append(item["table"])
    if tables:
        out["missing_tables"] = [t for t in tables if t not in out["ages"]]
    # Scrape health ("metric not updating" while the watermarks are fresh is a broken exporter or scrape).
    try:
        targets = client.targets()
    except PrometheusError as e:
        out["targets_error"] = str(e)
        targets = []
    for t in targets[:100]:
        labels = t.get("labels") or {}
        item = {"job": labels.get("job"), "instance": labels.get("instance"), "health": t.get("health"),
                "last_error": (t.get("lastError") or "")[:300] or None, "last_scrape": t.get("lastScrape"),
                "scrape_url": redact_urls(t.get("scrapeUrl") or "")}
        out["targets"].append(item)
        if item["health"] != "up":
            out["unhealthy_targets"].append(item)
    return out


# Prometheus refuses a range query of more than 11,000 points per series.
MAX_RANGE_POINTS = 11000


def range_step(start, end, points):
    """The step (whole seconds, at least 1) that draws [start, end] in at most ``points`` points."""
    points = max(2, min(int(points), MAX_RANGE_POINTS))
    span = max(0.0, float(end) - float(start))
    return max(1, int(-(-span // (points - 1))))


def age_history(client, start, end, metric="watermark_timestamp_seconds", table_label="table", points=240,
                tables=None):
    """Each table's watermark age (``time() - metric``) from ``start`` to ``end`` (Unix seconds), the alert's
    own expression evaluated over a range. Never raises: a Prometheus that does not answer is ``error``.

    Returns ``start``, ``end``, ``step`` and ``tables`` ({table: [[unix time, age seconds], ...]}, oldest
    first; a series with no sample in the range, such as an exporter that stopped, is missing or has gaps)."""
    step = range_step(start, end, points)
    out = {"start": start, "end": end, "step": step, "tables": {}, "error": None}
    if end <= start:
        out["error"] = "the range is empty (start %s is not before end %s)" % (start, end)
        return out
    try:
        series = client.query_range("time() - %s" % metric, start, end, step)
    except PrometheusError as e:
        out["error"] = str(e)
        return out
    for s in series:
        name = (s.get("metric") or {}).get(table_label)
        if name is None or (tables and name not in tables):
            continue
        values = []
        for pair in s.get("values") or []:
            age = _float(pair[1]) if len(pair) > 1 else None
            when = _float(pair[0])
            if age is not None and when is not None:
                values.append([when, age])
        # two series of one table (two exporters, a relabelling) are drawn as one
        out["tables"][name] = sorted(out["tables"].get(name, []) + values)
    return out
