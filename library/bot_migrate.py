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

import os

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.botops_alembic import MigrationError, RevisionGraph, alembic_command, database_url
from ansible.module_utils.botops_bot import bot_argument_spec
from ansible.module_utils.botops_pg import PgError, module_database
from ansible.module_utils.botops_release import Ledger, ReleaseError, check_version, current_version, installed_versions

REDACTED = "********"


class MigrateRun:
    def __init__(self, module, result):
        self.module = module
        self.result = result
        p = module.params
        self.root = p["bot"]["root"]
        self.name = p["bot"]["name"]
        profile_db = p["profile"].get("database") or {}
        migrations = profile_db.get("migrations") or {}
        if profile_db.get("engine") != "postgresql" or migrations.get("tool") != "alembic":
            raise MigrationError(f"the {p['profile'].get('family')} profile declares no Alembic migrations on PostgreSQL "
                                 "(database.engine: postgresql, database.migrations.tool: alembic)")
        self.config_rel = migrations.get("config") or "alembic.ini"
        self.db = module_database(module)
        self.url = database_url(self.db)
        self.secrets = [s for s in (self.db.password, self.url) if s]
        self.alembic_cmd = alembic_command()

    # ------------------------------------------------------------ where the migrations are
    def release_dir(self, version):
        if version is None:
            path = os.path.join(self.root, "current")
            if not os.path.exists(path):
                raise MigrationError(f"{path} does not exist: no release is current (set release)")
            return current_version(self.root) or "current", path
        path = os.path.join(self.root, "releases", version)
        if not os.path.isdir(path):
            raise MigrationError(f"release {version} is not installed ({path})")
        return version, path

    def load(self, version):
        version, path = self.release_dir(version)
        config = os.path.join(path, self.config_rel)
        return version, path, config, RevisionGraph.from_config(config, cwd=path)

    def release_knowing(self, revision, exclude):
        """An installed release whose migrations know `revision` (newest in the ledger first)."""
        ledger = Ledger(self.root, self.name)
        installed = installed_versions(os.path.join(self.root, "releases"))
        order = sorted(installed, key=lambda v: ((ledger.get(v) or {}).get("installed_at") or "", v), reverse=True)
        for version in order:
            if version == exclude:
                continue
            try:
                loaded = self.load(version)
            except MigrationError:
                continue
            if revision in loaded[3]:
                return loaded
        return None

    # ------------------------------------------------------------ database and alembic
    def current_revision(self):
        rows = self.db.query("SELECT version_num FROM alembic_version") if self.has_version_table() else []
        if len(rows) > 1:
            raise MigrationError(f"alembic_version holds {len(rows)} revisions (branches): merge them first")
        return rows[0][0] if rows else None

    def has_version_table(self):
        return self.db.scalar("SELECT to_regclass('public.alembic_version') IS NOT NULL") == "t"

    def scrub(self, text):
        for secret in self.secrets:
            text = text.replace(secret, REDACTED)
        return text

    def alembic(self, cwd, config, *args):
        cmd = self.alembic_cmd + ["-c", config, *args]
        self.result["commands"].append(cmd)
        env = {"DATABASE_URL": self.url, "PYTHONDONTWRITEBYTECODE": "1"}
        timeout = self.module.params["lock_timeout"]
        if timeout:
            options = os.environ.get("PGOPTIONS", "")
            env["PGOPTIONS"] = f"{options} -c lock_timeout={int(timeout) * 1000}".strip()
        rc, out, err = self.module.run_command(cmd, cwd=cwd, environ_update=env)
        return rc, self.scrub(out), self.scrub(err)

    def backup_hint(self, undone, graph):
        """How to get back across the contract: the backup linked to the release that brought it.

        `undone` is the downgrade path, newest first; the release is the one whose head is the
        oldest contract revision crossed, or the nearest release above it."""
        oldest = max(undone.index(r) for r in graph.contracts(undone))
        try:
            ledger = Ledger(self.root, self.name)
        except ReleaseError:
            ledger = None
        entries = [e for e in (ledger.entries.values() if ledger else [])
                   if e.get("alembic_head") in undone[: oldest + 1]]
        if not entries:
            return f"restore the backup taken before {undone[oldest]} was applied"
        entry = max(entries, key=lambda e: undone.index(e["alembic_head"]))
        if entry.get("backup_id"):
            return f"restore backup {entry['backup_id']} (linked to release {entry['version']}, taken before it was deployed)"
        return f"restore the backup taken before release {entry['version']} was deployed (the ledger links none)"


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
    step = "read the migrations"
    try:
        if p["release"] is not None:
            check_version(p["release"])
        run = MigrateRun(module, result)
        version, path, config, graph = run.load(p["release"])
        step = "read alembic_version"
        before = run.current_revision()
        result.update(release=version, config=config, current_before=before, current=before)
        step = "resolve the target"
        if before is not None and before not in graph and state == "current":
            module.warn(f"release {version} does not know the database's revision {before}")
            module.exit_json(**result)
        if before is not None and before not in graph:
            other = run.release_knowing(before, version) if (state == "downgraded" and p["release"] is None) else None
            if other is None:
                raise MigrationError(
                    f"the database is at revision {before}, which release {version} does not know "
                    f"(a newer release migrated it?): use the release that brought it (release option)")
            module.warn(f"release {version} does not know revision {before}: using the migrations of release {other[0]}")
            version, path, config, graph = other
            result.update(release=version, config=config)
        result["head"] = graph.head
        target = graph.resolve(p["revision"] or "head", before)
        result["target"] = target
        if state == "downgraded":
            if graph.is_ancestor(before, target):
                pending = []  # already at or below the target
            else:
                if not graph.is_ancestor(target, before):
                    raise MigrationError(f"{target} is not below the current revision {before}: not a downgrade")
                pending = graph.downgrade_path(before, target)
        else:
            if graph.is_ancestor(target, before):
                pending = []  # already at or beyond the target
            else:
                if not graph.is_ancestor(before, target):
                    raise MigrationError(f"{target} is not above the current revision {before}: not an upgrade")
                pending = graph.upgrade_path(before, target)
        result.update(pending=pending, revisions=graph.describe(pending), contract=graph.contracts(pending))
        if state == "current" or not pending:
            module.exit_json(**result)

        direction = "upgrade" if state == "upgraded" else "downgrade"
        if direction == "downgrade" and result["contract"] and not p["force_contract_downgrade"]:
            step = "check the downgrade"
            hint = run.backup_hint(pending, graph)
            described = ", ".join(f"{r['revision']} ({r['description']})" for r in graph.describe(result["contract"]))
            raise MigrationError(
                f"refusing to downgrade across contract migration {described}: older code cannot run on the "
                f"contracted schema and its downgrade may lose data; the way back is to {hint}")
        action = f"{direction} {before or 'base'} -> {target or 'base'}"
        result["actions"].append(action)
        result["diff"] = {"before": {"revision": before}, "after": {"revision": target}}
        target_arg = target or "base"
        if module.check_mode:
            step = "render the offline SQL"
            span = f"{before}:{target_arg}" if before else target_arg
            rc, out, err = run.alembic(path, config, direction, "--sql", span)
            if rc != 0:
                raise MigrationError(f"alembic {direction} --sql {span} failed (rc={rc}): {err.strip() or out.strip()}")
            result.update(sql=out, current=target, changed=True)
            module.exit_json(**result)

        step = f"run alembic {direction}"
        rc, out, err = run.alembic(path, config, direction, target_arg)
        after = run.current_revision()
        result["current"] = after
        if direction == "upgrade":
            result["executed"] = [r for r in pending if r in graph.ancestors(after)] if after in graph else []
        else:
            result["executed"] = [r for r in pending if r not in graph.ancestors(after)]
        result["changed"] = after != before
        if rc != 0 or after != target:
            result["diff"]["after"]["revision"] = after
            raise MigrationError(f"alembic {direction} {target_arg} failed (rc={rc}), database left at "
                                 f"{after or 'base'}: {err.strip()[-2000:] or out.strip()[-2000:]}")
    except (MigrationError, PgError, ReleaseError, OSError) as exc:
        module.fail_json(msg=f"Failed to {verb} the database on bot '{name}': {step}: {exc}", **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
