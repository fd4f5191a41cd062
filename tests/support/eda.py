# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""ansible-rulebook with the collection's rulebook, and Debian's Alertmanager, started on 127.0.0.1
for a test and stopped by their process ids."""
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request

import yaml

from tests.support import awx

RULEBOOK = "k2.iceberg_offload.iceberg_offload_watermark_stale"


class Process(object):
    def __init__(self, name, cmd, log_path, env=None, cwd=None):
        self.name, self.log_path = name, log_path
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                     start_new_session=True)

    def log(self):
        with open(self.log_path, errors="replace") as fh:
            return fh.read()

    def alive(self):
        return self.proc.poll() is None

    def stop(self):
        if self.alive():
            # its own session: the playbooks ansible-rulebook started go with it
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self._log.close()


def wait_for_port(port, proc, timeout=90):
    start = time.time()
    while time.time() - start < timeout:
        if not proc.alive():
            raise AssertionError("%s exited:\n%s" % (proc.name, proc.log()[-4000:]))
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return time.time() - start
        time.sleep(0.5)
    raise AssertionError("%s did not listen on %d in %d s:\n%s" % (proc.name, port, timeout, proc.log()[-4000:]))


def start_rulebook(workdir, inventory, variables):
    """ansible-rulebook -r k2.iceberg_offload.iceberg_offload_watermark_stale (found in the
    installed collection) -i INVENTORY --vars VARS."""
    vars_file = os.path.join(workdir, "k2-eda-vars.yml")
    with open(vars_file, "w") as fh:
        yaml.safe_dump(variables, fh)
    os.chmod(vars_file, 0o600)
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=awx.collections_path(), PATH=awx.env_path(),
               ANSIBLE_HOST_KEY_CHECKING="False", ANSIBLE_NOCOLOR="1")
    proc = Process("ansible-rulebook", [os.path.join(awx.VENV_BIN, "ansible-rulebook"), "-r", RULEBOOK,
                                        "-i", inventory, "--vars", vars_file, "-v"],
                   os.path.join(workdir, "ansible-rulebook.log"), env=env, cwd=workdir)
    wait_for_port(int(variables["k2_eda_webhook_port"]), proc)
    return proc


def start_alertmanager(workdir, port, webhook_url, token, repeat_interval="10s"):
    """Debian's prometheus-alertmanager on 127.0.0.1:port, one route (group by alertname) to the
    rulebook's webhook with a bearer token; clustering off."""
    binary = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    assert binary, "prometheus-alertmanager is not installed (make setup installs it)"
    token_file = os.path.join(workdir, "eda-token")
    with open(token_file, "w") as fh:
        fh.write(token)
    os.chmod(token_file, 0o600)
    config = {
        "route": {"receiver": "k2-eda", "group_by": ["alertname"], "group_wait": "1s", "group_interval": "5s",
                  "repeat_interval": repeat_interval},
        "receivers": [{"name": "k2-eda", "webhook_configs": [{
            "url": webhook_url, "send_resolved": True,
            "http_config": {"authorization": {"type": "Bearer", "credentials_file": token_file}}}]}],
    }
    cfg = os.path.join(workdir, "alertmanager.yml")
    with open(cfg, "w") as fh:
        yaml.safe_dump(config, fh)
    data = os.path.join(workdir, "alertmanager-data")
    os.makedirs(data, exist_ok=True)
    proc = Process("alertmanager", [binary, "--config.file=" + cfg, "--storage.path=" + data,
                                    "--web.listen-address=127.0.0.1:%d" % port, "--cluster.listen-address="],
                   os.path.join(workdir, "alertmanager.log"))
    wait_for_port(port, proc)
    return proc


def webhook_notifications(port):
    """How many notifications Alertmanager has sent to webhooks (its own counter)."""
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=5) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith("alertmanager_notifications_total{") and 'integration="webhook"' in line:
                return int(float(line.rsplit(" ", 1)[1]))
    return 0


def notification(group_key, tables, status="firing", alertname="IcebergOffloadWatermarkStale"):
    """An Alertmanager webhook notification (version 4) for these tables' alerts."""
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    alerts = [{"status": status, "labels": {"alertname": alertname, "table": t, "severity": "critical"},
               "annotations": {"summary": "Iceberg offload watermark for %s not updated" % t},
               "startsAt": now, "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "",
               "fingerprint": "%016x" % (hash((alertname, t)) & 0xFFFFFFFFFFFFFFFF)} for t in tables]
    return {"version": "4", "groupKey": group_key, "truncatedAlerts": 0, "status": status, "receiver": "k2-eda",
            "groupLabels": {"alertname": alertname}, "commonLabels": {"alertname": alertname},
            "commonAnnotations": {}, "externalURL": "http://127.0.0.1", "alerts": alerts}


def post(port, token, payload, path="alertmanager"):
    req = urllib.request.Request("http://127.0.0.1:%d/%s" % (port, path), data=json.dumps(payload).encode(),
                                 headers={"Content-Type": "application/json", "Authorization": "Bearer " + token},
                                 method="POST")
    with urllib.request.urlopen(req, timeout=10) as resp:
        return resp.status
