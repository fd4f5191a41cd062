# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""What may be written and printed: secrets come from the argument spec's no_log flags (any option,
any depth, whatever its name), URL passwords and secret-named property keys."""
import pytest

from ansible_collections.k2.iceberg_offload.plugins.module_utils import redaction as r
from ansible_collections.k2.iceberg_offload.plugins.module_utils import watermark_ops as ops
from ansible_collections.k2.iceberg_offload.plugins.modules import watermark_reset

SPEC = watermark_reset.argument_spec()


def test_no_log_options_come_from_the_spec_not_a_list():
    assert {"login_password", "clickhouse_password", "iceberg_catalog_secrets"} <= r.no_log_options(SPEC)
    future = dict(SPEC, vault_token=dict(type="str", no_log=True),
                  sink=dict(type="dict", options=dict(host=dict(type="str"), key=dict(type="str", no_log=True))))
    assert {"vault_token", "sink.key"} <= r.no_log_options(future)
    params = {"vault_token": "tok-1", "sink": {"host": "h", "key": "sub-2"}, "login_user": "prefect", "keep": None}
    out = r.audit_parameters(params, future)
    assert out == {"sink": {"host": "h"}, "login_user": "prefect"}


def test_audit_drops_every_secret_option_and_masks_secret_values_elsewhere():
    params = {"login_password": "pg-1", "clickhouse_password": "ch-2", "login_user": "prefect",
              "iceberg_catalog_secrets": {"token": "ice-3"},
              "iceberg_catalog_properties": {"type": "rest", "uri": "https://u:url-4@cat/", "token": "prop-5",
                                             "warehouse": "s3://w"},
              "clickhouse_url": "http://reader:url-6@ch:8123/", "cold_table": "cold.{table} ch-2"}
    out = ops.audit_params(params, SPEC, {"ch-2"})
    text = repr(out)
    for secret in ("pg-1", "ch-2", "ice-3", "url-4", "prop-5", "url-6"):
        assert secret not in text
    assert "login_password" not in out and "clickhouse_password" not in out and "iceberg_catalog_secrets" not in out
    assert out["clickhouse_url"] == "http://reader:********@ch:8123/"
    assert out["iceberg_catalog_properties"]["token"] == "********"
    assert out["iceberg_catalog_properties"]["warehouse"] == "s3://w"
    assert out["login_user"] == "prefect"


def test_default_audit_spec_is_the_postgres_options():
    assert ops.audit_params({"login_password": "s3cret", "login_user": "prefect", "keep": None,
                             "mode": "replace"}) == {"login_user": "prefect", "mode": "replace"}


def test_secret_values_cover_env_like_values_urls_and_secret_keys():
    params = {"login_password": "pg-1", "clickhouse_url": "http://u:p%40ss@h/",
              "iceberg_catalog_properties": {"s3.secret-access-key": "k-2", "s3.region": "eu"},
              "iceberg_catalog_secrets": {"nested": {"deep": "d-3"}}, "tables": ["x"]}
    found = r.secret_values(SPEC, params)
    assert {"pg-1", "p%40ss", "p@ss", "k-2", "d-3"} <= found
    assert "eu" not in found and "x" not in found


@pytest.mark.parametrize("text, shown", [
    ("http://user:secret@host:8123/", "http://user:********@host:8123/"),
    ("see postgresql+psycopg2://a:b@127.0.0.1:1/db now", "see postgresql+psycopg2://a:********@127.0.0.1:1/db now"),
    ("http://user@host/", "http://user@host/"),
    ("no url here: a@b", "no url here: a@b"),
])
def test_redact_urls(text, shown):
    assert r.redact_urls(text) == shown


class FakeModule(object):
    def __init__(self, params):
        self.params = params
        self.argument_spec = SPEC
        self.no_log_values = set()


def test_harden_adds_what_ansible_would_not_mask():
    m = r.harden(FakeModule({"clickhouse_url": "http://u:urlpw@h/", "iceberg_catalog_properties": {"token": "t-1"},
                             "login_password": "pg"}))
    assert {"urlpw", "t-1", "pg"} <= m.no_log_values


def test_only_property_dictionaries_are_read_by_key_name():
    spec = {"watermarks": {"type": "dict"}, "iceberg_catalog_properties": {"type": "dict"}}
    found = r.secret_values(spec, {"watermarks": {"token_trades": {"sequence_number": 500}},
                                   "iceberg_catalog_properties": {"token": "t-1"}})
    assert found == {"t-1"}
