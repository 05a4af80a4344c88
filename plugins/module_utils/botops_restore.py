# Copyright: botops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The restore of one bot's database (and optionally its config and data files) from a backup set.

`Restore` runs the whole restore on the bot's host, in this order: find the set (`latest` resolved),
verify its checksums, compare the live database with the backup (its restore marker and row counts;
a match is left alone unless `force`), check what the live ledger would lose (refused unless the rows
are carried forward or the loss is accepted), take the safety backup, restore into a scratch database
and check its row counts, wait for a window slot, stop the bot, carry the ledger forward and keep its
ids above the replaced database's, swap the scratch database in (the replaced one kept), put the files
back, start the bot again if it was running and wait for its readiness, and drop the replaced
database when it is not to be kept. In check mode it reports that plan and changes nothing.

A failure before the swap drops the scratch database and starts the bot again if the restore stopped
it; the live database is untouched. The kill switch always wins: unless `override_kill_switch`, an
operator's level stops the restore before it changes anything and before the start; a bot the
restore started gets the level put back once it is ready.

`Restore` works on the AnsibleModule of bot_restore (its params, check mode and warnings) and ends the
call with its exit_json or fail_json. The steps come from the other module_utils: backup sets
(botops_backup, botops_backup_store, botops_backup_paths and the engines), the ledger (botops_ledger),
the window slots (botops_service) and the kill switch (botops_kill_switch). Stdlib only.
"""

import os
import time

from ansible_collections.botops.fleet.plugins.module_utils.botops_backup import compare_counts, create_backup, engine_for, kept_name, scratch_name
from ansible_collections.botops.fleet.plugins.module_utils.botops_backup_paths import apply_files, plan_files
from ansible_collections.botops.fleet.plugins.module_utils.botops_backup_postgres import PostgresEngine
from ansible_collections.botops.fleet.plugins.module_utils.botops_backup_sqlite import SqliteEngine
from ansible_collections.botops.fleet.plugins.module_utils.botops_backup_store import (
    FILES_TAR, RESTORE_RECORD, BackupError, BackupStore, utc_iso, verify_files)
from ansible_collections.botops.fleet.plugins.module_utils.botops_bot import module_bot
from ansible_collections.botops.fleet.plugins.module_utils.botops_errors import BotError
from ansible_collections.botops.fleet.plugins.module_utils.botops_files import read_json, write_json
from ansible_collections.botops.fleet.plugins.module_utils.botops_kill_switch import reapply
from ansible_collections.botops.fleet.plugins.module_utils.botops_kill_switch_record import KillSwitchEngaged, yield_to_operator
from ansible_collections.botops.fleet.plugins.module_utils.botops_ledger import (
    carry_forward, carry_loss, describe_carry, describe_loss, ledger_loss, ledger_report, live_max_ids, plan_carry,
    raise_id_floor)
from ansible_collections.botops.fleet.plugins.module_utils.botops_pg import PgError
from ansible_collections.botops.fleet.plugins.module_utils.botops_service import WindowSlots

RUNNING_STATES = ("RUNNING", "STARTING", "ACTIVE", "BACKOFF")


class LedgerRefused(BackupError):
    """The restore would take rows out of the live ledger and the operator did not accept it."""


class RestoreFailed(Exception):
    def __init__(self, step, cause):
        super().__init__(f"{step}: {cause}")
        self.step = step
        self.cause = cause


def counts_doc(counts):
    if counts is None:
        return None
    row_counts, ledger_max, revision = counts
    return {"row_counts": row_counts, "ledger_max_id": ledger_max, "alembic_revision": revision}


def live_marker(engine, store):
    if isinstance(engine, PostgresEngine):
        return engine.marker(engine.name)
    try:
        record = read_json(os.path.join(store.directory, RESTORE_RECORD))
        st = os.stat(engine.path)
    except (OSError, ValueError):
        return None
    if record.get("inode") != [st.st_dev, st.st_ino]:
        return None
    return record


class Restore:
    def __init__(self, module):
        self.module = module
        p = module.params
        self.p = p
        self.name = p["bot"]["name"]
        self.root = p["bot"]["root"]
        self.store = BackupStore(p["backup_dir"] or os.path.join(self.root, "backups"))
        self.result = dict(changed=False, actions=[], backup_id=None, safety_backup_id=None, previous_database=None,
                           row_counts={"before": None, "after": None}, downtime=None, slot_wait=None,
                           bot_was_running=None, files=[], timings={})
        self.started = time.monotonic()
        self._step = None
        self._step_started = None
        self.engine = None
        self.bot = None
        self.scratch = None
        self.stopped_at = None
        self.swapped = False
        self.slots = None
        self.ledger_plan = None

    def act(self, text):
        self.result["actions"].append(text)

    # ------------------------------------------------------------------ steps
    def run(self):
        p = self.p
        step = "find the backup"
        try:
            backup_id = self.store.resolve(p["backup_id"])
            manifest = self.store.load(backup_id)
            set_dir = self.store.path(backup_id)
            self.result["backup_id"] = backup_id

            step = "verify the backup's checksums"
            problems = verify_files(set_dir, manifest)
            if problems:
                raise RestoreFailed(step, "refusing to restore, nothing was touched: " + "; ".join(problems))

            step = "compare the live state with the backup"
            self.bot = module_bot(self.module)
            self.hold("the restore", "nothing was changed")
            self.slots = WindowSlots(p["window_slots"])
            self.engine = engine_for(p["profile"], p["bot"], p["secrets"], p["maintenance_db"])
            dbinfo = manifest.get("database")
            if dbinfo and self.engine is None:
                raise BackupError("the backup holds a database but the profile backs up none")
            if dbinfo and dbinfo.get("engine") != self.engine.engine:
                raise BackupError(f"the backup holds a {dbinfo.get('engine')} database, the profile says {self.engine.engine}")
            restore_db = bool(dbinfo)
            live_exists = self.engine.exists(self.engine.name if isinstance(self.engine, PostgresEngine) else None) \
                if restore_db else False
            before = self.engine.counts() if live_exists else None
            self.result["row_counts"]["before"] = counts_doc(before)
            db_matches = False
            marker = (live_marker(self.engine, self.store) or {}) if live_exists else {}
            if restore_db and live_exists:
                db_matches = marker.get("backup_id") == backup_id and not compare_counts(dbinfo, before[0], before[1])
            file_plan = []
            tar_path = os.path.join(set_dir, FILES_TAR)
            if p["restore_files"] and FILES_TAR in (manifest.get("files") or {}):
                file_plan = plan_files(self.root, tar_path, manifest.get("paths") or [])
            self.result["diff"] = {
                "before": {"marker": marker.get("backup_id") if live_exists else None, **(counts_doc(before) or {})},
                "after": {"marker": backup_id, "row_counts": (dbinfo or {}).get("row_counts"),
                          "ledger_max_id": (dbinfo or {}).get("ledger_max_id"),
                          "alembic_revision": (dbinfo or {}).get("alembic_revision")} if restore_db else {},
            }
            need_db = restore_db and (p["force"] or not db_matches)
            if not need_db and not file_plan:
                self.result["row_counts"]["after"] = counts_doc(before)
                return
            if restore_db and before and dbinfo.get("alembic_revision") != before[2]:
                self.module.warn(f"bot '{self.name}': the restore changes the Alembic revision from {before[2]} to "
                                 f"{dbinfo.get('alembic_revision')}; the current release may expect another schema")
            if need_db and live_exists:
                step = "check what the live ledger would lose"
                try:
                    self.check_ledger(dbinfo)
                except LedgerRefused as exc:
                    raise RestoreFailed(step, exc) from None

            self.result["changed"] = True
            if self.module.check_mode:
                self.plan(backup_id, need_db, live_exists, file_plan)
                return

            with self.store.lock():
                self.apply(backup_id, manifest, set_dir, dbinfo, need_db, live_exists, file_plan, tar_path)
        except RestoreFailed as exc:
            self.fail(exc.step, exc.cause)
        except (BackupError, PgError, BotError, OSError, KeyError) as exc:
            self.fail(step, exc)

    def plan(self, backup_id, need_db, live_exists, file_plan):
        verb = "would"
        if self.p["safety_backup"]:
            self.act(f"{verb} take a safety backup of the live state")
        if need_db:
            scratch = scratch_name(self.engine, "restore", backup_id)
            self.act(f"{verb} restore {backup_id} into {scratch} and check its row counts")
        self.act(f"{verb} stop bot {self.name} if it is running (once one of its host's window slots is free)")
        if need_db and live_exists and (self.result.get("ledger") or {}).get("carried"):
            self.act(f"{verb} carry forward into the restored database, the bot stopped: "
                     f"{describe_carry(self.result['ledger']['carried'])}")
        if need_db:
            if live_exists:
                kept = kept_name(self.engine, check_mode=True)
                self.act(f"{verb} keep the live database {self.engine.name} as {kept}")
            self.act(f"{verb} swap the restored database in as {self.engine.name}")
        for name, target, why in file_plan:
            self.act(f"{verb} restore file {name} ({why})")
        self.act(f"{verb} start bot {self.name} again if it was running and wait for readiness")
        if need_db and live_exists and not self.p["keep_previous"]:
            self.act(f"{verb} drop the previous database once the bot is ready")

    def mark(self, step):
        """Close the timing of the step in progress and open the next (None: just close)."""
        now = time.monotonic()
        if self._step is not None:
            self.result["timings"][self._step] = round(now - self._step_started, 3)
        self._step, self._step_started = step, now
        return step

    def apply(self, backup_id, manifest, set_dir, dbinfo, need_db, live_exists, file_plan, tar_path):
        p = self.p
        step = self.mark("take the safety backup")
        try:
            if p["safety_backup"]:
                safety = create_backup(self.store, self.engine if live_exists else None, p["bot"], p["profile"],
                                       fmt=p["format"], jobs=p["jobs"], label="pre-restore",
                                       reason=f"safety backup before restoring {backup_id}", safety_for=backup_id)
                self.result["safety_backup_id"] = safety["backup_id"]
                self.act(f"took safety backup {safety['backup_id']}")

            if need_db:
                step = self.mark("restore into a scratch database")
                self.scratch = scratch_name(self.engine, "restore", backup_id)
                self.engine.drop(self.scratch)
                if isinstance(self.engine, PostgresEngine):
                    self.engine.create_like(self.scratch, self.engine.name if live_exists else None)
                self.engine.restore_into(set_dir, dbinfo, self.scratch, p["jobs"])
                self.act(f"restored {backup_id} into {self.scratch}")

                step = self.mark("check the scratch database's row counts")
                scratch_counts = self.engine.counts(self.scratch)
                problems = compare_counts(dbinfo, scratch_counts[0], scratch_counts[1], scratch_counts[2])
                if problems:
                    raise BackupError("the restored copy does not match the manifest: " + "; ".join(problems))
                self.act(f"checked row counts of {self.scratch}: they match the manifest")
                if live_exists and p["carry_forward"]:
                    step = self.mark("check what the live ledger would lose")
                    self.check_ledger(dbinfo, self.engine.columns(self.scratch))  # on the restored schema
                if isinstance(self.engine, PostgresEngine):
                    self.engine.set_marker(self.scratch, {"backup_id": backup_id, "restored_at": utc_iso(),
                                                          "safety_backup_id": self.result["safety_backup_id"]})

            step = self.mark("wait for a window slot")
            if self.is_running():
                self.result["slot_wait"] = self.slots.take()
            step = self.mark("stop the bot")
            self.stop_bot()

            carried = {}
            if need_db and live_exists:
                if p["carry_forward"] and self.ledger_plan is not None:
                    step = self.mark("carry the ledger forward")
                    # the bot is stopped: the rows since the backup are final
                    plan = self.check_ledger(dbinfo, self.engine.columns(self.scratch))
                    carried = carry_forward(self.engine, plan, self.scratch, self.store.directory)
                    if carried:
                        self.act(f"carried forward into {self.scratch}: {describe_carry(carried)}")
                        scratch_counts = self.engine.counts(self.scratch)
                step = self.mark("keep the ledger's ids above the replaced database's")
                for done in raise_id_floor(self.engine, p["profile"], self.scratch,
                                           live_max_ids(self.engine, p["profile"])):
                    self.act(done)

            previous = None
            if need_db:
                step = self.mark("swap the restored database in")
                previous = kept_name(self.engine, self.module.check_mode) if live_exists else None
                self.engine.swap(self.scratch, previous, live_exists=live_exists)
                self.swapped = True
                self.scratch = None
                self.result["previous_database"] = previous
                lost = self.result.get("ledger_loss") or {}
                if lost.get("rows"):
                    # measured again with the bot stopped: what the restored database does not hold
                    lost = ledger_loss(self.engine, self.p["profile"], dbinfo.get("ledger_max_id"),
                                       dbname=previous) if previous else lost
                    self.result["ledger_loss"] = lost
                    self.act(f"kept aside in {previous}: {describe_loss(lost)}")
                if self.ledger_plan is not None:
                    self.result["ledger"] = ledger_report(self.ledger_plan, carried, previous)
                self.act(f"swapped {backup_id} in as {self.engine.name}"
                         + (f", previous database kept as {previous}" if previous else ""))
                if isinstance(self.engine, SqliteEngine):
                    st = os.stat(self.engine.path)
                    write_json(os.path.join(self.store.directory, RESTORE_RECORD),
                               {"backup_id": backup_id, "restored_at": utc_iso(), "inode": [st.st_dev, st.st_ino],
                                "previous": previous, "safety_backup_id": self.result["safety_backup_id"]})
                # counted in the scratch copy before the swap: nothing has written to it since
                self.result["row_counts"]["after"] = counts_doc(scratch_counts)
            else:
                self.result["row_counts"]["after"] = self.result["row_counts"]["before"]

            if file_plan:
                step = self.mark("restore the config and data files")
                self.result["files"] = apply_files(self.root, tar_path, file_plan)
                self.act(f"restored {len(self.result['files'])} file(s): {', '.join(self.result['files'])}")

            step = self.mark("start the bot and wait for readiness")
            self.start_bot(wait=True)
            self.slots.give()  # ready: the next bot's window may begin

            if previous and not p["keep_previous"]:
                step = self.mark("drop the previous database")
                self.engine.drop(previous)
                self.result["previous_database"] = None
                self.act(f"dropped the previous database {previous}")
            self.mark(None)
        except (BackupError, PgError, BotError, OSError) as exc:
            self.mark(None)
            self.undo_before_swap()
            self.slots.give()
            if self.swapped:
                kept = self.result["previous_database"]
                raise RestoreFailed(step, f"{exc} (the restored database is live"
                                    + (f"; the previous one is kept as {kept})" if kept else ")")) from None
            raise RestoreFailed(step, f"{exc} (the live database was not touched)") from None

    def check_ledger(self, dbinfo, older_columns=None):
        """No trade leaves the ledger without an explicit yes: plan what carrying the rows since the
        backup forward takes (without carry_forward: which rows would be left behind) and refuse
        unless accept_ledger_loss. Returns the plan; raises LedgerRefused."""
        p = self.p
        plan = plan_carry(self.engine, p["profile"], self.root, dbinfo, older_columns, carry=p["carry_forward"])
        self.ledger_plan = plan
        trades = next((e for e in (plan or {}).get("tables", []) if not e["holdings"]), None)
        loss = ledger_loss(self.engine, p["profile"], dbinfo.get("ledger_max_id"))
        if loss and trades and trades["carry"]:
            loss = {"table": loss["table"], "rows": 0, "backup_max_id": loss["backup_max_id"]}  # carried, not lost
        self.result["ledger_loss"] = loss
        self.result["ledger"] = ledger_report(plan, applied=False)
        lost = carry_loss(plan)
        if not lost or p["accept_ledger_loss"]:
            return plan
        self.result["ledger_refused"] = True
        hint = "" if p["carry_forward"] else " or carry them forward with carry_forward (botops restore --carry-forward)"
        raise LedgerRefused(f"refused, nothing was touched: the live ledger would lose {'; '.join(lost)}; restore "
                            f"anyway with accept_ledger_loss (botops restore --accept-ledger-loss): the replaced "
                            f"database is kept, renamed{hint}")

    # ------------------------------------------------------------------ bot process
    def is_running(self):
        if self.bot.pids():
            return True
        try:
            return self.bot.service_state().upper() in RUNNING_STATES
        except (BotError, OSError):
            return False

    def stop_bot(self):
        running = self.is_running()
        self.result["bot_was_running"] = running
        if not running:
            self.act(f"bot {self.name} was not running: left stopped")
            return
        timeout = self.p["stop_timeout"]
        if timeout is None:
            timeout = float(self.bot.service_conf.get("stop_timeout") or 30)
        self.stopped_at = time.monotonic()
        self.bot.service("stop")
        deadline = time.monotonic() + timeout
        while self.bot.pids():
            if time.monotonic() > deadline:
                raise BotError(f"process still running {timeout:.0f}s after the service stop: {self.bot.pids()}")
            time.sleep(0.1)
        self.act(f"stopped bot {self.name}")

    def hold(self, what, left):
        """The kill switch always wins: yield before a step that would let the bot trade again."""
        try:
            self.result["kill_switch"] = yield_to_operator(self.bot, what, self.p["override_kill_switch"], left)
        except KillSwitchEngaged as exc:
            self.result.update(kill_switch=exc.record, yielded=True)
            raise

    def start_bot(self, wait):
        if not self.result["bot_was_running"] or self.stopped_at is None:
            return
        self.hold("the start", "the bot is left stopped")
        try:
            self.bot.service("start")
            self.act(f"started bot {self.name}")
            if not wait:
                return
            ok, observed = self.bot.wait_for([self.p["profile"]["health"]["readiness"]], self.p["ready_timeout"])
            if not ok:
                raise BotError(f"not ready {self.p['ready_timeout']:.0f}s after the start: {observed}")
        except BotError:
            # an operator's kill switch engaged meanwhile may be what stopped it: that is no failure
            self.hold("the start", "the kill switch stopped the bot while it started")
            raise
        self.result["downtime"] = round(time.monotonic() - self.stopped_at, 3)
        self.stopped_at = None
        self.act(f"bot {self.name} is ready (downtime {self.result['downtime']}s)")
        kept = reapply(self.bot, self.p["profile"], source="bot_restore")
        if kept is not None:
            self.act(f"kill switch {kept['level']} put back ({kept.get('engaged_by') or 'still engaged'})")
            self.hold("trading", "the bot runs again with the operator's level put back")

    def undo_before_swap(self):
        """After a failure: drop the scratch copy and start the bot again if this restore stopped it."""
        if self.scratch:
            try:
                self.engine.drop(self.scratch)
                self.act(f"dropped scratch {self.scratch}")
            except (BackupError, PgError, OSError) as exc:
                self.act(f"could not drop scratch {self.scratch}: {exc}")
            self.scratch = None
        if self.stopped_at is not None:
            try:
                self.start_bot(wait=False)
            except (BotError, OSError) as exc:
                self.act(f"could not start bot {self.name} again: {exc}")

    # ------------------------------------------------------------------ results
    def fail(self, step, cause):
        self.result["duration"] = round(time.monotonic() - self.started, 3)
        what = self.result["backup_id"] or self.p["backup_id"]
        self.module.fail_json(msg=f"Failed to restore backup {what} on bot '{self.name}' at step '{step}': {cause}",
                              **self.result)

    def exit(self):
        self.result["duration"] = round(time.monotonic() - self.started, 3)
        self.module.exit_json(**self.result)
