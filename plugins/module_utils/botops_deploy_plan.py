# Copyright: botops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The plan of one bot's change window (DeployPlan, a part of botops_deploy.Deploy), made before
anything is touched: the target release (a version, `latest` for the previous good release in the
release history, or the release a backup records), whether it is in place already, every step in
the order the window takes them (what check mode reports), the marks in the release history, and
the revision the database is expected at after the window. The database's part of the plan
(plan_data) is botops_deploy_data's.
"""

from __future__ import annotations

from ansible_collections.botops.fleet.plugins.module_utils.botops_deploy_errors import Failed
from ansible_collections.botops.fleet.plugins.module_utils.botops_errors import BotError
from ansible_collections.botops.fleet.plugins.module_utils.botops_migrate import Migrations
from ansible_collections.botops.fleet.plugins.module_utils.botops_mode import read_mode
from ansible_collections.botops.fleet.plugins.module_utils.botops_pg import Database
from ansible_collections.botops.fleet.plugins.module_utils.botops_release import ReleaseHistory, check_version, current_version, installed_versions


class DeployPlan:
    """The plan of Deploy: decides every step and touches nothing."""

    def resolve_target(self, ledger):
        o = self.o
        version = o.get("version")
        if version in (None, "") and o.get("backup_id"):
            store = self.store()
            backup_id = store.resolve(o["backup_id"])
            version = store.load(backup_id).get("release")
            if not version:
                raise Failed("resolve the target", f"backup {backup_id} records no release: give the version")
        if version == "latest":
            version = ledger.previous_good(self.current, self.installed)
            if not version:
                raise Failed("resolve the target", f"no good release other than {self.current} in the ledger "
                                                   "to roll back to")
        check_version(version)
        return version

    def plan(self):
        """Decide every step; touches nothing. Returns False when there is nothing to do."""
        o = self.o
        with self.step("resolve the target"):
            ledger = ReleaseHistory(self.root, self.name)
            self.installed = installed_versions(self.releases_dir)
            self.current = current_version(self.root)
            ledger.adopt(self.current, self.installed, self.who)
            self.target = self.resolve_target(ledger)
            entry = ledger.get(self.target) or {}
            if entry.get("status") == "bad" and self.target != self.current:
                # not refused (a fixed environment may make it good), but never without a word
                self.result["note"] = (f"release {self.target} is marked bad in the release history"
                                       + (f" ({entry['note']})" if entry.get("note") else "")
                                       + ": it goes ahead, and is marked good only if its window succeeds")
        self.result.update(version=self.target, release_before=self.current, release_after=self.current)
        if self.target not in self.installed:
            if not self.check_mode:
                raise Failed("resolve the target", f"release {self.target} is not installed (installed: "
                                                   f"{', '.join(self.installed) or 'none'})")
            self.would(f"switch current {self.current} -> {self.target} (not installed yet: its migrations "
                       "are planned once it is)")
            self.result["release_after"] = self.target
            return True
        self.was_running = bool(self.bot.pids())
        db = self.profile.get("database") or {}
        if db.get("engine") == "postgresql" and (db.get("migrations") or {}).get("tool") == "alembic":
            with self.step("read the database's revision"):
                database = Database(self.bot.bot.get("database") or {}, self.secrets.get("database_password"), db)
                self.mig = Migrations(self.root, self.name, self.profile, database, self.run_command,
                                      lock_timeout=o.get("lock_timeout", 30))
                self.result["revision_before"] = self.result["revision_after"] = self.mig.current_revision()
        with self.step("plan the migration"):
            self.plan_data(ledger)
        ready = None
        if self.was_running:
            ready, observed = self.bot.check_all([self.profile["health"]["readiness"]])
        in_place = (self.current == self.target and not self.restore_id and not self.pending() and
                    self.was_running and ready)
        if in_place:
            self.result["ready"] = True
            return self.plan_marks(ledger, in_place=True)
        if self.was_running:
            try:
                self.mode_before = read_mode(self.bot, self.profile["facts"])
            except (BotError, KeyError):
                self.mode_before = (None, None)
        self.result["mode"] = {"execution_mode": self.mode_before[0], "paper_trading": self.mode_before[1]}
        self.plan_window()
        self.plan_marks(ledger, in_place=False)
        return True

    def pending(self):
        return bool((self.up and self.up.pending) or (self.down and self.down.pending))

    @staticmethod
    def plan_text(plan, when):
        return (f"{plan.direction} the database {plan.before or 'base'} -> {plan.target or 'base'} with release "
                f"{plan.release}'s scripts {when}")

    def plan_window(self):
        o = self.o
        if self.restore_id:
            self.would(f"restore backup {self.restore_id} into a scratch database before the stop")
        if self.up_online:
            self.would(self.plan_text(self.up, "before the stop (expand-only: the running release copes)"))
        if self.was_running and o.get("pause", True) and not self.pause_is_stop():
            self.would("pause entries (kill switch level pause)")
        if self.was_running:
            self.would("stop the bot gracefully")
        if self.down and self.down.pending and not self.down_online:
            self.would(self.plan_text(self.down, "before the switch"))
        if self.restore_id:
            self.would("swap the restored database in (the live one kept as <db>_pre_restore_<time>)")
        if self.current != self.target:
            self.would(f"switch current {self.current} -> {self.target}")
        if self.up and self.up.pending and not self.up_online:
            self.would(self.plan_text(self.up, "after the switch"))
        if self.up_after_restore:
            self.would(f"upgrade the restored database to release {self.target}'s head")
        self.would(f"start the bot and wait until it is ready (held {o.get('ready_stable_for', 1.0):g}s)")
        if self.was_running and o.get("pause", True) and not self.pause_is_stop():
            self.would("release the pause this call engaged")
        if self.down and self.down.pending and self.down_online:
            self.would(self.plan_text(self.down, "once release " + self.target + " runs (expand-only)"))
        if o.get("keep_mode", True) and self.mode_before != (None, None):
            self.would("keep the bot out of LIVE if it was DRY or paper")

    def plan_marks(self, ledger, in_place):
        o = self.o
        changed = not in_place
        entry = ledger.get(self.target) or {}
        if o.get("mark", True) and entry.get("status") != "good":
            self.would(f"mark {self.target} good")
            changed = True
        replaced = ledger.get(self.current) if self.current != self.target else None
        if o.get("replaced_status") and replaced and replaced.get("status") != o["replaced_status"]:
            self.would(f"mark {self.current} {o['replaced_status']}")
            changed = True
        return changed

    def expected_revision(self):
        if self.restore_id and self.restore_manifest:
            if self.up_after_restore and self.mig is not None:
                return "head of " + str(self.target)
            return self.restore_manifest["database"].get("alembic_revision")
        plan = self.up or self.down
        return plan.target if plan is not None else self.result["revision_before"]
