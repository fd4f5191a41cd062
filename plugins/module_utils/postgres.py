# -*- coding: utf-8 -*-
# Copyright: K2 Platform Engineering
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""PostgreSQL connection for the k2.iceberg_offload modules.

Private to this collection: the functions may change without notice.

Connection options default to the libpq environment (PGHOST, PGPORT, PGDATABASE,
PGUSER, PGPASSWORD, PGSSLMODE, PGSSLROOTCERT, PGCONNECT_TIMEOUT); a password left
unset is looked up by libpq in ~/.pgpass (or PGPASSFILE) as usual.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re
import traceback

from ansible.module_utils.basic import env_fallback, missing_required_lib

PSYCOPG2_IMPORT_ERROR = None
try:
    import psycopg2
    import psycopg2.extensions
    from psycopg2 import sql as pg_sql
    HAS_PSYCOPG2 = True
except ImportError:
    psycopg2 = None
    pg_sql = None
    HAS_PSYCOPG2 = False
    PSYCOPG2_IMPORT_ERROR = traceback.format_exc()

SSL_MODES = ["allow", "disable", "prefer", "require", "verify-ca", "verify-full"]

# An unquoted PostgreSQL identifier, ASCII only, at most 63 bytes (NAMEDATALEN-1).
# Quotes, dots inside a part, spaces, unicode and SQL are refused rather than quoted:
# a watermark table name never needs them, and refusing is the safer answer.
_IDENT_RE = re.compile(r"\A[A-Za-z_][A-Za-z0-9_]{0,62}\Z")


class TableNameError(ValueError):
    pass


def postgres_common_argument_spec():
    """Connection options shared by every module (documented in doc_fragments/postgres.py)."""
    return dict(
        login_host=dict(type="str", aliases=["host"], fallback=(env_fallback, ["PGHOST"])),
        port=dict(type="int", default=5432, aliases=["login_port"], fallback=(env_fallback, ["PGPORT"])),
        login_db=dict(type="str", aliases=["db", "database"], fallback=(env_fallback, ["PGDATABASE"])),
        login_user=dict(type="str", aliases=["user"], fallback=(env_fallback, ["PGUSER"])),
        login_password=dict(type="str", no_log=True, fallback=(env_fallback, ["PGPASSWORD"])),
        ssl_mode=dict(type="str", choices=SSL_MODES, default="prefer",
                      fallback=(env_fallback, ["PGSSLMODE"])),
        ca_cert=dict(type="path", aliases=["ssl_rootcert", "sslrootcert"],
                     fallback=(env_fallback, ["PGSSLROOTCERT"])),
        connect_timeout=dict(type="int", default=10, fallback=(env_fallback, ["PGCONNECT_TIMEOUT"])),
        watermark_table=dict(type="str", default="offload_watermarks"),
    )


def watermark_write_argument_spec():
    """Options of the modules that change the watermark table (doc fragment postgres.WRITE)."""
    return dict(
        audit_table=dict(type="str", default="offload_watermark_audit"),
        lock_timeout=dict(type="int", default=10),
        backup=dict(type="str", choices=["table", "file", "none"], default="table"),
        backup_table=dict(type="str"),
        backup_dir=dict(type="path", default="/tmp"),
    )


def ensure_required_libs(module):
    if not HAS_PSYCOPG2:
        module.fail_json(msg=missing_required_lib("psycopg2-binary"), exception=PSYCOPG2_IMPORT_ERROR)


def connection_kwargs(params, application_name="k2.iceberg_offload"):
    """psycopg2.connect() keyword arguments from module parameters; unset ones are left to libpq."""
    mapping = {"login_host": "host", "port": "port", "login_db": "dbname", "login_user": "user",
               "login_password": "password", "ssl_mode": "sslmode", "ca_cert": "sslrootcert",
               "connect_timeout": "connect_timeout"}
    kw = {}
    for opt, key in mapping.items():
        value = params.get(opt)
        if value is not None and value != "":
            kw[key] = value
    kw["application_name"] = application_name
    return kw


def describe_target(params):
    host = params.get("login_host") or "(libpq default socket)"
    return "%s:%s database %s as %s" % (host, params.get("port"), params.get("login_db") or "(default)",
                                        params.get("login_user") or "(default user)")


def connect_to_db(module, params=None, application_name=None):
    """Return ``(connection, None)`` or ``(None, message)``; the message says what to check next."""
    params = params if params is not None else module.params
    app = application_name or "k2.iceberg_offload"
    try:
        conn = psycopg2.connect(**connection_kwargs(params, app))
    except psycopg2.OperationalError as e:
        text = str(e).strip()
        if "password authentication failed" in text or "no password supplied" in text:
            hint = "check login_user / login_password (or PGPASSWORD / ~/.pgpass)"
        elif "timeout expired" in text or "Connection refused" in text or "could not connect" in text \
                or "could not translate host name" in text:
            hint = ("is PostgreSQL running and reachable (runbook Scenario 2: docker ps | grep prefect-db, "
                    "docker start k2-prefect-db)?")
        elif "does not exist" in text:
            hint = "check login_db and login_user"
        else:
            hint = "check the connection options"
        return None, "Cannot connect to PostgreSQL at %s: %s; %s" % (describe_target(params), text, hint)
    return conn, None


def parse_table_name(name, option="watermark_table"):
    """``'t'`` or ``'schema.t'`` -> tuple of parts; anything else raises TableNameError."""
    if not isinstance(name, str) or not name:
        raise TableNameError("%s must be a table name such as offload_watermarks or "
                             "public.offload_watermarks, got %r" % (option, name))
    parts = name.split(".")
    if len(parts) > 2 or not all(_IDENT_RE.match(p) for p in parts):
        raise TableNameError(
            "%s %r is not a valid table name: use letters, digits and underscores (ASCII, at most "
            "63 characters, not starting with a digit), optionally qualified by a schema as schema.table"
            % (option, name[:100] + ("..." if len(name) > 100 else "")))
    return tuple(parts)


def identifier(parts):
    """A psycopg2.sql.Identifier for a parsed (optionally schema-qualified) name."""
    return pg_sql.Identifier(*parts)


def error_text(exc):
    """One-line text of a psycopg2 error, with the SQLSTATE when there is one."""
    text = (getattr(exc, "pgerror", None) or str(exc) or exc.__class__.__name__).strip()
    text = " ".join(text.split())
    code = getattr(exc, "pgcode", None)
    return "%s (SQLSTATE %s)" % (text, code) if code else text
