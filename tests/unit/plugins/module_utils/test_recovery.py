# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""How a recovery ended and the state it leaves (recovery.outcome): the outcome, every escalation, the
scheduler as found and as left, whether this run stopped it and why, the command that continues."""
from ansible_collections.k2.iceberg_offload.plugins.module_utils import recovery as rc

RUNNING = {"exists": True, "active": True, "running": True, "active_state": "active", "sub_state": "running"}
STOPPED = {"exists": True, "active": False, "running": False, "active_state": "inactive", "sub_state": "dead"}
LOOPING = dict(STOPPED, active=True, active_state="activating", sub_state="auto-restart", crash_loop=True)
HEALTHY = {"status": "healthy", "escalations": [], "summary": "healthy"}
SETTINGS = {"scheduler_unit": "iceberg-offload-scheduler.service", "scheduler_host": "k2-spark-iceberg",
            "inventory": "inv.yml"}


def action(what, kind=None, changed=True, **kw):
    return dict({"step": what, "action": kind, "changed": changed, "dry_run": False, "audit_ids": [],
                 "backup": None}, **kw)


def run(**kw):
    base = {"dry_run": False, "done_scenarios": [2], "initial": {"status": "recover", "escalations": []},
            "final": HEALTHY, "verification": {"verified": True, "msg": "verified"}, "actions": [],
            "scheduler_found": RUNNING, "scheduler_now": RUNNING, "settings": SETTINGS}
    base.update(kw)
    return base


def test_recovered_and_the_next_command_is_post_incident():
    out = rc.outcome(run(actions=[action("scheduler stopped", "scheduler-stop"),
                                  action("scheduler started", "scheduler-start")]))
    assert out["outcome"] == "recovered" and not out["escalate"]
    s = out["state_left"]["scheduler"]
    assert (s["found"], s["now"], s["stopped_by_this_run"], s["started_by_this_run"]) == \
        ("running", "running", False, True)
    assert out["state_left"]["continue"] == "ansible-playbook -i inv.yml k2.iceberg_offload.post_incident"
    assert out["headline"].startswith("RECOVERED and verified")


def test_a_stop_after_the_scheduler_was_stopped_says_so_and_how_to_continue_and_undo():
    stop = {"kind": "watermark-write-failed", "step": "Scenario 4", "text": "permission denied",
            "keep_scheduler_stopped": True}
    out = rc.outcome(run(stop=stop, scheduler_now=STOPPED, verification={},
                         actions=[action("scheduler stopped (no cycle may read ...)", "scheduler-stop")]))
    assert out["outcome"] == "escalate" and out["escalate"]
    assert out["escalations"][0] == {"kind": "watermark-write-failed", "text": "Scenario 4: permission denied",
                                     "data": {}}
    s = out["state_left"]["scheduler"]
    assert s["stopped_by_this_run"] and s["left_stopped_deliberately"] and s["now"] == "stopped"
    assert "recover -e k2_execute=true" in out["state_left"]["continue"]
    assert "starts the scheduler" in out["state_left"]["continue"]
    assert out["state_left"]["undo"][0] == "systemctl start iceberg-offload-scheduler.service (on k2-spark-iceberg)"
    assert "STOPPED by this run on purpose" in out["headline"]
    lines = rc.state_lines(out["state_left"])
    assert lines[0].startswith("scheduler: found running, now stopped; STOPPED by this run and left stopped on purpose")


def test_a_stop_that_changed_nothing_leaves_the_scheduler_as_found():
    stop = {"kind": "db-authentication", "step": "Diagnosis", "text": "wrong credentials. Nothing was changed."}
    out = rc.outcome(run(stop=stop, done_scenarios=[], verification={}))
    assert out["outcome"] == "escalate"
    assert not out["state_left"]["scheduler"]["stopped_by_this_run"] and out["state_left"]["undo"] == []
    assert "changed: nothing" in rc.state_lines(out["state_left"])


def test_crash_looping_scheduler_is_never_running():
    assert rc.scheduler_state(LOOPING) == "crash-looping"
    assert rc.scheduler_state(dict(RUNNING, crash_loop=True)) == "crash-looping"
    assert rc.scheduler_state(None) == "unknown"
    out = rc.outcome(run(scheduler_now=LOOPING, verification={"verified": False, "msg": "no new watermark"},
                         final={"status": "recover", "summary": "Scenario 1", "escalations": []}))
    assert out["outcome"] == "not-recovered"
    assert out["state_left"]["scheduler"]["now"] == "crash-looping"
    assert [e["kind"] for e in out["escalations"]] == ["not-recovered"]


def test_escalation_rules_of_the_diagnosis_and_the_scenarios_are_kept_after_a_recovery():
    initial = {"status": "recover", "escalations": [{"kind": "cold-duplicates-found", "text": "dups",
                                                     "blocks_recovery": False}]}
    notes = [{"kind": "silent-offload-integration", "text": "manual works"}]
    out = rc.outcome(run(initial=initial, notes=notes))
    assert out["outcome"] == "recovered" and out["escalate"]
    assert [e["kind"] for e in out["escalations"]] == ["cold-duplicates-found", "silent-offload-integration"]
    assert "ESCALATE to the Engineering Lead" in out["headline"]


def test_a_workaround_note_leaves_the_scheduler_stopped_on_purpose():
    notes = [{"kind": "scenario5-workaround", "text": "ran 2 cycles"}]
    out = rc.outcome(run(notes=notes, scheduler_now=STOPPED, verification={},
                         final={"status": "recover", "summary": "Scenario 5", "escalations": []},
                         actions=[action("scheduler stopped", "scheduler-stop")]))
    assert out["state_left"]["scheduler"]["left_stopped_deliberately"]


def test_dry_run_and_nothing_to_do():
    out = rc.outcome(run(dry_run=True, verification={}, scheduler_now=None))
    assert out["outcome"] == "dry-run" and "k2_execute=true" in out["state_left"]["continue"]
    assert out["state_left"]["scheduler"]["now"] == "running"
    out = rc.outcome(run(done_scenarios=[], initial=HEALTHY, verification={}))
    assert out["outcome"] == "nothing-to-do" and not out["escalate"] and out["state_left"]["continue"] is None


def test_changes_carry_their_audit_ids_backups_and_undo():
    acts = [action("watermark_cleanup duplicates_only", audit_ids=[7], backup="offload_watermarks_backup_x"),
            action("iceberg_dedupe", backup="snapshot 123"),
            action("would do something", changed=True, dry_run=True)]
    out = rc.outcome(run(actions=acts))
    changes = out["state_left"]["changes"]
    assert [c["step"] for c in changes] == ["watermark_cleanup duplicates_only", "iceberg_dedupe"]
    assert changes[0]["audit_ids"] == [7] and "offload_watermarks_backup_x" in changes[0]["undo"]
    assert changes[1]["undo"] == "iceberg_dedupe rollback_to_snapshot=123"


def test_no_unknown_error_in_any_escalation_text():
    out = rc.outcome(run(stop={"kind": "step-failed", "step": "Scenario 2: wait", "text": "rc 1: refused"}))
    assert "Unknown error" not in str(out)


def test_a_dry_run_that_reaches_a_stop_is_the_plan_and_says_where_executing_stops():
    stop = {"kind": "watermark-write-failed", "step": "Scenario 4", "text": "refused", "keep_scheduler_stopped": True}
    out = rc.outcome(run(dry_run=True, stop=stop, verification={}, scheduler_now=None,
                         actions=[action("scheduler stopped", "scheduler-stop", dry_run=True)]))
    assert out["outcome"] == "dry-run" and "executing would stop at Scenario 4 [watermark-write-failed]" in out["headline"]
    assert out["escalations"][0]["kind"] == "watermark-write-failed"
    assert not out["state_left"]["scheduler"]["stopped_by_this_run"]
    # a diagnosis that blocks is an escalation even in a dry run
    out = rc.outcome(run(dry_run=True, stop={"kind": "metrics-broken", "step": "Diagnosis", "text": "x"}))
    assert out["outcome"] == "escalate"
