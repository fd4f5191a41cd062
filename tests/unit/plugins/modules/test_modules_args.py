# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Argument handling of the modules, without a server (the connection is never reached)."""
import contextlib
import json
from unittest import mock

import pytest

from ansible.module_utils import basic

try:
    from ansible.module_utils.testing import patch_module_args
except ImportError:  # ansible-core before 2.19 (the floor, 2.17): the module reads basic._ANSIBLE_ARGS
    @contextlib.contextmanager
    def patch_module_args(args=None):
        with mock.patch.object(basic, "_ANSIBLE_ARGS", json.dumps({"ANSIBLE_MODULE_ARGS": args or {}}).encode()):
            yield

from ansible_collections.k2.iceberg_offload.plugins.module_utils import postgres as pg
from ansible_collections.k2.iceberg_offload.plugins.modules import (
    watermark_cleanup, watermark_info, watermark_reset)


def run(module, args, capsys):
    with patch_module_args(args):
        with pytest.raises(SystemExit):
            module.main()
    return json.loads(capsys.readouterr().out)


@pytest.fixture
def no_connect(monkeypatch):
    """Fail the test if a module tries to connect."""
    def boom(*a, **k):
        raise AssertionError("the module tried to connect")
    monkeypatch.setattr(pg.psycopg2, "connect", boom)


def test_cleanup_needs_a_rule(capsys, no_connect):
    out = run(watermark_cleanup, {"login_host": "127.0.0.1"}, capsys)
    assert out["failed"] and "say what to delete" in out["msg"]


def test_cleanup_refuses_hostile_watermark_table_before_connecting(capsys, no_connect):
    out = run(watermark_cleanup, {"keep": 10, "watermark_table": "x; DROP TABLE y"}, capsys)
    assert out["failed"] and "not a valid table name" in out["msg"]


def test_reset_refuses_hostile_audit_and_backup_tables(capsys, no_connect):
    out = run(watermark_reset, {"audit_table": "a\"b"}, capsys)
    assert out["failed"] and "audit_table" in out["msg"]
    out = run(watermark_reset, {"backup_table": "s.t.u"}, capsys)
    assert out["failed"] and "backup_table" in out["msg"]


def test_reset_pair_needs_both_values(capsys, no_connect):
    out = run(watermark_reset, {"tables": ["b"], "strategy": "pair", "max_timestamp": "2026-02-12T10:00:00Z"}, capsys)
    assert out["failed"] and "sequence_number" in out["msg"]


def test_reset_rejects_non_integer_sequence(capsys, no_connect):
    out = run(watermark_reset, {"tables": ["b"], "strategy": "pair", "max_timestamp": "2026-02-12T10:00:00Z",
                                "sequence_number": "12abc"}, capsys)
    assert out["failed"] and "sequence_number" in out["msg"]


def test_reset_strategy_choices_are_the_registered_ones(capsys, no_connect):
    out = run(watermark_reset, {"tables": ["b"], "strategy": "bogus"}, capsys)
    assert out["failed"] and "cold_tier, lookback, pair, safe_point, shift_by" in out["msg"]


def test_reset_cold_tier_needs_the_cold_tier(capsys, no_connect):
    out = run(watermark_reset, {"tables": ["b"], "strategy": "cold_tier"}, capsys)
    assert out["failed"] and "iceberg_catalog_properties" in out["msg"]


def test_reset_lookback_needs_tables_and_clickhouse(capsys, no_connect):
    out = run(watermark_reset, {"strategy": "lookback"}, capsys)
    assert out["failed"] and "tables" in out["msg"] and "clickhouse_url" in out["msg"]


def test_info_refuses_non_positive_thresholds(capsys, no_connect):
    out = run(watermark_info, {"stale_after": 0}, capsys)
    assert out["failed"] and "stale_after" in out["msg"]


def test_missing_psycopg2_says_what_to_install(capsys, monkeypatch):
    monkeypatch.setattr(pg, "HAS_PSYCOPG2", False)
    out = run(watermark_info, {}, capsys)
    assert out["failed"] and "psycopg2-binary" in out["msg"]


def test_env_fallbacks_reach_the_connection(capsys, monkeypatch):
    seen = {}

    def fake_connect(**kw):
        seen.update(kw)
        raise pg.psycopg2.OperationalError("could not connect to server: Connection refused")
    monkeypatch.setattr(pg.psycopg2, "connect", fake_connect)
    monkeypatch.setenv("PGHOST", "127.0.0.1")
    monkeypatch.setenv("PGPORT", "15432")
    monkeypatch.setenv("PGUSER", "prefect")
    monkeypatch.setenv("PGPASSWORD", "s3cret")
    monkeypatch.setenv("PGDATABASE", "prefect")
    out = run(watermark_info, {}, capsys)
    assert seen["host"] == "127.0.0.1" and int(seen["port"]) == 15432 and seen["user"] == "prefect"
    assert seen["password"] == "s3cret" and seen["dbname"] == "prefect"
    assert out["failed"] and "Scenario 2" in out["msg"] and "s3cret" not in json.dumps(out)
