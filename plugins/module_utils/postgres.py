# -*- coding: utf-8 -*-
# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
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

# Table names are resolved as PostgreSQL resolves them: an unquoted part is an ASCII identifier
# folded to lower case; a double-quoted part ("Offload_Watermarks") is taken exactly as written,
# for the rare case-sensitive table. Each part is at most 63 bytes (NAMEDATALEN-1). Spaces,
# semicolons, unicode and quotes inside a part are refused rather than quoted: a watermark table
# name never needs them, and refusing is the safer answer.
_UNQUOTED_RE = re.compile(r"\A[A-Za-z_][A-Za-z0-9_]{0,62}\Z")
_QUOTED_RE = re.compile(r"\A[A-Za-z0-9_$\-]{1,63}\Z")
_PLAIN_RE = re.compile(r"\A[a-z_][a-z0-9_]*\Z")

# lock_timeout is given in seconds; PostgreSQL's setting is an int of milliseconds.
MAX_LOCK_TIMEOUT = 2147483


class TableNameError(ValueError):
    pass


def postgres_common_argument_spec():
    """Connection options shared by every PostgreSQL module (documented in doc_fragments/postgres.py)."""
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
    )


def watermark_table_argument_spec():
    """``watermark_table``, for the modules that read or write it (doc fragment postgres.WATERMARK_TABLE);
    the connection spec above is connection options only, as community.postgresql keeps it."""
    return dict(watermark_table=dict(type="str", default="offload_watermarks"))


def lock_timeout_argument_spec():
    """``lock_timeout`` (seconds; 0 = do not wait), shared by every module that reads or writes the table."""
    return dict(lock_timeout=dict(type="int", default=10))


def watermark_write_argument_spec():
    """Options of the modules that change the watermark table (doc fragment postgres.WRITE)."""
    return dict(
        audit_table=dict(type="str", default="offload_watermark_audit"),
        lock_timeout=lock_timeout_argument_spec()["lock_timeout"],
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


def _split_parts(name):
    """``a``, ``a.b``, ``"A"``, ``a."B"`` -> [(text, quoted)]; None when the quoting is malformed."""
    parts, i = [], 0
    while True:
        if name.startswith('"', i):
            end = name.find('"', i + 1)
            if end < 0:
                return None
            parts.append((name[i + 1:end], True))
            i = end + 1
        else:
            end = name.find(".", i)
            end = len(name) if end < 0 else end
            parts.append((name[i:end], False))
            i = end
        if i == len(name):
            return parts
        if name[i] != ".":
            return None
        i += 1


def parse_table_name(name, option="watermark_table"):
    """``'t'``, ``'schema.t'``, ``'"T"'`` or ``'schema."T"'`` -> tuple of the real name parts.

    Unquoted parts are folded to lower case, as PostgreSQL folds unquoted identifiers, so
    ``Offload_Watermarks`` is the scheduler's ``offload_watermarks``; a double-quoted part is
    kept exactly. Anything else raises TableNameError.
    """
    if not isinstance(name, str) or not name:
        raise TableNameError("%s must be a table name such as offload_watermarks or "
                             "public.offload_watermarks, got %r" % (option, name))
    split = _split_parts(name)
    valid = split is not None and 1 <= len(split) <= 2 and all(
        (_QUOTED_RE if quoted else _UNQUOTED_RE).match(text) for text, quoted in split)
    if not valid:
        raise TableNameError(
            "%s %r is not a valid table name: use letters, digits and underscores (ASCII, at most "
            "63 characters, not starting with a digit), optionally qualified by a schema as schema.table; "
            "unquoted names are folded to lower case as PostgreSQL does, and a double-quoted part "
            "(\"Offload_Watermarks\", letters, digits, _, $ and - only) names a case-sensitive table"
            % (option, name[:100] + ("..." if len(name) > 100 else "")))
    return tuple(text if quoted else text.lower() for text, quoted in split)


def display_name(parts):
    """The name as SQL would spell it: plain lower-case parts bare, others double-quoted."""
    return ".".join(p if _PLAIN_RE.match(p) else '"%s"' % p for p in parts)


def parse_lock_timeout(value):
    """Seconds (int) -> milliseconds for PostgreSQL's lock_timeout; 0 means do not wait.

    PostgreSQL's own 0 means wait forever, so 0 becomes the smallest wait there is (1 ms)
    and the LOCK statements add NOWAIT. Negative values are refused.
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < 0 or value > MAX_LOCK_TIMEOUT:
        raise ValueError("lock_timeout must be a whole number of seconds from 0 (do not wait) to %d, got %r"
                         % (MAX_LOCK_TIMEOUT, value))
    return max(1, value * 1000)


def identifier(parts):
    """A psycopg2.sql.Identifier for a parsed (optionally schema-qualified) name."""
    return pg_sql.Identifier(*parts)


def error_text(exc):
    """One-line text of a psycopg2 error, with the SQLSTATE when there is one."""
    text = (getattr(exc, "pgerror", None) or str(exc) or exc.__class__.__name__).strip()
    text = " ".join(text.split())
    code = getattr(exc, "pgcode", None)
    return "%s (SQLSTATE %s)" % (text, code) if code else text
