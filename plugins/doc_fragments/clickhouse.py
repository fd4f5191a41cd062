# -*- coding: utf-8 -*-
# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):

    # The connection options of module_utils/clickhouse.py: clickhouse_argument_spec().
    DOCUMENTATION = r"""
options:
  clickhouse_url:
    description:
      - URL of ClickHouse's HTTP interface (not the native TCP port 9000).
      - Falls back to the E(CLICKHOUSE_URL) environment variable.
      - The lab publishes it as V(http://127.0.0.1:18123).
      - "Credentials in the URL (C(http://user:password@host:8123/), percent-encoded) are used as the user
        and password, sent in the C(X-ClickHouse-User/Key) headers only; when O(clickhouse_user) or
        O(clickhouse_password) say something else, the module refuses. The password is masked in every
        output; prefer O(clickhouse_password), which is never logged."
    type: str
    default: http://127.0.0.1:8123
  clickhouse_user:
    description:
      - ClickHouse user. A read-only user (profile with C(readonly=1)) is enough; nothing is written.
      - Falls back to E(CLICKHOUSE_USER).
    type: str
    default: default
  clickhouse_password:
    description:
      - Password of O(clickhouse_user), sent in the C(X-ClickHouse-Key) header, never in the URL (nor as
        HTTP basic auth, also not from C(~/.netrc)).
      - Falls back to E(CLICKHOUSE_PASSWORD).
    type: str
    default: ''
  clickhouse_database:
    description:
      - Database that holds the source tables. A table given as C(db.table) overrides it.
      - Falls back to E(CLICKHOUSE_DATABASE).
    type: str
    default: default
  clickhouse_timeout:
    description: Seconds to wait for a query's answer.
    type: float
    default: 60
  clickhouse_connect_timeout:
    description: Seconds to wait for the TCP (and TLS) connection.
    type: float
    default: 5
  clickhouse_validate_certs:
    description: Verify the server's TLS certificate when O(clickhouse_url) is C(https://).
    type: bool
    default: true
  clickhouse_ca_cert:
    description: CA bundle (PEM) to verify the server's certificate with, instead of the system's.
    type: path
    aliases: [clickhouse_ca_path]
requirements:
  - requests
notes:
  - ClickHouse 18.16 has no query parameters. Table and column names must be plain identifiers
    (letters, digits, C(_)), and values reach a query only as typed literals (C(toDateTime(<unix
    seconds>)), C(toUInt64(<n>)), escaped strings), so no input can change a query's meaning.
  - Timestamps cross the wire as Unix seconds, so neither the server's nor the column's time zone
    shifts a watermark. Results are naive UTC (C(YYYY-MM-DD HH:MM:SS)).
"""
