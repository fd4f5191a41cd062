# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""extensions/awx/controller_config.yml is what awx.awx (and infra.aap_configuration) reads:
every item passes the argument spec of its awx.awx module; the credential type injects what the
playbooks read and AWX hides its secrets; surveys ask for no secret and default to the plan;
the workflow is diagnose -> approval -> recover -> post-incident; the notification templates are what
AWX's notification backends take, with their secrets from the vault. No AWX server, no lab."""
import importlib
import json
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
    "controller_notifications": "notification_template",
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


# What AWX's notification backends take in notification_configuration (awx/main/notifications/
# email_backend.py, webhook_backend.py, slack_backend.py: init_parameters, and slack's hex_color
# argument): field -> (type, required). A field with a default there is optional; AWX refuses a
# configuration that lacks a required field or gives one of the wrong type, and encrypts the
# "password" fields (the only place a secret is stored unreadable).
AWX_NOTIFICATION_FIELDS = {
    "email": {"host": ("string", True), "port": ("int", True), "username": ("string", True),
              "password": ("password", True), "use_tls": ("bool", True), "use_ssl": ("bool", True),
              "sender": ("string", True), "recipients": ("list", True), "timeout": ("int", False)},
    "webhook": {"url": ("string", True), "headers": ("object", True), "http_method": ("string", False),
                "disable_ssl_verification": ("bool", False), "username": ("string", False),
                "password": ("password", False)},
    "slack": {"token": ("password", True), "channels": ("list", True), "hex_color": ("string", False)},
}
_PYTHON_TYPES = {"string": str, "password": str, "int": int, "bool": bool, "list": list, "object": dict}
_TEMPLATE = re.compile(r"\A\{\{\s*([a-z0-9_]+)\s*\}\}\Z")


def _site_value(value):
    """A value as the configure play renders it: a whole-value template of a site variable of this
    file is that variable's value; a vault variable is a string."""
    match = _TEMPLATE.match(value) if isinstance(value, str) else None
    if match and match.group(1).startswith("vault_"):
        return "vault value"
    if match:
        return CONFIG[match.group(1)]
    return value


@pytest.mark.parametrize("item", CONFIG["controller_notifications"], ids=lambda item: item["name"])
def test_notification_configuration_is_what_awx_takes(item):
    fields = AWX_NOTIFICATION_FIELDS[item["notification_type"]]
    conf = item["notification_configuration"]
    assert set(conf) <= set(fields), set(conf) - set(fields)
    missing = [f for f, (_kind, required) in fields.items() if required and f not in conf]
    assert not missing, missing
    for field, value in conf.items():
        kind = fields[field][0]
        rendered = _site_value(value)
        assert isinstance(rendered, _PYTHON_TYPES[kind]) and not (kind == "int" and isinstance(rendered, bool)), \
            (item["name"], field, value)
    if item["notification_type"] == "email":
        assert not (conf["use_tls"] and conf["use_ssl"]), "Django's SMTP backend takes one of use_tls, use_ssl"
        assert all("@" in a for a in _site_value(conf["recipients"])) and "@" in _site_value(conf["sender"])
    if item["notification_type"] == "webhook":
        assert _site_value(conf.get("http_method", "POST")) in ("POST", "PUT")
        assert conf.get("disable_ssl_verification") is not True


def test_notification_secrets_come_from_the_vault_and_only_where_awx_encrypts_them():
    for item in CONFIG["controller_notifications"]:
        fields = AWX_NOTIFICATION_FIELDS[item["notification_type"]]
        conf = item["notification_configuration"]
        for field, value in conf.items():
            secret = fields[field][0] == "password" or (item["notification_type"] == "webhook" and field == "url")
            match = _TEMPLATE.match(value) if isinstance(value, str) else None
            if secret:
                assert match and match.group(1).startswith("vault_k2_"), (item["name"], field, value)
            else:   # AWX shows these to whoever reads the template: no secret, no vault value
                assert "vault_" not in json.dumps(value), (item["name"], field)
        headers = json.dumps(conf.get("headers") or {})
        assert not re.search(r"authorization|token|secret|pass", headers, re.I), (item["name"], headers)


def test_templates_and_the_workflow_name_existing_notification_templates():
    names = {item["name"] for item in CONFIG["controller_notifications"]}
    assert len(names) == len(CONFIG["controller_notifications"])
    attached = {}
    for item in CONFIG["controller_templates"] + CONFIG["controller_workflows"]:
        for key, value in item.items():
            if key.startswith("notification_templates_"):
                assert set(value) <= names, (item["name"], key, set(value) - names)
                attached.setdefault(item["name"], {})[key] = value
    recover, post = attached["K2 recover"], attached["K2 post-incident"]
    # a failed recovery or post-incident reaches every channel; a success is recorded
    assert set(recover["notification_templates_error"]) == names == set(post["notification_templates_error"])
    assert recover["notification_templates_success"] and "K2 on-call e-mail" in post["notification_templates_success"]
    workflow = attached["K2 IcebergOffloadWatermarkStale response"]
    assert "K2 on-call e-mail" in workflow["notification_templates_approvals"]
    assert "K2 diagnose" not in attached   # diagnoses are many (EDA runs one per alert group) and change nothing


def test_configure_applies_every_object_before_what_names_it():
    with open(os.path.join(awx.REPO, "extensions", "awx", "configure.yml")) as fh:
        tasks = yaml.safe_load(fh)[0]["tasks"]
    order = [re.search(r"controller_[a-z_]+", t["loop"]).group(0) for t in tasks]
    assert sorted(order) == sorted(MODULES), order
    for task, variable in zip(tasks, order):
        assert "awx.awx.%s" % MODULES[variable] in task, task
    assert order.index("controller_notifications") < order.index("controller_templates") < order.index(
        "controller_workflows")
    notifications = tasks[order.index("controller_notifications")]
    assert notifications["no_log"] is True   # the items hold the vault's secrets
