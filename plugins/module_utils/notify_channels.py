# -*- coding: utf-8 -*-
# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""What a notification channel is (e-mail over SMTP, a JSON or Slack-compatible webhook): its checks before
anything is sent, its label, the target shown for it (never a secret), and its secrets.

Private to this collection. Sending is notify.py; what is sent, notify_message.py.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ipaddress
import re
from urllib.parse import urlsplit

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
NAME_CHARS = 60

_LINE_BREAK_RE = re.compile(r"[\r\n\x00]")
_HOSTNAME_RE = re.compile(r"\A(?=.{1,253}\Z)[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9])?"
                          r"(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9])?)*\.?\Z")
_LOCAL_PART_RE = re.compile(r"\A[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+\Z")


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
