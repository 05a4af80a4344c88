#!/usr/bin/python
# Copyright: botops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
module: bot_positions_info
short_description: Count a trading bot's open positions and orders, and list its positions
description:
  - Counts open positions and orders through the profile's C(facts) probes, and lists the positions through
    C(positions.list) when the profile has it. Never changes anything.
  - M(botops.fleet.bot_positions) cancels the orders or closes the positions.
version_added: "0.1.0"
extends_documentation_fragment: [ansible.builtin.action_common_attributes, botops.fleet.botops_bot]
options: {}
attributes:
  check_mode:
    support: full
    details: Reads only; runs the same in check mode.
  diff_mode:
    support: none
  platform:
    platforms: posix
seealso:
  - module: botops.fleet.bot_positions
author: botops contributors (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Wait until the bot holds no open position
  botops.fleet.bot_positions_info:
    profile: "{{ botops_profile }}"
    bot: "{{ botops_bot }}"
    secrets: "{{ botops_secrets }}"
  register: open_book
  until: (open_book.open_positions | default(0, true)) == 0
  retries: 12
  delay: 5
"""

RETURN = r"""
open_positions:
  description: Open positions (null when the profile cannot count them).
  returned: always
  type: int
open_orders:
  description: Open orders (null when the profile cannot count them).
  returned: always
  type: int
positions:
  description: The open positions, when the profile has C(positions.list).
  returned: when the profile can list them
  type: list
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.botops.fleet.plugins.module_utils.botops_bot import bot_argument_spec, module_bot
from ansible_collections.botops.fleet.plugins.module_utils.botops_errors import BotError
from ansible_collections.botops.fleet.plugins.module_utils.botops_positions import counts, listing
from ansible_collections.botops.fleet.plugins.module_utils.botops_priority import yield_cpu


def main():
    module = AnsibleModule(argument_spec=bot_argument_spec(), supports_check_mode=True)
    yield_cpu(module)
    p = module.params
    profile = p["profile"]
    result = dict(changed=False, open_positions=None, open_orders=None)
    try:
        bot = module_bot(module)
        result.update(counts(bot, profile["facts"]))
        if (profile.get("positions") or {}).get("list"):
            result["positions"] = listing(bot, profile)
    except (BotError, KeyError) as exc:
        module.fail_json(msg=f"Failed to list positions on bot '{p['bot']['name']}': {exc}", **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
