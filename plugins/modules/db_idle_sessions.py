#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: db_idle_sessions
short_description: Find, and end, the idle sessions that exhaust the watermark database's connections
version_added: 1.0.0
description:
  - Runbook Scenario 2 Issue 2b (connection pool exhausted). Lists the client sessions of a database that have
    been idle for longer than O(older_than), with the connection slots in use, and with O(terminate=true) ends
    them with C(pg_terminate_backend).
  - "When the pool is exhausted the runbook's own C(docker exec k2-prefect-db psql -U prefect ...) is refused too
    (C(remaining connection slots are reserved for superuser)). Connect as a superuser (or a member of
    C(pg_signal_backend) with a reserved slot): the superuser_reserved_connections slots are kept for exactly
    this."
  - A session is ended only if it is still idle since before the cut-off when the statement runs; one that has
    become busy in between is left alone. This session is never ended.
extends_documentation_fragment:
  - k2.iceberg_offload.postgres
  - k2.iceberg_offload.postgres.WATERMARK_TABLE
  - k2.iceberg_offload.attributes
attributes:
  check_mode:
    support: full
    details:
      - Lists the sessions that would be ended (RV(sessions)) and ends none.
  diff_mode:
    support: full
options:
  session_database:
    description: The database whose sessions to look at. Default O(login_db).
    type: str
  older_than:
    description:
      - Idle for longer than this (a duration such as C(10m), the runbook's value, or seconds).
    type: str
    default: 10m
  users:
    description: Only sessions of these roles. Default every role.
    type: list
    elements: str
    default: []
  states:
    description: Session states that count as idle.
    type: list
    elements: str
    choices: [idle, idle in transaction, idle in transaction (aborted)]
    default: [idle]
  terminate:
    description: End the sessions found. V(false) only lists them.
    type: bool
    default: false
  holding_lock:
    description:
      - Only sessions holding a granted lock on O(watermark_table) in a mode that makes the scheduler's
        C(INSERT) wait (C(SHARE) and stronger; C(LOCK TABLE) takes C(ACCESS EXCLUSIVE), which makes reads wait too),
        as an interactive C(psql) left idle in its transaction does (runbook Diagnosis step 4, "ungranted locks").
      - Use with O(states=[idle in transaction, idle in transaction (aborted)]); the same O(older_than) applies.
    type: bool
    default: false
    version_added: 1.1.0
notes:
  - O(watermark_table) is used only with O(holding_lock=true).
author:
  - K2 Platform Engineering (@k2-platform)
"""

EXAMPLES = r"""
- name: Scenario 2b - end sessions idle for more than 10 minutes, through a superuser's reserved slot
  k2.iceberg_offload.db_idle_sessions:
    login_host: 127.0.0.1
    login_user: postgres
    login_password: "{{ k2_pg_admin_password }}"
    login_db: prefect
    older_than: 10m
    terminate: true
  register: idle

- name: What was ended
  ansible.builtin.debug:
    msg: "ended {{ idle.terminated | length }} sessions; {{ idle.slots.available_to_normal_roles }} slots free before"
"""

RETURN = r"""
slots:
  description: C(max_connections), C(superuser_reserved_connections), C(client_connections) (now),
    C(available_to_normal_roles) and whether this role C(can_terminate_backends).
  returned: always
  type: dict
  sample: {max_connections: 40, superuser_reserved_connections: 3, client_connections: 38,
           available_to_normal_roles: -1, can_terminate_backends: true}
sessions:
  description: The idle sessions found (C(pid), C(user), C(application_name), C(client_addr), C(state),
    C(state_change) UTC, C(idle_seconds), C(last_query)).
  returned: always
  type: list
  elements: dict
terminated:
  description: The PIDs ended (empty in check mode or without O(terminate)).
  returned: always
  type: list
  elements: int
  sample: [4242, 4243]
database:
  description: The database whose sessions were looked at.
  returned: always
  type: str
  sample: prefect
diff:
  description: Idle sessions before and after.
  returned: when changed and diff mode
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.k2.iceberg_offload.plugins.module_utils.postgres import (
    TableNameError, connect_to_db, ensure_required_libs, error_text, parse_table_name, postgres_common_argument_spec,
    psycopg2, watermark_table_argument_spec)
from ansible_collections.k2.iceberg_offload.plugins.module_utils.watermark import WatermarkError, parse_duration
from ansible_collections.k2.iceberg_offload.plugins.module_utils.watermark_sql import (
    connection_slots, idle_sessions, terminate_sessions)


def main():
    argument_spec = postgres_common_argument_spec()
    argument_spec.update(watermark_table_argument_spec())
    argument_spec.update(
        session_database=dict(type="str"),
        older_than=dict(type="str", default="10m"),
        users=dict(type="list", elements="str", default=[]),
        states=dict(type="list", elements="str", default=["idle"],
                    choices=["idle", "idle in transaction", "idle in transaction (aborted)"]),
        terminate=dict(type="bool", default=False),
        holding_lock=dict(type="bool", default=False),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    ensure_required_libs(module)
    p = module.params
    try:
        older = parse_duration(p["older_than"], "older_than")
        locked_table = parse_table_name(p["watermark_table"]) if p["holding_lock"] else None
    except (WatermarkError, TableNameError) as e:
        module.fail_json(msg=str(e))
    conn, err = connect_to_db(module, application_name="k2.iceberg_offload.db_idle_sessions")
    if err:
        module.fail_json(msg=err + " (with the pool exhausted, connect as a superuser: its reserved slots "
                         "are kept for this)")
    conn.autocommit = True
    try:
        database = p["session_database"] or conn.get_dsn_parameters().get("dbname")
        slots = connection_slots(conn)
        sessions = idle_sessions(conn, database, older, p["users"], p["states"], locked_table)
        terminated = []
        if p["terminate"] and sessions and not module.check_mode:
            if not slots["can_terminate_backends"]:
                module.fail_json(msg="role %s may not end other sessions: connect as a superuser or a member of "
                                     "pg_signal_backend" % conn.get_dsn_parameters().get("user"),
                                 slots=slots, sessions=sessions)
            terminated = terminate_sessions(conn, [s["pid"] for s in sessions], older, p["states"], locked_table)
    except psycopg2.Error as e:
        module.fail_json(msg="listing or ending idle sessions failed: %s" % error_text(e))
    finally:
        conn.close()
    changed = bool(terminated) or bool(module.check_mode and p["terminate"] and sessions)
    result = dict(changed=changed, slots=slots, sessions=sessions, terminated=terminated, database=database)
    if changed and module._diff:
        result["diff"] = {"before": {"idle_sessions": sorted(s["pid"] for s in sessions)},
                          "after": {"idle_sessions": sorted(set(s["pid"] for s in sessions) - set(terminated))
                                    if not module.check_mode else []}}
    module.exit_json(**result)


if __name__ == "__main__":
    main()
