# Copyright: botops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Operation locks: a JSON file with owner, run id, operation, start and expiry, created atomically.

Used by the bot_lock module (per-bot locks on the hosts) and by the controller front end (the
fleet lock), so both read and write the same format.
"""

from __future__ import annotations

import getpass
import json
import os
import socket
import time
from datetime import datetime, timezone


class LockError(Exception):
    """The lock could not be taken or given back; `lock` is what holds it."""

    def __init__(self, message, lock=None):
        super().__init__(message)
        self.lock = lock


def read_lock(path):
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {"unreadable": True}


def stale_reason(lock, now=None):
    """Why a lock is stale (expired, or its owner process on this host is gone), else None."""
    now = time.time() if now is None else now
    if lock.get("unreadable"):
        return "the lock file is unreadable"
    if lock.get("expires_at_epoch", 0) < now:
        return f"it expired at {lock.get('expires_at')}"
    if lock.get("host") == socket.gethostname() and lock.get("pid"):
        try:
            os.kill(int(lock["pid"]), 0)
        except ProcessLookupError:
            return f"its process {lock['pid']} on {lock['host']} is gone"
        except PermissionError:
            pass
    return None


def describe(lock):
    return (f"run {lock.get('run_id')} ({lock.get('operation')}) by {lock.get('user')}@{lock.get('host')} "
            f"pid {lock.get('pid')} since {lock.get('started_at')}")


def new_lock(run_id, operation, ttl, owner_pid=None, now=None):
    now = time.time() if now is None else now
    return dict(
        run_id=run_id,
        operation=operation,
        user=getpass.getuser(),
        host=socket.gethostname(),
        pid=owner_pid,
        started_at=datetime.fromtimestamp(now, timezone.utc).isoformat(timespec="seconds"),
        expires_at=datetime.fromtimestamp(now + ttl, timezone.utc).isoformat(timespec="seconds"),
        expires_at_epoch=now + ttl,
    )


def plan_acquire(path, run_id, takeover=False):
    """What acquiring would do: ('held', lock) when this run holds it already, ('take', previous or None).

    Raises LockError when another run holds it, or when it is stale and takeover is not asked."""
    current = read_lock(path)
    if current is None:
        return "take", None
    if current.get("run_id") == run_id:
        return "held", current
    reason = stale_reason(current)
    if reason is None:
        raise LockError(f"held by {describe(current)}, expires {current.get('expires_at')}. "
                        "Wait for that run to finish.", current)
    if not takeover:
        raise LockError(f"a stale lock is held by {describe(current)} ({reason}). Check that run is really "
                        "gone, then take it over (--takeover / takeover=true), or put the bots it left back "
                        "running with botops recover.", current)
    return "take", current


def write_lock(path, lock, replace):
    """Write the lock atomically; without replace, fail with FileExistsError if one appeared.

    Not botops_files.write_atomic: a rename would overwrite a lock another run took meanwhile, so a
    free lock is hard-linked into place, which fails when the name exists."""
    os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump(lock, f, indent=2)
    os.chmod(tmp, 0o600)
    try:
        if replace:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)
    except FileExistsError:
        raise LockError(f"taken a moment ago by {describe(read_lock(path) or {})}", read_lock(path)) from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def acquire(path, run_id, operation, ttl=3600, owner_pid=None, takeover=False):
    """Take the lock; returns (changed, lock, previous)."""
    action, previous = plan_acquire(path, run_id, takeover)
    if action == "held":
        return False, previous, previous
    lock = new_lock(run_id, operation, ttl, owner_pid)
    write_lock(path, lock, replace=previous is not None)
    return True, lock, previous


def release(path, run_id, force=False):
    """Give the lock back; returns True when a lock file was removed."""
    current = read_lock(path)
    if current is None:
        return False
    if current.get("run_id") != run_id and not force:
        raise LockError(f"it is held by {describe(current)}, not by run {run_id} (force releases it anyway)", current)
    os.unlink(path)
    return True
