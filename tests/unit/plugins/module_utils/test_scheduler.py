# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The scheduler's systemd state and log, read the way runbook Diagnosis step 3 reads them."""
import os

from ansible_collections.k2.iceberg_offload.plugins.module_utils import scheduler as sc

LOG = """\
2026-02-12 10:00:00 scheduler started: tables=bronze_trades_binance,bronze_trades_kraken cycle=900.0s
2026-02-12 10:00:00 CYCLE 1 START
2026-02-12 10:00:01 watermark for bronze_trades_binance: (2026-02-12 09:59:59, 100)
2026-02-12 10:00:02 Offload completed: 40 rows (bronze_trades_binance -> cold.bronze_trades_binance, 1.0 s)
2026-02-12 10:00:03 ERROR watermark: cannot connect to PostgreSQL: FATAL:  sorry, too many clients already
2026-02-12 10:00:03 CYCLE 1 table=bronze_trades_kraken FAILED rc=3
2026-02-12 10:00:03 CYCLE 1 END tables=2 failed=1 duration=3.0s
2026-02-12 10:15:00 CYCLE 2 START
2026-02-12 10:15:01 Offload completed: 0 rows (bronze_trades_binance -> cold.bronze_trades_binance, layer bronze)
2026-02-12 10:15:02 ERROR watermark: cannot read offload_watermarks: relation "offload_watermarks" does not exist
2026-02-12 10:15:02 CYCLE 2 table=bronze_trades_kraken FAILED rc=3
2026-02-12 10:15:02 CYCLE 2 END tables=2 failed=1 duration=2.0s
2026-02-12 10:30:00 CYCLE 3 START
2026-02-12 10:30:01 Offload completed: 0 rows (bronze_trades_binance -> cold.bronze_trades_binance, layer bronze)
2026-02-12 10:30:02 ERROR watermark: no watermark for bronze_trades_kraken in offload_watermarks; refusing to offload
2026-02-12 10:30:02 CYCLE 3 table=bronze_trades_kraken FAILED rc=3
"""


def test_log_facts_per_table_and_cycle():
    facts = sc.parse_log(LOG.splitlines())
    b, k = facts["tables"]["bronze_trades_binance"], facts["tables"]["bronze_trades_kraken"]
    assert b["consecutive_zero_rows"] == 2 and b["last_nonzero"] == {"time": "2026-02-12 10:00:02", "rows": 40}
    assert b["last_completed"]["rows"] == 0 and b["completed_seen"] == 3
    assert k["last_failure"]["rc"] == 3 and k["last_failure"]["cycle"] == 3
    assert k["last_failure"]["error_kind"] == "no_watermark"
    assert facts["last_cycle"] == {"number": 3, "started": "2026-02-12 10:30:00", "ended": None, "failed": None,
                                   "duration_seconds": None}
    assert facts["cycle_running"] and facts["cycles_seen"] == 3
    kinds = facts["last_error_by_kind"]
    assert set(kinds) == {"too_many_clients", "missing_relation", "no_watermark"}
    assert kinds["too_many_clients"]["time"] == "2026-02-12 10:00:03"
    assert facts["last_started"]["time"] == "2026-02-12 10:00:00" and facts["last_stopped"] is None


def test_nonzero_resets_the_zero_run_and_tables_filter():
    lines = LOG.splitlines() + ["2026-02-12 10:45:01 Offload completed: 7 rows (bronze_trades_binance -> cold)"]
    facts = sc.parse_log(lines, tables=["bronze_trades_binance", "other"])
    assert facts["tables"]["bronze_trades_binance"]["consecutive_zero_rows"] == 0
    assert facts["tables"]["other"]["last_completed"] is None
    assert set(facts["tables"]) == {"bronze_trades_binance", "other"}


def test_error_kinds():
    assert sc.classify_error('could not translate host name "k2-prefect-db" to address') == "unknown_host"
    assert sc.classify_error("Connection refused") == "connection_refused"
    assert sc.classify_error("FATAL: remaining connection slots are reserved for superuser") == "too_many_clients"
    assert sc.classify_error("ERROR reading ClickHouse bronze: Code: 60") == "clickhouse"
    assert sc.classify_error("all fine") is None


def test_systemctl_show():
    text = ("LoadState=loaded\nActiveState=failed\nSubState=failed\nResult=exit-code\nMainPID=0\nNRestarts=5\n"
            "ExecMainStatus=3\nExecMainCode=1\nStateChangeTimestamp=@1770890400\nExecMainExitTimestamp=@1770890400\n"
            "UnitFileState=enabled\n")
    u = sc.parse_systemctl_show(text)
    assert u["exists"] and not u["active"] and u["restarts"] == 5 and u["main_pid"] is None
    assert u["since"] == "2026-02-12 10:00:00"
    assert u["last_exit"] == {"at": "2026-02-12 10:00:00", "code": "exited", "status": 3, "signal": None}
    killed = sc.parse_systemctl_show("LoadState=loaded\nActiveState=inactive\nExecMainCode=2\nExecMainStatus=9\n"
                                     "ExecMainExitTimestamp=@1770890400\n")
    assert killed["last_exit"]["signal"] == 9
    assert not sc.parse_systemctl_show("LoadState=not-found\nActiveState=inactive\n")["exists"]


def test_tail_is_bounded_and_survives_missing_and_rotated_logs(tmp_path):
    path = str(tmp_path / "scheduler.log")
    lines, info = sc.read_tail(path, 4096)
    assert lines == [] and not info["exists"] and "No such file" in info["error"]
    with open(path + ".1", "w") as f:
        f.write("2026-02-12 09:00:00 CYCLE 9 START\n")
    lines, info = sc.read_tail(path, 4096)
    assert lines == ["2026-02-12 09:00:00 CYCLE 9 START"] and info["rotated_read"] == path + ".1"
    with open(path, "w") as f:
        for i in range(100000):
            f.write("2026-02-12 10:00:00 Offload completed: %d rows (t -> cold.t)\n" % i)
    size = os.path.getsize(path)
    lines, info = sc.read_tail(path, 64 * 1024)
    assert info["truncated"] and info["size"] == size and info["rotated_read"] is None
    assert sum(len(x) + 1 for x in lines) <= 64 * 1024
    assert lines[-1].endswith("Offload completed: 99999 rows (t -> cold.t)")
    assert lines[0].startswith("2026-02-12")  # the cut first line is dropped


SHOW_LOOPING = """\
LoadState=loaded
ActiveState=activating
SubState=auto-restart
Result=exit-code
NRestarts=7
ExecMainStatus=1
ExecMainCode=1
ExecMainExitTimestamp=@1770891300
ActiveEnterTimestamp=@1770891290
RestartUSec=5s
"""


def test_a_unit_between_two_crashes_is_not_running():
    u = sc.parse_systemctl_show(SHOW_LOOPING)
    assert u["active"] and not u["running"] and u["auto_restart"]
    assert u["restart_seconds"] == 5.0 and u["restarts"] == 7
    assert sc._systemd_seconds("1min 30s") == 90.0 and sc._systemd_seconds("100ms") == 0.1
    assert sc._systemd_seconds("5000000") == 5.0 and sc._systemd_seconds("") is None


def test_crash_loop_over_two_reads():
    first = sc.parse_systemctl_show(SHOW_LOOPING)
    second = sc.parse_systemctl_show(SHOW_LOOPING.replace("NRestarts=7", "NRestarts=8")
                                     .replace("SubState=auto-restart", "SubState=running")
                                     .replace("ActiveState=activating", "ActiveState=active"))
    looping, ev = sc.crash_loop(first, second, 6.0)
    assert looping and ev["restarts"] == 8 and ev["restarts_during_look"] == 1 and ev["exit_status"] == 1
    steady = sc.parse_systemctl_show(SHOW_LOOPING.replace("SubState=auto-restart", "SubState=running")
                                     .replace("ActiveState=activating", "ActiveState=active"))
    assert sc.crash_loop(steady, steady, 6.0) == (False, None)


def test_recently_started_only_after_automatic_restarts():
    import datetime
    u = sc.parse_systemctl_show(SHOW_LOOPING.replace("SubState=auto-restart", "SubState=running"))
    at = datetime.datetime(2026, 2, 12, 10, 15, 0)  # 10 s after ActiveEnterTimestamp
    assert sc.recently_started(u, at)
    assert not sc.recently_started(u, at + datetime.timedelta(minutes=5))
    assert not sc.recently_started(dict(u, restarts=0), at)
    assert sc.recently_started(sc.parse_systemctl_show(SHOW_LOOPING), at + datetime.timedelta(hours=1))


def test_journal_errors_keep_the_exception_and_the_exit():
    lines = [
        "2026-12-06T02:16:04+0000 host systemd[1]: x.service: Failed to get cgroup ID of cgroup /sys/fs/cgroup/...",
        "2026-12-06T02:16:04+0000 host systemd[1]: Started x.service - X.",
        "2026-12-06T02:16:04+0000 host python[274]: Traceback (most recent call last):",
        "2026-12-06T02:16:04+0000 host python[274]:   File \"/x.py\", line 1, in <module>",
        "2026-12-06T02:16:04+0000 host python[274]: ValueError: not a plain table name: 'offload-watermarks'",
        "2026-12-06T02:16:04+0000 host systemd[1]: x.service: Main process exited, code=exited, status=1/FAILURE",
    ]
    assert sc.journal_errors(lines) == [
        "Traceback (most recent call last):", "ValueError: not a plain table name: 'offload-watermarks'",
        "x.service: Main process exited, code=exited, status=1/FAILURE"]


def test_watermark_write_errors_have_kinds():
    for text, kind in (("permission denied for table offload_watermarks", "permission_denied"),
                       ('duplicate key value violates unique constraint "offload_watermarks_pkey"',
                        "constraint_violation"),
                       ('new row for relation "offload_watermarks" violates check constraint "c"',
                        "constraint_violation"),
                       ("could not extend file: No space left on device", "disk_full"),
                       ("cannot execute INSERT in a read-only transaction", "read_only"),
                       ("ERROR offload of x did not finish within 60 s", "job_timeout")):
        assert sc.classify_error("ERROR watermark: offload of t failed after reading the watermark: " + text
                                 if kind != "job_timeout" else text) == kind, text
    log = sc.parse_log([
        "2026-02-12 10:00:00 CYCLE 1 START",
        "2026-02-12 10:00:02 ERROR watermark: offload of bronze_trades_binance failed after reading the watermark: "
        "permission denied for table offload_watermarks",
        "2026-02-12 10:00:02 CYCLE 1 table=bronze_trades_binance FAILED rc=5"])
    assert log["tables"]["bronze_trades_binance"]["last_failure"]["error_kind"] == "permission_denied"
    assert "permission_denied" in sc.WATERMARK_WRITE_KINDS


def test_log_history_per_table_oldest_first_with_failures():
    facts = sc.parse_log(LOG.splitlines(), history=2)
    binance = facts["tables"]["bronze_trades_binance"]["history"]
    assert [(h["time"], h["rows"]) for h in binance] == [("2026-02-12 10:15:01", 0), ("2026-02-12 10:30:01", 0)]
    kraken = facts["tables"]["bronze_trades_kraken"]["history"]
    assert [(h["rows"], h["failed"]) for h in kraken] == [(None, 3), (None, 3)]
    assert all(h["utc"] for h in binance + kraken)
    assert "history" not in sc.parse_log(LOG.splitlines())["tables"]["bronze_trades_binance"]


def test_local_log_time_to_utc(monkeypatch):
    import time
    monkeypatch.setenv("TZ", "Europe/Paris")
    time.tzset()
    try:
        assert sc.local_to_utc("2026-02-12 10:15:00") == "2026-02-12 09:15:00"
        assert sc.local_to_utc("yesterday") is None
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
