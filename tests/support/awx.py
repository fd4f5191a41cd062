# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Run the collection's job templates the way AWX / AAP runs them, without an AWX server.

What AWX does for a job, and this module after it:
- the credential type's injectors are rendered with Jinja (a sandbox, the credential's inputs as
  the namespace; an input left empty is undefined) into environment variables and extra vars; the
  extra vars go to a file in the job's private data directory, passed as ``-e @file``;
- the job's extra vars are the template's, the survey's defaults, what the launch (or a workflow
  node, or the artifacts of the workflow's earlier jobs) gives; they go to ``env/extravars``;
- ansible-runner runs the playbook from the project directory: ``transmit`` packs the private data
  directory, ``worker`` (in the execution environment) unpacks and runs it, ``process`` turns the
  stream back into artifacts and events; ``set_stats`` data is in the ``playbook_on_stats`` event
  (``artifact_data``), which is what a workflow hands to the next node;
- the job's recorded environment hides every variable whose name matches AWX's
  /API|TOKEN|KEY|SECRET|PASS/ (``awx_safe_env``).
"""
import copy
import glob
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import time

import yaml
from jinja2.sandbox import ImmutableSandboxedEnvironment

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
AWX_CONFIG = os.path.join(REPO, "extensions", "awx", "controller_config.yml")
VENV_BIN = os.path.dirname(sys.executable)


class _Loader(yaml.SafeLoader):
    """YAML as Ansible reads our vars file: ``!unsafe`` is a string Ansible will not template."""


_Loader.add_constructor("!unsafe", lambda loader, node: loader.construct_scalar(node))


def load_config(path=AWX_CONFIG):
    with open(path) as fh:
        return yaml.load(fh, Loader=_Loader)


def by_name(items, name):
    for item in items:
        if item["name"] == name:
            return item
    raise KeyError(name)


# --- credential injection, as AWX's CredentialType.inject_credential -------------------------
def render_injectors(credential_type, inputs):
    """(env, extra_vars) from a credential type's injectors and a credential's inputs."""
    namespace = {}
    for field in credential_type["inputs"]["fields"]:
        value = inputs.get(field["id"])
        if field.get("type") == "boolean":
            namespace[field["id"]] = bool(value)
        elif value:   # AWX leaves an empty input out of the namespace: it is undefined
            namespace[field["id"]] = value
    sandbox = ImmutableSandboxedEnvironment()

    def render(node):
        if isinstance(node, dict):
            return {render(k): render(v) for k, v in node.items()}
        if isinstance(node, list):
            return [render(x) for x in node]
        return sandbox.from_string(node).render(**namespace)

    injectors = credential_type.get("injectors") or {}
    env = {k: sandbox.from_string(v).render(**namespace) for k, v in (injectors.get("env") or {}).items()}
    return env, render(injectors.get("extra_vars") or {})


_HIDDEN = re.compile(r"API|TOKEN|KEY|SECRET|PASS", re.I)
_URL_PASSWORD = re.compile(r"^.*?://[^:]+:(.*?)@.*?$")


def awx_safe_env(env):
    """The environment as AWX records it with a job (its build_safe_env rule)."""
    safe = {}
    for k, v in env.items():
        if k == "AWS_ACCESS_KEY_ID" or (k.startswith("ANSIBLE_") and not k.startswith("ANSIBLE_NET")
                                        and not k.startswith("ANSIBLE_GALAXY_SERVER")):
            safe[k] = v
        elif _HIDDEN.search(k):
            safe[k] = "**********"
        elif isinstance(v, str) and _URL_PASSWORD.match(v):
            safe[k] = _URL_PASSWORD.sub("**********", v)
        else:
            safe[k] = v
    return safe


# --- surveys ------------------------------------------------------------------------------
def survey_vars(template, answers=None):
    """The extra vars a launch with these survey answers gives (defaults for the rest), checked
    as AWX checks them: a choice among the choices, an integer within min/max, required present."""
    out = {}
    answers = dict(answers or {})
    spec = (template.get("survey_spec") or {}).get("spec") or []
    for q in spec:
        var = q["variable"]
        value = answers.pop(var, q.get("default"))
        if value in (None, "") and q.get("type") != "multiselect":
            assert not q.get("required"), "survey %s: %s is required" % (template["name"], var)
            continue
        if q["type"] == "multiplechoice":
            assert value in q["choices"], "survey %s: %r not among %r" % (template["name"], value, q["choices"])
        elif q["type"] == "multiselect":
            value = [v for v in (value if isinstance(value, list) else str(value or "").split("\n")) if v]
            assert all(v in q["choices"] for v in value), (var, value)
        elif q["type"] == "integer":
            value = int(value)
            assert q.get("min", value) <= value <= q.get("max", value), (var, value)
        elif q["type"] == "password":
            raise AssertionError("survey %s asks for a secret (%s): secrets belong in the credential"
                                 % (template["name"], var))
        out[var] = value
    assert not answers, "answers to questions the survey does not ask: %s" % sorted(answers)
    return out


# --- one job ------------------------------------------------------------------------------
class Job(object):
    def __init__(self, name, pdd, artifact_dir, rc, seconds, mode):
        self.name, self.pdd, self.artifact_dir, self.rc, self.seconds, self.mode = (
            name, pdd, artifact_dir, rc, seconds, mode)

    @property
    def events(self):
        out = []
        for path in glob.glob(os.path.join(self.artifact_dir, "job_events", "*.json")):
            with open(path) as fh:
                out.append(json.load(fh))
        return sorted(out, key=lambda e: e.get("counter", 0))

    @property
    def stdout(self):
        path = os.path.join(self.artifact_dir, "stdout")
        if os.path.exists(path):
            with open(path) as fh:
                return fh.read()
        return "\n".join(e.get("stdout", "") for e in self.events)

    @property
    def artifacts(self):
        """set_stats data, as AWX reads it: the playbook_on_stats event's artifact_data."""
        stats = [e for e in self.events if e.get("event") == "playbook_on_stats"]
        assert stats, "no playbook_on_stats event in %s" % self.artifact_dir
        return stats[-1]["event_data"].get("artifact_data") or {}

    @property
    def status(self):
        with open(os.path.join(self.artifact_dir, "status")) as fh:
            return fh.read().strip()

    def files(self):
        """Every file the job left on the controller's side (artifacts, events, stdout)."""
        return [p for p in glob.glob(os.path.join(self.artifact_dir, "**"), recursive=True) if os.path.isfile(p)]

    def __repr__(self):
        return "%s (%s) rc=%s in %.1f s\n%s" % (self.name, self.mode, self.rc, self.seconds, self.stdout[-6000:])


def prepare(workdir, template, inventory, credential_env, credential_vars, extra_vars, worker_dir,
            check=False):
    """A private data directory as AWX lays one out for a job of ``template``."""
    pdd = os.path.join(workdir, "pdd")
    for sub in ("project", "inventory", "env"):
        os.makedirs(os.path.join(pdd, sub), exist_ok=True)
    # The project: this repository's playbooks (AWX syncs the whole repository; the collection and
    # community.docker come from the collections path, as from the execution environment's).
    shutil.copytree(os.path.join(REPO, "playbooks"), os.path.join(pdd, "project", "playbooks"))
    with open(os.path.join(pdd, "inventory", "hosts.yml"), "w") as fh:
        yaml.safe_dump(inventory, fh)
    with open(os.path.join(pdd, "env", "extravars"), "w") as fh:
        yaml.safe_dump(extra_vars, fh)
    # The credential's extra vars: a file readable by its owner only, named on the command line
    # by its path inside the directory the worker runs in (AWX: /runner/env/tmpXXXX).
    cred_file = os.path.join(pdd, "env", "tmp_k2_credential")
    with open(cred_file, "w") as fh:
        yaml.safe_dump(credential_vars, fh)
    os.chmod(cred_file, stat.S_IRUSR)
    env = {"ANSIBLE_COLLECTIONS_PATH": collections_path(),
           "ANSIBLE_COLLECTIONS_SCAN_SYS_PATH": "False", "ANSIBLE_HOST_KEY_CHECKING": "False",
           "ANSIBLE_RETRY_FILES_ENABLED": "False", "ANSIBLE_FORCE_COLOR": "False", "ANSIBLE_NOCOLOR": "1",
           "PATH": VENV_BIN + os.pathsep + os.environ.get("PATH", "")}
    env.update(credential_env)
    with open(os.path.join(pdd, "env", "envvars"), "w") as fh:
        yaml.safe_dump(env, fh)
    cmdline = "-e @%s" % os.path.join(worker_dir, "env", "tmp_k2_credential")
    if check:
        cmdline += " --check"   # job type "check"
    with open(os.path.join(pdd, "env", "cmdline"), "w") as fh:
        fh.write(cmdline)
    return pdd


def run_job(workdir, template, inventory, credential, extra_vars, stream=True, check=False, timeout=900):
    """Run ``template``'s playbook as an AWX job. ``credential``: (credential type, inputs).
    stream=True: ansible-runner transmit | worker | process (AWX's path through receptor);
    False: ansible_runner.run in this process (the runner API a single node uses)."""
    os.makedirs(workdir, exist_ok=True)
    env, cred_vars = render_injectors(*credential)
    worker_dir = os.path.join(workdir, "worker")
    pdd = prepare(workdir, template, inventory, env, cred_vars, extra_vars,
                  worker_dir if stream else os.path.join(workdir, "pdd"), check=check)
    ident = "k2-%s" % re.sub(r"[^a-z0-9]+", "-", template["name"].lower()).strip("-")
    start = time.time()
    if stream:
        out_dir = os.path.join(workdir, "process")
        runner = os.path.join(VENV_BIN, "ansible-runner")
        pipeline = ("{r} transmit {pdd} -p {pb} --ident {ident} "
                    "| {r} worker --private-data-dir {w} "
                    "| {r} process {out} --ident {ident}").format(
            r=runner, pdd=pdd, pb=template["playbook"], ident=ident, w=worker_dir, out=out_dir)
        proc = subprocess.run(["bash", "-o", "pipefail", "-c", pipeline], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, timeout=timeout, cwd=workdir,
                              env=dict(os.environ, PATH=env_path()), check=False)
        with open(os.path.join(workdir, "runner-pipeline.log"), "wb") as fh:
            fh.write(proc.stdout)
        artifact_dir = os.path.join(out_dir, "artifacts", ident)
        rc_path = os.path.join(artifact_dir, "rc")
        rc = int(open(rc_path).read().strip()) if os.path.exists(rc_path) else proc.returncode
        job = Job(template["name"], pdd, artifact_dir, rc, time.time() - start, "transmit|worker|process")
        if not os.path.isdir(artifact_dir):
            raise AssertionError("runner pipeline failed (%d): %s" % (proc.returncode, proc.stdout[-4000:]))
        return job
    import ansible_runner
    r = ansible_runner.run(private_data_dir=pdd, playbook=template["playbook"], ident=ident, quiet=True)
    return Job(template["name"], pdd, r.config.artifact_dir, r.rc, time.time() - start, "ansible_runner.run")


def collections_path():
    """This checkout as k2.iceberg_offload, then the collections of the venv's ansible package
    (community.docker): the two places an execution environment's collections would be."""
    import ansible
    site = os.path.dirname(os.path.dirname(ansible.__file__))   # site-packages, holds ansible_collections/
    assert os.path.isdir(os.path.join(site, "ansible_collections", "community", "docker")), site
    return os.pathsep.join([os.path.join(REPO, ".collections"), site])


def env_path():
    return VENV_BIN + os.pathsep + os.environ.get("PATH", "")


def workflow_vars(artifacts, launch_vars=None):
    """A workflow node's extra vars: the template's survey answers and the node's prompts
    (``launch_vars``), then the earlier jobs' set_stats, which win."""
    out = copy.deepcopy(launch_vars or {})
    for a in artifacts:
        out.update(a)
    return out


def leaks(secrets, paths):
    """[(path, secret-label)] for every file in paths that holds a secret value."""
    found = []
    for path in paths:
        try:
            with open(path, "rb") as fh:
                data = fh.read()
        except (IsADirectoryError, FileNotFoundError):
            continue
        for label, value in secrets.items():
            if value and value.encode() in data:
                found.append((path, label))
    return found
