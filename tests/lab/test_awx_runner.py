# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Issue 11, AWX/AAP: the job templates of extensions/awx/controller_config.yml run through
ansible-runner as AWX runs them, against the lab, with the credential type's injectors rendered
as AWX renders them. The workflow (diagnose -> approval -> recover -> post-incident) is played
node by node on a stopped scheduler, each node getting the set_stats of the ones before it;
prevention runs as a job of type "check". The secrets are distinctive: the lab's random
PostgreSQL password, a ClickHouse user made for this test, a Prometheus token. None may be in
any job event, stdout, artifact or report; in the environment the runner records with the job
(its "command" artifact), AWX's own rule must hide them.
"""
import base64
import json
import os
import urllib.request
import uuid

import pytest
import yaml

from k2lab import faults, lab
from tests.support import awx

TOKEN = uuid.uuid4().hex[:10]
CH_USER = "k2_awx_" + TOKEN
CH_SECRET = "K2awxChSecret" + TOKEN
PROM_SECRET = "K2awxPromToken" + TOKEN
CH_USERS_FILE = "/etc/clickhouse-server/users.d/k2-awx-test.xml"


@pytest.fixture(scope="module")
def awx_job(k2lab, tmp_path_factory):
    """A ClickHouse login for the credential, the lab inventory without any secret or login
    (the credential brings them), and a function that runs one job template."""
    xml = ('<?xml version="1.0"?><yandex><users><{u}><password>{p}</password><networks><ip>::/0</ip></networks>'
           '<profile>default</profile><quota>default</quota></{u}></users></yandex>').format(u=CH_USER, p=CH_SECRET)
    lab.dexec(lab.CH, "sh", "-c", 'mkdir -p /etc/clickhouse-server/users.d && printf "%s" "$1" > ' + CH_USERS_FILE,
              "sh", xml)
    lab._wait("ClickHouse to accept the test's login", lambda: _ch_login_works(k2lab), 30)
    root = tmp_path_factory.mktemp("awx")
    inventory = yaml.safe_load(lab.inventory())
    for key in ("k2_pg_user", "k2_pg_password", "k2_pg_admin_user", "k2_pg_admin_password"):
        inventory["all"]["vars"].pop(key)
    inventory["all"]["vars"]["k2_report_dir"] = str(root / "reports")
    config = awx.load_config()
    credential = (awx.by_name(config["controller_credential_types"], "K2 Iceberg offload"),
                  {"pg_user": "prefect", "pg_password": k2lab["pg_password"], "pg_admin_password": k2lab["pg_password"],
                   "clickhouse_user": CH_USER, "clickhouse_password": CH_SECRET, "prometheus_token": PROM_SECRET})
    jobs = []

    def run(template_name, extra_vars, stream=True, check=False, inv=None):
        template = awx.by_name(config["controller_templates"], template_name)
        job = awx.run_job(str(root / ("%02d-%s" % (len(jobs), template_name.replace(" ", "-")))), template,
                          inv or inventory, credential, extra_vars, stream=stream, check=check)
        jobs.append(job)
        print("%s (%s): rc %s in %.1f s" % (template_name, job.mode, job.rc, job.seconds))
        return job

    run.config, run.jobs, run.report_dir = config, jobs, str(root / "reports")
    run.secrets = {"postgres password": k2lab["pg_password"], "clickhouse password": CH_SECRET,
                   "prometheus token": PROM_SECRET}
    yield run
    lab.dexec(lab.CH, "rm", "-f", CH_USERS_FILE, check=False)


def _ch_login_works(k2lab):
    req = urllib.request.Request(k2lab["clickhouse_url"] + "?query=SELECT%201")
    req.add_header("Authorization", "Basic " + base64.b64encode(("%s:%s" % (CH_USER, CH_SECRET)).encode()).decode())
    with urllib.request.urlopen(req, timeout=5) as resp:
        return resp.read().strip() == b"1"


def survey(awx_job, name, answers=None):
    return awx.survey_vars(awx.by_name(awx_job.config["controller_templates"], name), answers)


def node_vars(awx_job, identifier, template, artifacts, answers=None):
    """A workflow node's extra vars: its template's survey with the node's extra_data (and test
    answers) as the answers, then the set_stats of the jobs before it."""
    workflow = awx.by_name(awx_job.config["controller_workflows"], "K2 IcebergOffloadWatermarkStale response")
    node = [n for n in workflow["workflow_nodes"] if n["identifier"] == identifier][0]
    assert node["unified_job_template"]["name"] == template
    return awx.workflow_vars(artifacts, survey(awx_job, template, dict(node.get("extra_data") or {}, **(answers or {}))))


def assert_no_secret_leaked(awx_job, jobs):
    files = [f for job in jobs for f in job.files() if os.path.basename(f) != "command"]
    files += [os.path.join(awx_job.report_dir, f) for f in os.listdir(awx_job.report_dir)]
    files += [os.path.join(os.path.dirname(job.artifact_dir), "..", "..", "runner-pipeline.log") for job in jobs]
    assert len(files) > 50
    assert awx.leaks(awx_job.secrets, files) == []
    for job in jobs:
        with open(os.path.join(job.artifact_dir, "command")) as fh:
            command = json.load(fh)
        assert command["env"]["PGPASSWORD"] == awx_job.secrets["postgres password"]   # the injection reached it
        command["env"] = awx.awx_safe_env(command["env"])
        shown = json.dumps(command)
        assert not [label for label, value in awx_job.secrets.items() if value in shown], job.name


def test_workflow_on_a_stopped_scheduler(k2lab, awx_job):
    faults.inject("scheduler-stopped")
    try:
        # node 1: diagnose, through transmit | worker | process
        diag = awx_job("K2 diagnose", node_vars(awx_job, "k2-diagnose", "K2 diagnose", []))
        assert diag.rc == 0 and diag.status == "successful", diag
        found = diag.artifacts
        assert (found["k2_status"], found["k2_scenario"], found["k2_scenarios"]) == ("recover", 1, [1]), found
        assert any("iceberg-offload-scheduler" in e for e in found["k2_evidence"]), found
        with open(found["k2_diagnosis_report"]) as fh:
            assert json.load(fh)["diagnosis"]["scenario_numbers"] == [1]
        assert "SCENARIO 1 APPLIES" in diag.stdout

        # the recover template launched on its own with the survey's defaults: the plan, nothing changed
        # (through ansible_runner.run, the API a single-node runner uses)
        plan = awx_job("K2 recover", survey(awx_job, "K2 recover"), stream=False)
        assert plan.rc == 0, plan
        assert plan.artifacts["k2_outcome"] == "dry-run", plan
        assert lab.scheduler_active() != "active"

        # node 2 is the approval; node 3: recover, executing (the node's extra_data), with diagnose's set_stats
        rec = awx_job("K2 recover", node_vars(awx_job, "k2-recover", "K2 recover", [found]))
        assert rec.rc == 0, rec
        done = rec.artifacts
        assert (done["k2_outcome"], done["k2_scenarios_run"]) == ("recovered", [1]), done
        assert os.path.exists(done["k2_recovery_report"])
        assert lab.scheduler_active() == "active"

        # node 4: post-incident, with the set_stats of both (k2_recovery_report); one cycle of progression
        # instead of the survey's 3 keeps the test short
        post = awx_job("K2 post-incident", node_vars(awx_job, "k2-post-incident", "K2 post-incident", [found, done],
                                                     {"k2_post_incident_cycles": 1}))
        assert post.rc == 0, post
        assert post.artifacts["k2_post_incident_ok"] is True, post
        report = post.artifacts["k2_incident_report"]
        assert os.path.exists(report) and os.path.exists(report[:-len(".json")] + ".md")
        with open(report) as fh:
            incident = json.load(fh)
        assert incident["recovery_outcome"] == "recovered"
    finally:
        if lab.scheduler_active() != "active":
            faults.heal()
    assert_no_secret_leaked(awx_job, awx_job.jobs)


def test_prevention_as_a_check_job(k2lab, awx_job):
    """prevention.yml as a job of type "check" on this machine (groups prometheus and
    watermark_db_hosts): everything it would install, nothing installed."""
    inventory = {"all": {
        "vars": {"k2_watermark_db_host": "127.0.0.1", "k2_watermark_db_port": k2lab["pg_port"],
                 "watermark_alerts_reload": "http", "watermark_alerts_reload_url": k2lab["prometheus_url"] + "/-/reload",
                 # the jobs run the collection's code with psycopg2: this machine's has it in the venv only
                 "watermark_cleanup_python": awx.VENV_BIN + "/python",
                 "watermark_health_check_python": awx.VENV_BIN + "/python"},
        "hosts": {"localhost": {"ansible_connection": "local", "ansible_python_interpreter": awx.VENV_BIN + "/python"}},
        "children": {"prometheus": {"hosts": {"localhost": None}}, "watermark_db_hosts": {"hosts": {"localhost": None}}}}}
    before = set(os.listdir("/etc/cron.d")) if os.path.isdir("/etc/cron.d") else set()
    job = awx_job("K2 prevention", survey(awx_job, "K2 prevention", {"k2_watermark_access": "libpq"}),
                  check=True, inv=inventory)
    assert job.rc == 0, job
    changed = [e for e in job.events if e.get("event") == "runner_on_ok" and e["event_data"]["res"].get("changed")]
    assert len(changed) >= 4, job   # the rules, and the three jobs' scripts, settings and cron entries
    assert (set(os.listdir("/etc/cron.d")) if os.path.isdir("/etc/cron.d") else set()) == before
    assert not os.path.exists("/etc/prometheus/rules/k2-iceberg-offload-watermark.rules.yml")
    assert_no_secret_leaked(awx_job, [job])
