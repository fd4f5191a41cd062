"""Table-name validation, connection keyword arguments, the shared argument spec."""
import pytest

from ansible_collections.k2.iceberg_offload.plugins.module_utils import postgres as pg


@pytest.mark.parametrize("name,parts", [
    ("offload_watermarks", ("offload_watermarks",)),
    ("public.offload_watermarks", ("public", "offload_watermarks")),
    ("_t1", ("_t1",)),
    ("A" * 63, ("A" * 63,)),
    ("S." + "t" * 63, ("S", "t" * 63)),
])
def test_valid_table_names(name, parts):
    assert pg.parse_table_name(name) == parts


HOSTILE = [
    "", " ", "offload_watermarks; DROP TABLE offload_watermarks", "offload_watermarks--",
    "x' OR '1'='1", 'x"y', '"offload_watermarks"', "a.b.c", ".t", "t.", "1table", "t" * 64,
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
    assert spec["watermark_table"]["default"] == "offload_watermarks"


def test_error_text_includes_sqlstate():
    class E(Exception):
        pgerror = "ERROR:  permission denied for table offload_watermarks\n"
        pgcode = "42501"
    assert pg.error_text(E()) == "ERROR: permission denied for table offload_watermarks (SQLSTATE 42501)"
