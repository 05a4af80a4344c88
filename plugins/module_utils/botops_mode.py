# Copyright: botops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A bot's execution mode (DRY / LIVE) and paper flag, read and set as its profile says.

Shared by bot_mode (read and set, with the go/no-go and paper-only rules; keep_out_of_live after
a restart or a restore) and bot_deploy (a bot that was DRY or paper before a change must not come
back LIVE). Keeping a bot out of LIVE uses whatever its profile can read and set - its execution
mode, else its paper flag - and says which (kept_by); a capability the family does not have fails
nothing unless the bot is found LIVE and nothing can put it back. Stdlib only.
"""

from __future__ import annotations

import time

from ansible_collections.botops.fleet.plugins.module_utils.botops_bot import POLL_INTERVAL
from ansible_collections.botops.fleet.plugins.module_utils.botops_errors import BotError
from ansible_collections.botops.fleet.plugins.module_utils.botops_values import describe_answer


MODES = ("DRY", "LIVE")


def checked(key, value):
    """The value of facts.execution_mode (DRY or LIVE) or facts.paper_trading (true or false) as
    botops reads it; anything else is an error naming it and the fix (a probe `map`), never taken for
    'not LIVE': a bot that says `live` or "false" in its own words must not pass for a DRY or paper one."""
    if value is None:
        return None
    if key == "execution_mode" and value not in MODES:
        raise BotError(f"facts.execution_mode reported {value!r}, not DRY or LIVE: translate the bot's words "
                       "with the probe's map (e.g. map: {dry_run: DRY, live: LIVE})")
    if key == "paper_trading" and not isinstance(value, bool):
        raise BotError(f"facts.paper_trading reported {value!r}, not true or false: translate it with the "
                       "probe's map (e.g. map: {'yes': true, 'no': false})")
    return value


def read_mode(bot, facts):
    """(execution mode, paper flag) through the profile's facts probes."""
    return (checked("execution_mode", bot.probe(facts["execution_mode"])),
            checked("paper_trading", bot.probe(facts["paper_trading"])))


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


def read_what_can_be_read(bot, facts, warnings):
    """(execution mode, paper flag) through the profile's probes, each None when the profile has no
    probe for it or the bot does not answer it (a warning says so). Raises BotError when neither can
    be read although the profile has probes for them: the bot does not answer."""
    values, errors = [], []
    for key in ("execution_mode", "paper_trading"):
        spec = (facts or {}).get(key)
        if not spec:
            values.append(None)
            continue
        try:
            values.append(checked(key, bot.probe(spec)))
        except BotError as exc:
            values.append(None)
            errors.append(f"facts.{key}: {exc}")
    if len(errors) == 2:
        raise BotError(f"cannot read the mode: {'; '.join(errors)}")
    warnings.extend(f"cannot read {e}" for e in errors)
    return values[0], values[1]


def kept_by(mode, paper):
    """What keeps the bot out of LIVE: its execution mode (known, not LIVE), else its paper flag, else nothing."""
    if mode is not None and mode != "LIVE":
        return "execution_mode"
    if paper is True:
        return "paper"
    return "none"


def keep_plan(profile, mode, paper, keep_mode, keep_paper):
    """How to keep a bot that was not LIVE (keep_mode) or was on paper (keep_paper) before a change
    out of LIVE, with whatever its profile can set: its execution mode, else its paper flag.

    Returns (action lists, expected {mode, paper} afterwards, warnings, missing capabilities). A
    capability the family lacks fails nothing while the bot is not LIVE (a warning names it when it
    mattered); a bot found LIVE - or LIVE and off paper when it was on paper - that nothing in the
    profile can put back raises BotError: it may trade live."""
    family = profile.get("family")
    conf = profile.get("mode") or {}
    set_mode, set_paper = conf.get("set_execution_mode"), conf.get("set_paper")
    lists, warnings = [], []
    missing = [name for name, wanted, have in (("mode.set_execution_mode", keep_mode, set_mode),
                                               ("mode.set_paper", keep_paper, set_paper)) if wanted and not have]
    after = {"mode": mode, "paper": paper}
    if keep_mode and mode == "LIVE":
        if set_mode:
            lists.append(set_mode)
            after["mode"] = "DRY"
        elif set_paper or paper is True:
            if paper is not True:
                lists.append(set_paper)
                after["paper"] = True
            warnings.append(f"profile '{family}' has no mode.set_execution_mode: the bot reports LIVE (it was not "
                            "before) and is kept out of live trading by paper trading only")
        else:
            raise BotError(f"reports LIVE (it was not before) and profile '{family}' has neither "
                           "mode.set_execution_mode nor mode.set_paper to put it back: it may be trading live "
                           "(engage a kill switch level)")
    if keep_paper and after["paper"] is False:
        if set_paper:
            lists.append(set_paper)
            after["paper"] = True
        elif after["mode"] == "LIVE":
            raise BotError(f"came back LIVE off paper trading (it was on paper) and profile '{family}' has no "
                           "mode.set_paper to put it back: it may be trading live (engage a kill switch level)")
        else:
            warnings.append(f"profile '{family}' has no mode.set_paper: the bot came back off paper trading"
                            + (f"; its execution mode {after['mode']} keeps it out of LIVE" if after["mode"] else ""))
    if (keep_mode or keep_paper) and kept_by(after["mode"], after["paper"]) == "none":
        lacking = [f"facts.{k}" for k in ("execution_mode", "paper_trading") if not (profile.get("facts") or {}).get(k)]
        warnings.append(f"nothing shows the bot is out of LIVE: it reports execution mode {after['mode']}, paper "
                        f"{after['paper']}" + (f" (profile '{family}' has no {', '.join(lacking)})" if lacking else ""))
    return lists, after, warnings, missing


def keep_out_of_live(bot, profile, was_mode, was_paper, actions, timeout=60.0, warn=None):
    """Put a bot that was DRY (or paper) before a change back to DRY (paper) if it came back LIVE
    (off paper), with whatever its profile can set (keep_plan). Never makes a bot more live than it
    was. Returns the (mode, paper) seen at the end and what keeps it out of LIVE (kept_by)."""
    warnings = []
    mode, paper = read_what_can_be_read(bot, profile.get("facts"), warnings)
    lists, after, planned, missing = keep_plan(profile, mode, paper, was_mode is not None and was_mode != "LIVE",
                                               was_paper is True)
    for message in warnings + planned:
        (warn or (lambda m: None))(message)
    plan = plan_actions(lists)
    if not plan:
        return mode, paper, kept_by(mode, paper)
    if after["mode"] == "DRY" and was_mode not in (None, "LIVE"):
        after["mode"] = was_mode  # back to what it was (DRY, or the family's own non-live mode)
    for action in plan:
        actions.append(bot.do(action, after))
    deadline = time.monotonic() + timeout
    if any("service" in a for a in plan):
        ok, observed = bot.wait_for([profile["health"]["readiness"]], timeout)
        if not ok:
            raise BotError(f"not ready within {timeout:g}s after the mode restart: last answer {describe_answer(observed)}")
    while True:
        try:
            mode, paper = read_what_can_be_read(bot, profile.get("facts"), [])
        except BotError:
            mode = paper = None
        if (mode, paper) == (after["mode"], after["paper"]) or time.monotonic() >= deadline:
            break
        time.sleep(POLL_INTERVAL)
    if (mode, paper) != (after["mode"], after["paper"]):
        raise BotError(f"still execution mode {mode}, paper {paper} after {', '.join(actions)}: "
                       f"it should be {after['mode']}, paper {after['paper']}")
    return mode, paper, kept_by(mode, paper)
