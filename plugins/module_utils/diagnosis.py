# -*- coding: utf-8 -*-
# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Runbook Diagnosis step 5, "Identify Watermark Issue Type", as one pure function.

Private to this collection. ``classify(facts)`` takes what the diagnose playbook gathered
(each part a module result, possibly failed, skipped or missing) and returns the runbook
scenarios that apply, each with its findings, in the order a recovery must take them:
the database first (2), then the table (3), then the data (4), then the scheduler (1),
then the offload itself (5). It never raises on missing or failed facts: a fact that
could not be gathered is named in ``missing_facts`` and the rules that needed it do not
fire. The scenarios and their cases (the kinds) are defined in scenarios.py, with the plan.

One algorithm, the classifier (so over 500 lines): one layer per runbook diagnosis step.

Everything a layer above acts on carries a ``kind`` (docs/diagnosis-kinds.md lists them: a
stable interface for the role, the templates, the JSON reports, set_stats, AWX and EDA):

- a finding ``{kind, scenario, text, tables, data}`` for each case of CASES seen;
- an escalation ``{kind, text, data, blocks_recovery}``: something no scenario recovers
  (``blocks_recovery``: nothing may be changed while it stands), or one of the runbook's
  Escalation rules that holds however the recovery ends;
- an observation ``{kind, text, data}``: context for the operator;
- a missing fact ``{kind: missing-fact, fact, text}``.

Facts (every key optional)::

    settings:        tables, cycle_seconds, stale_after, pg_container, spark_container, network,
                     silent_min_cycles, connections_warn, idle_session_after, recurrence_window
    prometheus:      watermark_metrics_info result
    scheduler:       scheduler_info result
    db_container, spark_container: community.docker.docker_container_info results (State, RestartCount,
                     HostConfig.RestartPolicy, NetworkSettings.Networks)
    db_container_logs: the database container's last log lines (when it is not running)
    db_from_controller, db_from_spark: db_connection_info results
    watermarks:      watermark_info result (read before cold_now and cold)
    source:          offload_source_info result (rows after each table's latest watermark)
    cold_now:        {table: iceberg_table_info result with max_pair_only}, read on the Spark host while
                     the watermarks were read: a difference only makes the playbook look again (cold)
    cold:            {table: iceberg_table_info result}, read after the gathering (the second look)
    watermarks_after_cold: watermark_info read after cold
    source_after_cold: offload_source_info with the cold tier's greatest pairs as watermarks
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime

from ansible_collections.k2.iceberg_offload.plugins.module_utils.facts import (
    age_text, fmt_pair, latest_pairs, ok, pair_key, why_missing)
from ansible_collections.k2.iceberg_offload.plugins.module_utils.scenarios import CASES, SAFE_ORDER, SCENARIOS
from ansible_collections.k2.iceberg_offload.plugins.module_utils.scheduler import WATERMARK_WRITE_KINDS, journal_errors

# Watermark-table corruption that a repair recorded in the audit table could have met before.
RECURRING_KINDS = ("duplicate-entries", "regression", "watermark-ahead")
# The audit rows of the repairs of those (watermark_cleanup's selections).
REPAIR_SELECTIONS = ("duplicates_only", "regressions_only", "above_pair")
# Connection count the runbook calls too many (Diagnosis step 4: "Connection count <20").
CONNECTIONS_WARN = 20


class _Diagnosis(object):
    def __init__(self, facts):
        self.facts = facts or {}
        s = self.facts.get("settings") or {}
        self.settings = s
        self.tables = list(s.get("tables") or [])
        self.cycle = float(s.get("cycle_seconds") or 900)
        self.stale_after = float(s.get("stale_after") or 4 * self.cycle)
        self.container = s.get("pg_container") or "k2-prefect-db"
        self.spark_container = s.get("spark_container") or "k2-spark-iceberg"
        self.network = s.get("network") or "k2-network"
        self.silent_min_cycles = int(s.get("silent_min_cycles") or 2)
        self.connections_warn = int(s.get("connections_warn") or CONNECTIONS_WARN)
        self.cases = {}          # kind -> {"findings": [...], "tables": [...], "data": {...}}
        self.escalations = []
        self.observations = []
        self.missing = []
        self.ages = {}
        self.pg_ages = {}
        self.stale_unexplained = False
        self.cold_check = []     # why the cold tier should be read again, after the watermarks
        self.health = None
        self.started_ago = None  # seconds since a running scheduler started

    # -- recording ----------------------------------------------------------------------------------
    def add(self, kind, text, tables=None, **data):
        item = self.cases.setdefault(kind, {"findings": [], "tables": [], "data": {}})
        if text not in [f["text"] for f in item["findings"]]:
            item["findings"].append({"kind": kind, "scenario": CASES[kind][0], "text": text,
                                     "tables": list(tables or []), "data": data})
        for t in tables or []:
            if t not in item["tables"]:
                item["tables"].append(t)
        for key, value in data.items():  # per-table dicts and lists accumulate over the tables
            old = item["data"].get(key)
            if isinstance(value, dict) and isinstance(old, dict):
                old.update(value)
            elif isinstance(value, list) and isinstance(old, list):
                old.extend(v for v in value if v not in old)
            else:
                item["data"][key] = value

    def escalate(self, kind, text, blocks_recovery=True, **data):
        if kind not in [e["kind"] for e in self.escalations if e["text"] == text]:
            self.escalations.append({"kind": kind, "text": text, "data": data, "blocks_recovery": blocks_recovery})

    def observe(self, kind, text, **data):
        self.observations.append({"kind": kind, "text": text, "data": data})

    def lack(self, name, result):
        self.missing.append(why_missing(name, result))

    # -- layers -------------------------------------------------------------------------------------
    def prometheus(self):
        prom = self.facts.get("prometheus")
        p = ok(prom, "reachable")
        if p is None:
            self.lack("prometheus", prom)
            return None
        if not p.get("reachable"):
            self.missing.append({"kind": "missing-fact", "fact": "prometheus",
                                 "text": "prometheus: %s" % (p.get("error") or "did not answer")})
            return None
        for t, age in sorted((p.get("ages") or {}).items()):
            if age is not None:
                self.ages.setdefault(t, ("prometheus", float(age)))
        if p.get("firing_tables"):
            self.observe("alert-firing", "%s fires for %s since %s" % (
                self.settings.get("alert_name") or "IcebergOffloadWatermarkStale",
                ", ".join(str(t) for t in p["firing_tables"]), p.get("alert_active_since")),
                tables=p["firing_tables"], since=p.get("alert_active_since"))
        for t in p.get("missing_tables") or []:
            self.observe("prometheus-no-series", "Prometheus has no watermark series for %s" % t, table=t)
        for t in p.get("unhealthy_targets") or []:
            self.observe("scrape-failing", "Prometheus target %s (job %s) is %s: %s (last scrape %s)" % (
                t.get("instance"), t.get("job"), t.get("health"), t.get("last_error") or "no error text",
                t.get("last_scrape")), target=t)
        return p

    def _container(self, key, name):
        raw = self.facts.get(key)
        c = ok(raw, "exists")
        if c is None:
            self.lack("container %s" % name, raw)
            return None
        return c

    def database(self):
        dc = self._container("db_container", self.container)
        running = None
        if dc is not None and not dc.get("exists"):
            self.escalate("db-container-missing", "the container %s does not exist on its Docker host (the runbook "
                          "cannot recreate a database; restore it from the backups)" % self.container)
            running = False
        elif dc is not None:
            info = dc.get("container") or {}
            state = info.get("State") or {}
            running = bool(state.get("Running")) and not state.get("Restarting")
            exit_code = state.get("ExitCode")
            restarts = info.get("RestartCount")
            policy = ((info.get("HostConfig") or {}).get("RestartPolicy") or {}).get("Name")
            log_lines = [line for line in (self.facts.get("db_container_logs") or []) if line.strip()]
            last_error = next((line for line in reversed(log_lines) if "FATAL" in line or "ERROR" in line
                               or "PANIC" in line), log_lines[-1] if log_lines else None)
            if state.get("Restarting") or (restarts and policy in ("always", "on-failure", "unless-stopped")
                                           and not state.get("Running")):
                self.add("db-crashloop", "%s keeps crashing and Docker keeps restarting it (restart policy %s, %s "
                         "restarts, last exit code %s at %s)%s" % (
                             self.container, policy, restarts, exit_code, state.get("FinishedAt"),
                             "; its log: %s" % last_error if last_error else ""),
                         exit_code=exit_code, restarts=restarts, restart_policy=policy, log=log_lines[-10:])
            elif not state.get("Running"):
                finished = state.get("FinishedAt")
                if state.get("OOMKilled") or (exit_code not in (0, None)):
                    reason = "killed by the kernel's OOM killer" if state.get("OOMKilled") else (
                        "killed by signal %d" % (exit_code - 128) if exit_code and exit_code > 128
                        else "exit code %s" % exit_code)
                    self.add("db-crashed", "%s exited at %s: %s (exit code %s)%s%s" % (
                        self.container, finished, reason, exit_code,
                        "; error: %s" % state["Error"] if state.get("Error") else "",
                        "; its log: %s" % last_error if last_error else ""),
                        exit_code=exit_code, oom_killed=bool(state.get("OOMKilled")), finished_at=finished,
                        log=log_lines[-10:])
                else:
                    self.add("db-stopped", "%s is %s since %s (exit code 0: stopped, not crashed)" % (
                        self.container, state.get("Status", "exited"), finished), exit_code=exit_code,
                        finished_at=finished)
            else:
                self._attached(info, self.container, "database")
        sc = self._container("spark_container", self.spark_container)
        if sc is not None and sc.get("exists") and ((sc.get("container") or {}).get("State") or {}).get("Running"):
            self._attached(sc.get("container") or {}, self.spark_container, "spark")
        self._probes(running)
        self._pool_and_locks()

    def _attached(self, info, name, side):
        nets = (info.get("NetworkSettings") or {}).get("Networks") or {}
        if self.network not in nets:
            self.add("db-partition", "%s runs but is not attached to %s (attached to: %s)%s" % (
                name, self.network, ", ".join(sorted(nets)) or "nothing",
                ": the scheduler there cannot reach %s" % self.container if side == "spark" else ""),
                containers=[name], networks={name: sorted(nets)})

    def _probes(self, running):
        for name, key in (("this host", "db_from_controller"), ("the Spark host", "db_from_spark")):
            raw = self.facts.get(key)
            probe = ok(raw, "kind")
            if probe is None:
                if key == "db_from_controller" and ok(self.facts.get("watermarks"), "table_exists"):
                    continue  # watermark_info logged in: nothing to probe
                self.lack("database connection from %s" % name, raw)
                continue
            if probe.get("ok"):
                continue
            kind = probe.get("kind")
            text = "%s cannot connect to %s: %s" % (name, probe.get("target"), probe.get("error"))
            if kind == "too_many_clients":
                self.add("db-connections", text)
            elif kind == "dns" and running is not False:
                self.add("db-partition", text)
            elif kind == "authentication":
                self.escalate("db-authentication", text + " (wrong credentials: fix the inventory or vault, the "
                                                          "database itself may be fine)", target=probe.get("target"))
            elif not self._db_case():
                if running is False:
                    continue  # explained by the container state, already recorded
                self.escalate("db-unreachable", text + " (no runbook cause found: the container runs and is on "
                                                       "its network)", target=probe.get("target"), error_kind=kind)
        sched = ok(self.facts.get("scheduler"), "log")
        if sched:
            last = ((sched.get("log") or {}).get("last_error_by_kind") or {}).get("too_many_clients")
            if last and self._recent_log_time(sched, last.get("time")) and \
                    not self._offloaded_since(sched, last.get("time")):
                self.add("db-connections", "the scheduler's log at %s: %s" % (last.get("time"), last.get("line")))

    def _pool_and_locks(self):
        """Diagnosis step 4's thresholds: connection count and ungranted locks change the verdict."""
        wm = ok(self.facts.get("watermarks"), "table_exists") or {}
        health = wm.get("health") or {}
        self.health = health
        holders = wm.get("lock_holders") if wm.get("locked") else health.get("watermark_lock_holders")
        for h in holders or []:
            if not (h.get("waiting_sessions") or wm.get("locked") or str(h.get("state", "")).startswith("idle")):
                continue
            self.add("db-lock", "pid %s (%s@%s, application %s) holds %s on %s, %s for %s (transaction open %s), "
                     "last statement: %s; %s session(s) wait on it" % (
                         h.get("pid"), h.get("user"), h.get("client_addr") or "local socket",
                         h.get("application_name") or "unnamed", h.get("mode"), h.get("relation"), h.get("state"),
                         age_text(h.get("idle_seconds")), age_text(h.get("transaction_seconds")),
                         " ".join(str(h.get("query") or "").split())[:200], h.get("waiting_sessions")),
                     holders=[h.get("pid") for h in holders or []])
        conns = health.get("connections")
        if conns is not None and conns >= self.connections_warn:
            self.observe("many-connections", "%d connections to the database (the runbook expects fewer than %d), "
                         "%s of them idle for more than 10 minutes" % (
                             conns, self.connections_warn, health.get("idle_connections_over_10_minutes")),
                         connections=conns, idle=health.get("idle_connections_over_10_minutes"))

    def _db_case(self):
        return any(c.startswith("db-") for c in self.cases)

    @staticmethod
    def _offloaded_since(sched, when):
        """Some offload completed after the log line at ``when``: the error is over."""
        for t in ((sched.get("log") or {}).get("tables") or {}).values():
            done = (t.get("last_completed") or {}).get("time")
            if done and when and done > when:
                return True
        return False

    def _recent_log_time(self, sched, when):
        """A log line from the last two cycles (the log's own clock)."""
        log = sched.get("log") or {}
        last = log.get("last_line_time")
        since = log.get("seconds_since_last_line")
        if not when or not last:
            return False
        try:
            fmt = "%Y-%m-%d %H:%M:%S"
            delta = (datetime.datetime.strptime(last, fmt) - datetime.datetime.strptime(when, fmt)).total_seconds()
        except ValueError:
            return False
        return delta + (since or 0) <= 2 * self.cycle + 5

    def watermark_table(self):
        raw = self.facts.get("watermarks")
        wm = ok(raw, "table_exists")
        if wm is None:
            if self._db_case():
                self.missing.append({"kind": "missing-fact", "fact": "watermark table",
                                     "text": "watermark table: not readable while the database is unreachable "
                                             "(recover looks again after Scenario 2)"})
            else:
                self.lack("watermark table", raw)
            return None
        if not wm.get("table_exists", True):
            self.add("table-missing", "%s does not exist in the database (\\dt finds nothing)"
                     % wm.get("watermark_table"), tables=self.tables)
            return wm
        if wm.get("locked"):
            return wm  # named by db-lock; its entries could not be read
        by_name = dict((t.get("table_name"), t) for t in wm.get("tables") or [])
        empty = all((by_name.get(n) or {}).get("latest") is None for n in (self.tables or by_name))
        for name in self.tables or sorted(by_name):
            t = by_name.get(name)
            if t is None or t.get("latest") is None:
                self.add("no-entry", "%s has no entry in %s%s" % (
                    name, wm.get("watermark_table"), " (the table exists and is empty)" if empty else ""),
                    tables=[name], table_empty=empty)
                continue
            if t.get("age_seconds") is not None:
                self.ages[name] = ("postgresql", float(t["age_seconds"]))
                self.pg_ages[name] = float(t["age_seconds"])
            self._regression(name, t)
            dups = t.get("duplicate_pairs") or []
            bursts = t.get("duplicate_bursts") or []
            if dups or bursts:
                extra = sum(int(d.get("entries", 1)) - 1 for d in dups)
                self.add("duplicate-entries", "%s: %d pair(s) written more than once (%d extra entries)%s" % (
                    name, len(dups), extra, "; %d burst(s) over the hourly threshold" % len(bursts) if bursts else ""),
                    tables=[name])
            if t.get("future_entries"):
                self.add("future-entries", "%s: %d entr%s with created_at later than the server's clock (the "
                         "scheduler reads the latest created_at)" % (
                             name, t["future_entries"], "y" if t["future_entries"] == 1 else "ies"), tables=[name])
        if (wm.get("health") or {}).get("can_insert") is False:
            user = (wm.get("health") or {}).get("current_user")
            self.add("watermark-write-failed", "the role %s may not INSERT into %s (has_table_privilege): the scheduler, "
                     "which writes as the same role in the runbook, cannot record a watermark" % (
                         user, wm.get("watermark_table")), tables=list(self.tables), error_kind="permission_denied",
                     line=None, fixable=False)
        seq = wm.get("id_sequence") or {}
        if seq.get("behind"):
            self.add("id-sequence-behind", "the id sequence %s hands out %s next while max(id) is %s: every INSERT "
                     "collides with an existing entry (as after restoring rows with their ids)" % (
                         seq.get("sequence"), seq.get("next_value"), seq.get("max_id")), sequence=seq)
        return wm

    def _regression(self, name, t):
        if not t.get("regression_count"):
            return
        latest_id = (t.get("latest") or {}).get("id")
        regs = t.get("regressions") or []
        active = any((r.get("entry") or {}).get("id") == latest_id for r in regs)
        first = regs[0] if regs else {}
        self.add("regression", "%s: %d entr%s lower than the one before (e.g. id %s %s, %s after %s, %s)%s" % (
            name, t["regression_count"], "y" if t["regression_count"] == 1 else "ies",
            (first.get("entry") or {}).get("id"), (first.get("entry") or {}).get("max_timestamp"),
            (first.get("entry") or {}).get("sequence_number"),
            (first.get("previous") or {}).get("max_timestamp"),
            (first.get("previous") or {}).get("sequence_number"),
            "; it is the latest entry: the next cycle re-offloads what lies between" if active else ""),
            tables=[name], active=active)

    def source(self):
        raw = self.facts.get("source")
        if isinstance(raw, dict) and raw and not raw.get("skipped") and ok(raw, "tables") is None:
            self.lack("source rows past the watermark (ClickHouse)", raw)

    def cold_tier(self):
        """The watermark against what the cold tier holds, both ways, on every run.

        The first look (cold_now) runs beside the watermark read, so an offload between them can make
        either seem ahead for a moment: a difference there only asks for a second look (``cold_check``).
        The second look reads the cold tier after the watermarks (``watermarks`` before ``cold``: a
        watermark ahead of it is real) and the watermarks again after it (``cold`` before
        ``watermarks_after_cold``: a cold tier ahead of those is real)."""
        first = latest_pairs(self.facts.get("watermarks"))
        for name, raw in sorted((self.facts.get("cold_now") or {}).items()):
            c = ok(raw, "max_pair")
            if c is None:
                self.lack("cold tier of %s" % name, raw)
                continue
            if name in first and c.get("max_pair") and pair_key(c["max_pair"]) != first[name]:
                self.cold_check.append(name)
        cold = self.facts.get("cold")
        if not cold:
            return
        after = latest_pairs(self.facts.get("watermarks_after_cold"))
        src_wm = (ok(self.facts.get("source"), "tables") or {}).get("tables") or {}
        src_cold = (ok(self.facts.get("source_after_cold"), "tables") or {}).get("tables") or {}
        for name, raw in sorted(cold.items()):
            c = ok(raw, "max_pair")
            if c is None:
                self.lack("cold tier of %s" % name, raw)
                continue
            d = c.get("duplicates") or {}
            if d.get("duplicate_rows"):
                self.add("cold-duplicates", "cold tier of %s holds %d duplicated row(s) over %d key(s) (e.g. %s)" % (
                    name, d["duplicate_rows"], d.get("duplicated_keys", 0),
                    ", ".join(str(s.get("key")) for s in (d.get("sample") or [])[:3])), tables=[name],
                    rows={name: d["duplicate_rows"]})
            cold_max = c.get("max_pair")
            if not cold_max:
                continue
            between = _rows_between(src_wm.get(name), src_cold.get(name))
            if name in after and pair_key(cold_max) > after[name]:
                self.add("cold-ahead", "cold tier of %s holds rows up to %s, past the watermark %s read after it: the "
                         "scheduler would offload %s again" % (
                             name, fmt_pair(cold_max), after[name],
                             "%d row(s)" % between if between is not None else "them"),
                         tables=[name], rows={name: between})
            if name in first and pair_key(cold_max) < first[name]:
                self.add("watermark-ahead", "the watermark of %s %s is ahead of the greatest pair the cold tier "
                         "holds %s (read after it): %s source row(s) in between would never be offloaded" % (
                             name, first[name], fmt_pair(cold_max),
                             between if between is not None else "the"),
                         tables=[name], rows={name: between}, cold_max_pair={name: cold_max})

    def scheduler(self):
        raw = self.facts.get("scheduler")
        sched = ok(raw, "log")
        if sched is None:
            self.lack("scheduler", raw)
            return
        unit = sched.get("unit")
        log = sched.get("log") or {}
        if unit is None:
            self.missing.append({"kind": "missing-fact", "fact": "scheduler unit",
                                 "text": "scheduler unit: %s" % (sched.get("unit_error") or "unknown")})
        elif not unit.get("exists"):
            self.escalate("scheduler-unit-unknown", "%s is not known to systemd on the scheduler's host (check the "
                          "k2_scheduler inventory group and k2_scheduler_unit)" % unit.get("name"))
        elif unit.get("crash_loop"):
            ev = unit.get("crash_loop_evidence") or {}
            journal = unit.get("journal_errors") or journal_errors(unit.get("journal") or [])
            self.add("scheduler-crashloop", "%s keeps failing: %s automatic restart(s), %s during a %s s look; last "
                     "exit %s %s at %s (result %s)%s" % (
                         unit.get("name"), ev.get("restarts"), ev.get("restarts_during_look"),
                         ev.get("seconds_watched"), ev.get("exit_code"), ev.get("exit_signal") or ev.get("exit_status"),
                         ev.get("last_exit_at"), ev.get("result"),
                         "; journal: %s" % " | ".join(journal[-2:]) if journal else ""),
                     restarts=ev.get("restarts"), exit=ev, journal=journal)
            return
        elif not unit.get("active"):
            ex = unit.get("last_exit") or {}
            text = "%s is %s (%s) since %s" % (unit.get("name"), unit.get("active_state"), unit.get("sub_state"),
                                               unit.get("since"))
            if ex.get("code"):
                text += "; main process %s %s" % (ex.get("code"), ex.get("signal") or ex.get("status"))
            if unit.get("result") and unit.get("result") != "success":
                text += "; result %s" % unit["result"]
            stopped = log.get("last_stopped")
            if stopped:
                text += "; log: %s" % stopped.get("line")
            self.add("scheduler-stopped", text, result=unit.get("result"), restarts=unit.get("restarts"))
            return
        self.started_ago = _seconds_between(unit.get("active_since"), sched.get("host_time"))
        f = log.get("file") or {}
        if not f.get("exists"):
            self.observe("scheduler-log-missing", "the scheduler log %s is missing (rotated or never written)"
                         % f.get("path"), path=f.get("path"))
        self._write_failures(sched, log)
        self._silent(log)

    def _write_failures(self, sched, log):
        """Symptoms "cycles completing but watermark not progressing": the Iceberg append worked and the
        watermark INSERT was refused, in the last two cycles, with no successful offload since."""
        for name, t in sorted((log.get("tables") or {}).items()):
            if self.tables and name not in self.tables:
                continue
            fail = t.get("last_failure") or {}
            if fail.get("error_kind") not in WATERMARK_WRITE_KINDS:
                continue
            if not self._recent_log_time(sched, fail.get("time")):
                continue
            done = (t.get("last_completed") or {}).get("time")
            if done and fail.get("time") and done > fail["time"]:
                continue
            if fail["error_kind"] == "permission_denied" and (self.health or {}).get("can_insert"):
                continue  # the privilege is back: what the failures left is judged from the cold tier
            fixable = fail["error_kind"] == "constraint_violation" and "id-sequence-behind" in self.cases
            self.add("watermark-write-failed", "%s: the offload appended to Iceberg and its watermark INSERT was "
                     "refused (%s) at %s: %s" % (name, fail["error_kind"].replace("_", " "), fail.get("time"),
                                                 fail.get("error")),
                     tables=[name], error_kind=fail["error_kind"], line=fail.get("error"), fixable=fixable,
                     errors={name: {"kind": fail["error_kind"], "line": fail.get("error"), "time": fail.get("time")}})

    def _silent(self, log):
        # Scenario 5: the scheduler runs, its offloads say 0 rows, and the source holds rows past the watermark.
        src = ok(self.facts.get("source"), "tables")
        for name, t in sorted((log.get("tables") or {}).items()):
            if self.tables and name not in self.tables:
                continue
            zero = t.get("consecutive_zero_rows") or 0
            if zero < self.silent_min_cycles or src is None:
                continue
            after = (src.get("tables") or {}).get(name, {}).get("after_watermark")
            if after and after.get("rows"):
                age = self.ages.get(name, (None, None))[1]
                if age is not None and age < 1.5 * self.cycle:
                    continue  # a new entry came in meanwhile: not silent
                self.add("silent-zero", "%s: the last %d offloads completed with 0 rows (%s) while ClickHouse holds "
                         "%d row(s) past the watermark, up to %s" % (
                             name, zero, (t.get("last_completed") or {}).get("time"), after["rows"],
                             after.get("max_pair")), tables=[name], rows_waiting=after["rows"])

    def staleness(self):
        stale = []
        for name in self.tables or sorted(self.ages):
            src, age = self.ages.get(name, (None, None))
            if age is not None and age > self.stale_after:
                stale.append(name)
                self.observe("stale", "%s: watermark %s old (from %s; stale after %s)" % (
                    name, age_text(age), src, age_text(self.stale_after)), table=name, age_seconds=age, source=src)
        return stale

    def metrics(self, prom, stale):
        """"Metric not updating" while the watermark table advances: the exporter or the scrape is broken,
        not the pipeline (say so rather than "healthy" to an engineer who was just paged)."""
        if prom is None or not self.pg_ages or stale or self.cases:
            return  # with a runbook case found, a scrape that fails too is one of its symptoms
        fresh = [t for t, a in self.pg_ages.items() if a <= self.stale_after]
        if len(fresh) != len(self.pg_ages):
            return
        prom_ages = prom.get("ages") or {}
        behind = dict((t, prom_ages.get(t)) for t in fresh
                      if prom_ages.get(t) is None or prom_ages[t] > self.stale_after)
        firing = [t for t in prom.get("firing_tables") or [] if t in fresh]
        if not behind:
            if firing:
                # Prometheus' own series is fresh too: the alert resolves at its rule's next evaluation
                # (right after a recovery it still fires for a while). Nothing is broken.
                self.observe("alert-clearing", "%s still fires for %s although Prometheus' "
                             "watermark_timestamp_seconds is fresh again: it resolves at the rule's next "
                             "evaluation (if it keeps firing, look at the rule)" % (
                                 self.settings.get("alert_name") or "IcebergOffloadWatermarkStale",
                                 ", ".join(firing)), tables=firing)
            return
        targets = prom.get("unhealthy_targets") or []
        self.escalate("metrics-broken", "the pipeline is healthy (every watermark in PostgreSQL is fresh: %s) but "
                      "Prometheus %s: the watermark exporter or its scrape is broken, not the offload%s" % (
                          ", ".join("%s %s old" % (t, age_text(a)) for t, a in sorted(self.pg_ages.items())),
                          "has no fresh watermark_timestamp_seconds for %s" % ", ".join(sorted(behind)),
                          "; scrape: %s" % "; ".join("%s (job %s) %s: %s" % (
                              t.get("instance"), t.get("job"), t.get("health"), t.get("last_error")) for t in targets)
                          if targets else "; every scrape target is up (look at the exporter's own query)"),
                      tables=sorted(behind), targets=targets)

    def escalation_rules(self):
        """The runbook's Escalation section, for what the diagnosis already shows (they hold however the
        recovery ends, so they never block it)."""
        if "cold-duplicates" in self.cases:
            rows = self.cases["cold-duplicates"]["data"].get("rows") or {}
            self.escalate("cold-duplicates-found", "data duplicates were detected in the cold tier (%s); escalate "
                          "to the Engineering Lead even once they are removed (runbook Escalation)" % ", ".join(
                              "%s: %s rows" % kv for kv in sorted(rows.items())), blocks_recovery=False, rows=rows)
        if "silent-zero" in self.cases:
            self.escalate("silent-offload-failure", "a silent offload failure (runbook Escalation: logic bug "
                          "suspected): %s" % "; ".join(f["text"] for f in self.cases["silent-zero"]["findings"]),
                          blocks_recovery=False, tables=self.cases["silent-zero"]["tables"])
        recurring = self._recurring()
        if recurring:
            self.escalate("corruption-recurs", "watermark corruption recurs: %s (runbook Escalation; this "
                          "collection repaired the same table within the last %s, audit %s)" % (
                              "; ".join("%s %s" % (t, "/".join(k)) for t, k in sorted(recurring["tables"].items())),
                              recurring["window"], ", ".join(str(i) for i in recurring["audit_ids"])),
                          blocks_recovery=False, **recurring)

    def _recurring(self):
        wm = ok(self.facts.get("watermarks"), "table_exists") or {}
        repairs = [r for r in wm.get("recent_changes") or []
                   if any((r.get("parameters") or {}).get(sel) for sel in REPAIR_SELECTIONS)]
        tables, ids = {}, []
        for kind in RECURRING_KINDS:
            for t in (self.cases.get(kind) or {}).get("tables", []):
                earlier = [r for r in repairs if r.get("table_name") == t]
                if earlier:
                    tables.setdefault(t, []).append(kind)
                    ids += [r.get("id") for r in earlier if r.get("id") not in ids]
        if not tables:
            return None
        return {"tables": tables, "audit_ids": ids, "window": wm.get("recent_changes_window") or "7d"}

    def result(self, stale):
        scenarios = []
        for number in SAFE_ORDER:
            kinds = [c for c in CASES if CASES[c][0] == number and c in self.cases]
            if not kinds:
                continue
            findings, tables = [], []
            for c in kinds:
                findings += self.cases[c]["findings"]
                tables += [t for t in self.cases[c]["tables"] if t not in tables]
            scenarios.append({
                "scenario": number, "title": SCENARIOS[number]["title"], "playbook": SCENARIOS[number]["playbook"],
                "cases": kinds, "case_titles": [CASES[c][1] for c in kinds],
                "evidence": [f["text"] for f in findings], "findings": findings,
                "tables": tables, "data": dict((c, self.cases[c]["data"]) for c in kinds),
            })
        blocking = [e for e in self.escalations if e["blocks_recovery"]]
        if scenarios:
            status = "recover"
        elif blocking:
            status = "escalate"
        elif stale and self.started_ago is not None and self.started_ago < 2 * self.cycle:
            # A scheduler started moments ago (by a recovery, or by hand) has not written every table yet.
            status = "healthy"
            self.observe("catching-up", "the scheduler started %s ago; %s will be fresh once its first cycles "
                         "complete (look again in a cycle)" % (age_text(self.started_ago), ", ".join(stale)),
                         tables=stale, started_seconds_ago=self.started_ago)
        elif stale:
            status = "escalate"
            self.stale_unexplained = True
            self.escalate("stale-unexplained", "watermark stale for %s, but none of the runbook's five scenarios "
                          "explains it (what was seen: %s)" % (", ".join(stale), "; ".join(
                              o["text"] for o in self.observations) or "nothing else"), tables=stale)
        else:
            status = "healthy"
        if scenarios:
            summary = "; ".join("Scenario %d (%s): %s" % (s["scenario"], s["title"], ", ".join(s["case_titles"]))
                                for s in scenarios)
            if self.escalations:
                summary += "; also to escalate: " + "; ".join(e["text"] for e in self.escalations)
        elif status == "escalate":
            summary = "unknown - escalate: " + "; ".join(e["text"] for e in self.escalations)
        elif stale:
            summary = "catching up: the scheduler started %s ago and has not written %s yet; no runbook scenario " \
                      "applies" % (age_text(self.started_ago), ", ".join(stale))
        else:
            summary = "healthy: every table's watermark is fresh, matches what the cold tier holds, and no runbook " \
                      "scenario applies"
        return {
            "status": status,
            "healthy": status == "healthy",
            "scenarios": scenarios,
            "scenario_numbers": [s["scenario"] for s in scenarios],
            "primary": scenarios[0]["scenario"] if scenarios else status,
            "findings": [f for s in scenarios for f in s["findings"]],
            "kinds": _unique([c for s in scenarios for c in s["cases"]] + [e["kind"] for e in self.escalations]),
            "escalations": self.escalations,
            "blocking_escalations": _unique([e["kind"] for e in self.escalations if e["blocks_recovery"]]),
            "stale_unexplained": self.stale_unexplained,
            "stale_tables": stale,
            "cold_check": sorted(set(self.cold_check)),
            "ages": dict((t, {"seconds": a[1], "source": a[0]}) for t, a in sorted(self.ages.items())),
            "observations": self.observations,
            "missing_facts": self.missing,
            "summary": summary,
        }


def _unique(items):
    out = []
    for item in items:
        if item not in out:
            out.append(item)
    return out


def _seconds_between(earlier, later):
    """Seconds from one "YYYY-mm-dd HH:MM:SS" UTC text to another; None when either is missing."""
    fmt = "%Y-%m-%d %H:%M:%S"
    try:
        return (datetime.datetime.strptime(str(later)[:19], fmt)
                - datetime.datetime.strptime(str(earlier)[:19], fmt)).total_seconds()
    except (TypeError, ValueError):
        return None


def _rows_between(after_low, after_high):
    """Source rows between two pairs: rows after the lower one minus rows after the higher one
    (offload_source_info's after_watermark for each); None when either is unknown."""
    a = (after_low or {}).get("after_watermark") or {}
    b = (after_high or {}).get("after_watermark") or {}
    if a.get("rows") is None or b.get("rows") is None:
        return None
    return abs(int(a["rows"]) - int(b["rows"]))


def classify(facts):
    """The diagnosis of gathered facts (see the module docstring); never raises on missing facts."""
    d = _Diagnosis(facts)
    prom = d.prometheus()
    d.database()
    d.watermark_table()
    d.source()
    d.cold_tier()
    d.scheduler()
    stale = d.staleness()
    d.metrics(prom, stale)
    d.escalation_rules()
    return d.result(stale)
