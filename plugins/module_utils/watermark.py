# -*- coding: utf-8 -*-
# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The watermark pair and the values it is made of. Pure Python, no server.

A watermark is the pair ``(max_timestamp, sequence_number)`` and is always
compared as a pair, lexicographically: a later timestamp wins, and on equal
timestamps the higher sequence number wins. Timestamps are UTC; input may be
ISO 8601 with or without an offset, and is normalised to a naive UTC
``datetime`` (the PostgreSQL column is ``TIMESTAMP`` without time zone).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import re
from collections import namedtuple

# Sequence numbers are BIGINT in PostgreSQL and UInt64 in ClickHouse; the
# watermark must fit both.
MAX_SEQUENCE = 2 ** 63 - 1

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_DURATION_PART_RE = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class WatermarkError(ValueError):
    """Bad watermark input; the message says what was wrong and what is accepted."""


class Watermark(namedtuple("Watermark", ["max_timestamp", "sequence_number"])):
    """A ``(max_timestamp, sequence_number)`` pair; tuple ordering is pair ordering."""

    __slots__ = ()

    def as_dict(self):
        return {
            "max_timestamp": format_timestamp(self.max_timestamp),
            "sequence_number": self.sequence_number,
        }

    @classmethod
    def from_dict(cls, entry, name="watermark"):
        """A Watermark from ``{max_timestamp, sequence_number}`` (a module's result, an entry, an option) or a
        ``(timestamp, sequence)`` pair; every value is checked (WatermarkError)."""
        if isinstance(entry, (list, tuple)) and len(entry) == 2:
            return make_watermark(entry[0], entry[1])
        if not isinstance(entry, dict):
            raise WatermarkError("%s must be {max_timestamp, sequence_number}, got %r" % (name, entry))
        return cls(parse_timestamp(entry.get("max_timestamp"), name + ".max_timestamp"),
                   parse_sequence(entry.get("sequence_number"), name + ".sequence_number"))

    def __str__(self):
        return "(%s, %d)" % (format_timestamp(self.max_timestamp), self.sequence_number)


def parse_timestamp(value, name="max_timestamp"):
    """Return a naive UTC ``datetime`` for an ISO 8601 string or a datetime.

    ``2026-02-12T10:00:00Z``, ``2026-02-12 10:00:00+02:00`` and
    ``2026-02-12T10:00:00`` (taken as UTC) are accepted; anything else raises
    ``WatermarkError``.
    """
    if isinstance(value, datetime.datetime):
        dt = value
    elif isinstance(value, str):
        text = value.strip()
        if not text or len(text) > 64:
            raise WatermarkError("%s must be an ISO 8601 timestamp, got %r" % (name, value))
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            dt = datetime.datetime.fromisoformat(text)
        except ValueError:
            raise WatermarkError(
                "%s must be an ISO 8601 timestamp such as 2026-02-12T10:00:00Z, got %r"
                % (name, value))
    else:
        raise WatermarkError("%s must be an ISO 8601 timestamp string, got %r" % (name, value))
    if dt.tzinfo is not None:
        dt = dt.astimezone(datetime.timezone.utc).replace(tzinfo=None)
    if dt.year < 1970:
        raise WatermarkError("%s is before 1970: %r" % (name, value))
    return dt


def format_timestamp(dt):
    """ISO 8601 text of a naive UTC datetime, without offset (as stored)."""
    if dt is None:
        return None
    return dt.isoformat(sep=" ")


def parse_sequence(value, name="sequence_number"):
    """An int in [0, 2**63-1]; bools, floats and numeric strings with junk are refused."""
    if isinstance(value, bool):
        raise WatermarkError("%s must be an integer, got %r" % (name, value))
    if isinstance(value, str) and re.match(r"^\s*\d+\s*$", value):
        value = int(value)
    if not isinstance(value, int):
        raise WatermarkError("%s must be a non-negative integer, got %r" % (name, value))
    if value < 0 or value > MAX_SEQUENCE:
        raise WatermarkError("%s must be between 0 and %d, got %d" % (name, MAX_SEQUENCE, value))
    return value


def make_watermark(max_timestamp, sequence_number):
    return Watermark(parse_timestamp(max_timestamp), parse_sequence(sequence_number))


def pair_dict(pair):
    """A Watermark (or None) as the dict every module returns: {max_timestamp, sequence_number} (or None)."""
    return pair.as_dict() if pair is not None else None


def parse_duration(value, name="duration"):
    """Seconds (float) from ``90``, ``"90s"``, ``"15m"``, ``"24h"``, ``"7d"``, ``"1h30m"``.

    Zero and negative durations are refused.
    """
    if isinstance(value, bool):
        raise WatermarkError("%s must be a duration such as 15m, 24h or 7d, got %r" % (name, value))
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().lower()
        m = _DURATION_RE.match(text)
        if m:
            seconds = float(m.group(1)) * _UNITS[m.group(2) or "s"]
        elif text and _DURATION_PART_RE.sub("", text) == "":
            seconds = sum(float(n) * _UNITS[u] for n, u in _DURATION_PART_RE.findall(text))
        else:
            raise WatermarkError(
                "%s must be a duration such as 15m, 24h or 7d, got %r" % (name, value))
    else:
        raise WatermarkError("%s must be a duration such as 15m, 24h or 7d, got %r" % (name, value))
    if seconds <= 0:
        raise WatermarkError("%s must be greater than zero, got %r" % (name, value))
    return seconds


def utcnow():
    """Naive UTC now (what the TIMESTAMP columns hold)."""
    return datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)


def parse_since(value, now=None, name="since"):
    """A moment (naive UTC ``datetime``) from an ISO 8601 timestamp (UTC without an offset) or a duration
    such as ``2h``, which means that long before ``now`` (default: this host's clock)."""
    if isinstance(value, str) and (_DURATION_RE.match(value.strip().lower()) or (
            value.strip() and _DURATION_PART_RE.sub("", value.strip().lower()) == "")):
        return (now or utcnow()) - datetime.timedelta(seconds=parse_duration(value, name))
    try:
        return parse_timestamp(value, name)
    except WatermarkError:
        raise WatermarkError("%s must be an ISO 8601 timestamp such as 2026-02-12T10:00:00Z or a duration such as "
                             "2h, got %r" % (name, value))


def parse_signed_duration(value, name="shift_by"):
    """Seconds (float, may be negative) from ``-1h``, ``+30m``, ``"-90"`` or ``-90``; zero is refused."""
    if isinstance(value, bool):
        raise WatermarkError("%s must be a duration such as -1h or +30m, got %r" % (name, value))
    sign = 1.0
    if isinstance(value, (int, float)):
        if value < 0:
            sign, value = -1.0, -value
    elif isinstance(value, str):
        text = value.strip()
        if text[:1] in ("-", "+"):
            sign = -1.0 if text[0] == "-" else 1.0
            value = text[1:]
    else:
        raise WatermarkError("%s must be a duration such as -1h or +30m, got %r" % (name, value))
    return sign * parse_duration(value, name)
