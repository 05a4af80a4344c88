# Copyright: botops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A bot's execution mode (DRY / LIVE) and paper flag, read and set as its profile says.

Shared by bot_mode (read and set, with the go/no-go and paper-only rules) and bot_rollout
(a bot that was DRY or paper before a change must not come back LIVE). Stdlib only.
"""

from __future__ import annotations

import time

from ansible.module_utils.botops_bot import POLL_INTERVAL, BotError


def read_mode(bot, facts):
    """(execution mode, paper flag) through the profile's facts probes."""
    return bot.probe(facts["execution_mode"]), bot.probe(facts["paper_trading"])


def plan_actions(lists):
    """Concatenate the action lists; service actions are collapsed into one at the end (one restart)."""
    plain, service = [], None
    for actions in lists:
        for action in actions:
            if "service" in action:
                service = "restart" if action["service"] == "restart" or service == "restart" else action["service"]
            else:
                plain.append(action)
    return plain + ([{"service": service}] if service else [])


def keep_out_of_live(bot, profile, was_mode, was_paper, actions, timeout=60.0):
    """Put a bot that was DRY (or paper) before a change back to DRY (paper) if it came back LIVE
    (off paper). Never makes a bot more live than it was. Returns the (mode, paper) seen at the end."""
    mode_conf = profile.get("mode") or {}
    mode, paper = read_mode(bot, profile["facts"])
    lists, after = [], {"mode": mode, "paper": paper}
    if was_mode is not None and was_mode != "LIVE" and mode == "LIVE":
        if not mode_conf.get("set_execution_mode"):
            raise BotError(f"came back LIVE (was {was_mode}) and profile '{profile.get('family')}' has no "
                           "mode.set_execution_mode actions to put it back")
        lists.append(mode_conf["set_execution_mode"])
        after["mode"] = was_mode
    if was_paper is True and paper is False:
        if not mode_conf.get("set_paper"):
            raise BotError(f"came back off paper trading and profile '{profile.get('family')}' has no "
                           "mode.set_paper actions to put it back")
        lists.append(mode_conf["set_paper"])
        after["paper"] = True
    plan = plan_actions(lists)
    if not plan:
        return mode, paper
    for action in plan:
        actions.append(bot.do(action, after))
    deadline = time.monotonic() + timeout
    if any("service" in a for a in plan):
        ok, observed = bot.wait_for([profile["health"]["readiness"]], timeout)
        if not ok:
            raise BotError(f"not ready within {timeout:g}s after the mode restart: last answer {observed}")
    while True:
        try:
            mode, paper = read_mode(bot, profile["facts"])
        except BotError:
            mode = paper = None
        if (mode, paper) == (after["mode"], after["paper"]) or time.monotonic() >= deadline:
            break
        time.sleep(POLL_INTERVAL)
    if (mode, paper) != (after["mode"], after["paper"]):
        raise BotError(f"still execution mode {mode}, paper {paper} after {', '.join(actions)}: "
                       f"it should be {after['mode']}, paper {after['paper']}")
    return mode, paper
