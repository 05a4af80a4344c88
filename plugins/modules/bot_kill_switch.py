#!/usr/bin/python
# Copyright: botops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
module: bot_kill_switch
short_description: Engage or release a trading bot's kill switch, escalating until it is verified
description:
  - Walks the ladder the bot's profile describes - the level's own rungs, then (with O(escalate)) the
    escalation rungs (service stop, signals) - until a rung's checks verify the level; nothing is assumed.
  - The engaged level is read from the bot, not remembered; engaging an engaged level changes nothing.
  - An operator's level is recorded on the bot's host, so every botops module that starts the bot puts it back.
  - Every engagement and release is appended to the bot's audit log.
  - A bot that answers as another bot gets only its escalation rungs, and the call fails naming both ids.
  - M(botops.fleet.bot_fleet_kill_switch) runs this same code for a whole fleet from the controller.
version_added: "0.1.0"
extends_documentation_fragment: [ansible.builtin.action_common_attributes, botops.fleet.botops_bot]
options:
  state:
    description: V(engaged) engages O(level), V(released) releases it.
    type: str
    choices: [engaged, released]
    default: engaged
  level:
    description:
      - V(pause) stops new entries, V(halt) stops all trading and cancels open orders, V(flatten) also closes
        open positions. What each does on a family is its profile's business.
    type: str
    choices: [pause, halt, flatten]
    default: halt
  reason:
    description: Why; required to engage. Sent to bots whose API takes a reason, and audited.
    type: str
  force:
    description: Release even when a stronger level than O(level) is engaged (it is released too).
    type: bool
    default: false
  escalate:
    description: When the level's own rungs do not verify, go on down the profile's escalation rungs.
    type: bool
    default: true
  who:
    description:
      - The operator, for the audit log. Default E(BOTOPS_OPERATOR), else E(SUDO_USER), else the user the
        module runs as; playbooks pass the controller user.
    type: str
  holder:
    description:
      - V(operator) is an operator's kill switch, which stands until an operator releases it. V(operation) is an
        operation's own pause for its window, recorded under O(run_id) and never releasing an operator's level.
    type: str
    choices: [operator, operation]
    default: operator
  run_id:
    description: The run that engages or releases, recorded with the engagement (required in practice for V(operation)).
    type: str
  audit_log:
    description: The audit log on the bot's host (JSON lines, mode 0600). Default C(<bot root>/shared/data/botops-kill-switch.log).
    type: path
attributes:
  check_mode:
    support: full
    details: Reports whether it would engage or release and which rung would run first; changes nothing.
  diff_mode:
    support: full
    details: The engaged level before and after.
  platform:
    platforms: posix
notes:
  - Runs on the bot's host (service manager, signals and processes are local there).
  - "The ladder step by step, the release and the identity check: C(docs/operations/kill-switch.md)."
seealso:
  - module: botops.fleet.bot_fleet_kill_switch
author: botops contributors (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Halt the bot (escalating to the service manager and signals if its API does not answer)
  botops.fleet.bot_kill_switch:
    level: halt
    reason: "drawdown over limit"
    who: "{{ lookup('env', 'USER') }}"
    profile: "{{ botops_profile }}"
    bot: "{{ botops_bot }}"
    secrets: "{{ botops_secrets }}"
  register: kill

- name: Resume trading after the incident
  botops.fleet.bot_kill_switch:
    state: released
    level: halt
    profile: "{{ botops_profile }}"
    bot: "{{ botops_bot }}"
    secrets: "{{ botops_secrets }}"
"""

RETURN = r"""
level:
  description: The level asked for.
  returned: always
  type: str
  sample: halt
previous_level:
  description: The level engaged before the call (null when none).
  returned: always
  type: str
current_level:
  description: The level engaged after the call (null when none).
  returned: always
  type: str
engaged_by:
  description: Name of the rung that engaged the level (null when nothing was done).
  returned: always
  type: str
  sample: circuit breaker
engaged_record:
  description:
    - When the asked level was already engaged, the audit record of the engagement still in force
      (C(level), C(time), C(who), C(reason), C(rung)); null when the audit logs hold none.
  returned: when state is engaged and the level was already engaged
  type: dict
released_by:
  description: Name of the rung that released the level.
  returned: always
  type: str
released_levels:
  description: Levels released (the asked one, and with O(force) the stronger ones).
  returned: when something was released
  type: list
  elements: str
identity:
  description:
    - When another bot answers at the bot's address, who it says it is (C(expected), C(reported),
      C(ok) false, C(message)); the level's own rungs were not run on it.
  returned: when the bot is not who the inventory says
  type: dict
steps:
  description: The rungs tried, in order.
  returned: always
  type: list
  elements: dict
  contains:
    name: {description: "Rung name.", type: str}
    actions: {description: "Actions done.", type: list, elements: str}
    errors: {description: "Actions that failed and why.", type: list, elements: str}
    verified: {description: "The rung's checks held within its timeout.", type: bool}
    seconds: {description: "Time spent on the rung.", type: float}
    observed: {description: "Last observation of the checks when not verified.", type: list}
actions:
  description: Every action done, in order (empty when nothing changed).
  returned: always
  type: list
  elements: str
ladder:
  description: The rungs an engage would walk, in order.
  returned: when an engage has something to do
  type: list
  elements: str
rung:
  description: In check mode, the rung that would run first.
  returned: check mode, when something would change
  type: str
engagement:
  description: The operator's engagement recorded on the bot's host after an engage (C(level), C(reason), C(who), C(time), C(run_id), C(via)).
  returned: when an operator's level was engaged
  type: dict
yielded_to:
  description: For an operation's release, the operator's engagement that kept the bot as it is.
  returned: when an operation's pause was released while an operator's level is recorded
  type: dict
audit:
  description: The record appended to the audit log.
  returned: when something was attempted
  type: dict
audit_errors:
  description: Audit logs that could not be written (the operation itself went on).
  returned: when an audit log could not be written
  type: list
  elements: str
seconds:
  description: Duration of the call.
  returned: always
  type: float
"""

import os

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.botops.fleet.plugins.module_utils.botops_bot import bot_argument_spec, module_bot
from ansible_collections.botops.fleet.plugins.module_utils.botops_errors import BotError
from ansible_collections.botops.fleet.plugins.module_utils.botops_kill_switch import (
    REQUIRED_IF, KillSwitch, KillSwitchError, kill_switch_options)
from ansible_collections.botops.fleet.plugins.module_utils.botops_kill_switch_record import AUDIT_LOG, HOLDERS


def warn_audit(module, result):
    for problem in result.get("audit_errors") or []:
        module.warn(problem)


def main():
    argument_spec = bot_argument_spec()
    argument_spec.update(kill_switch_options(), audit_log=dict(type="path"),
                         holder=dict(type="str", choices=list(HOLDERS), default="operator"),
                         run_id=dict(type="str"))
    module = AnsibleModule(
        argument_spec=argument_spec,
        required_if=REQUIRED_IF,
        supports_check_mode=True,
    )
    p = module.params
    name = p["bot"]["name"]
    result = dict(changed=False, bot=name, level=p["level"], steps=[], actions=[])
    action = "engage" if p["state"] == "engaged" else "release"
    try:
        bot = module_bot(module)
        switch = KillSwitch(
            bot, p["profile"], p["level"], reason=p["reason"], who=p["who"], escalate=p["escalate"],
            force=p["force"], check_mode=module.check_mode,
            audit_logs=[p["audit_log"] or os.path.join(p["bot"]["root"], AUDIT_LOG)],
            holder=p["holder"], run_id=p["run_id"],
        )
        result = switch.run(p["state"])
    except KillSwitchError as exc:
        result = exc.result
        warn_audit(module, result)
        module.fail_json(msg=str(exc), **result)
    except (BotError, KeyError, OSError) as exc:
        module.fail_json(msg=f"Failed to {action} kill switch level '{p['level']}' on bot '{name}': {exc}", **result)
    warn_audit(module, result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
