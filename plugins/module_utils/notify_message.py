# -*- coding: utf-8 -*-
# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""What a notification says: the subject, the JSON and Slack-compatible payloads, the e-mail with the report
files attached. Pure Python; no server is needed to build one.

Private to this collection. The channels are notify_channels.py; sending is notify.py.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import re
import socket
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from ansible_collections.k2.iceberg_offload.plugins.module_utils.notify_channels import SOURCE

# An attachment larger than this is named in the body instead (mail servers refuse large messages,
# commonly at 10-25 MiB, and base64 adds a third).
ATTACHMENT_CAP = 5 * 1024 * 1024
# Slack: a section block's text holds at most 3000 characters, a message at most 50 blocks.
SLACK_BLOCK_CHARS = 3000
SLACK_MAX_BLOCKS = 50
_MIME = {".json": ("application", "json"), ".md": ("text", "markdown"), ".markdown": ("text", "markdown"),
         ".html": ("text", "html"), ".htm": ("text", "html"), ".txt": ("text", "plain")}


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


def one_line(text, limit=None):
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
    outcome = one_line(message.get("outcome"))
    text = "[k2.iceberg_offload %s] %s%s" % (event, one_line(message.get("title")) or "(no title)",
                                             " - %s" % outcome if outcome else "")
    return one_line(text, 200)


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
    title = _slack_escape(one_line(message.get("title")) or "(no title)")
    outcome = one_line(message.get("outcome"))
    event = (message.get("event") or "notification").replace("_", " ")
    head = "*%s*\n%s%s" % (title, "_k2.iceberg_offload %s_" % event,
                           " \u2014 outcome: *%s*" % _slack_escape(outcome) if outcome else "")
    texts = [head[:SLACK_BLOCK_CHARS]]
    summary = ["\u2022 " + _slack_escape(one_line(s)) for s in message.get("summary") or []]
    if summary:
        texts.extend(_chunks("*Summary*", summary))
    escalations = ["\u2022 " + _slack_escape(one_line(_as_text(e))) for e in message.get("escalations") or []]
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
    fallback = "%s%s" % (one_line(message.get("title")) or "(no title)", " - %s" % outcome if outcome else "")
    return {"text": _slack_escape(fallback)[:SLACK_BLOCK_CHARS],
            "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": t}} for t in texts]}


def email_body(message, skipped=()):
    """The plain-text body of an e-mail: what a reader needs without opening an attachment."""
    lines = [one_line(message.get("title")) or "(no title)", ""]
    if message.get("outcome"):
        lines += ["Outcome: %s" % one_line(message["outcome"]), ""]
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
