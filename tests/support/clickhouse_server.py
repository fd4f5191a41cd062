# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A throwaway ClickHouse server for tests and benchmarks (Debian's clickhouse-server).

It listens on 127.0.0.1 only (HTTP 28123, TCP 29000, interserver 29009 unless
told otherwise), keeps its data in a temporary directory, runs in UTC as the
``clickhouse`` user when started as root, and is stopped by its PID.

``K2_TEST_CH_URL`` (e.g. ``http://127.0.0.1:18123`` for the lab) makes the
tests use an existing server instead; they then work in their own database.
"""
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import requests

SERVER_BIN = shutil.which("clickhouse-server", path="/usr/sbin:/usr/bin:" + os.environ.get("PATH", "")) or "/usr/sbin/clickhouse-server"
CLIENT_BIN = "/usr/bin/clickhouse-client"

TEST_USER = "k2_reader"
TEST_PASSWORD = "s3cret'pass\"word"
# A second read-only user whose password is distinctive enough to grep every output for
# (tests/integration/test_secrets.py); letters and digits only, so no encoding hides it.
SECRET_USER = "k2_secret_reader"
SECRET_PASSWORD = "K2chSecretZq7Xw41"

_CONFIG = """<?xml version="1.0"?>
<yandex>
  <logger>
    <level>warning</level>
    <log>{root}/log/server.log</log>
    <errorlog>{root}/log/error.log</errorlog>
    <size>10M</size>
    <count>1</count>
  </logger>
  <listen_host>127.0.0.1</listen_host>
  <http_port>{http_port}</http_port>
  <tcp_port>{tcp_port}</tcp_port>
  <interserver_http_port>{interserver_port}</interserver_http_port>
  <interserver_http_host>127.0.0.1</interserver_http_host>
  <max_connections>256</max_connections>
  <keep_alive_timeout>3</keep_alive_timeout>
  <max_concurrent_queries>50</max_concurrent_queries>
  <uncompressed_cache_size>268435456</uncompressed_cache_size>
  <mark_cache_size>268435456</mark_cache_size>
  <path>{root}/data/</path>
  <tmp_path>{root}/tmp/</tmp_path>
  <user_files_path>{root}/user_files/</user_files_path>
  <format_schema_path>{root}/format_schemas/</format_schema_path>
  <users_config>{root}/users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <timezone>UTC</timezone>
  <mlock_executable>false</mlock_executable>
</yandex>
"""

_USERS = """<?xml version="1.0"?>
<yandex>
  <profiles>
    <default>
      <max_memory_usage>4000000000</max_memory_usage>
      <load_balancing>random</load_balancing>
    </default>
    <readonly><readonly>1</readonly></readonly>
  </profiles>
  <users>
    <default>
      <password></password>
      <networks><ip>127.0.0.1</ip></networks>
      <profile>default</profile>
      <quota>default</quota>
    </default>
    <{user}>
      <password>{password}</password>
      <networks><ip>127.0.0.1</ip></networks>
      <profile>readonly</profile>
      <quota>default</quota>
    </{user}>
    <{secret_user}>
      <password>{secret_password}</password>
      <networks><ip>127.0.0.1</ip></networks>
      <profile>readonly</profile>
      <quota>default</quota>
    </{secret_user}>
  </users>
  <quotas>
    <default>
      <interval>
        <duration>3600</duration>
        <queries>0</queries>
        <errors>0</errors>
        <result_rows>0</result_rows>
        <read_rows>0</read_rows>
        <execution_time>0</execution_time>
      </interval>
    </default>
  </quotas>
</yandex>
"""


def _xml_escape(text):
    return (text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&quot;").replace("'", "&apos;"))


class ClickHouseServer(object):
    """Start with ``start()``, stop with ``stop()``; ``url`` is the HTTP endpoint."""

    def __init__(self, http_port=None, tcp_port=None, interserver_port=None, root=None):
        # K2_TEST_CH_PORT_OFFSET moves all three ports (parallel test runs on one machine).
        offset = int(os.environ.get("K2_TEST_CH_PORT_OFFSET", "0"))
        http_port = http_port or 28123 + offset
        tcp_port = tcp_port or 29000 + offset
        interserver_port = interserver_port or 29009 + offset
        self.http_port = http_port
        self.tcp_port = tcp_port
        self.interserver_port = interserver_port
        self.root = root or tempfile.mkdtemp(prefix="k2-clickhouse-")
        self.url = "http://127.0.0.1:%d" % http_port
        self.proc = None

    def _port_busy(self):
        for port in (self.http_port, self.tcp_port, self.interserver_port):
            with socket.socket() as sock:
                sock.settimeout(0.5)
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    return port
        return None

    def start(self, timeout=60):
        # A server stopped a moment ago may still hold the ports while it shuts down.
        deadline = time.time() + 30
        while self._port_busy() and time.time() < deadline:
            time.sleep(0.5)
        busy = self._port_busy()
        if busy:
            raise RuntimeError("port %d on 127.0.0.1 is in use; another ClickHouse test server runs?"
                               % busy)
        for sub in ("data", "tmp", "user_files", "format_schemas", "log"):
            os.makedirs(os.path.join(self.root, sub), exist_ok=True)
        with open(os.path.join(self.root, "config.xml"), "w") as f:
            f.write(_CONFIG.format(root=self.root, http_port=self.http_port, tcp_port=self.tcp_port,
                                   interserver_port=self.interserver_port))
        with open(os.path.join(self.root, "users.xml"), "w") as f:
            f.write(_USERS.format(user=TEST_USER, password=_xml_escape(TEST_PASSWORD),
                                  secret_user=SECRET_USER, secret_password=SECRET_PASSWORD))
        cmd = [SERVER_BIN, "--config-file=" + os.path.join(self.root, "config.xml")]
        if os.geteuid() == 0:
            # ClickHouse should not run as root; the Debian package made this user.
            subprocess.check_call(["chown", "-R", "clickhouse:clickhouse", self.root])
            os.chmod(self.root, 0o755)
            cmd = ["setpriv", "--reuid=clickhouse", "--regid=clickhouse", "--init-groups"] + cmd
        self._out = open(os.path.join(self.root, "stdout.log"), "wb")
        self.proc = subprocess.Popen(cmd, stdout=self._out, stderr=subprocess.STDOUT,
                                     cwd=self.root, start_new_session=True,
                                     env=dict(os.environ, TZ="UTC"))
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("clickhouse-server exited with %s; see %s"
                                   % (self.proc.returncode, self.root))
            try:
                if requests.get(self.url + "/ping", timeout=1).content.strip() == b"Ok.":
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError("clickhouse-server did not answer on %s within %ss" % (self.url, timeout))

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self.proc = None
        shutil.rmtree(self.root, ignore_errors=True)


def execute(url, sql, user=None, password=None, timeout=120):
    """Run one statement as an admin (test set-up only); raise on a ClickHouse error."""
    auth = {}
    if user:
        auth = {"X-ClickHouse-User": user, "X-ClickHouse-Key": password or ""}
    r = requests.post(url + "/", data=sql.encode("utf-8"), headers=auth, timeout=timeout)
    if r.status_code != 200:
        raise RuntimeError("ClickHouse %s: %s\n%s" % (r.status_code, r.content.decode("utf-8", "replace").strip(), sql))
    return r.content.decode("utf-8")


TRADES_DDL = """CREATE TABLE {db}.{table} (
    exchange_timestamp DateTime,
    sequence_number UInt64,
    symbol String,
    side String,
    price Float64,
    quantity Float64
) ENGINE = MergeTree() ORDER BY (exchange_timestamp, sequence_number)"""


def create_trades_table(url, db, table, user=None, password=None):
    execute(url, "CREATE DATABASE IF NOT EXISTS %s" % db, user, password)
    execute(url, "DROP TABLE IF EXISTS %s.%s" % (db, table), user, password)
    execute(url, TRADES_DDL.format(db=db, table=table), user, password)


def insert_trades(url, db, table, rows, user=None, password=None):
    """rows: iterable of (timestamp 'YYYY-MM-DD hh:mm:ss', sequence, symbol, side, price, qty)."""
    lines = "\n".join("\t".join(str(v) for v in row) for row in rows)
    if not lines:
        return
    execute(url, "INSERT INTO %s.%s FORMAT TabSeparated\n%s\n" % (db, table, lines), user, password)


# ---------------------------------------------------------------------------
# pytest fixture (session-scoped): a throwaway server, or K2_TEST_CH_URL.

def _fixture():
    import pytest

    @pytest.fixture(scope="session")
    def clickhouse():
        """{"url", "database", "user", "password", "own_server"}: a fresh database for the session.

        K2_TEST_CH_URL (with K2_TEST_CH_USER / K2_TEST_CH_PASSWORD) uses an existing server,
        e.g. the lab's http://127.0.0.1:18123; otherwise a server is started on 127.0.0.1:28123.
        """
        url = os.environ.get("K2_TEST_CH_URL")
        server = None
        if not url:
            if not os.path.exists(SERVER_BIN):
                pytest.skip("clickhouse-server is not installed and K2_TEST_CH_URL is not set")
            server = ClickHouseServer().start()
            url = server.url
        user = os.environ.get("K2_TEST_CH_USER") or None
        password = os.environ.get("K2_TEST_CH_PASSWORD") or ""
        database = "k2_test_%d" % os.getpid()
        execute(url, "CREATE DATABASE IF NOT EXISTS %s" % database, user, password)
        try:
            yield {"url": url, "database": database, "user": user or "default",
                   "password": password, "own_server": server is not None,
                   "root": server.root if server is not None else None}
        finally:
            try:
                execute(url, "DROP DATABASE IF EXISTS %s" % database, user, password)
            finally:
                if server is not None:
                    server.stop()

    return clickhouse


clickhouse = _fixture()
