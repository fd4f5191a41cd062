# -*- coding: utf-8 -*-
# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Notification channels of the incident playbooks: e-mail over SMTP and webhooks (a generic JSON
POST, or a Slack-compatible payload). Pure Python and the standard library; no server is needed
to validate a channel or build a payload.

Private to this collection: the functions may change without notice.

``validate(channels)`` lists what is wrong with a channel list before anything is sent (a message
names the channel by index and name, never a secret, a URL's path or query); ``send(channel,
message, timeout)`` never raises: a channel that does not answer is a result with ``ok: false`` and
the reason in an engineer's words, so a notification can never fail a recovery. The secrets of a
channel are ``smtp_password``, ``token`` and the whole webhook ``url`` (Slack and Teams webhook URLs
carry their token in the path); a result shows a webhook as ``scheme://host[:port]`` and an SMTP
server as ``host:port``.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ipaddress
import json
import os
import re
import smtplib
import socket
import ssl
import time
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from urllib.error import HTTPError, URLError
from urllib.parse import urlsplit

from ansible.module_utils.urls import open_url

from ansible_collections.k2.iceberg_offload.plugins.module_utils.redaction import MASK, scrub

SOURCE = "k2.iceberg_offload"
TYPES = ("email", "webhook")
EVENTS = ("escalation", "incident_report", "recovery")
SECURITY = ("none", "starttls", "ssl")
FORMATS = ("json", "slack")
COMMON_KEYS = ("type", "name")
EMAIL_KEYS = ("smtp_host", "smtp_port", "smtp_security", "smtp_user", "smtp_password", "from", "to")
WEBHOOK_KEYS = ("url", "format", "token", "validate_certs")
SECRET_KEYS = ("smtp_password", "token", "url")
DEFAULT_SMTP_PORT = 25
# An attachment larger than this is named in the body instead (mail servers refuse large messages,
# commonly at 10-25 MiB, and base64 adds a third).
ATTACHMENT_CAP = 5 * 1024 * 1024
# Slack: a section block's text holds at most 3000 characters, a message at most 50 blocks.
SLACK_BLOCK_CHARS = 3000
SLACK_MAX_BLOCKS = 50
# What of an HTTP error's body is quoted (Slack answers "invalid_token", "no_service"...).
ERROR_BODY_CHARS = 200
NAME_CHARS = 60

_LINE_BREAK_RE = re.compile(r"[\r\n\x00]")
_HOSTNAME_RE = re.compile(r"\A(?=.{1,253}\Z)[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9])?"
                          r"(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9])?)*\.?\Z")
_LOCAL_PART_RE = re.compile(r"\A[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+\Z")
_MIME = {".json": ("application", "json"), ".md": ("text", "markdown"), ".markdown": ("text", "markdown"),
         ".html": ("text", "html"), ".htm": ("text", "html"), ".txt": ("text", "plain")}


# --- what a channel is --------------------------------------------------------------------------
def label(channel, index):
    """``channels[2] (ops-mail)``: how a message names a channel (its name is never a secret)."""
    name = channel.get("name") if isinstance(channel, dict) else None
    if isinstance(name, str) and name and not _LINE_BREAK_RE.search(name):
        return "channels[%d] (%s)" % (index, name[:NAME_CHARS])
    return "channels[%d]" % index


def has_line_break(text):
    return isinstance(text, str) and bool(_LINE_BREAK_RE.search(text))


def _is_set(value):
    return value is not None


def _port(value):
    """The port as an int, or None when it is not one (a bool is not a port)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and value.strip().isdigit():
        number = int(value.strip())
    else:
        return None
    return number if 1 <= number <= 65535 else None


def _short(value, limit=30):
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def is_address(address):
    """A bare e-mail address, user@domain (no display name, no comment)."""
    if not isinstance(address, str) or address.count("@") != 1:
        return False
    local, domain = address.split("@")
    return bool(local) and len(address) <= 254 and bool(_LOCAL_PART_RE.match(local)) \
        and not local.startswith(".") and not local.endswith(".") and ".." not in local \
        and _is_host(domain)


def _is_host(host):
    if not isinstance(host, str) or not host:
        return False
    try:
        ipaddress.ip_address(host.strip("[]"))
        return True
    except ValueError:
        return bool(_HOSTNAME_RE.match(host))


def _url_problems(url):
    """What is wrong with a webhook URL, in words that show neither its path nor its query."""
    if not isinstance(url, str) or not url:
        return ["url is missing (the webhook's http:// or https:// URL)"]
    if _LINE_BREAK_RE.search(url) or any(c.isspace() for c in url):
        return ["url contains white space or a line break"]
    try:
        parts = urlsplit(url)
        parts.port  # pylint: disable=pointless-statement  # raises ValueError for a bad port
    except ValueError:
        return ["url is not a URL that can be parsed (or its port is not a number 1-65535)"]
    out = []
    if parts.scheme.lower() not in ("http", "https"):
        scheme = parts.scheme if re.match(r"\A[A-Za-z][A-Za-z0-9+.-]{0,15}\Z", parts.scheme or "") else "?"
        out.append("url must start with http:// or https://, not %s"
                   % ("%s://" % scheme if parts.scheme else "without a scheme"))
    elif not parts.hostname:
        out.append("url has no host")
    if parts.username is not None or parts.password is not None:
        out.append("url carries user information (user:password@): give a bearer token in token instead")
    return out


def validate(channels):
    """Every problem of a channel list (an empty list when there is none), each naming its channel
    by index and name; no secret, URL path or query is ever quoted."""
    if channels is None:
        return []
    if not isinstance(channels, (list, tuple)):
        return ["channels must be a list of channels (dicts with type email or webhook)"]
    problems = []
    for index, channel in enumerate(channels):
        where = label(channel, index)
        if not isinstance(channel, dict):
            problems.append("%s: a channel is a dict (type: email or webhook, and its options), not %s"
                            % (where, type(channel).__name__))
            continue
        problems.extend("%s: %s" % (where, p) for p in _channel_problems(channel))
    return problems


def _channel_problems(channel):
    out = []
    kind = channel.get("type")
    own = {"email": EMAIL_KEYS, "webhook": WEBHOOK_KEYS}.get(kind) if isinstance(kind, str) else None
    if kind is None:
        out.append("type is missing (email or webhook)")
    elif own is None:
        out.append("type %s is not one of email, webhook" % _short(kind))
    known = set(COMMON_KEYS) | set(EMAIL_KEYS) | set(WEBHOOK_KEYS)
    unknown = sorted(str(k) for k in channel if k not in known)
    if unknown:
        out.append("unknown key%s %s (a channel takes %s)" % (
            "s" if len(unknown) > 1 else "", ", ".join(_short(k) for k in unknown),
            ", ".join(COMMON_KEYS + EMAIL_KEYS + WEBHOOK_KEYS)))
    if own is not None:
        other = [k for k in (WEBHOOK_KEYS if kind == "email" else EMAIL_KEYS) if _is_set(channel.get(k))]
        if other:
            out.append("%s belong%s to the other type of channel, not %s" % (
                ", ".join(other), "s" if len(other) == 1 else "", kind))
    # Header injection: no field of a channel may hold a line break (a secret is named, not shown).
    for key in sorted(k for k in channel if isinstance(k, str)):
        values = channel[key] if isinstance(channel[key], (list, tuple)) else [channel[key]]
        if any(isinstance(v, str) and _LINE_BREAK_RE.search(v) for v in values):
            out.append("%s contains a line break or NUL (header injection)" % key)
    name = channel.get("name")
    if _is_set(name) and not isinstance(name, str):
        out.append("name must be text")
    if kind == "email":
        out.extend(_email_problems(channel))
    elif kind == "webhook":
        out.extend(_webhook_problems(channel))
    return out


def _email_problems(channel):
    out = []
    host = channel.get("smtp_host")
    if not _is_set(host) or host == "":
        out.append("smtp_host is missing (the SMTP server)")
    elif not _is_host(host) or _LINE_BREAK_RE.search(host):
        out.append("smtp_host %s is not a host name or IP address" % _short(host))
    port = channel.get("smtp_port")
    if _is_set(port) and _port(port) is None:
        out.append("smtp_port %s is not a port number (1-65535)" % _short(port))
    security = channel.get("smtp_security")
    if _is_set(security) and security not in SECURITY:
        out.append("smtp_security %s is not one of %s" % (_short(security), ", ".join(SECURITY)))
    user, password = channel.get("smtp_user"), channel.get("smtp_password")
    if _is_set(password) and not _is_set(user):
        out.append("smtp_password is set without smtp_user")
    if _is_set(user) and not isinstance(user, str):
        out.append("smtp_user must be text")
    if _is_set(password) and not isinstance(password, str):
        out.append("smtp_password must be text")
    sender = channel.get("from")
    if not _is_set(sender) or sender == "":
        out.append("from is missing (the sender's address)")
    elif not is_address(sender):
        out.append("from %s is not an e-mail address (user@domain)" % _short(sender, 60))
    to = channel.get("to")
    if isinstance(to, str):
        to = [to]
    if not to:
        out.append("to is empty (a list of addresses)")
    elif not isinstance(to, (list, tuple)):
        out.append("to must be a list of addresses")
    else:
        bad = ["to[%d] %s" % (i, _short(a, 60)) for i, a in enumerate(to) if not is_address(a)]
        if bad:
            out.append("not an e-mail address (user@domain): %s" % ", ".join(bad))
    return out


def _webhook_problems(channel):
    out = _url_problems(channel.get("url"))
    fmt = channel.get("format")
    if _is_set(fmt) and fmt not in FORMATS:
        out.append("format %s is not one of %s" % (_short(fmt), ", ".join(FORMATS)))
    token = channel.get("token")
    if _is_set(token) and not isinstance(token, str):
        out.append("token must be text")
    certs = channel.get("validate_certs")
    if _is_set(certs) and not isinstance(certs, bool):
        out.append("validate_certs must be true or false")
    return out


def advice(channels):
    """Warnings for valid channels that send a secret unencrypted to another machine."""
    out = []
    for index, channel in enumerate(channels or []):
        c = normalise(channel, index)
        if c["type"] == "email" and c.get("smtp_password") and c["smtp_security"] == "none" \
                and not _is_loopback(c["smtp_host"]):
            out.append("%s: smtp_password goes to %s unencrypted (smtp_security none); use starttls or ssl"
                       % (label(channel, index), target(c)))
        if c["type"] == "webhook" and urlsplit(c["url"]).scheme.lower() == "http" \
                and not _is_loopback(urlsplit(c["url"]).hostname):
            out.append("%s: the webhook URL%s goes to %s unencrypted (http://); use https://" % (
                label(channel, index), " and its token" if c.get("token") else "", target(c)))
    return out


def _is_loopback(host):
    if host in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address((host or "").strip("[]")).is_loopback
    except ValueError:
        return False


def normalise(channel, index=0):
    """A valid channel with its defaults (port 25, security none, format json, certificates
    verified) and a name (``channels[N]`` when it has none)."""
    c = dict((k, v) for k, v in channel.items() if v is not None)
    c["name"] = c.get("name") or "channels[%d]" % index
    if c.get("type") == "email":
        c["smtp_port"] = _port(c.get("smtp_port", DEFAULT_SMTP_PORT))
        c.setdefault("smtp_security", "none")
        c["to"] = [c["to"]] if isinstance(c.get("to"), str) else list(c.get("to") or [])
    elif c.get("type") == "webhook":
        c.setdefault("format", "json")
        c.setdefault("validate_certs", True)
    return c


def target(channel):
    """Where a channel sends, without a secret: ``host:port`` for SMTP, ``scheme://host[:port]`` for a
    webhook (a webhook URL's path and query can hold its token)."""
    if channel.get("type") == "email":
        host = channel.get("smtp_host") or "?"
        if ":" in host and not host.startswith("["):
            host = "[%s]" % host
        return "%s:%s" % (host, channel.get("smtp_port") or DEFAULT_SMTP_PORT)
    try:
        parts = urlsplit(channel.get("url") or "")
        host = parts.hostname or "?"
        if ":" in host:
            host = "[%s]" % host
        return "%s://%s%s" % (parts.scheme.lower() or "?", host, ":%d" % parts.port if parts.port else "")
    except ValueError:
        return "(unparseable URL)"


def secrets_of(channel):
    """The values of a channel that must never be printed: the password, the token, the URL and
    its path and query."""
    out = set()
    for key in SECRET_KEYS:
        value = channel.get(key)
        if isinstance(value, str) and value:
            out.add(value)
    url = channel.get("url")
    if isinstance(url, str) and url:
        try:
            parts = urlsplit(url)
        except ValueError:
            parts = None
        if parts is not None:
            for piece in (parts.path + ("?" + parts.query if parts.query else ""), parts.query, parts.fragment):
                if piece and piece.strip("/"):
                    out.add(piece)
            # path segments that look like tokens (Slack's and Teams' are 24 characters and more)
            out.update(p for p in parts.path.split("/") if len(p) >= 16)
    return out


# --- what is sent -------------------------------------------------------------------------------
def message_from(params):
    """The message of one notification from the module's options."""
    return {
        "event": params.get("event"),
        "title": params.get("title") or "",
        "summary": [str(s) for s in (params.get("summary") or [])],
        "outcome": params.get("outcome") or "",
        "escalations": list(params.get("escalations") or []),
        "state_left": dict(params.get("state_left") or {}),
        "data": dict(params.get("data") or {}),
        "attachments": [str(a) for a in (params.get("attachments") or [])],
        "report_url": params.get("report_url") or None,
    }


def _one_line(text, limit=None):
    text = re.sub(r"\s+", " ", str(text if text is not None else "")).strip()
    if limit and len(text) > limit:
        text = text[:limit - 1] + "\u2026"
    return text


def _as_text(item):
    """An escalation (text or a dict) as one line."""
    if isinstance(item, dict):
        return "; ".join("%s: %s" % (k, _as_text(v) if isinstance(v, (dict, list)) else v) for k, v in item.items())
    if isinstance(item, (list, tuple)):
        return ", ".join(_as_text(v) for v in item)
    return str(item)


def subject(message):
    event = (message.get("event") or "notification").replace("_", " ")
    outcome = _one_line(message.get("outcome"))
    text = "[k2.iceberg_offload %s] %s%s" % (event, _one_line(message.get("title")) or "(no title)",
                                             " - %s" % outcome if outcome else "")
    return _one_line(text, 200)


def json_payload(message):
    """The body of a json webhook."""
    return {
        "source": SOURCE,
        "event": message.get("event"),
        "outcome": message.get("outcome"),
        "title": message.get("title"),
        "summary": list(message.get("summary") or []),
        "escalations": list(message.get("escalations") or []),
        "state_left": dict(message.get("state_left") or {}),
        "report": {"paths": list(message.get("attachments") or []), "url": message.get("report_url")},
        "data": dict(message.get("data") or {}),
    }


def _slack_escape(text):
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _chunks(heading, lines, limit=SLACK_BLOCK_CHARS):
    """Section texts of at most ``limit`` characters: the heading, then the lines."""
    out, current = [], heading
    for line in lines:
        line = line if len(line) <= limit - len(heading) - 2 else line[:limit - len(heading) - 3] + "\u2026"
        if len(current) + 1 + len(line) > limit:
            out.append(current)
            current = heading
        current += "\n" + line
    if current != heading or not out:
        out.append(current)
    return out


def slack_payload(message):
    """A Slack-compatible body: ``text`` (the notification's one line) and section blocks (the title
    and outcome, the summary, the escalations, the report), each within Slack's limits."""
    title = _slack_escape(_one_line(message.get("title")) or "(no title)")
    outcome = _one_line(message.get("outcome"))
    event = (message.get("event") or "notification").replace("_", " ")
    head = "*%s*\n%s%s" % (title, "_k2.iceberg_offload %s_" % event,
                           " \u2014 outcome: *%s*" % _slack_escape(outcome) if outcome else "")
    texts = [head[:SLACK_BLOCK_CHARS]]
    summary = ["\u2022 " + _slack_escape(_one_line(s)) for s in message.get("summary") or []]
    if summary:
        texts.extend(_chunks("*Summary*", summary))
    escalations = ["\u2022 " + _slack_escape(_one_line(_as_text(e))) for e in message.get("escalations") or []]
    if escalations:
        texts.extend(_chunks("*Escalations*", escalations))
    report = []
    url = message.get("report_url")
    if url and re.match(r"\Ahttps?://", url):
        report.append("<%s|Open the report>" % _slack_escape(url).replace("|", "%7C"))
    elif url:
        report.append(_slack_escape(url))
    report.extend("`%s`" % _slack_escape(p).replace("`", "'") for p in message.get("attachments") or [])
    if report:
        texts.extend(_chunks("*Report*", report))
    if len(texts) > SLACK_MAX_BLOCKS:
        left = len(texts) - SLACK_MAX_BLOCKS + 1
        texts = texts[:SLACK_MAX_BLOCKS - 1] + ["_%d more section%s in the report_" % (left, "s" if left > 1 else "")]
    fallback = "%s%s" % (_one_line(message.get("title")) or "(no title)", " - %s" % outcome if outcome else "")
    return {"text": _slack_escape(fallback)[:SLACK_BLOCK_CHARS],
            "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": t}} for t in texts]}


def email_body(message, skipped=()):
    """The plain-text body of an e-mail: what a reader needs without opening an attachment."""
    lines = [_one_line(message.get("title")) or "(no title)", ""]
    if message.get("outcome"):
        lines += ["Outcome: %s" % _one_line(message["outcome"]), ""]
    if message.get("summary"):
        lines += ["Summary:"] + ["  - %s" % s for s in message["summary"]] + [""]
    if message.get("escalations"):
        lines += ["Escalations:"] + ["  - %s" % _as_text(e) for e in message["escalations"]] + [""]
    if message.get("state_left"):
        lines += ["State left:"] + ["  %s: %s" % (k, _as_text(v) if isinstance(v, (dict, list)) else v)
                                    for k, v in message["state_left"].items()] + [""]
    if message.get("report_url"):
        lines += ["Report: %s" % message["report_url"], ""]
    attached = [p for p in message.get("attachments") or [] if p not in dict(skipped)]
    if attached:
        lines += ["Attached: %s" % ", ".join(os.path.basename(p) for p in attached)]
        lines += ["  (on %s: %s)" % (socket.gethostname(), ", ".join(attached)), ""]
    for path, why in skipped:
        lines.append("Not attached (%s): %s" % (why, path))
    if skipped:
        lines.append("")
    lines += ["-- ", "k2.iceberg_offload incident_notify, event %s, from %s" % (
        message.get("event") or "notification", socket.gethostname())]
    return "\n".join(lines) + "\n"


def _attachments(paths, cap=ATTACHMENT_CAP):
    """([(path, maintype, subtype, bytes)], [(path, why not attached)])."""
    files, skipped = [], []
    for path in paths or []:
        try:
            size = os.path.getsize(path)
            if size > cap:
                skipped.append((path, "%.1f MiB, over the %d MiB cap" % (size / 1048576.0, cap // 1048576)))
                continue
            with open(path, "rb") as fh:
                data = fh.read(cap + 1)
        except (IOError, OSError) as e:
            skipped.append((path, "cannot be read: %s" % (e.strerror or e)))
            continue
        maintype, subtype = _MIME.get(os.path.splitext(path)[1].lower(), ("application", "octet-stream"))
        files.append((path, maintype, subtype, data))
    return files, skipped


def build_email(channel, message, cap=ATTACHMENT_CAP):
    files, skipped = _attachments(message.get("attachments"), cap)
    msg = EmailMessage()
    msg["Subject"] = subject(message)
    msg["From"] = channel["from"]
    msg["To"] = ", ".join(channel["to"])
    msg["Date"] = formatdate(usegmt=True)
    msg["Message-ID"] = make_msgid(domain=channel["from"].split("@", 1)[1])
    msg["X-K2-Event"] = message.get("event") or "notification"
    msg.set_content(email_body(message, skipped))
    for path, maintype, subtype, data in files:
        name = os.path.basename(path)
        if maintype == "text":
            msg.add_attachment(data.decode("utf-8", "replace"), subtype=subtype, filename=name)
        else:
            msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=name)
    return msg


# --- sending ------------------------------------------------------------------------------------
def _send_email(channel, message, timeout):
    msg = build_email(channel, message)
    host, port, security = channel["smtp_host"], channel["smtp_port"], channel["smtp_security"]
    context = ssl.create_default_context()
    # The local name for EHLO, without the reverse DNS look-up smtplib would make (getfqdn).
    local = socket.gethostname() or "localhost"
    if security == "ssl":
        server = smtplib.SMTP_SSL(host, port, local_hostname=local, timeout=timeout, context=context)
    else:
        server = smtplib.SMTP(host, port, local_hostname=local, timeout=timeout)
    try:
        if security == "starttls":
            server.ehlo()
            if not server.has_extn("starttls"):
                raise smtplib.SMTPNotSupportedError("the server does not offer STARTTLS (smtp_security starttls)")
            server.starttls(context=context)
            server.ehlo()
        if channel.get("smtp_user"):
            server.login(channel["smtp_user"], channel.get("smtp_password") or "")
        refused = server.send_message(msg, from_addr=channel["from"], to_addrs=channel["to"])
    finally:
        try:
            server.quit()
        except (smtplib.SMTPException, OSError):
            server.close()
    if refused:
        return "delivered, but the server refused %s" % ", ".join(
            "%s (%s)" % (addr, _smtp_reply(code, text)) for addr, (code, text) in sorted(refused.items()))
    return None


def _send_webhook(channel, message, timeout):
    payload = slack_payload(message) if channel["format"] == "slack" else json_payload(message)
    body = json.dumps(payload, default=str, sort_keys=True).encode("utf-8")
    headers = {"Content-Type": "application/json"}
    if channel.get("token"):
        headers["Authorization"] = "Bearer %s" % channel["token"]
    # Redirects are not followed: the token (and the body) would go along to wherever they point.
    resp = open_url(channel["url"], data=body, headers=headers, method="POST", timeout=timeout,
                    validate_certs=channel["validate_certs"], follow_redirects="none",
                    http_agent="k2.iceberg_offload incident_notify")
    try:
        resp.read(65536)
    finally:
        resp.close()
    return None


def _smtp_reply(code, text):
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return "%s %s" % (code, _one_line(text, 200))


def explain(error, channel, timeout):
    """An exception of a send, in an engineer's words (what did not answer, and what to check)."""
    where = target(channel)
    if isinstance(error, URLError) and not isinstance(error, HTTPError):
        reason = error.reason
        if isinstance(reason, BaseException):
            return explain(reason, channel, timeout)
        return "%s did not answer: %s" % (where, _one_line(reason, 200))
    if isinstance(error, HTTPError):
        try:
            text = error.read(ERROR_BODY_CHARS * 4).decode("utf-8", "replace")
        except Exception:  # pylint: disable=broad-except  # the body is only quoted
            text = ""
        answer = "%s answered HTTP %s %s" % (where, error.code, _one_line(error.reason, 80))
        if 300 <= error.code < 400:
            return answer + " (a redirect: not followed, the token would go along; give the final URL)"
        return answer + (": %s" % _one_line(text, ERROR_BODY_CHARS) if text.strip() else "")
    if isinstance(error, (socket.timeout, TimeoutError)):
        return "%s did not answer within %s s (timeout)" % (where, timeout)
    if isinstance(error, ConnectionRefusedError):
        return "%s refused the connection (nothing listens there?)" % where
    if isinstance(error, socket.gaierror):
        return "%s: the host name does not resolve (%s)" % (where, error.strerror or error)
    if isinstance(error, ssl.SSLCertVerificationError):
        return "%s: its TLS certificate is not trusted (%s)" % (where, _one_line(getattr(error, "verify_message", None) or error, 200))
    if isinstance(error, ssl.SSLError):
        return "%s: TLS failed (%s)" % (where, _one_line(error, 200))
    if isinstance(error, smtplib.SMTPAuthenticationError):
        return "%s refused the login of smtp_user %s: %s" % (where, channel.get("smtp_user"),
                                                             _smtp_reply(error.smtp_code, error.smtp_error))
    if isinstance(error, smtplib.SMTPRecipientsRefused):
        return "%s refused every recipient: %s" % (where, ", ".join(
            "%s (%s)" % (addr, _smtp_reply(code, text)) for addr, (code, text) in sorted(error.recipients.items())))
    if isinstance(error, smtplib.SMTPSenderRefused):
        return "%s refused the sender %s: %s" % (where, error.sender, _smtp_reply(error.smtp_code, error.smtp_error))
    if isinstance(error, smtplib.SMTPResponseException):
        return "%s answered %s" % (where, _smtp_reply(error.smtp_code, error.smtp_error))
    if isinstance(error, smtplib.SMTPNotSupportedError):
        return "%s: %s" % (where, _one_line(error, 200) or "the server does not support what was asked")
    if isinstance(error, smtplib.SMTPServerDisconnected):
        if isinstance(error.__context__, (socket.timeout, TimeoutError)):
            # smtplib turns a timeout waiting for a reply into "Connection unexpectedly closed"
            return explain(error.__context__, channel, timeout)
        return "%s closed the connection: %s" % (where, _one_line(error, 200) or "no reason given")
    if isinstance(error, smtplib.SMTPException):
        return "%s: SMTP error: %s" % (where, _one_line(error, 200))
    if isinstance(error, OSError):
        return "%s: %s" % (where, _one_line(error.strerror or error, 200))
    return "%s: %s: %s" % (where, type(error).__name__, _one_line(error, 200))


def send(channel, message, timeout=10):
    """Send ``message`` to one valid, normalised channel; never raises. Returns ``{name, type,
    target, ok, error, seconds, status}``: ``ok`` false with ``error`` when the channel did not take it
    (``status`` "not delivered"); ``ok`` true is "delivered" (``error`` then notes recipients an SMTP
    server refused while it took the others)."""
    result = {"name": channel.get("name"), "type": channel.get("type"), "target": target(channel),
              "ok": False, "error": None, "seconds": 0.0, "status": "not delivered"}
    start = time.time()
    try:
        if channel.get("type") == "email":
            result["error"] = _send_email(channel, message, timeout)
        else:
            result["error"] = _send_webhook(channel, message, timeout)
        result["ok"], result["status"] = True, "delivered"
    except Exception as e:  # pylint: disable=broad-except  # a channel that fails is a result, not a failure
        try:
            result["error"] = explain(e, channel, timeout)
        except Exception:  # pylint: disable=broad-except  # an error that cannot be put in words still is one
            result["error"] = "%s: %s" % (result["target"], type(e).__name__)
    result["seconds"] = round(time.time() - start, 3)
    if result["error"]:
        result["error"] = scrub(result["error"], secrets_of(channel))
    return result


def not_sent(channel, why):
    """The result of a channel nothing was sent to (check mode, validate_only)."""
    return {"name": channel.get("name"), "type": channel.get("type"), "target": target(channel),
            "ok": False, "error": None, "seconds": 0.0, "status": "not sent (%s)" % why}


def status_line(result):
    """One line per channel, as the playbooks print it."""
    head = "%s (%s %s)" % (result.get("name"), result.get("type"), result.get("target"))
    if result.get("status", "").startswith("not sent"):
        return "%s: %s" % (head, result["status"])
    if result.get("ok"):
        return "%s: delivered in %.1f s%s" % (head, result.get("seconds") or 0,
                                              " (%s)" % result["error"] if result.get("error") else "")
    return "%s: NOT delivered: %s" % (head, result.get("error") or "unknown error")


__all__ = ["validate", "advice", "normalise", "target", "secrets_of", "send", "not_sent", "status_line",
           "json_payload", "slack_payload", "email_body", "build_email", "subject", "message_from", "MASK",
           "EVENTS", "TYPES"]
