# Copyright: botops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The change window of one bot, in one call on its host: a deploy or a rollback of its release.

Everything the window needs comes from the other module_utils: the kill switch (pause),
the service manager and the readiness gate (botops_service), the `current` symlink and the
ledger (botops_release), Alembic (botops_migrate), backup sets (botops_backup) and the mode
(botops_mode). The module bot_deploy is its Ansible front end.

Deploy is split by concern, each file importing only the ones below it (a module is shipped
with what it imports):

- botops_deploy_errors: how a window fails (Failed, Yielded, AfterWindow, DeployFailed);
- botops_deploy_plan: DeployPlan, the plan: the target release, every step decided before anything
  is touched, the marks, the revision expected after;
- botops_deploy_data: DeployData, the database: the migration or the restore of a backup that brings
  it to what the target release needs, the trade ledger checked and carried forward, the restore
  into a scratch database, the swap, a migration run;
- botops_deploy_revert: DeployRevert, the revert after a failure, and the operator's kill switch
  record it reads;
- this file: Deploy, the window applied step by step (pause, stop, switch `current`, start,
  readiness gate, release the pause, keep the mode, mark the release) and run (plan, apply,
  revert on failure).

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
from ansible_collections.botops.fleet.plugins.module_utils.botops_backup_store import BackupError
from ansible_collections.botops.fleet.plugins.module_utils.botops_deploy_data import DeployData
from ansible_collections.botops.fleet.plugins.module_utils.botops_deploy_errors import AfterWindow, DeployFailed, Failed, Yielded
from ansible_collections.botops.fleet.plugins.module_utils.botops_deploy_plan import DeployPlan
from ansible_collections.botops.fleet.plugins.module_utils.botops_deploy_revert import DeployRevert
from ansible_collections.botops.fleet.plugins.module_utils.botops_errors import BotError
from ansible_collections.botops.fleet.plugins.module_utils.botops_kill_switch import KillSwitch, KillSwitchError, reapply
from ansible_collections.botops.fleet.plugins.module_utils.botops_kill_switch_record import (
    AUDIT_LOG, KillSwitchEngaged, default_who, describe_engagement, yield_to_operator)
from ansible_collections.botops.fleet.plugins.module_utils.botops_mode import keep_out_of_live
from ansible_collections.botops.fleet.plugins.module_utils.botops_pg import PgError
from ansible_collections.botops.fleet.plugins.module_utils.botops_release import (
    ReleaseHistory, ReleaseError, current_version, installed_versions, ledger_lock, remove_release, switch_current,
    utcnow)
from ansible_collections.botops.fleet.plugins.module_utils.botops_service import (
    NotReady, WindowSlots, graceful_stop, start_until_ready, stop_timeout, supervisor_rpc, wait_ready)
from ansible_collections.botops.fleet.plugins.module_utils.botops_values import describe_answer


ERRORS = (BotError, MigrationError, BackupError, PgError, ReleaseError, KillSwitchError, OSError, KeyError)


def _cause(exc):
    return str(exc) or exc.__class__.__name__


class Deploy(DeployPlan, DeployData, DeployRevert):
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
                starting, ready_at = start_until_ready(self.bot, self.profile, began + timeout, manager=self.manager())
            except NotReady as exc:
                self.result["ready"] = False
                raise BotError(f"not ready within {timeout:g}s of the start: last answer {describe_answer(exc.observed)}") from None
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
        ok, observed, ready_at = wait_ready(self.bot, self.profile, max(deadline, time.monotonic()), stable)
        self.result["ready"] = ok
        if not ok:
            raise BotError(f"ready, then not ready again within {stable:g}s: last answer {describe_answer(observed)}")

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

    # ------------------------------------------------------------------ run
    def close(self):
        self.slots.give()
        self.drop_scratch()
        self._store_lock.close()
        if self.engine is not None:
            self.engine.close()

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
                    self.result["release_after"] = self.target  # check mode shows the change it would make
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
                raise DeployFailed(f"Stopped the deploy of release {self.target} on bot '{self.name}': {exc}",
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

    def message(self, exc):
        return f"Failed to deploy release {self.target or self.o.get('version')} on bot '{self.name}': {exc.step}: {exc}"
