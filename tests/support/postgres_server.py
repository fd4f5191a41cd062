# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A throwaway PostgreSQL 15 cluster for integration tests and benchmarks.

``PostgresServer(port).start()`` runs ``initdb`` into a fresh directory under /tmp
(as the ``postgres`` OS user when we are root, because postgres refuses to run as
root), listens on 127.0.0.1 only, and ``stop()`` stops it and removes the
directory. Password authentication (scram) is on for TCP, so a wrong password
really fails.

Tests can instead use an existing server (the lab's ``k2-prefect-db``) by setting
``K2_TEST_PG_HOST``, ``K2_TEST_PG_PORT``, ``K2_TEST_PG_USER``,
``K2_TEST_PG_PASSWORD`` and ``K2_TEST_PG_DB``; see :func:`external_server_from_env`.
"""
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time

PG_BIN = os.environ.get("K2_PG_BIN", "/usr/lib/postgresql/15/bin")
# K2_TEST_PG_OWN_PORT moves our throwaway cluster (parallel test runs on one machine).
DEFAULT_PORT = int(os.environ.get("K2_TEST_PG_OWN_PORT", "25432"))
SUPERUSER = "postgres"
SUPERUSER_PASSWORD = "k2-test-secret"


def _port_open(host, port):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


class PostgresServer(object):
    """One cluster; ``dsn`` gives psycopg2 keyword arguments for the superuser."""

    external = False

    def __init__(self, port=DEFAULT_PORT, settings=None):
        self.host = "127.0.0.1"
        self.port = port
        self.user = SUPERUSER
        self.password = SUPERUSER_PASSWORD
        self.dbname = "postgres"
        self.settings = settings or {}
        self.datadir = None
        self._os_user = None

    # -- life cycle -----------------------------------------------------------------
    def _run(self, argv, **kw):
        if os.geteuid() == 0:
            argv = ["runuser", "-u", self._os_user, "--"] + argv
        return subprocess.run(argv, check=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **kw)

    def start(self):
        if _port_open(self.host, self.port):
            raise RuntimeError("port %d on 127.0.0.1 is already in use; set K2_TEST_PG_PORT "
                               "or stop what listens there" % self.port)
        self._os_user = "postgres" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
        self.datadir = tempfile.mkdtemp(prefix="k2-pg-%d-" % self.port, dir="/tmp")
        if os.geteuid() == 0:
            pw = pwd.getpwnam(self._os_user)
            os.chown(self.datadir, pw.pw_uid, pw.pw_gid)
        pwfile = os.path.join(self.datadir, "..", os.path.basename(self.datadir) + ".pw")
        with open(pwfile, "w") as f:
            f.write(self.password + "\n")
        os.chmod(pwfile, 0o644)
        try:
            self._run([os.path.join(PG_BIN, "initdb"), "-D", self.datadir + "/data", "-U", self.user,
                       "--pwfile", pwfile, "--auth-host=scram-sha-256", "--auth-local=trust",
                       "-E", "UTF8", "--locale=C.UTF-8"])
        finally:
            os.unlink(pwfile)
        conf = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": "'%s'" % (self.datadir + "/data"),
            "fsync": "off" if os.environ.get("K2_TEST_PG_FSYNC", "on") == "off" else "on",
            "max_connections": "100",
            "shared_buffers": "256MB",
            "max_wal_size": "4GB",
            "log_min_messages": "warning",
        }
        conf.update(self.settings)
        with open(self.datadir + "/data/postgresql.auto.conf", "a") as f:
            for k, v in conf.items():
                f.write("%s = %s\n" % (k, v))
        self._run([os.path.join(PG_BIN, "pg_ctl"), "-D", self.datadir + "/data", "-l",
                   self.datadir + "/server.log", "-w", "-t", "60", "start"])
        return self

    def pid(self):
        with open(self.datadir + "/data/postmaster.pid") as f:
            return int(f.readline().strip())

    def kill(self):
        """SIGKILL the postmaster and its backends (a crash), by their ids."""
        pid = self.pid()
        children = subprocess.run(["pgrep", "-P", str(pid)], stdout=subprocess.PIPE, check=False).stdout.split()
        os.kill(pid, signal.SIGKILL)
        for c in children:
            try:
                os.kill(int(c), signal.SIGKILL)
            except ProcessLookupError:
                pass
        for dummy in range(100):
            if not _port_open(self.host, self.port):
                break
            time.sleep(0.1)
        time.sleep(0.5)

    def restart_after_crash(self):
        # A killed postmaster leaves its pid file and socket lock behind.
        for name in ("postmaster.pid", ".s.PGSQL.%d.lock" % self.port, ".s.PGSQL.%d" % self.port):
            path = os.path.join(self.datadir, "data", name)
            if os.path.exists(path):
                os.unlink(path)
        self._run([os.path.join(PG_BIN, "pg_ctl"), "-D", self.datadir + "/data", "-l",
                   self.datadir + "/server.log", "-w", "-t", "60", "start"])

    def stop(self):
        if not self.datadir:
            return
        try:
            self._run([os.path.join(PG_BIN, "pg_ctl"), "-D", self.datadir + "/data", "-m", "fast",
                       "-w", "-t", "60", "stop"])
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(self.datadir, ignore_errors=True)
        self.datadir = None

    # -- connection details ------------------------------------------------------------
    def dsn(self, dbname=None, user=None, password=None):
        return {"host": self.host, "port": self.port, "user": user or self.user,
                "password": self.password if password is None else password,
                "dbname": dbname or self.dbname}

    def module_args(self, **extra):
        """The connection options of our modules for this server."""
        args = {"login_host": self.host, "port": self.port, "login_user": self.user,
                "login_password": self.password, "login_db": self.dbname}
        args.update(extra)
        return args


class ExternalServer(PostgresServer):
    """An existing server (e.g. the lab's k2-prefect-db); never started, stopped or killed."""

    external = True

    def __init__(self, host, port, user, password, dbname):
        PostgresServer.__init__(self, port)
        self.host, self.user, self.password, self.dbname = host, user, password, dbname

    def start(self):
        return self

    def stop(self):
        pass

    def kill(self):
        raise RuntimeError("will not kill an external server")


def external_server_from_env():
    """An ExternalServer when K2_TEST_PG_PORT (or _HOST) is set, else None."""
    if not (os.environ.get("K2_TEST_PG_PORT") or os.environ.get("K2_TEST_PG_HOST")):
        return None
    host = os.environ.get("K2_TEST_PG_HOST", "127.0.0.1")
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise RuntimeError("K2_TEST_PG_HOST must be a loopback address, got %r" % host)
    return ExternalServer(host, int(os.environ.get("K2_TEST_PG_PORT", "5432")),
                          os.environ.get("K2_TEST_PG_USER", "prefect"),
                          os.environ.get("K2_TEST_PG_PASSWORD", ""),
                          os.environ.get("K2_TEST_PG_DB", "prefect"))
