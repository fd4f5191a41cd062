# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Prometheus metrics of the watermark, as the runbook's dashboards use them.

watermark_timestamp_seconds{table}  Unix time of the latest watermark entry (its created_at).
offload_lag_minutes{table}          minutes between now and the latest watermark's max_timestamp.

When PostgreSQL cannot be read, the last values read are served, so the age
(time() - watermark_timestamp_seconds) keeps growing as it would in production;
k2_watermark_exporter_up says whether the last read worked.
"""

import http.server
import os
import time

import k2common as k2

CACHE = {}
STATE = {"up": 0, "error": ""}


def refresh(cfg):
    try:
        conn = k2.pg_connect(cfg)
        try:
            for t in cfg["tables"]:
                row = k2.latest_watermark(conn, cfg, t)
                if row is not None:
                    CACHE[t] = (k2.utc(row[2]).timestamp(), k2.utc(row[0]).timestamp())
        finally:
            conn.close()
        STATE.update(up=1, error="")
    except Exception as exc:
        STATE.update(up=0, error=str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc))


def render(cfg):
    now = time.time()
    out = [
        "# HELP watermark_timestamp_seconds Unix time of the latest offload watermark entry.",
        "# TYPE watermark_timestamp_seconds gauge",
    ]
    for t, (created, _) in sorted(CACHE.items()):
        out.append('watermark_timestamp_seconds{table="%s"} %.3f' % (t, created))
    out += ["# HELP offload_lag_minutes Minutes between now and the latest watermark's max_timestamp.",
            "# TYPE offload_lag_minutes gauge"]
    for t, (_, max_ts) in sorted(CACHE.items()):
        out.append('offload_lag_minutes{table="%s"} %.3f' % (t, (now - max_ts) / 60.0))
    out += ["# HELP k2_watermark_exporter_up 1 when the last read of the watermark table worked.",
            "# TYPE k2_watermark_exporter_up gauge",
            "k2_watermark_exporter_up %d" % STATE["up"]]
    return ("\n".join(out) + "\n").encode()


def main():
    cfg = k2.load_env()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path.split("?")[0] != "/metrics":
                self.send_error(404)
                return
            refresh(cfg)
            body = render(cfg)
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    port = int(os.environ.get("K2_EXPORTER_PORT", "9188"))
    http.server.ThreadingHTTPServer(("0.0.0.0", port), Handler).serve_forever()


if __name__ == "__main__":
    main()
