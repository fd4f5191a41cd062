# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""extensions/awx/controller_config.yml is what awx.awx (and infra.aap_configuration) reads:
every item passes the argument spec of its awx.awx module; the credential type injects what the
playbooks read and AWX hides its secrets; surveys ask for no secret and default to the plan;
the workflow is diagnose -> approval -> recover -> post-incident. No AWX server, no lab."""
import importlib
import os
import re
import subprocess

import pytest
import yaml
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

from tests.support import awx

CONFIG = awx.load_config()
CREDENTIAL_TYPE = awx.by_name(CONFIG["controller_credential_types"], "K2 Iceberg offload")
SAMPLE = {"pg_user": "k2_pg_user_sample", "pg_password": "K2pgSecret-sample-1", "pg_admin_user": "k2_admin_sample",
          "pg_admin_password": "K2adminSecret-sample-2", "clickhouse_user": "k2_ch_sample",
          "clickhouse_password": "K2chSecret-sample-3", "prometheus_token": "K2promSecret-sample-4"}
SECRET_FIELDS = [f["id"] for f in CREDENTIAL_TYPE["inputs"]["fields"] if f.get("secret")]

# variable of controller_config.yml -> the awx.awx module each item is the arguments of
MODULES = {
    "controller_credential_types": "credential_type",
    "controller_credentials": "credential",
    "controller_execution_environments": "execution_environment",
    "controller_projects": "project",
    "controller_templates": "job_template",
    "controller_workflows": "workflow_job_template",
}


class _Captured(Exception):
    pass


def awx_argument_spec(module_name):
    """The argument spec an awx.awx module builds in main(), caught where it hands it over."""
    mod = importlib.import_module("ansible_collections.awx.awx.plugins.modules." + module_name)
    original = mod.ControllerAPIModule

    class Catch(object):
        def __init__(self, argument_spec=None, **kwargs):
            raise _Captured(argument_spec, kwargs)

    mod.ControllerAPIModule = Catch
    try:
        mod.main()
    except _Captured as exc:
        spec, kwargs = exc.args
        return spec, kwargs
    finally:
        mod.ControllerAPIModule = original
    raise AssertionError("%s did not build a ControllerAPIModule" % module_name)


@pytest.mark.parametrize("variable", sorted(MODULES))
def test_every_item_is_what_its_awx_module_accepts(variable):
    spec, kwargs = awx_argument_spec(MODULES[variable])
    assert CONFIG[variable], variable
    for item in CONFIG[variable]:
        validator = ArgumentSpecValidator(spec, mutually_exclusive=kwargs.get("mutually_exclusive"),
                                          required_if=kwargs.get("required_if"),
                                          required_one_of=kwargs.get("required_one_of"))
        result = validator.validate(dict(item))
        assert not result.error_messages, (item["name"], result.error_messages)
        assert not result.unsupported_parameters, (item["name"], result.unsupported_parameters)


def test_configure_playbook_syntax():
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=awx.collections_path())
    proc = subprocess.run([os.path.join(awx.VENV_BIN, "ansible-playbook"), "--syntax-check",
                           os.path.join(awx.REPO, "extensions", "awx", "configure.yml"),
                           "-e", "@" + awx.AWX_CONFIG], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          env=env, cwd=awx.REPO, check=False)
    assert proc.returncode == 0, proc.stdout.decode()


def test_credential_type_injects_what_the_playbooks_read():
    env, extra = awx.render_injectors(CREDENTIAL_TYPE, SAMPLE)
    assert env == {"PGUSER": "k2_pg_user_sample", "PGPASSWORD": "K2pgSecret-sample-1",
                   "CLICKHOUSE_USER": "k2_ch_sample", "CLICKHOUSE_PASSWORD": "K2chSecret-sample-3"}
    assert extra["k2_pg_password"] == "K2pgSecret-sample-1"
    assert extra["k2_pg_admin_user"] == "k2_admin_sample"
    assert extra["k2_pg_admin_password"] == "K2adminSecret-sample-2"
    assert extra["k2_clickhouse_password"] == "K2chSecret-sample-3"
    assert extra["k2_prometheus_token"] == "K2promSecret-sample-4"
    prevention = (extra["k2_watermark_db_user"], extra["k2_watermark_db_password"])
    assert prevention == ("k2_pg_user_sample", "K2pgSecret-sample-1")
    # every extra var is one the playbooks declare (roles' argument specs and defaults)
    declared = set()
    for path in ("roles/watermark_recovery/meta/argument_specs.yml", "roles/watermark_cleanup/defaults/main.yml"):
        with open(os.path.join(awx.REPO, path)) as fh:
            declared |= set(re.findall(r"\b(k2_[a-z_]+)\b", fh.read()))
    assert set(extra) <= declared, set(extra) - declared


def test_optional_inputs_left_empty_take_the_playbooks_defaults():
    env, extra = awx.render_injectors(CREDENTIAL_TYPE, {"pg_user": "prefect", "pg_password": "x", "clickhouse_user": ""})
    assert extra["k2_pg_admin_user"] == "postgres" and extra["k2_clickhouse_user"] == "default"
    assert extra["k2_pg_admin_password"] == "" and extra["k2_prometheus_token"] == ""
    assert set(CREDENTIAL_TYPE["inputs"]["required"]) == {"pg_user", "pg_password"}


def test_awx_hides_every_injected_secret_in_the_recorded_environment():
    env = awx.render_injectors(CREDENTIAL_TYPE, SAMPLE)[0]
    shown = yaml.safe_dump(awx.awx_safe_env(env))
    for field in SECRET_FIELDS:
        assert SAMPLE[field] not in shown, field
    assert "k2_pg_user_sample" in shown   # a user name is not a secret


def test_surveys_ask_for_no_secret_and_default_to_the_plan():
    injected = set(awx.render_injectors(CREDENTIAL_TYPE, SAMPLE)[1])
    for jt in CONFIG["controller_templates"]:
        assert os.path.exists(os.path.join(awx.REPO, jt["playbook"])), jt["playbook"]
        questions = jt["survey_spec"]["spec"]
        assert not [q for q in questions if q["type"] == "password" or q["variable"] in injected], jt["name"]
        assert not [q for q in questions if re.search(r"pass|secret|token|key", q["variable"], re.I)], jt["name"]
        defaults = awx.survey_vars(jt)   # the defaults pass AWX's checks
        if "k2_execute" in defaults:
            assert defaults["k2_execute"] == "false", jt["name"]
    recover = awx.by_name(CONFIG["controller_templates"], "K2 recover")
    assert not recover["allow_simultaneous"]
    assert awx.survey_vars(recover, {"k2_execute": "true", "k2_scenarios": ["4"]})["k2_scenarios"] == ["4"]
    with pytest.raises(AssertionError):
        awx.survey_vars(recover, {"k2_execute": "yes"})


def test_workflow_is_diagnose_approval_recover_post_incident():
    wf = awx.by_name(CONFIG["controller_workflows"], "K2 IcebergOffloadWatermarkStale response")
    nodes = {n["identifier"]: n for n in wf["workflow_nodes"]}
    templates = {t["name"] for t in CONFIG["controller_templates"]}
    order, node = [], nodes["k2-diagnose"]
    while node:
        ujt = node["unified_job_template"]
        order.append(ujt["type"] if ujt["type"] == "workflow_approval" else ujt["name"])
        if ujt["type"] == "job_template":
            assert ujt["name"] in templates
        nxt = [n["identifier"] for kind in ("success_nodes", "always_nodes")
               for n in (node.get("related") or {}).get(kind, [])]
        assert len(nxt) <= 1
        node = nodes[nxt[0]] if nxt else None
    assert order == ["K2 diagnose", "workflow_approval", "K2 recover", "K2 post-incident"]
    # the approval is the execute switch, for the recovery and the post-incident repair
    for identifier, template in (("k2-recover", "K2 recover"), ("k2-post-incident", "K2 post-incident")):
        answers = awx.survey_vars(awx.by_name(CONFIG["controller_templates"], template), nodes[identifier]["extra_data"])
        assert answers["k2_execute"] == "true", identifier
    assert "extra_data" not in nodes["k2-diagnose"]


def test_project_requirements_name_every_collection_the_playbooks_use():
    with open(os.path.join(awx.REPO, "collections", "requirements.yml")) as fh:
        listed = [c["name"] for c in yaml.safe_load(fh)["collections"]]
    used = set()
    for root in ("roles", "playbooks"):
        for dirpath, _dirs, files in os.walk(os.path.join(awx.REPO, root)):
            for f in files:
                if f.endswith((".yml", ".yaml")):
                    with open(os.path.join(dirpath, f)) as fh:
                        used |= set(re.findall(r"\b([a-z_]+\.[a-z_]+)\.[a-z_]+\b", fh.read()))
    used = {u for u in used if u.split(".")[0] not in ("ansible", "k2") and u.count(".") == 1
            and u in ("community.docker", "community.postgresql", "community.general", "ansible.posix")}
    assert used <= set(listed), used - set(listed)
    assert any("iceberg_offload" in name for name in listed)
