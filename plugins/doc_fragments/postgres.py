# -*- coding: utf-8 -*-
# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):

    # Connection to the PostgreSQL database that holds the watermark table.
    DOCUMENTATION = r"""
options:
  login_host:
    description:
      - Host running PostgreSQL (the runbook's C(k2-prefect-db), published on the Docker host).
      - Defaults to the E(PGHOST) environment variable, then to the libpq default (local socket).
    type: str
    aliases: [host]
  port:
    description:
      - PostgreSQL port. Defaults to E(PGPORT), then C(5432).
    type: int
    default: 5432
    aliases: [login_port]
  login_db:
    description:
      - Database holding the watermark table (the runbook's C(prefect)).
      - Defaults to E(PGDATABASE), then to the libpq default (the user name).
    type: str
    aliases: [db, database]
  login_user:
    description:
      - PostgreSQL role to connect as (the runbook's C(prefect)). Defaults to E(PGUSER).
    type: str
    aliases: [user]
  login_password:
    description:
      - Password of O(login_user). Defaults to E(PGPASSWORD); when unset, libpq looks in
        C(~/.pgpass) (or E(PGPASSFILE)).
    type: str
  ssl_mode:
    description:
      - libpq C(sslmode). Defaults to E(PGSSLMODE), then C(prefer).
    type: str
    choices: [allow, disable, prefer, require, verify-ca, verify-full]
    default: prefer
  ca_cert:
    description:
      - CA certificate file used to verify the server (libpq C(sslrootcert)). Defaults to E(PGSSLROOTCERT).
    type: path
    aliases: [ssl_rootcert, sslrootcert]
  connect_timeout:
    description:
      - Seconds to wait for the connection. Defaults to E(PGCONNECT_TIMEOUT), then C(10).
    type: int
    default: 10
requirements:
  - psycopg2 (C(psycopg2-binary) from PyPI) on the host that runs the module
notes:
  - The watermark is the pair (C(max_timestamp), C(sequence_number)), always compared as a pair
    lexicographically. C(max_timestamp) is stored as naive UTC in a C(TIMESTAMP) column; input timestamps are
    ISO 8601 with or without an offset (without one, UTC is assumed) and are converted to UTC.
  - The latest entry of a table is the first by C(created_at DESC, id DESC), which is what the scheduler's
    C(ORDER BY created_at DESC LIMIT 1) reads; C(id) breaks ties between rows written in one transaction.
  - No secret (an option marked no_log, its environment fallback, a URL password, a secret-named key of a
    property dictionary) appears in results, messages, warnings, audit rows, backups or files.
"""

    # watermark_table, for every module that reads or writes it (not a connection option).
    WATERMARK_TABLE = r"""
options:
  watermark_table:
    description:
      - The watermark table, optionally schema-qualified (C(schema.table)).
      - Resolved the way PostgreSQL resolves names in SQL. An unquoted part is ASCII letters, digits and
        underscores (at most 63 characters, not starting with a digit) and is folded to lower case, so
        C(Offload_Watermarks) is the scheduler's C(offload_watermarks). A double-quoted part
        (C("Offload_Watermarks"), C(k2."Tbl")) is taken exactly, for a case-sensitive table; it may hold
        letters, digits, C(_), C($) and C(-). Anything else is refused rather than quoted.
    type: str
    default: offload_watermarks
"""

    # lock_timeout, for every module that reads or writes the watermark table.
    LOCK_TIMEOUT = r"""
options:
  lock_timeout:
    description:
      - Seconds any statement of the run may wait for a lock (a table lock, a row lock, DDL, the advisory
        lock that keeps two recovery runs apart). When the wait reaches it, the run fails, names the sessions
        holding the lock and writes nothing.
      - V(0) means do not wait at all (C(NOWAIT)); it does not mean PostgreSQL's wait forever. Negative
        values are refused.
    type: int
    default: 10
"""

    # Options of the modules that change the watermark table.
    WRITE = r"""
options:
  audit_table:
    description:
      - Table receiving one audit row per change (when, database user, client address and host, module,
        parameters, before, after, rows affected, backup), written in the same transaction as the change.
        Created on the first write. Optionally schema-qualified; resolved like O(watermark_table).
      - The parameters recorded leave out every option marked no_log (whatever its name or depth, also when
        its value came from the environment) and mask any secret value inside the others (a URL password,
        a secret-named key of C(iceberg_catalog_properties)).
    type: str
    default: offload_watermark_audit
  lock_timeout:
    description:
      - Seconds any statement of the run may wait for a lock; for the advisory lock that keeps two recovery
        runs apart and the table lock that follows it, one budget of that many seconds in all. When the wait
        reaches it, the run fails, names the sessions holding the lock and writes nothing; the scheduler's
        C(INSERT) queued behind the run's lock request proceeds.
      - V(0) means do not wait at all (C(LOCK ... NOWAIT), the smallest PostgreSQL lock_timeout elsewhere);
        it does not mean PostgreSQL's wait forever. Negative values are refused.
    type: int
    default: 10
  backup:
    description:
      - Where the rows are saved before they are deleted.
      - V(table) creates O(backup_table) with a copy of those rows, in the same transaction.
      - V(file) writes them as CSV with a header to a file in O(backup_dir) on the host running the module
        (restore with C(\copy offload_watermarks FROM 'file' WITH (FORMAT csv, HEADER true))).
      - V(none) deletes without a copy.
    type: str
    choices: [table, file, none]
    default: table
  backup_table:
    description:
      - Name of the backup table for O(backup=table), optionally schema-qualified and resolved like
        O(watermark_table); it must not exist yet.
      - Default C(<watermark table>_backup_<YYYYmmdd_HHMMSS UTC>) in the watermark table's schema, with C(_2),
        C(_3), ... appended when another run took that name within the same second.
    type: str
  backup_dir:
    description:
      - Directory for O(backup=file); the file is C(watermarks_backup_<UTC time>.csv), as in the runbook
        (C(_2), C(_3), ... before C(.csv) when that name is taken).
    type: path
    default: /tmp
"""
