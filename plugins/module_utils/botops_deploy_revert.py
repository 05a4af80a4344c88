# Copyright: botops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The revert of one bot's change window (DeployRevert, a part of botops_deploy.Deploy): after a
failure, the bot put back as it was before the call: the release that started stopped, the data
undone (a migration back with the scripts of the release that ran it, the database swapped back,
or the backup restored when a contract migration cannot be undone), `current` switched back, the
bot started behind the readiness gate unless an operator's kill switch level keeps it stopped, the
pause released, the release marked bad. Also the operator's kill switch record as the window reads it.
"""

from __future__ import annotations

import contextlib
import time

from ansible_collections.botops.fleet.plugins.module_utils.botops_alembic import MigrationError
from ansible_collections.botops.fleet.plugins.module_utils.botops_backup import kept_name
from ansible_collections.botops.fleet.plugins.module_utils.botops_errors import BotError
from ansible_collections.botops.fleet.plugins.module_utils.botops_kill_switch_record import yield_to_operator
from ansible_collections.botops.fleet.plugins.module_utils.botops_pg import PgError
from ansible_collections.botops.fleet.plugins.module_utils.botops_release import current_version
from ansible_collections.botops.fleet.plugins.module_utils.botops_service import (
    NotReady, graceful_stop, start_until_ready, stop_timeout, wait_ready)
from ansible_collections.botops.fleet.plugins.module_utils.botops_values import describe_answer


class DeployRevert:
    """The revert of Deploy: puts the bot back as it was before the call."""

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
                    starting, ready_at = start_until_ready(self.bot, self.profile, began + timeout, manager=self.manager())
                except NotReady as exc:
                    raise BotError(f"release {self.current} not ready again within {timeout:g}s: last answer "
                                   f"{describe_answer(exc.observed)}") from None
                self.act("service start")
                starting.wait(max(1.0, began + timeout - time.monotonic()))
                ok, observed, ready_at = wait_ready(self.bot, self.profile, began + timeout, o.get("ready_stable_for", 1.0))
                if not ok:
                    raise BotError(f"release {self.current} ready, then not ready again: last answer {describe_answer(observed)}")
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
            after, executed = self.mig.apply(back)
            self.act(f"{back.direction} {reached or 'base'} -> {after or 'base'} (release {back.release}'s scripts)")
        return f"{back.direction}d the database back to {plan.before or 'base'}"
