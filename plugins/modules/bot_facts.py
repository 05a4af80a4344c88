#!/usr/bin/python
# Copyright: botops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
module: bot_facts
short_description: Gather the state of one trading bot
description:
  - Reads, as the bot's profile says, its liveness and readiness, installed release, execution mode (DRY / LIVE),
    paper flag, open positions and orders, portfolio value and database revision. Never changes anything.
  - First checks that the bot at the inventory's address is the bot the inventory names (RV(bot.identity)); a bot
    that answers as another bot gets none of that API's facts.
  - Then checks that the bot accepts its credentials, where the profile declares C(auth.check) (RV(bot.credentials)).
  - A fact that cannot be read is null, with the reason in C(errors).
version_added: "0.1.0"
extends_documentation_fragment: [ansible.builtin.action_common_attributes, botops.fleet.botops_bot]
options:
  database:
    description: Also read the Alembic revision and the ledger count from the database.
    type: bool
    default: true
  credentials:
    description: Try the profile's C(auth.check) on a bot that answers (RV(bot.credentials)); false leaves C(credentials.checked) false.
    type: bool
    default: true
  require_identity:
    description:
      - Fail, with RV(identity_refused) and the facts, when the bot is not who the inventory says; the preflight of
        every change sets it. A bot whose identity cannot be checked is not refused.
    type: bool
    default: false
  ready_wait:
    description: Seconds to keep asking a bot that does not answer ready before C(ready) is reported false; V(0) asks once.
    type: float
    default: 0
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
  platform:
    platforms: posix
notes:
  - "What each identity and credentials outcome means, and why it is checked: C(docs/operations/facts.md)."
author: botops contributors (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Read the bot's state
  botops.fleet.bot_facts:
    profile: "{{ botops_profile }}"
    bot: "{{ botops_bot }}"
    secrets: "{{ botops_secrets }}"
  register: facts

- name: Refuse a bot that answers as another one (the inventory's port points at another bot)
  botops.fleet.bot_facts:
    profile: "{{ botops_profile }}"
    bot: "{{ botops_bot }}"
    secrets: "{{ botops_secrets }}"
    database: false
    credentials: false
    require_identity: true

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
    name: {description: "Bot name.", type: str}
    identity:
      description: Who the bot at the inventory's address says it is, against the inventory.
      type: dict
      contains:
        expected: {description: "The inventory's C(bot_id) (default the bot's name).", type: str}
        reported: {description: "The id the bot reports (null when it reports none or does not answer).", type: str}
        ok:
          description:
            - True - the bot reports the expected id. False - it reports another, or its address serves
              another API (HTTP 404 / 405 to the probe). Null - it cannot be told (not answering, no
              identity probe in the profile, no id in the answer).
          type: bool
        message: {description: "Why it is not ok or not checked (null when ok).", type: str}
    credentials:
      description: Whether the bot accepts botops' credentials (the profile's C(auth.check)).
      type: dict
      contains:
        checked: {description: "The authenticated request was sent (or found the credentials missing).", type: bool}
        ok:
          description:
            - True - accepted. False - refused (HTTP 401 / 403) or not set, the kill switch's API rungs
              would fail the same way. Null - not checked or not told (no answer, another status).
          type: bool
        status: {description: "HTTP status of the check (null when none was received).", type: int}
        message: {description: "Why it is not ok or not checked (null when ok).", type: str}
    live: {description: "The liveness check passed.", type: bool}
    ready: {description: "The readiness check passed.", type: bool}
    health: {description: "The profile's health details document (component states).", type: raw}
    release: {description: "Version the C(current) symlink points to.", type: str}
    kill_switch:
      description:
        - The kill switch level an operator engaged, as recorded on the bot's host (C(level), C(who), C(time),
          C(reason)); null when none.
      type: dict
    version: {description: "Version the running bot reports.", type: str}
    service_state: {description: "State reported by the service manager (RUNNING, STOPPED...).", type: str}
    disk_free_mb: {description: "Free space on the file system of the bot root, in MiB.", type: int}
    execution_mode: {description: "DRY or LIVE.", type: str}
    paper_trading: {description: "Paper flag.", type: bool}
    open_positions: {description: "Number of open positions.", type: int}
    open_orders: {description: "Number of open orders.", type: int}
    portfolio_value: {description: "Portfolio value.", type: float}
    alembic_revision: {description: "Revision in alembic_version (null without migrations).", type: str}
    errors: {description: "Fact name to the reason it could not be read.", type: dict}
identity_refused:
  description: With O(require_identity), the bot is not who the inventory says; nothing was changed.
  returned: when refused
  type: bool
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.botops.fleet.plugins.module_utils.botops_bot import bot_argument_spec, module_bot
from ansible_collections.botops.fleet.plugins.module_utils.botops_errors import BotError
from ansible_collections.botops.fleet.plugins.module_utils.botops_facts import gather
from ansible_collections.botops.fleet.plugins.module_utils.botops_pg import PgError, module_database
from ansible_collections.botops.fleet.plugins.module_utils.botops_priority import yield_cpu


def main():
    argument_spec = bot_argument_spec()
    argument_spec.update(database=dict(type="bool", default=True), ready_wait=dict(type="float", default=0.0),
                         credentials=dict(type="bool", default=True), require_identity=dict(type="bool", default=False))
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    yield_cpu(module)
    result = dict(changed=False)
    try:
        bot = module_bot(module)
        database = None
        if module.params["database"] and module.params["profile"]["database"]["engine"] == "postgresql":
            database = module_database(module)
    except (BotError, PgError, KeyError) as exc:
        module.fail_json(msg=f"Failed to read facts of bot '{module.params['bot']['name']}': {exc}", **result)
    result["bot"] = facts = gather(bot, module.params["profile"], database,
                                   ready_wait=max(0.0, module.params["ready_wait"]),
                                   credentials=module.params["credentials"])
    if module.params["require_identity"] and facts["identity"]["ok"] is False:
        # the cause first: the report's table shows the beginning of a message
        module.fail_json(msg=f"{facts['identity']['message']}: refused before any change", identity_refused=True,
                         **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
