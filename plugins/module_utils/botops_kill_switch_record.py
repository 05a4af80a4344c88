# Copyright: botops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The kill switch's record: what is engaged on a bot (`Engagements`) and what was done (the audit log).

The kill switch always wins. What is engaged lives in a record on the bot's host (`Engagements`,
`shared/data/botops-kill-switch.json`), written before an engage walks its ladder and removed only
by a release: a level kept in the bot's memory is lost by a restart, the record is not. An
engagement is the operator's, or an operation's own pause for its window (held under its run id).
Every module that starts a bot asks `operator_level()` first and yields (`KillSwitchEngaged`)
rather than start a bot an operator stopped, and calls `reapply()` (botops_kill_switch) once a bot
it started answers, so a level engaged meanwhile is put back before trading resumes. Releasing an
operation's pause never releases the bot while an operator's level is recorded.

Every engagement and release is appended to an audit log (JSON lines, `append_audit`); `read_audits`
reads one bot's records back from several logs (a whole fleet run's through one `AuditIndex`), and
`unreleased` says which engagement they leave in force.
Stdlib only.
"""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import json
import os
import threading
from datetime import datetime, timezone

from ansible_collections.botops.fleet.plugins.module_utils.botops_errors import BotError
from ansible_collections.botops.fleet.plugins.module_utils.botops_files import write_json
from ansible_collections.botops.fleet.plugins.module_utils.botops_kill_switch_checks import LEVELS, HostlessBot, rank

AUDIT_LOG = "shared/data/botops-kill-switch.log"
ENGAGEMENTS = "shared/data/botops-kill-switch.json"
HOLDERS = ("operator", "operation")
AUDIT_TAIL_BYTES = 1 << 20

_audit_lock = threading.Lock()


def utcnow():
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def default_who():
    """The operator: BOTOPS_OPERATOR, else the sudo caller, else the user running this code."""
    for var in ("BOTOPS_OPERATOR", "SUDO_USER"):
        if os.environ.get(var):
            return os.environ[var]
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid {os.getuid()}"


# ---------------------------------------------------------------------------------- engagements
UNSEEN = object()  # Engagements.release: no record was read before the release began


class Engagements:
    """The record of what is engaged on one bot, on its host: the authority, not the bot's memory.

    One JSON file: {"operator": {level, reason, who, time, run_id, via} or absent,
    "operations": {run_id: {level, reason, who, time, via}}}. Read-modify-write under an flock of
    its own, replaced atomically (mode 0600), so concurrent engages and releases of one bot never
    lose each other's entries."""

    def __init__(self, root, path=None):
        self.path = path or os.path.join(root, ENGAGEMENTS)

    def read(self):
        try:
            with open(self.path, "rb") as f:
                doc = json.loads(f.read() or b"{}")
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            # a record that cannot be read must not pass for "nothing engaged"
            raise BotError(f"cannot read the kill switch record {self.path}: {exc}") from None
        return doc if isinstance(doc, dict) else {}

    def operator(self):
        """The operator's engagement, or None."""
        record = self.read().get("operator")
        return record if isinstance(record, dict) and record.get("level") in LEVELS else None

    @contextlib.contextmanager
    def _locked(self):
        directory = os.path.dirname(self.path)
        os.makedirs(directory, mode=0o700, exist_ok=True)
        fd = os.open(self.path + ".lock", os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            doc = self.read()
            before = json.dumps(doc, sort_keys=True)
            yield doc
            if json.dumps(doc, sort_keys=True) != before and not doc:
                os.unlink(self.path)  # nothing engaged: no record
            elif json.dumps(doc, sort_keys=True) != before:
                write_json(self.path, doc, indent=1)
        finally:
            os.close(fd)

    def engage(self, holder, level, entry, run_id=None):
        """Record `level` for `holder`; an operator's stronger level already recorded is kept, one of
        the same level is replaced (the newest engage is the one in force: a release that began before
        it sees its record changed, and leaves it). Returns the operator's record after the change
        (None for an operation's pause)."""
        with self._locked() as doc:
            entry = dict(entry, level=level)
            if holder == "operator":
                current = doc.get("operator")
                if not isinstance(current, dict) or rank(current.get("level")) <= rank(level):
                    doc["operator"] = entry
                return doc["operator"]
            doc.setdefault("operations", {})[run_id or "unknown"] = entry
            return None

    def release(self, holder, level, run_id=None, force=False, seen=UNSEEN):
        """Remove `holder`'s engagement of `level` (or, with force, of any level from `level` up);
        returns True when the record changed. `seen`: the operator's record as the release found it
        before it began (None: there was none); a record that is not that one was engaged while the
        release ran, and stays: the kill switch an operator engages last wins."""
        with self._locked() as doc:
            if holder == "operator":
                current = doc.get("operator")
                if seen is not UNSEEN and current != seen:
                    return False
                if isinstance(current, dict) and (rank(current.get("level")) == rank(level) or
                                                  (force and rank(current.get("level")) >= rank(level))):
                    del doc["operator"]
                    return True
                return False
            operations = doc.get("operations") or {}
            if operations.pop(run_id or "unknown", None) is None:
                return False
            if not operations:
                doc.pop("operations", None)
            return True


def describe_engagement(record):
    """'halt engaged by alice at <time> (reason)': the words a yielding operation reports."""
    text = f"{record.get('level')} engaged by {record.get('who') or 'unknown'} at {record.get('time') or 'unknown time'}"
    return text + (f" ({record['reason']})" if record.get("reason") else "")


class KillSwitchEngaged(BotError):
    """An operator's kill switch level is engaged on the bot: the operation yields (changes nothing
    more on it) and reports why. `record` is the operator's engagement."""

    def __init__(self, record, what="", left=None):
        self.record = record
        self.left = left
        msg = f"stopped: kill switch {describe_engagement(record)}"
        if what:
            msg += f"; {what} was not done"
        if left:
            msg += f" ({left})"
        super().__init__(msg)


def operator_level(bot):
    """The operator's engagement recorded for this bot, or None (no host filesystem: None)."""
    root = getattr(bot, "root", None)
    if not root or isinstance(bot, HostlessBot):
        return None
    return Engagements(root).operator()


def yield_to_operator(bot, what, override=False, left=None):
    """Raise KillSwitchEngaged before `what` (a step that would let the bot trade again) when an
    operator's level is recorded and the operator did not pass override for this run."""
    record = operator_level(bot)
    if record is not None and not override:
        raise KillSwitchEngaged(record, what, left)
    return record


# ---------------------------------------------------------------------------------- audit log
def read_audit(path, bot_name):
    """This bot's records in one audit log (its last MiB), oldest first; [] when there is none."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - AUDIT_TAIL_BYTES))
            data = f.read()
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise BotError(f"cannot read the audit log {path}: {exc.strerror}") from None
    lines = data.split(b"\n")
    if size > AUDIT_TAIL_BYTES:
        lines = lines[1:]  # the first line was cut
    records = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("bot") == bot_name:
            records.append(record)
    return records


class AuditIndex:
    """Shared audit logs read once for a whole fleet run: records by bot, kept up to date with what
    the run appends. Without it each bot would parse the same log's tail again."""

    def __init__(self, paths, tail_bytes=64 * AUDIT_TAIL_BYTES):
        self.paths = set(paths)
        self.tail_bytes = tail_bytes
        self._lock = threading.Lock()
        self._records = {}

    def covers(self, path):
        return path in self.paths

    def _load(self, path):
        by_bot = {}
        try:
            with open(path, "rb") as f:
                f.seek(0, os.SEEK_END)
                size = f.tell()
                f.seek(max(0, size - self.tail_bytes))
                data = f.read()
        except FileNotFoundError:
            return by_bot
        except OSError as exc:
            raise BotError(f"cannot read the audit log {path}: {exc.strerror}") from None
        lines = data.split(b"\n")
        if size > self.tail_bytes:
            lines = lines[1:]
        for line in lines:
            if not line:
                continue
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and isinstance(record.get("bot"), str):
                by_bot.setdefault(record["bot"], []).append(record)
        return by_bot

    def records(self, path, bot_name):
        with self._lock:
            if path not in self._records:
                self._records[path] = self._load(path)
            return list(self._records[path].get(bot_name, ()))

    def add(self, path, record):
        with self._lock:
            if path in self._records:
                self._records[path].setdefault(record["bot"], []).append(record)


def read_audits(paths, bot_name, index=None):
    """Records of several logs merged by time, each once (the fleet form writes one record to two logs)."""
    seen, merged = set(), []
    for path in paths:
        found = index.records(path, bot_name) if index is not None and index.covers(path) else read_audit(path, bot_name)
        for record in found:
            key = (record.get("time"), record.get("action"), record.get("level"), record.get("outcome"))
            if key not in seen:
                seen.add(key)
                merged.append(record)
    merged.sort(key=lambda r: str(r.get("time")))
    return merged


def unreleased(records):
    """The engagement the audit records say is still in force, or None."""
    current = None
    for record in records:
        outcome = record.get("outcome")
        if outcome == "engaged" and record.get("level") in LEVELS:
            current = record
        elif outcome == "released":
            remaining = record.get("remaining_level")
            if remaining not in LEVELS:
                current = None
            elif current is None or current.get("level") != remaining:
                current = {"level": remaining, "time": record.get("time"), "who": None, "reason": None, "rung": None}
    return current


def append_audit(path, record):
    """Append one JSON line to the audit log, creating it 0600 (and keeping it 0600)."""
    line = (json.dumps(record, sort_keys=True, separators=(",", ":"), default=str) + "\n").encode()
    with _audit_lock:
        directory = os.path.dirname(path)
        if directory:
            os.makedirs(directory, mode=0o700, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            if os.fstat(fd).st_mode & 0o7777 != 0o600:
                os.fchmod(fd, 0o600)
            os.write(fd, line)
        finally:
            os.close(fd)
