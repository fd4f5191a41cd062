# -*- coding: utf-8 -*-
# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The offload scheduler as the runbook reads it: its systemd unit and its log.

Private to this collection. Pure Python (no server): ``parse_systemctl_show`` reads the
output of ``systemctl show --timestamp=unix``; ``read_tail`` reads the end of a log file
in bounded memory and time; ``parse_log`` turns log lines into the facts of runbook
Diagnosis step 3 and Scenarios 1 and 5.

The log format is the scheduler's (``/tmp/iceberg-offload-scheduler.log``)::

    2026-02-12 10:15:00 CYCLE 7 START
    2026-02-12 10:15:02 Offload completed: 812 rows (bronze_trades_binance -> cold.bronze_trades_binance, ...)
    2026-02-12 10:15:02 ERROR watermark: cannot connect to PostgreSQL: ... too many clients already
    2026-02-12 10:15:03 CYCLE 7 table=bronze_trades_kraken FAILED rc=3
    2026-02-12 10:15:03 CYCLE 7 END tables=2 failed=1 duration=3.1s
    2026-02-12 10:16:00 scheduler stopped
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import os
import re
import time
from collections import deque

UNIT_PROPERTIES = (
    "LoadState", "ActiveState", "SubState", "UnitFileState", "Result", "MainPID", "NRestarts",
    "ExecMainStatus", "ExecMainCode", "ActiveEnterTimestamp", "InactiveEnterTimestamp",
    "StateChangeTimestamp", "ExecMainStartTimestamp", "ExecMainExitTimestamp", "RestartUSec",
)

# A unit that restarted within this many seconds of the read may be crash-looping: look twice.
RECENT_START_SECONDS = 60

# si_code of the main process' end, as systemd reports it in ExecMainCode.
_EXIT_CODES = {"0": None, "1": "exited", "2": "killed", "3": "dumped"}

_TS_RE = re.compile(r"^(\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2})(?:[.,]\d+)?\s+(.*)$")
_CYCLE_RE = re.compile(r"^CYCLE (\d+) (START|END)\b(.*)$")
_CYCLE_FAILED_RE = re.compile(r"^CYCLE (\d+) table=(\S+) FAILED rc=(-?\d+)")
_COMPLETED_RE = re.compile(r"Offload completed: (\d+) rows? \((\S+)")
_END_DETAIL_RE = re.compile(r"failed=(\d+)(?: duration=([\d.]+)s)?")
_NO_WATERMARK_RE = re.compile(r"no watermark for (\S+)")

# Kinds of error lines, first match wins. Each says which runbook scenario it points at.
ERROR_KINDS = (
    ("too_many_clients", re.compile(r"too many clients|remaining connection slots are reserved", re.I)),
    # The watermark INSERT refused after the Iceberg append (Symptoms: "cycles completing but watermark
    # not progressing"; Scenario 4: "constraint violations"). Each is a kind of WATERMARK_WRITE_KINDS.
    ("permission_denied", re.compile(r"permission denied for (table|relation|sequence|schema)", re.I)),
    ("constraint_violation", re.compile(r"violates [a-z -]*constraint", re.I)),
    ("disk_full", re.compile(r"No space left on device|could not extend file", re.I)),
    ("read_only", re.compile(r"read-only transaction|recovery is in progress", re.I)),
    ("job_timeout", re.compile(r"did not finish within", re.I)),
    ("unknown_host", re.compile(r"could not translate host name|Name or service not known|"
                                r"Temporary failure in name resolution|nodename nor servname", re.I)),
    ("connection_refused", re.compile(r"Connection refused", re.I)),
    ("connection_timeout", re.compile(r"timeout expired|timed out|No route to host", re.I)),
    ("authentication", re.compile(r"password authentication failed|no password supplied", re.I)),
    ("missing_relation", re.compile(r'relation "[^"]+" does not exist', re.I)),
    ("no_watermark", re.compile(r"no watermark for", re.I)),
    ("clickhouse", re.compile(r"ERROR reading ClickHouse", re.I)),
    ("watermark", re.compile(r"ERROR watermark", re.I)),
    ("error", re.compile(r"\bERROR\b|Traceback", re.I)),
)


# Error kinds that mean the offload's watermark INSERT was refused (after its Iceberg append).
WATERMARK_WRITE_KINDS = ("permission_denied", "constraint_violation", "disk_full", "read_only")


def parse_systemctl_show(text):
    """Facts of a unit from ``systemctl show --timestamp=unix -p ...`` output (KEY=VALUE lines)."""
    raw = {}
    for line in (text or "").splitlines():
        if "=" in line:
            key, value = line.split("=", 1)
            raw[key.strip()] = value.strip()
    code = _EXIT_CODES.get(raw.get("ExecMainCode", ""), raw.get("ExecMainCode") or None)
    status = _int(raw.get("ExecMainStatus"))
    restart_seconds = _systemd_seconds(raw.get("RestartUSec"))
    return {
        "load_state": raw.get("LoadState") or None,
        "active_state": raw.get("ActiveState") or None,
        "sub_state": raw.get("SubState") or None,
        "unit_file_state": raw.get("UnitFileState") or None,
        "result": raw.get("Result") or None,
        "main_pid": _int(raw.get("MainPID")) or None,
        "restarts": _int(raw.get("NRestarts")),
        "exists": raw.get("LoadState") not in (None, "", "not-found"),
        "active": raw.get("ActiveState") in ("active", "reloading", "activating"),
        # Between two crashes systemd shows "activating (auto-restart)": active by the test above, and
        # not running. A crash loop is judged over two reads (crash_loop()).
        "running": raw.get("ActiveState") == "active" and raw.get("SubState") == "running",
        "auto_restart": raw.get("SubState") == "auto-restart",
        "restart_seconds": restart_seconds,
        "since": _unix_ts(raw.get("StateChangeTimestamp")),
        "active_since": _unix_ts(raw.get("ActiveEnterTimestamp")),
        "inactive_since": _unix_ts(raw.get("InactiveEnterTimestamp")),
        "last_exit": None if not raw.get("ExecMainExitTimestamp") else {
            "at": _unix_ts(raw.get("ExecMainExitTimestamp")),
            "code": code,
            "status": status,
            "signal": status if code in ("killed", "dumped") else None,
        },
    }


def crash_loop(first, second, seconds_between):
    """Whether two reads of a unit ``seconds_between`` apart show a crash loop: systemd restarting it
    (auto-restart) or its restart counter climbing. Returns ``(bool, evidence dict)``."""
    if not first or not second or not first.get("exists"):
        return False, None
    climbed = (second.get("restarts") or 0) - (first.get("restarts") or 0)
    looping = bool(first.get("auto_restart") or second.get("auto_restart") or climbed > 0)
    if not looping:
        return False, None
    ex = second.get("last_exit") or first.get("last_exit") or {}
    return True, {"restarts": second.get("restarts"), "restarts_during_look": climbed,
                  "seconds_watched": round(seconds_between, 1), "result": second.get("result"),
                  "exit_code": ex.get("code"), "exit_status": ex.get("status"), "exit_signal": ex.get("signal"),
                  "last_exit_at": ex.get("at"), "restart_seconds": second.get("restart_seconds")}


def journal_errors(lines, keep=5):
    """The journal lines that say why a unit died (the exception, the exit status), without systemd's
    chatter (starting, stopping, cgroup notices), the host and process prefix dropped."""
    out = []
    for line in lines or []:
        text = line.split("]: ", 1)[1] if "]: " in line else line
        if "cgroup" in text:
            continue
        if re.search(r"Error|Exception|Traceback|FATAL|PANIC|Main process exited|Failed with result", text):
            out.append(text.strip()[:300])
    return out[-keep:]


def recently_started(unit, now):
    """The unit is auto-restarting, or it (re)started within RECENT_START_SECONDS of ``now`` after a restart."""
    if not unit or not unit.get("exists"):
        return False
    if unit.get("auto_restart"):
        return True
    if not unit.get("restarts"):
        return False
    since = unit.get("active_since")
    try:
        started = datetime.datetime.strptime(since, "%Y-%m-%d %H:%M:%S")
    except (TypeError, ValueError):
        return True
    return (now - started).total_seconds() < RECENT_START_SECONDS


_SPAN_RE = re.compile(r"(\d+(?:\.\d+)?)\s*(us|ms|min|s|h|d)")
_SPAN_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "min": 60.0, "h": 3600.0, "d": 86400.0}


def _systemd_seconds(value):
    """Seconds from a systemd time span as ``systemctl show`` prints it (``5s``, ``100ms``, ``1min 30s``,
    or microseconds as a bare number)."""
    if not value:
        return None
    if value.isdigit():
        return int(value) / 1e6
    parts = _SPAN_RE.findall(value)
    if not parts:
        return None
    return sum(float(n) * _SPAN_UNITS[u] for n, u in parts)


def _int(value):
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _unix_ts(value):
    """``@1770891300`` (systemctl --timestamp=unix) -> ISO text in UTC; anything else as given."""
    if not value or value in ("n/a", "0"):
        return None
    if value.startswith("@"):
        try:
            return datetime.datetime.fromtimestamp(
                int(value[1:]), datetime.timezone.utc).replace(tzinfo=None).isoformat(sep=" ")
        except (ValueError, OverflowError, OSError):
            return value
    return value


def read_tail(path, max_bytes, rotated_suffix=".1"):
    """The last lines of ``path`` within ``max_bytes`` (and, when the file holds less than that,
    the end of its rotated predecessor first). Never raises for a missing or unreadable file.

    Returns ``(lines, info)``; ``info`` says whether the log exists, its size and age, whether a
    rotated file was read, whether the start was cut, and any error.
    """
    info = {"path": path, "exists": False, "size": None, "modified": None, "rotated_read": None,
            "truncated": False, "error": None}
    lines = []
    try:
        st = os.stat(path)
    except OSError as e:
        info["error"] = "%s: %s" % (path, e.strerror or e)
        st = None
    budget = max_bytes
    if st is not None:
        info.update(exists=True, size=st.st_size,
                    modified=datetime.datetime.fromtimestamp(st.st_mtime, datetime.timezone.utc)
                    .replace(tzinfo=None).isoformat(sep=" "))
        try:
            chunk, cut = _read_end(path, st.st_size, budget)
            lines = chunk
            info["truncated"] = cut
            budget -= min(st.st_size, budget)
        except (IOError, OSError) as e:
            info["error"] = "%s: %s" % (path, e.strerror or e)
    if budget > 0 and rotated_suffix:
        old = path + rotated_suffix
        try:
            ost = os.stat(old)
            chunk, cut = _read_end(old, ost.st_size, budget)
            lines = chunk + lines
            info["rotated_read"] = old
            info["truncated"] = cut
        except (IOError, OSError):
            pass
    return lines, info


def _read_end(path, size, budget):
    with open(path, "rb") as f:
        start = max(0, size - budget)
        f.seek(start)
        data = f.read(budget)
    text = data.decode("utf-8", "replace")
    lines = text.splitlines()
    if start > 0 and lines:
        lines = lines[1:]  # the first line was cut by the seek
    return lines, start > 0


def local_to_utc(text):
    """A log time (``YYYY-MM-DD HH:MM:SS``, the host's local time) as naive UTC ISO 8601 text; None when
    it is not one."""
    try:
        local = datetime.datetime.strptime(text or "", "%Y-%m-%d %H:%M:%S")
    except ValueError:
        return None
    try:
        epoch = time.mktime(local.timetuple())
    except (OverflowError, ValueError):
        return None
    return datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc).replace(tzinfo=None).isoformat(sep=" ")


def classify_error(message):
    for kind, pattern in ERROR_KINDS:
        if pattern.search(message):
            return kind
    return None


def _split(line):
    m = _TS_RE.match(line)
    if not m:
        return None, line.strip()
    return m.group(1).replace("T", " "), m.group(2).strip()


def parse_log(lines, tables=None, max_errors=10, history=0):
    """Facts of the scheduler's log lines (oldest first).

    ``tables``: the source tables to report on (default: every table seen).
    Per table: the last ``Offload completed`` (rows, time, line), how many completions in a
    row at the end were 0 rows (``consecutive_zero_rows``), the last failure and the last error
    attributed to it. Overall: the last cycle (start, end, failed, duration), whether a cycle is
    running, the last ``scheduler started`` / ``stopped`` lines, and the last errors by kind.
    With ``history`` > 0, each table also has ``history``: its last ``history`` offloads, oldest
    first, ``{time, utc, rows}`` for a completion and ``{time, utc, rows: None, failed: rc}`` for a
    failed job (rows offloaded per cycle, for a chart); ``time`` is the log's (the host's local time),
    ``utc`` the same moment in UTC.
    """
    per_table = {}
    errors = []
    pending = []        # errors of the job whose FAILED line has not come yet
    last_cycle = None
    cycles_seen = 0
    started = stopped = None
    last_time = None

    def table(name):
        item = per_table.get(name)
        if item is None:
            item = per_table[name] = {
                "last_completed": None, "consecutive_zero_rows": 0, "completed_seen": 0,
                "last_nonzero": None, "last_failure": None, "last_error": None}
            if history > 0:
                item["history"] = deque(maxlen=history)
        return item

    for line in lines:
        when, msg = _split(line)
        if when:
            last_time = when
        m = _CYCLE_RE.match(msg)
        if m:
            number, what = int(m.group(1)), m.group(2)
            if what == "START":
                cycles_seen += 1
                last_cycle = {"number": number, "started": when, "ended": None, "failed": None,
                              "duration_seconds": None}
                pending = []
            elif last_cycle is not None and last_cycle["number"] == number:
                d = _END_DETAIL_RE.search(m.group(3))
                last_cycle.update(ended=when, failed=int(d.group(1)) if d else None,
                                  duration_seconds=float(d.group(2)) if d and d.group(2) else None)
            else:
                d = _END_DETAIL_RE.search(m.group(3))
                last_cycle = {"number": number, "started": None, "ended": when,
                              "failed": int(d.group(1)) if d else None, "duration_seconds": None}
            continue
        m = _CYCLE_FAILED_RE.match(msg)
        if m:
            t = table(m.group(2))
            err = pending[-1] if pending else None
            t["last_failure"] = {"time": when, "cycle": int(m.group(1)), "rc": int(m.group(3)),
                                 "error_kind": err["kind"] if err else None,
                                 "error": err["line"] if err else None}
            if history > 0:
                t["history"].append({"time": when, "utc": local_to_utc(when), "rows": None,
                                     "failed": int(m.group(3))})
            if err:
                t["last_error"] = err
            pending = []
            continue
        m = _COMPLETED_RE.search(msg)
        if m:
            rows, name = int(m.group(1)), m.group(2)
            t = table(name)
            t["completed_seen"] += 1
            t["last_completed"] = {"time": when, "rows": rows, "line": line.strip()}
            if history > 0:
                t["history"].append({"time": when, "utc": local_to_utc(when), "rows": rows})
            if rows == 0:
                t["consecutive_zero_rows"] += 1
            else:
                t["consecutive_zero_rows"] = 0
                t["last_nonzero"] = {"time": when, "rows": rows}
            pending = []
            continue
        if msg.startswith("scheduler started"):
            started = {"time": when, "line": line.strip()}
            continue
        if msg.startswith("scheduler stopped"):
            stopped = {"time": when, "line": line.strip()}
            continue
        kind = classify_error(msg)
        if kind:
            err = {"time": when, "kind": kind, "line": line.strip()[:500]}
            m = _NO_WATERMARK_RE.search(msg)
            if m:
                table(m.group(1))["last_error"] = err
            errors.append(err)
            pending.append(err)

    names = list(tables) if tables else sorted(per_table)
    result_tables = {}
    for name in names:
        result_tables[name] = per_table.get(name) or table(name)
        if "history" in result_tables[name]:
            result_tables[name]["history"] = list(result_tables[name]["history"])
    running = bool(last_cycle and last_cycle.get("started") and not last_cycle.get("ended"))
    by_kind = {}
    for err in errors:
        by_kind[err["kind"]] = err
    return {
        "lines_read": len(lines),
        "last_line_time": last_time,
        "cycles_seen": cycles_seen,
        "last_cycle": last_cycle,
        "cycle_running": running,
        "last_started": started,
        "last_stopped": stopped,
        "tables": result_tables,
        "errors": errors[-max_errors:],
        "last_error_by_kind": by_kind,
    }
