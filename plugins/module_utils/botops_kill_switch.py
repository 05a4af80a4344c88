# Copyright: botops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The kill switch: engage or release a level by walking the bot's ladder as its profile says.

A level (pause < halt < flatten) has its own `engage` rungs, `engaged` checks and `release`
rungs; `kill_switch.escalation` holds the rungs tried after the level's own ones fail. A rung is
its `do` actions, then its `verify` checks polled until the rung's timeout. The first rung that
verifies ends the walk, unless it is marked `ends_walk: false` (a rung that prepares the next one,
such as SIGCONT thawing a stopped bot before SIGTERM: verified or not, the walk goes on). Every
engagement and release is appended to an audit log (JSON lines).

Shared by `bot_kill_switch` (one bot, on its host) and `bot_fleet_kill_switch` (many bots from the
controller, one thread per bot): both call `KillSwitch(...).engage()` / `.release()`.

A bot is who the inventory says. Where the profile declares an `identity` probe, the kill switch
reads it in the same moment as its first look at the bot (the answer the level's checks read
already serves it, so a halt is not held up) before a level's own rungs act through the bot's API:
a bot whose address answers as another bot (the inventory's port points at another bot) gets
none of its level's API rungs - they would engage that other bot - but its escalation rungs, which
act on the bot the inventory names by its service manager and its processes, and it fails loudly,
naming both ids and the port. A release there is refused (it would release the other bot's level).
A bot that does not answer the probe cannot be checked and is driven as before.

An engage records its level on the bot's host before it walks the ladder, and a release removes it.
The record and the audit log live in botops_kill_switch_record; the checks, the look at the bot
(`Observation`) and `HostlessBot` in botops_kill_switch_checks. `reapply()` puts the operator's
recorded level back on a bot that was just started.
Stdlib only.
"""

from __future__ import annotations

import os
import socket
import time

from ansible_collections.botops.fleet.plugins.module_utils.botops_bot import POLL_INTERVAL
from ansible_collections.botops.fleet.plugins.module_utils.botops_errors import BotError
from ansible_collections.botops.fleet.plugins.module_utils.botops_kill_switch_checks import (
    LEVELS, HostlessBot, Observation, check_all, open_positions, poll, rank, tried)
from ansible_collections.botops.fleet.plugins.module_utils.botops_kill_switch_record import (
    AUDIT_LOG, UNSEEN, Engagements, append_audit, default_who, describe_engagement, operator_level, read_audits,
    unreleased, utcnow)
from ansible_collections.botops.fleet.plugins.module_utils.botops_values import describe_action, uses_http

DEFAULT_RUNG_TIMEOUT = 5.0
START_TIMEOUT = 60.0


def kill_switch_options():
    """The options bot_kill_switch and bot_fleet_kill_switch share (each adds its own audit_log)."""
    return dict(
        state=dict(type="str", choices=["engaged", "released"], default="engaged"),
        level=dict(type="str", choices=list(LEVELS), default="halt"),
        reason=dict(type="str"),
        force=dict(type="bool", default=False),
        escalate=dict(type="bool", default=True),
        who=dict(type="str"),
    )


# engaging needs a reason: it goes to the audit log and the notification
REQUIRED_IF = [("state", "engaged", ("reason",))]


def reapply(bot, profile, audit_log=None, source="re-apply"):
    """Put the operator's recorded level back on a bot that was just started (a restart clears a
    level some bots keep in memory), verified by its `engaged` checks; returns the record (None when
    nothing is recorded). Raises KillSwitchError when the level cannot be engaged again: the ladder
    escalates as the operator's own engage would, down to stopping the bot."""
    record = operator_level(bot)
    if record is None:
        return None
    switch = KillSwitch(bot, profile, record["level"],
                        reason=f"{record.get('reason') or 'kill switch'} (re-applied after a start)",
                        who=record.get("who"), audit_logs=[audit_log or os.path.join(bot.root, AUDIT_LOG)],
                        source=source, record=False)
    result = switch.engage()
    return dict(record, reapplied=bool(result.get("changed")), engaged_by=result.get("engaged_by"))


class KillSwitchError(Exception):
    """The kill switch could not be engaged or released; `result` holds what was done."""

    def __init__(self, msg, result):
        super().__init__(msg)
        self.result = result


class KillSwitch:
    """One kill-switch operation on one bot.

    `audit_logs`: the logs whose records say which level is engaged (read) and which receive the
    new record (append). `source`: the module name written in the record. `holder`: "operator",
    or "operation" for an operation's own pause under `run_id`; the engagement is recorded in the
    bot's `Engagements` (unless `record` is false: a re-apply keeps the operator's record as it is)."""

    def __init__(self, bot, profile, level, reason=None, who=None, escalate=True, force=False,
                 check_mode=False, audit_logs=(), source="bot_kill_switch", audit_index=None,
                 holder="operator", run_id=None, record=True):
        self.bot = bot
        self.holder = holder
        self.run_id = run_id
        root = getattr(bot, "root", None)
        self.engagements = Engagements(root) if record and root and not isinstance(bot, HostlessBot) else None
        self.profile = profile
        self.level = level
        self.reason = reason
        self.who = who or default_who()
        self.escalate = escalate
        self.force = force
        self.check_mode = check_mode
        self.audit_logs = [p for p in audit_logs if p]
        self.source = source
        self.audit_index = audit_index
        self.levels = profile["kill_switch"]["levels"]
        self.started = time.monotonic()
        self.result = dict(changed=False, bot=bot.name, level=level, previous_level=None, current_level=None,
                           engaged_by=None, released_by=None, steps=[], actions=[], audit=None)
        message = f"{reason} (botops kill switch {level}, by {self.who})" if reason else None
        self.variables = {"reason": reason or "", "message": message or "", "level": level, "who": self.who}

    # ------------------------------------------------------------------ helpers
    def _fail(self, msg):
        raise KillSwitchError(msg, self.result)

    def _observe(self, held=UNSEEN):
        """What the bot shows, with the level the records say was engaged (`held`: the operator's record
        to go by, when it was read before this call wrote its own)."""
        record = unreleased(read_audits(self.audit_logs, self.bot.name, self.audit_index)) if self.audit_logs else None
        if held is UNSEEN:
            held = self.engagements.operator() if self.engagements is not None else None
        if held is not None and (record is None or rank(held["level"]) > rank(record.get("level"))):
            # the operator's record outranks an audit log that lost the engagement (rotated, another host's)
            record = dict({k: held.get(k) for k in ("level", "time", "who", "reason")}, rung=None)
        return Observation(self.bot, self.profile, record)

    def _look(self, identity=False, held=UNSEEN):
        """The observation and, with `identity`, who the bot at the inventory's address says it is,
        read at one moment: an identity probe on an endpoint the level's checks read costs no request."""
        with self.bot.memoized():
            obs = self._observe(held)
            who = self.bot.identity() if identity and self.profile.get("identity") else None
        return obs, who

    @staticmethod
    def _through_api(rungs):
        """Do these rungs act through the bot's HTTP API (where another bot may answer)?"""
        return any(uses_http(action) for rung in rungs for action in rung.get("do") or [])

    def _diff(self, before, after):
        self.result["diff"] = {"before": f"kill_switch: {before or 'none'}\n", "after": f"kill_switch: {after or 'none'}\n"}

    def _audit(self, action, outcome, rung=None, error=None, remaining=None):
        record = {
            "time": utcnow(),
            "bot": self.bot.name,
            "family": self.profile.get("family"),
            "action": action,
            "level": self.level,
            "reason": self.reason,
            "who": self.who,
            "rung": rung,
            "outcome": outcome,
            "previous_level": self.result["previous_level"],
            "seconds": round(time.monotonic() - self.started, 3),
            "via": self.source,
            "from_host": socket.gethostname(),
        }
        if action == "release":
            record["force"] = self.force
            record["remaining_level"] = remaining
        if error:
            record["error"] = error
        written = []
        for path in self.audit_logs:
            try:
                append_audit(path, record)
                written.append(path)
                if self.audit_index is not None:
                    self.audit_index.add(path, record)
            except OSError as exc:
                self.result.setdefault("audit_errors", []).append(f"could not write the audit log {path}: {exc}")
        self.result["audit"] = record
        self.result["audit_logs"] = written
        return record

    def _run_rung(self, rung, released=None):
        start = time.monotonic()
        step = {"name": rung["name"], "actions": [], "errors": [], "verified": False}
        for action in rung["do"]:
            try:
                done = self.bot.do(action, self.variables)
            except BotError as exc:
                step["errors"].append(f"{describe_action(action)}: {exc}")
            else:
                step["actions"].append(done)
                self.result["actions"].append(done)
        # An action that failed (bot not answering...) gets one look, not the whole timeout:
        # a bot that does not answer must not hold up the next rung.
        timeout = 0 if step["errors"] else float(rung.get("timeout", DEFAULT_RUNG_TIMEOUT))
        ok, observed = poll(self.bot, rung["verify"], timeout, released)
        step["verified"] = ok
        if not ok:
            step["observed"] = observed
        step["seconds"] = round(time.monotonic() - start, 3)
        self.result["steps"].append(step)
        return step

    def _finish(self):
        self.result["seconds"] = round(time.monotonic() - self.started, 3)
        return self.result

    def _record(self):
        if self.engagements is None or self.check_mode:
            return
        entry = {"reason": self.reason, "who": self.who, "time": utcnow(), "run_id": self.run_id, "via": self.source}
        held = self.engagements.engage(self.holder, self.level, entry, self.run_id)
        if held is not None:
            self.result["engagement"] = held

    def _verify_flat(self, what, rung=None, impostor=None):
        """Flatten means flat: a flatten that stopped trading with positions still open (or unread)
        is a halt, and fails saying so. With `impostor` (another bot answers at this bot's address)
        the positions are read from the bot's own database only."""
        count, source = open_positions(self.bot, self.profile, api=impostor is None)
        self.result["open_positions"] = count
        if count == 0:
            return
        by = f" by rung '{rung}'" if rung else ""
        if count is None:
            msg = (f"Failed to {what}: trading is stopped{by} but the open positions cannot be read ({source}): "
                   "flatten is not verified")
        else:
            msg = (f"Failed to {what}: halted, {count} position(s) open (read from {source}){by}: this bot cannot "
                   "close them itself; close them by hand or release and let it close them")
        if impostor is not None:
            msg = f"{impostor['message']}: {msg}"
        self.result["current_level"] = "halt"
        self._audit("engage", "failed", rung=rung, error=msg)
        self._fail(msg)

    # ------------------------------------------------------------------ engage
    def ladder(self):
        rungs = list(self.levels[self.level].get("engage") or [])
        if self.escalate:
            rungs += list(self.profile["kill_switch"].get("escalation") or [])
        return rungs

    def engage(self):
        r = self.result
        r["state"] = "engaged"
        what = f"engage kill switch level '{self.level}' on bot '{self.bot.name}'"
        if not self.reason:
            self._fail(f"Failed to {what}: a reason is required to engage")
        own = list(self.levels[self.level].get("engage") or [])
        held = UNSEEN
        if self.holder == "operator":
            # recorded before anything else: an operation about to start this bot sees it from now on,
            # and it stays recorded if no rung verifies (the operator still wants it engaged). Before
            # the look too: a release running meanwhile may show the bot still halted to the look
            # below and start it just after; it finds this record at its end, and puts the level back.
            # The look goes by the record as it was before this one (which level the bot holds).
            held = self.engagements.operator() if self.engagements is not None else None
            self._record()
        # what the bot shows and what was engaged before this call; who answers at its address
        # when the level's own rungs would act through it
        obs, identity = self._look(identity=self._through_api(own), held=held)
        # another bot answers at this bot's address: what its API shows is that bot's, and the
        # level's own rungs would engage that bot; a stopped process is this bot's own
        impostor = identity if identity is not None and identity["ok"] is False and obs.process != "absent" else None
        if impostor is not None:
            r["identity"] = impostor
        previous = obs.current() if impostor is None else None
        r["previous_level"] = previous
        if impostor is None and obs.satisfies(self.level):
            if self.level == "flatten" and not self.check_mode:
                self._verify_flat(what)
            r["current_level"] = previous if rank(previous) >= rank(self.level) else self.level
            r["engaged_record"] = (None if obs.record is None else
                                   {k: obs.record.get(k) for k in ("level", "time", "who", "reason", "rung")})
            r["msg"] = f"kill switch already engaged at '{r['current_level']}' on bot '{self.bot.name}'"
            return self._finish()
        rungs = self.ladder()
        if impostor is not None:
            # only the rungs that reach this bot itself: its service manager, its processes
            rungs = [rung for rung in rungs if rung not in own]
        r["ladder"] = [rung["name"] for rung in rungs]
        if not rungs and impostor is not None:
            msg = (f"{impostor['message']}: the level's own rungs would engage that bot, and escalate=false: "
                   f"nothing was done on bot '{self.bot.name}'")
            if not self.check_mode:
                self._audit("engage", "failed", error=msg)
            self._fail(msg)
        if not rungs:
            self._fail(f"Failed to {what}: profile '{self.profile.get('family')}' gives this level no rungs of its "
                       "own; it needs escalate=true")
        r["changed"] = True
        self._diff(previous, self.level)
        if self.holder == "operation":
            self._record()  # this run's own pause: released by this run (or the run taking it over)
        if self.check_mode:
            # the first rung that can engage the level (a SIGCONT that only prepares the next is not it)
            first = next((rung for rung in rungs if rung.get("ends_walk", True)), rungs[0])
            r["rung"] = first["name"]
            r["current_level"] = previous
            r["msg"] = f"would engage '{self.level}' starting with rung '{first['name']}'"
            if impostor is not None:
                self._fail(f"{impostor['message']}: {r.pop('msg')}, not through that bot's API")
            return self._finish()
        for rung in rungs:
            step = self._run_rung(rung)
            if step["verified"] and rung.get("ends_walk", True):
                if impostor is None and identity is None and rung not in own:
                    impostor = self._escalated_past_another_bot(own)
                if self.level == "flatten":
                    self._verify_flat(what, rung["name"], impostor)
                r["engaged_by"] = rung["name"]
                r["current_level"] = self.level
                self._audit("engage", "engaged", rung=rung["name"])
                r["msg"] = f"kill switch '{self.level}' engaged on bot '{self.bot.name}' by rung '{rung['name']}'"
                if impostor is not None:
                    # engaged, on this bot; but its inventory entry sends every API request to
                    # another bot, so the next operation would be refused: fail it, the cause first
                    r.pop("msg", None)
                    self._fail(f"{impostor['message']}: kill switch '{self.level}' engaged on bot '{self.bot.name}' "
                               f"only by the escalation rung '{rung['name']}', not through that bot's API")
                return self._finish()
        msg = f"Failed to {what}: no rung verified: {tried(r['steps'])}"
        if impostor is not None:
            msg = f"{impostor['message']}: the level's own rungs were not tried (they would engage that bot); {msg}"
        if self.holder == "operator" and self.engagements is not None and not self.check_mode:
            msg += (" (the engagement stays recorded: no botops operation starts or resumes this bot until "
                    "it is released)")
        r["current_level"] = self._observe().current()
        self._audit("engage", "failed", error=msg)
        self._fail(msg)

    def _escalated_past_another_bot(self, own):
        """After an escalation rung engaged the level: was it because another bot answers at this bot's
        address (the own rungs acted on this bot - a Redis flag - but verified through that bot's
        API)? The identity when so, else None. Asked only when the own rungs ran and the bot's API
        did not time out: one request, after the bot is already stopped."""
        if not own or not self.profile.get("identity") or getattr(self.bot, "unresponsive", False):
            return None
        names = {rung["name"] for rung in own}
        if not any(step["name"] in names for step in self.result["steps"]):
            return None
        identity = self.bot.identity()
        if identity["ok"] is False:
            self.result["identity"] = identity
            return identity
        return None

    # ------------------------------------------------------------------ release
    def release(self):
        r = self.result
        r["state"] = "released"
        what = f"release kill switch level '{self.level}' on bot '{self.bot.name}'"
        if self.holder == "operation" and self.engagements is not None:
            held = self.engagements.operator()
            if held is not None:
                # the operator's level stands: forget this run's pause, touch nothing on the bot
                if not self.check_mode:
                    r["changed"] = self.engagements.release("operation", self.level, self.run_id)
                r["yielded_to"] = held
                r["previous_level"] = r["current_level"] = held.get("level")
                r["msg"] = (f"kill switch '{self.level}' of this run left to the operator's level on bot "
                            f"'{self.bot.name}': {describe_engagement(held)}")
                return self._finish()
        # the operator's record as this release finds it: one engaged while the release runs (a halt
        # at 3 a.m. during a release) is not this release's to remove, and is put back at its end.
        # The look below goes by the same record.
        seen = self.engagements.operator() if self.engagements is not None else UNSEEN
        # who answers at the bot's address: a release there through another bot's API would release
        # that bot's level (a service start would start this bot, then reset that bot's)
        obs, identity = self._look(identity=True, held=seen)
        previous = obs.current()
        r["previous_level"] = previous
        if identity is not None and identity["ok"] is False:
            r["identity"] = identity
            r["refused"] = True
            r["current_level"] = previous if obs.process == "absent" else None
            msg = (f"{identity['message']}: refused to {what} through that bot's API; nothing was released "
                   "(the level stays engaged on this bot)")
            if not self.check_mode:
                self._audit("release", "refused", error=msg, remaining=r["current_level"])
            self._fail(msg)
        stronger = obs.stronger_than(self.level)
        if stronger and not self.force:
            rec = obs.record if obs.record is not None and obs.record.get("level") == stronger else None
            if rec is not None:
                by = f"engaged by {rec.get('who') or 'unknown'} at {rec.get('time')}"
                if rec.get("reason"):
                    by += f", reason '{rec['reason']}'"
                if rec.get("rung"):
                    by += f", rung '{rec['rung']}'"
            else:
                by = "seen by its engaged checks, no audit record of who engaged it"
            msg = (f"Refused to {what}: level '{stronger}' is engaged ({by}); release '{stronger}' instead, "
                   "or set force=true to release it too")
            r["current_level"] = previous
            r["refused"] = True
            if not self.check_mode:
                self._audit("release", "refused", error=msg, remaining=previous)
            self._fail(msg)
        if self.force:
            targets = [h for h in reversed(LEVELS[rank(self.level):]) if obs.holds[h]]
        else:
            targets = [self.level] if obs.holds[self.level] else []
        if not targets:
            r["current_level"] = previous
            r["msg"] = f"kill switch level '{self.level}' is not engaged on bot '{self.bot.name}'"
            if self.engagements is not None and not self.check_mode:
                # a record the bot no longer shows (restarted outside botops) goes with the release
                r["changed"] = self.engagements.release(self.holder, self.level, self.run_id, self.force, seen=seen)
            return self._finish()
        r["changed"] = True
        r["released_levels"] = targets
        if self.check_mode:
            first = targets[0]
            if obs.process == "absent" and not self.levels[first].get("stops_process"):
                r["rung"] = "service start"
            else:
                rungs = self.levels[first].get("release") or []
                r["rung"] = rungs[0]["name"] if rungs else None
            r["current_level"] = previous
            released_keys = {obs.keys[t] for t in targets}
            left = [lv for lv in LEVELS if obs.holds[lv] and obs.keys[lv] not in released_keys]
            self._diff(previous, left[-1] if left else None)
            r["msg"] = f"would release {', '.join(targets)} starting with rung '{r['rung']}'"
            return self._finish()
        for index, target in enumerate(targets):
            if index:
                obs = self._observe()
                if not obs.holds[target]:
                    continue  # the stronger level's release released this one too
            r["released_by"] = self._release_level(target, obs, what)
        if self.engagements is not None:
            self.engagements.release(self.holder, self.level, self.run_id, self.force, seen=seen)
            held = self.engagements.operator()
            if held is not None and (rank(held["level"]) > rank(self.level) or held != seen):
                # an operator's level engaged while this one was released - a stronger one, or the
                # same one engaged again -: a release rung that restarts the bot would have lifted
                # it, or the engage found the bot still halted mid-release and did nothing: put it back
                reapplied = reapply(self.bot, self.profile, self.audit_logs[0] if self.audit_logs else None,
                                    source=self.source)
                r["kept"] = reapplied
        after = self._observe()
        remaining = after.current()
        r["current_level"] = remaining
        self._diff(previous, remaining)
        self._audit("release", "released", rung=r["released_by"], remaining=remaining)
        r["msg"] = f"kill switch {', '.join(targets)} released on bot '{self.bot.name}' by rung '{r['released_by']}'"
        return self._finish()

    def _release_level(self, target, obs, what):
        conf = self.levels[target]
        engaged = conf["engaged"]
        start_at = len(self.result["steps"])
        if obs.process == "absent" and not conf.get("stops_process"):
            # Escalation stopped the process: start it, then see whether the level survived the restart.
            # A bot that keeps its level itself (Freqtrade's initial_state: stopped) comes back holding
            # it and not ready (no trading loop runs): its release rungs lift it. Either way it is up.
            health = self.profile["health"]
            step = self._run_rung({"name": "service start", "do": [{"service": "start"}],
                                   "verify": [health["liveness"]], "timeout": START_TIMEOUT})
            if not step["verified"]:
                self._fail_release(what, start_at)
            deadline = time.monotonic() + START_TIMEOUT - step["seconds"]
            while True:
                held, observed = check_all(self.bot, engaged)
                if held:
                    break
                ready, observed = check_all(self.bot, [health["readiness"]])
                if ready:
                    return "service start"
                if time.monotonic() >= deadline:
                    step.update(verified=False, observed=observed)
                    self._fail_release(what, start_at)
                time.sleep(POLL_INTERVAL)
        rungs = conf.get("release") or []
        if not rungs:
            self._fail_release(what, start_at, f"profile '{self.profile.get('family')}' has no release rungs for "
                                               f"level '{target}'")
        for rung in rungs:
            step = self._run_rung(rung, released=engaged)
            if step["verified"] and rung.get("ends_walk", True):
                return rung["name"]
        self._fail_release(what, start_at)

    def _fail_release(self, what, start_at, cause=None):
        msg = f"Failed to {what}: {cause or 'no rung verified: ' + tried(self.result['steps'][start_at:])}"
        self.result["current_level"] = self._observe().current()
        self._audit("release", "failed", error=msg, remaining=self.result["current_level"])
        self._fail(msg)

    def run(self, state):
        return self.engage() if state == "engaged" else self.release()
