#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: incident_notify
short_description: Tell people about an escalation, a recovery or an incident report (e-mail, webhook, Slack)
version_added: 1.1.0
description:
  - Sends one notification to every channel of O(channels) - an e-mail over SMTP with the report files attached,
    a JSON POST to a webhook, or a Slack-compatible message to an incoming webhook - and returns one result per
    channel.
  - A channel that does not answer (connection refused, timeout, HTTP 4xx or 5xx, an SMTP error) is a result with
    RV(results[].ok=false) and the reason in RV(results[].error); it never fails the module. The caller reports it
    (the role prints one line per channel, RV(lines)).
  - A malformed channel (unknown type or key, a URL that is not http(s) or has no host, a port that is not a number
    1-65535, an empty O(channels[].to), an address without a domain, a line break in any field) fails the module
    with every problem listed, and nothing is sent to any channel. O(validate_only=true) checks the channels and
    sends nothing; the playbooks' preflight uses it so that a malformed channel is refused before anything runs.
  - "Secrets: O(channels[].smtp_password), O(channels[].token) and the whole O(channels[].url) (Slack and Teams
    webhook URLs carry their token in the path) are never printed or returned. A result names a webhook as
    C(scheme://host[:port]) and an SMTP server as C(host:port)."
  - "Runs on the host it is delegated to; the playbooks run it on the controller (C(delegate_to: localhost)), where
    the report files of O(attachments) are."
author:
  - K2 Platform Engineering (@k2-platform)
extends_documentation_fragment:
  - k2.iceberg_offload.attributes
attributes:
  check_mode:
    support: full
    details:
      - Checks the channels and sends nothing; C(changed) says whether something would have been sent.
  diff_mode:
    support: none
options:
  channels:
    description:
      - Where the notification goes. An empty list sends nothing.
    type: list
    elements: dict
    default: []
    suboptions:
      type:
        description: The kind of channel.
        type: str
        choices: [email, webhook]
        required: true
      name:
        description: A label for the channel in results and messages (default C(channels[N])).
        type: str
      smtp_host:
        description: C(email), required. The SMTP server (host name or IP address).
        type: str
      smtp_port:
        description:
          - C(email). The SMTP server's port, a number 1-65535.
          - Default V(25); 587 is usual with O(channels[].smtp_security=starttls), 465 with V(ssl).
        type: raw
      smtp_security:
        description:
          - C(email). V(none) (plain SMTP), V(starttls) (upgrade after EHLO; fails when the server does not offer it)
            or V(ssl) (TLS from the first byte). Default V(none).
          - The server's certificate is verified against the system's certificate authorities (C(SSL_CERT_FILE)
            names another bundle).
        type: str
        choices: [none, starttls, ssl]
      smtp_user:
        description: C(email). The user to log in as; without it no login is attempted.
        type: str
      smtp_password:
        description: C(email). Its password. Never printed; a warning says when it would cross the network unencrypted.
        type: str
      from:
        description: C(email), required. The sender's address, C(user@domain).
        type: str
      to:
        description: C(email), required. The recipients' addresses, C(user@domain) each.
        type: list
        elements: str
      url:
        description:
          - C(webhook), required. The http:// or https:// URL the notification is POSTed to.
          - A secret as a whole (Slack and Teams put the webhook's token in the path); redirects are not followed.
        type: str
      format:
        description:
          - C(webhook). V(json) posts the notification as a JSON document - C(source) (V(k2.iceberg_offload)),
            C(event), C(outcome), C(title), C(summary), C(escalations), C(state_left), C(report) (C(paths), the files
            of O(attachments), and C(url), O(report_url)) and C(data) (O(data)).
          - V(slack) posts a Slack-compatible message, C(text) and section C(blocks) (the title and outcome, the
            summary, the escalations, the report's link and files), each block within Slack's 3000 characters.
          - Default V(json).
        type: str
        choices: [json, slack]
      token:
        description: "C(webhook). A bearer token, sent as C(Authorization: Bearer <token>)."
        type: str
      validate_certs:
        description: C(webhook). Verify the server's TLS certificate. Default V(true).
        type: bool
  event:
    description: What happened.
    type: str
    choices: [escalation, incident_report, recovery]
    required: true
  title:
    description: One line, the e-mail's subject and the message's heading.
    type: str
    required: true
  summary:
    description: The lines a reader needs without opening the report.
    type: list
    elements: str
    default: []
  outcome:
    description: The run's outcome in a word or a line (such as C(recovered), C(ESCALATE), C(verified)).
    type: str
  escalations:
    description: What a person must do (text, or dicts such as C({scenario, reason, action})).
    type: list
    elements: raw
    default: []
  state_left:
    description: What the run left as it is (scheduler stopped, a table not repaired...).
    type: dict
    default: {}
  data:
    description: The caller's data, sent as is in a V(json) webhook's C(data) (not in e-mails or Slack messages).
    type: dict
    default: {}
  attachments:
    description:
      - Report files on the host the module runs on (JSON, Markdown, HTML), attached to e-mails and named in
        webhooks' C(report.paths).
      - A file larger than 5 MiB, or one that cannot be read, is named in the e-mail's body instead.
    type: list
    elements: path
    default: []
  report_url:
    description: Where the report can be opened (an AWX job's URL, a file share), in every message.
    type: str
  timeout:
    description: Seconds each network wait of a channel may take (connection, each answer), 1-300.
    type: int
    default: 10
  validate_only:
    description: Check the channels and send nothing (a preflight).
    type: bool
    default: false
notes:
  - Channels are sent to one after the other, in the order of O(channels).
seealso:
  - module: k2.iceberg_offload.incident_report
"""

EXAMPLES = r"""
- name: Tell the on-call team the recovery escalates
  k2.iceberg_offload.incident_notify:
    channels:
      - type: email
        name: on-call mail
        smtp_host: smtp.k2.internal
        smtp_port: 587
        smtp_security: starttls
        smtp_user: k2-alerts
        smtp_password: "{{ vault_k2_smtp_password }}"
        from: k2-alerts@k2.internal
        to: [oncall@k2.internal]
      - type: webhook
        name: incidents channel
        url: "{{ vault_k2_slack_webhook_url }}"
        format: slack
    event: escalation
    title: "IcebergOffloadWatermarkStale: Scenario 4 needs a person"
    outcome: ESCALATE
    summary:
      - bronze_trades_binance - watermark behind the cold tier by 3 cycles
    escalations:
      - {scenario: 4, reason: copies of a key differ, action: "choose k2_dedupe_conflict"}
    attachments:
      - /var/tmp/k2-iceberg-offload/latest-recovery.json
      - /var/tmp/k2-iceberg-offload/latest-recovery.md
    report_url: https://awx.k2.internal/#/jobs/playbook/4242/output
  delegate_to: localhost
  register: notified

- name: One line per channel
  ansible.builtin.debug:
    msg: "{{ notified.lines }}"

- name: Preflight - refuse a malformed channel before anything runs
  k2.iceberg_offload.incident_notify:
    channels: "{{ k2_notify_channels }}"
    event: recovery
    title: preflight
    validate_only: true
  delegate_to: localhost
"""

RETURN = r"""
results:
  description: One per channel, in the order of O(channels).
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: The channel's O(channels[].name), or C(channels[N]).
      type: str
      sample: on-call mail
    type:
      description: V(email) or V(webhook).
      type: str
      sample: email
    target:
      description: Where it went, without a secret - C(host:port) for SMTP, C(scheme://host[:port]) for a webhook.
      type: str
      sample: smtp.k2.internal:587
    ok:
      description: The channel took the notification.
      type: bool
      sample: true
    error:
      description:
        - Why it did not (V(null) when it did), in an engineer's words and without a secret.
        - When RV(results[].ok=true), the recipients an SMTP server refused while it took the others, if any.
      type: str
      sample: "https://hooks.slack.com answered HTTP 404 Not Found: no_service"
    seconds:
      description: How long sending to it took.
      type: float
      sample: 0.31
    status:
      description: V(delivered), V(not delivered), V(not sent (check mode)) or V(not sent (validate_only)).
      type: str
      sample: delivered
lines:
  description: One line per channel for people - delivered, or NOT delivered with the reason.
  returned: always
  type: list
  elements: str
  sample: ["on-call mail (email smtp.k2.internal:587): delivered in 0.3 s",
           "incidents channel (webhook https://hooks.slack.com): NOT delivered: https://hooks.slack.com did not
            answer within 10 s (timeout)"]
sent:
  description: Channels that took the notification.
  returned: always
  type: int
  sample: 1
undelivered:
  description:
    - Channels that did not (0 when nothing was sent).
    - Not named C(failed), which Ansible reads as the task's own failure.
  returned: always
  type: int
  sample: 1
msg:
  description: The outcome in one line.
  returned: always
  type: str
  sample: "1 of 2 channels delivered; NOT delivered: incidents channel"
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.k2.iceberg_offload.plugins.module_utils import notify, notify_channels, notify_message
from ansible_collections.k2.iceberg_offload.plugins.module_utils.redaction import harden


def argument_spec():
    channel = dict(
        type=dict(type="str", required=True, choices=list(notify_channels.TYPES)),
        name=dict(type="str"),
        smtp_host=dict(type="str"),
        smtp_port=dict(type="raw"),
        smtp_security=dict(type="str", choices=list(notify_channels.SECURITY)),
        smtp_user=dict(type="str"),
        smtp_password=dict(type="str", no_log=True),
        to=dict(type="list", elements="str"),
        url=dict(type="str", no_log=True),
        format=dict(type="str", choices=list(notify_channels.FORMATS)),
        token=dict(type="str", no_log=True),
        validate_certs=dict(type="bool"),
    )
    channel["from"] = dict(type="str")
    return dict(
        channels=dict(type="list", elements="dict", default=[], options=channel),
        event=dict(type="str", required=True, choices=list(notify_channels.EVENTS)),
        title=dict(type="str", required=True),
        summary=dict(type="list", elements="str", default=[]),
        outcome=dict(type="str"),
        escalations=dict(type="list", elements="raw", default=[]),
        state_left=dict(type="dict", default={}),
        data=dict(type="dict", default={}),
        attachments=dict(type="list", elements="path", default=[]),
        report_url=dict(type="str"),
        timeout=dict(type="int", default=10),
        validate_only=dict(type="bool", default=False),
    )


def main():
    module = harden(AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True))
    p = module.params
    channels = p["channels"] or []
    for channel in channels:
        # a webhook URL's path and query hold its token: masked wherever they might appear
        module.no_log_values.update(s for s in notify_channels.secrets_of(channel or {}) if len(s) >= 8)
    problems = notify_channels.validate(channels)
    if not 1 <= p["timeout"] <= 300:
        problems.append("timeout must be between 1 and 300 seconds, got %d" % p["timeout"])
    if p["report_url"] and notify_channels.has_line_break(p["report_url"]):
        problems.append("report_url contains a line break")
    if problems:
        module.fail_json(msg="%d problem%s with the notification channels; nothing was sent: %s" % (
            len(problems), "s" if len(problems) > 1 else "", "; ".join(problems)), problems=problems)
    for warning in notify_channels.advice(channels):
        module.warn(warning)
    channels = [notify_channels.normalise(c, i) for i, c in enumerate(channels)]
    message = notify_message.message_from(p)

    if p["validate_only"] or module.check_mode:
        why = "validate_only" if p["validate_only"] else "check mode"
        results = [notify.not_sent(c, why) for c in channels]
        lines = [notify.status_line(r) for r in results]
        module.exit_json(changed=bool(channels) and not p["validate_only"], results=results, lines=lines,
                         sent=0, undelivered=0,
                         msg="%d channel%s valid; nothing sent (%s)" % (
                             len(channels), "" if len(channels) == 1 else "s", why))

    results = [notify.send(c, message, p["timeout"]) for c in channels]
    sent = sum(1 for r in results if r["ok"])
    undelivered = len(results) - sent
    missed = [r["name"] for r in results if not r["ok"]]
    msg = "%d of %d channel%s delivered" % (sent, len(results), "" if len(results) == 1 else "s")
    if missed:
        msg += "; NOT delivered: %s" % ", ".join(missed)
    module.exit_json(changed=sent > 0, results=results, lines=[notify.status_line(r) for r in results],
                     sent=sent, undelivered=undelivered, msg=msg)


if __name__ == "__main__":
    main()
