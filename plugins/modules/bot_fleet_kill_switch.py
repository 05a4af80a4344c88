#!/usr/bin/python
# Copyright: botops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
module: bot_fleet_kill_switch
short_description: Engage or release the kill switch of many trading bots at once, from the controller
description:
  - The fleet form of M(botops.fleet.bot_kill_switch), run once on the controller; every bot goes through the same ladder
    code, all bots concurrently (one thread per bot, at most O(max_workers)).
  - Built for a thousand bots per call - profiles given once, one process table, shared service operations,
    requests to one host bounded (O(max_requests_per_host)), bots that do not answer cut short (O(fail_fast)).
  - Every bot is tried; the task fails afterwards if any bot could not be brought to the asked state, naming each.
  - The audit log is written on the controller; C(local) bots' own audit logs are written too.
  - Rungs that need a shell on the bot's host run only for C(local) bots; drive remote fleets with M(botops.fleet.bot_kill_switch).
version_added: "0.1.0"
extends_documentation_fragment: [ansible.builtin.action_common_attributes, botops.fleet.botops_bot.fleet]
options:
  hosts:
    description:
      - Inventory hostnames whose bots to drive, in place of O(bots) and O(profiles), read on the controller by
        its action plugin on the controller (the module alone refuses it).
      - Only hosts with C(ansible_connection=local) are driven; the others are returned in RV(remote_hosts).
    type: list
    elements: str
  bots:
    description:
      - The bots, each with its profile and secrets (the options of M(botops.fleet.bot_kill_switch)). Required unless
        O(hosts) is given.
    type: list
    elements: dict
  run_id:
    description: The run that engages or releases, recorded with the operator's engagement on each bot's host.
    type: str
  profiles:
    description: Profiles by family name, for bots given without their own C(profile); a large fleet's arguments stay small.
    type: dict
    default: {}
  state:
    description: V(engaged) engages O(level) on every bot, V(released) releases it.
    type: str
    choices: [engaged, released]
    default: engaged
  level:
    description: V(pause), V(halt) or V(flatten), as in M(botops.fleet.bot_kill_switch).
    type: str
    choices: [pause, halt, flatten]
    default: halt
  reason:
    description: Why; required to engage.
    type: str
  force:
    description: Release even when a stronger level is engaged.
    type: bool
    default: false
  escalate:
    description: Go on down each bot's escalation rungs when the level's own rungs do not verify.
    type: bool
    default: true
  who:
    description: The operator for the audit log (default E(BOTOPS_OPERATOR), E(SUDO_USER), or the controller user).
    type: str
  audit_log:
    description:
      - The controller-side audit log (JSON lines, mode 0600), under the controller user's home by default so it
        does not depend on the working directory; playbooks pass C({{ playbook_dir }}/../artifacts/kill-switch-audit.log).
    type: path
    default: ~/.botops/kill-switch-audit.log
  max_workers:
    description: Bots handled at the same time (one thread each).
    type: int
    default: 1024
  max_requests_per_host:
    description:
      - At most this many requests in flight to one host (one C(bot_listen) address); a request waits for a slot
        before its C(http.timeout) starts, so that bots sharing a host are not escalated for being slow.
    type: int
    default: 128
  fail_fast:
    description:
      - When engaging, once a request to a bot timed out, its later requests wait at most this many seconds, so
        its ladder soon reaches the rungs that do not need its API. A release always waits the full timeouts.
    type: float
    default: 0.5
attributes:
  check_mode:
    support: full
    details: Reports per bot whether it would engage or release and which rung would run first.
  diff_mode:
    support: full
    details: The engaged level of every bot before and after.
  platform:
    platforms: posix
notes:
  - "What the fleet form shares between bots, and how it keeps slow bots from holding up the others:
    C(docs/operations/kill-switch.md)."
seealso:
  - module: botops.fleet.bot_kill_switch
author: botops contributors (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Halt every bot of the play at once
  botops.fleet.bot_fleet_kill_switch:
    level: halt
    reason: "exchange incident"
    who: "{{ lookup('env', 'USER') }}"
    audit_log: "{{ playbook_dir }}/../artifacts/kill-switch-audit.log"
    bots: "{{ botops__fleet | from_json }}"
  vars:
    # one entry per bot of the play, built on the controller from each bot's variables
    botops__fleet: >-
      [{% for h in ansible_play_hosts %}{{ {'bot': hostvars[h].botops_bot, 'profile': hostvars[h].botops_profile,
      'secrets': hostvars[h].botops_secrets,
      'local': hostvars[h].ansible_connection | default('ssh') == 'local'} | to_json }}{{ '' if loop.last else ',' }}{% endfor %}]
  delegate_to: localhost
  run_once: true
  register: fleet_halt

- name: The same, each family's profile given once (playbooks/tasks/fleet_kill_switch.yml builds both lists)
  botops.fleet.bot_fleet_kill_switch:
    level: halt
    reason: "exchange incident"
    bots:
      - bot: {name: bot01, family: hyperliquid, root: /srv/bots/bot01, ports: {api: 8000}}
        secrets: {api_token: "{{ vault_bot01_api_token }}"}
      - bot: {name: bot02, family: hyperliquid, root: /srv/bots/bot02, ports: {api: 8000}, listen: 10.0.0.12}
        secrets: {api_token: "{{ vault_bot02_api_token }}"}
    profiles:
      hyperliquid: "{{ lookup('botops.fleet.bot_profile', 'hyperliquid') }}"
  delegate_to: localhost
  run_once: true
"""

RETURN = r"""
remote_hosts:
  description: With O(hosts), the hosts that were not driven because their bots are not on the controller's host.
  returned: when O(hosts) is given
  type: list
  elements: str
bots:
  description:
    - Per bot (by name), the result M(botops.fleet.bot_kill_switch) returns, plus C(failed) and C(msg); its actions,
      diff and audit record are kept once for the whole fleet (RV(actions), the task's diff, the audit logs).
  returned: always
  type: dict
summary:
  description: What the run did.
  returned: always
  type: dict
  contains:
    total: {description: "Bots given.", type: int}
    halted: {description: "For V(engaged): bots now engaged at O(level) or stronger.", type: int}
    released: {description: "For V(released): bots on which O(level) is no longer engaged.", type: int}
    changed: {description: "Bots changed (or that would change, in check mode).", type: int}
    failed:
      description: Bots that could not be brought to the asked state, or only by an escalation their inventory entry forced.
      type: int
    failed_bots: {description: "Their names.", type: list, elements: str}
    duration: {description: "Seconds for the whole fleet.", type: float}
actions:
  description: "Every action done, as C(<bot>: <action>)."
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.botops.fleet.plugins.module_utils.botops_fleet_kill_switch import (
    MUTUALLY_EXCLUSIVE, REQUIRED_ONE_OF, argument_spec, run_fleet)
from ansible_collections.botops.fleet.plugins.module_utils.botops_kill_switch import REQUIRED_IF


def main():
    module = AnsibleModule(argument_spec=argument_spec(), required_if=REQUIRED_IF, required_one_of=REQUIRED_ONE_OF,
                           mutually_exclusive=MUTUALLY_EXCLUSIVE, supports_check_mode=True)
    if module.params["hosts"] is not None:
        module.fail_json(msg="hosts is read on the controller, by the action plugin beside the botops playbooks "
                             "(plugins/action/); run the task on the controller, or give bots")
    result, failure = run_fleet(module.params, module.check_mode)
    module.no_log_values = set()  # run_fleet scrubbed each bot's result of its secrets already
    if failure:
        module.fail_json(msg=failure, **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
