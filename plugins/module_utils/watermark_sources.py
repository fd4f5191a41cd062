# -*- coding: utf-8 -*-
# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Watermark targets that come from outside the watermark table, and the source's rules for them.
Private to this collection.

``lookback`` asks the ClickHouse source (runbook Scenario 3 step 3, done with a real
pair); ``cold_tier`` asks the Iceberg table what it really holds. Both hand a
``Watermark`` per table to ``watermark_reset_run.run_reset(targets=...)``. The source check
refuses any target past the source's greatest pair (the offload would skip rows).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime

from ansible_collections.k2.iceberg_offload.plugins.module_utils.clickhouse import (
    EPOCH, ClickHouseError, ClickHouseInputError, NoSourceRowsError)
from ansible_collections.k2.iceberg_offload.plugins.module_utils.watermark import (
    WatermarkError, format_timestamp, pair_dict, parse_duration)

EXTERNAL_STRATEGIES = ("lookback", "cold_tier")


# -- the source's rules (ClickHouse): the lookback pair, the greatest pair, never past it ----------------
def lookback_cutoff(now, lookback_seconds):
    """``now - lookback`` as a naive UTC datetime, whole seconds (ClickHouse's resolution)."""
    cutoff = now - datetime.timedelta(seconds=lookback_seconds)
    return cutoff.replace(microsecond=0)


def lookback_watermark(client, table, lookback_seconds=86400, now=None,
                       ts_col="exchange_timestamp", seq_col="sequence_number"):
    """The runbook's initialisation done right: the greatest pair strictly before ``now - lookback``.

    ``now`` defaults to the ClickHouse server's clock (as the runbook's ``now()``).
    Returns ``(Watermark, cutoff)``. Raises ``NoSourceRowsError`` when the source has
    no row before the cutoff: the runbook's pipeline would insert sequence 0 (or NULL)
    there and re-offload everything.
    """
    if now is None:
        now = client.server_info()["now"]
    try:
        cutoff = lookback_cutoff(now, lookback_seconds)
    except OverflowError:
        cutoff = None
    if cutoff is None or cutoff < EPOCH:
        raise ClickHouseInputError(
            "lookback %ds reaches before 1970 (the server's now is %s); ClickHouse DateTime starts at 1970, so "
            "there is no source row to take a watermark from. Use a shorter lookback, strategy=cold_tier or an "
            "explicit pair" % (lookback_seconds, format_timestamp(now)))
    before = client.before_cutoff(table, cutoff, ts_col, seq_col)
    if before["max_pair"] is None:
        raise NoSourceRowsError(
            "source table %s has no row before %s (now - %ds); refusing to invent a watermark. "
            "Use a longer lookback, the cold_tier strategy, or an explicit pair"
            % (table, format_timestamp(cutoff), lookback_seconds))
    return before["max_pair"], cutoff


def source_greatest_pair(client, table, ts_col="exchange_timestamp", seq_col="sequence_number"):
    """The greatest ``(timestamp, sequence)`` pair in the source table, or None when it is empty."""
    return client.summary(table, ts_col, seq_col)["max_pair"]


def check_not_past_source(target, source_greatest, table="", allow=False):
    """Raise WatermarkError when ``target`` is past the source's greatest pair.

    A watermark past every source row makes the offload skip whatever arrives between
    the two pairs. An empty source (``source_greatest`` None) makes any target past it.
    ``allow=True`` turns the check off (the caller says so explicitly).
    """
    if allow:
        return
    if source_greatest is None:
        raise WatermarkError(
            "source table %s is empty; a watermark %s would skip the first rows that arrive. "
            "Pass the explicit override to set it anyway" % (table, target))
    if tuple(target) > tuple(source_greatest):
        raise WatermarkError(
            "watermark %s is past the greatest pair in source table %s %s; the offload would skip "
            "rows. Pass the explicit override to set it anyway" % (target, table, source_greatest))


class SourceError(Exception):
    """A target could not be computed, or was refused; nothing has been written."""


def format_per_table(template, table, option):
    """``cold.{table}`` -> ``cold.bronze_trades_binance``; a template without {table} is used as is."""
    try:
        return template.format(table=table)
    except (KeyError, IndexError, ValueError):
        raise SourceError("%s %r may only use the placeholder {table}" % (option, template))


def lookback_targets(client, names, lookback, ts_col, seq_col):
    """{table: Watermark}, {table: info}: the greatest real pair strictly before ``now - lookback``."""
    try:
        seconds = int(parse_duration(lookback, "lookback"))
    except WatermarkError as e:
        raise SourceError(str(e))
    targets, info = {}, {}
    for name in names:
        try:
            pair, cutoff = lookback_watermark(client, name, seconds, ts_col=ts_col, seq_col=seq_col)
        except (ClickHouseError, ClickHouseInputError) as e:
            raise SourceError(str(e))
        targets[name] = pair
        info[name] = {"strategy": "lookback", "lookback_seconds": seconds,
                      "cutoff": format_timestamp(cutoff), "pair": pair_dict(pair)}
    return targets, info


def cold_tier_targets(params, names, cold_table, ts_col, seq_col):
    """{table: Watermark}, {table: info}: the greatest pair the cold tier really holds."""
    from ansible_collections.k2.iceberg_offload.plugins.module_utils.iceberg import IcebergError, open_table_from_params
    from ansible_collections.k2.iceberg_offload.plugins.module_utils.iceberg_scan import cold_tier_max_pair
    targets, info = {}, {}
    if params.get("engine") == "spark":
        return _cold_tier_targets_spark(params, names, cold_table, ts_col, seq_col)
    for name in names:
        identifier = format_per_table(cold_table, name, "cold_table")
        location = params.get("iceberg_table_location")
        if location:
            location = format_per_table(location, name, "iceberg_table_location")
        try:
            table = open_table_from_params(params, identifier=identifier, table_location=location)
            pair = cold_tier_max_pair(table, ts_col=ts_col, seq_col=seq_col)
        except IcebergError as e:
            raise SourceError(str(e))
        if pair is None:
            raise SourceError(
                "cold tier %s holds no rows, so it cannot say where %s's watermark is; use strategy=lookback "
                "(if the cold tier is really empty) or strategy=pair" % (location or identifier, name))
        snapshot = table.current_snapshot()
        targets[name] = pair
        info[name] = {"strategy": "cold_tier", "cold_table": location or identifier, "pair": pair_dict(pair),
                      "snapshot_id": snapshot.snapshot_id if snapshot is not None else None}
    return targets, info


def _cold_tier_targets_spark(params, names, cold_table, ts_col, seq_col):
    """cold_tier_targets with the greatest pair found by a Spark job (module_utils/iceberg_spark.py)."""
    from ansible_collections.k2.iceberg_offload.plugins.module_utils.iceberg import IcebergError
    from ansible_collections.k2.iceberg_offload.plugins.module_utils.iceberg_spark import cold_tier_max_pair
    targets, info = {}, {}
    for name in names:
        identifier = format_per_table(cold_table, name, "cold_table")
        try:
            pair, snapshot_id = cold_tier_max_pair(params, identifier, ts_col=ts_col, seq_col=seq_col)
        except IcebergError as e:
            raise SourceError(str(e))
        if pair is None:
            raise SourceError(
                "cold tier %s holds no rows, so it cannot say where %s's watermark is; use strategy=lookback "
                "(if the cold tier is really empty) or strategy=pair" % (identifier, name))
        targets[name] = pair
        info[name] = {"strategy": "cold_tier", "cold_table": identifier, "pair": pair_dict(pair),
                      "snapshot_id": snapshot_id, "engine": "spark"}
    return targets, info


class SourceCheck(object):
    """Refuses targets past the source's greatest pair (``allow`` turns that off)."""

    def __init__(self, client, ts_col, seq_col, allow=False):
        self.client = client
        self.ts_col = ts_col
        self.seq_col = seq_col
        self.allow = allow
        self.greatest = {}

    def __call__(self, name, target):
        if name not in self.greatest:
            try:
                self.greatest[name] = source_greatest_pair(self.client, name, self.ts_col, self.seq_col)
            except (ClickHouseError, ClickHouseInputError) as e:
                raise SourceError("cannot check the target against the source (set allow_past_source=true "
                                  "to skip this check): %s" % e)
        try:
            check_not_past_source(target, self.greatest[name], table=name, allow=self.allow)
        except WatermarkError as e:
            raise SourceError(str(e).replace("Pass the explicit override", "Set allow_past_source=true"))

    def info(self, name):
        if name not in self.greatest:
            return None
        return pair_dict(self.greatest[name])
