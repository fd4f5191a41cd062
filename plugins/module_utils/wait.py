# -*- coding: utf-8 -*-
# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""When a recovery counts as verified: the decision behind k2.iceberg_offload.watermark_wait.

Private to this collection. Pure Python; the action plugin feeds it watermark_info
results and prints what ``observe`` returns. A table is verified when its latest pair
has advanced past its baseline ``advances`` times (each an increase between two polls,
so 3 advances are 3 cycles of progress) and the latest entry is fresh. A pair that goes
down is a regression and is reported.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.k2.iceberg_offload.plugins.module_utils.watermark import Watermark, WatermarkError


def _pair(entry):
    return Watermark.from_dict(entry) if entry else None


def _num(value, name, minimum):
    if isinstance(value, bool):
        raise ValueError("%s must be a number, got %r" % (name, value))
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError("%s must be a number, got %r" % (name, value))
    if value < minimum:
        raise ValueError("%s must be at least %s, got %s" % (name, minimum, value))
    return value


class WaitState(object):
    def __init__(self, tables, baseline=None, cycles=2, cycle_seconds=900, advances=1, timeout=None, poll=None,
                 fresh_after=None):
        self.tables = list(tables)
        self.cycle_seconds = _num(cycle_seconds, "cycle_seconds", 1)
        self.cycles = _num(cycles, "cycles", 0.1)
        self.advances = int(_num(advances, "advances", 1))
        # N cycles, plus a margin for the cycle to finish its offload (at least 30 s).
        self.timeout = _num(timeout, "timeout", 1) if timeout else \
            self.cycles * self.cycle_seconds + max(30.0, 0.1 * self.cycle_seconds)
        self.poll = _num(poll, "poll", 0.5) if poll else max(1.0, min(60.0, self.cycle_seconds / 4.0))
        self.fresh_after = _num(fresh_after, "fresh_after", 1) if fresh_after else 2 * self.cycle_seconds
        self.baseline = {}
        for t, entry in (baseline or {}).items():
            try:
                self.baseline[t] = _pair(entry)
            except (WatermarkError, KeyError, TypeError) as e:
                raise ValueError("baseline of %s is not a pair (max_timestamp, sequence_number): %s" % (t, e))
        self.tables_state = dict((t, {"baseline": self.baseline.get(t), "latest": None, "last": None, "advances": 0,
                                      "age_seconds": None, "regressions": [], "verified": False})
                                 for t in self.tables)
        self.tries = 0
        self.errors = []

    # -- text -----------------------------------------------------------------------------------------
    @staticmethod
    def describe_seconds(seconds):
        return "%.0f s" % seconds if seconds < 120 else "%.1f min" % (seconds / 60.0)

    def goal(self):
        what = "a new watermark" if self.advances == 1 else "%d successive new watermarks" % self.advances
        return "%s on %s, fresher than %s" % (what, ", ".join(self.tables), self.describe_seconds(self.fresh_after))

    def describe_poll(self):
        return "a look every %s, %.1f cycles of %s" % (
            self.describe_seconds(self.poll), self.cycles, self.describe_seconds(self.cycle_seconds))

    # -- one poll ---------------------------------------------------------------------------------------
    def observe(self, info, elapsed):
        self.tries += 1
        head = "try %d, %s of %s:" % (self.tries, self.describe_seconds(elapsed), self.describe_seconds(self.timeout))
        if not info or info.get("failed"):
            msg = " ".join(str((info or {}).get("msg") or "no answer").split())[:300]
            self.errors.append(msg)
            return "%s cannot read the watermarks yet: %s" % (head, msg)
        if not info.get("table_exists", True):
            self.errors.append("the watermark table does not exist")
            return "%s the watermark table does not exist" % head
        by_name = dict((t.get("table_name"), t) for t in info.get("tables") or [])
        parts = []
        for name in self.tables:
            st = self.tables_state[name]
            item = by_name.get(name) or {}
            latest = item.get("latest")
            pair = _pair(latest) if latest else None
            st["age_seconds"] = item.get("age_seconds")
            if pair is None:
                parts.append("%s: no entry yet" % name)
                continue
            if st["baseline"] is None and st["last"] is None:
                st["baseline"] = pair  # the first look is the baseline
            if st["last"] is not None and pair < st["last"]:
                st["regressions"].append({"from": st["last"].as_dict(), "to": pair.as_dict()})
            previous = st["last"] if st["last"] is not None else st["baseline"]
            if previous is not None and pair > previous and pair > st["baseline"]:
                st["advances"] += 1
            st["last"] = pair
            st["latest"] = latest
            fresh = st["age_seconds"] is not None and st["age_seconds"] <= self.fresh_after
            st["verified"] = st["advances"] >= self.advances and fresh and not st["regressions"]
            parts.append("%s %s %s, age %s, advanced %d/%d%s" % (
                name, "ok" if st["verified"] else "waiting", pair,
                self.describe_seconds(st["age_seconds"]) if st["age_seconds"] is not None else "?",
                min(st["advances"], self.advances), self.advances,
                ", REGRESSED" if st["regressions"] else ""))
        return "%s %s" % (head, "; ".join(parts))

    def done(self):
        return all(st["verified"] for st in self.tables_state.values())

    def report(self, elapsed):
        tables = {}
        for name, st in self.tables_state.items():
            tables[name] = {
                "baseline": st["baseline"].as_dict() if st["baseline"] else None,
                "latest": st["latest"],
                "advances": st["advances"],
                "age_seconds": st["age_seconds"],
                "regressions": st["regressions"],
                "verified": st["verified"],
            }
        verified = self.done()
        waiting = [n for n, st in self.tables_state.items() if not st["verified"]]
        if verified:
            msg = "verified in %s: %s" % (self.describe_seconds(elapsed), self.goal())
        else:
            msg = ("NOT verified after %s (%.1f cycles): no %s for %s. Evidence: %s%s" % (
                self.describe_seconds(elapsed), elapsed / self.cycle_seconds, "progress" if self.advances == 1 else
                "steady progress", ", ".join(waiting),
                "; ".join("%s latest %s age %s advanced %d/%d%s" % (
                    n, (tables[n]["latest"] or {}).get("max_timestamp"), tables[n]["age_seconds"], tables[n]["advances"],
                    self.advances, " regressed" if tables[n]["regressions"] else "") for n in waiting),
                "; last error: %s" % self.errors[-1] if self.errors else ""))
        return {"verified": verified, "elapsed_seconds": round(elapsed, 1), "cycles_waited": round(
            elapsed / self.cycle_seconds, 2), "tries": self.tries, "tables": tables, "msg": msg,
            "timeout_seconds": self.timeout}
