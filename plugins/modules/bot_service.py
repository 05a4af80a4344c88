#!/usr/bin/python
# Copyright: botops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
module: bot_service
short_description: Start, stop or restart a trading bot gracefully, and wait until it is ready
description:
  - Drives the bot's service manager (supervisor, systemd or docker compose) and verifies the result on the
    bot's process itself, never on the manager's word alone.
  - A graceful stop escalates to SIGTERM and SIGKILL when the process outlives O(graceful_timeout); a start
    waits for the process and, with O(wait_ready), for the profile's readiness check.
  - A bot whose operator engaged a kill switch level is not started unless O(override_kill_switch).
  - At most O(window_slots) bots of one host restart at once.
  - Idempotent - V(started) on a running bot and V(stopped) on a stopped one change nothing.
version_added: "0.1.0"
extends_documentation_fragment: [ansible.builtin.action_common_attributes, botops.fleet.botops_bot]
options:
  state:
    description: V(started), V(stopped) or V(restarted) (always restarts).
    type: str
    choices: [started, stopped, restarted]
    required: true
  graceful_timeout:
    description: Seconds after the stop began before the process gets SIGTERM. Default the profile's C(service.stop_timeout), else 30.
    type: float
  term_timeout:
    description: Seconds after SIGTERM before SIGKILL.
    type: float
    default: 10
  wait_ready:
    description: After a start or restart (and for V(started)), wait until the profile's readiness check passes.
    type: bool
    default: true
  ready_timeout:
    description: Seconds to wait for the process and for readiness.
    type: float
    default: 60
  ready_stable_for:
    description: Seconds readiness must hold without a break, so that a release that answers ready and then falls over fails the gate.
    type: float
    default: 1.0
  window_slots:
    description:
      - Bots of this host allowed to restart at once. Default the host's CPU count.
      - A restart that finds no slot free within 10 minutes fails before it stops the bot.
    type: int
  override_kill_switch:
    description:
      - Start or restart a bot whose operator engaged a kill switch level, putting the level back once the bot
        is ready. Without it the call changes nothing and fails with RV(yielded).
    type: bool
    default: false
attributes:
  check_mode:
    support: full
    details: Reports what would be done (C(would)); changes nothing.
  diff_mode:
    support: full
    details: Process state before and after.
  platform:
    platforms: posix
notes:
  - Runs on the bot's host. A mojorust bot closes its positions when stopped gracefully (its runbook).
  - "The stop and the start step by step, the kill switch and the window slots: C(docs/operations/restart.md)."
author: botops contributors (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Restart the bot and wait until it is ready again
  botops.fleet.bot_service:
    state: restarted
    profile: "{{ botops_profile }}"
    bot: "{{ botops_bot }}"
    secrets: "{{ botops_secrets }}"
  register: restart

- name: Stop the bot, killing it if it has not exited 20 seconds after the stop
  botops.fleet.bot_service:
    state: stopped
    graceful_timeout: 20
    profile: "{{ botops_profile }}"
    bot: "{{ botops_bot }}"
"""

RETURN = r"""
state:
  description: The process state after the call (running or stopped).
  returned: always
  type: str
actions:
  description: What was done, in order (empty when nothing changed).
  returned: always
  type: list
  elements: str
  sample: ["service stop", "service start", "ready"]
would:
  description: In check mode, what would be done.
  returned: check mode
  type: list
  elements: str
downtime:
  description: Seconds from the stop (or start) until the bot answered ready; 0 when nothing changed, null when not waited for or stopped.
  returned: always
  type: float
ready:
  description: The readiness check passed at the end (null when not checked).
  returned: always
  type: bool
slot_wait:
  description: Seconds the call waited for a window slot (null when it took none).
  returned: always
  type: float
yielded:
  description: The call stopped because an operator's kill switch level is engaged.
  returned: when it yielded
  type: bool
kill_switch:
  description: The operator's engagement recorded on the bot (C(level), C(who), C(time), C(reason)), put back after the start when C(reapplied).
  returned: when an operator's level is engaged
  type: dict
pids_before:
  description: Matching processes before.
  returned: always
  type: list
  elements: int
pids_after:
  description: Matching processes after.
  returned: always
  type: list
  elements: int
"""

import time

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.botops.fleet.plugins.module_utils.botops_bot import bot_argument_spec, module_bot
from ansible_collections.botops.fleet.plugins.module_utils.botops_errors import BotError
from ansible_collections.botops.fleet.plugins.module_utils.botops_kill_switch import reapply
from ansible_collections.botops.fleet.plugins.module_utils.botops_kill_switch_record import KillSwitchEngaged, yield_to_operator
from ansible_collections.botops.fleet.plugins.module_utils.botops_priority import yield_cpu
from ansible_collections.botops.fleet.plugins.module_utils.botops_service import (
    KILL_WAIT, NotReady, WindowSlots, graceful_stop, start, stop_timeout, wait_ready)
from ansible_collections.botops.fleet.plugins.module_utils.botops_values import describe_answer


def start_ready(bot, profile, p, actions, result, began):
    """Start, then the readiness gate; the result gets ready, downtime and (on failure) observed."""
    try:
        gate = start(bot, profile, actions, p["ready_timeout"], p["wait_ready"], p["ready_stable_for"], began)
    except NotReady as exc:
        result["ready"] = False
        result["observed"] = exc.observed
        raise
    if p["wait_ready"]:
        result["ready"] = gate["ready"]
        result["downtime"] = round(time.monotonic() - began, 3)


def main():
    argument_spec = bot_argument_spec()
    argument_spec.update(
        state=dict(type="str", choices=["started", "stopped", "restarted"], required=True),
        graceful_timeout=dict(type="float"),
        term_timeout=dict(type="float", default=10),
        wait_ready=dict(type="bool", default=True),
        ready_timeout=dict(type="float", default=60),
        ready_stable_for=dict(type="float", default=1.0),
        window_slots=dict(type="int"),
        override_kill_switch=dict(type="bool", default=False),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    yield_cpu(module)
    p = module.params
    name = p["bot"]["name"]
    state = p["state"]
    verbs = {"started": "start", "stopped": "stop", "restarted": "restart"}
    actions = []
    result = dict(changed=False, state=None, actions=actions, downtime=None, ready=None, slot_wait=None,
                  pids_before=[], pids_after=[])
    slots = None
    try:
        slots = WindowSlots(p["window_slots"])
        bot = module_bot(module)
        profile = p["profile"]
        graceful = stop_timeout(bot, p["graceful_timeout"])
        pids = bot.pids()
        result["pids_before"] = pids
        running = bool(pids)
        plan = []
        if state == "stopped" and running:
            plan = ["service stop (then SIGTERM, SIGKILL if still running)"]
        elif state == "started" and not running:
            plan = ["service start"] + (["wait until ready"] if p["wait_ready"] else [])
        elif state == "restarted":
            plan = (["service stop (then SIGTERM, SIGKILL if still running)"] if running else []) + \
                ["service start"] + (["wait until ready"] if p["wait_ready"] else [])
        starts = state == "restarted" or (state == "started" and not running)
        if starts:
            # the kill switch always wins: a bot an operator stopped is not started (nor restarted)
            result["kill_switch"] = yield_to_operator(bot, f"the {verbs[state]}", p["override_kill_switch"],
                                                      "nothing was changed")
        result["changed"] = bool(plan)
        after_state = "stopped" if state == "stopped" else "running"
        before_state = "running" if running else "stopped"
        if plan:
            result["diff"] = {"before": f"process: {before_state}\n", "after": f"process: {after_state}\n"}
        if module.check_mode:
            result["would"] = plan
            result["state"] = after_state if plan else before_state
            result["pids_after"] = pids
            module.exit_json(**result)

        if state == "restarted" and running:
            result["slot_wait"] = slots.take()  # BotError: nothing was changed
        elif state == "restarted" or (state == "started" and not running):
            waited = time.monotonic()  # the bot is down: it comes back, with a slot or without
            try:
                result["slot_wait"] = slots.take(wait=p["ready_timeout"])
            except (BotError, OSError) as exc:
                result["slot_wait"] = round(time.monotonic() - waited, 3)
                actions.append(f"start without a window slot ({exc})")
        began = time.monotonic()
        if state in ("stopped", "restarted") and running:
            graceful_stop(bot, graceful, p["term_timeout"], actions, kill_wait=KILL_WAIT)
        if starts:
            yield_to_operator(bot, "the start", p["override_kill_switch"], "the bot was stopped and is left stopped")
            try:
                start_ready(bot, profile, p, actions, result, began)
            except BotError:
                # an operator's kill switch engaged meanwhile may be what stopped it: that is no failure
                yield_to_operator(bot, "the start", p["override_kill_switch"],
                                  "the kill switch stopped the bot while it started")
                raise
            kept = reapply(bot, profile, source="bot_service")
            if kept is not None:
                result["kill_switch"] = kept
                actions.append(f"kill switch {kept['level']} put back ({kept.get('engaged_by') or 'still engaged'})")
                # engaged while the bot started: it runs again, at the operator's level, and the run stops
                yield_to_operator(bot, "trading", p["override_kill_switch"],
                                  "the bot runs again with the operator's level put back")
        elif state == "started" and p["wait_ready"]:
            ok, observed, ready_at = wait_ready(bot, profile, began + p["ready_timeout"], p["ready_stable_for"])
            result["ready"] = ok
            if not ok:
                result["observed"] = observed
                raise BotError(f"running but not ready within {p['ready_timeout']:g}s: last answer {describe_answer(observed)}")
            result["downtime"] = 0.0
        elif not plan:
            result["downtime"] = 0.0
        slots.give()  # ready: the next bot's restart may begin
        result["pids_after"] = bot.pids()
        result["state"] = "running" if result["pids_after"] else "stopped"
    except KillSwitchEngaged as exc:
        if slots is not None:
            slots.give()
        result.update(kill_switch=exc.record, yielded=True, changed=bool(actions))
        module.fail_json(msg=f"{verbs[state].capitalize()} of bot '{name}' {exc}", **result)
    except (BotError, KeyError, OSError) as exc:
        if slots is not None:
            slots.give()
        module.fail_json(msg=f"Failed to {verbs[state]} bot '{name}': {exc}", **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
