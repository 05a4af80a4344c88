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
    controller (delegated to localhost, run once) for the fleet lock.
  - A lock whose expiry has passed, or whose owning process on this host is gone, is stale. A stale
    lock is reported with its owner and is only taken over when C(takeover=true).
  - With C(kill_switch_record), the kill switch always wins in the same call. A bot whose operator
    engaged a kill switch level is not locked, and the result says which level, who, when and why
    (C(yielded)), unless C(override_kill_switch=true).
version_added: "0.1.0"
extends_documentation_fragment: [ansible.builtin.action_common_attributes]
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
  kill_switch_record:
    description:
      - The bot's kill switch record (C(<bot_root>/shared/data/botops-kill-switch.json)), read first. When it holds
        an operator's level, no lock is taken and the result is C(yielded=true), unchanged, not failed.
      - A record that cannot be read fails the module and takes no lock.
    type: path
  override_kill_switch:
    description: Take the lock even when the operator's level is recorded (--override-kill-switch); C(kill_switch) still reports it.
    type: bool
    default: false
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
  platform:
    platforms: posix
author: botops contributors (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Take the fleet lock
  botops.fleet.bot_lock:
    path: "{{ botops_lock_dir }}/fleet.lock"
    run_id: "{{ botops_run_id }}"
    operation: deploy
  delegate_to: localhost
  run_once: true

- name: Give the bot's lock back
  botops.fleet.bot_lock:
    path: "{{ bot_root }}/shared/data/botops.lock"
    run_id: "{{ botops_run_id }}"
    state: released

- name: Take the bot's lock, unless an operator engaged the kill switch
  botops.fleet.bot_lock:
    path: "{{ bot_root }}/shared/data/botops.lock"
    run_id: "{{ botops_run_id }}"
    operation: deploy
    kill_switch_record: "{{ bot_root }}/shared/data/botops-kill-switch.json"
  register: lock
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
kill_switch:
  description: The operator's kill switch engagement recorded for the bot (C(level), C(who), C(time), C(reason)), or null.
  returned: when kill_switch_record is given
  type: dict
yielded:
  description: True when the lock was not taken because an operator engaged a kill switch level.
  returned: when kill_switch_record is given
  type: bool
msg:
  description: Why the lock was not taken, in the words an operation reports a skipped bot with.
  returned: when yielded
  type: str
  sample: "skipped: kill switch halt engaged by alice at 2026-12-07T03:00:00Z (exchange outage)"
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.botops.fleet.plugins.module_utils.botops_errors import BotError
from ansible_collections.botops.fleet.plugins.module_utils.botops_kill_switch_record import Engagements, describe_engagement
from ansible_collections.botops.fleet.plugins.module_utils.botops_lock import (
    LockError, describe, new_lock, plan_acquire, read_lock, release, stale_reason, write_lock)
from ansible_collections.botops.fleet.plugins.module_utils.botops_priority import yield_cpu


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
            kill_switch_record=dict(type="path"),
            override_kill_switch=dict(type="bool", default=False),
        ),
        supports_check_mode=True,
    )
    yield_cpu(module)
    p = module.params
    path = p["path"]
    result = dict(changed=False, lock=None)
    current = read_lock(path)
    if current is not None:
        reason = stale_reason(current)
        result["previous"] = dict(current, stale=reason is not None, stale_reason=reason)

    if p["state"] == "released":
        if current is not None and current.get("run_id") != p["run_id"] and not p["force"]:
            result["lock"] = current
            module.fail_json(msg=f"Failed to release lock {path}: it is held by {describe(current)}, not by run "
                                 f"{p['run_id']} (force=true releases it anyway)", **result)
        result["changed"] = current is not None
        if result["changed"] and not module.check_mode:
            release(path, p["run_id"], force=True)
        module.exit_json(**result)

    if p["kill_switch_record"]:
        # the kill switch always wins: read before the lock, a bot an operator stopped is not locked
        try:
            record = Engagements(None, p["kill_switch_record"]).operator()
        except BotError as exc:
            module.fail_json(msg=f"Failed to take lock {path}: {exc}", **result)
        result["kill_switch"] = (None if record is None else
                                 {k: record.get(k) for k in ("level", "who", "time", "reason")})
        result["yielded"] = record is not None and not p["override_kill_switch"]
        if result["yielded"]:
            module.exit_json(msg=f"skipped: kill switch {describe_engagement(record)}", **result)
    try:
        action, previous = plan_acquire(path, p["run_id"], p["takeover"])
        if action == "held":
            result["lock"] = previous
            module.exit_json(**result)
        result["changed"] = True
        result["lock"] = new_lock(p["run_id"], p["operation"], p["ttl"], p["owner_pid"])
        if not module.check_mode:
            write_lock(path, result["lock"], replace=previous is not None)
    except LockError as exc:
        result["lock"] = exc.lock
        module.fail_json(msg=f"Failed to take lock {path}: {exc}", **result)
    except OSError as exc:
        module.fail_json(msg=f"Failed to take lock {path}: {exc}", **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
