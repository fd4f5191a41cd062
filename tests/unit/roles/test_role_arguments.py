# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Each role refuses bad variables before doing anything: meta/argument_specs.yml
(types, choices) and the preflight asserts (ranges, identifiers). Runs the roles
on localhost in check mode; every case must fail before any task could write.

Runs under plain pytest (the project's .venv, collections path .collections) and under
ansible-test units (scripts/units.sh: the checkout already lies at
ansible_collections/k2/iceberg_offload, and ansible-playbook is ansible-core's module
in whatever Python runs the tests).
"""
import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
# Under ansible-test the checkout is .../ansible_collections/k2/iceberg_offload itself.
_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(REPO)))
COLLECTIONS = _ROOT if os.path.basename(os.path.dirname(os.path.dirname(REPO))) == "ansible_collections" \
    else os.path.join(REPO, ".collections")

CASES = [
    ("watermark_cleanup", {"watermark_cleanup_access": "ssh"}, "watermark_cleanup_access"),
    ("watermark_cleanup", {"watermark_cleanup_keep": "many"}, "watermark_cleanup_keep"),
    ("watermark_cleanup", {"watermark_cleanup_keep": 0}, "at least 1"),
    ("watermark_cleanup", {"watermark_cleanup_watermark_table": "w; DROP TABLE x"}, "identifier"),
    ("watermark_cleanup", {"watermark_cleanup_lock_timeout": "5s'; DROP"}, "durations"),
    ("watermark_cleanup", {"watermark_cleanup_state": "gone"}, "watermark_cleanup_state"),
    ("watermark_health_check", {"watermark_health_check_mail_when": "sometimes"}, "watermark_health_check_mail_when"),
    ("watermark_health_check", {"watermark_health_check_stale_seconds": 0}, "positive"),
    ("watermark_health_check", {"watermark_health_check_tables": ["ok", "bad name"]}, "watermark_health_check_tables"),
    ("watermark_health_check", {"watermark_health_check_metrics_file": "/tmp/x.txt"}, ".prom"),
    ("watermark_backup", {"watermark_backup_retention_days": 0}, "at least 1"),
    ("watermark_backup", {"watermark_backup_dir": "/"}, "absolute path other than /"),
    ("watermark_backup", {"watermark_backup_db_sslmode": "maybe"}, "watermark_backup_db_sslmode"),
    ("watermark_alerts", {"watermark_alerts_reload": "signal"}, "watermark_alerts_reload"),
    ("watermark_alerts", {"watermark_alerts_stale_for": "five minutes"}, "Prometheus durations"),
]

PLAY = """
- hosts: localhost
  connection: local
  gather_facts: false
  roles:
    - role: k2.iceberg_offload.%s
"""


@pytest.mark.parametrize("role,variables,message", CASES,
                         ids=["%s-%s" % (c[0], "-".join(c[1])) for c in CASES])
def test_bad_variable_is_refused(tmp_path, role, variables, message):
    play = tmp_path / "play.yml"
    play.write_text(PLAY % role)
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=COLLECTIONS,
               ANSIBLE_NOCOLOR="1", ANSIBLE_LOCALHOST_WARNING="false",
               ANSIBLE_INVENTORY_UNPARSED_WARNING="false")
    ansible_playbook = [sys.executable, "-m", "ansible.cli.playbook"]
    proc = subprocess.run(ansible_playbook + ["--check", str(play), "-e", json.dumps(variables)],
                          env=env, capture_output=True, text=True, timeout=120, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert message in out, out
    # Refused in the first tasks: validation or the preflight assert, never later.
    assert "changed=0" in out, out
