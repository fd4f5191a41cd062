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

import json
import smtplib
import socket
import ssl
import time
from urllib.error import HTTPError, URLError

from ansible.module_utils.urls import open_url

from ansible_collections.k2.iceberg_offload.plugins.module_utils.redaction import scrub
from ansible_collections.k2.iceberg_offload.plugins.module_utils.notify_channels import secrets_of, target
from ansible_collections.k2.iceberg_offload.plugins.module_utils.notify_message import (
    build_email, json_payload, one_line, slack_payload)

# What of an HTTP error's body is quoted (Slack answers "invalid_token", "no_service"...).
ERROR_BODY_CHARS = 200


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
    return "%s %s" % (code, one_line(text, 200))


def explain(error, channel, timeout):
    """An exception of a send, in an engineer's words (what did not answer, and what to check)."""
    where = target(channel)
    if isinstance(error, URLError) and not isinstance(error, HTTPError):
        reason = error.reason
        if isinstance(reason, BaseException):
            return explain(reason, channel, timeout)
        return "%s did not answer: %s" % (where, one_line(reason, 200))
    if isinstance(error, HTTPError):
        try:
            text = error.read(ERROR_BODY_CHARS * 4).decode("utf-8", "replace")
        except Exception:  # pylint: disable=broad-except  # the body is only quoted
            text = ""
        answer = "%s answered HTTP %s %s" % (where, error.code, one_line(error.reason, 80))
        if 300 <= error.code < 400:
            return answer + " (a redirect: not followed, the token would go along; give the final URL)"
        return answer + (": %s" % one_line(text, ERROR_BODY_CHARS) if text.strip() else "")
    if isinstance(error, (socket.timeout, TimeoutError)):
        return "%s did not answer within %s s (timeout)" % (where, timeout)
    if isinstance(error, ConnectionRefusedError):
        return "%s refused the connection (nothing listens there?)" % where
    if isinstance(error, socket.gaierror):
        return "%s: the host name does not resolve (%s)" % (where, error.strerror or error)
    if isinstance(error, ssl.SSLCertVerificationError):
        return "%s: its TLS certificate is not trusted (%s)" % (where, one_line(getattr(error, "verify_message", None) or error, 200))
    if isinstance(error, ssl.SSLError):
        return "%s: TLS failed (%s)" % (where, one_line(error, 200))
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
        return "%s: %s" % (where, one_line(error, 200) or "the server does not support what was asked")
    if isinstance(error, smtplib.SMTPServerDisconnected):
        if isinstance(error.__context__, (socket.timeout, TimeoutError)):
            # smtplib turns a timeout waiting for a reply into "Connection unexpectedly closed"
            return explain(error.__context__, channel, timeout)
        return "%s closed the connection: %s" % (where, one_line(error, 200) or "no reason given")
    if isinstance(error, smtplib.SMTPException):
        return "%s: SMTP error: %s" % (where, one_line(error, 200))
    if isinstance(error, OSError):
        return "%s: %s" % (where, one_line(error.strerror or error, 200))
    return "%s: %s: %s" % (where, type(error).__name__, one_line(error, 200))


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
