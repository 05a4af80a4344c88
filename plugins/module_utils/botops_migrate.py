# Copyright: botops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Alembic migrations of one bot's database: where a release's migrations are, the revision the
database is at, the plan from there to a target, and the alembic run.

Shared by bot_migrate (one migration) and bot_deploy (the migration inside a deploy or a
rollback window). The revision graph comes from the release's files (botops_alembic), so a plan
costs no alembic run; alembic runs once, only when there is something to do, with the database
URL in its environment only (never on its command line, never in a result).
"""

from __future__ import annotations

import os

from ansible_collections.botops.fleet.plugins.module_utils.botops_alembic import MigrationError, alembic_command, database_url
from ansible_collections.botops.fleet.plugins.module_utils.botops_alembic import RevisionGraph
from ansible_collections.botops.fleet.plugins.module_utils.botops_release import ReleaseHistory, ReleaseError, current_version, installed_versions

REDACTED = "********"


class Plan:
    """What it takes to bring the database from its revision to a target with one release's scripts."""

    def __init__(self, release, path, config, graph, before):
        self.release = release
        self.path = path
        self.config = config
        self.graph = graph
        self.before = before
        self.head = None
        self.target = None
        self.direction = None  # "upgrade" or "downgrade"
        self.pending = []
        self.unknown = False  # the database is at a revision this release does not know (state current)

    @property
    def contract(self):
        return self.graph.contracts(self.pending)

    def describe(self):
        return self.graph.describe(self.pending)


class Migrations:
    """The Alembic migrations of one bot on its host.

    `run_command(cmd, cwd, env)` runs a command with env added to the environment and returns
    (rc, stdout, stderr); `commands` collects every alembic command run."""

    def __init__(self, root, name, profile, database, run_command, lock_timeout=30, commands=None):
        self.root = root
        self.name = name
        profile_db = profile.get("database") or {}
        migrations = profile_db.get("migrations") or {}
        if profile_db.get("engine") != "postgresql" or migrations.get("tool") != "alembic":
            raise MigrationError(f"the {profile.get('family')} profile declares no Alembic migrations on PostgreSQL "
                                 "(database.engine: postgresql, database.migrations.tool: alembic)")
        self.config_rel = migrations.get("config") or "alembic.ini"
        self.db = database
        self.url = database_url(database)
        self.secrets = [s for s in (database.password, self.url) if s]
        self.alembic_cmd = alembic_command()
        self._run_command = run_command
        self.lock_timeout = lock_timeout
        self.commands = [] if commands is None else commands
        self.step = "read the migrations"

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
        """(version, release path, alembic.ini, RevisionGraph) of an installed release (None: current)."""
        version, path = self.release_dir(version)
        config = os.path.join(path, self.config_rel)
        return version, path, config, RevisionGraph.from_config(config, cwd=path)

    def release_knowing(self, revision, exclude):
        """An installed release whose migrations know `revision` (newest in the ledger first)."""
        ledger = ReleaseHistory(self.root, self.name)
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

    # ------------------------------------------------------------ database
    def current_revision(self):
        rows = self.db.query("SELECT version_num FROM alembic_version") if self.has_version_table() else []
        if len(rows) > 1:
            raise MigrationError(f"alembic_version holds {len(rows)} revisions (branches): merge them first")
        return rows[0][0] if rows else None

    def has_version_table(self):
        return self.db.scalar("SELECT to_regclass('public.alembic_version') IS NOT NULL") == "t"

    # ------------------------------------------------------------ planning
    def plan(self, state, revision=None, release=None, knowing=None, warn=None, before=None):
        """The plan to bring the database to `revision` (default head) with `release`'s scripts.

        state: "upgraded", "downgraded" or "current". When the database is at a revision the
        release does not know and `knowing` (default: a downgrade with no release given) allows
        it, an installed release whose scripts know it is used instead. `before`: the revision
        already read (not read again). Sets self.step to the step in progress."""
        warn = warn or (lambda msg: None)
        self.step = "read the migrations"
        version, path, config, graph = self.load(release)
        self.step = "read alembic_version"
        if before is None:
            before = self.current_revision()
        plan = Plan(version, path, config, graph, before)
        self.step = "resolve the target"
        if before is not None and before not in graph:
            if state == "current":
                warn(f"release {version} does not know the database's revision {before}")
                plan.unknown = True
                return plan
            if knowing is None:
                knowing = state == "downgraded" and release is None
            other = self.release_knowing(before, version) if knowing else None
            if other is None:
                raise MigrationError(
                    f"the database is at revision {before}, which release {version} does not know "
                    f"(a newer release migrated it?): use the release that brought it (release option)")
            warn(f"release {version} does not know revision {before}: using the migrations of release {other[0]}")
            plan = Plan(*other, before)
            graph = plan.graph
        plan.head = graph.head
        target = graph.resolve(revision or "head", before)
        plan.target = target
        if state == "downgraded":
            plan.direction = "downgrade"
            if not graph.is_ancestor(before, target):
                if not graph.is_ancestor(target, before):
                    raise MigrationError(f"{target} is not below the current revision {before}: not a downgrade")
                plan.pending = graph.downgrade_path(before, target)
        else:
            plan.direction = "upgrade"
            if not graph.is_ancestor(target, before):
                if not graph.is_ancestor(before, target):
                    raise MigrationError(f"{target} is not above the current revision {before}: not an upgrade")
                plan.pending = graph.upgrade_path(before, target)
        return plan

    def backup_hint(self, undone, graph):
        """How to get back across the contract: the backup linked to the release that brought it.

        `undone` is the downgrade path, newest first; the release is the one whose head is the
        oldest contract revision crossed, or the nearest release above it."""
        oldest = max(undone.index(r) for r in graph.contracts(undone))
        try:
            ledger = ReleaseHistory(self.root, self.name)
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

    # ------------------------------------------------------------ alembic
    def scrub(self, text):
        for secret in self.secrets:
            text = text.replace(secret, REDACTED)
        return text

    def alembic(self, cwd, config, *args):
        cmd = self.alembic_cmd + ["-c", config, *args]
        self.commands.append(cmd)
        env = {"DATABASE_URL": self.url, "PYTHONDONTWRITEBYTECODE": "1"}
        if self.lock_timeout:
            options = os.environ.get("PGOPTIONS", "")
            env["PGOPTIONS"] = f"{options} -c lock_timeout={int(self.lock_timeout) * 1000}".strip()
        rc, out, err = self._run_command(cmd, cwd, env)
        return rc, self.scrub(out), self.scrub(err)

    def sql(self, plan):
        """The SQL alembic would run for the plan (offline mode)."""
        target_arg = plan.target or "base"
        span = f"{plan.before}:{target_arg}" if plan.before else target_arg
        rc, out, err = self.alembic(plan.path, plan.config, plan.direction, "--sql", span)
        if rc != 0:
            raise MigrationError(f"alembic {plan.direction} --sql {span} failed (rc={rc}): {err.strip() or out.strip()}")
        return out

    def apply(self, plan):
        """Run alembic for the plan; returns (revision after, revisions executed). Raises
        MigrationError (naming where the database was left) when it did not reach the target."""
        target_arg = plan.target or "base"
        rc, out, err = self.alembic(plan.path, plan.config, plan.direction, target_arg)
        after = self.current_revision()
        graph = plan.graph
        if plan.direction == "upgrade":
            executed = [r for r in plan.pending if r in graph.ancestors(after)] if after in graph else []
        else:
            executed = [r for r in plan.pending if r not in graph.ancestors(after)]
        if rc != 0 or after != plan.target:
            raise AlembicFailed(f"alembic {plan.direction} {target_arg} failed (rc={rc}), database left at "
                                f"{after or 'base'}: {err.strip()[-2000:] or out.strip()[-2000:]}", after, executed)
        return after, executed


class AlembicFailed(MigrationError):
    """An alembic run did not reach its target; `after` is where the database was left."""

    def __init__(self, msg, after, executed):
        super().__init__(msg)
        self.after = after
        self.executed = executed
