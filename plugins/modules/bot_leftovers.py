#!/usr/bin/python
# Copyright: botops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
module: bot_leftovers
short_description: Remove the debris crashed botops runs left on one bot
description:
  - Removes what runs killed in the middle of an operation left on the bot's host - scratch databases, unfinished
    backup sets, half-installed or half-removed releases - and reports it as M(botops.fleet.bot_leftovers_info) lists it.
  - Other runs' pauses are only listed, for the caller to release with M(botops.fleet.bot_kill_switch).
  - Removing debris needs the bot's lock (M(botops.fleet.bot_lock)); without it a live run's scratch database could be taken for debris.
version_added: "0.1.0"
extends_documentation_fragment: [ansible.builtin.action_common_attributes, botops.fleet.botops_bot]
options:
  state:
    description: V(absent) removes the scratch databases, temporary sets and installs.
    type: str
    choices: [absent]
    default: absent
  run_id:
    description: The calling run, whose own pause is not a leftover.
    type: str
  maintenance_db:
    description: Database the bot's role connects to for listing and dropping databases.
    type: str
    default: postgres
attributes:
  check_mode:
    support: full
    details: Lists what would be removed; removes nothing.
  diff_mode:
    support: none
  platform:
    platforms: posix
notes:
  - "What each kind of leftover is and why it is safe to remove: C(docs/operations/leftovers.md)."
seealso:
  - module: botops.fleet.bot_leftovers_info
  - module: botops.fleet.bot_lock
author: botops contributors (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Remove the debris (under the bot's lock)
  botops.fleet.bot_leftovers:
    profile: "{{ botops_profile }}"
    bot: "{{ botops_bot }}"
    secrets: "{{ botops_secrets }}"
    run_id: "{{ botops_run_id }}"
    state: absent
"""

RETURN = r"""
pauses:
  description: "Other runs' pauses still recorded on the bot: C(run_id), C(level), C(reason), C(who), C(time)."
  returned: always
  type: list
  elements: dict
scratch_databases:
  description: Scratch databases (or SQLite files) found.
  returned: always
  type: list
  elements: str
temporary_sets:
  description: Unfinished backup sets and carry-forward directories found.
  returned: always
  type: list
  elements: str
installs:
  description: Half-installed or half-removed release directories found.
  returned: always
  type: list
  elements: str
operator:
  description: The kill switch level an operator engaged (C(level), C(who), C(time), C(reason)), or null.
  returned: always
  type: dict
running:
  description: The bot's process is running.
  returned: always
  type: bool
current:
  description: The current release (null when none).
  returned: always
  type: str
current_status:
  description: The current release's status in the ledger (good, bad, pending; null when unknown).
  returned: always
  type: str
previous_good:
  description: The latest good release other than the current one (null when none).
  returned: always
  type: str
found:
  description: One line per leftover, for people.
  returned: always
  type: list
  elements: str
actions:
  description: What was removed (or would be, in check mode).
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.botops.fleet.plugins.module_utils.botops_bot import bot_argument_spec, module_bot
from ansible_collections.botops.fleet.plugins.module_utils.botops_leftovers import ERRORS, Leftovers
from ansible_collections.botops.fleet.plugins.module_utils.botops_priority import yield_cpu


def main():
    argument_spec = bot_argument_spec()
    argument_spec.update(
        state=dict(type="str", choices=["absent"], default="absent"),
        run_id=dict(type="str"),
        maintenance_db=dict(type="str", default="postgres"),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    yield_cpu(module)
    p = module.params
    leftovers = Leftovers(p)
    result = leftovers.result
    result["actions"] = []
    try:
        leftovers.look(module_bot(module))
        leftovers.remove(module.check_mode, result["actions"])
        result["changed"] = bool(result["actions"])
    except ERRORS as exc:
        module.fail_json(msg=f"Failed to remove leftovers on bot '{p['bot']['name']}': {exc}", **result)
    finally:
        leftovers.close()
    module.exit_json(**result)


if __name__ == "__main__":
    main()
