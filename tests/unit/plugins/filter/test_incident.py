# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The filter plugins the incident playbooks use: thin wrappers, their errors in the engineer's words."""
import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.k2.iceberg_offload.plugins.filter import incident as f

SECRET = "s3cr3t-env-password"


def test_every_filter_is_registered():
    names = set(f.FilterModule().filters())
    assert names == {"diagnose", "recovery_plan", "scenario_steps", "recovery_outcome", "state_left_lines",
                     "offload_output", "container_state", "brief", "failure_text", "corruption",
                     "silent_offloads", "manual_offload", "reconcile", "report_window"}


def test_wrappers_refuse_wrong_input_with_a_message():
    with pytest.raises(AnsibleFilterError, match="gathered facts as a dictionary"):
        f.diagnose([])
    with pytest.raises(AnsibleFilterError, match="1 .scheduler."):
        f.recovery_plan({}, ["9"])
    with pytest.raises(AnsibleFilterError, match="scenario number 1 to 5"):
        f.scenario_steps(7)
    with pytest.raises(AnsibleFilterError, match="record as a dictionary"):
        f.recovery_outcome("x")
    assert f.recovery_plan({"scenario_numbers": [1, 2]}) == [2, 1]
    assert f.offload_output("2026-02-12 10:00:02 Offload completed: 4 rows (t -> cold.t)", ["t"])["tables"]["t"][
        "last_completed"]["rows"] == 4


def test_container_state_keeps_no_environment():
    inspected = {"exists": True, "container": {
        "Name": "/k2-prefect-db", "RestartCount": 3, "Config": {"Env": ["POSTGRES_PASSWORD=" + SECRET]},
        "State": {"Running": False, "Restarting": True, "ExitCode": 1},
        "HostConfig": {"RestartPolicy": {"Name": "on-failure"}, "Binds": ["/x:/y"]},
        "NetworkSettings": {"Networks": {"k2-network": {"IPAddress": "172.19.0.2", "Aliases": ["db"]}}}}}
    out = f.container_state(inspected)
    assert SECRET not in str(out) and "Config" not in out["container"]
    assert out["container"]["RestartCount"] == 3
    assert out["container"]["HostConfig"] == {"RestartPolicy": {"Name": "on-failure"}}
    assert out["container"]["NetworkSettings"]["Networks"] == {"k2-network": {"IPAddress": "172.19.0.2"}}
    assert f.container_state({"failed": True, "msg": "no docker"}) == {
        "exists": False, "failed": True, "unreachable": False, "msg": "no docker", "container": None}


def test_failure_text_never_says_unknown_error():
    assert f.failure_text({"msg": "Task failed: Action failed: Unknown error.", "stderr": "refused", "rc": 1}) == \
        "rc 1: refused"
    assert f.failure_text({"msg": "docker start failed: no such container"}) == "docker start failed: no such container"
    looped = {"msg": "One or more items failed", "results": [{"item": "a", "failed": True, "msg": "boom"},
                                                             {"item": "b", "failed": False}]}
    assert f.failure_text(looped) == "a: boom"
    assert f.failure_text({"results": [{"item": {"key": "t1", "value": 1}, "failed": True, "msg": "x"}]}) == "t1: x"
    retried = {"attempts": 15, "ok": False, "kind": "refused", "error": "Connection refused"}
    text = f.failure_text(retried)
    assert text.startswith("gave up after 15 attempts") and "Connection refused" in text
    assert "without a message" in f.failure_text({})
    assert "Unknown error" not in f.failure_text({"msg": "Unknown error"})


def test_brief_keeps_kinds_and_texts_only():
    items = [{"kind": "db-lock", "scenario": 2, "text": "pid 1", "tables": [], "data": {"holders": [1]}},
             "plain text"]
    assert f.brief(items) == [{"kind": "db-lock", "scenario": 2, "text": "pid 1", "tables": []},
                              {"kind": "text", "text": "plain text"}]


def test_state_left_lines_and_outcome_through_the_filters():
    out = f.recovery_outcome({"dry_run": True, "done_scenarios": [1], "initial": {"status": "recover"}})
    assert out["outcome"] == "dry-run"
    assert f.state_left_lines(out["state_left"])[0].startswith("scheduler: found unknown")


def test_report_window_begins_before_the_incident():
    start = f.report_window(["2026-02-12T10:00:00Z", None, "not a time"], 900, now="2026-02-12T12:00:00")
    assert start == "2026-02-12T08:30:00Z"  # six cycles before the start (more than a tenth of 2 h)
    # ages at the diagnosis: the watermark last advanced 2 h before it
    assert f.report_window([], 900, ages={"t": {"seconds": 7200}}, ages_at="2026-02-12T11:00:00",
                           now="2026-02-12T11:30:00") == "2026-02-12T07:30:00Z"
    with pytest.raises(AnsibleFilterError, match="cycle_seconds greater than 0"):
        f.report_window([], 0)
    with pytest.raises(AnsibleFilterError, match="cycle_seconds as a number"):
        f.report_window([], "often")
