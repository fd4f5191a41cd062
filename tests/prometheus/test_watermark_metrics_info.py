# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""watermark_metrics_info (and module_utils/prometheus.py) against a real Prometheus 2.42 started here:
an exporter on 127.0.0.1 serves one fresh and one stale watermark, a second scrape job points at a
port nothing listens on. The module must return each table's age, the table with no series, the alert
firing for the stale one, the failing scrape target with its error (runbook "metric not updating"),
and an unreachable Prometheus as a fact, with no password of its URL in the answer."""
import http.server
import os
import shutil
import socket
import subprocess
import threading
import time
import urllib.request

import pytest

from tests.support.ansible_module import run_module

PROMETHEUS = shutil.which("prometheus")
pytestmark = pytest.mark.skipif(PROMETHEUS is None, reason="prometheus not installed (make setup installs it)")

RULES = """groups:
  - name: k2
    rules:
      - alert: IcebergOffloadWatermarkStale
        expr: (time() - watermark_timestamp_seconds) > 3600
        for: 0s
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Exporter(object):
    """The watermark exporter's two series: table fresh (30 s old) and table stale (2 h old)."""

    def __init__(self):
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # pylint: disable=invalid-name
                now = time.time()
                body = ('watermark_timestamp_seconds{table="fresh"} %.3f\n'
                        'watermark_timestamp_seconds{table="stale"} %.3f\n' % (now - 30, now - 7200)).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                outer.scrapes += 1

            def log_message(self, *args):
                pass

        self.scrapes = 0
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory):
    work = tmp_path_factory.mktemp("prometheus")
    dead = free_port()
    with Exporter() as exporter:
        (work / "rules.yml").write_text(RULES)
        (work / "prometheus.yml").write_text("""global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files: [%s]
scrape_configs:
  - job_name: iceberg-offload
    static_configs: [{targets: ['127.0.0.1:%d']}]
  - job_name: iceberg-offload-replica
    static_configs: [{targets: ['127.0.0.1:%d']}]
""" % (work / "rules.yml", exporter.port, dead))
        port = free_port()
        log = open(str(work / "prometheus.log"), "w")
        proc = subprocess.Popen([PROMETHEUS, "--config.file=%s" % (work / "prometheus.yml"),
                                 "--storage.tsdb.path=%s" % (work / "data"), "--web.listen-address=127.0.0.1:%d" % port],
                                stdout=log, stderr=subprocess.STDOUT)
        url = "http://127.0.0.1:%d" % port
        try:
            deadline = time.time() + 60
            while time.time() < deadline:
                try:
                    if b"firing" in urllib.request.urlopen(url + "/api/v1/alerts", timeout=2).read() and \
                            b'"down"' in urllib.request.urlopen(url + "/api/v1/targets", timeout=2).read():
                        break
                except OSError:
                    pass
                time.sleep(0.5)
            else:
                raise AssertionError("Prometheus did not come up: %s" % open(str(work / "prometheus.log")).read()[-2000:])
            yield {"url": url, "dead_port": dead}
        finally:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
            log.close()


def test_ages_the_missing_series_and_the_firing_alert(prometheus):
    r = run_module("watermark_metrics_info", {"prometheus_url": prometheus["url"],
                                              "tables": ["fresh", "stale", "lost"]})
    assert r["reachable"] and not r["failed"], r
    assert 25 < r["ages"]["fresh"] < 120 and 7100 < r["ages"]["stale"] < 7300, r["ages"]
    assert r["missing_tables"] == ["lost"]
    assert r["firing_tables"] == ["stale"] and r["alert_active_since"]


def test_a_failing_scrape_is_named_with_its_error(prometheus):
    r = run_module("watermark_metrics_info", {"prometheus_url": prometheus["url"], "tables": ["fresh"]})
    down = [t for t in r["unhealthy_targets"] if t["job"] == "iceberg-offload-replica"]
    assert down and down[0]["health"] == "down" and "refused" in down[0]["last_error"], r["unhealthy_targets"]
    assert down[0]["instance"] == "127.0.0.1:%d" % prometheus["dead_port"]
    assert [t["job"] for t in r["targets"] if t["health"] == "up"] == ["iceberg-offload"]


def test_an_unreachable_prometheus_is_a_fact_without_its_password():
    secret = "K2promPw" + os.urandom(4).hex()
    r = run_module("watermark_metrics_info", {"prometheus_url": "http://k2reader:%s@127.0.0.1:%d" % (secret, free_port()),
                                              "prometheus_token": "K2promToken" + secret, "timeout": 2})
    assert not r["failed"] and r["reachable"] is False and r["error"], r
    assert secret not in str(r) and "k2reader:********@" in r["error"]
    bad = run_module("watermark_metrics_info", {"prometheus_url": "ftp://127.0.0.1:1"})
    assert bad["failed"] and "http:// or https://" in bad["msg"]
