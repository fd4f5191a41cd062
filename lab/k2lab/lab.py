# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Bring the K2 lab up and down, and reach into it.

Containers (names as in the runbook), all on the Docker network ``k2-network``:
  k2-prefect-db     PostgreSQL 15, database/user ``prefect``, ``offload_watermarks``
  k2-clickhouse     ClickHouse 18.16, ``bronze_trades_*`` with 48 h of history + a live feed
  k2-spark-iceberg  systemd, ``iceberg-offload-scheduler.service``, the Iceberg warehouse,
                    the watermark exporter
and, on this machine, a Prometheus on 127.0.0.1 scraping the exporter with the
``IcebergOffloadWatermarkStale`` rule loaded. Every port is published on 127.0.0.1.
"""

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request

from . import LAB_DIR, STATE_DIR, engine, images, log

# K2LAB_PREFIX names a second lab beside the first (its own containers and network; give it
# its own K2LAB_*_PORT and K2LAB_STATE_DIR too). Empty: the runbook's names.
PREFIX = os.environ.get("K2LAB_PREFIX", "")
NETWORK = PREFIX + "k2-network"
PG = PREFIX + "k2-prefect-db"
CH = PREFIX + "k2-clickhouse"
SPARK = PREFIX + "k2-spark-iceberg"
CONTAINERS = (SPARK, CH, PG)
TABLES = ("bronze_trades_binance", "bronze_trades_kraken")
LABEL = "k2lab=" + (PREFIX or "1")
OFFLOAD_PY = "/opt/k2/venv/bin/python"
OFFLOAD_DIR = "/home/iceberg/offload"
SCHEDULER = "iceberg-offload-scheduler"
SCHEDULER_LOG = "/tmp/iceberg-offload-scheduler.log"


def _port(name, default):
    return int(os.environ.get(name, default))


def settings():
    """Connection settings of the running lab (what tests and playbooks need)."""
    path = os.path.join(STATE_DIR, "lab.json")
    if not os.path.exists(path):
        raise RuntimeError("the lab is not up (no %s); run: make lab-up" % path)
    with open(path) as fh:
        return json.load(fh)


def _write_state(data):
    os.makedirs(STATE_DIR, exist_ok=True)
    path = os.path.join(STATE_DIR, "lab.json")
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as fh:
        json.dump(data, fh, indent=2)


def inspect(name):
    """``docker inspect NAME`` (a container) as a dict, or None."""
    return engine.inspect(name)


def network_members(network=None):
    """Names of the containers attached to a network (the lab's by default)."""
    info = engine.network_inspect(network or NETWORK) or {}
    return sorted(c["Name"] for c in (info.get("Containers") or {}).values())


def dexec(container, *cmd, check=True, input=None, timeout=300, env=None):
    """``docker exec CONTAINER CMD...`` through the engine API; returns stdout (stderr too on failure)."""
    if input is not None:
        raise ValueError("dexec takes no standard input; pass data as arguments")
    rc, out, err = engine.exec_(container, list(cmd), env=env, check=check)
    return out if rc == 0 or not check else out + err


def container_running(name):
    return engine.running(name)


def _wait(what, predicate, timeout, interval=1.0):
    """Wait for predicate(); print progress every 10 s so long waits are visible."""
    start = time.time()
    last = start
    while True:
        try:
            if predicate():
                return time.time() - start
        except Exception:
            pass
        now = time.time()
        if now - start > timeout:
            raise RuntimeError("timed out after %.0f s waiting for %s" % (timeout, what))
        if now - last >= 10:
            log("still waiting for %s (%.0f s)" % (what, now - start))
            last = now
        time.sleep(interval)


# --- SQL / HTTP helpers used by tests -------------------------------------------------

def psql(sql, check=True, timeout=60, user="prefect"):
    """Run SQL in k2-prefect-db as the prefect user (as the runbook does); return rows as text.

    user="postgres" uses a superuser-reserved slot (when the prefect role's slots are full)."""
    return dexec(PG, "psql", "-q", "-U", user, "-d", "prefect", "-At", "-F", "\t",
                 "-v", "ON_ERROR_STOP=1", "-c", sql, check=check, timeout=timeout)


def ch(sql, timeout=60):
    url = settings()["clickhouse_url"] + "?" + urllib.parse.urlencode({"query": sql})
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return resp.read().decode()


def prom_query(expr):
    url = settings()["prometheus_url"] + "/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read().decode())["data"]["result"]


def watermark_ages():
    """{table: age_seconds} from Prometheus, the runbook's step 1 query."""
    return {r["metric"]["table"]: float(r["value"][1])
            for r in prom_query("(time()-watermark_timestamp_seconds)")}


def latest_watermarks():
    """{table: (max_timestamp, sequence_number, created_at, id)} read in k2-prefect-db."""
    out = psql("SELECT DISTINCT ON (table_name) table_name, max_timestamp, sequence_number, created_at, id "
               "FROM offload_watermarks ORDER BY table_name, created_at DESC, id DESC")
    result = {}
    for line in out.splitlines():
        t, ts, seq, created, wid = line.split("\t")
        result[t] = (ts, int(seq), created, int(wid))
    return result


def watermark_count():
    return {line.split("\t")[0]: int(line.split("\t")[1]) for line in
            psql("SELECT table_name, count(*) FROM offload_watermarks GROUP BY table_name").splitlines()}


def scheduler_log(lines=200):
    return dexec(SPARK, "tail", "-n", str(lines), SCHEDULER_LOG, check=False)


def scheduler_active():
    return dexec(SPARK, "systemctl", "is-active", SCHEDULER, check=False).strip()


def labtool(*args, timeout=300):
    out = dexec(SPARK, OFFLOAD_PY, OFFLOAD_DIR + "/labtool.py", *args, timeout=timeout)
    return json.loads(out.strip().splitlines()[-1])


# --- Spark (docs/spark.md) -------------------------------------------------------------

ICEBERG_RUNTIME_JAR = "/opt/iceberg/iceberg-spark-runtime-3.5_2.12-1.10.2.jar"
# The runbook's post-incident step 2, with --packages replaced by --jars (no Maven here); its
# -e "..." is left out: Spark 3.5's spark-shell ignores -e (docs/spark.md), so the code goes
# on standard input (runbook_spark_shell_command) or in a file (spark_shell).
RUNBOOK_SPARK_ARGS = (
    "--master", "local[*]", "--jars", ICEBERG_RUNTIME_JAR,
    "--conf", "spark.sql.catalog.spark_catalog=org.apache.iceberg.spark.SparkSessionCatalog",
    "--conf", "spark.sql.catalog.spark_catalog.type=hadoop",
    "--conf", "spark.sql.catalog.spark_catalog.warehouse=/home/iceberg/warehouse/",
)
RUNBOOK_SPARK_CODE = 'spark.read.table("cold.bronze_trades_binance").groupBy("sequence_number").count().where("count > 1").show()'


def runbook_spark_shell_command(docker="docker"):
    """The runbook's duplicate check as an operator types it in the lab: the code on standard
    input of ``docker exec -i`` (an argv list; the code is RUNBOOK_SPARK_CODE)."""
    return [docker, "exec", "-i", SPARK, "spark-shell"] + list(RUNBOOK_SPARK_ARGS)


def spark_shell(code, *args, timeout=600):
    """Run Scala ``code`` in ``spark-shell ARGS`` in the Spark container (``-i`` of a file there,
    removed afterwards); returns what the shell printed on stdout (the REPL echo, results)."""
    path = "/tmp/k2lab-spark-%s.scala" % secrets.token_hex(6)
    dexec(SPARK, "sh", "-c", 'printf "%s\n" "$1" > "$2"', "sh", code, path)
    try:
        return dexec(SPARK, "spark-shell", *(list(args) + ["-i", path]), timeout=timeout)
    finally:
        dexec(SPARK, "rm", "-f", path, check=False)


def spark_sql(sql, *args, timeout=600):
    """``spark-sql ARGS -e SQL`` in the Spark container: the rows of every statement, in order,
    each a list of its tab-separated fields (spark-sql prints results alone on stdout)."""
    out = dexec(SPARK, "spark-sql", *(list(args) + ["-e", sql]), timeout=timeout)
    return [line.split("\t") for line in out.splitlines() if line.strip()]


def consistency(tables=None, watermark=None):
    """The consistency checker's report: {'ok': bool, 'tables': {t: {...}}}.

    watermark: optional (max_timestamp_text, sequence_number) to compare against
    instead of each table's latest watermark entry.
    """
    cmd = [OFFLOAD_PY, OFFLOAD_DIR + "/consistency.py"]
    for t in tables or ():
        cmd += ["--table", t]
    if watermark:
        cmd += ["--watermark-ts", str(watermark[0]), "--watermark-seq", str(watermark[1])]
    rc, out, err = engine.exec_(SPARK, cmd, check=False)
    try:
        return json.loads(out)
    except ValueError:
        raise RuntimeError("consistency checker failed (rc %d): %s" % (rc, (err or out)[-2000:]))


def wait_for_new_watermarks(tables=TABLES, cycles=1, timeout=None):
    """Wait until every table has ``cycles`` more watermark entries than now."""
    cycle = settings()["cycle_seconds"]
    before = watermark_count()
    timeout = timeout or cycle * (cycles + 3) + 60
    _wait("%d new watermark(s) per table" % cycles,
          lambda: all(watermark_count().get(t, 0) >= before.get(t, 0) + cycles for t in tables),
          timeout)


def inventory(python=None):
    """An Ansible inventory (YAML) for the running lab, in the shape of docs/inventory.md.

    Groups: k2_db_docker (the Docker host of k2-prefect-db: this machine), k2_scheduler
    (where iceberg-offload-scheduler runs) and k2_spark (where the offload job and the
    Iceberg warehouse are), both k2-spark-iceberg through community.docker.docker.
    PostgreSQL, ClickHouse and Prometheus are reached from localhost on the published
    ports, and from the Spark container by their container names, as the scheduler does.
    """
    s = settings()
    return """all:
  vars:
    k2_pg_host: {pg_host}
    k2_pg_port: {pg_port}
    k2_pg_user: {pg_user}
    k2_pg_password: {pg_password}
    k2_pg_database: {pg_database}
    k2_pg_admin_user: postgres
    k2_pg_admin_password: {pg_password}
    k2_clickhouse_url: {clickhouse_url}
    k2_prometheus_url: {prometheus_url}
    k2_cycle_seconds: {cycle_seconds}
    k2_pg_container: {pg}
    k2_spark_container: {spark}
    k2_docker_network: {network}
    k2_spark_pg_host: {pg}
    k2_spark_pg_port: 5432
    k2_spark_clickhouse_url: http://{ch}:8123/
    k2_iceberg_catalog: k2
    k2_iceberg_catalog_properties:
      type: sql
      uri: sqlite:////home/iceberg/warehouse/catalog.db
      warehouse: file:///home/iceberg/warehouse
    k2_offload_python: {py}
    k2_offload_script: {offload_dir}/offload_generic.py
  hosts:
    localhost:
      ansible_connection: local
      ansible_python_interpreter: {local_py}
      ansible_pipelining: true
  children:
    k2_db_docker:
      hosts:
        localhost:
    k2_scheduler:
      hosts:
        {spark}:
    k2_spark:
      hosts:
        {spark}:
          ansible_connection: community.docker.docker
          ansible_python_interpreter: {py}
          ansible_pipelining: true
""".format(spark=SPARK, py=OFFLOAD_PY, pg=PG, ch=CH, offload_dir=OFFLOAD_DIR,
           local_py=python or sys.executable, **s)


# --- bring-up / tear-down -------------------------------------------------------------

def stale_seconds(cycle_seconds):
    """The lab's alert threshold: 4 cycles, as the runbook's 3600 s is 4 cycles of 900 s."""
    return 4 * int(cycle_seconds)


def _prometheus_rules(state, cycle_seconds):
    stale = stale_seconds(cycle_seconds)
    with open(os.path.join(LAB_DIR, "prometheus", "rules.yml.in")) as fh:
        text = fh.read()
    text = text.replace("STALE_SECONDS", str(stale)).replace(
        "STALE_TEXT", "%d s (4 cycles)" % stale)
    path = os.path.join(state, "rules.yml")
    with open(path, "w") as fh:
        fh.write(text)
    return path


def _prometheus_config(state, exporter_port, cycle_seconds, alertmanagers=()):
    cfg = """global:
  scrape_interval: 2s
  evaluation_interval: 2s
rule_files:
  - {rules}
scrape_configs:
  - job_name: iceberg-offload
    static_configs:
      - targets: ['127.0.0.1:{port}']
""".format(rules=_prometheus_rules(state, cycle_seconds), port=exporter_port)
    if alertmanagers:
        cfg += """alerting:
  alertmanagers:
    - static_configs:
        - targets: [{targets}]
""".format(targets=", ".join("'%s'" % t for t in alertmanagers))
    path = os.path.join(state, "prometheus.yml")
    with open(path, "w") as fh:
        fh.write(cfg)
    return path


def prometheus_alertmanagers(targets):
    """Point the lab's Prometheus at these Alertmanagers (host:port; empty: none) and reload it."""
    s = settings()
    exporter_port = int(s["exporter_url"].rsplit(":", 1)[1].split("/")[0])
    _prometheus_config(STATE_DIR, exporter_port, s["cycle_seconds"], list(targets))
    req = urllib.request.Request(s["prometheus_url"] + "/-/reload", method="POST")
    with urllib.request.urlopen(req, timeout=10) as resp:
        resp.read()


def _start_prometheus(state, port, exporter_port, cycle_seconds):
    binary = shutil.which("prometheus")
    if not binary:
        raise RuntimeError("prometheus is not installed (make setup installs it)")
    data = os.path.join(state, "prometheus-data")
    os.makedirs(data, exist_ok=True)
    logf = open(os.path.join(state, "prometheus.log"), "w")
    proc = subprocess.Popen(
        [binary, "--config.file=" + _prometheus_config(state, exporter_port, cycle_seconds),
         "--storage.tsdb.path=" + data, "--web.listen-address=127.0.0.1:%d" % port,
         "--web.enable-lifecycle", "--storage.tsdb.retention.time=1d"],
        stdout=logf, stderr=subprocess.STDOUT, start_new_session=True)
    with open(os.path.join(state, "prometheus.pid"), "w") as fh:
        fh.write(str(proc.pid))
    return proc.pid


def up(cycle_seconds=None, timeout=300):
    """Build what is missing, start everything, wait for each table's first scheduler watermark."""
    t0 = time.time()
    refs = images.build_all()
    log("images ready in %.0f s" % (time.time() - t0))
    if any(container_running(c) for c in CONTAINERS):
        raise RuntimeError("a lab container is already running; run: make lab-down")
    down(quiet=True)
    t_up = time.time()
    os.makedirs(STATE_DIR, exist_ok=True)
    cycle = int(cycle_seconds or os.environ.get("K2LAB_CYCLE_SECONDS", 15))
    ports = {
        "pg": _port("K2LAB_PG_PORT", 15432), "ch": _port("K2LAB_CH_PORT", 18123),
        "exporter": _port("K2LAB_EXPORTER_PORT", 19188), "prom": _port("K2LAB_PROM_PORT", 19090),
    }
    password = secrets.token_urlsafe(18)
    state = {
        "pg_host": "127.0.0.1", "pg_port": ports["pg"], "pg_user": "prefect", "pg_password": password,
        "pg_database": "prefect", "clickhouse_url": "http://127.0.0.1:%d/" % ports["ch"],
        "prometheus_url": "http://127.0.0.1:%d" % ports["prom"],
        "exporter_url": "http://127.0.0.1:%d/metrics" % ports["exporter"],
        "cycle_seconds": cycle, "tables": list(TABLES), "containers": list(CONTAINERS),
        "network": NETWORK, "images": refs,
    }
    _write_state(state)
    env_path = os.path.join(STATE_DIR, "offload.env")
    with os.fdopen(os.open(env_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as fh:
        fh.write("K2_PG_DSN=host=%s port=5432 dbname=prefect user=prefect password=%s\n" % (PG, password))
        fh.write("K2_CH_URL=http://%s:8123/\nK2_TABLES=%s\nK2_CYCLE_SECONDS=%d\n" % (CH, " ".join(TABLES), cycle))

    labels = {LABEL.split("=")[0]: LABEL.split("=")[1]}
    engine.network_create(NETWORK, labels)
    engine.run(refs["postgres"], PG, NETWORK, labels, env={"POSTGRES_PASSWORD": password},
               ports={"5432/tcp": ("127.0.0.1", ports["pg"])})
    engine.run(refs["clickhouse"], CH, NETWORK, labels, ports={"8123/tcp": ("127.0.0.1", ports["ch"])})
    engine.run(refs["spark-iceberg"], SPARK, NETWORK, labels, cgroupns="host",
               volumes={"/sys/fs/cgroup": {"bind": "/sys/fs/cgroup", "mode": "ro"},
                        env_path: {"bind": "/etc/k2/offload.env", "mode": "ro"}},
               tmpfs={"/run": "", "/run/lock": ""}, ports={"9188/tcp": ("127.0.0.1", ports["exporter"])})
    _wait("PostgreSQL in %s" % PG, lambda: psql("SELECT 1", check=False).strip() == "1", 120)
    _wait("ClickHouse seeded in %s" % CH,
          lambda: engine.exec_(CH, ["test", "-e", "/tmp/k2-clickhouse-ready"], check=False)[0] == 0, 180)
    _wait("systemd in %s" % SPARK,
          lambda: dexec(SPARK, "systemctl", "is-system-running", check=False).strip() in ("running", "degraded"),
          120)
    written = labtool("init")
    log("first watermarks written by the lab: %s" % written)
    dexec(SPARK, "systemctl", "enable", "--now", "k2-watermark-exporter", SCHEDULER)
    _start_prometheus(STATE_DIR, ports["prom"], ports["exporter"], cycle)
    base = watermark_count()
    _wait("the scheduler's first watermark for each table",
          lambda: all(watermark_count().get(t, 0) > base.get(t, 0) for t in TABLES), timeout)
    _wait("Prometheus series for each table", lambda: len(watermark_ages()) == len(TABLES), 60)
    log("lab up in %.0f s (images %.0f s): %s" % (time.time() - t0, t_up - t0, json.dumps(
        {k: state[k] for k in ("pg_port", "clickhouse_url", "prometheus_url", "cycle_seconds")})))
    return state


def _stop_prometheus():
    pidfile = os.path.join(STATE_DIR, "prometheus.pid")
    if not os.path.exists(pidfile):
        return
    with open(pidfile) as fh:
        pid = int(fh.read().strip() or 0)
    if pid:
        try:
            os.kill(pid, signal.SIGTERM)
            for _ in range(100):
                os.kill(pid, 0)
                time.sleep(0.1)
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    os.remove(pidfile)


@contextlib.contextmanager
def running(cycle_seconds=None, keep=False):
    """The running lab's settings, or those of a lab brought up here (with ``cycle_seconds``) and
    taken down on leaving, unless ``keep``; a lab that was already running is left as it is."""
    started = False
    try:
        s = settings()
        if not container_running(SPARK):
            raise RuntimeError("stale state")
    except RuntimeError:
        s = up(cycle_seconds=cycle_seconds)
        started = True
    try:
        yield s
    finally:
        if started and not keep:
            down(quiet=True)


def down(quiet=False):
    """Remove every container, network, volume and process the lab made, and its state."""
    _stop_prometheus()
    for cid in sorted(set(engine.containers_with_label(LABEL) + [c for c in CONTAINERS if engine.inspect(c)])):
        engine.remove(cid)
    for net in set(engine.networks_with_label(LABEL)):
        engine.network_remove(net)
    if engine.network_inspect(NETWORK):
        engine.network_remove(NETWORK)
    for vol in engine.volumes_with_label(LABEL):
        engine.volume_remove(vol)
    if os.path.isdir(STATE_DIR):
        shutil.rmtree(STATE_DIR)
    if not quiet:
        log("lab down: containers, network, Prometheus and state removed")


def leftovers():
    """What the lab could have left behind (empty when down() did its job)."""
    found = {
        "containers": engine.containers_with_label(LABEL) + [c for c in CONTAINERS if engine.inspect(c)],
        "networks": [NETWORK] if engine.network_inspect(NETWORK) else [],
        "volumes": engine.volumes_with_label(LABEL),
        "state_dir": [STATE_DIR] if os.path.exists(STATE_DIR) else [],
    }
    return {k: v for k, v in found.items() if v}
