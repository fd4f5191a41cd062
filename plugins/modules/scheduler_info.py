#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: scheduler_info
short_description: The offload scheduler's systemd unit and log, as runbook Diagnosis step 3 reads them
version_added: 1.0.0
description:
  - Runs on the scheduler's host (where C(systemctl status iceberg-offload-scheduler) and its log are), and
    reports the unit's state (active and sub state, since when, restarts, the main process' last exit) and
    what the log says.
  - "From the log: the last cycle (start, end, failed jobs, duration), per source table the last
    C(Offload completed: N rows), how many completions in a row were 0 rows (runbook Scenario 5), the last
    failure with the error that caused it, and the last error lines by kind: C(too_many_clients),
    C(unknown_host), C(connection_refused), C(connection_timeout), C(authentication), C(missing_relation),
    C(no_watermark), C(clickhouse), C(permission_denied), C(constraint_violation), C(disk_full), C(read_only)
    (the last four: the watermark INSERT refused after the Iceberg append), C(job_timeout), C(watermark),
    C(error)."
  - "A crash loop (runbook Diagnosis step 3, Scenario 1 'fails to start'): a unit that systemd is restarting
    (C(activating (auto-restart))), or that started again less than a minute ago after automatic restarts, is
    read a second time one restart interval (and two seconds) later (at most O(crash_watch_seconds)); a climbing C(NRestarts)
    or C(auto-restart) in either read is RV(unit.crash_loop), with the evidence. Such a unit is never
    RV(unit.running). The unit's last journal lines are returned when it is not running or crash-loops (a
    process that dies before it opens its log leaves its traceback only there)."
  - Reads only the last O(tail_bytes) of the log (and of its rotated predecessor C(<log>.1) when the log is
    shorter), so time and memory stay bounded on a log of any size.
  - A missing, rotated or unreadable log, or a host without systemd, is reported, never a failure.
  - Read only.
author:
  - K2 Platform Engineering (@k2-platform)
extends_documentation_fragment:
  - k2.iceberg_offload.attributes
  - k2.iceberg_offload.attributes.INFO_MODULE
options:
  unit:
    description: The scheduler's systemd unit.
    type: str
    default: iceberg-offload-scheduler.service
  log_path:
    description: The scheduler's log file.
    type: path
    default: /tmp/iceberg-offload-scheduler.log
  tables:
    description: Source tables to report on. Default every table the log mentions.
    type: list
    elements: str
    default: []
  tail_bytes:
    description: How much of the end of the log to read (1 KiB to 64 MiB).
    type: int
    default: 1048576
  max_errors:
    description: How many of the last error lines to return.
    type: int
    default: 10
  crash_watch_seconds:
    description:
      - The longest second look at a unit that may be crash-looping (0 to 120; 0 never looks twice).
      - Only a unit that systemd is restarting, or that restarted within the last minute, costs this wait.
    type: float
    default: 12
    version_added: 1.1.0
  journal_lines:
    description: How many of the unit's last journal lines to return when it is not running (0 to 1000).
    type: int
    default: 15
    version_added: 1.1.0
  history:
    description:
      - Also return each table's last this many offloads in RV(log.tables) (C(history), 0 to 5000; 0 returns
        none), among the lines O(tail_bytes) reads. The incident report's HTML page draws the rows offloaded
        per cycle from it.
    type: int
    default: 0
    version_added: 1.1.0
"""

EXAMPLES = r"""
# Diagnosis step 3, on the host that runs the scheduler
- name: Scheduler unit and log
  k2.iceberg_offload.scheduler_info:
    tables: [bronze_trades_binance, bronze_trades_kraken]
  register: scheduler

- name: Scenario 1 - the scheduler is not running
  ansible.builtin.debug:
    msg: "{{ scheduler.unit.active_state }} since {{ scheduler.unit.since }}, last exit {{ scheduler.unit.last_exit }}"
  when: not scheduler.unit.active

- name: Scenario 5 - completions of 0 rows in a row
  ansible.builtin.debug:
    msg: "{{ item.key }}: {{ item.value.consecutive_zero_rows }} offloads of 0 rows in a row"
  loop: "{{ scheduler.log.tables | dict2items }}"
  when: item.value.consecutive_zero_rows >= 2

# The lab: the scheduler runs in the k2-spark-iceberg container
- name: Scheduler facts inside the Spark container
  k2.iceberg_offload.scheduler_info:
  delegate_to: k2-spark-iceberg
"""

RETURN = r"""
host_time:
  description: The host's clock (UTC, naive), to compare the log's times with.
  returned: always
  type: str
  sample: "2026-02-12 10:31:00"
hostname:
  description: The host the module ran on.
  returned: always
  type: str
  sample: k2-spark-iceberg
unit_error:
  description: Why the unit's state is unknown (no systemd, C(systemctl show) failed); V(null) otherwise.
  returned: always
  type: str
  sample: null
unit:
  description: The unit's state from C(systemctl show); V(null) when the host has no systemd.
  returned: always
  type: dict
  contains:
    name:
      description: The unit.
      type: str
      sample: iceberg-offload-scheduler.service
    exists:
      description: Whether systemd knows the unit.
      type: bool
    active:
      description: Active, reloading or activating (a unit between two crashes is activating; see RV(unit.running)).
      type: bool
    running:
      description: C(ActiveState=active) and C(SubState=running), and not crash-looping.
      type: bool
      version_added: 1.1.0
    crash_loop:
      description: The unit keeps failing and systemd keeps restarting it (see the description).
      type: bool
      version_added: 1.1.0
    crash_loop_evidence:
      description: C(restarts), C(restarts_during_look), C(seconds_watched), C(result), C(exit_code),
        C(exit_status), C(exit_signal), C(last_exit_at), C(restart_seconds); V(null) without a crash loop.
      type: dict
      version_added: 1.1.0
    journal:
      description: The unit's last journal lines when it is not running or crash-loops, else empty.
      type: list
      elements: str
      version_added: 1.1.0
    journal_errors:
      description: Of RV(unit.journal), the lines that say why the process died (the exception, the exit status).
      type: list
      elements: str
      version_added: 1.1.0
    active_state:
      description: C(ActiveState).
      type: str
      sample: inactive
    sub_state:
      description: C(SubState).
      type: str
      sample: dead
    result:
      description: C(Result) of the last run (C(success), C(exit-code), C(signal), C(core-dump)...).
      type: str
      sample: success
    since:
      description: When the unit entered its current state (UTC).
      type: str
      sample: "2026-02-12 09:58:41"
    restarts:
      description: Automatic restarts (C(NRestarts)).
      type: int
      sample: 0
    main_pid:
      description: PID of the running main process, V(null) when none.
      type: int
    last_exit:
      description: The main process' last exit (C(at), C(code) exited/killed/dumped, C(status), C(signal)).
      type: dict
      sample: {at: "2026-02-12 09:58:41", code: exited, status: 0, signal: null}
  sample: {name: iceberg-offload-scheduler.service, exists: true, active: false, active_state: inactive,
           sub_state: dead, result: success, since: "2026-02-12 09:58:41", restarts: 0}
log:
  description: What the log says (see the module description).
  returned: always
  type: dict
  contains:
    file:
      description: C(path), C(exists), C(size), C(modified), C(rotated_read) (the rotated file also read),
        C(truncated) (the read started inside the file), C(error).
      type: dict
    last_cycle:
      description: The last cycle seen (C(number), C(started), C(ended), C(failed), C(duration_seconds)).
      type: dict
    cycle_running:
      description: The last cycle started and has not ended.
      type: bool
    seconds_since_last_line:
      description: Seconds between the last timestamped line and RV(host_time).
      type: float
    tables:
      description: Per source table, C(last_completed) (C(time), C(rows), C(line)), C(consecutive_zero_rows),
        C(completed_seen), C(last_nonzero), C(last_failure) (C(time), C(cycle), C(rc), C(error_kind),
        C(error)) and C(last_error); with O(history), C(history) (the last offloads, oldest first, each with C(time),
        C(utc), C(rows), and C(failed) with the job's exit code for one that failed). C(time) is the log's, in the
        host's local time; C(utc) the same moment in UTC.
      type: dict
    errors:
      description: The last O(max_errors) error lines (C(time), C(kind), C(line)).
      type: list
      elements: dict
    last_error_by_kind:
      description: The last error line of each kind.
      type: dict
  sample:
    file: {path: /tmp/iceberg-offload-scheduler.log, exists: true, size: 48213}
    last_cycle: {number: 212, started: "2026-02-12 10:30:00", ended: "2026-02-12 10:30:04", failed: 0}
    tables:
      bronze_trades_binance:
        last_completed: {time: "2026-02-12 10:30:02", rows: 0}
        consecutive_zero_rows: 3
findings:
  description: Sentences for the operator (unit not active, log missing, errors, 0-row offloads in a row).
  returned: always
  type: list
  elements: str
  sample: ["iceberg-offload-scheduler.service is inactive (dead) since 2026-02-12 09:58:41"]
"""

import datetime
import os

from ansible.module_utils.basic import AnsibleModule

import time

from ansible_collections.k2.iceberg_offload.plugins.module_utils.scheduler import (
    UNIT_PROPERTIES, crash_loop, journal_errors, parse_log, parse_systemctl_show, read_tail, recently_started)


def unit_facts(module, unit):
    systemctl = module.get_bin_path("systemctl")
    if not systemctl:
        return None, "systemctl is not available on this host; the unit's state is unknown"
    rc, out, err = module.run_command([systemctl, "show", unit, "--timestamp=unix",
                                       "-p", ",".join(UNIT_PROPERTIES)])
    if rc != 0 and "--timestamp" in err:
        rc, out, err = module.run_command([systemctl, "show", unit, "-p", ",".join(UNIT_PROPERTIES)])
    if rc != 0:
        return None, "systemctl show %s failed (rc %d): %s" % (unit, rc, (err or out).strip()[:300])
    facts = parse_systemctl_show(out)
    facts["name"] = unit
    return facts, None


def watch_for_crash_loop(module, unit_name, unit, max_seconds):
    """A unit that systemd is restarting, or that started again a moment ago, is read a second time
    (two restart intervals later, at most ``max_seconds``): a climbing restart counter is a crash loop."""
    unit["crash_loop"] = False
    unit["crash_loop_evidence"] = None
    if not unit.get("exists") or max_seconds <= 0:
        return unit
    now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
    if not recently_started(unit, now):
        return unit
    wait = min(max_seconds, (unit.get("restart_seconds") or 1) + 2)
    started = time.monotonic()
    time.sleep(wait)
    second, err = unit_facts(module, unit_name)
    if err or second is None:
        return unit
    looping, evidence = crash_loop(unit, second, time.monotonic() - started)
    second["crash_loop"] = looping
    second["crash_loop_evidence"] = evidence
    return second


def journal_tail(module, unit_name, lines):
    """The unit's last journal lines (a crash before the scheduler opens its log is only there)."""
    journalctl = module.get_bin_path("journalctl")
    if not journalctl or lines <= 0:
        return []
    rc, out, err = module.run_command([journalctl, "-u", unit_name, "-n", str(lines), "--no-pager",
                                       "-o", "short-iso", "--quiet"])
    if rc != 0:
        return []
    return [line[:500] for line in out.splitlines() if line.strip()][-lines:]


def findings_for(unit, unit_error, log, unit_name):
    out = []
    if unit_error:
        out.append(unit_error)
    elif not unit["exists"]:
        out.append("systemd does not know %s on this host (runbook Scenario 1)" % unit_name)
    elif unit.get("crash_loop"):
        ev = unit.get("crash_loop_evidence") or {}
        out.append("%s keeps failing and systemd keeps restarting it: %s restarts, last exit %s %s (runbook "
                   "Scenario 1, 'fails to start')" % (unit_name, ev.get("restarts"), ev.get("exit_code"),
                                                      ev.get("exit_signal") or ev.get("exit_status")))
    elif not unit["active"]:
        exit_text = ""
        if unit.get("last_exit") and unit["last_exit"].get("code"):
            ex = unit["last_exit"]
            exit_text = "; last exit: %s %s" % (ex["code"], ex["signal"] if ex.get("signal") else ex["status"])
        out.append("%s is %s (%s) since %s%s (runbook Scenario 1)" % (
            unit_name, unit["active_state"], unit["sub_state"], unit["since"], exit_text))
    f = log["file"]
    if not f["exists"]:
        out.append("the scheduler log %s is missing%s" % (
            f["path"], " (the rotated %s was read)" % f["rotated_read"] if f.get("rotated_read") else ""))
    elif f.get("error"):
        out.append("the scheduler log cannot be read: %s" % f["error"])
    elif not log["lines_read"]:
        out.append("the scheduler log %s is empty (rotated?)" % f["path"])
    for name, t in sorted(log["tables"].items()):
        if t["consecutive_zero_rows"] >= 2:
            out.append("%s: the last %d offloads completed with 0 rows (runbook Scenario 5 if the source has rows "
                       "past the watermark)" % (name, t["consecutive_zero_rows"]))
        if t.get("last_failure"):
            lf = t["last_failure"]
            out.append("%s: last offload failed at %s (rc %d)%s" % (
                name, lf["time"], lf["rc"], ": " + lf["error"] if lf.get("error") else ""))
    return out


def main():
    module = AnsibleModule(
        argument_spec=dict(
            unit=dict(type="str", default="iceberg-offload-scheduler.service"),
            log_path=dict(type="path", default="/tmp/iceberg-offload-scheduler.log"),
            tables=dict(type="list", elements="str", default=[]),
            tail_bytes=dict(type="int", default=1048576),
            max_errors=dict(type="int", default=10),
            crash_watch_seconds=dict(type="float", default=12),
            journal_lines=dict(type="int", default=15),
            history=dict(type="int", default=0),
        ),
        supports_check_mode=True,
    )
    p = module.params
    if not 1024 <= p["tail_bytes"] <= 64 * 1048576:
        module.fail_json(msg="tail_bytes must be between 1024 and 67108864, got %d" % p["tail_bytes"])
    if not 0 <= p["max_errors"] <= 1000:
        module.fail_json(msg="max_errors must be between 0 and 1000, got %d" % p["max_errors"])
    unit_name = p["unit"] if "." in p["unit"] else p["unit"] + ".service"

    if not 0 <= p["crash_watch_seconds"] <= 120:
        module.fail_json(msg="crash_watch_seconds must be between 0 and 120, got %s" % p["crash_watch_seconds"])
    if not 0 <= p["journal_lines"] <= 1000:
        module.fail_json(msg="journal_lines must be between 0 and 1000, got %d" % p["journal_lines"])
    if not 0 <= p["history"] <= 5000:
        module.fail_json(msg="history must be between 0 and 5000, got %d" % p["history"])
    unit, unit_error = unit_facts(module, unit_name)
    if unit is not None:
        unit = watch_for_crash_loop(module, unit_name, unit, p["crash_watch_seconds"])
        unit["running"] = bool(unit.get("running")) and not unit["crash_loop"]
        unit["journal"] = []
        if unit.get("exists") and (unit.get("crash_loop") or not unit.get("running")
                                   or unit.get("result") not in (None, "success")):
            unit["journal"] = journal_tail(module, unit_name, p["journal_lines"])
        unit["journal_errors"] = journal_errors(unit["journal"])
    lines, file_info = read_tail(p["log_path"], p["tail_bytes"])
    log = parse_log(lines, tables=p["tables"] or None, max_errors=p["max_errors"], history=p["history"])
    log["file"] = file_info
    now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
    log["seconds_since_last_line"] = None
    if log["last_line_time"]:
        try:
            last = datetime.datetime.strptime(log["last_line_time"], "%Y-%m-%d %H:%M:%S")
            # The log is written in the host's local time; compare in the same zone.
            local_now = datetime.datetime.now()
            log["seconds_since_last_line"] = round((local_now - last).total_seconds(), 1)
        except ValueError:
            pass
    module.exit_json(changed=False, host_time=now.isoformat(sep=" ", timespec="seconds"), unit=unit,
                     unit_error=unit_error, log=log, findings=findings_for(unit, unit_error, log, unit_name),
                     hostname=os.uname()[1])


if __name__ == "__main__":
    main()
