#!/usr/bin/python
# Copyright: botops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
module: bot_health
short_description: Wait until a trading bot is live or ready
description:
  - Polls the profile's liveness (V(live)) or readiness (V(ready)) check until it passes or O(timeout) seconds have
    passed, then reads the other check once and the profile's health details (database, Redis, trading loop...).
  - On timeout it fails with the last answer observed, so the cause (HTTP 503 and which component is down,
    connection refused...) is in the message.
  - Never changes anything.
version_added: "0.1.0"
extends_documentation_fragment: [ansible.builtin.action_common_attributes, botops.fleet.botops_bot]
options:
  wait_for:
    description: V(live) waits for the liveness check, V(ready) for the readiness check.
    type: str
    choices: [live, ready]
    default: ready
  timeout:
    description: Seconds to wait; V(0) looks once.
    type: float
    default: 60
attributes:
  check_mode:
    support: full
    details: Read-only; runs the same in check mode.
  diff_mode:
    support: none
  platform:
    platforms: posix
author: botops contributors (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Wait until the bot is ready to trade
  botops.fleet.bot_health:
    wait_for: ready
    timeout: 120
    profile: "{{ botops_profile }}"
    bot: "{{ botops_bot }}"
    secrets: "{{ botops_secrets }}"
  register: health

- name: Show the components
  ansible.builtin.debug:
    var: health.components
"""

RETURN = r"""
live:
  description: The liveness check passed.
  returned: always
  type: bool
ready:
  description: The readiness check passed.
  returned: always
  type: bool
components:
  description: The profile's health details document as the bot answered it (null when not answering).
  returned: always
  type: raw
waited:
  description: Seconds spent waiting.
  returned: always
  type: float
observed:
  description: The last observation of the awaited check (status, body or error).
  returned: always
  type: list
"""

import time

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.botops.fleet.plugins.module_utils.botops_bot import bot_argument_spec, module_bot
from ansible_collections.botops.fleet.plugins.module_utils.botops_errors import BotError
from ansible_collections.botops.fleet.plugins.module_utils.botops_priority import yield_cpu
from ansible_collections.botops.fleet.plugins.module_utils.botops_values import describe_answer


def main():
    argument_spec = bot_argument_spec()
    argument_spec.update(
        wait_for=dict(type="str", choices=["live", "ready"], default="ready"),
        timeout=dict(type="float", default=60),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    yield_cpu(module)
    p = module.params
    name = p["bot"]["name"]
    result = dict(changed=False, live=False, ready=False, components=None, waited=0.0, observed=[])
    what = "liveness" if p["wait_for"] == "live" else "readiness"
    try:
        bot = module_bot(module)
        health = p["profile"]["health"]
        began = time.monotonic()
        ok, observed = bot.wait_for([health["liveness" if p["wait_for"] == "live" else "readiness"]],
                                    max(0.0, p["timeout"]))
        result["waited"] = round(time.monotonic() - began, 3)
        result["observed"] = observed
        if p["wait_for"] == "live":
            result["live"] = ok
            result["ready"] = bot.check(health["readiness"])[0] if ok else False
        else:
            result["ready"] = ok
            result["live"] = True if ok else bot.check(health["liveness"])[0]
        if result["live"] and health.get("details"):
            try:
                result["components"] = bot.request(health["details"])[1]
            except BotError as exc:
                result["components_error"] = str(exc)
    except (BotError, KeyError) as exc:
        module.fail_json(msg=f"Failed to check the {what} of bot '{name}': {exc}", **result)
    if not ok:
        module.fail_json(msg=f"Failed to wait for the {what} of bot '{name}': not {p['wait_for']} after "
                             f"{result['waited']:g}s; last answer {describe_answer(observed)}", **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
