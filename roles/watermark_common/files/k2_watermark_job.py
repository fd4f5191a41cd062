# -*- coding: utf-8 -*-
# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The work of the watermark cron jobs, done by the collection's own code.

Installed by the roles k2.iceberg_offload.watermark_cleanup and watermark_health_check into
their library directory, next to a copy of the collection's ``plugins/module_utils`` (under
``ansible_collections/k2/iceberg_offload/`` there), and run by their cron scripts once those
have checked and read the root-only settings file, exported the settings to this process only
and taken the job's lock:

    python3 -I -B k2_watermark_job.py cleanup        # the module watermark_cleanup keep=K2_KEEP
    python3 -I -B k2_watermark_job.py health-check   # the module watermark_info; its findings decide

Every rule the jobs apply - which entries a cleanup keeps, what a table's latest entry and its
age are, what a regression and a duplicate burst are - and every audit row and backup is made by
``watermark_cleanup_run.run_cleanup`` and ``watermark_inspect.collect_info``, the functions the modules call
(docs/watermark_modules.md, "Definitions"). This file reads settings, connects, and reports.

Each line on stdout is a line of the job's log. Exit status: 0 done (healthy), 1 unhealthy (health
check), 2 the job failed. Secrets are never printed: the password goes from the environment
to the PostgreSQL client library, nowhere else.

Connection: ``K2_ACCESS=libpq`` connects with PGHOST, PGPORT, PGDATABASE, PGUSER, PGPASSWORD,
PGSSLMODE, PGSSLROOTCERT, PGCONNECT_TIMEOUT. ``K2_ACCESS=docker`` reaches the server as
``docker exec K2_CONTAINER psql`` would: the client connects to a private socket of this process,
and each connection is relayed through ``docker exec -i K2_CONTAINER perl`` (perl-base, in every
Debian-based image) to PostgreSQL inside the container - its socket directory
``/var/run/postgresql`` when PGHOST is empty or a directory, else PGHOST:PGPORT as seen from the
container. The password, if any, travels inside the relayed stream, never on a command line.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import math
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import types

HERE = os.path.dirname(os.path.abspath(__file__))

# exit statuses the cron scripts and the alerting read
DONE, UNHEALTHY, FAILED = 0, 1, 2

CONTAINER_SOCKET_DIR = "/var/run/postgresql"
HEALTH_LOCK_TIMEOUT = 10
HEALTH_STATEMENT_TIMEOUT = "60s"

# Relays stdin/stdout to PostgreSQL inside the container: a Unix socket directory or host, and port.
PERL_RELAY = r"""
use strict; use IO::Socket::INET; use IO::Socket::UNIX; use IO::Select;
my ($host, $port) = @ARGV;
my $db = $host =~ m{^/}
  ? IO::Socket::UNIX->new(Peer => "$host/.s.PGSQL.$port")
  : IO::Socket::INET->new(PeerAddr => $host, PeerPort => $port, Proto => "tcp");
die "cannot connect to PostgreSQL at $host port $port inside the container: $!\n" unless $db;
binmode STDIN; binmode STDOUT; binmode $db;
my $sel = IO::Select->new(\*STDIN, $db);
while (1) {
  for my $in ($sel->can_read) {
    my $n = sysread($in, my $buf, 65536);
    exit 0 unless $n;
    my $out = fileno($in) == fileno($db) ? \*STDOUT : $db;
    for (my $off = 0; $off < $n;) {
      my $w = syswrite($out, $buf, $n - $off, $off);
      die "relay write failed: $!\n" unless defined $w;
      $off += $w;
    }
  }
}
"""


class JobError(Exception):
    """A failure with a message that says what failed and what to do next."""


def say(line):
    """One line of the job's log; control characters (a table name may hold any) are escaped, so
    a value can never forge a line of its own."""
    text = "".join(c if c >= " " or c == "\t" else "\\x%02x" % ord(c) for c in str(line))
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def setting(name, default=None):
    value = os.environ.get(name, "")
    return value if value != "" else default


def int_setting(name, default, minimum=0):
    raw = setting(name, str(default))
    try:
        value = int(raw)
    except ValueError:
        raise JobError("%s=%r is not a whole number; fix the role's settings and re-apply it" % (name, raw))
    if value < minimum:
        raise JobError("%s=%d is below %d; fix the role's settings and re-apply it" % (name, value, minimum))
    return value


def postgres_seconds(text, name):
    """A PostgreSQL duration (5s, 500ms, 15min, 1h; a bare number is milliseconds) in whole
    seconds, rounded up: the modules' lock_timeout unit."""
    units = (("ms", 0.001), ("min", 60), ("s", 1), ("h", 3600))
    for suffix, factor in units:
        if text.endswith(suffix) and text[:-len(suffix)].isdigit():
            return int(math.ceil(int(text[:-len(suffix)]) * factor))
    if text.isdigit():
        return int(math.ceil(int(text) / 1000.0))
    raise JobError("%s=%r is not a PostgreSQL duration such as 5s or 500ms" % (name, text))


def import_collection():
    """The collection's module_utils, from the copy beside this file. Only the PostgreSQL util
    imports from ansible-core (two names of its argument-spec helpers); a host without
    ansible-core gets stand-ins for those two, nothing else."""
    sys.path.insert(0, HERE)
    try:
        import ansible.module_utils.basic  # noqa: F401  pylint: disable=unused-import
    except ImportError:
        basic = types.ModuleType("ansible.module_utils.basic")

        def env_fallback(*args, **kwargs):
            raise LookupError("no environment fallback outside Ansible")

        def missing_required_lib(library, reason=None, url=None):
            return "Failed to import the required Python library (%s) on %s's Python %s" % (
                library, socket.gethostname(), sys.executable)

        basic.env_fallback = env_fallback
        basic.missing_required_lib = missing_required_lib
        for name in ("ansible", "ansible.module_utils"):
            sys.modules.setdefault(name, types.ModuleType(name))
        sys.modules["ansible.module_utils.basic"] = basic
    from ansible_collections.k2.iceberg_offload.plugins.module_utils import (  # pylint: disable=import-outside-toplevel
        postgres, watermark, watermark_cleanup_run, watermark_inspect, watermark_ops, watermark_sql)
    if not postgres.HAS_PSYCOPG2:
        raise JobError("psycopg2 is not installed for %s (Debian: apt-get install python3-psycopg2), "
                       "or set the role's *_python to an interpreter that has it" % sys.executable)
    return types.SimpleNamespace(postgres=postgres, errors=watermark, ops=watermark_ops, sql=watermark_sql,
                                 cleanup=watermark_cleanup_run, inspect=watermark_inspect)


# -- reaching PostgreSQL -------------------------------------------------------------------------
class DockerRelay(object):
    """A Unix socket in a private directory of this process; every connection to it is relayed to
    PostgreSQL inside the container by ``docker exec -i CONTAINER perl``."""

    def __init__(self, docker, container, target, port):
        self.docker, self.container, self.target, self.port = docker, container, target, port
        self.directory = tempfile.mkdtemp(prefix="k2-watermark-")  # mode 0700: root's only
        self.errors = []
        self._procs = []
        self._stderr_readers = []
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(os.path.join(self.directory, ".s.PGSQL.%d" % port))
        self._listener.listen(4)
        thread = threading.Thread(target=self._accept, name="relay")
        thread.daemon = True
        thread.start()

    def _accept(self):
        while True:
            try:
                client, dummy = self._listener.accept()
            except OSError:
                return
            # docker needs nothing secret: the password travels inside the relayed stream
            env = dict((k, v) for k, v in os.environ.items() if not k.startswith(("PG", "K2_")))
            try:
                proc = subprocess.Popen([self.docker, "exec", "-i", self.container, "perl", "-e", PERL_RELAY,
                                         self.target, str(self.port)],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        env=env)
            except OSError as e:
                self.errors.append("cannot run %s: %s" % (self.docker, e))
                client.close()
                continue
            self._procs.append(proc)
            for fn in (self._to_container, self._from_container, self._errors):
                t = threading.Thread(target=fn, args=(client, proc))
                t.daemon = True
                t.start()
                if fn == self._errors:
                    self._stderr_readers.append(t)

    @staticmethod
    def _to_container(client, proc):
        try:
            while True:
                data = client.recv(65536)
                if not data:
                    break
                proc.stdin.write(data)
                proc.stdin.flush()
        except (OSError, ValueError):
            pass
        finally:
            try:
                proc.stdin.close()
            except (OSError, ValueError):
                pass

    @staticmethod
    def _from_container(client, proc):
        try:
            while True:
                data = os.read(proc.stdout.fileno(), 65536)
                if not data:
                    break
                client.sendall(data)
        except OSError:
            pass
        finally:
            try:
                client.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            client.close()

    def _errors(self, client, proc):
        text = proc.stderr.read().decode("utf-8", "replace").strip()
        if text:
            self.errors.append(" ".join(text.split()))

    def finished_errors(self, timeout=5):
        """What docker or the relay said, once the relays that failed have ended."""
        deadline = time.time() + timeout
        for t in list(self._stderr_readers):
            t.join(max(0.0, deadline - time.time()))
        return list(self.errors)

    def close(self):
        self._listener.close()
        for proc in self._procs:
            if proc.poll() is None:
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        shutil.rmtree(self.directory, ignore_errors=True)


def connection_settings():
    """The module options the settings file's PG* values stand for (as the modules' environment
    fallbacks read them)."""
    return {
        "login_host": setting("PGHOST"),
        "port": int_setting("PGPORT", 5432, 1),
        "login_db": setting("PGDATABASE"),
        "login_user": setting("PGUSER"),
        "login_password": setting("PGPASSWORD"),
        "ssl_mode": setting("PGSSLMODE", "prefer"),
        "ca_cert": setting("PGSSLROOTCERT"),
        "connect_timeout": int_setting("PGCONNECT_TIMEOUT", 10, 0),
    }


class Connection(object):
    """Opens a WatermarkStore as the modules' open_store does, by libpq or through docker."""

    def __init__(self, utils, job, audit=False, lock_timeout=10, statement_timeout=None):
        self.postgres, self.ops, self.sql = utils.postgres, utils.ops, utils.sql
        self.job = job
        self.audit = audit
        self.lock_timeout = lock_timeout
        self.statement_timeout = statement_timeout
        self.settings = connection_settings()
        self.access = setting("K2_ACCESS", "docker")
        self.relay = None
        self.conn = None

    def open(self):
        try:
            table = self.postgres.parse_table_name(setting("K2_WATERMARK_TABLE", "offload_watermarks"))
            audit = (self.postgres.parse_table_name(setting("K2_AUDIT_TABLE", "offload_watermark_audit"),
                                                    "audit_table") if self.audit else None)
            lock_ms = self.postgres.parse_lock_timeout(self.lock_timeout)
        except ValueError as e:
            raise JobError(str(e))
        params = dict(self.settings)
        if self.access == "docker":
            target = self.settings["login_host"] or CONTAINER_SOCKET_DIR
            self.relay = DockerRelay(setting("K2_DOCKER", "docker"), setting("K2_CONTAINER", "k2-prefect-db"),
                                     target, self.settings["port"])
            params["login_host"] = self.relay.directory
        elif self.access != "libpq":
            raise JobError("K2_ACCESS=%r: use docker or libpq" % self.access)
        conn, err = self.postgres.connect_to_db(None, params=params, application_name=setting("PGAPPNAME", self.job))
        if err:
            if self.relay is not None:
                err = "Cannot reach PostgreSQL through docker exec %s (%s port %d inside the container): %s" % (
                    self.relay.container, self.relay.target, self.relay.port,
                    "; ".join(self.relay.finished_errors()) or err)
            raise JobError(err)
        self.conn = conn
        store = self.sql.WatermarkStore(conn, table, audit)
        try:
            store.set_lock_timeout(lock_ms, local=False)
            if self.statement_timeout:
                cur = conn.cursor()
                cur.execute("SELECT set_config('statement_timeout', %s, false)", (self.statement_timeout,))
                cur.close()
            conn.commit()
        except self.postgres.psycopg2.Error as e:
            raise JobError(self.ops.db_failure(e, "setting the session's timeouts").msg)
        return store

    def close(self):
        if self.conn is not None:
            try:
                self.conn.close()
            except Exception:  # pylint: disable=broad-except  # closing is best effort
                pass
        if self.relay is not None:
            self.relay.close()


# -- the cleanup (runbook Prevention step 2) ---------------------------------------------------
def cleanup(utils):
    postgres, ops = utils.postgres, utils.ops
    keep = int_setting("K2_KEEP", 50, 1)
    lock_timeout = postgres_seconds(setting("K2_LOCK_TIMEOUT", "5s"), "K2_LOCK_TIMEOUT")
    backup = setting("K2_BACKUP", "table")
    params = dict(connection_settings(),
                  watermark_table=setting("K2_WATERMARK_TABLE", "offload_watermarks"),
                  audit_table=setting("K2_AUDIT_TABLE", "offload_watermark_audit"),
                  tables=None, keep=keep, older_than=None, duplicates_only=False, regressions_only=False,
                  above_pair=None, method=setting("K2_METHOD", "delete"), backup=backup,
                  backup_table=setting("K2_BACKUP_TABLE"), backup_dir=setting("K2_BACKUP_DIR", "/tmp"),
                  lock_timeout=lock_timeout)
    # What the audit row records: the options as the module would record them, and who ran them.
    audited = ops.audit_params(params)
    audited["job"] = "%s (cron, %s access)" % (setting("K2_TAG", "k2-watermark-cleanup"), setting("K2_ACCESS", "docker"))
    started = time.time()
    connection = Connection(utils, setting("K2_TAG", "k2-watermark-cleanup"), audit=True, lock_timeout=lock_timeout,
                            statement_timeout=setting("K2_STATEMENT_TIMEOUT"))
    table = params["watermark_table"]
    try:
        store = connection.open()
        try:
            out = utils.cleanup.run_cleanup(store, params, False, audited=audited)
        except ops.OperationError as e:
            raise JobError(e.msg)
        except utils.errors.WatermarkError as e:
            raise JobError(str(e))
        except postgres.psycopg2.Error as e:
            raise JobError(ops.db_failure(e, "cleaning up %s" % store.qualified_name, store, lock_timeout).msg)
        table = store.qualified_name
    except JobError as e:
        say("cleanup of %s failed, nothing deleted: %s" % (table, e))
        return FAILED
    finally:
        connection.close()
    for item in out["tables"]:
        if item["deleted"]:
            say("table %s: deleted %d entries older than the newest %d" % (item["table_name"], item["deleted"], keep))
    for warning in out.get("_warnings", []):
        say("warning: " + warning)
    if out["backup"]:
        say("the %d deleted entries are saved in %s" % (out.get("backup_rows", out["deleted"]), out["backup"]))
    if out["audit_ids"]:
        say("audit rows %s in %s" % (", ".join(str(i) for i in out["audit_ids"]), params["audit_table"]))
    say("cleanup of %s done: deleted %d entries, kept the newest %d per table (%s, %d s)"
        % (table, out["deleted"], keep, out.get("method", "delete"), time.time() - started))
    return DONE


# -- the health check (runbook Prevention step 3) ------------------------------------------------
def health_check(utils):
    ops = utils.ops
    stale = int_setting("K2_STALE_SECONDS", 3600, 1)
    hours = int_setting("K2_WINDOW_HOURS", 24, 1)
    max_regressions = int_setting("K2_MAX_REGRESSIONS", 0, 0)
    listed = setting("K2_TABLES", "").split()
    # watermark_info's parameters: the job's thresholds; no separate warning threshold.
    params = {"stale_after": stale, "warn_after": stale, "lookback": "%dh" % hours,
              "cycle_seconds": int_setting("K2_CYCLE_SECONDS", 900, 1),
              "burst_threshold": int_setting("K2_BURST_THRESHOLD", 10, 1),
              "max_window_entries": None, "health": False, "count_entries": False, "exact_counts": False,
              "recent_changes": "", "lock_timeout": HEALTH_LOCK_TIMEOUT}
    metrics = Metrics(setting("K2_METRICS_FILE"))
    say("=== Watermark Health Check %s ===" % time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    connection = Connection(utils, setting("K2_TAG", "k2-watermark-health-check"),
                            lock_timeout=HEALTH_LOCK_TIMEOUT, statement_timeout=HEALTH_STATEMENT_TIMEOUT)
    try:
        try:
            store = connection.open()
            store.conn.set_session(readonly=True)
            names = store.table_names() if store.table_exists() else []
            params["tables"] = names + [t for t in listed if t not in names]
            result = utils.inspect.collect_info(store, params)
        except (ops.OperationError, utils.errors.WatermarkError) as e:
            raise JobError(getattr(e, "msg", str(e)))
        except utils.postgres.psycopg2.Error as e:
            raise JobError(ops.db_failure(e, "reading the watermark table", None, HEALTH_LOCK_TIMEOUT).msg)
    except JobError as e:
        say("UNHEALTHY: the check could not run: %s" % e)
        metrics.write(up=0, healthy=0)
        return FAILED
    finally:
        connection.close()
    if not result["table_exists"] or result.get("locked"):
        # the check could not read the table: a failed check (2), as when it cannot connect
        for finding in result["finding_kinds"]:
            say("UNHEALTHY: the check could not run: %s" % finding["text"])
        metrics.write(up=0, healthy=0)
        return FAILED

    tables = result["tables"]
    regressions = sum(t.get("regression_count", 0) for t in tables)
    tolerated = 0 < regressions <= max_regressions
    # watermark_info's findings by kind: up to max_regressions regressions are tolerated, nothing else.
    findings = result["finding_kinds"]
    counted = [f["text"] for f in findings if not (tolerated and f["kind"] == "regression")]
    if not tables:
        counted.append("%s has no entries" % result["watermark_table"])
    ages = [max(0, int(t["age_seconds"])) for t in tables if t.get("age_seconds") is not None]
    worst = max(ages) if ages else 0
    for t in tables:
        say(_table_line(t, hours))
    for finding in findings:
        if tolerated and finding["kind"] == "regression":
            say("tolerated: %s (%d regression(s) in all, max_regressions %d)" % (
                finding["text"], regressions, max_regressions))
    for finding in counted:
        say("UNHEALTHY: " + finding)
    verdict = "UNHEALTHY" if counted else "HEALTHY"
    say("%s: worst age %ds (stale above %ds), %d regression(s), %d finding(s)" % (
        verdict, worst, stale, regressions, len(counted)))
    metrics.write(up=1, healthy=0 if counted else 1, regressions=regressions, worst_age=worst, tables=tables,
                  findings=len(counted))
    return UNHEALTHY if counted else DONE


def _table_line(t, hours):
    name = t["table_name"]
    latest = t.get("latest")
    if latest is None:
        return "%s: no watermark entry: MISSING" % name
    state = []
    if t["stale"]:
        state.append("STALE")
    if t.get("regression_count"):
        state.append("REGRESSED")
    if t.get("duplicate_bursts"):
        state.append("BURST")
    if t.get("future_entries"):
        state.append("FUTURE-DATED")
    age = "unknown (created_at is NULL)" if t["age_seconds"] is None else "%ds" % max(0, int(t["age_seconds"]))
    return "%s: age %s, latest (%s, %s) written %s, %d regression(s) in %dh, %d duplicate burst(s): %s" % (
        name, age, latest["max_timestamp"], latest["sequence_number"], latest["created_at"] or "without created_at",
        t.get("regression_count", 0), hours, len(t.get("duplicate_bursts", [])), " ".join(state) or "ok")


class Metrics(object):
    """The node_exporter textfile: written to a temporary file in its directory, then renamed."""

    PREFIX = "k2_watermark_health_check_"

    def __init__(self, path):
        self.path = path

    def _last_success(self):
        try:
            with open(self.path) as fh:
                for line in fh:
                    parts = line.split()
                    if len(parts) == 2 and parts[0] == self.PREFIX + "last_success_timestamp_seconds" \
                            and parts[1].isdigit():
                        return int(parts[1])
        except (IOError, OSError):
            pass
        return 0

    @staticmethod
    def _label(value):
        return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")

    def write(self, up, healthy, regressions=0, worst_age=0, tables=(), findings=0):
        if not self.path:
            return
        now = int(time.time())
        last_success = now if healthy else self._last_success()
        lines = []

        def gauge(name, text, samples):
            lines.append("# HELP %s%s %s" % (self.PREFIX, name, text))
            lines.append("# TYPE %s%s gauge" % (self.PREFIX, name))
            for labels, value in samples:
                lines.append("%s%s%s %s" % (self.PREFIX, name, labels, value))

        gauge("last_run_timestamp_seconds", "Unix time the watermark health check last ran.", [("", now)])
        gauge("last_success_timestamp_seconds",
              "Unix time of the last check that found every watermark healthy (0: never).", [("", last_success)])
        gauge("up", "1 if the last check could read the watermark table.", [("", up)])
        gauge("healthy", "1 if the last check found every watermark healthy.", [("", healthy)])
        gauge("regressions", "Watermark regressions found in the window by the last check.", [("", regressions)])
        gauge("worst_age_seconds", "Age of the stalest table's latest watermark entry.", [("", worst_age)])
        gauge("findings", "Findings of the last check (watermark_info's, those that count).", [("", findings)])
        known = [t for t in tables if t.get("latest") is not None]
        if known:
            def label(t):
                return '{table="%s"}' % self._label(t["table_name"])
            gauge("table_age_seconds", "Age of the table's latest watermark entry (NaN: created_at is NULL).",
                  [(label(t), "NaN" if t["age_seconds"] is None else max(0, int(t["age_seconds"]))) for t in known])
            gauge("table_regressions", "Regressions of the table's watermark in the window.",
                  [(label(t), t.get("regression_count", 0)) for t in known])
            gauge("table_duplicate_bursts", "Duplicate bursts of the table's watermark in the window.",
                  [(label(t), len(t.get("duplicate_bursts", []))) for t in known])
        directory = os.path.dirname(self.path) or "."
        try:
            fd, tmp = tempfile.mkstemp(prefix=".k2_watermark_health.", dir=directory)
        except (IOError, OSError) as e:
            say("cannot write a metric file in %s: %s" % (directory, e))
            return
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write("\n".join(lines) + "\n")
            os.chmod(tmp, 0o644)
            os.rename(tmp, self.path)
        except (IOError, OSError) as e:
            say("cannot write the metric file %s: %s" % (self.path, e))
            if os.path.exists(tmp):
                os.unlink(tmp)


JOBS = {"cleanup": cleanup, "health-check": health_check}


def main(argv):
    if len(argv) != 2 or argv[1] not in JOBS:
        say("usage: %s {%s}" % (os.path.basename(argv[0]), "|".join(sorted(JOBS))))
        return FAILED
    job = argv[1]
    try:
        utils = import_collection()
        return JOBS[job](utils)
    except JobError as e:
        say("%s failed: %s" % (job, e))
    except Exception:  # pylint: disable=broad-except  # a crash is a failed run (2), never "unhealthy" (1)
        say("%s failed unexpectedly: %s" % (job, traceback.format_exc().strip().splitlines()[-1]))
        for line in traceback.format_exc().strip().splitlines()[:-1]:
            say("  " + line)
    if job == "health-check":
        Metrics(setting("K2_METRICS_FILE")).write(up=0, healthy=0)
    return FAILED


if __name__ == "__main__":
    sys.exit(main(sys.argv))
