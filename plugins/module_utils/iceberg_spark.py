# -*- coding: utf-8 -*-
# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The cold tier's ``spark`` engine: the scan, the greatest pair and the dedupe repair as a Spark job.

Private to this collection: the API may change between releases.

The job (iceberg_spark_job.py, a PySpark program) is written into a private directory (mode
0700) on the ``k2_spark`` host with its request (JSON) and a Spark properties file (mode 0600)
holding the master, the jars and the Iceberg catalog - secrets included - and runs as
``spark-submit --properties-file FILE JOB REQUEST RESULT``: nothing secret on the command line,
where ``ps`` would show it. The job answers in a JSON file; this module turns it into the
pyiceberg engine's shape (iceberg_scan.scan_table, iceberg_repair.dedupe) so that callers do
not care which engine answered.

Before Spark starts, what can be checked here is: the ``spark-submit`` executable, every jar,
a ``spark://`` master's port. Spark's own failures (a catalog it cannot open, a table that does
not exist, a commit another writer beat) come back from the job as messages.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import inspect
import json
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import tempfile
import time

from ansible_collections.k2.iceberg_offload.plugins.module_utils import iceberg_spark_job
from ansible_collections.k2.iceberg_offload.plugins.module_utils.iceberg import (
    WATERMARK_SEQUENCE_PROPERTY, WATERMARK_TIMESTAMP_PROPERTY, IcebergError, split_identifier)
from ansible_collections.k2.iceberg_offload.plugins.module_utils.redaction import redact_urls
from ansible_collections.k2.iceberg_offload.plugins.module_utils.watermark import (
    Watermark, WatermarkError, format_timestamp, parse_sequence, parse_timestamp)

ENGINES = ("pyiceberg", "spark")
DEFAULT_MASTER = "local[*]"
DEFAULT_SUBMIT = "spark-submit"
DEFAULT_JARS = ["/opt/iceberg/iceberg-spark-runtime-3.5_2.12-1.10.2.jar"]
DEFAULT_TIMEOUT = 3600
MASTER_CONNECT_TIMEOUT = 10
EPOCH = datetime.datetime(1970, 1, 1)
_MASTER_RE = re.compile(r"^(local(\[(\*|[0-9]+)(,[0-9]+)?\])?|local-cluster\[[0-9, ]+\]|yarn|k8s://\S+|"
                        r"spark://[^\s/]+(,[^\s/]+)*)$")


class SparkEngineError(IcebergError):
    """The Spark job could not run or answered with an error; ``details`` is what it still reported."""

    def __init__(self, msg, kind="spark", details=None):
        IcebergError.__init__(self, msg)
        self.kind = kind
        self.details = details or {}


def engine_argument_spec():
    """The engine options shared by iceberg_table_info, iceberg_dedupe and watermark_reset."""
    return dict(
        engine=dict(type="str", choices=list(ENGINES), default="pyiceberg"),
        spark_master=dict(type="str", default=DEFAULT_MASTER),
        spark_submit=dict(type="str", default=DEFAULT_SUBMIT),
        spark_jars=dict(type="list", elements="str", default=list(DEFAULT_JARS)),
        spark_timeout=dict(type="int", default=DEFAULT_TIMEOUT),
    )


# ---------------------------------------------------------------------------
# The catalog, as Spark's Iceberg SparkCatalog takes it.

def _jdbc_uri(uri):
    """Iceberg JdbcCatalog's URI (and user/password) for a pyiceberg SqlCatalog's SQLAlchemy URI."""
    if uri.startswith("sqlite:///"):
        # sqlite:////abs/path is the absolute /abs/path; sqlite:///rel/path is relative.
        return "jdbc:sqlite:" + uri[len("sqlite:///"):], None, None
    m = re.match(r"^postgres(?:ql)?(?:\+\w+)?://(?:([^:@/]*)(?::([^@/]*))?@)?([^/]+)/(.+)$", uri)
    if m:
        return "jdbc:postgresql://%s/%s" % (m.group(3), m.group(4)), m.group(1), m.group(2)
    if uri.startswith("jdbc:"):
        return uri, None, None
    raise SparkEngineError("engine spark cannot use the SQL catalog URI scheme %s (sqlite and postgresql are "
                           "supported); use engine pyiceberg" % uri.split(":")[0], "input")


def catalog_properties(catalog_name, properties, secrets):
    """``{spark property: value}`` of the Iceberg catalog ``catalog_name`` for Spark.

    pyiceberg's ``type: sql`` is Iceberg's ``jdbc`` (same tables, same rows, keyed by the catalog's
    name, docs/spark.md); ``rest``, ``hive``, ``glue`` and ``hadoop`` map one to one; other keys
    (FileIO's ``s3.*`` ...) pass through. Secrets are merged in: they go to the 0600 file only.
    """
    if not isinstance(catalog_name, str) or not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", catalog_name):
        raise SparkEngineError("engine spark needs iceberg_catalog to be a plain name (letters, digits, _), got %r"
                               % (catalog_name,), "input")
    props = dict((str(k), v if isinstance(v, str) else str(v)) for k, v in (properties or {}).items())
    props.update((str(k), v if isinstance(v, str) else str(v)) for k, v in (secrets or {}).items())
    kind = props.pop("type", None)
    prefix = "spark.sql.catalog.%s" % catalog_name
    out = {prefix: "org.apache.iceberg.spark.SparkCatalog", prefix + ".cache-enabled": "false"}
    if kind == "sql":
        uri, user, password = _jdbc_uri(props.pop("uri", "") or "")
        out[prefix + ".type"] = "jdbc"
        out[prefix + ".uri"] = uri
        if uri.startswith("jdbc:sqlite:"):
            out[prefix + ".jdbc.busy_timeout"] = "30000"
        # Iceberg's JdbcCatalog (1.10) leaves the ResultSet of its "do the catalog's tables exist" check
        # open, and with it a read transaction on that connection for the job's lifetime: on sqlite, every
        # other writer (the scheduler's offload) fails "database is locked" meanwhile and this job's own
        # commit fails SQLITE_BUSY(_SNAPSHOT) once another writer has committed. The job only opens tables
        # that exist, in a catalog whose tables therefore exist: the check is skipped (docs/spark.md).
        out[prefix + ".jdbc.init-catalog-tables"] = "false"
        if user:
            out[prefix + ".jdbc.user"] = user
        if password:
            out[prefix + ".jdbc.password"] = password
        props.pop("init_catalog_tables", None)
        props.pop("echo", None)
        props.pop("pool_pre_ping", None)
    elif kind in ("rest", "hive", "hadoop"):
        out[prefix + ".type"] = kind
    elif kind == "glue":
        out[prefix + ".catalog-impl"] = "org.apache.iceberg.aws.glue.GlueCatalog"
    elif kind is None:
        raise SparkEngineError("engine spark needs iceberg_catalog_properties with a type (sql, rest, hive, glue or "
                               "hadoop): it does not read ~/.pyiceberg.yaml", "input")
    else:
        raise SparkEngineError("engine spark does not know the catalog type %r; use engine pyiceberg" % kind,
                               "input")
    for key, value in props.items():
        out["%s.%s" % (prefix, key)] = value
    return out


def _escape(text, key=False):
    """Java Properties text: backslashes, line breaks, and (in keys) separators escaped."""
    out = []
    for i, ch in enumerate(text):
        if ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif ch in "=: #!" and (key or (i == 0 and ch in " #!")):
            out.append("\\" + ch)
        else:
            out.append(ch)
    return "".join(out)


def properties_text(props):
    return "".join("%s=%s\n" % (_escape(k, True), _escape(v)) for k, v in sorted(props.items()))


def spark_properties(params):
    """Every Spark property of the job: the master, the jars, the catalog, a quiet local driver."""
    master = params.get("spark_master") or DEFAULT_MASTER
    props = {
        "spark.master": master,
        "spark.ui.enabled": "false",
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.catalogImplementation": "in-memory",
        "spark.sql.extensions": "org.apache.iceberg.spark.extensions.IcebergSparkSessionExtensions",
    }
    jars = [j for j in (params.get("spark_jars") or []) if j]
    if jars:
        props["spark.jars"] = ",".join(jars)
    if master.startswith("local"):
        props["spark.driver.host"] = "127.0.0.1"
        props["spark.driver.bindAddress"] = "127.0.0.1"
    props.update(catalog_properties(params.get("iceberg_catalog") or "default",
                                    params.get("iceberg_catalog_properties"), params.get("iceberg_catalog_secrets")))
    return props


# ---------------------------------------------------------------------------
# Checks before Spark starts.

def check_params(params):
    """Refuse what Spark would fail on late or obscurely; nothing is started before this passes."""
    if params.get("iceberg_table_location"):
        raise SparkEngineError("engine spark opens tables through a catalog (iceberg_catalog_properties), not "
                               "iceberg_table_location; use engine pyiceberg for a bare table directory", "input")
    master = params.get("spark_master") or DEFAULT_MASTER
    if not _MASTER_RE.match(master):
        raise SparkEngineError("spark_master must be local[*], local[N], spark://HOST:PORT, yarn or k8s://URL, got "
                               "%r (a Spark Connect sc:// URL is not supported by this engine: the job uses "
                               "Iceberg's Java API on the driver)" % redact_urls(master), "input")
    timeout = params.get("spark_timeout") or DEFAULT_TIMEOUT
    if isinstance(timeout, bool) or not isinstance(timeout, int) or timeout < 10:
        raise SparkEngineError("spark_timeout must be at least 10 seconds, got %r" % (timeout,), "input")
    submit = params.get("spark_submit") or DEFAULT_SUBMIT
    found = shutil.which(submit) if os.sep not in submit else (submit if os.access(submit, os.X_OK) else None)
    if not found:
        raise SparkEngineError("spark_submit %s is not an executable on this host; give the path of Spark's "
                               "spark-submit (spark_submit) or install Spark" % submit, "input")
    for jar in params.get("spark_jars") or []:
        local = jar[len("file://"):] if jar.startswith("file://") else jar
        if "://" not in local and not os.path.isfile(local):
            raise SparkEngineError("jar %s (spark_jars) does not exist on this host; give the path of the Iceberg "
                                   "Spark runtime jar (iceberg-spark-runtime-3.5_2.12-*.jar)" % jar, "input")
    return found


def check_master_answers(master, timeout=MASTER_CONNECT_TIMEOUT):
    """A ``spark://`` master's port accepts a connection within ``timeout`` seconds, or a clear error."""
    if not master.startswith("spark://"):
        return
    for address in master[len("spark://"):].split(","):
        host, dummy, port = address.rpartition(":")
        try:
            socket.create_connection((host or address, int(port or 7077)), timeout=timeout).close()
            return
        except (OSError, ValueError) as e:
            last = e
    raise SparkEngineError("the Spark master %s does not answer (%s within %d s); check spark_master and that the "
                           "master is running; nothing was done" % (master, last, timeout), "master")


# ---------------------------------------------------------------------------
# Running the job.

def job_source():
    return inspect.getsource(iceberg_spark_job)


def command(submit, workdir):
    """The argv of the job: only paths in the private directory; the master, jars and catalog are in the file."""
    return [submit, "--properties-file", os.path.join(workdir, "spark.properties"),
            os.path.join(workdir, "k2_cold_job.py"), os.path.join(workdir, "request.json"),
            os.path.join(workdir, "result.json")]


def _tail(text, secrets, limit=1500):
    text = (text or "")[-limit:]
    for value in secrets:
        if value and len(value) >= 3:
            text = text.replace(value, "********")
    return redact_urls(text)


def run_job(params, request, runner=None):
    """The job's result dict (``ok`` true), or SparkEngineError with the job's message.

    ``runner(argv, env, timeout)`` -> ``(returncode, stdout, stderr)`` replaces the subprocess in unit tests.
    """
    submit = check_params(params)
    props = spark_properties(params)
    check_master_answers(props["spark.master"])
    secrets = [str(v) for v in (params.get("iceberg_catalog_secrets") or {}).values()]
    secrets += [v for k, v in props.items() if k.endswith((".password", ".jdbc.password", ".token", ".credential"))]
    timeout = params.get("spark_timeout") or DEFAULT_TIMEOUT
    workdir = tempfile.mkdtemp(prefix="k2-cold-spark-")
    try:
        os.chmod(workdir, 0o700)
        fd = os.open(os.path.join(workdir, "spark.properties"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(properties_text(props))
        with open(os.path.join(workdir, "k2_cold_job.py"), "w") as f:
            f.write(job_source())
        with open(os.path.join(workdir, "request.json"), "w") as f:
            json.dump(request, f)
        argv = command(submit, workdir)
        env = dict(os.environ)
        env.setdefault("PYSPARK_PYTHON", env.get("PYSPARK_PYTHON") or "python3")
        started = time.time()
        code, out, err = (runner or _run)(argv, env, timeout)
        seconds = time.time() - started
        result_path = os.path.join(workdir, "result.json")
        answer = None
        if os.path.exists(result_path):
            with open(result_path) as f:
                try:
                    answer = json.load(f)
                except ValueError:
                    answer = None
        if code is None:
            raise SparkEngineError(
                "the Spark job did not finish in %d s (spark_timeout) on master %s and was stopped; check that the "
                "master answers and has free executors, or raise spark_timeout; nothing was committed by this run"
                % (timeout, props["spark.master"]), "timeout")
        if answer is None:
            raise SparkEngineError(
                "spark-submit exited %s without an answer: %s" % (code, _tail(err or out, secrets) or "no output"),
                "spark")
        if not answer.get("ok"):
            details = dict(answer.get("details") or {})
            if answer.get("traceback"):
                details["spark_traceback"] = _tail(answer["traceback"], secrets, 3000)
            raise SparkEngineError(_tail(answer.get("msg"), secrets, 2000), answer.get("kind") or "spark", details)
        result = answer["result"]
        result["_spark"] = {"seconds": round(seconds, 3), "master": props["spark.master"],
                            "peak_rss_bytes": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024}
        return result
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _run(argv, env, timeout):
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            universal_newlines=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
        return proc.returncode, out, err
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
        return None, "", ""


# ---------------------------------------------------------------------------
# Results in the pyiceberg engine's shape.

def _ts(micros):
    if micros is None:
        return None
    return EPOCH + datetime.timedelta(microseconds=int(micros))


def _micros(dt):
    delta = dt - EPOCH
    return (delta.days * 86400 + delta.seconds) * 1000000 + delta.microseconds


def pair_of(value):
    """A Watermark from the job's ``[micros, sequence]``, or None."""
    if not value or value[0] is None:
        return None
    return Watermark(_ts(value[0]), int(value[1]) if value[1] is not None else -1)


def _key(value):
    if isinstance(value, dict) and set(value) == set(["_ts"]):
        return value["_ts"]
    if isinstance(value, dict):
        return dict((k, _key(v)) for k, v in value.items())
    return value


def describe(snapshot):
    """iceberg.describe_snapshot's shape from the job's snapshot dict."""
    if snapshot is None:
        return None
    summary = dict(snapshot.get("summary") or {})
    summary = dict([("operation", snapshot.get("operation"))] + sorted(summary.items()))
    watermark = None
    ts, seq = summary.get(WATERMARK_TIMESTAMP_PROPERTY), summary.get(WATERMARK_SEQUENCE_PROPERTY)
    if ts is not None and seq is not None:
        try:
            watermark = Watermark(parse_timestamp(ts), parse_sequence(seq)).as_dict()
        except WatermarkError:
            watermark = None
    return {
        "snapshot_id": snapshot["snapshot_id"],
        "parent_snapshot_id": snapshot.get("parent_snapshot_id"),
        "timestamp_ms": snapshot["timestamp_ms"],
        "timestamp": format_timestamp(EPOCH + datetime.timedelta(milliseconds=snapshot["timestamp_ms"])),
        "operation": snapshot.get("operation"),
        "summary": summary,
        "watermark": watermark,
        "source_table": summary.get("k2.source_table"),
    }


def _scan_stats(raw, spark):
    stats = dict(raw or {})
    stats["peak_rss_bytes"] = spark.get("peak_rss_bytes")
    stats["engine"] = "spark"
    stats["spark_seconds"] = spark.get("seconds")
    stats["master"] = spark.get("master")
    return stats


def scan(params, identifier, ts_col="exchange_timestamp", seq_col="sequence_number", key_col="sequence_number",
         watermark=None, duplicates=True, sample_size=10, max_pair_only=False, runner=None):
    """iceberg_table_info's result keys (table, row_count ... scan) from a Spark scan."""
    split_identifier(identifier)
    request = {"operation": "scan", "catalog": params.get("iceberg_catalog") or "default", "table": identifier,
               "timestamp_column": ts_col, "sequence_column": seq_col, "key_column": key_col,
               "duplicates": bool(duplicates), "sample_size": sample_size, "max_pair_only": bool(max_pair_only),
               "watermark_us": [_micros(watermark.max_timestamp), watermark.sequence_number]
               if watermark is not None else None}
    raw = run_job(params, request, runner)
    out = {"table": raw["table"],
           "max_pair": pair_of(raw.get("max_pair_us")),
           "latest_snapshot": describe(raw.get("latest_snapshot")),
           "latest_watermark_snapshot": describe(raw.get("latest_watermark_snapshot"))}
    if max_pair_only:
        out.update(row_count=None, min_timestamp=None, duplicates=None, past_watermark=None, scan=None)
        return out
    out["row_count"] = raw["row_count"]
    out["min_timestamp"] = _ts(raw.get("min_timestamp_us"))
    dup = raw.get("duplicates")
    if dup is not None:
        dup = dict(dup, sample=[{"key": _key(s["key"]), "count": s["count"]} for s in dup["sample"]])
    out["duplicates"] = dup
    past = raw.get("past_watermark")
    if past is not None:
        past = {"watermark": watermark, "rows": past["rows"], "max_pair": pair_of(past.get("max_pair_us"))}
    out["past_watermark"] = past
    out["scan"] = _scan_stats(raw.get("scan"), raw["_spark"])
    return out


def cold_tier_max_pair(params, identifier, ts_col="exchange_timestamp", seq_col="sequence_number", runner=None):
    """(Watermark or None, current snapshot id): watermark_reset cold_tier's answer, from Spark."""
    out = scan(params, identifier, ts_col, seq_col, seq_col, duplicates=False, max_pair_only=True, runner=runner)
    snapshot = out["latest_snapshot"]
    return out["max_pair"], snapshot["snapshot_id"] if snapshot else None


def dedupe(params, identifier, key_columns=("sequence_number",), window_option=None, conflict="refuse",
           sample_size=10, max_attempts=3, check_mode=False, runner=None):
    """iceberg_repair.dedupe's result, the work done by Spark (see iceberg_spark_job.Job.op_dedupe)."""
    from ansible_collections.k2.iceberg_offload.plugins.module_utils.iceberg_repair import (
        ConcurrentCommitError, RepairError, check_options, rollback_instructions)
    check_options(conflict, sample_size, max_attempts)
    split_identifier(identifier)
    if window_option:
        raise RepairError("engine spark does not take a window yet; leave window out (the whole table) or use "
                          "engine pyiceberg")
    started = time.time()
    attempts = []
    result = {"changed": False}
    while len(attempts) < max_attempts:
        # The job plans again in its own JVM after a lost race (its attempts come back in the answer);
        # a new job only when it could not run at all.
        request = {"operation": "dedupe", "catalog": params.get("iceberg_catalog") or "default",
                   "table": identifier, "key_columns": list(key_columns), "conflict": conflict,
                   "sample_size": sample_size, "execute": not check_mode,
                   "max_attempts": max_attempts - len(attempts)}
        try:
            raw = run_job(params, request, runner)
        except SparkEngineError as e:
            if e.kind != "concurrent":
                raise RepairError(str(e), dict(result, **e.details))
            lost = e.details.get("attempts") or [{"outcome": "conflict: %s" % str(e)[:300]}]
            attempts += [dict(item, attempt=len(attempts) + n + 1) for n, item in enumerate(lost)]
            continue
        attempts += [dict(item, attempt=len(attempts) + n + 1) for n, item in enumerate(raw.get("attempts") or [])]
        attempt = len(attempts) + 1
        plan = raw["plan"]
        for item in plan["sample"]:
            item["key"] = _key(item["key"])
        for item in plan["conflicts"]:
            item["key"] = _key(item["key"])
            for copy in item["copies"]:
                copy["values"] = dict((k, _key(v)) for k, v in copy["values"].items())
        plan.pop("window_text", None)
        total = raw.get("total_records")
        result.update(table=raw["table"], plan=plan,
                      before={"snapshot_id": plan["snapshot_id"], "rows": total,
                              "duplicated_keys": plan["duplicated_keys"], "duplicate_rows": plan["rows_to_remove"]})
        stats = {"seconds": round(time.time() - started, 3), "engine": "spark", "master": raw["_spark"]["master"],
                 "peak_rss_bytes": raw["_spark"]["peak_rss_bytes"], "attempts": attempts}
        if plan["conflicting_keys"] and conflict == "refuse":
            raise RepairError(
                "%d duplicated key(s) have copies that differ in other columns (sample in plan.conflicts); nothing "
                "changed. Set conflict to keep_first (the copy committed first stays) or keep_last (the copy "
                "committed last stays)" % plan["conflicting_keys"], result)
        if not plan["files_to_rewrite"]:
            result["stats"] = stats
            return result
        result["changed"] = True
        result["after"] = {"rows": None if total is None else total - plan["rows_to_remove"],
                           "duplicated_keys": 0, "duplicate_rows": 0}
        if check_mode:
            result["stats"] = stats
            return result
        commit = raw["commit"]
        snapshot = describe(commit["snapshot"])
        attempts.append({"attempt": attempt, "snapshot_read": plan["snapshot_id"],
                         "find_seconds": raw.get("find_seconds"), "commit_seconds": commit.get("commit_seconds"),
                         "outcome": "committed"})
        result["snapshot_id"] = snapshot["snapshot_id"]
        result["previous_snapshot_id"] = snapshot["parent_snapshot_id"]
        result["snapshot"] = snapshot
        result["commit"] = dict((k, commit[k]) for k in ("files_removed", "files_added", "bytes_removed",
                                                         "bytes_written", "rows_written"))
        result["rollback"] = rollback_instructions(identifier, snapshot["parent_snapshot_id"])
        result["stats"] = stats
        return result
    result["stats"] = {"seconds": round(time.time() - started, 3), "engine": "spark", "attempts": attempts}
    raise ConcurrentCommitError(
        "another writer committed to the table during each of %d attempt(s) (last: %s); nothing was committed by "
        "this run. Run it again, or raise max_attempts" % (len(attempts), attempts[-1]["outcome"]), result)
