# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""One fault per runbook scenario (and sub-case), and the way back.

``inject(name)`` breaks the running lab the way the runbook describes;
``heal(name)`` undoes infrastructure faults. Data faults (a dropped table,
duplicate or regressing watermark rows) are what the collection recovers;
``heal`` of those only restores the lab for the next test (the lab's own
repair: recreate the table, first watermark from the cold tier), and says so.
"""

import json
import os
import time

from . import STATE_DIR, engine, log
from .lab import (NETWORK, PG, SCHEDULER, SPARK, TABLES, dexec, labtool, psql, settings, _wait)

IDLE_SESSIONS_PIDFILE = "/tmp/k2-idle-sessions.pids"

FAULTS = {
    "scheduler-stopped": "Scenario 1: iceberg-offload-scheduler stopped (systemd: inactive)",
    "pg-stopped": "Scenario 2: k2-prefect-db container stopped",
    "pg-crashed": "Scenario 2a: PostgreSQL killed (container exits 137)",
    "pg-connections": "Scenario 2b: connections exhausted by idle sessions",
    "pg-partition": "Scenario 2c: k2-prefect-db disconnected from k2-network",
    "table-dropped": "Scenario 3: offload_watermarks dropped",
    "duplicate-burst": "Scenario 4: a burst of duplicate watermark rows",
    "regression": "Scenario 4: a watermark entry whose pair goes backward",
    "silent-zero": "Scenario 5: the running scheduler's jobs write 0 rows and report success "
                   "(a job started by hand, or by a restarted scheduler, works)",
    "silent-zero-logic": "Scenario 5: the offload job itself writes 0 rows and reports success "
                         "(a logic bug: the manual offload cannot help, escalate)",
}


def _record(name, data):
    path = os.path.join(STATE_DIR, "fault-%s.json" % name)
    with open(path, "w") as fh:
        json.dump(data, fh)


def _recorded(name):
    path = os.path.join(STATE_DIR, "fault-%s.json" % name)
    if not os.path.exists(path):
        return None
    with open(path) as fh:
        data = json.load(fh)
    os.remove(path)
    return data


def inject(name, **kw):
    if name not in FAULTS:
        raise ValueError("unknown fault %r; known: %s" % (name, ", ".join(sorted(FAULTS))))
    log("inject %s — %s" % (name, FAULTS[name]))
    return globals()["_inject_" + name.replace("-", "_")](**kw)


def heal(name=None):
    """Undo one fault, or (no name) every infrastructure fault."""
    names = [name] if name else ["silent-zero", "silent-zero-logic", "pg-partition", "pg-connections", "pg-crashed",
                                 "pg-stopped", "scheduler-stopped"]
    for n in names:
        globals()["_heal_" + n.replace("-", "_")]()
    log("healed %s" % (name or "all infrastructure faults"))


# 1 --------------------------------------------------------------------------------------
def _inject_scheduler_stopped():
    dexec(SPARK, "systemctl", "stop", SCHEDULER)


def _heal_scheduler_stopped():
    dexec(SPARK, "systemctl", "start", SCHEDULER)


# 2 --------------------------------------------------------------------------------------
def _inject_pg_stopped():
    engine.stop(PG, timeout=60)


def _heal_pg_stopped():
    engine.start(PG)
    _wait("PostgreSQL", lambda: psql("SELECT 1", check=False).strip() == "1", 90)


def _inject_pg_crashed():
    engine.kill(PG, "KILL")


_heal_pg_crashed = _heal_pg_stopped


def _inject_pg_connections(sessions=None):
    """Idle sessions from the Spark host fill every slot a normal role can use."""
    max_conn = int(psql("SHOW max_connections").strip())
    reserved = int(psql("SHOW superuser_reserved_connections").strip())
    used = int(psql("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'").strip())
    n = sessions or (max_conn - reserved - used + 2)
    dexec(SPARK, "rm", "-f", IDLE_SESSIONS_PIDFILE)
    _open_idle_sessions(n)
    _wait("connection slots to fill up", _slots_full, 90)
    # Connections counted as used above may end a moment later (the counting psql itself, a
    # scheduler cycle, a probe): each one frees a slot, and the fault would be gone before
    # anyone diagnoses it. Top up until the pool stays full.
    for dummy in range(2):
        time.sleep(2)
        if _slots_full():
            continue
        _open_idle_sessions(2)
        n += 2
        _wait("connection slots to fill up again", _slots_full, 60)
    return n


def _open_idle_sessions(n):
    """n idle psql sessions of the prefect role from the Spark host (their PIDs recorded for heal)."""
    script = (
        'for i in $(seq 1 {n}); do '
        '(sleep infinity | PGPASSWORD="$K2PW" psql -h {pg} -U prefect -d prefect -q >/dev/null 2>&1 &'
        ' echo $! >> {pids}); done; sleep 3'.format(pids=IDLE_SESSIONS_PIDFILE, n=n, pg=PG))
    dexec(SPARK, "bash", "-c", script, env={"K2PW": settings()["pg_password"]})


def _slots_full():
    """True when a new connection of the prefect role is refused for lack of slots."""
    out = dexec(SPARK, "psql", "-h", PG, "-U", "prefect", "-d", "prefect", "-c", "SELECT 1", check=False,
                env={"PGPASSWORD": settings()["pg_password"]})
    return "SELECT 1" not in out and "?column?" not in out


def _heal_pg_connections():
    # Ends the psql clients started by the fault (by their recorded PIDs).
    dexec(SPARK, "bash", "-c",
          "[ -f {p} ] && for pid in $(cat {p}); do pkill -P $pid 2>/dev/null; kill $pid 2>/dev/null; done; "
          "rm -f {p}; true".format(p=IDLE_SESSIONS_PIDFILE), check=False)


def _inject_pg_partition():
    engine.network_disconnect(NETWORK, PG)


def _heal_pg_partition():
    info = engine.inspect(PG) or {}
    if NETWORK not in ((info.get("NetworkSettings") or {}).get("Networks") or {}):
        engine.network_connect(NETWORK, PG)


# 3 --------------------------------------------------------------------------------------
def _inject_table_dropped():
    psql("DROP TABLE offload_watermarks")


def _heal_table_dropped():
    """Lab repair only: recreate the table and write first watermarks from the cold tier."""
    psql(open(os.path.join(os.path.dirname(__file__), "..", "images", "postgres", "init.sql")).read())
    return labtool("init")


# 4 --------------------------------------------------------------------------------------
def _psql_under_offload_lock(table, sql):
    """Run SQL from the Spark container while holding the table's offload lock, so no offload
    of that table is between its Iceberg append and its watermark insert meanwhile."""
    return dexec(SPARK, "flock", "/run/k2-offload/%s.lock" % table, "psql", "-h", PG, "-U", "prefect", "-d",
                 "prefect", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-c", sql,
                 env={"PGPASSWORD": settings()["pg_password"]})


def _inject_duplicate_burst(count=30, table=TABLES[0]):
    """The latest entry written ``count`` more times, as a retrying writer would (right after
    its own entry: taken under the offload's lock, so no newer entry comes in between)."""
    ids = _psql_under_offload_lock(
        table,
        "INSERT INTO offload_watermarks (table_name, max_timestamp, sequence_number) "
        "SELECT table_name, max_timestamp, sequence_number FROM "
        "(SELECT * FROM offload_watermarks WHERE table_name = '%s' ORDER BY created_at DESC, id DESC LIMIT 1) w, "
        "generate_series(1, %d) RETURNING id" % (table, int(count))).split()
    _record("duplicate-burst", {"ids": [int(i) for i in ids]})
    return [int(i) for i in ids]


def _heal_duplicate_burst():
    data = _recorded("duplicate-burst")
    if data and data["ids"]:
        psql("DELETE FROM offload_watermarks WHERE id IN (%s)" % ",".join(str(int(i)) for i in data["ids"]))


def _inject_regression(table=TABLES[0], back_seconds=7200):
    """A new latest entry whose pair is two hours behind the one before it."""
    wid = _psql_under_offload_lock(
        table,
        "INSERT INTO offload_watermarks (table_name, max_timestamp, sequence_number) "
        "SELECT table_name, max_timestamp - make_interval(secs => %d), GREATEST(sequence_number - %d, 0) FROM "
        "(SELECT * FROM offload_watermarks WHERE table_name = '%s' ORDER BY created_at DESC, id DESC LIMIT 1) w "
        "RETURNING id" % (int(back_seconds), int(back_seconds) * 2, table)).strip()
    _record("regression", {"id": int(wid)})
    return int(wid)


def _heal_regression():
    """Lab repair only: remove the regressing entry (re-offloaded rows stay in the cold tier)."""
    data = _recorded("regression")
    if data:
        psql("DELETE FROM offload_watermarks WHERE id = %d" % int(data["id"]))


# 5 --------------------------------------------------------------------------------------
def _inject_silent_zero():
    """The scheduler process now running is in a bad state (as with a stale connection to a
    source replica): the jobs it starts read nothing. Its PID marks the fault, so a restart
    (new PID) or the runbook's manual offload is not affected."""
    pid = dexec(SPARK, "systemctl", "show", "-p", "MainPID", "--value", SCHEDULER).strip()
    if not pid or pid == "0":
        raise RuntimeError("the scheduler is not running; silent-zero needs a running scheduler")
    dexec(SPARK, "bash", "-c", "mkdir -p /etc/k2/faults && echo %d > /etc/k2/faults/silent_zero_scheduler" % int(pid))
    return int(pid)


def _heal_silent_zero():
    dexec(SPARK, "rm", "-f", "/etc/k2/faults/silent_zero_scheduler", check=False)


def _inject_silent_zero_logic():
    dexec(SPARK, "bash", "-c", "mkdir -p /etc/k2/faults && touch /etc/k2/faults/silent_zero")


def _heal_silent_zero_logic():
    dexec(SPARK, "rm", "-f", "/etc/k2/faults/silent_zero", check=False)
