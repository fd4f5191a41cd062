# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Notification channels without a server: which channels are refused and what the refusal says
(never a secret, a URL's path or query), the JSON and Slack bodies, the e-mail, how a failure of
the far end reads, and what is secret. tests/integration/test_incident_notify.py sends for real."""
import json
import smtplib
import socket
import ssl
from email import policy
from email.parser import BytesParser
from io import BytesIO
from urllib.error import HTTPError, URLError

import pytest

from ansible_collections.k2.iceberg_offload.plugins.module_utils import notify as n
from ansible_collections.k2.iceberg_offload.plugins.module_utils import notify_channels as nc
from ansible_collections.k2.iceberg_offload.plugins.module_utils import notify_message as nm
from ansible_collections.k2.iceberg_offload.plugins.module_utils import redaction
from ansible_collections.k2.iceberg_offload.plugins.modules import incident_notify

PASSWORD = "K2unitSmtpPassword91"
TOKEN = "K2unitBearerToken42"
PATH_SECRET = "K2unitPathSecretXOXBabcdef"
QUERY_SECRET = "K2unitQuerySig77"
SECRETS = (PASSWORD, TOKEN, PATH_SECRET, QUERY_SECRET)
SLACK_URL = "https://hooks.slack.example/services/T0K2/B0K2/" + PATH_SECRET

EMAIL = {"type": "email", "name": "ops mail", "smtp_host": "smtp.k2.test", "smtp_port": 587,
         "smtp_security": "starttls", "smtp_user": "k2", "smtp_password": PASSWORD, "from": "k2@k2.test",
         "to": ["oncall@k2.test"]}
HOOK = {"type": "webhook", "name": "slack", "url": SLACK_URL, "format": "slack", "token": TOKEN}

MESSAGE = {"event": "escalation", "title": "Scenario 4 needs a person", "outcome": "ESCALATE",
           "summary": ["bronze_trades_binance: 3 duplicated keys", "a <b> & c"],
           "escalations": [{"scenario": 4, "reason": "copies differ"}, "call the DBA"],
           "state_left": {"scheduler": "stopped"}, "data": {"scenario": "scenario_4"},
           "attachments": ["/var/tmp/k2/recovery.json", "/var/tmp/k2/recovery.md"],
           "report_url": "https://awx.k2.test/#/jobs/playbook/42/output"}


def assert_clean(text):
    text = json.dumps(text) if not isinstance(text, str) else text
    assert not [s for s in SECRETS if s in text], text


# --- validation -------------------------------------------------------------------------------------
def test_valid_channels_have_no_problem():
    assert nc.validate([EMAIL, HOOK, {"type": "webhook", "url": "http://127.0.0.1:8080/hook"},
                       {"type": "email", "smtp_host": "10.0.0.5", "from": "root@localhost", "to": "a@b.test"}]) == []
    assert nc.validate([]) == [] and nc.validate(None) == []


def test_unset_options_of_the_other_type_are_fine_as_ansible_passes_them():
    """Ansible gives every sub-option of a list of dicts, None when unset."""
    full = dict((k, None) for k in nc.COMMON_KEYS + nc.EMAIL_KEYS + nc.WEBHOOK_KEYS)
    assert nc.validate([dict(full, **HOOK), dict(full, **EMAIL)]) == []


MALFORMED = [
    ({"type": "sms", "name": "pager"}, "channels[0] (pager): type 'sms' is not one of email, webhook"),
    ({"name": "untyped", "url": SLACK_URL}, "channels[0] (untyped): type is missing"),
    ({"type": ["email"]}, "channels[0]: type ['email'] is not one of email, webhook"),
    (dict(HOOK, url="ftp://hooks.k2.test/" + PATH_SECRET), "channels[0] (slack): url must start with http:// or https://"),
    (dict(HOOK, url="hooks.k2.test/" + PATH_SECRET), "url must start with http:// or https://, not without a scheme"),
    (dict(HOOK, url="https:///services/" + PATH_SECRET), "channels[0] (slack): url has no host"),
    (dict(HOOK, url="https://hooks.k2.test:99999/" + PATH_SECRET), "url is not a URL that can be parsed"),
    (dict(HOOK, url="https://k2:%s@hooks.k2.test/x" % PASSWORD), "url carries user information"),
    (dict(HOOK, url="https://hooks.k2.test/%s\r\nX-Evil: 1" % PATH_SECRET), "url contains white space or a line break"),
    (dict(HOOK, url=None), "url is missing"),
    (dict(HOOK, format="teams"), "format 'teams' is not one of json, slack"),
    (dict(HOOK, validate_certs="maybe"), "validate_certs must be true or false"),
    (dict(HOOK, token=TOKEN + "\nX-Evil: 1"), "channels[0] (slack): token contains a line break"),
    (dict(HOOK, smtp_host="smtp.k2.test"), "smtp_host belongs to the other type of channel, not webhook"),
    (dict(EMAIL, url=SLACK_URL), "url belongs to the other type of channel, not email"),
    (dict(EMAIL, smtp_port="smtp"), "channels[0] (ops mail): smtp_port 'smtp' is not a port number (1-65535)"),
    (dict(EMAIL, smtp_port=0), "smtp_port 0 is not a port number"),
    (dict(EMAIL, smtp_port=70000), "smtp_port 70000 is not a port number"),
    (dict(EMAIL, smtp_port=True), "smtp_port True is not a port number"),
    (dict(EMAIL, smtp_security="tls"), "smtp_security 'tls' is not one of none, starttls, ssl"),
    (dict(EMAIL, smtp_host=None), "smtp_host is missing"),
    (dict(EMAIL, smtp_host="smtp k2"), "smtp_host 'smtp k2' is not a host name or IP address"),
    (dict(EMAIL, to=[]), "channels[0] (ops mail): to is empty"),
    (dict(EMAIL, to=None), "to is empty"),
    (dict(EMAIL, to=["oncall@k2.test", "dba"]), "not an e-mail address (user@domain): to[1] 'dba'"),
    (dict(EMAIL, to=["dba@"]), "to[0] 'dba@'"),
    (dict(EMAIL, to=["a@b@c.test"]), "to[0] 'a@b@c.test'"),
    (dict(EMAIL, to=["Ops <ops@k2.test>"]), "to[0] 'Ops <ops@k2.test>'"),
    (dict(EMAIL, to=["ops@k2.test\r\nBcc: everyone@k2.test"]), "to contains a line break or NUL (header injection)"),
    (dict(EMAIL, **{"from": "k2"}), "from 'k2' is not an e-mail address"),
    (dict(EMAIL, **{"from": None}), "from is missing"),
    (dict(EMAIL, smtp_password=PASSWORD + "\r\nRCPT TO:<x@y.test>"), "smtp_password contains a line break"),
    (dict(EMAIL, smtp_user=None), "smtp_password is set without smtp_user"),
    (dict(EMAIL, name="ops\nmail"), "channels[0]: name contains a line break"),
    (dict(EMAIL, bcc=["x@k2.test"], password=PASSWORD), "unknown keys 'bcc', 'password' (a channel takes type, name"),
    ("smtp://k2", "channels[0]: a channel is a dict"),
]


@pytest.mark.parametrize("channel,expected", MALFORMED, ids=[m[1][:50] for m in MALFORMED])
def test_a_malformed_channel_is_refused_naming_it_and_no_secret(channel, expected):
    problems = nc.validate([channel])
    assert problems, channel
    assert any(expected in p for p in problems), problems
    assert all(p.startswith("channels[0]") for p in problems), problems
    assert_clean(problems)


def test_the_index_and_name_say_which_channel():
    problems = nc.validate([EMAIL, HOOK, dict(HOOK, name="teams", url="gopher://x/" + PATH_SECRET)])
    assert problems == ["channels[2] (teams): url must start with http:// or https://, not gopher://"]
    assert nc.validate("a string") == ["channels must be a list of channels (dicts with type email or webhook)"]


def test_advice_for_secrets_that_would_cross_the_network_unencrypted():
    plain = dict(EMAIL, smtp_security="none")
    warnings = nc.advice([plain, dict(HOOK, url="http://hooks.k2.test/" + PATH_SECRET),
                         dict(plain, smtp_host="127.0.0.1"), dict(HOOK, url="http://localhost:8080/x"), EMAIL, HOOK])
    assert len(warnings) == 2, warnings
    assert warnings[0].startswith("channels[0] (ops mail): smtp_password goes to smtp.k2.test:587 unencrypted")
    assert warnings[1] == ("channels[1] (slack): the webhook URL and its token goes to http://hooks.k2.test "
                           "unencrypted (http://); use https://")
    assert_clean(warnings)


# --- defaults, targets, secrets ---------------------------------------------------------------------
def test_defaults_and_targets_show_no_secret():
    email = nc.normalise({"type": "email", "smtp_host": "smtp.k2.test", "from": "a@k2.test", "to": "b@k2.test",
                         "smtp_port": None}, 3)
    assert (email["smtp_port"], email["smtp_security"], email["to"], email["name"]) == (
        25, "none", ["b@k2.test"], "channels[3]")
    assert nc.normalise(dict(EMAIL, smtp_port="465"))["smtp_port"] == 465
    hook = nc.normalise({"type": "webhook", "url": SLACK_URL})
    assert (hook["format"], hook["validate_certs"]) == ("json", True)
    assert nc.target(hook) == "https://hooks.slack.example"
    assert nc.target({"type": "webhook", "url": "HTTP://[::1]:8443/h?sig=" + QUERY_SECRET}) == "http://[::1]:8443"
    assert nc.target(nc.normalise(EMAIL)) == "smtp.k2.test:587"
    assert nc.target(nc.normalise(dict(EMAIL, smtp_host="::1"))) == "[::1]:587"


def test_secrets_of_a_channel_are_the_password_the_token_the_url_its_path_and_query():
    found = nc.secrets_of(dict(HOOK, url="https://h.k2.test/hooks/%s?sig=%s" % (PATH_SECRET, QUERY_SECRET)))
    assert TOKEN in found and "sig=" + QUERY_SECRET in found and PATH_SECRET in found
    assert "/hooks/%s?sig=%s" % (PATH_SECRET, QUERY_SECRET) in found
    assert PASSWORD in nc.secrets_of(EMAIL) and "smtp.k2.test" not in nc.secrets_of(EMAIL)
    assert nc.secrets_of({"type": "webhook", "url": "https://h.k2.test/"}) == {"https://h.k2.test/"}


def test_the_module_marks_every_secret_option_no_log():
    spec = incident_notify.argument_spec()
    assert redaction.no_log_options(spec) == {"channels.smtp_password", "channels.token", "channels.url"}
    params = {"channels": [dict(EMAIL), dict(HOOK)], "title": "t"}
    assert {PASSWORD, TOKEN, SLACK_URL} <= redaction.secret_values(spec, params)


# --- what is sent -----------------------------------------------------------------------------------
def test_json_payload():
    assert nm.json_payload(MESSAGE) == {
        "source": "k2.iceberg_offload", "event": "escalation", "outcome": "ESCALATE",
        "title": "Scenario 4 needs a person", "summary": MESSAGE["summary"], "escalations": MESSAGE["escalations"],
        "state_left": {"scheduler": "stopped"},
        "report": {"paths": MESSAGE["attachments"], "url": MESSAGE["report_url"]},
        "data": {"scenario": "scenario_4"}}
    bare = nm.json_payload(nm.message_from({"event": "recovery", "title": "t"}))
    assert bare["report"] == {"paths": [], "url": None} and bare["summary"] == [] and bare["outcome"] == ""


def test_slack_payload_sections_escaped_and_linked():
    body = nm.slack_payload(MESSAGE)
    assert body["text"] == "Scenario 4 needs a person - ESCALATE"
    texts = [b["text"]["text"] for b in body["blocks"]]
    assert all(b["type"] == "section" and b["text"]["type"] == "mrkdwn" for b in body["blocks"])
    assert texts[0] == "*Scenario 4 needs a person*\n_k2.iceberg_offload escalation_ \u2014 outcome: *ESCALATE*"
    assert texts[1] == "*Summary*\n\u2022 bronze_trades_binance: 3 duplicated keys\n\u2022 a &lt;b&gt; &amp; c"
    assert texts[2] == "*Escalations*\n\u2022 scenario: 4; reason: copies differ\n\u2022 call the DBA"
    assert texts[3] == ("*Report*\n<https://awx.k2.test/#/jobs/playbook/42/output|Open the report>\n"
                        "`/var/tmp/k2/recovery.json`\n`/var/tmp/k2/recovery.md`")
    share = nm.slack_payload(dict(MESSAGE, report_url="\\\\files.k2.test\\reports\\42", attachments=[]))
    assert share["blocks"][-1]["text"]["text"] == "*Report*\n\\\\files.k2.test\\reports\\42"


def test_slack_payload_stays_within_slacks_limits():
    huge = dict(MESSAGE, title="T" * 5000, outcome="o" * 300, summary=["line %d " % i + "x" * 400 for i in range(800)],
                escalations=["y" * 9000])
    body = nm.slack_payload(huge)
    assert len(body["blocks"]) <= 50 and len(body["text"]) <= 3000
    assert all(len(b["text"]["text"]) <= 3000 for b in body["blocks"])
    assert body["blocks"][-1]["text"]["text"].endswith("more sections in the report_")
    assert "line 0 " in body["blocks"][1]["text"]["text"]


def test_subject_is_one_line_whatever_the_title():
    subject = nm.subject(dict(MESSAGE, title="Recovered\r\nBcc: everyone@k2.test", outcome="ok\n"))
    assert subject == "[k2.iceberg_offload escalation] Recovered Bcc: everyone@k2.test - ok"
    assert len(nm.subject(dict(MESSAGE, title="x" * 1000))) == 200
    assert nm.subject({"event": "incident_report", "title": ""}) == "[k2.iceberg_offload incident report] (no title)"


def test_email_has_the_body_and_the_report_files_and_names_what_it_could_not_attach(tmp_path):
    report = tmp_path / "recovery.json"
    report.write_text('{"outcome": "ESCALATE"}')
    markdown = tmp_path / "recovery.md"
    markdown.write_text("# Recovery\n")
    html = tmp_path / "recovery.html"
    html.write_text("<h1>Recovery</h1>")
    big = tmp_path / "big.json"
    big.write_bytes(b"0" * 2048)
    missing = tmp_path / "gone.md"
    message = dict(MESSAGE, attachments=[str(report), str(markdown), str(html), str(big), str(missing)])
    mail = nm.build_email(nc.normalise(EMAIL), message, cap=1024)
    parsed = BytesParser(policy=policy.default).parsebytes(mail.as_bytes())
    assert parsed["Subject"] == "[k2.iceberg_offload escalation] Scenario 4 needs a person - ESCALATE"
    assert parsed["To"] == "oncall@k2.test" and parsed["From"] == "k2@k2.test"
    assert parsed["Message-ID"].endswith("@k2.test>")
    body = parsed.get_body(("plain",)).get_content()
    assert "Outcome: ESCALATE" in body and "  - a <b> & c" in body and "  - scenario: 4; reason: copies differ" in body
    assert "Report: https://awx.k2.test/#/jobs/playbook/42/output" in body and "  scheduler: stopped" in body
    assert "Not attached (0.0 MiB, over the 0 MiB cap): %s" % big in body
    assert "Not attached (cannot be read: No such file or directory): %s" % missing in body
    attached = dict((p.get_filename(), p.get_content_type()) for p in parsed.iter_attachments())
    assert attached == {"recovery.json": "application/json", "recovery.md": "text/markdown",
                        "recovery.html": "text/html"}
    assert_clean(mail.as_string())


# --- sending: never raises, says why, shows no secret ---------------------------------------------
class _Raise(object):
    def __init__(self, error):
        self.error = error

    def __call__(self, *args, **kwargs):
        raise self.error


def test_a_webhook_that_answers_an_error_is_a_result_with_no_secret(monkeypatch):
    body = BytesIO(("no route to /services/T0K2/B0K2/%s, Authorization: Bearer %s" % (PATH_SECRET, TOKEN)).encode())
    monkeypatch.setattr(n, "open_url", _Raise(HTTPError(SLACK_URL, 500, "Internal Server Error", {}, body)))
    result = n.send(nc.normalise(HOOK), MESSAGE, timeout=3)
    assert result["ok"] is False and result["status"] == "not delivered" and result["target"] == "https://hooks.slack.example"
    assert result["error"].startswith("https://hooks.slack.example answered HTTP 500 Internal Server Error: no route to ")
    assert "********" in result["error"]
    assert_clean(result)


@pytest.mark.parametrize("error,expected", [
    (URLError(ConnectionRefusedError(111, "Connection refused")),
     "https://hooks.slack.example refused the connection (nothing listens there?)"),
    (URLError(socket.timeout("timed out")), "https://hooks.slack.example did not answer within 3 s (timeout)"),
    (socket.timeout("timed out"), "https://hooks.slack.example did not answer within 3 s (timeout)"),
    (URLError(socket.gaierror(-2, "Name or service not known")),
     "https://hooks.slack.example: the host name does not resolve (Name or service not known)"),
    (URLError("unknown url type: " + SLACK_URL), "https://hooks.slack.example did not answer: unknown url type: ********"),
    (HTTPError(SLACK_URL, 302, "Found", {}, BytesIO(b"")), "answered HTTP 302 Found (a redirect: not followed"),
    (ValueError("bad " + SLACK_URL), "https://hooks.slack.example: ValueError: bad ********"),
])
def test_every_webhook_failure_reads_as_what_happened(monkeypatch, error, expected):
    monkeypatch.setattr(n, "open_url", _Raise(error))
    result = n.send(nc.normalise(HOOK), MESSAGE, timeout=3)
    assert not result["ok"] and expected in result["error"], result["error"]
    assert_clean(result)


def test_the_webhook_request(monkeypatch):
    sent = {}

    class Response(object):
        def read(self, size=-1):
            return b"ok"

        def close(self):
            pass

    def fake_open_url(url, **kwargs):
        sent.update(kwargs, url=url)
        return Response()

    monkeypatch.setattr(n, "open_url", fake_open_url)
    result = n.send(nc.normalise(dict(HOOK, format="json", validate_certs=False)), MESSAGE, timeout=4)
    assert result["ok"] and result["error"] is None and result["status"] == "delivered"
    assert sent["url"] == SLACK_URL and sent["method"] == "POST" and sent["timeout"] == 4
    assert sent["headers"] == {"Content-Type": "application/json", "Authorization": "Bearer " + TOKEN}
    assert sent["follow_redirects"] == "none" and sent["validate_certs"] is False
    assert json.loads(sent["data"].decode())["source"] == "k2.iceberg_offload"


@pytest.mark.parametrize("error,expected", [
    (smtplib.SMTPAuthenticationError(535, b"5.7.8 Authentication credentials invalid"),
     "smtp.k2.test:587 refused the login of smtp_user k2: 535 5.7.8 Authentication credentials invalid"),
    (smtplib.SMTPRecipientsRefused({"oncall@k2.test": (550, b"no such user")}),
     "smtp.k2.test:587 refused every recipient: oncall@k2.test (550 no such user)"),
    (smtplib.SMTPSenderRefused(553, b"not yours", "k2@k2.test"), "refused the sender k2@k2.test: 553 not yours"),
    (smtplib.SMTPDataError(554, b"message too big"), "smtp.k2.test:587 answered 554 message too big"),
    (smtplib.SMTPServerDisconnected("please run connect() first"),
     "smtp.k2.test:587 closed the connection: please run connect() first"),
    (ssl.SSLCertVerificationError(1, "certificate verify failed"), "its TLS certificate is not trusted"),
    (ConnectionRefusedError(111, "Connection refused"), "smtp.k2.test:587 refused the connection"),
    (OSError(113, "No route to host"), "smtp.k2.test:587: No route to host"),
])
def test_every_smtp_failure_reads_as_what_happened(monkeypatch, error, expected):
    monkeypatch.setattr(n.smtplib, "SMTP", _Raise(error))
    result = n.send(nc.normalise(EMAIL), MESSAGE, timeout=3)
    assert not result["ok"] and expected in result["error"], result["error"]
    assert result["target"] == "smtp.k2.test:587"
    assert_clean(result)


def test_an_error_that_quotes_the_password_shows_the_mask(monkeypatch):
    monkeypatch.setattr(n.smtplib, "SMTP", _Raise(smtplib.SMTPAuthenticationError(535, "bad password %s" % PASSWORD)))
    result = n.send(nc.normalise(EMAIL), MESSAGE, timeout=3)
    assert result["error"].endswith("535 bad password ********")


def test_status_lines():
    assert n.status_line({"name": "a", "type": "email", "target": "h:25", "ok": True, "seconds": 0.25,
                          "error": None}) == "a (email h:25): delivered in 0.2 s"
    assert n.status_line({"name": "a", "type": "email", "target": "h:25", "ok": True, "seconds": 1,
                          "error": "delivered, but the server refused x@y.test (550 no)"}) == (
        "a (email h:25): delivered in 1.0 s (delivered, but the server refused x@y.test (550 no))")
    assert n.status_line({"name": "b", "type": "webhook", "target": "https://h", "ok": False, "seconds": 2,
                          "error": "https://h did not answer within 2 s (timeout)"}) == (
        "b (webhook https://h): NOT delivered: https://h did not answer within 2 s (timeout)")
    assert n.status_line(n.not_sent(nc.normalise(HOOK), "check mode")) == (
        "slack (webhook https://hooks.slack.example): not sent (check mode)")
