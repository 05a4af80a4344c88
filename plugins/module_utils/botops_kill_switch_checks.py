# Copyright: botops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the kill switch sees of a bot: the levels, its checks, the level it shows, its open positions.

The levels, weakest first (`LEVELS`, `rank`). A level's `engaged` checks and a rung's `verify`
checks are made by `check_all` and polled by `poll`; `summarize` and `tried` put what they saw in
the words of a failure message. `Observation` is one look at which levels' checks hold (a stopped
process holds them all). `open_positions` reads what a flatten must leave at zero: the bot's API,
else its own database (`open_count`). `HostlessBot` is a bot seen from the controller without a
shell on its host. Stdlib only.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time

from ansible_collections.botops.fleet.plugins.module_utils.botops_bot import POLL_INTERVAL, Bot
from ansible_collections.botops.fleet.plugins.module_utils.botops_errors import BotError
from ansible_collections.botops.fleet.plugins.module_utils.botops_pg import Database, PgError
from ansible_collections.botops.fleet.plugins.module_utils.botops_values import describe_source

LEVELS = ("pause", "halt", "flatten")
PROCESS_ABSENT = "process absent"


def rank(level):
    return LEVELS.index(level) if level in LEVELS else -1


class HostlessBot(Bot):
    """A bot seen from the controller without a shell on its host: HTTP and Redis only.

    Rungs that need the host (service manager, signals, processes, the config file, a program run
    or a file read there) fail with a message saying so, and the ladder goes on to the next rung."""

    def _needs_host(self, what):
        raise BotError(f"{what} needs a shell on the bot's host, which this controller-side run does not have "
                       "(run bot_kill_switch on the host, or mark the bot local)")

    def pids(self):
        self._needs_host("a process check")

    def service(self, op):
        self._needs_host(f"service {op}")

    def service_state(self):
        self._needs_host("the service state")

    def send_signal(self, name):
        self._needs_host(f"SIG{name}")

    def command_result(self, command, variables=None, memoize=True):
        self._needs_host(f"running {command['argv'][0]}")

    def read_file(self, spec, content=True):
        self._needs_host(f"reading {spec['path']}")

    def do(self, action, variables=None):
        if "config_file" in action:
            self._needs_host("editing the bot's config file")
        return super().do(action, variables)


# ---------------------------------------------------------------------------------- checks
def check_all(bot, specs):
    """All checks hold? (ok, observations); a check that cannot be made does not hold."""
    observed = []
    for spec in specs:
        try:
            ok, seen = bot.check(spec)
        except BotError as exc:
            ok, seen = False, {"error": str(exc)}
        observed.append(seen)
        if not ok:
            return False, observed
    return True, observed


POLL_BACKOFF = 1.5
POLL_MAX_INTERVAL = 0.5


def poll(bot, specs, timeout, released=None):
    """Poll until `specs` hold (and, for a release, the `released` checks no longer all hold).

    The first looks come quickly (POLL_INTERVAL), later ones less and less often (at most every
    POLL_MAX_INTERVAL): a bot that takes seconds (a restart, a tick away) is not asked twenty
    times a second, which matters when a thousand bots are polled at once."""
    deadline = time.monotonic() + timeout
    interval = POLL_INTERVAL
    while True:
        ok, observed = check_all(bot, specs)
        if ok and released:
            still, seen = check_all(bot, released)
            if still:
                ok, observed = False, observed + [{"still_engaged": seen}]
        now = time.monotonic()
        if ok or now >= deadline:
            return ok, observed
        time.sleep(min(interval, max(0.0, deadline - now)))
        interval = min(interval * POLL_BACKOFF, POLL_MAX_INTERVAL)


def summarize(observed):
    """A short text of the last observation of a check list (for failure messages)."""
    text = json.dumps(observed, default=str, separators=(",", ":"))
    return text if len(text) <= 300 else text[:297] + "..."


def tried(steps):
    """The rungs tried, in words: what each did and what its `verify` checks saw (for failure messages)."""
    parts = []
    for step in steps:
        why = "; ".join(step["errors"])
        if step["verified"]:  # a rung that prepares the next (ends_walk: false)
            parts.append(f"'{step['name']}' ({why + '; ' if why else ''}verified after {step['seconds']}s, "
                         "the walk went on)")
            continue
        seen = summarize(step.get("observed"))
        parts.append(f"'{step['name']}' ({why + '; ' if why else ''}verify saw {seen} after {step['seconds']}s)")
    return ", ".join(parts)


def open_count(bot, profile, sql):
    """The number positions.open_count_sql finds in the bot's own database: PostgreSQL (the
    inventory's bot_database) or SQLite (the profile's database.path, relative to bot_root)."""
    pdb = profile.get("database") or {}
    if pdb.get("engine") == "sqlite":
        path = pdb["path"] if os.path.isabs(pdb["path"]) else os.path.join(bot.root, pdb["path"])
        if not os.path.isfile(path):
            raise BotError(f"database file {path} does not exist")
        # read-write, closed at once: a read-only connection leaves -wal / -shm files behind
        with contextlib.closing(sqlite3.connect(path, timeout=10)) as conn:
            return conn.execute(sql).fetchone()[0]
    database = Database(bot.bot.get("database") or {}, bot.secrets.get("database_password"), pdb)
    return database.scalar(sql)


def open_positions(bot, profile, api=True):
    """(open positions now, where they were read): the bot's API while it answers (unless not
    `api`: another bot answers there), else its own database (the profile's
    positions.open_count_sql); (None, why) when neither can say."""
    errors = []
    spec = (profile.get("facts") or {}).get("open_positions")
    if spec is not None and (api or "http" not in spec):
        try:
            count = int(bot.probe(spec))
            return count, ("its API" if "command" not in spec and "file" not in spec else describe_source(spec))
        except (BotError, TypeError, ValueError) as exc:
            errors.append(f"API: {exc}")
    sql = (profile.get("positions") or {}).get("open_count_sql")
    if sql:
        try:
            return int(open_count(bot, profile, sql)), "its database"
        except (PgError, BotError, OSError, sqlite3.Error, TypeError, ValueError) as exc:
            errors.append(f"database: {exc}")
    return None, "; ".join(errors) or "the profile has no open_positions fact and no positions.open_count_sql"


class Observation:
    """What the bot shows of its kill switch now: which levels' `engaged` checks hold.

    A stopped process counts as every level engaged (the escalation ladder ends there and a
    stopped bot does not trade). Levels whose checks are identical cannot be told apart by
    looking: the last unreleased audit record says which of them was engaged."""

    def __init__(self, bot, profile, record):
        self.record = record
        levels = profile["kill_switch"]["levels"]
        self.holds, self.keys, self.observed = {}, {}, {}
        cache = {}
        # one moment: checks that read the same endpoint (or the process list) read it once, so
        # that a process stopped half-way through the look does not make two levels disagree
        with bot.memoized():
            try:
                self.pids = bot.pids()
                self.process = "present" if self.pids else "absent"
            except BotError:
                self.pids, self.process = None, None
            for level in LEVELS:
                specs = levels[level]["engaged"]
                if self.process == "absent":
                    self.holds[level], self.keys[level], self.observed[level] = True, PROCESS_ABSENT, [{"pids": []}]
                    continue
                key = json.dumps(specs, sort_keys=True)
                if key not in cache:
                    cache[key] = check_all(bot, specs)
                self.holds[level], self.observed[level] = cache[key]
                self.keys[level] = key
        if record is not None and not self.holds.get(record.get("level")):
            self.record = None  # stale: what it engaged is no longer engaged

    def distinct(self, level):
        """Its checks differ from those of every weaker level: seeing them hold means this level."""
        return all(self.keys[level] != self.keys[weaker] for weaker in LEVELS[:rank(level)])

    def current(self):
        """The strongest level known to be engaged (the audit record choosing among look-alikes), or None."""
        holding = [level for level in LEVELS if self.holds[level]]
        if not holding:
            return None
        look_alikes = [level for level in holding if self.keys[level] == self.keys[holding[-1]]]
        if self.record is not None and self.record["level"] in look_alikes:
            return self.record["level"]
        return look_alikes[0]  # without a record, only the weakest of the look-alikes is certain

    def satisfies(self, level):
        """For an engage: this level or a stronger one is known to be engaged."""
        if self.record is not None and rank(self.record["level"]) >= rank(level):
            return True
        return any(self.holds[h] and self.distinct(h) for h in LEVELS[rank(level):])

    def stronger_than(self, level):
        """For a release: a stronger level is engaged that releasing this one would leave engaged."""
        if self.record is not None and rank(self.record["level"]) > rank(level):
            return self.record["level"]
        for h in reversed(LEVELS[rank(level) + 1:]):
            if self.holds[h] and self.keys[h] != self.keys[level]:
                return h
        return None
