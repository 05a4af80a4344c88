# Copyright: botops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The database side of one bot's change window (DeployData, a part of botops_deploy.Deploy): the
migration or the restore of a backup that brings the database to what the target release needs
(planned before anything is touched), the trade ledger checked so that no trade leaves it without
an explicit yes, the backup restored into a scratch database and checked before the stop, the
swap of that copy in (the rows since the backup carried forward, the live database kept), a
migration run and recorded for the revert, and the scratch database dropped.
"""

from __future__ import annotations

import os

from ansible_collections.botops.fleet.plugins.module_utils.botops_backup import compare_counts, engine_for, kept_name, scratch_name
from ansible_collections.botops.fleet.plugins.module_utils.botops_backup_postgres import PostgresEngine
from ansible_collections.botops.fleet.plugins.module_utils.botops_backup_store import BackupError, BackupStore, verify_files
from ansible_collections.botops.fleet.plugins.module_utils.botops_deploy_errors import Failed
from ansible_collections.botops.fleet.plugins.module_utils.botops_ledger import (
    carry_forward, carry_loss, describe_carry, describe_loss, ledger_conf, ledger_loss, ledger_report, live_max_ids,
    plan_carry, raise_id_floor)
from ansible_collections.botops.fleet.plugins.module_utils.botops_migrate import AlembicFailed
from ansible_collections.botops.fleet.plugins.module_utils.botops_pg import PgError
from ansible_collections.botops.fleet.plugins.module_utils.botops_release import utcnow


class DeployData:
    """The database side of Deploy: the migration or restore planned and applied, the trade ledger."""

    # ------------------------------------------------------------------ plan
    def store(self):
        return BackupStore(self.o.get("backup_dir") or os.path.join(self.root, "backups"))

    def plan_data(self, ledger):
        """The migration (or restore) that brings the database to what the target release needs."""
        o = self.o
        if o.get("restore") == "always":
            if not o.get("backup_id"):
                raise Failed("plan the migration", "restore=always needs a backup_id")
            self.plan_restore(o["backup_id"], always=True)
            if self.restore_id:
                return
            # the live database is that backup already: only a migration may be left to do
        if self.mig is None:
            return
        before = self.result["revision_before"]
        target_version, path, config, target_graph = self.mig.load(self.target)
        head = target_graph.head
        if before is None or before in target_graph:
            self.up = self.mig.plan("upgraded", "head", self.target, knowing=False, before=before)
            self.result["migration"] = self.describe_plan(self.up)
            self.up_online = bool(self.up.pending and o.get("online_migrations", True) and not self.up.contract
                                  and self.was_running)
            return
        self.down = self.mig.plan("downgraded", head, self.current, knowing=True, before=before, warn=self.warn)
        self.result["migration"] = self.describe_plan(self.down)
        if not self.down.contract:
            self.down_online = bool(o.get("online_migrations", True))
            return
        # a contract migration cannot be undone: the data comes back from the backup leading back
        backup_id = o.get("backup_id") or (ledger.get(self.current) or {}).get("backup_id")
        if not backup_id:
            described = ", ".join(f"{r['revision']} ({r['description']})"
                                  for r in self.down.graph.describe(self.down.contract))
            raise Failed("plan the migration",
                         f"cannot bring the database back to {head}: contract migration {described} cannot be "
                         f"undone and no backup is linked to release {self.current} in the ledger; the way back is "
                         f"to {self.mig.backup_hint(self.down.pending, self.down.graph)} (pass backup_id)")
        self.down = None
        self.plan_restore(backup_id, always=False, head=head, target_graph=target_graph)

    def plan_restore(self, backup_id, always, head=None, target_graph=None):
        store = self.store()
        self.restore_id = store.resolve(backup_id)
        self.restore_manifest = store.load(self.restore_id)
        dbinfo = self.restore_manifest.get("database")
        if not dbinfo:
            raise Failed("plan the migration", f"backup {self.restore_id} holds no database")
        self.result["backup_id"] = self.restore_id
        if always and self.marker_says_restored():
            self.restore_id = None  # the live database is this backup already
            return
        self.check_ledger(dbinfo)
        revision = dbinfo.get("alembic_revision")
        if self.mig is not None:
            if target_graph is None:
                target_version, path, config, target_graph = self.mig.load(self.target)
                head = target_graph.head
            if revision is not None and revision not in target_graph:
                raise Failed("plan the migration", f"backup {self.restore_id} holds revision {revision}, which "
                                                   f"release {self.target} does not know")
            self.up_after_restore = revision != head
        self.result["migration"] = {"restore": self.restore_id, "revision": revision}

    def check_ledger(self, dbinfo, older_columns=None):
        """No trade leaves the ledger without an explicit yes: plan carrying the rows since the backup
        forward onto its schema and refuse (before the swap) what cannot be carried, unless
        accept_ledger_loss; a revert cannot refuse. Returns the plan."""
        engine = self.engine or engine_for(self.profile, self.bot.bot, self.secrets,
                                           self.o.get("maintenance_db") or "postgres")
        try:
            plan = plan_carry(engine, self.profile, self.root, dbinfo, older_columns,
                              carry=self.o.get("carry_forward", True))
            loss = ledger_loss(engine, self.profile, dbinfo.get("ledger_max_id"))
        finally:
            if engine is not None and engine is not self.engine:
                engine.close()
        self.ledger_plan = plan
        trades = next((e for e in (plan or {}).get("tables", []) if not e["holdings"]), None)
        if loss and trades and trades["carry"]:
            loss = {"table": loss["table"], "rows": 0, "backup_max_id": loss["backup_max_id"]}  # carried, not lost
        self.result["ledger_loss"] = loss
        self.result["ledger"] = ledger_report(plan, applied=False)
        lost = carry_loss(plan)
        if lost and not self.o.get("accept_ledger_loss") and not self.reverting:
            self.result["ledger_refused"] = True
            raise Failed("check what the live ledger would lose",
                         f"bringing the data back from backup {self.restore_id} would take out of the live ledger "
                         f"{'; '.join(lost)}; go ahead with accept_ledger_loss (botops rollback "
                         "--accept-ledger-loss): the replaced database is kept, renamed")
        return plan

    def marker_says_restored(self):
        engine = engine_for(self.profile, self.bot.bot, self.secrets, self.o.get("maintenance_db") or "postgres")
        try:
            if isinstance(engine, PostgresEngine):
                return (engine.marker(engine.name) or {}).get("backup_id") == self.restore_id
        finally:
            if engine is not None:
                engine.close()
        return False

    @staticmethod
    def describe_plan(plan):
        return {"release": plan.release, "direction": plan.direction, "from": plan.before, "to": plan.target,
                "pending": plan.pending, "contract": plan.contract}

    # ------------------------------------------------------------------ steps
    def migrate(self, plan):
        try:
            after, executed = self.mig.apply(plan)
        except AlembicFailed as exc:
            if exc.after != plan.before:
                self.done.append((plan.direction, plan, exc.after))
                self.result["revision_after"] = exc.after
            raise
        self.done.append((plan.direction, plan, after))
        self.result["revision_after"] = after
        self.act(f"{plan.direction} {plan.before or 'base'} -> {after or 'base'} (release {plan.release}'s scripts)")

    # ------------------------------------------------------------------ restore
    def prepare_restore(self):
        """Restore the backup into a scratch database and check it, holding the backup store's lock
        until the swap; the live database is not touched."""
        store = self.store()
        self._store_lock.enter_context(store.lock())
        set_dir = store.path(self.restore_id)
        problems = verify_files(set_dir, self.restore_manifest)
        if problems:
            raise BackupError(f"backup {self.restore_id} is damaged, refusing it: " + "; ".join(problems))
        self.engine = engine_for(self.profile, self.bot.bot, self.secrets, self.o.get("maintenance_db") or "postgres")
        dbinfo = self.restore_manifest["database"]
        if self.engine is None or dbinfo.get("engine") != self.engine.engine:
            raise BackupError(f"backup {self.restore_id} holds a {dbinfo.get('engine')} database, the profile "
                              f"says {getattr(self.engine, 'engine', 'none')}")
        self.scratch = scratch_name(self.engine, "restore", self.restore_id)
        self.engine.drop(self.scratch)
        if isinstance(self.engine, PostgresEngine):
            self.engine.create_like(self.scratch, self.engine.name if self.engine.exists(self.engine.name) else None)
        self.engine.restore_into(set_dir, dbinfo, self.scratch, 2)
        counts = self.engine.counts(self.scratch)
        problems = compare_counts(dbinfo, counts[0], counts[1], counts[2])
        if problems:
            raise BackupError("the restored copy does not match the manifest: " + "; ".join(problems))
        if isinstance(self.engine, PostgresEngine):
            self.engine.set_marker(self.scratch, {"backup_id": self.restore_id, "restored_at": utcnow()})
        self.act(f"restore {self.restore_id} into {self.scratch}, row counts checked")
        if ledger_conf(self.profile) and self.engine.exists(
                self.engine.name if isinstance(self.engine, PostgresEngine) else None):
            self.check_ledger(dbinfo, self.engine.columns(self.scratch))  # on the restored copy's schema

    def swap_in(self):
        live_exists = self.engine.exists(self.engine.name if isinstance(self.engine, PostgresEngine) else None)
        previous = kept_name(self.engine) if live_exists else None
        carried = {}
        if live_exists:  # the bot is stopped: the rows since the backup and the highest ids are final
            dbinfo = self.restore_manifest["database"]
            plan = self.check_ledger(dbinfo, self.engine.columns(self.scratch)) if ledger_conf(self.profile) else None
            if plan is not None and self.o.get("carry_forward", True):
                carried = carry_forward(self.engine, plan, self.scratch, self.store().directory)
                if carried:
                    self.act(f"carry forward into {self.scratch}: {describe_carry(carried)}")
            for done in raise_id_floor(self.engine, self.profile, self.scratch,
                                       live_max_ids(self.engine, self.profile)):
                self.act(done)
        self.engine.swap(self.scratch, previous, live_exists=live_exists)
        self.scratch = None
        self.done.append(("swap", previous, None))
        self.result.update(restored=True, previous_database=previous)
        lost = self.result.get("ledger_loss") or {}
        if previous and lost.get("rows"):
            # measured again in the kept database, the bot stopped: what the restored one does not hold
            lost = ledger_loss(self.engine, self.profile, self.restore_manifest["database"].get("ledger_max_id"),
                               dbname=previous)
            self.result["ledger_loss"] = lost
            self.act(f"kept aside in {previous}: {describe_loss(lost)}")
        if live_exists and self.ledger_plan is not None:
            self.result["ledger"] = ledger_report(self.ledger_plan, carried, previous)
        self.result["revision_after"] = self.restore_manifest["database"].get("alembic_revision")
        self.act(f"swap backup {self.restore_id} in" + (f", live database kept as {previous}" if previous else ""))
        self._store_lock.close()

    def drop_scratch(self):
        if self.scratch and self.engine is not None:
            try:
                self.engine.drop(self.scratch)
                self.act(f"drop scratch {self.scratch}")
            except (BackupError, PgError, OSError) as exc:
                self.act(f"could not drop scratch {self.scratch}: {exc}")
            self.scratch = None
