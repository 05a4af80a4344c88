#!/usr/bin/python
# Copyright: botops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
module: bot_facts
short_description: Gather the state of one trading bot
description:
  - Reads, as the bot's profile says, its liveness and readiness, the installed release, execution
    mode (DRY / LIVE), paper flag, open positions and orders, portfolio value and, for bots with
    Alembic migrations, the database revision.
  - Never changes anything. A fact that cannot be read is reported as null with the reason in
    C(errors); the module fails only when the bot's inputs are unusable.
version_added: "0.1.0"
options:
  profile:
    description: The bot family's profile, as returned by C(lookup('bot_profile', bot_family)).
    type: dict
    required: true
  bot:
    description:
      - The bot's inventory facts (C(botops_bot) in C(playbooks/group_vars/all/botops.yml)).
      - C(name), C(root), C(listen), C(ports), C(service), C(process_match), C(database), C(redis_url), C(paper_only).
    type: dict
    required: true
  secrets:
    description: Secrets the profile needs (C(api_token), C(username), C(password), C(database_password)).
    type: dict
    default: {}
  database:
    description: Also read the Alembic revision and the ledger count from the database.
    type: bool
    default: true
  ready_wait:
    description:
      - Seconds to keep asking a bot that does not answer ready (busy for a moment on a loaded host)
        before C(ready) is reported false; 0 asks once.
    type: float
    default: 0
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
author: botops contributors
"""

EXAMPLES = r"""
- name: Read the bot's state
  bot_facts:
    profile: "{{ botops_profile }}"
    bot: "{{ botops_bot }}"
    secrets: "{{ botops_secrets }}"
  register: facts

- name: Refuse to go on while positions are open
  ansible.builtin.assert:
    that: facts.bot.open_positions == 0
"""

RETURN = r"""
bot:
  description: The bot's state.
  returned: always
  type: dict
  contains:
    name: {description: Bot name., type: str}
    live: {description: The liveness check passed., type: bool}
    ready: {description: The readiness check passed., type: bool}
    health: {description: The profile's health details document (component states)., type: raw}
    release: {description: Version the C(current) symlink points to., type: str}
    kill_switch: {description: "The kill switch level an operator engaged, as recorded on the bot's host (C(level), C(who), C(time), C(reason)); null when none.", type: dict}
    version: {description: Version the running bot reports., type: str}
    service_state: {description: State reported by the service manager (RUNNING, STOPPED...)., type: str}
    disk_free_mb: {description: Free space on the file system of the bot root, in MiB., type: int}
    execution_mode: {description: DRY or LIVE., type: str}
    paper_trading: {description: Paper flag., type: bool}
    open_positions: {description: Number of open positions., type: int}
    open_orders: {description: Number of open orders., type: int}
    portfolio_value: {description: Portfolio value., type: float}
    alembic_revision: {description: Revision in alembic_version (null without migrations)., type: str}
    errors: {description: Fact name to the reason it could not be read., type: dict}
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.botops_bot import BotError, bot_argument_spec, module_bot
from ansible.module_utils.botops_facts import gather
from ansible.module_utils.botops_pg import PgError, module_database


def main():
    argument_spec = bot_argument_spec()
    argument_spec.update(database=dict(type="bool", default=True), ready_wait=dict(type="float", default=0.0))
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    result = dict(changed=False)
    try:
        bot = module_bot(module)
        database = None
        if module.params["database"] and module.params["profile"]["database"]["engine"] == "postgresql":
            database = module_database(module)
    except (BotError, PgError, KeyError) as exc:
        module.fail_json(msg=f"Failed to read facts of bot '{module.params['bot']['name']}': {exc}", **result)
    result["bot"] = gather(bot, module.params["profile"], database, ready_wait=max(0.0, module.params["ready_wait"]))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
