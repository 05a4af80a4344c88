# Copyright: botops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Stop and start one bot through its service manager, verified on the process, and the
readiness gate.

Shared by bot_service (start / stop / restart) and bot_rollout (the change window of a deploy
or a rollback). Stdlib only.

- A graceful stop is the service manager's stop; a process still there `graceful_timeout`
  seconds later gets SIGTERM, then after `term_timeout` SIGKILL, and must then be gone.
- A start waits for the process, then (optionally) for the readiness gate: the profile's
  readiness check must hold without a break for `stable_for` seconds, so a release that
  answers ready and then falls over does not pass.
"""

from __future__ import annotations

import threading
import time

from ansible.module_utils.botops_bot import POLL_INTERVAL, BotError

KILL_WAIT = 5.0  # seconds for a SIGKILLed process to disappear
DEFAULT_STOP_TIMEOUT = 30.0


def stop_timeout(bot, given=None):
    """The graceful timeout: the one given, else the profile's service.stop_timeout, else 30 s."""
    if given is not None:
        return float(given)
    return float(bot.service_conf.get("stop_timeout") or DEFAULT_STOP_TIMEOUT)


def wait_pids(bot, present, deadline):
    """Poll the process table until a matching process is there (present) or gone; True on success."""
    while True:
        pids = bot.pids()
        if bool(pids) == present:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL_INTERVAL)


def graceful_stop(bot, graceful_timeout, term_timeout, actions, kill_wait=KILL_WAIT):
    """Service stop, then SIGTERM, then SIGKILL until the process is gone; appends what was done."""
    began = time.monotonic()
    try:
        bot.service("stop")
        actions.append("service stop")
    except BotError as exc:  # the signals below still stop it
        actions.append(f"service stop failed: {exc}")
    if wait_pids(bot, False, began + graceful_timeout):
        return
    pids = bot.send_signal("TERM")
    actions.append(f"SIGTERM {pids}")
    if wait_pids(bot, False, time.monotonic() + term_timeout):
        return
    pids = bot.send_signal("KILL")
    actions.append(f"SIGKILL {pids}")
    if wait_pids(bot, False, time.monotonic() + kill_wait):
        return
    raise BotError(f"process still there after SIGKILL: pids {bot.pids()}")


def wait_ready(bot, profile, deadline, stable_for):
    """Poll readiness until it holds without a break for stable_for seconds.

    Returns (ok, last observation, ready_at): ready_at is the monotonic time the unbroken
    stretch of readiness began (when the bot could trade again). A stretch that began before
    the deadline may finish after it."""
    specs = [profile["health"]["readiness"]]
    since = None
    while True:
        ok, observed = bot.check_all(specs)
        now = time.monotonic()
        if ok:
            if since is None:
                since = now
            if now - since >= stable_for:
                return True, observed, since
        else:
            since = None
            if now >= deadline:
                return False, observed, None
        time.sleep(POLL_INTERVAL)


def start(bot, profile, actions, ready_timeout, wait_for_ready=True, stable_for=1.0, began=None):
    """Service start, wait for the process and (wait_for_ready) for the readiness gate.

    Returns {"ready": bool or None, "ready_at": monotonic time or None}; raises BotError naming
    what did not happen within ready_timeout of `began` (default: now)."""
    began = time.monotonic() if began is None else began
    deadline = began + ready_timeout
    bot.service("start")
    actions.append("service start")
    if not wait_pids(bot, True, deadline):
        raise BotError(f"no process matching {bot.process_match!r} within {ready_timeout:g}s of the start")
    if not wait_for_ready:
        return {"ready": None, "ready_at": None}
    ok, observed, ready_at = wait_ready(bot, profile, deadline, stable_for)
    if not ok:
        raise NotReady(f"not ready within {ready_timeout:g}s of the start: last answer {observed}", observed)
    actions.append("ready")
    return {"ready": True, "ready_at": ready_at}


class NotReady(BotError):
    """The readiness gate did not pass; `observed` is the last answer."""

    def __init__(self, msg, observed):
        super().__init__(msg)
        self.observed = observed


class Starting:
    """The service manager's start, running in a thread while the caller polls readiness: some
    managers return only after the program has run for a while (supervisor's startsecs), and the
    bot may be ready before that. `check()` raises as soon as the start failed - unless the
    manager is still bringing the program up (a process that crashed during its start is
    restarted: the readiness gate decides); `wait()` joins."""

    STILL_STARTING = ("RUNNING", "STARTING", "BACKOFF", "ACTIVE", "ACTIVATING")

    def __init__(self, bot):
        self.bot = bot
        self.error = None
        self.tolerated = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        try:
            self.bot.service("start")
        except Exception as exc:  # reported by check() / wait() in the caller's thread
            self.error = exc

    def check(self):
        if self.error is None:
            return
        try:
            state = self.bot.service_state()
        except (BotError, OSError):
            state = "UNKNOWN"
        if str(state).upper() in self.STILL_STARTING:
            self.tolerated = f"{self.error} (the service manager still brings it up: {state})"
            self.error = None
            return
        raise BotError(f"service start failed: {self.error} (service state {state})")

    def wait(self, timeout):
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise BotError(f"the service manager's start did not return within {timeout:g}s")
        self.check()


def start_until_ready(bot, profile, deadline):
    """Start the bot and poll its readiness meanwhile; returns (Starting, monotonic time it was
    first ready). Raises BotError when the start fails or readiness does not come by the deadline."""
    starting = Starting(bot)
    specs = [profile["health"]["readiness"]]
    while True:
        starting.check()
        ok, observed = bot.check_all(specs)
        now = time.monotonic()
        if ok:
            return starting, now
        if now >= deadline:
            raise NotReady(f"not ready by the deadline after the start: last answer {observed}", observed)
        time.sleep(POLL_INTERVAL)
