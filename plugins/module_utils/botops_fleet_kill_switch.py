# Copyright: botops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The fleet kill switch: one level engaged or released on many bots at once (bot_fleet_kill_switch).

Shared by the module's main() and its controller-side action plugin (plugins/action/), which runs
run_fleet() in the controller's own process when the task runs on the controller. How it goes:
docs/operations/kill-switch.md.
"""

from __future__ import annotations

import itertools
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor

from ansible_collections.botops.fleet.plugins.module_utils.botops_bot import Bot, bot_argument_spec
from ansible_collections.botops.fleet.plugins.module_utils.botops_fleet import REDIS_TIMEOUT, REQUESTS_PER_HOST, FleetRun, scrub
from ansible_collections.botops.fleet.plugins.module_utils.botops_host import PROGRAM_REAP, BotHost
from ansible_collections.botops.fleet.plugins.module_utils.botops_lock import read_lock, stale_reason
from ansible_collections.botops.fleet.plugins.module_utils.botops_kill_switch import (
    DEFAULT_RUNG_TIMEOUT, START_TIMEOUT, KillSwitch, KillSwitchError, kill_switch_options)
from ansible_collections.botops.fleet.plugins.module_utils.botops_kill_switch_checks import LEVELS, HostlessBot, rank
from ansible_collections.botops.fleet.plugins.module_utils.botops_kill_switch_record import AUDIT_LOG, AuditIndex, append_audit
from ansible_collections.botops.fleet.plugins.module_utils.botops_service import DEFAULT_STOP_TIMEOUT

# What a rung's error says (in botops_bot's words) when the bot's inventory entry is wrong rather
# than the bot unwell, and the variables to check. A bot that does not answer in time is escalated
# as designed; one whose address refuses the connection while its process runs, answers for
# another API or refuses the credentials will refuse every later operation too.
OPERATION_LOCK = "shared/data/botops.lock"  # bot_guard's lock: a run that holds it may be restarting the bot
INVENTORY_FAULTS = (
    (re.compile(r"answered HTTP 40[13]\b|needs a bearer token|needs \w+ credentials"),
     "its API refused botops' credentials (check bot_api_token, or bot_api_username and bot_api_password, "
     "in its vault)"),
    (re.compile(r"on \S+: ConnectionRefusedError"),
     "nothing listens at its API's address (check bot_listen and bot_ports)"),
    (re.compile(r"answered HTTP 404\b"), "its API's address serves another API (check bot_ports and bot_family)"),
    (re.compile(r"(Redis|redis-cli) \w+ failed: .*(Connection refused|Could not connect)"),
     "nothing listens at its Redis address (check bot_redis_url)"),
)


# What bounds a ladder's time beside its rungs' own timeouts (ladder_seconds)
HTTP_TRIES = 3  # one request may log in first and, its token refused (HTTP 401), be sent again
EACH_ITEMS = 10  # the items of a list an `each` action is counted for (a bot's open trades with an open order: a few)
LOOK_SECONDS = 1.0  # a look at the process table, the bot's files, the audit logs and the record (well under a second)
DATABASE_SECONDS = 10.0  # a flatten's open positions read from the bot's database (SQLite waits 10 s for its lock)


def entry_problem(entry):
    """Why this entry cannot be driven at all (None if it can): checked before anything is tried,
    because a relative root puts the bot's audit log and kill-switch record in the controller's
    working directory, where no operation of the bot looks, and a port that is not a number fails
    in the middle of the ladder."""
    bot = entry["bot"]
    if not entry.get("profile"):
        return (f"it has no profile (bot_family {bot.get('family')!r}): give its entry a profile, "
                f"or profiles a {bot.get('family')!r} entry")
    root = bot.get("root")
    if not root or not os.path.isabs(root):
        return f"its root {root!r} is not an absolute path: set bot_root to the bot's directory"
    for port_name, port in (bot.get("ports") or {}).items():
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            return f"bot_ports.{port_name} {port!r} is not a port number (expected a whole number from 1 to 65535)"
    return None


def inventory_fault(profile, p, result):
    """For a bot engaged only by an escalation rung: (why its own rungs failed, the rung's error)
    when that is its inventory entry's fault (see INVENTORY_FAULTS); else None."""
    own = [rung["name"] for rung in profile["kill_switch"]["levels"][p["level"]].get("engage") or []]
    if p["state"] != "engaged" or not own or not result.get("engaged_by") or result["engaged_by"] in own:
        return None
    for step in result.get("steps") or []:
        if step["name"] not in own:
            continue
        for error in step["errors"]:
            for pattern, hint in INVENTORY_FAULTS:
                if pattern.search(error):
                    return hint, f"rung '{step['name']}': {error}"
    return None


def operation_under_way(root):
    """The botops run that holds the bot's operation lock now (a live one), described; else None."""
    lock = read_lock(os.path.join(root, OPERATION_LOCK))
    if not lock or lock.get("unreadable") or stale_reason(lock):
        return None
    return f"{lock.get('operation')} run {lock.get('run_id')}"


def bot_failed(name, p, why):
    """One bot's failed result, the same shape as a ladder's: nothing changed on it, saying why."""
    verb = "engage" if p["state"] == "engaged" else "release"
    return dict(changed=False, bot=name, failed=True, steps=[], actions=[],
                msg=f"Failed to {verb} kill switch level '{p['level']}' on bot '{name}': {why}")


def one_bot(entry, p, check_mode, run, index):
    """The kill switch on one bot; never raises (the fleet goes on)."""
    name = (entry.get("bot") or {}).get("name", "?")
    try:
        problem = entry_problem(entry)
        if problem:
            return name, bot_failed(name, p, f"{problem} (nothing was tried on it)")
        profile = entry["profile"]
        cls = Bot if entry["local"] else HostlessBot
        bot = run.attach(cls(profile, entry["bot"], entry.get("secrets")))
        logs = [p["audit_log"]]
        if entry["local"]:
            logs.append(entry.get("audit_log") or os.path.join(entry["bot"]["root"], AUDIT_LOG))
        switch = KillSwitch(bot, profile, p["level"], reason=p["reason"], who=p["who"],
                            escalate=p["escalate"], force=p["force"], check_mode=check_mode,
                            audit_logs=logs, source="bot_fleet_kill_switch", audit_index=index,
                            run_id=p.get("run_id"))
        result = switch.run(p["state"])
        result["failed"] = False
        fault = None if check_mode else inventory_fault(profile, p, result)
        if fault and fault[0].startswith("nothing listens") and entry["local"]:
            running = operation_under_way(entry["bot"]["root"])
            sibling = None if running else run.services.stopped_for_another(bot)
            if running:
                # a botops operation is restarting the bot: its API is down for that, not for a wrong
                # port; the escalation halted it, which is what the operator asked
                result["msg"] = f"{result.get('msg')} (its API was down: {running} holds the bot)"
                fault = None
            elif sibling:
                # bots that share a process: another bot's escalation stopped it before this one's
                # request (a frozen process that the first bot to get there thawed and stopped)
                result["msg"] = (f"{result.get('msg')} (its API was down: its service was stopped for bot "
                                 f"'{sibling}', which shares it)")
                fault = None
        if fault:
            # engaged all the same (the kill switch reaches what it can), but not as the profile
            # says, and the next operation on this bot would be refused the same way: fail it,
            # the cause first (the report's table shows a message's first hundred characters)
            result.update(failed=True, msg=f"{fault[0]}: kill switch '{p['level']}' engaged on bot '{name}' only by "
                                           f"the escalation rung '{result['engaged_by']}' ({fault[1]})")
    except KillSwitchError as exc:
        result = dict(exc.result, failed=True, msg=str(exc))
    except Exception as exc:  # one bot's surprise (a bad value its entry holds) is its failure, never the fleet's
        result = bot_failed(name, p, exc)
    return name, result


def check_seconds(check, http_timeout):
    """At most how long one look at a check, a probe or an `each`'s list takes: its HTTP request
    (a login and a second try included), its program (killed at its timeout, then reaped) or its
    Redis read (a connect and a reply); the process table and a file are a look's own time."""
    if "any_of" in check:
        return sum(check_seconds(one, http_timeout) for one in check["any_of"])
    if "http" in check:
        return HTTP_TRIES * http_timeout
    if "command" in check:
        return BotHost.command_timeout(check["command"]) + PROGRAM_REAP
    if "redis" in check:
        return 2 * REDIS_TIMEOUT
    return 0.0


def action_seconds(action, http_timeout, stop_timeout):
    """At most how long one `do` action takes: a request (as check_seconds), a Redis merge (a read
    and a write), a program (its timeout), the service manager (a stop within the service's
    stop_timeout, which a profile sets above the manager's own wait - supervisord's stopwaitsecs,
    systemd's TimeoutStopSec -, a start within the kill switch's START_TIMEOUT, a restart both),
    an `each` (its list, then its actions for EACH_ITEMS items); a signal or a config file key, none."""
    if "each" in action:
        per_item = sum(action_seconds(one, http_timeout, stop_timeout) for one in action.get("do") or [])
        return check_seconds(action["each"], http_timeout) + EACH_ITEMS * per_item
    if "http" in action or "command" in action:
        return check_seconds(action, http_timeout)
    if "redis_merge" in action:
        return 2 * 2 * REDIS_TIMEOUT
    if "service" in action:
        return {"stop": stop_timeout, "start": START_TIMEOUT}.get(action["service"], stop_timeout + START_TIMEOUT)
    return 0.0


def rung_seconds(rung, http_timeout, stop_timeout, released=()):
    """At most how long one rung takes: its actions, then its `verify` checks polled for its timeout
    (default DEFAULT_RUNG_TIMEOUT), the last look begun just before the deadline (with a release's
    `released` checks: the level's engaged checks, looked at again when verify holds)."""
    timeout = float(rung.get("timeout", DEFAULT_RUNG_TIMEOUT))
    actions = sum(action_seconds(action, http_timeout, stop_timeout) for action in rung.get("do") or [])
    last_look = sum(check_seconds(check, http_timeout) for check in list(rung.get("verify") or []) + list(released))
    return timeout + actions + last_look + LOOK_SECONDS


def ladder_seconds(profile, state="engaged", level="halt", escalate=True, force=False, service=None):
    """An upper bound, in seconds, of how long the kill switch takes on one bot of this profile:
    `state` (engaged or released) at `level`, as KillSwitch walks it (botops_kill_switch). `service`:
    the bot's own service settings (its inventory's bot_service), which may set its stop_timeout.

    An upper bound, not an estimate: every rung the operation may walk is counted whole, as if none
    verified before its timeout - its actions at their own bounds (action_seconds: an HTTP request at
    the profile's http.timeout, the service manager at the service's stop_timeout, a program at its
    timeout), its verify polled to its timeout and one last look begun at the deadline -, and every
    look at the bot (its level, who answers at its address) at its checks' bounds. An engage walks
    the level's engage rungs, then the escalation (with `escalate`); a flatten reads the open
    positions, from the bot's database at worst. A release walks the release rungs of the level (and
    with `force` those of every stronger one), each after a service start (START_TIMEOUT, then up to
    START_TIMEOUT for the level to show or the bot to be ready) when the escalation left the process
    stopped; a stronger level the operator engaged meanwhile is put back, which is that level's
    engage, escalation included. Only the rungs this operation may walk are counted: a halt is not
    held up by the release rungs' long waits for a restart. A bot that takes longer than this is not
    walking its ladder: its host or its Python hangs. Finite for any valid profile (every timeout
    there has a maximum)."""
    levels = profile["kill_switch"]["levels"]
    escalation = list(profile["kill_switch"].get("escalation") or [])
    http_timeout = float((profile.get("http") or {}).get("timeout", 2.0))
    conf = dict(profile.get("service") or {}, **(service or {}))
    stop_timeout = float(conf.get("stop_timeout") or DEFAULT_STOP_TIMEOUT)
    health = profile.get("health") or {}
    # a look at the bot: every level's engaged checks and, when the profile has one, its identity probe
    look = LOOK_SECONDS + sum(check_seconds(check, http_timeout) for name in LEVELS for check in levels[name]["engaged"])
    if profile.get("identity"):
        look += check_seconds(profile["identity"], http_timeout)

    def walk(rungs, released=()):
        return sum(rung_seconds(rung, http_timeout, stop_timeout, released) for rung in rungs)

    def engage(name, escalate):
        rungs = list(levels[name].get("engage") or []) + (escalation if escalate else [])
        seconds = 2 * look + walk(rungs)  # a look before the walk and one after it
        if name == "flatten":
            facts = (profile.get("facts") or {}).get("open_positions")
            seconds += (check_seconds(facts, http_timeout) if facts else 0.0) + DATABASE_SECONDS
        return seconds

    if state == "engaged":
        return engage(level, escalate)
    seconds = 2 * look
    for target in LEVELS[rank(level):] if force else [level]:
        level_conf = levels[target]
        seconds += look
        if not level_conf.get("stops_process") and health.get("liveness"):
            start = {"name": "service start", "do": [{"service": "start"}], "verify": [health["liveness"]],
                     "timeout": START_TIMEOUT}
            readiness = [health["readiness"]] if health.get("readiness") else []
            seconds += (walk([start]) + START_TIMEOUT
                        + sum(check_seconds(check, http_timeout) for check in list(level_conf["engaged"]) + readiness))
        seconds += walk(level_conf.get("release") or [], released=level_conf["engaged"])
    # putting a stronger level back escalates as the operator's own engage would (reapply)
    return seconds + max([engage(stronger, True) for stronger in LEVELS[rank(level) + 1:]] or [0.0])


def argument_spec():
    entry_spec = bot_argument_spec()
    entry_spec["profile"] = dict(type="dict")
    entry_spec.update(
        local=dict(type="bool", default=False),
        audit_log=dict(type="path"),
    )
    return dict(
        hosts=dict(type="list", elements="str"),
        bots=dict(type="list", elements="dict", options=entry_spec),
        profiles=dict(type="dict", default={}),
        **kill_switch_options(),
        audit_log=dict(type="path", default="~/.botops/kill-switch-audit.log"),
        max_workers=dict(type="int", default=1024),
        max_requests_per_host=dict(type="int", default=REQUESTS_PER_HOST),
        fail_fast=dict(type="float", default=0.5),
        run_id=dict(type="str"),
    )


REQUIRED_ONE_OF = [("hosts", "bots")]
MUTUALLY_EXCLUSIVE = [("hosts", "bots")]


def own_secrets(entry):
    """The no_log values of one bot: every value of its secrets, as AnsibleModule lists them."""
    found = set()
    for value in (entry.get("secrets") or {}).values():
        for item in value if isinstance(value, (list, tuple)) else [value]:
            if item is not None and not isinstance(item, bool) and str(item):
                found.add(str(item))
    return sorted(found, key=len, reverse=True)


def run_fleet(p, check_mode, refused=None, elsewhere=None, return_audit=False, arriving=None):
    """The whole operation on validated parameters: (result, failure message or None).

    Shared by the module's main() and its controller-side action plugin (plugins/action/), which runs
    it in the controller's own process when the task runs on the controller. `refused`: {bot name:
    why} for bots of the fleet that the caller could not even make an entry of (their inventory
    variables are missing or wrong): each is reported failed and counted, like any bot that fails.
    `elsewhere`: (bot names, a function returning {bot name: result}) for bots driven on their own
    hosts at the same time (plugins/plugin_utils/fleet_ssh.py); their results are counted with these
    bots', and their audit records go to this call's audit log. `return_audit`: keep each bot's
    audit record in its result (the host side of that).

    `arriving`: more entries, from an iterator that makes them as it goes (the action plugin reads
    each host's variables in turn): each bot is driven as soon as its entry comes, the first ones
    while the last are still being read. The names it covers are unique (inventory host names), and
    it may fill `refused` and elsewhere's names as it goes: both are read once it is exhausted."""
    started = time.monotonic()
    verb = "engage" if p["state"] == "engaged" else "release"
    refused = refused if refused is not None else {}
    result = dict(changed=False, bots={}, actions=[], summary={})
    away_names, away = elsewhere or ((), None)
    names = [e["bot"]["name"] for e in p["bots"]] + list(away_names) + sorted(refused)
    seen, duplicates = set(), set()
    for n in names:
        (duplicates if n in seen else seen).add(n)
    if duplicates:
        return result, f"Failed to {verb} the fleet kill switch: bots given twice: {', '.join(sorted(duplicates))}"
    if p["max_workers"] < 1:
        return result, f"Failed to {verb} the fleet kill switch: max_workers must be 1 or more"
    if p["max_requests_per_host"] < 1:
        return result, f"Failed to {verb} the fleet kill switch: max_requests_per_host must be 1 or more"
    if p["fail_fast"] <= 0:
        return result, f"Failed to {verb} the fleet kill switch: fail_fast must be more than 0 seconds"
    driven = []  # the entries in the order they were handed to the workers

    def entries():
        for e in itertools.chain(p["bots"], arriving or ()):
            if not e.get("profile"):
                # a bot without a profile fails alone (one_bot says so): the others are still driven
                e["profile"] = p["profiles"].get(e["bot"].get("family"))
            driven.append(e)
            yield e

    # fail fast only on the way down: a bot that does not answer is escalated, but a slow one being
    # released is given its full timeouts
    run = FleetRun(fail_fast=p["fail_fast"] if p["state"] == "engaged" else None,
                   per_host=p["max_requests_per_host"])
    index = AuditIndex([p["audit_log"]])
    # the pool starts a thread per bot only as bots come, up to max_workers
    workers = (min(p["max_workers"], len(p["bots"])) or 1) if arriving is None else p["max_workers"]
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="kill-switch-hosts") as hosts:
        there = hosts.submit(away) if away is not None else None
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="kill-switch") as pool:
            outcomes = list(pool.map(lambda e: one_bot(e, p, check_mode, run, index), entries()))
        there = there.result() if there is not None else {}
    # AnsibleModule would scrub every secret of the call out of every string of the result: one
    # bot's short or common token ("1", "bot") then garbles every other bot's row, and the cost
    # is quadratic for a large fleet. A bot's result holds only what was said to and by that bot,
    # so each is scrubbed of its own secrets, each distinct string once.
    scrubbed = []
    for (name, res), e in zip(outcomes, driven):
        secrets = own_secrets(e)
        scrubbed.append((name, scrub(res, secrets) if secrets else res))
    outcomes = scrubbed
    for name in away_names:
        res = there.get(name) or bot_failed(name, p, "its host gave no result for it")
        if res.get("audit") and not check_mode and p.get("audit_log"):
            try:
                append_audit(p["audit_log"], res["audit"])
            except OSError as exc:
                res.setdefault("audit_errors", []).append(f"could not write the audit log {p['audit_log']}: {exc}")
        outcomes.append((name, res))
    outcomes += [(name, bot_failed(name, p, f"{why} (nothing was tried on it)")) for name, why in sorted(refused.items())]

    before, after = [], []
    for name, res in outcomes:
        result["bots"][name] = res
        result["actions"] += [f"{name}: {a}" for a in res.pop("actions", [])]
        diff = res.pop("diff", None)
        if diff:
            before.append(f"{name}: {diff['before'].split(': ', 1)[1]}")
            after.append(f"{name}: {diff['after'].split(': ', 1)[1]}")
        if not return_audit:
            res.pop("audit", None)
        res.pop("audit_logs", None)
    failed = sorted(n for n, r in result["bots"].items() if r["failed"])
    ok = [r for r in result["bots"].values() if not r["failed"]]
    # a bot that failed yet is engaged at the level (escalated past an inventory fault) is halted
    # all the same: the count says how many bots no longer trade, failed says how many to look at
    engaged = [r for r in result["bots"].values() if r["failed"] and r.get("current_level") in LEVELS
               and rank(r["current_level"]) >= rank(p["level"])]
    result["changed"] = any(r.get("changed") for r in result["bots"].values())
    result["summary"] = dict(
        total=len(outcomes),
        halted=len(ok) + len(engaged) if p["state"] == "engaged" else 0,
        released=len(ok) if p["state"] == "released" else 0,
        changed=sum(1 for r in result["bots"].values() if r.get("changed")),
        failed=len(failed),
        failed_bots=failed,
        duration=round(time.monotonic() - started, 3),
    )
    if before:
        result["diff"] = {"before": "".join(before), "after": "".join(after)}
    # the invocation names the bots rather than echo every bot's arguments and profile back
    args = {k: v for k, v in p.items() if k not in ("bots", "profiles")}
    result["invocation"] = {"module_args": dict(args, bots=[name for name, _res in outcomes],
                                                profiles=sorted(p["profiles"]))}
    if failed:
        details = "; ".join(f"{n}: {result['bots'][n]['msg']}" for n in failed)
        return result, (f"Failed to {verb} kill switch level '{p['level']}' on {len(failed)} of "
                        f"{len(outcomes)} bots: {details}")
    return result, None
