# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Table-name validation, connection keyword arguments, the shared argument spec."""
import pytest

from ansible_collections.k2.iceberg_offload.plugins.module_utils import postgres as pg


@pytest.mark.parametrize("name,parts", [
    ("offload_watermarks", ("offload_watermarks",)),
    ("public.offload_watermarks", ("public", "offload_watermarks")),
    ("_t1", ("_t1",)),
    # unquoted names fold to lower case, as PostgreSQL folds them
    ("A" * 63, ("a" * 63,)),
    ("S." + "t" * 63, ("s", "t" * 63)),
    ("Offload_Watermarks", ("offload_watermarks",)),
    ("Public.OFFLOAD_WATERMARKS", ("public", "offload_watermarks")),
    # a double-quoted part is taken exactly
    ('"Offload_Watermarks"', ("Offload_Watermarks",)),
    ('"offload_watermarks"', ("offload_watermarks",)),
    ('K2."Tbl"', ("k2", "Tbl")),
    ('"My-Schema"."T$1"', ("My-Schema", "T$1")),
])
def test_valid_table_names(name, parts):
    assert pg.parse_table_name(name) == parts


@pytest.mark.parametrize("parts,shown", [
    (("offload_watermarks",), "offload_watermarks"),
    (("k2", "Tbl"), 'k2."Tbl"'),
    (("My-Schema", "t"), '"My-Schema".t'),
])
def test_display_name_quotes_what_needs_it(parts, shown):
    assert pg.display_name(parts) == shown
    assert pg.parse_table_name(shown) == parts


@pytest.mark.parametrize("value,ms", [(0, 1), (1, 1000), (10, 10000)])
def test_lock_timeout_zero_means_do_not_wait(value, ms):
    assert pg.parse_lock_timeout(value) == ms


@pytest.mark.parametrize("value", [-1, -10, True, "5", 10 ** 9])
def test_bad_lock_timeouts_are_refused(value):
    with pytest.raises(ValueError, match="lock_timeout"):
        pg.parse_lock_timeout(value)


HOSTILE = [
    "", " ", "offload_watermarks; DROP TABLE offload_watermarks", "offload_watermarks--",
    "x' OR '1'='1", 'x"y', '""', '"a"b', '"a', 'a"', '"a b"', '"a;b"', '"a""b"', '"' + "t" * 64 + '"',
    '"café"', "a.b.c", ".t", "t.", "1table", "t" * 64,
    "café", "t\u200bx", "t x", "t\n", "t\x00", "public.*", "t;", "pg_catalog.pg_authid extra",
    "${x}", "a..b",
]


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_table_names_are_refused(name):
    with pytest.raises(pg.TableNameError) as e:
        pg.parse_table_name(name)
    assert "watermark_table" in str(e.value)


def test_non_string_table_name_refused():
    with pytest.raises(pg.TableNameError):
        pg.parse_table_name(None)


def test_long_name_is_truncated_in_message():
    with pytest.raises(pg.TableNameError) as e:
        pg.parse_table_name("x" * 5000)
    assert len(str(e.value)) < 600


def test_identifier_quotes_through_psycopg2():
    ident = pg.identifier(("public", "offload_watermarks"))
    assert ident.strings == ("public", "offload_watermarks")


def test_connection_kwargs_maps_and_omits_unset():
    kw = pg.connection_kwargs({"login_host": "127.0.0.1", "port": 15432, "login_db": "prefect",
                               "login_user": "prefect", "login_password": None, "ssl_mode": "prefer",
                               "ca_cert": None, "connect_timeout": 5}, "app")
    assert kw == {"host": "127.0.0.1", "port": 15432, "dbname": "prefect", "user": "prefect",
                  "sslmode": "prefer", "connect_timeout": 5, "application_name": "app"}


def test_argument_spec_has_libpq_env_fallbacks_and_no_log_password():
    spec = pg.postgres_common_argument_spec()
    assert spec["login_password"]["no_log"] is True
    envs = {k: v["fallback"][1][0] for k, v in spec.items() if "fallback" in v}
    assert envs["login_host"] == "PGHOST" and envs["login_password"] == "PGPASSWORD"
    assert envs["port"] == "PGPORT" and envs["login_db"] == "PGDATABASE"
    # connection options only, as community.postgresql keeps it; the table is an option of its own
    assert "watermark_table" not in spec
    assert pg.watermark_table_argument_spec()["watermark_table"]["default"] == "offload_watermarks"


def test_error_text_includes_sqlstate():
    class E(Exception):
        pgerror = "ERROR:  permission denied for table offload_watermarks\n"
        pgcode = "42501"
    assert pg.error_text(E()) == "ERROR: permission denied for table offload_watermarks (SQLSTATE 42501)"
