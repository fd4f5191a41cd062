# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""incident_notify against real receivers on 127.0.0.1 (tests/support/receivers.py): an SMTP
server (aiosmtpd; plain, STARTTLS and TLS from the first byte, with a login), HTTP servers that
take, refuse (HTTP 500, 404) or never answer, and a port nothing listens on.

What is checked: what arrives (the e-mail with its subject, summary and report files; the JSON and
Slack bodies with the bearer token), that a channel that does not answer is a result and never a
failure, that a malformed channel fails the module before anything is sent, check mode and
validate_only send nothing, and that no secret (the SMTP password, the token, the webhook URL's
path) is in anything the module returns, nor in what ansible-playbook -vvv prints and logs when the
role's tasks/notify.yml sends.
"""
import json
import os
import subprocess
import sys
import time
import uuid

import pytest
import yaml

from tests.support.ansible_module import ANSIBLE_PLAYBOOK, ansible_env, run_module
from tests.support.receivers import HTTPReceiver, SilentReceiver, SMTPReceiver, closed_port, self_signed

TOKEN = uuid.uuid4().hex[:10]
# Letters and digits only, so that no quoting or encoding could hide one from the search.
SMTP_PASSWORD = "K2smtpSecret" + TOKEN
BEARER = "K2hookToken" + TOKEN
URL_SECRET = "K2urlSecret" + TOKEN
SLACK_SECRET = "K2slackPath" + TOKEN
SECRETS = [SMTP_PASSWORD, BEARER, URL_SECRET, SLACK_SECRET]
HOOK_PATH = "/hooks/k2/" + URL_SECRET
SLACK_PATH = "/services/T0K2/B0K2/" + SLACK_SECRET

MESSAGE = {
    "event": "escalation",
    "title": "IcebergOffloadWatermarkStale: Scenario 4 needs a person",
    "outcome": "ESCALATE",
    "summary": ["bronze_trades_binance: watermark behind the cold tier", "bronze_trades_kraken: verified"],
    "escalations": [{"scenario": 4, "reason": "copies of a key differ", "action": "choose k2_dedupe_conflict"}],
    "state_left": {"scheduler": "stopped"},
    "data": {"scenario": "scenario_4", "tables": ["bronze_trades_binance"]},
    "report_url": "https://awx.k2.test/#/jobs/playbook/42/output",
}


@pytest.fixture
def smtp():
    with SMTPReceiver() as server:
        yield server


@pytest.fixture
def hook():
    with HTTPReceiver() as server:
        yield server


@pytest.fixture
def reports(tmp_path):
    """The report files a run leaves: JSON, Markdown, and a JSON too large to attach."""
    paths = {"json": tmp_path / "recovery-20261128T101500Z.json", "md": tmp_path / "recovery-20261128T101500Z.md",
             "big": tmp_path / "cold-tier-dump.json"}
    paths["json"].write_text(json.dumps({"outcome": "ESCALATE", "scenario": "scenario_4"}))
    paths["md"].write_text("# Recovery\n\nScenario 4 escalates.\n")
    with open(str(paths["big"]), "wb") as fh:
        fh.write(b"[" + b"0," * (3 * 1024 * 1024) + b"0]")  # 6 MiB
    return dict((k, str(v)) for k, v in paths.items())


def email_channel(server, **extra):
    channel = {"type": "email", "name": "on-call mail", "smtp_host": "127.0.0.1", "smtp_port": server.port,
               "smtp_user": "k2-alerts", "smtp_password": SMTP_PASSWORD, "from": "k2-alerts@k2.test",
               "to": ["oncall@k2.test", "dba@k2.test"]}
    channel.update(extra)
    return channel


def webhook_channel(server, path=HOOK_PATH, **extra):
    channel = {"type": "webhook", "name": "incident tracker", "url": server.base_url + path, "token": BEARER}
    channel.update(extra)
    return channel


def notify(channels, check=False, env=None, **extra):
    args = dict(MESSAGE, channels=channels)
    args.update(extra)
    result = run_module("incident_notify", args, check=check, env=env)
    assert_no_secret(result["_stdout"])
    return result


def assert_no_secret(text):
    found = [s for s in SECRETS if s in text]
    assert not found, "secret(s) %s in: %s" % (found, text[:3000])


def test_email_arrives_with_subject_summary_and_report_files(smtp, reports):
    result = notify([email_channel(smtp)], attachments=[reports["json"], reports["md"], reports["big"]])
    assert not result["failed"], result
    assert result["changed"] and result["sent"] == 1 and result["undelivered"] == 0
    (r,) = result["results"]
    assert r["ok"] and r["status"] == "delivered" and r["error"] is None, r
    assert r["target"] == "127.0.0.1:%d" % smtp.port and r["name"] == "on-call mail"
    assert result["lines"] == ["on-call mail (email 127.0.0.1:%d): delivered in %.1f s" % (smtp.port, r["seconds"])]

    assert smtp.logins == [("k2-alerts", SMTP_PASSWORD)]
    (got,) = smtp.messages
    assert sorted(got["rcpt_tos"]) == ["dba@k2.test", "oncall@k2.test"] and got["mail_from"] == "k2-alerts@k2.test"
    mail = got["message"]
    assert mail["Subject"] == "[k2.iceberg_offload escalation] %s - ESCALATE" % MESSAGE["title"]
    assert mail["From"] == "k2-alerts@k2.test" and mail["X-K2-Event"] == "escalation"
    body = mail.get_body(("plain",)).get_content()
    for line in MESSAGE["summary"] + [MESSAGE["report_url"], "copies of a key differ", "scheduler: stopped"]:
        assert line in body, body
    # the big file is named in the body, not attached
    assert "Not attached (6.0 MiB, over the 5 MiB cap): %s" % reports["big"] in body, body
    attached = dict((part.get_filename(), part) for part in mail.iter_attachments())
    assert sorted(attached) == sorted([os.path.basename(reports["json"]), os.path.basename(reports["md"])])
    assert json.loads(attached[os.path.basename(reports["json"])].get_content()) == {
        "outcome": "ESCALATE", "scenario": "scenario_4"}
    assert attached[os.path.basename(reports["json"])].get_content_type() == "application/json"
    md = attached[os.path.basename(reports["md"])]
    assert md.get_content_type() == "text/markdown" and "Scenario 4 escalates." in md.get_content()
    assert_no_secret(got["raw"].decode("utf-8", "replace"))


def test_email_over_starttls_and_over_tls(tmp_path):
    """The certificate is verified: trusted through SSL_CERT_FILE it is taken; otherwise the channel
    says why it did not send."""
    cert = self_signed(tmp_path)
    with SMTPReceiver(cert=cert, starttls=True) as starttls, SMTPReceiver(cert=cert, implicit_tls=True) as tls, \
            SMTPReceiver() as plain:
        channels = [email_channel(starttls, name="starttls", smtp_security="starttls"),
                    email_channel(tls, name="tls", smtp_security="ssl"),
                    email_channel(plain, name="plain asked for starttls", smtp_security="starttls")]
        result = notify(channels, env={"SSL_CERT_FILE": cert[0]})
        assert not result["failed"], result
        by_name = dict((r["name"], r) for r in result["results"])
        assert by_name["starttls"]["ok"] and by_name["tls"]["ok"], result["results"]
        assert len(starttls.messages) == 1 and len(tls.messages) == 1
        assert starttls.logins == [("k2-alerts", SMTP_PASSWORD)] and tls.logins == [("k2-alerts", SMTP_PASSWORD)]
        bad = by_name["plain asked for starttls"]
        assert not bad["ok"] and "does not offer STARTTLS" in bad["error"], bad
        assert plain.messages == [] and plain.logins == []

        untrusted = notify([email_channel(tls, name="tls", smtp_security="ssl")])
        (r,) = untrusted["results"]
        assert not r["ok"] and "certificate is not trusted" in r["error"], r
        assert len(tls.messages) == 1


def test_json_and_slack_webhooks_arrive_with_their_bodies_and_the_bearer_token(hook, reports):
    with HTTPReceiver() as slack:
        channels = [webhook_channel(hook), webhook_channel(slack, SLACK_PATH, name="incidents channel",
                                                           format="slack", token=None)]
        result = notify(channels, attachments=[reports["json"], reports["md"]])
    assert not result["failed"] and result["sent"] == 2 and result["changed"], result
    assert [r["target"] for r in result["results"]] == [hook.base_url, slack.base_url]

    (got,) = hook.requests
    assert got["path"] == HOOK_PATH
    assert got["headers"]["authorization"] == "Bearer " + BEARER
    assert got["headers"]["content-type"] == "application/json"
    assert got["json"] == {
        "source": "k2.iceberg_offload", "event": "escalation", "outcome": "ESCALATE", "title": MESSAGE["title"],
        "summary": MESSAGE["summary"], "escalations": MESSAGE["escalations"], "state_left": {"scheduler": "stopped"},
        "report": {"paths": [reports["json"], reports["md"]], "url": MESSAGE["report_url"]},
        "data": MESSAGE["data"]}

    (got,) = slack.requests
    assert got["path"] == SLACK_PATH and "authorization" not in got["headers"]
    body = got["json"]
    assert body["text"] == "%s - ESCALATE" % MESSAGE["title"]
    texts = [b["text"]["text"] for b in body["blocks"]]
    assert all(b["type"] == "section" and b["text"]["type"] == "mrkdwn" for b in body["blocks"])
    assert texts[0].startswith("*%s*" % MESSAGE["title"]) and "ESCALATE" in texts[0]
    assert any(MESSAGE["summary"][0] in t for t in texts)
    assert any("<%s|Open the report>" % MESSAGE["report_url"] in t and reports["md"] in t for t in texts)
    assert all(len(t) <= 3000 for t in texts)


def test_channels_that_do_not_answer_are_results_not_failures(smtp, hook):
    """Refused, hung, HTTP 500 (echoing the URL it was asked), HTTP 404, a redirect: each is ok=false
    with a readable error; the module does not fail and the channel that answers still gets it."""
    def echo(request):
        return ("no handler for %s (token %s)" % (request["path"], request["headers"].get("authorization"))).encode()

    with SilentReceiver() as silent, HTTPReceiver(status=500, answer=echo) as broken, \
            HTTPReceiver(status=404, answer=lambda request: b"no_service") as gone, \
            HTTPReceiver(status=307, location="/elsewhere") as moved:
        refused = closed_port()
        channels = [
            webhook_channel(hook, name="good"),
            webhook_channel(broken, name="http 500"),
            webhook_channel(gone, SLACK_PATH, name="slack gone", format="slack"),
            dict(webhook_channel(hook, name="refused"), url="http://127.0.0.1:%d%s" % (refused, HOOK_PATH)),
            dict(webhook_channel(hook, name="hung hook"), url="http://127.0.0.1:%d%s" % (silent.port, HOOK_PATH)),
            email_channel(smtp, name="hung mail", smtp_port=silent.port),
            email_channel(smtp, name="refused mail", smtp_port=refused),
            webhook_channel(moved, name="moved"),
        ]
        start = time.time()
        result = notify(channels, timeout=2)
        took = time.time() - start
    assert not result["failed"], result
    assert result["sent"] == 1 and result["undelivered"] == 7 and result["changed"], result
    by_name = dict((r["name"], r) for r in result["results"])
    assert by_name["good"]["ok"] and len(hook.requests) == 1
    errors = dict((name, r["error"]) for name, r in by_name.items() if name != "good")
    assert all(not by_name[name]["ok"] and by_name[name]["status"] == "not delivered" for name in errors)
    assert errors["http 500"].startswith("%s answered HTTP 500" % broken.base_url), errors
    assert "no handler for" in errors["http 500"] and "********" in errors["http 500"], errors
    assert errors["slack gone"] == "%s answered HTTP 404 Not Found: no_service" % gone.base_url
    assert errors["refused"] == "http://127.0.0.1:%d refused the connection (nothing listens there?)" % refused
    assert errors["hung hook"] == "http://127.0.0.1:%d did not answer within 2 s (timeout)" % silent.port
    assert errors["hung mail"] == "127.0.0.1:%d did not answer within 2 s (timeout)" % silent.port
    assert errors["refused mail"] == "127.0.0.1:%d refused the connection (nothing listens there?)" % refused
    # a redirect is not followed: the token would go along to wherever it points
    assert errors["moved"].startswith("%s answered HTTP 307" % moved.base_url) and "not followed" in errors["moved"]
    assert [r["path"] for r in moved.requests] == [HOOK_PATH]
    assert by_name["hung hook"]["seconds"] < 5 and by_name["hung mail"]["seconds"] < 5
    assert took < 60, took
    assert result["msg"] == ("1 of 8 channels delivered; NOT delivered: http 500, slack gone, refused, hung hook, "
                             "hung mail, refused mail, moved")
    assert [line for line in result["lines"] if "NOT delivered" in line][0].startswith(
        "http 500 (webhook %s): NOT delivered: " % broken.base_url)
    assert smtp.messages == []


@pytest.mark.parametrize("bad,expected", [
    ({"type": "webhook", "name": "bad hook", "url": "ftp://hooks.k2.test" + HOOK_PATH},
     "channels[2] (bad hook): url must start with http:// or https://, not ftp://"),
    ({"type": "webhook", "name": "no host", "url": "https:///services/" + URL_SECRET},
     "channels[2] (no host): url has no host"),
    ({"type": "email", "name": "bad address", "smtp_host": "127.0.0.1", "from": "k2@k2.test", "to": ["oncall"]},
     "channels[2] (bad address): not an e-mail address (user@domain): to[0] 'oncall'"),
    ({"type": "email", "smtp_host": "127.0.0.1", "from": "k2@k2.test", "to": []},
     "channels[2]: to is empty"),
    ({"type": "email", "name": "port", "smtp_host": "127.0.0.1", "smtp_port": "smtp", "from": "k2@k2.test",
      "to": ["a@k2.test"]}, "channels[2] (port): smtp_port 'smtp' is not a port number (1-65535)"),
    ({"type": "email", "name": "injection", "smtp_host": "127.0.0.1", "from": "k2@k2.test",
      "to": ["a@k2.test\r\nBcc: all@k2.test"]}, "channels[2] (injection): to contains a line break"),
    ({"type": "email", "name": "password injection", "smtp_host": "127.0.0.1", "from": "k2@k2.test",
      "to": ["a@k2.test"], "smtp_user": "u", "smtp_password": SMTP_PASSWORD + "\r\nRCPT TO:<x@y>"},
     "channels[2] (password injection): smtp_password contains a line break"),
], ids=["ftp-url", "no-host", "address", "empty-to", "port", "header-injection", "secret-with-crlf"])
def test_a_malformed_channel_fails_the_module_and_nothing_is_sent(smtp, hook, bad, expected):
    result = notify([webhook_channel(hook), email_channel(smtp), bad])
    assert result["failed"] and not result.get("changed"), result
    assert expected in result["msg"] and "nothing was sent" in result["msg"], result["msg"]
    assert hook.requests == [] and smtp.messages == [] and smtp.logins == []


def test_check_mode_and_validate_only_send_nothing(smtp, hook):
    channels = [webhook_channel(hook), email_channel(smtp)]
    checked = notify(channels, check=True)
    assert not checked["failed"] and checked["changed"] and checked["sent"] == 0, checked
    assert [r["status"] for r in checked["results"]] == ["not sent (check mode)"] * 2
    assert checked["lines"][0] == "incident tracker (webhook %s): not sent (check mode)" % hook.base_url
    validated = notify(channels, validate_only=True)
    assert not validated["failed"] and not validated["changed"], validated
    assert [r["status"] for r in validated["results"]] == ["not sent (validate_only)"] * 2
    assert hook.requests == [] and smtp.messages == [] and smtp.logins == []
    nothing = notify([])
    assert not nothing["failed"] and not nothing["changed"] and nothing["results"] == []


def test_the_role_reports_each_channel_and_no_secret_reaches_the_output_at_vvv(smtp, hook, reports, tmp_path):
    """roles/watermark_recovery/tasks/notify.yml at -vvv, secrets given as a vault would (-e @file, 0600):
    one channel delivered, one refused (its URL path echoed back by the server), one not answering; the play
    succeeds, prints one line per channel, and neither its output nor its log holds a secret."""
    def echo(request):
        return ("rejected %s" % request["path"]).encode()

    with HTTPReceiver(status=500, answer=echo) as broken:
        variables = {
            "k2_notify_channels": [
                email_channel(smtp),
                webhook_channel(hook),
                webhook_channel(broken, SLACK_PATH, name="incidents channel", format="slack"),
                dict(webhook_channel(hook, name="gone"), url="http://127.0.0.1:%d%s" % (closed_port(), HOOK_PATH)),
            ],
            "k2_notify_timeout": 3,
            "k2_report_url": MESSAGE["report_url"],
            "_watermark_recovery_notify": dict(MESSAGE, attachments=[reports["json"], reports["md"]]),
        }
        vars_file = tmp_path / "vault.json"
        fd = os.open(str(vars_file), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(variables, fh)
        playbook = tmp_path / "notify.yml"
        playbook.write_text(yaml.safe_dump([{
            "name": "Notify", "hosts": "localhost", "gather_facts": False,
            "tasks": [{"name": "Notify", "ansible.builtin.include_role": {
                "name": "k2.iceberg_offload.watermark_recovery", "tasks_from": "notify"}}]}]))
        log = tmp_path / "ansible.log"
        proc = subprocess.run(
            [ANSIBLE_PLAYBOOK, "-vvv", "-i", "localhost,", "-c", "local", str(playbook),
             "-e", "ansible_python_interpreter=" + sys.executable, "-e", "@" + str(vars_file)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=300, check=False,
            env=ansible_env({"ANSIBLE_STDOUT_CALLBACK": "default", "ANSIBLE_LOG_PATH": str(log),
                             "ANSIBLE_NOCOLOR": "1"}))
    out = proc.stdout.decode("utf-8", "replace")
    assert proc.returncode == 0, out[-6000:]
    assert_no_secret(out)
    assert_no_secret(log.read_text(errors="replace"))
    assert "on-call mail (email 127.0.0.1:%d): delivered in" % smtp.port in out, out[-6000:]
    assert "incident tracker (webhook %s): delivered in" % hook.base_url in out
    assert "incidents channel (webhook %s): NOT delivered: %s answered HTTP 500" % (
        broken.base_url, broken.base_url) in out
    assert "gone (webhook http://127.0.0.1:" in out and "refused the connection" in out
    assert len(smtp.messages) == 1 and len(hook.requests) == 1 and len(broken.requests) == 1
    assert hook.requests[0]["json"]["report"]["url"] == MESSAGE["report_url"]
    assert [p.get_filename() for p in smtp.messages[0]["message"].iter_attachments()] == [
        os.path.basename(reports["json"]), os.path.basename(reports["md"])]


@pytest.mark.parametrize("channels,message", [
    ([{"type": "pager", "url": "https://x.k2.test/h"}], "value of type must be one of: email, webhook"),
    ([{"type": "webhook", "url": "https://x.k2.test/h", "bearer": "x"}], "bearer"),
    ([{"type": "email", "smtp_host": "h", "from": "a@k2.test", "to": "b@k2.test", "validate_certs": "maybe"}],
     "validate_certs"),
], ids=["type", "unknown-key", "bool"])
def test_the_role_refuses_malformed_channels_before_any_task(tmp_path, channels, message):
    """meta/argument_specs.yml: k2_notify_channels is checked when the role's main entry point starts."""
    playbook = tmp_path / "main.yml"
    playbook.write_text(yaml.safe_dump([{"hosts": "localhost", "gather_facts": False,
                                         "roles": [{"role": "k2.iceberg_offload.watermark_recovery"}]}]))
    vars_file = tmp_path / "vars.json"
    vars_file.write_text(json.dumps({"k2_notify_channels": channels}))
    proc = subprocess.run([ANSIBLE_PLAYBOOK, "--check", "-i", "localhost,", "-c", "local", str(playbook),
                           "-e", "@" + str(vars_file)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          timeout=300, check=False, env=ansible_env({"ANSIBLE_STDOUT_CALLBACK": "default",
                                                                     "ANSIBLE_NOCOLOR": "1"}))
    out = proc.stdout.decode("utf-8", "replace")
    assert proc.returncode != 0 and "k2_notify_channels" in out and message in out, out[-4000:]
    assert '"argument_spec_name": "main"' in out and "Preflight" not in out, out[-4000:]
