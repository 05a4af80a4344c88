#!/usr/bin/python
# Copyright: botops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
module: bot_migrate
short_description: Upgrade, downgrade or report the Alembic revision of one bot's database
description:
  - Runs the Alembic migrations of an installed release of the bot (its own C(alembic.ini)) against the bot's database.
  - The database URL reaches alembic in C(DATABASE_URL) only - never on a command line, in a result or in a log.
  - The revision graph is parsed from the release's files, so alembic runs only when there is something to do.
  - A downgrade across a contract revision (one older code cannot run on) is refused; the way back is the backup.
  - Does not stop or start the bot.
version_added: "0.1.0"
extends_documentation_fragment: [ansible.builtin.action_common_attributes, botops.fleet.botops_bot]
options:
  state:
    description:
      - V(upgraded) brings the database up to O(revision), V(downgraded) down to it (nothing to do when it is
        there or beyond); V(current) only reports the revision and what an upgrade would apply.
    type: str
    choices: [upgraded, downgraded, current]
    default: upgraded
  revision:
    description:
      - Target revision as Alembic spells it - V(head) (default), V(base), a revision id or a unique prefix,
        C(-N) / C(+N); required with O(state=downgraded). Name a revision id for an idempotent call.
    type: str
  release:
    description:
      - Installed release whose migrations to use. Default C(<bot_root>/current), or for a downgrade from a
        revision it does not know, an installed release that knows it.
    type: str
  force_contract_downgrade:
    description:
      - Downgrade across contract revisions anyway. B(Dangerous) - only for a downgrade known to be lossless
        or a disposable database; restoring the release's backup is the safe way back.
    type: bool
    default: false
  lock_timeout:
    description:
      - Seconds a migration statement waits for a table lock before failing, rather than queueing behind a running
        bot's transactions (PostgreSQL C(lock_timeout)). V(0) waits forever.
    type: int
    default: 30
attributes:
  check_mode:
    support: full
    details: Reports the pending revisions and the SQL alembic would run (C(alembic upgrade --sql from:to)); changes nothing.
  diff_mode:
    support: full
    details: The revision before and after.
  platform:
    platforms: posix
notes:
  - Linear revision histories only (one row in C(alembic_version)); branches must be merged.
  - "Where alembic comes from, how the URL reaches it and how contract revisions are marked: C(docs/operations/migrate.md)."
seealso:
  - module: botops.fleet.bot_deploy
author: botops contributors (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Show what the migration would run
  botops.fleet.bot_migrate:
    profile: "{{ botops_profile }}"
    bot: "{{ botops_bot }}"
    secrets: "{{ botops_secrets }}"
  check_mode: true
  register: plan

- name: Upgrade the database to the head of the current release
  botops.fleet.bot_migrate:
    profile: "{{ botops_profile }}"
    bot: "{{ botops_bot }}"
    secrets: "{{ botops_secrets }}"
    state: upgraded

- name: Undo the last (expand) migration before rolling back the code
  botops.fleet.bot_migrate:
    profile: "{{ botops_profile }}"
    bot: "{{ botops_bot }}"
    secrets: "{{ botops_secrets }}"
    state: downgraded
    revision: 0001_initial
    release: 1.1.0
"""

RETURN = r"""
release:
  description: Version of the release whose migrations were used.
  returned: always
  type: str
config:
  description: The alembic.ini used.
  returned: always
  type: str
current_before:
  description: Revision of the database before the call (null for an empty database).
  returned: always
  type: str
current:
  description: Revision of the database after the call (what it would be, in check mode).
  returned: always
  type: str
target:
  description: The target revision resolved to a revision id (null for base).
  returned: always
  type: str
head:
  description: Head revision of the release's migrations.
  returned: always
  type: str
pending:
  description: Revisions between the current one and the target, in the order they apply (upgrade) or are undone (downgrade).
  returned: always
  type: list
  elements: str
executed:
  description: Revisions applied (undone, for a downgrade) by this call.
  returned: always
  type: list
  elements: str
revisions:
  description: The pending revisions with their C(kind) (contract, expand...) and docstring first line.
  returned: always
  type: list
  elements: dict
contract:
  description: The pending revisions marked as contract.
  returned: always
  type: list
  elements: str
sql:
  description: The SQL alembic would run (offline mode), in check mode when something is pending.
  returned: in check mode
  type: str
commands:
  description: The alembic commands run (the database URL is in the environment, not here).
  returned: always
  type: list
  elements: list
actions:
  description: What was done (would be done), e.g. C(upgrade 0001_initial -> 0002_trade_fee).
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.botops.fleet.plugins.module_utils.botops_alembic import MigrationError
from ansible_collections.botops.fleet.plugins.module_utils.botops_bot import bot_argument_spec
from ansible_collections.botops.fleet.plugins.module_utils.botops_migrate import AlembicFailed, Migrations
from ansible_collections.botops.fleet.plugins.module_utils.botops_pg import PgError, module_database
from ansible_collections.botops.fleet.plugins.module_utils.botops_priority import yield_cpu
from ansible_collections.botops.fleet.plugins.module_utils.botops_release import ReleaseError, check_version


def main():
    argument_spec = bot_argument_spec()
    argument_spec.update(
        state=dict(type="str", default="upgraded", choices=["upgraded", "downgraded", "current"]),
        revision=dict(type="str"),
        release=dict(type="str"),
        force_contract_downgrade=dict(type="bool", default=False),
        lock_timeout=dict(type="int", default=30),
    )
    module = AnsibleModule(
        argument_spec=argument_spec,
        required_if=[("state", "downgraded", ["revision"])],
        supports_check_mode=True,
    )
    yield_cpu(module)
    p = module.params
    state = p["state"]
    name = p["bot"]["name"]
    verb = {"upgraded": "upgrade", "downgraded": "downgrade", "current": "read the migration state of"}[state]
    result = dict(changed=False, release=None, config=None, current_before=None, current=None, target=None,
                  head=None, pending=[], executed=[], revisions=[], contract=[], commands=[], actions=[])
    run = None
    step = "read the migrations"
    try:
        if p["release"] is not None:
            check_version(p["release"])
        run = Migrations(p["bot"]["root"], name, p["profile"], module_database(module),
                         lambda cmd, cwd, env: module.run_command(cmd, cwd=cwd, environ_update=env),
                         lock_timeout=p["lock_timeout"], commands=result["commands"])
        plan = run.plan(state, p["revision"], p["release"], warn=module.warn)
        result.update(release=plan.release, config=plan.config, current_before=plan.before, current=plan.before)
        if plan.unknown:
            module.exit_json(**result)
        pending = plan.pending
        result.update(head=plan.head, target=plan.target, pending=pending, revisions=plan.describe(),
                      contract=plan.contract)
        if state == "current" or not pending:
            module.exit_json(**result)

        direction = plan.direction
        before, target = plan.before, plan.target
        if direction == "downgrade" and result["contract"] and not p["force_contract_downgrade"]:
            step = "check the downgrade"
            hint = run.backup_hint(pending, plan.graph)
            described = ", ".join(f"{r['revision']} ({r['description']})" for r in plan.graph.describe(result["contract"]))
            raise MigrationError(
                f"refusing to downgrade across contract migration {described}: older code cannot run on the "
                f"contracted schema and its downgrade may lose data; the way back is to {hint}")
        result["actions"].append(f"{direction} {before or 'base'} -> {target or 'base'}")
        result["diff"] = {"before": {"revision": before}, "after": {"revision": target}}
        if module.check_mode:
            step = "render the offline SQL"
            result.update(sql=run.sql(plan), current=target, changed=True)
            module.exit_json(**result)

        step = f"run alembic {direction}"
        try:
            after, executed = run.apply(plan)
        except AlembicFailed as exc:
            result.update(current=exc.after, executed=exc.executed, changed=exc.after != before)
            result["diff"]["after"]["revision"] = exc.after
            raise
        result.update(current=after, executed=executed, changed=after != before)
    except (MigrationError, PgError, ReleaseError, OSError) as exc:
        if run is not None and step == "read the migrations":
            step = run.step
        module.fail_json(msg=f"Failed to {verb} the database on bot '{name}': {step}: {exc}", **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
