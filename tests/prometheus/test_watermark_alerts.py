# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The watermark_alerts role's rules, rendered by the role itself on this host
(its `validate:` runs `promtool check rules`), then unit-tested with
`promtool test rules` (roles/watermark_alerts/tests/watermark_alerts.test.yml).

Needs promtool (Debian package prometheus) and the collections path made by
scripts/setup.sh.
"""
import json
import os
import shutil
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TESTS = os.path.join(REPO, "roles", "watermark_alerts", "tests", "watermark_alerts.test.yml")
RULES = "k2-iceberg-offload-watermark.rules.yml"
PROMTOOL = shutil.which("promtool")

pytestmark = pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (Debian: prometheus)")

PLAYBOOK = """
- hosts: localhost
  connection: local
  gather_facts: false
  roles:
    - role: k2.iceberg_offload.watermark_alerts
"""


def render(tmp_path, **role_vars):
    """Apply the role to a scratch rules dir on this host, no reload."""
    play = tmp_path / "render.yml"
    play.write_text(PLAYBOOK)
    extra = {
        "watermark_alerts_rules_dir": str(tmp_path / "rules"),
        "watermark_alerts_reload": "none",
        "watermark_alerts_promtool": PROMTOOL,
        "watermark_alerts_rules_owner": str(os.getuid()),
        "watermark_alerts_rules_group": str(os.getgid()),
    }
    extra.update(role_vars)
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=os.path.join(REPO, ".collections"),
               ANSIBLE_NOCOLOR="1", ANSIBLE_LOCALHOST_WARNING="false",
               ANSIBLE_INVENTORY_UNPARSED_WARNING="false")
    ansible_playbook = os.path.join(os.path.dirname(sys.executable), "ansible-playbook")
    proc = subprocess.run([ansible_playbook, str(play), "-e", json.dumps(extra)],
                          env=env, capture_output=True, text=True, timeout=300, check=False)
    return proc, tmp_path / "rules"


def promtool_test(rules_dir):
    shutil.copy(TESTS, rules_dir / "watermark_alerts.test.yml")
    return subprocess.run([PROMTOOL, "test", "rules", "watermark_alerts.test.yml"],
                          cwd=rules_dir, capture_output=True, text=True, timeout=120, check=False)


def test_rules_with_defaults_pass_promtool_unit_tests(tmp_path):
    proc, rules = render(tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = (rules / RULES).read_text()
    for alert in ("IcebergOffloadWatermarkStale", "IcebergOffloadLagCritical"):
        assert "alert: " + alert in text
    assert "(time() - watermark_timestamp_seconds) > 3600" in text
    result = promtool_test(rules)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_unit_tests_catch_a_wrong_threshold(tmp_path):
    # The same tests against rules with a 2-hour staleness threshold must fail:
    # the tests really look at the threshold.
    proc, rules = render(tmp_path, watermark_alerts_stale_seconds=7200)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = promtool_test(rules)
    assert result.returncode != 0
    assert "IcebergOffloadWatermarkStale" in result.stdout + result.stderr


def test_rules_promtool_rejects_are_not_installed(tmp_path):
    # A rule file promtool refuses (a bad label value breaks the YAML) is never
    # installed: the role fails and the rules dir holds no rule file.
    proc, rules = render(tmp_path, watermark_alerts_stale_severity="critical\n  bad: [")
    assert proc.returncode != 0
    assert "failed to validate" in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    assert not (rules / RULES).exists()


def test_absent_removes_the_rule_file(tmp_path):
    proc, rules = render(tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (rules / RULES).exists()
    proc, rules = render(tmp_path, watermark_alerts_state="absent")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert not (rules / RULES).exists()
