#!/usr/bin/python
# Copyright: botops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
module: bot_positions
short_description: Cancel a trading bot's open orders or close its open positions
description:
  - Counts open positions and orders through the profile's C(facts) probes before and after;
    M(botops.fleet.bot_positions_info) only reads them.
  - V(orders_cancelled) runs the profile's C(positions.cancel_orders); V(closed) cancels the open orders (when the
    profile can) and runs C(positions.close_all). Each is verified by polling until the counts reach 0.
  - A profile without the action needed fails at once, naming the way that works for it (M(botops.fleet.bot_kill_switch)
    with level V(halt) or V(flatten)).
  - A bot that keeps trading may open new orders or positions right after; halt or pause it first when they must stay at 0.
version_added: "0.1.0"
extends_documentation_fragment: [ansible.builtin.action_common_attributes, botops.fleet.botops_bot]
options:
  state:
    description: V(orders_cancelled) leaves no open order; V(closed) leaves no open position (nor order).
    type: str
    choices: [orders_cancelled, closed]
    required: true
  timeout:
    description: Seconds to poll for the counts to reach 0 after the actions.
    type: float
    default: 10
attributes:
  check_mode:
    support: full
    details: Reports the counts and the actions that would run.
  diff_mode:
    support: full
    details: Open positions and orders before and after.
  platform:
    platforms: posix
seealso:
  - module: botops.fleet.bot_positions_info
  - module: botops.fleet.bot_kill_switch
author: botops contributors (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Cancel every open order of the bot
  botops.fleet.bot_positions:
    state: orders_cancelled
    profile: "{{ botops_profile }}"
    bot: "{{ botops_bot }}"
    secrets: "{{ botops_secrets }}"

- name: Close every open position (and cancel the open orders) of the bot
  botops.fleet.bot_positions:
    state: closed
    profile: "{{ botops_profile }}"
    bot: "{{ botops_bot }}"
    secrets: "{{ botops_secrets }}"
"""

RETURN = r"""
open_positions:
  description: Open positions after the call (null when the profile cannot count them).
  returned: always
  type: int
open_orders:
  description: Open orders after the call (null when the profile cannot count them).
  returned: always
  type: int
positions:
  description: The open positions, when the profile has C(positions.list).
  returned: when the profile can list them
  type: list
previous:
  description: The counts before the call.
  returned: always
  type: dict
actions:
  description: The orders cancelled and positions closed, as the profile's actions did them, in order (empty when none).
  returned: always
  type: list
  elements: str
would:
  description: In check mode, the actions that would run.
  returned: check mode
  type: list
  elements: str
"""

import time

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.botops.fleet.plugins.module_utils.botops_bot import POLL_INTERVAL, bot_argument_spec, module_bot
from ansible_collections.botops.fleet.plugins.module_utils.botops_errors import BotError
from ansible_collections.botops.fleet.plugins.module_utils.botops_positions import counts, listing
from ansible_collections.botops.fleet.plugins.module_utils.botops_priority import yield_cpu
from ansible_collections.botops.fleet.plugins.module_utils.botops_values import describe_action


def main():
    argument_spec = bot_argument_spec()
    argument_spec.update(
        state=dict(type="str", choices=["orders_cancelled", "closed"], required=True),
        timeout=dict(type="float", default=10),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    yield_cpu(module)
    p = module.params
    name = p["bot"]["name"]
    profile = p["profile"]
    family = profile.get("family")
    conf = profile.get("positions") or {}
    state = p["state"]
    what = {"orders_cancelled": "cancel open orders", "closed": "close open positions"}[state]
    actions = []
    result = dict(changed=False, open_positions=None, open_orders=None, previous={}, actions=actions)
    try:
        if state == "orders_cancelled" and not conf.get("cancel_orders"):
            raise BotError(f"profile '{family}' has no positions.cancel_orders action: engage the kill switch "
                           "instead (bot_kill_switch level halt cancels open orders, flatten also closes positions)")
        if state == "closed" and not conf.get("close_all"):
            raise BotError(f"profile '{family}' has no positions.close_all action: use the kill switch level "
                           "flatten (bot_kill_switch level: flatten)")
        bot = module_bot(module)
        before = counts(bot, profile["facts"])
        result.update(before, previous=dict(before))
        plan = []
        if conf.get("cancel_orders") and before["open_orders"] != 0:
            plan += conf["cancel_orders"]
        if state == "closed" and before["open_positions"] != 0:
            plan += conf["close_all"]
        if plan:
            result["changed"] = True
            want = dict(before, open_orders=0 if conf.get("cancel_orders") else before["open_orders"])
            if state == "closed":
                want["open_positions"] = 0
            result["diff"] = {
                "before": "".join(f"{k}: {v}\n" for k, v in before.items()),
                "after": "".join(f"{k}: {v}\n" for k, v in want.items()),
            }
        if module.check_mode:
            result["would"] = [describe_action(a) for a in plan]
        else:
            for action in plan:
                actions.append(bot.do(action))
            if plan:
                watched = ["open_orders"] if state == "orders_cancelled" else ["open_positions"] + (
                    ["open_orders"] if conf.get("cancel_orders") else [])
                deadline = time.monotonic() + p["timeout"]
                while True:
                    now = counts(bot, profile["facts"])
                    result.update(now)
                    if all(now[k] in (0, None) for k in watched) or time.monotonic() >= deadline:
                        break
                    time.sleep(POLL_INTERVAL)
                left = {k: now[k] for k in watched if now[k] not in (0, None)}
                if left:
                    raise BotError(f"after {', '.join(actions)} still open after {p['timeout']:g}s: "
                                   + ", ".join(f"{k}={v}" for k, v in left.items()))
                unknown = [k for k in watched if now[k] is None]
                if unknown:
                    module.warn(f"profile '{family}' cannot count {', '.join(unknown)} on bot '{name}': not verified")
        if conf.get("list"):
            result["positions"] = listing(bot, profile)
    except (BotError, KeyError) as exc:
        module.fail_json(msg=f"Failed to {what} on bot '{name}': {exc}", **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
