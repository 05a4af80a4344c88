#!/usr/bin/python
# Copyright: botops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
module: bot_incident
short_description: Capture what an incident review needs from one trading bot
description:
  - Collects, on the bot's host, the evidence the runbooks save on an emergency stop (mojorust 5.1 step 4, 6.2) - a
    status snapshot (as M(botops.fleet.bot_facts) reports it), the open positions, the release history, the kill-switch audit
    log, the last shutdown record and the end of every log file.
  - Returns it all; M(botops.fleet.bot_incident_bundle) writes the bundle on the controller.
  - The values of O(secrets) are masked in what is returned, and secret-shaped text (passwords in URLs, bearer
    tokens, C(password=) assignments) is redacted from log lines.
  - Reads only; changes nothing.
version_added: "0.1.0"
extends_documentation_fragment: [ansible.builtin.action_common_attributes, botops.fleet.botops_bot]
options:
  log_lines:
    description: How many lines to keep from the end of each log file.
    type: int
    default: 500
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
  platform:
    platforms: posix
seealso:
  - module: botops.fleet.bot_incident_bundle
author: botops contributors (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Capture the incident evidence of every bot
  botops.fleet.bot_incident:
    profile: "{{ botops_profile }}"
    bot: "{{ botops_bot }}"
    secrets: "{{ botops_secrets }}"
  register: capture
"""

RETURN = r"""
incident:
  description: The evidence of one bot.
  returned: always
  type: dict
  contains:
    bot: {description: "Bot name.", type: str}
    captured_at: {description: "When (UTC).", type: str}
    status: {description: "The status snapshot (as bot_facts returns it).", type: dict}
    positions: {description: "Open positions as the bot lists them (null when the profile has no list).", type: raw}
    ledger: {description: "The release history.", type: raw}
    audit: {description: "Kill-switch audit records (JSON lines).", type: list}
    last_shutdown: {description: "The bot's last shutdown record, when it wrote one.", type: raw}
    logs: {description: "File name to its last lines (secrets redacted).", type: dict}
    errors: {description: "What could not be captured and why.", type: dict}
"""

import glob
import json
import os
from collections import deque
from datetime import datetime, timezone

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.botops.fleet.plugins.module_utils.botops_bot import bot_argument_spec, module_bot
from ansible_collections.botops.fleet.plugins.module_utils.botops_errors import BotError
from ansible_collections.botops.fleet.plugins.module_utils.botops_facts import gather
from ansible_collections.botops.fleet.plugins.module_utils.botops_pg import PgError, module_database
from ansible_collections.botops.fleet.plugins.module_utils.botops_priority import yield_cpu
from ansible_collections.botops.fleet.plugins.module_utils.botops_redact import redact


def read_json(path):
    with open(path) as f:
        return json.load(f)


def tail(path, lines):
    with open(path, errors="replace") as f:
        return [line.rstrip("\n") for line in deque(f, maxlen=lines)]


def capture(module):
    p = module.params
    root = p["bot"]["root"]
    secrets = [v for v in (p["secrets"] or {}).values() if v]
    incident = {"bot": p["bot"]["name"], "captured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "errors": {}}
    bot = module_bot(module)
    database = None
    if p["profile"]["database"]["engine"] == "postgresql":
        try:
            database = module_database(module)
        except PgError as exc:
            incident["errors"]["database"] = str(exc)
    incident["status"] = gather(bot, p["profile"], database)
    incident["positions"] = None
    listing = (p["profile"].get("positions") or {}).get("list")
    if listing and incident["status"]["live"]:
        try:
            incident["positions"] = bot.probe(listing)
        except BotError as exc:
            incident["errors"]["positions"] = str(exc)
    files = {
        "ledger": os.path.join(root, "releases", "ledger.json"),
        "last_shutdown": os.path.join(root, "shared", "data", "last_shutdown.json"),
    }
    for key, path in files.items():
        incident[key] = None
        if os.path.exists(path):
            try:
                incident[key] = read_json(path)
            except (OSError, ValueError) as exc:
                incident["errors"][key] = f"{path}: {exc}"
    incident["audit"] = []
    audit_path = os.path.join(root, "shared", "data", "botops-kill-switch.log")
    if os.path.exists(audit_path):
        for line in tail(audit_path, p["log_lines"]):
            try:
                incident["audit"].append(json.loads(line))
            except ValueError:
                incident["audit"].append({"raw": redact(line, secrets)})
    incident["logs"] = {}
    for path in sorted(glob.glob(os.path.join(root, "shared", "logs", "*.log"))):
        try:
            incident["logs"][os.path.basename(path)] = [redact(line, secrets) for line in tail(path, p["log_lines"])]
        except OSError as exc:
            incident["errors"][os.path.basename(path)] = str(exc)
    return incident


def main():
    argument_spec = bot_argument_spec()
    argument_spec.update(log_lines=dict(type="int", default=500))
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    yield_cpu(module)
    result = dict(changed=False)
    try:
        result["incident"] = capture(module)
    except (BotError, KeyError) as exc:
        module.fail_json(msg=f"Failed to capture incident evidence of bot '{module.params['bot']['name']}': {exc}",
                         **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
