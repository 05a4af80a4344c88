#!/usr/bin/python
# Copyright: botops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
module: bot_migrate
short_description: Upgrade, downgrade or report the Alembic revision of one bot's database
description:
  - Runs the Alembic migrations of a release of the bot against the bot's database, through the
    release's own C(alembic.ini) (profile C(database.migrations.config), relative to
    C(<bot_root>/current) or to C(<bot_root>/releases/<release>)).
  - The database URL (C(postgresql://user:password@host:port/name), built from the bot's
    C(database) facts and C(secrets.database_password)) is passed to alembic in the C(DATABASE_URL)
    environment variable only, which the bot's C(env.py) must read. It never appears on a command
    line, in a result or in a log.
  - The revision graph is read from the release's revision files (parsed, not imported), so
    C(pending), the contract check and idempotency cost no alembic run; the current revision is read
    from C(alembic_version) with psql. Alembic runs once, only when there is something to do.
  - B(Contract migrations.) A revision that older code cannot run on is marked, by convention for
    every bot, with a module-level C(botops_kind = "contract") or with a docstring whose first line
    starts with the word C(contract). A downgrade that would undo such a revision is refused; the way
    back is restoring the backup linked to the release that brought it (its ledger C(backup_id),
    named in the message when the release ledger knows it).
  - Does not stop or start the bot; playbooks stop it (C(bot_service)) around migrations that the
    running code cannot survive.
version_added: "0.1.0"
options:
  profile:
    description: The bot family's profile, as the C(bot_profile) lookup returns it for the bot's C(bot_family).
    type: dict
    required: true
  bot:
    description:
      - The bot's inventory facts (C(botops_bot)); this module uses C(name), C(root) and C(database)
        (C(host), C(port), C(name), C(user)).
    type: dict
    required: true
  secrets:
    description: Secrets; this module uses C(database_password).
    type: dict
    default: {}
  state:
    description:
      - C(upgraded) brings the database up to O(revision) (nothing to do when it is there or beyond).
      - C(downgraded) brings it down to O(revision) (nothing to do when it is there or below).
      - C(current) only reports the revision and what an upgrade to O(revision) would apply.
    type: str
    choices: [upgraded, downgraded, current]
    default: upgraded
  revision:
    description:
      - Target revision as Alembic spells it - C(head) (default), C(base), a revision id or a unique
        prefix of one, C(-N) / C(+N) relative to the current revision - resolved against the release's revision files.
      - Relative targets move on every run; playbooks that must be idempotent name a revision id.
      - Required with O(state=downgraded).
    type: str
  release:
    description:
      - Version of the installed release whose migrations to use (C(<bot_root>/releases/<release>)).
      - Default is C(<bot_root>/current). For a downgrade from a revision the current release does not
        know, an installed release whose migrations know it is used instead (and reported as C(release)).
    type: str
  force_contract_downgrade:
    description:
      - Downgrade across contract revisions anyway. B(Dangerous) - a contract downgrade may lose the
        data the contract step transformed, and must only be used when its downgrade function is known to be
        lossless (a rename) or the database is disposable. Restoring the release's backup is the safe way back.
    type: bool
    default: false
  lock_timeout:
    description:
      - Seconds a migration statement waits for a table lock (PostgreSQL C(lock_timeout), through C(PGOPTIONS))
        before failing, rather than queueing behind a running bot's transactions. C(0) waits forever.
    type: int
    default: 30
attributes:
  check_mode:
    support: full
    details: Reports the pending revisions and the SQL alembic would run (C(alembic upgrade --sql from:to)); changes nothing.
  diff_mode:
    support: full
    details: The revision before and after.
notes:
  - Alembic is the console script of the Python running the module (a virtualenv's C(bin/alembic)),
    else C(alembic) on PATH, else C(python -m alembic).
  - Linear revision histories only (one row in C(alembic_version)); branches must be merged.
author: botops contributors
"""

EXAMPLES = r"""
- name: Show what the migration would run
  bot_migrate:
    profile: "{{ botops_profile }}"
    bot: "{{ botops_bot }}"
    secrets: "{{ botops_secrets }}"
  check_mode: true
  register: plan

- name: Upgrade the database to the head of the current release
  bot_migrate:
    profile: "{{ botops_profile }}"
    bot: "{{ botops_bot }}"
    secrets: "{{ botops_secrets }}"
    state: upgraded

- name: Undo the last (expand) migration before rolling back the code
  bot_migrate:
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
from ansible.module_utils.botops_alembic import MigrationError
from ansible.module_utils.botops_bot import bot_argument_spec
from ansible.module_utils.botops_migrate import AlembicFailed, Migrations
from ansible.module_utils.botops_pg import PgError, module_database
from ansible.module_utils.botops_release import ReleaseError, check_version


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
