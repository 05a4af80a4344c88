# Copyright: botops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The change window of one bot, in one call on its host: a deploy or a rollback of its release.

Everything the window needs comes from the other module_utils: the kill switch (pause),
the service manager and the readiness gate (botops_service), the `current` symlink and the
ledger (botops_release), Alembic (botops_migrate), backup sets (botops_backup) and the mode
(botops_mode). The module bot_deploy is its Ansible front end.

Order, planned before anything is touched:

1. outside the window: restore a backup into a scratch database (when the data comes back
   from a backup); run an expand-only upgrade while the old release still runs (by
   definition it runs on the expanded schema);
2. the window: pause entries, graceful stop, downgrade with the scripts of the release being
   left (they alone know its revisions), or swap the restored database in, switch `current`,
   upgrade with the new release's scripts (contract migrations, or every migration when
   online_migrations is off), start, readiness (trading may resume), release the pause this
   call engaged, readiness held for stable_for;
3. after the window: an expand-only downgrade once the older release runs (it does not use
   what the downgrade removes), keep a DRY or paper bot out of LIVE, mark the release.

Any failure after the first change is reverted by the same call: stop, undo the data (a
downgrade with the new release's scripts, an upgrade back, a swap back, or the backup restored
when a contract migration cannot be undone), switch back, start behind the readiness gate,
release the pause; then the call fails naming the step, the cause and what it reverted.

The kill switch always wins: before the window, before the start, before the pause is released
and before the release is marked, an operator's level recorded on the bot's host stops the call
(`Yielded`, nothing more is changed, no revert starts the bot, no release is marked bad); a bot
the window started gets the operator's level put back as soon as it is ready.
"""

from __future__ import annotations

import contextlib
import os
import time

from ansible_collections.botops.fleet.plugins.module_utils.botops_alembic import MigrationError
from ansible_collections.botops.fleet.plugins.module_utils.botops_backup import compare_counts, engine_for, kept_name, scratch_name
from ansible_collections.botops.fleet.plugins.module_utils.botops_backup_postgres import PostgresEngine
from ansible_collections.botops.fleet.plugins.module_utils.botops_backup_store import BackupError, BackupStore, verify_files
from ansible_collections.botops.fleet.plugins.module_utils.botops_errors import BotError
from ansible_collections.botops.fleet.plugins.module_utils.botops_kill_switch import KillSwitch, KillSwitchError, reapply
from ansible_collections.botops.fleet.plugins.module_utils.botops_kill_switch_record import (
    AUDIT_LOG, KillSwitchEngaged, default_who, describe_engagement, yield_to_operator,
)
from ansible_collections.botops.fleet.plugins.module_utils.botops_ledger import (
    carry_forward, carry_loss, describe_carry, describe_loss, ledger_conf, ledger_loss, ledger_report, live_max_ids,
    plan_carry, raise_id_floor,
)
from ansible_collections.botops.fleet.plugins.module_utils.botops_migrate import AlembicFailed, Migrations
from ansible_collections.botops.fleet.plugins.module_utils.botops_mode import keep_out_of_live, read_mode
from ansible_collections.botops.fleet.plugins.module_utils.botops_pg import Database, PgError
from ansible_collections.botops.fleet.plugins.module_utils.botops_release import (ReleaseHistory, ReleaseError, check_version, current_version,
                                                 installed_versions, ledger_lock, remove_release,
                                                 switch_current, utcnow)
from ansible_collections.botops.fleet.plugins.module_utils.botops_service import (NotReady, WindowSlots, graceful_stop, start_until_ready,
                                                  stop_timeout, supervisor_rpc, wait_ready)

ERRORS = (BotError, MigrationError, BackupError, PgError, ReleaseError, KillSwitchError, OSError, KeyError)


class Failed(Exception):
    """A step failed; `step` names it, the message is the cause."""

    def __init__(self, step, cause):
        super().__init__(str(cause))
        self.step = step


class Yielded(Failed):
    """An operator's kill switch level is engaged: the window stops where it is."""

    def __init__(self, step, engaged):
        super().__init__(step, engaged)
        self.record = engaged.record


def _cause(exc):
    return str(exc) or exc.__class__.__name__


class Deploy:
    """One bot's change window. `options` are bot_deploy's parameters; `run_command(cmd, cwd,
    env)` runs a command (alembic) and returns (rc, stdout, stderr)."""

    def __init__(self, bot, profile, options, secrets=None, run_command=None, check_mode=False, warn=None):
        self.bot = bot
        self.profile = profile
        self.o = options
        self.secrets = secrets or {}
        self.run_command = run_command
        self.check_mode = check_mode
        self.warn = warn or (lambda msg: None)
        self.name = bot.name
        self.root = bot.root
        self.releases_dir = os.path.join(self.root, "releases")
        self.who = options.get("who") or default_who()
        self.actions = []
        self.result = dict(changed=False, actions=self.actions, reverted=False, version=None,
                           release_before=None, release_after=None, revision_before=None, revision_after=None,
                           downtime=None, ready=None, timings={}, migration=None, backup_id=None,
                           restored=False, previous_database=None, paused=False, mode=None, pruned=[],
                           slot_wait=None)
        self.plan_steps = []
        # decisions of the plan
        self.target = None
        self.current = None
        self.installed = []
        self.mig = None
        self.up = None  # Plan: upgrade with the target's scripts
        self.up_online = False
        self.down = None  # Plan: downgrade with the scripts of the release being left
        self.down_online = False
        self.restore_id = None  # backup whose data comes back
        self.restore_manifest = None
        self.up_after_restore = False
        self.ledger_plan = None
        self.reverting = False
        self.was_running = False
        self.mode_before = (None, None)
        # what was done (for the revert)
        self.done = []  # ("up", plan, reached) / ("down", plan, reached) / ("swap", previous name)
        self.paused = False
        self.stopped = False
        self.switched = False
        self.started = False
        self.stop_began = None
        self.engine = None
        self.scratch = None
        self._store_lock = contextlib.ExitStack()
        self._manager = None
        self.slots = WindowSlots(options.get("window_slots"))

    # ------------------------------------------------------------------ helpers
    def act(self, text):
        self.actions.append(text)

    @contextlib.contextmanager
    def step(self, name):
        began = time.monotonic()
        try:
            yield
        except Failed:
            raise
        except ERRORS as exc:
            raise Failed(name, _cause(exc)) from None
        finally:
            timings = self.result["timings"]
            timings[name] = round(timings.get(name, 0.0) + time.monotonic() - began, 3)

    def would(self, text):
        self.plan_steps.append(text)

    # ------------------------------------------------------------------ plan
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

    def store(self):
        return BackupStore(self.o.get("backup_dir") or os.path.join(self.root, "backups"))

    def plan(self):
        """Decide every step; touches nothing. Returns False when there is nothing to do."""
        o = self.o
        with self.step("resolve the target"):
            ledger = ReleaseHistory(self.root, self.name)
            self.installed = installed_versions(self.releases_dir)
            self.current = current_version(self.root)
            ledger.adopt(self.current, self.installed, self.who)
            self.target = self.resolve_target(ledger)
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
            ready, _ = self.bot.check_all([self.profile["health"]["readiness"]])
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
        _, _, _, target_graph = self.mig.load(self.target)
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
                _, _, _, target_graph = self.mig.load(self.target)
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
                         f"{'; '.join(lost)}; go ahead with accept_ledger_loss (invoke rollback "
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
            self.would(f"swap the restored database in (the live one kept as <db>_pre_restore_<time>)")
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

    # ------------------------------------------------------------------ apply
    def hold(self, step, left=None):
        """Yield to an operator's kill switch level before `step` (one that lets the bot trade)."""
        try:
            yield_to_operator(self.bot, step, self.o.get("override_kill_switch", False), left)
        except KillSwitchEngaged as exc:
            raise Yielded(step, exc) from None

    def left(self):
        process = "running" if self.bot.pids() else "stopped"
        return f"bot left {process} at release {current_version(self.root)}"

    def apply(self):
        o = self.o
        self.hold("the change window", "nothing was changed")
        if self.current == self.target and not self.restore_id and not self.pending() and self.result["ready"]:
            self.mark(success=True)  # already in place: only the ledger may need the mark
            return
        if self.restore_id:
            with self.step("restore into a scratch database"):
                self.prepare_restore()
        if self.up_online:
            with self.step("migrate before the stop"):
                self.migrate(self.up)
        with self.step("wait for a window slot"):
            self.result["slot_wait"] = self.slots.take()
        self.hold("the change window", "it had not stopped the bot" + (", the migration before the stop ran"
                                                                       if self.done else ""))
        if self.was_running and o.get("pause", True) and not self.pause_is_stop():
            began = time.monotonic()
            with self.step("pause entries"):
                self.pause()
            if not self.bot.pids():
                self.stop_began = began  # the family's pause is a stop
                self.stopped = True
        if self.bot.pids():
            with self.step("stop"):
                self.stop_began = time.monotonic()
                self.stopped = True
                graceful_stop(self.bot, stop_timeout(self.bot, o.get("graceful_timeout")),
                              o.get("term_timeout", 10.0), self.actions, manager=self.manager())
        if self.stop_began is None:
            self.stop_began = time.monotonic()  # it was not running: down since before this call
        if self.down and self.down.pending and not self.down_online:
            with self.step("downgrade the database"):
                self.migrate(self.down)
        if self.restore_id:
            with self.step("swap the restored database in"):
                self.swap_in()
        if self.current != self.target:
            with self.step("switch current"):
                self.switch(self.current, self.target, forward=True)
                self.switched = True
        if self.up and self.up.pending and not self.up_online:
            with self.step("upgrade the database"):
                self.migrate(self.up)
        if self.up_after_restore:
            with self.step("upgrade the database"):
                self.up = self.mig.plan("upgraded", "head", self.target, knowing=False)
                self.migrate(self.up)
        self.hold("the start", self.left())
        self.start_gate()
        if self.down and self.down.pending and self.down_online:
            with self.step("migrate after the start"):
                try:
                    self.migrate(self.down)
                except (MigrationError, PgError) as exc:
                    raise AfterWindow("migrate after the start", f"{exc} (release {self.target} runs and is ready "
                                      f"on the expanded schema; downgrade it with bot_migrate)") from None
            with self.step("readiness gate"):
                self.hold_ready()
        if o.get("keep_mode", True) and self.mode_before != (None, None):
            with self.step("keep the mode"):
                mode, paper, kept = keep_out_of_live(self.bot, self.profile, *self.mode_before, self.actions,
                                                     timeout=o.get("ready_timeout", 60.0),
                                                     warn=lambda m: self.warn(f"bot '{self.name}': {m}"))
                self.result["mode"] = {"execution_mode": mode, "paper_trading": paper}
                self.result["kept_by"] = kept
        self.result["changed"] = True
        self.hold(f"marking release {self.target} good", self.left())
        try:
            with self.step("mark the release"):
                self.mark(success=True)
        except Failed as exc:
            raise AfterWindow(exc.step, f"{exc} (release {self.target} runs and is ready)") from None

    def start_gate(self):
        """Start and poll readiness meanwhile; at the first readiness trading may resume (the pause
        is released), then readiness must hold for ready_stable_for seconds."""
        o = self.o
        timeout = o.get("ready_timeout", 60.0)
        with self.step("start"):
            began = time.monotonic()
            self.started = True
            try:
                starting, _ = start_until_ready(self.bot, self.profile, began + timeout, manager=self.manager())
            except NotReady as exc:
                self.result["ready"] = False
                raise BotError(f"not ready within {timeout:g}s of the start: last answer {exc.observed}") from None
            self.act("service start")
            self.act("ready")
        self.keep_operator_level()
        self.hold("releasing the pause", self.left() + ", the operator's level put back")
        if self.paused:
            with self.step("release the pause"):
                self.release_pause()
        self.result["downtime"] = round(time.monotonic() - self.stop_began, 3)
        self.slots.give()  # trading again: the next bot's window may begin
        with self.step("readiness gate"):
            starting.wait(max(1.0, began + timeout - time.monotonic()))
            if starting.tolerated:
                self.act(f"service start reported: {starting.tolerated}")
            self.hold_ready(deadline=began + timeout)

    def keep_operator_level(self):
        """A bot this call started gets the operator's recorded level back before it may trade."""
        with self.step("put the kill switch level back"):
            kept = reapply(self.bot, self.profile, self.o.get("audit_log"), source="bot_deploy")
        if kept is not None:
            self.result["kill_switch"] = kept
            self.act(f"kill switch {kept['level']} put back ({kept.get('engaged_by') or 'still engaged'})")

    def hold_ready(self, deadline=None):
        stable = self.o.get("ready_stable_for", 1.0)
        deadline = time.monotonic() + self.o.get("ready_timeout", 60.0) if deadline is None else deadline
        ok, observed, _ = wait_ready(self.bot, self.profile, max(deadline, time.monotonic()), stable)
        self.result["ready"] = ok
        if not ok:
            raise BotError(f"ready, then not ready again within {stable:g}s: last answer {observed}")

    # ------------------------------------------------------------------ steps
    def manager(self):
        """supervisord's XML-RPC for the stop and the start when the bot runs under supervisor
        (no supervisorctl process in the window), else None: the service manager's command."""
        if self._manager is None:
            timeout = stop_timeout(self.bot, self.o.get("graceful_timeout")) + 5.0
            self._manager = supervisor_rpc(self.bot, timeout) or False
        return self._manager or None

    def pause_is_stop(self):
        """The family's pause level is the process stopped (no API to pause entries): the graceful
        stop that follows is the pause, and nothing is left to release after the start."""
        return bool(((self.profile.get("kill_switch") or {}).get("levels") or {}).get("pause", {}).get("stops_process"))

    def pause(self):
        switch = self.kill_switch()
        res = switch.engage()
        self.paused = bool(res.get("changed"))
        self.result["paused"] = self.paused
        if self.paused:
            self.act(f"pause entries ({res.get('engaged_by')})")

    def release_pause(self):
        try:
            res = self.kill_switch().release()
        except KillSwitchError as exc:
            if exc.result.get("refused"):  # an operator engaged a stronger level meanwhile: leave it
                self.warn(f"bot '{self.name}': the pause was not released: {exc}")
                self.paused = False
                return
            raise
        self.paused = False
        if res.get("yielded_to"):
            self.act(f"pause left to the operator's kill switch {res['yielded_to'].get('level')}")
        elif res.get("changed"):
            self.act(f"release the pause ({res.get('released_by')})")

    def kill_switch(self):
        o = self.o
        audit = o.get("audit_log") or os.path.join(self.root, AUDIT_LOG)
        return KillSwitch(self.bot, self.profile, "pause", reason=o.get("reason") or "botops deploy",
                          who=self.who, audit_logs=[audit], source="bot_deploy", holder="operation",
                          run_id=o.get("run_id"))

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

    def switch(self, from_version, to_version, forward):
        with ledger_lock(self.releases_dir):
            ledger = ReleaseHistory(self.root, self.name)
            ledger.adopt(from_version, installed_versions(self.releases_dir), self.who)
            switch_current(self.root, to_version)
            # the backup taken before this change leads back from the release it activates
            backup_id = self.o.get("backup_id") if forward and self.o.get("restore") != "always" else None
            ledger.record_activation(to_version, from_version, backup_id, self.who)
            ledger.write()
        self.result["release_after"] = to_version
        self.act(f"switch current {from_version} -> {to_version}")

    def mark(self, success, note=None):
        o = self.o
        if not o.get("mark", True) and not (success and o.get("replaced_status")):
            return
        with ledger_lock(self.releases_dir):
            ledger = ReleaseHistory(self.root, self.name)
            installed = installed_versions(self.releases_dir)
            current = current_version(self.root)
            ledger.adopt(current, installed, self.who)
            marks = []
            if o.get("mark", True):
                marks.append((self.target, "good" if success else "bad", note))
            replaced = self.result["release_before"]
            if success and o.get("replaced_status") and replaced and replaced != self.target:
                marks.append((replaced, o["replaced_status"], f"replaced by {self.target}: {o.get('reason') or ''}"))
            dirty = False
            for version, status, why in marks:
                entry = ledger.get(version)
                if entry is None or (entry.get("status") == status and (why is None or entry.get("note") == why)):
                    continue
                entry.update(status=status, marked_at=utcnow(), who=self.who)
                if why is not None:
                    entry["note"] = why
                self.act(f"mark {version} {status}")
                dirty = True
            pruned = []
            if success and o.get("keep"):
                pruned = ledger.prune_candidates(current, installed, o["keep"], also_keep=(self.target,))
                for version in pruned:
                    remove_release(self.releases_dir, version)
                    if ledger.get(version):
                        ledger.get(version)["removed_at"] = utcnow()
                    self.act(f"remove {version} (keep {o['keep']})")
                dirty = dirty or bool(pruned)
            if dirty:
                ledger.write()
                self.result["changed"] = True
        self.result["pruned"] = pruned

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

    def close(self):
        self.slots.give()
        self.drop_scratch()
        self._store_lock.close()
        if self.engine is not None:
            self.engine.close()

    # ------------------------------------------------------------------ revert
    def revert(self):
        """Put the bot back as it was before this call; returns what was done, raises Failed."""
        o = self.o
        undo = []
        self.actions.append("revert:")
        self.drop_scratch()
        if self.stopped or self.started or self.switched or self.done:
            try:  # the revert is a window of its own, but putting the bot back comes first
                self.slots.take(wait=o.get("ready_timeout", 60.0))
            except (BotError, OSError) as exc:
                self.act(f"revert without a window slot ({exc})")
        if self.started or (self.stopped and self.bot.pids()):
            with self.step("revert: stop"):
                graceful_stop(self.bot, stop_timeout(self.bot, o.get("graceful_timeout")),
                              o.get("term_timeout", 10.0), self.actions, manager=self.manager())
                undo.append(f"stopped release {self.target}")
        for kind, plan, reached in list(reversed(self.done)):
            if kind == "swap":
                with self.step("revert: swap the database back"):
                    failed = kept_name(self.engine, kind="failed_deploy")
                    self.engine.swap(plan, failed, live_exists=True)
                    self.act(f"swap {plan} back in, restored copy kept as {failed}")
                    undo.append(f"put the previous database back (the restored one kept as {failed})")
                    self.result.update(restored=False, previous_database=None)
                continue
            with self.step(f"revert: undo the {kind}"):
                undo.append(self.undo_migration(kind, plan, reached))
        if self.switched:
            with self.step("revert: switch back"):
                self.switch(self.target, self.current, forward=False)
                undo.append(f"switched back to {self.current}")
        held = None if o.get("override_kill_switch") else self.operator_record()
        if held is not None:
            undo.append(f"left stopped: kill switch {held['level']} engaged by {held.get('who')}")
            self.result["kill_switch"] = held
        if self.was_running and (self.stopped or self.started) and held is None:
            with self.step("revert: start"):
                timeout = o.get("ready_timeout", 60.0)
                began = time.monotonic()
                try:
                    starting, _ = start_until_ready(self.bot, self.profile, began + timeout, manager=self.manager())
                except NotReady as exc:
                    raise BotError(f"release {self.current} not ready again within {timeout:g}s: last answer "
                                   f"{exc.observed}") from None
                self.act("service start")
                starting.wait(max(1.0, began + timeout - time.monotonic()))
                ok, observed, _ = wait_ready(self.bot, self.profile, began + timeout, o.get("ready_stable_for", 1.0))
                if not ok:
                    raise BotError(f"release {self.current} ready, then not ready again: last answer {observed}")
                self.act("ready")
                if self.stop_began is not None:
                    self.result["downtime"] = round(time.monotonic() - self.stop_began, 3)
                undo.append(f"started {self.current}, ready")
            self.keep_operator_level()
        if self.paused:
            with self.step("revert: release the pause"):
                self.release_pause()
                undo.append("released the pause")
        self.result["release_after"] = current_version(self.root)
        if self.mig is not None:
            with contextlib.suppress(MigrationError, PgError):
                self.result["revision_after"] = self.mig.current_revision()
        if o.get("mark", True) and held is None:  # the kill switch may be why it failed: not the release's fault
            with self.step("revert: mark the release bad"):
                self.mark(success=False, note=f"reverted: {self.result.get('failure')}")
                undo.append(f"marked {self.target} bad")
        return undo

    def operator_record(self):
        try:
            return yield_to_operator(self.bot, "", override=True)
        except BotError as exc:
            self.act(f"could not read the kill switch record: {exc}")
            return {"level": "unknown", "who": "unknown", "reason": str(exc)}

    def undo_migration(self, kind, plan, reached):
        """Undo one migration this call ran: back to plan.before."""
        if kind == "upgrade":
            executed = plan.graph.upgrade_path(plan.before, reached) if reached else []
            if plan.graph.contracts(executed):
                backup = self.o.get("backup_id")
                if not backup:
                    raise MigrationError(f"contract migration {', '.join(plan.graph.contracts(executed))} cannot be "
                                         "undone and no backup_id was given to restore")
                self.restore_id = self.store().resolve(backup)
                self.restore_manifest = self.store().load(self.restore_id)
                # a revert cannot refuse: it carries what it can, the rest is reported and kept
                self.reverting = True
                self.prepare_restore()
                self.swap_in()
                return f"restored backup {self.restore_id} (contract migration {reached} cannot be undone)"
            back = self.mig.plan("downgraded", plan.before or "base", plan.release, knowing=False, before=reached)
        else:
            back = self.mig.plan("upgraded", plan.before, plan.release, knowing=False, before=reached)
        if back.pending:
            after, _ = self.mig.apply(back)
            self.act(f"{back.direction} {reached or 'base'} -> {after or 'base'} (release {back.release}'s scripts)")
        return f"{back.direction}d the database back to {plan.before or 'base'}"

    # ------------------------------------------------------------------ run
    def run(self):
        """Plan and apply; returns the result, raises DeployFailed (result inside) on failure."""
        started = time.monotonic()
        try:
            try:
                todo = self.plan()
            except Failed as exc:
                raise DeployFailed(self.message(exc) + " (nothing was changed)", self.result) from None
            self.result["diff"] = {
                "before": {"release": self.current, "revision": self.result["revision_before"]},
                "after": {"release": self.target, "revision": self.expected_revision()},
            }
            if self.check_mode and todo and not self.o.get("override_kill_switch"):
                held = self.operator_record()
                if held is not None:
                    self.result["kill_switch"] = held
                    self.plan_steps.insert(0, f"nothing: stopped by the kill switch {held['level']} engaged by "
                                              f"{held.get('who')} (pass override_kill_switch to go ahead)")
            if self.check_mode or not todo:
                if todo:
                    self.result["would"] = self.plan_steps
                    self.result["changed"] = True
                return self.result
            try:
                self.apply()
            except Yielded as exc:
                self.result["changed"] = bool(self.done or self.paused or self.stopped or self.switched)
                self.result["kill_switch"] = exc.record
                self.result["yielded"] = True
                if self.paused:
                    with contextlib.suppress(*ERRORS):
                        self.release_pause()  # forgets this run's pause; the bot keeps the operator's level
                raise DeployFailed(f"Stopped the roll-out of release {self.target} on bot '{self.name}': {exc}",
                                    self.result) from None
            except AfterWindow as exc:
                self.result["changed"] = True
                raise DeployFailed(f"Failed to deploy release {self.target} on bot '{self.name}': {exc.step}: "
                                    f"{exc}", self.result) from None
            except Failed as exc:
                self.result["failure"] = f"{exc.step}: {exc}"
                self.result["changed"] = bool(self.done or self.paused or self.stopped or self.switched)
                msg = self.message(exc)
                if not self.result["changed"]:
                    raise DeployFailed(msg + " (nothing was changed)", self.result) from None
                try:
                    undone = self.revert()
                except Failed as again:
                    raise DeployFailed(
                        f"{msg}; the revert failed too at {again.step}: {again} (bot left at release "
                        f"{current_version(self.root)}, process {'running' if self.bot.pids() else 'stopped'})",
                        self.result) from None
                self.result["reverted"] = True
                held = self.result.get("kill_switch")
                if held and not self.o.get("override_kill_switch"):
                    # the operator's kill switch (which may be what failed the start) keeps the bot stopped
                    self.result["yielded"] = True
                    msg += f"; stopped: kill switch {describe_engagement(held)}"
                raise DeployFailed(f"{msg}; reverted: {', '.join(undone) or 'nothing to undo'}",
                                    self.result) from None
            return self.result
        finally:
            self.close()
            self.result["seconds"] = round(time.monotonic() - started, 3)

    def expected_revision(self):
        if self.restore_id and self.restore_manifest:
            if self.up_after_restore and self.mig is not None:
                return "head of " + str(self.target)
            return self.restore_manifest["database"].get("alembic_revision")
        plan = self.up or self.down
        return plan.target if plan is not None else self.result["revision_before"]

    def message(self, exc):
        return f"Failed to deploy release {self.target or self.o.get('version')} on bot '{self.name}': {exc.step}: {exc}"


class AfterWindow(Failed):
    """A step after the window failed: the new release runs and is ready, nothing is reverted."""


class DeployFailed(Exception):
    def __init__(self, msg, result):
        super().__init__(msg)
        self.result = result

