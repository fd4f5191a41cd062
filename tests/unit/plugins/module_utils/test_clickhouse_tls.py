# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""TLS handling of the ClickHouse client against a real TLS socket on 127.0.0.1.

The server is a stand-in that answers like ClickHouse's HTTP interface (ClickHouse 18.16
from Debian would need its own OpenSSL set-up); what is under test is certificate
verification in the client: refused without the CA, accepted with clickhouse_ca_cert,
accepted with clickhouse_validate_certs=false.
"""
import http.server
import json
import shutil
import ssl
import subprocess
import threading

import pytest

from ansible_collections.k2.iceberg_offload.plugins.module_utils import clickhouse as ch

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl CLI not installed")


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 (http.server's naming)
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = json.dumps({"data": [["18.16.1", "Etc/UTC", 1770890400]]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory):
    d = tmp_path_factory.mktemp("tls")
    key, cert = str(d / "key.pem"), str(d / "cert.pem")
    subprocess.check_call(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                           "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                           "-keyout", key, "-out", cert], stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
    httpd = http.server.HTTPServer(("127.0.0.1", 0), _Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield {"url": "https://127.0.0.1:%d" % httpd.server_address[1], "ca": cert}
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_unknown_ca_is_refused_with_a_hint(tls_server):
    client = ch.ClickHouseClient(url=tls_server["url"])
    with pytest.raises(ch.ClickHouseError) as e:
        client.server_info()
    assert "TLS verification" in str(e.value) and "clickhouse_ca_cert" in str(e.value)


def test_ca_cert_makes_it_verify(tls_server):
    client = ch.ClickHouseClient(url=tls_server["url"], ca_cert=tls_server["ca"])
    assert client.server_info()["version"] == "18.16.1"


def test_validate_certs_false_skips_verification(tls_server):
    client = ch.ClickHouseClient(url=tls_server["url"], validate_certs=False)
    assert client.server_info()["timezone"] == "Etc/UTC"
