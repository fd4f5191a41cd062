# -*- coding: utf-8 -*-
# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The incident report's two charts, drawn as inline SVG with pygal.

Private to this collection; used on the controller by the incident_report action. Draws what
incident_page.build_page shaped: the watermark age per table with the alert's threshold, and the
rows offloaded per cycle; on both, one vertical line per mark (the incident's start, its
detection, each action, the verification, the end), labelled with its number and linked to the
mark's row of the page (``#mark-N``).

pygal (LGPL-3.0-or-later, pure Python, no dependency of its own but importlib-metadata) writes SVG
itself: no browser, no JavaScript runtime and no font or image library on the controller. The
charts are rendered with ``js=[]`` (pygal's default links a tooltip script on the web) and with
their CSS inline, so the page opens without a network.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import os
import re

try:
    import pygal
    from pygal.style import Style
    HAS_PYGAL = True
    PYGAL_IMPORT_ERROR = None
except ImportError as e:  # the page is written without its charts, and says why
    pygal = Style = None
    HAS_PYGAL = False
    PYGAL_IMPORT_ERROR = str(e)

TABLE_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#17becf", "#bcbd22", "#7f7f7f")
THRESHOLD_COLOUR = "#d62728"
FAILED_COLOUR = "#d62728"
MARK_COLOURS = {"began": "#8c2d04", "detection": "#d62728", "action": "#555555", "verification": "#2ca02c",
                "progression": "#2ca02c", "end": "#111111"}
# The heights (fractions of the chart) at which mark labels are printed, in turn, so that
# marks close in time do not print over each other.
LABEL_LEVELS = (0.98, 0.90, 0.82, 0.74, 0.66, 0.58)
WIDTH, HEIGHT = 980, 330
# The marks' numbers, centred on their line (pygal starts a label at its point); a value font of 0 puts the
# label on the point.
_MARK_LABEL_CSS = ".text-overlay text.label { text-anchor: middle; font-weight: bold; }"
# pygal's own style sheets by absolute path (it would read a style.css in the working directory first) and the
# marks' one, all inline: nothing is fetched.
_CSS = ["file://" + os.path.join(os.path.dirname(pygal.__file__), "css", name) for name in ("style.css", "graph.css")] \
    + ["inline:" + _MARK_LABEL_CSS] if HAS_PYGAL else []
# pygal writes its whole configuration into an inline <script> for its tooltips; the page runs no script.
_SCRIPT_RE = re.compile(r"<script\b[^>]*>.*?</script>", re.S)


def _x_labels(start, end, count=8):
    span = max(1.0, end - start)
    steps = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)
    step = next((s for s in steps if span / s <= count), 86400 * (1 + int(span / 86400 / count)))
    first = (int(start) // step + 1) * step
    return [float(t) for t in range(first, int(end) + 1, step)], step


def _time_formatter(step):
    fmt = "%H:%M:%S" if step < 60 else ("%H:%M" if step < 86400 else "%m-%d %H:%M")

    def formatter(value):
        try:
            return datetime.datetime.fromtimestamp(float(value), datetime.timezone.utc).strftime(fmt)
        except (TypeError, ValueError, OverflowError, OSError):
            return ""
    return formatter


def _number(value):
    try:
        v = float(value)
    except (TypeError, ValueError):
        return ""
    return "%d" % v if abs(v - round(v)) < 1e-9 else "%.1f" % v


def _chart(title, y_title, window, colours, y_range):
    start, end = window["start_epoch"], window["end_epoch"]
    labels, step = _x_labels(start, end)
    style = Style(background="white", plot_background="white", foreground="#222", foreground_strong="#111",
                  foreground_subtle="#c8c8c8", opacity="1", opacity_hover="1", transition="0s",
                  font_family="DejaVu Sans, Helvetica, Arial, sans-serif", label_font_size=12,
                  major_label_font_size=12, value_font_size=0, value_label_font_size=12, legend_font_size=13,
                  title_font_size=15,
                  guide_stroke_color="#e4e4e4", major_guide_stroke_color="#d0d0d0", colors=tuple(colours))
    return pygal.XY(
        js=[], css=_CSS, disable_xml_declaration=True, explicit_size=False, width=WIDTH, height=HEIGHT, style=style,
        title=title, y_title=y_title, show_dots=False, print_labels=True, print_values=False,
        show_legend=False, truncate_label=-1,
        x_labels=labels, x_value_formatter=_time_formatter(step), value_formatter=_number,
        xrange=(start, end), range=y_range, include_x_axis=True, show_x_guides=False, show_y_guides=True,
        allow_interruptions=True, dots_size=2.5, stroke_style={"width": 2}, margin=12, spacing=12,
        tooltip_border_radius=0, no_data_text="no data")


def _add_marks(chart, marks, top, bottom):
    """One dashed vertical line per mark, its number centred above it (one series of labels, no line)."""
    labels = []
    for i, m in enumerate(marks):
        y_top = bottom + (top - bottom) * LABEL_LEVELS[i % len(LABEL_LEVELS)]
        link = {"href": "#%s" % m["id"], "target": "_self"}
        chart.add(None, [
            {"value": (m["epoch"], bottom), "node": {"r": 0}},
            {"value": (m["epoch"], y_top), "xlink": link},
        ], show_dots=True, dots_size=3.5, stroke_style={"width": 1.6, "dasharray": "5,4"})
        labels.append({"value": (m["epoch"], y_top + (top - bottom) * 0.035), "label": str(m["n"]), "xlink": link,
                       "node": {"r": 0}})
    if labels:
        chart.add(None, labels, stroke=False, show_dots=True)


def _bounds(series, threshold=None, floor=0.0):
    values = [v for points in series.values() for _t, v in points]
    if threshold is not None:
        values.append(threshold)
    high = max(values) if values else 1.0
    low = min([floor] + values)
    if high <= low:
        high = low + 1.0
    return low, high * 1.12 if high > 0 else high + abs(high) * 0.12 + 1


def _with_gaps(points, cycle_seconds):
    """The points in time order, the line broken (a None) where more than two and a half cycles pass without
    one: a stopped scheduler offloads nothing, it does not ramp from one cycle's rows to the next."""
    points = sorted(points)
    if not cycle_seconds:
        return points
    out = []
    for prev, cur in zip([None] + points, points):
        if prev is not None and cur[0] - prev[0] > 2.5 * cycle_seconds:
            out.append(None)
        out.append(cur)
    return out


def _mark_colours(marks):
    # the labels' series draws nothing but text, which pygal writes black on a light series colour
    return [MARK_COLOURS.get(m["kind"], "#555555") for m in marks] + ["#eeeeee"]


def age_chart(view):
    """The watermark age per table, the alert's threshold and the marks, as SVG text."""
    age = view["age"]
    series = age["series"]
    tables = [t for t in view["tables"] if t in series] + sorted(t for t in series if t not in view["tables"])
    threshold = age.get("threshold")
    low, high = _bounds(series, threshold)
    colours = [TABLE_COLOURS[i % len(TABLE_COLOURS)] for i in range(len(tables))]
    if threshold is not None:
        colours.append(THRESHOLD_COLOUR)
    colours += _mark_colours(view["marks"])
    chart = _chart("Watermark age per table (seconds)", "age (s)", view["window"], colours, (low, high))
    for name in tables:
        chart.add(name, list(series[name]))
    if threshold is not None:
        chart.add("alert threshold (%s s)" % _number(threshold), [
            (view["window"]["start_epoch"], threshold), (view["window"]["end_epoch"], threshold)],
            stroke_style={"width": 2, "dasharray": "9,5"})
    _add_marks(chart, view["marks"], high / 1.12, low)
    return _SCRIPT_RE.sub("", chart.render(is_unicode=True))


def age_legend(view):
    """The age chart's key (the page draws it: pygal's own would reserve a row for every mark)."""
    tables = [t for t in view["tables"] if t in view["age"]["series"]]
    tables += sorted(t for t in view["age"]["series"] if t not in tables)
    out = [{"name": t, "colour": TABLE_COLOURS[i % len(TABLE_COLOURS)], "line": "solid"} for i, t in enumerate(tables)]
    if view["age"].get("threshold") is not None:
        out.append({"name": "alert threshold (%s s)" % _number(view["age"]["threshold"]), "colour": THRESHOLD_COLOUR,
                    "line": "dashed"})
    return out


def rows_legend(view):
    rows = view["rows"]
    failures = rows.get("failures") or {}
    tables = [t for t in view["tables"] if t in rows["series"] or t in failures]
    tables += sorted(t for t in set(rows["series"]) | set(failures) if t not in tables)
    out = [{"name": t, "colour": TABLE_COLOURS[i % len(TABLE_COLOURS)], "line": "solid"} for i, t in enumerate(tables)]
    if any(failures.values()):
        out.append({"name": "failed job", "colour": FAILED_COLOUR, "line": "dot"})
    return out


def rows_chart(view):
    """Rows offloaded per cycle (or the sequence numbers each watermark entry advanced), failed jobs and the
    marks, as SVG text. A silent offload failure (runbook Scenario 5) is the line flat on 0."""
    rows = view["rows"]
    series = rows["series"]
    failures = rows.get("failures") or {}
    tables = [t for t in view["tables"] if t in series or t in failures]
    tables += sorted(t for t in set(series) | set(failures) if t not in tables)
    low, high = _bounds(series)
    colours = [TABLE_COLOURS[i % len(TABLE_COLOURS)] for i in range(len(tables))]
    failed = [(t, 0.0) for name in tables for t in failures.get(name, [])]
    if failed:
        colours.append(FAILED_COLOUR)
    colours += _mark_colours(view["marks"])
    title = "Rows offloaded per cycle" if rows["source"] != "watermark-pairs" else \
        "Sequence numbers advanced per watermark entry"
    chart = _chart(title, rows["unit"], view["window"], colours, (low, high))
    for name in tables:
        chart.add(name, _with_gaps(series.get(name, []), view.get("cycle_seconds")), show_dots=True)
    if failed:
        chart.add("failed job", sorted(failed), show_dots=True, dots_size=5, stroke=False)
    _add_marks(chart, view["marks"], high / 1.12, low)
    return _SCRIPT_RE.sub("", chart.render(is_unicode=True))


def draw(view):
    """{age, rows}: the two charts' SVG, or None each with ``error`` saying why (pygal missing, a chart that
    could not be drawn); the page is written either way."""
    out = {"age": None, "rows": None, "error": None, "age_legend": age_legend(view), "rows_legend": rows_legend(view)}
    if not HAS_PYGAL:
        out["error"] = "the charts need the Python library pygal on the controller (pip install pygal): %s" % (
            PYGAL_IMPORT_ERROR)
        return out
    errors = []
    for name, fn, key in (("age", age_chart, "age"), ("rows", rows_chart, "rows")):
        if not view[key]["series"] and not (view[key].get("failures") or {}):
            continue
        try:
            out[name] = fn(view)
        except Exception as e:  # a chart that cannot be drawn never costs the report
            errors.append("the %s chart could not be drawn: %s" % (name, e))
    out["error"] = "; ".join(errors) or None
    return out
