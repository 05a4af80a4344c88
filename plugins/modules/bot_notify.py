#!/usr/bin/python
# Copyright: botops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
module: bot_notify
short_description: Post an operations notification as JSON to a chat or generic webhook
description:
  - Posts one message (maintenance announced, finished, failed...) to a webhook in the shape the
    receiver expects.
  - C(slack) posts the keys C(text) (Slack and Mattermost incoming webhooks); C(telegram) posts
    C(chat_id) and C(text) to a Bot API C(sendMessage) URL; C(generic) posts C(source), C(event),
    C(message), C(details) and C(sent_at).
  - Without O(url) nothing is sent and nothing fails (C(sent=false)); notifications are optional.
  - A webhook that cannot be reached only warns, unless O(fail_on_error=true); a lost notification
    must not stop a maintenance window.
  - The URL usually carries a token, so it is never shown in results or logs.
version_added: "0.1.0"
extends_documentation_fragment: [ansible.builtin.action_common_attributes]
options:
  url:
    description: The webhook URL (C(botops_notify_webhook_url)); empty or null sends nothing.
    type: str
  format:
    description: The payload shape the webhook expects.
    type: str
    choices: [generic, slack, telegram]
    default: generic
  chat_id:
    description: Telegram chat to post to; required when O(format=telegram) and O(url) is set.
    type: str
  event:
    description: What happened, a short machine-readable name (C(maintenance_started)...).
    type: str
    required: true
  msg:
    description: The text for people (the C(text) of a chat post, the C(message) of a C(generic) one).
    type: str
    required: true
  details:
    description: Structured data for C(generic) receivers (window, bots, results); not sent to chats.
    type: dict
    default: {}
  timeout:
    description: Seconds to wait for the webhook.
    type: int
    default: 10
  validate_certs:
    description: Verify the webhook's TLS certificate.
    type: bool
    default: true
  fail_on_error:
    description: Fail the task when the webhook cannot be reached or answers an error.
    type: bool
    default: false
attributes:
  check_mode:
    support: full
    details: Reports the payload that would be posted; posts nothing.
  diff_mode:
    support: none
  platform:
    platforms: posix
author: botops contributors (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Announce the maintenance window
  botops.fleet.bot_notify:
    url: "{{ botops_notify_webhook_url | default(omit) }}"
    format: slack
    event: maintenance_started
    msg: "Weekly maintenance starts on bot01, bot02"
    details: {window: weekly, bots: [bot01, bot02]}
  delegate_to: localhost
  run_once: true
"""

RETURN = r"""
sent:
  description: The webhook accepted the notification.
  returned: always
  type: bool
status:
  description: HTTP status the webhook answered (null when nothing was posted).
  returned: always
  type: int
payload:
  description: The JSON posted (or, in check mode, that would be posted).
  returned: when a URL is set
  type: dict
actions:
  description: What was done (C(post <event>)), empty when nothing was sent.
  returned: always
  type: list
  elements: str
"""

import json
from datetime import datetime, timezone

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.text.converters import to_text
from ansible.module_utils.urls import open_url


def build_payload(fmt, event, message, details, chat_id=None):
    """The JSON body for this kind of webhook."""
    if fmt == "slack":
        return {"text": message}
    if fmt == "telegram":
        return {"chat_id": chat_id, "text": message, "disable_web_page_preview": True}
    return {
        "source": "botops",
        "event": event,
        "message": message,
        "details": details or {},
        "sent_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def main():
    module = AnsibleModule(
        argument_spec=dict(
            url=dict(type="str", no_log=True),
            format=dict(type="str", choices=["generic", "slack", "telegram"], default="generic"),
            chat_id=dict(type="str"),
            event=dict(type="str", required=True),
            msg=dict(type="str", required=True),
            details=dict(type="dict", default={}),
            timeout=dict(type="int", default=10),
            validate_certs=dict(type="bool", default=True),
            fail_on_error=dict(type="bool", default=False),
        ),
        supports_check_mode=True,
    )
    p = module.params
    result = dict(changed=False, sent=False, status=None, actions=[])
    if not p["url"]:
        result["msg"] = "no webhook configured (botops_notify_webhook_url): nothing sent"
        module.exit_json(**result)
    if p["format"] == "telegram" and not p["chat_id"]:
        module.fail_json(msg=f"Failed to post notification '{p['event']}': format telegram needs chat_id "
                             "(botops_notify_chat_id)", **result)
    payload = build_payload(p["format"], p["event"], p["msg"], p["details"], p["chat_id"])
    result.update(payload=payload, changed=True, actions=[f"post {p['event']}"])
    if module.check_mode:
        module.exit_json(**result)
    try:
        response = open_url(
            p["url"], data=json.dumps(payload).encode(), method="POST",
            headers={"Content-Type": "application/json", "Accept": "application/json"},
            timeout=p["timeout"], validate_certs=p["validate_certs"], follow_redirects="safe",
        )
        result["status"] = response.getcode()
        result["sent"] = True
    except Exception as exc:  # HTTPError, URLError, socket timeout, SSL errors
        result["status"] = getattr(exc, "code", None)
        reason = to_text(getattr(exc, "reason", None) or exc)
        message = f"Failed to post notification '{p['event']}' to the webhook: {exc.__class__.__name__}: {reason}"
        result["changed"] = False
        result["actions"] = []
        if p["fail_on_error"]:
            module.fail_json(msg=message, **result)
        module.warn(message)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
