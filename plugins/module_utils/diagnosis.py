# -*- coding: utf-8 -*-
# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Runbook Diagnosis step 5, "Identify Watermark Issue Type", as one pure function.

Private to this collection. ``classify(facts)`` takes what the diagnose playbook gathered
(each part a module result, possibly failed, skipped or missing) and returns the runbook
scenarios that apply, each with its evidence, in the order a recovery must take them:
the database first (2), then the table (3), then the data (4), then the scheduler (1),
then the offload itself (5). It never raises on missing or failed facts: a fact that
could not be gathered is named in ``missing_facts`` and the rules that needed it do not
fire. ``plan(diagnosis, requested)`` turns a diagnosis (or an operator's explicit list)
into the scenario playbooks to run.

Facts (every key optional)::

    settings:        tables, cycle_seconds, stale_after, pg_container, network, silent_min_cycles
    prometheus:      watermark_metrics_info result
    scheduler:       scheduler_info result
    db_container:    community.docker.docker_container_info result
    db_from_controller, db_from_spark: db_connection_info results
    watermarks:      watermark_info result
    source:          offload_source_info result (rows after each table's latest watermark)
    cold:            {table: iceberg_table_info result}
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime

SCENARIOS = {
    1: {"title": "Scheduler Not Running", "playbook": "scenario_1_scheduler.yml"},
    2: {"title": "PostgreSQL Connection Issues", "playbook": "scenario_2_postgres.yml"},
    3: {"title": "Watermark Table Missing", "playbook": "scenario_3_table_missing.yml"},
    4: {"title": "Watermark Corruption", "playbook": "scenario_4_corruption.yml"},
    5: {"title": "Silent Offload Failure", "playbook": "scenario_5_silent_offload.yml"},
}

# Database before table before data; the scheduler is started once those are right;
# a silent offload can only be judged with everything else healthy.
SAFE_ORDER = (2, 3, 4, 1, 5)

CASES = {
    "scheduler-stopped": (1, "the scheduler is not running"),
    "db-stopped": (2, "the database container is stopped"),
    "db-crashed": (2, "the database container crashed"),
    "db-connections": (2, "the connection pool is exhausted"),
    "db-partition": (2, "the database is cut off from the scheduler's network"),
    "table-missing": (3, "the watermark table does not exist"),
    "no-entry": (3, "tables without a watermark entry"),
    "duplicate-entries": (4, "duplicate watermark entries"),
    "regression": (4, "the watermark went backward"),
    "future-entries": (4, "entries dated in the future"),
    "cold-duplicates": (4, "duplicated rows in the cold tier"),
    "cold-ahead": (4, "the cold tier holds rows past the watermark"),
    "silent-zero": (5, "offloads complete with 0 rows while the source has rows past the watermark"),
}


class PlanError(ValueError):
    """An operator's scenario list that cannot be followed."""


# The key each module always returns when it worked. A playbook registers failures with
# failed_when: false (so its output stays calm), which clears "failed": the key tells.
_MARKERS = {
    "prometheus": "reachable", "scheduler": "log", "db_container": "exists", "db_from_controller": "kind",
    "db_from_spark": "kind", "watermarks": "table_exists", "source": "tables", "cold": "row_count",
}


def _ok(result, marker=None):
    """The result when the fact was gathered, else None."""
    if not isinstance(result, dict) or not result:
        return None
    if result.get("failed") or result.get("unreachable") or result.get("skipped"):
        return None
    if marker and (marker not in result or result[marker] == {}):
        return None  # a failure registered with failed_when: false keeps the key, empty
    return result


def _why_missing(name, result):
    if result is None or result == {}:
        return "%s: not gathered" % name
    if not isinstance(result, dict):
        return "%s: not gathered" % name
    if result.get("skipped"):
        return "%s: skipped" % name
    msg = result.get("msg") or result.get("error") or "failed"
    return "%s: %s" % (name, " ".join(str(msg).split())[:300])


def _age_text(seconds):
    if seconds is None:
        return "unknown"
    seconds = float(seconds)
    if seconds < 120:
        return "%.0f s" % seconds
    if seconds < 7200:
        return "%.0f min" % (seconds / 60.0)
    return "%.1f h" % (seconds / 3600.0)


class _Diagnosis(object):
    def __init__(self, facts):
        self.facts = facts or {}
        s = self.facts.get("settings") or {}
        self.tables = list(s.get("tables") or [])
        self.cycle = float(s.get("cycle_seconds") or 900)
        self.stale_after = float(s.get("stale_after") or 4 * self.cycle)
        self.container = s.get("pg_container") or "k2-prefect-db"
        self.network = s.get("network") or "k2-network"
        self.silent_min_cycles = int(s.get("silent_min_cycles") or 2)
        self.cases = {}          # case -> {"evidence": [...], "tables": [...], "data": {...}}
        self.escalations = []    # things seen that no scenario recovers
        self.observations = []   # context for the operator
        self.missing = []
        self.ages = {}
        self.stale_unexplained = False

    def add(self, case, evidence, tables=None, **data):
        item = self.cases.setdefault(case, {"evidence": [], "tables": [], "data": {}})
        if evidence not in item["evidence"]:
            item["evidence"].append(evidence)
        for t in tables or []:
            if t not in item["tables"]:
                item["tables"].append(t)
        item["data"].update(data)

    # -- layers -------------------------------------------------------------------------------------
    def prometheus(self):
        prom = self.facts.get("prometheus")
        p = _ok(prom, "reachable")
        if p is None:
            self.missing.append(_why_missing("prometheus", prom))
            return
        if not p.get("reachable"):
            self.missing.append("prometheus: %s" % (p.get("error") or "did not answer"))
            return
        for t, age in sorted((p.get("ages") or {}).items()):
            if age is not None:
                self.ages.setdefault(t, ("prometheus", float(age)))
        if p.get("firing_tables"):
            self.observations.append("IcebergOffloadWatermarkStale fires for %s since %s" % (
                ", ".join(str(t) for t in p["firing_tables"]), p.get("alert_active_since")))
        for t in p.get("missing_tables") or []:
            self.observations.append("Prometheus has no watermark series for %s" % t)

    def database(self):
        dc_raw = self.facts.get("db_container")
        dc = _ok(dc_raw, "exists")
        ctrl = _ok(self.facts.get("db_from_controller"), "kind")
        spark = _ok(self.facts.get("db_from_spark"), "kind")
        running = None
        if dc is None:
            self.missing.append(_why_missing("database container", dc_raw))
        elif not dc.get("exists"):
            self.escalations.append("the container %s does not exist on its Docker host (the runbook cannot "
                                    "recreate a database; restore it from the backups)" % self.container)
            running = False
        else:
            state = (dc.get("container") or {}).get("State") or {}
            running = bool(state.get("Running"))
            exit_code = state.get("ExitCode")
            if state.get("Restarting"):
                self.add("db-crashed", "%s is restarting (exit code %s, restart count %s)" % (
                    self.container, exit_code, (dc.get("container") or {}).get("RestartCount")),
                    exit_code=exit_code, oom_killed=state.get("OOMKilled"), restarting=True)
            elif not running:
                finished = state.get("FinishedAt")
                if state.get("OOMKilled") or (exit_code not in (0, None)):
                    reason = "killed by the kernel's OOM killer" if state.get("OOMKilled") else (
                        "killed by signal %d" % (exit_code - 128) if exit_code and exit_code > 128
                        else "exit code %s" % exit_code)
                    self.add("db-crashed", "%s exited at %s: %s (exit code %s)%s" % (
                        self.container, finished, reason, exit_code,
                        "; error: %s" % state["Error"] if state.get("Error") else ""),
                        exit_code=exit_code, oom_killed=bool(state.get("OOMKilled")), finished_at=finished)
                else:
                    self.add("db-stopped", "%s is %s since %s (exit code 0: stopped, not crashed)" % (
                        self.container, state.get("Status", "exited"), finished), exit_code=exit_code,
                        finished_at=finished)
            else:
                nets = ((dc.get("container") or {}).get("NetworkSettings") or {}).get("Networks") or {}
                if self.network not in nets:
                    self.add("db-partition", "%s runs but is not attached to %s (attached to: %s)" % (
                        self.container, self.network, ", ".join(sorted(nets)) or "nothing"),
                        networks=sorted(nets))
        for name, probe in (("this host", ctrl), ("the Spark host", spark)):
            raw = self.facts.get("db_from_controller" if name == "this host" else "db_from_spark")
            if probe is None:
                if name == "this host" and _ok(self.facts.get("watermarks"), "table_exists"):
                    continue  # watermark_info logged in: nothing to probe
                self.missing.append(_why_missing("database connection from %s" % name, raw))
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
                self.escalations.append(text + " (wrong credentials: fix the inventory or vault, the database "
                                               "itself may be fine)")
            elif not self._db_case():
                if running is False:
                    continue  # explained by the container state, already recorded
                self.escalations.append(text + " (no runbook cause found: the container runs and is on "
                                               "its network)")
        sched = _ok(self.facts.get("scheduler"), "log")
        if sched:
            last = ((sched.get("log") or {}).get("last_error_by_kind") or {}).get("too_many_clients")
            if last and self._recent_log_time(sched, last.get("time")) and \
                    not self._offloaded_since(sched, last.get("time")):
                self.add("db-connections", "the scheduler's log at %s: %s" % (last.get("time"), last.get("line")))

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
        wm = _ok(raw, "table_exists")
        if wm is None:
            if self._db_case():
                self.missing.append("watermark table: not readable while the database is unreachable (recover "
                                    "looks again after Scenario 2)")
            else:
                self.missing.append(_why_missing("watermark table", raw))
            return None
        if not wm.get("table_exists", True):
            self.add("table-missing", "%s does not exist in the database (\\dt finds nothing)"
                     % wm.get("watermark_table"), tables=self.tables)
            return wm
        by_name = dict((t.get("table_name"), t) for t in wm.get("tables") or [])
        for name in self.tables or sorted(by_name):
            t = by_name.get(name)
            if t is None or t.get("latest") is None:
                self.add("no-entry", "%s has no entry in %s" % (name, wm.get("watermark_table")), tables=[name])
                continue
            if t.get("age_seconds") is not None:
                self.ages[name] = ("postgresql", float(t["age_seconds"]))
            if t.get("regression_count"):
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
        return wm

    def source(self):
        raw = self.facts.get("source")
        if isinstance(raw, dict) and raw and not raw.get("skipped") and _ok(raw, "tables") is None:
            self.missing.append(_why_missing("source rows past the watermark (ClickHouse)", raw))

    def cold_tier(self, wm):
        cold = self.facts.get("cold")
        if not cold:
            return
        for name, raw in sorted(cold.items()):
            c = _ok(raw, "row_count")
            if c is None:
                self.missing.append(_why_missing("cold tier of %s" % name, raw))
                continue
            d = c.get("duplicates") or {}
            if d.get("duplicate_rows"):
                self.add("cold-duplicates", "cold tier of %s holds %d duplicated row(s) over %d key(s) (e.g. %s)" % (
                    name, d["duplicate_rows"], d.get("duplicated_keys", 0),
                    ", ".join(str(s.get("key")) for s in (d.get("sample") or [])[:3])), tables=[name])
            after = self._latest_pairs("watermarks_after_cold").get(name)
            cold_max = c.get("max_pair")
            if after is not None and cold_max and _pair_key(cold_max) > after:
                self.add("cold-ahead", "cold tier of %s holds rows up to %s, past the watermark %s read after it: the "
                         "scheduler would offload them again" % (name, _fmt_pair(cold_max), after), tables=[name])

    def _latest_pairs(self, key):
        info = _ok(self.facts.get(key), "table_exists")
        out = {}
        for t in (info or {}).get("tables") or []:
            if t.get("latest"):
                out[t.get("table_name")] = _pair_key(t["latest"])
        return out

    def scheduler(self, wm):
        raw = self.facts.get("scheduler")
        sched = _ok(raw, "log")
        if sched is None:
            self.missing.append(_why_missing("scheduler", raw))
            return
        unit = sched.get("unit")
        log = sched.get("log") or {}
        if unit is None:
            self.missing.append("scheduler unit: %s" % (sched.get("unit_error") or "unknown"))
        elif not unit.get("exists"):
            self.escalations.append("%s is not known to systemd on the scheduler's host (check the k2_scheduler "
                                    "inventory group and k2_scheduler_unit)" % unit.get("name"))
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
        f = log.get("file") or {}
        if not f.get("exists"):
            self.observations.append("the scheduler log %s is missing (rotated or never written)" % f.get("path"))
        # Scenario 5: the scheduler runs, its offloads say 0 rows, and the source holds rows past the watermark.
        src = _ok(self.facts.get("source"), "tables")
        for name, t in sorted((log.get("tables") or {}).items()):
            if self.tables and name not in self.tables:
                continue
            zero = t.get("consecutive_zero_rows") or 0
            if zero < self.silent_min_cycles:
                continue
            after = ((src or {}).get("tables") or {}).get(name, {}).get("after_watermark") if src else None
            if src is None:
                continue  # named once in missing_facts by source()
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
                self.observations.append("%s: watermark %s old (from %s; stale after %s)" % (
                    name, _age_text(age), src, _age_text(self.stale_after)))
        return stale

    def result(self, stale):
        scenarios = []
        for number in SAFE_ORDER:
            cases = [c for c in CASES if CASES[c][0] == number and c in self.cases]
            if not cases:
                continue
            evidence, tables = [], []
            for c in cases:
                evidence += self.cases[c]["evidence"]
                tables += [t for t in self.cases[c]["tables"] if t not in tables]
            scenarios.append({
                "scenario": number, "title": SCENARIOS[number]["title"], "playbook": SCENARIOS[number]["playbook"],
                "cases": cases, "case_titles": [CASES[c][1] for c in cases], "evidence": evidence,
                "tables": tables, "data": dict((c, self.cases[c]["data"]) for c in cases),
            })
        if scenarios:
            status = "recover"
        elif self.escalations:
            status = "escalate"
        elif stale:
            status = "escalate"
            self.stale_unexplained = True
            self.escalations.append("watermark stale for %s, but none of the runbook's five scenarios explains it "
                                    "(what was seen: %s)" % (", ".join(stale), "; ".join(self.observations) or
                                                             "nothing else"))
        else:
            status = "healthy"
        if scenarios:
            summary = "; ".join("Scenario %d (%s): %s" % (s["scenario"], s["title"], ", ".join(s["case_titles"]))
                                for s in scenarios)
            if self.escalations:
                summary += "; also to escalate: " + "; ".join(self.escalations)
        elif status == "escalate":
            summary = "unknown - escalate: " + "; ".join(self.escalations)
        else:
            summary = "healthy: every table's watermark is fresh and no runbook scenario applies"
        return {
            "status": status,
            "healthy": status == "healthy",
            "scenarios": scenarios,
            "scenario_numbers": [s["scenario"] for s in scenarios],
            "primary": scenarios[0]["scenario"] if scenarios else status,
            "escalations": self.escalations,
            "stale_unexplained": self.stale_unexplained,
            "stale_tables": stale,
            "ages": dict((t, {"seconds": a[1], "source": a[0]}) for t, a in sorted(self.ages.items())),
            "observations": self.observations,
            "missing_facts": self.missing,
            "summary": summary,
        }


def classify(facts):
    """The diagnosis of gathered facts (see the module docstring); never raises on missing facts."""
    d = _Diagnosis(facts)
    d.prometheus()
    d.database()
    wm = d.watermark_table()
    d.source()
    d.cold_tier(wm)
    d.scheduler(wm)
    return d.result(d.staleness())


def parse_scenarios(requested):
    """[1, 4] from ``[1, "4"]``, ``"1,4"``, ``["scenario_1"]``; unknown names raise PlanError."""
    if requested in (None, "", []):
        return []
    if isinstance(requested, (str, int)):
        requested = str(requested).split(",")
    out = []
    for item in requested:
        text = str(item).strip().lower()
        for prefix in ("scenario_", "scenario-", "scenario"):
            if text.startswith(prefix):
                text = text[len(prefix):]
        text = text.split("_")[0]
        if not text.isdigit() or int(text) not in SCENARIOS:
            raise PlanError("unknown scenario %r: the runbook's scenarios are 1 (scheduler), 2 (PostgreSQL), "
                            "3 (table missing), 4 (corruption), 5 (silent offload)" % (item,))
        if int(text) not in out:
            out.append(int(text))
    return out


def plan(diagnosis, requested=None):
    """The scenario numbers to run, in the safe order: the diagnosis', or the operator's ``requested``."""
    asked = parse_scenarios(requested)
    chosen = asked or list((diagnosis or {}).get("scenario_numbers") or [])
    return [n for n in SAFE_ORDER if n in chosen]


# -- the decisions inside a scenario ------------------------------------------------------------------
def corruption(watermarks, cold=None):
    """Scenario 4's work list from a watermark_info result and {table: iceberg_table_info result}:
    which tables' watermark lies behind the cold tier (``ahead``: a reset forward to the cold
    tier), have duplicate entries, regressed entries, future-dated entries, and duplicated cold
    rows (``cold_duplicates``: {table: rows}).

    ``watermarks`` must be read after ``cold``: the offload appends to Iceberg before it writes
    the watermark, so a cold tier read after the watermark can be ahead of it for a moment
    without anything being wrong."""
    out = {"ahead": [], "duplicate_entries": [], "regressed": [], "future": [], "cold_duplicates": {}}
    latest_pairs = {}
    for t in (watermarks or {}).get("tables") or []:
        name = t.get("table_name")
        if t.get("latest"):
            latest_pairs[name] = _pair_key(t["latest"])
        if t.get("duplicate_pairs") or t.get("duplicate_bursts"):
            out["duplicate_entries"].append(name)
        if t.get("regression_count"):
            out["regressed"].append(name)
        if t.get("future_entries"):
            out["future"].append(name)
    for name, c in sorted((cold or {}).items()):
        c = _ok(c, "row_count")
        if c is None:
            continue
        latest = latest_pairs.get(name)
        if latest is not None and c.get("max_pair") and _pair_key(c["max_pair"]) > latest:
            out["ahead"].append(name)
        rows = (c.get("duplicates") or {}).get("duplicate_rows")
        if rows:
            out["cold_duplicates"][name] = rows
    out["any"] = bool(out["ahead"] or out["duplicate_entries"] or out["regressed"] or out["cold_duplicates"])
    return out


def silent_offloads(scheduler, source, min_cycles=2):
    """Scenario 5: {table: evidence} for the tables whose last ``min_cycles`` (or more) offloads
    wrote 0 rows while the source holds rows past their watermark."""
    sched = _ok(scheduler, "log")
    src = _ok(source, "tables")
    out = {}
    if sched is None or src is None:
        return out
    for name, t in sorted(((sched.get("log") or {}).get("tables") or {}).items()):
        zero = t.get("consecutive_zero_rows") or 0
        after = (src.get("tables") or {}).get(name, {}).get("after_watermark") or {}
        if zero >= int(min_cycles) and after.get("rows"):
            out[name] = {"zero_row_offloads": zero, "last_completed": t.get("last_completed"),
                         "rows_waiting": after["rows"], "watermark": after.get("watermark"),
                         "source_max_pair": after.get("max_pair")}
    return out


def manual_offload(results, before=None, after=None, cold=None):
    """Scenario 5's verdict on the runbook's manual offload, from the command results (a loop over
    tables: each has ``item`` and ``stdout``), watermark_info before and after, and per table an
    iceberg_table_info result whose ``past_watermark`` is counted from the watermark before.

    A table ``works`` when its run reported rows and its watermark advanced. It is in ``twice``
    when the cold tier past the old watermark holds more rows than the run wrote (some went in
    twice), and in ``escalate`` when the run wrote nothing although rows were waiting."""
    from ansible_collections.k2.iceberg_offload.plugins.module_utils.scheduler import parse_log

    def latest(info):
        return dict((t.get("table_name"), t.get("latest")) for t in ((info or {}).get("tables") or []))

    lb, la = latest(before), latest(after)
    tables, works, escalate, twice = {}, [], [], []
    for r in results or []:
        name = r.get("item")
        text = r.get("stdout") or ""
        parsed = parse_log(text.splitlines(), tables=[name])["tables"][name]
        done = parsed.get("last_completed") or {}
        moved = bool(la.get(name) and (lb.get(name) is None or _pair_key(la[name]) > _pair_key(lb[name])))
        rows = done.get("rows")
        past = ((_ok((cold or {}).get(name), "row_count") or {}).get("past_watermark") or {}).get("rows")
        ok = bool(rows) and moved and not r.get("rc")
        tables[name] = {"rows": rows, "line": done.get("line"), "rc": r.get("rc"),
                        "watermark_before": lb.get(name), "watermark_after": la.get(name), "advanced": moved,
                        "cold_rows_past_old_watermark": past,
                        "error": (parsed.get("last_error") or {}).get("line") or (r.get("stderr") or "")[-300:] or None,
                        "works": ok}
        (works if ok else escalate).append(name)
        if past is not None and rows is not None and past > rows:
            twice.append(name)
    return {"tables": tables, "works": works, "escalate": escalate, "twice": twice}


def _fmt_pair(entry):
    return "(%s, %s)" % (entry.get("max_timestamp"), entry.get("sequence_number"))


def _pair_key(entry):
    from ansible_collections.k2.iceberg_offload.plugins.module_utils.watermark import make_watermark
    return make_watermark(entry.get("max_timestamp"), entry.get("sequence_number") or 0)


def reconcile(source, cold, watermarks=None):
    """Post-incident: does the cold tier hold every source row up to the watermark, once?

    ``source``: offload_source_info with ``upto_watermark`` (rows at or before each table's
    watermark W); ``cold``: {table: iceberg_table_info with ``watermark`` W and duplicates}.
    Cold rows at or before W are its rows minus those past W; the copies a deduplication would
    remove are its duplicate rows (assumed at or before W, where re-offloads put them).
    ``missing`` and ``extra`` compare the distinct cold rows with the source's.
    """
    src = _ok(source, "tables") or {}
    out = {"tables": {}, "ok": True, "problems": []}
    for name, c_raw in sorted((cold or {}).items()):
        c = _ok(c_raw, "row_count")
        s = ((src.get("tables") or {}).get(name) or {}).get("upto_watermark")
        item = {"source_rows": s.get("rows") if s else None, "watermark": s.get("watermark") if s else None}
        if c is None or s is None:
            item["error"] = "not compared: %s" % ("cold tier unreadable" if c is None else "no source count")
            out["tables"][name] = item
            out["ok"] = False
            out["problems"].append("%s: %s" % (name, item["error"]))
            continue
        past = (c.get("past_watermark") or {}).get("rows") or 0
        dups = (c.get("duplicates") or {}).get("duplicate_rows") or 0
        cold_upto = int(c.get("row_count") or 0) - int(past)
        distinct = cold_upto - int(dups)
        item.update(cold_rows=cold_upto, cold_duplicate_rows=dups, cold_rows_past_watermark=past,
                    missing=max(0, s["rows"] - distinct), extra=max(0, distinct - s["rows"]))
        item["ok"] = item["missing"] == 0 and item["extra"] == 0 and dups == 0
        if not item["ok"]:
            out["ok"] = False
            out["problems"].append("%s: %d source rows up to the watermark, the cold tier holds %d (%d duplicated): "
                                   "%d missing, %d extra" % (name, s["rows"], cold_upto, dups, item["missing"],
                                                             item["extra"]))
        out["tables"][name] = item
    return out
