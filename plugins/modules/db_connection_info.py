#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: db_connection_info
short_description: Can this host reach the watermark database, and if not, why
version_added: 1.0.0
description:
  - Runbook Scenario 2 step 2, C(docker exec k2-spark-iceberg psql -h k2-prefect-db ... -c "\dt"), as a
    module. Run it where the scheduler connects from (the Spark host) and where the playbooks connect from.
  - Tells the causes apart in steps. Does the name resolve (a container cut off its network no longer
    resolves)? Does the port accept a TCP connection? Does a login succeed? If not, is the reason a full pool
    (C(too many clients)), authentication, a missing database, or something else?
  - Never fails because the database cannot be reached; that is its answer (RV(ok=false), RV(kind)).
  - Read only; the login runs C(SELECT 1) and disconnects.
author:
  - K2 Platform Engineering (@k2-platform)
extends_documentation_fragment:
  - k2.iceberg_offload.postgres
  - k2.iceberg_offload.attributes
  - k2.iceberg_offload.attributes.INFO_MODULE
"""

EXAMPLES = r"""
- name: Scenario 2 step 2 - can the Spark container reach k2-prefect-db?
  k2.iceberg_offload.db_connection_info:
    login_host: k2-prefect-db
    login_db: prefect
    login_user: prefect
    login_password: "{{ prefect_db_password }}"
    connect_timeout: 3
  delegate_to: k2-spark-iceberg
  register: from_spark

- name: Network partition (runbook Issue 2c)
  ansible.builtin.debug:
    msg: "k2-prefect-db does not resolve from the Spark host: {{ from_spark.error }}"
  when: from_spark.kind == 'dns'
"""

RETURN = r"""
ok:
  description: A login succeeded.
  returned: always
  type: bool
  sample: false
kind:
  description:
    - V(ok), V(dns) (the name does not resolve), V(refused) (nothing listens), V(timeout) (no answer),
      V(too_many_clients) (the pool is exhausted, runbook Issue 2b), V(authentication), V(database_missing),
      V(ssl), V(socket) (no host given and the local socket is absent), or V(other).
  returned: always
  type: str
  sample: too_many_clients
target:
  description: Host, port, database and user tried (no password).
  returned: always
  type: str
  sample: "k2-prefect-db:5432 database prefect as prefect"
addresses:
  description: What the host name resolved to; V(null) when it did not (or no host was given).
  returned: always
  type: list
  elements: str
  sample: ["172.18.0.2"]
tcp:
  description: Whether the port accepted a TCP connection, how long it took, and the error.
  returned: always
  type: dict
  sample: {ok: true, seconds: 0.001, error: null}
error:
  description: The first line of the failure, V(null) on success.
  returned: always
  type: str
  sample: "FATAL:  sorry, too many clients already"
seconds:
  description: Time the whole probe took.
  returned: always
  type: float
  sample: 0.021
server_version:
  description: The server's version after a successful login.
  returned: when ok
  type: str
  sample: "15.18"
"""

import socket
import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.k2.iceberg_offload.plugins.module_utils.postgres import (
    connection_kwargs, describe_target, ensure_required_libs, postgres_common_argument_spec, psycopg2)

# First match wins; the texts are libpq's and the server's.
_KINDS = (
    ("too_many_clients", ("too many clients", "remaining connection slots are reserved")),
    ("dns", ("could not translate host name", "Name or service not known", "Temporary failure in name resolution")),
    ("authentication", ("password authentication failed", "no password supplied", "authentication failed")),
    ("database_missing", ("does not exist",)),
    ("refused", ("Connection refused",)),
    ("timeout", ("timeout expired", "timed out", "No route to host")),
    ("ssl", ("SSL", "certificate")),
    ("socket", ("No such file or directory",)),
)


def error_kind(text):
    for kind, needles in _KINDS:
        if any(n in text for n in needles):
            return kind
    return "other"


def probe(params):
    started = time.monotonic()
    host = params.get("login_host")
    port = params.get("port") or 5432
    timeout = max(1, params.get("connect_timeout") or 10)
    out = {"ok": False, "kind": None, "target": describe_target(params), "addresses": None,
           "tcp": None, "error": None}
    if host and not host.startswith("/"):
        try:
            infos = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)
            out["addresses"] = sorted(set(i[4][0] for i in infos))
        except socket.gaierror as e:
            out.update(kind="dns", error="%s does not resolve: %s" % (host, e.strerror or e))
            out["seconds"] = round(time.monotonic() - started, 3)
            return out
        t0 = time.monotonic()
        try:
            sock = socket.create_connection((host, port), timeout=timeout)
            sock.close()
            out["tcp"] = {"ok": True, "seconds": round(time.monotonic() - t0, 3), "error": None}
        except socket.timeout:
            out["tcp"] = {"ok": False, "seconds": round(time.monotonic() - t0, 3), "error": "timed out"}
            out.update(kind="timeout", error="%s:%s did not answer within %d s" % (host, port, timeout))
        except (OSError, IOError) as e:
            out["tcp"] = {"ok": False, "seconds": round(time.monotonic() - t0, 3), "error": str(e)}
            out.update(kind=error_kind(str(e)) if "refused" not in str(e) else "refused",
                       error="%s:%s: %s" % (host, port, e))
        if out["kind"]:
            out["seconds"] = round(time.monotonic() - started, 3)
            return out
    try:
        conn = psycopg2.connect(**connection_kwargs(params, "k2.iceberg_offload.db_connection_info"))
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT 1")
            out["server_version"] = conn.get_parameter_status("server_version")
        finally:
            conn.close()
        out.update(ok=True, kind="ok")
    except psycopg2.Error as e:
        text = " ".join(str(e).split())
        out.update(kind=error_kind(text), error=text[:500])
    out["seconds"] = round(time.monotonic() - started, 3)
    return out


def main():
    module = AnsibleModule(argument_spec=postgres_common_argument_spec(), supports_check_mode=True)
    ensure_required_libs(module)
    module.exit_json(changed=False, **probe(module.params))


if __name__ == "__main__":
    main()
