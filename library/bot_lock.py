#!/usr/bin/python
# Copyright: botops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
module: bot_lock
short_description: Take or release a botops operation lock (one bot, or the whole fleet)
description:
  - A lock is a JSON file holding its owner (user, host, process), the run id, the operation,
    when it was taken and when it expires. It is created atomically, so two runs never hold it at once.
  - Run it on a bot's host with C(path) under the bot root for the per-bot lock, and on the
    controller (C(delegate_to: localhost), C(run_once)) for the fleet lock.
  - A lock whose expiry has passed, or whose owning process on this host is gone, is stale. A stale
    lock is reported with its owner and is only taken over when C(takeover=true).
version_added: "0.1.0"
options:
  path:
    description: The lock file.
    type: path
    required: true
  state:
    description: C(acquired) takes the lock, C(released) gives it back.
    type: str
    choices: [acquired, released]
    default: acquired
  run_id:
    description: Identifies the run holding the lock; taking a lock this run already holds changes nothing.
    type: str
    required: true
  operation:
    description: What the run is doing (deploy, rollback, maintenance...), shown to whoever finds the lock taken.
    type: str
    default: operation
  ttl:
    description: Seconds after which the lock counts as stale.
    type: int
    default: 3600
  owner_pid:
    description:
      - Process on the controller whose death makes the lock stale (the Invoke front end passes its own).
      - Without it, only the expiry makes a lock stale.
    type: int
  takeover:
    description: Take over a stale lock. A live lock is never taken over.
    type: bool
    default: false
  force:
    description: Release the lock even when another run holds it.
    type: bool
    default: false
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
author: botops contributors
"""

EXAMPLES = r"""
- name: Take the fleet lock
  bot_lock:
    path: "{{ botops_lock_dir }}/fleet.lock"
    run_id: "{{ botops_run_id }}"
    operation: deploy
  delegate_to: localhost
  run_once: true

- name: Give the bot's lock back
  bot_lock:
    path: "{{ bot_root }}/shared/data/botops.lock"
    run_id: "{{ botops_run_id }}"
    state: released
"""

RETURN = r"""
lock:
  description: The lock as it is after the call (null when released).
  returned: always
  type: dict
previous:
  description: The lock found before the call, with C(stale) and C(stale_reason).
  returned: when a lock file existed
  type: dict
"""

import getpass
import json
import os
import socket
import time
from datetime import datetime, timezone

from ansible.module_utils.basic import AnsibleModule


def read_lock(path):
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {"unreadable": True}


def stale_reason(lock, now):
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


def write_new(path, lock, replace):
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, mode=0o700, exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump(lock, f, indent=2)
    os.chmod(tmp, 0o600)
    try:
        if replace:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)  # atomic: fails if the lock exists
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type="path", required=True),
            state=dict(type="str", choices=["acquired", "released"], default="acquired"),
            run_id=dict(type="str", required=True),
            operation=dict(type="str", default="operation"),
            ttl=dict(type="int", default=3600),
            owner_pid=dict(type="int"),
            takeover=dict(type="bool", default=False),
            force=dict(type="bool", default=False),
        ),
        supports_check_mode=True,
    )
    p = module.params
    path = p["path"]
    result = dict(changed=False, lock=None)
    now = time.time()
    current = read_lock(path)
    if current is not None:
        reason = stale_reason(current, now)
        result["previous"] = dict(current, stale=reason is not None, stale_reason=reason)

    if p["state"] == "released":
        if current is None:
            module.exit_json(**result)
        if current.get("run_id") != p["run_id"] and not p["force"]:
            result["lock"] = current
            module.fail_json(msg=f"Failed to release lock {path}: it is held by {describe(current)}, not by run "
                                 f"{p['run_id']} (force=true releases it anyway)", **result)
        result["changed"] = True
        if not module.check_mode:
            os.unlink(path)
        module.exit_json(**result)

    if current is not None and current.get("run_id") == p["run_id"]:
        result["lock"] = current
        module.exit_json(**result)
    if current is not None:
        reason = result["previous"]["stale_reason"]
        if reason is None:
            result["lock"] = current
            module.fail_json(msg=f"Failed to take lock {path}: held by {describe(current)}, "
                                 f"expires {current.get('expires_at')}. Wait for that run to finish.", **result)
        if not p["takeover"]:
            result["lock"] = current
            module.fail_json(msg=f"Failed to take lock {path}: a stale lock is held by {describe(current)} "
                                 f"({reason}). Check that run is really gone, then take it over "
                                 f"(--takeover / takeover=true).", **result)

    started = datetime.fromtimestamp(now, timezone.utc)
    expires = datetime.fromtimestamp(now + p["ttl"], timezone.utc)
    lock = dict(
        run_id=p["run_id"],
        operation=p["operation"],
        user=getpass.getuser(),
        host=socket.gethostname(),
        pid=p["owner_pid"],
        started_at=started.isoformat(timespec="seconds"),
        expires_at=expires.isoformat(timespec="seconds"),
        expires_at_epoch=now + p["ttl"],
    )
    result["changed"] = True
    result["lock"] = lock
    if not module.check_mode:
        try:
            write_new(path, lock, replace=current is not None)
        except FileExistsError:
            winner = read_lock(path) or {}
            module.fail_json(msg=f"Failed to take lock {path}: taken a moment ago by {describe(winner)}", **result)
        except OSError as exc:
            module.fail_json(msg=f"Failed to take lock {path}: {exc}", **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
