#!/usr/bin/python
# Copyright: botops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
module: bot_release_info
short_description: List the releases of one trading bot and resolve a rollback target
description:
  - Reports the releases in C(<bot_root>/releases/), the one C(<bot_root>/current) points to and the release history
    C(<bot_root>/releases/ledger.json) (installed by M(botops.fleet.bot_release)). Never changes anything.
  - With O(target), also resolves the release a rollback would go back to on this bot.
version_added: "0.1.0"
extends_documentation_fragment: [ansible.builtin.action_common_attributes, botops.fleet.botops_bot]
options:
  target:
    description:
      - Also resolve a rollback target on this bot, V(latest) (the previous good release) or a version, into
        RV(target_release); a target the bot cannot roll back to fails the call (C(input_refused=true)).
        Playbooks resolve it on every targeted bot before the first change.
    type: str
attributes:
  check_mode:
    support: full
    details: Reads only; runs the same in check mode.
  diff_mode:
    support: none
  platform:
    platforms: posix
notes:
  - Run it once per bot, on the bot's host. Secrets are not needed.
  - "What the ledger records and how a rollback target is chosen: C(docs/operations/release.md)."
seealso:
  - module: botops.fleet.bot_release
  - module: botops.fleet.bot_deploy
author: botops contributors (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Find the rollback target (latest good release before current)
  botops.fleet.bot_release_info:
    profile: "{{ botops_profile }}"
    bot: "{{ botops_bot }}"
  register: releases

- name: Refuse the rollback before any change when a bot cannot go back to 1.0.0
  botops.fleet.bot_release_info:
    profile: "{{ botops_profile }}"
    bot: "{{ botops_bot }}"
    target: 1.0.0
"""

RETURN = r"""
current:
  description: The version C(current) points to (null if there is none).
  returned: always
  type: str
releases:
  description: Every known release (disk and ledger), most recently used first, with C(installed) and C(current) flags.
  returned: always
  type: list
  elements: dict
previous_good:
  description: The latest release marked good other than the current one, skipping bad and failed ones (the rollback target).
  returned: always
  type: str
last_good:
  description: The most recently activated release marked good (may be the current one).
  returned: always
  type: str
history:
  description: The activations recorded in the ledger, oldest first.
  returned: always
  type: list
  elements: dict
ledger:
  description: The ledger file's path.
  returned: always
  type: str
target_release:
  description: The release O(target) resolves to on this bot.
  returned: when O(target) is given
  type: str
"""

import os

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.botops.fleet.plugins.module_utils.botops_bot import bot_argument_spec
from ansible_collections.botops.fleet.plugins.module_utils.botops_priority import yield_cpu
from ansible_collections.botops.fleet.plugins.module_utils.botops_release import BotReleases, ReleaseError, default_who


def main():
    argument_spec = bot_argument_spec()
    argument_spec.update(target=dict(type="str"))
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    yield_cpu(module)
    p = module.params
    name = p["bot"]["name"]
    result = dict(changed=False, current=None, ledger=os.path.join(p["bot"]["root"], "releases", "ledger.json"))
    try:
        releases = BotReleases(p["bot"]["root"], name, default_who())
        result.update(releases.report(), history=releases.ledger.history)
        if p["target"] is not None:
            try:
                result["target_release"] = releases.resolve_target(p["target"])
            except ReleaseError as exc:  # a target this bot cannot go back to: bad input, nothing was changed
                module.fail_json(msg=f"Cannot roll bot '{name}' back to {p['target']}: {exc}", input_refused=True,
                                 **result)
    except (ReleaseError, OSError) as exc:
        module.fail_json(msg=f"Failed to list releases on bot '{name}': {exc}", **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
