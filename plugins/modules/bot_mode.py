#!/usr/bin/python
# Copyright: botops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
module: bot_mode
short_description: Read and set a trading bot's execution mode (DRY / LIVE) and paper flag, safely
description:
  - Reads the mode and the paper flag through the profile's probes and sets them with its C(mode) actions;
    without O(execution_mode) and O(paper) it only reads.
  - Setting V(LIVE) needs a passed O(go_no_go); a paper-only bot is never set V(LIVE) nor taken off paper.
  - A change is verified by polling until the bot reports it (after one restart, when the actions need one);
    a change that did not take effect fails (its actions run again with the old values, when the bot still reports them).
  - With O(keep_out_of_live), O(execution_mode=DRY) and O(paper=true) are limits kept with whatever the profile can set.
version_added: "0.1.0"
extends_documentation_fragment: [ansible.builtin.action_common_attributes, botops.fleet.botops_bot]
options:
  execution_mode:
    description: V(DRY) (simulated orders) or V(LIVE).
    type: str
    choices: [DRY, LIVE]
  paper:
    description: Paper trading on or off.
    type: bool
  keep_out_of_live:
    description:
      - Keep the bot no more live than it was - O(execution_mode=DRY) and/or O(paper=true) become limits, not
        settings. Never makes a bot more live, never needs O(go_no_go).
    type: bool
    default: false
  go_no_go:
    description:
      - The go/no-go checklist result, needed to go V(LIVE) - C(passed) (bool) and C(checks), a list of
        C({name, passed}) (or of names).
    type: dict
  ready_timeout:
    description: Seconds to wait for readiness after a restart and for the bot to report the new mode.
    type: float
    default: 60
attributes:
  check_mode:
    support: full
    details: Reports the actions that would run; refusals are the same as in a real run.
  diff_mode:
    support: full
    details: Mode and paper flag before and after.
  platform:
    platforms: posix
notes:
  - "How a change is made and verified, and how O(keep_out_of_live) keeps a bot off LIVE: C(docs/operations/mode.md)."
author: botops contributors (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Keep the bot on DRY paper trading
  botops.fleet.bot_mode:
    execution_mode: DRY
    paper: true
    profile: "{{ botops_profile }}"
    bot: "{{ botops_bot }}"
    secrets: "{{ botops_secrets }}"

- name: After a restart, keep a bot that was DRY and paper out of LIVE with what its profile can set
  botops.fleet.bot_mode:
    keep_out_of_live: true
    execution_mode: DRY
    paper: true
    profile: "{{ botops_profile }}"
    bot: "{{ botops_bot }}"
    secrets: "{{ botops_secrets }}"

- name: Go live after the go/no-go checklist passed
  botops.fleet.bot_mode:
    execution_mode: LIVE
    go_no_go: "{{ checklist }}"
    profile: "{{ botops_profile }}"
    bot: "{{ botops_bot }}"
    secrets: "{{ botops_secrets }}"
"""

RETURN = r"""
kill_switch:
  description: The operator's kill switch engagement recorded on the bot, when one is (a switch to LIVE is refused under it; a restart puts it back).
  returned: when an operator's level is engaged
  type: dict
execution_mode:
  description: The mode the bot reports after the call (in check mode, the mode the call would leave).
  returned: always
  type: str
  sample: DRY
paper_trading:
  description: The paper flag the bot reports after the call.
  returned: always
  type: bool
previous:
  description: Mode and paper flag before the call.
  returned: always
  type: dict
actions:
  description: The profile's mode actions done and the readiness after a restart, in order (empty when nothing changed).
  returned: always
  type: list
  elements: str
kept_by:
  description:
    - With O(keep_out_of_live), what keeps the bot out of V(LIVE) after the call - V(execution_mode)
      (it reports a mode that is not LIVE), V(paper) (paper trading), V(none) (nothing the profile
      reads shows it; a warning says so).
  returned: when keep_out_of_live
  type: str
  sample: execution_mode
missing:
  description: With O(keep_out_of_live), the set actions the profile lacks for the limits asked (C(mode.set_execution_mode), C(mode.set_paper)).
  returned: when keep_out_of_live
  type: list
  elements: str
  sample: [mode.set_execution_mode]
rolled_back:
  description: When the bot did not take the change at all, the actions run again with the old values.
  returned: when a change did not take effect
  type: list
  elements: str
would:
  description: In check mode, the actions that would run.
  returned: check mode
  type: list
  elements: str
"""

import time

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.botops.fleet.plugins.module_utils.botops_bot import POLL_INTERVAL, bot_argument_spec, module_bot
from ansible_collections.botops.fleet.plugins.module_utils.botops_errors import BotError
from ansible_collections.botops.fleet.plugins.module_utils.botops_kill_switch import KillSwitchError, reapply
from ansible_collections.botops.fleet.plugins.module_utils.botops_kill_switch_record import describe_engagement, operator_level
from ansible_collections.botops.fleet.plugins.module_utils.botops_mode import keep_plan, kept_by, plan_actions, read_mode, read_what_can_be_read
from ansible_collections.botops.fleet.plugins.module_utils.botops_priority import yield_cpu
from ansible_collections.botops.fleet.plugins.module_utils.botops_values import describe_action, describe_answer


class Refused(Exception):
    pass


def check_go_no_go(go_no_go):
    if not go_no_go:
        raise Refused("going LIVE needs a passed go/no-go checklist (go_no_go: {passed: true, checks: [...]})")
    checks = go_no_go.get("checks")
    if not isinstance(checks, list) or not checks:
        raise Refused("the go/no-go result lists no checks: a checklist that checked nothing is not a pass")
    failed = [c.get("name", str(c)) if isinstance(c, dict) else str(c)
              for c in checks if isinstance(c, dict) and c.get("passed") is not True]
    if go_no_go.get("passed") is not True or failed:
        raise Refused("the go/no-go checklist did not pass" + (f" (failed: {', '.join(failed)})" if failed else ""))


def main():
    argument_spec = bot_argument_spec()
    argument_spec.update(
        execution_mode=dict(type="str", choices=["DRY", "LIVE"]),
        paper=dict(type="bool"),
        go_no_go=dict(type="dict"),
        ready_timeout=dict(type="float", default=60),
        keep_out_of_live=dict(type="bool", default=False),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    yield_cpu(module)
    p = module.params
    name = p["bot"]["name"]
    profile = p["profile"]
    mode_conf = profile.get("mode") or {}
    want_mode, want_paper = p["execution_mode"], p["paper"]
    asked = ", ".join(x for x in (f"execution mode {want_mode}" if want_mode else "",
                                  f"paper {str(want_paper).lower()}" if want_paper is not None else "") if x)
    keep = p["keep_out_of_live"]
    what = f"set {asked}" if asked and not keep else f"keep the bot out of LIVE ({asked})" if keep else "read the mode"
    actions = []
    result = dict(changed=False, execution_mode=None, paper_trading=None, previous={}, actions=actions)
    if keep:
        if want_mode == "LIVE" or want_paper is False or (want_mode is None and want_paper is None):
            module.fail_json(msg=f"keep_out_of_live takes execution_mode=DRY and/or paper=true (the limits), "
                                 f"got execution_mode={want_mode}, paper={want_paper}", **result)
        result.update(kept_by=None, missing=[])
    try:
        bot = module_bot(module)
        warnings = []
        if keep:
            mode, paper = read_what_can_be_read(bot, profile.get("facts"), warnings)
        else:
            mode, paper = read_mode(bot, profile["facts"])
        result.update(execution_mode=mode, paper_trading=paper, previous=dict(execution_mode=mode, paper_trading=paper))
        paper_only = bool(p["bot"].get("paper_only")) or bool(mode_conf.get("paper_only"))
        source = "inventory bot_paper_only" if p["bot"].get("paper_only") else f"profile '{profile.get('family')}' mode.paper_only"
        lists = []
        if keep:
            result["kept_by"] = kept_by(mode, paper)
            try:
                lists, kept_after, planned, result["missing"] = keep_plan(profile, mode, paper, want_mode == "DRY",
                                                                          want_paper is True)
            finally:
                for message in warnings:
                    module.warn(f"bot '{name}': {message}")
            for message in planned:
                module.warn(f"bot '{name}': {message}")
            want_mode, want_paper = kept_after["mode"], kept_after["paper"]
            result["kept_by"] = kept_by(want_mode, want_paper)
        elif want_mode is not None and want_mode != mode:
            if want_mode == "LIVE":
                if paper_only:
                    raise Refused(f"the bot is paper-only ({source}): it must never trade LIVE")
                check_go_no_go(p["go_no_go"])
                # read again right before the switch: a level engaged after the checklist ran counts
                held = operator_level(bot)
                if held is not None:
                    result["kill_switch"] = held
                    raise Refused(f"kill switch {describe_engagement(held)}: a bot is never switched to LIVE "
                                  "under a kill switch level (release it first)")
            if not mode_conf.get("set_execution_mode"):
                raise BotError(f"profile '{profile.get('family')}' has no mode.set_execution_mode actions")
            lists.append(mode_conf["set_execution_mode"])
        if not keep and want_paper is not None and want_paper != paper:
            if not want_paper and paper_only:
                raise Refused(f"the bot is paper-only ({source}): paper trading cannot be turned off")
            if not mode_conf.get("set_paper"):
                raise BotError(f"profile '{profile.get('family')}' has no mode.set_paper actions")
            lists.append(mode_conf["set_paper"])
        plan = plan_actions(lists)
        after = dict(execution_mode=want_mode or mode, paper_trading=paper if want_paper is None else want_paper)
        if plan:
            result["changed"] = True
            result["diff"] = {
                "before": f"execution_mode: {mode}\npaper_trading: {str(paper).lower()}\n",
                "after": f"execution_mode: {after['execution_mode']}\npaper_trading: {str(after['paper_trading']).lower()}\n",
            }
        if module.check_mode or not plan:
            if plan:
                result["would"] = [describe_action(a) for a in plan]
                result.update(after)  # check mode reports the mode the run would leave (DRY -> LIVE)
            module.exit_json(**result)

        variables = {"mode": after["execution_mode"], "paper": after["paper_trading"]}
        for action in plan:
            actions.append(bot.do(action, variables))
        deadline = time.monotonic() + p["ready_timeout"]
        if any("service" in a for a in plan):
            ok, observed = bot.wait_for([profile["health"]["readiness"]], p["ready_timeout"])
            if not ok:
                raise BotError(f"not ready within {p['ready_timeout']:g}s after the restart: last answer {describe_answer(observed)}")
            actions.append("ready")
            kept = reapply(bot, profile, source="bot_mode")  # the restart cleared a level kept in memory
            if kept is not None:
                result["kill_switch"] = kept
                actions.append(f"kill switch {kept['level']} put back ({kept.get('engaged_by') or 'still engaged'})")
        while True:
            try:
                mode, paper = (read_what_can_be_read(bot, profile.get("facts"), []) if keep
                               else read_mode(bot, profile["facts"]))
            except BotError:
                mode = paper = None
            if (mode, paper) == (after["execution_mode"], after["paper_trading"]) or time.monotonic() >= deadline:
                break
            time.sleep(POLL_INTERVAL)
        result.update(execution_mode=mode, paper_trading=paper)
        if keep:
            result["kept_by"] = kept_by(mode, paper)
        if (mode, paper) != (after["execution_mode"], after["paper_trading"]):
            cause = (f"after {', '.join(actions)} the bot reports execution mode {mode}, paper "
                     f"{str(paper).lower()}: the change did not take effect")
            if (mode, paper) == (result["previous"]["execution_mode"], result["previous"]["paper_trading"]):
                # Nothing took effect: put back what the actions wrote (a config file would otherwise
                # switch the bot at some later start), without another restart.
                old = {"mode": mode, "paper": paper}
                undo = [a for a in plan if "service" not in a]
                result["rolled_back"] = [bot.do(a, old) for a in undo]
                cause += f"; rolled back: {', '.join(result['rolled_back'])}"
            raise BotError(cause)
    except Refused as exc:
        result["refused"] = True
        module.fail_json(msg=f"Failed to {what} on bot '{name}': refused: {exc}", **result)
    except (BotError, KeyError, KillSwitchError) as exc:
        module.fail_json(msg=f"Failed to {what} on bot '{name}': {exc}", **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
